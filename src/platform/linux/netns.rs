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
//!   namespace's own sysctls (opened inside it once, then re-read).
//!
//! A pid that exits, or is reused in another namespace, between discovery
//! and `setns` makes the helper try the namespace's next pid or mount; a
//! namespace with none left is gone and simply not reported.

pub mod containers;
pub mod procnet;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{AtFlags, OFlags};
use rustix::io::Errno;

use super::{netlink, sysctl, tunnels};
use crate::platform::{
    EphemeralPorts, Filter, Namespace, Namespaces, PlatformError, SampleError, Socket,
};
use crate::ranges::{PortSet, Protocol};
use procnet::SockCounts;

/// Where `ip netns` keeps named namespaces.
pub const NAMED_DIR: &str = "/run/netns";
/// Where Docker keeps its sandboxes' namespaces.
pub const DOCKER_DIR: &str = "/run/docker/netns";
/// Where the kubelet keeps one log directory per pod.
pub const PODS_DIR: &str = "/var/log/pods";
/// The exporter's own `/proc` (for `thread-self`, whatever `--path.procfs` is).
const SELF_PROC: &str = "/proc";

/// Where namespaces and their names are found.
#[derive(Clone, Debug)]
pub struct Paths {
    pub procfs: PathBuf,
    /// Directories of nsfs mounts, each with whether its file names are the
    /// namespaces' names (`/run/netns`).
    pub mounts: Vec<(PathBuf, bool)>,
    /// The kubelet's pod log directories.
    pub pods: PathBuf,
}

impl Paths {
    pub fn new(procfs: PathBuf) -> Paths {
        Paths {
            procfs,
            mounts: vec![
                (PathBuf::from(NAMED_DIR), true),
                (PathBuf::from(DOCKER_DIR), false),
            ],
            pods: PathBuf::from(PODS_DIR),
        }
    }
}

/// How namespaces other than the exporter's own are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A sock_diag socket made inside each namespace.
    Setns,
    /// `<procfs>/<pid>/net/*` of a process in each namespace.
    ProcNet,
}

/// One namespace found by discovery.
#[derive(Clone, Debug, Default)]
pub struct Found {
    pub inode: u64,
    /// Processes in it, lowest pid first.
    pub pids: Vec<u32>,
    /// nsfs mounts of it.
    pub mounts: Vec<PathBuf>,
    /// Its `ip netns` name (the first in name order when it has several).
    pub name: Option<String>,
}

/// What one discovery found.
#[derive(Clone, Debug, Default)]
pub struct Discovery {
    pub found: BTreeMap<u64, Found>,
    /// The host's namespace.
    pub host: u64,
    /// Processes whose namespace could not be read for lack of privilege.
    pub denied: usize,
}

/// A namespace's cached fds.
struct Handle {
    diag: OwnedFd,
    seq: u32,
    sockstat: Option<OwnedFd>,
    sockstat6: Option<OwnedFd>,
    /// `ip_local_port_range` and `ip_local_reserved_ports`, opened inside
    /// once the namespace has series.
    sysctls: Option<(OwnedFd, OwnedFd)>,
}

impl Handle {
    /// Makes the fds in the calling thread's namespace.
    fn make_here() -> Result<Handle, SampleError> {
        let diag = netlink::open()?;
        let open = |name: &str| open_ro(&Path::new(SELF_PROC).join("thread-self/net").join(name));
        Ok(Handle {
            diag,
            seq: 0,
            sockstat: open("sockstat").ok(),
            sockstat6: open("sockstat6").ok(),
            sysctls: None,
        })
    }

    /// The socket counts, when the sockstat files read well.
    fn counts(&self, buf: &mut Vec<u8>) -> Option<SockCounts> {
        let mut c = SockCounts::default();
        for fd in [&self.sockstat, &self.sockstat6] {
            read_fd(fd.as_ref()?, buf).ok()?;
            if !procnet::add_sockstat(buf, &mut c) {
                return None;
            }
        }
        Some(c)
    }

    fn ephemeral(&self, buf: &mut Vec<u8>) -> Option<EphemeralPorts> {
        let (range, reserved) = self.sysctls.as_ref()?;
        read_fd(range, buf).ok()?;
        let range = sysctl::parse_port_range(&String::from_utf8_lossy(buf)).ok()?;
        read_fd(reserved, buf).ok()?;
        let reserved = PortSet::parse_kernel_list(&String::from_utf8_lossy(buf)).ok()?;
        let ports = range.difference(&reserved);
        Some(EphemeralPorts::same(ports))
    }
}

/// Opens the calling thread's namespace's ephemeral-port sysctls.
fn open_sysctls_here() -> Option<(OwnedFd, OwnedFd)> {
    let dir = Path::new(SELF_PROC).join("sys/net/ipv4");
    Some((
        open_ro(&dir.join("ip_local_port_range")).ok()?,
        open_ro(&dir.join("ip_local_reserved_ports")).ok()?,
    ))
}

fn open_ro(path: &Path) -> rustix::io::Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
}

/// Reads a whole proc file from offset 0 (a seq_file regenerates it).
fn read_fd(fd: &OwnedFd, buf: &mut Vec<u8>) -> rustix::io::Result<()> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = rustix::io::pread(fd, &mut chunk, buf.len() as u64)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 1 << 20 {
            return Err(Errno::FBIG);
        }
    }
}

/// Why the helper thread could not work inside a namespace.
#[derive(Debug, PartialEq, Eq)]
enum VisitError {
    /// Every pid and mount of it is gone, or now points at another namespace.
    Gone,
    /// Opening or entering it was refused.
    Denied(Errno),
    /// The helper could not go back to its own namespace; it stopped there.
    Stranded(Errno),
}

/// Where to open a namespace from: its pids' `ns/net`, then its mounts.
fn sources(procfs: &Path, f: &Found) -> Vec<PathBuf> {
    f.pids
        .iter()
        .map(|p| procfs.join(format!("{p}/ns/net")))
        .chain(f.mounts.iter().cloned())
        .collect()
}

/// Runs `work` inside each target namespace, on a helper thread that
/// enters each with `setns` and comes back before the next. The thread
/// ends with the batch, so whatever happens it never serves anything else.
fn visit<T: Send>(
    targets: &[(u64, Vec<PathBuf>)],
    work: &(dyn Fn(u64) -> T + Sync),
) -> Vec<(u64, Result<T, VisitError>)> {
    std::thread::scope(|scope| {
        let helper = std::thread::Builder::new()
            .name("netns".into())
            .spawn_scoped(scope, || {
                let mut out = Vec::with_capacity(targets.len());
                let home = match open_ro(&Path::new(SELF_PROC).join("thread-self/ns/net")) {
                    Ok(h) => h,
                    Err(e) => {
                        return targets
                            .iter()
                            .map(|(i, _)| (*i, Err(VisitError::Denied(e))))
                            .collect();
                    }
                };
                for (inode, paths) in targets {
                    let entered = enter(*inode, paths);
                    let result = match entered {
                        Ok(()) => {
                            let r = work(*inode);
                            if let Err(e) = rustix::thread::move_into_link_name_space(
                                home.as_fd(),
                                Some(rustix::thread::LinkNameSpaceType::Network),
                            ) {
                                out.push((*inode, Err(VisitError::Stranded(e))));
                                return out;
                            }
                            Ok(r)
                        }
                        Err(e) => Err(e),
                    };
                    out.push((*inode, result));
                }
                out
            });
        match helper {
            Ok(h) => h.join().unwrap_or_default(),
            Err(e) => {
                let errno = Errno::from_io_error(&e).unwrap_or(Errno::AGAIN);
                targets
                    .iter()
                    .map(|(i, _)| (*i, Err(VisitError::Denied(errno))))
                    .collect()
            }
        }
    })
}

/// Enters the namespace `inode` from the first of `paths` that still
/// opens onto it.
fn enter(inode: u64, paths: &[PathBuf]) -> Result<(), VisitError> {
    let mut denied = None;
    for p in paths {
        let fd = match open_ro(p) {
            Ok(fd) => fd,
            Err(e @ (Errno::ACCESS | Errno::PERM)) => {
                denied = Some(e);
                continue;
            }
            Err(_) => continue, // exited, unmounted
        };
        match rustix::fs::fstat(&fd) {
            Ok(st) if st.st_ino == inode => {}
            _ => continue, // the pid was reused in another namespace
        }
        return rustix::thread::move_into_link_name_space(
            fd.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .map_err(VisitError::Denied);
    }
    Err(denied.map_or(VisitError::Gone, VisitError::Denied))
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
    buf: Vec<u8>,
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
                .spawn_scoped(s, || {
                    let fd = open_ro(&own_path)?;
                    rustix::thread::move_into_link_name_space(
                        fd.as_fd(),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                })
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
                    "--collector.netns: cannot enter other network namespaces (setns: {e}; it needs CAP_SYS_ADMIN): reading {}/<pid>/net/{{tcp,tcp6,udp,udp6}} of a process in each instead, \
                     with no kernel filter (slower); namespaces no process is in are not sampled and other namespaces' ephemeral ranges are not read",
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
            buf: Vec::with_capacity(4096),
            warned_host: false,
            warned_denied: false,
            warned_unsampled: false,
        }
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

    /// Finds every namespace on the host.
    pub fn discover(&mut self) -> Discovery {
        let mut d = Discovery::default();
        let procfs = &self.paths.procfs;
        if let Ok(proc_dir) = rustix::fs::open(
            procfs,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        ) && let Ok(dir) = rustix::fs::Dir::read_from(&proc_dir)
        {
            let mut path = String::with_capacity(24);
            for entry in dir.flatten() {
                let Some(pid) = super::proc_number(entry.file_name().to_bytes()) else {
                    continue;
                };
                path.clear();
                path.push_str(&pid.to_string());
                path.push_str("/ns/net");
                match rustix::fs::statat(&proc_dir, path.as_str(), AtFlags::empty()) {
                    Ok(st) if st.st_dev == self.nsfs_dev => {
                        let f = d.found.entry(st.st_ino).or_default();
                        f.inode = st.st_ino;
                        f.pids.push(pid);
                    }
                    Ok(_) => {}
                    Err(Errno::ACCESS | Errno::PERM) => d.denied += 1,
                    Err(_) => {} // exited, or a zombie
                }
            }
        }
        for (dir, named) in &self.paths.mounts {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            entries.sort();
            for path in entries {
                match rustix::fs::stat(&path) {
                    Ok(st) if st.st_dev == self.nsfs_dev => {
                        let f = d.found.entry(st.st_ino).or_default();
                        f.inode = st.st_ino;
                        if *named && f.name.is_none() {
                            f.name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                        }
                        f.mounts.push(path);
                    }
                    _ => {} // not mounted (a stale `ip netns` entry)
                }
            }
        }
        // The exporter's own namespace is always there, even when
        // --path.procfs shows another pid namespace.
        d.found.entry(self.own).or_default().inode = self.own;
        for f in d.found.values_mut() {
            f.pids.sort_unstable();
        }
        d.host = match rustix::fs::stat(procfs.join("1/ns/net")) {
            Ok(st) if st.st_dev == self.nsfs_dev => st.st_ino,
            other => {
                if !self.warned_host {
                    self.warned_host = true;
                    let why = other.map_or_else(|e| e.to_string(), |_| "not a namespace".into());
                    log::warn!(
                        "--collector.netns: cannot read the network namespace of pid 1 in {} ({why}); the exporter's own namespace is labelled netns=\"host\"",
                        procfs.display()
                    );
                }
                self.own
            }
        };
        d.found.entry(d.host).or_default().inode = d.host;
        if d.denied > 0 && !self.warned_denied {
            self.warned_denied = true;
            log::warn!(
                "--collector.netns: the network namespaces of {} processes could not be read (it needs CAP_SYS_PTRACE): namespaces only they are in are not sampled",
                d.denied
            );
        }
        d
    }

    /// Discovers and samples every namespace.
    pub fn sample(
        &mut self,
        filter: &Filter,
        timeout: Duration,
    ) -> Result<Vec<Socket>, SampleError> {
        let d = self.discover();
        self.sample_discovered(&d, filter, timeout)
    }

    /// Samples the namespaces of a discovery (tests call it with a
    /// discovery whose pids have exited since).
    pub fn sample_discovered(
        &mut self,
        d: &Discovery,
        filter: &Filter,
        timeout: Duration,
    ) -> Result<Vec<Socket>, SampleError> {
        // Close what pins namespaces that are gone.
        self.handles.retain(|inode, _| d.found.contains_key(inode));
        let mut unsampled = 0u32;
        let mut gone: HashSet<u64> = HashSet::new();
        if !self.handles.contains_key(&self.own) {
            self.handles.insert(self.own, Handle::make_here()?);
        }
        if self.mode == Mode::Setns {
            let targets: Vec<(u64, Vec<PathBuf>)> = d
                .found
                .values()
                .filter(|f| !self.handles.contains_key(&f.inode))
                .map(|f| (f.inode, sources(&self.paths.procfs, f)))
                .collect();
            if !targets.is_empty() {
                let mut made: HashMap<u64, _> = visit(&targets, &|_| Handle::make_here())
                    .into_iter()
                    .collect();
                for (inode, _) in &targets {
                    let inode = *inode;
                    match made.remove(&inode) {
                        Some(Ok(Ok(h))) => {
                            self.handles.insert(inode, h);
                        }
                        Some(Ok(Err(e))) => {
                            log::warn!("--collector.netns: network namespace {inode}: {e}");
                            unsampled += 1;
                        }
                        Some(Err(VisitError::Gone)) => {
                            gone.insert(inode);
                        }
                        Some(Err(e)) => {
                            log::debug!(
                                "--collector.netns: cannot enter network namespace {inode}: {e:?}"
                            );
                            unsampled += 1;
                        }
                        // The helper stopped before it (stranded, or a panic).
                        None => unsampled += 1,
                    }
                }
            }
        }

        let mut sockets = Vec::new();
        let mut with_sockets: HashSet<u64> = HashSet::new();
        for f in d.found.values() {
            if gone.contains(&f.inode) {
                continue;
            }
            let start = sockets.len();
            if let Some(h) = self.handles.get_mut(&f.inode) {
                let dumps = match h.counts(&mut self.buf) {
                    Some(c) => netlink::Dumps {
                        tcp4: c.may_hold(Protocol::Tcp, false),
                        tcp6: c.may_hold(Protocol::Tcp, true),
                        udp4: c.may_hold(Protocol::Udp, false),
                        udp6: c.may_hold(Protocol::Udp, true),
                    },
                    None => netlink::Dumps::ALL,
                };
                let r = netlink::dump(&h.diag, filter, dumps, timeout, &mut h.seq, &mut sockets);
                if let Err(e) = r {
                    sockets.truncate(start);
                    self.handles.remove(&f.inode);
                    if f.inode == d.host {
                        return Err(e);
                    }
                    log::warn!("--collector.netns: network namespace {}: {e}", f.inode);
                    unsampled += 1;
                    continue;
                }
            } else if self.mode == Mode::ProcNet {
                match read_proc_net(&self.paths.procfs, f, filter, self.nsfs_dev, &mut sockets) {
                    ProcNetRead::Read => {}
                    ProcNetRead::Gone => {
                        sockets.truncate(start);
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
                continue; // counted above
            }
            for s in &mut sockets[start..] {
                s.netns = f.inode;
            }
            if sockets.len() > start {
                with_sockets.insert(f.inode);
            }
        }
        if unsampled > 0 && !self.warned_unsampled {
            self.warned_unsampled = true;
            log::warn!(
                "--collector.netns: {unsampled} network namespaces could not be sampled (see portrange_netns_unsampled; --log.level=debug says why)"
            );
        }
        self.last = self.describe(d, &with_sockets, unsampled);
        Ok(sockets)
    }

    /// The host's namespace and those with sockets, with their context.
    fn describe(
        &mut self,
        d: &Discovery,
        with_sockets: &HashSet<u64>,
        unsampled: u32,
    ) -> Namespaces {
        let listed: Vec<&Found> = d
            .found
            .values()
            .filter(|f| f.inode == d.host || with_sockets.contains(&f.inode))
            .collect();
        // Sysctls for namespaces that get series, opened inside once.
        let need: Vec<(u64, Vec<PathBuf>)> = listed
            .iter()
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
            for (i, r) in visit(&others, &|_| open_sysctls_here()) {
                if let (Ok(s), Some(h)) = (r, self.handles.get_mut(&i)) {
                    h.sysctls = s;
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
        Namespaces { list, unsampled }
    }

    /// Samples one namespace again (the kernel-held candidates' check).
    pub fn resample(
        &mut self,
        inode: u64,
        filter: &Filter,
        timeout: Duration,
    ) -> Result<Vec<Socket>, SampleError> {
        let Some(h) = self.handles.get_mut(&inode) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        netlink::dump(
            &h.diag,
            filter,
            netlink::Dumps::ALL,
            timeout,
            &mut h.seq,
            &mut out,
        )?;
        for s in &mut out {
            s.netns = inode;
        }
        Ok(out)
    }

    /// The UDP tunnel devices of a namespace, by port (entering it when it
    /// is not the exporter's own).
    pub fn tunnel_ports(&mut self, inode: u64) -> Result<HashMap<u16, String>, String> {
        if inode == self.own {
            return tunnels::udp_tunnel_ports();
        }
        if self.mode != Mode::Setns {
            return Err("cannot enter the namespace (no CAP_SYS_ADMIN)".into());
        }
        let d = self.discover();
        let f = d.found.get(&inode).ok_or("the namespace is gone")?;
        let targets = [(inode, sources(&self.paths.procfs, f))];
        match visit(&targets, &|_| tunnels::udp_tunnel_ports()).pop() {
            Some((_, Ok(r))) => r,
            Some((_, Err(e))) => Err(format!("{e:?}")),
            None => Err("no answer".into()),
        }
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
}

/// The fallback: reads the socket tables of the first pid still in the
/// namespace, checking its `ns/net` before opening them and after.
fn read_proc_net(
    procfs: &Path,
    f: &Found,
    filter: &Filter,
    nsfs_dev: u64,
    out: &mut Vec<Socket>,
) -> ProcNetRead {
    let in_ns = |pid: u32| {
        rustix::fs::stat(procfs.join(format!("{pid}/ns/net")))
            .is_ok_and(|st| st.st_ino == f.inode && st.st_dev == nsfs_dev)
    };
    let mut why = None;
    let mut buf = Vec::new();
    'pids: for &pid in &f.pids {
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
            use std::io::Read;
            buf.clear();
            if let Err(e) = file.read_to_end(&mut buf) {
                out.truncate(start);
                why = Some(format!("{}: {e}", net.join(&name).display()));
                continue 'pids;
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
            .sample_discovered(&d, &filter, Duration::from_secs(5))
            .unwrap();
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
