//! The Windows build under Wine: `deploy/windows/build --tests` makes
//! target/windows/portrange_exporter.exe, the .msi and the library's unit
//! tests as a Windows program; these tests run them in a fresh Wine prefix
//! inside a private network namespace (root), so the sockets Wine's socket
//! tables list are the namespace's. Wine reports pid 0 as every socket's
//! owner, so owners are unknown here; who owns what is unit-tested on the
//! exporter's own pid (the unit tests) and only a real Windows host can
//! show it for other processes. Every prefix is deleted and every Wine
//! process of it ended (`wineserver -k`) when a test ends, pass or fail.
//! Without the Windows build or Wine the tests print SKIPPED, and fail in
//! CI.

mod common;

use std::io::Write;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::tls::{ca, server_cert, tls_get};
use common::*;

fn windows_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/windows")
}

/// The Windows build's directory, or `None` (after saying SKIPPED) when
/// the build or Wine is missing outside CI.
fn artifacts(test: &str, need: &[&str]) -> Option<PathBuf> {
    let dir = windows_dir();
    let missing: Vec<&str> = need
        .iter()
        .copied()
        .filter(|f| !dir.join(f).exists())
        .collect();
    let why = if !missing.is_empty() {
        format!(
            "no Windows build ({} missing; run deploy/windows/build --tests)",
            missing.join(", ")
        )
    } else if Command::new("wine").arg("--version").output().is_err() {
        "wine is not installed (deploy/windows/build installs it)".to_string()
    } else if Command::new("msiinfo").arg("--help").output().is_err() {
        "msitools is not installed (deploy/windows/build installs it)".to_string()
    } else {
        return Some(dir);
    };
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
    None
}

/// A Linux path as Wine's Z: drive shows it.
fn win(p: &Path) -> String {
    format!("Z:{}", p.display()).replace('/', "\\")
}

/// Runs `cmd` to its end, with stdout and stderr in files rather than
/// pipes: Wine starts daemons (wineserver, services) that would inherit a
/// pipe and hold it open long after the command ended.
fn run(cmd: &mut Command) -> Output {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let base = std::env::temp_dir().join(format!("portrange-wine-out-{}-{n}", std::process::id()));
    let (out_path, err_path) = (base.with_extension("out"), base.with_extension("err"));
    let status = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .status()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let out = Output {
        status,
        stdout: std::fs::read(&out_path).unwrap_or_default(),
        stderr: std::fs::read(&err_path).unwrap_or_default(),
    };
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    out
}

/// A Wine prefix of its own, created inside the caller's network
/// namespace (so Wine's services, which read the socket tables, live
/// there too). Its services log (WINEDEBUG=+eventlog) shows what services
/// write to the event log.
struct Wine {
    prefix: PathBuf,
    services_log: PathBuf,
    /// The name of the server's socket directory.
    server_dir: Option<String>,
}

impl Wine {
    fn new(tag: &str) -> Wine {
        let prefix =
            std::env::temp_dir().join(format!("portrange-wine-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&prefix);
        let services_log = std::env::temp_dir().join(format!(
            "portrange-wine-{tag}-{}-services.log",
            std::process::id()
        ));
        let mut w = Wine {
            prefix,
            services_log,
            server_dir: None,
        };
        let started = Instant::now();
        let st = run(w.cmd("wineboot").arg("-i"));
        assert!(st.status.success(), "wineboot: {st:?}");
        // Wine's service manager does not see services created during its
        // first session (OpenService fails with 1060): restart the server.
        w.server(&["-k"]);
        w.server(&["-w"]);
        w.server(&["-p"]);
        // The first program of the session starts Wine's services, which
        // keep its stderr and its WINEDEBUG: ReportEventW's strings land in
        // the services log.
        let log = std::fs::File::create(&w.services_log).unwrap();
        let st = w
            .cmd("wine")
            .env("WINEDEBUG", "-all,+eventlog")
            .args(["cmd", "/c", "echo", "ready"])
            .stdout(Stdio::null())
            .stderr(log)
            .status()
            .unwrap();
        assert!(st.success(), "{st:?}");
        let meta = std::fs::metadata(&w.prefix).unwrap();
        use std::os::unix::fs::MetadataExt;
        w.server_dir = Some(format!("server-{:x}-{:x}", meta.dev(), meta.ino()));
        eprintln!("{tag}: Wine prefix ready in {:?}", started.elapsed());
        w
    }

    fn server(&self, args: &[&str]) {
        let st = run(self.cmd("wineserver").args(args));
        assert!(
            st.status.success() || args == ["-k"],
            "wineserver {args:?}: {st:?}"
        );
    }

    /// A command in this prefix, with Wine's debug output off.
    fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env("WINEPREFIX", &self.prefix)
            .env("WINEDEBUG", "-all")
            // No Mono or Gecko installer prompts.
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
            .stdin(Stdio::null());
        c
    }

    /// `wine <args>` with stdout and stderr captured.
    fn wine(&self, args: &[&str]) -> Output {
        run(self.cmd("wine").args(args))
    }

    fn drive_c(&self) -> PathBuf {
        self.prefix.join("drive_c")
    }

    fn services_log(&self) -> String {
        std::fs::read_to_string(&self.services_log).unwrap_or_default()
    }
}

impl Drop for Wine {
    fn drop(&mut self) {
        // Ends every process of the prefix (services, the exporter); one
        // started while the server was going down is killed by its
        // WINEPREFIX.
        for _ in 0..5 {
            let _ = self.cmd("wineserver").arg("-k").status();
            let _ = self.cmd("wineserver").arg("-w").status();
            let left = processes_of(&self.prefix);
            if left.is_empty() {
                break;
            }
            for pid in left {
                // SAFETY: kill(2) on a process of this test's own prefix.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // The server's socket directory, /tmp/wine-XXXXXX/server-DEV-INODE
        // (named after the prefix's device and inode).
        if let Some(name) = &self.server_dir
            && let Ok(dirs) = std::fs::read_dir("/tmp")
        {
            for d in dirs.flatten() {
                let p = d.path();
                let is_wine = d.file_name().to_string_lossy().starts_with("wine-")
                    || d.file_name().to_string_lossy().starts_with(".wine-");
                if is_wine && p.join(name).exists() {
                    let _ = std::fs::remove_dir_all(p.join(name));
                    let _ = std::fs::remove_dir(&p); // when nothing else is in it
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.prefix);
        let _ = std::fs::remove_file(&self.services_log);
    }
}

/// The pids whose environment names `prefix` as their WINEPREFIX.
fn processes_of(prefix: &Path) -> Vec<i32> {
    let want = format!("WINEPREFIX={}", prefix.display());
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == want.as_bytes()))
        })
        .collect()
}

/// The Windows exporter running under Wine.
struct WineExporter {
    child: Child,
    stderr_path: PathBuf,
}

impl WineExporter {
    fn start(wine: &Wine, exe: &Path, args: &[&str]) -> WineExporter {
        let stderr_path = wine.prefix.with_extension(format!(
            "exporter-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let child = wine
            .cmd("wine")
            .arg(exe)
            .args(["--web.listen-address", ADDR])
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        let mut e = WineExporter { child, stderr_path };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(ADDR).is_err() {
            if let Ok(Some(st)) = e.child.try_wait() {
                panic!("the exporter exited with {st}:\n{}", e.stderr());
            }
            assert!(Instant::now() < deadline, "no answer:\n{}", e.stderr());
            std::thread::sleep(Duration::from_millis(100));
        }
        e
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Ctrl-C (Wine turns SIGINT into it) and the exit status.
    fn interrupt(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "Ctrl-C ignored:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for WineExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}

/// Masks what changes between runs, as tests/exporter.rs does.
fn normalize(raw: &str) -> String {
    let mut out = String::new();
    for line in raw.lines() {
        if line.starts_with("promhttp_") {
            // The counts depend on how many scrapes came before.
            let series = line.rsplit_once(' ').unwrap().0;
            out.push_str(&format!("{series} <value>\n"));
        } else if line.starts_with("process_") {
            let name = line.split([' ', '{']).next().unwrap();
            out.push_str(&format!("{name} <value>\n"));
        } else if line.starts_with("portrange_scrape_duration_seconds ") {
            out.push_str("portrange_scrape_duration_seconds <duration>\n");
        } else if line.starts_with("portrange_scrape_collector_duration_seconds{") {
            let series = line.rsplit_once(' ').unwrap().0;
            out.push_str(&format!("{series} <duration>\n"));
        } else if line.starts_with("portrange_config_last_reload_success_timestamp_seconds ") {
            out.push_str("portrange_config_last_reload_success_timestamp_seconds <timestamp>\n");
        } else if line.starts_with("portrange_exporter_build_info{") {
            out.push_str("portrange_exporter_build_info{version=\"<version>\",revision=\"<revision>\",rustc_version=\"<rustc>\"} 1\n");
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn golden(name: &str, got: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} (UPDATE_GOLDEN=1 writes it)", path.display()));
    if got != want {
        let diff: Vec<String> = want
            .lines()
            .zip(got.lines())
            .filter(|(a, b)| a != b)
            .take(10)
            .map(|(a, b)| format!("- {a}\n+ {b}"))
            .collect();
        panic!(
            "/metrics differs from {} ({} vs {} lines):\n{}",
            path.display(),
            want.lines().count(),
            got.lines().count(),
            diff.join("\n")
        );
    }
}

#[test]
fn the_windows_exporter_under_wine() {
    let test = "the_windows_exporter_under_wine";
    let Some(dir) = artifacts(test, &["portrange_exporter.exe"]) else {
        return;
    };
    if !enter_netns(test) {
        return;
    }
    let exe = dir.join("portrange_exporter.exe");
    let wine = Wine::new("exe");
    let work = wine.prefix.with_extension("work");
    std::fs::create_dir_all(&work).unwrap();
    let _cleanup = RemoveDir(work.clone());

    // Serving: landing page, health, metrics, with the built-in range.
    let e = WineExporter::start(&wine, &exe, &[]);
    let landing = get(ADDR, "/", &[]).unwrap();
    assert_eq!(landing.status, 200);
    let body = landing.text();
    assert!(
        body.contains("href=\"./metrics\"")
            && body.contains("<td>framehawk</td><td>udp</td>")
            && body.contains("<td>3224-3324</td>"),
        "the landing page (the port map) before any script runs: {body}"
    );
    let healthy = get(ADDR, "/-/healthy", &[]).unwrap();
    assert_eq!(
        (healthy.status, healthy.text().as_str()),
        (200, "Healthy\n")
    );
    let udp = r#"{range="framehawk",protocol="udp"}"#;
    let m = Metrics::parse(&get(ADDR, "/metrics", &[]).unwrap().text());
    assert_eq!(m.value("portrange_up"), 1.0);
    assert_eq!(m.value(&format!("portrange_ports_in_use{udp}")), 0.0);
    assert_eq!(
        m.value(&format!("portrange_unattributed_sockets{udp}")),
        0.0
    );
    assert!(m.named("portrange_listener_info").is_empty());

    // A UDP socket on 3224, bound by this (Linux) test in the namespace:
    // in use, listed, owner unknown (Wine says pid 0), unattributed.
    let sock = UdpSocket::bind("0.0.0.0:3224").unwrap();
    let raw = get(ADDR, "/metrics", &[]).unwrap().text();
    let m = Metrics::parse(&raw);
    assert_eq!(m.value(&format!("portrange_ports_in_use{udp}")), 1.0);
    assert_eq!(m.value(&format!("portrange_ports_free{udp}")), 100.0);
    assert_eq!(
        m.value(r#"portrange_port_in_use{range="framehawk",protocol="udp",port="3224"}"#),
        1.0
    );
    assert_eq!(
        m.value(r#"portrange_listener_info{range="framehawk",protocol="udp",port="3224",address="0.0.0.0",process="unknown",user="unknown",expected="unknown"}"#),
        1.0
    );
    assert_eq!(
        m.value(&format!("portrange_unattributed_sockets{udp}")),
        1.0
    );
    assert_eq!(
        m.value(&format!("portrange_unexpected_listeners{udp}")),
        0.0
    );
    // The same scenario as Linux's golden file, as far as Wine allows: no
    // ephemeral overlap and no excluded ports (Wine's netsh answers
    // nothing, which the exporter refuses to read as "none"), and an
    // unknown owner.
    promtool_check_metrics(&raw);
    golden("metrics-wine.prom", &normalize(&raw));
    // Every family is Linux's, with the same help, but the ephemeral
    // overlap and the ephemeral collector's families (Wine's netsh does not
    // say the dynamic range, and the exporter refuses to guess it: the
    // collector reports 0, below), process_threads (Linux only) and
    // the traffic counters and their rebuild losses (Linux's golden file is taken with
    // --collector.traffic, which Windows cannot offer without a driver:
    // README, "Traffic to the ranges").
    let heads = |file: &str| -> Vec<String> {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/golden")
                .join(file),
        )
        .unwrap();
        text.lines()
            .filter(|l| l.starts_with("# "))
            .filter(|l| {
                // portrange_ephemeral_* covers the overlap gauge and the
                // ephemeral collector's families (absent under Wine).
                !l.contains(" portrange_ephemeral_")
                    && !l.contains(" process_threads ")
                    && !l.contains(" portrange_received_packets_total ")
                    && !l.contains(" portrange_received_bytes_total ")
                    && !l.contains(" portrange_connection_attempts_total ")
                    && !l.contains(" portrange_traffic_readings_lost_total ")
            })
            .map(str::to_string)
            .collect()
    };
    assert_eq!(heads("metrics-wine.prom"), heads("metrics.prom"));
    let log = e.stderr();
    assert!(
        log.contains("netsh int ipv4 show dynamicport tcp: unexpected netsh output"),
        "{log}"
    );
    // The dynamic range unknown: the ephemeral collector fails closed, no
    // headroom is guessed, and it says so once.
    assert_eq!(
        m.value(r#"portrange_scrape_collector_success{collector="ephemeral"}"#),
        0.0
    );
    assert!(!raw.contains("portrange_ephemeral_ports_free_min"), "{raw}");
    assert_eq!(
        log.matches("the ephemeral collector failed, its series are left out")
            .count(),
        1,
        "{log}"
    );

    // check: WARNING for the unknown owner, with the reason.
    let exe_arg = exe.to_string_lossy().into_owned();
    let check = |args: &[&str]| {
        let mut all = vec![exe_arg.as_str(), "check"];
        all.extend_from_slice(args);
        let out = wine.wine(&all);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = check(&[]);
    assert_eq!(code, 1, "{text}");
    // Wine's netsh says no dynamic range: the ephemeral headroom is
    // unknown, a WARNING of its own, named first.
    assert!(
        text.starts_with(
            "PORTRANGE WARNING - the ephemeral port range could not be counted: \
             cannot read the dynamic port range: netsh int ipv4 show dynamicport tcp"
        ),
        "{text}"
    );
    assert!(
        text.lines().next().unwrap().contains(
            "; 1 listener with unknown owner (udp 0.0.0.0:3224 in framehawk; \
             the socket table names no owner (pid 0)"
        ),
        "{text}"
    );
    assert!(
        // The long output groups by owner and range (issue 29).
        text.contains("udp       unknown    -  unknown  unknown   framehawk      1  0.0.0.0:3224"),
        "{text}"
    );
    // CRITICAL: a one-port range that the socket fills.
    let full = work.join("full.yml");
    std::fs::write(
        &full,
        "ranges:\n  - name: one\n    ports: 3224\n    protocols: [udp]\n",
    )
    .unwrap();
    let (code, text) = check(&["--config.file", &win(&full)]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.starts_with("PORTRANGE CRITICAL - one/udp is full"),
        "{text}"
    );
    // UNKNOWN: a bad configuration.
    let bad = work.join("bad.yml");
    std::fs::write(&bad, "ranges:\n  - name: x\n    ports: 70000\n").unwrap();
    let (code, text) = check(&["--config.file", &win(&bad)]);
    assert_eq!(code, 3, "{text}");
    assert!(text.starts_with("PORTRANGE UNKNOWN - "), "{text}");

    // Closing the socket brings the numbers back.
    drop(sock);
    let m = Metrics::parse(&get(ADDR, "/metrics", &[]).unwrap().text());
    assert_eq!(m.value(&format!("portrange_ports_in_use{udp}")), 0.0);
    assert_eq!(
        m.value(&format!("portrange_unattributed_sockets{udp}")),
        0.0
    );
    assert!(m.named("portrange_listener_info").is_empty());
    // Nothing in the range, but the dynamic range still unreadable: never OK.
    let (code, text) = check(&[]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.starts_with("PORTRANGE WARNING - the ephemeral port range could not be counted"),
        "{text}"
    );
    // Where the dynamic range cannot be read, the operator turns the
    // collector off, and the ranges alone decide.
    let (code, text) = check(&["--no-collector.ephemeral"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("PORTRANGE OK - "), "{text}");

    // Ctrl-C: a clean shutdown, exit 0.
    let st = e.interrupt();
    assert!(st.success(), "{st}");

    // A bad configuration: exit 2, naming the file, line, column and key.
    let out = wine.wine(&[&exe.to_string_lossy(), "--config.file", &win(&bad)]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    // Said once, through the logger (logfmt escapes the backslashes).
    let want = format!(
        "err=\"{}:3:12: ranges[0].ports: port 70000 is above 65535\"",
        win(&bad).replace('\\', "\\\\")
    );
    assert!(err.contains(&want), "{want}\n{err}");

    // TLS and basic auth from one web.yml, served alike by the Linux and
    // the Windows exporter.
    let ca1 = ca("portrange test CA");
    let (cert, key) = server_cert(&ca1);
    std::fs::write(work.join("server.crt"), cert).unwrap();
    std::fs::write(work.join("server.key"), key).unwrap();
    let hash = bcrypt::hash("s3cret", 6).unwrap();
    let web = work.join("web.yml");
    std::fs::write(
        &web,
        format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  alice: {hash}\n"),
    )
    .unwrap();
    use base64::Engine;
    let good = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
    );
    let bad_auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:wrong")
    );
    let probe = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        let r = loop {
            match tls_get(ADDR, &ca1.pem, "/metrics", &[("Authorization", &good)]) {
                Ok(r) => break r,
                Err(e) => {
                    assert!(Instant::now() < deadline, "{what}: no TLS answer: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        assert_eq!(r.status, 200, "{what}");
        assert!(r.text().contains("portrange_up 1"), "{what}");
        let none = tls_get(ADDR, &ca1.pem, "/metrics", &[]).unwrap();
        assert_eq!(none.status, 401, "{what}: no credentials");
        let wrong = tls_get(
            ADDR,
            &ca1.pem,
            "/-/healthy",
            &[("Authorization", &bad_auth)],
        )
        .unwrap();
        assert_eq!(wrong.status, 401, "{what}: wrong password");
        let plain = get(ADDR, "/metrics", &[]);
        assert!(
            plain.is_err() || plain.unwrap().status != 200,
            "{what}: plain HTTP"
        );
    };
    let windows = WineExporter::start(&wine, &exe, &["--web.config.file", &win(&web)]);
    probe("Windows");
    assert!(windows.interrupt().success());
    let mut linux = Command::new(EXPORTER)
        .args(["--web.listen-address", ADDR, "--web.config.file"])
        .arg(&web)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    probe("Linux");
    let _ = linux.kill();
    let _ = linux.wait();
}

struct RemoveDir(PathBuf);
impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_unit_tests_under_wine() {
    let test = "the_unit_tests_under_wine";
    let Some(dir) = artifacts(test, &["portrange_exporter-unit-tests.exe"]) else {
        return;
    };
    if !enter_netns(test) {
        return;
    }
    let wine = Wine::new("unit");
    let exe = dir.join("portrange_exporter-unit-tests.exe");
    let started = Instant::now();
    let out = wine.wine(&[&exe.to_string_lossy(), "--test-threads", "2", "--nocapture"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "unit tests failed under Wine:\n{text}"
    );
    // The attribution code on the test program's own pid: image name,
    // full path, DOMAIN\user and SID, the kernel's pid, unknown pids.
    for name in [
        "platform::windows::attribution::tests::own_process_name_path_and_user",
        "platform::windows::attribution::tests::attribution_of_own_socket_pid_kernel_and_unknown",
        "platform::windows::attribution::tests::own_process_judged_by_the_windows_rules",
        "platform::windows::attribution::tests::well_known_sids_have_names",
        "platform::windows::attribution::tests::a_hanging_account_lookup_never_holds_past_the_deadline",
        "platform::windows::netsh::tests::excluded_ranges",
        "allowlist::tests::windows_rules",
        "platform::portable::tests::finds_an_own_socket_with_its_pid",
    ] {
        assert!(
            text.contains(&format!("test {name} ... ok")),
            "{name} did not pass:\n{text}"
        );
    }
    let own = text
        .lines()
        .find(|l| l.starts_with("own process: "))
        .expect("the own-process line");
    let want_path = win(&exe);
    assert!(
        own.contains("name \"portrange_exporter-unit-tests.exe\"")
            && own.contains(&format!("path {:?}", want_path))
            && own.contains("user \"")
            && own.contains("sid S-1-5-"),
        "{own}"
    );
    eprintln!("{own}");
    eprintln!("unit tests under Wine: {:?}", started.elapsed());
}

fn msi_table(msi: &Path, table: &str) -> String {
    let out = run(Command::new("msiinfo").arg("export").arg(msi).arg(table));
    assert!(out.status.success(), "msiinfo export {table}: {out:?}");
    String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n")
}

#[test]
fn the_msi_holds_the_service_files_and_config() {
    let test = "the_msi_holds_the_service_files_and_config";
    let Some(dir) = artifacts(test, &["portrange_exporter.msi"]) else {
        return;
    };
    let msi = dir.join("portrange_exporter.msi");
    let service = msi_table(&msi, "ServiceInstall");
    let row = service
        .lines()
        .find(|l| l.starts_with("Service\t"))
        .unwrap_or_else(|| panic!("{service}"));
    let cols: Vec<&str> = row.split('\t').collect();
    // Name, DisplayName, ServiceType, StartType, ErrorControl, .., StartName, .., Arguments, Component_
    assert_eq!(cols[1], "portrange_exporter");
    assert_eq!(cols[3], "16", "own process");
    assert_eq!(cols[4], "2", "automatic start");
    assert_eq!(cols[8], "LocalSystem");
    assert_eq!(
        cols[10],
        r#"--windows.service --config.file "[CONFIG_FILE]" --web.listen-address :[LISTEN_PORT] [EXTRA_FLAGS]"#
    );
    assert_eq!(cols[11], "Executable");
    let control = msi_table(&msi, "ServiceControl");
    assert!(
        control.contains("ServiceControl\tportrange_exporter\t163\t\t1\tExecutable"),
        "start on install, stop on install and uninstall, delete on uninstall, wait:\n{control}"
    );
    let files = msi_table(&msi, "File");
    assert!(
        files.contains("portrange_exporter.exe\tExecutable\tportrange_exporter.exe\t"),
        "{files}"
    );
    assert!(
        files.contains("portrange_exporter.yml\tDefaultConfig\tportrange_exporter.yml\t"),
        "{files}"
    );
    let components = msi_table(&msi, "Component");
    assert!(
        components
            .contains("DefaultConfig\t{B99C2773-D95B-480B-B5EA-47D1E50BFBF3}\tINSTALLDIR\t400\t"),
        "the config is 64-bit, permanent and never overwritten:\n{components}"
    );
    let dirs = msi_table(&msi, "Directory");
    assert!(
        dirs.contains("INSTALLDIR\tProgramFiles64Folder\tportrange_exporter"),
        "{dirs}"
    );
    let props = msi_table(&msi, "Property");
    assert!(props.contains("LISTEN_PORT\t10224\n"), "{props}");
    assert!(
        props.contains("SecureCustomProperties\tOLDER_VERSION_FOUND;NEWER_VERSION_FOUND;LISTEN_PORT;CONFIG_FILE;EXTRA_FLAGS\n"),
        "{props}"
    );
    let actions = msi_table(&msi, "CustomAction");
    assert!(actions.contains("DefaultConfigFile\t"), "{actions}");
    assert!(actions.contains("localport=[LISTEN_PORT]"), "{actions}");
    let sequence = msi_table(&msi, "InstallExecuteSequence");
    for row in [
        "DefaultConfigFile\tNOT CONFIG_FILE\t1001",
        "RemoveExistingProducts\t\t1501",
        "AddFirewallRule\t&FirewallException=3\t5850",
    ] {
        assert!(sequence.contains(row), "{row}:\n{sequence}");
    }
    let upgrade = msi_table(&msi, "Upgrade");
    assert!(
        upgrade.contains("\t257\t\tOLDER_VERSION_FOUND"),
        "{upgrade}"
    );
    let registry = msi_table(&msi, "Registry");
    assert!(
        registry.contains("EventLog\\Application\\portrange_exporter\tEventMessageFile\t#%%SystemRoot%\\System32\\EventCreate.exe"),
        "{registry}"
    );

    // The packaged default configuration is the repository's, and valid.
    let out_dir = std::env::temp_dir().join(format!("portrange-msiextract-{}", std::process::id()));
    let _cleanup = RemoveDir(out_dir.clone());
    let st = run(Command::new("msiextract").arg("-C").arg(&out_dir).arg(&msi));
    assert!(st.status.success(), "{st:?}");
    let packaged = walk(&out_dir)
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == "portrange_exporter.yml"))
        .expect("the config in the MSI");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/windows/portrange_exporter.yml");
    assert_eq!(
        std::fs::read(&packaged).unwrap(),
        std::fs::read(&repo).unwrap()
    );
    let cfg = portrange_exporter::config::Config::load(
        &packaged,
        &portrange_exporter::config::LoadChecks::none(),
    )
    .unwrap();
    assert_eq!(cfg.ranges[0].name, "framehawk");
    assert_eq!(cfg.ranges[0].ports.len(), 101);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A copy of the MSI as the next version would be: new package and
/// product codes, version 0.0.1 higher, its Upgrade rows moved along.
fn next_version(msi: &Path, to: &Path) -> String {
    std::fs::copy(msi, to).unwrap();
    let props = msi_table(msi, "Property");
    let version = props
        .lines()
        .find_map(|l| l.strip_prefix("ProductVersion\t"))
        .unwrap()
        .to_string();
    let mut parts: Vec<u32> = version.split('.').map(|p| p.parse().unwrap()).collect();
    *parts.last_mut().unwrap() += 1;
    let next = parts
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(".");
    let guid = || {
        format!(
            "{{{}}}",
            std::fs::read_to_string("/proc/sys/kernel/random/uuid")
                .unwrap()
                .trim()
                .to_uppercase()
        )
    };
    let code = "{8ADFAD1D-689A-4A95-B5C9-C0C5C6B5457A}";
    let upgrade = "INSERT INTO `Upgrade` (`UpgradeCode`, `VersionMin`, `VersionMax`, \
                   `Language`, `Attributes`, `Remove`, `ActionProperty`) VALUES";
    let queries = [
        format!("UPDATE `Property` SET `Value` = '{next}' WHERE `Property` = 'ProductVersion'"),
        format!(
            "UPDATE `Property` SET `Value` = '{}' WHERE `Property` = 'ProductCode'",
            guid()
        ),
        "DELETE FROM `Upgrade`".to_string(),
        format!("{upgrade} ('{code}', '0.0.0', '{next}', '', 257, '', 'OLDER_VERSION_FOUND')"),
        format!("{upgrade} ('{code}', '{next}', '', '', 2, '', 'NEWER_VERSION_FOUND')"),
    ];
    let mut cmd = Command::new("msibuild");
    cmd.arg(to);
    for q in &queries {
        cmd.args(["-q", q]);
    }
    let st = run(&mut cmd);
    assert!(st.status.success(), "msibuild: {st:?}");
    // A new package code (the summary's revision number).
    let subject = "Prometheus exporter for port ranges (Citrix Framehawk 3224-3324)";
    let st = run(Command::new("msibuild").arg(to).args([
        "-s",
        subject,
        "portrange_exporter",
        "x64;1033",
        &guid(),
    ]));
    assert!(st.status.success(), "msibuild: {st:?}");
    next
}

/// The registered products (Uninstall keys named by product code).
fn products(wine: &Wine) -> Vec<String> {
    let out = wine.wine(&[
        "reg",
        "query",
        r"HKLM\Software\Microsoft\Windows\CurrentVersion\Uninstall",
    ]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().rsplit('\\').next())
        .filter(|k| k.starts_with('{'))
        .map(str::to_string)
        .collect()
}

fn wait_metrics(what: &str) -> Metrics {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = get(ADDR, "/metrics", &[])
            && r.status == 200
        {
            return Metrics::parse(&r.text());
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the service does not answer"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_msi_installs_upgrades_and_uninstalls_under_wine() {
    let test = "the_msi_installs_upgrades_and_uninstalls_under_wine";
    let Some(dir) = artifacts(test, &["portrange_exporter.msi"]) else {
        return;
    };
    if !enter_netns(test) {
        return;
    }
    let wine = Wine::new("msi");
    let work = wine.prefix.with_extension("work");
    std::fs::create_dir_all(&work).unwrap();
    let _cleanup = RemoveDir(work.clone());
    let msi = dir.join("portrange_exporter.msi");
    let installed = wine.drive_c().join("Program Files/portrange_exporter");
    let msiexec = |args: &[&str], log: &str| {
        let log = work.join(log);
        let out = run(wine
            .cmd("wine")
            .env("WINEDEBUG", "-all,fixme+netsh")
            .arg("msiexec")
            .args(args)
            .args(["/qn", "/l*v", &win(&log)]));
        let text = std::fs::read(&log)
            .map(|b| String::from_utf8_lossy(&b).replace('\0', ""))
            .unwrap_or_default();
        (out, text)
    };

    // Install, with the port and the firewall exception.
    let (out, log) = msiexec(
        &[
            "/i",
            &win(&msi),
            "LISTEN_PORT=10224",
            "ADDLOCAL=Exporter,FirewallException",
        ],
        "install.log",
    );
    assert!(out.status.success(), "msiexec /i: {out:?}\n{log}");
    assert!(installed.join("portrange_exporter.exe").exists());
    assert!(installed.join("portrange_exporter.yml").exists());
    let image = wine.wine(&[
        "reg",
        "query",
        r"HKLM\System\CurrentControlSet\Services\portrange_exporter",
        "/v",
        "ImagePath",
    ]);
    let image = String::from_utf8_lossy(&image.stdout);
    assert!(
        image.contains(r#"C:\Program Files\portrange_exporter\portrange_exporter.exe --windows.service --config.file "C:\Program Files\portrange_exporter\portrange_exporter.yml" --web.listen-address :10224"#),
        "{image}"
    );
    let events = wine.wine(&[
        "reg",
        "query",
        r"HKLM\System\CurrentControlSet\Services\EventLog\Application\portrange_exporter",
    ]);
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(
        events.contains(
            r"EventMessageFile    REG_EXPAND_SZ    %SystemRoot%\System32\EventCreate.exe"
        ),
        "{events}"
    );
    // The firewall rule's command reached netsh (a stub in Wine).
    let netsh = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("AddFirewallRule") && netsh.contains("localport=10224"),
        "install log:\n{log}\nstderr:\n{netsh}"
    );
    // The service runs: started by the installer, serving on LISTEN_PORT.
    let m = wait_metrics("after install");
    assert_eq!(m.value("portrange_up"), 1.0);
    let before = products(&wine);
    assert_eq!(before.len(), 1, "{before:?}");

    // The operator edits the configuration; a major upgrade keeps it.
    let cfg = installed.join("portrange_exporter.yml");
    let mut f = std::fs::OpenOptions::new().append(true).open(&cfg).unwrap();
    writeln!(
        f,
        "  - name: kept\n    ports: 3400-3409\n    protocols: [udp]"
    )
    .unwrap();
    drop(f);
    let next = work.join("portrange_exporter-next.msi");
    let version = next_version(&msi, &next);
    // The same properties again, as the README says (Wine does not run
    // MigrateFeatureStates, so the feature is given again, not migrated).
    let (out, log) = msiexec(
        &[
            "/i",
            &win(&next),
            "LISTEN_PORT=10224",
            "ADDLOCAL=Exporter,FirewallException",
        ],
        "upgrade.log",
    );
    assert!(out.status.success(), "upgrade to {version}: {out:?}\n{log}");
    let netsh = String::from_utf8_lossy(&out.stderr);
    assert!(
        netsh.contains("localport=10224"),
        "the upgrade did not add the firewall rule:\n{netsh}"
    );
    let after = products(&wine);
    assert_eq!(after.len(), 1, "one product after the upgrade: {after:?}");
    assert_ne!(after, before, "the new product replaced the old one");
    assert!(
        std::fs::read_to_string(&cfg)
            .unwrap()
            .contains("name: kept"),
        "the upgrade kept the edited configuration"
    );
    let m = wait_metrics("after upgrade");
    assert_eq!(
        m.value(r#"portrange_ports{range="kept",protocol="udp"}"#),
        10.0,
        "the upgraded service reads the kept configuration"
    );

    // A stop request: a clean shutdown, told to the event log.
    let out = wine.wine(&["sc", "stop", "portrange_exporter"]);
    assert!(out.status.success(), "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let q = String::from_utf8_lossy(&wine.wine(&["sc", "query", "portrange_exporter"]).stdout)
            .into_owned();
        if q.contains("STOPPED") {
            assert!(q.contains("WIN32_EXIT_CODE    : 0"), "{q}");
            break;
        }
        assert!(Instant::now() < deadline, "the service did not stop:\n{q}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        get(ADDR, "/-/healthy", &[]).is_err(),
        "still serving after the stop"
    );
    let events = wine.services_log();
    for line in [
        "ReportEventW L\"starting portrange_exporter version=",
        "ReportEventW L\"listening address=[::]:10224",
        "ReportEventW L\"the service control manager asks the service to stop\"",
        "a stop request from the service control manager",
        "ReportEventW L\"shut down\"",
    ] {
        assert!(
            events.contains(line),
            "{line} not in the event log:\n{events}"
        );
    }

    // Uninstall: the program and the service go, the configuration stays.
    let (out, log) = msiexec(&["/x", &win(&next)], "uninstall.log");
    assert!(out.status.success(), "msiexec /x: {out:?}\n{log}");
    let netsh = String::from_utf8_lossy(&out.stderr);
    assert!(
        netsh.contains("L\"delete\" L\"rule\"")
            && netsh
                .contains(r"program=C:\\Program Files\\portrange_exporter\\portrange_exporter.exe"),
        "the uninstall did not delete the firewall rule:\n{netsh}"
    );
    assert!(!installed.join("portrange_exporter.exe").exists());
    assert!(
        installed.join("portrange_exporter.yml").exists(),
        "the configuration is permanent"
    );
    let gone = wine.wine(&[
        "reg",
        "query",
        r"HKLM\System\CurrentControlSet\Services\portrange_exporter",
    ]);
    assert!(!gone.status.success(), "the service was not deleted");
    assert!(products(&wine).is_empty());
}
