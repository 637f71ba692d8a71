//! Reliability: the exporter keeps telling the truth under socket churn,
//! vanishing processes, reduced privilege, hostile process names, HTTP
//! abuse and kernel faults, and over a long soak. Every test runs in its
//! own network namespace (root; SKIPPED elsewhere, required in CI) and is
//! bounded in time.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn raise_fd_limit() {
    let lim = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        },
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// A keep-alive HTTP/1.1 client, as Prometheus scrapes.
struct KeepAlive {
    reader: BufReader<TcpStream>,
}

impl KeepAlive {
    fn connect() -> KeepAlive {
        let s = TcpStream::connect(ADDR).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        KeepAlive {
            reader: BufReader::new(s),
        }
    }

    fn get(&mut self, path: &str) -> (u16, String) {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        self.reader.get_mut().write_all(req.as_bytes()).unwrap();
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).unwrap();
        let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h).unwrap();
            if h == "\r\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0u8; len];
        self.reader.read_exact(&mut body).unwrap();
        (status, String::from_utf8(body).unwrap())
    }
}

fn count_by_expected(m: &Metrics) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (labels, _) in m.named("portrange_listener_info") {
        let e = labels
            .split("expected=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string();
        *out.entry(e).or_insert(0) += 1;
    }
    out
}

fn ss_ports_in_use() -> usize {
    let out = ss(&["-Hanu", "sport >= :3224 and sport <= :3324"]);
    let mut ports: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|a| a.rsplit(':').next())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports.len()
}

const CHURN: &str = r#"
import ctypes, os, random, socket, sys, time
# Opens and closes UDP sockets in 3224-3324 at about RATE per second.
ctypes.CDLL(None).prctl(15, os.environ["PR_SET_NAME"].encode(), 0, 0, 0)
rate = float(sys.argv[1]); end = time.time() + float(sys.argv[2])
held = []
while time.time() < end:
    t0 = time.time()
    for _ in range(10):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind(("127.0.0.1", random.randint(3224, 3324)))
            held.append(s)
        except OSError:
            s.close()
        if len(held) > 20:
            held.pop(random.randrange(len(held))).close()
    time.sleep(max(0.0, 10.0 / rate - (time.time() - t0)))
"#;

#[test]
fn churn_1000_scrapes_stay_consistent_and_match_ss() {
    if !enter_netns("churn_1000_scrapes_stay_consistent_and_match_ss") {
        return;
    }
    let cfg = config_file(
        "churn",
        "ranges:\n  - name: fh\n    ports: 3224-3324\n    protocols: [udp]\n    expected:\n      - process: churner\n",
    );
    let e = Exporter::start(&["--config.file", cfg.to_str().unwrap()]);
    // Four churners at 250 sockets/s each: about 1,000 opens and 1,000 closes a second.
    let mut churners: Vec<_> = (0..4)
        .map(|i| {
            Command::new("python3")
                .args(["-c", CHURN, "250", "120"])
                .env("PR_SET_NAME", if i % 2 == 0 { "churner" } else { "other" })
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut client = KeepAlive::connect();
    let pid = e.child.id();
    let (mut fds0, mut rss0) = (0, 0);
    let started = Instant::now();
    for i in 0..1000 {
        if i == 100 {
            fds0 = fd_count(pid);
            rss0 = rss_kib(pid);
        }
        let t0 = Instant::now();
        let before = ss_ports_in_use();
        let (status, body) = client.get("/metrics");
        let after = ss_ports_in_use();
        let window = t0.elapsed().as_secs_f64();
        assert_eq!(status, 200);
        let m = Metrics::parse(&body);
        assert_eq!(m.value("portrange_up"), 1.0, "scrape {i}");
        let ports = m.value(r#"portrange_ports{range="fh",protocol="udp"}"#);
        let in_use = m.value(r#"portrange_ports_in_use{range="fh",protocol="udp"}"#);
        let free = m.value(r#"portrange_ports_free{range="fh",protocol="udp"}"#);
        assert!(
            in_use <= ports && free >= 0.0 && in_use + free == ports,
            "scrape {i}: {in_use} + {free} != {ports}"
        );
        let by = count_by_expected(&m);
        let listeners = m.named("portrange_listener_info").len();
        let unexpected =
            m.value(r#"portrange_unexpected_listeners{range="fh",protocol="udp"}"#) as usize;
        assert_eq!(listeners, by.values().sum::<usize>());
        assert_eq!(
            by.get("false").copied().unwrap_or(0),
            unexpected,
            "scrape {i}: {by:?}"
        );
        assert_eq!(
            listeners, in_use as usize,
            "one listener per port in use (each churn socket binds its own port)"
        );
        // Within the churn the ss snapshots around it allow (2,000 changes/s).
        let slack = (2000.0 * window).ceil() as usize + 2;
        let lo = before.min(after).saturating_sub(slack);
        let hi = before.max(after) + slack;
        assert!(
            (lo..=hi).contains(&(in_use as usize)),
            "scrape {i}: in use {in_use}, ss {before}..{after} within {window:.3}s"
        );
    }
    let fds1 = fd_count(pid);
    let rss1 = rss_kib(pid);
    for c in &mut churners {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert!(fds1 <= fds0, "fds grew from {fds0} to {fds1}");
    assert!(rss1 < rss0 + 1024, "RSS grew from {rss0} KiB to {rss1} KiB");
    eprintln!(
        "churn: 1000 scrapes in {:?}, fds {fds0}->{fds1}, RSS {rss0}->{rss1} KiB",
        started.elapsed()
    );
    let _ = std::fs::remove_file(cfg);
}

/// A process in the private pid namespace of [`PidNs`] whose sockets a
/// test drives over its stdin (python3). Arguments: its comm, and the pid
/// it must get in the namespace (it sets `ns_last_pid` and forks), or 0.
/// One command per line, one reply line ending in "ok": `pid` (its pid in
/// the namespace), `udp PORT` (a bound UDP socket: its fd), `close FD`,
/// `listen PATH` / `connect PATH` / `accept` (a Unix stream connection),
/// `send FD` (passes FD over it with SCM_RIGHTS), `recv` (the fd received).
const PASSER: &str = r#"
import ctypes, os, socket, sys
name, want = sys.argv[1].encode(), int(sys.argv[2])
if want:
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(want - 1))
    child = os.fork()
    if child:
        sys.exit(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]))
ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name), 0, 0, 0)
srv = conn = None
for line in sys.stdin:
    c, *a = line.split()
    r = []
    if c == "pid":
        r = [os.getpid()]
    elif c == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", int(a[0])))
        r = [s.detach()]
    elif c == "close":
        os.close(int(a[0]))
    elif c == "listen":
        srv = socket.socket(socket.AF_UNIX); srv.bind(a[0]); srv.listen(1)
    elif c == "connect":
        conn = socket.socket(socket.AF_UNIX); conn.connect(a[0])
    elif c == "accept":
        conn, _ = srv.accept()
    elif c == "send":
        socket.send_fds(conn, [b"x"], [int(a[0])])
    elif c == "recv":
        r = [socket.recv_fds(conn, 1, 1)[1][0]]
    print(*r, "ok", flush=True)
"#;

/// A private pid namespace (its init sleeps) whose procfs is mounted at
/// `proc`, for an exporter outside it (`--path.procfs`): only the test's
/// processes take pids there (not the exporter's threads, nor the rest of
/// the machine), so `ns_last_pid` picks a process's pid without a race.
struct PidNs {
    init: std::process::Child,
    init_pid: u32,
    proc: std::path::PathBuf,
}

impl PidNs {
    fn new(tag: &str) -> PidNs {
        let proc =
            std::env::temp_dir().join(format!("portrange-pidns-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&proc).unwrap();
        let init = Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child", "sh", "-c"])
            .arg("mount -t proc proc \"$0\" && exec sleep infinity")
            .arg(&proc)
            .spawn()
            .expect("unshare (util-linux)");
        let deadline = Instant::now() + Duration::from_secs(10);
        // Its pid 1 (the sleep) as the host sees it: unshare's child.
        let children = format!("/proc/{0}/task/{0}/children", init.id());
        let init_pid = loop {
            let pid = std::fs::read_to_string(&children)
                .ok()
                .and_then(|c| c.split_whitespace().next()?.parse().ok());
            if let Some(pid) = pid
                && std::fs::read_to_string(proc.join("1/comm")).is_ok_and(|c| c == "sleep\n")
            {
                break pid;
            }
            assert!(Instant::now() < deadline, "the pid namespace did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        PidNs {
            init,
            init_pid,
            proc,
        }
    }

    /// Starts a [`PASSER`] named `name` in the namespace, with pid `want`
    /// there when given; returns it with its pid in the namespace.
    fn spawn(&self, name: &str, want: Option<u32>) -> (Passer, u32) {
        let mut child = Command::new("nsenter")
            .args([
                "-t",
                &self.init_pid.to_string(),
                "--pid",
                "--",
                "python3",
                "-c",
                PASSER,
            ])
            .args([name, &want.unwrap_or(0).to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("nsenter (util-linux)");
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut p = Passer { child, stdin, out };
        let pid = p.run("pid")[0];
        (p, pid)
    }
}

impl Drop for PidNs {
    fn drop(&mut self) {
        let _ = self.init.kill(); // --kill-child: the namespace's init dies
        let _ = self.init.wait();
        let _ = Command::new("umount").arg("-l").arg(&self.proc).status();
        let _ = std::fs::remove_dir(&self.proc);
    }
}

struct Passer {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    out: BufReader<std::process::ChildStdout>,
}

impl Passer {
    fn run(&mut self, cmd: &str) -> Vec<u32> {
        writeln!(self.stdin, "{cmd}").unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        let mut words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words.pop(), Some("ok"), "{cmd}: {line:?}");
        words.iter().map(|w| w.parse().unwrap()).collect()
    }

    /// Closes its stdin and waits for it to exit.
    fn exit(mut self) {
        drop(self.stdin);
        let _ = self.child.wait();
    }
}

#[test]
fn a_socket_passed_on_and_a_reused_pid_never_show_a_stale_owner() {
    if !enter_netns("a_socket_passed_on_and_a_reused_pid_never_show_a_stale_owner") {
        return;
    }
    let ns = PidNs::new("passed");
    let e = Exporter::start(&["--path.procfs", ns.proc.to_str().unwrap()]);
    let listener = |port: u16| -> Option<String> {
        e.metrics()
            .named("portrange_listener_info")
            .into_iter()
            .find(|(l, _)| l.contains(&format!("port=\"{port}\"")))
            .map(|(l, _)| parse_labels(&l[l.find('{').unwrap()..])["process"].clone())
    };
    let path = std::env::temp_dir().join(format!("portrange-passed-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let (mut sender, _) = ns.spawn("sender", None);
    let (mut receiver, receiver_pid) = ns.spawn("receiver", None);
    sender.run(&format!("listen {}", path.display()));
    receiver.run(&format!("connect {}", path.display()));
    sender.run("accept");
    let fd = sender.run("udp 3224")[0];
    assert_eq!(listener(3224).as_deref(), Some("sender"));

    // Passed with SCM_RIGHTS while the sender lives: both hold it.
    sender.run(&format!("send {fd}"));
    let got = receiver.run("recv")[0];
    let both = listener(3224).unwrap();
    assert!(both == "sender" || both == "receiver", "{both}");
    // The sender closes its copy and keeps running: the receiver's.
    sender.run(&format!("close {fd}"));
    assert_eq!(
        listener(3224).as_deref(),
        Some("receiver"),
        "the sender, still running, closed its copy"
    );
    assert_eq!(sender.run("pid").len(), 1, "the sender still runs");

    // The receiver passes it back and exits, and its pid is taken at once
    // by another program (ns_last_pid, in a namespace where nothing else
    // takes pids) before the exporter looks again.
    receiver.run(&format!("send {got}"));
    sender.run("recv");
    receiver.exit();
    let (mut impostor, impostor_pid) = ns.spawn("impostor", Some(receiver_pid));
    assert_eq!(impostor_pid, receiver_pid, "ns_last_pid gave the pid");
    impostor.run("udp 3300");
    assert_eq!(
        listener(3224).as_deref(),
        Some("sender"),
        "pid {receiver_pid} now belongs to impostor"
    );
    assert_eq!(listener(3300).as_deref(), Some("impostor"));

    // The sender exits too: the socket is gone, no listener remains.
    sender.exit();
    assert_eq!(listener(3224), None);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn hidepid_and_no_privilege_mean_unknown_never_expected() {
    if !enter_netns("hidepid_and_no_privilege_mean_unknown_never_expected") {
        return;
    }
    let cfg = config_file(
        "hidepid",
        "ranges:\n  - name: fh\n    ports: 3224-3324\n    expected:\n      - process: CtxGfx\n      - user: root\n",
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _ctx = hold(
        "CtxGfx",
        &["udp:0.0.0.0:3224", "udp:0.0.0.0:3225", "tcp:127.0.0.1:3300"],
    );
    let mnt = std::env::temp_dir().join(format!("portrange-hidepid-{}", std::process::id()));
    std::fs::create_dir_all(&mnt).unwrap();
    let script = format!(
        "mount -t proc -o hidepid=2 proc {m} && exec {drop} \"$@\" --path.procfs {m} --config.file {c}",
        drop = DROP_PRIVILEGES.join(" "),
        m = mnt.display(),
        c = cfg.display()
    );
    let e = Exporter::start_as(
        &[],
        Some(&[
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ]),
    );
    let m = e.metrics();
    assert_eq!(m.value("portrange_up"), 1.0);
    assert_eq!(
        m.value(r#"portrange_unattributed_sockets{range="fh",protocol="udp"}"#),
        2.0
    );
    assert_eq!(
        m.value(r#"portrange_unattributed_sockets{range="fh",protocol="tcp"}"#),
        1.0
    );
    assert_eq!(
        m.value(r#"portrange_unexpected_listeners{range="fh",protocol="udp"}"#),
        0.0
    );
    let by = count_by_expected(&m);
    assert_eq!(by.get("unknown"), Some(&3), "{by:?}");
    assert!(
        !by.contains_key("true"),
        "an unattributed listener is never expected, even if user root would match"
    );
    let log = e.stderr();
    assert!(
        log.contains("missing CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"),
        "{log}"
    );
    // The start-up line names the missing capabilities once. A process
    // that was visible but refused its reading (another test's child in
    // the moment between its start and its change of user) adds the
    // "attribution is incomplete" line, once for the exporter's life; no
    // scrape adds another.
    assert_eq!(
        log.matches("process attribution is limited").count(),
        1,
        "{log}"
    );
    let named = log.matches("CAP_SYS_PTRACE").count();
    assert!(
        (1..=2).contains(&named),
        "one log line names it (and at most one more for refused processes), not one per scrape:\n{log}"
    );
    let _ = e.metrics();
    let _ = e.metrics();
    assert_eq!(e.stderr().matches("CAP_SYS_PTRACE").count(), named);
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn hostile_names_keep_metrics_valid_and_check_one_line_per_listener() {
    if !enter_netns("hostile_names_keep_metrics_valid_and_check_one_line_per_listener") {
        return;
    }
    use std::os::unix::ffi::OsStrExt;
    let names: Vec<&[u8]> = vec![
        b"quo\"te",
        b"back\\slash",
        b"new\nline",
        b"{}=x,y}",
        b"0123456789abcdefXYZ",
        b"bad\xff\xfeutf8",
        b"tab\tcr\r",
    ];
    let mut holders = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let spec = format!("udp:0.0.0.0:{}", 3230 + i);
        holders.push(hold(std::ffi::OsStr::from_bytes(n), &[&spec]));
    }
    // An executable at a very long path, with a hostile file name: a copy of
    // the exporter, listening in the range.
    let mut long = std::env::temp_dir().join(format!("portrange-long-{}", std::process::id()));
    for _ in 0..14 {
        long.push("d".repeat(200));
    }
    std::fs::create_dir_all(&long).unwrap();
    let exe = long.join("evil\"exe\\name");
    std::fs::copy(EXPORTER, &exe).unwrap();
    assert!(exe.as_os_str().len() > 2800);
    // Another test thread may fork while the copy is still open for writing,
    // and exec then fails with ETXTBSY until that child has exec'd: retry.
    let mut evil = {
        let mut tries = 0;
        loop {
            match Command::new(&exe)
                .args(["--web.listen-address", "127.0.0.1:3300"])
                .stderr(Stdio::null())
                .spawn()
            {
                Ok(c) => break c,
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("starting {}: {e}", exe.display()),
            }
        }
    };
    let cfg = config_file(
        "hostile",
        &format!(
            "ranges:\n  - name: fh\n    ports: 3224-3324\n    expected:\n      - exe: \"{}/*\"\n",
            std::env::temp_dir()
                .join(format!("portrange-long-{}", std::process::id()))
                .display()
        ),
    );
    std::thread::sleep(Duration::from_millis(300));
    let e = Exporter::start(&["--config.file", cfg.to_str().unwrap()]);
    let raw = e.raw_metrics();
    let m = Metrics::parse(&raw);
    assert_eq!(
        m.named("portrange_listener_info").len(),
        names.len() + 1,
        "{}",
        m.dump("portrange_listener_info")
    );
    for want in [
        r#"process="quo\"te""#,
        r#"process="back\\slash""#,
        r#"process="new\nline""#,
        r#"process="{}=x,y}""#,
        r#"process="0123456789abcde""#,
        "process=\"bad\u{FFFD}\u{FFFD}utf8\"",
        "process=\"tab\tcr\r\"",
        r#"process="evil"exe\name""#,
    ] {
        let want = want.replace(r#"evil"exe\name"#, r#"evil\"exe\\name"#);
        assert!(
            raw.contains(&want),
            "missing {want} in\n{}",
            m.dump("portrange_listener_info")
        );
    }
    let evil_line = m
        .named("portrange_listener_info")
        .into_iter()
        .find(|(l, _)| l.contains("port=\"3300\""))
        .unwrap()
        .0;
    assert!(
        evil_line.contains("expected=\"true\""),
        "the long exe path is read and matched: {evil_line}"
    );
    promtool_check_metrics(&raw);
    let (code, out) = check(&["--config.file", cfg.to_str().unwrap(), "-v"]);
    assert_eq!(code, 2, "{out}");
    let rows = out
        .lines()
        .filter(|l| l.starts_with("udp ") || l.starts_with("tcp "))
        .count();
    assert_eq!(rows, names.len() + 1, "one line per listener:\n{out}");
    // First line, blank, range table (3), blank, "Listeners:", header,
    // rows; with -v blank, "Ephemeral ports:" and a line per protocol; then
    // blank, "Configuration warnings:" and the one warning (the exe: glob
    // under /tmp, one line with file, line, column and key); then blank and
    // the configuration judged.
    assert_eq!(
        out.lines().count(),
        2 + 3 + 1 + 1 + 1 + names.len() + 1 + 4 + 3 + 2,
        "{out}"
    );
    let last: Vec<&str> = out.lines().rev().take(3).collect();
    assert!(
        last[2].contains(".yml:5:14: ranges[0].expected[0].exe: exe: "),
        "{out}"
    );
    assert!(
        last[0].starts_with("Configuration: ") && last[0].ends_with(".yml (--config.file)"),
        "{out}"
    );
    assert_eq!(
        out.lines().next().unwrap().matches('|').count(),
        1,
        "performance data starts once: {out}"
    );
    let _ = evil.kill();
    let _ = evil.wait();
    let _ = std::fs::remove_dir_all(
        std::env::temp_dir().join(format!("portrange-long-{}", std::process::id())),
    );
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn http_abuse_is_contained() {
    if !enter_netns("http_abuse_is_contained") {
        return;
    }
    raise_fd_limit();
    let e = Exporter::start(&["--web.header-read-timeout", "1s"]);
    let pid = e.child.id();
    let _ = e.metrics();
    std::thread::sleep(Duration::from_millis(100));
    let fds0 = fd_count(pid);

    // Never finishing the headers: cut off by the header timeout.
    let mut slow = TcpStream::connect(ADDR).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t = Instant::now();
    let mut sink = Vec::new();
    let _ = slow.read_to_end(&mut sink);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "slow client held for {:?}",
        t.elapsed()
    );

    // 1,000 idle connections do not stop a new scrape.
    let idle: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(ADDR).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let r = get(ADDR, "/metrics", &[]).unwrap();
    assert_eq!(r.status, 200);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "scrape took {:?} with 1,000 idle connections",
        t.elapsed()
    );
    // And they are reaped by the header timeout.
    std::thread::sleep(Duration::from_millis(1500));
    drop(idle);

    // Oversized headers: 431.
    let big = "a".repeat(64 * 1024);
    let r = get(ADDR, "/metrics", &[("X-Big", &big)]).unwrap();
    assert_eq!(r.status, 431);

    // Methods other than GET and HEAD: 405.
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let r = request(ADDR, method, "/metrics", &[("Content-Length", "0")]).unwrap();
        assert_eq!(r.status, 405, "{method}");
    }

    // Scrapes cancelled half-way leave nothing behind.
    for _ in 0..200 {
        let mut s = TcpStream::connect(ADDR).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        drop(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(e.metrics().value("portrange_up"), 1.0);
    std::thread::sleep(Duration::from_millis(200));
    let fds1 = fd_count(pid);
    assert!(fds1 <= fds0, "fds {fds0} -> {fds1}");
}

#[test]
fn a_failing_dump_reads_up_0_with_a_reason_and_the_next_scrape_recovers() {
    if !enter_netns("a_failing_dump_reads_up_0_with_a_reason_and_the_next_scrape_recovers") {
        return;
    }
    let _h = hold("CtxGfx", &["udp:0.0.0.0:3224"]);
    let stderr_path =
        std::env::temp_dir().join(format!("portrange-fault-{}.log", std::process::id()));
    let mut child = Command::new(EXPORTER)
        .args(["--web.listen-address", ADDR])
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(ADDR, "/-/healthy", &[]).is_err() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    // A real failure: the exporter may open no more fds (its open-file
    // limit lowered under it), so the sock_diag socket of each sample
    // cannot be opened. The scrapes come over a connection it already
    // holds (one request first, so that it was accepted).
    let mut client = KeepAlive::connect();
    assert_eq!(client.get("/-/healthy").0, 200);
    let exhausted = exhaust_fds(child.id());
    for _ in 0..2 {
        let (status, body) = client.get("/metrics");
        assert_eq!(status, 200, "a failed sample still answers 200");
        let m = Metrics::parse(&body);
        assert_eq!(m.value("portrange_up"), 0.0, "{body}");
        assert!(
            m.get(r#"portrange_ports_free{range="framehawk",protocol="udp"}"#)
                .is_none(),
            "no fake free ports"
        );
        assert_eq!(
            m.value(r#"portrange_ports{range="framehawk",protocol="udp"}"#),
            101.0
        );
    }
    drop(exhausted);
    let (status, body) = client.get("/metrics");
    assert_eq!(status, 200);
    let m = Metrics::parse(&body);
    assert_eq!(m.value("portrange_up"), 1.0, "recovered");
    assert_eq!(
        m.value(r#"portrange_ports_in_use{range="framehawk",protocol="udp"}"#),
        1.0
    );
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&stderr_path).unwrap();
    assert_eq!(
        log.matches(
            "socket sampling failed: cannot open a NETLINK_SOCK_DIAG socket: Too many open files"
        )
        .count(),
        2,
        "{log}"
    );
    let _ = std::fs::remove_file(stderr_path);
}

#[test]
fn soak_10000_scrapes_flat_rss_and_fds() {
    if !enter_netns("soak_10000_scrapes_flat_rss_and_fds") {
        return;
    }
    let _ctx = hold(
        "CtxGfx",
        &["udp:0.0.0.0:3224", "udp:0.0.0.0:3225", "tcp:127.0.0.1:3300"],
    );
    let _x = hold("intruder", &["udp:127.0.0.1:3226"]);
    let e = Exporter::start(&[]);
    let pid = e.child.id();
    let mut client = KeepAlive::connect();
    // Warm-up: the thread pools and allocator arenas settle first.
    for _ in 0..1000 {
        assert_eq!(client.get("/metrics").0, 200);
    }
    let (fds0, rss0) = (fd_count(pid), rss_kib(pid));
    let t = Instant::now();
    for i in 0..10_000 {
        let (status, body) = client.get("/metrics");
        assert_eq!(status, 200, "scrape {i}");
        if i % 1000 == 0 {
            assert!(body.contains("portrange_up 1"), "scrape {i}");
        }
    }
    let (fds1, rss1) = (fd_count(pid), rss_kib(pid));
    eprintln!(
        "soak: 10,000 scrapes in {:?}; fds {fds0}->{fds1}; RSS {rss0}->{rss1} KiB",
        t.elapsed()
    );
    assert!(fds1 <= fds0, "fds {fds0} -> {fds1}");
    assert!(rss1 < rss0 + 1024, "RSS {rss0} KiB -> {rss1} KiB");
}
