//! The `ephemeral` collector against the kernel: each test runs in a
//! private network namespace whose dynamic range is 40000-40199, where
//! client processes (tests/ephemeral_client.py) take ports with connect()
//! and bind(0) until the kernel refuses; the exporter's metrics, `check`
//! and /api/v1/status must say exactly that. With `--collector.netns`
//! (`every_namespace_has_its_own_dynamic_range_and_headroom`, in a private
//! host: network, mount and pid namespaces), two `ip netns` with ranges of
//! their own each get their own view. Root only (CI runs them).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A client holding the ports it took until dropped.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Per spec: how many it got, and the errno name of the call that
    /// failed (`ok` when none did).
    results: Vec<(u32, String)>,
}

impl Client {
    fn start(name: &str, specs: &[&str]) -> Client {
        Client::start_in(&[], name, specs)
    }

    /// Like `start`, run through `prefix` (e.g. `ip netns exec NAME`).
    fn start_in(prefix: &[&str], name: &str, specs: &[&str]) -> Client {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ephemeral_client.py");
        let (program, before) = match prefix.split_first() {
            Some((p, rest)) => (*p, rest),
            None => ("python3", &[][..]),
        };
        let mut cmd = Command::new(program);
        if !prefix.is_empty() {
            cmd.args(before).arg("python3");
        }
        let mut child = cmd
            .arg(script)
            .args(["--name", name])
            .args(specs)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting python3 tests/ephemeral_client.py");
        let stdin = child.stdin.take();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some("ready"), "{name} {specs:?}: {line:?}");
        let results = words
            .map(|w| {
                let (n, e) = w.split_once(':').unwrap();
                (n.parse().unwrap(), e.to_string())
            })
            .collect();
        Client {
            child,
            stdin,
            results,
        }
    }

    /// Closes its sockets (the client closes first: TIME_WAIT is ours).
    fn stop(mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sysctl(name: &str, value: &str) {
    std::fs::write(format!("/proc/sys/net/ipv4/{name}"), value)
        .unwrap_or_else(|e| panic!("writing {name} in the test's namespace: {e}"));
}

/// A private namespace with the dynamic range 40000-40199.
fn namespace(test: &str) -> bool {
    if !enter_netns(test) {
        return false;
    }
    sysctl("ip_local_port_range", "40000 40199");
    true
}

fn series(m: &Metrics, name: &str) -> Vec<(String, f64)> {
    m.named(name)
}

#[test]
fn one_destination_exhausted_is_critical_naming_it_and_its_holder() {
    if !namespace("one_destination_exhausted_is_critical_naming_it_and_its_holder") {
        return;
    }
    let server = Client::start(
        "backend",
        &["listen:127.0.0.2:5432", "listen:127.0.0.3:8080"],
    );
    let e = Exporter::start(&[]);
    // 30 connections toward a second destination first: it is the busiest.
    let curl = Client::start("curl", &["tcp:127.0.0.3:8080:30"]);
    assert_eq!(curl.results, vec![(30, "ok".to_string())]);
    let m = e.metrics();
    assert_eq!(
        m.value(r#"portrange_ephemeral_ports{protocol="tcp"}"#),
        200.0
    );
    assert_eq!(
        m.value(r#"portrange_ephemeral_ports{protocol="udp"}"#),
        200.0
    );
    assert_eq!(
        m.value(r#"portrange_ephemeral_ports_free_min{protocol="tcp"}"#),
        170.0,
        "{}",
        m.dump("portrange_ephemeral")
    );
    // Then one destination until the kernel refuses.
    let pool = Client::start("pgbouncer", &["tcp:127.0.0.2:5432:max"]);
    assert_eq!(
        pool.results,
        vec![(200, "EADDRNOTAVAIL".to_string())],
        "every port of the range, toward one destination, then EADDRNOTAVAIL"
    );
    let m = e.metrics();
    assert_eq!(
        m.value(r#"portrange_ephemeral_ports{protocol="tcp"}"#),
        200.0
    );
    assert_eq!(
        m.value(r#"portrange_ephemeral_ports_in_use{protocol="tcp"}"#),
        200.0
    );
    assert_eq!(
        m.value(r#"portrange_ephemeral_ports_free_min{protocol="tcp"}"#),
        0.0,
        "the headroom follows the busiest destination"
    );
    assert_eq!(
        m.value(r#"portrange_ephemeral_holders{protocol="tcp",process="pgbouncer",user="root"}"#),
        200.0
    );
    assert_eq!(
        m.value(r#"portrange_ephemeral_holders{protocol="tcp",process="curl",user="root"}"#),
        30.0
    );
    assert!(m.value(r#"portrange_ephemeral_sockets{protocol="tcp",state="established"}"#) >= 230.0);
    assert_eq!(
        m.value(r#"portrange_scrape_collector_success{collector="ephemeral"}"#),
        1.0
    );
    let (code, out) = check(&[]);
    let first = out.lines().next().unwrap();
    assert_eq!(code, 2, "{out}");
    assert!(
        first.contains(
            "ephemeral tcp: 0 ports left toward 127.0.0.2:5432, held by pgbouncer (user root, 200)"
        ),
        "{out}"
    );
    assert!(first.contains("ephemeral_tcp_free_min=0;"), "{first}");
    assert!(out.contains("toward 127.0.0.3:8080: 30 ports"), "{out}");
    // The status document names the busiest destinations, the metrics never.
    let doc = status_json(&e.addr);
    let tcp = doc["ephemeral"]["views"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["protocol"] == "tcp")
        .unwrap()
        .clone();
    assert_eq!(tcp["free_min"], 0);
    assert_eq!(tcp["destinations"][0]["address"], "127.0.0.2");
    assert_eq!(tcp["destinations"][0]["port"], 5432);
    assert_eq!(tcp["destinations"][0]["holder"]["process"], "pgbouncer");
    assert_eq!(tcp["destinations"][1]["port"], 8080);
    assert_eq!(tcp["holders"][0]["process"], "pgbouncer");
    assert!(
        !e.raw_metrics().contains("127.0.0."),
        "no destination label"
    );

    // The pool closes first (the backend closes its ends in turn): 200
    // TIME_WAIT sockets toward the same destination, which no process
    // holds and which still block it.
    pool.stop();
    // Counted from one status document, toward the pool's destination: the
    // test's own scrapes take ports of the same 200 and may leave TIME_WAIT
    // toward the exporter, so the range-wide TIME_WAIT count can exceed the
    // pool's (seen in CI with other tests running).
    let tcp_view = |doc: &serde_json::Value| {
        doc["ephemeral"]["views"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["protocol"] == "tcp")
            .unwrap()
            .clone()
    };
    let toward_pool = |v: &serde_json::Value| {
        let d = &v["destinations"][0];
        if d["address"] == "127.0.0.2" && d["port"] == 5432 {
            d["ports"].as_u64().unwrap()
        } else {
            0
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let tcp = loop {
        let v = tcp_view(&status_json(&e.addr));
        if v["sockets"]["time_wait"].as_u64() >= Some(200) && toward_pool(&v) >= 200
            || Instant::now() > deadline
        {
            break v;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Nearly every one: a connection the backend had not accepted yet
    // when the pool closed may end without TIME_WAIT (seen: 2 of 200).
    let time_wait = toward_pool(&tcp);
    assert!((190..=200).contains(&time_wait), "{tcp:#}");
    assert!(
        tcp["sockets"]["time_wait"].as_u64().unwrap() >= time_wait,
        "{tcp:#}"
    );
    assert_eq!(
        tcp["free_min"].as_u64().unwrap(),
        200 - time_wait,
        "TIME_WAIT still holds the 4-tuples: {tcp:#}"
    );
    let m = e.metrics();
    assert!(
        m.value(r#"portrange_ephemeral_sockets{protocol="tcp",state="time_wait"}"#)
            >= time_wait as f64,
        "{}",
        m.dump("portrange_ephemeral")
    );
    let holders = series(&m, "portrange_ephemeral_holders");
    assert!(
        holders.iter().all(|(l, _)| !l.contains("pgbouncer")),
        "TIME_WAIT has no owner: {holders:?}"
    );
    assert_eq!(
        m.value(r#"portrange_ephemeral_holders{protocol="tcp",process="curl",user="root"}"#),
        30.0
    );
    // CRITICAL below 10 ports left (5% of 200, the default), WARNING below 40: the
    // few connections that ended without TIME_WAIT decide which.
    let (code, out) = check(&[]);
    assert_eq!(code, if 200 - time_wait < 10 { 2 } else { 1 }, "{out}");
    assert!(
        out.lines().next().unwrap().contains(&format!(
            "ephemeral tcp: {} ports left toward 127.0.0.2:5432",
            200 - time_wait
        )),
        "{out}"
    );
    curl.stop();
    server.stop();
    e.terminate();
}

#[test]
fn reserved_ports_are_left_out_and_udp_autobinds_exhaust_for_everyone() {
    if !namespace("reserved_ports_are_left_out_and_udp_autobinds_exhaust_for_everyone") {
        return;
    }
    sysctl("ip_local_reserved_ports", "40100-40109");
    let e = Exporter::start(&[]);
    let m = e.metrics();
    assert_eq!(
        m.value(r#"portrange_ephemeral_ports{protocol="udp"}"#),
        190.0
    );
    assert_eq!(
        m.value(r#"portrange_ephemeral_ports{protocol="tcp"}"#),
        190.0
    );
    // A service bound on a reserved port is not counted.
    let reserved = hold("named", &["udp:127.0.0.1:40105"]);
    let dns = Client::start("resolver", &["udp:127.0.0.1:max"]);
    assert_eq!(dns.results.len(), 1);
    assert_eq!(dns.results[0].0, 190, "{:?}", dns.results);
    let m = e.metrics();
    assert_eq!(
        m.value(r#"portrange_ephemeral_ports_in_use{protocol="udp"}"#),
        190.0
    );
    assert_eq!(
        m.value(r#"portrange_ephemeral_ports_free_min{protocol="udp"}"#),
        0.0
    );
    assert_eq!(
        m.value(r#"portrange_ephemeral_sockets{protocol="udp",state="unconn"}"#),
        190.0,
        "the socket on the reserved port is left out"
    );
    assert_eq!(
        m.value(r#"portrange_ephemeral_holders{protocol="udp",process="resolver",user="root"}"#),
        190.0
    );
    // Another process gets no UDP port either: gone for everyone.
    let late = Client::start("late", &["udp:127.0.0.1:1"]);
    assert_eq!(late.results[0].0, 0, "{:?}", late.results);
    let (code, out) = check(&[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.lines()
            .next()
            .unwrap()
            .contains("ephemeral udp: 0 ports left of 190, held by resolver (user root, 190)"),
        "{out}"
    );
    late.stop();
    dns.stop();
    reserved.stop();
    e.terminate();
}

#[test]
fn series_stay_bounded_whatever_the_destinations_and_owners() {
    if !namespace("series_stay_bounded_whatever_the_destinations_and_owners") {
        return;
    }
    let server = Client::start("backend", &["listen:0.0.0.0:7000"]);
    let e = Exporter::start(&["--collector.ephemeral.top-holders", "3"]);
    let count = |m: &Metrics| {
        m.series
            .keys()
            .filter(|k| k.starts_with("portrange_ephemeral_") && !k.contains("overlap"))
            .count()
    };
    let before = count(&e.metrics());
    // 12 owners, each toward 5 destinations of its own: 60 destinations.
    let clients: Vec<Client> = (0..12)
        .map(|i| {
            let specs: Vec<String> = (0..5)
                .map(|d| format!("tcp:127.0.{}.{}:7000:2", i + 1, d + 2))
                .collect();
            let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
            Client::start(&format!("client{i:02}"), &specs)
        })
        .collect();
    let m = e.metrics();
    let holders = series(&m, "portrange_ephemeral_holders");
    let tcp: Vec<&(String, f64)> = holders
        .iter()
        .filter(|(l, _)| l.contains(r#"protocol="tcp""#))
        .collect();
    assert_eq!(tcp.len(), 4, "the top 3 and other: {tcp:?}");
    let other = tcp.iter().find(|(l, _)| l.contains(r#"process="other""#));
    // Nine clients of 10, and the test's own scrape connection.
    let other = other.unwrap().1;
    assert!((90.0..=91.0).contains(&other), "{tcp:?}");
    // Every series but the holders' existed before the load.
    let after = count(&m);
    assert!(after <= before + 4, "{before} -> {after}");
    assert!(!e.raw_metrics().contains("127.0."), "no destination label");
    let doc = status_json(&e.addr);
    let tcp = doc["ephemeral"]["views"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["protocol"] == "tcp")
        .unwrap()
        .clone();
    assert_eq!(tcp["destinations"].as_array().unwrap().len(), 5);
    assert!(tcp["destinations_total"].as_u64().unwrap() >= 60);
    drop(clients);
    server.stop();
    e.terminate();
}

#[test]
fn the_collector_can_be_turned_off() {
    if !namespace("the_collector_can_be_turned_off") {
        return;
    }
    let e = Exporter::start(&["--no-collector.ephemeral"]);
    let t = e.raw_metrics();
    assert!(!t.contains("portrange_ephemeral_ports"), "{t}");
    assert!(!t.contains(r#"collector="ephemeral""#), "{t}");
    e.terminate();
    let mut cmd = Command::new(EXPORTER);
    let out = cmd
        .arg("check")
        .env("PORTRANGE_EXPORTER_COLLECTOR_EPHEMERAL", "false")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("ephemeral tcp"), "{text}");
}

/// The value of `family{protocol,netns}` whatever the label order; `None`
/// when the series is absent.
fn per_netns(m: &Metrics, family: &str, protocol: &str, netns: &str) -> Option<f64> {
    let want = [
        format!("protocol=\"{protocol}\""),
        format!("netns=\"{netns}\""),
    ];
    let found: Vec<f64> = m
        .named(family)
        .into_iter()
        .filter(|(l, _)| want.iter().all(|w| l.contains(w.as_str())))
        .map(|(_, v)| v)
        .collect();
    assert!(found.len() <= 1, "{family} {want:?}: {found:?}");
    found.first().copied()
}

/// TCP sockets `ss` sees with a local port in `lo..=hi` in `ns` (`None`:
/// the test's own namespace), and how many distinct local ports they use
/// (connect() without bind() may give one port to two destinations).
fn ss_tcp(ns: Option<&str>, lo: u16, hi: u16) -> (usize, usize) {
    let mut cmd = Command::new("ss");
    if let Some(ns) = ns {
        cmd.args(["-N", ns]);
    }
    let out = cmd
        .args(["-Htan", &format!("sport >= :{lo} and sport <= :{hi}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let ports: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3)?.rsplit(':').next())
        .collect();
    (text.lines().count(), ports.len())
}

#[test]
fn every_namespace_has_its_own_dynamic_range_and_headroom() {
    use common::private_host::{PROCFS, in_private_host};
    in_private_host(
        "every_namespace_has_its_own_dynamic_range_and_headroom",
        |h| {
            // host: 40000-40199, 60 connections toward one destination.
            sysctl("ip_local_port_range", "40000 40199");
            let host_backend = Client::start("backend", &["listen:127.0.0.1:5432"]);
            let host_pool = Client::start("pgbouncer", &["tcp:127.0.0.1:5432:60"]);
            assert_eq!(host_pool.results, vec![(60, "ok".to_string())]);
            // alpha: 41000-41009 (10 ports), 4 toward 5432 and 2 toward 8080.
            // beta: 42000-42049 (50 ports), 20 toward 5432 then 3 toward 8080.
            let alpha = h.add("eph-alpha").to_string();
            let beta = h.add("eph-beta").to_string();
            let mut held = Vec::new();
            for (name, range, pool, other) in [
                (
                    "eph-alpha",
                    "41000 41009",
                    "pool-a",
                    ["tcp:127.0.0.1:5432:4", "tcp:127.0.0.1:8080:2"],
                ),
                (
                    "eph-beta",
                    "42000 42049",
                    "pool-b",
                    ["tcp:127.0.0.1:5432:20", "tcp:127.0.0.1:8080:3"],
                ),
            ] {
                let st = Command::new("ip")
                    .args(["netns", "exec", name, "sh", "-c"])
                    .arg(format!(
                        "echo {range} > /proc/sys/net/ipv4/ip_local_port_range"
                    ))
                    .status()
                    .unwrap();
                assert!(st.success(), "setting {name}'s dynamic range");
                let exec = ["ip", "netns", "exec", name];
                held.push(Client::start_in(
                    &exec,
                    "backend",
                    &["listen:127.0.0.1:5432", "listen:127.0.0.1:8080"],
                ));
                let c = Client::start_in(&exec, pool, &other);
                assert!(
                    c.results.iter().all(|(_, e)| e == "ok"),
                    "{name}: {:?}",
                    c.results
                );
                held.push(c);
            }
            let e = Exporter::start(&["--collector.netns", "--path.procfs", PROCFS]);
            // A namespace first seen by a collection is sampled by the next
            // one: wait until both have their views.
            let deadline = Instant::now() + Duration::from_secs(15);
            let m = loop {
                let m = e.metrics();
                if [&alpha, &beta].iter().all(|ns| {
                    per_netns(&m, "portrange_ephemeral_ports_free_min", "tcp", ns).is_some()
                }) {
                    break m;
                }
                assert!(
                    Instant::now() < deadline,
                    "no view of {alpha} and {beta}:\n{}\n{}",
                    m.dump("portrange_ephemeral"),
                    e.stderr()
                );
                std::thread::sleep(Duration::from_millis(300));
            };
            let dump = m.dump("portrange_ephemeral");
            let v = |family: &str, proto: &str, ns: &str| {
                per_netns(&m, family, proto, ns).unwrap_or_else(|| {
                    panic!("no {family}{{protocol={proto},netns={ns}}}:\n{dump}")
                })
            };
            // Each namespace's own size, per protocol.
            for (ns, size) in [(&alpha, 10.0), (&beta, 50.0), (&"host".to_string(), 200.0)] {
                for p in ["tcp", "udp"] {
                    assert_eq!(
                        v("portrange_ephemeral_ports", p, ns),
                        size,
                        "{ns} {p}:\n{dump}"
                    );
                }
            }
            // The BPF walk covers the exporter's own namespace only: in the
            // others a TCP port in use is gone for everyone (counted
            // conservatively), at most what the busiest destination (5432)
            // leaves: 6 and 30. connect() may have shared a port between
            // 5432 and 8080, so the ports in use say how many.
            for (ns, ports, exact) in [(&alpha, 10.0, 6.0), (&beta, 50.0, 30.0)] {
                assert!(
                    dump.contains(&format!(
                        "portrange_ephemeral_counting_info{{protocol=\"tcp\",netns=\"{ns}\",method=\"conservative\"}} 1"
                    )),
                    "{dump}"
                );
                let free = v("portrange_ephemeral_ports_free_min", "tcp", ns);
                assert_eq!(
                    free,
                    ports - v("portrange_ephemeral_ports_in_use", "tcp", ns),
                    "{dump}"
                );
                assert!(free <= exact, "{dump}");
            }
            assert!(
                dump.contains(
                    r#"portrange_ephemeral_counting_info{protocol="tcp",netns="host",method="exact"} 1"#
                ),
                "{dump}"
            );
            // The host's view is its own: the 60 toward 5432 (the scrapes'
            // own connections toward the exporter are fewer).
            assert_eq!(
                v("portrange_ephemeral_ports_free_min", "tcp", "host"),
                140.0,
                "{dump}"
            );
            // In use and sockets as `ss` counts them in each namespace:
            // nothing else runs there, so the numbers are exact.
            let sockets = |ns: &str| -> f64 {
                m.named("portrange_ephemeral_sockets")
                    .iter()
                    .filter(|(l, _)| {
                        l.contains(&format!("netns=\"{ns}\"")) && l.contains("protocol=\"tcp\"")
                    })
                    .map(|(_, v)| v)
                    .sum()
            };
            for (ns, name, lo, hi, n) in [
                (&alpha, "eph-alpha", 41000, 41009, 6.0),
                (&beta, "eph-beta", 42000, 42049, 23.0),
            ] {
                let (ss_sockets, ss_ports) = ss_tcp(Some(name), lo, hi);
                assert_eq!(sockets(ns), ss_sockets as f64, "{name}:\n{dump}");
                assert_eq!(sockets(ns), n, "{name}:\n{dump}");
                assert_eq!(
                    v("portrange_ephemeral_ports_in_use", "tcp", ns),
                    ss_ports as f64,
                    "{name}:\n{dump}"
                );
            }
            assert!(sockets("host") >= 60.0, "{dump}");
            assert!(ss_tcp(None, 40000, 40199).0 >= 60);
            // The holders, each in its namespace only.
            let holders = |ns: &str| -> Vec<(String, f64)> {
                m.named("portrange_ephemeral_holders")
                    .into_iter()
                    .filter(|(l, _)| {
                        l.contains(&format!("netns=\"{ns}\"")) && l.contains("protocol=\"tcp\"")
                    })
                    .collect()
            };
            let ha = holders(&alpha);
            assert!(
                ha.iter()
                    .any(|(l, n)| l.contains("process=\"pool-a\"") && *n == 6.0),
                "{ha:?}"
            );
            assert!(
                !ha.iter()
                    .any(|(l, _)| l.contains("pool-b") || l.contains("pgbouncer")),
                "{ha:?}"
            );
            let hb = holders(&beta);
            assert!(
                hb.iter()
                    .any(|(l, n)| l.contains("process=\"pool-b\"") && *n == 23.0),
                "{hb:?}"
            );
            let hh = holders("host");
            assert!(
                hh.iter()
                    .any(|(l, n)| l.contains("process=\"pgbouncer\"") && *n == 60.0),
                "{hh:?}"
            );
            assert!(
                !hh.iter()
                    .any(|(l, _)| l.contains("pool-a") || l.contains("pool-b")),
                "{hh:?}"
            );
            // /api/v1/status: each namespace's busiest destination and holder.
            let r = get(&e.addr, "/api/v1/status", &[]).unwrap();
            let st: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            let views = st["ephemeral"]["views"].as_array().unwrap();
            for (ns, range, free, ports, holder) in [
                (alpha.as_str(), "41000-41009", 6, 4, "pool-a"),
                (beta.as_str(), "42000-42049", 30, 20, "pool-b"),
            ] {
                let view = views
                    .iter()
                    .find(|x| x["protocol"] == "tcp" && x["netns"] == ns)
                    .unwrap_or_else(|| panic!("no tcp view of {ns}: {views:?}"));
                assert_eq!(view["range"], range, "{view}");
                // Conservative there (see above): what is not in use.
                let (min, in_use) = (view["free_min"].as_u64(), view["in_use"].as_u64());
                assert_eq!(min, in_use.map(|n| view["ports"].as_u64().unwrap() - n));
                assert!(min <= Some(free), "{view}");
                assert_eq!(view["counting"], "conservative", "{view}");
                assert_eq!(view["destinations"][0]["address"], "127.0.0.1", "{view}");
                assert_eq!(view["destinations"][0]["port"], 5432, "{view}");
                assert_eq!(view["destinations"][0]["ports"], ports, "{view}");
                assert_eq!(
                    view["destinations"][0]["holder"]["process"], holder,
                    "{view}"
                );
            }
            drop((held, host_pool, host_backend, e));
        },
    );
}

/// `setpriv` arguments that keep root but take away what loading BPF
/// needs (CAP_BPF, CAP_PERFMON, and CAP_SYS_ADMIN, which also allows it).
const NO_BPF: [&str; 3] = [
    "setpriv",
    "--inh-caps=-bpf,-perfmon,-sys_admin",
    "--bounding-set=-bpf,-perfmon,-sys_admin",
];

/// The host view of `protocol` in the status document.
fn status_view(protocol: &str) -> serde_json::Value {
    status_json(ADDR)["ephemeral"]["views"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["protocol"] == protocol)
        .unwrap()
        .clone()
}

/// How many connections `connect()` really gets toward `dst`:`port` now,
/// until the kernel refuses (EADDRNOTAVAIL; EAGAIN for UDP's autobind).
fn truth(protocol: &str, dst: &str, port: u64) -> u64 {
    let probe = Client::start(
        "probe",
        &[&format!(
            "conn,proto={protocol},dst={dst},port={port},n=max"
        )],
    );
    let (n, errno) = probe.results[0].clone();
    assert!(
        errno == "EADDRNOTAVAIL" || errno == "EAGAIN",
        "the probe toward {dst}:{port} stopped on {errno} after {n}"
    );
    probe.stop();
    u64::from(n)
}

/// One way of taking ports: in a namespace with the range 40000-40199 and
/// a listener on port 9000 (`listeners`), `holder` (a `conn,` spec of
/// tests/ephemeral_client.py) takes ports; the exporter's headroom toward
/// a new destination (`fresh`) and toward its busiest one is read with
/// the BPF walk (exact) and without it (setpriv takes CAP_BPF,
/// CAP_PERFMON and CAP_SYS_ADMIN away: conservative), then `connect()`
/// says the truth toward each. Exact must be within 3 ports of the truth,
/// and neither may ever be above it. Returns (exact view, conservative
/// view, truth toward a new destination, toward the busiest).
fn variant(
    test: &str,
    protocol: &str,
    listeners: &[&str],
    holder: &str,
    held: u32,
    fresh: &str,
) -> Option<(serde_json::Value, serde_json::Value, u64, u64)> {
    if !namespace(test) {
        return None;
    }
    let status = Command::new("ip")
        .args(["-6", "route", "add", "local", "fd00::/64", "dev", "lo"])
        .status()
        .expect("ip (iproute2)");
    assert!(status.success(), "fd00::/64 local on lo");
    let server = Client::start("backend", listeners);
    let bindconn = Client::start("bindconn", &[holder]);
    assert_eq!(
        bindconn.results[0].0, held,
        "{holder}: {:?}",
        bindconn.results
    );

    let e = Exporter::start(&[]);
    let exact = status_view(protocol);
    e.terminate();
    let e = Exporter::start_as(&[], Some(&NO_BPF));
    let conservative = status_view(protocol);
    let log = e.stderr();
    e.terminate();

    // The busiest destination but the exporter (the test's scrape holds a
    // port toward it, and it is gone by the time connect() probes).
    let busiest = exact["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| format!("{}:{}", d["address"].as_str().unwrap(), d["port"]) != ADDR)
        .expect("a destination besides the exporter")
        .clone();
    let toward_new = truth(protocol, fresh, 9000);
    let toward_busiest = truth(
        protocol,
        busiest["address"].as_str().unwrap(),
        busiest["port"].as_u64().unwrap(),
    );
    let ctx = format!(
        "{test}: connect() got {toward_new} toward a new destination, {toward_busiest} toward {}:{}\nexact: {exact:#}\nconservative: {conservative:#}",
        busiest["address"], busiest["port"]
    );
    assert_eq!(exact["counting"], "exact", "{ctx}");
    let (new, toward) = (
        exact["free_new"].as_u64().unwrap(),
        busiest["free"].as_u64().unwrap(),
    );
    assert!(new <= toward_new && toward_new - new <= 3, "{ctx}");
    assert!(
        toward <= toward_busiest && toward_busiest - toward <= 3,
        "{ctx}"
    );
    assert!(exact["free_min"].as_u64().unwrap() <= toward, "{ctx}");
    let method = if protocol == "tcp" {
        "conservative"
    } else {
        "exact"
    };
    assert_eq!(conservative["counting"], method, "{ctx}");
    assert!(
        conservative["free_new"].as_u64().unwrap() <= toward_new,
        "{ctx}"
    );
    assert!(
        conservative["free_min"].as_u64().unwrap() <= toward_busiest,
        "{ctx}"
    );
    let conservative_toward = conservative["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["address"] == busiest["address"] && d["port"] == busiest["port"])
        .map(|d| d["free"].as_u64().unwrap());
    assert!(
        conservative_toward.is_none_or(|f| f <= toward_busiest),
        "{ctx}"
    );
    if protocol == "tcp" {
        assert!(
            log.contains("the ephemeral tcp headroom is counted conservatively")
                && log.contains("CAP_BPF and CAP_PERFMON"),
            "one line says what would make it exact: {log}"
        );
    }
    bindconn.stop();
    server.stop();
    Some((exact, conservative, toward_new, toward_busiest))
}

#[test]
fn headroom_never_exceeds_what_connect_gets() {
    // The measured case: 190 connections, each bind(("127.0.0.1", 0)) then
    // connect() toward a destination of its own; connect() toward a new
    // destination gets the 10 ports left (the exporter said 190).
    let Some((exact, conservative, new, busiest)) = variant(
        "headroom_never_exceeds_what_connect_gets",
        "tcp",
        &["listen:0.0.0.0:9000"],
        "conn,proto=tcp,dst=127.0.1.1,port=9000,n=190,each,bind=127.0.0.1",
        190,
        "127.0.9.1",
    ) else {
        return;
    };
    assert_eq!((new, busiest), (10, 10));
    assert_eq!(exact["free_new"], 10);
    // Every port in use holds one socket: conservatively the same, less
    // the port of the test's own scrape of the status document.
    assert!(
        (8..=10).contains(&conservative["free_new"].as_u64().unwrap()),
        "{conservative:#}"
    );
}

#[test]
fn bind_before_connect_the_metric_and_check_say_how_it_was_counted() {
    if !namespace("bind_before_connect_the_metric_and_check_say_how_it_was_counted") {
        return;
    }
    let server = Client::start("backend", &["listen:0.0.0.0:9000"]);
    let bindconn = Client::start(
        "bindconn",
        &["conn,proto=tcp,dst=127.0.1.1,port=9000,n=190,each,bind=127.0.0.1"],
    );
    for (prefix, method) in [(None, "exact"), (Some(&NO_BPF[..]), "conservative")] {
        // check first, with no scrape holding a port toward an exporter:
        // the same privileges, the same number.
        let mut args = vec![];
        if method == "conservative" {
            args.push("--no-collector.ephemeral.bpf");
        }
        let (code, out) = check(&args);
        assert_eq!(code, 1, "10 of 200 is 5%: WARNING, not yet CRITICAL: {out}");
        let first = out.lines().next().unwrap();
        assert!(
            first.contains("PORTRANGE WARNING - ephemeral tcp: 10 ports left toward 127.0.1."),
            "{out}"
        );
        assert_eq!(
            first.contains("(counted conservatively)"),
            method == "conservative",
            "{out}"
        );
        assert!(
            out.contains(
                "190 no connect() can share, 10 left toward the busiest destination, 10 toward a new one"
            ),
            "{out}"
        );
        let e = Exporter::start_as(&[], prefix);
        let m = e.metrics();
        // The scrape's own connection holds one more port (toward the
        // exporter, or for everyone when counted conservatively).
        let free_min = m.value(r#"portrange_ephemeral_ports_free_min{protocol="tcp"}"#);
        assert!(
            (7.0..=9.0).contains(&free_min),
            "{}",
            m.dump("portrange_ephemeral")
        );
        assert_eq!(
            m.value(&format!(
                r#"portrange_ephemeral_counting_info{{protocol="tcp",method="{method}"}}"#
            )),
            1.0
        );
        assert_eq!(
            m.value(r#"portrange_ephemeral_counting_info{protocol="udp",method="exact"}"#),
            1.0
        );
        e.terminate();
    }
    bindconn.stop();
    server.stop();
}

/// The kernel's BTF (5 MB of type records, which aya parses into about
/// 32 MiB to load the iterator) is read by a loader process the exporter
/// starts and that exits: the exporter's own peak memory stays that of a
/// quiet exporter, while the count is exact. (Loaded in the exporter, its
/// peak was above 40 MiB.)
#[test]
fn the_iterator_is_loaded_outside_the_exporters_memory() {
    if !namespace("the_iterator_is_loaded_outside_the_exporters_memory") {
        return;
    }
    let e = Exporter::start(&[]);
    let m = e.metrics();
    assert_eq!(
        m.value(r#"portrange_ephemeral_counting_info{protocol="tcp",method="exact"}"#),
        1.0,
        "{}",
        m.dump("portrange_ephemeral")
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", e.child.id())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"));
    assert!(
        peak_kib < 24 * 1024,
        "the exporter's peak RSS is {peak_kib} KiB: the BTF was parsed in it"
    );
    e.terminate();
}

#[test]
fn headroom_with_another_bind_address() {
    let Some((_, _, new, _)) = variant(
        "headroom_with_another_bind_address",
        "tcp",
        &["listen:0.0.0.0:9000"],
        "conn,proto=tcp,dst=127.0.1.1,port=9000,n=150,each,bind=127.0.0.2",
        150,
        "127.0.9.1",
    ) else {
        return;
    };
    assert_eq!(new, 50, "a port bind() took is gone whatever its address");
}

#[test]
fn headroom_over_ipv6() {
    let Some((_, _, new, _)) = variant(
        "headroom_over_ipv6",
        "tcp",
        &["listen:[::]:9000"],
        "conn,proto=tcp,dst=fd00::1,port=9000,n=150,each,bind=::1",
        150,
        "fd00::ffff",
    ) else {
        return;
    };
    assert_eq!(new, 50);
}

#[test]
fn headroom_of_connected_udp_sockets() {
    let Some((exact, conservative, new, _)) = variant(
        "headroom_of_connected_udp_sockets",
        "udp",
        &[],
        "conn,proto=udp,dst=127.0.1.1,port=9000,n=150,each",
        150,
        "127.0.9.1",
    ) else {
        return;
    };
    assert_eq!(new, 50, "a UDP port in use is gone for everyone");
    assert_eq!(exact["free_min"], conservative["free_min"]);
}

#[test]
fn headroom_with_so_reuseaddr() {
    let Some((_, _, new, _)) = variant(
        "headroom_with_so_reuseaddr",
        "tcp",
        &["listen:0.0.0.0:9000"],
        "conn,proto=tcp,dst=127.0.1.1,port=9000,n=150,each,bind=127.0.0.1,reuseaddr",
        150,
        "127.0.9.1",
    ) else {
        return;
    };
    assert_eq!(new, 50);
}

#[test]
fn headroom_with_ip_bind_address_no_port() {
    // bind((addr, 0)) with IP_BIND_ADDRESS_NO_PORT leaves the port to
    // connect(): shared, so a new destination still gets the whole range.
    let Some((exact, conservative, new, busiest)) = variant(
        "headroom_with_ip_bind_address_no_port",
        "tcp",
        &["listen:0.0.0.0:9000"],
        "conn,proto=tcp,dst=127.0.1.1,port=9000,n=150,each,bind=127.0.0.1,noport",
        150,
        "127.0.9.1",
    ) else {
        return;
    };
    assert!(new >= 195, "{new}");
    assert!(busiest >= 195, "{busiest}");
    assert!(exact["free_new"].as_u64().unwrap() >= 195, "{exact:#}");
    // connect() spread the 150 over fewer ports (a port is shared across
    // destinations); conservatively each of them is gone for everyone.
    let low = conservative["free_new"].as_u64().unwrap();
    assert!(low < new && low + 50 <= new, "errs low: {conservative:#}");
}

/// `setpriv` arguments that run as nobody with the hardened unit's two
/// capabilities, plus `extra`.
fn as_the_unit(extra: &str) -> Vec<String> {
    let caps = format!("-all,+sys_ptrace,+dac_read_search{extra}");
    vec![
        "setpriv".into(),
        "--reuid=65534".into(),
        "--regid=65534".into(),
        "--clear-groups".into(),
        format!("--inh-caps={caps}"),
        format!("--ambient-caps={caps}"),
        format!("--bounding-set={caps}"),
    ]
}

#[test]
fn cap_bpf_and_cap_perfmon_make_it_exact_without_root() {
    if !namespace("cap_bpf_and_cap_perfmon_make_it_exact_without_root") {
        return;
    }
    let server = Client::start("backend", &["listen:0.0.0.0:9000"]);
    let bindconn = Client::start(
        "bindconn",
        &["conn,proto=tcp,dst=127.0.1.1,port=9000,n=190,each,bind=127.0.0.1"],
    );
    // What the unit alone gives, then with the bpf.conf drop-in's two.
    for (extra, method) in [("", "conservative"), (",+bpf,+perfmon", "exact")] {
        let prefix = as_the_unit(extra);
        let out = Command::new(&prefix[0])
            .args(&prefix[1..])
            .arg(EXPORTER)
            .args(["check", "--output", "json"])
            .output()
            .expect("setpriv (util-linux)");
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let tcp = doc["ephemeral"]["views"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["protocol"] == "tcp")
            .unwrap()
            .clone();
        assert_eq!(tcp["counting"], method, "{extra}: {tcp:#}");
        assert_eq!(tcp["free_new"], 10, "{extra}: {tcp:#}");
        let log = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            log.contains("counted conservatively"),
            method == "conservative",
            "{log}"
        );
    }
    bindconn.stop();
    server.stop();
}
