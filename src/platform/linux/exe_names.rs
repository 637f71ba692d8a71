//! What an executable's path and a process's name prove, and the looks
//! that tell it. Two claims are checked here.
//!
//! **The path.** An exe link's text is the path in the process's own mount
//! namespace. A mount namespace that belongs to the host's user namespace
//! was made by root (systemd's `PrivateTmp`, a container runtime run by
//! root): its view is root's doing, and the path is resolved under
//! `<procfs>/<pid>/root`. One that belongs to any other user namespace
//! was made by whoever owns that namespace (any user may `unshare -Urm`
//! and bind-mount python over `/opt/ctx/CtxGfx`): there the text proves
//! nothing, and what counts is the file: the executable's device and inode
//! (a `stat` of `<pid>/exe` follows to the real file) against the file the
//! path names as the host sees it (resolved under the host's root,
//! [`HostView`]). A different file is not the program the path names: the
//! owner's exe is marked ([`crate::platform::NOT_THIS_FILE_MARK`]), and
//! like a deleted one it satisfies no allowlist entry and is shown as gone.
//!
//! **The name.** A program started through a link has the link's name,
//! not its file's: `python3` runs `/usr/bin/python3.11`, a busybox applet
//! `sh` runs `/bin/busybox`. Such a name is taken as the program's
//! ([`crate::platform::Owner::name_via_link`]) when a link of that name to
//! the process's executable lies in a directory only root can write
//! ([`crate::platform::trust`]): the executable's own directory, or one
//! of the system's program directories ([`SYSTEM_DIRS`]). Every link
//! followed on the way must lie in such a directory too, and the end must
//! be the very file the process runs (the same device and inode as
//! `<pid>/exe`). Paths are resolved where the path itself is (under the
//! process's root for root's namespaces, under the host's for a user's),
//! absolute links against that root. The kernel keeps 15 bytes of a name:
//! a 15-byte name is looked for as the start of longer ones.
//!
//! Both looks touch the executable's file system, which may stop answering
//! (a dead NFS server): they run on a pool ([`crate::looks`]) that the
//! collection waits for only until its deadline. An owner whose look has
//! not answered loses its exe (the verdict is "unknown", never
//! "expected") and the look is listed in the attribution's `skipped`; a
//! look that never returns is not started again, and its answer, when it
//! comes, is used. Answers are cached per process (pid and start time,
//! name, exe path and mount namespace) and dropped with the processes: a
//! steady scrape looks at no file here, and a process of root's
//! namespaces whose name agrees with its file name is never looked at.
//! Each scrape costs a read of `<pid>/stat` and an `open` of
//! `<pid>/ns/mnt` per owning process, and `ioctl(NS_GET_USERNS)` once per
//! process and namespace; none of these waits on a file system.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rustix::fs::{Mode, OFlags};

use crate::looks::{Looks, Unanswered};
use crate::names;
use crate::platform::{NOT_THIS_FILE_MARK, Owner, Skipped, trust};

/// The system's program directories, looked in for links besides the
/// executable's own directory.
pub const SYSTEM_DIRS: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Links followed at most, as the kernel's own limit.
const MAX_LINKS: usize = 40;

/// Cache entries kept at most (beyond, the cache starts over).
const MAX_CACHED: usize = 4096;

/// Look threads at most: as many looks may hang before nothing else is
/// looked at.
pub const LOOK_WORKERS: usize = 4;

/// Whose view the host's is: the user namespace that made the host's
/// mount namespaces, and the root a path is resolved under "as the host
/// sees it". Taken from pid 1 of `--path.procfs` (the host's init; in a
/// container with a pid namespace of its own, the container's init, whose
/// namespaces the exporter shares), or from the exporter itself when pid 1
/// cannot be read.
#[derive(Clone, Debug)]
pub struct HostView {
    /// The user namespace, as (device, inode) of its nsfs file; `None`
    /// when it cannot be read (then every mount namespace is a user's).
    pub userns: Option<(u64, u64)>,
    pub root: PathBuf,
}

impl HostView {
    pub fn of(procfs: &Path) -> HostView {
        for who in ["1", "self"] {
            let dir = procfs.join(who);
            let root = dir.join("root");
            if let (Ok(ns), Ok(_)) = (
                std::fs::metadata(dir.join("ns/user")),
                std::fs::read_dir(&root),
            ) {
                return HostView {
                    userns: Some((ns.dev(), ns.ino())),
                    root,
                };
            }
        }
        HostView {
            userns: None,
            root: procfs.join("self/root"),
        }
    }
}

/// What is looked at for one process: its exe path and name, its mount
/// namespace, and whether that belongs to a user namespace other than the
/// host's (then the path is checked against the host's file).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ExeKey {
    pub pid: u32,
    /// The process's start time (clock ticks after boot): a pid reused by
    /// another process is another key.
    pub start: u64,
    pub comm: Vec<u8>,
    pub exe: Vec<u8>,
    pub mnt_ns: u64,
    pub users_ns: bool,
}

/// What a look found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExeAnswer {
    /// The file the path names (as the host sees it) is the one the
    /// process runs; always true in root's namespaces.
    pub same_file: bool,
    /// A root-only link of the process's name leads to that file.
    pub via_link: bool,
}

/// The executables' judge: the namespace check, the look pool and the
/// answers.
pub struct Executables {
    procfs: PathBuf,
    host: HostView,
    looks: Looks<ExeKey, Option<ExeAnswer>>,
    answers: HashMap<ExeKey, ExeAnswer>,
    /// Whether the mount namespace of each process (pid, start time,
    /// namespace inode) belongs to a user namespace other than the host's.
    /// Not by inode alone: the kernel reuses a dead namespace's inode
    /// number, and a process's namespace lives while the process is in it.
    users_ns: HashMap<(u32, u64, u64), bool>,
    /// Looks answered so far (tests and the cost check).
    pub lookups: usize,
}

impl Executables {
    pub fn new(procfs: PathBuf) -> Executables {
        let host = HostView::of(&procfs);
        Executables::with_host(procfs, host)
    }

    pub fn with_host(procfs: PathBuf, host: HostView) -> Executables {
        let (p, h) = (procfs.clone(), host.root.clone());
        Executables {
            looks: Looks::new("exe-look", LOOK_WORKERS, move |k: &ExeKey| look(&p, &h, k)),
            procfs,
            host,
            answers: HashMap::new(),
            users_ns: HashMap::new(),
            lookups: 0,
        }
    }

    /// Judges every owner's executable, one new owner value per process
    /// whose exe or name the looks change: a path a user's namespace
    /// forged is marked, a name a root-only link vouches for is marked,
    /// and an owner not looked at by `deadline` loses its exe (listed in
    /// `skipped`).
    pub fn judge(
        &mut self,
        owners: &mut crate::platform::InodeMap<Arc<Owner>>,
        deadline: Instant,
        skipped: &mut Vec<Skipped>,
    ) {
        // One decision per process.
        let mut keys: HashMap<u32, Option<ExeKey>> = HashMap::new();
        for o in owners.values() {
            if keys.contains_key(&o.pid) {
                continue;
            }
            let key = self.key(o);
            keys.insert(o.pid, key);
        }
        let ask: Vec<ExeKey> = keys
            .values()
            .flatten()
            .filter(|k| !self.answers.contains_key(*k))
            .cloned()
            .collect();
        if !ask.is_empty() {
            for (k, a) in self.looks.ask(&ask, deadline) {
                self.lookups += 1;
                match a {
                    Some(a) => {
                        if self.answers.len() >= MAX_CACHED {
                            self.answers.clear();
                        }
                        self.answers.insert(k, a);
                    }
                    // The process went away between the sample and the look.
                    None => {
                        self.answers.insert(
                            k,
                            ExeAnswer {
                                same_file: false,
                                via_link: false,
                            },
                        );
                    }
                }
            }
        }
        let mut changed: HashMap<u32, Option<Arc<Owner>>> = HashMap::new();
        for o in owners.values_mut() {
            let Some(key) = keys.get(&o.pid) else {
                continue;
            };
            let new = changed
                .entry(o.pid)
                .or_insert_with(|| judged(o, key.as_ref(), &self.answers));
            if let Some(n) = new {
                *o = n.clone();
            }
        }
        // Not answered: named, with how long the look has been running.
        let unanswered = self.looks.unanswered();
        for u in &unanswered {
            let (k, why) = match u {
                Unanswered::Running(k, d) => (
                    k,
                    format!(
                        "the look at its file has not returned for {:.1} s (a file system that does not answer?); not started again while it runs",
                        d.as_secs_f64()
                    ),
                ),
                Unanswered::Queued(k) => (
                    k,
                    format!(
                        "not looked at: every look thread ({LOOK_WORKERS}) is stuck on a file that does not answer"
                    ),
                ),
            };
            if keys.get(&k.pid).is_some_and(|x| x.as_ref() == Some(k)) {
                skipped.push(Skipped::new(
                    Skipped::ATTRIBUTION,
                    format!(
                        "the executable of pid {} ({})",
                        k.pid,
                        String::from_utf8_lossy(&k.exe)
                    ),
                    why,
                ));
            }
        }
        self.answers.retain(|k, _| keys.contains_key(&k.pid));
        self.looks.retain(|k| keys.contains_key(&k.pid));
        self.users_ns
            .retain(|(pid, _, _), _| keys.contains_key(pid));
    }

    /// What to look at for `o`; `None` when nothing is: no exe, a gone
    /// one, or a process of root's namespaces whose name is its file's.
    /// A process whose mount namespace cannot be read is looked at as a
    /// user's (fail closed).
    fn key(&mut self, o: &Owner) -> Option<ExeKey> {
        let exe = o.exe.as_deref()?;
        if o.exe_gone() {
            return None;
        }
        let start = std::fs::read(self.procfs.join(format!("{}/stat", o.pid)))
            .ok()
            .and_then(|b| super::attribution::parse_stat(&b).map(|(_, t)| t))
            .unwrap_or(0);
        let (mnt_ns, users_ns) = self.mount_ns(o.pid, start).unwrap_or((0, true));
        if !users_ns && names::HOST.name_agrees(&o.comm, exe) {
            return None;
        }
        Some(ExeKey {
            pid: o.pid,
            start,
            comm: o.comm.clone(),
            exe: exe.to_vec(),
            mnt_ns,
            users_ns,
        })
    }

    /// The mount namespace of `pid` (its inode) and whether it belongs to
    /// a user namespace other than the host's; `None` when it cannot be
    /// read.
    fn mount_ns(&mut self, pid: u32, start: u64) -> Option<(u64, bool)> {
        let fd = rustix::fs::open(
            self.procfs.join(format!("{pid}/ns/mnt")),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let ino = rustix::fs::fstat(&fd).ok()?.st_ino;
        if let Some(&users) = self.users_ns.get(&(pid, start, ino)) {
            return Some((ino, users));
        }
        let owner = userns_of(&fd).ok();
        let users = match (owner, self.host.userns) {
            (Some(o), Some(h)) => o != h,
            _ => true,
        };
        if self.users_ns.len() >= MAX_CACHED {
            self.users_ns.clear();
        }
        self.users_ns.insert((pid, start, ino), users);
        Some((ino, users))
    }
}

/// The owner `o` becomes with the answer for `key`; `None`: unchanged.
fn judged(
    o: &Owner,
    key: Option<&ExeKey>,
    answers: &HashMap<ExeKey, ExeAnswer>,
) -> Option<Arc<Owner>> {
    let key = key?;
    match answers.get(key) {
        Some(a) if !a.same_file => {
            let mut exe = key.exe.clone();
            exe.extend_from_slice(NOT_THIS_FILE_MARK);
            Some(Arc::new(Owner {
                exe: Some(exe),
                ..o.clone()
            }))
        }
        Some(a) if a.via_link => Some(Arc::new(Owner {
            name_via_link: true,
            ..o.clone()
        })),
        Some(_) => None,
        // Not looked at in time: what the path says is not known.
        None => Some(Arc::new(Owner {
            exe: None,
            ..o.clone()
        })),
    }
}

/// The user namespace that owns the namespace open at `ns`, as (device,
/// inode) of its nsfs file.
fn userns_of(ns: &OwnedFd) -> std::io::Result<(u64, u64)> {
    // SAFETY: NS_GET_USERNS takes no argument and returns a new file
    // descriptor (or -1); the fd passed is open for the call's duration.
    let raw = unsafe { libc::ioctl(ns.as_raw_fd(), libc::NS_GET_USERNS as _) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the ioctl returned a new descriptor that nothing else owns.
    let user = unsafe { OwnedFd::from_raw_fd(raw) };
    let st = rustix::fs::fstat(&user)?;
    Ok((st.st_dev, st.st_ino))
}

/// The look for one process (on a look thread: it may block on the
/// executable's file system). `None` when the process is gone.
pub fn look(procfs: &Path, host_root: &Path, key: &ExeKey) -> Option<ExeAnswer> {
    let proc_pid = procfs.join(key.pid.to_string());
    let real = std::fs::metadata(proc_pid.join("exe")).ok()?;
    let want = (real.dev(), real.ino());
    let root = if key.users_ns {
        let named = resolve(host_root, &key.exe, &mut |_| true);
        if named.is_none_or(|end| end.id != want) {
            return Some(ExeAnswer {
                same_file: false,
                via_link: false,
            });
        }
        host_root.to_path_buf()
    } else {
        proc_pid.join("root")
    };
    let via_link = !names::HOST.name_agrees(&key.comm, &key.exe)
        && link_leads_to(&root, &key.comm, &key.exe, want);
    Some(ExeAnswer {
        same_file: true,
        via_link,
    })
}

/// Whether a link named `comm` in a root-only directory (inside `root`)
/// leads to the file `want`, the executable of a process whose exe link
/// reads `exe`.
fn link_leads_to(root: &Path, comm: &[u8], exe: &[u8], want: (u64, u64)) -> bool {
    if comm.is_empty() || comm.contains(&b'/') || comm == b"." || comm == b".." {
        return false;
    }
    let mut trusted = TrustCache::default();
    let exe_dir = match exe.iter().rposition(|&b| b == b'/') {
        Some(0) => b"/".to_vec(),
        Some(i) => exe[..i].to_vec(),
        None => return false,
    };
    let mut dirs: Vec<Vec<u8>> = vec![exe_dir];
    for d in SYSTEM_DIRS {
        if !dirs.iter().any(|x| x == d.as_bytes()) {
            dirs.push(d.as_bytes().to_vec());
        }
    }
    for dir in dirs {
        for name in candidates(root, &dir, comm) {
            let mut path = dir.clone();
            if !path.ends_with(b"/") {
                path.push(b'/');
            }
            path.extend_from_slice(&name);
            // The name itself must be a link (a file of that name is the
            // program's own name, which needs no vouching).
            if let Some(end) = resolve(root, &path, &mut |d| trusted.root_only(root, d))
                && end.links > 0
                && end.id == want
            {
                return true;
            }
        }
    }
    false
}

/// The entries of `dir` (inside `root`) that the kernel would name
/// `comm`: `comm` itself, and for a 15-byte `comm` every longer name
/// starting with it.
fn candidates(root: &Path, dir: &[u8], comm: &[u8]) -> Vec<Vec<u8>> {
    if comm.len() < 15 {
        return vec![comm.to_vec()];
    }
    let Ok(entries) = std::fs::read_dir(inside(root, dir)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name().as_bytes().to_vec())
        .filter(|n| n.starts_with(comm))
        .collect()
}

/// `path` (absolute, inside the process's root) as a path of ours.
fn inside(root: &Path, path: &[u8]) -> PathBuf {
    let rel = path.strip_prefix(b"/").unwrap_or(path);
    root.join(std::ffi::OsStr::from_bytes(rel))
}

/// Where a path led: the file's device and inode, and how many links
/// were followed.
#[derive(Debug, PartialEq, Eq)]
pub struct End {
    pub id: (u64, u64),
    pub links: usize,
    /// The resolved path, inside the root.
    pub path: Vec<u8>,
}

/// Resolves the absolute `path` inside `root` component by component,
/// following links (absolute ones against `root`), and gives up (`None`)
/// when a link lies in a directory `root_only` refuses, a part is
/// missing, or there are more than [`MAX_LINKS`] links.
pub fn resolve(root: &Path, path: &[u8], root_only: &mut dyn FnMut(&[u8]) -> bool) -> Option<End> {
    let mut done: Vec<Vec<u8>> = Vec::new();
    let mut todo: std::collections::VecDeque<Vec<u8>> = parts(path).collect();
    let mut links = 0;
    while let Some(part) = todo.pop_front() {
        if part == b".." {
            done.pop();
            continue;
        }
        let mut here = joined(&done);
        if here != b"/" {
            here.push(b'/');
        }
        here.extend_from_slice(&part);
        let meta = std::fs::symlink_metadata(inside(root, &here)).ok()?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS || !root_only(&joined(&done)) {
                return None;
            }
            let target = std::fs::read_link(inside(root, &here)).ok()?;
            let target = target.as_os_str().as_bytes();
            if target.starts_with(b"/") {
                done.clear();
            }
            for p in parts(target).collect::<Vec<_>>().into_iter().rev() {
                todo.push_front(p);
            }
        } else {
            done.push(part);
        }
    }
    let path = joined(&done);
    let meta = std::fs::metadata(inside(root, &path)).ok()?;
    Some(End {
        id: (meta.dev(), meta.ino()),
        links,
        path,
    })
}

/// The parts of a path, without empty ones and `.`.
fn parts(path: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    path.split(|&b| b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
        .map(<[u8]>::to_vec)
}

fn joined(parts: &[Vec<u8>]) -> Vec<u8> {
    if parts.is_empty() {
        return b"/".to_vec();
    }
    let mut out = Vec::new();
    for p in parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    out
}

/// Whether directories (resolved, inside one root) are root-only, each
/// with every directory above it, asked once each.
#[derive(Default)]
struct TrustCache(HashMap<Vec<u8>, bool>);

impl TrustCache {
    fn root_only(&mut self, root: &Path, dir: &[u8]) -> bool {
        if let Some(&v) = self.0.get(dir) {
            return v;
        }
        let own = std::fs::symlink_metadata(inside(root, dir))
            .is_ok_and(|m| m.is_dir() && trust::root_only(m.uid(), m.mode()));
        let v = own
            && match dir.iter().rposition(|&b| b == b'/') {
                _ if dir == b"/" => true,
                Some(0) => self.root_only(root, b"/"),
                Some(i) => self.root_only(root, &dir[..i]),
                None => false,
            };
        self.0.insert(dir.to_vec(), v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("portrange-links-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A fake root: /usr/bin/python3.11, /usr/bin/python3 -> python3.11,
    /// /bin -> usr/bin, /usr/bin/sh -> /bin/busybox -> /usr/bin/bb,
    /// /opt/evil/CtxGfx -> /usr/bin/python3.11 (an untrusted directory).
    fn fake_root(tag: &str) -> PathBuf {
        let r = tempdir(tag);
        std::fs::create_dir_all(r.join("usr/bin")).unwrap();
        std::fs::create_dir_all(r.join("opt/evil")).unwrap();
        std::fs::write(r.join("usr/bin/python3.11"), b"py").unwrap();
        std::fs::write(r.join("usr/bin/bb"), b"bb").unwrap();
        symlink("python3.11", r.join("usr/bin/python3")).unwrap();
        symlink("usr/bin", r.join("bin")).unwrap();
        symlink("/usr/bin/bb", r.join("usr/bin/busybox")).unwrap();
        symlink("/bin/busybox", r.join("usr/bin/sh")).unwrap();
        symlink("/usr/bin/python3.11", r.join("opt/evil/CtxGfx")).unwrap();
        symlink(
            "../../usr/bin/python3.11",
            r.join("usr/bin/0123456789abcdefgh"),
        )
        .unwrap();
        r
    }

    fn id(p: &Path) -> (u64, u64) {
        let m = std::fs::metadata(p).unwrap();
        (m.dev(), m.ino())
    }

    #[test]
    fn links_resolve_inside_the_root_and_through_trusted_directories_only() {
        let r = fake_root("resolve");
        let py = id(&r.join("usr/bin/python3.11"));
        let trusting = &mut |_: &[u8]| true;
        let end = resolve(&r, b"/usr/bin/python3", trusting).unwrap();
        assert_eq!((end.id, end.links), (py, 1));
        assert_eq!(end.path, b"/usr/bin/python3.11");
        // /bin/sh: the /bin link, then sh -> /bin/busybox (absolute,
        // against the fake root, not ours), busybox -> /usr/bin/bb.
        let end = resolve(&r, b"/bin/sh", trusting).unwrap();
        assert_eq!(
            (end.id, end.path.as_slice()),
            (id(&r.join("usr/bin/bb")), &b"/usr/bin/bb"[..])
        );
        assert_eq!(end.links, 4);
        assert!(resolve(&r, b"/usr/bin/missing", trusting).is_none());
        // A link in a directory not trusted is not followed.
        let mut asked = Vec::new();
        let mut not_opt = |d: &[u8]| {
            asked.push(d.to_vec());
            !d.starts_with(b"/opt")
        };
        assert!(resolve(&r, b"/opt/evil/CtxGfx", &mut not_opt).is_none());
        assert_eq!(asked, vec![b"/opt/evil".to_vec()]);
        // A loop ends.
        symlink("loop", r.join("usr/bin/loop")).unwrap();
        assert!(resolve(&r, b"/usr/bin/loop", trusting).is_none());
        let _ = std::fs::remove_dir_all(r);
    }

    #[test]
    fn fifteen_byte_names_are_looked_for_as_prefixes() {
        let r = fake_root("prefix");
        assert_eq!(
            candidates(&r, b"/usr/bin", b"0123456789abcde"),
            vec![b"0123456789abcdefgh".to_vec()]
        );
        assert_eq!(
            candidates(&r, b"/usr/bin", b"python3"),
            vec![b"python3".to_vec()]
        );
        let _ = std::fs::remove_dir_all(r);
    }

    /// The real thing, on this host: this test process runs through
    /// `/proc/self`, whose exe is the test binary; a link to it in a
    /// directory only root can write vouches for the name, one elsewhere
    /// (the temporary directory is everyone's) does not.
    #[test]
    fn a_root_only_link_vouches_and_another_does_not() {
        let me = std::fs::read_link("/proc/self/exe").unwrap();
        let pid = std::process::id();
        let proc_pid = Path::new("/proc").join(pid.to_string());
        let root = proc_pid.join("root");
        let m = std::fs::metadata(&me).unwrap();
        let want = (m.dev(), m.ino());
        // Not a link at all: no such name anywhere.
        let exe = me.as_os_str().as_bytes();
        assert!(!link_leads_to(&root, b"no-such-name-x", exe, want));
        // A link in the temporary directory (writable by all) is no proof,
        // even when it is in the executable's own directory.
        let d = tempdir("vouch");
        let link = d.join("CtxGfx");
        symlink(&me, &link).unwrap();
        let in_tmp = d.join("copy").as_os_str().as_bytes().to_vec();
        assert!(!link_leads_to(&root, b"CtxGfx", &in_tmp, want));
        let _ = std::fs::remove_dir_all(d);
        // As root, a link in a root-only directory of our own making.
        if rustix::process::geteuid().is_root() {
            let dir = Path::new("/run").join(format!("portrange-links-{pid}"));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir(&dir).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            symlink(&me, dir.join("vouched-name")).unwrap();
            let exe_here = dir.join("x").as_os_str().as_bytes().to_vec();
            let ok = link_leads_to(&root, b"vouched-name", &exe_here, want);
            let _ = std::fs::remove_dir_all(&dir);
            // /run is root-only on every system this runs on; the test
            // binary's own directory (the checkout) need not be.
            assert!(ok, "a link in a root-only /run directory");
        }
    }

    fn owner(pid: u32, comm: &[u8], exe: &[u8]) -> Arc<Owner> {
        Arc::new(Owner {
            pid,
            comm: comm.to_vec(),
            exe: Some(exe.to_vec()),
            user: None,
            user_id: None,
            name_via_link: false,
        })
    }

    /// Our own process, as a user's namespace would show it: the path
    /// names our file (same file), another path names another file (not
    /// this file: marked), and our own namespace is the host's, where a
    /// name that agrees is not looked at.
    #[test]
    fn a_path_in_a_users_namespace_must_name_the_very_file() {
        let me = std::fs::read_link("/proc/self/exe").unwrap();
        let exe = me.as_os_str().as_bytes().to_vec();
        let pid = std::process::id();
        let host = Path::new("/");
        let key = |exe: &[u8]| ExeKey {
            pid,
            start: 1,
            comm: b"x".to_vec(),
            exe: exe.to_vec(),
            mnt_ns: 1,
            users_ns: true,
        };
        let same = look(Path::new("/proc"), host, &key(&exe)).unwrap();
        assert!(same.same_file && !same.via_link, "{same:?}");
        let other = look(Path::new("/proc"), host, &key(b"/bin/sh")).unwrap();
        assert!(!other.same_file, "{other:?}");
        assert_eq!(
            look(
                Path::new("/proc"),
                host,
                &ExeKey {
                    pid: u32::MAX - 1,
                    ..key(&exe)
                }
            ),
            None
        );

        // Judged: our own namespace is the host's (HostView from pid 1 or
        // ourselves), so a name agreeing with the file is never looked at.
        let mut ex = Executables::new(PathBuf::from("/proc"));
        let file = me.file_name().unwrap().as_bytes();
        let comm = &file[..file.len().min(15)];
        let mut owners: crate::platform::InodeMap<Arc<Owner>> =
            [(1, owner(pid, comm, &exe)), (2, owner(pid, comm, &exe))]
                .into_iter()
                .collect();
        let mut skipped = Vec::new();
        let far = Instant::now() + std::time::Duration::from_secs(10);
        ex.judge(&mut owners, far, &mut skipped);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(ex.lookups, 0, "nothing to look at");
        assert_eq!(owners[&1].exe.as_deref(), Some(&exe[..]));
        // With no host user namespace known, every namespace is a user's:
        // our own path is our file (unchanged), a forged one is marked.
        let mut ex = Executables::with_host(
            PathBuf::from("/proc"),
            HostView {
                userns: None,
                root: PathBuf::from("/"),
            },
        );
        let mut owners: crate::platform::InodeMap<Arc<Owner>> = [
            (1, owner(pid, comm, &exe)),
            (2, owner(pid, comm, b"/bin/sh")),
        ]
        .into_iter()
        .collect();
        // Two owners of one pid with different exes: one key per pid.
        owners.remove(&2);
        ex.judge(&mut owners, far, &mut skipped);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(ex.lookups, 1);
        assert_eq!(owners[&1].exe.as_deref(), Some(&exe[..]));
        let mut forged: crate::platform::InodeMap<Arc<Owner>> =
            [(1, owner(pid, b"sh", b"/bin/sh"))].into_iter().collect();
        ex.judge(&mut forged, far, &mut skipped);
        let marked = forged[&1].exe.clone().unwrap();
        assert!(marked.ends_with(NOT_THIS_FILE_MARK), "{marked:?}");
        assert!(forged[&1].exe_gone());
        // Cached: a second scrape looks at nothing.
        let before = ex.lookups;
        let mut again: crate::platform::InodeMap<Arc<Owner>> =
            [(1, owner(pid, b"sh", b"/bin/sh"))].into_iter().collect();
        ex.judge(&mut again, far, &mut skipped);
        assert_eq!(ex.lookups, before);
        assert!(again[&1].exe_gone());
    }
}
