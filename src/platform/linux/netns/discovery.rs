//! Discovery, every scrape: the network namespaces of every process
//! (`<procfs>/<pid>/ns/net`, by inode, all pids per inode, lowest first),
//! the nsfs mounts that hold namespaces no process is in (`/run/netns`,
//! where `ip netns` names them, and `/run/docker/netns`), and the host's
//! (pid 1's in `--path.procfs`). Reading what was found is the sampler's
//! ([`super::NetnsSampler`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use rustix::fs::{AtFlags, OFlags};
use rustix::io::Errno;

use super::NetnsSampler;
use crate::platform::linux::proc_number;

/// Where `ip netns` keeps named namespaces.
pub const NAMED_DIR: &str = "/run/netns";
/// Where Docker keeps its sandboxes' namespaces.
pub const DOCKER_DIR: &str = "/run/docker/netns";
/// Where the kubelet keeps one log directory per pod.
pub const PODS_DIR: &str = "/var/log/pods";
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

impl NetnsSampler {
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
                let Some(pid) = proc_number(entry.file_name().to_bytes()) else {
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
}
