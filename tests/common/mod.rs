//! Shared integration-test helpers: a private network namespace per test
//! thread, socket-holding child processes with chosen names, the exporter
//! binary on a fixed port inside that namespace, and a small HTTP client.
#![allow(dead_code)]

pub mod private_host;
pub mod tls;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

pub const EXPORTER: &str = env!("CARGO_BIN_EXE_portrange_exporter");
pub const ADDR: &str = "127.0.0.1:10224";

/// Moves the calling thread (and every child it spawns from now on) into a
/// new network namespace with loopback up. Returns false, after printing
/// why, when that is not allowed (not root): the caller then skips.
pub fn enter_netns(test: &str) -> bool {
    // SAFETY: unshare(2) with CLONE_NEWNET only changes the calling
    // thread's network namespace; it touches no memory of ours.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if std::env::var_os("CI").is_some() {
            panic!("{test}: cannot create a network namespace in CI: {e}");
        }
        eprintln!("SKIPPED {test}: needs root for a private network namespace ({e})");
        return false;
    }
    let st = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("running `ip link set lo up` (iproute2)");
    assert!(st.success(), "ip link set lo up failed");
    true
}

/// A child process holding sockets until dropped.
pub struct Holder {
    pub child: Child,
    stdin: Option<ChildStdin>,
    /// The pid of the forked child (`hold_forking`), killed on drop.
    pub forked: Option<u32>,
}

impl Holder {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Some(pid) = self.forked.take() {
            // SAFETY: kill(2) with a pid we were given; no memory involved.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn holder_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/holder.py")
}

/// A copy of `src` that every user can read (`mode` 0644, or 0755 for a
/// program), in a fresh 0755 directory under the temporary directory, one
/// per test process; each file is copied once.
///
/// Why: whatever a test runs as another user (nobody, through setpriv) must
/// not be taken from the checkout. A clone inside a directory only its
/// owner can enter (a Debian home directory is 0700, and so is what
/// `mktemp -d` makes) hides the holder script and the exporter binary from
/// that user, and the test then fails far from the cause (`holder ... did
/// not start`, `exporter exited`).
pub fn shared_copy(src: &Path, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::{Mutex, OnceLock};
    static COPIES: OnceLock<Mutex<BTreeMap<PathBuf, PathBuf>>> = OnceLock::new();
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let tmp = std::env::temp_dir();
        // The directories of test processes that are gone.
        for e in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("portrange-shared-")
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let d = tmp.join(format!("portrange-shared-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).unwrap_or_else(|e| panic!("creating {}: {e}", d.display()));
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        d
    });
    let mut copies = COPIES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = copies.get(src) {
        return p.clone();
    }
    let dst = dir.join(src.file_name().expect("a file name"));
    // install(1), not std::fs::copy: a test thread that forks while this
    // process holds the copy open for writing would make exec fail with
    // ETXTBSY until its child has exec'd.
    let st = Command::new("install")
        .arg("-m")
        .arg(format!("{mode:o}"))
        .arg(src)
        .arg(&dst)
        .status()
        .expect("running install (coreutils)");
    assert!(
        st.success(),
        "install {} {}: {st}",
        src.display(),
        dst.display()
    );
    copies.insert(src.to_path_buf(), dst.clone());
    dst
}

/// Whether `prefix` runs its command as another user: a `setpriv
/// --reuid=...` in it, as an argument or inside a `sh -c` script.
pub fn runs_as_other_user(prefix: &[&str]) -> bool {
    prefix
        .iter()
        .any(|a| a.contains("--reuid=") && !a.contains("--reuid=0"))
}

/// The exporter binary to run through `prefix`: the checkout's, or, when
/// `prefix` runs it as another user, a copy that user can execute (see
/// [`shared_copy`]).
pub fn exporter_for(prefix: &[&str]) -> PathBuf {
    if runs_as_other_user(prefix) {
        shared_copy(Path::new(EXPORTER), 0o755)
    } else {
        PathBuf::from(EXPORTER)
    }
}

/// Starts a holder named `name` with the given socket specs (see holder.py)
/// and waits until its sockets are bound.
pub fn hold(name: impl AsRef<std::ffi::OsStr>, specs: &[&str]) -> Holder {
    spawn_holder(&[], name.as_ref(), None, specs)
}

/// Like `hold`, run through `prefix` (for example `ip netns exec NAME` or
/// `unshare -n`, which exec the holder, so its pid is the holder's).
pub fn hold_in(prefix: &[&str], name: &str, specs: &[&str]) -> Holder {
    spawn_holder(prefix, name.as_ref(), None, specs)
}

/// Like `hold`, but the holder forks a child named `child` that inherits
/// the sockets; `stop()` then ends only the parent.
pub fn hold_forking(name: &str, child: &str, specs: &[&str]) -> Holder {
    spawn_holder(&[], name.as_ref(), Some(child), specs)
}

/// Like `hold`, as user nobody with no capability (`DROP_PRIVILEGES`).
pub fn hold_as_nobody(name: impl AsRef<std::ffi::OsStr>, specs: &[&str]) -> Holder {
    spawn_holder(&DROP_PRIVILEGES, name.as_ref(), None, specs)
}

/// The forgery: the system's python3 as user nobody, renamed to `name`
/// with prctl(PR_SET_NAME) after it started (its exe stays python's).
pub fn hold_renamed_as_nobody(name: impl AsRef<std::ffi::OsStr>, specs: &[&str]) -> Holder {
    spawn_holder_with(
        &DROP_PRIVILEGES,
        SYSTEM_PYTHON.as_ref(),
        name.as_ref(),
        None,
        specs,
    )
}

/// The system's python3: a python3 first on root's PATH may be a shim
/// (pyenv) or live where nobody cannot read.
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// A copy of the system's python named `name`, in a 0755 directory of
/// this test process under the temporary directory, so that a holder's
/// process name is its executable's file name, as a real program's is (the
/// allowlist does not take a name a process gave itself). `None` when
/// `name` cannot be a file name (a `/` in it) or there is no system
/// python: the holder then only renames itself.
pub fn named_python(name: &std::ffi::OsStr) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::{Mutex, OnceLock};
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.contains(&b'/') || bytes == b"." || bytes == b".." {
        return None;
    }
    let python = std::fs::canonicalize(SYSTEM_PYTHON).ok()?;
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    let dir = DIR.get_or_init(|| {
        let tmp = std::env::temp_dir();
        for e in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = n.strip_prefix("portrange-names-")
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let d = tmp.join(format!("portrange-names-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).unwrap_or_else(|e| panic!("creating {}: {e}", d.display()));
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        d
    });
    let _once = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dst = dir.join(name);
    if !dst.exists() {
        // install(1): see `shared_copy` (ETXTBSY).
        let st = Command::new("install")
            .arg("-m755")
            .arg(&python)
            .arg(&dst)
            .status()
            .expect("running install (coreutils)");
        assert!(
            st.success(),
            "install {} {}",
            python.display(),
            dst.display()
        );
    }
    Some(dst)
}

fn spawn_holder(
    prefix: &[&str],
    name: &std::ffi::OsStr,
    child_name: Option<&str>,
    specs: &[&str],
) -> Holder {
    match named_python(name) {
        Some(python) => spawn_holder_with(prefix, python.as_os_str(), name, child_name, specs),
        None => spawn_holder_with(prefix, SYSTEM_PYTHON.as_ref(), name, child_name, specs),
    }
}

fn spawn_holder_with(
    prefix: &[&str],
    python: &std::ffi::OsStr,
    name: &std::ffi::OsStr,
    child_name: Option<&str>,
    specs: &[&str],
) -> Holder {
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(python).current_dir("/");
            c
        }
        None => Command::new(python),
    };
    // As another user, a copy of the script that user can read (see
    // `shared_copy`: the checkout may be out of its reach).
    let script = if runs_as_other_user(prefix) {
        shared_copy(&holder_script(), 0o644)
    } else {
        holder_script()
    };
    cmd.arg(script).arg("--name").arg(name);
    if let Some(c) = child_name {
        cmd.args(["--fork-child", c]);
    }
    let mut child = cmd
        .args(specs)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting python3 tests/holder.py");
    let stdin = child.stdin.take();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut words = line.split_whitespace();
    assert_eq!(
        words.next(),
        Some("ready"),
        "holder {name:?} {specs:?} did not start"
    );
    let forked = words.next().map(|p| p.parse().unwrap());
    Holder {
        child,
        stdin,
        forked,
    }
}

/// The exporter under test.
pub struct Exporter {
    pub child: Child,
    pub addr: String,
    pub stderr_path: PathBuf,
}

impl Exporter {
    /// Starts the exporter with `args` plus `--web.listen-address` and
    /// waits until it answers.
    pub fn start(args: &[&str]) -> Exporter {
        Exporter::start_as(args, None)
    }

    /// Like `start`, wrapped in `prefix` (for example setpriv to drop privileges).
    pub fn start_as(args: &[&str], prefix: Option<&[&str]>) -> Exporter {
        let stderr_path = std::env::temp_dir().join(format!(
            "portrange-exporter-{}-{:?}.log",
            std::process::id(),
            std::thread::current().id()
        ));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut cmd = match prefix {
            Some(p) => {
                let mut c = Command::new(p[0]);
                // As another user: a copy it can execute, and a working
                // directory it can enter (see `shared_copy`).
                c.args(&p[1..]).arg(exporter_for(p));
                if runs_as_other_user(p) {
                    c.current_dir("/");
                }
                c
            }
            None => Command::new(EXPORTER),
        };
        let child = cmd
            .args(["--web.listen-address", ADDR])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("starting the exporter");
        let mut e = Exporter {
            child,
            addr: ADDR.to_string(),
            stderr_path,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = get(&e.addr, "/-/healthy", &[]) {
                assert_eq!(r.status, 200);
                break;
            }
            if let Ok(Some(st)) = e.child.try_wait() {
                panic!(
                    "exporter exited with {st} before answering:\n{}",
                    e.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "exporter did not answer:\n{}",
                e.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        e
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn metrics(&self) -> Metrics {
        let r = get(&self.addr, "/metrics", &[]).expect("scraping /metrics");
        assert_eq!(r.status, 200, "{}", r.text());
        Metrics::parse(&r.text())
    }

    pub fn raw_metrics(&self) -> String {
        get(&self.addr, "/metrics", &[]).unwrap().text()
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid, which has not been reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "exporter ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8 body")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request with `Connection: close`.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw)
}

pub fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Response> {
    request(addr, "GET", path, headers)
}

pub fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("head not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..line_end]).ok()?.trim(), 16).ok()?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// Samples of one scrape: series text (`name{labels}`) → value.
#[derive(Debug, Default)]
pub struct Metrics {
    pub series: BTreeMap<String, f64>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut series = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (k, v) = line.rsplit_once(' ').expect("sample line has a value");
            let v: f64 = v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}"));
            assert!(
                series.insert(k.to_string(), v).is_none(),
                "duplicate series {k}"
            );
        }
        Metrics { series }
    }

    /// The value of `series` (exact text, labels in exposition order).
    pub fn get(&self, series: &str) -> Option<f64> {
        self.series.get(series).copied()
    }

    #[track_caller]
    pub fn value(&self, series: &str) -> f64 {
        self.get(series)
            .unwrap_or_else(|| panic!("no series {series}; have:\n{}", self.dump("portrange_")))
    }

    /// Series whose name is `name`, as label strings.
    pub fn named(&self, name: &str) -> Vec<(String, f64)> {
        self.series
            .iter()
            .filter(|(k, _)| k.as_str() == name || k.starts_with(&format!("{name}{{")))
            .map(|(k, v)| (k[name.len()..].to_string(), *v))
            .collect()
    }

    pub fn dump(&self, prefix: &str) -> String {
        self.series
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| format!("{k} {v}\n"))
            .collect()
    }
}

/// Writes `text` to a fresh temporary config file.
pub fn config_file(tag: &str, text: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("portrange-{tag}-{}.yml", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs `ss` with `args` in the caller's namespace.
pub fn ss(args: &[&str]) -> String {
    let out = Command::new("ss")
        .args(args)
        .output()
        .expect("running ss (iproute2)");
    assert!(
        out.status.success(),
        "ss {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `portrange_exporter check` with `args`; returns (exit code, stdout).
pub fn check(args: &[&str]) -> (i32, String) {
    let out = Command::new(EXPORTER)
        .arg("check")
        .args(args)
        .output()
        .expect("running check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Open fds of `pid`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// `setpriv` arguments that run a command as nobody with no capability.
/// What runs through them must come from [`shared_copy`] ([`exporter_for`],
/// [`hold_as_nobody`]), never from the checkout.
pub const DROP_PRIVILEGES: [&str; 6] = [
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--inh-caps=-all",
    "--bounding-set=-all",
];

/// Asserts that `promtool check metrics` finds nothing to say about `raw`
/// (skipped, saying so, where promtool is missing; required in CI).
pub fn promtool_check_metrics(raw: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        if std::env::var_os("CI").is_some() {
            panic!("promtool is missing in CI: .ci/run must install the prometheus package");
        }
        eprintln!(
            "SKIPPED promtool check metrics: promtool not installed (apt-get install prometheus)"
        );
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(raw.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics:\n{report}"
    );
}

/// The labels of a series as `named` gives them (`{a="x",b="y\"z"}`),
/// unescaped.
pub fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let inner = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or("");
    let mut chars = inner.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "label {key} of {text}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(o) => value.push(o),
                    None => panic!("dangling escape in {text}"),
                },
                o => value.push(o),
            }
        }
        out.insert(key.trim_start_matches(',').to_string(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    out
}

/// GET /api/v1/status, checked to be a fresh JSON document.
pub fn status_json(addr: &str) -> serde_json::Value {
    let r = get(addr, "/api/v1/status", &[]).expect("GET /api/v1/status");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    serde_json::from_slice(&r.body).expect("the status is JSON")
}

/// Makes the process `cmd` starts unable to open a NETLINK_SOCK_DIAG
/// socket, as a systemd unit whose `RestrictAddressFamilies=` leaves out
/// AF_NETLINK does: a seccomp filter answers `socket(AF_NETLINK, _,
/// NETLINK_SOCK_DIAG)` with EACCES and allows everything else, so every
/// sample fails while HTTP, /proc and rtnetlink work.
pub fn deny_sock_diag(cmd: &mut Command) {
    use libc::{
        BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W, SECCOMP_RET_ALLOW,
        SECCOMP_RET_ERRNO, sock_filter,
    };
    use std::os::unix::process::CommandExt;
    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64
    fn stmt(code: u32, k: u32) -> sock_filter {
        sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        }
    }
    fn jeq(k: u32, jt: u8, jf: u8) -> sock_filter {
        sock_filter {
            code: (BPF_JMP | BPF_JEQ | BPF_K) as u16,
            jt,
            jf,
            k,
        }
    }
    // struct seccomp_data: nr at 0, arch at 4, args[i] at 16 + 8 i (the
    // low half first on these little-endian machines).
    let filter = [
        stmt(BPF_LD | BPF_W | BPF_ABS, 4),
        jeq(ARCH, 0, 6),
        stmt(BPF_LD | BPF_W | BPF_ABS, 0),
        jeq(libc::SYS_socket as u32, 0, 4),
        stmt(BPF_LD | BPF_W | BPF_ABS, 16),
        jeq(libc::AF_NETLINK as u32, 0, 2),
        stmt(BPF_LD | BPF_W | BPF_ABS, 32),
        jeq(libc::NETLINK_SOCK_DIAG as u32, 1, 0),
        stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        stmt(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | libc::EACCES as u32),
    ];
    // SAFETY: the closure runs in the child between fork and exec and
    // only makes two prctl(2) calls on a filter it owns (no allocation,
    // no locks); the kernel copies the program before prctl returns.
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Lowers the soft open-file limit of `pid` to its lowest free fd, so that
/// it can open nothing more (connections it holds keep working), and gives
/// back a guard that restores the limit it had.
///
/// The exporter may still be closing an fd when the limit is set (a
/// connection an earlier request left, which the server drops a moment
/// after the client saw the answer): that would leave a hole below the
/// limit, and one more socket could be opened. So the limit is set, the
/// fds are listed again after a pause, and the limit is lowered to the
/// new lowest free fd until every fd below it stays open.
pub fn exhaust_fds(pid: u32) -> FdsExhausted {
    let open_fds = || {
        let mut open: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        open.sort_unstable();
        open
    };
    let lowest_free = |open: &[u64]| (0u64..).find(|n| open.binary_search(n).is_err()).unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_string();
    let mut words = line["Max open files".len()..].split_whitespace();
    let soft = words.next().unwrap().to_string();
    let hard = words.next().unwrap().to_string();
    let prlimit = |soft: &str| {
        let st = Command::new("prlimit")
            .args([
                "--pid",
                &pid.to_string(),
                &format!("--nofile={soft}:{hard}"),
            ])
            .status()
            .expect("running prlimit (util-linux)");
        assert!(st.success(), "prlimit --pid {pid} --nofile={soft}:{hard}");
    };
    let mut limit = lowest_free(&open_fds());
    for _ in 0..50 {
        prlimit(&limit.to_string());
        std::thread::sleep(std::time::Duration::from_millis(300));
        let now = lowest_free(&open_fds());
        if now >= limit {
            return FdsExhausted { pid, soft, hard };
        }
        limit = now;
    }
    panic!("pid {pid} kept closing fds below its lowered limit {limit}");
}

pub struct FdsExhausted {
    pid: u32,
    soft: String,
    hard: String,
}

impl Drop for FdsExhausted {
    fn drop(&mut self) {
        let _ = Command::new("prlimit")
            .args([
                "--pid",
                &self.pid.to_string(),
                &format!("--nofile={}:{}", self.soft, self.hard),
            ])
            .status();
    }
}

/// A server on its own runtime for a library-level [`Service`] (the fake
/// platforms of tests/core.rs and tests/supervision.rs): the runtime, the
/// address it listens on, and the sender that shuts it down.
pub fn serve_service(
    service: std::sync::Arc<portrange_exporter::service::Service>,
) -> (
    tokio::runtime::Runtime,
    String,
    tokio::sync::oneshot::Sender<()>,
) {
    use portrange_exporter::http::{self, Options};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let state = http::State::new(
        service,
        Options {
            enable_lifecycle: true,
            ..Options::default()
        },
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    rt.spawn(async move {
        let _ = http::serve(listener, state, async {
            let _ = rx.await;
        })
        .await;
    });
    (rt, addr, tx)
}

/// The threads of process `pid` (a number, or "self") named `name`.
pub fn threads_named(pid: &str, name: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .count()
}
