//! A private "host" for a test thread that needs `--collector.netns` to see
//! only its own namespaces: its own network namespace (the exporter's
//! `netns="host"`), mount namespace (tmpfs on /run and /var/log, so `ip
//! netns` names are private) and pid namespace with its /proc at
//! [`PROCFS`] (pid 1 is an init in the test's network namespace; killing
//! it ends every process of the test). Used by tests/netns.rs and
//! tests/ephemeral.rs.

use std::path::Path;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where the private pid namespace's /proc is mounted (`--path.procfs`).
pub const PROCFS: &str = "/run/proc";

/// A private host for one test thread; see the module documentation.
pub struct PrivateHost {
    init: Child,
    /// The test thread's own pid namespace, and the private one its
    /// children go to (see [`PrivateHost::making_threads`]).
    own_pid_ns: std::fs::File,
    private_pid_ns: std::fs::File,
    /// `ip netns` names to delete at the end.
    names: Mutex<Vec<String>>,
}

pub fn sh(cmd: &str) {
    let st = Command::new("sh").args(["-c", cmd]).status().unwrap();
    assert!(st.success(), "{cmd}");
}

fn mount(src: &str, target: &str, fstype: Option<&str>, flags: libc::c_ulong) {
    let c = |s: &str| std::ffi::CString::new(s).unwrap();
    let (src, target) = (c(src), c(target));
    let fstype = fstype.map(c);
    // SAFETY: every pointer is a NUL-terminated string that outlives the
    // call (or null for the file system type); no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
            flags,
            std::ptr::null(),
        )
    };
    assert_eq!(
        rc,
        0,
        "mount {target:?}: {}",
        std::io::Error::last_os_error()
    );
}

fn unshare(flags: libc::c_int, what: &str) {
    // SAFETY: unshare(2) changes only the calling thread's namespaces.
    let rc = unsafe { libc::unshare(flags) };
    assert_eq!(rc, 0, "unshare {what}: {}", std::io::Error::last_os_error());
}

impl PrivateHost {
    /// Builds the private host on the calling thread; `None` (after saying
    /// SKIPPED) when that is not allowed.
    pub fn enter(test: &str) -> Option<PrivateHost> {
        if !super::enter_netns(test) {
            return None;
        }
        unshare(libc::CLONE_NEWNS, "mount namespace");
        mount("none", "/", None, libc::MS_REC | libc::MS_PRIVATE);
        mount("tmpfs", "/run", Some("tmpfs"), 0);
        mount("tmpfs", "/var/log", Some("tmpfs"), 0);
        std::fs::create_dir_all(PROCFS).unwrap();
        std::fs::create_dir_all("/var/log/pods").unwrap();
        let own_pid_ns = std::fs::File::open("/proc/thread-self/ns/pid").unwrap();
        unshare(libc::CLONE_NEWPID, "pid namespace");
        // The first child is pid 1 of the new pid namespace: it mounts the
        // namespace's /proc and waits.
        let init = Command::new("sh")
            .args([
                "-c",
                &format!("mount -t proc proc {PROCFS} && exec sleep 1000000"),
            ])
            .spawn()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while !Path::new(PROCFS).join("1/stat").exists() {
            assert!(Instant::now() < until, "{PROCFS} was not mounted");
            std::thread::sleep(Duration::from_millis(10));
        }
        let private_pid_ns = std::fs::File::open("/proc/thread-self/ns/pid_for_children").unwrap();
        Some(PrivateHost {
            init,
            own_pid_ns,
            private_pid_ns,
            names: Mutex::new(Vec::new()),
        })
    }

    /// Runs `f` with the thread's children back in its own pid namespace:
    /// a thread whose children go to another pid namespace cannot make
    /// threads (EINVAL), and the sampler's setns helper is a thread.
    pub fn making_threads<R>(&self, f: impl FnOnce() -> R) -> R {
        let set = |ns: &std::fs::File| {
            use std::os::fd::AsRawFd;
            // SAFETY: setns(2) on an fd we own; it changes only which pid
            // namespace this thread's future children join.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWPID) };
            assert_eq!(rc, 0, "setns pid: {}", std::io::Error::last_os_error());
        };
        set(&self.own_pid_ns);
        let r = f();
        set(&self.private_pid_ns);
        r
    }

    /// `ip netns add NAME`; returns the namespace's inode.
    pub fn add(&self, name: &str) -> u64 {
        sh(&format!(
            "ip netns add {name} && ip -n {name} link set lo up"
        ));
        self.names.lock().unwrap().push(name.to_string());
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/run/netns/{name}"))
            .unwrap_or_else(|e| panic!("/run/netns/{name}: {e}"))
            .ino()
    }

    pub fn del(&self, name: &str) {
        sh(&format!("ip netns del {name}"));
        self.names.lock().unwrap().retain(|n| n != name);
    }
}

impl Drop for PrivateHost {
    fn drop(&mut self) {
        for n in self.names.lock().unwrap().drain(..) {
            let _ = Command::new("ip").args(["netns", "del", &n]).status();
        }
        // Killing pid 1 of the pid namespace kills every process in it.
        let _ = self.init.kill();
        let _ = self.init.wait();
    }
}

/// Runs `body` on a thread of its own in a private host, so that the
/// namespaces end with it (the test harness may reuse its own thread).
pub fn in_private_host(test: &'static str, body: impl FnOnce(&PrivateHost) + Send + 'static) {
    let r = std::thread::spawn(move || {
        if let Some(h) = PrivateHost::enter(test) {
            body(&h);
        }
    })
    .join();
    if let Err(panic) = r {
        std::panic::resume_unwind(panic);
    }
}
