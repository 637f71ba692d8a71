//! The JSON status document served at `/api/v1/status` for the port map
//! page: a projection of one collection's [`Report`] (and nothing else):
//! counts per range and protocol, the state of every port that is not free,
//! the listeners, and the parts of the collection that were skipped.
//! Platform-free and pure. It carries what `check`
//! shows and never more: no executable paths, no remote addresses but the
//! dynamic range's busiest destinations (top 5, as `check` names them). The
//! contract (shape, state names, the worst-state rule) is in the README's
//! "The JSON status endpoint" section; the state names are the `data-state`
//! values of the page's cells. Each collector renders its own section from
//! its own part of the report, called from the list in [`render`]: the
//! ranges' `ranges` and `listeners` ([`crate::watched::status`]), the
//! trail's `events`, `traffic` and `ephemeral`; what is here is the
//! collection's own (when, how long, what was skipped, `check`'s verdict).

use std::borrow::Cow;
use std::time::SystemTime;

use serde::Serialize;

use crate::report::{Listener, RangeView, Report};
use crate::watched;

/// What is said about the exporter itself.
#[derive(Clone, Debug)]
pub struct Exporter<'a> {
    pub version: &'a str,
    pub revision: &'a str,
    pub metrics_path: &'a str,
    /// Why the events' command lines are left out (`None`: shown); see
    /// [`crate::trail::cmdline_withheld`].
    pub cmdline_withheld: Option<&'a str>,
}

#[derive(Serialize)]
struct Document<'a> {
    exporter: ExporterJson<'a>,
    collected_at: String,
    duration_seconds: f64,
    up: bool,
    error: Option<&'a str>,
    netns_collector: bool,
    /// What `check` (with its default thresholds) says of this collection:
    /// the page's top line.
    check: CheckJson<'a>,
    skipped: Vec<SkippedJson<'a>>,
    ranges: Vec<watched::status::RangeJson<'a>>,
    listeners: Vec<watched::status::ListenerJson<'a>>,
    /// The listener trail's newest events, newest last (the page's
    /// "recent changes"); absent where no trail is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<Vec<Cow<'a, crate::trail::Event>>>,
    /// Why the events carry no command line (null: they do, redacted).
    cmdline_withheld: Option<&'a str>,
    /// With `--collector.traffic`: what the ranges received, and the
    /// closed ports probed in the last minute.
    #[serde(skip_serializing_if = "Option::is_none")]
    traffic: Option<serde_json::Value>,
    /// The dynamic range (`null` when the collector is off): counts, the
    /// busiest destinations (top 5) and the top holders.
    ephemeral: serde_json::Value,
}

#[derive(Serialize)]
struct CheckJson<'a> {
    /// OK, WARNING, CRITICAL or UNKNOWN.
    status: &'static str,
    /// Why: `check`'s first line without its performance data.
    summary: &'a str,
}

#[derive(Serialize)]
struct SkippedJson<'a> {
    stage: &'static str,
    what: &'a str,
    reason: &'a str,
}

#[derive(Serialize)]
struct ExporterJson<'a> {
    version: &'a str,
    revision: &'a str,
    metrics_path: &'a str,
}

/// `check`'s verdict on the same collection, which the page shows as its
/// top line: the caller asks `check` (projections do not import one
/// another).
#[derive(Clone, Debug)]
pub struct Verdict<'a> {
    /// OK, WARNING, CRITICAL or UNKNOWN.
    pub status: &'static str,
    /// `check`'s first line without its performance data.
    pub summary: &'a str,
}

/// The status document of one collection, as JSON bytes; `finished` is
/// when it ended. A pure projection of the report (and of `check`'s
/// verdict on it).
pub fn render(
    report: &Report,
    exporter: &Exporter<'_>,
    verdict: &Verdict<'_>,
    finished: SystemTime,
) -> serde_json::Result<Vec<u8>> {
    // Without a sample there is no map to draw.
    let views: &[RangeView] = if report.up() { &report.ranges } else { &[] };
    let since = |l: &Listener| report.since_of(l);
    let ranges = watched::status::section(views, &since);
    let doc = Document {
        exporter: ExporterJson {
            version: exporter.version,
            revision: exporter.revision,
            metrics_path: exporter.metrics_path,
        },
        collected_at: crate::text::rfc3339(finished),
        duration_seconds: report.duration.as_secs_f64(),
        up: report.up(),
        error: report.error.as_deref(),
        netns_collector: report.netns.is_some(),
        check: CheckJson {
            status: verdict.status,
            summary: verdict.summary,
        },
        skipped: report
            .skipped
            .iter()
            .map(|s| SkippedJson {
                stage: s.stage,
                what: &s.what,
                reason: &s.reason,
            })
            .collect(),
        ranges: ranges.ranges,
        listeners: ranges.listeners,
        events: report.trail.as_ref().map(|t| {
            t.recent
                .iter()
                .map(|e| match exporter.cmdline_withheld {
                    Some(_) => Cow::Owned(crate::trail::Event {
                        cmdline: None,
                        ..(**e).clone()
                    }),
                    None => Cow::Borrowed(&**e),
                })
                .collect()
        }),
        cmdline_withheld: exporter.cmdline_withheld,
        traffic: crate::traffic::status_json(report.traffic.as_ref()),
        ephemeral: if report.up() {
            crate::ephemeral::status_json(report.ephemeral.as_ref())
        } else {
            serde_json::Value::Null
        },
    };
    serde_json::to_vec(&doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watched::status::tests::{HOSTILE, report};
    use std::time::{Duration, UNIX_EPOCH};

    /// A verdict for tests that do not look at it.
    const SOME_VERDICT: Verdict<'static> = Verdict {
        status: "OK",
        summary: "fine",
    };

    fn json(r: &Report) -> serde_json::Value {
        let ex = Exporter {
            version: "1.2.3",
            revision: "abc",
            metrics_path: "/metrics",
            cmdline_withheld: None,
        };
        let t = UNIX_EPOCH + Duration::from_secs(1_795_664_400);
        let (status, summary) = crate::check::headline(r);
        let verdict = Verdict {
            status: status.label(),
            summary: &summary,
        };
        let bytes = render(r, &ex, &verdict, t).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// The page's top line is `check`'s verdict, and an overlap with the
    /// dynamic range carries the exact setting that reserves the ports.
    #[test]
    fn check_verdict_and_the_overlap_fix_are_in_the_document() {
        let mut r = report();
        let v = json(&r);
        assert_eq!(v["check"]["status"], "CRITICAL", "{v}");
        let (status, why) = crate::check::headline(&r);
        assert_eq!(v["check"]["summary"], why.as_str());
        assert_eq!(status.label(), "CRITICAL");
        assert!(v["ranges"][0].get("ephemeral_fix").is_none(), "{v}");
        r.ranges[0].ephemeral_overlap = Some(7);
        let v = json(&r);
        let fix = v["ranges"][0]["ephemeral_fix"].as_str().unwrap();
        if cfg!(windows) {
            assert!(
                fix.contains("netsh int ipv4 add excludedportrange"),
                "{fix}"
            );
        } else {
            assert!(
                fix.contains("\"net.ipv4.ip_local_reserved_ports = 3224-3230,3300\""),
                "{fix}"
            );
        }
        let summary = v["check"]["summary"].as_str().unwrap();
        assert!(summary.contains(fix), "check says the same fix: {summary}");
    }

    #[test]
    fn states_follow_the_worst_state_rule() {
        let v = json(&report());
        assert_eq!(v["collected_at"], "2026-11-26T03:40:00.000Z");
        assert_eq!(v["up"], true);
        assert_eq!(v["error"], serde_json::Value::Null);
        assert_eq!(v["netns_collector"], false);
        assert_eq!(v["exporter"]["metrics_path"], "/metrics");
        let r = &v["ranges"][0];
        assert_eq!(r["spec"], "3224-3230,3300");
        assert_eq!(
            r["intervals"],
            serde_json::json!([[3224, 3230], [3300, 3300]])
        );
        assert_eq!(
            (&r["ports"], &r["in_use"], &r["free"], &r["unexpected"]),
            (
                &serde_json::json!(8),
                &serde_json::json!(8),
                &serde_json::json!(0),
                &serde_json::json!(3)
            )
        );
        assert_eq!(r["unknown"], 3, "3226, 3229 and the kernel verdict of 3230");
        assert_eq!(r["ephemeral_overlap"], serde_json::Value::Null);
        assert_eq!(r["reserved"], serde_json::json!([[3230, 3230]]));
        let used: Vec<(u64, &str)> = r["used"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| (u["port"].as_u64().unwrap(), u["state"].as_str().unwrap()))
            .collect();
        assert_eq!(
            used,
            vec![
                (3224, "expected"),
                (3225, "unexpected"),
                (3226, "unknown"),
                (3227, "kernel"),
                (3228, "in_use"),
                (3229, "unknown"),
                (3230, "kernel"),
                (3300, "unexpected"),
            ]
        );
        let u = |port: u64| {
            r["used"]
                .as_array()
                .unwrap()
                .iter()
                .find(|u| u["port"] == port)
                .unwrap()
                .clone()
        };
        assert_eq!(u(3224)["owner"], "CtxGfx (pid 812, user citrix)");
        assert!(u(3224).get("allowed").is_none());
        assert_eq!(
            u(3225)["owner"],
            "socat (pid 99, user root)",
            "only the worst owner"
        );
        assert_eq!(u(3226)["owner"], "unknown (user 1001)");
        assert_eq!(u(3227)["owner"], "kernel (vxlan0)");
        assert_eq!(u(3227)["allowed"], false);
        assert_eq!(u(3228)["owner"], "");
        assert_eq!(u(3230)["owner"], "kernel (vx1)");
        assert_eq!(
            u(3230)["allowed"],
            false,
            "a kernel socket the allowlist could not judge is not allowed"
        );
        assert_eq!(
            u(3300)["owner"],
            format!("{HOSTILE} (pid 4242, user <b>)"),
            "one owner named once"
        );
    }

    #[test]
    fn a_failed_sample_is_up_false_with_its_error() {
        let r = Report::failed(
            "sock_diag: refused".into(),
            crate::collect::capacity(&crate::config::Config::builtin(), false),
            Duration::from_millis(3),
        );
        let v = json(&r);
        assert_eq!(v["up"], false);
        assert_eq!(v["error"], "sock_diag: refused");
        assert_eq!(v["ranges"], serde_json::json!([]));
        assert_eq!(v["listeners"], serde_json::json!([]));
    }

    /// Without authentication the recent events' command lines are left
    /// out and one field says why; with it they are shown, redacted.
    #[test]
    fn command_lines_are_withheld_in_one_field() {
        let mut r = report();
        let mut rec = crate::trail::Recorder::new(crate::trail::Options::default());
        rec.observe(&mut r, UNIX_EPOCH, &mut |_| {
            Some(crate::platform::ProcessDetails {
                ppid: Some(1),
                cmdline: Some(b"nc\0-l\0-p\x003255\0--token=tk9".to_vec()),
                start_time: None,
            })
        });
        let render_with = |withheld: Option<&str>| {
            let ex = Exporter {
                version: "v",
                revision: "r",
                metrics_path: "/metrics",
                cmdline_withheld: withheld,
            };
            let bytes = render(&r, &ex, &SOME_VERDICT, UNIX_EPOCH).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            (v, String::from_utf8(bytes).unwrap())
        };
        let (v, text) = render_with(Some("withheld: no authentication"));
        assert_eq!(v["cmdline_withheld"], "withheld: no authentication");
        let events = v["events"].as_array().unwrap();
        assert!(!events.is_empty());
        assert!(events.iter().all(|e| e["cmdline"].is_null()), "{v}");
        assert!(!text.contains("-l -p 3255"), "{text}");
        let (v, _) = render_with(None);
        assert_eq!(v["cmdline_withheld"], serde_json::Value::Null);
        assert!(
            v["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["cmdline"] == "nc -l -p 3255 --token=<redacted>"),
            "{v}"
        );
    }
}
