//! The listener trail against the real binary, in a private network
//! namespace: a listener that lives 3 seconds between two scrapes 15
//! seconds apart is in `GET /api/v1/events` with its command line
//! (secrets redacted), then its vanishing, and in the counter and the log;
//! with the watch turned off it is not; the rate limit under a burst of
//! unexpected listeners and an RTP-like churn of allowed ones.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A python3 that binds UDP `port` on 127.0.0.1, says "ready", keeps it
/// `secs` seconds and exits; `args` end up on its command line only.
fn listen_for(port: u16, secs: f64, args: &[&str]) -> Child {
    let script = format!(
        "import socket,sys,time\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.bind(('127.0.0.1',{port}))\n\
         print('ready',flush=True)\n\
         time.sleep({secs})\n"
    );
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    child
}

fn events(addr: &str, since: u64) -> serde_json::Value {
    let r = get(addr, &format!("/api/v1/events?since={since}"), &[]).expect("GET /api/v1/events");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    serde_json::from_str(&r.text()).expect("events JSON")
}

fn of_port(v: &serde_json::Value, port: u16) -> Vec<serde_json::Value> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["port"] == port)
        .cloned()
        .collect()
}

#[test]
fn a_three_second_listener_between_scrapes_is_in_the_trail() {
    if !enter_netns("a_three_second_listener_between_scrapes_is_in_the_trail") {
        return;
    }
    let exporter = Exporter::start(&[]);
    let first_scrape = Instant::now();
    let m = exporter.metrics();
    let series = r#"portrange_listener_events_total{range="framehawk",protocol="udp",kind="appeared",verdict="unexpected"}"#;
    assert_eq!(m.value(series), 0.0);
    std::thread::sleep(Duration::from_secs(5));
    let mut l = listen_for(
        3230,
        3.0,
        &[
            "--password=hunter2",
            "--api-key",
            "s3kr1t",
            "--port",
            "3230",
        ],
    );
    let pid = l.id();
    l.wait().unwrap();
    // Nothing scrapes until 15 s after the first scrape; the watch runs
    // every 2 s (the default), so the vanishing is recorded within that.
    let give_up = Instant::now() + Duration::from_secs(4);
    let (v, found) = loop {
        let v = events(&exporter.addr, 0);
        let found = of_port(&v, 3230);
        if found.len() >= 2 || Instant::now() > give_up {
            break (v, found);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let kinds: Vec<&str> = found.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    let waited = Instant::now();
    assert_eq!(kinds, vec!["appeared", "vanished"], "{v:#}");
    let appeared = &found[0];
    assert_eq!(appeared["pid"], pid);
    assert_eq!(appeared["ppid"], std::process::id());
    assert_eq!(appeared["protocol"], "udp");
    assert_eq!(appeared["address"], "127.0.0.1");
    assert_eq!(appeared["range"], "framehawk");
    assert_eq!(appeared["verdict"], "unexpected");
    assert_eq!(appeared["user"], "root");
    assert_eq!(appeared["process"], "python3");
    assert_eq!(appeared["exe_gone"], false);
    assert!(
        appeared["exe"].as_str().unwrap().contains("python"),
        "{appeared}"
    );
    assert!(appeared["process_start"].as_str().unwrap().ends_with('Z'));
    let cmdline = appeared["cmdline"].as_str().unwrap();
    assert!(
        cmdline.contains("--password=<redacted> --api-key <redacted> --port 3230"),
        "{cmdline}"
    );
    assert!(!cmdline.contains("hunter2") && !cmdline.contains("s3kr1t"));
    assert!(cmdline.len() <= 256);
    assert_eq!(found[1]["pid"], pid, "the vanishing names the same process");
    assert_eq!(found[1]["cmdline"], appeared["cmdline"]);
    // ?since= follows the trail.
    let seq = appeared["seq"].as_u64().unwrap();
    let after = events(&exporter.addr, seq);
    assert_eq!(of_port(&after, 3230).len(), 1);
    assert_eq!(after["last_seq"], found[1]["seq"]);
    let r = get(&exporter.addr, "/api/v1/events?since=x", &[]).unwrap();
    assert_eq!(r.status, 400);
    assert!(
        waited < first_scrape + Duration::from_secs(15),
        "the test took too long to prove anything"
    );
    std::thread::sleep(
        (first_scrape + Duration::from_secs(15)).saturating_duration_since(Instant::now()),
    );
    let m = exporter.metrics();
    assert_eq!(m.value(series), 1.0);
    assert_eq!(
        m.value(r#"portrange_listener_events_total{range="framehawk",protocol="udp",kind="vanished",verdict="unexpected"}"#),
        1.0
    );
    assert_eq!(m.value("portrange_listener_events_dropped_total"), 0.0);
    let log = exporter.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("msg=\"listener appeared\"") && l.contains("port=3230"))
        .unwrap_or_else(|| panic!("no log line:\n{log}"));
    assert!(
        line.contains("level=warn") && line.contains(&format!("pid={pid}")),
        "{line}"
    );
    // No empty netns="" outside --collector.netns.
    assert!(!line.contains("netns="), "{line}");
    assert!(!log.contains("hunter2") && !log.contains("s3kr1t"));
}

#[test]
fn without_the_watch_only_scrapes_are_compared_and_command_lines_can_be_dropped() {
    if !enter_netns("without_the_watch_only_scrapes_are_compared_and_command_lines_can_be_dropped")
    {
        return;
    }
    let exporter = Exporter::start(&[
        "--collector.trail.interval",
        "off",
        "--collector.trail.no-cmdline",
    ]);
    exporter.metrics();
    let mut l = listen_for(3231, 2.0, &[]);
    l.wait().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    exporter.metrics();
    assert!(
        of_port(&events(&exporter.addr, 0), 3231).is_empty(),
        "no watch pass: a listener between scrapes is missed"
    );
    let mut l = listen_for(3232, 30.0, &[]);
    exporter.metrics();
    let found = of_port(&events(&exporter.addr, 0), 3232);
    l.kill().unwrap();
    l.wait().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["cmdline"], serde_json::Value::Null);
    assert_eq!(found[0]["pid"], l.id());
}

/// 40 unexpected listeners at once (as nobody) while root churns allowed
/// sockets at about 100 a second: the allowed ones are summed, the burst
/// of unexpected ones is recorded up to the limit and the rest counted as
/// dropped.
#[test]
fn churn_and_a_burst_stay_bounded_and_drops_are_counted() {
    if !enter_netns("churn_and_a_burst_stay_bounded_and_drops_are_counted") {
        return;
    }
    let config = config_file(
        "trail-churn",
        "ranges:\n  - name: rtp\n    ports: 20000-29999\n    protocols: [udp]\n    expected:\n      - user: root\n",
    );
    let exporter = Exporter::start(&[
        "--config.file",
        config.to_str().unwrap(),
        "--collector.trail.interval",
        "200ms",
        "--collector.trail.rate",
        "1",
        "--collector.trail.burst",
        "10",
    ]);
    // About 100 sockets a second, each open for 0.2 s, for 6 s.
    let churn = "import socket,time\n\
        live=[]\n\
        end=time.time()+6\n\
        p=20000\n\
        while time.time()<end:\n\
        \x20 s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('127.0.0.1',p)); p+=1\n\
        \x20 live.append(s)\n\
        \x20 if len(live)>20: live.pop(0).close()\n\
        \x20 time.sleep(0.01)\n";
    let mut rtp = Command::new("python3")
        .arg("-c")
        .arg(churn)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let specs: Vec<String> = (0..40)
        .map(|i| format!("udp:127.0.0.1:{}", 28000 + i))
        .collect();
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let intruder = hold_as_nobody("intruder", &specs);
    rtp.wait().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let v = events(&exporter.addr, 0);
    let all = v["events"].as_array().unwrap();
    let m = exporter.metrics();
    let expected_appeared = m.value(
        r#"portrange_listener_events_total{range="rtp",protocol="udp",kind="appeared",verdict="expected"}"#,
    );
    let unexpected_appeared = m.value(
        r#"portrange_listener_events_total{range="rtp",protocol="udp",kind="appeared",verdict="unexpected"}"#,
    );
    let dropped = m.value("portrange_listener_events_dropped_total");
    drop(intruder);
    assert!(
        expected_appeared > 100.0,
        "the churn was seen: {expected_appeared}"
    );
    assert_eq!(unexpected_appeared, 40.0);
    assert!(
        all.len() <= 30,
        "no event storm: {} events\n{v:#}",
        all.len()
    );
    let intruders = all.iter().filter(|e| e["process"] == "intruder").count();
    assert!(intruders >= 5, "the burst is recorded: {intruders}");
    assert!(
        dropped >= 25.0,
        "the rest is dropped and counted: {dropped}"
    );
    assert_eq!(v["dropped"].as_f64().unwrap(), dropped);
    let expected_events: Vec<&serde_json::Value> =
        all.iter().filter(|e| e["verdict"] == "expected").collect();
    assert!(
        expected_events.len() <= 4,
        "allowed churn is summed: {expected_events:#?}"
    );
}
