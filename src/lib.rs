//! portrange_exporter: a Prometheus exporter for port ranges that services
//! claim one port per session from (Citrix Framehawk, mosh, RTP, FTP passive
//! ranges, Kubernetes NodePorts). Data flows one way, each stage passing
//! a value that carries what the next needs: [`config`] → [`collect`]'s
//! collectors, which drive [`platform`] (sample → attribute → confirm
//! kernel-held, each bounded by the scrape's deadline), then count and
//! judge with [`allowlist`] → a [`report`] (one part per collector: the
//! range views, the namespaces, the trail, the traffic counts, the
//! dynamic range; what was skipped; how each collector fared) →
//! [`service`] (one collection at a time, shared) → the projections of
//! the report, which never read the configuration: [`metrics`] (served by
//! [`http`]), [`status`] (the port map page's JSON) and [`check`].
//! Everything that touches the operating system is in [`platform`]; the
//! rest is platform-free.
//!
//! The house, bottom first (`tests/conventions.rs` checks that every
//! `crate::`/`super::` import runs down these layers and that none
//! closes a circle): shared helpers ([`text`], [`threshold`], [`ranges`],
//! [`names`], [`deadline`], [`logging`], [`exposition`]) → [`platform`]
//! and its implementations → [`users`] → [`allowlist`] → the collectors →
//! [`config`] and [`report`] → [`collect`] and the projections →
//! [`service`] → [`http`] → [`cli`].
//!
//! One shape per collector: a module that samples through the platform
//! boundary, holds its own plain part of the report, and renders that
//! part: its metric families, its section of the status document, its
//! judgement and lines in `check`. Its renderers take its own part (and
//! what the rest of the report says of it, passed in as plain values),
//! never the whole [`report::Report`] nor the [`config::Config`]; what a
//! judgement shares with `check` (plugin states, thresholds) is in
//! [`threshold`], below every collector. The collectors: [`watched`] (the
//! `ranges` collector: [`watched::families`], [`watched::status`],
//! [`watched::check`]), [`netns`], [`trail`], [`traffic`] and
//! [`ephemeral`] (with [`ephemeral::check`]). Adding one is one module
//! plus one line in each list: its part in [`report::Report`], its run in
//! [`collect::Collector::collect`], its families in [`metrics::families`]
//! (and its help texts in [`metrics::FAMILIES`]), its section in
//! [`status::render`] and its judgement and lines in `check`
//! ([`check::render`], [`check::render_json`]).

pub mod allowlist;
pub mod auth;
pub mod check;
pub mod cli;
pub mod collect;
pub mod config;
pub mod deadline;
pub mod ephemeral;
pub mod exposition;
pub mod http;
pub mod logging;
pub mod looks;
pub mod metrics;
pub mod names;
pub mod netns;
pub mod platform;
pub mod ranges;
pub mod redact;
pub mod report;
pub mod service;
pub mod status;
pub mod text;
pub mod threshold;
pub mod traffic;
pub mod trail;
pub mod users;
pub mod watched;
pub mod webconfig;
