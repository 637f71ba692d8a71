//! The `ranges` collector's judgement and its lines in `check`: each range
//! and protocol's free ports against the thresholds (the plugin range
//! syntax, percentages of the range's capacity: [`crate::threshold`]), an
//! ephemeral overlap and the setting that ends it, the unexpected
//! listeners grouped by owner and range (`owners.rs`: up to five owners
//! named, so one process with many ports hides no other), and the
//! listeners whose owner could not be seen or judged, with the privilege
//! that would show them. Also the performance data per range and
//! protocol, the long output's range table and listener tables (only what
//! needs a look, one row per owner and range; `-v`: every listener), and
//! the ranges and listeners of `check --output json`. Takes the views and
//! what the rest of the report says of them ([`Seen`]), never the whole
//! report or the configuration; [`crate::check`] puts the collectors'
//! judgements together. Pure.

use std::fmt::Write;

use serde_json::json;

use super::{Listener, RangeView, SinceOf};
use crate::allowlist::Expected;
use crate::netns::NetnsReport;
use crate::text::{plural, printable};
use crate::threshold::{Resolved, Status, Threshold, perf_label};

mod owners;
#[cfg(test)]
pub(crate) mod tests;

/// Rows (owners in a range) of unexpected and unknown listeners shown
/// without `-v`: the long output must fit NRPE's buffer even with
/// thousands of listeners.
pub const LISTENER_ROWS: usize = 20;

/// What the ranges' lines read besides the views: the namespaces (the
/// NETNS cells name them), since when the trail knows each listener, and
/// why owners could not be seen.
pub struct Seen<'a> {
    /// With `--collector.netns`: the namespaces; `None` without.
    pub netns: Option<&'a NetnsReport>,
    pub since: SinceOf<'a>,
    /// The privileges attribution lacks.
    pub missing_privileges: &'a [&'static str],
    /// The process scan was cut by the deadline.
    pub scan_cut: bool,
}

/// Why owners are unknown, and what the operator can do about it.
fn unknown_reason(seen: &Seen<'_>) -> String {
    if !seen.missing_privileges.is_empty() {
        format!(
            "cannot read other users' processes: {} or grant {}",
            crate::platform::RUN_PRIVILEGED,
            seen.missing_privileges.join(" and ")
        )
    } else if seen.scan_cut {
        "the process scan did not finish in time: raise -t".to_string()
    } else {
        crate::platform::UNSEEN_OWNER.to_string()
    }
}

/// Why the allowlist could not judge a listener whose process is known.
fn undecided_reason(seen: &Seen<'_>, l: &Listener) -> String {
    let exe_unreadable = l.owner().is_some_and(|o| o.exe.is_none());
    let mut why = Vec::new();
    if exe_unreadable {
        why.push("its executable cannot be read");
    }
    if &*l.user == "unknown" {
        why.push("its user's name was not resolved");
    }
    if why.is_empty() {
        why.push("what an entry asks about it could not be read");
    }
    let mut text = why.join(" and ");
    if exe_unreadable && !seen.missing_privileges.is_empty() {
        text.push_str(&format!(
            ": {} or grant {}",
            crate::platform::RUN_PRIVILEGED,
            seen.missing_privileges.join(" and ")
        ));
    }
    text
}

/// What the owner's executable says against it, for `check`'s lines:
/// `, executable gone` or `, renamed: runs python3.11`.
fn owner_marks(l: &Listener) -> String {
    if l.exe_gone() {
        ", executable gone".to_string()
    } else if let Some(file) = l.renamed_from() {
        format!(", renamed: runs {}", printable(&file))
    } else {
        String::new()
    }
}

/// The PROCESS cell: the name, marked when its executable is gone.
fn process_cell(l: &Listener) -> String {
    if l.exe_gone() {
        format!("{} (executable gone)", printable(&l.process()))
    } else {
        printable(&l.process())
    }
}

fn and_more(n: usize) -> String {
    if n > 1 {
        format!(", and {} more", n - 1)
    } else {
        String::new()
    }
}

fn address(l: &Listener) -> String {
    match l.address {
        std::net::IpAddr::V6(a) => format!("[{a}]:{}", l.port),
        std::net::IpAddr::V4(a) => format!("{a}:{}", l.port),
    }
}

/// One range and protocol, judged.
struct Judged<'a> {
    stats: &'a RangeView,
    /// Free ports that can be bound: none in use, none excluded.
    free: u32,
    warning: Resolved,
    critical: Resolved,
}

/// The verdict on the ranges: a status and the first line's reasons in
/// three kinds (`check` puts the other collectors' critical reasons after
/// [`Verdict::critical`], their warnings after [`Verdict::warning`], and
/// what the collection skipped before [`Verdict::unseen`]).
pub struct Verdict<'a> {
    pub status: Status,
    /// The unexpected listeners, then the full ranges.
    pub critical: Vec<String>,
    /// Ranges short of free ports, then overlaps with the dynamic range.
    pub warning: Vec<String>,
    /// Listeners whose owner could not be found, then those the allowlist
    /// could not judge.
    pub unseen: Vec<String>,
    ranges: Vec<Judged<'a>>,
    /// Every listener, in `check`'s order.
    listeners: Vec<&'a Listener>,
}

/// The NETNS cell: the label, with the `ip netns` name, the pod or the
/// container when known.
fn netns_cell(seen: &Seen<'_>, label: Option<&str>) -> String {
    let label = label.unwrap_or("-");
    let info = seen
        .netns
        .and_then(|n| n.namespaces.iter().find(|i| i.label == label));
    match info {
        Some(i) if !i.name.is_empty() => format!("{label} ({})", i.name),
        Some(i) if !i.pod.is_empty() => format!("{label} ({}/{})", i.namespace, i.pod),
        Some(i) if !i.container.is_empty() => {
            let short: String = i.container.chars().take(12).collect();
            format!("{label} (container {short})")
        }
        _ => label.to_string(),
    }
}

/// " in netns X" for a per-namespace report, else nothing.
fn where_(label: Option<&str>) -> String {
    label.map_or(String::new(), |l| format!(" in netns {l}"))
}

/// Every listener, by range, protocol, port, address, owner and verdict
/// (per namespace, the host's first).
fn listeners(views: &[RangeView]) -> Vec<&Listener> {
    let mut all: Vec<&Listener> = views.iter().flat_map(|r| r.listeners.iter()).collect();
    all.sort_by(|a, b| {
        (&a.range, a.protocol, a.port, a.address)
            .cmp(&(&b.range, b.protocol, b.port, b.address))
            .then_with(|| a.process_name().cmp(&b.process_name()))
            .then_with(|| (&a.user, a.expected).cmp(&(&b.user, b.expected)))
    });
    all
}

/// Judges every view against the free-port thresholds, and every listener.
pub fn judge<'a>(
    views: &'a [RangeView],
    seen: &Seen<'_>,
    warning: &Threshold,
    critical: &Threshold,
) -> Verdict<'a> {
    let all = listeners(views);
    let mut v = Verdict {
        status: Status::Ok,
        critical: Vec::new(),
        warning: Vec::new(),
        unseen: Vec::new(),
        ranges: Vec::new(),
        listeners: Vec::new(),
    };
    if let Some(reason) = owners::unexpected_reason(&all) {
        v.status = Status::Critical;
        v.critical.push(reason);
    }
    for r in views {
        // Free-looking ports in an excluded range (Windows) cannot be bound.
        let excluded = r.excluded_free().unwrap_or(0);
        let free = r.free().saturating_sub(excluded);
        let and_excluded = if excluded > 0 {
            format!(", {excluded} excluded")
        } else {
            String::new()
        };
        let j = Judged {
            stats: r,
            free,
            warning: warning.resolve(r.ports()),
            critical: critical.resolve(r.ports()),
        };
        let name = format!("{}/{}{}", r.range, r.protocol, where_(r.netns.as_deref()));
        if j.critical.alerts(f64::from(free)) {
            v.status = v.status.max(Status::Critical);
            v.critical.push(if free == 0 {
                format!(
                    "{name} is full ({} of {} ports in use{and_excluded})",
                    r.in_use,
                    r.ports()
                )
            } else {
                format!(
                    "{name} has {free} of {} ports free{and_excluded} (critical {})",
                    r.ports(),
                    critical.as_str()
                )
            });
        } else if j.warning.alerts(f64::from(free)) {
            v.status = v.status.max(Status::Warning);
            v.warning.push(format!(
                "{name} has {free} of {} ports free{and_excluded} (warning {})",
                r.ports(),
                warning.as_str()
            ));
        }
        if let Some(n) = r.ephemeral_overlap.filter(|n| *n > 0) {
            v.status = v.status.max(Status::Warning);
            v.warning.push(format!(
                "{name}: {} in the ephemeral port range, where outgoing connections can take them ({})",
                plural(n as usize, "port is", "ports are"),
                crate::platform::reserve_ports_fix(&r.spec, r.protocol)
            ));
        }
        v.ranges.push(j);
    }
    // Unknown listeners come in two kinds that need different words: no
    // process was found for the socket, or the process is known but the
    // allowlist could not decide (its exe unreadable, its user unresolved).
    let (unowned, undecided): (Vec<&Listener>, Vec<&Listener>) = all
        .iter()
        .copied()
        .filter(|l| l.expected == Expected::Unknown)
        .partition(|l| l.holder.is_none());
    if let Some(first) = unowned.first() {
        // What the exporter cannot see is never fine.
        v.status = v.status.max(Status::Warning);
        v.unseen.push(format!(
            "{} ({} {} in {}{}; {})",
            plural(
                unowned.len(),
                "listener with unknown owner",
                "listeners with unknown owner"
            ),
            first.protocol,
            address(first),
            first.range,
            and_more(unowned.len()),
            unknown_reason(seen)
        ));
    }
    if let Some(first) = undecided.first() {
        v.status = v.status.max(Status::Warning);
        v.unseen.push(format!(
            "{} ({} {} in {} held by {}{}; {})",
            plural(
                undecided.len(),
                "listener the allowlist cannot judge",
                "listeners the allowlist cannot judge"
            ),
            first.protocol,
            address(first),
            first.range,
            printable(&first.process_name()),
            and_more(undecided.len()),
            undecided_reason(seen, first)
        ));
    }
    v.listeners = all;
    v
}

impl Verdict<'_> {
    /// The first line's summary when nothing is wrong.
    pub fn all_clear(&self) -> String {
        let total_free: u32 = self.ranges.iter().map(|j| j.free).sum();
        format!(
            "{} range/protocol pairs, {total_free} ports free, no unexpected listener",
            self.ranges.len()
        )
    }

    /// Performance data: in use, free, unexpected and unknown listeners
    /// per range and protocol, with thresholds and min/max.
    pub fn perfdata(&self) -> Vec<String> {
        let mut parts = Vec::new();
        for j in &self.ranges {
            let r = j.stats;
            let base = match &r.netns {
                Some(n) => format!("{}_{}_{n}", r.range, r.protocol),
                None => format!("{}_{}", r.range, r.protocol),
            };
            parts.push(format!(
                "{}={};;;0;{}",
                perf_label(&format!("{base}_in_use")),
                r.in_use,
                r.ports()
            ));
            parts.push(format!(
                "{}={};{};{};0;{}",
                perf_label(&format!("{base}_free")),
                j.free,
                j.warning.perf(),
                j.critical.perf(),
                r.ports()
            ));
            parts.push(format!(
                "{}={};;0;0;",
                perf_label(&format!("{base}_unexpected")),
                r.unexpected
            ));
            parts.push(format!(
                "{}={};0;;0;",
                perf_label(&format!("{base}_unknown")),
                r.unknown
            ));
        }
        parts
    }

    /// The long output's part: the range table, then the listeners that
    /// need a look by owner and range (`verbosity` 1 and up: every
    /// listener, one by one).
    pub fn long_output(&self, out: &mut String, seen: &Seen<'_>, verbosity: u8) {
        let per_netns = seen.netns.is_some();
        // An EXCLUDED column only where the platform has excluded ranges
        // (Windows); FREE is then what can still be bound.
        let show_excluded = self.ranges.iter().any(|j| j.stats.excluded.is_some());
        let mut head = vec![
            "RANGE".to_string(),
            "PROTOCOL".into(),
            "PORTS".into(),
            "IN USE".into(),
            "FREE".into(),
        ];
        if show_excluded {
            head.push("EXCLUDED".into());
        }
        head.extend(["UNEXPECTED".to_string(), "UNKNOWN".into()]);
        let mut rows = vec![netns_first(per_netns, "NETNS", head)];
        for j in &self.ranges {
            let r = j.stats;
            let mut row = vec![
                r.range.clone(),
                r.protocol.to_string(),
                r.ports().to_string(),
                r.in_use.to_string(),
                j.free.to_string(),
            ];
            if show_excluded {
                row.push(r.excluded_free().map_or("?".to_string(), |n| n.to_string()));
            }
            row.extend([r.unexpected.to_string(), r.unknown.to_string()]);
            rows.push(netns_first(
                per_netns,
                &netns_cell(seen, r.netns.as_deref()),
                row,
            ));
        }
        let right = [false, false, true, true, true, true, true, true];
        table(out, &rows, &netns_first_align(per_netns, &right));

        let all = &self.listeners;
        let needs_look = |l: &&Listener| l.expected != Expected::True;
        let flagged = all.iter().copied().filter(needs_look).count();
        let allowed = all.len() - flagged;
        let _ = writeln!(out);
        if verbosity >= 1 {
            if all.is_empty() {
                let _ = writeln!(out, "No listeners in the watched ranges.");
            } else {
                let _ = writeln!(out, "Listeners:");
                listener_table(out, seen, all.iter().copied());
            }
        } else if flagged == 0 {
            let _ = writeln!(
                out,
                "No unexpected or unknown listeners ({}; -v lists them).",
                plural(allowed, "allowed listener", "allowed listeners")
            );
        } else {
            let _ = writeln!(out, "Unexpected and unknown listeners, by owner and range:");
            let flagged: Vec<&Listener> = all.iter().copied().filter(needs_look).collect();
            owners::table(out, seen, &flagged, LISTENER_ROWS);
            if allowed > 0 {
                let _ = writeln!(
                    out,
                    "{} not shown (-v lists them).",
                    plural(allowed, "allowed listener", "allowed listeners")
                );
            }
        }
    }
}

/// `check --output json`'s `ranges`: per range and protocol the counts
/// and the thresholds as performance data writes them.
pub fn json_ranges(
    views: &[RangeView],
    warning: &Threshold,
    critical: &Threshold,
) -> Vec<serde_json::Value> {
    views
        .iter()
        .map(|r| {
            let states: serde_json::Map<String, serde_json::Value> = r
                .states
                .iter()
                .map(|(s, n)| ((*s).to_string(), json!(n)))
                .collect();
            json!({
                "range": r.range,
                "netns": r.netns,
                "protocol": r.protocol.as_str(),
                "ports": r.ports(),
                "in_use": r.in_use,
                "free": r.free(),
                "unexpected_listeners": r.unexpected,
                "unattributed_sockets": r.unattributed,
                "ephemeral_overlap_ports": r.ephemeral_overlap,
                "excluded_ports": r.excluded_free(),
                "sockets": states,
                "ports_in_use": r.per_port.then_some(&r.in_use_ports),
                "warning": warning.resolve(r.ports()).perf(),
                "critical": critical.resolve(r.ports()).perf(),
            })
        })
        .collect()
}

/// `check --output json`'s `listeners`: every one, allowed ones too, with
/// the executable's path.
pub fn json_listeners(views: &[RangeView], since: SinceOf<'_>) -> Vec<serde_json::Value> {
    listeners(views)
        .into_iter()
        .map(|l| {
            let owner = l.owner();
            json!({
                "range": l.range,
                "netns": l.netns,
                "protocol": l.protocol.as_str(),
                "address": l.address.to_string(),
                "port": l.port,
                "process": l.process(),
                "pid": owner.map(|o| o.pid),
                "exe": owner.and_then(|o| o.exe.as_ref()).map(|e| String::from_utf8_lossy(e).into_owned()),
                "kernel": l.is_kernel(),
                "exe_gone": l.exe_gone(),
                "user": l.user,
                "expected": l.expected.as_str(),
                "since": since(l).map(|(unix, source)| json!({
                    "time": crate::text::rfc3339_unix(unix),
                    "source": source,
                })),
            })
        })
        .collect()
}

/// A row with a NETNS cell first, when the report is per namespace.
fn netns_first(per_netns: bool, cell: &str, row: Vec<String>) -> Vec<String> {
    if per_netns {
        std::iter::once(cell.to_string()).chain(row).collect()
    } else {
        row
    }
}

fn netns_first_align(per_netns: bool, right: &[bool]) -> Vec<bool> {
    if per_netns {
        std::iter::once(false)
            .chain(right.iter().copied())
            .collect()
    } else {
        right.to_vec()
    }
}

fn listener_table<'a>(
    out: &mut String,
    seen: &Seen<'_>,
    listeners: impl Iterator<Item = &'a Listener>,
) {
    let per_netns = seen.netns.is_some();
    let listeners: Vec<&Listener> = listeners.collect();
    // The SINCE column where the trail knows a time for any of them.
    let since = listeners.iter().any(|l| (seen.since)(l).is_some());
    let mut head = vec![
        "PROTOCOL".to_string(),
        "ADDRESS:PORT".into(),
        "PROCESS".into(),
        "PID".into(),
        "USER".into(),
        "EXPECTED".into(),
        "RANGE".into(),
    ];
    if since {
        head.push("SINCE".into());
    }
    let mut rows = vec![netns_first(per_netns, "NETNS", head)];
    for l in listeners {
        let mut row = vec![
            l.protocol.to_string(),
            address(l),
            process_cell(l),
            l.owner().map_or("-".to_string(), |o| o.pid.to_string()),
            printable(&l.user),
            l.expected.as_str().to_string(),
            l.range.to_string(),
        ];
        if since {
            row.push(since_text(seen, l));
        }
        rows.push(netns_first(
            per_netns,
            &netns_cell(seen, l.netns.as_deref()),
            row,
        ));
    }
    let right = [false, false, false, true, false, false, false, false];
    let right = &right[..if since { 8 } else { 7 }];
    table(out, &rows, &netns_first_align(per_netns, right));
}

/// Since when a listener is known: its process's start time for `check`
/// (`2026-12-02T20:01:02Z (process start)`: the listener is no older), the
/// time the exporter first saw it otherwise; `-` where unknown.
fn since_text(seen: &Seen<'_>, l: &Listener) -> String {
    match (seen.since)(l) {
        Some((unix, source)) => format!(
            "{} ({})",
            crate::text::rfc3339_unix(unix),
            source.replace('_', " ")
        ),
        None => "-".to_string(),
    }
}

fn table(out: &mut String, rows: &[Vec<String>], right: &[bool]) {
    let cols = rows[0].len();
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            if c > 0 {
                line.push_str("  ");
            }
            if right[c] {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                if c + 1 < cols {
                    line.push_str(&" ".repeat(pad));
                }
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}
