//! The one-shot `check` command, a Nagios plugin after the monitoring
//! plugins guidelines (<https://nagios-plugins.org/doc/guidelines.html>):
//! one collection, exit codes 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. The
//! first line names what is wrong (the unexpected listeners grouped by
//! owner and range: up to five owners named, so one process with many
//! ports hides no other; a full range; an ephemeral overlap and the
//! setting that ends it; a dynamic range short of ports; owners that could
//! not be seen and the privilege that would show them) and carries
//! performance data after `|` for every range and protocol. The long
//! output lists the ranges and only the listeners that need a look
//! (unexpected or unknown), one row per owner and range; `-v` lists every
//! listener, `-vv` adds the attribution counters. Thresholds use the
//! guidelines' range syntax, with percentages of what is judged
//! ([`crate::threshold`]). `--output json` ([`render_json`]) prints the whole
//! report for scripts. With `--collector.netns` the tables gain a NETNS
//! column, ranges are named with their namespace, and a namespace that
//! could not be sampled is a WARNING, as is any part the collection had to
//! leave out (listed in the long output).
//!
//! Each collector judges its own part and writes its own lines, called
//! from the lists in [`render`] and [`render_json`]: the ranges
//! ([`crate::watched::check`]), the dynamic range
//! ([`crate::ephemeral::check`]), the namespaces not sampled
//! ([`crate::netns::check_reason`]), the traffic to closed ports
//! ([`crate::traffic::check_lines`]). What is here is the collection's
//! own: what it left out, the configuration's warnings, the counters. A
//! pure projection of the [`Report`]: nothing here reads the
//! configuration or touches the OS.

use std::fmt::Write;

mod headline;
mod json;

pub use crate::threshold::{Resolved, Status, Threshold, perf_label};
pub use crate::watched::check::LISTENER_ROWS;
pub use headline::headline;
pub use json::render_json;

use crate::config::ConfigWarning;
use crate::report::{Listener, Report};
use crate::text::plural;
use crate::watched::check::Seen;

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
            ephemeral_warning: crate::ephemeral::check::default_warning(),
            ephemeral_critical: crate::ephemeral::check::default_critical(),
        }
    }
}

pub use crate::text::printable;

/// The collectors' judgements of one collection, and the collection's
/// own: the status and the first line's reasons, in order.
struct Verdict<'a> {
    status: Status,
    reasons: Vec<String>,
    ranges: crate::watched::check::Verdict<'a>,
    ephemeral: crate::ephemeral::check::Verdict,
}

/// What the ranges' lines read besides the views.
fn seen_of<'a>(report: &'a Report, since: crate::watched::SinceOf<'a>) -> Seen<'a> {
    Seen {
        netns: report.netns.as_ref(),
        since,
        missing_privileges: &report.missing_privileges,
        scan_cut: report.attribution.deadline_hit,
    }
}

fn judge<'a>(report: &'a Report, seen: &Seen<'_>, opts: &Options) -> Verdict<'a> {
    let ranges = crate::watched::check::judge(&report.ranges, seen, &opts.warning, &opts.critical);
    let ephemeral = crate::ephemeral::check::judge(
        report.ephemeral.as_ref(),
        &opts.ephemeral_warning,
        &opts.ephemeral_critical,
    );
    let mut status = ranges.status.max(ephemeral.status);
    // Critical reasons first, then warnings; what could not be seen last.
    let mut reasons: Vec<String> = ranges
        .critical
        .iter()
        .chain(&ephemeral.critical)
        .chain(&ranges.warning)
        .chain(&ephemeral.warning)
        .cloned()
        .collect();
    if let Some(reason) = crate::netns::check_reason(report.netns.as_ref()) {
        status = status.max(Status::Warning);
        reasons.push(reason);
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
    reasons.extend(ranges.unseen.iter().cloned());
    Verdict {
        status,
        reasons,
        ranges,
        ephemeral,
    }
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
    let since = |l: &Listener| report.since_of(l);
    let seen = seen_of(report, &since);
    let v = judge(report, &seen, opts);
    let summary = if v.reasons.is_empty() {
        v.ranges.all_clear()
    } else {
        v.reasons.join("; ")
    };
    let mut perf = v.ranges.perfdata();
    perf.extend(v.ephemeral.perfdata.iter().cloned());
    let perf = perf.join(" ");
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

    v.ranges.long_output(&mut out, &seen, opts.verbosity);
    crate::ephemeral::check::long_output(&mut out, report.ephemeral.as_ref());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allowlist::Expected;
    use crate::watched::check::tests::report;

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
