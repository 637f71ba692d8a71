//! portrange_exporter: a Prometheus exporter for port ranges that services
//! claim one port per session from (Citrix Framehawk, mosh, RTP, FTP passive
//! ranges, Kubernetes NodePorts). Data flows one way, each stage passing
//! a value that carries what the next needs: [`config`] → [`collect`]'s
//! collectors, which drive [`platform`] (sample → attribute → confirm
//! kernel-held, each bounded by the scrape's deadline), then count and
//! judge with [`allowlist`] → a [`report`] (one view per range, protocol
//! and namespace, what was skipped, how each collector fared) →
//! [`service`] (one collection at a time, shared) → the projections of
//! the report, which never read the configuration: [`metrics`] (served by
//! [`http`]), [`status`] (the port map page's JSON) and [`check`].
//! Everything that touches the operating system is in [`platform`]; the
//! rest is platform-free.

pub mod allowlist;
pub mod auth;
pub mod check;
pub mod cli;
pub mod collect;
pub mod config;
pub mod deadline;
pub mod ephemeral;
pub mod http;
pub mod logging;
pub mod looks;
pub mod metrics;
pub mod names;
pub mod platform;
pub mod ranges;
pub mod report;
pub mod service;
pub mod status;
pub mod traffic;
pub mod trail;
pub mod users;
pub mod webconfig;
