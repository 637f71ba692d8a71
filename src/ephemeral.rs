//! The `ephemeral` collector's judgement: how much of the dynamic
//! (ephemeral) port range outgoing connections can still take, counted
//! from the same sample and attribution as the watched ranges, into one
//! [`EphemeralView`] per protocol (and network namespace with
//! `--collector.netns`). It judges no listener: thousands of services
//! listen in the dynamic range. What is counted: every sampled socket
//! whose local port is in the range (reserved or excluded ports are not
//! in it), by state; the distinct local ports with a socket; per
//! destination (remote address and port, IPv4-mapped addresses folded to
//! IPv4) the distinct local ports with a connected socket toward it,
//! TIME_WAIT included (the 4-tuple blocks a new connection to the same
//! destination from that port); and the ports held with no peer
//! (listeners, bound and unconnected sockets), which no `connect()` can
//! share. How a TCP port was taken decides whom it blocks: a port
//! `connect()` took by itself is shared across destinations (it blocks
//! only the destinations it has a socket toward), one `bind()` took
//! (listeners, `bind((addr, 0))` before `connect()`, `SO_REUSEADDR`
//! binds) is gone for every destination. sock_diag does not say which;
//! the platform's [`PortSharing`] does where the kernel shows it (Linux,
//! a BPF socket iterator). Counted [`Counting::Exact`] then: the headroom
//! toward a destination is the range less the ports no `connect()` can
//! share (no peer, or taken by `bind()`) less its shared ports. Without
//! it, [`Counting::Conservative`]: a port not known to be shared is gone
//! for everyone, so the headroom toward every destination is the range
//! less the ports in use (as for UDP, where a port in use is always gone
//! for everyone, and so always exact). The local address is not part of
//! the key, so a host that spreads connections over several source
//! addresses looks fuller than it is. Either way the headroom errs low,
//! never high (tests/ephemeral.rs
//! `headroom_never_exceeds_what_connect_gets`). Holders are counted per owner (top K
//! by sockets, the rest as `other`); TIME_WAIT and request sockets have no
//! owner and count by state only. Destinations never become labels: only
//! `check`, the status document and the page name the busiest ones.
//! It renders its own part: its families ([`families`]), its section of
//! the status document ([`status_json`]) and its judgement and lines in
//! `check` ([`check`]). Pure: no OS access, tested with fakes.

pub mod check;

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use prometheus::proto::MetricFamily;
use serde_json::json;

use crate::exposition::{Family, with};
use crate::platform::{self, Holder, Owner, PortSharing, Sharing, Socket};
use crate::ranges::{PortSet, Protocol};
use crate::users::{self, UserNames};

/// The `collector` label of the ephemeral collector.
pub const EPHEMERAL: &str = "ephemeral";

/// How many destinations `check`, the status document and the page name.
pub const TOP_DESTINATIONS: usize = 5;

/// The `process` (and `user`) label of the holders beyond the top K.
pub const OTHER: &str = "other";

/// The collector's settings (`--collector.ephemeral`,
/// `--collector.ephemeral.top-holders`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub enabled: bool,
    /// Ask the platform how each port was taken (`--collector.ephemeral.bpf`);
    /// off, TCP is counted [`Counting::Conservative`].
    pub bpf: bool,
    /// Owners with a `portrange_ephemeral_holders` series of their own; the
    /// rest are summed into `process="other"`.
    pub top_holders: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            enabled: true,
            bpf: true,
            top_holders: 10,
        }
    }
}

/// Sockets of the range held by one owner (a process name and user), or
/// by the owners beyond the top K (`other`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HolderCount {
    /// The process name; `unknown` when the owner was not found, `kernel`
    /// for sockets no process holds, `other` for the rest.
    pub process: String,
    pub user: String,
    pub sockets: u64,
}

/// How a view's headroom was counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counting {
    /// How each port was taken is known (TCP with [`PortSharing`]; UDP,
    /// where every port in use is gone for everyone).
    Exact,
    /// TCP without [`PortSharing`]: every port in use counts against every
    /// destination.
    Conservative,
}

impl Counting {
    /// The `method` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Counting::Exact => "exact",
            Counting::Conservative => "conservative",
        }
    }
}

/// One destination and what the range spends on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    pub address: IpAddr,
    pub port: u16,
    /// Distinct local ports of the range with a connected socket toward
    /// it (less the ports held with no peer, counted apart).
    pub ports: u32,
    /// Ports still free toward it: the range less [`EphemeralView::unshared`]
    /// less its ports that are shared (taken by `connect()`).
    pub free: u32,
    /// Sockets toward it, TIME_WAIT included.
    pub sockets: u64,
    /// The owner with the most sockets toward it; `None` when none of its
    /// sockets has an owner (all in TIME_WAIT).
    pub holder: Option<HolderCount>,
}

impl Destination {
    /// `10.0.0.5:5432`, `[2001:db8::1]:443`.
    pub fn endpoint(&self) -> String {
        std::net::SocketAddr::new(self.address, self.port).to_string()
    }
}

/// The dynamic range of one protocol (in one namespace), as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EphemeralView {
    pub protocol: Protocol,
    /// The `netns` label value with `--collector.netns`; `None` without.
    pub netns: Option<String>,
    /// The range's ports (reserved or excluded ports left out).
    pub range: PortSet,
    /// Distinct local ports of the range with at least one socket, TIME_WAIT
    /// included.
    pub in_use: u32,
    /// Sockets of the range per state name, in
    /// [`platform::state_names`] order.
    pub states: Vec<(&'static str, u64)>,
    /// Ports no new `connect()` can take, toward any destination: held
    /// with no peer (listener, bound and unconnected), taken by `bind()`,
    /// or not known to be shared (TCP counted conservatively; every UDP
    /// port in use).
    pub unshared: u32,
    /// The fewest ports still free toward any one destination.
    pub free_min: u32,
    /// Ports free toward a destination with no socket yet: the range less
    /// `unshared`.
    pub free_new: u32,
    /// How the headroom was counted.
    pub counting: Counting,
    /// Distinct destinations with a socket from the range.
    pub destinations_total: u64,
    /// The busiest destinations, most ports first, at most
    /// [`TOP_DESTINATIONS`].
    pub destinations: Vec<Destination>,
    /// The top K owners by sockets, then `other` when there are more
    /// owners (its count may be 0 only when there is nobody else).
    pub holders: Vec<HolderCount>,
    /// Sockets that a process may hold but whose owner was not found.
    pub unattributed: u64,
}

impl EphemeralView {
    /// The range's size.
    pub fn ports(&self) -> u32 {
        self.range.len()
    }

    /// The busiest destination, when any socket has a peer.
    pub fn busiest(&self) -> Option<&Destination> {
        self.destinations.first()
    }

    /// The owner with the most sockets (never `other`).
    pub fn top_holder(&self) -> Option<&HolderCount> {
        self.holders
            .iter()
            .find(|h| h.process != OTHER && h.sockets > 0)
    }
}

/// What the ephemeral collector found in one collection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EphemeralReport {
    /// One view per protocol (per namespace), host first.
    pub views: Vec<EphemeralView>,
    /// Why the collector failed (no views then).
    pub error: Option<String>,
}

/// The process label of a holder.
fn process_name(holder: Option<&Holder>) -> Cow<'_, str> {
    match holder {
        Some(Holder::Process(o)) => String::from_utf8_lossy(&o.comm),
        Some(Holder::Kernel { .. }) => "kernel".into(),
        None => "unknown".into(),
    }
}

/// The uids whose names the views of `sockets` will show: those of held
/// sockets in `ranges` whose owner carries no user name of its own.
pub fn uids_to_name<'a>(
    sockets: &'a [Socket],
    holders: &'a [Option<Holder>],
    in_range: impl Fn(&Socket) -> bool + 'a,
) -> impl Iterator<Item = u32> + 'a {
    sockets
        .iter()
        .zip(holders.iter().chain(std::iter::repeat(&None)))
        .filter(move |(s, h)| {
            s.can_be_held()
                && s.uid != platform::NO_UID
                && !matches!(h, Some(Holder::Process(o)) if o.user.is_some())
                && in_range(s)
        })
        .map(|(s, _)| s.uid)
}

/// The key of a destination: IPv4-mapped IPv6 addresses are the IPv4
/// address (a dual-stack socket toward an IPv4 peer).
fn destination_key(s: &Socket) -> (IpAddr, u16) {
    let address = match s.remote {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    (address, s.remote_port)
}

/// Whether a socket has a peer (a destination).
fn has_peer(s: &Socket) -> bool {
    s.remote_port != 0 && !s.is_listener()
}

/// An owner key while counting: the owner (by identity) or the
/// unknown/kernel holder, and the user.
#[derive(Clone, Copy, Hash, PartialEq, Eq)]
enum Who {
    Owner(*const Owner, u32),
    Kernel(u32),
    Unknown(u32),
}

fn who(s: &Socket, h: Option<&Holder>) -> Who {
    match h {
        Some(Holder::Process(o)) => Who::Owner(Arc::as_ptr(o), s.uid),
        Some(Holder::Kernel { .. }) => Who::Kernel(s.uid),
        None => Who::Unknown(s.uid),
    }
}

/// The user label of a holder: the owner's own account where the
/// platform names it per process (Windows), else the socket's uid.
fn user_label(s: &Socket, h: Option<&Holder>, users: &UserNames) -> String {
    match h {
        Some(Holder::Process(o)) if o.user.is_some() => o.user.clone().unwrap_or_default(),
        _ if s.uid == platform::NO_UID => "unknown".to_string(),
        _ => users::label(&users.get(s.uid), s.uid),
    }
}

/// Counts sockets per owner and folds them into named holders, most
/// sockets first (ties by name): the first `top` and, beyond, `other`.
fn rank_holders<'a>(
    held: impl Iterator<Item = (&'a Socket, Option<&'a Holder>)>,
    users: &UserNames,
    top: usize,
) -> (Vec<HolderCount>, bool) {
    let mut per_owner: HashMap<Who, (u64, &Socket, Option<&Holder>)> = HashMap::new();
    for (s, h) in held {
        per_owner.entry(who(s, h)).or_insert((0, s, h)).0 += 1;
    }
    // Several owners (pids) with one name and user are one holder.
    let mut named: HashMap<(String, String), u64> = HashMap::new();
    for (n, s, h) in per_owner.into_values() {
        *named
            .entry((process_name(h).into_owned(), user_label(s, h, users)))
            .or_default() += n;
    }
    let mut all: Vec<HolderCount> = named
        .into_iter()
        .map(|((process, user), sockets)| HolderCount {
            process,
            user,
            sockets,
        })
        .collect();
    all.sort_by(|a, b| {
        b.sockets
            .cmp(&a.sockets)
            .then_with(|| (&a.process, &a.user).cmp(&(&b.process, &b.user)))
    });
    let more = all.len() > top;
    if more {
        let rest: u64 = all[top..].iter().map(|h| h.sockets).sum();
        all.truncate(top);
        all.push(HolderCount {
            process: OTHER.to_string(),
            user: OTHER.to_string(),
            sockets: rest,
        });
    }
    (all, more)
}

/// Builds the view of `protocol`'s dynamic range `range` from the sockets
/// of one namespace (`netns` as a socket's `netns`, `None` for all) and
/// their holders (index for index). `users` names the uids (resolved
/// beforehand, see [`uids_to_name`]). `sharing` says how the namespace's
/// TCP ports were taken; `None` counts TCP conservatively.
#[allow(clippy::too_many_arguments)]
pub fn build_view(
    protocol: Protocol,
    netns_label: Option<String>,
    netns: Option<u64>,
    range: &PortSet,
    sockets: &[Socket],
    holders: &[Option<Holder>],
    users: &UserNames,
    top: usize,
    sharing: Option<&PortSharing>,
) -> EphemeralView {
    let mine = || {
        sockets
            .iter()
            .zip(holders.iter().map(Some).chain(std::iter::repeat(None)))
            .filter(move |(s, _)| {
                s.protocol == protocol
                    && netns.is_none_or(|n| s.netns == n)
                    && range.contains(s.port)
            })
            .map(|(s, h)| (s, h.and_then(|h| h.as_ref())))
    };
    let counting = match (protocol, sharing) {
        (Protocol::Tcp, None) => Counting::Conservative,
        _ => Counting::Exact,
    };
    // Whether a port in use may be taken again by `connect()` toward
    // another destination: only TCP ports the kernel says `connect()` took.
    let shared = |port: u16| {
        protocol == Protocol::Tcp && sharing.is_some_and(|sh| sh.of(port) == Sharing::Shared)
    };
    let mut states: Vec<(&'static str, u64)> = platform::state_names(protocol)
        .iter()
        .map(|&n| (n, 0))
        .collect();
    let mut used = vec![0u64; 1024];
    let mut no_peer = vec![0u64; 1024];
    let mut unshared = vec![0u64; 1024];
    let set = |bits: &mut Vec<u64>, p: u16| bits[usize::from(p / 64)] |= 1 << (p % 64);
    let is_set = |bits: &Vec<u64>, p: u16| bits[usize::from(p / 64)] & (1 << (p % 64)) != 0;
    let mut unattributed = 0;
    for (s, h) in mine() {
        let name = s.state_name();
        if let Some(slot) = states.iter_mut().find(|(n, _)| *n == name) {
            slot.1 += 1;
        }
        set(&mut used, s.port);
        if !has_peer(s) {
            set(&mut no_peer, s.port);
        }
        if !has_peer(s) || !shared(s.port) {
            set(&mut unshared, s.port);
        }
        if h.is_none() && s.can_be_held() {
            unattributed += 1;
        }
    }
    let count = |bits: &Vec<u64>| bits.iter().map(|w| w.count_ones()).sum::<u32>();
    let in_use = count(&used);
    let unshared_n = count(&unshared);
    let free_new = range.len().saturating_sub(unshared_n);
    // (destination, local port), one per pair: ports per destination.
    let mut pairs: Vec<((IpAddr, u16), u16)> = mine()
        .filter(|(s, _)| has_peer(s) && !is_set(&no_peer, s.port))
        .map(|(s, _)| (destination_key(s), s.port))
        .collect();
    let mut sockets_to: HashMap<(IpAddr, u16), u64> = HashMap::new();
    for (d, _) in &pairs {
        *sockets_to.entry(*d).or_default() += 1;
    }
    pairs.sort_unstable();
    pairs.dedup();
    // Per destination: its ports, and those of them shared (which block
    // it alone).
    let mut per_destination: Vec<((IpAddr, u16), u32, u32)> = Vec::new();
    for (d, port) in &pairs {
        let s = u32::from(!is_set(&unshared, *port));
        match per_destination.last_mut() {
            Some((last, n, sh)) if last == d => {
                *n += 1;
                *sh += s;
            }
            _ => per_destination.push((*d, 1, s)),
        }
    }
    drop(pairs);
    let destinations_total = per_destination.len() as u64;
    // The least headroom first (the most shared ports), then the most ports.
    per_destination.sort_by(|a, b| {
        b.2.cmp(&a.2)
            .then_with(|| b.1.cmp(&a.1))
            .then_with(|| a.0.cmp(&b.0))
    });
    per_destination.truncate(TOP_DESTINATIONS);
    let busiest = per_destination.first().map_or(0, |d| d.2);
    let free_min = free_new.saturating_sub(busiest);
    let destinations = per_destination
        .into_iter()
        .map(|(d, ports, shared_ports)| {
            let toward = mine().filter(|(s, _)| has_peer(s) && destination_key(s) == d);
            let (top_holder, _) = rank_holders(toward.filter(|(s, _)| s.can_be_held()), users, 1);
            Destination {
                address: d.0,
                port: d.1,
                ports,
                free: free_new.saturating_sub(shared_ports),
                sockets: sockets_to.get(&d).copied().unwrap_or(0),
                holder: top_holder.into_iter().find(|h| h.process != OTHER),
            }
        })
        .collect();
    let (holders, _) = rank_holders(mine().filter(|(s, _)| s.can_be_held()), users, top);
    EphemeralView {
        protocol,
        netns: netns_label,
        range: range.clone(),
        in_use,
        states,
        unshared: unshared_n,
        free_min,
        free_new,
        counting,
        destinations_total,
        destinations,
        holders,
        unattributed,
    }
}

/// Formats a count with thousands separators: `28,200`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The first-line summary of a view for `check`: `ephemeral tcp: 0 ports
/// left toward 10.0.0.5:5432, held by pgbouncer (user postgres, 28,200)`.
pub fn summary(v: &EphemeralView) -> String {
    let mut out = format!("ephemeral {}", v.protocol);
    if let Some(ns) = &v.netns {
        out.push_str(&format!(" (netns {ns})"));
    }
    out.push_str(&format!(
        ": {} ports left",
        thousands(u64::from(v.free_min))
    ));
    match v.busiest() {
        Some(d) => {
            out.push_str(&format!(" toward {}", d.endpoint()));
            if let Some(h) = &d.holder {
                out.push_str(&format!(
                    ", held by {} (user {}, {})",
                    crate::text::printable(&h.process),
                    crate::text::printable(&h.user),
                    thousands(h.sockets)
                ));
            }
        }
        None => out.push_str(&format!(" of {}", thousands(u64::from(v.ports())))),
    }
    if v.counting == Counting::Conservative {
        out.push_str(" (counted conservatively)");
    }
    let named = v.busiest().and_then(|d| d.holder.as_ref());
    if named.is_none()
        && let Some(h) = v.top_holder()
    {
        out.push_str(&format!(
            ", held by {} (user {}, {})",
            crate::text::printable(&h.process),
            crate::text::printable(&h.user),
            thousands(h.sockets)
        ));
    }
    out
}

/// The help texts of the ephemeral families (also in
/// [`crate::metrics::FAMILIES`]).
pub use crate::platform::EPHEMERAL_PORTS_HELP as PORTS_HELP;
pub const IN_USE_HELP: &str = "Distinct local ports of the dynamic (ephemeral) range with at least one socket, TIME_WAIT included.";
pub const SOCKETS_HELP: &str = "Sockets whose local port is in the dynamic (ephemeral) range, by state (TIME_WAIT included; listeners too: the range is not judged).";
pub const FREE_MIN_HELP: &str = "The fewest ports of the dynamic range still free toward any one destination (remote address and port); 0 means connect() toward the busiest destination fails with EADDRNOTAVAIL. A port connect() took by itself is shared across destinations; one bind() took (listeners, bind((addr, 0)) before connect()) is gone for every destination. tcp, counted exact: the range less the ports no connect() can share (no peer, or taken by bind()) less the shared ports toward the busiest destination. tcp, counted conservative (portrange_ephemeral_counting_info: how each port was taken could not be read): the range less the ports in use, TIME_WAIT included. udp: the range less the ports in use, gone for everyone. Local addresses are not told apart: with several source addresses this errs low, never high.";
pub const COUNTING_HELP: &str = "How portrange_ephemeral_ports_free_min was counted (method): exact where how each port was taken is known (tcp with the BPF socket iterator; udp always), conservative where it is not (tcp: every port in use counts against every destination).";
pub const HOLDERS_HELP: &str = "Sockets of the dynamic range per owner (process name and user), for the top owners by sockets (--collector.ephemeral.top-holders) and process=\"other\" for the rest; process is unknown where the owner was not found. TIME_WAIT and request sockets have no owner and are counted by state only.";

/// The `ephemeral` collector's families: per protocol (and `netns`), the
/// range's size, ports in use, sockets by state, the headroom toward the
/// busiest destination, and the top holders. Nothing when the collector
/// is off or failed (its `portrange_scrape_collector_success` says which).
/// No destination is a label.
pub fn families(ephemeral: Option<&EphemeralReport>) -> Vec<MetricFamily> {
    let Some(e) = ephemeral else {
        return Vec::new();
    };
    if e.views.is_empty() {
        return Vec::new();
    }
    let mut ports = Family::new("portrange_ephemeral_ports", PORTS_HELP);
    let mut in_use = Family::new("portrange_ephemeral_ports_in_use", IN_USE_HELP);
    let mut sockets = Family::new("portrange_ephemeral_sockets", SOCKETS_HELP);
    let mut free_min = Family::new("portrange_ephemeral_ports_free_min", FREE_MIN_HELP);
    let mut counting = Family::new("portrange_ephemeral_counting_info", COUNTING_HELP);
    let mut holders = Family::new("portrange_ephemeral_holders", HOLDERS_HELP);
    for v in &e.views {
        let mut base = vec![("protocol", v.protocol.as_str())];
        if let Some(ns) = &v.netns {
            base.push(("netns", ns.as_str()));
        }
        ports.add(&base, f64::from(v.ports()));
        in_use.add(&base, f64::from(v.in_use));
        free_min.add(&base, f64::from(v.free_min));
        counting.add(&with(&base, ("method", v.counting.as_str())), 1.0);
        for (state, n) in &v.states {
            sockets.add(&with(&base, ("state", state)), *n as f64);
        }
        // In label order: a stable exposition whatever the counts.
        let mut by_label: Vec<&HolderCount> = v.holders.iter().collect();
        by_label.sort_by(|a, b| (&a.process, &a.user).cmp(&(&b.process, &b.user)));
        for h in by_label {
            let mut labels = base.clone();
            labels.push(("process", h.process.as_str()));
            labels.push(("user", h.user.as_str()));
            holders.add(&labels, h.sockets as f64);
        }
    }
    let mut out = vec![
        ports.build(),
        in_use.build(),
        sockets.build(),
        free_min.build(),
        counting.build(),
    ];
    if !holders.metrics.is_empty() {
        out.push(holders.build());
    }
    out
}

/// The JSON form (for `check --output json` and `/api/v1/status`): per
/// view the counts, the busiest destinations and the top holders; `null`
/// when the collector is off.
pub fn status_json(ephemeral: Option<&EphemeralReport>) -> serde_json::Value {
    let Some(e) = ephemeral else {
        return serde_json::Value::Null;
    };
    let views: Vec<serde_json::Value> = e
        .views
        .iter()
        .map(|v| {
            let states: serde_json::Map<String, serde_json::Value> = v
                .states
                .iter()
                .map(|(s, n)| ((*s).to_string(), json!(n)))
                .collect();
            json!({
                "protocol": v.protocol.as_str(),
                "netns": v.netns,
                "range": v.range.to_string(),
                "ports": v.ports(),
                "in_use": v.in_use,
                "unshared": v.unshared,
                "free_min": v.free_min,
                "free_new": v.free_new,
                "counting": v.counting.as_str(),
                "sockets": states,
                "unattributed_sockets": v.unattributed,
                "destinations_total": v.destinations_total,
                "destinations": v.destinations.iter().map(|d| json!({
                    "address": d.address.to_string(),
                    "port": d.port,
                    "ports": d.ports,
                    "free": d.free,
                    "sockets": d.sockets,
                    "holder": d.holder.as_ref().map(|h| json!({
                        "process": h.process, "user": h.user, "sockets": h.sockets,
                    })),
                })).collect::<Vec<_>>(),
                "holders": v.holders.iter().map(|h| json!({
                    "process": h.process, "user": h.user, "sockets": h.sockets,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "error": e.error, "views": views })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::{
        Owner, TCP_CLOSE, TCP_ESTABLISHED, TCP_LISTEN, TCP_TIME_WAIT, UserLookup,
    };
    use std::collections::HashSet;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::{Duration, Instant};

    fn owner(pid: u32, comm: &str) -> Holder {
        Holder::Process(Arc::new(Owner {
            pid,
            comm: comm.as_bytes().to_vec(),
            exe: None,
            user: None,
            user_id: None,
            name_via_link: false,
        }))
    }

    fn tcp(port: u16, state: u8, remote: [u8; 4], remote_port: u16, inode: u64) -> Socket {
        Socket {
            protocol: Protocol::Tcp,
            state,
            local: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            port,
            remote: IpAddr::V4(Ipv4Addr::from(remote)),
            remote_port,
            uid: 70,
            inode,
            pid_hint: None,
            netns: 0,
        }
    }

    fn users() -> UserNames {
        let mut u = UserNames::new(Arc::new(|uid| {
            Ok(match uid {
                70 => UserLookup::Name("postgres".into()),
                _ => UserLookup::NoEntry,
            })
        }));
        u.resolve(
            &HashSet::from([70, 1000]),
            Instant::now() + Duration::from_secs(5),
        );
        u
    }

    /// The kernel's word on `socks`: ports of connected sockets taken by
    /// `connect()`, the others by `bind()`.
    fn sharing(socks: &[Socket]) -> PortSharing {
        let mut sh = PortSharing::new(0);
        for s in socks {
            sh.insert(s.port, has_peer(s));
        }
        sh
    }

    fn range() -> PortSet {
        PortSet::from_intervals(vec![(40000, 40199)])
    }

    #[test]
    fn tcp_headroom_is_the_range_less_unshared_less_the_busiest_destination() {
        let pg = owner(10, "pgbouncer");
        let mut socks = Vec::new();
        let mut holders = Vec::new();
        // 150 ports toward 10.0.0.5:5432, 100 held, 50 in TIME_WAIT.
        for i in 0..150u16 {
            let tw = i >= 100;
            socks.push(tcp(
                40000 + i,
                if tw { TCP_TIME_WAIT } else { TCP_ESTABLISHED },
                [10, 0, 0, 5],
                5432,
                if tw { 0 } else { 1000 + u64::from(i) },
            ));
            holders.push((!tw).then(|| pg.clone()));
        }
        // The same ports toward another destination: shared, not spent.
        for i in 0..30u16 {
            socks.push(tcp(
                40000 + i,
                TCP_ESTABLISHED,
                [10, 0, 0, 6],
                80,
                5000 + u64::from(i),
            ));
            holders.push(Some(owner(11, "curl")));
        }
        // A listener and a bound socket: gone for every destination; an
        // accepted connection on the listener's port adds nothing.
        socks.push(tcp(40190, TCP_LISTEN, [0, 0, 0, 0], 0, 9000));
        holders.push(Some(owner(12, "sshd")));
        socks.push(tcp(40191, TCP_CLOSE, [0, 0, 0, 0], 0, 9001));
        holders.push(None);
        socks.push(tcp(40190, TCP_ESTABLISHED, [10, 0, 0, 9], 51000, 9002));
        holders.push(Some(owner(12, "sshd")));
        // Outside the range, and UDP: not counted.
        socks.push(tcp(39999, TCP_ESTABLISHED, [10, 0, 0, 5], 5432, 9003));
        holders.push(Some(pg.clone()));
        let v = build_view(
            Protocol::Tcp,
            None,
            None,
            &range(),
            &socks,
            &holders,
            &users(),
            10,
            Some(&sharing(&socks)),
        );
        assert_eq!(v.ports(), 200);
        assert_eq!(v.in_use, 152);
        assert_eq!(v.unshared, 2);
        assert_eq!(v.free_min, 200 - 2 - 150);
        let count = |n: &str| v.states.iter().find(|(s, _)| *s == n).unwrap().1;
        assert_eq!(
            (
                count("established"),
                count("time_wait"),
                count("listen"),
                count("close")
            ),
            (131, 50, 1, 1)
        );
        assert_eq!(
            v.unattributed, 1,
            "the bound socket; TIME_WAIT has no owner to find"
        );
        assert_eq!(
            v.destinations_total, 2,
            "10.0.0.9 reached the listener: no destination of ours"
        );
        let d = &v.destinations[0];
        assert_eq!(
            (d.endpoint().as_str(), d.ports, d.sockets),
            ("10.0.0.5:5432", 150, 150)
        );
        assert_eq!(
            d.holder,
            Some(HolderCount {
                process: "pgbouncer".into(),
                user: "postgres".into(),
                sockets: 100
            })
        );
        assert_eq!((v.destinations[1].port, v.destinations[1].ports), (80, 30));
        let h: Vec<(&str, &str, u64)> = v
            .holders
            .iter()
            .map(|h| (h.process.as_str(), h.user.as_str(), h.sockets))
            .collect();
        assert_eq!(
            h,
            vec![
                ("pgbouncer", "postgres", 100),
                ("curl", "postgres", 30),
                ("sshd", "postgres", 2),
                ("unknown", "postgres", 1)
            ]
        );
        assert_eq!(
            summary(&v),
            "ephemeral tcp: 48 ports left toward 10.0.0.5:5432, held by pgbouncer (user postgres, 100)"
        );
    }

    #[test]
    fn udp_ports_in_use_are_gone_for_everyone() {
        let mut socks = Vec::new();
        for i in 0..120u16 {
            let mut s = tcp(40000 + i, TCP_CLOSE, [0, 0, 0, 0], 0, 100 + u64::from(i));
            s.protocol = Protocol::Udp;
            if i < 20 {
                s.state = TCP_ESTABLISHED;
                s.remote = IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8));
                s.remote_port = 53;
            }
            socks.push(s);
        }
        let holders = vec![Some(owner(5, "resolver")); socks.len()];
        let v = build_view(
            Protocol::Udp,
            None,
            None,
            &range(),
            &socks,
            &holders,
            &users(),
            10,
            Some(&sharing(&socks)),
        );
        assert_eq!((v.in_use, v.free_min), (120, 80));
        assert_eq!(v.states, vec![("unconn", 100), ("established", 20)]);
        assert_eq!(v.destinations[0].endpoint(), "8.8.8.8:53");
        assert_eq!(
            summary(&v),
            "ephemeral udp: 80 ports left toward 8.8.8.8:53, held by resolver (user postgres, 20)"
        );
    }

    #[test]
    fn holders_are_bounded_to_the_top_k_and_other() {
        let mut socks = Vec::new();
        let mut holders = Vec::new();
        // 40 owners, owner i holding i+1 sockets, each toward its own
        // destination; ids make several pids share a name.
        let mut port = 40000;
        for i in 0..40u32 {
            let o = owner(100 + i, &format!("p{}", i % 30));
            for _ in 0..=i {
                socks.push(tcp(
                    port,
                    TCP_ESTABLISHED,
                    [192, 0, 2, (i % 250) as u8],
                    1000 + i as u16,
                    u64::from(port),
                ));
                holders.push(Some(o.clone()));
                port += 1;
                if port > 40199 {
                    port = 40000;
                }
            }
        }
        let v = build_view(
            Protocol::Tcp,
            None,
            None,
            &range(),
            &socks,
            &holders,
            &users(),
            3,
            Some(&sharing(&socks)),
        );
        assert_eq!(v.holders.len(), 4);
        assert_eq!(v.holders[3].process, "other");
        let total: u64 = v.holders.iter().map(|h| h.sockets).sum();
        assert_eq!(
            total,
            socks.len() as u64,
            "every held socket is counted once"
        );
        // p9 is pids 109, 139 (10 + 40 sockets).
        assert_eq!(
            (v.holders[0].process.as_str(), v.holders[0].sockets),
            ("p9", 50)
        );
        assert!(v.destinations.len() <= TOP_DESTINATIONS);
        assert_eq!(v.destinations_total, 40);
    }

    #[test]
    fn mapped_ipv6_destinations_fold_into_ipv4_and_netns_filters() {
        let mut a = tcp(40001, TCP_ESTABLISHED, [10, 0, 0, 5], 5432, 1);
        a.remote = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 5).to_ipv6_mapped());
        let b = tcp(40002, TCP_ESTABLISHED, [10, 0, 0, 5], 5432, 2);
        let mut c = tcp(40003, TCP_ESTABLISHED, [10, 0, 0, 5], 5432, 3);
        c.netns = 7;
        let mut d = tcp(40004, TCP_ESTABLISHED, [0; 4], 443, 4);
        d.remote = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let socks = vec![a, b, c, d];
        let v = build_view(
            Protocol::Tcp,
            Some("host".into()),
            Some(0),
            &range(),
            &socks,
            &[],
            &users(),
            10,
            Some(&sharing(&socks)),
        );
        assert_eq!(v.destinations[0].endpoint(), "10.0.0.5:5432");
        assert_eq!(v.destinations[0].ports, 2, "netns 7's socket is not ours");
        assert_eq!(v.destinations[1].endpoint(), "[::1]:443");
        assert_eq!(v.unattributed, 3);
        assert_eq!(
            v.destinations[0].holder.as_ref().unwrap().process,
            "unknown"
        );
    }

    /// The TCP view of `socks` (no holders) in 40000-40199.
    fn tcp_view(socks: &[Socket], sharing: Option<&PortSharing>) -> EphemeralView {
        build_view(
            Protocol::Tcp,
            None,
            None,
            &range(),
            socks,
            &[],
            &users(),
            10,
            sharing,
        )
    }

    /// bindconn: 190 connections, each bind(("127.0.0.1", 0)) then
    /// connect() toward a destination of its own; connect() toward a new
    /// destination gets the 10 ports left.
    fn bind_before_connect() -> Vec<Socket> {
        (0..190u16)
            .map(|i| {
                tcp(
                    40000 + i,
                    TCP_ESTABLISHED,
                    [127, 0, 1, i as u8],
                    9000,
                    1 + u64::from(i),
                )
            })
            .collect()
    }

    #[test]
    fn ports_taken_by_bind_are_gone_for_every_destination() {
        let socks = bind_before_connect();
        let mut taken = PortSharing::new(0);
        for s in &socks {
            taken.insert(s.port, false);
        }
        let v = tcp_view(&socks, Some(&taken));
        assert_eq!(v.counting, Counting::Exact);
        assert_eq!((v.unshared, v.free_new, v.free_min), (190, 10, 10));
        assert_eq!((v.destinations[0].ports, v.destinations[0].free), (1, 10));
        // The same sockets with their ports taken by connect(): shared.
        let v = tcp_view(&socks, Some(&sharing(&socks)));
        assert_eq!((v.unshared, v.free_new, v.free_min), (0, 200, 199));
        assert_eq!(v.destinations[0].free, 199);
    }

    #[test]
    fn without_the_kernel_s_word_every_port_in_use_counts_against_every_destination() {
        let mut socks = bind_before_connect();
        // A port the walk did not see (a socket that came after it) is not
        // known to be shared either.
        socks.push(tcp(40195, TCP_ESTABLISHED, [10, 0, 0, 5], 5432, 500));
        socks.push(tcp(40196, TCP_ESTABLISHED, [10, 0, 0, 5], 5432, 501));
        let conservative = tcp_view(&socks, None);
        assert_eq!(conservative.counting, Counting::Conservative);
        assert_eq!(
            (
                conservative.in_use,
                conservative.unshared,
                conservative.free_new,
                conservative.free_min
            ),
            (192, 192, 8, 8)
        );
        assert_eq!(
            (
                conservative.destinations[0].endpoint().as_str(),
                conservative.destinations[0].free
            ),
            ("10.0.0.5:5432", 8),
            "the destination with the most ports is named"
        );
        let line = summary(&conservative);
        assert!(
            line.starts_with("ephemeral tcp: 8 ports left toward 10.0.0.5:5432")
                && line.ends_with(" (counted conservatively)"),
            "{line}"
        );
        let mut partial = sharing(&socks[..190]);
        partial.insert(40195, true);
        let v = tcp_view(&socks, Some(&partial));
        assert_eq!(
            (v.unshared, v.free_new, v.free_min),
            (1, 199, 198),
            "40196 is unknown: gone for everyone"
        );
        assert_eq!(v.destinations[0].endpoint(), "10.0.0.5:5432");
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(28200), "28,200");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
