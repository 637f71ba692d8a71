//! The helper threads of the namespace sampler: a namespace's cached fds
//! ([`Handle`], made inside it by a helper thread that enters it with
//! `setns`, [`visit`]), the `setns` probe and its refusal text, and the
//! pool that dumps many namespaces at once ([`dump_on_pool`]). Discovery
//! is `discovery.rs`'s; what to read and when is the sampler's
//! ([`super::NetnsSampler`]).

use super::*;

/// A namespace's cached fds.
pub(super) struct Handle {
    pub(super) diag: OwnedFd,
    pub(super) seq: u32,
    pub(super) sockstat: Option<OwnedFd>,
    pub(super) sockstat6: Option<OwnedFd>,
    /// `ip_local_port_range` and `ip_local_reserved_ports`, opened inside
    /// once the namespace has series.
    pub(super) sysctls: Option<(OwnedFd, OwnedFd)>,
    /// A NETLINK_ROUTE socket, made inside once the namespace holds
    /// kernel-held sockets (for [`NetnsSampler::tunnel_ports`]).
    pub(super) route: Option<OwnedFd>,
    pub(super) route_seq: u32,
}

impl Handle {
    /// Makes the fds in the calling thread's namespace.
    pub(super) fn make_here() -> Result<Handle, SampleError> {
        let diag = sock_diag::open()?;
        let open = |name: &str| open_ro(&Path::new(SELF_PROC).join("thread-self/net").join(name));
        Ok(Handle {
            diag,
            seq: 0,
            sockstat: open("sockstat").ok(),
            sockstat6: open("sockstat6").ok(),
            sysctls: None,
            route: None,
            route_seq: 0,
        })
    }

    /// The socket counts, when the sockstat files read well.
    pub(super) fn counts(&self, buf: &mut Vec<u8>) -> Option<SockCounts> {
        let mut c = SockCounts::default();
        for fd in [&self.sockstat, &self.sockstat6] {
            read_fd(fd.as_ref()?, buf).ok()?;
            if !procnet::add_sockstat(buf, &mut c) {
                return None;
            }
        }
        Some(c)
    }

    /// The dumps worth asking for: those of protocols and families the
    /// sockstat counts show sockets of (all when they cannot be read).
    pub(super) fn dumps(&self, buf: &mut Vec<u8>) -> sock_diag::Dumps {
        match self.counts(buf) {
            Some(c) => sock_diag::Dumps {
                tcp4: c.may_hold(Protocol::Tcp, false),
                tcp6: c.may_hold(Protocol::Tcp, true),
                udp4: c.may_hold(Protocol::Udp, false),
                udp6: c.may_hold(Protocol::Udp, true),
            },
            None => sock_diag::Dumps::ALL,
        }
    }

    pub(super) fn ephemeral(&self, buf: &mut Vec<u8>) -> Option<EphemeralPorts> {
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
pub(super) fn open_sysctls_here() -> Option<(OwnedFd, OwnedFd)> {
    let dir = Path::new(SELF_PROC).join("sys/net/ipv4");
    Some((
        open_ro(&dir.join("ip_local_port_range")).ok()?,
        open_ro(&dir.join("ip_local_reserved_ports")).ok()?,
    ))
}

pub(super) fn open_ro(path: &Path) -> rustix::io::Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
}

/// Reads a whole proc file from offset 0 (a seq_file regenerates it).
pub(super) fn read_fd(fd: &OwnedFd, buf: &mut Vec<u8>) -> rustix::io::Result<()> {
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
pub(super) enum VisitError {
    /// Every pid and mount of it is gone, or now points at another namespace.
    Gone,
    /// Opening or entering it was refused.
    Denied(Errno),
    /// The helper could not go back to its own namespace; it stopped there.
    Stranded(Errno),
    /// The work panicked inside it, or the helper stopped before it got
    /// there (stranded, or a panic outside the work): what happened.
    HelperFailed(String),
    /// The deadline passed before the helper got to it.
    Deadline,
}

impl std::fmt::Display for VisitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VisitError::Gone => f.write_str("it is gone"),
            VisitError::Denied(e) => write!(f, "entering it was refused: {e}"),
            VisitError::Stranded(e) => write!(
                f,
                "the helper thread could not return to its own namespace ({e})"
            ),
            VisitError::HelperFailed(m) => write!(f, "the netns helper thread {m}"),
            VisitError::Deadline => f.write_str("deadline passed"),
        }
    }
}

/// Where to open a namespace from: its pids' `ns/net`, then its mounts.
pub(super) fn sources(procfs: &Path, f: &Found) -> Vec<PathBuf> {
    f.pids
        .iter()
        .map(|p| procfs.join(format!("{p}/ns/net")))
        .chain(f.mounts.iter().cloned())
        .collect()
}

/// Runs `work` inside each target namespace, on a helper thread that
/// enters each with `setns` and comes back before the next, and waits for
/// it no later than `deadline`: targets it has not done by then are
/// [`VisitError::Deadline`] (a helper caught in a slow `open` or `setns`
/// is left to finish on its own; it ends with its batch and serves nothing
/// else). A panic in `work` is caught on the helper, which goes home and
/// goes on with the next target; the namespace gets
/// [`VisitError::HelperFailed`] and the caller logs it at error level. Each
/// batch has a helper of its own, so a helper that died is never reused.
pub(super) fn visit<T, F>(
    targets: &[(u64, Vec<PathBuf>)],
    deadline: Instant,
    work: F,
) -> Vec<(u64, Result<T, VisitError>)>
where
    T: Send + 'static,
    F: Fn(u64) -> T + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel::<(u64, Result<T, VisitError>)>();
    let batch: Vec<(u64, Vec<PathBuf>)> = targets.to_vec();
    let spawned = std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || {
            let home = match open_ro(&Path::new(SELF_PROC).join("thread-self/ns/net")) {
                Ok(h) => h,
                Err(e) => {
                    for (i, _) in &batch {
                        let _ = tx.send((*i, Err(VisitError::Denied(e))));
                    }
                    return;
                }
            };
            for (inode, paths) in &batch {
                if Instant::now() >= deadline {
                    return; // the caller marks the rest
                }
                let result = match enter(*inode, paths) {
                    Ok(()) => {
                        let r =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(*inode)));
                        if let Err(e) = rustix::thread::move_into_link_name_space(
                            home.as_fd(),
                            Some(rustix::thread::LinkNameSpaceType::Network),
                        ) {
                            let _ = tx.send((*inode, Err(VisitError::Stranded(e))));
                            return;
                        }
                        r.map_err(|p| {
                            VisitError::HelperFailed(format!(
                                "panicked: {}",
                                panic_message(p.as_ref())
                            ))
                        })
                    }
                    Err(e) => Err(e),
                };
                if tx.send((*inode, result)).is_err() {
                    return; // the caller stopped waiting
                }
            }
        });
    let mut out: Vec<(u64, Result<T, VisitError>)> = Vec::with_capacity(targets.len());
    if let Err(e) = spawned {
        let errno = Errno::from_io_error(&e).unwrap_or(Errno::AGAIN);
        return targets
            .iter()
            .map(|(i, _)| (*i, Err(VisitError::Denied(errno))))
            .collect();
    }
    let mut died = false;
    while out.len() < targets.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(r) => out.push(r),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                // Gone before every answer: stranded, past the deadline,
                // or dead outside `work`.
                died = Instant::now() < deadline;
                break;
            }
        }
    }
    let done: HashSet<u64> = out.iter().map(|(i, _)| *i).collect();
    for (i, _) in targets {
        if !done.contains(i) {
            let e = if died {
                VisitError::HelperFailed("stopped before it got there".into())
            } else {
                VisitError::Deadline
            };
            out.push((*i, Err(e)));
        }
    }
    out
}

/// The message of a caught panic.
pub(super) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with no message".into())
}

/// Enters the namespace `inode` from the first of `paths` that still
/// opens onto it.
pub(super) fn enter(inode: u64, paths: &[PathBuf]) -> Result<(), VisitError> {
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

/// Tries `setns` into the namespace at `own` (the caller's own): whether
/// this thread may enter network namespaces.
pub(super) fn probe_setns(own: &Path) -> Result<(), Errno> {
    let fd = open_ro(own)?;
    rustix::thread::move_into_link_name_space(
        fd.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
}

/// Whether CAP_SYS_ADMIN is in this thread's effective set (`CapEff` of
/// the exporter's own `/proc/thread-self/status`); `None` when unreadable.
pub(super) fn cap_sys_admin_effective() -> Option<bool> {
    const CAP_SYS_ADMIN: u32 = 21;
    let status = std::fs::read_to_string(Path::new(SELF_PROC).join("thread-self/status")).ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    let eff = u64::from_str_radix(hex.trim(), 16).ok()?;
    Some(eff & (1 << CAP_SYS_ADMIN) != 0)
}

/// Says what refused `setns` with `errno`, given whether CAP_SYS_ADMIN is
/// in the effective set: without it, the capability is missing; with it,
/// something beyond capabilities refused (a seccomp filter such as the
/// one systemd's `RestrictNamespaces=` installs, or an LSM policy).
pub(super) fn setns_refusal(errno: Errno, cap_sys_admin: Option<bool>) -> String {
    match cap_sys_admin {
        Some(true) => format!(
            "setns: {errno} although CAP_SYS_ADMIN is in the effective set: a seccomp filter or LSM policy refused it, \
             such as systemd's RestrictNamespaces= (allow `net` there, or drop it from the unit)"
        ),
        Some(false) => format!("setns: {errno}; it needs CAP_SYS_ADMIN"),
        None => format!(
            "setns: {errno}; it needs CAP_SYS_ADMIN, and no seccomp filter or LSM policy (such as systemd's RestrictNamespaces=) against it"
        ),
    }
}

/// How many threads dump namespaces at once by default: two (the
/// collector's thread and one more). Measured in docs/performance.md.
pub const DEFAULT_WORKERS: usize = 2;

/// Namespaces one pool thread dumps, with their cached fds.
pub(super) type Share<'h> = Vec<(u64, &'h mut Handle)>;

/// What became of one namespace's dump on the pool.
pub(super) enum Dumped {
    Read(Vec<Socket>),
    Failed(SampleError),
    /// The deadline passed before its turn.
    NotReached,
}

/// Dumps each namespace of `jobs` through its cached sock_diag socket, on
/// `workers` threads (the calling thread one of them; jobs are dealt out
/// in turn), and gives the outcomes back in the order of `jobs`, so that a
/// sample reads the same whatever the pool did. A thread that cannot be
/// started leaves its share to the calling thread; one that panics leaves
/// its namespaces failed (the caller drops their fds).
pub(super) fn dump_on_pool(
    jobs: Vec<(u64, &mut Handle)>,
    filter: &Filter,
    deadline: Instant,
    workers: usize,
) -> Vec<(u64, Dumped)> {
    let order: Vec<u64> = jobs.iter().map(|(inode, _)| *inode).collect();
    let workers = workers.clamp(1, jobs.len().max(1));
    let mut shares: Vec<Share> = (0..workers).map(|_| Vec::new()).collect();
    for (i, job) in jobs.into_iter().enumerate() {
        shares[i % workers].push(job);
    }
    let run = |share: Share| -> Vec<(u64, Dumped)> {
        let mut buf = Vec::with_capacity(4096);
        share
            .into_iter()
            .map(|(inode, h)| {
                if Instant::now() >= deadline {
                    return (inode, Dumped::NotReached);
                }
                let dumps = h.dumps(&mut buf);
                let mut out = Vec::new();
                match sock_diag::dump(&h.diag, filter, dumps, deadline, &mut h.seq, &mut out) {
                    Ok(()) => (inode, Dumped::Read(out)),
                    Err(e) => (inode, Dumped::Failed(e)),
                }
            })
            .collect()
    };
    let mut done: HashMap<u64, Dumped> = HashMap::with_capacity(order.len());
    // Each share but the first goes to a thread through a slot, so that
    // it is not lost when the thread cannot be started.
    let mut shares = shares.into_iter();
    let first = shares.next().unwrap_or_default();
    let slots: Vec<std::sync::Mutex<Option<Share>>> =
        shares.map(|s| std::sync::Mutex::new(Some(s))).collect();
    pub(super) fn take<'h>(slot: &std::sync::Mutex<Option<Share<'h>>>) -> Option<Share<'h>> {
        slot.lock().map(|mut s| s.take()).unwrap_or(None)
    }
    std::thread::scope(|scope| {
        let mut threads = Vec::new();
        let mut inline = vec![first];
        for slot in &slots {
            let spawned = std::thread::Builder::new()
                .name("netns-dump".into())
                .spawn_scoped(scope, || take(slot).map(run).unwrap_or_default());
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    log::debug!(
                        "--collector.netns: no dump thread ({e}); dumping on the collector's"
                    );
                    inline.extend(take(slot));
                }
            }
        }
        for share in inline {
            done.extend(run(share));
        }
        for t in threads {
            match t.join() {
                Ok(outcomes) => done.extend(outcomes),
                Err(p) => log::error!(
                    "--collector.netns: a dump thread panicked: {}",
                    panic_message(&*p)
                ),
            }
        }
    });
    order
        .into_iter()
        .map(|inode| {
            let outcome = done.remove(&inode).unwrap_or_else(|| {
                Dumped::Failed(SampleError::Unsupported(
                    "the dump thread that read it panicked".into(),
                ))
            });
            (inode, outcome)
        })
        .collect()
}
