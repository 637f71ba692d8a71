//! Process attribution: which process holds each sampled socket, found
//! through the `socket:[<inode>]` links under `<procfs>/<pid>/fd`. Owners
//! are cached by inode across scrapes. A cached owner is re-checked with one
//! `readlinkat` of its fd plus one read of `<pid>/stat` per owning process
//! (whose start time catches pid reuse); only inodes never seen before
//! trigger a scan, which visits first the processes that already own
//! sockets in the ranges, then the processes running as the new sockets'
//! uids, then the rest (newest pid first within each group), and stops once
//! every new inode is found. The scan runs on its own thread: a scrape waits
//! for it only until its deadline, after which its sockets count as
//! unattributed and the scan finishes in the background for the next
//! scrape. Inodes a complete scan could not find are not searched again
//! until a back-off expires, so an unprivileged exporter does not rescan
//! `/proc` on every scrape.
//!
//! A scan result that arrives after its scrape (from the background) is
//! re-checked before it is used: each hit's process must still have the
//! same start time and the fd must still point at the socket.
//!
//! Sockets no process holds: when the exporter sees every process (full
//! privilege, and a `/proc` of the host's pid namespace, where kernel
//! threads are visible) and a complete scan (every process listed, plus
//! the processes that appeared during the scan) finds no holder, the inode
//! is a kernel candidate: a strict one when no process refused the scan,
//! a weak one when some did despite full privilege (a process under a
//! security module, or a sandbox's init). The caller confirms a strict
//! candidate by a second sample (a holder that exited mid-scan took its
//! socket along), and a weak one only with positive evidence from the
//! kernel (a tunnel device configured on that port). Anything short of
//! that stays unknown.
//!
//! Reading other users' fd directories needs CAP_DAC_READ_SEARCH (to search
//! the 0500 directory) and CAP_SYS_PTRACE (the kernel's ptrace access check
//! on each link), or root. Without them the sockets stay unattributed.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::platform::{Owner, PassStats, Socket};

/// What one attribution pass found, by inode.
#[derive(Debug, Default)]
pub struct InodePass {
    pub owners: HashMap<u64, Arc<Owner>>,
    /// Inodes confirmed earlier as held by no process.
    pub kernel: HashSet<u64>,
    /// Inodes a complete scan just failed to find, each with whether the
    /// scan was strict (no process refused it): the caller checks them and
    /// then calls [`Attributor::confirm_kernel`].
    pub candidates: Vec<(u64, bool)>,
    pub stats: PassStats,
}

#[derive(Clone, Debug)]
struct Cached {
    pid: u32,
    fd: u32,
    start_time: u64,
}

#[derive(Clone, Debug)]
struct Missing {
    retry_at: Instant,
    misses: u32,
    /// Confirmed as held by no process (kept while a later scan re-checks).
    kernel: bool,
}

/// What one process looks like at one moment.
#[derive(Clone, Debug)]
struct ProcInfo {
    start_time: u64,
    owner: Arc<Owner>,
}

/// The inode → owner cache and the `/proc` scanner.
pub struct Attributor {
    procfs: PathBuf,
    cache: HashMap<u64, Cached>,
    missing: HashMap<u64, Missing>,
    pending: Option<Pending>,
    /// Whether this exporter can see every process (privilege and pid
    /// namespace): only then can a socket be called the kernel's.
    sees_all: bool,
    /// Tests only: the next scan waits for a message before it starts, so
    /// that "the deadline passed first" is driven, not raced.
    #[cfg(test)]
    gate: Option<mpsc::Receiver<()>>,
}

const MISS_BACKOFF_START: Duration = Duration::from_secs(15);
const MISS_BACKOFF_MAX: Duration = Duration::from_secs(600);

impl Attributor {
    pub fn new(procfs: impl Into<PathBuf>) -> Attributor {
        Attributor {
            procfs: procfs.into(),
            cache: HashMap::new(),
            missing: HashMap::new(),
            pending: None,
            sees_all: false,
            #[cfg(test)]
            gate: None,
        }
    }

    /// Declares that this exporter sees every process, so a complete scan
    /// that finds no holder names a kernel candidate.
    pub fn set_sees_all(&mut self, sees_all: bool) {
        self.sees_all = sees_all;
    }

    /// Marks inodes as held by the kernel (after the caller confirmed that
    /// the sockets still exist).
    pub fn confirm_kernel(&mut self, inodes: &[u64]) {
        for inode in inodes {
            if let Some(m) = self.missing.get_mut(inode) {
                m.kernel = true;
            }
        }
    }

    /// Number of cached owners (for tests and the leak checks).
    pub fn cached(&self) -> usize {
        self.cache.len() + self.missing.len()
    }

    /// Finds the owner of every socket, by inode. Sockets with inode 0
    /// (TIME_WAIT, request sockets) have no owner and are skipped. Never
    /// waits past `deadline`: a scan still running then goes on in the
    /// background, and a later call takes its results.
    pub fn attribute(&mut self, sockets: &[Socket], deadline: Instant) -> InodePass {
        let now = Instant::now();
        let mut stats = PassStats::default();
        let mut candidates = Vec::new();
        let mut uid_of: HashMap<u64, u32> = HashMap::new();
        for s in sockets.iter().filter(|s| s.inode != 0) {
            uid_of.insert(s.inode, s.uid);
        }
        // Forget sockets that are gone: the cache never outgrows the sample.
        self.cache.retain(|inode, _| uid_of.contains_key(inode));
        self.missing.retain(|inode, _| uid_of.contains_key(inode));

        let mut found: HashMap<u64, Arc<Owner>> = HashMap::with_capacity(uid_of.len());

        // 1. A scan left running by an earlier call: take its results if it
        //    finishes within this call's budget.
        if let Some(p) = self.pending.take() {
            match p.rx.recv_timeout(deadline.saturating_duration_since(now)) {
                Ok(result) => {
                    let c = self.merge(result, true, &uid_of, &mut found, &mut stats, now);
                    candidates.extend(c);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => self.pending = Some(p),
                Err(mpsc::RecvTimeoutError::Disconnected) => {}
            }
        }

        // 2. Re-check cached owners.
        let mut procs: HashMap<u32, Option<ProcInfo>> = HashMap::new();
        let mut stale = Vec::new();
        for (&inode, c) in &self.cache {
            if found.contains_key(&inode) {
                continue; // just found by the scan
            }
            let info = procs
                .entry(c.pid)
                .or_insert_with(|| read_proc(&self.procfs, c.pid))
                .clone();
            match info {
                Some(p)
                    if p.start_time == c.start_time
                        && link_is(&self.procfs, c.pid, c.fd, inode) =>
                {
                    stats.confirmed += 1;
                    found.insert(inode, p.owner);
                }
                _ => stale.push(inode),
            }
        }
        for inode in stale {
            self.cache.remove(&inode);
        }

        // 3. Scan for inodes not found, not in back-off and not already being
        //    searched by a scan still running.
        let searching = self.pending.as_ref().map(|p| &p.inodes);
        let wanted: HashSet<u64> = uid_of
            .keys()
            .copied()
            .filter(|i| !found.contains_key(i))
            .filter(|i| self.missing.get(i).is_none_or(|m| m.retry_at <= now))
            .filter(|i| searching.is_none_or(|s| !s.contains(i)))
            .collect();
        stats.searched = wanted.len();
        if !wanted.is_empty() && self.pending.is_none() {
            let mut known_pids: Vec<u32> = self.cache.values().map(|c| c.pid).collect();
            known_pids.sort_unstable();
            known_pids.dedup();
            let uids: HashSet<u32> = wanted.iter().map(|i| uid_of[i]).collect();
            let (tx, rx) = mpsc::channel();
            let procfs = self.procfs.clone();
            let inodes = wanted.clone();
            #[cfg(test)]
            let gate = self.gate.take();
            let spawned = std::thread::Builder::new()
                .name("proc-scan".into())
                .spawn(move || {
                    #[cfg(test)]
                    if let Some(g) = gate {
                        let _ = g.recv();
                    }
                    let _ = tx.send(scan_procs(&procfs, wanted, &known_pids, &uids));
                });
            if spawned.is_ok() {
                match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(result) => {
                        let c = self.merge(result, false, &uid_of, &mut found, &mut stats, now);
                        candidates.extend(c);
                    }
                    Err(_) => self.pending = Some(Pending { rx, inodes }),
                }
            }
        }
        stats.deadline_hit = self.pending.is_some()
            && uid_of
                .keys()
                .any(|i| !found.contains_key(i) && !self.missing.contains_key(i));
        for inode in found.keys() {
            self.missing.remove(inode);
        }
        let kernel: HashSet<u64> = self
            .missing
            .iter()
            .filter(|(_, m)| m.kernel)
            .map(|(&i, _)| i)
            .collect();
        stats.kernel = kernel.len();
        InodePass {
            owners: found,
            kernel,
            candidates,
            stats,
        }
    }

    /// Takes a finished scan's results: owners into the cache (for sockets
    /// still present), misses into back-off. A result from the background
    /// (`late`) may be old: each hit is re-checked first. Returns the
    /// inodes a complete scan could not find, when this exporter sees
    /// every process (kernel candidates).
    fn merge(
        &mut self,
        result: ScanResult,
        late: bool,
        uid_of: &HashMap<u64, u32>,
        found: &mut HashMap<u64, Arc<Owner>>,
        stats: &mut PassStats,
        now: Instant,
    ) -> Vec<(u64, bool)> {
        stats.processes_scanned += result.processes_scanned;
        stats.permission_denied += result.permission_denied;
        for (inode, pid, fd, info) in result.hits {
            if !uid_of.contains_key(&inode) {
                continue;
            }
            if late
                && !(link_is(&self.procfs, pid, fd, inode)
                    && read_proc(&self.procfs, pid)
                        .is_some_and(|p| p.start_time == info.start_time))
            {
                continue; // gone or moved since the scan: searched again later
            }
            self.cache.insert(
                inode,
                Cached {
                    pid,
                    fd,
                    start_time: info.start_time,
                },
            );
            found.insert(inode, info.owner.clone());
        }
        let complete = result.complete && self.sees_all;
        let strict = result.permission_denied == 0;
        let mut candidates = Vec::new();
        for inode in result.not_found {
            if !uid_of.contains_key(&inode) {
                continue;
            }
            let previous = self.missing.get(&inode);
            let misses = previous.map_or(0, |m| m.misses) + 1;
            // A kernel socket stays the kernel's while it is searched again;
            // only a scan that finds a holder changes that.
            let kernel = previous.is_some_and(|m| m.kernel);
            let backoff = MISS_BACKOFF_START
                .saturating_mul(1 << (misses - 1).min(6))
                .min(MISS_BACKOFF_MAX);
            self.missing.insert(
                inode,
                Missing {
                    retry_at: now + backoff,
                    misses,
                    kernel,
                },
            );
            if complete {
                candidates.push((inode, strict));
            }
        }
        candidates
    }
}

/// What one complete scan of `/proc` found.
struct ScanResult {
    hits: Vec<(u64, u32, u32, ProcInfo)>,
    not_found: HashSet<u64>,
    processes_scanned: usize,
    permission_denied: usize,
    /// Every process was visited (those that appeared during the scan
    /// too); `permission_denied` says how many refused.
    complete: bool,
}

/// A scan running on its own thread.
struct Pending {
    rx: mpsc::Receiver<ScanResult>,
    inodes: HashSet<u64>,
}

/// Scans fd directories for the `wanted` inodes until all are found or
/// every process was visited. Order: processes that already own sockets in
/// the ranges, then processes running as the new sockets' uids, then the
/// rest; within each group the newest pid first, since a new owner is
/// usually a new process.
fn scan_procs(
    procfs: &Path,
    mut wanted: HashSet<u64>,
    known_pids: &[u32],
    uids: &HashSet<u32>,
) -> ScanResult {
    let mut result = ScanResult {
        hits: Vec::new(),
        not_found: HashSet::new(),
        processes_scanned: 0,
        permission_denied: 0,
        complete: false,
    };
    let Ok(proc_dir) = rustix::fs::open(
        procfs,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        result.not_found = wanted;
        return result;
    };
    let mut buf = Vec::with_capacity(64);
    // Known owners first: a new socket usually comes from a process that
    // already has some, and then /proc need not even be listed.
    for &pid in known_pids.iter().rev() {
        if wanted.is_empty() {
            break;
        }
        scan_one(procfs, &proc_dir, pid, &mut wanted, &mut buf, &mut result);
    }
    if wanted.is_empty() {
        return result;
    }
    let mut all = list_pids(&proc_dir);
    all.sort_unstable_by(|a, b| b.cmp(a));
    let known: HashSet<u32> = known_pids.iter().copied().collect();
    let mut order: Vec<u32> = Vec::with_capacity(all.len());
    let mut rest = Vec::new();
    for &pid in &all {
        if known.contains(&pid) {
            continue;
        }
        let uid = rustix::fs::statat(&proc_dir, pid.to_string(), AtFlags::empty())
            .map(|st| st.st_uid)
            .ok();
        match uid {
            Some(u) if uids.contains(&u) => order.push(pid),
            Some(_) => rest.push(pid),
            None => {} // gone already
        }
    }
    order.extend(rest);
    for pid in order {
        if wanted.is_empty() {
            break;
        }
        scan_one(procfs, &proc_dir, pid, &mut wanted, &mut buf, &mut result);
    }
    if !wanted.is_empty() {
        // A holder may have passed the socket to a process born after the
        // listing and exited: visit the newcomers too.
        let seen: HashSet<u32> = all.iter().copied().collect();
        let mut newcomers: Vec<u32> = list_pids(&proc_dir)
            .into_iter()
            .filter(|p| !seen.contains(p))
            .collect();
        newcomers.sort_unstable_by(|a, b| b.cmp(a));
        for pid in newcomers {
            if wanted.is_empty() {
                break;
            }
            scan_one(procfs, &proc_dir, pid, &mut wanted, &mut buf, &mut result);
        }
        result.complete = !all.is_empty();
    }
    result.not_found = wanted;
    result
}

/// Scans one process's fd directory and records its hits.
fn scan_one(
    procfs: &Path,
    proc_dir: &OwnedFd,
    pid: u32,
    wanted: &mut HashSet<u64>,
    buf: &mut Vec<u8>,
    result: &mut ScanResult,
) {
    let fd_dir = match rustix::fs::openat(
        proc_dir,
        format!("{pid}/fd"),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ACCESS) | Err(Errno::PERM) => {
            result.permission_denied += 1;
            return;
        }
        Err(_) => return, // exited, or a kernel thread
    };
    result.processes_scanned += 1;
    let hits = scan_fds(fd_dir, wanted, buf, &mut result.permission_denied);
    if hits.is_empty() {
        return;
    }
    let Some(info) = read_proc(procfs, pid) else {
        return; // exited between the links and its stat
    };
    for (inode, fd) in hits {
        wanted.remove(&inode);
        result.hits.push((inode, pid, fd, info.clone()));
    }
}

/// Reads every fd link of one process and returns the wanted socket inodes
/// with their fd numbers.
fn scan_fds(
    fd_dir: OwnedFd,
    wanted: &HashSet<u64>,
    buf: &mut Vec<u8>,
    denied: &mut usize,
) -> Vec<(u64, u32)> {
    let mut hits = Vec::new();
    let Ok(dir) = rustix::fs::Dir::read_from(&fd_dir) else {
        return hits;
    };
    for entry in dir {
        let Ok(entry) = entry else { break };
        let name = entry.file_name().to_bytes();
        let Some(fd) = parse_u32(name) else { continue };
        buf.clear();
        match rustix::fs::readlinkat(&fd_dir, entry.file_name(), std::mem::take(buf)) {
            Ok(target) => {
                let target = target.into_bytes();
                if let Some(inode) = parse_socket_link(&target)
                    && wanted.contains(&inode)
                {
                    hits.push((inode, fd));
                }
                *buf = target;
            }
            Err(Errno::ACCESS) | Err(Errno::PERM) => {
                *denied += 1;
                break;
            }
            Err(_) => {} // the fd closed meanwhile
        }
    }
    hits
}

/// Whether `<procfs>/<pid>/fd/<fd>` still points at socket `inode`.
fn link_is(procfs: &Path, pid: u32, fd: u32, inode: u64) -> bool {
    let path = procfs.join(format!("{pid}/fd/{fd}"));
    match std::fs::read_link(&path) {
        Ok(target) => parse_socket_link(target.as_os_str().as_bytes()) == Some(inode),
        Err(_) => false,
    }
}

fn list_pids(proc_dir: &OwnedFd) -> Vec<u32> {
    let Ok(dir) = rustix::fs::Dir::read_from(proc_dir) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| parse_u32(e.file_name().to_bytes()))
        .collect()
}

/// Reads `<procfs>/<pid>/stat` and `exe`.
fn read_proc(procfs: &Path, pid: u32) -> Option<ProcInfo> {
    let stat = std::fs::read(procfs.join(format!("{pid}/stat"))).ok()?;
    let (comm, start_time) = parse_stat(&stat)?;
    let exe = std::fs::read_link(procfs.join(format!("{pid}/exe")))
        .ok()
        .map(|p| p.into_os_string().into_vec_bytes());
    Some(ProcInfo {
        start_time,
        owner: Arc::new(Owner {
            pid,
            comm: comm.to_vec(),
            exe,
            user: None,
            user_id: None,
        }),
    })
}

trait IntoVecBytes {
    fn into_vec_bytes(self) -> Vec<u8>;
}

impl IntoVecBytes for std::ffi::OsString {
    fn into_vec_bytes(self) -> Vec<u8> {
        use std::os::unix::ffi::OsStringExt;
        self.into_vec()
    }
}

/// Parses `socket:[12345]`.
pub fn parse_socket_link(target: &[u8]) -> Option<u64> {
    let inner = target.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    if inner.is_empty() || inner.len() > 20 || !inner.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(inner).ok()?.parse().ok()
}

/// Parses `comm` (field 2, between the first `(` and the last `)`, so a
/// name holding `)` or spaces is kept whole) and `starttime` (field 22)
/// from `/proc/<pid>/stat`.
pub fn parse_stat(stat: &[u8]) -> Option<(&[u8], u64)> {
    let open = stat.iter().position(|&b| b == b'(')?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let comm = &stat[open + 1..close];
    // After ") " come fields 3.. ; starttime is field 22, the 20th of them.
    let rest = stat.get(close + 2..)?;
    let field = rest.split(|&b| b == b' ').nth(19)?;
    let start_time = std::str::from_utf8(field).ok()?.trim().parse().ok()?;
    Some((comm, start_time))
}

/// Whether `procfs` shows the host's pid namespace: kernel threads (pid 2,
/// kthreadd, carries PF_KTHREAD) are visible there and nowhere else. In a
/// container without the host's pids, a socket with no visible holder may
/// belong to a process we cannot see, so it must stay unknown.
pub fn shows_host_pids(procfs: &Path) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    std::fs::read(procfs.join("2/stat"))
        .ok()
        .and_then(|s| parse_stat_flags(&s))
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

/// Parses `flags` (field 9) from `/proc/<pid>/stat`.
pub fn parse_stat_flags(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = stat.get(close + 2..)?;
    let field = rest.split(|&b| b == b' ').nth(6)?;
    std::str::from_utf8(field).ok()?.trim().parse().ok()
}

fn parse_u32(name: &[u8]) -> Option<u32> {
    if name.is_empty() || name.len() > 10 || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(name).ok()?.parse().ok()
}

/// The capabilities attribution needs that this process lacks, read from
/// `<procfs>/self/status`; empty when it has them all (or runs as root with
/// the full set).
pub fn missing_capabilities(procfs: &Path) -> Vec<&'static str> {
    const CAP_DAC_READ_SEARCH: u32 = 2;
    const CAP_SYS_PTRACE: u32 = 19;
    let status = std::fs::read(procfs.join("self/status")).unwrap_or_default();
    let eff = status
        .split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(b"CapEff:"))
        .and_then(|v| u64::from_str_radix(OsStr::from_bytes(v).to_str()?.trim(), 16).ok());
    let Some(eff) = eff else {
        return vec!["CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"];
    };
    let mut missing = Vec::new();
    if eff & (1 << CAP_SYS_PTRACE) == 0 {
        missing.push("CAP_SYS_PTRACE");
    }
    if eff & (1 << CAP_DAC_READ_SEARCH) == 0 {
        missing.push("CAP_DAC_READ_SEARCH");
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ranges::Protocol;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn socket_links() {
        assert_eq!(parse_socket_link(b"socket:[12345]"), Some(12345));
        assert_eq!(parse_socket_link(b"socket:[]"), None);
        assert_eq!(parse_socket_link(b"socket:[12a]"), None);
        assert_eq!(parse_socket_link(b"pipe:[12345]"), None);
        assert_eq!(parse_socket_link(b"/dev/null"), None);
        assert_eq!(parse_socket_link(b"socket:[99999999999999999999999]"), None);
    }

    #[test]
    fn stat_with_hostile_comm() {
        let stat =
            b"42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200";
        let (comm, start) = parse_stat(stat).unwrap();
        assert_eq!(comm, b"a) b (c)");
        assert_eq!(start, 987654);
        let nl = b"7 (x\ny) R 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55 0 0";
        assert_eq!(parse_stat(nl), Some((&b"x\ny"[..], 55)));
        assert_eq!(parse_stat(b"garbage"), None);
        assert_eq!(parse_stat(b"1 (x) S 1"), None);
    }

    /// Builds a fake procfs tree: pid 100 (comm "CtxGfx") holds socket 5001
    /// at fd 3; pid 200 (comm "other") holds socket 5002 at fd 7.
    fn fake_proc(root: &Path) {
        for (pid, comm, fds, start) in [
            (100u32, "CtxGfx", vec![(3u32, 5001u64), (4, 1)], 111u64),
            (200, "other", vec![(7, 5002)], 222),
        ] {
            let dir = root.join(pid.to_string());
            std::fs::create_dir_all(dir.join("fd")).unwrap();
            std::fs::write(
                dir.join("stat"),
                format!("{pid} ({comm}) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0 0\n"),
            )
            .unwrap();
            std::os::unix::fs::symlink(format!("/opt/{comm}"), dir.join("exe")).unwrap();
            for (fd, inode) in fds {
                std::os::unix::fs::symlink(
                    format!("socket:[{inode}]"),
                    dir.join(format!("fd/{fd}")),
                )
                .unwrap();
            }
        }
        std::fs::create_dir_all(root.join("self")).unwrap();
    }

    fn sock(inode: u64) -> Socket {
        Socket {
            protocol: Protocol::Udp,
            state: 7,
            local: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 3224,
            remote: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            remote_port: 0,
            uid: 0,
            inode,
            pid_hint: None,
        }
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("portrange-attr-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn finds_owners_in_a_fake_tree_and_caches_them() {
        let root = tempdir("find");
        fake_proc(&root);
        let mut a = Attributor::new(&root);
        let socks = [sock(5001), sock(5002), sock(9999), sock(0)];
        let InodePass { owners, stats, .. } = a.attribute(&socks, far());
        assert_eq!(owners[&5001].comm, b"CtxGfx");
        assert_eq!(owners[&5001].pid, 100);
        assert_eq!(owners[&5001].exe.as_deref(), Some(&b"/opt/CtxGfx"[..]));
        assert_eq!(owners[&5002].comm, b"other");
        assert!(!owners.contains_key(&9999));
        assert_eq!(stats.searched, 3);
        assert_eq!(stats.confirmed, 0);

        // Second pass: both confirmed from the cache, 9999 is in back-off.
        let InodePass { owners, stats, .. } = a.attribute(&socks, far());
        assert_eq!(owners.len(), 2);
        assert_eq!(stats.confirmed, 2);
        assert_eq!(stats.searched, 0);
        assert_eq!(stats.processes_scanned, 0);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn pid_reuse_and_moved_sockets_are_not_kept_stale() {
        let root = tempdir("reuse");
        fake_proc(&root);
        let mut a = Attributor::new(&root);
        let socks = [sock(5001)];
        assert_eq!(a.attribute(&socks, far()).owners[&5001].comm, b"CtxGfx");

        // pid 100 is reused by another program (new start time) that holds
        // nothing; the socket moved to pid 200 at fd 9.
        std::fs::write(
            root.join("100/stat"),
            "100 (impostor) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 999 0 0\n",
        )
        .unwrap();
        std::fs::remove_file(root.join("100/fd/3")).unwrap();
        std::os::unix::fs::symlink("socket:[5001]", root.join("200/fd/9")).unwrap();
        let InodePass { owners, stats, .. } = a.attribute(&socks, far());
        assert_eq!(owners[&5001].comm, b"other");
        assert_eq!(owners[&5001].pid, 200);
        assert_eq!(stats.confirmed, 0);

        // The holder exits: the owner is unknown, never the stale one.
        std::fs::remove_dir_all(root.join("200")).unwrap();
        let InodePass { owners, .. } = a.attribute(&socks, far());
        assert!(owners.is_empty(), "{owners:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn comm_changes_are_seen() {
        let root = tempdir("comm");
        fake_proc(&root);
        let mut a = Attributor::new(&root);
        a.attribute(&[sock(5001)], far());
        // Same process (same start time) renamed itself.
        std::fs::write(
            root.join("100/stat"),
            "100 (renamed) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 111 0 0\n",
        )
        .unwrap();
        let InodePass { owners, stats, .. } = a.attribute(&[sock(5001)], far());
        assert_eq!(owners[&5001].comm, b"renamed");
        assert_eq!(stats.confirmed, 1);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_scan_past_the_budget_finishes_in_the_background() {
        // 1,500 processes with 20 fds each; the wanted socket belongs to the
        // oldest pid, which a newest-first scan reaches last.
        let root = tempdir("budget");
        fake_proc(&root);
        for pid in 1000..2500u32 {
            let dir = root.join(pid.to_string());
            std::fs::create_dir_all(dir.join("fd")).unwrap();
            std::fs::write(
                dir.join("stat"),
                format!("{pid} (filler) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0\n"),
            )
            .unwrap();
            for fd in 0..20 {
                std::os::unix::fs::symlink(
                    format!("socket:[{}]", 900_000 + pid * 100 + fd),
                    dir.join(format!("fd/{fd}")),
                )
                .unwrap();
            }
        }
        let mut a = Attributor::new(&root);
        let (release, gate) = mpsc::channel();
        a.gate = Some(gate);
        let started = Instant::now();
        let InodePass { owners, stats, .. } =
            a.attribute(&[sock(5001)], Instant::now() + Duration::from_millis(1));
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_millis(200),
            "waited {waited:?} past a 1 ms budget"
        );
        assert!(
            owners.is_empty(),
            "the scan is held until the deadline passed"
        );
        assert!(stats.deadline_hit);
        // Another pass while it is held: no second scan starts.
        let InodePass { stats, .. } =
            a.attribute(&[sock(5001)], Instant::now() + Duration::from_millis(1));
        assert!(
            stats.deadline_hit && stats.processes_scanned == 0,
            "{stats:?}"
        );
        // Released, the scan goes on; the next pass takes its result.
        release.send(()).unwrap();
        let InodePass { owners, stats, .. } = a.attribute(&[sock(5001)], far());
        assert_eq!(owners[&5001].pid, 100);
        assert_eq!(stats.searched, 0, "no second scan");
        assert!(stats.processes_scanned > 1000, "{stats:?}");
        // And from then on it is a cached, confirmed owner.
        let InodePass { owners, stats, .. } = a.attribute(&[sock(5001)], far());
        assert_eq!(owners[&5001].pid, 100);
        assert_eq!((stats.confirmed, stats.processes_scanned), (1, 0));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_late_scan_result_is_rechecked_before_use() {
        let root = tempdir("late");
        fake_proc(&root);
        let mut a = Attributor::new(&root);
        let (release, gate) = mpsc::channel();
        a.gate = Some(gate);
        let InodePass { owners, .. } =
            a.attribute(&[sock(5001)], Instant::now() + Duration::from_millis(1));
        assert!(owners.is_empty());
        // The scan runs and finds pid 100 ...
        release.send(()).unwrap();
        let p = a.pending.as_ref().unwrap();
        let result = p.rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(result.hits.len(), 1);
        // ... but before the next scrape takes the result, pid 100 exits
        // and its pid is reused by a program that holds nothing.
        let (tx, rx) = mpsc::channel();
        tx.send(result).unwrap();
        a.pending.as_mut().unwrap().rx = rx;
        std::fs::write(
            root.join("100/stat"),
            "100 (impostor) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 999 0 0\n",
        )
        .unwrap();
        std::fs::remove_file(root.join("100/fd/3")).unwrap();
        let InodePass { owners, .. } = a.attribute(&[sock(5001)], far());
        assert!(
            !owners
                .values()
                .any(|o| o.comm == b"CtxGfx" || o.comm == b"impostor"),
            "{owners:?}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn kernel_candidates_need_a_complete_scan_by_an_exporter_that_sees_all() {
        let root = tempdir("kernel");
        fake_proc(&root);
        // Without seeing every process, a missing holder is just unknown.
        let mut a = Attributor::new(&root);
        let pass = a.attribute(&[sock(5001), sock(9999)], far());
        assert!(pass.candidates.is_empty() && pass.kernel.is_empty());

        let mut a = Attributor::new(&root);
        a.set_sees_all(true);
        let pass = a.attribute(&[sock(5001), sock(9999)], far());
        assert_eq!(
            pass.candidates,
            vec![(9999, true)],
            "strict: nobody refused"
        );
        assert!(pass.kernel.is_empty(), "not before the caller confirms");
        a.confirm_kernel(&[9999]);
        let pass = a.attribute(&[sock(5001), sock(9999)], far());
        assert!(pass.kernel.contains(&9999) && pass.candidates.is_empty());
        assert_eq!(pass.stats.kernel, 1);
        assert_eq!(pass.owners[&5001].comm, b"CtxGfx");
        // A process that later turns out to hold it takes it back.
        std::os::unix::fs::symlink("socket:[9999]", root.join("200/fd/8")).unwrap();
        a.missing.get_mut(&9999).unwrap().retry_at = Instant::now();
        let pass = a.attribute(&[sock(9999)], far());
        assert_eq!(pass.owners[&9999].pid, 200);
        assert!(pass.kernel.is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn host_pid_namespace_is_told_by_kernel_threads() {
        let root = tempdir("pidns");
        std::fs::create_dir_all(root.join("2")).unwrap();
        std::fs::write(
            root.join("2/stat"),
            "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 24 0 0\n",
        )
        .unwrap();
        assert!(shows_host_pids(&root));
        std::fs::write(
            root.join("2/stat"),
            "2 (sh) S 1 2 2 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 24 0 0\n",
        )
        .unwrap();
        assert!(
            !shows_host_pids(&root),
            "a container's pid 2 is a user process"
        );
        std::fs::remove_dir_all(root.join("2")).unwrap();
        assert!(!shows_host_pids(&root));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn newest_processes_are_scanned_first() {
        let root = tempdir("order");
        fake_proc(&root);
        let mut a = Attributor::new(&root);
        // 5002 belongs to pid 200, the newest: found after visiting one process.
        let InodePass { owners, stats, .. } = a.attribute(&[sock(5002)], far());
        assert_eq!(owners[&5002].pid, 200);
        assert_eq!(stats.processes_scanned, 1, "{stats:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn cache_is_bounded_by_live_sockets() {
        let root = tempdir("bound");
        fake_proc(&root);
        let mut a = Attributor::new(&root);
        a.attribute(&[sock(5001), sock(5002), sock(777)], far());
        assert_eq!(a.cached(), 3);
        a.attribute(&[], far());
        assert_eq!(a.cached(), 0);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn capabilities_from_status() {
        let root = tempdir("caps");
        std::fs::create_dir_all(root.join("self")).unwrap();
        std::fs::write(
            root.join("self/status"),
            "Name:\tx\nCapEff:\t000001ffffffffff\n",
        )
        .unwrap();
        assert!(missing_capabilities(&root).is_empty());
        std::fs::write(root.join("self/status"), "CapEff:\t0000000000000000\n").unwrap();
        assert_eq!(
            missing_capabilities(&root),
            vec!["CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"]
        );
        std::fs::write(root.join("self/status"), "CapEff:\t0000000000080000\n").unwrap();
        assert_eq!(missing_capabilities(&root), vec!["CAP_DAC_READ_SEARCH"]);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
