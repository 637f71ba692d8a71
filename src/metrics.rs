//! The metrics contract: turns a [`Report`] into Prometheus metric families,
//! adds the exporter's own metrics, and encodes the text exposition format.
//! Every family is built fresh for each scrape; nothing is kept between
//! scrapes. Label values from process names are decoded lossily (invalid
//! UTF-8 becomes U+FFFD) and escaped by the text encoder. No series carries
//! a pid or a remote address. With `--collector.netns`, every per-range
//! series carries a `netns` label and `portrange_netns_info` describes each
//! namespace; without it the output has neither.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, TextEncoder};

use crate::allowlist::Expected;
use crate::platform::Skipped;
use crate::report::{Listener, RangeView, Report};
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
        "Ports of the range with no sampled socket (ports minus ports in use). TCP ports bound but neither listening nor connecting (TCP_BOUND_INACTIVE) are not sampled and count as free.",
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
        "portrange_listeners",
        "Listeners in the range (TCP LISTEN or UDP without a peer) by owner; expected is true, false, or unknown when the owner was not found.",
    ),
    (
        "portrange_listener_info",
        "One listener in the range: every unexpected or unknown one (up to max_listener_series per range and protocol), and the allowed ones where per_port is on.",
    ),
    (
        "portrange_listener_info_dropped",
        "Unexpected or unknown listeners left out of portrange_listener_info by the range's max_listener_series.",
    ),
    (
        "portrange_up",
        "1 when socket sampling succeeded in this scrape, 0 when it failed.",
    ),
    (
        "portrange_netns_info",
        "A network namespace with series (--collector.netns): netns is host or its inode; name is its ip netns name, container the container id from its cgroup, pod and namespace its Kubernetes pod; empty where unknown.",
    ),
    (
        "portrange_netns_unsampled",
        "Network namespaces found but not sampled in this scrape (--collector.netns): what they hold is unknown.",
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
    (
        "portrange_listener_events_total",
        "Listener changes the trail detected in the range since the exporter started (scrapes and watch passes), by kind (appeared, vanished, verdict_changed) and verdict (expected, unexpected, unknown, kernel); also those the rate limit dropped or the expected ones summed. GET /api/v1/events lists them.",
    ),
    (
        "portrange_listener_events_dropped_total",
        "Trail events not recorded (no event, no log line) because of the rate limit, --collector.trail.rate and --collector.trail.burst.",
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
        "portrange_ephemeral_ports",
        crate::platform::EPHEMERAL_PORTS_HELP,
    ),
    (
        "portrange_ephemeral_ports_in_use",
        "Distinct local ports of the dynamic (ephemeral) range with at least one socket, TIME_WAIT included.",
    ),
    (
        "portrange_ephemeral_sockets",
        "Sockets whose local port is in the dynamic (ephemeral) range, by state (TIME_WAIT included; listeners too: the range is not judged).",
    ),
    (
        "portrange_ephemeral_ports_free_min",
        "The fewest ports of the dynamic range still free toward any one destination (remote address and port); 0 means connect() toward the busiest destination fails with EADDRNOTAVAIL. A port connect() took by itself is shared across destinations; one bind() took (listeners, bind((addr, 0)) before connect()) is gone for every destination. tcp, counted exact: the range less the ports no connect() can share (no peer, or taken by bind()) less the shared ports toward the busiest destination. tcp, counted conservative (portrange_ephemeral_counting_info: how each port was taken could not be read): the range less the ports in use, TIME_WAIT included. udp: the range less the ports in use, gone for everyone. Local addresses are not told apart: with several source addresses this errs low, never high.",
    ),
    (
        "portrange_ephemeral_counting_info",
        "How portrange_ephemeral_ports_free_min was counted (method): exact where how each port was taken is known (tcp with the BPF socket iterator; udp always), conservative where it is not (tcp: every port in use counts against every destination).",
    ),
    (
        "portrange_ephemeral_holders",
        "Sockets of the dynamic range per owner (process name and user), for the top owners by sockets (--collector.ephemeral.top-holders) and process=\"other\" for the rest; process is unknown where the owner was not found. TIME_WAIT and request sockets have no owner and are counted by state only.",
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

/// The families for one report: the exporter's own (reload, `up`,
/// durations, build, collectors, what was skipped), then each collector's
/// projection ([`ranges_families`], [`netns_families`]). A pure function
/// of the report: nothing here reads the configuration.
pub fn families(report: &Report, reload: ReloadStatus) -> Vec<MetricFamily> {
    let mut out = exporter_families(report, reload);
    out.extend(ranges_families(report));
    out.extend(netns_families(report));
    out.extend(crate::traffic::families(report));
    out.extend(ephemeral_families(report));
    out.extend(trail_families(report));
    out
}

/// The listener trail's counters, when the report carries a trail.
pub fn trail_families(report: &Report) -> Vec<MetricFamily> {
    let Some(trail) = &report.trail else {
        return Vec::new();
    };
    let counter = |name: &'static str, series: Vec<(Vec<(&str, &str)>, u64)>| {
        let metrics = series
            .into_iter()
            .map(|(labels, v)| {
                let mut c = prometheus::proto::Counter::default();
                c.set_value(v as f64);
                let mut m = Metric::default();
                m.set_counter(c);
                m.set_label(
                    labels
                        .into_iter()
                        .map(|(k, v)| {
                            let mut p = LabelPair::default();
                            p.set_name(k.to_string());
                            p.set_value(v.to_string());
                            p
                        })
                        .collect(),
                );
                m
            })
            .collect();
        let mut f = MetricFamily::default();
        f.set_name(name.to_string());
        f.set_help(help(name).to_string());
        f.set_field_type(MetricType::COUNTER);
        f.set_metric(metrics);
        f
    };
    let events = trail
        .counts
        .iter()
        .map(|((range, protocol, kind, verdict), n)| {
            (
                vec![
                    ("range", range.as_str()),
                    ("protocol", *protocol),
                    ("kind", *kind),
                    ("verdict", *verdict),
                ],
                *n,
            )
        })
        .collect();
    let mut out = Vec::new();
    // The text encoder refuses a family without series (no range yet).
    if !trail.counts.is_empty() {
        out.push(counter("portrange_listener_events_total", events));
    }
    out.push(counter(
        "portrange_listener_events_dropped_total",
        vec![(Vec::new(), trail.dropped)],
    ));
    out
}

/// The exporter's own families: the reload status, `portrange_up`, the
/// scrape's duration, build information, each collector's success and
/// duration, and the parts of the collection that were skipped.
fn exporter_families(report: &Report, reload: ReloadStatus) -> Vec<MetricFamily> {
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
    let mut success = Family::new("portrange_scrape_collector_success");
    let mut duration = Family::new("portrange_scrape_collector_duration_seconds");
    for c in &report.collectors {
        success.add(&[("collector", c.name)], if c.success { 1.0 } else { 0.0 });
        duration.add(&[("collector", c.name)], c.duration.as_secs_f64());
    }
    if !success.metrics.is_empty() {
        out.push(success.build());
        out.push(duration.build());
    }
    let mut skipped = Family::new("portrange_collection_skipped");
    for stage in Skipped::STAGES {
        skipped.add(&[("stage", stage)], report.skipped_in(stage) as f64);
    }
    out.push(skipped.build());
    out
}

/// The `ranges` collector's families. When sampling failed, only what
/// does not depend on the sample is emitted (capacity): a failed sample
/// must not read as "every port free".
pub fn ranges_families(report: &Report) -> Vec<MetricFamily> {
    let mut out = Vec::new();
    let mut ports = Family::new("portrange_ports");
    if !report.up() {
        for r in &report.ranges {
            ports.add(&base_labels(r), f64::from(r.ports()));
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
    let mut listeners = Family::new("portrange_listeners");
    let mut info_dropped = Family::new("portrange_listener_info_dropped");
    let mut listener_info = Family::new("portrange_listener_info");
    let mut all_counts: BTreeMap<[String; 6], u64> = BTreeMap::new();
    let mut all_info: BTreeSet<[String; 8]> = BTreeSet::new();
    for r in &report.ranges {
        let base = base_labels(r);
        ports.add(&base, f64::from(r.ports()));
        in_use.add(&base, f64::from(r.in_use));
        free.add(&base, f64::from(r.free()));
        for (state, n) in &r.states {
            sockets.add(&with(&base, ("state", state)), *n as f64);
        }
        unexpected.add(&base, r.unexpected as f64);
        unattributed.add(&base, r.unattributed as f64);
        if let Some(o) = r.ephemeral_overlap {
            overlap.add(&base, f64::from(o));
        }
        if let Some(x) = r.excluded_free() {
            excluded.add(&base, f64::from(x));
        }
        if let Some(pp) = r.port_in_use() {
            for (port, used) in pp {
                port_in_use.add(
                    &with(&base, ("port", &port.to_string())),
                    if used { 1.0 } else { 0.0 },
                );
            }
        }
        let (counts, info, dropped) = itemize(r);
        let netns = r.netns.clone().unwrap_or_default();
        for ((process, user, expected), n) in counts {
            all_counts.insert(
                [
                    r.range.clone(),
                    r.protocol.as_str().to_string(),
                    process.into_owned(),
                    user.to_string(),
                    expected.as_str().to_string(),
                    netns.clone(),
                ],
                n,
            );
        }
        info_dropped.add(&base, dropped as f64);
        for [port, address, process, user, expected] in info {
            all_info.insert([
                r.range.clone(),
                r.protocol.as_str().to_string(),
                port,
                address,
                process,
                user,
                expected,
                netns.clone(),
            ]);
        }
    }
    // In label order across ranges, as they always were.
    let netns_on = report.netns.is_some() || report.ranges.iter().any(|r| r.netns.is_some());
    let label_names = ["range", "protocol", "process", "user", "expected", "netns"];
    for (key, n) in &all_counts {
        let labels: Vec<(&str, &str)> = label_names
            .iter()
            .zip(key)
            .take(if netns_on { 6 } else { 5 })
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        listeners.add(&labels, *n as f64);
    }
    let label_names = [
        "range", "protocol", "port", "address", "process", "user", "expected", "netns",
    ];
    for key in &all_info {
        let labels: Vec<(&str, &str)> = label_names
            .iter()
            .zip(key)
            .take(if netns_on { 8 } else { 7 })
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        listener_info.add(&labels, 1.0);
    }
    out.extend([
        ports.build(),
        in_use.build(),
        free.build(),
        sockets.build(),
        unexpected.build(),
        unattributed.build(),
        info_dropped.build(),
    ]);
    // Families with no sample are left out rather than written empty.
    for f in [overlap, excluded, port_in_use, listeners, listener_info] {
        if !f.metrics.is_empty() {
            out.push(f.build());
        }
    }
    out
}

/// The `netns` collector's families (`--collector.netns`): one info
/// series per namespace with series, and the count not sampled.
pub fn netns_families(report: &Report) -> Vec<MetricFamily> {
    let Some(n) = &report.netns else {
        return Vec::new();
    };
    let mut netns_info = Family::new("portrange_netns_info");
    for ns in &n.namespaces {
        netns_info.add(
            &[
                ("netns", ns.label.as_str()),
                ("name", &ns.name),
                ("container", &ns.container),
                ("pod", &ns.pod),
                ("namespace", &ns.namespace),
            ],
            1.0,
        );
    }
    let mut unsampled = Family::new("portrange_netns_unsampled");
    unsampled.add(&[], f64::from(n.unsampled));
    vec![netns_info.build(), unsampled.build()]
}

/// `range`, `protocol` and, per namespace, `netns`.
fn base_labels(r: &RangeView) -> Vec<(&str, &str)> {
    [
        ("range", r.range.as_str()),
        ("protocol", r.protocol.as_str()),
    ]
    .into_iter()
    .chain(r.netns.as_deref().map(|n| ("netns", n)))
    .collect()
}

/// process, user, expected.
type CountKey<'a> = (Cow<'a, str>, &'a str, Expected);
/// port, address, process, user, expected.
type InfoKey = [String; 5];

/// Splits a view's listeners into what the series carry: a count per
/// owner (bounded by the owners, not the sockets they hold), the
/// listeners itemized one by one (every unexpected or unknown one up to
/// the range's `max_listener_series`, unexpected first, and the allowed
/// ones only where `per_port` is on), and how many the cap left out.
/// Identical listeners (SO_REUSEPORT groups, the same program bound twice)
/// share one `_info` series, whose value stays 1. Counting borrows the
/// label values; strings are made only for what is emitted.
fn itemize(view: &RangeView) -> (BTreeMap<CountKey<'_>, u64>, BTreeSet<InfoKey>, u64) {
    let mut counts: BTreeMap<CountKey<'_>, u64> = BTreeMap::new();
    let mut info: BTreeSet<InfoKey> = BTreeSet::new();
    let mut dropped = 0;
    let mut itemized = 0u32;
    let mut to_itemize: Vec<&Listener> = Vec::new();
    for l in &view.listeners {
        *counts
            .entry((l.process_name(), l.user.as_str(), l.expected))
            .or_default() += 1;
        if l.expected != Expected::True || view.per_port {
            to_itemize.push(l);
        }
    }
    // Unexpected first, then unknown, then allowed; by port within each.
    to_itemize.sort_by_key(|l| {
        let rank = match l.expected {
            Expected::False => 0,
            Expected::Unknown => 1,
            Expected::True => 2,
        };
        (rank, l.port)
    });
    for l in to_itemize {
        let key = [
            l.port.to_string(),
            l.address.to_string(),
            l.process(),
            l.user.clone(),
            l.expected.as_str().to_string(),
        ];
        if info.contains(&key) {
            continue; // an identical listener, already itemized
        }
        if l.expected == Expected::True {
            info.insert(key);
        } else if itemized < view.max_listener_series {
            itemized += 1;
            info.insert(key);
        } else {
            dropped += 1;
        }
    }
    (counts, info, dropped)
}

/// `base` plus one more label.
fn with<'a>(base: &[(&'a str, &'a str)], extra: (&'a str, &'a str)) -> Vec<(&'a str, &'a str)> {
    let mut v = base.to_vec();
    v.push(extra);
    v
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

/// The `ephemeral` collector's families: per protocol (and `netns`), the
/// range's size, ports in use, sockets by state, the headroom toward the
/// busiest destination, and the top holders. Nothing when the collector
/// is off or failed (its `portrange_scrape_collector_success` says which).
/// No destination is a label.
pub fn ephemeral_families(report: &Report) -> Vec<MetricFamily> {
    let Some(e) = &report.ephemeral else {
        return Vec::new();
    };
    if e.views.is_empty() {
        return Vec::new();
    }
    let mut ports = Family::new("portrange_ephemeral_ports");
    let mut in_use = Family::new("portrange_ephemeral_ports_in_use");
    let mut sockets = Family::new("portrange_ephemeral_sockets");
    let mut free_min = Family::new("portrange_ephemeral_ports_free_min");
    let mut counting = Family::new("portrange_ephemeral_counting_info");
    let mut holders = Family::new("portrange_ephemeral_holders");
    for v in &e.views {
        let mut base = vec![("protocol", v.protocol.as_str())];
        if let Some(ns) = &v.netns {
            base.push(("netns", ns.as_str()));
        }
        ports.add(&base, f64::from(v.ports()));
        in_use.add(&base, f64::from(v.in_use));
        free_min.add(&base, f64::from(v.free_min));
        counting.add(&with(&base, ("method", v.counting.as_str())), 1.0);
        for (state, n) in &v.states {
            sockets.add(&with(&base, ("state", state)), *n as f64);
        }
        // In label order: a stable exposition whatever the counts.
        let mut by_label: Vec<&crate::ephemeral::HolderCount> = v.holders.iter().collect();
        by_label.sort_by(|a, b| (&a.process, &a.user).cmp(&(&b.process, &b.user)));
        for h in by_label {
            let mut labels = base.clone();
            labels.push(("process", h.process.as_str()));
            labels.push(("user", h.user.as_str()));
            holders.add(&labels, h.sockets as f64);
        }
    }
    let mut out = vec![
        ports.build(),
        in_use.build(),
        sockets.build(),
        free_min.build(),
        counting.build(),
    ];
    if !holders.metrics.is_empty() {
        out.push(holders.build());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::{Holder, Owner};
    use crate::ranges::{PortSet, Protocol};
    use crate::report::CollectorRun;
    use std::sync::Arc;
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
                name_via_link: false,
            }))),
            user: "root".into(),
            expected: Expected::False,
            netns: None,
        }
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
