//! The collector is supervised: a panic anywhere (a collection, or
//! building the platform after one) or a platform that cannot be built
//! never leaves a scrape waiting; scrapes get a 500 with the reason at once
//! while no collector can run, `/-/healthy` answers 503 with it, and the
//! collector comes back when the platform can be built again. A scrape
//! that waited for a collection gets that collection's result however late
//! it wakes. A collection that hangs, or collections that end late three
//! times in a row, make `/-/healthy` answer 503 with the reason until the
//! collector keeps its deadlines again. Reloads apply in the order they
//! read the file, and reloads while NSS hangs do not pile up lookup
//! threads. Driven through the
//! library with a fake platform whose factory and collections are scripted
//! and gated, and the real HTTP server.

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use common::*;
use portrange_exporter::config::{self, Config, LoadChecks};
use portrange_exporter::platform::{
    Attribution, EphemeralPorts, Filter, Platform, PlatformError, Sample, SampleError, UserLookup,
    UserResolver,
};
use portrange_exporter::service::{PlatformFactory, Service};

/// A gate tests open and close: while closed, whoever passes it waits.
#[derive(Default)]
struct Gate {
    closed: Mutex<bool>,
    opened: Condvar,
    /// How many have reached the gate (waiting or not).
    arrived: AtomicU64,
}

impl Gate {
    fn set(&self, closed: bool) {
        *self.closed.lock().unwrap() = closed;
        self.opened.notify_all();
    }

    fn pass(&self) {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        let mut closed = self.closed.lock().unwrap();
        while *closed {
            closed = self.opened.wait(closed).unwrap();
        }
    }

    fn wait_arrived(&self, n: u64) {
        let until = Instant::now() + Duration::from_secs(10);
        while self.arrived.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < until, "nobody reached the gate {n} times");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// What the fake platform and its factory do.
#[derive(Default)]
struct Script {
    /// Samples wait here.
    sampling: Gate,
    /// Factory calls from this one on (1 is the first; 0: none) wait here.
    building: Gate,
    hold_builds_from: AtomicU64,
    /// Factory calls so far.
    built: AtomicU64,
    /// The next sample panics.
    panic_next_sample: AtomicBool,
    /// The next factory call panics.
    panic_next_build: AtomicBool,
    /// Every factory call panics.
    always_panic_building: AtomicBool,
    /// Factory calls fail while set.
    fail_building: AtomicBool,
    /// Each sample takes this long (ms): a collection that ends late.
    sample_ms: AtomicU64,
    /// Samples that have ended.
    sampled: AtomicU64,
}

struct Fake {
    script: Arc<Script>,
    samples: u64,
}

impl Platform for Fake {
    fn sample(&mut self, _: &Filter, _: Instant) -> Result<Sample, SampleError> {
        self.samples += 1;
        self.script.sampling.pass();
        std::thread::sleep(Duration::from_millis(
            self.script.sample_ms.load(Ordering::SeqCst),
        ));
        self.script.sampled.fetch_add(1, Ordering::SeqCst);
        if self.script.panic_next_sample.swap(false, Ordering::SeqCst) {
            panic!("injected panic in a sample");
        }
        Ok(Sample::default())
    }

    fn attribute(&mut self, sample: &Sample, _: Instant) -> Attribution {
        Attribution {
            holders: sample.sockets.iter().map(|_| None).collect(),
            ..Attribution::default()
        }
    }

    fn ephemeral_ports(&self) -> Result<EphemeralPorts, String> {
        Ok(EphemeralPorts::default())
    }

    fn user_resolver(&self) -> UserResolver {
        Arc::new(|_| Ok(UserLookup::Name("root".into())))
    }

    fn missing_privileges(&self) -> Vec<&'static str> {
        Vec::new()
    }
}

fn factory(script: Arc<Script>) -> PlatformFactory {
    Box::new(move || {
        let n = script.built.fetch_add(1, Ordering::SeqCst) + 1;
        let from = script.hold_builds_from.load(Ordering::SeqCst);
        if from != 0 && n >= from {
            script.building.pass();
        }
        if script.always_panic_building.load(Ordering::SeqCst)
            || script.panic_next_build.swap(false, Ordering::SeqCst)
        {
            panic!("injected panic while building the platform");
        }
        if script.fail_building.load(Ordering::SeqCst) {
            return Err(PlatformError::Spawn {
                what: "fake sampler",
                source: std::io::Error::from_raw_os_error(11), // EAGAIN
            });
        }
        Ok(Box::new(Fake {
            script: script.clone(),
            samples: 0,
        }) as Box<dyn Platform>)
    })
}

/// A served exporter on 127.0.0.1 over the fake platform.
struct Served {
    addr: String,
    script: Arc<Script>,
    service: Arc<Service>,
    rt: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.script.sampling.set(false);
        self.script.building.set(false);
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn serve(script: Arc<Script>, config_path: Option<std::path::PathBuf>) -> Served {
    serve_with(script, config_path, LoadChecks::none())
}

fn serve_with(
    script: Arc<Script>,
    config_path: Option<std::path::PathBuf>,
    checks: LoadChecks,
) -> Served {
    let service = Service::start(
        Config::builtin(),
        config_path,
        checks,
        factory(script.clone()),
        prometheus::Registry::new(),
    )
    .unwrap();
    let (rt, addr, tx) = serve_service(service.clone());
    Served {
        addr,
        script,
        service,
        rt,
        stop: Some(tx),
    }
}

/// A GET that must answer within `limit`: a scrape that hangs is the
/// fault these tests look for.
fn prompt(addr: &str, path: &str, limit: Duration) -> Response {
    let t = Instant::now();
    let r = get(addr, path, &[]).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let took = t.elapsed();
    assert!(took < limit, "GET {path} took {took:?}: {}", r.text());
    r
}

/// Polls `path` until it answers `status` (the supervisor acts on its own
/// thread; this waits for that event, it decides nothing).
fn until_status(addr: &str, path: &str, status: u16) -> Response {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let r = prompt(addr, path, Duration::from_secs(5));
        if r.status == status {
            return r;
        }
        assert!(
            Instant::now() < until,
            "{path} never answered {status}; last {} {}",
            r.status,
            r.text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_panic_while_rebuilding_after_a_panic_never_leaves_scrapes_waiting() {
    let s = serve(Arc::new(Script::default()), None);
    assert_eq!(
        prompt(&s.addr, "/metrics", Duration::from_secs(5)).status,
        200
    );
    // The next collection panics, and so does the rebuild after it; the
    // rebuild after that (build 3) waits at the gate, so that what scrapes
    // and health checks see meanwhile is not a race.
    s.script.panic_next_sample.store(true, Ordering::SeqCst);
    s.script.panic_next_build.store(true, Ordering::SeqCst);
    s.script.building.set(true);
    s.script.hold_builds_from.store(3, Ordering::SeqCst);
    let r = prompt(&s.addr, "/metrics", Duration::from_secs(5));
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(
        r.text().contains("injected panic in a sample"),
        "{}",
        r.text()
    );
    s.script.building.wait_arrived(1);
    assert_eq!(s.script.built.load(Ordering::SeqCst), 3);
    let h = prompt(&s.addr, "/-/healthy", Duration::from_secs(1));
    assert_eq!(h.status, 503, "{}", h.text());
    assert_eq!(
        h.text(),
        "Unhealthy: no collector can run: building the platform panicked: injected panic while building the platform\n"
    );
    let r = prompt(&s.addr, "/metrics", Duration::from_secs(1));
    assert_eq!(r.status, 500);
    assert!(
        r.text().contains("building the platform panicked"),
        "{}",
        r.text()
    );
    s.script.building.set(false);
    until_status(&s.addr, "/-/healthy", 200);
    let r = prompt(&s.addr, "/metrics", Duration::from_secs(5));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("portrange_up 1"));
    assert_eq!(s.script.built.load(Ordering::SeqCst), 3);
}

#[test]
fn two_panicking_collections_in_a_row_are_answered_and_the_collector_comes_back() {
    let s = serve(Arc::new(Script::default()), None);
    for _ in 0..2 {
        s.script.panic_next_sample.store(true, Ordering::SeqCst);
        let r = prompt(&s.addr, "/metrics", Duration::from_secs(5));
        assert_eq!(r.status, 500, "{}", r.text());
    }
    // After two failures in a row the collector is rebuilt after a
    // back-off; scrapes meanwhile are answered at once.
    let r = until_status(&s.addr, "/metrics", 200);
    assert!(r.text().contains("portrange_up 1"));
    assert_eq!(s.script.built.load(Ordering::SeqCst), 3);
    assert_eq!(
        prompt(&s.addr, "/-/healthy", Duration::from_secs(1)).status,
        200
    );
}

#[test]
fn a_platform_that_cannot_be_built_at_start_is_unhealthy_until_it_can() {
    let script = Arc::new(Script::default());
    script.fail_building.store(true, Ordering::SeqCst);
    let s = serve(script, None);
    let h = until_status(&s.addr, "/-/healthy", 503);
    let text = h.text();
    assert!(
        text.starts_with("Unhealthy: no collector can run: the platform cannot be built: cannot start the fake sampler thread: "),
        "{text}"
    );
    let r = prompt(&s.addr, "/metrics", Duration::from_secs(1));
    assert_eq!(r.status, 500);
    assert!(
        r.text().contains("cannot start the fake sampler thread"),
        "{}",
        r.text()
    );
    let r = prompt(&s.addr, "/api/v1/status", Duration::from_secs(1));
    assert_eq!(r.status, 500);
    // The landing page does not need a collector.
    assert_eq!(prompt(&s.addr, "/", Duration::from_secs(1)).status, 200);
    // It can be built again: the supervisor retries and recovers.
    s.script.fail_building.store(false, Ordering::SeqCst);
    until_status(&s.addr, "/-/healthy", 200);
    let r = prompt(&s.addr, "/metrics", Duration::from_secs(5));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("portrange_up 1"));
}

#[test]
fn a_factory_that_always_panics_is_unhealthy_and_scrapes_fail_at_once() {
    let script = Arc::new(Script::default());
    script.always_panic_building.store(true, Ordering::SeqCst);
    let s = serve(script, None);
    let h = until_status(&s.addr, "/-/healthy", 503);
    assert!(
        h.text()
            .contains("building the platform panicked: injected panic while building the platform"),
        "{}",
        h.text()
    );
    for _ in 0..5 {
        let r = prompt(&s.addr, "/metrics", Duration::from_secs(1));
        assert_eq!(r.status, 500);
        assert!(
            r.text().contains("building the platform panicked"),
            "{}",
            r.text()
        );
        assert_eq!(
            prompt(&s.addr, "/-/healthy", Duration::from_secs(1)).status,
            503
        );
    }
    // Retried with a back-off, not in a loop.
    let builds = s.script.built.load(Ordering::SeqCst);
    assert!((1..20).contains(&builds), "{builds} builds");
}

/// A scrape with Prometheus's timeout header, on a thread of its own.
fn scrape_in_background(addr: &str, timeout: &'static str) -> std::thread::JoinHandle<u16> {
    let addr = addr.to_string();
    std::thread::spawn(move || {
        get(
            &addr,
            "/metrics",
            &[("X-Prometheus-Scrape-Timeout-Seconds", timeout)],
        )
        .map_or(0, |r| r.status)
    })
}

#[test]
fn a_collection_that_hangs_makes_the_collector_unhealthy_until_it_ends() {
    let s = serve(Arc::new(Script::default()), None);
    assert_eq!(
        prompt(&s.addr, "/metrics", Duration::from_secs(5)).status,
        200
    );
    assert_eq!(
        prompt(&s.addr, "/-/healthy", Duration::from_secs(1)).status,
        200
    );
    // The next collection hangs in its sample (a kernel or a file system
    // that does not answer), started by a scrape that gives it 0.4 s.
    let before = s.script.sampling.arrived.load(Ordering::SeqCst);
    s.script.sampling.set(true);
    let scrape = scrape_in_background(&s.addr, "0.5");
    s.script.sampling.wait_arrived(before + 1);
    let t = Instant::now();
    // Before: /-/healthy said 200 however long it hung. Now it fails
    // once the collection has run past its deadline as long as three
    // deadlines would have passed, with the reason.
    let h = until_status(&s.addr, "/-/healthy", 503);
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(700),
        "unhealthy after {waited:?}, before three deadlines passed"
    );
    assert!(
        h.text().starts_with(
            "Unhealthy: the collector has missed its deadline 3 times in a row: the collection running now is "
        ),
        "{}",
        h.text()
    );
    // The scrape that started it answered 503 by its own timeout (it
    // never waits past it); the collection ends: healthy again (one late
    // collection is not "in a row").
    s.script.sampling.set(false);
    assert_eq!(scrape.join().unwrap(), 503);
    until_status(&s.addr, "/-/healthy", 200);
}

#[test]
fn collections_that_end_late_three_times_in_a_row_make_the_collector_unhealthy() {
    let s = serve(Arc::new(Script::default()), None);
    // Each sample takes 900 ms; the scrapes give the collection 0.4 s and
    // answer 503 by their own 0.45 s (never waiting past their timeout);
    // each collection is let end before the next scrape, so that three
    // collections end late in a row.
    s.script.sample_ms.store(900, Ordering::SeqCst);
    for i in 1..=3 {
        assert_eq!(
            prompt(&s.addr, "/-/healthy", Duration::from_secs(1)).status,
            200,
            "before late collection {i}"
        );
        let ended = s.script.sampled.load(Ordering::SeqCst);
        assert_eq!(scrape_in_background(&s.addr, "0.5").join().unwrap(), 503);
        let t = Instant::now();
        while s.script.sampled.load(Ordering::SeqCst) == ended {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the sample never ended"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // The rest of a fake collection (nothing to attribute) takes
        // microseconds: then it is over, and the next scrape starts a
        // collection of its own rather than sharing this one.
        std::thread::sleep(Duration::from_millis(200));
    }
    let h = prompt(&s.addr, "/-/healthy", Duration::from_secs(1));
    assert_eq!(h.status, 503, "{}", h.text());
    assert!(
        h.text().starts_with(
            "Unhealthy: the collector has missed its deadline 3 times in a row, the last collection by 0."
        ),
        "{}",
        h.text()
    );
    // One collection on time: healthy.
    s.script.sample_ms.store(0, Ordering::SeqCst);
    assert_eq!(scrape_in_background(&s.addr, "0.5").join().unwrap(), 200);
    assert_eq!(
        prompt(&s.addr, "/-/healthy", Duration::from_secs(1)).status,
        200
    );
}

/// Polls a future once, without a runtime.
fn poll_once<F: Future + ?Sized>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn a_waiter_gets_the_collection_it_waited_for_even_when_the_next_one_has_started() {
    let script = Arc::new(Script::default());
    let s = serve(script, None);
    let budget = Duration::from_secs(5);
    s.script.sampling.set(true);
    // Scrape A starts collection 1 and waits for it.
    let mut a = Box::pin(s.service.collect(budget));
    assert!(poll_once(a.as_mut()).is_pending());
    s.script.sampling.wait_arrived(1);
    // Collection 1 finishes; A has not woken yet.
    s.script.sampling.set(false);
    let until = Instant::now() + Duration::from_secs(10);
    while s.service.last().is_none() {
        assert!(Instant::now() < until, "collection 1 never finished");
        std::thread::sleep(Duration::from_millis(2));
    }
    // Scrape B starts collection 2, which is held.
    s.script.sampling.set(true);
    let mut b = Box::pin(s.service.collect(budget));
    assert!(poll_once(b.as_mut()).is_pending());
    s.script.sampling.wait_arrived(2);
    assert_eq!(s.service.collections_started(), 2);
    // A wakes now: it gets collection 1 at once, not a wait for 2.
    match poll_once(a.as_mut()) {
        Poll::Ready(Ok(c)) => assert_eq!(c.generation, 1),
        Poll::Ready(Err(e)) => panic!("scrape A failed: {e}"),
        Poll::Pending => panic!("scrape A lost collection 1's result and waits for collection 2"),
    }
    s.script.sampling.set(false);
    let got = s.rt.block_on(b).unwrap();
    assert_eq!(got.generation, 2);
}

/// The user lookup of this test binary: "hang" never answers; other names
/// exist. `HANGING` counts lookups stuck in it.
static HANGING: AtomicU64 = AtomicU64::new(0);

fn hanging_user_lookup() -> LoadChecks {
    let lookup: config::UserLookup = Arc::new(|name: &str| {
        if name == "hang" {
            HANGING.fetch_add(1, Ordering::SeqCst);
            loop {
                std::thread::park();
            }
        }
        Ok(true)
    });
    LoadChecks::new(Some(lookup), |_: &std::path::Path| None)
}

#[test]
fn reloads_apply_in_the_order_they_read_the_file_and_a_hung_nss_holds_one_thread() {
    let cfg = config_file(
        "supervision-reload",
        "ranges:\n  - name: older\n    ports: 3224\n    expected:\n      - user: hang\n",
    );
    let s = serve_with(
        Arc::new(Script::default()),
        Some(cfg.clone()),
        hanging_user_lookup(),
    );
    let service = s.service.clone();
    // Reload 1 reads the older file and hangs in NSS on its user name ...
    let first = s.rt.spawn({
        let service = service.clone();
        async move { service.reload("first").await }
    });
    let until = Instant::now() + Duration::from_secs(10);
    while HANGING.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < until, "reload 1 never looked the user up");
        std::thread::sleep(Duration::from_millis(2));
    }
    // ... while the file changes and reload 2 reads the newer one (it
    // names no user, so nothing holds it up).
    std::fs::write(&cfg, "ranges:\n  - name: newer\n    ports: 3230\n").unwrap();
    let second = s.rt.spawn({
        let service = service.clone();
        async move { service.reload("second").await }
    });
    let (first, second) = s.rt.block_on(async { (first.await, second.await) });
    assert_eq!(first.unwrap(), Ok(1));
    assert_eq!(second.unwrap(), Ok(1));
    assert_eq!(
        service.config().ranges[0].name,
        "newer",
        "the newest read is in force"
    );
    // More reloads while NSS still hangs: no more lookup threads, and each
    // says why its user name could not be checked.
    std::fs::write(
        &cfg,
        "ranges:\n  - name: again\n    ports: 3224\n    expected:\n      - user: hang\n",
    )
    .unwrap();
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(s.rt.block_on(service.reload("again")), Ok(1));
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        let warned = &service.config().warnings;
        assert!(
            warned[0]
                .message
                .contains("NSS has not answered the previous lookup"),
            "{warned:?}"
        );
    }
    assert_eq!(HANGING.load(Ordering::SeqCst), 1);
    assert_eq!(threads_named("self", "user-check"), 1);
}
