//! The metrics contract: turns a [`Report`] into Prometheus metric families,
//! adds the exporter's own metrics, and encodes the text exposition format.
//! Every family is built fresh for each scrape; nothing is kept between
//! scrapes. Label values from process names are decoded lossily (invalid
//! UTF-8 becomes U+FFFD) and escaped by the text encoder. No series carries
//! a pid or a remote address.

use std::collections::BTreeMap;

use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, TextEncoder};

use crate::collect::Report;
use crate::config::Config;
use crate::service::ReloadStatus;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("PORTRANGE_REVISION");
pub const RUSTC_VERSION: &str = env!("PORTRANGE_RUSTC_VERSION");

/// Every metric family this exporter can emit (beyond `process_*`), with
/// its help text. The golden test and the dashboard/rule checks read this.
pub const FAMILIES: &[(&str, &str)] = &[
    ("portrange_ports", "Ports in the range (its capacity)."),
    (
        "portrange_ports_in_use",
        "Distinct ports of the range with at least one socket not in TIME_WAIT.",
    ),
    (
        "portrange_ports_free",
        "Ports of the range with no socket (ports minus ports in use).",
    ),
    (
        "portrange_sockets",
        "Sockets in the range by state (tcp: established, syn_sent, syn_recv, fin_wait1, fin_wait2, time_wait, close, close_wait, last_ack, listen, closing; udp: unconn, established).",
    ),
    (
        "portrange_unexpected_listeners",
        "Listeners in the range whose owner the range's allowlist does not match.",
    ),
    (
        "portrange_unattributed_sockets",
        "Sockets in the range whose owning process could not be found (TIME_WAIT and request sockets, which no process holds, are not counted).",
    ),
    (
        "portrange_ephemeral_overlap_ports",
        crate::platform::EPHEMERAL_OVERLAP_HELP,
    ),
    (
        "portrange_excluded_ports",
        "Ports of the range with no socket inside a port range a Windows service reserved (netsh int ipv4 show excludedportrange, the lines without *): they count as free, but binds there fail. Only on Windows.",
    ),
    (
        "portrange_port_in_use",
        "1 when the port holds at least one socket not in TIME_WAIT, else 0.",
    ),
    (
        "portrange_listener_info",
        "A listener in the range (TCP LISTEN or UDP without a peer); expected is true, false, or unknown when its owner was not found.",
    ),
    (
        "portrange_up",
        "1 when socket sampling succeeded in this scrape, 0 when it failed.",
    ),
    (
        "portrange_scrape_duration_seconds",
        "Time this scrape took to sample, attribute and count, in seconds.",
    ),
    (
        "portrange_config_last_reload_successful",
        "1 when the last load of the configuration file succeeded, 0 when the file was refused (the previous ranges stay).",
    ),
    (
        "portrange_config_last_reload_success_timestamp_seconds",
        "Unix time of the last successful load of the configuration.",
    ),
    (
        "portrange_exporter_build_info",
        "Build information of portrange_exporter; the value is always 1.",
    ),
];

fn help(name: &str) -> &'static str {
    FAMILIES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, h)| *h)
        .unwrap_or_else(|| panic!("metric {name} is missing from FAMILIES"))
}

/// Collects gauge samples for one family.
struct Family {
    name: &'static str,
    metrics: Vec<Metric>,
}

impl Family {
    fn new(name: &'static str) -> Family {
        Family {
            name,
            metrics: Vec::new(),
        }
    }

    fn add(&mut self, labels: &[(&str, &str)], value: f64) {
        let pairs = labels
            .iter()
            .map(|(k, v)| {
                let mut p = LabelPair::default();
                p.set_name(k.to_string());
                p.set_value(v.to_string());
                p
            })
            .collect();
        let mut g = Gauge::default();
        g.set_value(value);
        let mut m = Metric::from_gauge(g);
        m.set_label(pairs);
        self.metrics.push(m);
    }

    fn build(self) -> MetricFamily {
        let mut f = MetricFamily::default();
        f.set_name(self.name.to_string());
        f.set_help(help(self.name).to_string());
        f.set_field_type(MetricType::GAUGE);
        f.set_metric(self.metrics);
        f
    }
}

/// The families for one report. When sampling failed, only what does not
/// depend on the sample is emitted (capacity, `portrange_up 0`): a failed
/// sample must not read as "every port free".
pub fn families(report: &Report, config: &Config, reload: ReloadStatus) -> Vec<MetricFamily> {
    let mut out = Vec::new();
    let mut ok = Family::new("portrange_config_last_reload_successful");
    ok.add(&[], if reload.successful { 1.0 } else { 0.0 });
    out.push(ok.build());
    let mut ts = Family::new("portrange_config_last_reload_success_timestamp_seconds");
    ts.add(&[], reload.last_success);
    out.push(ts.build());
    let mut up = Family::new("portrange_up");
    up.add(&[], if report.up() { 1.0 } else { 0.0 });
    out.push(up.build());
    let mut dur = Family::new("portrange_scrape_duration_seconds");
    dur.add(&[], report.duration.as_secs_f64());
    out.push(dur.build());
    let mut build = Family::new("portrange_exporter_build_info");
    build.add(
        &[
            ("version", VERSION),
            ("revision", REVISION),
            ("rustc_version", RUSTC_VERSION),
        ],
        1.0,
    );
    out.push(build.build());

    let mut ports = Family::new("portrange_ports");
    if !report.up() {
        for r in &config.ranges {
            for p in &r.protocols {
                ports.add(
                    &[("range", &r.name), ("protocol", p.as_str())],
                    f64::from(r.ports.len()),
                );
            }
        }
        out.push(ports.build());
        return out;
    }

    let mut in_use = Family::new("portrange_ports_in_use");
    let mut free = Family::new("portrange_ports_free");
    let mut sockets = Family::new("portrange_sockets");
    let mut unexpected = Family::new("portrange_unexpected_listeners");
    let mut unattributed = Family::new("portrange_unattributed_sockets");
    let mut overlap = Family::new("portrange_ephemeral_overlap_ports");
    let mut excluded = Family::new("portrange_excluded_ports");
    let mut port_in_use = Family::new("portrange_port_in_use");
    for r in &report.ranges {
        let base = [
            ("range", r.range.as_str()),
            ("protocol", r.protocol.as_str()),
        ];
        ports.add(&base, f64::from(r.ports));
        in_use.add(&base, f64::from(r.in_use));
        free.add(&base, f64::from(r.ports - r.in_use));
        for (state, n) in &r.states {
            sockets.add(&[base[0], base[1], ("state", state)], *n as f64);
        }
        unexpected.add(&base, r.unexpected as f64);
        unattributed.add(&base, r.unattributed as f64);
        if let Some(o) = r.ephemeral_overlap {
            overlap.add(&base, f64::from(o));
        }
        if let Some(x) = r.excluded {
            excluded.add(&base, f64::from(x));
        }
        if let Some(pp) = &r.per_port {
            for (port, used) in pp {
                port_in_use.add(
                    &[base[0], base[1], ("port", &port.to_string())],
                    if *used { 1.0 } else { 0.0 },
                );
            }
        }
    }

    // Identical listeners (SO_REUSEPORT groups, the same program bound twice)
    // share one series: the value stays 1, as for any _info metric.
    let mut info: BTreeMap<[String; 7], ()> = BTreeMap::new();
    for l in &report.listeners {
        info.insert(
            [
                l.range.clone(),
                l.protocol.as_str().to_string(),
                l.port.to_string(),
                l.address.to_string(),
                l.process(),
                l.user.clone(),
                l.expected.as_str().to_string(),
            ],
            (),
        );
    }
    let mut listener_info = Family::new("portrange_listener_info");
    for key in info.keys() {
        listener_info.add(
            &[
                ("range", &key[0]),
                ("protocol", &key[1]),
                ("port", &key[2]),
                ("address", &key[3]),
                ("process", &key[4]),
                ("user", &key[5]),
                ("expected", &key[6]),
            ],
            1.0,
        );
    }

    out.extend([
        ports.build(),
        in_use.build(),
        free.build(),
        sockets.build(),
        unexpected.build(),
        unattributed.build(),
    ]);
    // Families with no sample are left out rather than written empty.
    for f in [overlap, excluded, port_in_use, listener_info] {
        if !f.metrics.is_empty() {
            out.push(f.build());
        }
    }
    out
}

/// Encodes families in the text format (0.0.4), sorted by name.
pub fn encode(mut families: Vec<MetricFamily>) -> Vec<u8> {
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut buf = Vec::with_capacity(16 * 1024);
    TextEncoder::new()
        .encode(&families, &mut buf)
        .expect("encoding gauges into memory cannot fail");
    buf
}

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allowlist::Expected;
    use crate::collect::{Listener, RangeStats};
    use crate::platform::{Holder, Owner};
    use crate::ranges::Protocol;
    use std::sync::Arc;
    use std::time::Duration;

    fn report(listeners: Vec<Listener>) -> Report {
        Report {
            error: None,
            ranges: vec![RangeStats {
                range: "fh".into(),
                protocol: Protocol::Udp,
                ports: 3,
                in_use: 1,
                states: vec![("unconn", 1), ("established", 0)],
                unexpected: 1,
                unattributed: 0,
                ephemeral_overlap: Some(0),
                excluded: Some(2),
                per_port: Some(vec![(1, true), (2, false), (3, false)]),
            }],
            listeners,
            attribution: Default::default(),
            missing_privileges: Vec::new(),
            duration: Duration::from_millis(500),
        }
    }

    fn listener(comm: &[u8]) -> Listener {
        Listener {
            range: "fh".into(),
            protocol: Protocol::Udp,
            port: 1,
            address: "0.0.0.0".parse().unwrap(),
            holder: Some(Holder::Process(Arc::new(Owner {
                pid: 9,
                comm: comm.to_vec(),
                exe: None,
                user: None,
                user_id: None,
            }))),
            user: "root".into(),
            expected: Expected::False,
        }
    }

    fn text(r: &Report) -> String {
        let reload = ReloadStatus {
            successful: true,
            last_success: 1.5e9,
        };
        String::from_utf8(encode(families(r, &Config::builtin(), reload))).unwrap()
    }

    #[test]
    fn hostile_names_are_escaped() {
        let t = text(&report(vec![
            listener(b"a\"b\\c\nd"),
            listener(b"bad\xff\xfe"),
        ]));
        assert!(t.contains(r#"process="a\"b\\c\nd""#), "{t}");
        assert!(t.contains("process=\"bad\u{FFFD}\u{FFFD}\""), "{t}");
        // Every sample line stays on one line.
        for line in t
            .lines()
            .filter(|l| l.starts_with("portrange_listener_info"))
        {
            assert!(line.ends_with(" 1"), "{line}");
        }
        assert_eq!(
            t.lines()
                .filter(|l| l.starts_with("portrange_listener_info{"))
                .count(),
            2
        );
    }

    #[test]
    fn duplicate_listeners_share_a_series() {
        let t = text(&report(vec![listener(b"nginx"), listener(b"nginx")]));
        assert_eq!(
            t.lines()
                .filter(|l| l.starts_with("portrange_listener_info{"))
                .count(),
            1
        );
    }

    #[test]
    fn contract_families_and_values() {
        let t = text(&report(vec![listener(b"x")]));
        for line in [
            "portrange_up 1",
            "portrange_scrape_duration_seconds 0.5",
            "portrange_config_last_reload_successful 1",
            "portrange_config_last_reload_success_timestamp_seconds 1500000000",
            r#"portrange_ports{range="fh",protocol="udp"} 3"#,
            r#"portrange_ports_in_use{range="fh",protocol="udp"} 1"#,
            r#"portrange_ports_free{range="fh",protocol="udp"} 2"#,
            r#"portrange_sockets{range="fh",protocol="udp",state="unconn"} 1"#,
            r#"portrange_sockets{range="fh",protocol="udp",state="established"} 0"#,
            r#"portrange_unexpected_listeners{range="fh",protocol="udp"} 1"#,
            r#"portrange_unattributed_sockets{range="fh",protocol="udp"} 0"#,
            r#"portrange_ephemeral_overlap_ports{range="fh",protocol="udp"} 0"#,
            r#"portrange_excluded_ports{range="fh",protocol="udp"} 2"#,
            r#"portrange_port_in_use{range="fh",protocol="udp",port="2"} 0"#,
            r#"portrange_listener_info{range="fh",protocol="udp",port="1",address="0.0.0.0",process="x",user="root",expected="false"} 1"#,
            "# TYPE portrange_up gauge",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
        assert!(!t.contains("pid"), "no pid label: {t}");
        for (name, _) in FAMILIES {
            assert!(t.contains(&format!("# HELP {name} ")), "{name} missing");
        }
    }

    #[test]
    fn a_failed_sample_does_not_read_as_free() {
        let mut r = report(vec![]);
        r.error = Some("udp/ipv4 dump: refused".into());
        r.ranges.clear();
        let t = text(&r);
        assert!(t.lines().any(|l| l == "portrange_up 0"));
        assert!(
            t.contains(r#"portrange_ports{range="framehawk",protocol="udp"} 101"#),
            "{t}"
        );
        assert!(!t.contains("portrange_ports_free"), "{t}");
        assert!(!t.contains("portrange_ports_in_use"), "{t}");
    }
}
