//! The metrics contract: turns a [`Report`] into Prometheus metric families,
//! adds the exporter's own metrics, and encodes the text exposition format.
//! Every family is built fresh for each scrape; nothing is kept between
//! scrapes. Label values from process names are decoded lossily (invalid
//! UTF-8 becomes U+FFFD) and escaped by the text encoder. No series carries
//! a pid or a remote address. With `--collector.netns`, every per-range
//! series carries a `netns` label and `portrange_netns_info` describes each
//! namespace; without it the output has neither.

use prometheus::proto::MetricFamily;
use prometheus::{Encoder, TextEncoder};

use crate::exposition::Family;
use crate::platform::Skipped;
use crate::report::Report;
use crate::watched::Ranges;

/// The outcome of the last configuration (re)load, as Prometheus reports
/// its own.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReloadStatus {
    pub successful: bool,
    /// Unix time of the last successful load, in seconds.
    pub last_success: f64,
}

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("PORTRANGE_REVISION");
pub const RUSTC_VERSION: &str = env!("PORTRANGE_RUSTC_VERSION");

/// Every metric family this exporter can emit (beyond `process_*`), with
/// its help text. The golden test and the dashboard/rule checks read this.
pub const FAMILIES: &[(&str, &str)] = &[
    ("portrange_ports", crate::watched::PORTS_HELP),
    ("portrange_ports_in_use", crate::watched::PORTS_IN_USE_HELP),
    ("portrange_ports_free", crate::watched::PORTS_FREE_HELP),
    ("portrange_sockets", crate::watched::SOCKETS_HELP),
    (
        "portrange_unexpected_listeners",
        crate::watched::UNEXPECTED_LISTENERS_HELP,
    ),
    (
        "portrange_unattributed_sockets",
        crate::watched::UNATTRIBUTED_SOCKETS_HELP,
    ),
    (
        "portrange_ephemeral_overlap_ports",
        crate::watched::EPHEMERAL_OVERLAP_HELP,
    ),
    (
        "portrange_excluded_ports",
        crate::watched::EXCLUDED_PORTS_HELP,
    ),
    ("portrange_port_in_use", crate::watched::PORT_IN_USE_HELP),
    ("portrange_listeners", crate::watched::LISTENERS_HELP),
    (
        "portrange_listener_info",
        crate::watched::LISTENER_INFO_HELP,
    ),
    (
        "portrange_listener_info_dropped",
        crate::watched::LISTENER_INFO_DROPPED_HELP,
    ),
    (
        "portrange_up",
        "1 when socket sampling succeeded in this scrape, 0 when it failed.",
    ),
    ("portrange_netns_info", crate::netns::NETNS_INFO_HELP),
    (
        "portrange_netns_unsampled",
        crate::netns::NETNS_UNSAMPLED_HELP,
    ),
    (
        "portrange_scrape_duration_seconds",
        "Time this scrape took to sample, attribute and count, in seconds.",
    ),
    (
        "portrange_scrape_collector_success",
        "1 when the collector succeeded in this scrape, else 0; one series per collector that ran: the watched ranges (sampling, attribution, judging), the network namespaces when every namespace is sampled, the dynamic (ephemeral) range unless --no-collector.ephemeral, and the traffic counters with --collector.traffic.",
    ),
    (
        "portrange_scrape_collector_duration_seconds",
        "Time the collector took in this scrape, in seconds. Sampling the sockets of every network namespace counts to the ranges collector, and so do sampling and attributing the dynamic range's sockets (one dump and one attribution pass serve both); the ephemeral collector's time is the counting, the traffic collector's reading its nftables counters.",
    ),
    (
        "portrange_collection_skipped",
        "Parts of this scrape's collection left out, by stage (sample, attribution, kernel_check, tunnels, users): the deadline passed or the system refused. What they hold is unknown, not absent; /api/v1/status says which.",
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
    ("portrange_listener_events_total", crate::trail::EVENTS_HELP),
    (
        "portrange_listener_events_dropped_total",
        crate::trail::EVENTS_DROPPED_HELP,
    ),
    (
        "portrange_received_packets_total",
        crate::traffic::RECEIVED_PACKETS_HELP,
    ),
    (
        "portrange_received_bytes_total",
        crate::traffic::RECEIVED_BYTES_HELP,
    ),
    (
        "portrange_connection_attempts_total",
        crate::traffic::ATTEMPTS_HELP,
    ),
    (
        "portrange_traffic_readings_lost_total",
        crate::traffic::READINGS_LOST_HELP,
    ),
    ("portrange_ephemeral_ports", crate::ephemeral::PORTS_HELP),
    (
        "portrange_ephemeral_ports_in_use",
        crate::ephemeral::IN_USE_HELP,
    ),
    (
        "portrange_ephemeral_sockets",
        crate::ephemeral::SOCKETS_HELP,
    ),
    (
        "portrange_ephemeral_ports_free_min",
        crate::ephemeral::FREE_MIN_HELP,
    ),
    (
        "portrange_ephemeral_counting_info",
        crate::ephemeral::COUNTING_HELP,
    ),
    (
        "portrange_ephemeral_holders",
        crate::ephemeral::HOLDERS_HELP,
    ),
];

fn help(name: &str) -> &'static str {
    FAMILIES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, h)| *h)
        .unwrap_or_else(|| panic!("metric {name} is missing from FAMILIES"))
}

/// A gauge family of the metrics contract, its help from [`FAMILIES`].
fn family(name: &'static str) -> Family {
    Family::new(name, help(name))
}

/// The families for one report: the exporter's own (reload, `up`,
/// durations, build, collectors, what was skipped), then each collector's
/// projection (each collector renders its own part). A pure function
/// of the report: nothing here reads the configuration.
pub fn families(report: &Report, reload: ReloadStatus) -> Vec<MetricFamily> {
    let mut out = exporter_families(report, reload);
    out.extend(crate::watched::families(Ranges {
        views: &report.ranges,
        up: report.up(),
        per_netns: report.netns.is_some(),
    }));
    out.extend(crate::netns::families(report.netns.as_ref()));
    out.extend(crate::traffic::families(
        report.traffic.as_ref(),
        report.netns.is_some(),
    ));
    out.extend(crate::ephemeral::families(report.ephemeral.as_ref()));
    out.extend(crate::trail::families(report.trail.as_ref()));
    out
}

/// The exporter's own families: the reload status, `portrange_up`, the
/// scrape's duration, build information, each collector's success and
/// duration, and the parts of the collection that were skipped.
fn exporter_families(report: &Report, reload: ReloadStatus) -> Vec<MetricFamily> {
    let mut out = Vec::new();
    let mut ok = family("portrange_config_last_reload_successful");
    ok.add(&[], if reload.successful { 1.0 } else { 0.0 });
    out.push(ok.build());
    let mut ts = family("portrange_config_last_reload_success_timestamp_seconds");
    ts.add(&[], reload.last_success);
    out.push(ts.build());
    let mut up = family("portrange_up");
    up.add(&[], if report.up() { 1.0 } else { 0.0 });
    out.push(up.build());
    let mut dur = family("portrange_scrape_duration_seconds");
    dur.add(&[], report.duration.as_secs_f64());
    out.push(dur.build());
    let mut build = family("portrange_exporter_build_info");
    build.add(
        &[
            ("version", VERSION),
            ("revision", REVISION),
            ("rustc_version", RUSTC_VERSION),
        ],
        1.0,
    );
    out.push(build.build());
    let mut success = family("portrange_scrape_collector_success");
    let mut duration = family("portrange_scrape_collector_duration_seconds");
    for c in &report.collectors {
        success.add(&[("collector", c.name)], if c.success { 1.0 } else { 0.0 });
        duration.add(&[("collector", c.name)], c.duration.as_secs_f64());
    }
    if !success.metrics.is_empty() {
        out.push(success.build());
        out.push(duration.build());
    }
    let mut skipped = family("portrange_collection_skipped");
    for stage in Skipped::STAGES {
        skipped.add(&[("stage", stage)], report.skipped_in(stage) as f64);
    }
    out.push(skipped.build());
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
    use crate::platform::Owner;
    use crate::ranges::{PortSet, Protocol};
    use crate::report::{CollectorRun, Listener, RangeView};
    use std::time::Duration;

    fn report(listeners: Vec<Listener>) -> Report {
        Report {
            ranges: vec![RangeView {
                per_port: true,
                max_listener_series: 100,
                in_use: 1,
                states: vec![("unconn", 1), ("established", 0)],
                unexpected: 1,
                ephemeral_overlap: Some(0),
                excluded: Some(PortSet::from_intervals(vec![(2, 3)])),
                in_use_ports: vec![1],
                listeners,
                ..RangeView::capacity(
                    "fh",
                    Protocol::Udp,
                    None,
                    PortSet::from_intervals(vec![(1, 3)]),
                )
            }],
            duration: Duration::from_millis(500),
            collectors: vec![CollectorRun {
                name: "ranges",
                success: true,
                duration: Duration::from_millis(400),
            }],
            ephemeral: Some(ephemeral_report(None)),
            ..Report::default()
        }
    }

    /// The dynamic range 40000-40199 on TCP, one holder.
    fn ephemeral_report(netns: Option<&str>) -> crate::ephemeral::EphemeralReport {
        use crate::ephemeral::{EphemeralReport, EphemeralView, HolderCount};
        EphemeralReport {
            views: vec![EphemeralView {
                protocol: Protocol::Tcp,
                netns: netns.map(str::to_string),
                range: PortSet::from_intervals(vec![(40000, 40199)]),
                in_use: 200,
                states: vec![("established", 150), ("time_wait", 50)],
                unshared: 0,
                free_min: 0,
                free_new: 0,
                counting: crate::ephemeral::Counting::Exact,
                destinations_total: 1,
                destinations: Vec::new(),
                holders: vec![HolderCount {
                    process: "pgbouncer".into(),
                    user: "postgres".into(),
                    sockets: 150,
                }],
                unattributed: 0,
            }],
            error: None,
        }
    }

    fn listener(comm: &[u8]) -> Listener {
        Listener::held_by("fh", 1, Owner::named(9, comm), Expected::False)
    }

    fn text(r: &Report) -> String {
        let reload = ReloadStatus {
            successful: true,
            last_success: 1.5e9,
        };
        String::from_utf8(encode(families(r, reload))).unwrap()
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
            .filter(|l| l.starts_with("portrange_listener_info{"))
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
        let mut r = report(vec![listener(b"x")]);
        r.traffic = Some(crate::traffic::example());
        let t = text(&r);
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
            r#"portrange_scrape_collector_success{collector="ranges"} 1"#,
            r#"portrange_scrape_collector_duration_seconds{collector="ranges"} 0.4"#,
            r#"portrange_collection_skipped{stage="sample"} 0"#,
            r#"portrange_collection_skipped{stage="users"} 0"#,
            "# TYPE portrange_up gauge",
            r#"portrange_ephemeral_ports{protocol="tcp"} 200"#,
            r#"portrange_ephemeral_ports_in_use{protocol="tcp"} 200"#,
            r#"portrange_ephemeral_ports_free_min{protocol="tcp"} 0"#,
            r#"portrange_ephemeral_sockets{protocol="tcp",state="time_wait"} 50"#,
            r#"portrange_ephemeral_holders{protocol="tcp",process="pgbouncer",user="postgres"} 150"#,
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
        assert!(!t.contains("pid"), "no pid label: {t}");
        for (name, _) in FAMILIES.iter().filter(|(n, _)| {
            !n.starts_with("portrange_netns_") && !n.starts_with("portrange_listener_events")
        }) {
            assert!(t.contains(&format!("# HELP {name} ")), "{name} missing");
        }
        assert!(
            !t.contains("netns"),
            "no netns label or family without the collector"
        );
    }

    #[test]
    fn skipped_parts_are_counted_per_stage_from_a_fixed_set() {
        let mut r = report(vec![]);
        r.skipped = vec![
            Skipped::new(
                Skipped::SAMPLE,
                "netns 4026532301: udp dump",
                "deadline passed",
            ),
            Skipped::new(
                Skipped::SAMPLE,
                "netns 4026532302: tcp dump",
                "deadline passed",
            ),
            Skipped::new(Skipped::USERS, "the name of uid 1001", "no answer"),
        ];
        let t = text(&r);
        let skipped: Vec<&str> = t
            .lines()
            .filter(|l| l.starts_with("portrange_collection_skipped{"))
            .collect();
        assert_eq!(
            skipped,
            vec![
                r#"portrange_collection_skipped{stage="sample"} 2"#,
                r#"portrange_collection_skipped{stage="attribution"} 0"#,
                r#"portrange_collection_skipped{stage="kernel_check"} 0"#,
                r#"portrange_collection_skipped{stage="tunnels"} 0"#,
                r#"portrange_collection_skipped{stage="users"} 1"#,
            ],
            "every stage, also at 0, and nothing of what or why in a label"
        );
    }

    /// The range of a 20,000-port range with `per_port` off and at most 3
    /// `_info` series.
    fn capped(listeners: Vec<Listener>) -> Report {
        let mut r = report(listeners);
        r.ranges[0].spec = PortSet::from_intervals(vec![(1, 20000)]);
        r.ranges[0].per_port = false;
        r.ranges[0].max_listener_series = 3;
        r
    }

    fn at(port: u16, comm: &[u8], expected: Expected) -> Listener {
        Listener {
            port,
            expected,
            ..listener(comm)
        }
    }

    #[test]
    fn series_do_not_grow_with_the_sockets_an_allowed_owner_holds() {
        let series = |r: &Report| text(r).lines().filter(|l| !l.starts_with('#')).count();
        let small: Vec<Listener> = (1..=10)
            .map(|p| at(p, b"rtpengine", Expected::True))
            .collect();
        let big: Vec<Listener> = (1..=10_000)
            .map(|p| at(p, b"rtpengine", Expected::True))
            .collect();
        assert_eq!(series(&capped(small)), series(&capped(big.clone())));
        let t = text(&capped(big));
        assert!(t.lines().any(|l| l
            == r#"portrange_listeners{range="fh",protocol="udp",process="rtpengine",user="root",expected="true"} 10000"#), "{t}");
        assert!(
            !t.contains("portrange_listener_info{"),
            "allowed ones are not itemized without per_port"
        );
    }

    #[test]
    fn unexpected_listeners_are_itemized_up_to_the_cap_and_the_rest_counted() {
        let mut ls: Vec<Listener> = (100..105)
            .map(|p| at(p, b"socat", Expected::False))
            .collect();
        ls.push(at(50, b"ghost", Expected::Unknown));
        ls.push(at(7, b"rtpengine", Expected::True));
        let t = text(&capped(ls));
        let info: Vec<&str> = t
            .lines()
            .filter(|l| l.starts_with("portrange_listener_info{"))
            .collect();
        assert_eq!(info.len(), 3, "{t}");
        assert!(
            info.iter().all(|l| l.contains("process=\"socat\"")),
            "unexpected first: {info:?}"
        );
        assert!(
            info[0].contains("port=\"100\""),
            "lowest ports first: {info:?}"
        );
        assert!(
            t.lines()
                .any(|l| l == r#"portrange_listener_info_dropped{range="fh",protocol="udp"} 3"#),
            "{t}"
        );
        assert!(t.lines().any(|l| l == r#"portrange_listeners{range="fh",protocol="udp",process="socat",user="root",expected="false"} 5"#), "{t}");
        assert!(t.lines().any(|l| l == r#"portrange_listeners{range="fh",protocol="udp",process="ghost",user="root",expected="unknown"} 1"#), "{t}");
    }

    #[test]
    fn trail_counters_are_counters_with_their_four_labels() {
        let mut r = report(vec![]);
        assert!(
            !text(&r).contains("portrange_listener_events"),
            "no trail, no family"
        );
        let mut trail = crate::trail::TrailView {
            dropped: 7,
            ..Default::default()
        };
        trail
            .counts
            .insert(("fh".into(), "udp", "appeared", "unexpected"), 3);
        trail
            .counts
            .insert(("fh".into(), "udp", "vanished", "expected"), 0);
        r.trail = Some(trail);
        let t = text(&r);
        for line in [
            "# TYPE portrange_listener_events_total counter",
            r#"portrange_listener_events_total{range="fh",protocol="udp",kind="appeared",verdict="unexpected"} 3"#,
            r#"portrange_listener_events_total{range="fh",protocol="udp",kind="vanished",verdict="expected"} 0"#,
            "# TYPE portrange_listener_events_dropped_total counter",
            "portrange_listener_events_dropped_total 7",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
    }

    #[test]
    fn a_failed_sample_does_not_read_as_free() {
        let r = Report::failed(
            "udp/ipv4 dump: refused".into(),
            crate::collect::capacity(&crate::config::Config::builtin(), false),
            Duration::ZERO,
        );
        let t = text(&r);
        assert!(t.lines().any(|l| l == "portrange_up 0"));
        assert!(
            t.contains(r#"portrange_ports{range="framehawk",protocol="udp"} 101"#),
            "{t}"
        );
        assert!(!t.contains("portrange_ports_free"), "{t}");
        assert!(!t.contains("portrange_ports_in_use"), "{t}");
    }

    #[test]
    fn every_series_carries_netns_with_the_collector() {
        use crate::report::{NetnsInfo, NetnsReport};
        let mut r = report(vec![listener(b"x")]);
        r.traffic = Some(crate::traffic::example());
        let mut other = r.ranges[0].clone();
        other.in_use = 2;
        r.ranges[0].netns = Some("host".into());
        r.ranges[0].listeners[0].netns = Some("host".into());
        other.netns = Some("4026532301".into());
        other.listeners[0].netns = Some("4026532301".into());
        r.ranges.push(other);
        r.netns = Some(NetnsReport {
            namespaces: vec![
                NetnsInfo {
                    label: "host".into(),
                    name: String::new(),
                    container: String::new(),
                    pod: String::new(),
                    namespace: String::new(),
                },
                NetnsInfo {
                    label: "4026532301".into(),
                    name: "blue".into(),
                    container: "c0ffee".into(),
                    pod: "web-0".into(),
                    namespace: "shop".into(),
                },
            ],
            unsampled: 1,
        });
        let mut trail = crate::trail::TrailView::default();
        trail
            .counts
            .insert(("fh".into(), "udp", "appeared", "expected"), 1);
        r.trail = Some(trail);
        let mut eph = ephemeral_report(Some("host"));
        eph.views.extend(ephemeral_report(Some("4026532301")).views);
        r.ephemeral = Some(eph);
        let t = text(&r);
        for line in [
            r#"portrange_ports{range="fh",protocol="udp",netns="host"} 3"#,
            r#"portrange_ports_in_use{range="fh",protocol="udp",netns="4026532301"} 2"#,
            r#"portrange_ports_free{range="fh",protocol="udp",netns="4026532301"} 1"#,
            r#"portrange_ports_free{range="fh",protocol="udp",netns="host"} 2"#,
            r#"portrange_sockets{range="fh",protocol="udp",netns="host",state="unconn"} 1"#,
            r#"portrange_port_in_use{range="fh",protocol="udp",netns="host",port="1"} 1"#,
            r#"portrange_listener_info{range="fh",protocol="udp",port="1",address="0.0.0.0",process="x",user="root",expected="false",netns="4026532301"} 1"#,
            r#"portrange_listener_info{range="fh",protocol="udp",port="1",address="0.0.0.0",process="x",user="root",expected="false",netns="host"} 1"#,
            r#"portrange_netns_info{netns="host",name="",container="",pod="",namespace=""} 1"#,
            r#"portrange_netns_info{netns="4026532301",name="blue",container="c0ffee",pod="web-0",namespace="shop"} 1"#,
            "portrange_netns_unsampled 1",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
        // Every per-range family (every family but the exporter-wide ones
        // below, so that a family added later is checked too) is present,
        // and every series of it has the label.
        const EXPORTER_WIDE: &[&str] = &[
            "portrange_up",
            "portrange_netns_info",
            "portrange_netns_unsampled",
            "portrange_scrape_duration_seconds",
            "portrange_config_last_reload_successful",
            "portrange_config_last_reload_success_timestamp_seconds",
            "portrange_exporter_build_info",
            "portrange_scrape_collector_success",
            "portrange_scrape_collector_duration_seconds",
            "portrange_collection_skipped",
            // Summed over namespaces on purpose: containers come and go, a
            // counter per namespace would grow without bound (the events
            // name their namespace).
            "portrange_listener_events_total",
            "portrange_listener_events_dropped_total",
            // The traffic table's own rebuilds, one table per exporter.
            "portrange_traffic_readings_lost_total",
        ];
        let samples: Vec<(&str, &str)> = t
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split_at(l.find(['{', ' ']).unwrap()))
            .collect();
        for (name, _) in FAMILIES.iter().filter(|(n, _)| !EXPORTER_WIDE.contains(n)) {
            let series: Vec<&str> = samples
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, rest)| *rest)
                .collect();
            assert!(!series.is_empty(), "no {name} series in\n{t}");
            for rest in series {
                // The dynamic range's families are per protocol, not range.
                let per_range = !name.starts_with("portrange_ephemeral_")
                    || *name == "portrange_ephemeral_overlap_ports";
                assert!(
                    (rest.contains("range=\"") || !per_range) && rest.contains("netns=\""),
                    "{name}{rest}"
                );
            }
        }
        for (name, _) in FAMILIES {
            assert!(t.contains(&format!("# HELP {name} ")), "{name} missing");
        }
        // A failed sample keeps the host's capacity under its label.
        let r = Report::failed(
            "refused".into(),
            crate::collect::capacity(&crate::config::Config::builtin(), true),
            Duration::ZERO,
        );
        let t = text(&r);
        assert!(
            t.contains(r#"portrange_ports{range="framehawk",protocol="udp",netns="host"} 101"#),
            "{t}"
        );
    }
}
