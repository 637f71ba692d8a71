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
    Attribution, EphemeralPorts, Filter, Holder, Namespaces, Platform, PlatformOptions, Sample,
    SampleError, Skipped, Socket, UserNameResolver, UserResolver,
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
    /// Every network namespace (`--collector.netns`), or only our own.
    netns: Option<netns::NetnsSampler>,
    /// Tunnel devices per namespace (0: our own, without the collector).
    tunnels: tunnels::TunnelCache,
    /// Stages whose skipped parts were logged at warning level once.
    warned_stages: HashSet<&'static str>,
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
            netns: None,
            tunnels: tunnels::TunnelCache::default(),
            warned_stages: HashSet::new(),
        }
    }

    pub fn with_options(procfs: PathBuf, options: &PlatformOptions) -> LinuxPlatform {
        let mut p = LinuxPlatform::new(procfs.clone());
        if options.netns {
            p.netns = Some(netns::NetnsSampler::new(netns::Paths::new(procfs)));
        }
        p
    }

    /// The owner cache, for tests.
    pub fn attributor(&self) -> &attribution::Attributor {
        &self.attributor
    }

    /// One sample of the sockets in `filter`, waiting no later than
    /// `deadline`: with `--collector.netns`, every namespace (those not
    /// read by then are listed in [`Sample::skipped`]); otherwise the
    /// exporter's own, which must be read whole or the sample fails.
    pub fn sample_until(
        &mut self,
        filter: &Filter,
        deadline: Instant,
    ) -> Result<Sample, SampleError> {
        match &mut self.netns {
            Some(n) => {
                let sample = n.sample(filter, deadline)?;
                self.tunnels.retain(|ns| n.knows(ns));
                Ok(sample)
            }
            None => Ok(Sample {
                sockets: netlink::sample(filter, deadline)?,
                namespaces: None,
                skipped: Vec::new(),
            }),
        }
    }

    /// Finds the holders of a sample's sockets, then confirms the
    /// kernel-held candidates (a second sample of their namespace) and
    /// names their tunnel devices, all no later than `deadline`. What could
    /// not be done is returned as skipped: a candidate whose second sample
    /// failed or did not happen in time is not confirmed (its holder stays
    /// unknown).
    pub fn attribute_until(
        &mut self,
        sockets: &[Socket],
        deadline: Instant,
    ) -> (Attribution, Vec<Skipped>) {
        let mut skipped = Vec::new();
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
            self.tunnel_devices(&involved, deadline, &mut skipped)
        };
        if !pass.candidates.is_empty() {
            let inodes: Vec<u64> = pass.candidates.iter().map(|c| c.0).collect();
            let present = self.still_present(sockets, &inodes, deadline, &mut skipped);
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
        (
            Attribution {
                holders,
                stats: pass.stats,
            },
            skipped,
        )
    }

    /// Of the kernel candidates, those whose sockets a second sample (of
    /// their own namespace, before `deadline`) still shows: a holder that
    /// exited during the scan took its socket along. A namespace whose
    /// second sample fails confirms none of its candidates, and is listed
    /// in `skipped`.
    fn still_present(
        &mut self,
        sockets: &[Socket],
        candidates: &[u64],
        deadline: Instant,
        skipped: &mut Vec<Skipped>,
    ) -> HashSet<u64> {
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
            let n = tcp.len() + udp.len();
            let filter = Filter {
                tcp: PortSet::from_intervals(tcp),
                udp: PortSet::from_intervals(udp),
            };
            let again = match &mut self.netns {
                Some(sampler) if ns != 0 => sampler.resample(ns, &filter, deadline),
                _ => netlink::sample(&filter, deadline),
            };
            match again {
                Ok(again) => {
                    present.extend(again.iter().map(|s| s.inode).filter(|i| wanted.contains(i)))
                }
                Err(e) => skipped.push(Skipped {
                    stage: "kernel_check",
                    what: if ns == 0 {
                        format!("second sample of {n} kernel-held candidates")
                    } else {
                        format!("netns {ns}: second sample of {n} kernel-held candidates")
                    },
                    reason: e.to_string(),
                }),
            }
        }
        present
    }

    /// The UDP tunnel devices by (namespace, port), for the namespaces of
    /// `sockets`, from the per-namespace cache (see [`tunnels::TunnelCache`]);
    /// a namespace whose devices cannot be listed before `deadline` is
    /// listed in `skipped`.
    fn tunnel_devices(
        &mut self,
        sockets: &[Socket],
        deadline: Instant,
        skipped: &mut Vec<Skipped>,
    ) -> HashMap<(u64, u16), String> {
        let mut wanted: HashMap<u64, Vec<u16>> = HashMap::new();
        for s in sockets.iter().filter(|s| s.protocol == Protocol::Udp) {
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
                Err(e) => skipped.push(Skipped {
                    stage: "tunnels",
                    what: if ns == 0 {
                        "tunnel devices".to_string()
                    } else {
                        format!("netns {ns}: tunnel devices")
                    },
                    reason: e,
                }),
            }
        }
        out
    }

    /// Logs what a collection skipped: the first time per stage at warning
    /// level, then at debug level.
    fn log_skipped(&mut self, skipped: &[Skipped]) {
        for s in skipped {
            if self.warned_stages.insert(s.stage) {
                log::warn!(
                    "skipped ({}): {}: {} (further ones of this stage at debug level)",
                    s.stage,
                    s.what,
                    s.reason
                );
            } else {
                log::debug!("skipped ({}): {}: {}", s.stage, s.what, s.reason);
            }
        }
    }
}

impl Platform for LinuxPlatform {
    fn sample(&mut self, filter: &Filter, timeout: Duration) -> Result<Vec<Socket>, SampleError> {
        let sample = self.sample_until(filter, Instant::now() + timeout)?;
        self.log_skipped(&sample.skipped);
        Ok(sample.sockets)
    }

    fn namespaces(&self) -> Option<Namespaces> {
        self.netns.as_ref().map(|n| n.namespaces())
    }

    fn attribute(&mut self, sockets: &[Socket], deadline: Instant) -> Attribution {
        let (attribution, skipped) = self.attribute_until(sockets, deadline);
        self.log_skipped(&skipped);
        attribution
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
            .sample_until(&filter, Instant::now() + Duration::from_secs(5))
            .unwrap();
        assert!(sample.skipped.is_empty());
        let s = &sample.sockets;
        let inodes: Vec<u64> = s.iter().map(|x| x.inode).collect();
        let mut skipped = Vec::new();
        let present = p.still_present(s, &inodes, Instant::now(), &mut skipped);
        assert!(present.is_empty());
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert_eq!(skipped[0].stage, "kernel_check");
        assert!(skipped[0].reason.contains("deadline"), "{:?}", skipped[0]);
        // With time left the same check confirms it.
        let mut none = Vec::new();
        let present = p.still_present(
            s,
            &inodes,
            Instant::now() + Duration::from_secs(5),
            &mut none,
        );
        assert_eq!(present.len(), 1);
        assert!(none.is_empty());
        // Tunnel discovery past the deadline: skipped, not "no device".
        let mut skipped = Vec::new();
        let devices = p.tunnel_devices(s, Instant::now(), &mut skipped);
        assert!(devices.is_empty());
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert_eq!(skipped[0].stage, "tunnels");
        drop(sock);
    }
}
