//! The traffic collector (`--collector.traffic`, issue 19) against the
//! real kernel: each test runs as root in a private network namespace
//! (never the host's ruleset), sends real packets (and a real `nmap` SYN
//! scan), scrapes the real endpoint and inspects the ruleset with `nft`.

mod common;

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const RANGES: &str = "ranges:\n  - name: fh\n    ports: 3224-3324\n";

fn nft(args: &[&str]) -> String {
    let out = Command::new("nft")
        .args(args)
        .output()
        .expect("running nft (nftables)");
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Tables of any exporter instance (or of a version before per-instance
/// names).
fn our_tables() -> usize {
    nft(&["list", "tables"])
        .lines()
        .filter(|l| l.trim().starts_with("table inet portrange_exporter"))
        .count()
}

fn series(m: &Metrics, name: &str, protocol: &str, state: &str) -> f64 {
    m.value(&format!(
        r#"{name}{{range="fh",protocol="{protocol}",port_state="{state}"}}"#
    ))
}

fn send_udp(to: &str, n: usize, payload: &[u8]) {
    let bind = if to.starts_with('[') {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    };
    let s = UdpSocket::bind(bind).unwrap();
    for _ in 0..n {
        s.send_to(payload, to).unwrap();
    }
}

/// Starts the exporter with the collector on `config` and waits for a
/// first collection (the table is installed before it).
fn start(config: &std::path::Path) -> Exporter {
    let e = Exporter::start(&[
        "--collector.traffic",
        "--config.file",
        config.to_str().unwrap(),
    ]);
    let m = e.metrics();
    assert_eq!(
        m.value(r#"portrange_scrape_collector_success{collector="traffic"}"#),
        1.0,
        "{}",
        e.stderr()
    );
    e
}

#[test]
fn exact_counts_listening_and_closed_over_ipv4_and_ipv6() {
    if !enter_netns("exact_counts_listening_and_closed_over_ipv4_and_ipv6") {
        return;
    }
    let cfg = config_file("traffic-exact", RANGES);
    let e = start(&cfg);
    // A dual-stack listener on 3224; 3300 is closed.
    let listener = UdpSocket::bind("[::]:3224").unwrap();
    send_udp("127.0.0.1:3224", 50, b"0123456789");
    send_udp("127.0.0.1:3300", 30, b"0123456789");
    send_udp("[::1]:3224", 20, b"0123456789");
    send_udp("[::1]:3300", 6, b"0123456789");
    let m = e.metrics();
    let p = "portrange_received_packets_total";
    assert_eq!(series(&m, p, "udp", "listening"), 70.0);
    assert_eq!(series(&m, p, "udp", "closed"), 36.0);
    // IP length: IPv4 20 + UDP 8 + 10, IPv6 40 + 8 + 10.
    let b = "portrange_received_bytes_total";
    assert_eq!(
        series(&m, b, "udp", "listening"),
        (50 * 38 + 20 * 58) as f64
    );
    assert_eq!(series(&m, b, "udp", "closed"), (30 * 38 + 6 * 58) as f64);
    assert_eq!(series(&m, p, "tcp", "closed"), 0.0);
    promtool_check_metrics(&e.raw_metrics());
    // The busiest closed ports, in the status document and in check.
    let st = status_json(ADDR);
    let udp = st["traffic"]["ranges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["protocol"] == "udp")
        .unwrap()
        .clone();
    assert_eq!(udp["probed"][0]["port"], 3300);
    assert_eq!(udp["probed"][0]["packets"], 36);
    assert_eq!(udp["probed_ports"], 1);
    let (_, out) = check(&[
        "--collector.traffic",
        "--config.file",
        cfg.to_str().unwrap(),
    ]);
    assert!(
        out.contains(
            "36 packets to closed ports of fh (udp) in the last minute, 1 ports; busiest: 3300 (36)"
        ),
        "{out}"
    );
    drop(listener);
    assert!(e.terminate().success());
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn tcp_attempts_and_a_real_nmap_syn_scan_are_counted_exactly() {
    if !enter_netns("tcp_attempts_and_a_real_nmap_syn_scan_are_counted_exactly") {
        return;
    }
    let cfg = config_file("traffic-nmap", RANGES);
    let e = start(&cfg);
    let listener = TcpListener::bind("127.0.0.1:3224").unwrap();
    let st = Command::new("nmap")
        .args([
            "-sS",
            "-n",
            "-Pn",
            "--packet-trace",
            "-p",
            "3224-3324",
            "127.0.0.1",
        ])
        .output()
        .expect("running nmap");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let scan = String::from_utf8_lossy(&st.stdout);
    assert!(scan.contains("3224/tcp open"), "{scan}");
    // nmap may probe a port twice (a retransmission): its own trace of
    // the SYNs it sent is the oracle.
    let syns = |port_ok: &dyn Fn(u16) -> bool| {
        scan.lines()
            .filter(|l| l.starts_with("SENT") && l.contains(" S "))
            .filter_map(|l| l.split(" > 127.0.0.1:").nth(1))
            .filter_map(|r| r.split(' ').next()?.parse::<u16>().ok())
            .filter(|&p| port_ok(p))
            .count() as f64
    };
    let open = syns(&|p| p == 3224);
    let closed = syns(&|p| (3225..=3324).contains(&p));
    assert!(closed >= 100.0, "{scan}");
    // One refused IPv6 connection: one more attempt to a closed port.
    assert!(TcpStream::connect("[::1]:3301").is_err());
    let m = e.metrics();
    let a = "portrange_connection_attempts_total";
    assert_eq!(series(&m, a, "tcp", "listening"), open, "{scan}");
    assert_eq!(series(&m, a, "tcp", "closed"), closed + 1.0, "{scan}");
    assert_eq!(
        series(&m, "portrange_received_packets_total", "tcp", "closed"),
        closed + 1.0
    );
    // The scanner's RST after the open port's SYN/ACK reaches the
    // listener's request socket: listening, not closed.
    assert_eq!(
        series(&m, "portrange_received_packets_total", "tcp", "listening"),
        2.0 * open
    );
    // A real connection, handshake and data, is all listening.
    let mut client = TcpStream::connect("127.0.0.1:3224").unwrap();
    let (mut server, _) = listener.accept().unwrap();
    std::io::Write::write_all(&mut client, b"hello").unwrap();
    let mut buf = [0u8; 5];
    std::io::Read::read_exact(&mut server, &mut buf).unwrap();
    drop((client, server));
    let m = e.metrics();
    assert_eq!(
        series(&m, "portrange_received_packets_total", "tcp", "closed"),
        closed + 1.0,
        "a connection to a listener never counts as closed"
    );
    assert_eq!(series(&m, a, "tcp", "listening"), open + 1.0);
    let st = status_json(ADDR);
    let tcp = st["traffic"]["ranges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["protocol"] == "tcp")
        .unwrap()
        .clone();
    assert_eq!(tcp["probed_ports"], 100, "every closed port of the range");
    assert_eq!(
        tcp["probed"].as_array().unwrap().len(),
        10,
        "the busiest few"
    );
    let busiest = tcp["probed"][0]["packets"].as_u64().unwrap();
    assert!(busiest >= 2, "{tcp}");
    drop(listener);
    assert!(e.terminate().success());
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn sigterm_and_sigkill_leave_the_ruleset_exactly_as_before() {
    if !enter_netns("sigterm_and_sigkill_leave_the_ruleset_exactly_as_before") {
        return;
    }
    // Someone else's table, which we must never touch.
    nft(&["add", "table", "inet", "other"]);
    nft(&[
        "add", "chain", "inet", "other", "input", "{", "type", "filter", "hook", "input",
        "priority", "0", ";", "policy", "accept", ";", "}",
    ]);
    nft(&[
        "add", "rule", "inet", "other", "input", "udp", "dport", "3300", "drop",
    ]);
    let before = nft(&["list", "ruleset"]);
    let cfg = config_file("traffic-sigterm", RANGES);
    let e = start(&cfg);
    assert_eq!(our_tables(), 1);
    // Counted before the other table's drop (hook priority).
    send_udp("127.0.0.1:3300", 4, b"x");
    let m = e.metrics();
    assert_eq!(
        series(&m, "portrange_received_packets_total", "udp", "closed"),
        4.0
    );
    assert!(e.terminate().success());
    assert_eq!(
        nft(&["list", "ruleset"]),
        before,
        "SIGTERM restores the ruleset"
    );

    // kill -9: the kernel removes the table with the exporter's socket.
    let mut e = start(&cfg);
    assert_eq!(our_tables(), 1);
    e.child.kill().unwrap();
    e.child.wait().unwrap();
    assert_eq!(nft(&["list", "ruleset"]), before, "SIGKILL leaves nothing");
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn sigkill_leaves_nothing_and_tables_an_older_version_left_are_replaced() {
    if !enter_netns("sigkill_leaves_nothing_and_tables_an_older_version_left_are_replaced") {
        return;
    }
    // What a crashed 0.3 left (`inet portrange_exporter`), and a stale
    // table of this instance's name without an owner.
    for table in ["portrange_exporter", "portrange_exporter_10224"] {
        nft(&["add", "table", "inet", table]);
        nft(&[
            "add",
            "chain",
            "inet",
            table,
            "prerouting",
            "{",
            "type",
            "filter",
            "hook",
            "prerouting",
            "priority",
            "-350",
            ";",
            "}",
        ]);
    }
    let cfg = config_file("traffic-sigkill", RANGES);
    let mut e = start(&cfg);
    assert_eq!(our_tables(), 1, "{}", nft(&["list", "tables"]));
    let listing = nft(&["list", "table", "inet", "portrange_exporter_10224"]);
    assert!(listing.contains("flags owner"), "{listing}");
    send_udp("127.0.0.1:3301", 3, b"x");
    assert_eq!(
        series(
            &e.metrics(),
            "portrange_received_packets_total",
            "udp",
            "closed"
        ),
        3.0
    );
    e.child.kill().unwrap();
    e.child.wait().unwrap();
    assert_eq!(nft(&["list", "ruleset"]), "", "SIGKILL leaves nothing");
    let _ = std::fs::remove_file(cfg);
}

/// Starts an exporter with the collector on `config`, listening on
/// `addr` only, and waits for it to answer.
fn start_on(addr: &str, config: &std::path::Path) -> std::process::Child {
    let child = Command::new(EXPORTER)
        .args(["--web.listen-address", addr, "--collector.traffic"])
        .args(["--config.file", config.to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(addr, "/-/healthy", &[]).is_err() {
        assert!(Instant::now() < deadline, "no answer on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn two_exporters_in_one_namespace_keep_their_own_tables_and_both_count() {
    if !enter_netns("two_exporters_in_one_namespace_keep_their_own_tables_and_both_count") {
        return;
    }
    let a_cfg = config_file("traffic-two-a", RANGES);
    let b_cfg = config_file(
        "traffic-two-b",
        "ranges:\n  - name: other\n    ports: 4000-4010\n    protocols: [udp]\n",
    );
    let a = start(&a_cfg);
    let mut b = start_on("127.0.0.1:10225", &b_cfg);
    assert_eq!(our_tables(), 2, "{}", nft(&["list", "tables"]));
    send_udp("127.0.0.1:3300", 5, b"x");
    send_udp("127.0.0.1:4005", 7, b"x");
    let m = a.metrics();
    assert_eq!(
        m.value(r#"portrange_scrape_collector_success{collector="traffic"}"#),
        1.0
    );
    assert_eq!(
        series(&m, "portrange_received_packets_total", "udp", "closed"),
        5.0
    );
    let bm = Metrics::parse(&get("127.0.0.1:10225", "/metrics", &[]).unwrap().text());
    assert_eq!(
        bm.value(
            r#"portrange_received_packets_total{range="other",protocol="udp",port_state="closed"}"#
        ),
        7.0
    );
    // check reads the table of the exporter on its --web.listen-address
    // port (the default, 10224: exporter a's).
    let (_, out) = check(&[
        "--collector.traffic",
        "--config.file",
        a_cfg.to_str().unwrap(),
    ]);
    assert!(
        out.contains("5 packets to closed ports of fh (udp)"),
        "{out}"
    );
    b.kill().unwrap();
    b.wait().unwrap();
    assert_eq!(our_tables(), 1);
    send_udp("127.0.0.1:3301", 1, b"x");
    assert_eq!(
        series(
            &a.metrics(),
            "portrange_received_packets_total",
            "udp",
            "closed"
        ),
        6.0
    );
    assert!(a.terminate().success());
    assert_eq!(nft(&["list", "ruleset"]), "");
    let _ = std::fs::remove_file(a_cfg);
    let _ = std::fs::remove_file(b_cfg);
}

#[test]
fn six_hundred_single_ports_are_installed_and_counted_exactly() {
    if !enter_netns("six_hundred_single_ports_are_installed_and_counted_exactly") {
        return;
    }
    // A list of SIP/RTP ports: 20000, 20002, ... 21198.
    let ports: Vec<String> = (0..600).map(|i| (20000 + 2 * i).to_string()).collect();
    let cfg = config_file(
        "traffic-600",
        &format!(
            "ranges:\n  - name: sip\n    ports: [{}]\n    protocols: [udp]\n",
            ports.join(", ")
        ),
    );
    let e = start(&cfg);
    // Every port from 19990 to 21210: 600 in the range, 621 between.
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for p in 19990..=21210u16 {
        s.send_to(b"x", ("127.0.0.1", p)).unwrap();
    }
    let m = e.metrics();
    assert_eq!(
        m.value(
            r#"portrange_received_packets_total{range="sip",protocol="udp",port_state="closed"}"#
        ),
        600.0,
        "{}",
        e.stderr()
    );
    assert!(!e.stderr().contains("Message too long"), "{}", e.stderr());
    assert!(e.terminate().success());
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn hostile_range_names_are_installed_and_counted_apart() {
    if !enter_netns("hostile_range_names_are_installed_and_counted_apart") {
        return;
    }
    // `a` and `a_attempts` made the same counter name
    // (tcp_a_attempts_closed) in 0.3, and a name of 250 characters is
    // longer than the kernel takes for a set.
    let long = "z".repeat(250);
    let cfg = config_file(
        "traffic-hostile",
        &format!(
            "ranges:\n  - name: a\n    ports: 3000\n  - name: a_attempts\n    ports: 3001\n  - name: {long}\n    ports: 3002\n"
        ),
    );
    let e = start(&cfg);
    assert!(TcpStream::connect("127.0.0.1:3000").is_err());
    for _ in 0..2 {
        assert!(TcpStream::connect("127.0.0.1:3001").is_err());
    }
    send_udp("127.0.0.1:3002", 4, b"x");
    let m = e.metrics();
    let closed = |range: &str, protocol: &str| {
        m.value(&format!(
            r#"portrange_connection_attempts_total{{range="{range}",protocol="{protocol}",port_state="closed"}}"#
        ))
    };
    assert_eq!(closed("a", "tcp"), 1.0);
    assert_eq!(closed("a_attempts", "tcp"), 2.0);
    assert_eq!(
        m.value(&format!(
            r#"portrange_received_packets_total{{range="{long}",protocol="udp",port_state="closed"}}"#
        )),
        4.0
    );
    assert!(e.terminate().success());
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn a_reload_that_changes_a_range_changes_what_is_counted_and_counters_stay_monotonic() {
    if !enter_netns(
        "a_reload_that_changes_a_range_changes_what_is_counted_and_counters_stay_monotonic",
    ) {
        return;
    }
    let cfg = config_file(
        "traffic-reload",
        "ranges:\n  - name: fh\n    ports: 3224-3230\n    protocols: [udp]\n",
    );
    let e = start(&cfg);
    send_udp("127.0.0.1:3225", 3, b"x");
    send_udp("127.0.0.1:3300", 5, b"x"); // outside the range for now
    let p = "portrange_received_packets_total";
    assert_eq!(series(&e.metrics(), p, "udp", "closed"), 3.0);
    std::fs::write(
        &cfg,
        "ranges:\n  - name: fh\n    ports: 3224-3324\n    protocols: [udp]\n",
    )
    .unwrap();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(e.child.id() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while e
        .metrics()
        .value(r#"portrange_ports{range="fh",protocol="udp"}"#)
        != 101.0
    {
        assert!(Instant::now() < deadline, "no reload: {}", e.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    send_udp("127.0.0.1:3300", 5, b"x");
    let m = e.metrics();
    assert_eq!(
        series(&m, p, "udp", "closed"),
        8.0,
        "carried over the rebuild"
    );
    assert_eq!(our_tables(), 1);
    assert!(e.terminate().success());
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn without_cap_net_admin_the_collector_reports_0_and_everything_else_works() {
    if !enter_netns("without_cap_net_admin_the_collector_reports_0_and_everything_else_works") {
        return;
    }
    let before = nft(&["list", "ruleset"]);
    let e = Exporter::start_as(&["--collector.traffic"], Some(&DROP_PRIVILEGES));
    let _ = e.metrics();
    let m = e.metrics();
    assert_eq!(
        m.value(r#"portrange_scrape_collector_success{collector="traffic"}"#),
        0.0
    );
    assert_eq!(
        m.value(r#"portrange_scrape_collector_success{collector="ranges"}"#),
        1.0
    );
    assert_eq!(m.value("portrange_up"), 1.0);
    assert_eq!(
        m.value(r#"portrange_ports{range="framehawk",protocol="udp"}"#),
        101.0
    );
    assert!(m.named("portrange_received_packets_total").is_empty());
    let st = status_json(ADDR);
    assert!(st["traffic"].is_null() && st["up"] == true, "{st}");
    let log = e.stderr();
    assert_eq!(
        log.matches("CAP_NET_ADMIN").count(),
        1,
        "one log line names the capability:\n{log}"
    );
    assert!(e.terminate().success());
    assert_eq!(nft(&["list", "ruleset"]), before);
}
