//! Which process names a root-only link vouches for. A program started
//! through a link has the link's name, not its file's: `python3` runs
//! `/usr/bin/python3.11`, a busybox applet `sh` runs `/bin/busybox`. Such
//! a name is taken as the program's ([`crate::platform::Owner::name_via_link`])
//! when a link of that name to the process's executable lies in a
//! directory only root can write ([`crate::platform::trust`]): the
//! executable's own directory, or one of the system's program directories
//! ([`SYSTEM_DIRS`]). Every link followed on the way must lie in such a
//! directory too, and the end must be the very file the process runs (the
//! same device and inode as `<pid>/exe`). Paths are resolved inside the
//! process's root (`<procfs>/<pid>/root`, so a container's `/usr/bin` is
//! its own), absolute links against that root. The kernel keeps 15 bytes
//! of a name: a 15-byte name is looked for as the start of longer ones.
//!
//! The answers are cached by pid, name and exe path, and dropped with the
//! processes they were asked about: a steady scrape costs no filesystem
//! access here, and a process whose name agrees with its file name never
//! gets here at all.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::platform::trust;

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

/// Answers cached per (pid, name, exe path).
#[derive(Debug, Default)]
pub struct LinkNames {
    cache: HashMap<(u32, Vec<u8>, Vec<u8>), bool>,
    /// Filesystem look-ups so far (tests and the cost check).
    pub lookups: usize,
}

impl LinkNames {
    /// Whether a root-only link named `comm` leads to the executable of
    /// process `pid` (whose exe link reads `exe`).
    pub fn vouches(&mut self, procfs: &Path, pid: u32, comm: &[u8], exe: &[u8]) -> bool {
        let key = (pid, comm.to_vec(), exe.to_vec());
        if let Some(&v) = self.cache.get(&key) {
            return v;
        }
        self.lookups += 1;
        let v = link_leads_to_exe(&procfs.join(pid.to_string()), comm, exe);
        if self.cache.len() >= MAX_CACHED {
            self.cache.clear();
        }
        self.cache.insert(key, v);
        v
    }

    /// Drops the answers about processes not in `live`.
    pub fn retain(&mut self, live: impl Fn(u32) -> bool) {
        self.cache.retain(|(pid, _, _), _| live(*pid));
    }
}

/// The look-up behind [`LinkNames::vouches`]; `proc_pid` is
/// `<procfs>/<pid>`.
fn link_leads_to_exe(proc_pid: &Path, comm: &[u8], exe: &[u8]) -> bool {
    if comm.is_empty() || comm.contains(&b'/') || comm == b"." || comm == b".." {
        return false;
    }
    let Ok(target) = std::fs::metadata(proc_pid.join("exe")) else {
        return false;
    };
    let want = (target.dev(), target.ino());
    let root = proc_pid.join("root");
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
        for name in candidates(&root, &dir, comm) {
            let mut path = dir.clone();
            if !path.ends_with(b"/") {
                path.push(b'/');
            }
            path.extend_from_slice(&name);
            // The name itself must be a link (a file of that name is the
            // program's own name, which needs no vouching).
            if let Some(end) = resolve(&root, &path, &mut |d| trusted.root_only(&root, d))
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
        let exe = me.as_os_str().as_bytes();
        let pid = std::process::id();
        let procfs = Path::new("/proc");
        let mut names = LinkNames::default();
        // Not a link at all: no such name anywhere.
        assert!(!names.vouches(procfs, pid, b"no-such-name-x", exe));
        // A link in the temporary directory (writable by all) is no proof,
        // even when it is in the executable's own directory.
        let d = tempdir("vouch");
        let link = d.join("CtxGfx");
        symlink(&me, &link).unwrap();
        let proc_pid = procfs.join(pid.to_string());
        let in_tmp = d.join("copy").as_os_str().as_bytes().to_vec();
        assert!(!link_leads_to_exe(&proc_pid, b"CtxGfx", &in_tmp));
        // Cached: asked once.
        let before = names.lookups;
        assert!(!names.vouches(procfs, pid, b"no-such-name-x", exe));
        assert_eq!(names.lookups, before);
        names.retain(|p| p != pid);
        assert!(!names.vouches(procfs, pid, b"no-such-name-x", exe));
        assert_eq!(names.lookups, before + 1, "dropped with its process");
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
            let ok = link_leads_to_exe(&proc_pid, b"vouched-name", &exe_here);
            let _ = std::fs::remove_dir_all(&dir);
            // /run is root-only on every system this runs on; the test
            // binary's own directory (the checkout) need not be.
            assert!(ok, "a link in a root-only /run directory");
        }
    }
}
