//! Linux behind the platform boundary: sockets from NETLINK_SOCK_DIAG
//! ([`netlink`]), holders from `/proc/<pid>/fd` ([`attribution`]), then
//! kernel-held sockets confirmed by a second sample and named by the
//! tunnel devices that own their UDP ports, from rtnetlink ([`tunnels`]),
//! in a step of its own ([`LinuxPlatform`]'s `confirm_kernel`); user names
//! from `getpwuid_r` ([`users`]), the ephemeral range from the
//! `/proc/sys/net` sysctls ([`sysctl`]), capabilities and the pid
//! namespace probed at start ([`privileges`]), unix signals and rlimits, and the sockets systemd
//! passes on socket activation ([`systemd`]). Every `/proc` read goes
//! through the `--path.procfs` root. With `--collector.netns`, [`netns`]
//! samples every network namespace on the host instead of the exporter's
//! own. How each TCP port of its own namespace was taken, for the
//! ephemeral headroom, comes from a BPF socket iterator ([`port_sharing`]).

pub mod attribution;
pub mod exe_names;
pub mod netlink;
pub mod netns;
pub mod nft_codec;
pub mod nft_design;
pub mod nftables;
pub mod port_sharing;
pub mod privileges;
pub mod process;
pub mod procfs_sockets;
pub mod sock_diag;
pub mod sock_diag_filter;
pub mod sysctl;
pub mod systemd;
pub mod tunnels;
pub mod users;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use std::time::Instant;

use crate::platform::{
    Attribution, EphemeralPorts, Filter, Holder, KernelCandidate, PerProtocol, Platform,
    PlatformError, PlatformOptions, Sample, SampleError, Skipped, Socket, UserNameResolver,
    UserResolver,
};
use crate::ranges::{PortSet, Protocol};

/// Port intervals per protocol.
type Intervals = PerProtocol<Vec<(u16, u16)>>;

/// A `/proc` directory entry's number (a pid, an fd), or `None` for any
/// other name (`self`, `net`) or one past `u32`.
pub fn proc_number(name: &[u8]) -> Option<u32> {
    if name.is_empty() || name.len() > 10 || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(name).ok()?.parse().ok()
}

/// Where procfs is mounted unless `--path.procfs` says otherwise.
pub const DEFAULT_PROCFS: &str = "/proc";

/// The Linux platform: the sampler and the owner cache.
pub struct LinuxPlatform {
    procfs: PathBuf,
    attributor: attribution::Attributor,
    missing: Vec<&'static str>,
    /// Every network namespace (`--collector.netns`), or only our own.
    netns: Option<netns::NetnsSampler>,
    /// Tunnel devices per namespace (0: our own, without the collector).
    tunnels: tunnels::TunnelCache,
    /// sock_diag cannot be opened here: the own namespace is read from
    /// `<procfs>/thread-self/net` ([`procfs_sockets`]).
    no_sock_diag: bool,
    /// What executables' paths and names prove ([`exe_names`]).
    executables: exe_names::Executables,
    /// The command lines read for the trail, on threads of their own: a
    /// process stuck in a file system that does not answer can block the
    /// read ([`process`]).
    cmdlines: std::sync::Mutex<Cmdlines>,
    /// How TCP ports were taken, from a BPF socket iterator ([`port_sharing`]).
    /// Shared with the walk's thread ([`Platform::port_sharing`]).
    port_walker: Arc<Mutex<port_sharing::PortWalker>>,
}

/// The command-line reads, and how long the collection they belong to
/// waits for them.
struct Cmdlines {
    looks: crate::looks::Looks<(u32, u64), Option<Vec<u8>>>,
    /// The deadline of the last collection.
    deadline: Instant,
    /// How long reads wait until the next collection: its deadline, or a
    /// short grace after the first read asked past it.
    until: Option<Instant>,
}

/// The wait a command line may take past the collection's deadline, once
/// per collection (the trail reads them after the collection).
const CMDLINE_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// Command-line reads running at once, at most.
const CMDLINE_WORKERS: usize = 2;

impl LinuxPlatform {
    pub fn new(procfs: PathBuf) -> LinuxPlatform {
        let missing = privileges::missing_capabilities(&procfs);
        let mut attributor = attribution::Attributor::new(procfs.clone());
        let host_pids = privileges::shows_host_pids(&procfs);
        attributor.set_sees_all(missing.is_empty() && host_pids);
        if missing.is_empty() && !host_pids {
            log::info!(
                "{} is not the host's pid namespace (no kernel threads visible): sockets with no visible holder stay \"unknown\" rather than kernel-held",
                procfs.display()
            );
        }
        LinuxPlatform {
            attributor,
            missing,
            netns: None,
            tunnels: tunnels::TunnelCache::default(),
            no_sock_diag: false,
            executables: exe_names::Executables::new(procfs.clone()),
            cmdlines: std::sync::Mutex::new(Cmdlines {
                looks: crate::looks::Looks::new("cmdline-read", CMDLINE_WORKERS, {
                    let procfs = procfs.clone();
                    move |&(pid, _): &(u32, u64)| process::read_cmdline(&procfs, pid)
                }),
                deadline: Instant::now(),
                until: None,
            }),
            port_walker: Arc::new(Mutex::new(port_sharing::PortWalker::new())),
            procfs,
        }
    }

    /// The platform with `options`; fails when a part of it cannot be
    /// started (the `--collector.netns` probe thread).
    pub fn with_options(
        procfs: PathBuf,
        options: &PlatformOptions,
    ) -> Result<LinuxPlatform, PlatformError> {
        let netns = if options.netns {
            let mut sampler = netns::NetnsSampler::new(netns::Paths::new(procfs.clone()))?;
            if let Some(workers) = options.netns_workers {
                sampler.set_workers(workers);
            }
            Some(sampler)
        } else {
            None
        };
        let mut p = LinuxPlatform::new(procfs);
        p.netns = netns;
        Ok(p)
    }

    /// Lists the command-line reads still running from earlier
    /// collections (a process stuck in a file system that does not answer),
    /// and sets the wait for this collection's reads.
    fn stuck_cmdlines(&mut self, deadline: Instant, skipped: &mut Vec<Skipped>) {
        let c = self.cmdlines.get_mut().unwrap_or_else(|p| p.into_inner());
        c.deadline = deadline;
        c.until = None;
        for u in c.looks.unanswered() {
            if let crate::looks::Unanswered::Running((pid, _), d) = u {
                skipped.push(Skipped::new(
                    Skipped::ATTRIBUTION,
                    format!("the command line of pid {pid}"),
                    format!(
                        "the read has not returned for {:.1} s (the process is stuck in a file system that does not answer?); not started again while it runs",
                        d.as_secs_f64()
                    ),
                ));
            }
        }
    }

    /// The owner cache, for tests.
    pub fn attributor(&self) -> &attribution::Attributor {
        &self.attributor
    }

    /// Of the kernel candidates, those whose sockets a second sample (of
    /// their own namespace) still shows, by inode: a holder that exited
    /// during the scan took its socket along. A namespace that cannot be
    /// sampled again leaves its candidates unconfirmed, and is said in
    /// `skipped`.
    fn still_present(
        &mut self,
        candidates: &[&Socket],
        deadline: Instant,
        skipped: &mut Vec<Skipped>,
    ) -> HashSet<u64> {
        let mut present = HashSet::new();
        for (ns, again) in resample(&mut self.netns, candidates, deadline) {
            match again {
                Ok(again) => present.extend(again),
                Err(e) => skipped.push(Skipped::new(
                    Skipped::KERNEL_CHECK,
                    format!("second sample of {}", netns_name(ns)),
                    e.to_string(),
                )),
            }
        }
        present
    }

    /// The UDP tunnel devices by (namespace, port), for the namespaces of
    /// `sockets`, from the per-namespace cache (see
    /// [`tunnels::TunnelCache`]); a namespace whose devices cannot be
    /// listed before `deadline` is said in `skipped`.
    fn tunnel_devices<'a>(
        &mut self,
        sockets: impl Iterator<Item = &'a Socket>,
        deadline: Instant,
        skipped: &mut Vec<Skipped>,
    ) -> HashMap<(u64, u16), String> {
        let mut wanted: BTreeMap<u64, Vec<u16>> = BTreeMap::new();
        for s in sockets.filter(|s| s.protocol == Protocol::Udp) {
            wanted.entry(s.netns).or_default().push(s.port);
        }
        let mut out = HashMap::new();
        let now = Instant::now();
        for (ns, ports) in wanted {
            let sampler = &mut self.netns;
            let found = self.tunnels.get(ns, &ports, now, || match sampler {
                Some(n) if ns != 0 => n.tunnel_ports(ns, deadline),
                _ => tunnels::udp_tunnel_ports(deadline),
            });
            match found {
                Ok(ports) => out.extend(ports.iter().map(|(port, dev)| ((ns, *port), dev.clone()))),
                Err(e) => skipped.push(Skipped::new(
                    Skipped::TUNNELS,
                    format!("tunnel devices of {}", netns_name(ns)),
                    e,
                )),
            }
        }
        out
    }
}

/// A second sample of just the ports of `sockets`, per namespace: of
/// their inodes, those it still shows, or why a namespace could not be
/// sampled again. A filtered dump, far cheaper than reading every fd of
/// every owner to look for a socket that is already closed.
fn resample(
    netns: &mut Option<netns::NetnsSampler>,
    sockets: &[&Socket],
    deadline: Instant,
) -> Vec<(u64, Result<HashSet<u64>, SampleError>)> {
    let wanted: HashSet<u64> = sockets.iter().map(|s| s.inode).collect();
    let mut per_netns: HashMap<u64, Intervals> = HashMap::new();
    for s in sockets {
        let intervals = per_netns.entry(s.netns).or_default();
        intervals.get_mut(s.protocol).push((s.port, s.port));
    }
    per_netns
        .into_iter()
        .map(|(ns, intervals)| {
            let filter = Filter {
                tcp: PortSet::from_intervals(intervals.tcp),
                udp: PortSet::from_intervals(intervals.udp),
            };
            let again = match netns {
                Some(n) if ns != 0 => n.resample(ns, &filter, deadline),
                _ => sock_diag::sample(&filter, deadline),
            };
            let present = again.map(|again| {
                again
                    .iter()
                    .map(|s| s.inode)
                    .filter(|i| wanted.contains(i))
                    .collect()
            });
            (ns, present)
        })
        .collect()
}

/// How a namespace is named in [`Skipped`] entries.
fn netns_name(ns: u64) -> String {
    if ns == 0 {
        "the exporter's network namespace".to_string()
    } else {
        format!("network namespace {ns}")
    }
}

impl Platform for LinuxPlatform {
    /// With `--collector.netns`, every namespace (those not read by the
    /// deadline are listed in [`Sample::skipped`]); otherwise the
    /// exporter's own, which must be read whole or the sample fails.
    fn sample(&mut self, filter: &Filter, deadline: Instant) -> Result<Sample, SampleError> {
        match &mut self.netns {
            Some(n) => {
                let sample = n.sample(filter, deadline)?;
                self.tunnels.retain(|ns| n.knows(ns));
                Ok(sample)
            }
            None => {
                let sockets = if self.no_sock_diag {
                    procfs_sockets::sample(&self.procfs, filter)?
                } else {
                    match sock_diag::sample(filter, deadline) {
                        Err(e) if procfs_sockets::sock_diag_unavailable(&e) => {
                            log::warn!(
                                "sock_diag is not available here ({e}); reading the socket tables under {}/thread-self/net instead, which costs a full read of every socket per scrape",
                                self.procfs.display()
                            );
                            self.no_sock_diag = true;
                            procfs_sockets::sample(&self.procfs, filter)?
                        }
                        other => other?,
                    }
                };
                Ok(Sample {
                    sockets,
                    namespaces: None,
                    skipped: Vec::new(),
                    count_only: Default::default(),
                })
            }
        }
    }

    fn samples_every_namespace(&self) -> bool {
        self.netns.is_some()
    }

    fn attribute(&mut self, sample: &Sample, deadline: Instant) -> Attribution {
        let sockets = &sample.sockets;
        // Sockets still unplaced after the known owners' cheap look are
        // sampled again before anyone searches for them: one closed since
        // the sample (a churning owner's) would otherwise cost a read of
        // every fd of every owner of its uid, and then a scan of /proc.
        let netns = &mut self.netns;
        let no_sock_diag = self.no_sock_diag;
        let mut still_open = |asked: &[&Socket]| {
            if no_sock_diag {
                return None;
            }
            let mut present = crate::platform::InodeSet::default();
            for (_, again) in resample(netns, asked, deadline) {
                present.extend(again.ok()?);
            }
            Some(present)
        };
        let mut pass = self.attributor.attribute_rechecking(
            sockets,
            &sample.count_only,
            deadline,
            &mut still_open,
        );
        let mut skipped = Vec::new();
        self.executables
            .judge(&mut pass.owners, deadline, &mut skipped);
        self.stuck_cmdlines(deadline, &mut skipped);
        let strict_by_inode: HashMap<u64, bool> = pass.candidates.iter().copied().collect();
        let mut candidates = Vec::new();
        let holders = sockets
            .iter()
            .enumerate()
            .map(|(index, s)| {
                if s.inode == 0 {
                    return None;
                }
                if let Some(o) = pass.owners.get(&s.inode) {
                    return Some(Holder::Process(o.clone()));
                }
                if let Some(&strict) = strict_by_inode.get(&s.inode) {
                    candidates.push(KernelCandidate { index, strict });
                }
                pass.kernel
                    .contains(&s.inode)
                    .then_some(Holder::Kernel { device: None })
            })
            .collect();
        // A closed listener or UDP socket leaves nothing behind (a TCP
        // connection may leave TIME_WAIT, which holds its port): it is
        // dropped, not reported as a listener of unknown owner.
        let closed = sockets
            .iter()
            .enumerate()
            .filter(|(_, s)| pass.closed.contains(&s.inode))
            .filter(|(_, s)| s.protocol == Protocol::Udp || s.is_listener())
            .map(|(index, _)| index)
            .collect();
        Attribution {
            holders,
            candidates,
            closed,
            skipped,
            stats: pass.stats,
        }
    }

    fn confirm_kernel(
        &mut self,
        sample: &Sample,
        mut attribution: Attribution,
        deadline: Instant,
    ) -> Attribution {
        let sockets = &sample.sockets;
        let is_kernel = |h: &Option<Holder>| matches!(h, Some(Holder::Kernel { .. }));
        if attribution.candidates.is_empty() && !attribution.holders.iter().any(is_kernel) {
            return attribution;
        }
        let candidates = std::mem::take(&mut attribution.candidates);
        let involved = sockets
            .iter()
            .zip(&attribution.holders)
            .filter(|(_, h)| is_kernel(h))
            .map(|(s, _)| s)
            .chain(candidates.iter().map(|c| &sockets[c.index]));
        let devices = self.tunnel_devices(involved, deadline, &mut attribution.skipped);
        let device_of = |s: &Socket| {
            (s.protocol == Protocol::Udp)
                .then(|| devices.get(&(s.netns, s.port)).cloned())
                .flatten()
        };
        if !candidates.is_empty() {
            let checked: Vec<&Socket> = candidates.iter().map(|c| &sockets[c.index]).collect();
            let present = self.still_present(&checked, deadline, &mut attribution.skipped);
            let confirmed: Vec<usize> = candidates
                .iter()
                .filter(|c| {
                    let s = &sockets[c.index];
                    present.contains(&s.inode) && (c.strict || device_of(s).is_some())
                })
                .map(|c| c.index)
                .collect();
            let inodes: Vec<u64> = confirmed.iter().map(|&i| sockets[i].inode).collect();
            self.attributor.confirm_kernel(&inodes);
            for i in confirmed {
                attribution.holders[i] = Some(Holder::Kernel { device: None });
            }
        }
        for (s, h) in sockets.iter().zip(attribution.holders.iter_mut()) {
            if let Some(Holder::Kernel { device }) = h {
                *device = device_of(s);
            }
        }
        attribution.stats.kernel = attribution.holders.iter().filter(|h| is_kernel(h)).count();
        attribution
    }

    fn ephemeral_ports(&self) -> Result<EphemeralPorts, String> {
        // One setting governs both protocols (and IPv6 too).
        let ports = sysctl::ephemeral_ports(&self.procfs).map_err(|e| e.to_string())?;
        Ok(EphemeralPorts::same(ports))
    }

    /// Walks on a thread of its own, beside what the collection does next
    /// (attribution: the walk took 11 ms of a 50 ms collection at 31,000
    /// sockets). The thread is started from the collection thread, which
    /// is in the exporter's own namespace (the netns sampler's threads
    /// enter others and come back), so it walks that namespace.
    fn port_sharing(&mut self) -> crate::platform::PortWalk {
        use crate::platform::PortWalk;
        use std::os::unix::fs::MetadataExt;
        let path = self.procfs.join("thread-self/ns/net");
        let netns = match std::fs::metadata(&path) {
            Ok(m) => m.ino(),
            Err(e) => return PortWalk::ready(Err(format!("cannot read {}: {e}", path.display()))),
        };
        let walker = self.port_walker.clone();
        let walk = move || {
            let started = Instant::now();
            let mut walker = walker.lock().unwrap_or_else(|p| p.into_inner());
            let walked = walker.walk(netns).map_err(|e| e.to_string());
            (walked, started.elapsed())
        };
        let inline = walk.clone();
        match std::thread::Builder::new()
            .name("port-walk".into())
            .spawn(walk)
        {
            Ok(thread) => PortWalk::later(move || {
                thread.join().unwrap_or_else(|_| {
                    (
                        Err("the port walk panicked".to_string()),
                        std::time::Duration::ZERO,
                    )
                })
            }),
            Err(e) => {
                log::debug!("no thread for the port walk ({e}), walking here");
                let (walked, took) = inline();
                PortWalk::later(move || (walked, took))
            }
        }
    }

    fn user_resolver(&self) -> UserResolver {
        Arc::new(users::lookup)
    }

    fn user_name_resolver(&self) -> Option<UserNameResolver> {
        Some(Arc::new(users::lookup_name))
    }

    fn process_details(&self, pid: u32) -> Option<crate::platform::ProcessDetails> {
        let mut c = self.cmdlines.lock().unwrap_or_else(|p| p.into_inner());
        Some(process::read_with(&self.procfs, pid, |start| {
            let key = (pid, start?);
            let deadline = c.deadline;
            let until = *c
                .until
                .get_or_insert_with(|| deadline.max(Instant::now() + CMDLINE_GRACE));
            c.looks.ask(&[key], until).remove(&key).flatten()
        }))
    }

    fn missing_privileges(&self) -> Vec<&'static str> {
        self.missing.clone()
    }
}

/// Process-wide setup before any thread starts: glibc gives each thread
/// that contends for the heap an arena of its own; for a small exporter
/// that is memory kept for nothing, and RSS that creeps up while the thread
/// pools warm. Two arenas are plenty.
///
/// Started as the BPF loader (by the exporter itself, see
/// [`port_sharing::serve_loader`]), it does that job and exits here.
pub fn init_process() {
    if std::env::var_os(port_sharing::LOADER_ENV).is_some() {
        std::process::exit(port_sharing::serve_loader());
    }
    port_sharing::enable_loader_process();
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator tunable; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Raises the soft open-file limit to the hard one, as Go programs do at
/// start: the default soft limit (1024 under systemd without
/// `LimitNOFILE=`) is there for programs that use `select(2)`, which this
/// one does not. Logged at debug; a refusal keeps the limit as it is.
pub fn raise_open_file_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let (Some(soft), Some(hard)) = (limit.current, limit.maximum) else {
        // Unlimited already, or a hard limit of "unlimited", which the
        // kernel refuses as a soft limit (above fs.nr_open): leave it.
        return;
    };
    if soft >= hard {
        return;
    }
    let raised = Rlimit {
        current: Some(hard),
        maximum: Some(hard),
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => {
            log::debug!("raised the soft open-file limit from {soft} to the hard limit {hard}")
        }
        Err(e) => log::debug!(
            "cannot raise the soft open-file limit from {soft} to the hard limit {hard}: {e}"
        ),
    }
}

/// The soft open-file limit, when there is one.
pub fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Completes on SIGTERM or SIGINT, naming which.
pub async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// The signal that asks for a configuration reload (SIGHUP).
pub struct ReloadSignals(Option<tokio::signal::unix::Signal>);

/// Starts listening for reload requests; call inside the runtime.
pub fn reload_signals() -> ReloadSignals {
    use tokio::signal::unix::{SignalKind, signal};
    ReloadSignals(signal(SignalKind::hangup()).ok())
}

impl ReloadSignals {
    /// Waits for the next request; `None` when none can come.
    pub async fn recv(&mut self) -> Option<&'static str> {
        match &mut self.0 {
            Some(s) => s.recv().await.map(|_| "SIGHUP"),
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_check_that_cannot_run_is_skipped_and_confirms_nothing() {
        // A kernel-held candidate whose second sample fails (here: the
        // deadline has passed) is not confirmed, and the failure is listed
        // instead of dropped.
        let mut p = LinuxPlatform::new(PathBuf::from(DEFAULT_PROCFS));
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        let filter = Filter {
            tcp: PortSet::default(),
            udp: PortSet::from_intervals(vec![(port, port)]),
        };
        let sample = p
            .sample(&filter, Instant::now() + std::time::Duration::from_secs(5))
            .unwrap();
        assert!(sample.skipped.is_empty());
        let s: Vec<&Socket> = sample.sockets.iter().collect();
        let mut skipped = Vec::new();
        let present = p.still_present(&s, Instant::now(), &mut skipped);
        assert!(present.is_empty());
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert_eq!(skipped[0].stage, Skipped::KERNEL_CHECK);
        assert!(skipped[0].reason.contains("deadline"), "{:?}", skipped[0]);
        // With time left the same check confirms it.
        let mut none = Vec::new();
        let present = p.still_present(
            &s,
            Instant::now() + std::time::Duration::from_secs(5),
            &mut none,
        );
        assert_eq!(present.len(), 1);
        assert!(none.is_empty());
        // Tunnel discovery past the deadline: skipped, not "no device".
        let mut skipped = Vec::new();
        let devices = p.tunnel_devices(s.iter().copied(), Instant::now(), &mut skipped);
        assert!(devices.is_empty());
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert_eq!(skipped[0].stage, Skipped::TUNNELS);
        drop(sock);
    }
}
