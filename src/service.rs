//! The one owner of collections. A dedicated thread owns the [`Collector`]
//! (and through it the platform's caches) and runs each collection; the
//! HTTP side only asks. Concurrent scrapes share one collection by
//! generation: a scrape that arrives while a collection runs gets that
//! collection's result (each collection hands its result to its own
//! waiters, so a waiter never misses it however late it wakes), and a
//! scrape that arrives when none runs starts one. At most one collection
//! runs at a time, whatever the clients do; a collection finishes even
//! when the scrape that started it is gone.
//!
//! The thread supervises the collector: building the platform and every
//! collection run under `catch_unwind`, so that a panic or a platform that
//! cannot be built becomes an error result (HTTP 500 with the reason) and
//! a log line at error level, never a dead thread that scrapes wait on.
//! After a failure the collector is rebuilt, at once the first time and
//! then with a doubling back-off (250 ms up to 30 s) while failures follow
//! one another. While no collector can run (the platform cannot be built,
//! or the supervisor waits out a back-off), scrapes are answered at once
//! with the reason, and [`Service::health`] reports it so that
//! `/-/healthy` fails and a process supervisor restarts the exporter; the
//! same happens, for good, should the thread itself end.
//!
//! The configuration and the reload status live in a `watch` channel,
//! readable at any time without waiting for a collection; SIGHUP and
//! `POST /-/reload` both call [`Service::reload`], one reload at a time,
//! so that the newest read of the file is the one in force.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::watch;

use crate::collect::{Collector, Report};
use crate::config::{Config, ConfigError, LoadChecks};
use crate::metrics::{self, ReloadStatus};
use crate::platform::{Platform, PlatformError};
use crate::trail;

/// The configuration in force and the last reload's outcome.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub config: Arc<Config>,
    pub reload: ReloadStatus,
}

/// One finished collection.
#[derive(Debug)]
pub struct Collected {
    pub generation: u64,
    pub finished: SystemTime,
    pub report: Arc<Report>,
    /// The text exposition of the report plus the exporter's own metrics.
    pub metrics: Bytes,
}

/// What a scrape gets: a collection, or why there is none (a panic, a
/// platform that cannot be built).
pub type Outcome = Result<Arc<Collected>, String>;

/// Why a scrape got no collection by the time it had to answer (HTTP 503).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Late(pub String);

/// Builds a fresh platform (at start, and after a failure); an error says
/// what could not be started.
pub type PlatformFactory = Box<dyn FnMut() -> Result<Box<dyn Platform>, PlatformError> + Send>;

/// Builds the `traffic` collector's table (`--collector.traffic`).
pub type TrafficFactory =
    Box<dyn FnMut() -> Box<dyn crate::platform::traffic::TrafficTable> + Send>;

/// The collectors a service runs besides the ranges' own.
#[derive(Default)]
pub struct Extras {
    /// The listener trail's settings (`--collector.trail.*`); `None`: no
    /// trail is kept.
    pub trail: Option<trail::Options>,
    /// With `--collector.traffic`: builds the traffic collector's table.
    pub traffic: Option<TrafficFactory>,
}

/// The first wait before rebuilding a collector that failed twice in a row.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
/// The longest wait between two attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Said when the collector thread has ended and left no reason.
const GONE: &str = "the collector thread has ended";

/// Where one collection's result arrives.
type Slot = watch::Receiver<Option<Outcome>>;

struct Request {
    generation: u64,
    deadline: Instant,
    loaded: Loaded,
    result: watch::Sender<Option<Outcome>>,
}

#[derive(Default)]
struct Flight {
    /// The generation of the last collection started.
    started: u64,
    /// The collection running now: its configuration, and where its
    /// result arrives.
    running: Option<(Arc<Config>, Slot)>,
    /// The last finished collection's result, until the next one starts.
    last: Option<Outcome>,
    /// Why no collector can run now; `None` while one can.
    down: Option<String>,
    /// When the running collection started, and its deadline.
    running_since: Option<(Instant, Instant)>,
    /// Collections in a row that finished late, and by how much the last.
    late: (u32, Duration),
}

/// Deadlines missed in a row that make `/-/healthy` fail.
pub const DEADLINES_MISSED_UNHEALTHY: u32 = 3;

impl Flight {
    /// Counts the collection that started at `start` as late when it
    /// ends past its deadline by more than a quarter of its budget (the
    /// part of Prometheus's timeout the budget leaves).
    fn ended(&mut self, now: Instant) {
        let Some((start, deadline)) = self.running_since.take() else {
            return;
        };
        let over = now.saturating_duration_since(deadline);
        if over > deadline.saturating_duration_since(start) / 4 {
            self.late = (self.late.0 + 1, over);
        } else {
            self.late = (0, Duration::ZERO);
        }
    }

    /// Why the collector is unhealthy for missing its deadlines: the last
    /// collections ended late, and a running one counts once for its
    /// deadline and once more for every budget it runs past it (the scrapes
    /// that would have come meanwhile).
    fn deadlines_missed(&self, now: Instant) -> Result<(), String> {
        let mut missed = self.late.0;
        let mut running = None;
        if let Some((start, deadline)) = self.running_since
            && now > deadline
        {
            let budget = deadline
                .saturating_duration_since(start)
                .max(Duration::from_millis(1));
            let over = now - deadline;
            missed += 1 + (over.as_secs_f64() / budget.as_secs_f64()) as u32;
            running = Some(over);
        }
        if missed < DEADLINES_MISSED_UNHEALTHY {
            return Ok(());
        }
        Err(match running {
            Some(over) => format!(
                "the collector has missed its deadline {missed} times in a row: the collection running now is {:.1} s past its deadline",
                over.as_secs_f64()
            ),
            None => format!(
                "the collector has missed its deadline {missed} times in a row, the last collection by {:.1} s",
                self.late.1.as_secs_f64()
            ),
        })
    }
}

pub struct Service {
    config_path: Option<PathBuf>,
    /// What every reload asks of the host (user names, `exe:` directories).
    checks: LoadChecks,
    loaded: watch::Sender<Loaded>,
    /// Held only to read or update the bookkeeping, never across work.
    flight: Arc<Mutex<Flight>>,
    requests: Mutex<mpsc::Sender<Request>>,
    /// Held across a whole reload (read, check, apply): one at a time.
    reloading: tokio::sync::Mutex<()>,
    /// The listener trail's ring, when one is kept.
    trail: Option<Arc<Mutex<trail::Trail>>>,
}

impl Service {
    /// Starts the collection thread, which builds the first platform with
    /// `platforms`. `registry` holds the exporter's own collectors
    /// (process metrics), gathered with every collection. Reloads read
    /// `config_path` and run `checks` on it.
    pub fn start(
        config: Config,
        config_path: Option<PathBuf>,
        checks: LoadChecks,
        platforms: PlatformFactory,
        registry: prometheus::Registry,
    ) -> std::io::Result<Arc<Service>> {
        Service::start_with(
            config,
            config_path,
            checks,
            platforms,
            registry,
            Extras::default(),
        )
    }

    /// Like [`Service::start`], with the collectors of `extras`: a
    /// listener trail (see [`crate::trail`]: every collection is compared
    /// with the one before, and with a watch interval the collector thread
    /// runs a collection of its own whenever that long passed without one)
    /// and the traffic collector (`--collector.traffic`: each collector
    /// built gets one on a table from the factory).
    pub fn start_with(
        config: Config,
        config_path: Option<PathBuf>,
        checks: LoadChecks,
        platforms: PlatformFactory,
        registry: prometheus::Registry,
        extras: Extras,
    ) -> std::io::Result<Arc<Service>> {
        let recorder = extras.trail.map(trail::Recorder::new);
        let loaded = Loaded {
            config: Arc::new(config),
            reload: ReloadStatus {
                successful: true,
                last_success: unix_now(),
            },
        };
        let (tx, rx) = mpsc::channel::<Request>();
        let flight = Arc::new(Mutex::new(Flight::default()));
        let service = Arc::new(Service {
            config_path,
            checks,
            loaded: watch::Sender::new(loaded),
            flight: flight.clone(),
            requests: Mutex::new(tx),
            reloading: tokio::sync::Mutex::new(()),
            trail: recorder.as_ref().map(trail::Recorder::shared),
        });
        let mut supervisor = Supervisor {
            requests: rx,
            flight,
            loaded: service.loaded.subscribe(),
            platforms,
            registry,
            collector: None,
            failures: 0,
            watch_every: recorder.as_ref().and_then(|r| r.options().watch_interval),
            next_watch: Instant::now(),
            recorder,
            traffic: extras.traffic,
        };
        std::thread::Builder::new()
            .name("collector".into())
            .spawn(move || supervisor.run())?;
        Ok(service)
    }

    /// Why no collection can run now, if so: what `/-/healthy` reports.
    /// Never waits.
    pub fn health(&self) -> Result<(), String> {
        let f = self.lock();
        match &f.down {
            Some(why) => Err(why.clone()),
            None => f.deadlines_missed(Instant::now()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Flight> {
        self.flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The configuration in force; never waits for a collection.
    pub fn config(&self) -> Arc<Config> {
        self.loaded.borrow().config.clone()
    }

    /// The configuration and the last reload's outcome.
    pub fn loaded(&self) -> Loaded {
        self.loaded.borrow().clone()
    }

    /// The result of a collection that is running now or starts now:
    /// joins the running one, else starts one that attribution may give
    /// `budget`. Cancelling the returned future leaves the collection
    /// running to its end. While no collector can run, answers at once
    /// with the reason. Waits as long as the collection takes (see
    /// [`Service::collect_by`] for a scrape that must answer by a time).
    pub async fn collect(&self, budget: Duration) -> Outcome {
        match self.collect_by(budget, None).await {
            Ok(outcome) => outcome,
            Err(late) => Err(late.0),
        }
    }

    /// [`Service::collect`] for a scrape that must answer by `answer_by`:
    /// it never waits past it, for its own collection or for one another
    /// scrape started (whose deadline may be later than its own). Then it
    /// gets [`Late`] with the reason, never an older result (metrics are
    /// collected at scrape time); the collection goes on for its waiters.
    /// A collection it starts gets `budget`, counted from the call.
    pub async fn collect_by(
        &self,
        budget: Duration,
        answer_by: Option<Instant>,
    ) -> Result<Outcome, Late> {
        let called = Instant::now();
        let wait = |mut slot: Slot, generation: u64, own: bool| async move {
            let waited = slot.wait_for(Option::is_some);
            let done = match answer_by {
                None => waited.await.map(|o| o.clone()),
                Some(by) => match tokio::time::timeout_at(by.into(), waited).await {
                    Ok(done) => done.map(|o| o.clone()),
                    Err(_) => {
                        return Err(Late(format!(
                            "collection {generation}{} had not finished within this scrape's time ({:.1} s); it goes on for the scrapes that can wait for it",
                            if own {
                                ""
                            } else {
                                ", started by an earlier scrape with a later deadline,"
                            },
                            by.saturating_duration_since(called).as_secs_f64()
                        )));
                    }
                },
            };
            Ok(done.ok())
        };
        loop {
            if answer_by.is_some_and(|by| Instant::now() >= by) {
                return Err(Late(
                    "this scrape's time ran out before a collection could start".into(),
                ));
            }
            let mut stale = None;
            let (slot, share, generation, own) = {
                let current = self.config();
                let mut f = self.lock();
                if let Some(why) = &f.down {
                    return Ok(Err(why.clone()));
                }
                match &f.running {
                    // A collection with the configuration in force: share it.
                    Some((cfg, slot)) if Arc::ptr_eq(cfg, &current) => {
                        (slot.clone(), true, f.started, false)
                    }
                    // One with a configuration since replaced: wait for it
                    // to end, then start a fresh one.
                    Some((_, slot)) => (slot.clone(), false, f.started, false),
                    None => {
                        let (result, slot) = watch::channel(None);
                        let now = Instant::now();
                        f.running_since = Some((now, called + budget));
                        let req = Request {
                            generation: f.started + 1,
                            deadline: called + budget,
                            loaded: self.loaded(),
                            result,
                        };
                        let sent = self
                            .requests
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .send(req);
                        if sent.is_err() {
                            return Ok(Err(GONE.into()));
                        }
                        f.started += 1;
                        f.running = Some((current, slot.clone()));
                        // The last result is not served again once a new
                        // collection starts: free it now (outside the
                        // lock, below), so that a busy range's report is
                        // not held twice at the peak. Scrapes that waited
                        // for it hold their own reference.
                        stale = f.last.take();
                        (slot, true, f.started, true)
                    }
                }
            };
            drop(stale);
            let outcome = match wait(slot, generation, own).await? {
                Some(o) => o,
                // The thread dropped the request without an answer: it
                // has ended.
                None => {
                    return Ok(Err(self.lock().down.clone().unwrap_or_else(|| GONE.into())));
                }
            };
            if share && let Some(outcome) = outcome {
                return Ok(outcome);
            }
        }
    }

    /// The last finished collection, until the next one starts (never
    /// waits).
    pub fn last(&self) -> Option<Outcome> {
        self.lock().last.clone()
    }

    /// The listener trail's ring (`/api/v1/events`), when one is kept.
    /// Held only to copy events out, never across work.
    pub fn trail(&self) -> Option<&Arc<Mutex<trail::Trail>>> {
        self.trail.as_ref()
    }

    /// How many collections have started (for tests and logs).
    pub fn collections_started(&self) -> u64 {
        self.lock().started
    }

    /// Re-reads `--config.file` (the built-in default without one). A
    /// refused file keeps the ranges in force and marks the reload failed;
    /// the error names file, line and key. Runs the file read on a
    /// blocking thread. Reloads run one at a time, each reading the file
    /// after the one before was applied: the last to start wins, never an
    /// older read that finished late.
    pub async fn reload(&self, trigger: &str) -> Result<usize, String> {
        let _one_at_a_time = self.reloading.lock().await;
        let path = self.config_path.clone();
        let checks = self.checks.clone();
        let loaded = tokio::task::spawn_blocking(move || load(path.as_deref(), &checks))
            .await
            .unwrap_or_else(|e| Err(LoadError::Task(e.to_string())));
        let from = self
            .config_path
            .as_ref()
            .map_or("the built-in default".to_string(), |p| {
                p.display().to_string()
            });
        match loaded {
            Ok(mut config) => {
                // The collectors' settings come from the command line.
                config.ephemeral = self.loaded.borrow().config.ephemeral.clone();
                let n = config.ranges.len();
                self.loaded.send_replace(Loaded {
                    config: Arc::new(config),
                    reload: ReloadStatus {
                        successful: true,
                        last_success: unix_now(),
                    },
                });
                log::info!("configuration reloaded ({trigger}): {n} ranges from {from}");
                Ok(n)
            }
            Err(e) => {
                self.loaded.send_modify(|l| l.reload.successful = false);
                log::error!(
                    "configuration reload ({trigger}) refused, keeping the previous ranges: {e}"
                );
                Err(e.to_string())
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("reload task failed: {0}")]
    Task(String),
}

fn load(path: Option<&std::path::Path>, checks: &LoadChecks) -> Result<Config, LoadError> {
    Ok(Config::load_or_builtin(path, checks)?)
}

/// The collector thread: builds the collector, runs the collections it is
/// asked for, and rebuilds it after a failure.
struct Supervisor {
    requests: mpsc::Receiver<Request>,
    flight: Arc<Mutex<Flight>>,
    loaded: watch::Receiver<Loaded>,
    platforms: PlatformFactory,
    registry: prometheus::Registry,
    collector: Option<Collector>,
    /// Failures (a platform not built, a collection that panicked) since
    /// the last collection that succeeded.
    failures: u32,
    /// The listener trail, compared with every collection.
    recorder: Option<trail::Recorder>,
    /// How often to collect for the trail when no scrape does.
    watch_every: Option<Duration>,
    /// When the next watch pass is due.
    next_watch: Instant,
    /// With `--collector.traffic`: the table for each collector built.
    traffic: Option<TrafficFactory>,
}

/// What the collector thread does next.
enum Next {
    Collect(Request),
    /// A watch pass panicked: the collector is rebuilt.
    Rebuild,
    /// The service is gone.
    Gone,
}

/// The time a watch pass may take (its scan goes on in the background
/// past it, as a scrape's does).
const WATCH_BUDGET: Duration = Duration::from_secs(2);

impl Supervisor {
    fn run(&mut self) {
        let ended = std::panic::catch_unwind(AssertUnwindSafe(|| self.serve()));
        // Only a panic outside the guarded steps gets here (or the service
        // being dropped): no collection can run any more, so say so for
        // good; the process supervisor restarts the exporter.
        if let Err(panic) = ended {
            let why = format!(
                "the collector thread has ended (a panic outside a collection: {}); restart the exporter",
                panic_message(&*panic)
            );
            log::error!("{why}");
            let mut f = self.lock();
            f.down = Some(why);
            f.running = None;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Flight> {
        self.flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs until the service is dropped.
    fn serve(&mut self) {
        loop {
            if self.collector.is_none() {
                match self.build() {
                    Ok(c) => {
                        self.collector = Some(c);
                        self.lock().down = None;
                    }
                    Err(why) => {
                        self.failures += 1;
                        let wait = backoff(self.failures).max(BACKOFF_FIRST);
                        log::error!(
                            "no collector can run: {why}; trying again in {:.2} s (failure {} in a row)",
                            wait.as_secs_f64(),
                            self.failures
                        );
                        if !self.wait_down(format!("no collector can run: {why}"), wait) {
                            return;
                        }
                        continue;
                    }
                }
            }
            let req = match self.next_request() {
                Next::Collect(req) => req,
                Next::Rebuild => continue,
                Next::Gone => return,
            };
            let collector = self.collector.as_mut().expect("built above");
            let registry = &self.registry;
            let recorder = &mut self.recorder;
            let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
                collector.set_config(req.loaded.config.clone());
                run_one(collector, &req, registry, recorder.as_mut())
            }));
            if let Some(every) = self.watch_every {
                self.next_watch = Instant::now() + every;
            }
            match run {
                Ok(c) => {
                    self.failures = 0;
                    self.finish(req, Ok(Arc::new(c)));
                }
                Err(panic) => {
                    let msg = panic_message(&*panic);
                    self.failures += 1;
                    self.collector = None;
                    let wait = backoff(self.failures);
                    log::error!(
                        "collection {} panicked: {msg}; the collector is rebuilt{} (failure {} in a row)",
                        req.generation,
                        if wait.is_zero() {
                            String::new()
                        } else {
                            format!(" in {:.2} s", wait.as_secs_f64())
                        },
                        self.failures
                    );
                    self.finish(req, Err(format!("collection failed: {msg}")));
                    if !wait.is_zero()
                        && !self.wait_down(
                            format!(
                                "{} collections in a row failed, the last with: {msg}; the collector restarts in {:.2} s",
                                self.failures,
                                wait.as_secs_f64()
                            ),
                            wait,
                        )
                    {
                        return;
                    }
                }
            }
        }
    }

    /// The next collection asked for; with a watch interval, runs a watch
    /// pass each time that long passes without one.
    fn next_request(&mut self) -> Next {
        loop {
            let Some(every) = self.watch_every else {
                return match self.requests.recv() {
                    Ok(req) => Next::Collect(req),
                    Err(_) => Next::Gone,
                };
            };
            let wait = self.next_watch.saturating_duration_since(Instant::now());
            match self.requests.recv_timeout(wait) {
                Ok(req) => return Next::Collect(req),
                Err(mpsc::RecvTimeoutError::Disconnected) => return Next::Gone,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let ok = self.watch_pass();
                    self.next_watch = Instant::now() + every;
                    if !ok {
                        return Next::Rebuild;
                    }
                }
            }
        }
    }

    /// One collection for the trail alone (no metrics are encoded): the
    /// watched ranges' listeners only ([`Collector::collect_listeners`]:
    /// no dynamic range, no traffic), and those that came and went since
    /// the last one become events.
    /// False when it panicked (logged; the collector is dropped, to be
    /// rebuilt).
    fn watch_pass(&mut self) -> bool {
        let config = self.loaded.borrow().config.clone();
        let (Some(collector), Some(recorder)) = (self.collector.as_mut(), self.recorder.as_mut())
        else {
            return true;
        };
        let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
            collector.set_config(config);
            let mut report = collector.collect_listeners(Instant::now() + WATCH_BUDGET);
            recorder.observe(&mut report, SystemTime::now(), &mut |pid| {
                collector.process_details(pid)
            });
        }));
        match run {
            Ok(()) => true,
            Err(panic) => {
                log::error!(
                    "a watch pass of the listener trail panicked: {}; the collector is rebuilt",
                    panic_message(&*panic)
                );
                self.collector = None;
                false
            }
        }
    }

    /// A fresh collector on a fresh platform, or why there is none.
    fn build(&mut self) -> Result<Collector, String> {
        let config = self.loaded.borrow().config.clone();
        let platforms = &mut self.platforms;
        let traffic = &mut self.traffic;
        match std::panic::catch_unwind(AssertUnwindSafe(|| {
            platforms().map(|p| {
                let mut c = Collector::new(config, p);
                if let Some(table) = traffic.as_mut() {
                    c.set_traffic(crate::traffic::TrafficCollector::new(table()));
                }
                c
            })
        })) {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(format!("the platform cannot be built: {e}")),
            Err(panic) => Err(format!(
                "building the platform panicked: {}",
                panic_message(&*panic)
            )),
        }
    }

    /// Marks the service down with `why` for `wait`, answering every
    /// request that arrives meanwhile with it. False when the service is
    /// gone.
    fn wait_down(&mut self, why: String, wait: Duration) -> bool {
        self.lock().down = Some(why.clone());
        let until = Instant::now() + wait;
        loop {
            match self
                .requests
                .recv_timeout(until.saturating_duration_since(Instant::now()))
            {
                // Sent before the service was marked down.
                Ok(req) => self.finish(req, Err(why.clone())),
                Err(mpsc::RecvTimeoutError::Timeout) => return true,
                Err(mpsc::RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    /// Hands `outcome` to the request's waiters.
    fn finish(&self, req: Request, outcome: Outcome) {
        let previous = {
            let mut f = self.lock();
            f.running = None;
            f.ended(Instant::now());
            f.last.replace(outcome.clone())
        };
        req.result.send_replace(Some(outcome));
        // The old report (thousands of listeners on a busy range) is freed
        // after the waiting scrapes are woken.
        drop(previous);
    }
}

/// How long to wait before the next attempt after `failures` failures in
/// a row: nothing after the first, then 250 ms doubling up to 30 s.
fn backoff(failures: u32) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    BACKOFF_FIRST
        .saturating_mul(1u32 << (failures - 2).min(16))
        .min(BACKOFF_MAX)
}

fn run_one(
    collector: &mut Collector,
    req: &Request,
    registry: &prometheus::Registry,
    recorder: Option<&mut trail::Recorder>,
) -> Collected {
    let mut report = collector.collect(req.deadline);
    let collected = Instant::now();
    if let Some(recorder) = recorder {
        recorder.observe(&mut report, SystemTime::now(), &mut |pid| {
            collector.process_details(pid)
        });
    }
    let observed = Instant::now();
    let mut families = metrics::families(&report, req.loaded.reload);
    families.extend(registry.gather());
    log::debug!(
        "timing: collection {:?}, trail {:?}, metrics {:?}",
        report.duration,
        observed - collected,
        observed.elapsed()
    );
    Collected {
        generation: req.generation,
        finished: SystemTime::now(),
        report: Arc::new(report),
        metrics: Bytes::from(metrics::encode(families)),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with no message".to_string()
    }
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_pass_samples_the_ranges_alone() {
        use crate::collect::tests::Recording;
        let platform = Recording::new();
        let seen = platform.handle();
        let mut once = Some(platform);
        let service = Service::start_with(
            Config::builtin(),
            None,
            LoadChecks::none(),
            Box::new(move || {
                once.take()
                    .map(|p| Box::new(p) as Box<dyn Platform>)
                    .ok_or_else(|| PlatformError::Spawn {
                        what: "test platform",
                        source: std::io::Error::other("built once"),
                    })
            }),
            prometheus::Registry::new(),
            Extras {
                trail: Some(trail::Options {
                    watch_interval: Some(Duration::from_millis(10)),
                    ..trail::Options::default()
                }),
                traffic: None,
            },
        )
        .unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while seen.sampled_dynamic().len() < 3 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        let watched = seen.sampled_dynamic();
        assert!(watched.len() >= 3, "no watch passes ran: {watched:?}");
        assert!(watched.iter().all(|d| !d), "{watched:?}");
        assert_eq!(
            seen.dynamic_reads.load(std::sync::atomic::Ordering::SeqCst),
            0
        );
        // A scrape runs the whole collection, the dynamic range included.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let scraped = runtime
            .block_on(service.collect(Duration::from_secs(5)))
            .unwrap();
        assert!(scraped.report.ephemeral.is_some());
        assert!(seen.sampled_dynamic().contains(&true));
    }

    #[test]
    fn backoff_doubles_from_the_second_failure_and_stops_at_30_s() {
        let waits: Vec<u64> = (1..=10).map(|n| backoff(n).as_millis() as u64).collect();
        assert_eq!(
            waits,
            [0, 250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]
        );
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }
}
