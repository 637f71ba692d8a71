//! The `ranges` collector's section of the status document
//! (`/api/v1/status`, [`crate::status`]): per range and protocol its
//! counts and the state of every port that is not free (ranked by the
//! worst-state rule, [`PortState`]), and the listeners, unexpected first.
//! It carries what `check` shows and never more: no executable paths, no
//! pids but the owners'. Takes the views and since when the trail knows
//! each listener ([`SinceOf`]), never the whole report. The state names are
//! the `data-state` values of the port map page's cells.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;

use super::{Listener, RangeView, SinceOf};
use crate::allowlist::Expected;
use crate::platform::Holder;

#[cfg(test)]
pub(crate) mod tests;

/// The state of one port, ranked: a port with several sockets takes the
/// highest (unexpected > unknown > kernel not allowed > kernel allowed >
/// expected > in use). `Free` and `Reserved` are never listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PortState {
    InUse,
    Expected,
    KernelAllowed,
    KernelNotAllowed,
    Unknown,
    Unexpected,
}

impl PortState {
    /// The name used in the JSON and in the page's `data-state`.
    pub fn name(self) -> &'static str {
        match self {
            PortState::InUse => "in_use",
            PortState::Expected => "expected",
            PortState::KernelAllowed | PortState::KernelNotAllowed => "kernel",
            PortState::Unknown => "unknown",
            PortState::Unexpected => "unexpected",
        }
    }

    /// The state a listener gives its port. A kernel-held socket is
    /// `kernel`, allowed only when the allowlist says so (a verdict of
    /// "unknown" is not allowed); a process or an unfound owner follows the
    /// verdict.
    pub fn of(l: &Listener) -> PortState {
        match (&l.holder, l.expected) {
            (Some(Holder::Kernel { .. }), Expected::True) => PortState::KernelAllowed,
            (Some(Holder::Kernel { .. }), _) => PortState::KernelNotAllowed,
            (_, Expected::True) => PortState::Expected,
            (_, Expected::False) => PortState::Unexpected,
            (_, Expected::Unknown) => PortState::Unknown,
        }
    }
}

/// The section: the document's `ranges` and `listeners`.
pub struct Section<'a> {
    pub ranges: Vec<RangeJson<'a>>,
    pub listeners: Vec<ListenerJson<'a>>,
}

#[derive(Serialize)]
pub struct RangeJson<'a> {
    range: &'a str,
    protocol: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    netns: Option<&'a str>,
    spec: String,
    intervals: Vec<[u16; 2]>,
    ports: u32,
    in_use: u32,
    free: u32,
    unexpected: u64,
    unknown: u64,
    unattributed: u64,
    ephemeral_overlap: Option<u32>,
    /// With an overlap: the exact setting that reserves the range's ports.
    #[serde(skip_serializing_if = "Option::is_none")]
    ephemeral_fix: Option<String>,
    used: Vec<UsedJson>,
    reserved: Vec<[u16; 2]>,
}

#[derive(Serialize)]
struct UsedJson {
    port: u16,
    state: &'static str,
    owner: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed: Option<bool>,
    /// Since when the port's longest-known listener is known (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<String>,
}

#[derive(Serialize)]
pub struct ListenerJson<'a> {
    range: &'a str,
    protocol: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    netns: Option<&'a str>,
    address: String,
    port: u16,
    process: Cow<'a, str>,
    pid: Option<u32>,
    user: &'a str,
    expected: &'static str,
    kernel: bool,
    /// The owner's executable is gone (deleted, or an anonymous memory
    /// file); left out when it is not.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    exe_gone: bool,
    /// Since when the trail knows the listener (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<String>,
}

/// Owners named per port at most; the rest are counted.
const OWNERS_NAMED: usize = 3;

/// Who holds a listener, as the page's tooltip says it:
/// `CtxGfx (pid 812, user citrix)`, `kernel (vxlan0)`, `unknown (user 1001)`.
pub fn owner_text(l: &Listener) -> String {
    match &l.holder {
        Some(Holder::Process(o)) => format!(
            "{} (pid {}, user {}{})",
            l.process_name(),
            o.pid,
            l.user,
            if l.exe_gone() {
                ", executable gone"
            } else {
                ""
            }
        ),
        Some(Holder::Kernel { .. }) => l.process(),
        None => format!("unknown (user {})", l.user),
    }
}

/// The per-port states of one range and protocol: every port in use, with
/// the worst state of its listeners (`in_use` when it has none).
fn used_ports(stats: &RangeView, listeners: &[&Listener]) -> Vec<UsedJson> {
    let mut by_port: BTreeMap<u16, (PortState, Vec<String>)> = stats
        .in_use_ports
        .iter()
        .map(|&p| (p, (PortState::InUse, Vec::new())))
        .collect();
    for l in listeners {
        let state = PortState::of(l);
        let slot = by_port
            .entry(l.port)
            .or_insert((PortState::InUse, Vec::new()));
        if state > slot.0 {
            *slot = (state, Vec::new());
        }
        if state == slot.0 {
            let owner = owner_text(l);
            if !slot.1.contains(&owner) {
                slot.1.push(owner);
            }
        }
    }
    by_port
        .into_iter()
        .map(|(port, (state, owners))| {
            let mut owner = owners
                .iter()
                .take(OWNERS_NAMED)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ");
            if owners.len() > OWNERS_NAMED {
                owner.push_str(&format!(" and {} more", owners.len() - OWNERS_NAMED));
            }
            UsedJson {
                port,
                state: state.name(),
                owner,
                allowed: match state {
                    PortState::KernelAllowed => Some(true),
                    PortState::KernelNotAllowed => Some(false),
                    _ => None,
                },
                since: None,
            }
        })
        .collect()
}

/// The listener table's order: unexpected, unknown, kernel-held, expected;
/// then by port.
fn kind_rank(l: &Listener) -> u8 {
    if l.is_kernel() {
        return 2;
    }
    match l.expected {
        Expected::False => 0,
        Expected::Unknown => 1,
        Expected::True => 3,
    }
}

fn intervals(set: &crate::ranges::PortSet) -> Vec<[u16; 2]> {
    set.intervals().iter().map(|&(a, b)| [a, b]).collect()
}

/// Adds to each port in use the earliest "since" of its listeners (the
/// cell's tooltip says it).
fn with_since(
    mut used: Vec<UsedJson>,
    listeners: &[&Listener],
    since: SinceOf<'_>,
) -> Vec<UsedJson> {
    let mut first: BTreeMap<u16, f64> = BTreeMap::new();
    for l in listeners {
        if let Some((unix, _)) = since(l) {
            let e = first.entry(l.port).or_insert(unix);
            *e = e.min(unix);
        }
    }
    for u in &mut used {
        u.since = first.get(&u.port).map(|&t| crate::text::rfc3339_unix(t));
    }
    used
}

/// The section of `views` (none when the sample failed: without a sample
/// there is no map to draw).
pub fn section<'a>(views: &'a [RangeView], since: SinceOf<'_>) -> Section<'a> {
    let ranges = views
        .iter()
        .map(|r| {
            let listeners: Vec<&Listener> = r.listeners.iter().collect();
            RangeJson {
                range: &r.range,
                protocol: r.protocol.as_str(),
                netns: r.netns.as_deref(),
                spec: r.spec.to_string(),
                intervals: intervals(&r.spec),
                ports: r.ports(),
                in_use: r.in_use,
                free: r.free(),
                unexpected: r.unexpected,
                unknown: r.unknown,
                unattributed: r.unattributed,
                ephemeral_overlap: r.ephemeral_overlap,
                ephemeral_fix: r
                    .ephemeral_overlap
                    .filter(|n| *n > 0)
                    .map(|_| crate::platform::reserve_ports_fix(&r.spec, r.protocol)),
                used: with_since(used_ports(r, &listeners), &listeners, since),
                // The page calls the excluded ports "reserved".
                reserved: r.excluded.as_ref().map_or_else(Vec::new, intervals),
            }
        })
        .collect();
    let mut listeners: Vec<&Listener> = views.iter().flat_map(|r| &r.listeners).collect();
    listeners.sort_by_key(|l| (kind_rank(l), l.port));
    let listeners = listeners
        .into_iter()
        .map(|l| ListenerJson {
            range: &l.range,
            protocol: l.protocol.as_str(),
            netns: l.netns.as_deref(),
            address: l.address.to_string(),
            port: l.port,
            process: l.process_name(),
            pid: l.owner().map(|o| o.pid),
            user: &l.user,
            expected: l.expected.as_str(),
            kernel: l.is_kernel(),
            exe_gone: l.exe_gone(),
            since: since(l).map(|(unix, _)| crate::text::rfc3339_unix(unix)),
        })
        .collect();
    Section { ranges, listeners }
}
