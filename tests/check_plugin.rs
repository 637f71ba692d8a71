//! `check` as a Nagios plugin, against the real binary: what an operator
//! saw wrong, each as a case. Bad arguments are UNKNOWN; a closed stdout is
//! no crash; an unprivileged run never says OK about what it cannot see;
//! performance data, thresholds in the range syntax, `--range`, `-t`, `-v`
//! and `--output json` behave as the guidelines and the README say; the
//! first line names the culprit; the long output stays short with
//! thousands of allowed listeners; an ephemeral overlap is a named WARNING.
//! Cases that bind ports run in a private network namespace (root; they
//! print SKIPPED elsewhere).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Runs `check` with `args`; returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(EXPORTER)
        .arg("check")
        .args(args)
        .output()
        .expect("running check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn first_line(out: &str) -> &str {
    out.lines().next().unwrap_or("")
}

/// The performance data of the first line, label → fields.
fn perf(out: &str) -> std::collections::BTreeMap<String, String> {
    let (_, data) = first_line(out)
        .split_once(" | ")
        .unwrap_or_else(|| panic!("no performance data: {out}"));
    data.split(' ')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn bad_arguments_are_unknown_on_one_line() {
    for args in [
        &["--bogus"][..],
        &["--warn-free", "abc"],
        &["-w", "abc:"],
        &["-w", "10"],
        &["-c", "150%:"],
        &["-t", "forever"],
        &["--output", "xml"],
        &["-w", "5:", "--warn-free", "5"],
        &["extra"],
    ] {
        let (code, out, _) = run(args);
        assert_eq!(code, 3, "check {args:?}: {out}");
        assert!(out.starts_with("PORTRANGE UNKNOWN - "), "{args:?}: {out}");
        assert_eq!(out.lines().count(), 1, "{args:?}: {out}");
    }
    let (_, out, _) = run(&["-w", "10"]);
    assert!(
        out.contains("write 10: to alert when fewer than 10 are free"),
        "{out}"
    );
    // Global flags before the command count too.
    let out = Command::new(EXPORTER)
        .args(["--log.level", "debug", "check", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    // Help is not an error.
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("--warning") && out.contains("--range"),
        "{out}"
    );
    // The serving command keeps clap's usage error (exit 2).
    let out = Command::new(EXPORTER).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_closed_stdout_is_not_a_crash() {
    // stdout is a pipe whose reader is already gone: every write fails
    // with EPIPE, as in `check | head -1` once head has exited.
    let mut fds = [0i32; 2];
    // SAFETY: pipe(2) fills two fds into the array we own.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fds[0] and fds[1] were just created and are owned here only.
    let (reader, writer) = unsafe {
        use std::os::fd::FromRawFd;
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    drop(reader);
    let out = Command::new(EXPORTER)
        .args(["check", "-v"])
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    let code = out.status.code().expect("exited, not killed");
    assert!((0..=3).contains(&code), "exit {code}: {err}");
    // And the real pipeline.
    let out = Command::new("bash")
        .args([
            "-c",
            "\"$0\" check -v | head -1; echo \"rc=${PIPESTATUS[0]}\"",
            EXPORTER,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("PORTRANGE "), "{text}");
    let rc: i32 = text
        .lines()
        .last()
        .unwrap()
        .strip_prefix("rc=")
        .unwrap()
        .parse()
        .unwrap();
    assert!((0..=3).contains(&rc), "{text}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn the_time_limit_answers_unknown() {
    // A configuration "file" that never delivers: a FIFO with no writer.
    let fifo = std::env::temp_dir().join(format!("portrange-fifo-{}", std::process::id()));
    let _ = std::fs::remove_file(&fifo);
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) with a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let started = Instant::now();
    let (code, out, _) = run(&["--config.file", fifo.to_str().unwrap(), "-t", "1"]);
    let took = started.elapsed();
    let _ = std::fs::remove_file(&fifo);
    assert_eq!(code, 3, "{out}");
    assert_eq!(
        out,
        "PORTRANGE UNKNOWN - no answer within the 1 s time limit (-t)\n"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn unprivileged_with_another_users_listener_is_never_ok() {
    if !enter_netns("unprivileged_with_another_users_listener_is_never_ok") {
        return;
    }
    let _ctx = hold("CtxGfx", &["udp:0.0.0.0:3224"]);
    for (tag, allow) in [
        ("none", ""),
        ("process", "    expected:\n      - process: CtxGfx\n"),
        ("user", "    expected:\n      - user: root\n"),
    ] {
        let cfg = config_file(
            &format!("nrpe-{tag}"),
            &format!("ranges:\n  - name: framehawk\n    ports: 3224-3324\n{allow}"),
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
        // As NRPE runs it: another user, no capabilities; a copy of the
        // binary that user can execute, as the checkout may be out of its
        // reach (see `shared_copy`).
        let out = Command::new(DROP_PRIVILEGES[0])
            .args(&DROP_PRIVILEGES[1..])
            .arg(exporter_for(&DROP_PRIVILEGES))
            .args(["check", "--config.file", cfg.to_str().unwrap()])
            .current_dir("/")
            .output()
            .expect("setpriv (util-linux)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{tag}: {text}");
        let first = first_line(&text);
        assert!(
            first.starts_with(
                "PORTRANGE WARNING - 1 listener with unknown owner (udp 0.0.0.0:3224 in framehawk; \
                 cannot read other users' processes: run as root or grant CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH)"
            ),
            "{tag}: {text}"
        );
        assert_eq!(perf(&text)["framehawk_udp_unknown"], "1;0;;0;", "{tag}");
        // The long output lists it as unknown.
        assert!(
            text.lines()
                .any(|l| l.starts_with("udp ") && l.contains("unknown")),
            "{tag}: {text}"
        );
        // As root, the same listener is judged.
        let (code, out, _) = run(&["--config.file", cfg.to_str().unwrap()]);
        assert_eq!(code, if tag == "none" { 2 } else { 0 }, "{tag}: {out}");
        let _ = std::fs::remove_file(cfg);
    }
}

#[test]
fn performance_data_and_thresholds() {
    if !enter_netns("performance_data_and_thresholds") {
        return;
    }
    let cfg = config_file(
        "perf",
        "ranges:\n  - name: tiny\n    ports: 3224-3233\n    protocols: [udp]\n    expected:\n      - process: CtxGfx\n\
         \x20 - name: web\n    ports: 3300-3309\n    protocols: [tcp]\n",
    );
    let c = cfg.to_str().unwrap();
    let specs: Vec<String> = (3224..3232).map(|p| format!("udp:0.0.0.0:{p}")).collect();
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let _ctx = hold("CtxGfx", &specs);

    // Defaults: warning below 10% free, critical when full. 2 of 10 free.
    let (code, out, _) = run(&["--config.file", c]);
    assert_eq!(code, 0, "{out}");
    let p = perf(&out);
    assert_eq!(
        p.keys().cloned().collect::<Vec<_>>(),
        [
            "ephemeral_tcp_free_min",
            "ephemeral_tcp_in_use",
            "ephemeral_tcp_time_wait",
            "ephemeral_udp_free_min",
            "ephemeral_udp_in_use",
            "tiny_udp_free",
            "tiny_udp_in_use",
            "tiny_udp_unexpected",
            "tiny_udp_unknown",
            "web_tcp_free",
            "web_tcp_in_use",
            "web_tcp_unexpected",
            "web_tcp_unknown"
        ]
    );
    assert_eq!(p["tiny_udp_in_use"], "8;;;0;10");
    assert_eq!(p["tiny_udp_free"], "2;1:;1:;0;10");
    assert_eq!(p["tiny_udp_unexpected"], "0;;0;0;");
    assert_eq!(p["web_tcp_free"], "10;1:;1:;0;10");

    // Percentages of each range's capacity, in the range syntax.
    let (code, out, _) = run(&["--config.file", c, "-w", "30%:"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        first_line(&out)
            .starts_with("PORTRANGE WARNING - tiny/udp has 2 of 10 ports free (warning 30%:) |"),
        "{out}"
    );
    assert_eq!(perf(&out)["tiny_udp_free"], "2;3:;1:;0;10");
    let (code, out, _) = run(&["--config.file", c, "-w", "30%:", "-c", "3:"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.starts_with("PORTRANGE CRITICAL - tiny/udp has 2 of 10 ports free (critical 3:)"),
        "{out}"
    );
    assert_eq!(perf(&out)["tiny_udp_free"], "2;3:;3:;0;10");
    let (code, out, _) = run(&["--config.file", c, "-w", "@0:2"]);
    assert_eq!(code, 1, "2 is inside 0-2: {out}");
    assert_eq!(perf(&out)["tiny_udp_free"], "2;@0:2;1:;0;10");
    let (code, out, _) = run(&["--config.file", c, "-w", "~:9"]);
    assert_eq!(code, 1, "web has 10 free, above 9: {out}");
    assert!(out.contains("web/tcp has 10 of 10 ports free"), "{out}");
    // The older spelling still works.
    let (code, out, _) = run(&["--config.file", c, "--warn-free", "3"]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(perf(&out)["tiny_udp_free"], "2;3:;1:;0;10");
    let (code, out, _) = run(&["--config.file", c, "--warn-free", "10%"]);
    assert_eq!(code, 0, "{out}");

    // A full range.
    let _more = hold("CtxGfx", &["udp:0.0.0.0:3232", "udp:0.0.0.0:3233"]);
    let (code, out, _) = run(&["--config.file", c]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.starts_with("PORTRANGE CRITICAL - tiny/udp is full (10 of 10 ports in use) |"),
        "{out}"
    );
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn one_range_per_service_and_the_first_line_names_the_culprit() {
    if !enter_netns("one_range_per_service_and_the_first_line_names_the_culprit") {
        return;
    }
    let cfg = config_file(
        "ranges",
        "ranges:\n  - name: a\n    ports: 3224-3233\n    protocols: [udp]\n    expected:\n      - process: CtxGfx\n\
         \x20 - name: b\n    ports: 3240-3249\n    protocols: [udp]\n",
    );
    let c = cfg.to_str().unwrap();
    let _ctx = hold("CtxGfx", &["udp:0.0.0.0:3224"]);
    let _nc = hold(
        "nc",
        &["udp:127.0.0.1:3241", "udp:0.0.0.0:3242", "udp:0.0.0.0:3226"],
    );
    let (code, out, _) = run(&["--config.file", c, "--range", "a"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.starts_with(
            "PORTRANGE CRITICAL - 1 unexpected listener: nc (user root) on udp 0.0.0.0:3226 in a |"
        ),
        "{out}"
    );
    assert!(
        perf(&out).keys().all(|k| k.starts_with("a_")),
        "only range a: {out}"
    );
    let (code, out, _) = run(&["--config.file", c, "--range", "b"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.starts_with("PORTRANGE CRITICAL - 2 unexpected listeners: nc (user root) on 2 udp ports in b (127.0.0.1:3241, 0.0.0.0:3242) |"),
        "{out}"
    );
    let (code, out, _) = run(&["--config.file", c]);
    assert_eq!(code, 2);
    assert!(out.contains("3 unexpected listeners: nc"), "{out}");
    let (code, out, _) = run(&["--config.file", c, "--range", "nope"]);
    assert_eq!(code, 3);
    assert_eq!(
        out,
        "PORTRANGE UNKNOWN - --range \"nope\": no such range (configured: a, b)\n"
    );
    drop(_nc);
    let (code, out, _) = run(&["--config.file", c, "--range", "b"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("PORTRANGE OK - 1 range/protocol pairs, 10 ports free"),
        "{out}"
    );
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn thousands_of_allowed_listeners_keep_the_output_short_and_json_has_them_all() {
    if !enter_netns("thousands_of_allowed_listeners_keep_the_output_short_and_json_has_them_all") {
        return;
    }
    let cfg = config_file(
        "rtp",
        "ranges:\n  - name: rtp\n    ports: 10000-19999\n    protocols: [udp]\n    expected:\n      - process: rtpengine\n        user: root\n",
    );
    let c = cfg.to_str().unwrap();
    let allowed: Vec<String> = (10000..11000).map(|p| format!("udp:0.0.0.0:{p}")).collect();
    let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
    let _rtp = hold("rtpengine", &allowed);
    let bad: Vec<String> = (15000..15030).map(|p| format!("udp:0.0.0.0:{p}")).collect();
    let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
    let _bad = hold("intruder", &bad);

    let (code, out, _) = run(&["--config.file", c]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.starts_with("PORTRANGE CRITICAL - 30 unexpected listeners: intruder (user root) on 30 udp ports in rtp (0.0.0.0:15000, 0.0.0.0:15001, 0.0.0.0:15002 and 27 more) |"),
        "{out}"
    );
    assert!(
        out.lines().count() < 40,
        "{} lines:\n{out}",
        out.lines().count()
    );
    assert!(
        out.len() < 4096,
        "{} bytes, beyond NRPE's buffer",
        out.len()
    );
    // One owner, one row, with its count and first ports.
    let row = out
        .lines()
        .find(|l| l.starts_with("udp ") && l.contains("intruder"))
        .unwrap_or_else(|| panic!("intruder row: {out}"));
    assert!(
        row.contains(" 30  0.0.0.0:15000, 0.0.0.0:15001, 0.0.0.0:15002 and 27 more"),
        "{row}"
    );
    assert!(
        out.contains("1000 allowed listeners not shown (-v lists them)."),
        "{out}"
    );
    assert!(!out.contains("rtpengine"), "{out}");

    let (code, out, _) = run(&["--config.file", c, "-v"]);
    assert_eq!(code, 2);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("udp ")).count(),
        1030,
        "-v lists every listener"
    );

    let (code, out, _) = run(&["--config.file", c, "--output", "json"]);
    assert_eq!(code, 2);
    let v: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(v["status"], "CRITICAL");
    assert_eq!(v["code"], 2);
    let listeners = v["listeners"].as_array().unwrap();
    assert_eq!(listeners.len(), 1030);
    let bad = listeners
        .iter()
        .filter(|l| l["expected"] == "false")
        .collect::<Vec<_>>();
    assert_eq!(bad.len(), 30);
    assert_eq!(bad[0]["process"], "intruder");
    assert_eq!(bad[0]["pid"], _bad.pid());
    assert_eq!(v["ranges"][0]["in_use"], 1030);
    assert_eq!(v["ranges"][0]["free"], 10000 - 1030);
    assert_eq!(v["ranges"][0]["unexpected_listeners"], 30);
    assert_eq!(v["ranges"][0]["sockets"]["unconn"], 1030);
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn an_ephemeral_overlap_is_a_named_warning() {
    if !enter_netns("an_ephemeral_overlap_is_a_named_warning") {
        return;
    }
    let cfg = config_file(
        "eph",
        "ranges:\n  - name: tiny\n    ports: 3224-3233\n    protocols: [udp]\n",
    );
    let c = cfg.to_str().unwrap();
    let (code, out, _) = run(&["--config.file", c]);
    assert_eq!(code, 0, "{out}");
    let st = Command::new("sh")
        .args([
            "-c",
            "echo '3230 60999' > /proc/sys/net/ipv4/ip_local_port_range",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let (code, out, _) = run(&["--config.file", c]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with(
            "PORTRANGE WARNING - tiny/udp: 4 ports are in the ephemeral port range, where outgoing connections can take them (reserve them: the line \"net.ipv4.ip_local_reserved_ports = 3224-3233\" in /etc/sysctl.d/60-portrange.conf, then sysctl --system"
        ),
        "{out}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&run(&["--config.file", c, "--output", "json"]).1).unwrap();
    assert_eq!(v["ranges"][0]["ephemeral_overlap_ports"], 4);
    // The fix as the warning words it (in this namespace's sysctl) ends
    // the warning.
    let value = out
        .split_once("net.ipv4.ip_local_reserved_ports = ")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(v, _)| v.to_string())
        .unwrap();
    std::fs::write("/proc/sys/net/ipv4/ip_local_reserved_ports", &value).unwrap();
    let (code, out, _) = run(&["--config.file", c]);
    assert_eq!(code, 0, "reserved {value}: {out}");
    std::fs::write("/proc/sys/net/ipv4/ip_local_reserved_ports", "").unwrap();
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn configuration_warnings_reach_the_plugin_output() {
    let cfg = config_file(
        "nouser",
        "ranges:\n  - name: tiny\n    ports: 3224-3233\n    protocols: [udp]\n    expected:\n      - user: no-such-user-portrange\n",
    );
    let (_, out, err) = run(&["--config.file", cfg.to_str().unwrap()]);
    let want = format!(
        "{}:6:15: ranges[0].expected[0].user: user \"no-such-user-portrange\" does not exist",
        cfg.display()
    );
    assert!(out.contains("Configuration warnings:"), "{out}");
    assert!(out.contains(&want), "{out}");
    assert!(err.contains("no-such-user-portrange"), "logged too: {err}");
    let _ = std::fs::remove_file(cfg);
}

/// `check` with no `--config.file` judges the packages' file,
/// /etc/portrange_exporter/ranges.yml, when it exists (as the service
/// does), and its long output names the configuration it judged. The file
/// is written into an overlay over /etc in a private mount namespace, so
/// the host's /etc is never touched.
#[test]
fn check_reads_the_packages_configuration_by_default() {
    if !enter_netns("check_reads_the_packages_configuration_by_default") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("portrange-etc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for d in ["upper/portrange_exporter", "work"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(
        dir.join("upper/portrange_exporter/ranges.yml"),
        "ranges:\n  - name: mosh\n    ports: 60000-61000\n    protocols: [udp]\n",
    )
    .unwrap();
    // In a private mount namespace: /etc with the file, or /etc without it.
    let in_etc = |with_file: bool, args: &str| -> (i32, String) {
        let mount = if with_file {
            format!(
                "mount -t overlay overlay -o lowerdir=/etc,upperdir={0}/upper,workdir={0}/work /etc && ",
                dir.display()
            )
        } else {
            // Whatever the host has there is hidden.
            "{ [ ! -d /etc/portrange_exporter ] || mount -t tmpfs none /etc/portrange_exporter; } && ".to_string()
        };
        let out = Command::new("unshare")
            .args(["-m", "sh", "-c"])
            .arg(format!("{mount}exec \"$0\" check {args}"))
            .arg(EXPORTER)
            .output()
            .expect("running unshare (util-linux)");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("mount:"), "{err}");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (_, out) = in_etc(true, "");
    assert!(
        first_line(&out).contains(" | mosh_udp_in_use=0;"),
        "the default file's range is judged: {out}"
    );
    assert!(!first_line(&out).contains("framehawk"), "{out}");
    assert!(
        out.contains(
            "\nConfiguration: /etc/portrange_exporter/ranges.yml (the default, as the service reads it"
        ),
        "{out}"
    );
    // --config.file still wins.
    let other = config_file(
        "default-override",
        "ranges:\n  - name: rtp\n    ports: 10000-10100\n    protocols: [udp]\n",
    );
    let (_, out) = in_etc(true, &format!("--config.file {}", other.display()));
    assert!(first_line(&out).contains("rtp_udp_in_use=0"), "{out}");
    assert!(
        out.contains(&format!(
            "\nConfiguration: {} (--config.file)",
            other.display()
        )),
        "{out}"
    );
    // Without the file: the built-in range, said so.
    let (_, out) = in_etc(false, "");
    assert!(first_line(&out).contains("framehawk_udp_in_use=0"), "{out}");
    assert!(
        out.contains("\nConfiguration: built-in (framehawk 3224-3324, udp and tcp, empty allowlist): no --config.file, and /etc/portrange_exporter/ranges.yml does not exist"),
        "{out}"
    );
    let _ = std::fs::remove_file(other);
    let _ = std::fs::remove_dir_all(&dir);
}
