//! The `ranges` collector's part of the report: one [`RangeView`] per
//! watched range, protocol and (with `--collector.netns`) network
//! namespace, with the range's spec, per-port flag and series cap, its
//! counts and its [`Listener`]s. Plain data: [`crate::collect`] builds it,
//! the projections render it.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use crate::allowlist::Expected;
use crate::platform::{Holder, Owner};
use crate::ranges::{PortSet, Protocol};

/// The help text of `portrange_ephemeral_overlap_ports` (the platform
/// says what its dynamic range is).
pub use crate::platform::EPHEMERAL_OVERLAP_HELP;

/// One listener in a range.
#[derive(Clone, Debug)]
pub struct Listener {
    pub range: String,
    pub protocol: Protocol,
    pub port: u16,
    pub address: IpAddr,
    /// Who holds it; `None` when that could not be found.
    pub holder: Option<Holder>,
    pub user: String,
    pub expected: Expected,
    /// The `netns` label value with `--collector.netns`; `None` without.
    pub netns: Option<String>,
}

impl Listener {
    /// The process label value: the process name (lossily decoded),
    /// `kernel` (with the tunnel device when known) for kernel-held
    /// sockets, or `unknown`.
    pub fn process(&self) -> String {
        self.process_name().into_owned()
    }

    /// [`Listener::process`] without an allocation where the name is
    /// valid UTF-8 (the common case).
    pub fn process_name(&self) -> Cow<'_, str> {
        match &self.holder {
            Some(Holder::Process(o)) => String::from_utf8_lossy(&o.comm),
            Some(Holder::Kernel { device: Some(d) }) => format!("kernel ({d})").into(),
            Some(Holder::Kernel { device: None }) => "kernel".into(),
            None => "unknown".into(),
        }
    }

    /// The owning process, when a process holds it.
    pub fn owner(&self) -> Option<&Arc<Owner>> {
        match &self.holder {
            Some(Holder::Process(o)) => Some(o),
            _ => None,
        }
    }

    pub fn is_kernel(&self) -> bool {
        matches!(self.holder, Some(Holder::Kernel { .. }))
    }

    /// Whether the owner's executable is gone (deleted, or an anonymous
    /// memory file): marked wherever the listener is shown.
    pub fn exe_gone(&self) -> bool {
        self.owner().is_some_and(|o| o.exe_gone())
    }

    /// The file name of the owner's executable when the process name does
    /// not agree with it and no root-only link vouches for the name (a
    /// process renamed after start, a script run by its interpreter): why
    /// a `process:` entry does not match it.
    pub fn renamed_from(&self) -> Option<Cow<'_, str>> {
        let o = self.owner()?;
        let exe = o.exe.as_deref()?;
        let rules = &crate::names::HOST;
        (!o.exe_gone() && !o.name_via_link && !rules.name_agrees(&o.comm, exe))
            .then(|| String::from_utf8_lossy(rules.exe_file_name(exe)))
    }
}

/// One range on one protocol (in one network namespace with
/// `--collector.netns`): what the range is, and what the collection found
/// in it. Everything a projection shows of a range comes from here.
#[derive(Clone, Debug)]
pub struct RangeView {
    pub range: String,
    pub protocol: Protocol,
    /// The `netns` label value with `--collector.netns`; `None` without.
    pub netns: Option<String>,
    /// The range's ports, as configured.
    pub spec: PortSet,
    /// Whether the range asks for a series per port and for its allowed
    /// listeners one by one.
    pub per_port: bool,
    /// At most this many unexpected or unknown listeners get a
    /// `portrange_listener_info` series.
    pub max_listener_series: u32,
    pub in_use: u32,
    /// Socket count per state name, in [`crate::platform::state_names`]
    /// order.
    pub states: Vec<(&'static str, u64)>,
    /// Listeners judged `expected="false"`.
    pub unexpected: u64,
    /// Listeners judged `expected="unknown"`.
    pub unknown: u64,
    pub unattributed: u64,
    /// Ports of the range that outgoing connections can take; `None` when
    /// the platform could not say.
    pub ephemeral_overlap: Option<u32>,
    /// Ports of the range the platform excludes from binding (Windows
    /// excluded port ranges a service reserved); `None` where the platform
    /// has no such thing or could not say.
    pub excluded: Option<PortSet>,
    /// The ports in use (holding at least one socket), ascending.
    pub in_use_ports: Vec<u16>,
    /// The listeners, by port, address, process, user and verdict.
    pub listeners: Vec<Listener>,
}

impl RangeView {
    /// A view of the range's capacity alone, before (or without) a sample.
    pub fn capacity(
        range: &str,
        protocol: Protocol,
        netns: Option<String>,
        spec: PortSet,
    ) -> RangeView {
        RangeView {
            range: range.to_string(),
            protocol,
            netns,
            spec,
            per_port: false,
            max_listener_series: 0,
            in_use: 0,
            states: Vec::new(),
            unexpected: 0,
            unknown: 0,
            unattributed: 0,
            ephemeral_overlap: None,
            excluded: None,
            in_use_ports: Vec::new(),
            listeners: Vec::new(),
        }
    }

    /// The range's capacity.
    pub fn ports(&self) -> u32 {
        self.spec.len()
    }

    /// Ports with no sampled socket.
    pub fn free(&self) -> u32 {
        self.ports().saturating_sub(self.in_use)
    }

    pub fn is_in_use(&self, port: u16) -> bool {
        self.in_use_ports.binary_search(&port).is_ok()
    }

    /// The excluded ports no sampled socket holds: they look free, but
    /// binds there fail (`portrange_excluded_ports`).
    pub fn excluded_free(&self) -> Option<u32> {
        self.excluded
            .as_ref()
            .map(|x| x.ports().filter(|&p| !self.is_in_use(p)).count() as u32)
    }

    /// With `per_port`: every port of the range and whether it is in use.
    pub fn port_in_use(&self) -> Option<impl Iterator<Item = (u16, bool)> + '_> {
        self.per_port
            .then(|| self.spec.ports().map(|p| (p, self.is_in_use(p))))
    }
}
