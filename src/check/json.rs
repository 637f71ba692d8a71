//! `check --output json`: the whole report for scripts, with the same
//! status and summary as the plugin text ([`super::render`]); each
//! collector's section comes from the collector (the ranges' `ranges` and
//! `listeners`, `traffic`, `ephemeral`).

use super::{Options, Status, judge, seen_of};
use crate::config::ConfigWarning;
use crate::report::{Listener, Report};

/// The whole report and the verdict as one JSON document.
pub fn render_json(
    report: &Report,
    warnings: &[ConfigWarning],
    opts: &Options,
) -> (Status, String) {
    use serde_json::json;
    let since = |l: &Listener| report.since_of(l);
    let (status, summary) = if let Some(e) = &report.error {
        (
            Status::Unknown,
            format!("sockets could not be sampled: {e}"),
        )
    } else {
        let v = judge(report, &seen_of(report, &since), opts);
        (
            v.status,
            if v.reasons.is_empty() {
                "no unexpected listener".to_string()
            } else {
                v.reasons.join("; ")
            },
        )
    };
    let ranges = crate::watched::check::json_ranges(&report.ranges, &opts.warning, &opts.critical);
    let listeners = crate::watched::check::json_listeners(&report.ranges, &since);
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
