//! The one-shot `check` command, a Nagios plugin after the monitoring
//! plugins guidelines (<https://nagios-plugins.org/doc/guidelines.html>):
//! one collection, exit codes 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. The
//! first line names what is wrong (the unexpected listeners grouped by
//! owner and range, [`owners`]: up to five owners named, so one process
//! with many ports hides no other; a full range; an ephemeral overlap and
//! the setting that ends it; owners that could not be seen and the
//! privilege that would show them)
//! and carries performance data after `|` for every range and protocol.
//! The long output lists the ranges and only the listeners that need a
//! look (unexpected or unknown), one row per owner and range; `-v` lists
//! every listener, `-vv` adds the attribution counters. Free-port thresholds use the guidelines' range
//! syntax, with percentages of the range's capacity ([`threshold`], apart
//! from the rendering here). `--output json`
//! prints the whole report for scripts. With `--collector.netns` the
//! tables gain a NETNS column, ranges are named with their namespace, and
//! a namespace that could not be sampled is a WARNING, as is any part the
//! collection had to leave out (listed in the long output). A pure
//! projection of the [`Report`]: nothing here reads the configuration or
//! touches the OS.

use std::fmt::Write;

pub mod ephemeral;
mod headline;
mod json;
mod owners;
mod threshold;

pub use headline::headline;
pub use json::render_json;
pub use threshold::{Resolved, Threshold, perf_label};

use crate::allowlist::Expected;
use crate::config::ConfigWarning;
use crate::report::{Listener, RangeView, Report};

/// Nagios plugin states, as exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::Critical => "CRITICAL",
            Status::Unknown => "UNKNOWN",
        }
    }
}

/// How `check` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// First line, performance data and a readable table.
    Text,
    /// The whole report as one JSON document.
    Json,
}

/// What `check` was asked for.
#[derive(Clone, Debug)]
pub struct Options {
    /// On free ports.
    pub warning: Threshold,
    pub critical: Threshold,
    /// `-v` count.
    pub verbosity: u8,
    /// On the dynamic range's headroom toward the busiest destination.
    pub ephemeral_warning: Threshold,
    pub ephemeral_critical: Threshold,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            warning: "10%:".parse().expect("a valid default"),
            critical: "1:".parse().expect("a valid default"),
            verbosity: 0,
            ephemeral_warning: ephemeral::default_warning(),
            ephemeral_critical: ephemeral::default_critical(),
        }
    }
}

/// Rows (owners in a range) of unexpected and unknown listeners shown
/// without `-v`: the long output must fit NRPE's buffer even with
/// thousands of listeners.
pub const LISTENER_ROWS: usize = 20;

pub use crate::text::printable;

/// Why owners are unknown, and what the operator can do about it.
fn unknown_reason(report: &Report) -> String {
    if !report.missing_privileges.is_empty() {
        format!(
            "cannot read other users' processes: {} or grant {}",
            crate::platform::RUN_PRIVILEGED,
            report.missing_privileges.join(" and ")
        )
    } else if report.attribution.deadline_hit {
        "the process scan did not finish in time: raise -t".to_string()
    } else {
        crate::platform::UNSEEN_OWNER.to_string()
    }
}

/// Why the allowlist could not judge a listener whose process is known.
fn undecided_reason(report: &Report, l: &Listener) -> String {
    let exe_unreadable = l.owner().is_some_and(|o| o.exe.is_none());
    let mut why = Vec::new();
    if exe_unreadable {
        why.push("its executable cannot be read");
    }
    if l.user == "unknown" {
        why.push("its user's name was not resolved");
    }
    if why.is_empty() {
        why.push("what an entry asks about it could not be read");
    }
    let mut text = why.join(" and ");
    if exe_unreadable && !report.missing_privileges.is_empty() {
        text.push_str(&format!(
            ": {} or grant {}",
            crate::platform::RUN_PRIVILEGED,
            report.missing_privileges.join(" and ")
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

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// One range and protocol, judged.
struct Judged<'a> {
    stats: &'a RangeView,
    /// Free ports that can be bound: none in use, none excluded.
    free: u32,
    warning: Resolved,
    critical: Resolved,
}

/// The verdict: status, the first line's reasons, and the judged ranges.
struct Verdict<'a> {
    status: Status,
    reasons: Vec<String>,
    ranges: Vec<Judged<'a>>,
}

/// The NETNS cell: the label, with the `ip netns` name, the pod or the
/// container when known.
fn netns_cell(report: &Report, label: Option<&str>) -> String {
    let label = label.unwrap_or("-");
    let info = report
        .netns
        .as_ref()
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
fn listeners(report: &Report) -> Vec<&Listener> {
    let mut all: Vec<&Listener> = report.listeners().collect();
    all.sort_by(|a, b| {
        (&a.range, a.protocol, a.port, a.address)
            .cmp(&(&b.range, b.protocol, b.port, b.address))
            .then_with(|| a.process_name().cmp(&b.process_name()))
            .then_with(|| (&a.user, a.expected).cmp(&(&b.user, b.expected)))
    });
    all
}

fn judge<'a>(report: &'a Report, all: &[&'a Listener], opts: &Options) -> Verdict<'a> {
    let mut status = Status::Ok;
    let mut reasons = Vec::new();
    if let Some(reason) = owners::unexpected_reason(all) {
        status = Status::Critical;
        reasons.push(reason);
    }
    let mut ranges = Vec::new();
    let mut range_reasons = (Vec::new(), Vec::new());
    for r in &report.ranges {
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
            warning: opts.warning.resolve(r.ports()),
            critical: opts.critical.resolve(r.ports()),
        };
        let name = format!("{}/{}{}", r.range, r.protocol, where_(r.netns.as_deref()));
        if j.critical.alerts(f64::from(free)) {
            status = status.max(Status::Critical);
            range_reasons.0.push(if free == 0 {
                format!(
                    "{name} is full ({} of {} ports in use{and_excluded})",
                    r.in_use,
                    r.ports()
                )
            } else {
                format!(
                    "{name} has {free} of {} ports free{and_excluded} (critical {})",
                    r.ports(),
                    opts.critical.as_str()
                )
            });
        } else if j.warning.alerts(f64::from(free)) {
            status = status.max(Status::Warning);
            range_reasons.1.push(format!(
                "{name} has {free} of {} ports free{and_excluded} (warning {})",
                r.ports(),
                opts.warning.as_str()
            ));
        }
        if let Some(n) = r.ephemeral_overlap.filter(|n| *n > 0) {
            status = status.max(Status::Warning);
            range_reasons.1.push(format!(
                "{name}: {} in the ephemeral port range, where outgoing connections can take them ({})",
                plural(n as usize, "port is", "ports are"),
                crate::platform::reserve_ports_fix(&r.spec, r.protocol)
            ));
        }
        ranges.push(j);
    }
    let eph = ephemeral::judge(
        report.ephemeral.as_ref(),
        &opts.ephemeral_warning,
        &opts.ephemeral_critical,
    );
    status = status.max(eph.status);
    range_reasons.0.extend(eph.critical);
    range_reasons.1.extend(eph.warning);
    reasons.extend(range_reasons.0);
    reasons.extend(range_reasons.1);
    if let Some(n) = report.netns.as_ref().filter(|n| n.unsampled > 0) {
        // What the exporter cannot see is never fine.
        status = status.max(Status::Warning);
        reasons.push(format!(
            "{} could not be sampled",
            plural(
                n.unsampled as usize,
                "network namespace",
                "network namespaces"
            )
        ));
    }
    if let Some(first) = report.skipped.first() {
        // What the exporter cannot see is never fine.
        status = status.max(Status::Warning);
        let more = report.skipped.len() - 1;
        reasons.push(format!(
            "the collection left {} out, so what {} is unknown ({}: {}{})",
            plural(report.skipped.len(), "part", "parts"),
            if more > 0 { "they hold" } else { "it holds" },
            printable(&first.what),
            printable(&first.reason),
            if more > 0 {
                format!(", and {more} more")
            } else {
                String::new()
            }
        ));
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
        status = status.max(Status::Warning);
        reasons.push(format!(
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
            unknown_reason(report)
        ));
    }
    if let Some(first) = undecided.first() {
        status = status.max(Status::Warning);
        reasons.push(format!(
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
            undecided_reason(report, first)
        ));
    }
    Verdict {
        status,
        reasons,
        ranges,
    }
}

/// Performance data: in use, free, unexpected and unknown listeners per
/// range and protocol, with thresholds and min/max.
fn perfdata(ranges: &[Judged]) -> String {
    let mut parts = Vec::new();
    for j in ranges {
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
    parts.join(" ")
}

/// Renders the report as plugin output and decides the status.
/// `warnings` are the configuration's (shown, never a status of their own).
pub fn render(report: &Report, warnings: &[ConfigWarning], opts: &Options) -> (Status, String) {
    let mut out = String::new();
    if let Some(e) = &report.error {
        let _ = writeln!(
            out,
            "PORTRANGE UNKNOWN - sockets could not be sampled: {}",
            printable(e)
        );
        return (Status::Unknown, out);
    }
    let all = listeners(report);
    let v = judge(report, &all, opts);
    let summary = if v.reasons.is_empty() {
        let total_free: u32 = v.ranges.iter().map(|j| j.free).sum();
        format!(
            "{} range/protocol pairs, {total_free} ports free, no unexpected listener",
            report.ranges.len()
        )
    } else {
        v.reasons.join("; ")
    };
    let mut perf = perfdata(&v.ranges);
    let eph = ephemeral::judge(
        report.ephemeral.as_ref(),
        &opts.ephemeral_warning,
        &opts.ephemeral_critical,
    );
    for p in eph.perfdata {
        if !perf.is_empty() {
            perf.push(' ');
        }
        perf.push_str(&p);
    }
    let _ = writeln!(
        out,
        "PORTRANGE {} - {summary}{}",
        v.status.label(),
        if perf.is_empty() {
            String::new()
        } else {
            format!(" | {perf}")
        }
    );
    let _ = writeln!(out);

    let per_netns = report.netns.is_some();
    // An EXCLUDED column only where the platform has excluded ranges
    // (Windows); FREE is then what can still be bound.
    let show_excluded = report.ranges.iter().any(|r| r.excluded.is_some());
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
    for j in &v.ranges {
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
            &netns_cell(report, r.netns.as_deref()),
            row,
        ));
    }
    let right = [false, false, true, true, true, true, true, true];
    table(&mut out, &rows, &netns_first_align(per_netns, &right));

    let needs_look = |l: &&Listener| l.expected != Expected::True;
    let flagged = all.iter().copied().filter(needs_look).count();
    let allowed = all.len() - flagged;
    let _ = writeln!(out);
    if opts.verbosity >= 1 {
        if all.is_empty() {
            let _ = writeln!(out, "No listeners in the watched ranges.");
        } else {
            let _ = writeln!(out, "Listeners:");
            listener_table(&mut out, report, all.iter().copied());
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
        owners::table(&mut out, report, &flagged, LISTENER_ROWS);
        if allowed > 0 {
            let _ = writeln!(
                out,
                "{} not shown (-v lists them).",
                plural(allowed, "allowed listener", "allowed listeners")
            );
        }
    }
    ephemeral::long_output(&mut out, report.ephemeral.as_ref());
    if !report.skipped.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Left out of this collection (what they hold is unknown):"
        );
        for s in &report.skipped {
            let _ = writeln!(out, "{}", printable(&s.to_string()));
        }
    }
    let traffic = crate::traffic::check_lines(report.traffic.as_ref());
    if !traffic.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "Traffic to closed ports:");
        for line in traffic {
            let _ = writeln!(out, "{line}");
        }
    }
    if !warnings.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "Configuration warnings:");
        for w in warnings {
            let _ = writeln!(out, "{}", printable(&w.to_string()));
        }
    }
    if opts.verbosity >= 2 {
        let a = &report.attribution;
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Collection: {:.3} s; owners confirmed from cache {}, sockets searched {}, processes scanned {}, \
             processes unreadable {}, kernel-held {}, scan cut by the deadline {}",
            report.duration.as_secs_f64(),
            a.confirmed,
            a.searched,
            a.processes_scanned,
            a.permission_denied,
            a.kernel,
            if a.deadline_hit { "yes" } else { "no" }
        );
        if !report.missing_privileges.is_empty() {
            let _ = writeln!(
                out,
                "Missing privileges: {}",
                report.missing_privileges.join(", ")
            );
        }
    }
    (v.status, out)
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
    report: &Report,
    listeners: impl Iterator<Item = &'a Listener>,
) {
    let per_netns = report.netns.is_some();
    let listeners: Vec<&Listener> = listeners.collect();
    // The SINCE column where the trail knows a time for any of them.
    let since = report
        .trail
        .as_ref()
        .is_some_and(|t| listeners.iter().any(|l| t.since_of(l).is_some()));
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
            l.range.clone(),
        ];
        if since {
            row.push(since_text(report, l));
        }
        rows.push(netns_first(
            per_netns,
            &netns_cell(report, l.netns.as_deref()),
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
fn since_text(report: &Report, l: &Listener) -> String {
    match report.trail.as_ref().and_then(|t| t.since_of(l)) {
        Some(s) => format!(
            "{} ({})",
            crate::text::rfc3339_unix(s.unix),
            s.source.replace('_', " ")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::{Holder, Owner};
    use crate::ranges::{PortSet, Protocol};
    use std::sync::Arc;

    fn listener(comm: &[u8], port: u16, expected: Expected) -> Listener {
        Listener {
            range: "framehawk".into(),
            protocol: Protocol::Udp,
            port,
            address: "::".parse().unwrap(),
            holder: Some(Holder::Process(Arc::new(Owner {
                pid: 4242,
                comm: comm.to_vec(),
                exe: None,
                user: None,
                user_id: None,
                name_via_link: false,
            }))),
            user: "root".into(),
            expected,
            netns: None,
        }
    }

    fn report(in_use: u32, listeners: Vec<(&[u8], Expected)>) -> Report {
        let listeners: Vec<Listener> = listeners
            .into_iter()
            .enumerate()
            .map(|(i, (comm, expected))| listener(comm, 3224 + i as u16, expected))
            .collect();
        Report {
            ranges: vec![RangeView {
                in_use,
                unexpected: listeners
                    .iter()
                    .filter(|l| l.expected == Expected::False)
                    .count() as u64,
                unknown: listeners
                    .iter()
                    .filter(|l| l.expected == Expected::Unknown)
                    .count() as u64,
                listeners,
                ..RangeView::capacity(
                    "framehawk",
                    Protocol::Udp,
                    None,
                    PortSet::from_intervals(vec![(3224, 3324)]),
                )
            }],
            ..Report::default()
        }
    }

    fn opts(w: &str, c: &str) -> Options {
        Options {
            warning: w.parse().unwrap(),
            critical: c.parse().unwrap(),
            verbosity: 0,
            ..Options::default()
        }
    }

    fn status(r: &Report, o: &Options) -> Status {
        render(r, &[], o).0
    }

    #[test]
    fn statuses() {
        let o = Options::default();
        assert_eq!(status(&report(0, vec![]), &o), Status::Ok);
        assert_eq!(
            status(&report(91, vec![]), &o),
            Status::Warning,
            "10 free < 10.1"
        );
        assert_eq!(status(&report(90, vec![]), &o), Status::Ok, "11 free");
        assert_eq!(status(&report(101, vec![]), &o), Status::Critical);
        assert_eq!(
            status(&report(1, vec![(b"nc", Expected::False)]), &o),
            Status::Critical
        );
        let (s, text) = render(&report(1, vec![(b"nc", Expected::Unknown)]), &[], &o);
        assert_eq!(s, Status::Warning, "an undecided verdict is never OK");
        assert!(
            text.contains("1 listener the allowlist cannot judge (udp [::]:3224 in framehawk held by nc; its executable cannot be read)"),
            "a known owner is not called unknown: {text}"
        );
        assert!(!text.contains("unknown owner"), "{text}");
        let mut unowned = report(1, vec![(b"nc", Expected::Unknown)]);
        unowned.ranges[0].listeners[0].holder = None;
        let (s, text) = render(&unowned, &[], &o);
        assert_eq!(s, Status::Warning, "an unknown owner is never OK");
        assert!(text.contains("1 listener with unknown owner"), "{text}");
        assert!(!text.contains("cannot judge"), "{text}");
        let mut blind = report(1, vec![(b"nc", Expected::Unknown)]);
        blind.missing_privileges = vec!["CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"];
        let (s, text) = render(&blind, &[], &o);
        assert_eq!(s, Status::Warning);
        assert!(
            text.lines()
                .next()
                .unwrap()
                .contains("grant CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"),
            "{text}"
        );
        let five = Options {
            warning: Threshold::min_free("5").unwrap(),
            ..Options::default()
        };
        assert_eq!(status(&report(96, vec![]), &five), Status::Ok);
        assert_eq!(status(&report(97, vec![]), &five), Status::Warning);
        let mut failed = report(0, vec![]);
        failed.error = Some("udp/ipv4 dump: refused".into());
        let (s, text) = render(&failed, &[], &o);
        assert_eq!(s, Status::Unknown);
        assert!(text.starts_with("PORTRANGE UNKNOWN - sockets could not be sampled"));
    }

    #[test]
    fn thresholds_in_the_range_syntax() {
        // Critical below 5 free, warning below 20%.
        let o = opts("20%:", "5:");
        assert_eq!(status(&report(80, vec![]), &o), Status::Ok, "21 free");
        assert_eq!(status(&report(82, vec![]), &o), Status::Warning, "19 free");
        assert_eq!(status(&report(97, vec![]), &o), Status::Critical, "4 free");
        // Inside: critical when 0-2 ports are free.
        let o = opts("10:", "@0:2");
        assert_eq!(status(&report(99, vec![]), &o), Status::Critical);
        assert_eq!(status(&report(98, vec![]), &o), Status::Warning);
        // Outside 10-50 free: a range that should be neither idle nor busy.
        let o = opts("10:50", "1:");
        assert_eq!(status(&report(0, vec![]), &o), Status::Warning, "101 free");
        assert_eq!(status(&report(60, vec![]), &o), Status::Ok, "41 free");
    }

    #[test]
    fn perfdata_on_the_first_line() {
        let (_, text) = render(
            &report(3, vec![(b"CtxGfx", Expected::False)]),
            &[],
            &Options::default(),
        );
        let first = text.lines().next().unwrap();
        let (_, perf) = first.split_once(" | ").expect("performance data");
        assert_eq!(
            perf,
            "framehawk_udp_in_use=3;;;0;101 framehawk_udp_free=98;10.1:;1:;0;101 \
             framehawk_udp_unexpected=1;;0;0; framehawk_udp_unknown=0;0;;0;"
        );
        assert_eq!(first.matches('|').count(), 1);
        let (_, text) = render(&report(0, vec![]), &[], &opts("@0:10%", "~:0"));
        let perf = text.lines().next().unwrap().split_once(" | ").unwrap().1;
        assert!(
            perf.contains("framehawk_udp_free=101;@0:10.1;~:0;0;101"),
            "{perf}"
        );
        assert_eq!(perf_label("a b"), "'a b'");
        assert_eq!(perf_label("it's"), "'it''s'");
        assert_eq!(perf_label("x=y"), "'x=y'");
        assert_eq!(perf_label("fh_udp_free"), "fh_udp_free");
    }

    #[test]
    fn the_first_line_names_the_first_unexpected_listener() {
        let (s, text) = render(
            &report(
                3,
                vec![
                    (b"CtxGfx", Expected::True),
                    (b"nc", Expected::False),
                    (b"socat", Expected::False),
                ],
            ),
            &[],
            &Options::default(),
        );
        assert_eq!(s, Status::Critical);
        let first = text.lines().next().unwrap();
        assert!(
            first.starts_with(
                "PORTRANGE CRITICAL - 2 unexpected listeners: nc (user root) on udp [::]:3225 in framehawk; socat (user root) on udp [::]:3226 in framehawk |"
            ),
            "{first}"
        );
    }

    /// Fifty python3 listeners in one range and one socat in another: the
    /// first line and the long output group by owner and range, so socat is
    /// named on both, and the long output stays short.
    #[test]
    fn listeners_are_grouped_by_owner_so_no_offender_hides() {
        let mut many: Vec<(&[u8], Expected)> = vec![(b"python3", Expected::False); 50];
        many.push((b"CtxGfx", Expected::True));
        let mut r = report(51, many);
        let mut mosh = report(1, vec![(b"socat", Expected::False)])
            .ranges
            .remove(0);
        mosh.range = "mosh".into();
        for l in &mut mosh.listeners {
            l.range = "mosh".into();
            l.port = 60001;
        }
        r.ranges.push(mosh);
        let (s, text) = render(&r, &[], &Options::default());
        assert_eq!(s, Status::Critical);
        let first = text.lines().next().unwrap();
        assert!(
            first.starts_with(
                "PORTRANGE CRITICAL - 51 unexpected listeners: python3 (user root) on 50 udp ports in framehawk ([::]:3224, [::]:3225, [::]:3226 and 47 more); socat (user root) on udp [::]:60001 in mosh |"
            ),
            "{first}"
        );
        let table: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("Unexpected and unknown listeners, by owner and range:"))
            .collect();
        assert_eq!(
            table[1..4],
            [
                "PROTOCOL  PROCESS   PID  USER  EXPECTED  RANGE      COUNT  ADDRESS:PORT",
                "udp       python3  4242  root  false     framehawk     50  [::]:3224, [::]:3225, [::]:3226 and 47 more",
                "udp       socat    4242  root  false     mosh           1  [::]:60001",
            ],
            "{text}"
        );
        assert_eq!(
            table[4], "1 allowed listener not shown (-v lists them).",
            "{text}"
        );
        // Many owners: five named on the first line, twenty in the table,
        // the rest counted; the whole answer fits NRPE's 4 KiB.
        let names: Vec<Vec<u8>> = (0..30)
            .map(|i| format!("evil{i:02}").into_bytes())
            .collect();
        let r = report(
            60,
            names
                .iter()
                .flat_map(|n| {
                    [
                        (n.as_slice(), Expected::False),
                        (n.as_slice(), Expected::False),
                    ]
                })
                .collect(),
        );
        let (_, text) = render(&r, &[], &Options::default());
        let first = text.lines().next().unwrap();
        assert!(
            first.contains("evil04 (user root) on 2 udp ports"),
            "{first}"
        );
        assert!(!first.contains("evil05"), "{first}");
        assert!(
            first.contains("; and 50 listeners of 25 more owners |"),
            "{first}"
        );
        assert!(
            text.contains("\nudp       evil19   4242  root  false     framehawk      2  "),
            "{text}"
        );
        assert!(!text.contains("evil20"), "{text}");
        assert!(
            text.contains("... and 20 listeners of 10 more owners (-v lists every listener"),
            "{text}"
        );
        assert!(text.len() < 4096, "{} bytes", text.len());
    }

    #[test]
    fn excluded_ports_are_not_free() {
        let o = Options::default();
        let mut r = report(1, vec![]);
        r.ranges[0].excluded = Some(PortSet::from_intervals(vec![(3230, 3324)]));
        let (s, text) = render(&r, &[], &o);
        assert_eq!(s, Status::Warning, "100 free, 95 of them excluded:\n{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with(
                "PORTRANGE WARNING - framehawk/udp has 5 of 101 ports free, 95 excluded (warning 10%:)"
            ),
            "{text}"
        );
        assert_eq!(
            lines[2],
            "RANGE      PROTOCOL  PORTS  IN USE  FREE  EXCLUDED  UNEXPECTED  UNKNOWN"
        );
        assert_eq!(
            lines[3],
            "framehawk  udp         101       1     5        95           0        0"
        );
        r.ranges[0].excluded = Some(PortSet::from_intervals(vec![(3225, 3324)]));
        let (s, text) = render(&r, &[], &o);
        assert_eq!(s, Status::Critical, "{text}");
        assert!(
            text.starts_with(
                "PORTRANGE CRITICAL - framehawk/udp is full (1 of 101 ports in use, 100 excluded)"
            ),
            "{text}"
        );
        let (_, json) = render_json(&r, &[], &o);
        assert!(json.contains("\"excluded_ports\":100"), "{json}");
    }

    #[test]
    fn table_layout_lists_only_what_needs_a_look() {
        let (s, text) = render(
            &report(
                2,
                vec![(b"CtxGfx", Expected::False), (b"CtxGfx", Expected::True)],
            ),
            &[],
            &Options::default(),
        );
        assert_eq!(s, Status::Critical);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[2],
            "RANGE      PROTOCOL  PORTS  IN USE  FREE  UNEXPECTED  UNKNOWN"
        );
        assert_eq!(
            lines[3],
            "framehawk  udp         101       2    99           1        0"
        );
        assert_eq!(
            lines[5],
            "Unexpected and unknown listeners, by owner and range:"
        );
        assert_eq!(
            lines[6],
            "PROTOCOL  PROCESS   PID  USER  EXPECTED  RANGE      COUNT  ADDRESS:PORT"
        );
        assert_eq!(
            lines[7],
            "udp       CtxGfx   4242  root  false     framehawk      1  [::]:3224"
        );
        assert_eq!(lines[8], "1 allowed listener not shown (-v lists them).");
        assert_eq!(lines.len(), 9);
        // -v lists the allowed one too.
        let o = Options {
            verbosity: 1,
            ..Options::default()
        };
        let (_, text) = render(
            &report(
                2,
                vec![(b"CtxGfx", Expected::False), (b"CtxGfx", Expected::True)],
            ),
            &[],
            &o,
        );
        assert_eq!(text.lines().filter(|l| l.starts_with("udp ")).count(), 2);
        // -vv adds the collection's counters.
        let o = Options {
            verbosity: 2,
            ..Options::default()
        };
        let (_, text) = render(&report(0, vec![]), &[], &o);
        assert!(text.contains("Collection: 0.000 s;"), "{text}");
    }

    #[test]
    fn thousands_of_allowed_listeners_stay_short() {
        let many: Vec<(&[u8], Expected)> = (0..5000)
            .map(|i| {
                (
                    b"asterisk".as_slice(),
                    if i % 100 == 0 {
                        Expected::False
                    } else {
                        Expected::True
                    },
                )
            })
            .collect();
        let mut r = report(50, many);
        r.ranges[0].spec = PortSet::from_intervals(vec![(1, 10_000)]);
        let (s, text) = render(&r, &[], &Options::default());
        assert_eq!(s, Status::Critical);
        assert!(text.lines().count() < 40, "{}", text.lines().count());
        assert!(text.len() < 4096, "{} bytes", text.len());
        // One owner: one row, whatever the count.
        assert!(
            text.contains("udp       asterisk  4242  root  false     framehawk     50  [::]:3224, [::]:3324, [::]:3424 and 47 more\n"),
            "{text}"
        );
        assert!(text.contains("4950 allowed listeners not shown"), "{text}");
    }

    #[test]
    fn what_the_collection_left_out_is_a_warning_never_ok() {
        let mut r = report(0, vec![]);
        r.skipped = vec![
            crate::platform::Skipped::new(
                "sample",
                "network namespace 9: udp dump",
                "the deadline passed",
            ),
            crate::platform::Skipped::new("users", "the name of uid 1001", "no answer"),
        ];
        let (s, text) = render(&r, &[], &Options::default());
        assert_eq!(s, Status::Warning, "{text}");
        assert!(
            text.starts_with(
                "PORTRANGE WARNING - the collection left 2 parts out, so what they hold is unknown (network namespace 9: udp dump: the deadline passed, and 1 more) |"
            ),
            "{text}"
        );
        assert!(
            text.contains("Left out of this collection (what they hold is unknown):\nsample: network namespace 9: udp dump: the deadline passed\nusers: the name of uid 1001: no answer\n"),
            "{text}"
        );
        let (s, json) = render_json(&r, &[], &Options::default());
        assert_eq!(s, Status::Warning);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["skipped"][1]["stage"], "users");
    }

    #[test]
    fn ephemeral_overlap_is_a_named_warning() {
        let mut r = report(0, vec![]);
        r.ranges[0].ephemeral_overlap = Some(25);
        let (s, text) = render(&r, &[], &Options::default());
        assert_eq!(s, Status::Warning);
        assert!(
            text.starts_with(
                "PORTRANGE WARNING - framehawk/udp: 25 ports are in the ephemeral port range"
            ),
            "{text}"
        );
        r.ranges[0].ephemeral_overlap = Some(0);
        assert_eq!(render(&r, &[], &Options::default()).0, Status::Ok);
    }

    #[test]
    fn hostile_names_stay_on_one_line_and_out_of_the_perfdata() {
        let (_, text) = render(
            &report(1, vec![(b"a\nb\tc\\d|x=1", Expected::False)]),
            &[],
            &Options::default(),
        );
        let first = text.lines().next().unwrap();
        assert_eq!(first.matches('|').count(), 1, "{first}");
        assert!(first.contains(r"a\nb\tc\\d\u{7c}x=1"), "{first}");
        let row = text.lines().find(|l| l.starts_with("udp ")).unwrap();
        assert!(row.contains(r"a\nb\tc\\d\u{7c}x=1"), "{row}");
        assert_eq!(text.lines().count(), 8);
    }

    #[test]
    fn json_has_the_whole_report() {
        let mut r = report(
            2,
            vec![(b"CtxGfx", Expected::True), (b"nc", Expected::False)],
        );
        r.ranges[0].per_port = true;
        r.ranges[0].in_use_ports = vec![3224, 3225];
        let w = ConfigWarning {
            path: "r.yml".into(),
            line: 3,
            column: 5,
            key: "ranges[0].expected[0].user".into(),
            message: "user \"x\" does not exist".into(),
        };
        let (s, text) = render_json(&r, &[w], &Options::default());
        assert_eq!(s, Status::Critical);
        assert_eq!(text.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["status"], "CRITICAL");
        assert_eq!(v["code"], 2);
        assert_eq!(
            v["listeners"].as_array().unwrap().len(),
            2,
            "allowed ones too"
        );
        assert_eq!(v["listeners"][0]["pid"], 4242);
        assert_eq!(v["listeners"][1]["expected"], "false");
        assert_eq!(v["ranges"][0]["free"], 99);
        assert_eq!(v["ranges"][0]["warning"], "10.1:");
        assert_eq!(
            v["ranges"][0]["ports_in_use"],
            serde_json::json!([3224, 3225])
        );
        assert!(
            v["config_warnings"][0]
                .as_str()
                .unwrap()
                .starts_with("r.yml:3:5: ranges[0].expected[0].user:")
        );
    }

    #[test]
    fn gone_and_renamed_owners_are_marked() {
        let mut r = report(
            2,
            vec![(b"CtxGfx", Expected::False), (b"CtxGfx", Expected::False)],
        );
        let set_exe = |l: &mut Listener, exe: &[u8]| {
            let Some(Holder::Process(o)) = &l.holder else {
                unreachable!()
            };
            l.holder = Some(Holder::Process(Arc::new(Owner {
                exe: Some(exe.to_vec()),
                ..(**o).clone()
            })));
        };
        set_exe(&mut r.ranges[0].listeners[0], b"/memfd:CtxGfx (deleted)");
        set_exe(&mut r.ranges[0].listeners[1], b"/usr/bin/python3.11");
        let o = Options {
            verbosity: 1,
            ..opts("0:", "0:")
        };
        let (s, text) = render(&r, &[], &o);
        assert_eq!(s, Status::Critical);
        let first = text.lines().next().unwrap();
        assert!(
            first.contains(
                "2 unexpected listeners: CtxGfx (user root, executable gone) on udp [::]:3224"
            ),
            "{first}"
        );
        assert!(text.contains("CtxGfx (executable gone)"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&render_json(&r, &[], &o).1).unwrap();
        assert_eq!(json["listeners"][0]["exe_gone"], true);
        assert_eq!(json["listeners"][1]["exe_gone"], false);
        // The renamed one, first: why its name did not count.
        r.ranges[0].listeners.remove(0);
        let (_, text) = render(&r, &[], &o);
        assert!(
            text.lines()
                .next()
                .unwrap()
                .contains("CtxGfx (user root, renamed: runs python3.11) on udp"),
            "{text}"
        );
    }

    #[test]
    fn config_warnings_are_shown() {
        let w = ConfigWarning {
            path: "r.yml".into(),
            line: 3,
            column: 5,
            key: "ranges[0].expected[0].user".into(),
            message: "user \"x\" does not exist".into(),
        };
        let (s, text) = render(&report(0, vec![]), &[w], &Options::default());
        assert_eq!(s, Status::Ok, "a warning about the file is not a state");
        assert!(
            text.contains(
                "Configuration warnings:\nr.yml:3:5: ranges[0].expected[0].user: user \"x\" does not exist"
            ),
            "{text}"
        );
    }
}
