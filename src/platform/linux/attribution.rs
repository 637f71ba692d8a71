//! Process attribution: which process holds each sampled socket, found
//! through the `socket:[<inode>]` links under `<procfs>/<pid>/fd`.
//!
//! The cost follows the owners, not the sockets. Owners are cached per
//! process (pid and start time) with the fd → inode map of the watched
//! sockets they hold. On every scrape, each known owner costs one read of
//! `<pid>/stat` (its start time catches pid reuse; its name catches exec
//! and renames), one read of its `exe` link, its fd count (a `stat` of its
//! fd directory, whose size is the number of open fds on Linux 6.2+), and
//! the re-reading of a rolling sixteenth of its mapped fds. The fd
//! directory is listed (getdents: a few syscalls for thousands of fds, no
//! link read) only when the count differs from the one of its last
//! listing, or the owner was never listed (a scan found it); where the
//! kernel gives no count (before 6.2, or a `--path.procfs` that is not a
//! procfs), on every scrape. Only when the sample shows inodes not yet
//! placed does it read links: first, with no listing, the fd numbers of
//! sockets that went away (the kernel reuses the lowest free one) and
//! those read last pass holding a socket the sample did not have yet
//! (opened after it). What a verdict still needs is then sampled again (a
//! dump filtered to its ports, with the known owners' mapped sockets of
//! the watched ranges): a socket closed since the sample is not searched
//! for, and a mapped socket closed meanwhile points at the fd a new one
//! took, which is read, still with no listing. Then the fds of known
//! owners that the map does not hold (new fd numbers and the owner's other
//! files), at most one pass per owner, and the fd directory of every known
//! owner of the still missing sockets' uids is listed for it even when its
//! count did not change (one fd closed and another opened). Then every fd
//! of the owners of its uid, and last a scan of the other processes (those
//! running as the new sockets' uids first, newest pid first), which stops
//! once every inode is found.
//!
//! A stale name is caught as follows. A reused pid: the start time
//! differs, the owner is dropped and its sockets are searched again. An
//! owner that exited: its stat is gone, the same. A socket closed: it
//! leaves the sample and is forgotten. A socket passed on, with the
//! holder's fd closed: the count changes, the listing no longer shows that
//! fd, and the socket is searched again. The fd number reused by another
//! watched socket: that socket is found at the fd, which evicts the old
//! mapping. What neither the count nor the listing can see is caught by the
//! rolling re-read within 16 scrapes (fewer for an owner of fewer than 16
//! watched sockets; 64 for an owner whose every mapped socket is only
//! counted, the dynamic range's outside the watched ranges, whose owner
//! names only a top holder): the fd number reused by a file that is not a watched
//! socket while the passed socket lives on in another process, and, with
//! fd counts, a passed socket's fd closed while another fd opened in the
//! same interval.
//!
//! The scan runs on its own thread ([`crate::deadline`]): a scrape waits for it only until its
//! deadline, after which its sockets count as unattributed and the scan
//! finishes in the background for the next scrape. Inodes a complete scan
//! could not find are not searched again until a back-off expires, so an
//! unprivileged exporter does not rescan `/proc` on every scrape. A scan
//! result that arrives after its scrape (from the background) is
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
//! Whether the process has them, and whether `/proc` shows the host's pid
//! namespace, is probed in [`super::privileges`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
#[cfg(test)]
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::deadline::{self, Job, Late, Next};
use crate::platform::{InodeMap, InodeSet, Owner, PassStats, Socket};
use crate::ranges::Protocol;

/// (Maps and sets keyed by socket inode: a pass builds and probes several
/// of them for every socket of the sample, 31,000 with the dynamic
/// range, where SipHash's cost was a third of the pass's own time.)
fn inode_map<V>(capacity: usize) -> InodeMap<V> {
    InodeMap::with_capacity_and_hasher(capacity, Default::default())
}

/// What one attribution pass found, by inode.
#[derive(Debug, Default)]
pub struct InodePass {
    pub owners: InodeMap<Arc<Owner>>,
    /// Inodes confirmed earlier as held by no process.
    pub kernel: InodeSet,
    /// Inodes a complete scan just failed to find, each with whether the
    /// scan was strict (no process refused it): the caller checks them and
    /// then calls [`Attributor::confirm_kernel`].
    pub candidates: Vec<(u64, bool)>,
    /// Inodes a second sample showed closed (see
    /// [`Attributor::attribute_rechecking`]): those not placed were not
    /// searched for; those placed were held where the cache says.
    pub closed: InodeSet,
    pub stats: PassStats,
}

/// Where a cached socket is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Place {
    pid: u32,
    fd: u32,
}

/// One known owning process.
#[derive(Clone, Debug, Default)]
struct Known {
    start_time: u64,
    /// The process's effective uid (the owner of `<procfs>/<pid>`).
    uid: u32,
    /// fd → inode of the watched sockets it holds.
    fds: BTreeMap<u32, u64>,
    /// fds read and found not to hold a watched socket.
    others: BTreeSet<u32>,
    /// fds whose watched socket went away: the first place to look for a
    /// new one (the kernel hands out the lowest free fd number).
    freed: BTreeSet<u32>,
    /// fds read once holding a socket the sample did not have (opened
    /// after it: a churning owner's next socket): read again, first, on
    /// the next pass, where the sample may have it; if it still does not,
    /// the fd joins `others`. By fd, the pass that found it.
    retry: BTreeMap<u32, u64>,
    /// The next fd the rolling re-read starts at.
    verify_from: u32,
    /// The pass in which its sockets last changed.
    changed_at: u64,
    /// Its fd count when its fd directory was last listed (the fds and
    /// `others` were then reconciled with it); `None` until the first
    /// listing, as for an owner a scan just found.
    listed_count: Option<usize>,
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

/// The owner cache and the `/proc` scanner.
pub struct Attributor {
    procfs: PathBuf,
    cache: InodeMap<Place>,
    owners: HashMap<u32, Known>,
    missing: InodeMap<Missing>,
    pending: Option<Pending>,
    /// Passes so far.
    pass: u64,
    /// Whether this exporter can see every process (privilege and pid
    /// namespace): only then can a socket be called the kernel's.
    sees_all: bool,
    /// Whether `procfs` is a real procfs, whose fd directories report
    /// their fd count as their size (Linux 6.2+); a fake tree does not.
    counts_fds: bool,
    /// The exporter's own pid as `procfs` shows it (`<procfs>/self`).
    own_pid: Option<u32>,
    /// Tests only: the next scan waits for a message before it starts, so
    /// that "the deadline passed first" is driven, not raced.
    #[cfg(test)]
    gate: Option<mpsc::Receiver<()>>,
    /// Tests only: fd directories of known owners listed so far.
    #[cfg(test)]
    listings: usize,
}

/// What of a known owner's fds is not yet classified.
#[derive(Debug)]
enum Unclassified {
    /// The fds it has open (the size of its fd directory): more than the
    /// map accounts for means new fds, found by listing when needed.
    Count(usize),
    /// The fd numbers a listing found that the map does not account for.
    Listed(Vec<u32>),
}

/// A known owner with no watched socket for this many passes is dropped.
const IDLE_OWNER_PASSES: u64 = 64;

const MISS_BACKOFF_START: Duration = Duration::from_secs(15);
const MISS_BACKOFF_MAX: Duration = Duration::from_secs(600);
/// Each scrape re-reads this fraction (1/N) of every owner's mapped fds.
const VERIFY_ROUNDS: usize = 16;
/// ... and this fraction of those of an owner whose every mapped socket is
/// only counted (the dynamic range's, outside every watched range: no
/// verdict rests on their owner, only the top holders' names): a host's
/// clients hold tens of thousands, whose sixteenth was 1,350 of the 2,000
/// links a scrape read in the busy-range benchmark.
const COUNTED_VERIFY_ROUNDS: usize = 64;

impl Attributor {
    pub fn new(procfs: impl Into<PathBuf>) -> Attributor {
        let procfs: PathBuf = procfs.into();
        let counts_fds = is_procfs(&procfs)
            && rustix::fs::stat(procfs.join("self/fd")).is_ok_and(|st| st.st_size > 0);
        let own_pid = std::fs::read_link(procfs.join("self"))
            .ok()
            .and_then(|p| p.to_str()?.parse().ok());
        Attributor {
            counts_fds,
            own_pid,
            procfs,
            cache: InodeMap::default(),
            owners: HashMap::new(),
            missing: InodeMap::default(),
            pending: None,
            pass: 0,
            sees_all: false,
            #[cfg(test)]
            gate: None,
            #[cfg(test)]
            listings: 0,
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

    /// Number of cached entries (for tests and the leak checks).
    pub fn cached(&self) -> usize {
        self.cache.len() + self.missing.len()
    }

    /// Number of known owning processes (for tests).
    pub fn known_owners(&self) -> usize {
        self.owners.len()
    }

    /// Records that `inode` is held at `pid`/`fd`; an inode the fd held
    /// before is forgotten (the fd number was reused).
    fn learn(&mut self, inode: u64, pid: u32, fd: u32, start_time: u64) {
        if let Some(old) = self.cache.get(&inode).copied() {
            if old == (Place { pid, fd }) {
                return;
            }
            self.forget(inode);
        }
        let pass = self.pass;
        let procfs = self.procfs.clone();
        let known = self.owners.entry(pid).or_insert_with(|| Known {
            start_time,
            uid: process_uid(&procfs, pid),
            ..Known::default()
        });
        if known.start_time != start_time {
            // The pid was reused since we last saw it.
            let stale: Vec<u64> = known.fds.values().copied().collect();
            *known = Known {
                start_time,
                uid: process_uid(&procfs, pid),
                ..Known::default()
            };
            for i in stale {
                self.cache.remove(&i);
            }
        }
        let known = self.owners.get_mut(&pid).expect("just inserted");
        known.changed_at = pass;
        known.others.remove(&fd);
        known.freed.remove(&fd);
        if let Some(previous) = known.fds.insert(fd, inode)
            && previous != inode
        {
            self.cache.remove(&previous);
        }
        self.cache.insert(inode, Place { pid, fd });
    }

    /// Forgets where `inode` is held; its fd number becomes a place to
    /// look for new sockets. The owner stays known while it lives.
    fn forget(&mut self, inode: u64) {
        if let Some(place) = self.cache.remove(&inode)
            && let Some(k) = self.owners.get_mut(&place.pid)
            && k.fds.get(&place.fd) == Some(&inode)
        {
            k.fds.remove(&place.fd);
            k.freed.insert(place.fd);
            k.changed_at = self.pass;
        }
    }

    /// Drops an owner and every socket cached under it.
    fn drop_owner(&mut self, pid: u32) {
        if let Some(k) = self.owners.remove(&pid) {
            for inode in k.fds.values() {
                self.cache.remove(inode);
            }
        }
    }

    /// Finds the owner of every socket, by inode. Sockets with inode 0
    /// (TIME_WAIT, request sockets) have no owner and are skipped. Never
    /// waits past `deadline`: a scan still running then goes on in the
    /// background, and a later call takes its results.
    pub fn attribute(&mut self, sockets: &[Socket], deadline: Instant) -> InodePass {
        self.attribute_counting(sockets, &InodeSet::default(), deadline)
    }

    /// [`Attributor::attribute`], where the sockets of `count_only` are
    /// only counted (the dynamic range's, outside every watched range): a
    /// missing one is looked for where the cheap steps look anyway (the
    /// known owners' freed fd numbers and new fds by count, then the other
    /// processes), but never makes every owner of its uid be listed and
    /// re-read, which a scraper on the same host (a new process with a new
    /// socket at every scrape) would otherwise cost at every scrape.
    pub fn attribute_counting(
        &mut self,
        sockets: &[Socket],
        count_only: &InodeSet,
        deadline: Instant,
    ) -> InodePass {
        self.attribute_rechecking(sockets, count_only, deadline, &mut |_| None)
    }

    /// [`Attributor::attribute_counting`], where the sockets the known
    /// owners' cheap look (round one below) leaves unplaced are first
    /// checked by `still_open`, which returns the inodes of those still
    /// open (`None`: it cannot tell, and all are searched for). A socket
    /// closed between the sample and this pass (a churning owner's) is
    /// then not searched for: looking for it read every fd of every owner
    /// of its uid and scanned /proc, 34,000 link reads on a host where
    /// one process churns 100 of its 9,900 sockets a second.
    pub fn attribute_rechecking(
        &mut self,
        sockets: &[Socket],
        count_only: &InodeSet,
        deadline: Instant,
        still_open: &mut dyn FnMut(&[&Socket]) -> Option<InodeSet>,
    ) -> InodePass {
        let now = Instant::now();
        self.pass += 1;
        let mut stats = PassStats::default();
        let mut candidates = Vec::new();
        let mut uid_of: InodeMap<u32> = inode_map(sockets.len());
        for s in sockets.iter().filter(|s| s.inode != 0) {
            uid_of.insert(s.inode, s.uid);
        }
        // Forget sockets that are gone: the cache never outgrows the sample.
        let gone: Vec<u64> = self
            .cache
            .keys()
            .copied()
            .filter(|i| !uid_of.contains_key(i))
            .collect();
        for inode in gone {
            self.forget(inode);
        }
        self.missing.retain(|inode, _| uid_of.contains_key(inode));

        let mut found: InodeMap<Arc<Owner>> = inode_map(uid_of.len());

        // 1. A scan left running by an earlier call: take its results if it
        //    finishes within this call's budget.
        if let Some(p) = self.pending.take() {
            match p.job.next_until(deadline) {
                Next::Value(result) => {
                    let c = self.merge(result, true, &uid_of, &mut found, &mut stats, now);
                    candidates.extend(c);
                }
                Next::Pending => self.pending = Some(p),
                Next::Ended => log::warn!(
                    "the background /proc scan ended without a result (it panicked); the next scrape scans again"
                ),
            }
        }

        // 2. Confirm the known owners, once each.
        let mut infos: HashMap<u32, (ProcInfo, Unclassified)> = HashMap::new();
        let pids: Vec<u32> = self.owners.keys().copied().collect();
        for pid in pids {
            let Some((info, count)) = self.confirm_owner(pid, count_only, &mut stats) else {
                self.drop_owner(pid);
                continue;
            };
            if let Some(k) = self.owners.get(&pid)
                && k.fds.is_empty()
                && self.pass.saturating_sub(k.changed_at) > IDLE_OWNER_PASSES
            {
                self.drop_owner(pid);
                continue;
            }
            if let Some(k) = self.owners.get(&pid) {
                for inode in k.fds.values() {
                    if !found.contains_key(inode) {
                        stats.confirmed += 1;
                        found.insert(*inode, info.owner.clone());
                    }
                }
            }
            infos.insert(pid, (info, count));
        }

        // 3. Inodes not placed, not in back-off and not already being
        //    searched by a scan still running.
        let searching = self.pending.as_ref().map(|p| &p.inodes);
        let mut wanted: InodeSet = uid_of
            .keys()
            .copied()
            .filter(|i| !found.contains_key(i))
            .filter(|i| self.missing.get(i).is_none_or(|m| m.retry_at <= now))
            .filter(|i| searching.is_none_or(|s| !s.contains(i)))
            .collect();
        stats.searched = wanted.len();

        // 4. The known owners first, at most one pass each: new sockets
        //    usually come from a process that already has some. Round one
        //    reads the fds whose socket went away (their numbers are reused
        //    first) and, when the fd count says there are fds not yet
        //    classified, lists the directory and reads those; it runs for
        //    sockets in back-off too, as it is cheap. Round two, only if
        //    sockets are still missing, reads every fd not mapped to a
        //    watched socket, and for owners of the missing sockets' uid the
        //    mapped ones too: a socket that closed while the sample was
        //    being taken is still in it, while a new socket already holds
        //    its fd number.
        // Whose sockets are still missing (in back-off or searched by a
        // scan still running too; not those the kernel holds): an owner of
        // one of these uids is listed in round one even when its fd count is
        // unchanged, since one fd closed and another opened leave the count
        // as it was.
        // (Computed after the cheap step: what the freed and new fds hold
        // lists no one.)
        let mut unplaced_uids: HashSet<u32> = HashSet::new();
        // (Not counting those a second sample showed closed.)
        let unplaced = |found: &InodeMap<Arc<Owner>>, closed: &InodeSet| {
            uid_of
                .keys()
                .filter(|i| !found.contains_key(i) && !closed.contains(i))
                .count()
        };
        let mut buf = Vec::with_capacity(64);
        let mut closed = InodeSet::default();
        // The fds, per known owner, whose mapped socket a second sample
        // showed closed: where new sockets are (the kernel reuses the
        // lowest free fd). `None` until step 1 asks, and when `still_open`
        // cannot tell.
        let mut reused: Option<HashMap<u32, Vec<u32>>> = None;
        // The known owners whose fds this pass read (each counts once).
        let mut read_from: HashSet<u32> = HashSet::new();
        // Step 0 reads only what needs no listing: the freed fd numbers
        // (the kernel reuses them first) and the new fds a listing in
        // `confirm_owner` found; under churn that is usually all it takes.
        // Step 1 takes the second sample and reads, with no listing, the
        // fds whose mapped socket it shows closed (a socket closed while
        // the sample was being taken is still in it, while a new socket
        // already holds its fd number): before round one, whose listing of
        // every owner of the missing sockets' uids cost 31,000 directory
        // entries in the busy-range benchmark, twice, for one socket the
        // second sample would have placed. Steps 2-4 are rounds one to
        // three.
        for step in 0..5usize {
            let cheap = step == 0;
            let resample = step == 1;
            let round = step.saturating_sub(2);
            // The second sample and round two (every fd of every owner)
            // only for sockets a verdict needs; round three only when the
            // second sample pointed and rounds one and two missed.
            let verdicts_need = wanted.iter().filter(|i| !count_only.contains(i)).count();
            let needed = match step {
                0 | 2 => unplaced(&found, &closed),
                1 | 3 => verdicts_need,
                _ if reused.is_none() => 0,
                _ => verdicts_need,
            };
            if needed == 0 {
                if step == 1 {
                    continue; // nothing a verdict needs: on to round one
                }
                break;
            }
            if step == 2 {
                unplaced_uids = uid_of
                    .iter()
                    .filter(|(i, _)| !found.contains_key(i) && !count_only.contains(i))
                    .filter(|(i, _)| !closed.contains(*i))
                    .filter(|(i, _)| self.missing.get(i).is_none_or(|m| !m.kernel))
                    .map(|(_, &uid)| uid)
                    .collect();
            }
            // (Only rounds two and three read it, for sockets a verdict needs.)
            let wanted_uids: HashSet<u32> = wanted
                .iter()
                .filter(|i| !count_only.contains(i))
                .map(|i| uid_of[i])
                .collect();
            if resample {
                // A second sample of the sockets still unplaced and of
                // those the owners of their uids are known to hold: a
                // socket closed since the sample is not searched for, and
                // a closed mapped socket's fd is where a new one is (the
                // sample can show a socket closed while it was being
                // taken and the new socket at its fd number).
                // (Only sockets a verdict needs, of the protocols missing:
                // the filter of the second dump stays the watched ranges'
                // ports, not every port of the dynamic range, which cost
                // the kernel 70-100 ms a dump at 31,000 sockets.)
                let protocols: HashSet<Protocol> = sockets
                    .iter()
                    .filter(|s| wanted.contains(&s.inode) && !count_only.contains(&s.inode))
                    .map(|s| s.protocol)
                    .collect();
                let mapped = |s: &&Socket| {
                    protocols.contains(&s.protocol)
                        && !count_only.contains(&s.inode)
                        && self.cache.get(&s.inode).is_some_and(|p| {
                            self.owners
                                .get(&p.pid)
                                .is_some_and(|k| wanted_uids.contains(&k.uid))
                        })
                };
                let asked: Vec<&Socket> = sockets
                    .iter()
                    .filter(|s| s.inode != 0 && (wanted.contains(&s.inode) || mapped(s)))
                    .collect();
                if let Some(open) = still_open(&asked) {
                    let mut at: HashMap<u32, Vec<u32>> = HashMap::new();
                    for s in asked.iter().filter(|s| !open.contains(&s.inode)) {
                        if wanted.remove(&s.inode) {
                            stats.closed += 1;
                        } else if let Some(p) = self.cache.get(&s.inode) {
                            at.entry(p.pid).or_default().push(p.fd);
                        }
                        closed.insert(s.inode);
                    }
                    reused = Some(at);
                }
                let left = wanted.iter().filter(|i| !count_only.contains(i)).count();
                if left == 0 {
                    continue; // the counted-only ones, if any: round one
                }
            }
            for (pid, (info, unclassified)) in &mut infos {
                let Some(k) = self.owners.get_mut(pid) else {
                    continue;
                };
                // Freed fd numbers are counted as taken: the kernel reuses
                // them first, so reading them is usually all it takes.
                let mut fds: Vec<u32> = std::mem::take(&mut k.freed).into_iter().collect();
                if cheap {
                    fds.extend(k.retry.keys().copied());
                    if let Unclassified::Listed(new) = &mut *unclassified {
                        fds.append(new);
                    }
                }
                let list = match (round, &mut *unclassified) {
                    _ if cheap || resample => false,
                    (1 | 2, _) => true,
                    (_, Unclassified::Listed(new)) => {
                        fds.append(new);
                        false
                    }
                    (_, Unclassified::Count(c)) => {
                        *c > k.fds.len() + k.others.len() + k.retry.len() + fds.len()
                            || unplaced_uids.contains(&k.uid)
                    }
                };
                // Round two reads the fds of an owner of the missing
                // sockets' uid whose mapped socket the second sample showed
                // closed; without a second sample, and in round three,
                // every mapped fd: a mapped fd may hold a new socket while
                // the sample still shows the old one.
                let own_uid = wanted_uids.contains(&k.uid);
                let everything = !cheap
                    && !resample
                    && own_uid
                    && (round == 2 || (round == 1 && reused.is_none()));
                if resample
                    && own_uid
                    && let Some(fds_closed) = reused.as_ref().and_then(|r| r.get(pid))
                {
                    fds.extend(fds_closed);
                }
                if list {
                    #[cfg(test)]
                    {
                        self.listings += 1;
                    }
                    match list_fds(&self.procfs, *pid) {
                        Ok(listed) => {
                            k.others.retain(|fd| listed.binary_search(fd).is_ok());
                            fds.extend(listed.iter().copied().filter(|fd| {
                                everything
                                    || (!k.fds.contains_key(fd)
                                        && !k.retry.contains_key(fd)
                                        && (round > 0 || !k.others.contains(fd)))
                            }));
                        }
                        Err(denied) => stats.permission_denied += usize::from(denied),
                    }
                }
                fds.sort_unstable();
                fds.dedup();
                if fds.is_empty() {
                    continue;
                }
                if read_from.insert(*pid) {
                    stats.processes_scanned += 1;
                }
                stats.links_read += fds.len();
                let (hits, others, unsampled) =
                    read_fds(&self.procfs, *pid, &fds, &uid_of, &mut buf);
                let stale: Vec<u64> = others
                    .iter()
                    .chain(&unsampled)
                    .filter_map(|fd| k.fds.get(fd).copied())
                    .collect();
                // Read again in a later pass and still not in the sample:
                // something else than a socket the sample missed.
                let pass = self.pass;
                let retried: Vec<u32> = fds
                    .iter()
                    .copied()
                    .filter(|fd| k.retry.get(fd).is_some_and(|&p| p < pass))
                    .collect();
                for fd in &fds {
                    if k.retry.get(fd).is_some_and(|&p| p < pass) {
                        k.retry.remove(fd);
                    }
                }
                for fd in unsampled {
                    if retried.contains(&fd) {
                        k.others.insert(fd);
                    } else {
                        k.retry.entry(fd).or_insert(pass);
                    }
                }
                k.others.extend(others);
                for inode in stale {
                    self.forget(inode);
                }
                for (fd, inode) in hits {
                    self.learn(inode, *pid, fd, info.start_time);
                    wanted.remove(&inode);
                    self.missing.remove(&inode);
                    found.entry(inode).or_insert_with(|| info.owner.clone());
                }
            }
        }

        // 5. The other processes, on a thread of their own.
        if !wanted.is_empty() && self.pending.is_none() {
            let known_pids: HashSet<u32> = infos.keys().copied().collect();
            let uids: HashSet<u32> = wanted.iter().map(|i| uid_of[i]).collect();
            let procfs = self.procfs.clone();
            let inodes = wanted.clone();
            #[cfg(test)]
            let gate = self.gate.take();
            let scan = deadline::run("proc-scan", deadline, move || {
                #[cfg(test)]
                if let Some(g) = gate {
                    let _ = g.recv();
                }
                scan_procs(&procfs, wanted, &known_pids, &uids)
            });
            match scan {
                Ok(result) => {
                    let c = self.merge(result, false, &uid_of, &mut found, &mut stats, now);
                    candidates.extend(c);
                }
                Err(Late::TimedOut(job)) => self.pending = Some(Pending { job, inodes }),
                Err(e) => log::warn!("owners of new sockets were not searched for: {e}"),
            }
        }
        stats.deadline_hit = self.pending.is_some()
            && uid_of.keys().any(|i| {
                !found.contains_key(i) && !self.missing.contains_key(i) && !closed.contains(i)
            });
        for inode in found.keys() {
            self.missing.remove(inode);
        }
        let kernel: InodeSet = self
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
            closed,
            stats,
        }
    }

    /// Confirms one known owner: the same process (start time), its
    /// mapped fds still open, and a rolling slice of them re-read. Whether
    /// fds were opened or closed is told by the fd count (the size of the
    /// fd directory, Linux 6.2+), without a listing: the directory is
    /// listed when the count differs from the one of its last listing (or
    /// there was none: an owner a scan found), when it is below what the
    /// map holds, or where the kernel gives no count. A close and an open
    /// in the same interval leave the count as it was: round one of
    /// [`Attributor::attribute`] then lists the owners whose uid has
    /// sockets missing, and the rolling re-read catches a mapped fd that
    /// now holds something else.
    /// Returns the process's current name and what is not yet classified;
    /// `None` when the process is gone or unreadable.
    fn confirm_owner(
        &mut self,
        pid: u32,
        count_only: &InodeSet,
        stats: &mut PassStats,
    ) -> Option<(ProcInfo, Unclassified)> {
        let info = read_proc(&self.procfs, pid)?;
        let known = self.owners.get_mut(&pid)?;
        if info.start_time != known.start_time {
            return None;
        }
        let count = if self.counts_fds {
            match rustix::fs::stat(self.procfs.join(format!("{pid}/fd"))) {
                Ok(st) => Some(st.st_size as usize),
                Err(Errno::ACCESS) | Err(Errno::PERM) => {
                    stats.permission_denied += 1;
                    return None;
                }
                Err(_) => return None,
            }
        } else {
            None
        };
        let mut unclassified = Unclassified::Count(count.unwrap_or(0));
        // The exporter's own fds churn with every scrape: the scrape's
        // connection opens while the last one's fd may still be held, and
        // its own reads come and go, so an fd number once read as "not a
        // watched socket" holds the next scrape's socket with the count
        // unchanged. Were it left to the rolling re-read, the connection
        // of every scrape would be "unknown" wherever the dynamic range
        // holds the listening port. Its fds are few: all are listed and
        // read on every pass.
        let own = self.own_pid == Some(pid);
        if own {
            known.others.clear();
        }
        if own
            || count.is_none_or(|c| {
                known.listed_count != Some(c) || c < known.fds.len() + known.others.len()
            })
        {
            #[cfg(test)]
            {
                self.listings += 1;
            }
            let listed = match list_fds(&self.procfs, pid) {
                Ok(l) => l,
                Err(denied) => {
                    stats.permission_denied += usize::from(denied);
                    return None;
                }
            };
            known.others.retain(|fd| listed.binary_search(fd).is_ok());
            known.retry.retain(|fd, _| listed.binary_search(fd).is_ok());
            let closed: Vec<u64> = known
                .fds
                .iter()
                .filter(|(fd, _)| listed.binary_search(fd).is_err())
                .map(|(_, &inode)| inode)
                .collect();
            let new: Vec<u32> = listed
                .iter()
                .copied()
                .filter(|fd| !known.fds.contains_key(fd) && !known.others.contains(fd))
                .collect();
            known.listed_count = Some(listed.len());
            for inode in closed {
                self.forget(inode);
            }
            if let Some(k) = self.owners.get_mut(&pid) {
                k.freed.clear(); // closed, not reused: nothing to read there
            }
            unclassified = Unclassified::Listed(new);
        }
        let known = self.owners.get_mut(&pid)?;
        // The rolling re-read: a slice of the mapped fds, from where the
        // last one stopped.
        let rounds = if known.fds.values().all(|i| count_only.contains(i)) {
            COUNTED_VERIFY_ROUNDS
        } else {
            VERIFY_ROUNDS
        };
        let take = known.fds.len().div_ceil(rounds);
        let slice: Vec<(u32, u64)> = known
            .fds
            .range(known.verify_from..)
            .chain(known.fds.range(..known.verify_from))
            .take(take)
            .map(|(&fd, &inode)| (fd, inode))
            .collect();
        known.verify_from = slice.last().map_or(0, |(fd, _)| fd.saturating_add(1));
        let mut buf = Vec::with_capacity(64);
        // Read relative to the fd directory, opened once: a whole path per
        // link walked /proc and the pid's directory again each time (a
        // sixteenth of 31,000 sockets is 2,000 links a scrape).
        let dir = (!slice.is_empty()).then(|| open_fd_dir(&self.procfs, pid));
        for (fd, inode) in slice {
            stats.links_read += 1;
            let at = match &dir {
                Some(Ok(dir)) => link_is_at(dir, fd, inode, &mut buf),
                _ => false,
            };
            if !at {
                self.forget(inode);
            }
        }
        Some((info, unclassified))
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
        uid_of: &InodeMap<u32>,
        found: &mut InodeMap<Arc<Owner>>,
        stats: &mut PassStats,
        now: Instant,
    ) -> Vec<(u64, bool)> {
        stats.processes_scanned += result.processes_scanned;
        stats.permission_denied += result.permission_denied;
        stats.links_read += result.links_read;
        for (inode, pid, fd, info) in result.hits {
            if !uid_of.contains_key(&inode) {
                continue;
            }
            if late
                && !(open_fd_dir(&self.procfs, pid)
                    .is_ok_and(|dir| link_is_at(&dir, fd, inode, &mut Vec::new()))
                    && read_proc(&self.procfs, pid)
                        .is_some_and(|p| p.start_time == info.start_time))
            {
                continue; // gone or moved since the scan: searched again later
            }
            self.learn(inode, pid, fd, info.start_time);
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
    not_found: InodeSet,
    processes_scanned: usize,
    permission_denied: usize,
    links_read: usize,
    /// Every process was visited (those that appeared during the scan
    /// too); `permission_denied` says how many refused.
    complete: bool,
}

/// A scan running on its own thread.
struct Pending {
    job: Job<ScanResult>,
    inodes: InodeSet,
}

/// Scans fd directories for the `wanted` inodes until all are found or
/// every process was visited, skipping the known owners (the caller has
/// just read their fds). Order: processes running as the new sockets'
/// uids, then the rest; within each group the newest pid first, since a
/// new owner is usually a new process.
fn scan_procs(
    procfs: &Path,
    mut wanted: InodeSet,
    known: &HashSet<u32>,
    uids: &HashSet<u32>,
) -> ScanResult {
    let mut result = ScanResult {
        hits: Vec::new(),
        not_found: InodeSet::default(),
        processes_scanned: 0,
        permission_denied: 0,
        links_read: 0,
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
    let mut all = list_pids(&proc_dir);
    all.sort_unstable_by(|a, b| b.cmp(a));
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
            .filter(|p| !seen.contains(p) && !known.contains(p))
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
    wanted: &mut InodeSet,
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
    let hits = scan_fds(
        fd_dir,
        wanted,
        buf,
        &mut result.permission_denied,
        &mut result.links_read,
    );
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
    wanted: &InodeSet,
    buf: &mut Vec<u8>,
    denied: &mut usize,
    links: &mut usize,
) -> Vec<(u64, u32)> {
    let mut hits = Vec::new();
    let Ok(dir) = rustix::fs::Dir::read_from(&fd_dir) else {
        return hits;
    };
    for entry in dir {
        let Ok(entry) = entry else { break };
        let name = entry.file_name().to_bytes();
        let Some(fd) = super::proc_number(name) else {
            continue;
        };
        *links += 1;
        match read_link(&fd_dir, entry.file_name(), buf) {
            Ok(Some(inode)) if wanted.contains(&inode) => hits.push((inode, fd)),
            Ok(_) => {}
            Err(Errno::ACCESS) | Err(Errno::PERM) => {
                *denied += 1;
                break;
            }
            Err(_) => {} // the fd closed meanwhile
        }
    }
    hits
}

/// Whether `path` is a procfs mount (not a fake tree of the tests).
fn is_procfs(path: &Path) -> bool {
    // f_type's integer type differs between architectures; the magic fits all.
    #[allow(clippy::unnecessary_cast)]
    let is_proc = |t| t as u64 == 0x9fa0;
    rustix::fs::statfs(path).is_ok_and(|st| is_proc(st.f_type))
}

/// The effective uid of a process: the owner of `<procfs>/<pid>`.
fn process_uid(procfs: &Path, pid: u32) -> u32 {
    rustix::fs::stat(procfs.join(pid.to_string())).map_or(u32::MAX, |st| st.st_uid)
}

/// Lists the fd numbers of a process, sorted, without reading any link.
/// `Err(true)` when refused for lack of privilege, `Err(false)` when the
/// process is gone.
fn list_fds(procfs: &Path, pid: u32) -> Result<Vec<u32>, bool> {
    let dir = open_fd_dir(procfs, pid).map_err(|e| matches!(e, Errno::ACCESS | Errno::PERM))?;
    let Ok(entries) = rustix::fs::Dir::read_from(&dir) else {
        return Err(false);
    };
    let mut fds: Vec<u32> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| super::proc_number(e.file_name().to_bytes()))
        .collect();
    fds.sort_unstable();
    Ok(fds)
}

/// Reads the links of the given fds of one process: the watched sockets
/// (inodes in `watched`) by fd, the fds that hold something other than a
/// socket, and those that hold a socket `watched` does not have (one
/// outside every range, or one opened after the sample).
fn read_fds(
    procfs: &Path,
    pid: u32,
    fds: &[u32],
    watched: &InodeMap<u32>,
    buf: &mut Vec<u8>,
) -> (Vec<(u32, u64)>, Vec<u32>, Vec<u32>) {
    let mut hits = Vec::new();
    let mut others = Vec::new();
    let mut unsampled = Vec::new();
    let Ok(dir) = open_fd_dir(procfs, pid) else {
        return (hits, others, unsampled);
    };
    for &fd in fds {
        // An error means closed meanwhile, or refused: not remembered.
        match read_link(&dir, fd.to_string(), buf) {
            Ok(Some(inode)) if watched.contains_key(&inode) => hits.push((fd, inode)),
            Ok(Some(_)) => unsampled.push(fd),
            Ok(None) => others.push(fd),
            Err(_) => {}
        }
    }
    (hits, others, unsampled)
}

/// Opens `<procfs>/<pid>/fd`, to read links relative to it.
fn open_fd_dir(procfs: &Path, pid: u32) -> Result<OwnedFd, Errno> {
    rustix::fs::open(
        procfs.join(format!("{pid}/fd")),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// What the link `name` in the fd directory `dir` points at: a socket's
/// inode, or `None` for anything else; an error when the fd closed
/// meanwhile or the read was refused. One `readlinkat`, no allocation
/// beyond `buf`.
fn read_link(
    dir: &OwnedFd,
    name: impl rustix::path::Arg,
    buf: &mut Vec<u8>,
) -> Result<Option<u64>, Errno> {
    buf.clear();
    let target = rustix::fs::readlinkat(dir, name, std::mem::take(buf))?.into_bytes();
    let inode = parse_socket_link(&target);
    *buf = target;
    Ok(inode)
}

/// Whether `fd` in the fd directory `dir` still points at socket `inode`.
fn link_is_at(dir: &OwnedFd, fd: u32, inode: u64, buf: &mut Vec<u8>) -> bool {
    read_link(dir, fd.to_string(), buf) == Ok(Some(inode))
}

fn list_pids(proc_dir: &OwnedFd) -> Vec<u32> {
    let Ok(dir) = rustix::fs::Dir::read_from(proc_dir) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| super::proc_number(e.file_name().to_bytes()))
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
            name_via_link: false,
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
            netns: 0,
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

    /// The exporter's own process (`<procfs>/self`) holds the scrapes'
    /// connections, sampled with the dynamic range (count only): a new one
    /// at an fd number read before as something else, the fd count
    /// unchanged, is found at once. Another known owner's is left to the
    /// rolling re-read (the cost a count-only socket may not raise).
    #[test]
    fn the_exporters_own_new_socket_at_a_reused_fd_number_is_found() {
        let root = tempdir("own");
        fake_proc(&root);
        std::fs::remove_dir(root.join("self")).unwrap();
        std::os::unix::fs::symlink("100", root.join("self")).unwrap();
        let mut a = Attributor::new(&root);
        let held = [sock(5001), sock(5002)];
        assert_eq!(a.attribute(&held, far()).owners.len(), 2);
        // Both fd 4 of pid 100 (the exporter) and fd 8 of pid 200 are read
        // once, as not watched sockets.
        std::os::unix::fs::symlink("/dev/null", root.join("200/fd/8")).unwrap();
        a.attribute(&[sock(5001), sock(5002), sock(9999)], far());
        a.attribute(&held, far());
        // Then each holds a new socket of the dynamic range.
        for (pid, fd, inode) in [(100, 4, 6001u64), (200, 8, 6002)] {
            let link = root.join(format!("{pid}/fd/{fd}"));
            std::fs::remove_file(&link).unwrap();
            std::os::unix::fs::symlink(format!("socket:[{inode}]"), &link).unwrap();
        }
        let socks = [sock(5001), sock(5002), sock(6001), sock(6002)];
        let count_only: InodeSet = [6001, 6002].into_iter().collect();
        let pass = a.attribute_counting(&socks, &count_only, far());
        assert_eq!(
            pass.owners.get(&6001).map(|o| o.pid),
            Some(100),
            "the exporter's own new socket"
        );
        assert!(!pass.owners.contains_key(&6002));
        std::fs::remove_dir_all(&root).unwrap();
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
        // Pid 100's other fd (4) is read once, as 9999 is still unplaced.
        let InodePass { owners, stats, .. } = a.attribute(&socks, far());
        assert_eq!(owners.len(), 2);
        assert_eq!(stats.confirmed, 2);
        assert_eq!(stats.searched, 0);
        assert_eq!(stats.processes_scanned, 1);
        // Fd 4 holds a socket the sample does not have (1): it is read
        // once more, as a socket opened after a sample is in the next one;
        // from then on nothing is read but the owners' stat and listing.
        let InodePass { stats, .. } = a.attribute(&socks, far());
        assert_eq!((stats.confirmed, stats.processes_scanned), (2, 1));
        for _ in 0..3 {
            let InodePass { stats, .. } = a.attribute(&socks, far());
            assert_eq!((stats.confirmed, stats.processes_scanned), (2, 0));
        }
        assert_eq!(a.known_owners(), 2);
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

    /// Pid 300 ("rtp") holds `n` sockets at fds 10.. with inodes 7000...
    fn busy_owner(root: &Path, n: u32) -> Vec<Socket> {
        let dir = root.join("300");
        std::fs::create_dir_all(dir.join("fd")).unwrap();
        std::fs::write(
            dir.join("stat"),
            "300 (rtp) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 333 0 0\n",
        )
        .unwrap();
        (0..n)
            .map(|i| {
                std::os::unix::fs::symlink(
                    format!("socket:[{}]", 7000 + i),
                    dir.join(format!("fd/{}", 10 + i)),
                )
                .unwrap();
                sock(7000 + u64::from(i))
            })
            .collect()
    }

    /// A real process (python3) whose fds a test drives over its stdin, so
    /// that the attributor reads the real `/proc`, where fd directories
    /// report their fd count (Linux 6.2+): the path production takes. One
    /// command per line, one reply line:
    /// `socks N` (N unbound UDP sockets: "fd inode" pairs), `file` (opens
    /// /dev/null: its fd), `close FD`, `listen PATH` / `connect PATH` /
    /// `accept` (a Unix stream connection), `send FD` (passes FD over it
    /// with SCM_RIGHTS), `recv` (the fd and inode received).
    struct Juggler {
        child: std::process::Child,
        stdin: std::process::ChildStdin,
        out: std::io::BufReader<std::process::ChildStdout>,
    }

    const JUGGLER: &str = r#"
import os, socket, sys
srv = conn = None
for line in sys.stdin:
    w = line.split()
    c, a = w[0], w[1:]
    if c == "socks":
        out = []
        for _ in range(int(a[0])):
            fd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM).detach()
            out += [fd, os.fstat(fd).st_ino]
        r = out
    elif c == "file":
        r = [os.open("/dev/null", os.O_RDONLY)]
    elif c == "close":
        os.close(int(a[0])); r = []
    elif c == "listen":
        srv = socket.socket(socket.AF_UNIX); srv.bind(a[0]); srv.listen(1); r = []
    elif c == "connect":
        conn = socket.socket(socket.AF_UNIX); conn.connect(a[0]); r = []
    elif c == "accept":
        conn, _ = srv.accept(); r = []
    elif c == "send":
        socket.send_fds(conn, [b"x"], [int(a[0])]); r = []
    elif c == "recv":
        _, fds, _, _ = socket.recv_fds(conn, 1, 1); r = [fds[0], os.fstat(fds[0]).st_ino]
    print(*r, "ok", flush=True)
"#;

    impl Juggler {
        fn start() -> Juggler {
            use std::process::{Command, Stdio};
            let mut child = Command::new("python3")
                .args(["-c", JUGGLER])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("python3");
            let stdin = child.stdin.take().unwrap();
            let out = std::io::BufReader::new(child.stdout.take().unwrap());
            Juggler { child, stdin, out }
        }

        fn pid(&self) -> u32 {
            self.child.id()
        }

        /// Sends one command; the numbers of its reply.
        fn run(&mut self, cmd: &str) -> Vec<u64> {
            use std::io::{BufRead, Write};
            writeln!(self.stdin, "{cmd}").unwrap();
            let mut line = String::new();
            self.out.read_line(&mut line).unwrap();
            let mut words: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(words.pop(), Some("ok"), "{cmd}: {line:?}");
            words.iter().map(|w| w.parse().unwrap()).collect()
        }

        /// `socks n`: (fd, socket) pairs.
        fn socks(&mut self, n: usize) -> Vec<(u32, Socket)> {
            self.run(&format!("socks {n}"))
                .chunks(2)
                .map(|p| (p[0] as u32, real_sock(p[1])))
                .collect()
        }
    }

    impl Drop for Juggler {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// A socket of this process's uid (what a socket a juggler made has).
    fn real_sock(inode: u64) -> Socket {
        Socket {
            uid: rustix::process::geteuid().as_raw(),
            ..sock(inode)
        }
    }

    /// An attributor on the real `/proc`, or `None` (after saying so)
    /// where the kernel gives no fd count (before Linux 6.2): a failure in
    /// CI, whose kernel has it.
    /// The tests that count what a pass reads over the real /proc run one
    /// at a time: another one's 320-socket holder would be read by this
    /// one's scan of the other processes.
    static COUNTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// An attributor over the real /proc with the counting tests' lock
    /// held for as long as the attributor lives.
    struct Counting {
        a: Attributor,
        _one_at_a_time: std::sync::MutexGuard<'static, ()>,
    }

    impl std::ops::Deref for Counting {
        type Target = Attributor;
        fn deref(&self) -> &Attributor {
            &self.a
        }
    }

    impl std::ops::DerefMut for Counting {
        fn deref_mut(&mut self) -> &mut Attributor {
            &mut self.a
        }
    }

    /// The fd links of every process but `pid` and this test process: an
    /// upper bound of what a scan of the other processes can read.
    fn other_processes_fds(pid: u32) -> usize {
        let me = std::process::id().to_string();
        let skip = pid.to_string();
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.bytes().all(|b| b.is_ascii_digit()) && n != skip && n != me
            })
            .map(|e| {
                std::fs::read_dir(e.path().join("fd"))
                    .map(|d| d.count())
                    .unwrap_or(0)
            })
            .sum()
    }

    fn counting(test: &str) -> Option<Counting> {
        let one_at_a_time = COUNTING.lock().unwrap_or_else(|p| p.into_inner());
        let a = Attributor::new("/proc");
        if a.counts_fds {
            return Some(Counting {
                a,
                _one_at_a_time: one_at_a_time,
            });
        }
        if std::env::var_os("CI").is_some() {
            panic!("{test}: /proc gives no fd counts (Linux 6.2+) in CI");
        }
        eprintln!("SKIPPED {test}: /proc gives no fd counts (Linux 6.2+ does)");
        None
    }

    #[test]
    fn a_count_only_socket_of_a_new_process_never_rereads_the_known_owners() {
        let Some(mut a) =
            counting("a_count_only_socket_of_a_new_process_never_rereads_the_known_owners")
        else {
            return;
        };
        // A busy known owner (a connection pool), in steady state.
        let mut pool = Juggler::start();
        let socks: Vec<Socket> = pool.socks(320).into_iter().map(|(_, s)| s).collect();
        a.attribute(&socks, far());
        a.attribute(&socks, far());
        // A scraper on the same host: a new process of the same uid with a
        // new socket at every scrape. Counted only: the pool is neither
        // listed nor re-read for it, and the scan of the other processes
        // finds it. (The first missing socket has the pool's other files,
        // its stdio, classified once: that pass lists it.)
        for round in 0..3 {
            let mut scraper = Juggler::start();
            let (_, new) = scraper.socks(1).remove(0);
            let mut all = socks.clone();
            all.push(new.clone());
            let listings = a.listings;
            let only: InodeSet = [new.inode].into_iter().collect();
            let others = other_processes_fds(pool.pid());
            let pass = a.attribute_counting(&all, &only, far());
            let others = others.max(other_processes_fds(pool.pid()));
            assert_eq!(pass.owners[&new.inode].pid, scraper.pid());
            if round > 0 {
                assert_eq!(
                    a.listings, listings,
                    "the pool was listed: {:?}",
                    pass.stats
                );
            }
            // The pool's rolling slice (20) and at most the other
            // processes' fds (the host's own, counted before and after the
            // pass), never the pool's 320: a re-read pool would add 320.
            assert!(
                pass.stats.links_read < others + 20 + 160,
                "{:?}, other processes' fds {others}",
                pass.stats
            );
            // The scraper exits; the next pass forgets it.
            drop(scraper);
            a.attribute(&socks, far());
        }
        // The same socket with a verdict resting on it: every owner of its
        // uid is listed and re-read (what the count-only path spares).
        let mut scraper = Juggler::start();
        let (_, new) = scraper.socks(1).remove(0);
        let mut all = socks.clone();
        all.push(new.clone());
        let listings = a.listings;
        let pass = a.attribute(&all, far());
        assert_eq!(pass.owners[&new.inode].pid, scraper.pid());
        assert!(a.listings > listings, "{:?}", pass.stats);
        assert!(pass.stats.links_read >= 320, "{:?}", pass.stats);
        drop(pool);
    }

    #[test]
    fn steady_state_costs_per_owner_not_per_socket() {
        let Some(mut a) = counting("steady_state_costs_per_owner_not_per_socket") else {
            return;
        };
        let mut j = Juggler::start();
        let held = j.socks(320);
        let mut socks: Vec<Socket> = held.iter().map(|(_, s)| s.clone()).collect();
        let first = a.attribute(&socks, far());
        assert_eq!(first.owners.len(), 320);
        assert!(first.owners.values().all(|o| o.pid == j.pid()));
        // The next pass lists the fd directory once (a scan found the
        // owner: its other fds are not classified yet); from then on the
        // fd count stands for the listing.
        a.attribute(&socks, far());
        let listings = a.listings;
        for _ in 0..5 {
            let pass = a.attribute(&socks, far());
            assert_eq!(pass.owners.len(), 320);
            assert_eq!(pass.stats.confirmed, 320);
            assert_eq!(pass.stats.processes_scanned, 0, "{:?}", pass.stats);
            assert_eq!(
                pass.stats.links_read, 20,
                "a rolling 1/16 of 320 mapped fds, nothing per socket"
            );
        }
        assert_eq!(a.listings, listings, "no listing while the count holds");
        // Churn: a new socket opens at a new fd number and an old one
        // closes, in the same interval: the fd count is unchanged. The
        // owner is read once, not twice, and nothing else is scanned. (The
        // first time, its other files are classified too.)
        for (round, old) in held[..2].iter().enumerate() {
            let new = j.socks(1).remove(0);
            j.run(&format!("close {}", old.0));
            assert_ne!(new.0, old.0, "a different fd number");
            socks.retain(|s| s.inode != old.1.inode);
            socks.push(new.1.clone());
            let pass = a.attribute(&socks, far());
            assert_eq!(pass.owners[&new.1.inode].pid, j.pid());
            assert_eq!(pass.stats.processes_scanned, 1, "{:?}", pass.stats);
            if round == 1 {
                // The rolling slice, the freed fd and the new one.
                assert!(pass.stats.links_read <= 22, "{:?}", pass.stats);
            }
        }
    }

    /// The churn of a busy owner: a socket closes and the next one opens
    /// at its fd number (the kernel hands out the lowest free one), the
    /// count unchanged. Reading the freed fd finds it: no fd directory is
    /// listed (a listing of thousands of fds costs the kernel a dentry
    /// lookup each), not even for the owners of the new socket's uid.
    #[test]
    fn a_new_socket_at_a_freed_fd_number_lists_no_fd_directory() {
        let Some(mut a) = counting("a_new_socket_at_a_freed_fd_number_lists_no_fd_directory")
        else {
            return;
        };
        let mut j = Juggler::start();
        let held = j.socks(320);
        let mut socks: Vec<Socket> = held.iter().map(|(_, s)| s.clone()).collect();
        a.attribute(&socks, far());
        a.attribute(&socks, far());
        for (fd, old) in &held[..3] {
            j.run(&format!("close {fd}"));
            let new = j.socks(1).remove(0);
            assert_eq!(new.0, *fd, "the kernel reused the fd number");
            socks.retain(|s| s.inode != old.inode);
            socks.push(new.1.clone());
            let listings = a.listings;
            let pass = a.attribute(&socks, far());
            assert_eq!(pass.owners[&new.1.inode].pid, j.pid());
            assert_eq!(a.listings, listings, "no listing: {:?}", pass.stats);
            assert_eq!(pass.stats.processes_scanned, 1, "{:?}", pass.stats);
            assert!(pass.stats.links_read <= 21, "{:?}", pass.stats);
        }
    }

    /// A churning owner after one turn: 320 sockets attributed twice,
    /// then the first closed and a new one opened at its fd number.
    struct Churned {
        j: Juggler,
        /// The 320 sockets as the last pass had them (the old one in it).
        sample: Vec<Socket>,
        old: Socket,
        new: Socket,
    }

    fn churn_one(a: &mut Attributor) -> Churned {
        let mut j = Juggler::start();
        let held = j.socks(320);
        let sample: Vec<Socket> = held.iter().map(|(_, s)| s.clone()).collect();
        a.attribute(&sample, far());
        a.attribute(&sample, far());
        let (fd, old) = held[0].clone();
        j.run(&format!("close {fd}"));
        let (at, new) = j.socks(1).remove(0);
        assert_eq!(at, fd, "the kernel reused the fd number");
        Churned {
            j,
            sample,
            old,
            new,
        }
    }

    /// The churn of a busy owner caught by the sample mid-way: a socket
    /// closed while the sample was being taken (so the sample still has
    /// it) and the next one opened at its fd number (so it has that one
    /// too). No freed fd points there; the second sample shows the old one
    /// closed and its fd is read: no fd directory is listed, where round
    /// one listed every owner of the uid (31,000 entries in the
    /// busy-range benchmark) before the second sample was asked.
    #[test]
    fn a_new_socket_at_the_fd_of_one_closed_during_the_sample_lists_no_fd_directory() {
        let Some(mut a) = counting(
            "a_new_socket_at_the_fd_of_one_closed_during_the_sample_lists_no_fd_directory",
        ) else {
            return;
        };
        let Churned {
            j,
            mut sample,
            old,
            new,
        } = churn_one(&mut a);
        sample.push(new.clone());
        let mut asked = 0;
        let mut still_open = |s: &[&Socket]| {
            asked += 1;
            Some(
                s.iter()
                    .map(|s| s.inode)
                    .filter(|&i| i != old.inode)
                    .collect(),
            )
        };
        let listings = a.listings;
        let pass = a.attribute_rechecking(&sample, &InodeSet::default(), far(), &mut still_open);
        assert_eq!(pass.owners[&new.inode].pid, j.pid());
        assert_eq!(asked, 1, "one second sample");
        assert!(pass.closed.contains(&old.inode), "{:?}", pass.closed);
        assert_eq!(a.listings, listings, "no listing: {:?}", pass.stats);
        assert!(pass.stats.links_read <= 22, "{:?}", pass.stats);
    }

    /// A churning owner's next socket opens after the sample, at the fd
    /// number of one that closed: the pass reads that fd (freed) and finds
    /// a socket the sample does not have. The next sample has it: it is
    /// found by reading that one fd again, not by listing and reading
    /// every fd of every owner of its uid, as when the fd had been taken
    /// for a file that is not a watched socket.
    #[test]
    fn a_socket_opened_after_the_sample_is_found_at_its_fd_the_next_pass() {
        let Some(mut a) =
            counting("a_socket_opened_after_the_sample_is_found_at_its_fd_the_next_pass")
        else {
            return;
        };
        let Churned {
            j,
            mut sample,
            old,
            new,
        } = churn_one(&mut a);
        // The sample was taken between the close and the open; another
        // socket in it is not placed yet (as under churn there always is
        // one), so the pass reads the freed fd and finds the new socket.
        sample.retain(|s| s.inode != old.inode);
        let mut unplaced = new.clone();
        unplaced.inode = u64::MAX - 1;
        sample.push(unplaced);
        let pass = a.attribute(&sample, far());
        assert_eq!(pass.owners.len(), 319);
        assert!(pass.stats.processes_scanned >= 1, "{:?}", pass.stats);
        sample.pop();
        sample.push(new.clone());
        let listings = a.listings;
        let pass = a.attribute(&sample, far());
        assert_eq!(pass.owners[&new.inode].pid, j.pid());
        assert_eq!(a.listings, listings, "no listing: {:?}", pass.stats);
        assert!(pass.stats.links_read <= 21, "{:?}", pass.stats);
    }

    #[test]
    fn steady_state_costs_per_owner_not_per_socket_without_fd_counts() {
        let root = tempdir("steady");
        fake_proc(&root);
        let socks = busy_owner(&root, 320);
        let mut a = Attributor::new(&root);
        assert!(!a.counts_fds, "a fake tree gives no fd counts");
        let first = a.attribute(&socks, far());
        assert_eq!(first.owners.len(), 320);
        for _ in 0..5 {
            let pass = a.attribute(&socks, far());
            assert_eq!(pass.owners.len(), 320);
            assert_eq!(pass.stats.confirmed, 320);
            assert_eq!(
                pass.stats.links_read, 20,
                "a rolling 1/16 of 320 mapped fds, nothing per socket"
            );
        }
        // Churn: one socket closes, another opens at a new fd. Only the new
        // fd number is read (plus the rolling slice).
        std::fs::remove_file(root.join("300/fd/10")).unwrap();
        std::os::unix::fs::symlink("socket:[9000]", root.join("300/fd/5000")).unwrap();
        let mut socks: Vec<Socket> = socks[1..].to_vec();
        socks.push(sock(9000));
        let pass = a.attribute(&socks, far());
        assert_eq!(pass.owners[&9000].comm, b"rtp");
        assert_eq!(pass.stats.processes_scanned, 1, "{:?}", pass.stats);
        assert!(pass.stats.links_read <= 21, "{:?}", pass.stats);
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// The sample caught a churning owner mid-way: the socket it closed
    /// (7000, at fd 10) and the new one at the same fd number (9000) are
    /// both in it. Without a second sample, finding 9000 reads every fd
    /// of every owner of its uid; with one, only fd 10, whose mapped
    /// socket the second sample shows closed. Both find it.
    #[test]
    fn a_new_socket_at_a_closed_sockets_fd_is_found_where_the_second_sample_points() {
        for recheck in [false, true] {
            let root = tempdir(&format!("reused-{recheck}"));
            fake_proc(&root);
            let socks = busy_owner(&root, 320);
            let mut a = Attributor::new(&root);
            assert_eq!(a.attribute(&socks, far()).owners.len(), 320);
            std::fs::remove_file(root.join("300/fd/10")).unwrap();
            std::os::unix::fs::symlink("socket:[9000]", root.join("300/fd/10")).unwrap();
            let mut sample = socks.clone();
            sample.push(sock(9000));
            let mut asked = Vec::new();
            let mut still_open = |s: &[&Socket]| {
                asked.extend(s.iter().map(|s| s.inode));
                recheck.then(|| s.iter().map(|s| s.inode).filter(|&i| i != 7000).collect())
            };
            let pass =
                a.attribute_rechecking(&sample, &InodeSet::default(), far(), &mut still_open);
            assert_eq!(pass.owners[&9000].comm, b"rtp", "recheck {recheck}");
            assert!(asked.contains(&9000) && asked.contains(&7000), "{asked:?}");
            if recheck {
                assert!(pass.closed.contains(&7000), "{:?}", pass.closed);
                assert!(pass.stats.links_read < 40, "{:?}", pass.stats);
            } else {
                assert!(pass.closed.is_empty());
                assert!(pass.stats.links_read >= 320, "{:?}", pass.stats);
            }
            std::fs::remove_dir_all(&root).unwrap();
        }
    }

    /// A socket closed between the sample and attribution is not searched
    /// for when a second sample shows it gone: no scan of the other
    /// processes, no back-off entry, no kernel candidate; it is said closed.
    #[test]
    fn a_socket_closed_since_the_sample_is_not_searched_for() {
        for recheck in [false, true] {
            let root = tempdir(&format!("closed-{recheck}"));
            fake_proc(&root);
            let mut a = Attributor::new(&root);
            a.set_sees_all(true);
            let held = [sock(5001), sock(5002)];
            assert_eq!(a.attribute(&held, far()).owners.len(), 2);
            let sample = [sock(5001), sock(5002), sock(9999)];
            let mut still_open = |s: &[&Socket]| {
                recheck.then(|| s.iter().map(|s| s.inode).filter(|&i| i != 9999).collect())
            };
            let pass =
                a.attribute_rechecking(&sample, &InodeSet::default(), far(), &mut still_open);
            assert_eq!(pass.owners.len(), 2);
            if recheck {
                assert_eq!(pass.closed, InodeSet::from_iter([9999]));
                assert_eq!(pass.stats.closed, 1);
                assert!(pass.candidates.is_empty(), "{:?}", pass.candidates);
                assert!(
                    !a.missing.contains_key(&9999),
                    "no back-off for a closed socket"
                );
            } else {
                assert!(pass.closed.is_empty());
                assert_eq!(
                    pass.candidates,
                    vec![(9999, true)],
                    "searched, found nowhere"
                );
            }
            std::fs::remove_dir_all(&root).unwrap();
        }
    }

    #[test]
    fn a_socket_passed_on_is_followed_when_the_old_fd_closes() {
        let test = "a_socket_passed_on_is_followed_when_the_old_fd_closes";
        let Some(mut a) = counting(test) else {
            return;
        };
        // A sender with 32 watched sockets (more than the rolling re-read
        // covers in one pass), found by a scan, and a receiver.
        let mut sender = Juggler::start();
        let mut receiver = Juggler::start();
        let held = sender.socks(32);
        let socks: Vec<Socket> = held.iter().map(|(_, s)| s.clone()).collect();
        for _ in 0..3 {
            let pass = a.attribute(&socks, far());
            assert!(pass.owners.values().all(|o| o.pid == sender.pid()));
        }
        // The socket the rolling re-read reaches last.
        let from = a.owners[&sender.pid()].verify_from;
        let (fd, passed) = held
            .iter()
            .filter(|(fd, _)| *fd < from)
            .max_by_key(|(fd, _)| *fd)
            .or_else(|| held.iter().max_by_key(|(fd, _)| *fd))
            .cloned()
            .unwrap();
        let path = std::env::temp_dir().join(format!("portrange-attr-pass-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        sender.run(&format!("listen {}", path.display()));
        receiver.run(&format!("connect {}", path.display()));
        sender.run("accept");
        sender.run(&format!("send {fd}"));
        let got = receiver.run("recv");
        assert_eq!(got[1], passed.inode, "the same socket");
        sender.run(&format!("close {fd}"));
        let pass = a.attribute(&socks, far());
        assert_eq!(
            pass.owners[&passed.inode].pid,
            receiver.pid(),
            "at once, from the changed fd count and the listing"
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_socket_found_nowhere_then_received_by_a_known_owner_is_found_at_once() {
        let test = "a_socket_found_nowhere_then_received_by_a_known_owner_is_found_at_once";
        let Some(mut a) = counting(test) else {
            return;
        };
        let mut owner = Juggler::start();
        let mut maker = Juggler::start();
        let (_, mine) = owner.socks(1).remove(0);
        let spare = owner.run("file")[0];
        let path =
            std::env::temp_dir().join(format!("portrange-attr-flight-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        owner.run(&format!("listen {}", path.display()));
        maker.run(&format!("connect {}", path.display()));
        owner.run("accept");
        // The maker passes a socket to the owner and closes its copy: in
        // flight, no process holds it, and the search finds it nowhere.
        let (fd, flying) = maker.socks(1).remove(0);
        maker.run(&format!("send {fd}"));
        maker.run(&format!("close {fd}"));
        let socks = [mine.clone(), flying.clone()];
        for _ in 0..2 {
            let pass = a.attribute(&socks, far());
            assert_eq!(pass.owners[&mine.inode].pid, owner.pid());
            assert!(!pass.owners.contains_key(&flying.inode));
        }
        assert!(a.missing.contains_key(&flying.inode), "in back-off");
        // The owner takes it (a new fd number) and closes another fd: its fd
        // count is what it was. Found at once, not when the back-off ends.
        let got = owner.run("recv");
        owner.run(&format!("close {spare}"));
        assert_eq!(got[1], flying.inode);
        assert_ne!(got[0], spare, "a different fd number");
        let pass = a.attribute(&socks, far());
        assert_eq!(
            pass.owners.get(&flying.inode).map(|o| o.pid),
            Some(owner.pid())
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_socket_passed_on_is_followed_when_the_old_fd_closes_without_fd_counts() {
        let root = tempdir("passed");
        fake_proc(&root);
        let mut a = Attributor::new(&root);
        assert!(!a.counts_fds, "a fake tree gives no fd counts");
        assert_eq!(a.attribute(&[sock(5001)], far()).owners[&5001].pid, 100);
        // Pid 100 (same process) passes 5001 to pid 200 and closes fd 3.
        std::fs::remove_file(root.join("100/fd/3")).unwrap();
        std::os::unix::fs::symlink("socket:[5001]", root.join("200/fd/9")).unwrap();
        let pass = a.attribute(&[sock(5001)], far());
        assert_eq!(pass.owners[&5001].pid, 200, "at once, from the listing");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_reused_fd_number_is_caught_by_the_rolling_reread() {
        let root = tempdir("reused");
        fake_proc(&root);
        let mut socks = busy_owner(&root, 32);
        socks.push(sock(5002));
        let mut a = Attributor::new(&root);
        assert_eq!(a.attribute(&socks, far()).owners[&7005].pid, 300);
        // Pid 300 passes 7005 (fd 15) to pid 200 and reuses fd 15 for a
        // file: the listing still shows fd 15, so only a re-read can tell.
        std::fs::remove_file(root.join("300/fd/15")).unwrap();
        std::os::unix::fs::symlink("/var/log/x", root.join("300/fd/15")).unwrap();
        std::os::unix::fs::symlink("socket:[7005]", root.join("200/fd/9")).unwrap();
        let mut passes = 0;
        loop {
            passes += 1;
            let pass = a.attribute(&socks, far());
            assert!(pass.stats.links_read <= 3 + 32, "{:?}", pass.stats);
            if pass.owners.get(&7005).is_some_and(|o| o.pid == 200) {
                break;
            }
            assert!(
                passes <= VERIFY_ROUNDS + 1,
                "still stale after {passes} passes"
            );
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// An owner whose sockets are all only counted is re-read over 64
    /// passes, not 16: a reused fd is caught later, and each pass reads a
    /// quarter of the links. One socket a verdict needs puts the owner
    /// back on 16.
    #[test]
    fn an_owner_of_counted_sockets_only_is_reread_over_64_passes() {
        let root = tempdir("counted");
        fake_proc(&root);
        let socks = busy_owner(&root, 128);
        let counted: InodeSet = socks.iter().map(|s| s.inode).collect();
        let mut a = Attributor::new(&root);
        assert_eq!(
            a.attribute_counting(&socks, &counted, far()).owners[&7100].pid,
            300
        );
        // Pid 300 passes 7100 (fd 110, 100 fds past where the re-read
        // starts) to pid 200 and reuses fd 110 for a file.
        std::fs::remove_file(root.join("300/fd/110")).unwrap();
        std::os::unix::fs::symlink("/var/log/x", root.join("300/fd/110")).unwrap();
        std::os::unix::fs::symlink("socket:[7100]", root.join("200/fd/9")).unwrap();
        let mut passes = 0;
        let mut reads = Vec::new();
        loop {
            passes += 1;
            let pass = a.attribute_counting(&socks, &counted, far());
            reads.push(pass.stats.links_read);
            if pass.owners.get(&7100).is_some_and(|o| o.pid == 200) {
                break;
            }
            assert!(
                passes <= COUNTED_VERIFY_ROUNDS + 1,
                "still stale after {passes} passes"
            );
        }
        // A sixteenth (8 a pass) would have reached it in 13 passes.
        assert!(passes > VERIFY_ROUNDS + 1, "found after {passes} passes");
        // 128 / 64 = 2 links re-read a pass (a fake tree has no fd
        // counts: each pass lists the directory, but reads no new fd),
        // until the last, which searches for the socket found gone.
        let (last, before) = reads.split_last().unwrap();
        assert!(before.iter().all(|&n| n == 2), "{reads:?}");
        assert!(*last > 2, "{reads:?}");
        // With one socket a verdict needs, a sixteenth again.
        let mut some: InodeSet = counted.clone();
        some.remove(&7001);
        let pass = a.attribute_counting(&socks, &some, far());
        let sixteenth = 128 / VERIFY_ROUNDS;
        assert!(
            (sixteenth..=sixteenth + 1).contains(&pass.stats.links_read),
            "{:?}",
            pass.stats
        );
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
        let p = a.pending.take().unwrap();
        let result = p
            .job
            .finish(Instant::now() + Duration::from_secs(10))
            .unwrap();
        assert_eq!(result.hits.len(), 1);
        // ... but before the next scrape takes the result, pid 100 exits
        // and its pid is reused by a program that holds nothing.
        a.pending = Some(Pending {
            job: crate::deadline::spawn("test-scan", move || result).unwrap(),
            inodes: p.inodes,
        });
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
}
