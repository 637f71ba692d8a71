//! What operators expect of any Prometheus exporter, against the real
//! binary: `--version` as Prometheus prints it, telemetry paths that cannot
//! hide the exporter's own pages, several listen addresses, systemd socket
//! activation (with the shipped .socket unit), `--web.disable-exporter-metrics`,
//! promhttp's request counters, Go's 400 for plain HTTP on a TLS port,
//! structured logs (fields, a config error said once, a line per scrape at
//! debug), 404 for POST to an unknown path, and configuration guard rails
//! at start and on reload. Cases that bind ports run in a private network
//! namespace (root; they print SKIPPED elsewhere). And the house rules
//! read from the sources: the import graph has no circle and runs down
//! the layers (`conventions/imports.rs`).

mod common;
#[path = "conventions/imports.rs"]
mod imports;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn wait_for(addr: &str, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = get(addr, "/-/healthy", &[]) {
            assert_eq!(r.status, 200);
            return;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("exited with {st} before answering on {addr}");
        }
        assert!(Instant::now() < deadline, "no answer on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn version_in_the_prometheus_style() {
    for flag in ["--version", "-V"] {
        let out = Command::new(EXPORTER).arg(flag).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(
            lines[0].starts_with(&format!(
                "portrange_exporter, version {} (branch: ",
                env!("CARGO_PKG_VERSION")
            )) && lines[0].contains(", revision: ")
                && lines[0].ends_with(')'),
            "{text}"
        );
        assert!(lines[1].starts_with("  build date:       2"), "{text}");
        assert!(
            lines[2].starts_with("  rust version:     rustc 1."),
            "{text}"
        );
        assert!(lines[3].starts_with("  platform:         linux/"), "{text}");
        assert!(lines[4].starts_with("  target:           "), "{text}");
        assert!(lines[4].contains("-linux-"), "{text}");
    }
}

#[test]
fn telemetry_paths_that_hide_or_miss_are_refused() {
    for (path, needle) in [
        ("foo", "does not start with \\\"/\\\""),
        ("/", "served by the exporter itself"),
        ("/-/healthy", "served by the exporter itself"),
    ] {
        let out = Command::new(EXPORTER)
            .args([
                "--web.telemetry-path",
                path,
                "--web.listen-address",
                "127.0.0.1:0",
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{path}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{path}: {err}");
        assert!(err.contains("--web.telemetry-path"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn configuration_refusals_are_said_once_with_their_positions() {
    let cfg = config_file(
        "overlap",
        "ranges:\n  - name: framehawk\n    ports: 3224-3324\n  - name: other\n    protocols: [udp]\n    ports: 3300-3400\n",
    );
    let out = Command::new(EXPORTER)
        .args([
            "--config.file",
            cfg.to_str().unwrap(),
            "--web.listen-address",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let p = cfg.display();
    let want = format!(
        "{p}:6:12: ranges[1].ports: 3300-3400 overlaps range \\\"framehawk\\\" ({p}:3:12: ranges[0].ports) on udp at 3300-3324"
    );
    assert!(err.contains(&want), "{err}");
    assert_eq!(err.lines().count(), 1, "said once: {err}");
    // A type error names its key.
    std::fs::write(
        &cfg,
        "ranges:\n  - name: framehawk\n    ports: 3224-3324\n    protocols: udp\n",
    )
    .unwrap();
    let out = Command::new(EXPORTER)
        .args(["--config.file", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{p}:4:16: ranges[0].protocols: ")),
        "{err}"
    );
    assert!(!err.contains("(document)"), "{err}");
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn several_listen_addresses() {
    if !enter_netns("several_listen_addresses") {
        return;
    }
    let mut child = Command::new(EXPORTER)
        .args([
            "--web.listen-address",
            "127.0.0.1:10224",
            "--web.listen-address",
            "[::1]:10225",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("127.0.0.1:10224", &mut child);
    wait_for("[::1]:10225", &mut child);
    let a = get("127.0.0.1:10224", "/metrics", &[]).unwrap();
    let b = get("[::1]:10225", "/metrics", &[]).unwrap();
    assert_eq!((a.status, b.status), (200, 200));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    let listening: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("msg=\"listening\""))
        .collect();
    assert_eq!(listening.len(), 2, "{log}");
    assert!(listening[0].contains(" address=127.0.0.1:10224 "), "{log}");
    assert!(listening[1].contains(" address=[::1]:10225 "), "{log}");
}

#[test]
fn systemd_socket_activation() {
    if !enter_netns("systemd_socket_activation") {
        return;
    }
    if Command::new("systemd-socket-activate")
        .arg("--version")
        .output()
        .is_err()
    {
        if std::env::var_os("CI").is_some() {
            panic!("systemd-socket-activate is missing in CI (systemd package)");
        }
        eprintln!("SKIPPED systemd_socket_activation: systemd-socket-activate not installed");
        return;
    }
    let log = std::env::temp_dir().join(format!("portrange-sd-{}.log", std::process::id()));
    let mut child = Command::new("systemd-socket-activate")
        .args(["-l", "127.0.0.1:10224", "-l", "127.0.0.1:10225", EXPORTER])
        .args([
            "--web.systemd-socket",
            "--web.listen-address",
            "127.0.0.1:1",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // The exporter starts on the first connection and serves both sockets.
    wait_for("127.0.0.1:10224", &mut child);
    wait_for("127.0.0.1:10225", &mut child);
    let m = get("127.0.0.1:10225", "/metrics", &[]).unwrap();
    assert_eq!(m.status, 200);
    assert!(m.text().contains("portrange_up 1"));
    assert!(
        TcpStream::connect("127.0.0.1:1").is_err(),
        "--web.listen-address is ignored under socket activation"
    );
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert!(
        text.contains("msg=\"listening\" address=127.0.0.1:10224")
            && text.contains("systemd_socket=true"),
        "{text}"
    );
}

#[test]
fn systemd_socket_without_systemd_is_a_clear_error() {
    let out = Command::new(EXPORTER)
        .arg("--web.systemd-socket")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("LISTEN_PID/LISTEN_FDS are not set")
            && err.contains("portrange_exporter.socket"),
        "{err}"
    );
    // Sockets meant for another process are left alone.
    let out = Command::new(EXPORTER)
        .arg("--web.systemd-socket")
        .env("LISTEN_FDS", "1")
        .env("LISTEN_PID", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("LISTEN_PID is \\\"1\\\", not this process"),
        "{err}"
    );
}

#[test]
fn the_socket_unit_matches_the_service() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd");
    let socket = std::fs::read_to_string(root.join("portrange_exporter.socket")).unwrap();
    assert!(socket.contains("\nListenStream=10224\n"), "{socket}");
    assert!(
        socket.contains("--web.systemd-socket"),
        "says how to use it"
    );
    let service = std::fs::read_to_string(root.join("portrange_exporter.service")).unwrap();
    assert!(service.contains("portrange_exporter.socket"), "{service}");
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        if std::env::var_os("CI").is_some() {
            panic!("systemd-analyze is missing in CI");
        }
        eprintln!("SKIPPED systemd-analyze verify: not installed");
        return;
    }
    // Verify both units together, with the binary where the unit expects it
    // replaced by a path that exists (as tests/deploy.rs does).
    let dir = std::env::temp_dir().join(format!("portrange-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("portrange_exporter.service"),
        service.replace("/usr/local/bin/portrange_exporter", EXPORTER),
    )
    .unwrap();
    std::fs::write(dir.join("portrange_exporter.socket"), &socket).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join("portrange_exporter.socket"))
        .arg(dir.join("portrange_exporter.service"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    let relevant: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("portrange_exporter"))
        .collect();
    assert!(
        out.status.success() && relevant.is_empty(),
        "systemd-analyze verify:\n{text}"
    );
}

#[test]
fn exporter_metrics_and_their_switch() {
    if !enter_netns("exporter_metrics_and_their_switch") {
        return;
    }
    let e = Exporter::start(&[]);
    let first = e.raw_metrics();
    assert!(
        first.contains("\npromhttp_metric_handler_requests_in_flight 1\n"),
        "{first}"
    );
    assert!(first.contains("\npromhttp_metric_handler_requests_total{code=\"200\"} 0\n"));
    assert!(first.contains("\npromhttp_metric_handler_requests_total{code=\"500\"} 0\n"));
    assert!(first.contains("\npromhttp_metric_handler_requests_total{code=\"503\"} 0\n"));
    assert!(first.contains("\nprocess_resident_memory_bytes "));
    assert!(first.contains("# TYPE promhttp_metric_handler_requests_total counter\n"));
    let _ = request(ADDR, "HEAD", "/metrics", &[]).unwrap();
    let _ = get(ADDR, "/-/healthy", &[]).unwrap();
    let third = e.raw_metrics();
    assert!(
        third.contains("\npromhttp_metric_handler_requests_total{code=\"200\"} 2\n"),
        "GET and HEAD of the metrics path count, /-/healthy does not:\n{third}"
    );
    promtool_check_metrics(&third);
    drop(e);

    let e = Exporter::start(&["--web.disable-exporter-metrics"]);
    let raw = e.raw_metrics();
    assert!(raw.contains("portrange_up 1"));
    for line in raw.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            line.starts_with("portrange_"),
            "only the exporter's own families: {line}"
        );
    }
    drop(e);
    let e = Exporter::start_as(
        &[],
        Some(&[
            "env",
            "PORTRANGE_EXPORTER_WEB_DISABLE_EXPORTER_METRICS=true",
        ]),
    );
    assert!(!e.raw_metrics().contains("process_"));
}

#[test]
fn plain_http_on_the_tls_port_gets_a_400_that_says_so() {
    if !enter_netns("plain_http_on_the_tls_port_gets_a_400_that_says_so") {
        return;
    }
    let d = std::env::temp_dir().join(format!("portrange-plain-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(d.join("c.pem"), cert.cert.pem()).unwrap();
    std::fs::write(d.join("k.pem"), cert.signing_key.serialize_pem()).unwrap();
    std::fs::write(
        d.join("web.yml"),
        "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n",
    )
    .unwrap();
    let mut child = Command::new(EXPORTER)
        .args(["--web.listen-address", ADDR, "--web.config.file"])
        .arg(d.join("web.yml"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let raw = loop {
        if let Ok(mut s) = TcpStream::connect(ADDR) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut raw = Vec::new();
            let _ = s.read_to_end(&mut raw);
            break raw;
        }
        assert!(Instant::now() < deadline, "no listener");
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&d);
    assert_eq!(
        String::from_utf8_lossy(&raw),
        "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
    );
}

#[test]
fn post_to_an_unknown_path_is_404() {
    if !enter_netns("post_to_an_unknown_path_is_404") {
        return;
    }
    let _e = Exporter::start(&[]);
    let r = request(ADDR, "POST", "/nope", &[("Content-Length", "0")]).unwrap();
    assert_eq!(r.status, 404);
    let r = request(ADDR, "DELETE", "/x/y", &[]).unwrap();
    assert_eq!(r.status, 404);
    // Known paths keep their 405.
    let r = request(ADDR, "POST", "/metrics", &[("Content-Length", "0")]).unwrap();
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    let r = request(ADDR, "POST", "/", &[("Content-Length", "0")]).unwrap();
    assert_eq!(r.status, 405);
    let r = get(ADDR, "/-/reload", &[]).unwrap();
    assert_eq!(r.status, 405);
}

#[test]
fn structured_logs_and_a_line_per_scrape_at_debug() {
    if !enter_netns("structured_logs_and_a_line_per_scrape_at_debug") {
        return;
    }
    let _ctx = hold("CtxGfx", &["udp:0.0.0.0:3224", "tcp:127.0.0.1:3300"]);
    let e = Exporter::start(&["--log.level", "debug"]);
    e.metrics();
    e.metrics();
    let log = e.stderr();
    let start = log
        .lines()
        .find(|l| l.contains("msg=\"starting portrange_exporter\""))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        start.contains(" ranges=\"framehawk=3224-3324\" ")
            && start.contains(" config=\"built-in default\" ")
            && start.contains(" telemetry_path=/metrics "),
        "{start}"
    );
    assert!(
        log.contains("msg=\"listening\" address=127.0.0.1:10224 "),
        "{log}"
    );
    let scrapes: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("msg=\"scrape\""))
        .collect();
    assert_eq!(scrapes.len(), 2, "{log}");
    for s in &scrapes {
        assert!(
            s.contains(" level=debug ")
                && s.contains(" sockets=2 ")
                && s.contains(" listeners=2 ")
                && s.contains(" owners_found=1 ")
                && s.contains(" duration_seconds="),
            "{s}"
        );
    }
    drop(e);
    let e = Exporter::start(&[]);
    e.metrics();
    assert!(
        !e.stderr().contains("msg=\"scrape\""),
        "nothing per scrape at info"
    );
}

#[test]
fn unknown_allowlist_users_are_warned_about_at_start_and_on_reload() {
    if !enter_netns("unknown_allowlist_users_are_warned_about_at_start_and_on_reload") {
        return;
    }
    let cfg = config_file(
        "nouser-serve",
        "ranges:\n  - name: fh\n    ports: 3224-3324\n    expected:\n      - user: no-such-user-portrange\n",
    );
    let e = Exporter::start(&["--config.file", cfg.to_str().unwrap()]);
    let warning = "level=warn msg=\"configuration: user \\\"no-such-user-portrange\\\" does not exist on this host";
    let count = |log: &str| log.lines().filter(|l| l.contains(warning)).count();
    let log = e.stderr();
    assert_eq!(count(&log), 1, "{log}");
    let line = log.lines().find(|l| l.contains(warning)).unwrap();
    assert!(
        line.contains(&format!(
            " file={} line=5 column=15 key=ranges[0].expected[0].user",
            cfg.display()
        )),
        "{line}"
    );
    assert_eq!(e.metrics().value("portrange_up"), 1.0, "loaded anyway");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(e.child.id() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&e.stderr()) < 2 {
        assert!(
            Instant::now() < deadline,
            "no warning on reload:\n{}",
            e.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        e.metrics().value("portrange_config_last_reload_successful"),
        1.0
    );
    let _ = std::fs::remove_file(cfg);
}
