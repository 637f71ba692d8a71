//! One collection: sample the sockets in the watched ranges through the
//! platform, find their holders, judge each listener against its range's
//! allowlist ([`crate::allowlist`]) and count everything per range and
//! protocol into a [`Report`]. The report is plain data: [`crate::metrics`]
//! turns it into metric families, [`crate::check`] into a table. Nothing
//! here touches the OS but through [`Platform`]. When the platform samples
//! every network namespace (`--collector.netns`), the counts are made per
//! namespace ([`build_netns_report`]): port spaces are per namespace, so
//! nothing is summed across them.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::allowlist::{self, Expected};
use crate::config::{Config, RangeConfig};
use crate::platform::{
    self, EphemeralPorts, Filter, Holder, Namespaces, Owner, PassStats, Platform, Socket,
};
use crate::ranges::{PortSet, Protocol};
use crate::users::{self, UserNames};

/// One listener in a range.
#[derive(Clone, Debug)]
pub struct Listener {
    pub range: String,
    pub protocol: Protocol,
    pub port: u16,
    pub address: IpAddr,
    /// Who holds it; `None` when that could not be found.
    pub holder: Option<Holder>,
    pub user: String,
    pub expected: Expected,
    /// The `netns` label value with `--collector.netns`; `None` without.
    pub netns: Option<String>,
}

impl Listener {
    /// The process label value: the process name (lossily decoded),
    /// `kernel` (with the tunnel device when known) for kernel-held
    /// sockets, or `unknown`.
    pub fn process(&self) -> String {
        self.process_name().into_owned()
    }

    /// [`Listener::process`] without an allocation where the name is
    /// valid UTF-8 (the common case).
    pub fn process_name(&self) -> std::borrow::Cow<'_, str> {
        match &self.holder {
            Some(Holder::Process(o)) => String::from_utf8_lossy(&o.comm),
            Some(Holder::Kernel { device: Some(d) }) => format!("kernel ({d})").into(),
            Some(Holder::Kernel { device: None }) => "kernel".into(),
            None => "unknown".into(),
        }
    }

    /// The owning process, when a process holds it.
    pub fn owner(&self) -> Option<&Arc<Owner>> {
        match &self.holder {
            Some(Holder::Process(o)) => Some(o),
            _ => None,
        }
    }

    pub fn is_kernel(&self) -> bool {
        matches!(self.holder, Some(Holder::Kernel { .. }))
    }
}

/// Counts for one range on one protocol.
#[derive(Clone, Debug)]
pub struct RangeStats {
    pub range: String,
    pub protocol: Protocol,
    pub ports: u32,
    pub in_use: u32,
    /// Socket count per state name, in [`platform::state_names`] order.
    pub states: Vec<(&'static str, u64)>,
    pub unexpected: u64,
    pub unattributed: u64,
    /// Ports of the range that outgoing connections can take; `None` when
    /// the platform could not say.
    pub ephemeral_overlap: Option<u32>,
    /// Ports of the range with no socket that no process can bind (in a
    /// Windows excluded port range); `None` where the platform has no such
    /// thing or could not say.
    pub excluded: Option<u32>,
    /// Per-port occupancy, when the range asks for it.
    pub per_port: Option<Vec<(u16, bool)>>,
    /// The `netns` label value with `--collector.netns`; `None` without.
    pub netns: Option<String>,
    /// The ports in use (holding at least one socket), sorted; always
    /// kept, for the port map ([`crate::status`]).
    pub in_use_ports: Vec<u16>,
    /// Ports of the range the platform will not let be bound (Windows
    /// excluded port ranges); empty elsewhere.
    pub reserved: PortSet,
}

/// A network namespace that has series (`portrange_netns_info`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetnsInfo {
    /// The `netns` label value: `host`, or the namespace's id in decimal.
    pub label: String,
    pub name: String,
    pub container: String,
    pub pod: String,
    pub namespace: String,
}

/// The namespaces of a per-namespace collection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetnsReport {
    /// Host first, then by id.
    pub namespaces: Vec<NetnsInfo>,
    /// Namespaces found but not sampled: what they hold is unknown.
    pub unsampled: u32,
}

/// Everything one collection found.
#[derive(Clone, Debug)]
pub struct Report {
    /// The sampling error, when sampling failed; counts are then empty.
    pub error: Option<String>,
    pub ranges: Vec<RangeStats>,
    pub listeners: Vec<Listener>,
    pub attribution: PassStats,
    /// The privileges attribution lacks (named by `check`).
    pub missing_privileges: Vec<&'static str>,
    pub duration: Duration,
    /// Set with `--collector.netns`: the namespaces reported.
    pub netns: Option<NetnsReport>,
}

impl Report {
    pub fn up(&self) -> bool {
        self.error.is_none()
    }

    /// A report for a failed sample.
    pub fn failed(error: String, duration: Duration) -> Report {
        Report {
            error: Some(error),
            ranges: Vec::new(),
            listeners: Vec::new(),
            attribution: PassStats::default(),
            missing_privileges: Vec::new(),
            duration,
            netns: None,
        }
    }
}

/// Holds what lives across collections: the platform (with its owner
/// cache), the configuration and the user-name cache.
pub struct Collector {
    platform: Box<dyn Platform>,
    config: Arc<Config>,
    filter: Filter,
    users: UserNames,
    sample_timeout: Duration,
    /// The privileges attribution lacks, named once in the log.
    missing: Vec<&'static str>,
    warned_permission: bool,
    warned_ephemeral: bool,
    warned_excluded: bool,
}

impl Collector {
    pub fn new(config: Arc<Config>, platform: Box<dyn Platform>) -> Collector {
        let missing = platform.missing_privileges();
        let users = UserNames::new(platform.user_resolver());
        Collector {
            filter: Filter::from_config(&config),
            config,
            platform,
            users,
            sample_timeout: Duration::from_secs(5),
            missing,
            warned_permission: false,
            warned_ephemeral: false,
            warned_excluded: false,
        }
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Swaps in a new configuration; the owner and user caches are kept.
    pub fn set_config(&mut self, config: Arc<Config>) {
        if !Arc::ptr_eq(&self.config, &config) {
            self.filter = Filter::from_config(&config);
            self.config = config;
        }
    }

    /// The privileges attribution lacks (empty when it has all).
    pub fn missing_privileges(&self) -> &[&'static str] {
        &self.missing
    }

    /// Runs one collection. Attribution and user lookups stop at
    /// `deadline`; what they did not reach by then is unknown.
    pub fn collect(&mut self, deadline: Instant) -> Report {
        let started = Instant::now();
        let sampled = self.platform.sample(&self.filter, self.sample_timeout);
        let sockets = match sampled {
            Ok(s) => s,
            Err(e) => {
                log::error!("socket sampling failed: {e}");
                let mut failed = Report::failed(e.to_string(), started.elapsed());
                if self.platform.namespaces().is_some() {
                    failed.netns = Some(NetnsReport::default());
                }
                return failed;
            }
        };
        let t_sample = started.elapsed();
        let attribution = self.platform.attribute(&sockets, deadline);
        let t_attr = started.elapsed();
        self.log_attribution(&attribution.stats);
        let ephemeral = match self.platform.ephemeral_ports() {
            Ok(p) => Some(p),
            Err(e) => {
                if !self.warned_ephemeral {
                    log::warn!(
                        "cannot read the ephemeral port range, portrange_ephemeral_overlap_ports is left out: {e}"
                    );
                    self.warned_ephemeral = true;
                }
                None
            }
        };
        let uids: HashSet<u32> = sockets
            .iter()
            .zip(&attribution.holders)
            .filter(|(s, h)| {
                s.is_listener()
                    && s.uid != platform::NO_UID
                    && !matches!(h, Some(Holder::Process(o)) if o.user.is_some())
            })
            .map(|(s, _)| s.uid)
            .collect();
        self.users.resolve(&uids, deadline);
        let mut report = match self.platform.namespaces() {
            None => build_report(
                &self.config,
                &sockets,
                &attribution.holders,
                ephemeral.as_ref(),
                &self.users,
            ),
            Some(namespaces) => build_netns_report(
                &self.config,
                &sockets,
                &attribution.holders,
                &namespaces,
                &self.users,
            ),
        };
        self.mark_reserved(&mut report);
        report.attribution = attribution.stats;
        report.missing_privileges = self.missing.clone();
        report.duration = started.elapsed();
        let a = &report.attribution;
        log::debug!(
            "timing: sample {t_sample:?} attribute {:?} rest {:?}",
            t_attr - t_sample,
            report.duration - t_attr
        );
        log::debug!(
            "collection: {} sockets, {} listeners, {} owners confirmed, {} searched, {} processes scanned, {} links read, {} kernel-held, deadline hit {}, {:?}",
            sockets.len(),
            report.listeners.len(),
            a.confirmed,
            a.searched,
            a.processes_scanned,
            a.links_read,
            a.kernel,
            a.deadline_hit,
            report.duration
        );
        report
    }

    /// Fills each range's `reserved` ports and `excluded` count from the
    /// platform's excluded ports (asked once per protocol). A platform
    /// without such ports leaves them empty and `None`; one that cannot
    /// say, too, with a warning once.
    fn mark_reserved(&mut self, report: &mut Report) {
        let mut excluded: Vec<(Protocol, Option<PortSet>)> = Vec::new();
        for protocol in report.ranges.iter().map(|r| r.protocol) {
            if excluded.iter().any(|(p, _)| *p == protocol) {
                continue;
            }
            let set = self.platform.excluded_ports(protocol).unwrap_or_else(|e| {
                if !self.warned_excluded {
                    log::warn!(
                        "cannot read the {protocol} ports the system excludes from binding; portrange_excluded_ports is left out and the port map shows none as reserved: {e}"
                    );
                    self.warned_excluded = true;
                }
                None
            });
            excluded.push((protocol, set));
        }
        for stats in &mut report.ranges {
            let set = excluded.iter().find(|(p, _)| *p == stats.protocol);
            let range = self.config.ranges.iter().find(|r| r.name == stats.range);
            if let (Some((_, Some(set))), Some(range)) = (set, range) {
                mark_excluded(stats, range, set);
            }
        }
    }

    fn log_attribution(&mut self, stats: &PassStats) {
        if stats.permission_denied > 0 && self.missing.is_empty() {
            // Privileged, yet refused: processes of another user namespace or
            // under a security module. Not a configuration problem.
            log::debug!(
                "{} processes could not be read despite full privileges",
                stats.permission_denied
            );
        } else if stats.permission_denied > 0 && !self.warned_permission {
            self.warned_permission = true;
            log::warn!(
                "process attribution is incomplete: {} processes could not be read; missing {} (or {}); \
                 their sockets count in portrange_unattributed_sockets and their listeners have expected=\"unknown\"",
                stats.permission_denied,
                self.missing.join(" and "),
                platform::RUN_PRIVILEGED,
            );
        }
        if stats.deadline_hit {
            log::warn!(
                "process attribution is still scanning at the scrape deadline; its sockets count as unattributed until the scan, which goes on in the background, finishes"
            );
        }
    }
}

/// Builds the report for one sample. Pure: `holders` is index for index
/// with `sockets`, and user names come from the cache.
pub fn build_report(
    config: &Config,
    sockets: &[Socket],
    holders: &[Option<Holder>],
    ephemeral: Option<&EphemeralPorts>,
    users: &UserNames,
) -> Report {
    let mut ranges = Vec::new();
    let mut listeners = Vec::new();
    // One lookup and one label per uid, not per listener.
    let mut user_names: HashMap<u32, (allowlist::UserName, String)> = HashMap::new();
    for range in &config.ranges {
        for &protocol in &range.protocols {
            let mut used = PortBits::default();
            let names = platform::state_names(protocol);
            let mut states: Vec<(&'static str, u64)> = names.iter().map(|&n| (n, 0)).collect();
            let mut unexpected = 0;
            let mut unattributed = 0;
            for (s, holder) in sockets
                .iter()
                .zip(holders.iter().chain(std::iter::repeat(&None)))
                .filter(|(s, _)| s.protocol == protocol && range.ports.contains(s.port))
            {
                if s.holds_port() {
                    used.insert(s.port);
                }
                let name = s.state_name();
                if let Some(slot) = states.iter_mut().find(|(n, _)| *n == name) {
                    slot.1 += 1;
                }
                if holder.is_none() && s.can_be_held() {
                    unattributed += 1;
                }
                if s.is_listener() {
                    let own;
                    let (user, label) = match holder {
                        Some(Holder::Process(o)) if o.user.is_some() => {
                            let name = o.user.clone().unwrap_or_default();
                            own = (allowlist::UserName::Known(name.clone()), name);
                            (&own.0, &own.1)
                        }
                        _ => {
                            let e = user_names.entry(s.uid).or_insert_with(|| {
                                let n = users.get(s.uid);
                                let label = users::label(&n, s.uid);
                                (n, label)
                            });
                            (&e.0, &e.1)
                        }
                    };
                    let expected = allowlist::judge(&range.expected, holder.as_ref(), s.uid, user);
                    if expected == Expected::False {
                        unexpected += 1;
                    }
                    listeners.push(Listener {
                        range: range.name.clone(),
                        protocol,
                        port: s.port,
                        address: s.local,
                        holder: holder.clone(),
                        user: label.clone(),
                        expected,
                        netns: None,
                    });
                }
            }
            ranges.push(RangeStats {
                range: range.name.clone(),
                protocol,
                ports: range.ports.len(),
                in_use: used.len(),
                states,
                unexpected,
                unattributed,
                ephemeral_overlap: ephemeral
                    .map(|e| range.ports.intersect(e.ports(protocol)).len()),
                excluded: None,
                per_port: per_port(range, &used),
                netns: None,
                in_use_ports: used.ports(),
                reserved: PortSet::default(),
            });
        }
    }
    listeners.sort_by(|a, b| {
        (&a.range, a.protocol, a.port, a.address)
            .cmp(&(&b.range, b.protocol, b.port, b.address))
            .then_with(|| a.process_name().cmp(&b.process_name()))
            .then_with(|| (&a.user, a.expected).cmp(&(&b.user, b.expected)))
    });
    Report {
        error: None,
        ranges,
        listeners,
        attribution: PassStats::default(),
        missing_privileges: Vec::new(),
        duration: Duration::ZERO,
        netns: None,
    }
}

/// Sets a range's reserved ports (those of `unbindable` inside it, for the
/// port map) and its excluded count: the reserved ports no sampled socket
/// holds, which look free but cannot be bound. Only Windows has such
/// ports, and it samples a single namespace.
pub fn mark_excluded(stats: &mut RangeStats, range: &RangeConfig, unbindable: &PortSet) {
    stats.reserved = range.ports.intersect(unbindable);
    let free = stats
        .reserved
        .ports()
        .filter(|p| stats.in_use_ports.binary_search(p).is_err())
        .count();
    stats.excluded = Some(free as u32);
}

/// Builds the report of a per-namespace sample: one [`build_report`] for
/// the host's namespace and for each namespace with at least one socket in
/// a watched range (so series follow what is there), each with its own
/// ephemeral ports and its `netns` label. Pure, like [`build_report`].
pub fn build_netns_report(
    config: &Config,
    sockets: &[Socket],
    holders: &[Option<Holder>],
    namespaces: &Namespaces,
    users: &UserNames,
) -> Report {
    let watched = |s: &Socket| {
        config
            .ranges
            .iter()
            .any(|r| r.protocols.contains(&s.protocol) && r.ports.contains(s.port))
    };
    let mut report = build_report(config, &[], &[], None, users);
    report.ranges.clear();
    let mut netns = NetnsReport {
        namespaces: Vec::new(),
        unsampled: namespaces.unsampled,
    };
    for ns in &namespaces.list {
        let (mine, held): (Vec<Socket>, Vec<Option<Holder>>) = sockets
            .iter()
            .zip(holders.iter().chain(std::iter::repeat(&None)))
            .filter(|(s, _)| s.netns == ns.id)
            .map(|(s, h)| (s.clone(), h.clone()))
            .unzip();
        if !ns.host && !mine.iter().any(watched) {
            continue;
        }
        let label = if ns.host {
            "host".to_string()
        } else {
            ns.id.to_string()
        };
        let part = build_report(config, &mine, &held, ns.ephemeral.as_ref(), users);
        report.ranges.extend(part.ranges.into_iter().map(|mut r| {
            r.netns = Some(label.clone());
            r
        }));
        report
            .listeners
            .extend(part.listeners.into_iter().map(|mut l| {
                l.netns = Some(label.clone());
                l
            }));
        netns.namespaces.push(NetnsInfo {
            label,
            name: ns.name.clone(),
            container: ns.container.clone(),
            pod: ns.pod.clone(),
            namespace: ns.pod_namespace.clone(),
        });
    }
    report.netns = Some(netns);
    report
}

/// The ports in use of one range, as a bit per port.
struct PortBits {
    bits: Vec<u64>,
    count: u32,
}

impl Default for PortBits {
    fn default() -> PortBits {
        PortBits {
            bits: vec![0; 1024],
            count: 0,
        }
    }
}

impl PortBits {
    fn insert(&mut self, port: u16) {
        let (word, bit) = (usize::from(port / 64), port % 64);
        if self.bits[word] & (1 << bit) == 0 {
            self.bits[word] |= 1 << bit;
            self.count += 1;
        }
    }

    fn contains(&self, port: u16) -> bool {
        self.bits[usize::from(port / 64)] & (1 << (port % 64)) != 0
    }

    fn len(&self) -> u32 {
        self.count
    }

    /// The ports set, ascending.
    fn ports(&self) -> Vec<u16> {
        let mut out = Vec::with_capacity(self.count as usize);
        for (i, &word) in self.bits.iter().enumerate() {
            let mut w = word;
            while w != 0 {
                out.push((i * 64) as u16 + w.trailing_zeros() as u16);
                w &= w - 1;
            }
        }
        out
    }
}

fn per_port(range: &RangeConfig, used: &PortBits) -> Option<Vec<(u16, bool)>> {
    range
        .per_port
        .then(|| range.ports.ports().map(|p| (p, used.contains(p))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::UserLookup;
    use std::net::Ipv4Addr;

    fn cfg(yaml: &str) -> Config {
        Config::parse(yaml, "test.yml").unwrap()
    }

    fn owner(comm: &str) -> Option<Holder> {
        Some(Holder::Process(Arc::new(Owner {
            pid: 1,
            comm: comm.as_bytes().to_vec(),
            exe: None,
            user: None,
            user_id: None,
        })))
    }

    fn sock(protocol: Protocol, port: u16, state: u8, remote_port: u16, inode: u64) -> Socket {
        Socket {
            protocol,
            state,
            local: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port,
            remote: IpAddr::V4(Ipv4Addr::LOCALHOST),
            remote_port,
            uid: 0,
            inode,
            pid_hint: None,
            netns: 0,
        }
    }

    fn users() -> UserNames {
        let mut u = UserNames::new(Arc::new(|_| Ok(UserLookup::Name("root".into()))));
        u.resolve(
            &[0].into_iter().collect(),
            Instant::now() + Duration::from_secs(5),
        );
        u
    }

    #[test]
    fn counts_per_range_and_protocol() {
        let c = cfg(
            "ranges:\n  - name: fh\n    ports: 3224-3324\n    expected:\n      - process: ok\n  - name: one\n    ports: 3400\n    protocols: [tcp]\n    per_port: false\n",
        );
        let socks = vec![
            sock(Protocol::Udp, 3224, 7, 0, 10),     // listener, owner "ok"
            sock(Protocol::Udp, 3225, 1, 5000, 11),  // connected UDP: not a listener
            sock(Protocol::Udp, 3226, 7, 0, 12),     // listener, owner "bad"
            sock(Protocol::Udp, 3227, 7, 0, 13),     // listener, owner unknown
            sock(Protocol::Udp, 3228, 7, 0, 14),     // listener, held by the kernel
            sock(Protocol::Tcp, 3300, 10, 0, 20),    // listen
            sock(Protocol::Tcp, 3300, 1, 40000, 21), // accepted connection, same port
            sock(Protocol::Tcp, 3301, 6, 40001, 0),  // TIME_WAIT: does not hold the port
            sock(Protocol::Tcp, 3400, 10, 0, 22),    // listen, in "one"
        ];
        let holders = vec![
            owner("ok"),
            owner("ok"),
            owner("bad"),
            None,
            Some(Holder::Kernel {
                device: Some("vx0".into()),
            }),
            owner("ok"),
            owner("ok"),
            None,
            owner("ok"),
        ];
        let eph = EphemeralPorts::same(PortSet::from_intervals(vec![(3300, 60999)]));
        let r = build_report(&c, &socks, &holders, Some(&eph), &users());
        assert_eq!(r.ranges.len(), 3);
        let fh_udp = &r.ranges[0];
        assert_eq!(
            (fh_udp.range.as_str(), fh_udp.protocol),
            ("fh", Protocol::Udp)
        );
        assert_eq!(fh_udp.ports, 101);
        assert_eq!(fh_udp.in_use, 5);
        assert_eq!(fh_udp.states, vec![("unconn", 4), ("established", 1)]);
        assert_eq!(fh_udp.unexpected, 2, "bad and the kernel socket");
        assert_eq!(fh_udp.unattributed, 1, "a kernel-held socket is attributed");
        assert_eq!(fh_udp.ephemeral_overlap, Some(25));
        let pp = fh_udp.per_port.as_ref().unwrap();
        assert_eq!(pp.len(), 101);
        assert_eq!(pp.iter().filter(|(_, u)| *u).count(), 5);
        let fh_tcp = &r.ranges[1];
        assert_eq!(fh_tcp.protocol, Protocol::Tcp);
        assert_eq!(fh_tcp.in_use, 1, "TIME_WAIT does not hold 3301");
        assert_eq!(fh_udp.in_use_ports, vec![3224, 3225, 3226, 3227, 3228]);
        assert_eq!(fh_tcp.in_use_ports, vec![3300]);
        assert!(fh_udp.reserved.is_empty());
        let count = |n: &str| fh_tcp.states.iter().find(|(s, _)| *s == n).unwrap().1;
        assert_eq!(
            (count("listen"), count("established"), count("time_wait")),
            (1, 1, 1)
        );
        assert_eq!(fh_tcp.states.len(), 11);
        assert_eq!(fh_tcp.unattributed, 0, "TIME_WAIT has no owner to find");
        let one = &r.ranges[2];
        assert_eq!(
            (one.ports, one.in_use, one.unexpected),
            (1, 1, 1),
            "the allowlist of fh does not apply here"
        );
        assert!(one.per_port.is_none());
        // Listeners: 4 UDP + 1 TCP in fh, 1 TCP in "one".
        assert_eq!(r.listeners.len(), 6);
        let exp: Vec<_> = r
            .listeners
            .iter()
            .map(|l| {
                (
                    l.range.as_str(),
                    l.port,
                    l.process(),
                    l.user.as_str(),
                    l.expected,
                )
            })
            .collect();
        assert!(exp.contains(&("fh", 3224, "ok".into(), "root", Expected::True)));
        assert!(exp.contains(&("fh", 3226, "bad".into(), "root", Expected::False)));
        assert!(exp.contains(&("fh", 3227, "unknown".into(), "root", Expected::Unknown)));
        assert!(exp.contains(&("fh", 3228, "kernel (vx0)".into(), "root", Expected::False)));
        assert!(exp.contains(&("fh", 3300, "ok".into(), "root", Expected::True)));
        assert!(exp.contains(&("one", 3400, "ok".into(), "root", Expected::False)));
    }

    #[test]
    fn excluded_ports_count_only_where_nothing_holds_them() {
        let c = cfg("ranges:\n  - name: fh\n    ports: 3224-3324\n");
        let socks = vec![
            sock(Protocol::Udp, 3230, 7, 0, 1), // held, inside the exclusion
            sock(Protocol::Udp, 3300, 7, 0, 2), // held, outside it
            sock(Protocol::Tcp, 3231, 6, 40000, 0), // TIME_WAIT holds nothing
        ];
        let holders = vec![owner("a"), owner("a"), None];
        let mut r = build_report(&c, &socks, &holders, None, &users());
        let range = &c.ranges[0];
        let udp = r
            .ranges
            .iter()
            .position(|s| s.protocol == Protocol::Udp)
            .unwrap();
        let tcp = r
            .ranges
            .iter()
            .position(|s| s.protocol == Protocol::Tcp)
            .unwrap();
        mark_excluded(
            &mut r.ranges[udp],
            range,
            &PortSet::from_intervals(vec![(3200, 3239)]),
        );
        assert_eq!(
            r.ranges[udp].excluded,
            Some(16 - 1),
            "3224-3239 less the held 3230"
        );
        assert_eq!(
            r.ranges[udp].reserved.len(),
            16,
            "the port map's reserved ports"
        );
        assert_eq!(r.ranges[tcp].excluded, None, "not reported for tcp");
        mark_excluded(
            &mut r.ranges[tcp],
            range,
            &PortSet::from_intervals(vec![(3231, 3231)]),
        );
        assert_eq!(
            r.ranges[tcp].excluded,
            Some(1),
            "a TIME_WAIT socket does not hold 3231"
        );
    }

    #[test]
    fn port_bits_list_their_ports_ascending() {
        let mut b = PortBits::default();
        for p in [65535, 64, 63, 1, 64, 128] {
            b.insert(p);
        }
        assert_eq!(b.ports(), vec![1, 63, 64, 128, 65535]);
        assert_eq!(b.len(), 5);
    }

    #[test]
    fn empty_sample_is_all_zero() {
        let c = Config::builtin();
        let r = build_report(&c, &[], &[], None, &users());
        assert_eq!(r.ranges.len(), 2);
        for s in &r.ranges {
            assert_eq!(
                (s.ports, s.in_use, s.unexpected, s.unattributed),
                (101, 0, 0, 0)
            );
            assert!(s.states.iter().all(|(_, n)| *n == 0));
            assert_eq!(s.ephemeral_overlap, None);
        }
        assert!(r.listeners.is_empty());
    }

    #[test]
    fn per_namespace_counts_are_never_summed() {
        use crate::platform::Namespace;
        let c = cfg(
            "ranges:\n  - name: fh\n    ports: 3224-3324\n    protocols: [udp]\n    expected:\n      - process: ok\n",
        );
        let in_ns = |ns: u64, port: u16, inode: u64| Socket {
            netns: ns,
            ..sock(Protocol::Udp, port, 7, 0, inode)
        };
        // Host: 3224 and 3225. Namespace 20: 3224 (the same port: port
        // spaces are per namespace) held by "bad". Namespace 30: only a
        // socket outside every range. Namespace 40: nothing.
        let socks = vec![
            in_ns(10, 3224, 1),
            in_ns(20, 3224, 2),
            in_ns(10, 3225, 3),
            in_ns(30, 4000, 4),
        ];
        let holders = vec![owner("ok"), owner("bad"), owner("ok"), owner("x")];
        let ns = |id: u64, host: bool, eph: Option<(u16, u16)>| Namespace {
            id,
            host,
            name: if id == 20 {
                "blue".into()
            } else {
                String::new()
            },
            pod: if id == 20 {
                "web-0".into()
            } else {
                String::new()
            },
            pod_namespace: if id == 20 {
                "shop".into()
            } else {
                String::new()
            },
            container: if id == 20 {
                "c0ffee".into()
            } else {
                String::new()
            },
            ephemeral: eph
                .map(|(lo, hi)| EphemeralPorts::same(PortSet::from_intervals(vec![(lo, hi)]))),
        };
        let namespaces = Namespaces {
            list: vec![
                ns(10, true, Some((3300, 60999))),
                ns(20, false, None),
                ns(30, false, Some((1024, 65535))),
                ns(40, false, None),
            ],
            unsampled: 2,
        };
        let r = build_netns_report(&c, &socks, &holders, &namespaces, &users());
        let rows: Vec<_> = r
            .ranges
            .iter()
            .map(|x| {
                (
                    x.netns.as_deref().unwrap(),
                    x.in_use,
                    x.ports - x.in_use,
                    x.unexpected,
                    x.ephemeral_overlap,
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![("host", 2, 99, 0, Some(25)), ("20", 1, 100, 1, None)],
            "30 has no socket in a range and 40 none at all: no series"
        );
        let l: Vec<_> = r
            .listeners
            .iter()
            .map(|l| (l.netns.as_deref().unwrap(), l.port, l.process(), l.expected))
            .collect();
        assert_eq!(
            l,
            vec![
                ("host", 3224, "ok".to_string(), Expected::True),
                ("host", 3225, "ok".to_string(), Expected::True),
                ("20", 3224, "bad".to_string(), Expected::False),
            ]
        );
        let n = r.netns.unwrap();
        assert_eq!(n.unsampled, 2);
        assert_eq!(
            n.namespaces,
            vec![
                NetnsInfo {
                    label: "host".into(),
                    name: String::new(),
                    container: String::new(),
                    pod: String::new(),
                    namespace: String::new(),
                },
                NetnsInfo {
                    label: "20".into(),
                    name: "blue".into(),
                    container: "c0ffee".into(),
                    pod: "web-0".into(),
                    namespace: "shop".into(),
                },
            ]
        );
        // The host keeps its series with nothing in it.
        let empty = build_netns_report(&c, &[], &[], &namespaces, &users());
        assert_eq!(empty.ranges.len(), 1);
        assert_eq!(
            (empty.ranges[0].in_use, empty.ranges[0].netns.as_deref()),
            (0, Some("host"))
        );
    }
}
