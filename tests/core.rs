//! The serving core: collections are shared, never multiplied by clients
//! that go away, and never block `/`, `/-/healthy` or a reload; a panic is
//! a 500 and the next scrape recovers; the listener is dual-stack; a socket
//! no process holds is named, judged and counted. The first tests drive
//! the real HTTP server through the library with a fake platform (so the
//! number of collections can be counted exactly); the rest run the real
//! binary in private network namespaces.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::*;
use portrange_exporter::config::{Config, LoadChecks};
use portrange_exporter::platform::{
    Attribution, EphemeralPorts, Filter, Holder, Owner, Platform, Sample, SampleError, Skipped,
    Socket, UserLookup, UserResolver,
};
use portrange_exporter::ranges::{PortSet, Protocol};
use portrange_exporter::service::Service;

/// What the fake platform does, shared with the test.
#[derive(Default)]
struct Script {
    /// Samples taken (one per collection).
    samples: AtomicU64,
    /// While true, a sample waits.
    hold: Mutex<bool>,
    released: Condvar,
    /// The next sample panics.
    panic_next: AtomicBool,
    /// Platforms built (the first, and one after each panic).
    built: AtomicU64,
    /// What each sample says it left out.
    skipped: Mutex<Vec<Skipped>>,
    /// The time each sample was given (its deadline, less the time it
    /// started).
    given: Mutex<Vec<Duration>>,
}

impl Script {
    fn hold(&self, on: bool) {
        *self.hold.lock().unwrap() = on;
        self.released.notify_all();
    }

    fn wait_for_samples(&self, n: u64) {
        let until = Instant::now() + Duration::from_secs(10);
        while self.samples.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < until, "no sample {n} after 10 s");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

struct Fake(Arc<Script>);

impl Platform for Fake {
    fn sample(&mut self, _: &Filter, deadline: Instant) -> Result<Sample, SampleError> {
        self.0
            .given
            .lock()
            .unwrap()
            .push(deadline.saturating_duration_since(Instant::now()));
        let n = self.0.samples.fetch_add(1, Ordering::SeqCst) + 1;
        let mut held = self.0.hold.lock().unwrap();
        while *held {
            held = self.0.released.wait(held).unwrap();
        }
        drop(held);
        if self.0.panic_next.swap(false, Ordering::SeqCst) {
            panic!("injected panic in sample {n}");
        }
        Ok(Sample {
            sockets: vec![Socket {
                protocol: Protocol::Udp,
                state: 7,
                local: "0.0.0.0".parse().unwrap(),
                port: 3224,
                remote: "0.0.0.0".parse().unwrap(),
                remote_port: 0,
                uid: 0,
                inode: n,
                pid_hint: None,
                netns: 0,
            }],
            skipped: self.0.skipped.lock().unwrap().clone(),
            count_only: Default::default(),
            ..Sample::default()
        })
    }

    fn attribute(&mut self, sample: &Sample, _: Instant) -> Attribution {
        Attribution {
            holders: sample
                .sockets
                .iter()
                .map(|_| {
                    Some(Holder::Process(Arc::new(Owner {
                        pid: 42,
                        comm: b"CtxGfx".to_vec(),
                        exe: None,
                        user: None,
                        user_id: None,
                        name_via_link: false,
                    })))
                })
                .collect(),
            ..Attribution::default()
        }
    }

    fn ephemeral_ports(&self) -> Result<EphemeralPorts, String> {
        Ok(EphemeralPorts::default())
    }

    /// As Windows says of its excluded port ranges.
    fn excluded_ports(&self, protocol: Protocol) -> Result<Option<PortSet>, String> {
        Ok(Some(match protocol {
            Protocol::Udp => PortSet::from_intervals(vec![(3300, 3309), (50000, 50059)]),
            Protocol::Tcp => PortSet::default(),
        }))
    }

    fn user_resolver(&self) -> UserResolver {
        Arc::new(|_| Ok(UserLookup::Name("root".into())))
    }

    fn missing_privileges(&self) -> Vec<&'static str> {
        Vec::new()
    }
}

/// A served exporter on 127.0.0.1 with the fake platform.
struct Served {
    addr: String,
    script: Arc<Script>,
    service: Arc<Service>,
    _rt: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.script.hold(false);
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn serve_fake(config_path: Option<std::path::PathBuf>) -> Served {
    let script = Arc::new(Script::default());
    let s = script.clone();
    let config = Config::load_or_builtin(config_path.as_deref(), &LoadChecks::none()).unwrap();
    let service = Service::start(
        config,
        config_path,
        LoadChecks::none(),
        Box::new(move || {
            s.built.fetch_add(1, Ordering::SeqCst);
            Ok(Box::new(Fake(s.clone())) as Box<dyn Platform>)
        }),
        prometheus::Registry::new(),
    )
    .unwrap();
    let (rt, addr, tx) = serve_service(service.clone());
    Served {
        addr,
        script,
        service,
        _rt: rt,
        stop: Some(tx),
    }
}

fn timed_get(addr: &str, path: &str) -> (u16, Duration) {
    let t = Instant::now();
    let r = get(addr, path, &[]).expect("request");
    (r.status, t.elapsed())
}

#[test]
fn concurrent_scrapes_share_one_collection() {
    let s = serve_fake(None);
    s.script.hold(true);
    let addr = s.addr.clone();
    let scrapes: Vec<_> = (0..8)
        .map(|_| {
            let a = addr.clone();
            std::thread::spawn(move || get(&a, "/metrics", &[]).unwrap())
        })
        .collect();
    s.script.wait_for_samples(1);
    // Let every scrape reach the server before the collection ends.
    std::thread::sleep(Duration::from_millis(300));
    s.script.hold(false);
    let bodies: Vec<String> = scrapes
        .into_iter()
        .map(|h| {
            let r = h.join().unwrap();
            assert_eq!(r.status, 200);
            r.text()
        })
        .collect();
    assert_eq!(
        s.script.samples.load(Ordering::SeqCst),
        1,
        "8 concurrent scrapes took one sample"
    );
    assert_eq!(s.service.collections_started(), 1);
    // The handler's own counters (promhttp_*) are per request; the
    // collection's families are the shared part.
    let shared = |b: &String| -> String {
        b.lines()
            .filter(|l| !l.contains("promhttp_"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        bodies.iter().all(|b| shared(b) == shared(&bodies[0])),
        "one shared body"
    );
    // A scrape after it starts a new collection: results are not cached.
    assert_eq!(get(&addr, "/metrics", &[]).unwrap().status, 200);
    assert_eq!(s.script.samples.load(Ordering::SeqCst), 2);
}

#[test]
fn the_status_json_shares_the_scrapes_collection() {
    let s = serve_fake(None);
    s.script.hold(true);
    let addr = s.addr.clone();
    let clients: Vec<_> = ["/metrics", "/api/v1/status", "/api/v1/status", "/metrics"]
        .into_iter()
        .map(|p| {
            let a = addr.clone();
            std::thread::spawn(move || (p, get(&a, p, &[]).unwrap()))
        })
        .collect();
    s.script.wait_for_samples(1);
    std::thread::sleep(Duration::from_millis(300));
    s.script.hold(false);
    for h in clients {
        let (p, r) = h.join().unwrap();
        assert_eq!(r.status, 200, "{p}");
        if p == "/api/v1/status" {
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert_eq!(r.header("cache-control"), Some("no-store"));
            assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            let fh = &v["ranges"][0];
            assert_eq!(
                (&fh["range"], &fh["protocol"]),
                (&"framehawk".into(), &"udp".into())
            );
            assert_eq!(
                fh["used"],
                serde_json::json!([{"port": 3224, "state": "unexpected", "owner": "CtxGfx (pid 42, user root)"}])
            );
            // The platform's excluded ports, clipped to the range.
            assert_eq!(fh["reserved"], serde_json::json!([[3300, 3309]]));
            assert_eq!(
                v["ranges"][1]["reserved"],
                serde_json::json!([]),
                "tcp has none"
            );
            assert_eq!(v["listeners"][0]["pid"], 42);
        }
    }
    assert_eq!(
        s.script.samples.load(Ordering::SeqCst),
        1,
        "two scrapes and two status requests took one sample"
    );
    // Gzip when asked, as for /metrics.
    let z = get(&addr, "/api/v1/status", &[("Accept-Encoding", "gzip")]).unwrap();
    assert_eq!(z.header("content-encoding"), Some("gzip"));
    let mut text = String::new();
    flate2::read::GzDecoder::new(&z.body[..])
        .read_to_string(&mut text)
        .unwrap();
    assert!(text.starts_with("{\"exporter\":"), "{text}");
    // A panicking collection is a 500 that says so, not a page of zeros.
    s.script.panic_next.store(true, Ordering::SeqCst);
    let r = get(&addr, "/api/v1/status", &[]).unwrap();
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("injected panic"), "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(get(&addr, "/api/v1/status", &[]).unwrap().status, 200);
}

/// Issue 17, fault 4: what a collection had to leave out is said, in a
/// metric with a fixed set of stages and in the status document, and only
/// for the collection that left it out.
#[test]
fn what_a_collection_left_out_is_in_the_metrics_and_the_status_document() {
    let s = serve_fake(None);
    let part = "network namespace 4026532301 (blue): udp dump";
    *s.script.skipped.lock().unwrap() =
        vec![Skipped::new(Skipped::SAMPLE, part, "the deadline passed")];
    let metrics = get(&s.addr, "/metrics", &[]).unwrap().text();
    for line in [
        r#"portrange_collection_skipped{stage="sample"} 1"#,
        r#"portrange_collection_skipped{stage="attribution"} 0"#,
        r#"portrange_collection_skipped{stage="users"} 0"#,
        r#"portrange_scrape_collector_success{collector="ranges"} 1"#,
        "portrange_up 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    }
    assert!(
        !metrics.contains("blue"),
        "what was skipped is no label value"
    );
    let status: serde_json::Value =
        serde_json::from_str(&get(&s.addr, "/api/v1/status", &[]).unwrap().text()).unwrap();
    assert_eq!(
        status["skipped"],
        serde_json::json!([{"stage": "sample", "what": part, "reason": "the deadline passed"}]),
        "{status}"
    );
    s.script.skipped.lock().unwrap().clear();
    let metrics = get(&s.addr, "/metrics", &[]).unwrap().text();
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"portrange_collection_skipped{stage="sample"} 0"#),
        "a complete collection skips nothing:\n{metrics}"
    );
}

/// 20 clients send a scrape while a collection runs and hang up at once.
/// A service that shares the running collection runs one; one that starts
/// a collection per request (or queues one per client that went away) runs
/// 21. Counted by the platform's samples, after everything settled.
/// A scraper may ask for an hour (`X-Prometheus-Scrape-Timeout-Seconds`
/// up to 3,600): its collection's deadline is capped by
/// `--web.max-scrape-timeout` (15 s by default, 80% of it for the
/// collection), and a scrape that joins a collection another scrape
/// started never waits past its own time for it: it answers 503 with the
/// reason, never an older result, and the collection goes on for the
/// scrape that started it.
#[test]
fn a_scrape_never_waits_past_its_own_time_for_another_scrapes_collection() {
    let s = serve_fake(None);
    s.script.hold(true);
    let addr = s.addr.clone();
    let long = std::thread::spawn(move || {
        get(
            &addr,
            "/metrics",
            &[("X-Prometheus-Scrape-Timeout-Seconds", "3600")],
        )
        .unwrap()
        .status
    });
    s.script.wait_for_samples(1);
    let given = s.script.given.lock().unwrap()[0];
    assert!(
        given <= Duration::from_secs(12),
        "a collection gets at most 80% of --web.max-scrape-timeout (15 s), not 80% of an hour: {given:?}"
    );
    // The collection stays stuck for 5 s; a scraper with a 2 s timeout
    // joins it meanwhile.
    let script = s.script.clone();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(5));
        script.hold(false);
    });
    let t = Instant::now();
    let r = get(
        &s.addr,
        "/metrics",
        &[("X-Prometheus-Scrape-Timeout-Seconds", "2")],
    )
    .unwrap();
    let took = t.elapsed();
    assert_eq!(
        (r.status, s.script.samples.load(Ordering::SeqCst)),
        (503, 1),
        "after {took:?}: {}",
        r.text()
    );
    assert!(
        took >= Duration::from_millis(1700) && took < Duration::from_millis(4000),
        "answered by 90% of its own 2 s, not at the other scrape's deadline: {took:?}"
    );
    assert!(
        r.text().contains(
            "collection 1, started by an earlier scrape with a later deadline, had not finished"
        ),
        "{}",
        r.text()
    );
    release.join().unwrap();
    assert_eq!(
        long.join().unwrap(),
        200,
        "the collection went on for its own scrape"
    );
    assert_eq!(s.script.samples.load(Ordering::SeqCst), 1);
    // The failed scrape is counted as one.
    let m = get(&s.addr, "/metrics", &[]).unwrap().text();
    assert!(
        m.contains("promhttp_metric_handler_requests_total{code=\"503\"} 1"),
        "{m}"
    );
}

#[test]
fn clients_that_go_away_never_queue_collections() {
    let s = serve_fake(None);
    s.script.hold(true);
    let addr = s.addr.clone();
    let first = std::thread::spawn(move || get(&addr, "/metrics", &[]).unwrap().status);
    s.script.wait_for_samples(1);
    for _ in 0..20 {
        let mut c = TcpStream::connect(&s.addr).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        drop(c);
    }
    // Let every request reach the service before the collection ends.
    std::thread::sleep(Duration::from_millis(300));
    s.script.hold(false);
    assert_eq!(first.join().unwrap(), 200);
    // Settled: no sample for 500 ms (a queued collection would take one).
    let samples = || s.script.samples.load(Ordering::SeqCst);
    let until = Instant::now() + Duration::from_secs(10);
    let mut seen = (samples(), Instant::now());
    while seen.1.elapsed() < Duration::from_millis(500) {
        assert!(Instant::now() < until, "samples never settled");
        std::thread::sleep(Duration::from_millis(20));
        if samples() != seen.0 {
            seen = (samples(), Instant::now());
        }
    }
    assert_eq!(
        samples(),
        1,
        "20 clients that went away: one shared collection, not one each"
    );
    assert_eq!(s.service.collections_started(), 1);
    // The next scrape starts exactly one more.
    assert_eq!(get(&s.addr, "/metrics", &[]).unwrap().status, 200);
    assert_eq!(samples(), 2);
    assert_eq!(s.service.collections_started(), 2);
}

#[test]
fn a_panicking_collection_answers_500_and_the_next_scrape_recovers() {
    let s = serve_fake(None);
    s.script.panic_next.store(true, Ordering::SeqCst);
    let r = get(&s.addr, "/metrics", &[]).unwrap();
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(
        r.text().contains("injected panic in sample 1"),
        "{}",
        r.text()
    );
    let r = get(&s.addr, "/metrics", &[]).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.text().contains("portrange_up 1"));
    assert_eq!(
        s.script.built.load(Ordering::SeqCst),
        2,
        "the platform was rebuilt after the panic"
    );
}

#[test]
fn landing_health_and_reload_never_wait_for_a_collection() {
    let cfg = config_file("core-reload", "ranges:\n  - name: a\n    ports: 3224\n");
    let s = serve_fake(Some(cfg.clone()));
    s.script.hold(true);
    let addr = s.addr.clone();
    let scrape = std::thread::spawn(move || get(&addr, "/metrics", &[]).unwrap());
    s.script.wait_for_samples(1);
    for path in [
        "/",
        "/-/healthy",
        "/portmap.js",
        "/portmap.css",
        "/",
        "/-/healthy",
    ] {
        let (status, took) = timed_get(&s.addr, path);
        assert_eq!(status, 200, "{path}");
        assert!(took < Duration::from_millis(500), "{path} took {took:?}");
    }
    // A reload during the collection answers at once too.
    std::fs::write(&cfg, "ranges:\n  - name: b\n    ports: 3230\n").unwrap();
    let t = Instant::now();
    let r = request(&s.addr, "POST", "/-/reload", &[("Content-Length", "0")]).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(t.elapsed() < Duration::from_millis(500));
    assert!(get(&s.addr, "/", &[]).unwrap().text().contains("3230"));
    s.script.hold(false);
    // The scrape that was running keeps the configuration it started with;
    // the next one has the new ranges.
    assert!(scrape.join().unwrap().text().contains("range=\"a\""));
    let after = get(&s.addr, "/metrics", &[]).unwrap().text();
    assert!(
        after.contains("range=\"b\"") && !after.contains("range=\"a\""),
        "{after}"
    );
}

#[test]
fn a_scrape_after_a_reload_never_gets_the_old_configuration() {
    let cfg = config_file("core-reload2", "ranges:\n  - name: a\n    ports: 3224\n");
    let s = serve_fake(Some(cfg.clone()));
    s.script.hold(true);
    let addr = s.addr.clone();
    let old = std::thread::spawn(move || get(&addr, "/metrics", &[]).unwrap().text());
    s.script.wait_for_samples(1);
    std::fs::write(&cfg, "ranges:\n  - name: b\n    ports: 3230\n").unwrap();
    let r = request(&s.addr, "POST", "/-/reload", &[("Content-Length", "0")]).unwrap();
    assert_eq!(r.status, 200);
    let addr = s.addr.clone();
    let new = std::thread::spawn(move || get(&addr, "/metrics", &[]).unwrap().text());
    std::thread::sleep(Duration::from_millis(200));
    s.script.hold(false);
    // The old scrape gets its own collection or, when it wakes late, the
    // newer one (both finished after it arrived); never an error.
    let old = old.join().unwrap();
    assert!(old.contains("portrange_up 1"), "{old}");
    let new = new.join().unwrap();
    assert!(
        new.contains("range=\"b\"") && !new.contains("range=\"a\""),
        "{new}"
    );
    assert_eq!(
        s.script.samples.load(Ordering::SeqCst),
        2,
        "one after the other"
    );
}

// ---------------------------------------------------------------------------
// The real binary, in private network namespaces (root).

fn sh(cmd: &str) {
    let st = std::process::Command::new("sh")
        .args(["-c", cmd])
        .status()
        .unwrap();
    assert!(st.success(), "{cmd}");
}

/// Forks `procs` idle processes holding `fds` descriptors each, so that a
/// full `/proc` scan takes a while. They die with the returned child.
fn idle_processes(procs: usize, fds: usize) -> std::process::Child {
    let script = format!(
        r#"
import ctypes, os, sys, time
libc = ctypes.CDLL(None)
keep = [os.open("/dev/null", os.O_RDONLY) for _ in range({fds})]
parent = os.getpid()
for _ in range({procs}):
    if os.fork() == 0:
        libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
        if os.getppid() != parent:
            os._exit(0)
        while True:
            time.sleep(3600)
print("ready", flush=True)
sys.stdin.read()
"#
    );
    let mut child = std::process::Command::new("python3")
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    out.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    child
}

#[test]
fn landing_page_and_health_answer_during_a_slow_proc_scan() {
    if !enter_netns("landing_page_and_health_answer_during_a_slow_proc_scan") {
        return;
    }
    // A socket no process holds (a VXLAN endpoint on 3224) sends the first
    // scrape into a full /proc scan; 1,500 processes with 400 fds make it slow.
    sh(
        "ip link add vx0 type vxlan id 42 dstport 3224 local 127.0.0.1 dev lo && ip link set vx0 up",
    );
    let mut farm = idle_processes(1500, 400);
    let exporter = Exporter::start(&[]);
    let scrape = std::thread::spawn(|| {
        let t = Instant::now();
        let r = get(ADDR, "/metrics", &[]).unwrap();
        (r.status, t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(100));
    let probes: Vec<_> = [
        "/",
        "/-/healthy",
        "/",
        "/-/healthy",
        "/",
        "/-/healthy",
        "/",
        "/-/healthy",
    ]
    .into_iter()
    .map(|p| std::thread::spawn(move || (p, timed_get(ADDR, p))))
    .collect();
    let probes: Vec<_> = probes.into_iter().map(|h| h.join().unwrap()).collect();
    let (status, scrape_took) = scrape.join().unwrap();
    assert_eq!(status, 200);
    let slowest = probes.iter().map(|(_, (_, d))| *d).max().unwrap();
    eprintln!(
        "first scrape {scrape_took:?}; slowest of 4 GET / and 4 GET /-/healthy during it: {slowest:?}"
    );
    assert!(
        scrape_took > Duration::from_millis(400),
        "the scan was too fast ({scrape_took:?}) for this test to show anything"
    );
    for (path, (status, took)) in &probes {
        assert_eq!(*status, 200, "{path}");
        assert!(
            *took < Duration::from_millis(250),
            "{path} waited {took:?} while a scrape of {scrape_took:?} ran"
        );
    }
    drop(exporter);
    drop(farm.stdin.take());
    let _ = farm.wait();
}

#[test]
fn the_default_listener_is_dual_stack_even_with_bindv6only() {
    if !enter_netns("the_default_listener_is_dual_stack_even_with_bindv6only") {
        return;
    }
    sh("sysctl -qw net.ipv6.bindv6only=1");
    let mut child = std::process::Command::new(EXPORTER)
        .args(["--web.listen-address", ":10224"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    let mut v6 = None;
    while v6.is_none() && Instant::now() < until {
        v6 = get("[::1]:10224", "/-/healthy", &[]).ok();
        std::thread::sleep(Duration::from_millis(20));
    }
    let v4 = get("127.0.0.1:10224", "/-/healthy", &[]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(v6.expect("IPv6 answers").status, 200);
    assert_eq!(
        v4.expect("IPv4 answers on the same :10224 listener").status,
        200
    );
}

#[test]
fn a_kernel_held_socket_is_named_judged_counted_and_critical() {
    if !enter_netns("a_kernel_held_socket_is_named_judged_counted_and_critical") {
        return;
    }
    sh(
        "ip link add vx0 type vxlan id 42 dstport 3224 local 127.0.0.1 dev lo && ip link set vx0 up",
    );
    assert!(ss(&["-Hanu", "sport = :3224"]).contains(":3224"));
    let exporter = Exporter::start(&[]);
    let m = exporter.metrics();
    let series = r#"portrange_listener_info{range="framehawk",protocol="udp",port="3224",address="0.0.0.0",process="kernel (vx0)",user="root",expected="false"}"#;
    assert_eq!(
        m.get(series),
        Some(1.0),
        "{}",
        m.dump("portrange_listener_info")
    );
    assert_eq!(
        m.value(r#"portrange_unexpected_listeners{range="framehawk",protocol="udp"}"#),
        1.0
    );
    assert_eq!(
        m.value(r#"portrange_unattributed_sockets{range="framehawk",protocol="udp"}"#),
        0.0
    );
    drop(exporter);
    // Calling a socket kernel-held takes a complete /proc scan; give it
    // room (-t) while other tests here run 1,500 processes of 400 fds.
    let (code, out) = check(&["-t", "60"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("kernel (vx0)"), "{out}");
    // An entry that allows it explicitly; an empty allowlist does not.
    let cfg = config_file(
        "kernel-allowed",
        "ranges:\n  - name: framehawk\n    ports: 3224-3324\n    expected:\n      - kernel: vx0\n",
    );
    let (code, out) = check(&["--config.file", cfg.to_str().unwrap(), "-t", "60"]);
    assert_eq!(code, 0, "{out}");
    let exporter = Exporter::start(&["--config.file", cfg.to_str().unwrap()]);
    let m = exporter.metrics();
    assert_eq!(
        m.get(&series.replace("expected=\"false\"", "expected=\"true\"")),
        Some(1.0),
        "{}",
        m.dump("portrange_listener_info")
    );
}
