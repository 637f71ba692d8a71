//! portrange_exporter: a Prometheus exporter for port ranges that services
//! claim one port per session from (Citrix Framehawk, mosh, RTP, FTP passive
//! ranges, Kubernetes NodePorts). Data flows one way: [`config`] →
//! [`sample`] → [`attribution`] → [`collect`] → [`http`] / [`check`].

pub mod attribution;
pub mod check;
pub mod cli;
pub mod collect;
pub mod config;
pub mod http;
pub mod kernel;
pub mod logging;
pub mod metrics;
pub mod ranges;
pub mod sample;
pub mod users;
pub mod webconfig;
