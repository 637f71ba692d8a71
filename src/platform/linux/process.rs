//! What the trail tells of a process besides its name and executable: its
//! parent, its command line and when it started, from
//! `<procfs>/<pid>/stat`, `<procfs>/<pid>/cmdline` and the boot time in
//! `<procfs>/stat`. The decoders take the files' bytes and are tested on
//! bytes; [`read`] does the reading, through the `--path.procfs` root.
//!
//! Why not the `procfs` crate (in the Linux build through `prometheus`'s
//! `process` feature): its `Process::cmdline` gives the arguments split
//! and decoded as `String`s, read whole, while the trail needs the raw
//! bytes, the first few KiB only, to cut, escape and redact them itself
//! (`trail::render_cmdline`); its boot time (`boot_time_secs`) reads the
//! host's `/proc`, not the `--path.procfs` root, and `KernelStats` wants
//! every CPU line of `/proc/stat` for the one `btime` field (the fake
//! procfs trees of the tests have none). Its `Stat::from_read` would do
//! for `<pid>/stat` (it also counts from the last `)`), but for two
//! fields it would make `procfs-core` a direct dependency; the ten lines
//! of [`parse_stat`] are tested on the same hostile names.

use std::path::Path;

use crate::platform::ProcessDetails;

/// The longest command line read: the trail keeps at most 256 bytes of
/// it, so a little more is enough to know it was cut.
const CMDLINE_READ_MAX: usize = 4096;

/// From `/proc/<pid>/stat`: the parent's pid and the start time in clock
/// ticks after boot. The name (field 2) is in parentheses and may hold any
/// byte but NUL, spaces and `)` included, so the fields are counted from
/// the last `)`.
pub fn parse_stat(stat: &[u8]) -> Option<(u32, u64)> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    // After the name: state (3), ppid (4), ... starttime (22).
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((ppid, start))
}

/// From `/proc/stat`: the boot time, in Unix seconds (`btime`).
pub fn parse_btime(stat: &[u8]) -> Option<u64> {
    stat.split(|&b| b == b'\n').find_map(|line| {
        let v = line.strip_prefix(b"btime ")?;
        std::str::from_utf8(v).ok()?.trim().parse().ok()
    })
}

/// The kernel's clock ticks per second (`USER_HZ`).
fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Reads what there is of `pid`'s details; each part is `None` where its
/// file cannot be read (the process exited, or belongs to another user
/// under `hidepid`).
pub fn read(procfs: &Path, pid: u32) -> ProcessDetails {
    read_with(procfs, pid, |_| read_cmdline(procfs, pid))
}

/// [`read`], with the command line from `cmdline`, which is given the
/// process's start time in clock ticks (when its stat could be read): the
/// read of a command line can block (it reads the process's memory, and a
/// process stuck in a file system that does not answer holds it), so the
/// caller runs it where a deadline can leave it behind.
pub fn read_with(
    procfs: &Path,
    pid: u32,
    cmdline: impl FnOnce(Option<u64>) -> Option<Vec<u8>>,
) -> ProcessDetails {
    let dir = procfs.join(pid.to_string());
    let stat = std::fs::read(dir.join("stat"))
        .ok()
        .and_then(|b| parse_stat(&b));
    let btime = std::fs::read(procfs.join("stat"))
        .ok()
        .and_then(|b| parse_btime(&b));
    let cmdline = cmdline(stat.map(|(_, ticks)| ticks));
    ProcessDetails {
        ppid: stat.map(|(p, _)| p),
        cmdline,
        start_time: match (stat, btime) {
            (Some((_, ticks)), Some(boot)) => {
                Some(boot as f64 + ticks as f64 / clock_ticks() as f64)
            }
            _ => None,
        },
    }
}

/// The head of `<procfs>/<pid>/cmdline` (may block: see [`read_with`]).
pub fn read_cmdline(procfs: &Path, pid: u32) -> Option<Vec<u8>> {
    read_head(
        &procfs.join(pid.to_string()).join("cmdline"),
        CMDLINE_READ_MAX,
    )
}

/// The first `max` bytes of a file; `None` when it cannot be read.
fn read_head(path: &Path, max: usize) -> Option<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path).ok()?;
    let mut buf = Vec::with_capacity(512);
    f.take(max as u64).read_to_end(&mut buf).ok()?;
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_count_from_the_last_parenthesis() {
        let line = b"4242 (evil) 1 2 (x) S 77 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10 18446744073709551615\n";
        assert_eq!(parse_stat(line), Some((77, 123456)));
        assert_eq!(parse_stat(b"1 (init) S"), None, "cut short");
        assert_eq!(parse_stat(b"no parenthesis"), None);
    }

    #[test]
    fn boot_time_from_proc_stat() {
        let stat = b"cpu  1 2 3\nintr 5\nbtime 1764700000\nprocesses 9\n";
        assert_eq!(parse_btime(stat), Some(1_764_700_000));
        assert_eq!(parse_btime(b"cpu 1\n"), None);
    }

    #[test]
    fn our_own_details_are_read() {
        let me = std::process::id();
        let d = read(Path::new("/proc"), me);
        assert_eq!(d.ppid, Some(std::os::unix::process::parent_id()));
        assert!(d.cmdline.as_deref().is_some_and(|c| !c.is_empty()));
        let started = d.start_time.unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            started <= now + 1.0 && started > now - 86_400.0,
            "{started} vs {now}"
        );
        let gone = read(Path::new("/proc"), u32::MAX - 1);
        assert_eq!(gone, ProcessDetails::default());
    }
}
