//! What attribution can see, probed once at start: the capabilities it
//! needs and lacks (CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH, from
//! `<procfs>/self/status`), and whether `--path.procfs` shows the host's
//! pid namespace (kernel threads are visible there and nowhere else).
//! [`super::attribution`] calls a socket kernel-held only when both say it
//! sees every process.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Whether `procfs` shows the host's pid namespace: kernel threads (pid 2,
/// kthreadd, carries PF_KTHREAD) are visible there and nowhere else. In a
/// container without the host's pids, a socket with no visible holder may
/// belong to a process we cannot see, so it must stay unknown.
pub fn shows_host_pids(procfs: &Path) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    std::fs::read(procfs.join("2/stat"))
        .ok()
        .and_then(|s| parse_stat_flags(&s))
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

/// Parses `flags` (field 9) from `/proc/<pid>/stat`.
pub fn parse_stat_flags(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = stat.get(close + 2..)?;
    let field = rest.split(|&b| b == b' ').nth(6)?;
    std::str::from_utf8(field).ok()?.trim().parse().ok()
}

/// The capabilities attribution needs that this process lacks, read from
/// `<procfs>/self/status`; empty when it has them all (or runs as root with
/// the full set).
pub fn missing_capabilities(procfs: &Path) -> Vec<&'static str> {
    const CAP_DAC_READ_SEARCH: u32 = 2;
    const CAP_SYS_PTRACE: u32 = 19;
    let status = std::fs::read(procfs.join("self/status")).unwrap_or_default();
    let eff = status
        .split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(b"CapEff:"))
        .and_then(|v| u64::from_str_radix(OsStr::from_bytes(v).to_str()?.trim(), 16).ok());
    let Some(eff) = eff else {
        return vec!["CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"];
    };
    let mut missing = Vec::new();
    if eff & (1 << CAP_SYS_PTRACE) == 0 {
        missing.push("CAP_SYS_PTRACE");
    }
    if eff & (1 << CAP_DAC_READ_SEARCH) == 0 {
        missing.push("CAP_DAC_READ_SEARCH");
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn tempdir(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("portrange-privileges-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn host_pid_namespace_is_told_by_kernel_threads() {
        let root = tempdir("pidns");
        std::fs::create_dir_all(root.join("2")).unwrap();
        std::fs::write(
            root.join("2/stat"),
            "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 24 0 0\n",
        )
        .unwrap();
        assert!(shows_host_pids(&root));
        std::fs::write(
            root.join("2/stat"),
            "2 (sh) S 1 2 2 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 24 0 0\n",
        )
        .unwrap();
        assert!(
            !shows_host_pids(&root),
            "a container's pid 2 is a user process"
        );
        std::fs::remove_dir_all(root.join("2")).unwrap();
        assert!(!shows_host_pids(&root));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn capabilities_from_status() {
        let root = tempdir("caps");
        std::fs::create_dir_all(root.join("self")).unwrap();
        std::fs::write(
            root.join("self/status"),
            "Name:\tx\nCapEff:\t000001ffffffffff\n",
        )
        .unwrap();
        assert!(missing_capabilities(&root).is_empty());
        std::fs::write(root.join("self/status"), "CapEff:\t0000000000000000\n").unwrap();
        assert_eq!(
            missing_capabilities(&root),
            vec!["CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"]
        );
        std::fs::write(root.join("self/status"), "CapEff:\t0000000000080000\n").unwrap();
        assert_eq!(missing_capabilities(&root), vec!["CAP_DAC_READ_SEARCH"]);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
