//! portrange_exporter: a Prometheus exporter for port ranges that services
//! claim one port per session from (Citrix Framehawk, mosh, RTP, FTP passive
//! ranges, Kubernetes NodePorts). Data flows one way: [`config`] →
//! [`sample`] → [`attribution`] → [`collect`] → [`http`] / [`check`].

pub mod config;
pub mod ranges;
pub mod sample;
pub mod attribution;
pub mod kernel;
pub mod users;
pub mod collect;
pub mod metrics;
pub mod logging;
pub mod http;
pub mod check;
pub mod cli;
