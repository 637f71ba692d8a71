//! portrange_exporter: a Prometheus exporter for port ranges that services
//! claim one port per session from (Citrix Framehawk, mosh, RTP, FTP passive
//! ranges, Kubernetes NodePorts). Data flows one way: [`config`] →
//! [`platform`] (sample, attribute) → [`collect`] (count, judge with
//! [`allowlist`]) → [`service`] (one collection at a time, shared) →
//! [`http`] (metrics, and [`status`] for the port map page) / [`check`].
//! Everything that touches the operating system is in [`platform`]; the
//! rest is platform-free.

pub mod allowlist;
pub mod check;
pub mod cli;
pub mod collect;
pub mod config;
pub mod deadline;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod platform;
pub mod ranges;
pub mod service;
pub mod status;
pub mod users;
pub mod webconfig;
