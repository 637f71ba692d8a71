//! The `ephemeral` collector's judgement and its lines in `check`: the
//! headroom toward the busiest destination (`free_min`) against the
//! `--ephemeral-warning`/`--ephemeral-critical` thresholds (the ranges'
//! syntax, percentages of the dynamic range), always CRITICAL when no port
//! is left; a failed ephemeral collector is a WARNING (never "fine"). The
//! reasons name the destination and its top holder, e.g. `ephemeral tcp:
//! 0 ports left toward 10.0.0.5:5432, held by pgbouncer (user postgres,
//! 28,200)`. Also the performance data and the long output's section
//! (the JSON form, shared with the status document, is
//! [`super::status_json`]). Takes the collector's own part only; `check`
//! puts it beside the other collectors' judgements. Pure.

use std::fmt::Write;

use crate::ephemeral::{self, EphemeralReport, EphemeralView};
use crate::text::printable;
use crate::threshold::{Status, Threshold, perf_label};

/// Default warning: fewer than 20% of the range left toward one
/// destination. A pool or proxy grows in steps, and TIME_WAIT holds every
/// closed connection's port for 60 s, so a range at 80% toward one
/// backend is one traffic burst (or one minute of churn) from full; 20%
/// also leaves room for the time an operator needs to widen the range or
/// add pooling.
pub const DEFAULT_WARNING: &str = "20%:";
/// Default critical: fewer than 5% left (and always at 0, whatever the
/// threshold): Linux's connect() probes random offsets for a free port,
/// and with 95% taken connects start to slow, then fail with
/// EADDRNOTAVAIL at 0.
pub const DEFAULT_CRITICAL: &str = "5%:";

pub fn default_warning() -> Threshold {
    DEFAULT_WARNING.parse().expect("a valid default")
}

pub fn default_critical() -> Threshold {
    DEFAULT_CRITICAL.parse().expect("a valid default")
}

/// The verdict on the dynamic range: a status, reasons (critical ones
/// first), and the perfdata.
pub struct Verdict {
    pub status: Status,
    pub critical: Vec<String>,
    pub warning: Vec<String>,
    pub perfdata: Vec<String>,
}

/// Judges every view of the collector's part against the thresholds.
pub fn judge(
    ephemeral: Option<&EphemeralReport>,
    warning: &Threshold,
    critical: &Threshold,
) -> Verdict {
    let mut v = Verdict {
        status: Status::Ok,
        critical: Vec::new(),
        warning: Vec::new(),
        perfdata: Vec::new(),
    };
    let Some(e) = ephemeral else {
        return v;
    };
    if let Some(error) = &e.error {
        v.status = Status::Warning;
        v.warning.push(format!(
            "the ephemeral port range could not be counted: {}",
            printable(error)
        ));
        return v;
    }
    for view in &e.views {
        let ports = view.ports();
        let (w, c) = (warning.resolve(ports), critical.resolve(ports));
        let free = f64::from(view.free_min);
        if view.free_min == 0 || c.alerts(free) {
            v.status = v.status.max(Status::Critical);
            v.critical.push(ephemeral::summary(view));
        } else if w.alerts(free) {
            v.status = v.status.max(Status::Warning);
            v.warning.push(ephemeral::summary(view));
        }
        let base = match &view.netns {
            Some(n) => format!("ephemeral_{}_{n}", view.protocol),
            None => format!("ephemeral_{}", view.protocol),
        };
        v.perfdata.push(format!(
            "{}={};{};{};0;{ports}",
            perf_label(&format!("{base}_free_min")),
            view.free_min,
            w.perf(),
            c.perf()
        ));
        v.perfdata.push(format!(
            "{}={};;;0;{ports}",
            perf_label(&format!("{base}_in_use")),
            view.in_use
        ));
        let time_wait = view
            .states
            .iter()
            .find(|(s, _)| *s == "time_wait")
            .map(|(_, n)| *n);
        if let Some(n) = time_wait {
            v.perfdata.push(format!(
                "{}={n};;;0;",
                perf_label(&format!("{base}_time_wait"))
            ));
        }
    }
    v
}

fn where_(v: &EphemeralView) -> String {
    v.netns
        .as_deref()
        .map_or(String::new(), |n| format!(" (netns {n})"))
}

/// The long output's section: per view the range, ports in use, the
/// headroom, sockets in TIME_WAIT, the busiest destinations and the top
/// holders.
pub fn long_output(out: &mut String, ephemeral: Option<&EphemeralReport>) {
    let Some(e) = ephemeral else {
        return;
    };
    if e.error.is_some() || e.views.is_empty() {
        return;
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "Ephemeral ports:");
    for v in &e.views {
        let tw = v
            .states
            .iter()
            .find(|(s, _)| *s == "time_wait")
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(
            out,
            "{}{}: range {} ({} ports), {} in use, {} no connect() can share, {} left toward the busiest destination, {} toward a new one, {} in TIME_WAIT, counted {}",
            v.protocol,
            where_(v),
            v.range,
            v.ports(),
            v.in_use,
            v.unshared,
            v.free_min,
            v.free_new,
            sockets(tw),
            match v.counting {
                ephemeral::Counting::Exact => "exact",
                ephemeral::Counting::Conservative =>
                    "conservatively (how each port was taken is unknown: every port in use counts against every destination)",
            }
        );
        for d in &v.destinations {
            let held = d.holder.as_ref().map_or(String::new(), |h| {
                format!(
                    ", most held by {} (user {}, {})",
                    printable(&h.process),
                    printable(&h.user),
                    ephemeral::thousands(h.sockets)
                )
            });
            let _ = writeln!(
                out,
                "  toward {}: {} ports, {}{held}",
                d.endpoint(),
                ephemeral::thousands(u64::from(d.ports)),
                sockets(d.sockets)
            );
        }
        if v.destinations_total > v.destinations.len() as u64 {
            let _ = writeln!(
                out,
                "  ... {} destinations in all",
                ephemeral::thousands(v.destinations_total)
            );
        }
        for h in &v.holders {
            let _ = writeln!(
                out,
                "  holder {} (user {}): {}",
                printable(&h.process),
                printable(&h.user),
                sockets(h.sockets)
            );
        }
    }
}

/// `1 socket`, `28,200 sockets`.
fn sockets(n: u64) -> String {
    format!(
        "{} {}",
        ephemeral::thousands(n),
        if n == 1 { "socket" } else { "sockets" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ephemeral::{Destination, EphemeralReport, HolderCount};
    use crate::ranges::{PortSet, Protocol};

    fn view(free_min: u32) -> EphemeralView {
        EphemeralView {
            protocol: Protocol::Tcp,
            netns: None,
            range: PortSet::from_intervals(vec![(32768, 60999)]),
            in_use: 28_231 - free_min,
            states: vec![("established", 28_200), ("time_wait", 31)],
            unshared: 0,
            free_min,
            free_new: free_min,
            counting: ephemeral::Counting::Exact,
            destinations_total: 1,
            destinations: vec![Destination {
                address: "10.0.0.5".parse().unwrap(),
                port: 5432,
                ports: 28_231 - free_min,
                free: free_min,
                sockets: 28_231,
                holder: Some(HolderCount {
                    process: "pgbouncer".into(),
                    user: "postgres".into(),
                    sockets: 28_200,
                }),
            }],
            holders: vec![],
            unattributed: 0,
        }
    }

    fn report(v: EphemeralView) -> EphemeralReport {
        EphemeralReport {
            views: vec![v],
            error: None,
        }
    }

    #[test]
    fn counts_of_sockets_take_their_noun() {
        assert_eq!(sockets(1), "1 socket");
        assert_eq!(sockets(0), "0 sockets");
        assert_eq!(sockets(28_200), "28,200 sockets");
    }

    #[test]
    fn zero_left_is_critical_whatever_the_threshold() {
        let never: Threshold = "@-1:-1".parse().unwrap();
        let v = judge(Some(&report(view(0))), &never, &never);
        assert_eq!(v.status, Status::Critical);
        assert_eq!(
            v.critical,
            vec![
                "ephemeral tcp: 0 ports left toward 10.0.0.5:5432, held by pgbouncer (user postgres, 28,200)"
            ]
        );
        assert_eq!(
            v.perfdata,
            vec![
                "ephemeral_tcp_free_min=0;@-1:-1;@-1:-1;0;28232",
                "ephemeral_tcp_in_use=28231;;;0;28232",
                "ephemeral_tcp_time_wait=31;;;0;",
            ]
        );
        let d = judge(
            Some(&report(view(0))),
            &default_warning(),
            &default_critical(),
        );
        assert!(
            d.perfdata[0].starts_with("ephemeral_tcp_free_min=0;5646.4:;1411.6:;0;28232"),
            "{:?}",
            d.perfdata
        );
    }

    #[test]
    fn defaults_warn_at_a_fifth_and_go_critical_at_a_twentieth() {
        let (w, c) = (default_warning(), default_critical());
        assert_eq!(
            judge(Some(&report(view(10_000))), &w, &c).status,
            Status::Ok
        );
        let warn = judge(Some(&report(view(5_000))), &w, &c);
        assert_eq!(warn.status, Status::Warning);
        assert!(
            warn.warning[0].starts_with("ephemeral tcp: 5,000 ports left toward 10.0.0.5:5432")
        );
        assert_eq!(
            judge(Some(&report(view(1_000))), &w, &c).status,
            Status::Critical
        );
    }

    #[test]
    fn a_failed_collector_is_never_fine() {
        let r = EphemeralReport {
            views: vec![],
            error: Some("cannot read the dynamic port range: EACCES".into()),
        };
        let v = judge(Some(&r), &default_warning(), &default_critical());
        assert_eq!(v.status, Status::Warning);
        assert!(v.warning[0].contains("EACCES"));
        assert_eq!(
            crate::ephemeral::status_json(Some(&r))["error"],
            "cannot read the dynamic port range: EACCES"
        );
        assert_eq!(crate::ephemeral::status_json(None), serde_json::Value::Null);
    }
}
