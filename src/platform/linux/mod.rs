//! Linux behind the platform boundary: sockets from NETLINK_SOCK_DIAG
//! ([`netlink`]), holders from `/proc/<pid>/fd` ([`attribution`]), user
//! names from `getpwuid_r` ([`users`]), the ephemeral range from
//! `/proc/sys/net` ([`kernel`]), the tunnel devices that own kernel-held
//! UDP ports from rtnetlink ([`tunnels`]), capabilities from
//! `/proc/self/status`, unix signals and rlimits, and the sockets systemd
//! passes on socket activation ([`systemd`]). Every `/proc` read goes
//! through the `--path.procfs` root. With `--collector.netns`, [`netns`]
//! samples every network namespace on the host instead of the exporter's
//! own.

pub mod attribution;
pub mod kernel;
pub mod netlink;
pub mod netns;
pub mod systemd;
pub mod tunnels;
pub mod users;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::platform::{
    Attribution, EphemeralPorts, Filter, Holder, Namespaces, Platform, PlatformError,
    PlatformOptions, SampleError, Socket, UserNameResolver, UserResolver,
};
use crate::ranges::{PortSet, Protocol};

/// Port intervals per protocol (TCP, UDP).
type Intervals = (Vec<(u16, u16)>, Vec<(u16, u16)>);

/// Where procfs is mounted unless `--path.procfs` says otherwise.
pub const DEFAULT_PROCFS: &str = "/proc";

/// The Linux platform: the sampler and the owner cache.
pub struct LinuxPlatform {
    procfs: PathBuf,
    attributor: attribution::Attributor,
    missing: Vec<&'static str>,
    sample_timeout: Duration,
    /// Every network namespace (`--collector.netns`), or only our own.
    netns: Option<netns::NetnsSampler>,
}

impl LinuxPlatform {
    pub fn new(procfs: PathBuf) -> LinuxPlatform {
        let missing = attribution::missing_capabilities(&procfs);
        let mut attributor = attribution::Attributor::new(procfs.clone());
        let host_pids = attribution::shows_host_pids(&procfs);
        attributor.set_sees_all(missing.is_empty() && host_pids);
        if missing.is_empty() && !host_pids {
            log::info!(
                "{} is not the host's pid namespace (no kernel threads visible): sockets with no visible holder stay \"unknown\" rather than kernel-held",
                procfs.display()
            );
        }
        LinuxPlatform {
            procfs,
            attributor,
            missing,
            sample_timeout: Duration::from_secs(5),
            netns: None,
        }
    }

    /// The platform with `options`; fails when a part of it cannot be
    /// started (the `--collector.netns` probe thread).
    pub fn with_options(
        procfs: PathBuf,
        options: &PlatformOptions,
    ) -> Result<LinuxPlatform, PlatformError> {
        let netns = if options.netns {
            Some(netns::NetnsSampler::new(netns::Paths::new(procfs.clone()))?)
        } else {
            None
        };
        let mut p = LinuxPlatform::new(procfs);
        p.netns = netns;
        Ok(p)
    }

    /// The owner cache, for tests.
    pub fn attributor(&self) -> &attribution::Attributor {
        &self.attributor
    }

    /// Of the kernel candidates, those whose sockets a second sample (of
    /// their own namespace) still shows: a holder that exited during the
    /// scan took its socket along.
    fn still_present(&mut self, sockets: &[Socket], candidates: &[u64]) -> HashSet<u64> {
        let wanted: HashSet<u64> = candidates.iter().copied().collect();
        let mut per_netns: HashMap<u64, Intervals> = HashMap::new();
        for s in sockets.iter().filter(|s| wanted.contains(&s.inode)) {
            let (tcp, udp) = per_netns.entry(s.netns).or_default();
            match s.protocol {
                Protocol::Tcp => tcp.push((s.port, s.port)),
                Protocol::Udp => udp.push((s.port, s.port)),
            }
        }
        let mut present = HashSet::new();
        for (ns, (tcp, udp)) in per_netns {
            let filter = Filter {
                tcp: PortSet::from_intervals(tcp),
                udp: PortSet::from_intervals(udp),
            };
            let again = match &mut self.netns {
                Some(n) if ns != 0 => n.resample(ns, &filter, self.sample_timeout),
                _ => netlink::sample(&filter, self.sample_timeout),
            };
            if let Ok(again) = again {
                present.extend(again.iter().map(|s| s.inode).filter(|i| wanted.contains(i)));
            }
        }
        present
    }

    /// The UDP tunnel devices by (namespace, port), for the namespaces of
    /// `sockets`.
    fn tunnel_devices(&mut self, sockets: &[Socket]) -> HashMap<(u64, u16), String> {
        let namespaces: HashSet<u64> = sockets.iter().map(|s| s.netns).collect();
        let mut out = HashMap::new();
        for ns in namespaces {
            let found = match &mut self.netns {
                Some(n) if ns != 0 => n.tunnel_ports(ns),
                _ => tunnels::udp_tunnel_ports(),
            };
            match found {
                Ok(ports) => out.extend(ports.into_iter().map(|(port, dev)| ((ns, port), dev))),
                Err(e) => log::debug!("cannot list tunnel devices over rtnetlink: {e}"),
            }
        }
        out
    }
}

impl Platform for LinuxPlatform {
    fn sample(&mut self, filter: &Filter, timeout: Duration) -> Result<Vec<Socket>, SampleError> {
        self.sample_timeout = timeout;
        match &mut self.netns {
            Some(n) => n.sample(filter, timeout),
            None => netlink::sample(filter, timeout),
        }
    }

    fn namespaces(&self) -> Option<Namespaces> {
        self.netns.as_ref().map(|n| n.namespaces())
    }

    fn attribute(&mut self, sockets: &[Socket], deadline: Instant) -> Attribution {
        let mut pass = self.attributor.attribute(sockets, deadline);
        let devices = if pass.kernel.is_empty() && pass.candidates.is_empty() {
            HashMap::new()
        } else {
            let involved: Vec<Socket> = sockets
                .iter()
                .filter(|s| {
                    pass.kernel.contains(&s.inode) || pass.candidates.iter().any(|c| c.0 == s.inode)
                })
                .cloned()
                .collect();
            self.tunnel_devices(&involved)
        };
        if !pass.candidates.is_empty() {
            let inodes: Vec<u64> = pass.candidates.iter().map(|c| c.0).collect();
            let present = self.still_present(sockets, &inodes);
            let port_of: HashMap<u64, (Protocol, u64, u16)> = sockets
                .iter()
                .map(|s| (s.inode, (s.protocol, s.netns, s.port)))
                .collect();
            let confirmed: Vec<u64> = pass
                .candidates
                .iter()
                .filter(|(inode, strict)| {
                    present.contains(inode)
                        && (*strict
                            || port_of.get(inode).is_some_and(|(p, ns, port)| {
                                *p == Protocol::Udp && devices.contains_key(&(*ns, *port))
                            }))
                })
                .map(|c| c.0)
                .collect();
            self.attributor.confirm_kernel(&confirmed);
            pass.kernel.extend(confirmed);
            pass.stats.kernel = pass.kernel.len();
        }
        let holders = sockets
            .iter()
            .map(|s| {
                if s.inode == 0 {
                    return None;
                }
                if let Some(o) = pass.owners.get(&s.inode) {
                    return Some(Holder::Process(o.clone()));
                }
                pass.kernel.contains(&s.inode).then(|| Holder::Kernel {
                    device: (s.protocol == Protocol::Udp)
                        .then(|| devices.get(&(s.netns, s.port)).cloned())
                        .flatten(),
                })
            })
            .collect();
        Attribution {
            holders,
            stats: pass.stats,
        }
    }

    fn ephemeral_ports(&self) -> Result<EphemeralPorts, String> {
        // One setting governs both protocols (and IPv6 too).
        let ports = kernel::ephemeral_ports(&self.procfs).map_err(|e| e.to_string())?;
        Ok(EphemeralPorts::same(ports))
    }

    fn user_resolver(&self) -> UserResolver {
        Arc::new(users::lookup)
    }

    fn user_name_resolver(&self) -> Option<UserNameResolver> {
        Some(Arc::new(users::lookup_name))
    }

    fn missing_privileges(&self) -> Vec<&'static str> {
        self.missing.clone()
    }
}

/// Process-wide setup before any thread starts: glibc gives each thread
/// that contends for the heap an arena of its own; for a small exporter
/// that is memory kept for nothing, and RSS that creeps up while the thread
/// pools warm. Two arenas are plenty.
pub fn init_process() {
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
