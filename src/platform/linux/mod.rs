//! Linux behind the platform boundary: sockets from NETLINK_SOCK_DIAG
//! ([`netlink`]), holders from `/proc/<pid>/fd` ([`attribution`]), user
//! names from `getpwuid_r` ([`users`]), the ephemeral range from
//! `/proc/sys/net` ([`kernel`]), the tunnel devices that own kernel-held
//! UDP ports from rtnetlink ([`tunnels`]), capabilities from
//! `/proc/self/status`, unix signals and rlimits, and the sockets systemd
//! passes on socket activation ([`systemd`]). Every `/proc` read goes
//! through the `--path.procfs` root.

pub mod attribution;
pub mod kernel;
pub mod netlink;
pub mod systemd;
pub mod tunnels;
pub mod users;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::platform::{
    Attribution, EphemeralPorts, Filter, Holder, Platform, SampleError, Socket, UserNameResolver,
    UserResolver,
};
use crate::ranges::{PortSet, Protocol};

/// Where procfs is mounted unless `--path.procfs` says otherwise.
pub const DEFAULT_PROCFS: &str = "/proc";

/// The Linux platform: the sampler and the owner cache.
pub struct LinuxPlatform {
    procfs: PathBuf,
    attributor: attribution::Attributor,
    missing: Vec<&'static str>,
    sample_timeout: Duration,
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
        }
    }

    /// The owner cache, for tests.
    pub fn attributor(&self) -> &attribution::Attributor {
        &self.attributor
    }

    /// Of the kernel candidates, those whose sockets a second sample still
    /// shows: a holder that exited during the scan took its socket along.
    fn still_present(&self, sockets: &[Socket], candidates: &[u64]) -> HashSet<u64> {
        let wanted: HashSet<u64> = candidates.iter().copied().collect();
        let mut tcp = Vec::new();
        let mut udp = Vec::new();
        for s in sockets.iter().filter(|s| wanted.contains(&s.inode)) {
            match s.protocol {
                Protocol::Tcp => tcp.push((s.port, s.port)),
                Protocol::Udp => udp.push((s.port, s.port)),
            }
        }
        let filter = Filter {
            tcp: PortSet::from_intervals(tcp),
            udp: PortSet::from_intervals(udp),
        };
        match netlink::sample(&filter, self.sample_timeout) {
            Ok(again) => again
                .iter()
                .map(|s| s.inode)
                .filter(|i| wanted.contains(i))
                .collect(),
            Err(_) => HashSet::new(),
        }
    }
}

impl Platform for LinuxPlatform {
    fn sample(&mut self, filter: &Filter, timeout: Duration) -> Result<Vec<Socket>, SampleError> {
        self.sample_timeout = timeout;
        netlink::sample(filter, timeout)
    }

    fn attribute(&mut self, sockets: &[Socket], deadline: Instant) -> Attribution {
        let mut pass = self.attributor.attribute(sockets, deadline);
        let devices = if pass.kernel.is_empty() && pass.candidates.is_empty() {
            HashMap::new()
        } else {
            tunnels::udp_tunnel_ports().unwrap_or_else(|e| {
                log::debug!("cannot list tunnel devices over rtnetlink: {e}");
                HashMap::new()
            })
        };
        if !pass.candidates.is_empty() {
            let inodes: Vec<u64> = pass.candidates.iter().map(|c| c.0).collect();
            let present = self.still_present(sockets, &inodes);
            let port_of: HashMap<u64, (Protocol, u16)> = sockets
                .iter()
                .map(|s| (s.inode, (s.protocol, s.port)))
                .collect();
            let confirmed: Vec<u64> = pass
                .candidates
                .iter()
                .filter(|(inode, strict)| {
                    present.contains(inode)
                        && (*strict
                            || port_of.get(inode).is_some_and(|(p, port)| {
                                *p == Protocol::Udp && devices.contains_key(port)
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
                        .then(|| devices.get(&s.port).cloned())
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
        Ok(EphemeralPorts {
            tcp: ports.clone(),
            udp: ports,
        })
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
