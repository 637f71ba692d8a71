//! The `ranges` collector's part of the report: one [`RangeView`] per
//! watched range, protocol and (with `--collector.netns`) network
//! namespace, with the range's spec, per-port flag and series cap, its
//! counts and its [`Listener`]s. [`crate::collect`] builds it; it renders
//! its own part: its metric families here ([`families`]), its section of
//! the status document ([`status`]) and its judgement and lines in `check`
//! ([`check`]).

pub mod check;
pub mod status;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use prometheus::proto::MetricFamily;

use crate::allowlist::Expected;
use crate::exposition::{Family, with};
use crate::platform::{Holder, Owner};
use crate::ranges::{PortSet, Protocol};

/// The help text of `portrange_ephemeral_overlap_ports` (the platform
/// says what its dynamic range is).
pub use crate::platform::EPHEMERAL_OVERLAP_HELP;

/// Since when a listener is known (Unix seconds, and the source:
/// `observed` or `process_start`), as the trail says: the renderers take
/// it as a function, so that this part needs neither the trail nor the
/// report that carries it ([`crate::report::Report::since_of`]).
pub type SinceOf<'a> = &'a dyn Fn(&Listener) -> Option<(f64, &'static str)>;

/// One listener in a range. Its strings are shared (`Arc<str>`): a busy
/// range holds thousands of listeners of one range, user and namespace,
/// and the listener trail keys its record by them, so a copy is a count,
/// not an allocation.
#[derive(Clone, Debug)]
pub struct Listener {
    pub range: Arc<str>,
    pub protocol: Protocol,
    pub port: u16,
    pub address: IpAddr,
    /// Who holds it; `None` when that could not be found.
    pub holder: Option<Holder>,
    pub user: Arc<str>,
    pub expected: Expected,
    /// The `netns` label value with `--collector.netns`; `None` without.
    pub netns: Option<Arc<str>>,
    /// Since when the listener trail knows it (Unix seconds, and the
    /// source: `observed` or `process_start`); set when the trail
    /// observes the report that carries it ([`crate::trail::TrailView`]),
    /// `None` before and without a trail.
    pub since: Option<(f64, &'static str)>,
}

#[cfg(test)]
impl Listener {
    /// A UDP listener of range `range` on 0.0.0.0:`port`, held by `owner`
    /// running as root, for tests.
    pub fn held_by(range: &str, port: u16, owner: Owner, expected: Expected) -> Listener {
        Listener {
            range: range.into(),
            protocol: Protocol::Udp,
            port,
            address: IpAddr::from([0, 0, 0, 0]),
            holder: Some(Holder::Process(Arc::new(owner))),
            user: "root".into(),
            expected,
            netns: None,
            since: None,
        }
    }
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

/// What the `ranges` collector's families read: its views, whether the
/// sample succeeded, and whether the series carry `netns`.
#[derive(Clone, Copy)]
pub struct Ranges<'a> {
    pub views: &'a [RangeView],
    pub up: bool,
    /// `--collector.netns` is on.
    pub per_netns: bool,
}

impl Ranges<'_> {
    fn up(&self) -> bool {
        self.up
    }
}

/// The help texts of the `ranges` families (also in
/// [`crate::metrics::FAMILIES`]).
pub const EXCLUDED_PORTS_HELP: &str = "Ports of the range with no socket inside a port range a Windows service reserved (netsh int ipv4 show excludedportrange, the lines without *): they count as free, but binds there fail. Only on Windows.";
pub const LISTENER_INFO_HELP: &str = "One listener in the range: every unexpected or unknown one (up to max_listener_series per range and protocol), and the allowed ones where per_port is on.";
pub const LISTENER_INFO_DROPPED_HELP: &str = "Unexpected or unknown listeners left out of portrange_listener_info by the range's max_listener_series.";
pub const LISTENERS_HELP: &str = "Listeners in the range (TCP LISTEN or UDP without a peer) by owner; expected is true, false, or unknown when the owner was not found.";
pub const PORT_IN_USE_HELP: &str =
    "1 when the port holds at least one socket not in TIME_WAIT, else 0.";
pub const PORTS_HELP: &str = "Ports in the range (its capacity).";
pub const PORTS_FREE_HELP: &str = "Ports of the range with no sampled socket (ports minus ports in use). TCP ports bound but neither listening nor connecting (TCP_BOUND_INACTIVE) are not sampled and count as free.";
pub const PORTS_IN_USE_HELP: &str =
    "Distinct ports of the range with at least one socket not in TIME_WAIT.";
pub const SOCKETS_HELP: &str = "Sockets in the range by state (tcp: established, syn_sent, syn_recv, fin_wait1, fin_wait2, time_wait, close, close_wait, last_ack, listen, closing; udp: unconn, established).";
pub const UNATTRIBUTED_SOCKETS_HELP: &str = "Sockets in the range whose owning process could not be found (TIME_WAIT and request sockets, which no process holds, are not counted).";
pub const UNEXPECTED_LISTENERS_HELP: &str =
    "Listeners in the range whose owner the range's allowlist does not match.";

/// The `ranges` collector's families. When sampling failed, only what
/// does not depend on the sample is emitted (capacity): a failed sample
/// must not read as "every port free".
pub fn families(report: Ranges<'_>) -> Vec<MetricFamily> {
    let mut out = Vec::new();
    let mut ports = Family::new("portrange_ports", PORTS_HELP);
    if !report.up() {
        for r in report.views {
            ports.add(&base_labels(r), f64::from(r.ports()));
        }
        out.push(ports.build());
        return out;
    }

    let mut in_use = Family::new("portrange_ports_in_use", PORTS_IN_USE_HELP);
    let mut free = Family::new("portrange_ports_free", PORTS_FREE_HELP);
    let mut sockets = Family::new("portrange_sockets", SOCKETS_HELP);
    let mut unexpected = Family::new("portrange_unexpected_listeners", UNEXPECTED_LISTENERS_HELP);
    let mut unattributed = Family::new("portrange_unattributed_sockets", UNATTRIBUTED_SOCKETS_HELP);
    let mut overlap = Family::new("portrange_ephemeral_overlap_ports", EPHEMERAL_OVERLAP_HELP);
    let mut excluded = Family::new("portrange_excluded_ports", EXCLUDED_PORTS_HELP);
    let mut port_in_use = Family::new("portrange_port_in_use", PORT_IN_USE_HELP);
    let mut listeners = Family::new("portrange_listeners", LISTENERS_HELP);
    let mut info_dropped = Family::new(
        "portrange_listener_info_dropped",
        LISTENER_INFO_DROPPED_HELP,
    );
    let mut listener_info = Family::new("portrange_listener_info", LISTENER_INFO_HELP);
    let mut all_counts: BTreeMap<[String; 6], u64> = BTreeMap::new();
    let mut all_info: BTreeSet<[String; 8]> = BTreeSet::new();
    for r in report.views {
        let base = base_labels(r);
        ports.add(&base, f64::from(r.ports()));
        in_use.add(&base, f64::from(r.in_use));
        free.add(&base, f64::from(r.free()));
        for (state, n) in &r.states {
            sockets.add(&with(&base, ("state", state)), *n as f64);
        }
        unexpected.add(&base, r.unexpected as f64);
        unattributed.add(&base, r.unattributed as f64);
        if let Some(o) = r.ephemeral_overlap {
            overlap.add(&base, f64::from(o));
        }
        if let Some(x) = r.excluded_free() {
            excluded.add(&base, f64::from(x));
        }
        if let Some(pp) = r.port_in_use() {
            for (port, used) in pp {
                port_in_use.add(
                    &with(&base, ("port", &port.to_string())),
                    if used { 1.0 } else { 0.0 },
                );
            }
        }
        let (counts, info, dropped) = itemize(r);
        let netns = r.netns.clone().unwrap_or_default();
        for ((process, user, expected), n) in counts {
            all_counts.insert(
                [
                    r.range.clone(),
                    r.protocol.as_str().to_string(),
                    process.into_owned(),
                    user.to_string(),
                    expected.as_str().to_string(),
                    netns.clone(),
                ],
                n,
            );
        }
        info_dropped.add(&base, dropped as f64);
        for [port, address, process, user, expected] in info {
            all_info.insert([
                r.range.clone(),
                r.protocol.as_str().to_string(),
                port,
                address,
                process,
                user,
                expected,
                netns.clone(),
            ]);
        }
    }
    // In label order across ranges, as they always were.
    let netns_on = report.per_netns || report.views.iter().any(|r| r.netns.is_some());
    let label_names = ["range", "protocol", "process", "user", "expected", "netns"];
    for (key, n) in &all_counts {
        let labels: Vec<(&str, &str)> = label_names
            .iter()
            .zip(key)
            .take(if netns_on { 6 } else { 5 })
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        listeners.add(&labels, *n as f64);
    }
    let label_names = [
        "range", "protocol", "port", "address", "process", "user", "expected", "netns",
    ];
    for key in &all_info {
        let labels: Vec<(&str, &str)> = label_names
            .iter()
            .zip(key)
            .take(if netns_on { 8 } else { 7 })
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        listener_info.add(&labels, 1.0);
    }
    out.extend([
        ports.build(),
        in_use.build(),
        free.build(),
        sockets.build(),
        unexpected.build(),
        unattributed.build(),
        info_dropped.build(),
    ]);
    // Families with no sample are left out rather than written empty.
    for f in [overlap, excluded, port_in_use, listeners, listener_info] {
        if !f.metrics.is_empty() {
            out.push(f.build());
        }
    }
    out
}

/// `range`, `protocol` and, per namespace, `netns`.
fn base_labels(r: &RangeView) -> Vec<(&str, &str)> {
    [
        ("range", r.range.as_str()),
        ("protocol", r.protocol.as_str()),
    ]
    .into_iter()
    .chain(r.netns.as_deref().map(|n| ("netns", n)))
    .collect()
}

/// process, user, expected.
type CountKey<'a> = (Cow<'a, str>, &'a str, Expected);
/// port, address, process, user, expected.
type InfoKey = [String; 5];

/// Splits a view's listeners into what the series carry: a count per
/// owner (bounded by the owners, not the sockets they hold), the
/// listeners itemized one by one (every unexpected or unknown one up to
/// the range's `max_listener_series`, unexpected first, and the allowed
/// ones only where `per_port` is on), and how many the cap left out.
/// Identical listeners (SO_REUSEPORT groups, the same program bound twice)
/// share one `_info` series, whose value stays 1. Counting borrows the
/// label values; strings are made only for what is emitted.
fn itemize(view: &RangeView) -> (BTreeMap<CountKey<'_>, u64>, BTreeSet<InfoKey>, u64) {
    let mut counts: BTreeMap<CountKey<'_>, u64> = BTreeMap::new();
    let mut info: BTreeSet<InfoKey> = BTreeSet::new();
    let mut dropped = 0;
    let mut itemized = 0u32;
    let mut to_itemize: Vec<&Listener> = Vec::new();
    for l in &view.listeners {
        *counts
            .entry((l.process_name(), &*l.user, l.expected))
            .or_default() += 1;
        if l.expected != Expected::True || view.per_port {
            to_itemize.push(l);
        }
    }
    // Unexpected first, then unknown, then allowed; by port within each.
    to_itemize.sort_by_key(|l| {
        let rank = match l.expected {
            Expected::False => 0,
            Expected::Unknown => 1,
            Expected::True => 2,
        };
        (rank, l.port)
    });
    for l in to_itemize {
        let key = [
            l.port.to_string(),
            l.address.to_string(),
            l.process(),
            l.user.to_string(),
            l.expected.as_str().to_string(),
        ];
        if info.contains(&key) {
            continue; // an identical listener, already itemized
        }
        if l.expected == Expected::True {
            info.insert(key);
        } else if itemized < view.max_listener_series {
            itemized += 1;
            info.insert(key);
        } else {
            dropped += 1;
        }
    }
    (counts, info, dropped)
}
