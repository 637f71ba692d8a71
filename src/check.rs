//! The one-shot `check` command: one collection, printed as a readable
//! table, with Nagios plugin exit codes (0 OK, 1 WARNING, 2 CRITICAL,
//! 3 UNKNOWN). It replaces the manual `ss -ulnp | grep 3224` routine. With
//! `--collector.netns` both tables gain a NETNS column (the `netns` label,
//! with the namespace's name or pod when known), and a namespace that could
//! not be sampled is a WARNING.

use std::fmt::Write;

use crate::allowlist::Expected;
use crate::collect::Report;

/// The NETNS cell: the label, and what the namespace is when known.
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
            format!(
                "{label} (container {})",
                &i.container[..i.container.len().min(12)]
            )
        }
        _ => label.to_string(),
    }
}

/// " in netns X" for a per-namespace report.
fn where_(label: Option<&str>) -> String {
    label.map_or(String::new(), |l| format!(" in netns {l}"))
}

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
            "cannot read other users' processes: run as root or grant {}",
            report.missing_privileges.join(" and ")
        )
    } else if report.attribution.deadline_hit {
        "the process scan did not finish in time: raise --timeout".to_string()
    } else {
        "no visible process holds the socket: it may belong to another pid namespace".to_string()
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
        let free = r.ports - r.in_use;
        let at = where_(r.netns.as_deref());
        if free == 0 {
            status = status.max(Status::Critical);
            reasons.push(format!("{}/{}{at} is full", r.range, r.protocol));
        } else if warn_free.below(free, r.ports) {
            status = status.max(Status::Warning);
            reasons.push(format!(
                "{}/{}{at} has {free} of {} ports free",
                r.range, r.protocol, r.ports
            ));
        }
    }
    if let Some(n) = report.netns.as_ref().filter(|n| n.unsampled > 0) {
        // What the exporter cannot see is never fine.
        status = status.max(Status::Warning);
        reasons.push(format!(
            "{} network namespace{} could not be sampled",
            n.unsampled,
            if n.unsampled == 1 { "" } else { "s" }
        ));
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

    let per_netns = report.netns.is_some();
    // With --collector.netns, a NETNS column comes first in both tables.
    let first = |row: Vec<String>, cell: String| -> Vec<String> {
        if per_netns {
            std::iter::once(cell).chain(row).collect()
        } else {
            row
        }
    };
    let align = |right: &[bool]| -> Vec<bool> {
        if per_netns {
            std::iter::once(false)
                .chain(right.iter().copied())
                .collect()
        } else {
            right.to_vec()
        }
    };
    let mut rows = vec![first(
        vec![
            "RANGE".to_string(),
            "PROTOCOL".into(),
            "PORTS".into(),
            "IN USE".into(),
            "FREE".into(),
        ],
        "NETNS".into(),
    )];
    for r in &report.ranges {
        rows.push(first(
            vec![
                r.range.clone(),
                r.protocol.to_string(),
                r.ports.to_string(),
                r.in_use.to_string(),
                (r.ports - r.in_use).to_string(),
            ],
            printable(&netns_cell(report, r.netns.as_deref())),
        ));
    }
    table(&mut out, &rows, &align(&[false, false, true, true, true]));
    let _ = writeln!(out);
    if report.listeners.is_empty() {
        let _ = writeln!(out, "No listeners in the watched ranges.");
    } else {
        let mut rows = vec![first(
            vec![
                "PROTOCOL".to_string(),
                "ADDRESS:PORT".into(),
                "PROCESS".into(),
                "PID".into(),
                "USER".into(),
                "EXPECTED".into(),
                "RANGE".into(),
            ],
            "NETNS".into(),
        )];
        for l in &report.listeners {
            let addr = match l.address {
                std::net::IpAddr::V6(a) => format!("[{a}]:{}", l.port),
                std::net::IpAddr::V4(a) => format!("{a}:{}", l.port),
            };
            rows.push(first(
                vec![
                    l.protocol.to_string(),
                    addr,
                    printable(&l.process()),
                    l.owner().map_or("-".to_string(), |o| o.pid.to_string()),
                    printable(&l.user),
                    l.expected.as_str().to_string(),
                    l.range.clone(),
                ],
                printable(&netns_cell(report, l.netns.as_deref())),
            ));
        }
        table(
            &mut out,
            &rows,
            &align(&[false, false, false, true, false, false, false]),
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
                per_port: None,
                netns: None,
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
                    }))),
                    user: "root".into(),
                    expected,
                    netns: None,
                })
                .collect(),
            attribution: Default::default(),
            missing_privileges: Vec::new(),
            duration: Duration::ZERO,
            netns: None,
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

    #[test]
    fn one_table_with_a_netns_column() {
        use crate::collect::{NetnsInfo, NetnsReport};
        let mut r = report(101, vec![(b"CtxGfx", Expected::True)]);
        r.ranges[0].netns = Some("host".into());
        r.listeners[0].netns = Some("host".into());
        let mut pod = r.ranges[0].clone();
        pod.netns = Some("4026532301".into());
        pod.in_use = 1;
        r.ranges.push(pod);
        let mut l = r.listeners[0].clone();
        l.netns = Some("4026532301".into());
        r.listeners.push(l);
        let info = |label: &str, name: &str, pod: &str| NetnsInfo {
            label: label.into(),
            name: name.into(),
            container: String::new(),
            pod: pod.into(),
            namespace: if pod.is_empty() {
                String::new()
            } else {
                "shop".into()
            },
        };
        r.netns = Some(NetnsReport {
            namespaces: vec![info("host", "", ""), info("4026532301", "", "web-0")],
            unsampled: 0,
        });
        let (s, text) = render(&r, WarnFree::Percent(10.0));
        assert_eq!(s, Status::Critical);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "PORTRANGE CRITICAL - framehawk/udp in netns host is full"
        );
        assert_eq!(
            lines[2],
            "NETNS                    RANGE      PROTOCOL  PORTS  IN USE  FREE"
        );
        assert_eq!(
            lines[3],
            "host                     framehawk  udp         101     101     0"
        );
        assert_eq!(
            lines[4],
            "4026532301 (shop/web-0)  framehawk  udp         101       1   100"
        );
        assert_eq!(
            lines[6],
            "NETNS                    PROTOCOL  ADDRESS:PORT  PROCESS   PID  USER  EXPECTED  RANGE"
        );
        assert!(
            lines[8].starts_with("4026532301 (shop/web-0)  udp "),
            "{text}"
        );
        // A namespace that could not be sampled is not OK.
        r.ranges[0].in_use = 1;
        r.netns.as_mut().unwrap().unsampled = 1;
        let (s, text) = render(&r, WarnFree::Percent(10.0));
        assert_eq!(s, Status::Warning);
        assert!(
            text.starts_with("PORTRANGE WARNING - 1 network namespace could not be sampled"),
            "{text}"
        );
    }
}
