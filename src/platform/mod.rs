//! The platform boundary: everything that touches the operating system
//! lives below this module, behind one small API, and the rest of the crate
//! (config, allowlist, report, metrics, HTTP, `check`) is platform-free.
//! The API is the [`Platform`] trait, whose steps pass values one way:
//! sample the sockets in a [`Filter`] into a [`Sample`] (sockets,
//! namespaces, what was [`Skipped`]), find their holders into an
//! [`Attribution`], confirm the kernel-held ones, each before a deadline;
//! besides, name a user, read the ephemeral ports, report missing
//! privileges. Then a few process-wide helpers
//! (signals, the open-file limit and raising it, allocator tuning, listening sockets,
//! systemd socket activation). [`host`] returns the
//! implementation for the machine: [`linux`] (sock_diag, `/proc`,
//! `getpwuid_r`, `/proc/sys/net`, capabilities) on Linux, `windows`
//! (`netstat2` for the socket tables, process images and tokens through
//! `windows-sys`, `netsh` for the port settings, the service control
//! manager) on Windows, [`portable`] (the `netstat2` crate alone)
//! elsewhere. How names compare on each is in [`names`]. Tests drive the
//! collector with fakes of the trait.

use std::collections::HashMap;
use std::net::IpAddr;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::ranges::{PortSet, Protocol};

#[cfg(target_os = "linux")]
pub mod linux;

#[cfg(not(target_os = "linux"))]
pub mod portable;
pub mod traffic;
pub mod trust;
/// Compiled on Windows; in Linux test builds only its OS-free parts
/// (`netsh` output parsing) are, so Linux CI checks them too.
#[cfg(any(windows, test))]
pub mod windows;

/// One socket as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Socket {
    pub protocol: Protocol,
    /// Kernel socket state (`TCP_ESTABLISHED` = 1 ... `TCP_NEW_SYN_RECV` = 12);
    /// UDP uses 1 for connected and 7 (`TCP_CLOSE`) for unconnected.
    pub state: u8,
    pub local: IpAddr,
    pub port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
    /// The socket owner's uid (the creator's effective uid); [`NO_UID`]
    /// where sockets carry none (Windows).
    pub uid: u32,
    /// The socket inode; 0 for sockets no process holds (TIME_WAIT, SYN_RECV).
    pub inode: u64,
    /// The owning pid when the backend knows it already (netstat2 does);
    /// `None` on Linux, where the `/proc` scan finds it.
    pub pid_hint: Option<u32>,
    /// The network namespace the socket lives in (its id, see
    /// [`Namespace::id`]) when the platform samples every namespace; 0 when
    /// it samples only its own.
    pub netns: u64,
}

/// The `uid` of sockets on platforms whose socket tables carry no uid
/// (Windows): never looked up, shown as `unknown`.
pub const NO_UID: u32 = u32::MAX;

pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_TIME_WAIT: u8 = 6;
pub const TCP_CLOSE: u8 = 7;
pub const TCP_LISTEN: u8 = 10;

/// The `state` label values, per protocol. Every one is exported (also at
/// zero), so the set is bounded and fixed.
pub const TCP_STATES: [&str; 11] = [
    "established",
    "syn_sent",
    "syn_recv",
    "fin_wait1",
    "fin_wait2",
    "time_wait",
    "close",
    "close_wait",
    "last_ack",
    "listen",
    "closing",
];
pub const UDP_STATES: [&str; 2] = ["unconn", "established"];

pub fn state_names(protocol: Protocol) -> &'static [&'static str] {
    match protocol {
        Protocol::Tcp => &TCP_STATES,
        Protocol::Udp => &UDP_STATES,
    }
}

impl Socket {
    /// A listener is a TCP socket in LISTEN or a UDP socket with no peer.
    pub fn is_listener(&self) -> bool {
        match self.protocol {
            Protocol::Tcp => self.state == TCP_LISTEN,
            Protocol::Udp => self.remote_port == 0,
        }
    }

    /// Whether a process can hold the socket: TIME_WAIT and request
    /// sockets (inode 0, and no pid from the backend) have no holder.
    pub fn can_be_held(&self) -> bool {
        self.inode != 0 || self.pid_hint.is_some()
    }

    /// Whether the socket holds its port (everything but TIME_WAIT).
    pub fn holds_port(&self) -> bool {
        !(self.protocol == Protocol::Tcp && self.state == TCP_TIME_WAIT)
    }

    /// The `state` label value; always one of [`state_names`].
    pub fn state_name(&self) -> &'static str {
        match self.protocol {
            Protocol::Udp => {
                if self.state == TCP_ESTABLISHED {
                    "established"
                } else {
                    "unconn"
                }
            }
            Protocol::Tcp => match self.state {
                1 => "established",
                2 => "syn_sent",
                // 12 is TCP_NEW_SYN_RECV, the kernel's request-socket state.
                3 | 12 => "syn_recv",
                4 => "fin_wait1",
                5 => "fin_wait2",
                6 => "time_wait",
                8 => "close_wait",
                9 => "last_ack",
                10 => "listen",
                11 => "closing",
                _ => "close",
            },
        }
    }
}

/// One value per protocol, TCP and UDP: the one pair type for what comes
/// per protocol (the ports to sample, the ephemeral ports, port intervals
/// being gathered).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PerProtocol<T> {
    pub tcp: T,
    pub udp: T,
}

impl<T> PerProtocol<T> {
    /// Each protocol's value from `f`.
    pub fn from_fn(mut f: impl FnMut(Protocol) -> T) -> PerProtocol<T> {
        PerProtocol {
            tcp: f(Protocol::Tcp),
            udp: f(Protocol::Udp),
        }
    }

    pub fn get(&self, protocol: Protocol) -> &T {
        match protocol {
            Protocol::Tcp => &self.tcp,
            Protocol::Udp => &self.udp,
        }
    }

    pub fn get_mut(&mut self, protocol: Protocol) -> &mut T {
        match protocol {
            Protocol::Tcp => &mut self.tcp,
            Protocol::Udp => &mut self.udp,
        }
    }
}

impl<T: Clone> PerProtocol<T> {
    /// One value for both protocols (Linux's single ip_local_port_range).
    pub fn same(value: T) -> PerProtocol<T> {
        PerProtocol {
            tcp: value.clone(),
            udp: value,
        }
    }
}

impl PerProtocol<PortSet> {
    /// The ports of `protocol` (the same as [`PerProtocol::get`]).
    pub fn ports(&self, protocol: Protocol) -> &PortSet {
        self.get(protocol)
    }
}

/// What to sample: the watched ports per protocol (an empty set skips that
/// protocol).
pub type Filter = PerProtocol<PortSet>;

/// Why a sample failed. The message names the dump and the kernel's answer.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// `what` names the OS channel (the sock_diag socket, the socket table).
    #[error("cannot open {what}: {source}")]
    Open {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{dump} dump: sending the request: {source}")]
    Send {
        dump: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{dump} dump: reading the reply: {source}")]
    Recv {
        dump: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{dump} dump: no complete answer from the kernel within {seconds} s")]
    Timeout { dump: String, seconds: u64 },
    /// The collection's deadline passed before the dump ended: what it
    /// would have said is unknown.
    #[error("{dump} dump: the collection's deadline passed before the kernel's answer ended")]
    Deadline { dump: String },
    #[error("{dump} dump: the kernel refused it: {message}{hint}")]
    Kernel {
        dump: String,
        message: String,
        hint: &'static str,
    },
    #[error("{dump} dump: malformed reply: {source}")]
    Decode {
        dump: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("socket sampling is not supported here: {0}")]
    Unsupported(String),
}

/// The process that holds a socket. No pid reaches a metric label; it is
/// shown only by `check` and the status page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    /// The process name: the kernel's `comm` on Linux (at most 15 bytes,
    /// any bytes but NUL), the image name on other platforms.
    pub comm: Vec<u8>,
    /// The executable's full path, when readable.
    pub exe: Option<Vec<u8>>,
    /// The account the process runs as, where the platform names it per
    /// process (Windows: `DOMAIN\user`); `None` on Linux, where the
    /// socket's uid is named instead.
    pub user: Option<String>,
    /// The account's id, where the platform has one besides the name
    /// (Windows: the SID, `S-1-5-18`); `None` on Linux.
    pub user_id: Option<String>,
    /// The process name is not the file name of its executable but the
    /// name of a link to it in a directory only root can write (`python3`
    /// runs `python3.11`, busybox applets run `busybox`), as the platform
    /// checked ([`trust`]); the allowlist then takes the name as the
    /// program's. Always false where names are the image's (Windows).
    pub name_via_link: bool,
}

#[cfg(test)]
impl Owner {
    /// A process named `comm` with pid `pid` and nothing else known, for tests.
    pub fn named(pid: u32, comm: &[u8]) -> Owner {
        Owner {
            pid,
            comm: comm.to_vec(),
            exe: None,
            user: None,
            user_id: None,
            name_via_link: false,
        }
    }
}

impl Owner {
    /// Whether the executable is gone: deleted after the process started,
    /// or an anonymous memory file (`memfd_create`), as the exe link says
    /// (`/usr/bin/x (deleted)`, `/memfd:name (deleted)`), or not the file
    /// its path names ([`NOT_THIS_FILE_MARK`]). A gone
    /// executable proves nothing about the process, so it never satisfies
    /// an allowlist entry, and it is marked wherever the owner is shown.
    pub fn exe_gone(&self) -> bool {
        self.exe.as_deref().is_some_and(exe_is_gone)
    }
}

/// [`Owner::exe_gone`] for an exe path as the platform read it: the
/// kernel's ` (deleted)` mark on Linux (a memfd's link is
/// `/memfd:name (deleted)`), which the Windows attribution also gives an
/// image whose file is no longer at its path.
pub fn exe_is_gone(exe: &[u8]) -> bool {
    exe.ends_with(GONE_MARK) || exe.ends_with(NOT_THIS_FILE_MARK) || exe.starts_with(b"/memfd:")
}

/// The mark the platform leaves at the end of the path of an executable
/// that is gone.
pub const GONE_MARK: &[u8] = b" (deleted)";

/// The mark the Linux platform leaves at the end of an exe path that a
/// user's private mount namespace forged: the file the path names, as the
/// host sees it, is not the file the process runs (a bind mount over it).
/// Treated as gone: what the path says proves nothing.
pub const NOT_THIS_FILE_MARK: &[u8] = b" (not the file at this path)";

/// Who holds a socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// A process (the first one found; a socket shared by several
    /// processes is shown under one of them).
    Process(Arc<Owner>),
    /// No process holds it: a complete, privileged scan of every process
    /// found no holder, so the kernel owns it (tunnel endpoints such as
    /// VXLAN, GENEVE or WireGuard, NFS/SMB clients; Windows' `System`).
    /// `device` names the tunnel device when the kernel says which.
    Kernel { device: Option<String> },
}

/// What one attribution pass found: a holder for each sampled socket
/// (index for index with [`Sample::sockets`]; `None` where the holder is
/// unknown), the sockets that may be held by no process, what was left
/// out, and counters.
#[derive(Clone, Debug, Default)]
pub struct Attribution {
    pub holders: Vec<Option<Holder>>,
    /// Sockets a complete scan found no holder for (indexes into the
    /// sample), left `None` in `holders` until [`Platform::confirm_kernel`]
    /// confirms them as kernel-held or drops them (they stay unknown).
    pub candidates: Vec<KernelCandidate>,
    /// Sockets a second sample showed closed before their holder was
    /// found, which leave nothing behind (listeners and UDP sockets;
    /// indexes into the sample): the collection drops them, rather than
    /// report a listener of unknown owner that no longer exists.
    pub closed: Vec<usize>,
    /// What attribution or the kernel check had to leave out.
    pub skipped: Vec<Skipped>,
    pub stats: PassStats,
}

/// A socket that may be held by no process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelCandidate {
    /// The socket's index in the sample.
    pub index: usize,
    /// No process refused the scan that missed it: a second sample that
    /// still shows it is proof enough. A weak candidate (some process
    /// refused the scan despite full privilege) needs positive evidence
    /// from the kernel, a tunnel device on its port.
    pub strict: bool,
}

/// Counters of one attribution pass, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassStats {
    /// Cached owners confirmed without a scan.
    pub confirmed: usize,
    /// Sockets that needed a scan.
    pub searched: usize,
    /// Processes whose sockets the scan read.
    pub processes_scanned: usize,
    /// Processes that could not be read for lack of privilege.
    pub permission_denied: usize,
    /// A scan was still running at the deadline, with sockets left to
    /// find; it finishes in the background.
    pub deadline_hit: bool,
    /// Sockets found to be held by the kernel.
    pub kernel: usize,
    /// fd links read (Linux): the cost that must follow owners, not sockets.
    pub links_read: usize,
    /// Sockets not yet placed that a second sample showed closed (Linux):
    /// not searched for.
    pub closed: usize,
}

/// One network namespace a sample covered, when the platform samples every
/// namespace on the host (`--collector.netns`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Namespace {
    /// Its id: the `netns` of its sockets (on Linux the namespace's inode,
    /// never 0).
    pub id: u64,
    /// The host's namespace (on Linux, pid 1's in `--path.procfs`).
    pub host: bool,
    /// Its name where it has one (`ip netns`); empty otherwise.
    pub name: String,
    /// The container it belongs to (an id from a process's cgroup); empty
    /// when none or unknown.
    pub container: String,
    /// The Kubernetes pod and namespace it belongs to; empty when none or
    /// unknown.
    pub pod: String,
    pub pod_namespace: String,
    /// The ports outgoing connections can take in it; `None` when they
    /// cannot be read there.
    pub ephemeral: Option<EphemeralPorts>,
}

/// What a per-namespace sample covered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Namespaces {
    /// The host's namespace and every namespace with at least one sampled
    /// socket, host first.
    pub list: Vec<Namespace>,
    /// Namespaces found but not sampled (no access, or in the fallback a
    /// namespace no process holds): what they hold is unknown.
    pub unsampled: u32,
    /// The union of the dynamic (ephemeral) port ranges of the namespaces
    /// sampled but not in `list` (no socket in this sample's ports): a
    /// namespace whose range differs from every listed one has its
    /// outgoing connections seen only once the next sample covers it.
    /// Empty where they cannot be read (the /proc fallback).
    pub ephemeral_unlisted: EphemeralPorts,
}

/// What one [`Platform::sample`] saw: the sockets, the namespaces it
/// covered, and what it had to leave out. The one value the later steps
/// ([`Platform::attribute`], [`Platform::confirm_kernel`], the counting)
/// read.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub sockets: Vec<Socket>,
    /// With `--collector.netns`: the namespaces covered (each socket's
    /// `netns` is the id of one of them); `None` when the platform samples
    /// only its own and sockets carry `netns` 0.
    pub namespaces: Option<Namespaces>,
    /// Parts left out (the deadline passed, or the OS refused one part):
    /// what they hold is unknown, never "nothing".
    pub skipped: Vec<Skipped>,
    /// Inodes of sockets sampled only to be counted (the dynamic range's,
    /// outside every watched range), set by the collector: no verdict
    /// rests on their owners, so attribution finds them in what it reads
    /// anyway (known owners' freed and new fds, new processes) and never
    /// re-reads every owner of their uid for them.
    pub count_only: InodeSet,
}

/// A set of socket inodes, hashed fast (foldhash, seeded per process):
/// attribution probes its sets and maps for each of tens of thousands of
/// sockets a collection, where SipHash's cost showed.
pub type InodeSet = std::collections::HashSet<u64, foldhash::fast::RandomState>;
/// A map keyed by socket inode, hashed as [`InodeSet`].
pub type InodeMap<V> = std::collections::HashMap<u64, V, foldhash::fast::RandomState>;

/// A part of a collection that was left out, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The stage, one of [`Skipped::STAGES`] (a metric label, so the set
    /// is fixed).
    pub stage: &'static str,
    /// Which part, for the log and the status document, e.g.
    /// `netns 4026532301 (blue): udp dump`.
    pub what: String,
    /// Why: `deadline passed`, or the error.
    pub reason: String,
}

impl Skipped {
    /// Sampling the sockets (a dump, a namespace).
    pub const SAMPLE: &'static str = "sample";
    /// Finding the processes that hold the sockets.
    pub const ATTRIBUTION: &'static str = "attribution";
    /// Confirming sockets no process holds (the second sample).
    pub const KERNEL_CHECK: &'static str = "kernel_check";
    /// Naming the tunnel devices of kernel-held sockets.
    pub const TUNNELS: &'static str = "tunnels";
    /// Naming the users of listeners.
    pub const USERS: &'static str = "users";
    /// Every stage, in pipeline order: the `stage` label values.
    pub const STAGES: [&'static str; 5] = [
        Skipped::SAMPLE,
        Skipped::ATTRIBUTION,
        Skipped::KERNEL_CHECK,
        Skipped::TUNNELS,
        Skipped::USERS,
    ];

    pub fn new(stage: &'static str, what: impl Into<String>, reason: impl Into<String>) -> Skipped {
        Skipped {
            stage,
            what: what.into(),
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.stage, self.what, self.reason)
    }
}

/// Why the platform could not be built (at start, or when the collector
/// is rebuilt after a failure); the message names what failed.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("cannot start the {what} thread: {source}")]
    Spawn {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Options for [`host_with`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlatformOptions {
    /// Sample every network namespace on the host, not only the exporter's
    /// own (`--collector.netns`).
    pub netns: bool,
    /// With `netns`, how many threads dump namespaces at once
    /// (`--collector.netns.workers`); `None` for the default.
    pub netns_workers: Option<usize>,
}

/// The answer to a user-name lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserLookup {
    /// The account's name.
    Name(String),
    /// The user database answered that there is no such account.
    NoEntry,
}

/// Looks up a user's name; may block (NSS, LDAP), so it is only called
/// from a thread of its own. An `Err` is a failed lookup, to be retried.
pub type UserResolver = Arc<dyn Fn(u32) -> Result<UserLookup, String> + Send + Sync>;

/// Looks up an account by name: its uid, `Ok(None)` when the user
/// database has no such account, `Err` when the lookup failed. May block.
pub type UserNameResolver = Arc<dyn Fn(&str) -> Result<Option<u32>, String> + Send + Sync>;

/// Ports outgoing connections can take (the ephemeral range less reserved
/// ports), per protocol.
pub type EphemeralPorts = PerProtocol<PortSet>;

/// How a socket's local TCP port was taken, as the kernel's bind bucket
/// for the port says (one bucket per port and network namespace, shared
/// by every socket on the port).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharing {
    /// `connect()` took it by itself: another `connect()` toward another
    /// destination may take it too.
    Shared,
    /// `bind()` took it (a listener, `bind((addr, 0))` before `connect()`,
    /// an explicit port): no `connect()` without `bind()` can take it,
    /// toward any destination.
    Exclusive,
    /// Not known: the kernel was not asked, or the port was not bound when
    /// it was.
    Unknown,
}

/// A walk of how the TCP ports were taken ([`Platform::port_sharing`]),
/// started and not yet waited for. Dropped unwaited, it finishes on its own.
pub struct PortWalk(Box<dyn FnOnce() -> (Result<PortSharing, String>, std::time::Duration) + Send>);

impl PortWalk {
    /// A walk already done (or refused).
    pub fn ready(result: Result<PortSharing, String>) -> PortWalk {
        PortWalk(Box::new(move || (result, std::time::Duration::ZERO)))
    }

    /// A walk whose result and duration `wait` gives (joining its thread).
    pub fn later(
        wait: impl FnOnce() -> (Result<PortSharing, String>, std::time::Duration) + Send + 'static,
    ) -> PortWalk {
        PortWalk(Box::new(wait))
    }

    /// The walk's result once it has finished, and how long it took.
    pub fn wait(self) -> (Result<PortSharing, String>, std::time::Duration) {
        (self.0)()
    }
}

impl std::fmt::Debug for PortWalk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PortWalk")
    }
}

/// The TCP ports bound in one network namespace, by how they were taken
/// ([`Sharing`]), from one walk of the kernel's sockets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSharing {
    /// The namespace walked (on Linux its inode: a socket's `netns` with
    /// `--collector.netns`).
    pub netns: u64,
    shared: Vec<u64>,
    exclusive: Vec<u64>,
}

impl PortSharing {
    pub fn new(netns: u64) -> PortSharing {
        PortSharing {
            netns,
            shared: vec![0; 1024],
            exclusive: vec![0; 1024],
        }
    }

    /// Records a bound port. A port seen both ways (several buckets, one
    /// per VRF) is exclusive: the headroom errs low.
    pub fn insert(&mut self, port: u16, shared: bool) {
        let bits = if shared {
            &mut self.shared
        } else {
            &mut self.exclusive
        };
        bits[usize::from(port / 64)] |= 1 << (port % 64);
    }

    /// How `port` was taken.
    pub fn of(&self, port: u16) -> Sharing {
        let is = |bits: &[u64]| bits[usize::from(port / 64)] & (1 << (port % 64)) != 0;
        if is(&self.exclusive) {
            Sharing::Exclusive
        } else if is(&self.shared) {
            Sharing::Shared
        } else {
            Sharing::Unknown
        }
    }
}

/// The operating system, as the collector sees it. One instance lives on
/// the collection thread and keeps its caches across collections. A
/// collection calls, in this order and passing each step's value to the
/// next: [`Platform::sample`], [`Platform::attribute`],
/// [`Platform::confirm_kernel`]. No step reads back what an earlier one
/// left behind.
pub trait Platform: Send {
    /// One snapshot of the sockets in `filter`'s ports, with the
    /// namespaces it covered and the parts it had to leave out. Fails
    /// (never a silent empty list) when the OS refuses the whole of it;
    /// waits no later than `deadline`.
    fn sample(&mut self, filter: &Filter, deadline: Instant) -> Result<Sample, SampleError>;

    /// Finds the holder of each socket of `sample`, waiting no later than
    /// `deadline`; what is not found by then is unknown. Sockets no process
    /// was found to hold are returned as kernel *candidates*, for
    /// [`Platform::confirm_kernel`].
    fn attribute(&mut self, sample: &Sample, deadline: Instant) -> Attribution;

    /// The step after [`Platform::attribute`]: confirms or drops its kernel
    /// candidates (a holder that exited mid-scan took its socket along) and
    /// names the tunnel device of kernel-held sockets, waiting no later
    /// than `deadline`. What it cannot check stays unknown and is listed in
    /// the attribution's `skipped`. The default, for platforms that never
    /// leave candidates, returns `attribution` as it is.
    fn confirm_kernel(
        &mut self,
        _sample: &Sample,
        attribution: Attribution,
        _deadline: Instant,
    ) -> Attribution {
        attribution
    }

    /// Whether [`Platform::sample`] covers every network namespace (and so
    /// its [`Sample::namespaces`] is set); known before any sample, so that
    /// a failed one is still reported per namespace.
    fn samples_every_namespace(&self) -> bool {
        false
    }

    /// The ports outgoing connections can take, per protocol.
    fn ephemeral_ports(&self) -> Result<EphemeralPorts, String>;

    /// Ports of `protocol` the platform will not let any process bind
    /// (Windows excluded port ranges); `Ok(None)` where there is no such
    /// thing (Linux), so that no metric claims a count it cannot have.
    fn excluded_ports(&self, _protocol: Protocol) -> Result<Option<PortSet>, String> {
        Ok(None)
    }

    /// How each TCP port of the exporter's own network namespace was
    /// taken ([`PortSharing`]): a walk started now, which the platform may
    /// run on a thread of its own beside what the collection does next, and whose
    /// result [`PortWalk::wait`] gives; `Err` says why it cannot be told
    /// here and what would tell it (the default: only Linux with a BPF
    /// socket iterator shows it).
    fn port_sharing(&mut self) -> PortWalk {
        PortWalk::ready(Err(
            "this platform does not show how a port was taken".to_string()
        ))
    }

    /// A resolver for user names, to run on a lookup thread.
    fn user_resolver(&self) -> UserResolver;

    /// A resolver from account names to uids, to check the allowlist's
    /// `user:` names at load; `None` where the platform has none.
    fn user_name_resolver(&self) -> Option<UserNameResolver> {
        None
    }

    /// The privileges attribution lacks, by name (empty when it has all).
    fn missing_privileges(&self) -> Vec<&'static str>;

    /// What the listener trail tells of process `pid` besides its name and
    /// executable (parent, command line, start time); `None` where the
    /// platform cannot read them (the default: Windows and the portable
    /// backend, where the trail shows them as null). Read once per
    /// recorded event, never per socket.
    fn process_details(&self, _pid: u32) -> Option<ProcessDetails> {
        None
    }
}

/// A process's parent, command line and start time, for the listener
/// trail; each part `None` where it could not be read (the process
/// exited, or hides from the exporter).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessDetails {
    pub ppid: Option<u32>,
    /// The raw command line: arguments separated by NUL (as the OS gives
    /// it, at most a few KiB); the trail cuts, escapes and redacts it.
    pub cmdline: Option<Vec<u8>>,
    /// When the process started, in Unix seconds.
    pub start_time: Option<f64>,
}

/// The help text of `portrange_ephemeral_overlap_ports`: where the
/// ephemeral ports come from.
#[cfg(not(windows))]
pub const EPHEMERAL_OVERLAP_HELP: &str = "Ports of the range inside net.ipv4.ip_local_port_range and not in ip_local_reserved_ports: ports outgoing connections can take.";
#[cfg(windows)]
pub const EPHEMERAL_OVERLAP_HELP: &str = "Ports of the range inside the protocol's dynamic port range (netsh int ipv4 show dynamicport tcp|udp) and not in an excluded port range: ports outgoing connections can take.";

/// How to take a range's ports out of the dynamic range, in the
/// platform's words: the exact setting for `spec`, for `check`'s warning,
/// the page and the logs (the alert's description says the same).
#[cfg(not(windows))]
pub fn reserve_ports_fix(spec: &PortSet, _protocol: Protocol) -> String {
    format!(
        "reserve them: the line \"net.ipv4.ip_local_reserved_ports = {spec}\" in /etc/sysctl.d/60-portrange.conf, then sysctl --system (keep any ports already reserved in the list)"
    )
}
#[cfg(windows)]
pub fn reserve_ports_fix(spec: &PortSet, protocol: Protocol) -> String {
    let commands: Vec<String> = spec
        .intervals()
        .iter()
        .map(|&(lo, hi)| {
            format!(
                "netsh int ipv4 add excludedportrange protocol={} startport={lo} numberofports={}",
                protocol.as_str(),
                u32::from(hi) - u32::from(lo) + 1
            )
        })
        .collect();
    format!("exclude them: {}", commands.join("; "))
}

/// The help text of `portrange_ephemeral_ports`: where the dynamic
/// range comes from.
#[cfg(not(windows))]
pub const EPHEMERAL_PORTS_HELP: &str = "Ports of the dynamic (ephemeral) range that connect() without bind() and bind(0) take from: net.ipv4.ip_local_port_range (which governs IPv6 too) less net.ipv4.ip_local_reserved_ports, re-read every scrape.";
#[cfg(windows)]
pub const EPHEMERAL_PORTS_HELP: &str = "Ports of the protocol's dynamic port range (netsh int ipv4 show dynamicport tcp|udp) less the excluded port ranges, re-read every scrape.";

/// What gives attribution every process, in the words of the platform:
/// log lines and `check` say "missing X (or <this>)".
#[cfg(not(windows))]
pub const RUN_PRIVILEGED: &str = "run as root";
#[cfg(windows)]
pub const RUN_PRIVILEGED: &str = "run as LocalSystem";

/// Why a listener's owner is unknown when nothing is missing and no scan
/// ran out of time, for `check`.
#[cfg(not(windows))]
pub const UNSEEN_OWNER: &str =
    "no visible process holds the socket: it may belong to another pid namespace";
#[cfg(windows)]
pub const UNSEEN_OWNER: &str = "the socket table names no owner (pid 0) or the owner exited";

/// The traffic counters' table of exporter instance `instance` (the
/// port it listens on: two exporters in one network namespace keep two
/// tables): the exporter's own nftables table on Linux, none elsewhere.
pub fn traffic_table(instance: &str) -> Box<dyn traffic::TrafficTable> {
    #[cfg(target_os = "linux")]
    {
        Box::new(linux::nftables::NftTable::new(instance))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = instance;
        Box::new(traffic::Unavailable)
    }
}

/// The platform of this machine; `procfs` is the `/proc` root on Linux.
pub fn host(procfs: &Path) -> Result<Box<dyn Platform>, PlatformError> {
    host_with(procfs, &PlatformOptions::default())
}

/// Like [`host`], with options. Sampling every network namespace exists on
/// Linux only; elsewhere the option is refused in the log and ignored.
pub fn host_with(
    procfs: &Path,
    options: &PlatformOptions,
) -> Result<Box<dyn Platform>, PlatformError> {
    #[cfg(target_os = "linux")]
    {
        Ok(Box::new(linux::LinuxPlatform::with_options(
            procfs.to_path_buf(),
            options,
        )?))
    }
    #[cfg(windows)]
    {
        let _ = procfs;
        if options.netns {
            log::warn!(
                "--collector.netns samples Linux network namespaces; Windows has none, so it is ignored"
            );
        }
        Ok(Box::new(windows::WindowsPlatform::new()))
    }
    #[cfg(not(any(target_os = "linux", windows)))]
    {
        let _ = procfs;
        if options.netns {
            log::warn!(
                "--collector.netns samples Linux network namespaces; this platform has none, so it is ignored"
            );
        }
        Ok(Box::new(portable::PortablePlatform::new()))
    }
}

/// Binds the first address that works, with a listen backlog of 4096 (the
/// kernel caps it at net.core.somaxconn): a burst of connections must not
/// overflow the accept queue and get reset before the server sees them.
/// An IPv6 wildcard is bound dual-stack (IPV6_V6ONLY off), so that
/// IPv4 clients reach it whatever the host's bindv6only default is.
pub fn bind_listener(addrs: &[std::net::SocketAddr]) -> anyhow::Result<tokio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut last = None;
    for a in addrs {
        let attempt = (|| {
            let socket = Socket::new(Domain::for_address(*a), Type::STREAM, Some(Protocol::TCP))?;
            if let std::net::SocketAddr::V6(v6) = a
                && v6.ip().is_unspecified()
            {
                socket.set_only_v6(false)?;
            }
            // SO_REUSEADDR lets a restart bind while old connections sit in
            // TIME_WAIT; on Windows it would let another process steal the
            // port, so it is left off there.
            #[cfg(not(windows))]
            socket.set_reuse_address(true)?;
            socket.set_nonblocking(true)?;
            socket.bind(&(*a).into())?;
            socket.listen(4096)?;
            tokio::net::TcpListener::from_std(socket.into())
        })();
        match attempt {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(anyhow::Error::new(e).context(format!("binding {a}"))),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no address to bind")))
}

/// The listening sockets systemd passed on socket activation
/// (`--web.systemd-socket`); an error says why there are none.
pub fn systemd_listeners() -> anyhow::Result<Vec<std::net::TcpListener>> {
    #[cfg(target_os = "linux")]
    {
        Ok(linux::systemd::listeners()?)
    }
    #[cfg(not(target_os = "linux"))]
    {
        anyhow::bail!(
            "--web.systemd-socket: socket activation is a systemd feature, not available here"
        )
    }
}

/// A registry with the exporter's own process metrics (`process_*`): the
/// metrics library's collector on Linux, ours on Windows.
pub fn self_metrics_registry() -> prometheus::Registry {
    let registry = prometheus::Registry::new();
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("a fresh registry accepts the process collector");
    #[cfg(windows)]
    registry
        .register(Box::new(windows::process_metrics::ProcessCollector::new()))
        .expect("a fresh registry accepts the process collector");
    registry
}

#[cfg(target_os = "linux")]
use linux::DEFAULT_PROCFS;
/// Unused where there is no procfs; kept so the flag means the same.
#[cfg(not(target_os = "linux"))]
const DEFAULT_PROCFS: &str = "/proc";

/// The default `--path.procfs`.
pub fn default_procfs() -> PathBuf {
    PathBuf::from(DEFAULT_PROCFS)
}

#[cfg(target_os = "linux")]
pub use linux::{
    ReloadSignals, init_process, open_file_limit, raise_open_file_limit, reload_signals,
    shutdown_signal,
};
#[cfg(not(any(target_os = "linux", windows)))]
pub use portable::{
    ReloadSignals, init_process, open_file_limit, raise_open_file_limit, reload_signals,
    shutdown_signal,
};
#[cfg(windows)]
pub use windows::{
    ReloadSignals, init_process, open_file_limit, raise_open_file_limit, reload_signals,
    shutdown_signal,
};

/// Maps each socket to its holder through a per-key map (a convenience for
/// backends that find holders by inode or pid).
pub fn holders_by<K: std::hash::Hash + Eq>(
    sockets: &[Socket],
    key: impl Fn(&Socket) -> Option<K>,
    found: &HashMap<K, Holder>,
) -> Vec<Option<Holder>> {
    sockets
        .iter()
        .map(|s| key(s).and_then(|k| found.get(&k).cloned()))
        .collect()
}
