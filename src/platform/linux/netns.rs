//! Every network namespace on the host (`--collector.netns`). sock_diag
//! and `/proc/net` answer for the reader's own namespace only, so each
//! namespace is found and read on its own:
//!
//! - Discovery, every scrape: `<procfs>/<pid>/ns/net` of every process (its
//!   inode names the namespace; all pids per inode are kept, lowest first)
//!   and the nsfs mounts that hold namespaces no process is in
//!   (`/run/netns`, where `ip netns` names them, and `/run/docker/netns`).
//!   A namespace held only by an open fd is invisible. The host's namespace
//!   is pid 1's in `--path.procfs` (the exporter's own when pid 1's cannot
//!   be read, with a warning).
//! - Reading, least privilege first. With CAP_SYS_ADMIN (probed once, by
//!   `setns` into the exporter's own namespace), a helper thread enters each
//!   new namespace (`setns`, checking the inode with `fstat` first), makes a
//!   NETLINK_SOCK_DIAG socket and opens `net/sockstat{,6}` there, and comes
//!   back. Those fds keep answering for that namespace from any thread and
//!   are cached by inode; they pin the namespace, so the ones not found by a
//!   scrape's discovery are closed at once. Without CAP_SYS_ADMIN the
//!   fallback reads `<procfs>/<pid>/net/{tcp,tcp6,udp,udp6}` of a process in
//!   each namespace ([`procnet`]), checking before and after that the pid is
//!   still in that namespace; the kernel then formats every socket (no port
//!   filter), namespaces no process holds are not sampled (counted as
//!   unsampled), and other namespaces' ephemeral ranges are not read. The
//!   exporter's own namespace is always read through sock_diag.
//! - Cost: each dump walks the kernel's global socket tables, so empty
//!   namespaces are skipped on their `sockstat` counts (per protocol and
//!   family), and only the protocols that have ranges are dumped.
//! - Context, for namespaces that get series: the `ip netns` name, the
//!   container id and Kubernetes pod from a process's cgroup and
//!   `/var/log/pods` ([`containers`]), and the ephemeral port range from the
//!   namespace's own sysctls (opened inside it once, then re-read). The
//!   ranges of namespaces sampled without a socket in the sample's ports
//!   are read too, and their union reported, so that the next sample covers
//!   a namespace whose range differs from the host's.
//!
//! - Deadline: the host's namespace is read first and must be read whole;
//!   every other wait (the helper thread, each dump, each chunk of a
//!   `/proc/<pid>/net` table, the kernel-held check's second sample, the
//!   tunnel-device dump over a NETLINK_ROUTE socket kept per namespace)
//!   ends at the collection's deadline, and a namespace not read by then
//!   is listed in the sample's `skipped` and counted unsampled. A panic on
//!   the helper thread is caught there and reported the same way (error
//!   log); each batch gets a new helper.
//!
//! A pid that exits, or is reused in another namespace, between discovery
//! and `setns` makes the helper try the namespace's next pid or mount; a
//! namespace with none left is gone and simply not reported.

pub mod containers;
mod discovery;
mod pool;
pub mod procnet;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rustix::fs::OFlags;
use rustix::io::Errno;

use super::{sock_diag, sysctl, tunnels};
use crate::platform::{
    EphemeralPorts, Filter, Namespace, Namespaces, PlatformError, Sample, SampleError, Skipped,
    Socket,
};
use crate::ranges::{PortSet, Protocol};
pub use discovery::{DOCKER_DIR, Discovery, Found, NAMED_DIR, PODS_DIR, Paths};
pub use pool::DEFAULT_WORKERS;
use pool::*;
use procnet::SockCounts;

/// The exporter's own `/proc` (for `thread-self`, whatever `--path.procfs` is).
const SELF_PROC: &str = "/proc";

/// How namespaces other than the exporter's own are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A sock_diag socket made inside each namespace.
    Setns,
    /// `<procfs>/<pid>/net/*` of a process in each namespace.
    ProcNet,
}

/// Samples every network namespace on the host.
pub struct NetnsSampler {
    paths: Paths,
    mode: Mode,
    /// The exporter's own namespace.
    own: u64,
    /// The device of nsfs, to tell namespace files from stale mount points.
    nsfs_dev: u64,
    handles: HashMap<u64, Handle>,
    last: Namespaces,
    /// What the last sample's discovery found (where to enter each
    /// namespace again, for the kernel-held check and tunnel devices).
    last_found: BTreeMap<u64, Found>,
    buf: Vec<u8>,
    /// How many threads dump namespaces at once (the calling one included).
    workers: usize,
    warned_host: bool,
    warned_denied: bool,
    warned_unsampled: bool,
}

impl NetnsSampler {
    /// Probes whether `setns` works (CAP_SYS_ADMIN, and no seccomp or LSM
    /// rule against it) and logs which path is used and why. Fails when
    /// the probe's thread cannot be started.
    pub fn new(paths: Paths) -> Result<NetnsSampler, PlatformError> {
        let own_path = Path::new(SELF_PROC).join("thread-self/ns/net");
        let own_stat = rustix::fs::stat(&own_path);
        let (own, nsfs_dev) = own_stat.map_or((0, 0), |st| (st.st_ino, st.st_dev));
        let probe = std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("netns-probe".into())
                .spawn_scoped(s, || probe_setns(&own_path))
                .map(|probe| probe.join().unwrap_or(Err(Errno::AGAIN)))
        })
        .map_err(|source| PlatformError::Spawn {
            what: "--collector.netns setns probe",
            source,
        })?;
        let mode = match probe {
            Ok(()) => {
                log::info!(
                    "--collector.netns: reading every network namespace through a sock_diag socket made inside it (setns works: CAP_SYS_ADMIN)"
                );
                Mode::Setns
            }
            Err(e) => {
                log::warn!(
                    "--collector.netns: cannot enter other network namespaces ({}): reading {}/<pid>/net/{{tcp,tcp6,udp,udp6}} of a process in each instead, \
                     with no kernel filter (slower); namespaces no process is in are not sampled and other namespaces' ephemeral ranges are not read",
                    setns_refusal(e, cap_sys_admin_effective()),
                    paths.procfs.display()
                );
                Mode::ProcNet
            }
        };
        Ok(NetnsSampler::with_mode(paths, mode, own, nsfs_dev))
    }

    /// A sampler that uses `mode` (tests force the fallback with it).
    pub fn with_mode(paths: Paths, mode: Mode, own: u64, nsfs_dev: u64) -> NetnsSampler {
        NetnsSampler {
            paths,
            mode,
            own,
            nsfs_dev,
            handles: HashMap::new(),
            last: Namespaces::default(),
            last_found: BTreeMap::new(),
            buf: Vec::with_capacity(4096),
            workers: DEFAULT_WORKERS,
            warned_host: false,
            warned_denied: false,
            warned_unsampled: false,
        }
    }

    /// Dumps namespaces on `workers` threads at once (at least 1: the
    /// collector's own thread alone).
    pub fn set_workers(&mut self, workers: usize) {
        self.workers = workers.max(1);
    }

    /// The exporter's own namespace and the nsfs device.
    pub fn own(&self) -> (u64, u64) {
        (self.own, self.nsfs_dev)
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Namespaces with cached fds (for tests: none may outlive its namespace).
    pub fn cached(&self) -> usize {
        self.handles.len()
    }

    /// What the last sample covered.
    pub fn namespaces(&self) -> Namespaces {
        self.last.clone()
    }

    /// Discovers and samples every namespace, waiting no later than
    /// `deadline` (see [`NetnsSampler::sample_discovered`]).
    pub fn sample(&mut self, filter: &Filter, deadline: Instant) -> Result<Sample, SampleError> {
        let d = self.discover();
        self.sample_discovered(&d, filter, deadline)
    }

    /// Samples the namespaces of a discovery (tests call it with a
    /// discovery whose pids have exited since). The host's namespace goes
    /// first and must be read, or the sample fails (a dump not ended by
    /// `deadline` included). Every other namespace not read by `deadline`,
    /// or whose reading failed, is listed in [`Sample::skipped`] and counted
    /// in [`Namespaces::unsampled`]: its sockets are unknown, not none.
    pub fn sample_discovered(
        &mut self,
        d: &Discovery,
        filter: &Filter,
        deadline: Instant,
    ) -> Result<Sample, SampleError> {
        // Close what pins namespaces that are gone.
        self.handles.retain(|inode, _| d.found.contains_key(inode));
        self.last_found = d.found.clone();
        let mut unsampled = 0u32;
        let mut skipped: Vec<Skipped> = Vec::new();
        let name = |inode: u64| match d.found.get(&inode).and_then(|f| f.name.as_deref()) {
            Some(n) => format!("netns {inode} ({n})"),
            None => format!("netns {inode}"),
        };
        let mut gone: HashSet<u64> = HashSet::new();
        let mut failed: HashSet<u64> = HashSet::new();
        if !self.handles.contains_key(&self.own) {
            self.handles.insert(self.own, Handle::make_here()?);
        }
        // The host first, then the others in inode order.
        let order: Vec<&Found> = d
            .found
            .get(&d.host)
            .into_iter()
            .chain(d.found.values().filter(|f| f.inode != d.host))
            .collect();
        let mut sockets = Vec::new();
        let mut with_sockets: HashSet<u64> = HashSet::new();
        let mut made_handles = false;
        let mut deferred: Vec<u64> = Vec::new();
        for f in order {
            let host = f.inode == d.host;
            if !host && Instant::now() >= deadline {
                skipped.push(Skipped {
                    stage: "sample",
                    what: name(f.inode),
                    reason: "deadline passed before it was read".into(),
                });
                unsampled += 1;
                continue;
            }
            if !host && !made_handles && self.mode == Mode::Setns {
                // Enter every namespace without a socket yet, in one batch.
                made_handles = true;
                self.make_handles(d, deadline, &mut gone, &mut failed, &mut skipped);
            }
            if gone.contains(&f.inode) {
                continue;
            }
            if failed.contains(&f.inode) {
                unsampled += 1; // listed by make_handles
                continue;
            }
            let start = sockets.len();
            if !host && self.handles.contains_key(&f.inode) {
                // Dumped below, on the pool, with the others.
                deferred.push(f.inode);
                continue;
            }
            if let Some(h) = self.handles.get_mut(&f.inode) {
                // Only the host's comes here (the others went to the pool),
                // and it must be read whole.
                let dumps = h.dumps(&mut self.buf);
                let r = sock_diag::dump(&h.diag, filter, dumps, deadline, &mut h.seq, &mut sockets);
                if let Err(e) = r {
                    self.handles.remove(&f.inode);
                    return Err(e);
                }
            } else if self.mode == Mode::ProcNet {
                match read_proc_net(
                    &self.paths.procfs,
                    f,
                    filter,
                    self.nsfs_dev,
                    deadline,
                    &mut sockets,
                ) {
                    ProcNetRead::Read => {}
                    ProcNetRead::Gone => {
                        sockets.truncate(start);
                        continue;
                    }
                    ProcNetRead::Deadline(what) => {
                        sockets.truncate(start);
                        skipped.push(Skipped {
                            stage: "sample",
                            what: format!("{}: {what}", name(f.inode)),
                            reason: "deadline passed before it was read to the end".into(),
                        });
                        unsampled += 1;
                        continue;
                    }
                    ProcNetRead::Unreadable(why) => {
                        sockets.truncate(start);
                        log::debug!("--collector.netns: network namespace {}: {why}", f.inode);
                        unsampled += 1;
                        continue;
                    }
                }
            } else {
                unsampled += 1; // the helper could not enter it (logged at debug)
                continue;
            }
            for s in &mut sockets[start..] {
                s.netns = f.inode;
            }
            if sockets.len() > start {
                with_sockets.insert(f.inode);
            }
        }
        // The other namespaces' dumps, on a small bounded pool: each walks
        // the kernel's socket tables, so with many namespaces they are most
        // of a scrape's time.
        let mut handles: HashMap<u64, &mut Handle> = self
            .handles
            .iter_mut()
            .map(|(inode, h)| (*inode, h))
            .collect();
        let jobs: Vec<(u64, &mut Handle)> = deferred
            .iter()
            .filter_map(|inode| Some((*inode, handles.remove(inode)?)))
            .collect();
        let outcomes = dump_on_pool(jobs, filter, deadline, self.workers);
        for (inode, outcome) in outcomes {
            match outcome {
                Dumped::Read(mut found) => {
                    for s in &mut found {
                        s.netns = inode;
                    }
                    if !found.is_empty() {
                        with_sockets.insert(inode);
                    }
                    sockets.append(&mut found);
                }
                Dumped::NotReached => {
                    skipped.push(Skipped {
                        stage: "sample",
                        what: name(inode),
                        reason: "deadline passed before it was read".into(),
                    });
                    unsampled += 1;
                }
                Dumped::Failed(e) => {
                    self.handles.remove(&inode);
                    if !matches!(e, SampleError::Deadline { .. }) {
                        log::warn!("--collector.netns: network namespace {inode}: {e}");
                    }
                    skipped.push(Skipped {
                        stage: "sample",
                        what: name(inode),
                        reason: e.to_string(),
                    });
                    unsampled += 1;
                }
            }
        }
        if unsampled > 0 && !self.warned_unsampled {
            self.warned_unsampled = true;
            log::warn!(
                "--collector.netns: {unsampled} network namespaces could not be sampled (see portrange_netns_unsampled; --log.level=debug says why)"
            );
        }
        self.last = self.describe(d, &with_sockets, unsampled, deadline, &mut skipped);
        Ok(Sample {
            sockets,
            namespaces: Some(self.last.clone()),
            skipped,
            count_only: Default::default(),
        })
    }

    /// Makes the sock_diag sockets of the namespaces of `d` that have none,
    /// on the helper thread. Namespaces whose pids and mounts are all gone
    /// go to `gone`; those it could not enter, to `failed` (listed in
    /// `skipped` when the deadline or a helper failure is why).
    fn make_handles(
        &mut self,
        d: &Discovery,
        deadline: Instant,
        gone: &mut HashSet<u64>,
        failed: &mut HashSet<u64>,
        skipped: &mut Vec<Skipped>,
    ) {
        let targets: Vec<(u64, Vec<PathBuf>)> = d
            .found
            .values()
            .filter(|f| !self.handles.contains_key(&f.inode))
            .map(|f| (f.inode, sources(&self.paths.procfs, f)))
            .collect();
        if targets.is_empty() {
            return;
        }
        for (inode, made) in visit(&targets, deadline, |_| Handle::make_here()) {
            let what = || match d.found.get(&inode).and_then(|f| f.name.as_deref()) {
                Some(n) => format!("netns {inode} ({n})"),
                None => format!("netns {inode}"),
            };
            match made {
                Ok(Ok(h)) => {
                    self.handles.insert(inode, h);
                }
                Ok(Err(e)) => {
                    log::warn!("--collector.netns: network namespace {inode}: {e}");
                    failed.insert(inode);
                    skipped.push(Skipped {
                        stage: "sample",
                        what: what(),
                        reason: e.to_string(),
                    });
                }
                Err(VisitError::Gone) => {
                    gone.insert(inode);
                }
                Err(e @ (VisitError::Deadline | VisitError::HelperFailed(_))) => {
                    if matches!(e, VisitError::HelperFailed(_)) {
                        log::error!(
                            "--collector.netns: network namespace {inode}: {e}; it is reported unsampled, and the next collection starts a new helper"
                        );
                    }
                    failed.insert(inode);
                    skipped.push(Skipped {
                        stage: "sample",
                        what: what(),
                        reason: e.to_string(),
                    });
                }
                Err(e) => {
                    log::debug!("--collector.netns: cannot enter network namespace {inode}: {e}");
                    failed.insert(inode);
                }
            }
        }
    }

    /// The host's namespace and those with sockets, with their context.
    fn describe(
        &mut self,
        d: &Discovery,
        with_sockets: &HashSet<u64>,
        unsampled: u32,
        deadline: Instant,
        skipped: &mut Vec<Skipped>,
    ) -> Namespaces {
        let listed: Vec<&Found> = d
            .found
            .values()
            .filter(|f| f.inode == d.host || with_sockets.contains(&f.inode))
            .collect();
        // Sysctls for every namespace with a socket of ours (those that
        // get series, and the others, whose dynamic ranges the next sample
        // must cover), opened inside once.
        let need: Vec<(u64, Vec<PathBuf>)> = d
            .found
            .values()
            .filter(|f| {
                self.handles
                    .get(&f.inode)
                    .is_some_and(|h| h.sysctls.is_none())
            })
            .map(|f| (f.inode, sources(&self.paths.procfs, f)))
            .collect();
        if let Some(h) = self.handles.get_mut(&self.own)
            && h.sysctls.is_none()
            && need.iter().any(|(i, _)| *i == self.own)
        {
            h.sysctls = open_sysctls_here();
        }
        let others: Vec<(u64, Vec<PathBuf>)> =
            need.into_iter().filter(|(i, _)| *i != self.own).collect();
        if self.mode == Mode::Setns && !others.is_empty() {
            for (i, r) in visit(&others, deadline, |_| open_sysctls_here()) {
                match (r, self.handles.get_mut(&i)) {
                    (Ok(s), Some(h)) => h.sysctls = s,
                    (Err(e @ (VisitError::Deadline | VisitError::HelperFailed(_))), _) => {
                        if matches!(e, VisitError::HelperFailed(_)) {
                            log::error!("--collector.netns: network namespace {i}: {e}");
                        }
                        skipped.push(Skipped {
                            stage: "sample",
                            what: format!("netns {i}: ephemeral port range"),
                            reason: e.to_string(),
                        });
                    }
                    _ => {}
                }
            }
        }
        let mut pods: Option<HashMap<String, containers::Pod>> = None;
        let mut list = Vec::with_capacity(listed.len());
        for f in listed {
            let mut ns = Namespace {
                id: f.inode,
                host: f.inode == d.host,
                name: f.name.clone().unwrap_or_default(),
                ..Namespace::default()
            };
            ns.ephemeral = self
                .handles
                .get(&f.inode)
                .and_then(|h| h.ephemeral(&mut self.buf));
            // The lowest pids are the longest-lived (a pod's pause process):
            // the first few decide, so the labels stay put.
            let cg = f
                .pids
                .iter()
                .take(4)
                .filter_map(|p| {
                    std::fs::read_to_string(self.paths.procfs.join(format!("{p}/cgroup"))).ok()
                })
                .map(|t| containers::parse_cgroup(&t))
                .find(|c| c.container.is_some() || c.pod_uid.is_some())
                .unwrap_or_default();
            ns.container = cg.container.unwrap_or_default();
            if let Some(uid) = cg.pod_uid {
                let pods = pods.get_or_insert_with(|| read_pods(&self.paths.pods));
                if let Some(p) = pods.get(&uid) {
                    ns.pod = p.name.clone();
                    ns.pod_namespace = p.namespace.clone();
                }
            }
            list.push(ns);
        }
        list.sort_by_key(|n| (!n.host, n.id));
        let mut ephemeral_unlisted = EphemeralPorts::default();
        for f in d.found.values() {
            if f.inode == d.host || with_sockets.contains(&f.inode) {
                continue;
            }
            let Some(ports) = self
                .handles
                .get(&f.inode)
                .and_then(|h| h.ephemeral(&mut self.buf))
            else {
                continue;
            };
            for p in [Protocol::Tcp, Protocol::Udp] {
                let u = ephemeral_unlisted.get_mut(p);
                *u = PortSet::union([&*u, ports.get(p)]);
            }
        }
        Namespaces {
            list,
            unsampled,
            ephemeral_unlisted,
        }
    }

    /// Samples one namespace again (the kernel-held candidates' check),
    /// waiting no later than `deadline`: through its cached sock_diag
    /// socket, or in the fallback its `/proc/<pid>/net` tables. Fails when
    /// neither can be read (never an empty "nothing there").
    pub fn resample(
        &mut self,
        inode: u64,
        filter: &Filter,
        deadline: Instant,
    ) -> Result<Vec<Socket>, SampleError> {
        let mut out = Vec::new();
        if let Some(h) = self.handles.get_mut(&inode) {
            sock_diag::dump(
                &h.diag,
                filter,
                sock_diag::Dumps::ALL,
                deadline,
                &mut h.seq,
                &mut out,
            )?;
        } else {
            let unreadable = |why: String| SampleError::Open {
                what: "the network namespace's socket tables",
                source: std::io::Error::other(format!("network namespace {inode}: {why}")),
            };
            let f = self
                .last_found
                .get(&inode)
                .ok_or_else(|| unreadable("not found by the last discovery".into()))?;
            match read_proc_net(
                &self.paths.procfs,
                f,
                filter,
                self.nsfs_dev,
                deadline,
                &mut out,
            ) {
                ProcNetRead::Read => {}
                ProcNetRead::Gone => return Err(unreadable("no process is left in it".into())),
                ProcNetRead::Deadline(what) => {
                    return Err(SampleError::Deadline {
                        dump: format!("netns {inode} {what}"),
                    });
                }
                ProcNetRead::Unreadable(why) => return Err(unreadable(why)),
            }
        }
        for s in &mut out {
            s.netns = inode;
        }
        Ok(out)
    }

    /// The UDP tunnel devices of a namespace, by port, waiting no later
    /// than `deadline`: one link dump over a NETLINK_ROUTE socket made
    /// inside the namespace once (entering it with the sources of the last
    /// discovery) and kept with its other fds.
    pub fn tunnel_ports(
        &mut self,
        inode: u64,
        deadline: Instant,
    ) -> Result<HashMap<u16, String>, String> {
        if inode == self.own {
            return tunnels::udp_tunnel_ports(deadline);
        }
        if self.mode != Mode::Setns {
            return Err("cannot enter the namespace (setns is refused)".into());
        }
        let has_route = self
            .handles
            .get(&inode)
            .ok_or("the namespace was not sampled")?
            .route
            .is_some();
        if !has_route {
            let f = self.last_found.get(&inode).ok_or("the namespace is gone")?;
            let targets = [(inode, sources(&self.paths.procfs, f))];
            let fd = match visit(&targets, deadline, |_| tunnels::open()).pop() {
                Some((_, Ok(r))) => r?,
                Some((_, Err(e))) => {
                    if matches!(e, VisitError::HelperFailed(_)) {
                        log::error!("--collector.netns: network namespace {inode}: {e}");
                    }
                    return Err(e.to_string());
                }
                None => return Err("the helper thread gave no answer".into()),
            };
            if let Some(h) = self.handles.get_mut(&inode) {
                h.route = Some(fd);
            }
        }
        let h = self
            .handles
            .get_mut(&inode)
            .ok_or("the namespace was not sampled")?;
        h.route_seq = h.route_seq.wrapping_add(1);
        let fd = h.route.as_ref().ok_or("no NETLINK_ROUTE socket")?;
        tunnels::dump_ports(fd, h.route_seq, deadline)
    }

    /// Whether the last sample read namespace `inode` (for caches keyed by
    /// namespace).
    pub fn knows(&self, inode: u64) -> bool {
        self.last_found.contains_key(&inode)
    }
}

fn read_pods(dir: &Path) -> HashMap<String, containers::Pod> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return HashMap::new();
    };
    let names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    containers::pods_by_uid(names.iter().map(String::as_str))
}

enum ProcNetRead {
    Read,
    /// No process of the namespace is left.
    Gone,
    Unreadable(String),
    /// The deadline passed before this (a table's path, or "socket
    /// tables") was read to the end.
    Deadline(String),
}

/// Reads `file` to its end into `buf` in chunks, giving up when `deadline`
/// passes between two of them: `Ok(false)`. The kernel formats a socket
/// table as it is read, so a namespace with many sockets is read in many
/// small reads, and the deadline bounds the whole.
fn read_until(
    file: &mut std::fs::File,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> std::io::Result<bool> {
    use std::io::Read;
    buf.clear();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if Instant::now() >= deadline {
            return Ok(false);
        }
        match file.read(&mut chunk) {
            Ok(0) => return Ok(true),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The fallback: reads the socket tables of the first pid still in the
/// namespace, checking its `ns/net` before opening them and after, and
/// giving up when `deadline` passes.
fn read_proc_net(
    procfs: &Path,
    f: &Found,
    filter: &Filter,
    nsfs_dev: u64,
    deadline: Instant,
    out: &mut Vec<Socket>,
) -> ProcNetRead {
    let in_ns = |pid: u32| {
        rustix::fs::stat(procfs.join(format!("{pid}/ns/net")))
            .is_ok_and(|st| st.st_ino == f.inode && st.st_dev == nsfs_dev)
    };
    let mut why = None;
    let mut buf = Vec::new();
    'pids: for &pid in &f.pids {
        if Instant::now() >= deadline {
            return ProcNetRead::Deadline("socket tables".into());
        }
        if !in_ns(pid) {
            continue;
        }
        let net = procfs.join(format!("{pid}/net"));
        let mut counts = SockCounts::default();
        let mut counted = true;
        for name in ["sockstat", "sockstat6"] {
            match std::fs::read(net.join(name)) {
                Ok(b) => counted &= procnet::add_sockstat(&b, &mut counts),
                Err(_) => counted = false,
            }
        }
        let mut files = Vec::new();
        for protocol in Protocol::ALL {
            let ports = filter.ports(protocol);
            if ports.is_empty() {
                continue;
            }
            for v6 in [false, true] {
                if counted && !counts.may_hold(protocol, v6) {
                    continue;
                }
                let name = format!("{protocol}{}", if v6 { "6" } else { "" });
                match std::fs::File::open(net.join(&name)) {
                    Ok(file) => files.push((file, protocol, v6, name)),
                    // No IPv6 in this kernel: no IPv6 sockets either.
                    Err(e) if v6 && e.kind() == std::io::ErrorKind::NotFound && in_ns(pid) => {}
                    Err(e) => {
                        why = Some(format!("{}: {e}", net.join(&name).display()));
                        continue 'pids;
                    }
                }
            }
        }
        if !in_ns(pid) {
            continue; // exited or moved while the files were opened
        }
        let start = out.len();
        for (mut file, protocol, v6, name) in files {
            match read_until(&mut file, &mut buf, deadline) {
                Ok(true) => {}
                Ok(false) => {
                    out.truncate(start);
                    return ProcNetRead::Deadline(net.join(&name).display().to_string());
                }
                Err(e) => {
                    out.truncate(start);
                    why = Some(format!("{}: {e}", net.join(&name).display()));
                    continue 'pids;
                }
            }
            if let Err(e) = procnet::decode_table(&buf, protocol, v6, filter.ports(protocol), out) {
                out.truncate(start);
                return ProcNetRead::Unreadable(format!("{}: {e}", net.join(&name).display()));
            }
        }
        return ProcNetRead::Read;
    }
    match why {
        Some(w) => ProcNetRead::Unreadable(w),
        None if f.pids.is_empty() => ProcNetRead::Unreadable("no process is in it to read".into()),
        None => ProcNetRead::Gone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A named namespace (`ip netns add`), deleted on drop; `None` (after
    /// saying SKIPPED) when not root.
    struct NamedNs(String);

    impl NamedNs {
        fn add(test: &str) -> Option<NamedNs> {
            let name = format!("prx-{}-{test}", std::process::id());
            let ok = std::process::Command::new("ip")
                .args(["netns", "add", &name])
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("SKIPPED {test}: needs root for `ip netns add`");
                return None;
            }
            Some(NamedNs(name))
        }

        fn path(&self) -> PathBuf {
            Path::new(NAMED_DIR).join(&self.0)
        }

        fn inode(&self) -> u64 {
            rustix::fs::stat(self.path()).unwrap().st_ino
        }
    }

    impl Drop for NamedNs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.0])
                .status();
        }
    }

    #[test]
    fn setns_refusal_names_what_refused_it() {
        let with = setns_refusal(Errno::PERM, Some(true));
        assert!(
            with.contains("seccomp") && with.contains("RestrictNamespaces="),
            "{with}"
        );
        assert!(!with.contains("needs CAP_SYS_ADMIN"), "{with}");
        let without = setns_refusal(Errno::PERM, Some(false));
        assert!(without.contains("needs CAP_SYS_ADMIN"), "{without}");
        assert!(!without.contains("seccomp"), "{without}");
        assert!(setns_refusal(Errno::PERM, None).contains("RestrictNamespaces="));
    }

    #[test]
    fn a_seccomp_filter_against_setns_is_named() {
        // What systemd's RestrictNamespaces= does: a seccomp filter that
        // fails setns with EPERM. Installed on a thread of its own (a
        // filter binds the thread that installs it and its children).
        std::thread::spawn(|| {
            if cap_sys_admin_effective() != Some(true) {
                eprintln!("SKIPPED a_seccomp_filter_against_setns_is_named: needs CAP_SYS_ADMIN");
                return;
            }
            let own = Path::new(SELF_PROC).join("thread-self/ns/net");
            assert_eq!(probe_setns(&own), Ok(()), "setns works before the filter");
            // BPF: load the syscall number; setns -> ERRNO(EPERM), else ALLOW.
            let f = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
            let prog = [
                f(0x20, 0, 0, 0),                                // ld [0] (nr)
                f(0x15, 0, 1, libc::SYS_setns as u32),           // jeq setns
                f(0x06, 0, 0, 0x0005_0000 | libc::EPERM as u32), // ret ERRNO(EPERM)
                f(0x06, 0, 0, 0x7fff_0000),                      // ret ALLOW
            ];
            let fprog = libc::sock_fprog {
                len: prog.len() as u16,
                filter: prog.as_ptr() as *mut libc::sock_filter,
            };
            // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes no pointers;
            // PR_SET_SECCOMP reads `fprog` and the filter it points to,
            // which outlive the call; both affect only this thread.
            unsafe {
                assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
                assert_eq!(
                    libc::prctl(libc::PR_SET_SECCOMP, 2, &fprog as *const libc::sock_fprog),
                    0,
                    "{}",
                    std::io::Error::last_os_error()
                );
            }
            let e = probe_setns(&own).unwrap_err();
            assert_eq!(e, Errno::PERM);
            let msg = setns_refusal(e, cap_sys_admin_effective());
            assert!(
                msg.contains("a seccomp filter or LSM policy refused it"),
                "{msg}"
            );
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_panic_in_the_helper_is_reported_and_the_others_are_visited() {
        let Some(ns) = NamedNs::add("panic") else {
            return;
        };
        let own = rustix::fs::stat("/proc/thread-self/ns/net").unwrap().st_ino;
        let other = ns.inode();
        let targets = vec![
            (own, vec![PathBuf::from("/proc/self/ns/net")]),
            (other, vec![ns.path()]),
        ];
        let got: HashMap<u64, Result<u64, VisitError>> = visit(
            &targets,
            Instant::now() + Duration::from_secs(10),
            move |inode| {
                assert_ne!(inode, own, "boom in {inode}");
                // Inside the namespace: its own inode.
                rustix::fs::stat("/proc/thread-self/ns/net").unwrap().st_ino
            },
        )
        .into_iter()
        .collect();
        match &got[&own] {
            Err(VisitError::HelperFailed(m)) => {
                assert!(m.contains("panicked") && m.contains("boom"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(got[&other], Ok(other), "the helper went on after the panic");
    }

    #[test]
    fn a_namespace_read_past_the_deadline_is_skipped_not_empty() {
        // The fallback reads <procfs>/<pid>/net/udp of a process in the
        // namespace. Here that table is a FIFO that never ends (a
        // namespace with more sockets than the budget can format): the
        // sample must come back at the deadline, with the host's sockets
        // and the namespace listed as skipped and unsampled.
        let Some(ns) = NamedNs::add("deadline") else {
            return;
        };
        let dir = std::env::temp_dir().join(format!("prx-procfs-{}", std::process::id()));
        let pid = 4_000_000u32;
        std::fs::create_dir_all(dir.join(format!("{pid}/ns"))).unwrap();
        std::fs::create_dir_all(dir.join(format!("{pid}/net"))).unwrap();
        std::os::unix::fs::symlink(ns.path(), dir.join(format!("{pid}/ns/net"))).unwrap();
        let fifo = dir.join(format!("{pid}/net/udp"));
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
            let _ = w.write_all(b"   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n");
            for _ in 0..1000 {
                std::thread::sleep(Duration::from_millis(10));
                if w.write_all(b"\n").is_err() {
                    return;
                }
            }
        });
        let st = rustix::fs::stat("/proc/thread-self/ns/net").unwrap();
        let paths = Paths {
            procfs: dir.clone(),
            mounts: vec![],
            pods: PathBuf::from("/nonexistent"),
        };
        let mut s = NetnsSampler::with_mode(paths, Mode::ProcNet, st.st_ino, st.st_dev);
        let mut d = Discovery {
            host: st.st_ino,
            ..Discovery::default()
        };
        d.found.insert(
            st.st_ino,
            Found {
                inode: st.st_ino,
                pids: vec![std::process::id()],
                ..Found::default()
            },
        );
        d.found.insert(
            ns.inode(),
            Found {
                inode: ns.inode(),
                pids: vec![pid],
                ..Found::default()
            },
        );
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        let filter = Filter {
            tcp: PortSet::default(),
            udp: PortSet::from_intervals(vec![(port, port)]),
        };
        let budget = Duration::from_millis(300);
        let t = Instant::now();
        let got = s.sample_discovered(&d, &filter, t + budget).unwrap();
        let took = t.elapsed();
        assert!(took < budget + Duration::from_millis(500), "took {took:?}");
        assert!(
            got.sockets
                .iter()
                .any(|x| x.port == port && x.netns == st.st_ino)
        );
        let skipped: Vec<&Skipped> = got
            .skipped
            .iter()
            .filter(|k| k.what.contains(&format!("netns {}", ns.inode())))
            .collect();
        assert_eq!(skipped.len(), 1, "{:?}", got.skipped);
        assert_eq!(skipped[0].stage, "sample");
        assert!(skipped[0].reason.contains("deadline"), "{:?}", skipped[0]);
        assert!(got.namespaces.unwrap().unsampled >= 1);
        writer.join().unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn pids_are_digits() {
        assert_eq!(super::super::proc_number(b"42"), Some(42));
        assert_eq!(super::super::proc_number(b"self"), None);
        assert_eq!(super::super::proc_number(b""), None);
        assert_eq!(super::super::proc_number(b"99999999999"), None);
    }

    #[test]
    fn sources_try_pids_then_mounts() {
        let f = Found {
            inode: 7,
            pids: vec![3, 9],
            mounts: vec![PathBuf::from("/run/netns/a")],
            name: Some("a".into()),
        };
        assert_eq!(
            sources(Path::new("/proc"), &f),
            [
                PathBuf::from("/proc/3/ns/net"),
                PathBuf::from("/proc/9/ns/net"),
                PathBuf::from("/run/netns/a")
            ]
        );
    }

    #[test]
    fn entering_a_vanished_or_reused_source_is_gone_not_an_error() {
        // No such files: gone.
        assert_eq!(
            enter(1, &[PathBuf::from("/nonexistent/ns/net")]),
            Err(VisitError::Gone)
        );
        // A file that opens but is not the namespace asked for (a pid
        // reused in another namespace looks like this): skipped, gone.
        let own = rustix::fs::stat("/proc/thread-self/ns/net").unwrap().st_ino;
        assert_eq!(
            enter(own + 1, &[PathBuf::from("/proc/self/ns/net")]),
            Err(VisitError::Gone)
        );
    }

    #[test]
    fn own_namespace_is_found_and_sampled_unprivileged() {
        // Works as any user: the exporter's own namespace needs no setns.
        let paths = Paths {
            procfs: PathBuf::from("/proc"),
            mounts: vec![],
            pods: PathBuf::from("/nonexistent"),
        };
        let st = rustix::fs::stat("/proc/thread-self/ns/net").unwrap();
        let mut s = NetnsSampler::with_mode(paths, Mode::ProcNet, st.st_ino, st.st_dev);
        assert!(s.discover().found.contains_key(&st.st_ino));
        // Sample the own namespace only (the machine may have others).
        let mut d = Discovery {
            host: st.st_ino,
            ..Discovery::default()
        };
        d.found.insert(
            st.st_ino,
            Found {
                inode: st.st_ino,
                pids: vec![std::process::id()],
                ..Found::default()
            },
        );
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        let filter = Filter {
            tcp: PortSet::default(),
            udp: PortSet::from_intervals(vec![(port, port)]),
        };
        let got = s
            .sample_discovered(&d, &filter, Instant::now() + Duration::from_secs(5))
            .unwrap()
            .sockets;
        let mine: Vec<_> = got
            .iter()
            .filter(|x| x.netns == st.st_ino && x.port == port)
            .collect();
        assert_eq!(mine.len(), 1, "{got:?}");
        let ns = s.namespaces();
        assert!(ns.list.iter().any(|n| n.id == st.st_ino));
        assert_eq!(ns.list.iter().filter(|n| n.host).count(), 1);
    }
}
