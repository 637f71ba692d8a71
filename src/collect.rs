//! One collection, run by collectors, into a [`Report`]. The `ranges`
//! collector samples the sockets in the watched ranges through the
//! platform, finds their holders and confirms the kernel-held ones (each
//! step passing its value to the next), judges each listener against its
//! range's allowlist ([`crate::allowlist`]) and counts everything into one
//! [`RangeView`] per range and protocol. With `--collector.netns` the
//! platform samples every network namespace and the views are made per
//! namespace ([`build_netns_report`]): port spaces are per namespace, so
//! nothing is summed across them; the `netns` collector then describes
//! the namespaces. Each collector's success and duration go into the
//! report ([`CollectorRun`]); a new collector is its own module (see the
//! crate's documentation for the shape), run here through [`run`] into
//! its part of the report. The views are built in `collect/views.rs`
//! ([`build_report`], [`build_netns_report`]), pure functions of the
//! configuration and the sample. What any step had to skip is listed in
//! [`Report::skipped`]. Nothing here touches the OS but through
//! [`Platform`]; the views carry everything the projections need, so none
//! of them reads the configuration.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::allowlist;
use crate::config::Config;
use crate::ephemeral::{self, EPHEMERAL, EphemeralReport};
use crate::platform::{
    self, EphemeralPorts, Filter, Holder, Namespaces, PassStats, PerProtocol, Platform, PortWalk,
    Sample, Skipped, Socket,
};
use crate::ranges::{PortSet, Protocol};
pub use crate::report::{CollectorRun, Listener, NetnsInfo, NetnsReport, RangeView, Report};
use crate::users::UserNames;

mod views;
pub use views::{
    build_netns_report, build_report, capacity, describe_namespaces, filter, netns_label,
    traffic_rules,
};

/// The `collector` label of the sockets, attribution and judging.
pub const RANGES: &str = "ranges";
/// The `collector` label of the namespace descriptions
/// (`--collector.netns`).
pub const NETNS: &str = "netns";

/// Holds what lives across collections: the platform (with its owner
/// cache), the configuration and the user-name cache.
pub struct Collector {
    platform: Box<dyn Platform>,
    config: Arc<Config>,
    filter: Filter,
    users: UserNames,
    /// The privileges attribution lacks, named once in the log.
    missing: Vec<&'static str>,
    warned_permission: bool,
    warned_ephemeral: bool,
    /// Stages whose left-out parts were logged at warning level once; the
    /// next ones go to debug (the metric and the status document carry
    /// every collection's).
    warned_stages: HashSet<&'static str>,
    warned_excluded: bool,
    /// The `traffic` collector, with `--collector.traffic`.
    traffic: Option<crate::traffic::TrafficCollector>,
    /// The dynamic ranges the namespaces had in the last collection
    /// (`--collector.netns`), sampled in this one besides the host's.
    ephemeral_seen: Filter,
    warned_ephemeral_collector: bool,
    /// Why TCP's headroom is counted conservatively, logged once.
    warned_sharing: bool,
    /// Whether the next collection starts the port walk with its sample
    /// (see `collect_scoped`).
    walk_first: bool,
    /// How long the last sample with the dynamic range took, and its
    /// attribution.
    last_sampled: (Duration, Duration),
}

/// What the `ranges` collector sampled and attributed, passed on to the
/// `ephemeral` collector.
struct Sampled {
    sockets: Vec<Socket>,
    holders: Vec<Option<Holder>>,
    namespaces: Option<Namespaces>,
    /// The filter the sample used.
    filter: Filter,
    /// The walk of how the TCP ports were taken, started after the sample
    /// and running beside attribution, for the ephemeral collector.
    walk: Option<PortWalk>,
}

/// Runs one collector, timing it and noting its outcome in `runs`.
pub fn run<T>(
    runs: &mut Vec<CollectorRun>,
    name: &'static str,
    collect: impl FnOnce() -> Result<T, String>,
) -> Result<T, String> {
    let started = Instant::now();
    let result = collect();
    runs.push(CollectorRun {
        name,
        success: result.is_ok(),
        duration: started.elapsed(),
    });
    result
}

impl Collector {
    pub fn new(config: Arc<Config>, platform: Box<dyn Platform>) -> Collector {
        let missing = platform.missing_privileges();
        let users = UserNames::new(platform.user_resolver());
        Collector {
            filter: filter(&config),
            config,
            platform,
            users,
            missing,
            warned_permission: false,
            warned_ephemeral: false,
            warned_stages: HashSet::new(),
            warned_excluded: false,
            traffic: None,
            ephemeral_seen: Filter::default(),
            warned_ephemeral_collector: false,
            warned_sharing: false,
            walk_first: false,
            last_sampled: (Duration::ZERO, Duration::ZERO),
        }
    }

    /// Adds the `traffic` collector (`--collector.traffic`).
    pub fn set_traffic(&mut self, mut traffic: crate::traffic::TrafficCollector) {
        traffic.prepare(&traffic_rules(&self.config));
        self.traffic = Some(traffic);
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Swaps in a new configuration; the owner and user caches are kept.
    pub fn set_config(&mut self, config: Arc<Config>) {
        if !Arc::ptr_eq(&self.config, &config) {
            self.filter = filter(&config);
            self.config = config;
        }
    }

    /// The privileges attribution lacks (empty when it has all).
    pub fn missing_privileges(&self) -> &[&'static str] {
        &self.missing
    }

    /// A process's parent, command line and start time, through the
    /// platform (for the listener trail and `check`).
    pub fn process_details(&self, pid: u32) -> Option<platform::ProcessDetails> {
        self.platform.process_details(pid)
    }

    /// Runs one collection: every collector, each bounded by `deadline`;
    /// what they did not reach by then is unknown, and listed in the
    /// report's `skipped`.
    pub fn collect(&mut self, deadline: Instant) -> Report {
        self.collect_scoped(deadline, true)
    }

    /// The watched ranges' listeners alone, for the listener trail's watch
    /// between scrapes: the `ranges` collector (and with `--collector.netns`
    /// the namespaces' descriptions, which its events carry) on the ranges'
    /// own filter. The dynamic range is neither read nor sampled, and
    /// neither the `ephemeral` nor the `traffic` collector runs: their
    /// parts of the report stay empty, and no view carries an overlap.
    pub fn collect_listeners(&mut self, deadline: Instant) -> Report {
        self.collect_scoped(deadline, false)
    }

    fn collect_scoped(&mut self, deadline: Instant, full: bool) -> Report {
        let started = Instant::now();
        let mut runs = Vec::new();
        let per_namespace = self.platform.samples_every_namespace();
        let mut namespaces = None;
        let mut sampled = None;
        // The dynamic range is re-read every collection, once (on Windows
        // that is two runs of netsh), for the ranges' overlap and the
        // ephemeral collector, and sampled in the same dumps as the ranges
        // (one walk of the kernel's tables).
        let dynamic = full.then(|| self.platform.ephemeral_ports());
        if let Some(Err(e)) = &dynamic
            && !self.warned_ephemeral
        {
            log::warn!(
                "cannot read the ephemeral port range, portrange_ephemeral_overlap_ports is left out: {e}"
            );
            self.warned_ephemeral = true;
        }
        let ephemeral_ports = dynamic
            .as_ref()
            .filter(|_| self.config.ephemeral.enabled)
            .cloned();
        let extra = match &ephemeral_ports {
            Some(Ok(host)) => Some(Filter::from_fn(|p| {
                PortSet::union([host.get(p), self.ephemeral_seen.get(p)])
            })),
            _ => None,
        };
        // The ephemeral collector's walk of how the TCP ports were taken,
        // on a thread of the platform's: started by the ranges collector
        // once it has sampled, to run beside attribution; or now, beside
        // the sample too, when the last walk outlasted attribution by more
        // than half the sample (its length follows every TCP socket of the
        // namespace, 75 ms at 100,000, the sample's those in the ranges:
        // started after the sample, it made such a scrape as long as the
        // two in a row). Busy ranges keep it after: the sample's two dumps
        // use both cores of a small host.
        let walk_ports = matches!(ephemeral_ports, Some(Ok(_))) && self.config.ephemeral.bpf;
        let early = (walk_ports && self.walk_first).then(|| self.platform.port_sharing());
        let walk_ports = walk_ports && early.is_none();
        // A dump that fails with the dynamic range in it (a kernel error,
        // a reply too large: the dynamic range can hold far more sockets
        // than the watched ranges) fails the ephemeral collector only: the
        // watched ranges are sampled again alone, while the deadline
        // allows. (One that ran out of time leaves none for a second.)
        let mut with_dynamic_failed = None;
        let mut report = match run(&mut runs, RANGES, || {
            let dynamic = dynamic.as_ref().and_then(|d| d.as_ref().ok());
            match self.collect_ranges(deadline, extra.as_ref(), dynamic, walk_ports) {
                Err(e) if extra.is_some() => {
                    log::debug!(
                        "the socket sample with the dynamic range failed, sampling the watched ranges alone: {e}"
                    );
                    with_dynamic_failed = Some(e);
                    self.collect_ranges(deadline, None, dynamic, false)
                }
                other => other,
            }
        }) {
            Ok((report, s)) => {
                namespaces = s.namespaces.clone();
                sampled = Some(s);
                report
            }
            Err(error) => {
                Report::failed(error, capacity(&self.config, per_namespace), Duration::ZERO)
            }
        };
        if per_namespace {
            let views = &report.ranges;
            report.netns = Some(
                run(&mut runs, NETNS, || {
                    namespaces
                        .as_ref()
                        .map(|n| describe_namespaces(n, views))
                        .ok_or_else(|| "the sample failed: no namespace was seen".to_string())
                })
                .unwrap_or_default(),
            );
        }
        if let Some(traffic) = self.traffic.as_mut().filter(|_| full) {
            let config = &self.config;
            report.traffic = run(&mut runs, crate::traffic::TRAFFIC, || {
                traffic.collect(&traffic_rules(config), deadline)
            })
            .ok();
        }
        if let Some(host) = ephemeral_ports {
            let walk = early.or_else(|| sampled.as_mut().and_then(|s| s.walk.take()));
            let found = run(&mut runs, EPHEMERAL, || match with_dynamic_failed {
                Some(e) if sampled.is_some() => Err(format!(
                    "the socket sample with the dynamic range failed (the watched ranges were sampled again without it): {e}"
                )),
                _ => self.collect_ephemeral(host, sampled.as_ref(), deadline, walk),
            });
            match found {
                Ok((found, skipped)) => {
                    report.skipped.extend(skipped);
                    report.ephemeral = Some(found);
                }
                Err(e) => {
                    if !self.warned_ephemeral_collector {
                        log::warn!("the ephemeral collector failed, its series are left out: {e}");
                        self.warned_ephemeral_collector = true;
                    } else {
                        log::debug!("the ephemeral collector failed: {e}");
                    }
                    report.ephemeral = Some(EphemeralReport {
                        views: Vec::new(),
                        error: Some(e),
                    });
                }
            }
        }
        report.collectors = runs;
        report.duration = started.elapsed();
        for s in &report.skipped {
            if self.warned_stages.insert(s.stage) {
                log::warn!(
                    "collection incomplete: {s} (further parts left out at this stage are logged at debug level)"
                );
            } else {
                log::debug!("collection incomplete: {s}");
            }
        }
        report
    }

    /// The `ranges` collector: sample, attribute, confirm the kernel-held
    /// sockets, name the users, and count and judge into views. Also gives
    /// the namespaces the sample covered, for the `netns` collector.
    fn collect_ranges(
        &mut self,
        deadline: Instant,
        extra: Option<&Filter>,
        dynamic: Option<&EphemeralPorts>,
        walk_ports: bool,
    ) -> Result<(Report, Sampled), String> {
        let started = Instant::now();
        let filter = match extra {
            Some(extra) => Filter::from_fn(|p| PortSet::union([self.filter.get(p), extra.get(p)])),
            None => self.filter.clone(),
        };
        let sampled = self.platform.sample(&filter, deadline);
        let mut sample = sampled.map_err(|e| {
            // With the dynamic range, the caller samples again without it.
            if extra.is_none() {
                log::error!("socket sampling failed: {e}");
            }
            e.to_string()
        })?;
        // What only the dynamic range's counts need: no verdict rests on
        // its owner, so attribution does not search every owner for it.
        if extra.is_some() {
            sample.count_only = sample
                .sockets
                .iter()
                .filter(|s| s.inode != 0 && !self.filter.get(s.protocol).contains(s.port))
                .map(|s| s.inode)
                .collect();
        }
        let t_sample = started.elapsed();
        // The port walk runs beside attribution (see `collect_scoped`).
        let walk = walk_ports.then(|| self.platform.port_sharing());
        let attribution = self.platform.attribute(&sample, deadline);
        let mut attribution = self.platform.confirm_kernel(&sample, attribution, deadline);
        if !attribution.closed.is_empty() {
            drop_closed(&mut sample.sockets, &mut attribution);
        }
        let t_attr = started.elapsed();
        if extra.is_some() {
            self.last_sampled = (t_sample, t_attr - t_sample);
        }
        self.log_attribution(&attribution.stats);
        let Sample {
            sockets,
            namespaces,
            mut skipped,
            ..
        } = sample;
        if attribution.stats.deadline_hit {
            skipped.push(Skipped::new(
                Skipped::ATTRIBUTION,
                "the process scan",
                "the deadline passed with sockets left to find (the scan goes on in the background)",
            ));
        }
        skipped.extend(attribution.skipped);
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
        let mut unanswered: Vec<u32> = uids
            .iter()
            .copied()
            .filter(|&u| self.users.get(u) == allowlist::UserName::Unresolved)
            .collect();
        unanswered.sort_unstable();
        skipped.extend(unanswered.into_iter().map(|uid| {
            Skipped::new(
                Skipped::USERS,
                format!("the name of uid {uid}"),
                "the user database did not answer by the deadline, or failed",
            )
        }));
        let mut report = match &namespaces {
            None => build_report(
                &self.config,
                &sockets,
                &attribution.holders,
                dynamic,
                &self.users,
            ),
            Some(namespaces) => build_netns_report(
                &self.config,
                &sockets,
                &attribution.holders,
                namespaces,
                &self.users,
            ),
        };
        self.apply_excluded(&mut report);
        report.attribution = attribution.stats;
        report.missing_privileges = self.missing.clone();
        report.skipped = skipped;
        let a = &report.attribution;
        let elapsed = started.elapsed();
        log::debug!(
            "timing: sample {t_sample:?} attribute {:?} rest {:?}",
            t_attr - t_sample,
            elapsed - t_attr
        );
        log::debug!(
            "collection: {} sockets, {} listeners, {} owners confirmed, {} searched ({} closed before they were found), {} processes scanned, {} links read, {} kernel-held, deadline hit {}, {elapsed:?}",
            sockets.len(),
            report.listeners().count(),
            a.confirmed,
            a.searched,
            a.closed,
            a.processes_scanned,
            a.links_read,
            a.kernel,
            a.deadline_hit,
        );
        Ok((
            report,
            Sampled {
                sockets,
                holders: attribution.holders,
                namespaces,
                filter,
                walk,
            },
        ))
    }

    /// The `ephemeral` collector: one view per protocol (and namespace)
    /// of the dynamic range, from the ranges collector's sample. `host` is
    /// the exporter's own namespace's range, read in this collection. A
    /// namespace whose range cannot be read, or was not in this
    /// collection's filter (it changed, or the namespace is new), gets no
    /// view and is listed as skipped; the next collection samples it.
    fn collect_ephemeral(
        &mut self,
        host: Result<EphemeralPorts, String>,
        sampled: Option<&Sampled>,
        deadline: Instant,
        walk: Option<PortWalk>,
    ) -> Result<(EphemeralReport, Vec<Skipped>), String> {
        let host = host.map_err(|e| format!("cannot read the dynamic port range: {e}"))?;
        let sampled =
            sampled.ok_or_else(|| "the socket sample failed: nothing to count".to_string())?;
        let top = self.config.ephemeral.top_holders;
        let mut skipped = Vec::new();
        // (label, namespace id, ranges) of each view to build.
        let mut parts: Vec<(Option<String>, Option<u64>, EphemeralPorts)> = Vec::new();
        match &sampled.namespaces {
            None => parts.push((None, None, host)),
            Some(namespaces) => {
                let mut seen = Filter::default();
                for ns in &namespaces.list {
                    let label = netns_label(ns);
                    let Some(ports) = &ns.ephemeral else {
                        skipped.push(Skipped::new(
                            Skipped::SAMPLE,
                            format!("the dynamic port range of netns {label}"),
                            "it cannot be read there",
                        ));
                        continue;
                    };
                    for p in [Protocol::Tcp, Protocol::Udp] {
                        let s = seen.get_mut(p);
                        *s = PortSet::union([&*s, ports.get(p)]);
                    }
                    let uncovered = [Protocol::Tcp, Protocol::Udp]
                        .into_iter()
                        .any(|p| !ports.get(p).difference(sampled.filter.get(p)).is_empty());
                    if uncovered {
                        skipped.push(Skipped::new(
                            Skipped::SAMPLE,
                            format!("the dynamic port range of netns {label}"),
                            "it was not in this collection's sample (new or changed); the next collection samples it",
                        ));
                        continue;
                    }
                    let any = sampled
                        .sockets
                        .iter()
                        .any(|s| s.netns == ns.id && ports.get(s.protocol).contains(s.port));
                    if ns.host || any {
                        parts.push((Some(label), Some(ns.id), ports.clone()));
                    }
                }
                // Namespaces with no socket in this sample's ports: their
                // own dynamic ranges are sampled from the next collection
                // on (otherwise a namespace whose range differs from the
                // host's would never be seen).
                for p in [Protocol::Tcp, Protocol::Udp] {
                    let s = seen.get_mut(p);
                    *s = PortSet::union([&*s, namespaces.ephemeral_unlisted.get(p)]);
                }
                self.ephemeral_seen = seen;
            }
        }
        let uids: HashSet<u32> = parts
            .iter()
            .flat_map(|(_, id, ports)| {
                ephemeral::uids_to_name(&sampled.sockets, &sampled.holders, move |s| {
                    id.is_none_or(|id| s.netns == id) && ports.get(s.protocol).contains(s.port)
                })
            })
            .collect();
        self.users.resolve(&uids, deadline);
        // How the own namespace's TCP ports were taken. A port in the
        // sample the walk did not pass (bound after it) is unknown: counted
        // as gone.
        let sharing = match walk {
            Some(walk) => {
                let (sharing, took) = walk.wait();
                let (sample, attribution) = self.last_sampled;
                log::debug!(
                    "timing: port walk {took:?} (started {} the sample of {sample:?}, attribution {attribution:?})",
                    if self.walk_first { "with" } else { "after" },
                );
                // Started after the sample, the walk outlasts attribution
                // by `took - attribution`; started with it, it takes a
                // core from the sample's two dumps (TCP and UDP at once),
                // up to half the sample's time.
                self.walk_first = took > attribution + sample / 2;
                sharing
            }
            None => Err("--no-collector.ephemeral.bpf".to_string()),
        };
        match &sharing {
            Err(e) if !self.warned_sharing => {
                log::warn!(
                    "the ephemeral tcp headroom is counted conservatively (every port in use counts against every destination, portrange_ephemeral_counting_info{{method=\"conservative\"}}): how each port was taken is read by a BPF socket iterator, which needs Linux 5.9+ with BTF (/sys/kernel/btf/vmlinux) and CAP_BPF and CAP_PERFMON (deploy/systemd/portrange_exporter.service.d/bpf.conf): {e}"
                );
                self.warned_sharing = true;
            }
            Err(e) => log::debug!("ephemeral tcp counted conservatively: {e}"),
            Ok(_) => {}
        }
        let sharing = sharing.ok();
        let mut views = Vec::new();
        for (label, id, ports) in parts {
            // The walk covers the exporter's own namespace only.
            let sharing = sharing
                .as_ref()
                .filter(|sh| id.is_none_or(|id| sh.netns == id));
            for protocol in [Protocol::Tcp, Protocol::Udp] {
                views.push(ephemeral::build_view(
                    protocol,
                    label.clone(),
                    id,
                    ports.get(protocol),
                    &sampled.sockets,
                    &sampled.holders,
                    &self.users,
                    top,
                    sharing,
                ));
            }
        }
        Ok((EphemeralReport { views, error: None }, skipped))
    }

    /// Sets each view's excluded ports from the platform's (asked once per
    /// protocol). A platform without such ports leaves them `None`; one
    /// that cannot say, too, with a warning once.
    fn apply_excluded(&mut self, report: &mut Report) {
        // Asked at most once per protocol, and only for protocols watched.
        let mut excluded: PerProtocol<Option<Option<PortSet>>> = PerProtocol::default();
        for view in &mut report.ranges {
            let protocol = view.protocol;
            let set = excluded.get_mut(protocol).get_or_insert_with(|| {
                self.platform.excluded_ports(protocol).unwrap_or_else(|e| {
                    if !self.warned_excluded {
                        log::warn!(
                            "cannot read the {protocol} ports the system excludes from binding; portrange_excluded_ports is left out and the port map shows none as reserved: {e}"
                        );
                        self.warned_excluded = true;
                    }
                    None
                })
            });
            if let Some(set) = set {
                view.excluded = Some(view.spec.intersect(set));
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

/// Drops the sockets attribution found closed (see
/// [`platform::Attribution::closed`]) from the sample and the holders,
/// index for index.
fn drop_closed(sockets: &mut Vec<Socket>, attribution: &mut platform::Attribution) {
    let closed: HashSet<usize> = attribution.closed.drain(..).collect();
    let keep = |i: usize| !closed.contains(&i);
    *sockets = std::mem::take(sockets)
        .into_iter()
        .enumerate()
        .filter_map(|(i, s)| keep(i).then_some(s))
        .collect();
    attribution.holders = std::mem::take(&mut attribution.holders)
        .into_iter()
        .enumerate()
        .filter_map(|(i, h)| keep(i).then_some(h))
        .collect();
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::allowlist::Expected;
    use crate::platform::{Owner, UserLookup};
    use std::net::{IpAddr, Ipv4Addr};

    fn cfg(yaml: &str) -> Config {
        Config::parse(yaml, "test.yml").unwrap()
    }

    fn owner(comm: &str) -> Option<Holder> {
        Some(Holder::Process(Arc::new(Owner {
            exe: Some(format!("/usr/bin/{comm}").into_bytes()),
            ..Owner::named(1, comm.as_bytes())
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
        assert_eq!(fh_udp.ports(), 101);
        assert_eq!(fh_udp.in_use, 5);
        assert_eq!(fh_udp.states, vec![("unconn", 4), ("established", 1)]);
        assert_eq!(fh_udp.unexpected, 2, "bad and the kernel socket");
        assert_eq!(fh_udp.unattributed, 1, "a kernel-held socket is attributed");
        assert_eq!(fh_udp.ephemeral_overlap, Some(25));
        let pp: Vec<(u16, bool)> = fh_udp.port_in_use().unwrap().collect();
        assert_eq!(pp.len(), 101);
        assert_eq!(pp.iter().filter(|(_, u)| *u).count(), 5);
        assert_eq!(fh_udp.unknown, 1, "3227");
        let fh_tcp = &r.ranges[1];
        assert_eq!(fh_tcp.protocol, Protocol::Tcp);
        assert_eq!(fh_tcp.in_use, 1, "TIME_WAIT does not hold 3301");
        assert_eq!(fh_udp.in_use_ports, vec![3224, 3225, 3226, 3227, 3228]);
        assert_eq!(fh_tcp.in_use_ports, vec![3300]);
        assert!(fh_udp.excluded.is_none());
        let count = |n: &str| fh_tcp.states.iter().find(|(s, _)| *s == n).unwrap().1;
        assert_eq!(
            (count("listen"), count("established"), count("time_wait")),
            (1, 1, 1)
        );
        assert_eq!(fh_tcp.states.len(), 11);
        assert_eq!(fh_tcp.unattributed, 0, "TIME_WAIT has no owner to find");
        let one = &r.ranges[2];
        assert_eq!(
            (one.ports(), one.in_use, one.unexpected),
            (1, 1, 1),
            "the allowlist of fh does not apply here"
        );
        assert!(one.port_in_use().is_none());
        // Listeners: 4 UDP + 1 TCP in fh, 1 TCP in "one".
        assert_eq!(r.listeners().count(), 6);
        let exp: Vec<_> = r
            .listeners()
            .map(|l| (&*l.range, l.port, l.process(), &*l.user, l.expected))
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
        let r = build_report(&c, &socks, &holders, None, &users());
        let mut udp = r.ranges[0].clone();
        let mut tcp = r.ranges[1].clone();
        assert_eq!((udp.protocol, tcp.protocol), (Protocol::Udp, Protocol::Tcp));
        assert_eq!(udp.excluded_free(), None, "nothing excluded: no count");
        udp.excluded = Some(
            udp.spec
                .intersect(&PortSet::from_intervals(vec![(3200, 3239)])),
        );
        assert_eq!(
            udp.excluded_free(),
            Some(16 - 1),
            "3224-3239 less the held 3230"
        );
        assert_eq!(udp.excluded.as_ref().unwrap().len(), 16);
        tcp.excluded = Some(PortSet::from_intervals(vec![(3231, 3231)]));
        assert_eq!(
            tcp.excluded_free(),
            Some(1),
            "a TIME_WAIT socket does not hold 3231"
        );
    }

    /// A platform whose process scan always runs out of time and whose
    /// user database never answers.
    struct Blind;

    impl Platform for Blind {
        fn sample(&mut self, _: &Filter, _: Instant) -> Result<Sample, platform::SampleError> {
            Ok(Sample {
                sockets: vec![Socket {
                    uid: 1001,
                    ..sock(Protocol::Udp, 3224, 7, 0, 10)
                }],
                namespaces: None,
                skipped: vec![Skipped::new(
                    Skipped::SAMPLE,
                    "tcp/ipv6 dump",
                    "the deadline passed",
                )],
                count_only: Default::default(),
            })
        }

        fn attribute(&mut self, sample: &Sample, _: Instant) -> platform::Attribution {
            platform::Attribution {
                holders: vec![None; sample.sockets.len()],
                stats: PassStats {
                    deadline_hit: true,
                    ..PassStats::default()
                },
                ..platform::Attribution::default()
            }
        }

        fn confirm_kernel(
            &mut self,
            _: &Sample,
            mut attribution: platform::Attribution,
            _: Instant,
        ) -> platform::Attribution {
            attribution.skipped.push(Skipped::new(
                Skipped::TUNNELS,
                "tunnel devices of network namespace 7",
                "the namespace is gone",
            ));
            attribution
        }

        fn ephemeral_ports(&self) -> Result<EphemeralPorts, String> {
            Err("not here".into())
        }

        fn user_resolver(&self) -> platform::UserResolver {
            Arc::new(|_| Err("LDAP server unreachable".into()))
        }

        fn missing_privileges(&self) -> Vec<&'static str> {
            Vec::new()
        }
    }

    #[test]
    fn every_part_left_out_is_in_the_report_by_stage() {
        let mut c = Collector::new(Arc::new(Config::builtin()), Box::new(Blind));
        let r = c.collect(Instant::now() + Duration::from_secs(2));
        assert!(r.up());
        let stages: Vec<&str> = r.skipped.iter().map(|s| s.stage).collect();
        assert_eq!(
            stages,
            vec!["sample", "attribution", "tunnels", "users"],
            "{:?}",
            r.skipped
        );
        assert_eq!(r.skipped[3].what, "the name of uid 1001");
        assert_eq!(
            r.collectors
                .iter()
                .map(|c| (c.name, c.success))
                .collect::<Vec<_>>(),
            vec![(RANGES, true), (EPHEMERAL, false)],
            "the dynamic range cannot be read: the ephemeral collector fails"
        );
        assert_eq!(
            r.ephemeral.as_ref().and_then(|e| e.error.as_deref()),
            Some("cannot read the dynamic port range: not here")
        );
        assert!(stages.iter().all(|s| Skipped::STAGES.contains(s)));
    }

    #[test]
    fn a_failed_sample_keeps_the_capacity_and_fails_its_collectors() {
        struct Refused(bool);
        impl Platform for Refused {
            fn sample(&mut self, _: &Filter, _: Instant) -> Result<Sample, platform::SampleError> {
                Err(platform::SampleError::Unsupported("refused".into()))
            }
            fn attribute(&mut self, _: &Sample, _: Instant) -> platform::Attribution {
                unreachable!("nothing to attribute")
            }
            fn samples_every_namespace(&self) -> bool {
                self.0
            }
            fn ephemeral_ports(&self) -> Result<EphemeralPorts, String> {
                Err("not here".into())
            }
            fn user_resolver(&self) -> platform::UserResolver {
                Arc::new(|_| Ok(UserLookup::NoEntry))
            }
            fn missing_privileges(&self) -> Vec<&'static str> {
                Vec::new()
            }
        }
        let mut c = Collector::new(Arc::new(Config::builtin()), Box::new(Refused(true)));
        let r = c.collect(Instant::now() + Duration::from_secs(2));
        assert!(!r.up());
        assert_eq!(
            r.ranges
                .iter()
                .map(|v| (v.ports(), v.netns.as_deref()))
                .collect::<Vec<_>>(),
            vec![(101, Some("host")), (101, Some("host"))]
        );
        assert_eq!(
            r.collectors
                .iter()
                .map(|c| (c.name, c.success))
                .collect::<Vec<_>>(),
            vec![(RANGES, false), (NETNS, false), (EPHEMERAL, false)]
        );
        assert_eq!(r.netns, Some(NetnsReport::default()));
    }

    /// A listener the platform found closed before its holder was known
    /// is not reported (as a listener of unknown owner that no longer
    /// exists); the others keep their holders, index for index.
    #[test]
    fn a_socket_found_closed_is_dropped_with_its_holder() {
        struct Closing;
        impl Platform for Closing {
            fn sample(&mut self, _: &Filter, _: Instant) -> Result<Sample, platform::SampleError> {
                Ok(Sample {
                    sockets: vec![
                        sock(Protocol::Udp, 3224, 7, 0, 10),
                        sock(Protocol::Udp, 3225, 7, 0, 11),
                        sock(Protocol::Udp, 3226, 7, 0, 12),
                    ],
                    ..Sample::default()
                })
            }
            fn attribute(&mut self, _: &Sample, _: Instant) -> platform::Attribution {
                platform::Attribution {
                    holders: vec![owner("CtxGfx"), None, owner("intruder")],
                    closed: vec![1],
                    ..platform::Attribution::default()
                }
            }
            fn ephemeral_ports(&self) -> Result<EphemeralPorts, String> {
                Err("not read here".into())
            }
            fn user_resolver(&self) -> platform::UserResolver {
                Arc::new(|_| Ok(UserLookup::Name("root".into())))
            }
            fn missing_privileges(&self) -> Vec<&'static str> {
                Vec::new()
            }
        }
        let mut c = Collector::new(Arc::new(Config::builtin()), Box::new(Closing));
        let r = c.collect(Instant::now() + Duration::from_secs(2));
        let udp = r
            .ranges
            .iter()
            .find(|v| v.protocol == Protocol::Udp)
            .unwrap();
        assert_eq!((udp.in_use, udp.unknown), (2, 0), "{udp:?}");
        let names: Vec<(u16, String)> = r.listeners().map(|l| (l.port, l.process())).collect();
        assert!(
            names
                .iter()
                .any(|(p, n)| *p == 3226 && n.contains("intruder"))
                && !names.iter().any(|(p, _)| *p == 3225),
            "{names:?}"
        );
    }

    #[test]
    fn a_dump_that_fails_for_the_dynamic_range_fails_the_ephemeral_collector_only() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        /// Refuses every dump that reaches past the watched range (the
        /// built-in 3224-3324) into the dynamic range.
        struct Choking(Arc<AtomicUsize>);
        impl Platform for Choking {
            fn sample(&mut self, f: &Filter, _: Instant) -> Result<Sample, platform::SampleError> {
                self.0.fetch_add(1, Ordering::SeqCst);
                if f.get(Protocol::Tcp).contains(40000) {
                    return Err(platform::SampleError::Kernel {
                        dump: "tcp/ipv4".into(),
                        message: "Message too long".into(),
                        hint: "",
                    });
                }
                Ok(Sample {
                    sockets: vec![sock(Protocol::Udp, 3224, 7, 0, 10)],
                    ..Sample::default()
                })
            }
            fn attribute(&mut self, sample: &Sample, _: Instant) -> platform::Attribution {
                platform::Attribution {
                    holders: vec![owner("CtxGfx"); sample.sockets.len()],
                    ..platform::Attribution::default()
                }
            }
            fn ephemeral_ports(&self) -> Result<EphemeralPorts, String> {
                Ok(EphemeralPorts::same(PortSet::from_intervals(vec![(
                    32768, 60999,
                )])))
            }
            fn user_resolver(&self) -> platform::UserResolver {
                Arc::new(|_| Ok(UserLookup::Name("root".into())))
            }
            fn missing_privileges(&self) -> Vec<&'static str> {
                Vec::new()
            }
        }
        let dumps = Arc::new(AtomicUsize::new(0));
        let mut c = Collector::new(
            Arc::new(Config::builtin()),
            Box::new(Choking(dumps.clone())),
        );
        let r = c.collect(Instant::now() + Duration::from_secs(2));
        assert!(
            r.up(),
            "the watched ranges do not fail with the dynamic one"
        );
        assert_eq!(
            dumps.load(Ordering::SeqCst),
            2,
            "the ranges sampled again alone"
        );
        assert_eq!(
            r.collectors
                .iter()
                .map(|c| (c.name, c.success))
                .collect::<Vec<_>>(),
            vec![(RANGES, true), (EPHEMERAL, false)]
        );
        let udp = r
            .ranges
            .iter()
            .find(|v| v.protocol == Protocol::Udp)
            .unwrap();
        assert_eq!((udp.in_use, udp.unexpected), (1, 1), "{udp:?}");
        let error = r.ephemeral.as_ref().and_then(|e| e.error.clone()).unwrap();
        assert!(
            error.starts_with("the socket sample with the dynamic range failed")
                && error.contains("Message too long"),
            "{error}"
        );
        assert!(r.ephemeral.as_ref().unwrap().views.is_empty());
    }

    #[test]
    fn the_dynamic_range_is_read_once_a_collection() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        struct Counting(Arc<AtomicUsize>);
        impl Platform for Counting {
            fn sample(&mut self, _: &Filter, _: Instant) -> Result<Sample, platform::SampleError> {
                Ok(Sample::default())
            }
            fn attribute(&mut self, _: &Sample, _: Instant) -> platform::Attribution {
                platform::Attribution::default()
            }
            fn ephemeral_ports(&self) -> Result<EphemeralPorts, String> {
                self.0.fetch_add(1, Ordering::SeqCst);
                Ok(EphemeralPorts::same(PortSet::from_intervals(vec![(
                    3300, 3400,
                )])))
            }
            fn user_resolver(&self) -> platform::UserResolver {
                Arc::new(|_| Ok(UserLookup::NoEntry))
            }
            fn missing_privileges(&self) -> Vec<&'static str> {
                Vec::new()
            }
        }
        let calls = Arc::new(AtomicUsize::new(0));
        let mut c = Collector::new(
            Arc::new(Config::builtin()),
            Box::new(Counting(calls.clone())),
        );
        let r = c.collect(Instant::now() + Duration::from_secs(2));
        // Windows reads it with two runs of netsh: once for the ranges'
        // overlap and the ephemeral collector both.
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(
            r.ranges.iter().all(|v| v.ephemeral_overlap == Some(25)),
            "{:?}",
            r.ranges
        );
        assert!(
            r.ephemeral
                .as_ref()
                .is_some_and(|e| e.error.is_none() && !e.views.is_empty())
        );
    }

    /// A platform that records the filter of every sample it is asked
    /// for and counts the reads of its dynamic range (50000-50099).
    pub(crate) struct Recording {
        pub filters: Arc<std::sync::Mutex<Vec<Filter>>>,
        pub dynamic_reads: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Recording {
        pub const DYNAMIC: u16 = 50000;

        pub fn new() -> Recording {
            Recording {
                filters: Arc::default(),
                dynamic_reads: Arc::default(),
            }
        }

        pub fn handle(&self) -> Recording {
            Recording {
                filters: self.filters.clone(),
                dynamic_reads: self.dynamic_reads.clone(),
            }
        }

        /// Whether each filter asked for so far covers the dynamic range.
        pub fn sampled_dynamic(&self) -> Vec<bool> {
            self.filters
                .lock()
                .unwrap()
                .iter()
                .map(|f| {
                    [Protocol::Tcp, Protocol::Udp]
                        .iter()
                        .any(|&p| f.get(p).contains(Self::DYNAMIC))
                })
                .collect()
        }
    }

    impl Platform for Recording {
        fn sample(&mut self, filter: &Filter, _: Instant) -> Result<Sample, platform::SampleError> {
            self.filters.lock().unwrap().push(filter.clone());
            Ok(Sample::default())
        }
        fn attribute(&mut self, _: &Sample, _: Instant) -> platform::Attribution {
            platform::Attribution::default()
        }
        fn ephemeral_ports(&self) -> Result<EphemeralPorts, String> {
            self.dynamic_reads
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(EphemeralPorts::same(PortSet::from_intervals(vec![(
                Self::DYNAMIC,
                Self::DYNAMIC + 99,
            )])))
        }
        fn user_resolver(&self) -> platform::UserResolver {
            Arc::new(|_| Ok(UserLookup::NoEntry))
        }
        fn missing_privileges(&self) -> Vec<&'static str> {
            Vec::new()
        }
    }

    #[test]
    fn the_listeners_alone_leave_out_the_dynamic_range() {
        let platform = Recording::new();
        let seen = platform.handle();
        let mut c = Collector::new(Arc::new(Config::builtin()), Box::new(platform));
        let deadline = Instant::now() + Duration::from_secs(2);
        let r = c.collect_listeners(deadline);
        assert_eq!(seen.sampled_dynamic(), [false]);
        assert_eq!(
            seen.dynamic_reads.load(std::sync::atomic::Ordering::SeqCst),
            0
        );
        assert_eq!(
            r.collectors.iter().map(|c| c.name).collect::<Vec<_>>(),
            [RANGES]
        );
        assert!(r.ephemeral.is_none() && r.traffic.is_none());
        assert!(r.ranges.iter().all(|v| v.ephemeral_overlap.is_none()));
        // The watched ranges themselves are sampled as a scrape samples them.
        assert!(
            seen.filters.lock().unwrap()[0]
                .get(Protocol::Udp)
                .contains(3224)
        );
        // A full collection still samples the dynamic range with them.
        let r = c.collect(deadline);
        assert_eq!(seen.sampled_dynamic(), [false, true]);
        assert!(r.ephemeral.is_some());
    }

    /// A platform that records whether the port walk was started before
    /// or after the sample, and says the walk took `walk_took`.
    struct Walking {
        events: Arc<std::sync::Mutex<Vec<&'static str>>>,
        walk_took: Arc<std::sync::Mutex<Duration>>,
    }

    impl Platform for Walking {
        fn sample(&mut self, _: &Filter, _: Instant) -> Result<Sample, platform::SampleError> {
            self.events.lock().unwrap().push("sample");
            Ok(Sample::default())
        }
        fn attribute(&mut self, _: &Sample, _: Instant) -> platform::Attribution {
            platform::Attribution::default()
        }
        fn ephemeral_ports(&self) -> Result<EphemeralPorts, String> {
            Ok(EphemeralPorts::same(PortSet::from_intervals(vec![(
                40000, 40099,
            )])))
        }
        fn port_sharing(&mut self) -> PortWalk {
            self.events.lock().unwrap().push("walk");
            let took = *self.walk_took.lock().unwrap();
            PortWalk::later(move || (Ok(platform::PortSharing::new(0)), took))
        }
        fn user_resolver(&self) -> platform::UserResolver {
            Arc::new(|_| Ok(UserLookup::NoEntry))
        }
        fn missing_privileges(&self) -> Vec<&'static str> {
            Vec::new()
        }
    }

    /// The port walk starts after the sample, beside attribution; once a
    /// walk outlasted attribution by more than half the sample, the next
    /// starts with the sample; once one did not, after it again.
    #[test]
    fn a_long_port_walk_starts_with_the_sample() {
        let events = Arc::new(std::sync::Mutex::new(Vec::new()));
        let walk_took = Arc::new(std::sync::Mutex::new(Duration::from_millis(100)));
        let platform = Walking {
            events: events.clone(),
            walk_took: walk_took.clone(),
        };
        let mut c = Collector::new(Arc::new(Config::builtin()), Box::new(platform));
        let deadline = Instant::now() + Duration::from_secs(2);
        let order = |c: &mut Collector| {
            let r = c.collect(deadline);
            assert!(
                r.ephemeral.as_ref().is_some_and(|e| e.error.is_none()),
                "{:?}",
                r.ephemeral
            );
            std::mem::take(&mut *events.lock().unwrap())
        };
        assert_eq!(order(&mut c), ["sample", "walk"]);
        assert_eq!(
            order(&mut c),
            ["walk", "sample"],
            "the last walk took 100 ms"
        );
        *walk_took.lock().unwrap() = Duration::ZERO;
        assert_eq!(order(&mut c), ["walk", "sample"]);
        assert_eq!(
            order(&mut c),
            ["sample", "walk"],
            "the last walk took no time"
        );
        // A walk the collection does not ask for is never started.
        let mut config = Config::builtin();
        config.ephemeral.bpf = false;
        c.set_config(Arc::new(config));
        assert_eq!(order(&mut c), ["sample"]);
    }

    #[test]
    fn empty_sample_is_all_zero() {
        let c = Config::builtin();
        let r = build_report(&c, &[], &[], None, &users());
        assert_eq!(r.ranges.len(), 2);
        for s in &r.ranges {
            assert_eq!(
                (s.ports(), s.in_use, s.unexpected, s.unattributed),
                (101, 0, 0, 0)
            );
            assert!(s.states.iter().all(|(_, n)| *n == 0));
            assert_eq!(s.ephemeral_overlap, None);
        }
        assert_eq!(r.listeners().count(), 0);
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
            ephemeral_unlisted: Default::default(),
        };
        let r = build_netns_report(&c, &socks, &holders, &namespaces, &users());
        let rows: Vec<_> = r
            .ranges
            .iter()
            .map(|x| {
                (
                    x.netns.as_deref().unwrap(),
                    x.in_use,
                    x.free(),
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
            .listeners()
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
        let n = describe_namespaces(&namespaces, &r.ranges);
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
