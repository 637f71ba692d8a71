//! What the real binary does once at start: it raises its soft open-file
//! limit to the hard one (so that `--web.max-connections` needs no
//! warning under systemd's default soft limit of 1024), and it builds its
//! platform once, so that what the platform's probes find (here: a /proc
//! that is not the host's pid namespace, as in a container) is logged once.

mod common;

use std::process::{Command, Stdio};

use common::*;

fn soft_and_hard_open_files(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut words = line["Max open files".len()..].split_whitespace();
    (
        words.next().unwrap().to_string(),
        words.next().unwrap().to_string(),
    )
}

#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_one_at_start() {
    if !enter_netns("the_soft_open_file_limit_is_raised_to_the_hard_one_at_start") {
        return;
    }
    // As systemd starts a unit with no LimitNOFILE=: soft 1024.
    let e = Exporter::start_as(
        &["--log.level", "debug"],
        Some(&["prlimit", "--nofile=1024:8192", "--"]),
    );
    assert_eq!(
        soft_and_hard_open_files(e.child.id()),
        ("8192".to_string(), "8192".to_string())
    );
    let log = e.stderr();
    assert!(!log.contains("is above what the open-file limit"), "{log}");
    assert!(
        log.contains("raised the soft open-file limit from 1024 to the hard limit 8192"),
        "{log}"
    );
}

const NOT_HOST_PIDS: &str = "is not the host's pid namespace";

#[test]
fn a_proc_without_the_hosts_pids_is_said_once_per_start() {
    if !enter_netns("a_proc_without_the_hosts_pids_is_said_once_per_start") {
        return;
    }
    // A private pid namespace with its own /proc, as in a container.
    let unshare = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"];
    let e = Exporter::start_as(&[], Some(&unshare));
    // The collector has run (it uses the platform built at start).
    assert_eq!(e.metrics().value("portrange_up"), 1.0);
    let log = e.stderr();
    assert_eq!(log.matches(NOT_HOST_PIDS).count(), 1, "{log}");
    drop(e);
    // `check` too.
    let out = Command::new(unshare[0])
        .args(&unshare[1..])
        .args([EXPORTER, "check", "-t", "20"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code().is_some_and(|c| c < 3), "{log}");
    assert_eq!(log.matches(NOT_HOST_PIDS).count(), 1, "{log}");
}

/// An exporter whose own listen port lies inside a watched TCP range (the
/// default 10224 inside an RTP range 10000-20000) counts itself there as
/// unexpected: it says so once at start, with the fix, and the allowlist
/// entry it suggests ends it.
#[test]
fn an_own_listen_port_inside_a_watched_range_is_said_at_start_with_the_fix() {
    if !enter_netns("an_own_listen_port_inside_a_watched_range_is_said_at_start_with_the_fix") {
        return;
    }
    let cfg = config_file(
        "own-port",
        "ranges:\n  - name: rtp\n    ports: 10000-20000\n    protocols: [tcp]\n",
    );
    let e = Exporter::start(&["--config.file", cfg.to_str().unwrap()]);
    let log = e.stderr();
    let said = "the exporter's own listen port 10224 lies inside the watched range rtp (10000-20000, tcp), so it counts itself there as an unexpected listener";
    assert_eq!(log.matches(said).count(), 1, "{log}");
    let entry = format!(r#"\"- exe: {EXPORTER}\""#);
    assert!(log.contains(&entry), "{log}");
    let m = e.metrics();
    assert_eq!(
        m.value(r#"portrange_unexpected_listeners{range="rtp",protocol="tcp"}"#),
        1.0,
        "it does flag itself"
    );
    drop(e);
    // The entry the warning suggests.
    std::fs::write(
        &cfg,
        format!(
            "ranges:\n  - name: rtp\n    ports: 10000-20000\n    protocols: [tcp]\n    expected:\n      - exe: {EXPORTER}\n"
        ),
    )
    .unwrap();
    let e = Exporter::start(&["--config.file", cfg.to_str().unwrap()]);
    assert_eq!(
        e.metrics()
            .value(r#"portrange_unexpected_listeners{range="rtp",protocol="tcp"}"#),
        0.0
    );
    drop(e);
    let _ = std::fs::remove_file(cfg);
}
