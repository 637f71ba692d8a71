//! The `traffic` collector (`--collector.traffic`, off by default):
//! packets, bytes and TCP connection attempts received for each watched
//! range and protocol, split by whether a socket could take them
//! (`listening`) or not (`closed`), and which closed ports were probed in
//! the last minute. Platform-free: the counting itself is a
//! [`TrafficTable`] behind the platform boundary (on Linux one nftables
//! table of our own per exporter instance, docs/traffic.md); here are the
//! collector over the rules made from the ranges
//! ([`crate::collect::traffic_rules`]), the counters carried across
//! rebuilds so that they stay monotonic where a range keeps its name
//! ([`Offsets`]), and the projections of the result: the counter
//! families ([`families`]), the status document's section
//! ([`status_json`]) and `check`'s lines ([`check_lines`]).
//!
//! The table is installed at the first collection and again whenever the
//! ranges change (reload); a table that vanished (someone flushed the
//! ruleset) is installed again at the next collection. What a rebuild
//! cannot carry over (the old table's last counts, when they cannot be
//! read) is counted in `portrange_traffic_readings_lost_total`, never
//! dropped silently. Every exchange with the kernel waits no later than
//! the collection's deadline. The table goes with the exporter's process
//! (the kernel removes it when its netlink socket closes), at any exit. Without
//! CAP_NET_ADMIN the collector fails (`portrange_scrape_collector_success
//! {collector="traffic"} 0`), says so once in the log, and everything else
//! is served. The counts cover the exporter's own network namespace only,
//! also with `--collector.netns` (the series then carry `netns="host"`).
//! `check` never installs: it reads the running exporter's table.

use std::collections::HashMap;
use std::time::Instant;

use prometheus::proto::MetricFamily;

use crate::exposition::{counter_family, counter_metric};
use serde::Serialize;

use crate::platform::traffic::{
    Counter, PORT_SET_SIZE, PORT_WINDOW_SECS, RuleReading, TrafficError, TrafficRule, TrafficTable,
};
use crate::ranges::Protocol;

/// The `collector` label.
pub const TRAFFIC: &str = "traffic";
/// How long the install at start may take (a collection's own deadline
/// bounds the later ones).
pub const PREPARE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Closed ports named per range and protocol (the busiest).
pub const TOP_PORTS: usize = 10;
/// What the counts cover.
pub const SCOPE: &str = "the exporter's own network namespace (with --collector.netns too: other namespaces are not counted)";

/// Packets, bytes and TCP connection attempts (SYN without ACK).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Flow {
    pub packets: u64,
    pub bytes: u64,
    pub attempts: u64,
}

/// A closed port that received traffic in the last minute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ProbedPort {
    pub port: u16,
    pub packets: u64,
    pub bytes: u64,
}

/// What one range received on one protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrafficView {
    pub range: String,
    pub protocol: Protocol,
    /// Since the exporter started (monotonic across reloads).
    pub listening: Flow,
    pub closed: Flow,
    /// Closed ports probed in the last [`PORT_WINDOW_SECS`]: the busiest
    /// [`TOP_PORTS`], busiest first.
    pub probed: Vec<ProbedPort>,
    /// How many closed ports were probed in the window (at most
    /// [`PORT_SET_SIZE`]: at that number, at least that many).
    pub probed_ports: u32,
    /// Packets to closed ports in the window.
    pub probed_packets: u64,
}

/// The `traffic` collector's part of the report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrafficReport {
    pub views: Vec<TrafficView>,
    /// Rebuilds since the start whose old table's counts since the last
    /// read could not be carried over (unreadable or gone).
    pub lost_readings: u64,
}

/// The six running totals of one rule.
type Totals = [u64; 6];

fn totals(r: &RuleReading) -> Totals {
    [
        r.all.packets,
        r.all.bytes,
        r.closed.packets,
        r.closed.bytes,
        r.attempts_all,
        r.attempts_closed,
    ]
}

/// Keeps counters monotonic per (range, protocol): when a reading is
/// below the last one (the table was rebuilt, or replaced from outside),
/// the last one is carried as an offset.
#[derive(Debug, Default)]
pub struct Offsets {
    base: HashMap<(String, Protocol), Totals>,
    last: HashMap<(String, Protocol), Totals>,
}

impl Offsets {
    /// Notes a reading and returns the monotonic totals.
    pub fn apply(&mut self, range: &str, protocol: Protocol, reading: &RuleReading) -> Totals {
        let key = (range.to_string(), protocol);
        let now = totals(reading);
        let base = self.base.entry(key.clone()).or_default();
        if let Some(last) = self.last.get(&key) {
            for i in 0..now.len() {
                if now[i] < last[i] {
                    base[i] += last[i];
                }
            }
        }
        self.last.insert(key, now);
        let mut out = *base;
        for i in 0..out.len() {
            out[i] += now[i];
        }
        out
    }

    /// Forgets ranges no longer watched.
    pub fn retain(&mut self, rules: &[TrafficRule]) {
        let keep =
            |k: &(String, Protocol)| rules.iter().any(|r| r.range == k.0 && r.protocol == k.1);
        self.base.retain(|k, _| keep(k));
        self.last.retain(|k, _| keep(k));
    }
}

/// One view from the monotonic totals and the reading's closed ports.
pub fn view(rule: &TrafficRule, t: Totals, reading: &RuleReading) -> TrafficView {
    let mut ports: Vec<ProbedPort> = reading
        .closed_ports
        .iter()
        .map(|&(port, Counter { packets, bytes })| ProbedPort {
            port,
            packets,
            bytes,
        })
        .collect();
    ports.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.port.cmp(&b.port)));
    let probed_packets = ports.iter().map(|p| p.packets).sum();
    let probed_ports = ports.len() as u32;
    ports.truncate(TOP_PORTS);
    TrafficView {
        range: rule.range.clone(),
        protocol: rule.protocol,
        listening: Flow {
            packets: t[0].saturating_sub(t[2]),
            bytes: t[1].saturating_sub(t[3]),
            attempts: t[4].saturating_sub(t[5]),
        },
        closed: Flow {
            packets: t[2],
            bytes: t[3],
            attempts: t[5],
        },
        probed: ports,
        probed_ports,
        probed_packets,
    }
}

/// The collector: the table, what is installed in it, the offsets.
pub struct TrafficCollector {
    table: Box<dyn TrafficTable>,
    /// False for `check`, which reads the exporter's table only.
    installs: bool,
    installed: Option<Vec<TrafficRule>>,
    offsets: Offsets,
    warned: bool,
    /// See [`TrafficReport::lost_readings`].
    lost_readings: u64,
}

impl TrafficCollector {
    /// The exporter's collector: installs and rebuilds the table.
    pub fn new(table: Box<dyn TrafficTable>) -> TrafficCollector {
        TrafficCollector {
            table,
            installs: true,
            installed: None,
            offsets: Offsets::default(),
            warned: false,
            lost_readings: 0,
        }
    }

    /// `check`'s: reads the table the exporter installed.
    pub fn reader(table: Box<dyn TrafficTable>) -> TrafficCollector {
        TrafficCollector {
            installs: false,
            ..TrafficCollector::new(table)
        }
    }

    /// Installs the table now (at start, so that counting begins before
    /// the first scrape), within [`PREPARE_TIMEOUT`]; a failure is logged
    /// and retried at the next collection. `check`'s reader installs
    /// nothing.
    pub fn prepare(&mut self, rules: &[TrafficRule]) {
        if self.installs {
            let _ = self.collect(rules, Instant::now() + PREPARE_TIMEOUT);
        }
    }

    /// One collection, no exchange waiting past `deadline`: (re)installs
    /// the rules when the ranges changed or the table went away, reads
    /// them, and makes the views.
    pub fn collect(
        &mut self,
        rules: &[TrafficRule],
        deadline: Instant,
    ) -> Result<TrafficReport, String> {
        let rules = rules.to_vec();
        if self.installs && self.installed.as_ref() != Some(&rules) {
            if let Some(old) = self.installed.take() {
                // The last counts of the old rules, carried over the rebuild.
                match self.table.read(&old, deadline) {
                    Ok(readings) => {
                        for (r, reading) in old.iter().zip(&readings) {
                            self.offsets.apply(&r.range, r.protocol, reading);
                        }
                    }
                    Err(e) => {
                        self.lost_readings += 1;
                        log::warn!(
                            "traffic collector: the counts since the last read are lost at this rebuild: {e}"
                        );
                    }
                }
            }
            self.table
                .install(&rules, deadline)
                .map_err(|e| self.fail(e))?;
            self.offsets.retain(&rules);
            log::info!(
                "traffic collector: counting {} range/protocol pairs in an nftables table of its own, in {SCOPE}",
                rules.len()
            );
            self.installed = Some(rules.clone());
        }
        let readings = match self.table.read(&rules, deadline) {
            Ok(r) => r,
            Err(e) => {
                if self.installs && self.installed.take().is_some() {
                    if matches!(e, TrafficError::NotInstalled { .. }) {
                        // Gone (flushed from outside): installed again next
                        // time; what it counted since the last read is lost.
                        self.lost_readings += 1;
                    } else {
                        // Unread (a deadline, an error): the next collection
                        // reads it before rebuilding, or counts the loss.
                        self.installed = Some(rules);
                    }
                }
                return Err(self.fail(e));
            }
        };
        let views = rules
            .iter()
            .zip(&readings)
            .map(|(rule, reading)| {
                let t = self.offsets.apply(&rule.range, rule.protocol, reading);
                view(rule, t, reading)
            })
            .collect();
        Ok(TrafficReport {
            views,
            lost_readings: self.lost_readings,
        })
    }

    /// Logs a failure (a missing capability once, at warning level) and
    /// gives its message.
    fn fail(&mut self, e: TrafficError) -> String {
        let msg = if !self.installs && matches!(e, TrafficError::NotInstalled { .. }) {
            format!("{e}: the exporter is not running with --collector.traffic")
        } else {
            e.to_string()
        };
        if !self.warned {
            self.warned = true;
            if e.is_permission() {
                log::warn!(
                    "traffic collector disabled until the capability is granted: {msg}; everything else is served"
                );
            } else {
                log::warn!("traffic collector failed: {msg}");
            }
        } else {
            log::debug!("traffic collector failed: {msg}");
        }
        msg
    }
}

/// The help texts of the traffic families (also in
/// [`crate::metrics::FAMILIES`]).
pub const RECEIVED_PACKETS_HELP: &str = "Packets received for the range's ports (--collector.traffic), by whether a socket could take them (listening) or none could (closed); counted before other firewall rules.";
pub const RECEIVED_BYTES_HELP: &str = "Bytes (IP packet length) received for the range's ports (--collector.traffic), by port_state listening or closed.";
pub const READINGS_LOST_HELP: &str = "Rebuilds of the traffic collector's nftables table (a reload that changed the ranges, a table flushed from outside) that could not carry the old table's counts since its last read over: those packets are missing from portrange_received_*.";
pub const ATTEMPTS_HELP: &str = "TCP connection attempts (SYN without ACK) to the range's ports (--collector.traffic), by port_state listening or closed.";

/// The traffic families of the collector's part: none when it did not
/// run or failed (its success series says which). `per_netns`: the
/// series carry `netns="host"` (`--collector.netns`).
pub fn families(traffic: Option<&TrafficReport>, per_netns: bool) -> Vec<MetricFamily> {
    let Some(t) = traffic else {
        return Vec::new();
    };
    let netns = per_netns.then_some("host");
    let (mut packets, mut bytes, mut attempts) = (Vec::new(), Vec::new(), Vec::new());
    for v in &t.views {
        for (state, flow) in [("listening", &v.listening), ("closed", &v.closed)] {
            let mut labels = vec![
                ("range", v.range.as_str()),
                ("protocol", v.protocol.as_str()),
                ("port_state", state),
            ];
            if let Some(n) = netns {
                labels.push(("netns", n));
            }
            packets.push(counter_metric(&labels, flow.packets));
            bytes.push(counter_metric(&labels, flow.bytes));
            if v.protocol == Protocol::Tcp {
                attempts.push(counter_metric(&labels, flow.attempts));
            }
        }
    }
    let mut out = vec![
        counter_family(
            "portrange_received_packets_total",
            RECEIVED_PACKETS_HELP,
            packets,
        ),
        counter_family("portrange_received_bytes_total", RECEIVED_BYTES_HELP, bytes),
    ];
    if !attempts.is_empty() {
        out.push(counter_family(
            "portrange_connection_attempts_total",
            ATTEMPTS_HELP,
            attempts,
        ));
    }
    out.push(counter_family(
        "portrange_traffic_readings_lost_total",
        READINGS_LOST_HELP,
        vec![counter_metric(&[], t.lost_readings)],
    ));
    out
}

#[derive(Serialize)]
struct ViewJson<'a> {
    range: &'a str,
    protocol: &'static str,
    listening: Flow,
    closed: Flow,
    probed_ports: u32,
    probed_packets: u64,
    probed: &'a [ProbedPort],
}

#[derive(Serialize)]
struct TrafficJson<'a> {
    window_seconds: u64,
    /// `probed_ports` stops at this many per range and protocol.
    max_probed_ports: usize,
    scope: &'static str,
    ranges: Vec<ViewJson<'a>>,
}

/// The status document's `traffic` section: per range and protocol the
/// totals, and the busiest closed ports probed in the last minute (the
/// port map marks them "probed"). `None` without the collector's result.
pub fn status_json(traffic: Option<&TrafficReport>) -> Option<serde_json::Value> {
    let t = traffic?;
    serde_json::to_value(TrafficJson {
        window_seconds: PORT_WINDOW_SECS,
        max_probed_ports: PORT_SET_SIZE,
        scope: SCOPE,
        ranges: t
            .views
            .iter()
            .map(|v| ViewJson {
                range: &v.range,
                protocol: v.protocol.as_str(),
                listening: v.listening,
                closed: v.closed,
                probed_ports: v.probed_ports,
                probed_packets: v.probed_packets,
                probed: &v.probed,
            })
            .collect(),
    })
    .ok()
}

/// `check`'s lines: one per range and protocol whose closed ports were
/// probed in the last minute, with the busiest ports.
pub fn check_lines(traffic: Option<&TrafficReport>) -> Vec<String> {
    let Some(t) = traffic else {
        return Vec::new();
    };
    t.views
        .iter()
        .filter(|v| v.probed_packets > 0)
        .map(|v| {
            let ports: Vec<String> = v
                .probed
                .iter()
                .take(5)
                .map(|p| format!("{} ({})", p.port, p.packets))
                .collect();
            let at_least = if v.probed_ports as usize >= PORT_SET_SIZE {
                "at least "
            } else {
                ""
            };
            format!(
                "{}{} packets to closed ports of {} ({}) in the last minute, {at_least}{} ports; busiest: {}",
                at_least,
                v.probed_packets,
                v.range,
                v.protocol,
                v.probed_ports,
                ports.join(", ")
            )
        })
        .collect()
}

/// A traffic report with every family, for the metrics contract tests.
#[cfg(test)]
pub fn example() -> TrafficReport {
    TrafficReport {
        views: [Protocol::Udp, Protocol::Tcp]
            .into_iter()
            .map(|protocol| TrafficView {
                range: "fh".into(),
                protocol,
                listening: Flow {
                    packets: 50,
                    bytes: 1400,
                    attempts: 0,
                },
                closed: Flow {
                    packets: 30,
                    bytes: 870,
                    attempts: 0,
                },
                probed: Vec::new(),
                probed_ports: 0,
                probed_packets: 0,
            })
            .collect(),
        lost_readings: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn reading(all: u64, closed: u64) -> RuleReading {
        RuleReading {
            all: Counter {
                packets: all,
                bytes: all * 100,
            },
            closed: Counter {
                packets: closed,
                bytes: closed * 100,
            },
            attempts_all: all,
            attempts_closed: closed,
            closed_ports: Vec::new(),
        }
    }

    /// A table in memory: what is installed, and readings to hand out.
    #[derive(Clone, Default)]
    struct Fake {
        installed: Arc<Mutex<Vec<Vec<TrafficRule>>>>,
        counts: Arc<Mutex<HashMap<String, RuleReading>>>,
        refuse: Option<TrafficError>,
        unreadable: Arc<Mutex<Option<TrafficError>>>,
        /// The deadline of every call.
        deadlines: Arc<Mutex<Vec<Instant>>>,
    }

    impl TrafficTable for Fake {
        fn install(&mut self, rules: &[TrafficRule], at: Instant) -> Result<(), TrafficError> {
            self.deadlines.lock().unwrap().push(at);
            if let Some(e) = &self.refuse {
                return Err(e.clone());
            }
            self.installed.lock().unwrap().push(rules.to_vec());
            // A rebuild starts every counter at zero.
            self.counts.lock().unwrap().clear();
            Ok(())
        }
        fn read(
            &mut self,
            rules: &[TrafficRule],
            at: Instant,
        ) -> Result<Vec<RuleReading>, TrafficError> {
            self.deadlines.lock().unwrap().push(at);
            if let Some(e) = self.unreadable.lock().unwrap().clone() {
                return Err(e);
            }
            let c = self.counts.lock().unwrap();
            Ok(rules
                .iter()
                .map(|r| {
                    c.get(&format!("{}/{}", r.range, r.protocol))
                        .cloned()
                        .unwrap_or_default()
                })
                .collect())
        }
        fn remove(&mut self, _: Instant) -> Result<(), TrafficError> {
            Ok(())
        }
    }

    fn soon() -> Instant {
        Instant::now() + std::time::Duration::from_secs(5)
    }

    fn config(text: &str) -> Vec<TrafficRule> {
        crate::collect::traffic_rules(&crate::config::Config::parse(text, "test.yml").unwrap())
    }

    #[test]
    fn counts_a_rebuild_cannot_carry_over_are_counted_and_every_call_has_the_deadline() {
        let fake = Fake::default();
        let mut c = TrafficCollector::new(Box::new(fake.clone()));
        let a = config("ranges:\n  - name: fh\n    ports: \"3224-3324\"\n    protocols: [udp]\n");
        let deadline = soon();
        assert_eq!(c.collect(&a, deadline).unwrap().lost_readings, 0);
        assert!(
            fake.deadlines
                .lock()
                .unwrap()
                .iter()
                .all(|d| *d == deadline)
        );
        // A reload whose old table cannot be read: the counts since the
        // last read are lost, and counted.
        *fake.unreadable.lock().unwrap() = Some(TrafficError::Failed {
            table: "t".into(),
            action: "read",
            detail: "the collection's deadline passed".into(),
        });
        let b = config("ranges:\n  - name: fh\n    ports: \"3224-3400\"\n    protocols: [udp]\n");
        assert!(
            c.collect(&b, soon()).is_err(),
            "the new table is unreadable too"
        );
        *fake.unreadable.lock().unwrap() = None;
        let r = c.collect(&b, soon()).unwrap();
        assert_eq!(r.lost_readings, 1);
        assert_eq!(
            fake.installed.lock().unwrap().len(),
            2,
            "a failed read is no rebuild"
        );
        // A table gone from outside: installed again, the loss counted.
        *fake.unreadable.lock().unwrap() = Some(TrafficError::NotInstalled { table: "t".into() });
        assert!(c.collect(&b, soon()).is_err());
        *fake.unreadable.lock().unwrap() = None;
        let r = c.collect(&b, soon()).unwrap();
        assert_eq!(r.lost_readings, 2);
        assert_eq!(fake.installed.lock().unwrap().len(), 3);
        let text = String::from_utf8(crate::metrics::encode(families(Some(&r), false))).unwrap();
        assert!(
            text.contains("portrange_traffic_readings_lost_total 2"),
            "{text}"
        );
    }

    #[test]
    fn counters_stay_monotonic_across_a_rebuild_and_follow_a_changed_range() {
        let fake = Fake::default();
        let mut c = TrafficCollector::new(Box::new(fake.clone()));
        let a = config("ranges:\n  - name: fh\n    ports: \"3224-3324\"\n    protocols: [udp]\n");
        let r = c.collect(&a, soon()).unwrap();
        assert_eq!(fake.installed.lock().unwrap().len(), 1);
        assert_eq!(r.views[0].closed, Flow::default());
        fake.counts
            .lock()
            .unwrap()
            .insert("fh/udp".into(), reading(80, 30));
        let r = c.collect(&a, soon()).unwrap();
        assert_eq!(fake.installed.lock().unwrap().len(), 1, "same ranges: kept");
        assert_eq!(r.views[0].listening.packets, 50);
        assert_eq!(r.views[0].closed.packets, 30);
        // A reload that changes the range: rebuilt, counts carried.
        let b = config("ranges:\n  - name: fh\n    ports: \"3224-3400\"\n    protocols: [udp]\n");
        let r = c.collect(&b, soon()).unwrap();
        let installed = fake.installed.lock().unwrap().clone();
        assert_eq!(installed.len(), 2);
        assert_eq!(installed[1][0].intervals, vec![(3224, 3400)]);
        assert_eq!(r.views[0].closed.packets, 30, "carried, not reset");
        fake.counts
            .lock()
            .unwrap()
            .insert("fh/udp".into(), reading(5, 1));
        let r = c.collect(&b, soon()).unwrap();
        assert_eq!(r.views[0].listening.packets, 54);
        assert_eq!(r.views[0].closed.packets, 31);
        assert_eq!(r.views[0].closed.bytes, 3100);
    }

    #[test]
    fn without_the_capability_the_collector_fails_with_the_capability_named() {
        let fake = Fake {
            refuse: Some(TrafficError::Permission {
                table: "portrange_exporter_10224".into(),
                action: "installed",
                detail: "Operation not permitted".into(),
            }),
            ..Fake::default()
        };
        let mut c = TrafficCollector::new(Box::new(fake));
        let a = config("ranges:\n  - name: fh\n    ports: \"3224\"\n");
        let e = c.collect(&a, soon()).unwrap_err();
        assert!(e.contains("CAP_NET_ADMIN"), "{e}");
        assert!(c.collect(&a, soon()).is_err(), "tried again, still failing");
    }

    #[test]
    fn probed_ports_are_the_busiest_few_and_the_window_is_summed() {
        let rule = TrafficRule {
            range: "fh".into(),
            protocol: Protocol::Tcp,
            intervals: vec![(1, 100)],
        };
        let mut r = reading(0, 0);
        r.closed_ports = (1..=20u16)
            .map(|p| {
                (
                    p,
                    Counter {
                        packets: u64::from(p % 7),
                        bytes: 1,
                    },
                )
            })
            .collect();
        let v = view(&rule, [0; 6], &r);
        assert_eq!(v.probed.len(), TOP_PORTS);
        assert_eq!(v.probed_ports, 20);
        assert_eq!(v.probed_packets, (1..=20u64).map(|p| p % 7).sum::<u64>());
        assert_eq!(v.probed[0].port, 6, "busiest first, then by port");
        assert!(v.probed.windows(2).all(|w| w[0].packets >= w[1].packets));
    }

    #[test]
    fn families_are_counters_with_bounded_labels() {
        let report = crate::report::Report {
            traffic: Some(TrafficReport {
                views: vec![TrafficView {
                    range: "fh".into(),
                    protocol: Protocol::Tcp,
                    listening: Flow {
                        packets: 5,
                        bytes: 300,
                        attempts: 1,
                    },
                    closed: Flow {
                        packets: 101,
                        bytes: 4444,
                        attempts: 101,
                    },
                    probed: vec![ProbedPort {
                        port: 3300,
                        packets: 101,
                        bytes: 4444,
                    }],
                    probed_ports: 1,
                    probed_packets: 101,
                }],
                lost_readings: 2,
            }),
            ..crate::report::Report::default()
        };
        let part = report.traffic.as_ref();
        let text = String::from_utf8(crate::metrics::encode(families(part, false))).unwrap();
        for line in [
            "# TYPE portrange_received_packets_total counter",
            r#"portrange_received_packets_total{range="fh",protocol="tcp",port_state="closed"} 101"#,
            r#"portrange_received_bytes_total{range="fh",protocol="tcp",port_state="listening"} 300"#,
            r#"portrange_connection_attempts_total{range="fh",protocol="tcp",port_state="closed"} 101"#,
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
        assert!(!text.contains("3300"), "a port is never a label");
        assert_eq!(
            check_lines(part),
            [
                "101 packets to closed ports of fh (tcp) in the last minute, 1 ports; busiest: 3300 (101)"
            ]
        );
        let j = status_json(part).unwrap();
        assert_eq!(j["ranges"][0]["probed"][0]["port"], 3300);
        assert_eq!(j["window_seconds"], 60);
    }
}
