//! `check --output json`: the whole report for scripts, with the same
//! status and summary as the plugin text ([`super::render`]).

use super::{Options, Status, judge, listeners};
use crate::config::ConfigWarning;
use crate::report::Report;

/// The whole report and the verdict as one JSON document.
pub fn render_json(
    report: &Report,
    warnings: &[ConfigWarning],
    opts: &Options,
) -> (Status, String) {
    use serde_json::json;
    let (status, summary) = if let Some(e) = &report.error {
        (
            Status::Unknown,
            format!("sockets could not be sampled: {e}"),
        )
    } else {
        let v = judge(report, &listeners(report), opts);
        (
            v.status,
            if v.reasons.is_empty() {
                "no unexpected listener".to_string()
            } else {
                v.reasons.join("; ")
            },
        )
    };
    let ranges: Vec<serde_json::Value> = report
        .ranges
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
                "warning": opts.warning.resolve(r.ports()).perf(),
                "critical": opts.critical.resolve(r.ports()).perf(),
            })
        })
        .collect();
    let listeners: Vec<serde_json::Value> = listeners(report)
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
                "since": report.trail.as_ref().and_then(|t| t.since_of(l)).map(|s| json!({
                    "time": crate::text::rfc3339_unix(s.unix),
                    "source": s.source,
                })),
            })
        })
        .collect();
    let a = &report.attribution;
    let doc = json!({
        "status": status.label(),
        "code": status as i32,
        "summary": summary,
        "error": report.error,
        "duration_seconds": report.duration.as_secs_f64(),
        "ranges": ranges,
        "listeners": listeners,
        "attribution": {
            "confirmed": a.confirmed,
            "searched": a.searched,
            "processes_scanned": a.processes_scanned,
            "permission_denied": a.permission_denied,
            "deadline_hit": a.deadline_hit,
            "kernel": a.kernel,
        },
        "missing_privileges": report.missing_privileges,
        "skipped": report.skipped.iter().map(|s| json!({
            "stage": s.stage,
            "what": s.what,
            "reason": s.reason,
        })).collect::<Vec<_>>(),
        "config_warnings": warnings.iter().map(|w| w.to_string()).collect::<Vec<_>>(),
        "traffic": crate::traffic::status_json(report.traffic.as_ref()),
        "ephemeral": crate::ephemeral::status_json(report.ephemeral.as_ref()),
    });
    (status, format!("{doc}\n"))
}
