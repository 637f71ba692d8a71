//! The one-shot `check` command: one collection, printed as a readable
//! table, with Nagios plugin exit codes (0 OK, 1 WARNING, 2 CRITICAL,
//! 3 UNKNOWN). It replaces the manual `ss -ulnp | grep 3224` routine.

use std::fmt::Write;

use crate::allowlist::Expected;
use crate::collect::Report;

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

/// The `--warn-free` threshold: a share of the range's ports, or a count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WarnFree {
    Percent(f64),
    Ports(u32),
}

impl std::str::FromStr for WarnFree {
    type Err = String;
    fn from_str(s: &str) -> Result<WarnFree, String> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            let v: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("{s:?} is not a percentage"))?;
            if !(0.0..=100.0).contains(&v) {
                return Err(format!("{s:?} is not between 0% and 100%"));
            }
            return Ok(WarnFree::Percent(v));
        }
        s.parse()
            .map(WarnFree::Ports)
            .map_err(|_| format!("{s:?} is neither a port count nor a percentage such as 10%"))
    }
}

impl WarnFree {
    fn below(self, free: u32, ports: u32) -> bool {
        match self {
            WarnFree::Percent(p) => f64::from(free) < f64::from(ports) * p / 100.0,
            WarnFree::Ports(n) => free < n,
        }
    }
}

/// Makes a name printable on one line: control characters and backslashes
/// are escaped, invalid UTF-8 was already replaced.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

/// Why owners are unknown, and what the operator can do about it.
fn unknown_reason(report: &Report) -> String {
    if !report.missing_privileges.is_empty() {
        format!(
            "cannot read other users' processes: {} or grant {}",
            crate::platform::RUN_PRIVILEGED,
            report.missing_privileges.join(" and ")
        )
    } else if report.attribution.deadline_hit {
        "the process scan did not finish in time: raise --timeout".to_string()
    } else {
        crate::platform::UNSEEN_OWNER.to_string()
    }
}

/// Renders the report and decides the status.
pub fn render(report: &Report, warn_free: WarnFree) -> (Status, String) {
    let mut out = String::new();
    if let Some(e) = &report.error {
        let _ = writeln!(
            out,
            "PORTRANGE UNKNOWN - sockets could not be sampled: {}",
            printable(e)
        );
        return (Status::Unknown, out);
    }
    let mut status = Status::Ok;
    let mut reasons = Vec::new();
    let unexpected: usize = report
        .listeners
        .iter()
        .filter(|l| l.expected == Expected::False)
        .count();
    if unexpected > 0 {
        status = Status::Critical;
        reasons.push(format!(
            "{unexpected} unexpected listener{}",
            if unexpected == 1 { "" } else { "s" }
        ));
    }
    for r in &report.ranges {
        // Free ports in an excluded range (Windows) cannot be bound.
        let excluded = r.excluded.unwrap_or(0);
        let free = (r.ports - r.in_use).saturating_sub(excluded);
        let why = if excluded > 0 {
            format!(", {excluded} more excluded")
        } else {
            String::new()
        };
        if free == 0 {
            status = status.max(Status::Critical);
            reasons.push(format!("{}/{} is full{why}", r.range, r.protocol));
        } else if warn_free.below(free, r.ports) {
            status = status.max(Status::Warning);
            reasons.push(format!(
                "{}/{} has {free} of {} ports free{why}",
                r.range, r.protocol, r.ports
            ));
        }
    }
    let unknown = report
        .listeners
        .iter()
        .filter(|l| l.expected == Expected::Unknown)
        .count();
    if unknown > 0 {
        // What the exporter cannot see is never fine.
        status = status.max(Status::Warning);
        reasons.push(format!(
            "{unknown} listener{} with unknown owner ({})",
            if unknown == 1 { "" } else { "s" },
            unknown_reason(report)
        ));
    }
    let summary = if reasons.is_empty() {
        let total_free: u32 = report.ranges.iter().map(|r| r.ports - r.in_use).sum();
        format!(
            "{} range/protocol pairs, {total_free} ports free, no unexpected listener",
            report.ranges.len()
        )
    } else {
        reasons.join("; ")
    };
    let _ = writeln!(out, "PORTRANGE {} - {summary}", status.label());
    let _ = writeln!(out);

    // The EXCLUDED column only where the platform has excluded ranges.
    let show_excluded = report.ranges.iter().any(|r| r.excluded.is_some());
    let mut rows = vec![vec![
        "RANGE".to_string(),
        "PROTOCOL".into(),
        "PORTS".into(),
        "IN USE".into(),
        "FREE".into(),
    ]];
    if show_excluded {
        rows[0].push("EXCLUDED".into());
    }
    for r in &report.ranges {
        let mut row = vec![
            r.range.clone(),
            r.protocol.to_string(),
            r.ports.to_string(),
            r.in_use.to_string(),
            (r.ports - r.in_use).to_string(),
        ];
        if show_excluded {
            row.push(r.excluded.map_or("?".to_string(), |n| n.to_string()));
        }
        rows.push(row);
    }
    table(&mut out, &rows, &[false, false, true, true, true, true]);
    let _ = writeln!(out);
    if report.listeners.is_empty() {
        let _ = writeln!(out, "No listeners in the watched ranges.");
    } else {
        let mut rows = vec![vec![
            "PROTOCOL".to_string(),
            "ADDRESS:PORT".into(),
            "PROCESS".into(),
            "PID".into(),
            "USER".into(),
            "EXPECTED".into(),
            "RANGE".into(),
        ]];
        for l in &report.listeners {
            let addr = match l.address {
                std::net::IpAddr::V6(a) => format!("[{a}]:{}", l.port),
                std::net::IpAddr::V4(a) => format!("{a}:{}", l.port),
            };
            rows.push(vec![
                l.protocol.to_string(),
                addr,
                printable(&l.process()),
                l.owner().map_or("-".to_string(), |o| o.pid.to_string()),
                printable(&l.user),
                l.expected.as_str().to_string(),
                l.range.clone(),
            ]);
        }
        table(
            &mut out,
            &rows,
            &[false, false, false, true, false, false, false],
        );
    }
    (status, out)
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
    use crate::collect::{Listener, RangeStats};
    use crate::platform::{Holder, Owner};
    use crate::ranges::Protocol;
    use std::sync::Arc;
    use std::time::Duration;

    fn report(in_use: u32, listeners: Vec<(&[u8], Expected)>) -> Report {
        Report {
            error: None,
            ranges: vec![RangeStats {
                range: "framehawk".into(),
                protocol: Protocol::Udp,
                ports: 101,
                in_use,
                states: vec![],
                unexpected: 0,
                unattributed: 0,
                ephemeral_overlap: None,
                excluded: None,
                per_port: None,
            }],
            listeners: listeners
                .into_iter()
                .map(|(comm, expected)| Listener {
                    range: "framehawk".into(),
                    protocol: Protocol::Udp,
                    port: 3224,
                    address: "::".parse().unwrap(),
                    holder: Some(Holder::Process(Arc::new(Owner {
                        pid: 4242,
                        comm: comm.to_vec(),
                        exe: None,
                        user: None,
                        user_id: None,
                    }))),
                    user: "root".into(),
                    expected,
                })
                .collect(),
            attribution: Default::default(),
            missing_privileges: Vec::new(),
            duration: Duration::ZERO,
        }
    }

    #[test]
    fn statuses() {
        let w = WarnFree::Percent(10.0);
        assert_eq!(render(&report(0, vec![]), w).0, Status::Ok);
        assert_eq!(
            render(&report(91, vec![]), w).0,
            Status::Warning,
            "10 free < 10.1"
        );
        assert_eq!(render(&report(90, vec![]), w).0, Status::Ok, "11 free");
        assert_eq!(render(&report(101, vec![]), w).0, Status::Critical);
        assert_eq!(
            render(&report(1, vec![(b"nc", Expected::False)]), w).0,
            Status::Critical
        );
        let (s, text) = render(&report(1, vec![(b"nc", Expected::Unknown)]), w);
        assert_eq!(s, Status::Warning, "an unknown owner is never OK");
        assert!(text.contains("1 listener with unknown owner"), "{text}");
        let mut blind = report(1, vec![(b"nc", Expected::Unknown)]);
        blind.missing_privileges = vec!["CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"];
        let (s, text) = render(&blind, w);
        assert_eq!(s, Status::Warning);
        assert!(
            text.lines()
                .next()
                .unwrap()
                .contains("grant CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"),
            "{text}"
        );
        assert_eq!(
            render(&report(96, vec![]), WarnFree::Ports(5)).0,
            Status::Ok
        );
        assert_eq!(
            render(&report(97, vec![]), WarnFree::Ports(5)).0,
            Status::Warning
        );
        let mut failed = report(0, vec![]);
        failed.error = Some("udp/ipv4 dump: refused".into());
        let (s, text) = render(&failed, w);
        assert_eq!(s, Status::Unknown);
        assert!(text.starts_with("PORTRANGE UNKNOWN - sockets could not be sampled"));
    }

    #[test]
    fn table_layout() {
        let (s, text) = render(
            &report(1, vec![(b"CtxGfx", Expected::False)]),
            WarnFree::Percent(10.0),
        );
        assert_eq!(s, Status::Critical);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "PORTRANGE CRITICAL - 1 unexpected listener");
        assert_eq!(lines[2], "RANGE      PROTOCOL  PORTS  IN USE  FREE");
        assert_eq!(lines[3], "framehawk  udp         101       1   100");
        assert_eq!(
            lines[5],
            "PROTOCOL  ADDRESS:PORT  PROCESS   PID  USER  EXPECTED  RANGE"
        );
        assert_eq!(
            lines[6],
            "udp       [::]:3224     CtxGfx   4242  root  false     framehawk"
        );
    }

    #[test]
    fn excluded_ports_are_not_free() {
        let w = WarnFree::Percent(10.0);
        let mut r = report(1, vec![]);
        r.ranges[0].excluded = Some(95);
        let (s, text) = render(&r, w);
        assert_eq!(s, Status::Warning, "100 free, 95 of them excluded:\n{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "PORTRANGE WARNING - framehawk/udp has 5 of 101 ports free, 95 more excluded"
        );
        assert_eq!(
            lines[2],
            "RANGE      PROTOCOL  PORTS  IN USE  FREE  EXCLUDED"
        );
        assert_eq!(
            lines[3],
            "framehawk  udp         101       1   100        95"
        );
        r.ranges[0].excluded = Some(100);
        let (s, text) = render(&r, w);
        assert_eq!(s, Status::Critical, "{text}");
        assert!(text.starts_with("PORTRANGE CRITICAL - framehawk/udp is full, 100 more excluded"));
    }

    #[test]
    fn hostile_names_stay_on_one_line() {
        let (_, text) = render(
            &report(1, vec![(b"a\nb\tc\\d", Expected::False)]),
            WarnFree::Percent(10.0),
        );
        let row = text.lines().find(|l| l.starts_with("udp ")).unwrap();
        assert!(row.contains(r"a\nb\tc\\d"), "{row}");
        assert_eq!(text.lines().count(), 7);
    }

    #[test]
    fn warn_free_parsing() {
        assert_eq!("10%".parse::<WarnFree>(), Ok(WarnFree::Percent(10.0)));
        assert_eq!("5".parse::<WarnFree>(), Ok(WarnFree::Ports(5)));
        assert!("150%".parse::<WarnFree>().is_err());
        assert!("x".parse::<WarnFree>().is_err());
    }
}
