//! Who can write a directory: the filesystem check behind the allowlist's
//! trust in names and paths. A directory is *root-only* when it and every
//! directory above it are owned by root and writable by neither group nor
//! others (a sticky `/tmp`, mode 1777, is not). Only an executable or a
//! link in a root-only directory says something a local user cannot
//! forge: elsewhere any user who can write some directory on the way can
//! put a file of any name there. Used at load time for the `exe:` warning
//! ([`exe_dir_writers`], passed into the configuration by its caller) and
//! by the Linux attribution for the names of links
//! (`super::linux::exe_names`). On Windows directories have ACLs, not
//! modes: nothing is checked there ([`exe_dir_writers`] says `None`).

use std::path::Path;

/// Whether a directory with this owner and mode can be written by root
/// alone: owned by uid 0, no group or other write bit.
pub fn root_only(uid: u32, mode: u32) -> bool {
    uid == 0 && mode & 0o022 == 0
}

/// Why a directory (or one above it) can be written by users other than
/// root, in words naming the path: `/tmp is writable by others (mode
/// 1777)`, `/home/u is owned by uid 1000`.
pub fn why_not_root_only(path: &Path, uid: u32, mode: u32) -> Option<String> {
    if uid != 0 {
        return Some(format!("{} is owned by uid {uid}", path.display()));
    }
    if mode & 0o002 != 0 {
        return Some(format!(
            "{} is writable by others (mode {:o})",
            path.display(),
            mode & 0o7777
        ));
    }
    if mode & 0o020 != 0 {
        return Some(format!(
            "{} is writable by its group (mode {:o})",
            path.display(),
            mode & 0o7777
        ));
    }
    None
}

/// Whether users other than root can write the directory `dir` (the fixed
/// directory part of an `exe:` glob) or one above it, on this host:
/// `Some(Ok(()))` when it is root-only, `Some(Err(why))` when it is not
/// (or cannot be read: fail closed), `None` where the platform has no
/// such check (Windows). A directory that does not exist is judged by the
/// nearest one above it that does (whoever can write that can create it).
/// Symbolic links on the way are followed, and the directory holding each
/// is checked too.
pub fn exe_dir_writers(dir: &Path) -> Option<Result<(), String>> {
    #[cfg(unix)]
    {
        Some(unix_dir_writers(dir))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

#[cfg(unix)]
fn unix_dir_writers(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    if !dir.is_absolute() {
        return Err(format!(
            "{} is not an absolute path: it names no fixed directory",
            dir.display()
        ));
    }
    // The path as written: every part that exists, without following
    // links (a link sits in its parent, which is checked).
    let mut nearest = None;
    for a in dir.ancestors() {
        match std::fs::symlink_metadata(a) {
            Ok(m) => {
                nearest.get_or_insert(a);
                if m.is_dir()
                    && let Some(why) = why_not_root_only(a, m.uid(), m.mode())
                {
                    return Err(why);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", a.display())),
        }
    }
    // And where it leads: the real directories of the nearest part that
    // exists.
    let nearest = nearest.unwrap_or(Path::new("/"));
    let real = std::fs::canonicalize(nearest)
        .map_err(|e| format!("cannot resolve {}: {e}", nearest.display()))?;
    for a in real.ancestors() {
        let m = std::fs::metadata(a).map_err(|e| format!("cannot read {}: {e}", a.display()))?;
        if let Some(why) = why_not_root_only(a, m.uid(), m.mode()) {
            return Err(why);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert!(root_only(0, 0o40755));
        assert!(root_only(0, 0o40555));
        assert!(!root_only(0, 0o41777), "sticky /tmp");
        assert!(!root_only(0, 0o40775), "group-writable");
        assert!(!root_only(1000, 0o40755), "a user's");
        assert_eq!(
            why_not_root_only(Path::new("/tmp"), 0, 0o41777).unwrap(),
            "/tmp is writable by others (mode 1777)"
        );
        assert_eq!(
            why_not_root_only(Path::new("/home/u"), 1000, 0o40700).unwrap(),
            "/home/u is owned by uid 1000"
        );
    }

    #[cfg(unix)]
    #[test]
    fn this_hosts_directories() {
        // Every Linux system: /usr/bin is root's, /tmp everyone's.
        assert_eq!(exe_dir_writers(Path::new("/usr/bin")), Some(Ok(())));
        assert_eq!(
            exe_dir_writers(Path::new("/usr/bin/no/such/dir")),
            Some(Ok(())),
            "judged by /usr/bin"
        );
        let tmp = exe_dir_writers(Path::new("/tmp/portrange-none/bin")).unwrap();
        assert!(
            tmp.as_ref()
                .is_err_and(|e| e.contains("/tmp is writable by others")),
            "{tmp:?}"
        );
        assert!(exe_dir_writers(Path::new("relative/bin")).unwrap().is_err());
    }
}
