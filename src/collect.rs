//! One collection: sample the sockets in the watched ranges, attribute
//! them to processes, judge each listener against its range's allowlist and
//! count everything per range and protocol into a [`Report`]. The report is
//! plain data: [`crate::metrics`] turns it into metric families and
//! [`crate::check`] into a table.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::attribution::{Attributor, Owner, PassStats};
use crate::config::{Config, Matcher, NameMatch, RangeConfig, UserMatch};
use crate::ranges::{PortSet, Protocol};
use crate::sample::{self, Filter, Socket};
use crate::users::UserNames;

/// Whether a listener is on its range's allowlist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Expected {
    True,
    False,
    /// The owner could not be found (or a field the allowlist needs, such as
    /// the exe path, could not be read).
    Unknown,
}

impl Expected {
    pub fn as_str(self) -> &'static str {
        match self {
            Expected::True => "true",
            Expected::False => "false",
            Expected::Unknown => "unknown",
        }
    }
}

/// One listener in a range.
#[derive(Clone, Debug)]
pub struct Listener {
    pub range: String,
    pub protocol: Protocol,
    pub port: u16,
    pub address: IpAddr,
    pub owner: Option<Arc<Owner>>,
    pub user: String,
    pub expected: Expected,
}

impl Listener {
    /// The process label value: the comm name, lossily decoded, or "unknown".
    pub fn process(&self) -> String {
        match &self.owner {
            Some(o) => String::from_utf8_lossy(&o.comm).into_owned(),
            None => "unknown".to_string(),
        }
    }
}

/// Counts for one range on one protocol.
#[derive(Clone, Debug)]
pub struct RangeStats {
    pub range: String,
    pub protocol: Protocol,
    pub ports: u32,
    pub in_use: u32,
    /// Socket count per state name, in [`sample::state_names`] order.
    pub states: Vec<(&'static str, u64)>,
    pub unexpected: u64,
    pub unattributed: u64,
    /// Ports of the range that outgoing connections can take; `None` when
    /// the kernel settings could not be read.
    pub ephemeral_overlap: Option<u32>,
    /// Per-port occupancy, when the range asks for it.
    pub per_port: Option<Vec<(u16, bool)>>,
}

/// Everything one collection found.
#[derive(Clone, Debug)]
pub struct Report {
    /// The sampling error, when sampling failed; counts are then empty.
    pub error: Option<String>,
    pub ranges: Vec<RangeStats>,
    pub listeners: Vec<Listener>,
    pub attribution: PassStats,
    pub duration: Duration,
}

impl Report {
    pub fn up(&self) -> bool {
        self.error.is_none()
    }
}

/// Holds what lives across collections: the config, the owner cache and
/// the user-name cache.
pub struct Collector {
    config: Arc<Config>,
    filter: Filter,
    attributor: Attributor,
    users: UserNames,
    procfs: PathBuf,
    sample_timeout: Duration,
    /// The capabilities attribution lacks, named once in the log.
    missing_caps: Vec<&'static str>,
    warned_permission: bool,
    warned_ephemeral: bool,
    /// Test hook: this many next samples fail as if the kernel refused
    /// them (`PORTRANGE_EXPORTER_TEST_FAIL_SAMPLES`).
    fail_samples: u64,
    reload: ReloadStatus,
}

/// The outcome of the last configuration (re)load, as Prometheus reports
/// its own.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReloadStatus {
    pub successful: bool,
    /// Unix time of the last successful load, in seconds.
    pub last_success: f64,
}

/// The environment variable that makes the next N samples fail, so tests
/// can drive `portrange_up 0` and its recovery through the real binary.
pub const FAIL_SAMPLES_ENV: &str = "PORTRANGE_EXPORTER_TEST_FAIL_SAMPLES";

impl Collector {
    pub fn new(config: Arc<Config>, procfs: PathBuf) -> Collector {
        let missing_caps = crate::attribution::missing_capabilities(&procfs);
        Collector {
            filter: Filter::from_config(&config),
            config,
            attributor: Attributor::new(procfs.clone()),
            users: UserNames::default(),
            procfs,
            sample_timeout: Duration::from_secs(5),
            missing_caps,
            warned_permission: false,
            warned_ephemeral: false,
            fail_samples: std::env::var(FAIL_SAMPLES_ENV)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0),
            reload: ReloadStatus {
                successful: true,
                last_success: unix_now(),
            },
        }
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Swaps in a new configuration; the owner cache is kept.
    pub fn set_config(&mut self, config: Arc<Config>) {
        self.filter = Filter::from_config(&config);
        self.config = config;
        self.reload = ReloadStatus {
            successful: true,
            last_success: unix_now(),
        };
    }

    /// Re-reads `path` (the built-in configuration when `None`). A file that
    /// is refused leaves the current configuration in place and marks the
    /// reload as failed.
    pub fn reload(
        &mut self,
        path: Option<&std::path::Path>,
    ) -> Result<usize, crate::config::ConfigError> {
        let loaded = match path {
            Some(p) => Config::load(p),
            None => Ok(Config::builtin()),
        };
        match loaded {
            Ok(c) => {
                let n = c.ranges.len();
                self.set_config(Arc::new(c));
                Ok(n)
            }
            Err(e) => {
                self.reload.successful = false;
                Err(e)
            }
        }
    }

    pub fn reload_status(&self) -> ReloadStatus {
        self.reload
    }

    /// The capabilities process attribution lacks (empty when it has all).
    pub fn missing_capabilities(&self) -> &[&'static str] {
        &self.missing_caps
    }

    /// Runs one collection. Attribution stops at `deadline`; sockets it did
    /// not reach by then count as unattributed.
    pub fn collect(&mut self, deadline: Instant) -> Report {
        let started = Instant::now();
        let sampled = if self.fail_samples > 0 {
            self.fail_samples -= 1;
            Err(sample::SampleError::Injected(self.fail_samples))
        } else {
            sample::sample(&self.filter, self.sample_timeout)
        };
        let sockets = match sampled {
            Ok(s) => s,
            Err(e) => {
                log::error!("socket sampling failed: {e}");
                return Report {
                    error: Some(e.to_string()),
                    ranges: Vec::new(),
                    listeners: Vec::new(),
                    attribution: PassStats::default(),
                    duration: started.elapsed(),
                };
            }
        };
        let (owners, stats) = self.attribute(&sockets, deadline);
        let ephemeral = match crate::kernel::ephemeral_ports(&self.procfs) {
            Ok(p) => Some(p),
            Err(e) => {
                if !self.warned_ephemeral {
                    log::warn!(
                        "cannot read the kernel's ephemeral port range, portrange_ephemeral_overlap_ports is left out: {e}"
                    );
                    self.warned_ephemeral = true;
                }
                None
            }
        };
        let mut report = build_report(
            &self.config,
            &sockets,
            &owners,
            ephemeral.as_ref(),
            &mut self.users,
        );
        report.attribution = stats;
        report.duration = started.elapsed();
        report
    }

    fn attribute(
        &mut self,
        sockets: &[Socket],
        deadline: Instant,
    ) -> (HashMap<u64, Arc<Owner>>, PassStats) {
        // Backends that know the pid already (netstat2) need no scan.
        if sockets.iter().any(|s| s.pid_hint.is_some()) {
            return (HashMap::new(), PassStats::default());
        }
        let (owners, stats) = self.attributor.attribute(sockets, deadline);
        if stats.permission_denied > 0 && self.missing_caps.is_empty() {
            // Privileged, yet refused: processes of another user namespace or
            // under a security module. Not a configuration problem.
            log::debug!(
                "{} processes' fd directories were refused despite CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH",
                stats.permission_denied
            );
        } else if stats.permission_denied > 0 && !self.warned_permission {
            self.warned_permission = true;
            let caps = self.missing_caps.join(" and ");
            log::warn!(
                "process attribution is incomplete: {} processes' fd directories under {} could not be read; \
                 missing {caps} (or run as root); their sockets count in portrange_unattributed_sockets \
                 and their listeners have expected=\"unknown\"",
                stats.permission_denied,
                self.procfs.display()
            );
        }
        if stats.deadline_hit {
            log::warn!(
                "process attribution is still scanning {} at the scrape deadline; its sockets count as unattributed until the scan, which goes on in the background, finishes",
                self.procfs.display()
            );
        }
        (owners, stats)
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Builds the report for one sample. Pure: no I/O but the user-name lookups.
pub fn build_report(
    config: &Config,
    sockets: &[Socket],
    owners: &HashMap<u64, Arc<Owner>>,
    ephemeral: Option<&PortSet>,
    users: &mut UserNames,
) -> Report {
    let mut ranges = Vec::new();
    let mut listeners = Vec::new();
    for range in &config.ranges {
        for &protocol in &range.protocols {
            let mut used = BTreeSet::new();
            let names = sample::state_names(protocol);
            let mut states: Vec<(&'static str, u64)> = names.iter().map(|&n| (n, 0)).collect();
            let mut unexpected = 0;
            let mut unattributed = 0;
            for s in sockets
                .iter()
                .filter(|s| s.protocol == protocol && range.ports.contains(s.port))
            {
                if s.holds_port() {
                    used.insert(s.port);
                }
                let name = s.state_name();
                if let Some(slot) = states.iter_mut().find(|(n, _)| *n == name) {
                    slot.1 += 1;
                }
                let owner = owner_of(s, owners);
                if s.inode != 0 && owner.is_none() {
                    unattributed += 1;
                }
                if s.is_listener() {
                    let user = users.name(s.uid).to_string();
                    let expected = judge(&range.expected, owner.as_deref(), s.uid, &user);
                    if expected == Expected::False {
                        unexpected += 1;
                    }
                    listeners.push(Listener {
                        range: range.name.clone(),
                        protocol,
                        port: s.port,
                        address: s.local,
                        owner,
                        user,
                        expected,
                    });
                }
            }
            ranges.push(RangeStats {
                range: range.name.clone(),
                protocol,
                ports: range.ports.len(),
                in_use: used.len() as u32,
                states,
                unexpected,
                unattributed,
                ephemeral_overlap: ephemeral.map(|e| range.ports.intersect(e).len()),
                per_port: per_port(range, &used),
            });
        }
    }
    listeners.sort_by(|a, b| {
        (
            &a.range,
            a.protocol,
            a.port,
            a.address,
            a.process(),
            &a.user,
            a.expected,
        )
            .cmp(&(
                &b.range,
                b.protocol,
                b.port,
                b.address,
                b.process(),
                &b.user,
                b.expected,
            ))
    });
    Report {
        error: None,
        ranges,
        listeners,
        attribution: PassStats::default(),
        duration: Duration::ZERO,
    }
}

fn owner_of(s: &Socket, owners: &HashMap<u64, Arc<Owner>>) -> Option<Arc<Owner>> {
    if let Some(o) = owners.get(&s.inode) {
        return Some(o.clone());
    }
    // A backend that knows only the pid gives an owner only when the name
    // can be resolved too: a nameless owner would be judged as a real one.
    let pid = s.pid_hint?;
    let comm = crate::sample::portable::process_name(pid)?;
    Some(Arc::new(Owner {
        pid,
        comm,
        exe: None,
    }))
}

fn per_port(range: &RangeConfig, used: &BTreeSet<u16>) -> Option<Vec<(u16, bool)>> {
    range.per_port.then(|| {
        range
            .ports
            .ports()
            .map(|p| (p, used.contains(&p)))
            .collect()
    })
}

/// Judges a listener against an allowlist. An entry matches when every
/// field it gives matches; a field that cannot be decided (the owner or its
/// exe is unknown) makes the entry undecided. The listener is expected when
/// some entry matches, unknown when none matches but one is undecided, and
/// unexpected otherwise. A listener whose owner was not found is always
/// unknown: it is never reported as expected.
pub fn judge(allowlist: &[Matcher], owner: Option<&Owner>, uid: u32, user: &str) -> Expected {
    let Some(owner) = owner else {
        return Expected::Unknown;
    };
    let mut result = Expected::False;
    for m in allowlist {
        match judge_entry(m, owner, uid, user) {
            Expected::True => return Expected::True,
            Expected::Unknown => result = Expected::Unknown,
            Expected::False => {}
        }
    }
    result
}

fn judge_entry(m: &Matcher, owner: &Owner, uid: u32, user: &str) -> Expected {
    let mut undecided = false;
    if let Some(p) = &m.process {
        let ok = match p {
            NameMatch::Exact(name) => *name == owner.comm,
            NameMatch::Regex(re) => re.is_match(&owner.comm),
        };
        if !ok {
            return Expected::False;
        }
    }
    if let Some(re) = &m.exe {
        match &owner.exe {
            Some(exe) if !re.is_match(exe) => return Expected::False,
            Some(_) => {}
            None => undecided = true,
        }
    }
    if let Some(u) = &m.user {
        let ok = match u {
            UserMatch::Uid(want) => *want == uid,
            UserMatch::Name(name) => name == user,
        };
        if !ok {
            return Expected::False;
        }
    }
    if undecided {
        Expected::Unknown
    } else {
        Expected::True
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn cfg(yaml: &str) -> Config {
        Config::parse(yaml, "test.yml").unwrap()
    }

    fn owner(comm: &str, exe: Option<&str>) -> Owner {
        Owner {
            pid: 1,
            comm: comm.as_bytes().to_vec(),
            exe: exe.map(|e| e.as_bytes().to_vec()),
        }
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
        }
    }

    #[test]
    fn judging() {
        let c = cfg(
            "ranges:\n  - name: a\n    ports: 1\n    expected:\n      - process: CtxGfx\n        exe: /opt/citrix/*\n      - user: citrix\n",
        );
        let m = &c.ranges[0].expected;
        let ctx = owner("CtxGfx", Some("/opt/citrix/bin/CtxGfx"));
        assert_eq!(judge(m, Some(&ctx), 0, "root"), Expected::True);
        assert_eq!(
            judge(m, Some(&owner("CtxGfx", Some("/tmp/CtxGfx"))), 0, "root"),
            Expected::False
        );
        assert_eq!(
            judge(m, Some(&owner("CtxGfx", None)), 0, "root"),
            Expected::Unknown
        );
        assert_eq!(
            judge(m, Some(&owner("nc", None)), 0, "root"),
            Expected::False,
            "process already fails entry 0"
        );
        assert_eq!(
            judge(m, Some(&owner("nc", None)), 1001, "citrix"),
            Expected::True
        );
        assert_eq!(
            judge(m, None, 1001, "citrix"),
            Expected::Unknown,
            "no owner is never expected"
        );
        assert_eq!(judge(&[], Some(&ctx), 0, "root"), Expected::False);
        let by_uid = cfg("ranges:\n  - name: a\n    ports: 1\n    expected:\n      - user: 1001\n");
        assert_eq!(
            judge(&by_uid.ranges[0].expected, Some(&ctx), 1001, "citrix"),
            Expected::True
        );
        assert_eq!(
            judge(&by_uid.ranges[0].expected, Some(&ctx), 0, "1001"),
            Expected::False
        );
    }

    #[test]
    fn counts_per_range_and_protocol() {
        let c = cfg(
            "ranges:\n  - name: fh\n    ports: 3224-3324\n    expected:\n      - process: ok\n  - name: one\n    ports: 3224\n    protocols: [udp]\n    per_port: false\n",
        );
        let socks = vec![
            sock(Protocol::Udp, 3224, 7, 0, 10),     // listener, owner "ok"
            sock(Protocol::Udp, 3225, 1, 5000, 11),  // connected UDP: not a listener
            sock(Protocol::Udp, 3226, 7, 0, 12),     // listener, owner "bad"
            sock(Protocol::Udp, 3227, 7, 0, 13),     // listener, owner unknown
            sock(Protocol::Tcp, 3300, 10, 0, 20),    // listen
            sock(Protocol::Tcp, 3300, 1, 40000, 21), // accepted connection, same port
            sock(Protocol::Tcp, 3301, 6, 40001, 0),  // TIME_WAIT: does not hold the port
            sock(Protocol::Tcp, 3400, 10, 0, 22),    // outside every range
        ];
        let mut owners = HashMap::new();
        owners.insert(10, Arc::new(owner("ok", None)));
        owners.insert(11, Arc::new(owner("ok", None)));
        owners.insert(12, Arc::new(owner("bad", None)));
        owners.insert(20, Arc::new(owner("ok", None)));
        owners.insert(21, Arc::new(owner("ok", None)));
        let eph = PortSet::from_intervals(vec![(3300, 60999)]);
        let r = build_report(&c, &socks, &owners, Some(&eph), &mut UserNames::default());
        assert_eq!(r.ranges.len(), 3);
        let fh_udp = &r.ranges[0];
        assert_eq!(
            (fh_udp.range.as_str(), fh_udp.protocol),
            ("fh", Protocol::Udp)
        );
        assert_eq!(fh_udp.ports, 101);
        assert_eq!(fh_udp.in_use, 4);
        assert_eq!(fh_udp.states, vec![("unconn", 3), ("established", 1)]);
        assert_eq!(fh_udp.unexpected, 1);
        assert_eq!(fh_udp.unattributed, 1);
        assert_eq!(fh_udp.ephemeral_overlap, Some(25));
        let pp = fh_udp.per_port.as_ref().unwrap();
        assert_eq!(pp.len(), 101);
        assert_eq!(pp.iter().filter(|(_, u)| *u).count(), 4);
        let fh_tcp = &r.ranges[1];
        assert_eq!(fh_tcp.protocol, Protocol::Tcp);
        assert_eq!(fh_tcp.in_use, 1, "TIME_WAIT does not hold 3301");
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
        // Listeners: 3 UDP + 1 TCP in fh, 1 UDP in "one".
        assert_eq!(r.listeners.len(), 5);
        let exp: Vec<_> = r
            .listeners
            .iter()
            .map(|l| (l.range.as_str(), l.port, l.expected))
            .collect();
        assert!(exp.contains(&("fh", 3224, Expected::True)));
        assert!(exp.contains(&("fh", 3226, Expected::False)));
        assert!(exp.contains(&("fh", 3227, Expected::Unknown)));
        assert!(exp.contains(&("fh", 3300, Expected::True)));
        assert!(exp.contains(&("one", 3224, Expected::False)));
    }

    #[test]
    fn empty_sample_is_all_zero() {
        let c = Config::builtin();
        let r = build_report(&c, &[], &HashMap::new(), None, &mut UserNames::default());
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
}
