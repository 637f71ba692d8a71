//! The one owner of collections. A dedicated thread owns the [`Collector`]
//! (and through it the platform's caches) and runs each collection; the
//! HTTP side only asks. Concurrent scrapes share one collection by
//! generation: a scrape that arrives while a collection runs gets that
//! collection's result, and a scrape that arrives when none runs starts
//! one. At most one collection runs at a time, whatever the clients do; a
//! collection finishes even when the scrape that started it is gone. A
//! collection that panics becomes an error result (HTTP 500, message in the
//! log), and the collector is rebuilt for the next one.
//!
//! The configuration and the reload status live in a `watch` channel,
//! readable at any time without waiting for a collection; SIGHUP and
//! `POST /-/reload` both call [`Service::reload`].

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::watch;

use crate::collect::{Collector, Report};
use crate::config::{Config, ConfigError};
use crate::metrics;
use crate::platform::Platform;

/// The outcome of the last configuration (re)load, as Prometheus reports
/// its own.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReloadStatus {
    pub successful: bool,
    /// Unix time of the last successful load, in seconds.
    pub last_success: f64,
}

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

/// What a scrape gets: a collection, or why there is none (a panic).
pub type Outcome = Result<Arc<Collected>, String>;

/// Builds a fresh platform (at start, and after a collection panicked).
pub type PlatformFactory = Box<dyn Fn() -> Box<dyn Platform> + Send>;

struct Request {
    generation: u64,
    deadline: Instant,
    loaded: Loaded,
}

#[derive(Default)]
struct Flight {
    /// The generation of the last collection started.
    started: u64,
    /// The configuration of the collection running now, if one runs.
    running: Option<Arc<Config>>,
    last: Option<(u64, Outcome)>,
}

pub struct Service {
    config_path: Option<PathBuf>,
    loaded: watch::Sender<Loaded>,
    /// Held only to read or update the bookkeeping, never across work.
    flight: Arc<Mutex<Flight>>,
    done: watch::Sender<u64>,
    requests: Mutex<mpsc::Sender<Request>>,
}

impl Service {
    /// Starts the collection thread. `registry` holds the exporter's own
    /// collectors (process metrics), gathered with every collection.
    pub fn start(
        config: Config,
        config_path: Option<PathBuf>,
        platforms: PlatformFactory,
        registry: prometheus::Registry,
    ) -> std::io::Result<Arc<Service>> {
        let loaded = Loaded {
            config: Arc::new(config),
            reload: ReloadStatus {
                successful: true,
                last_success: unix_now(),
            },
        };
        let (tx, rx) = mpsc::channel::<Request>();
        let flight = Arc::new(Mutex::new(Flight::default()));
        let (done, _) = watch::channel(0u64);
        let service = Arc::new(Service {
            config_path,
            loaded: watch::Sender::new(loaded.clone()),
            flight: flight.clone(),
            done: done.clone(),
            requests: Mutex::new(tx),
        });
        let first = loaded.config.clone();
        std::thread::Builder::new()
            .name("collector".into())
            .spawn(move || {
                let mut collector = Collector::new(first.clone(), platforms());
                for req in rx {
                    collector.set_config(req.loaded.config.clone());
                    let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        run_one(&mut collector, &req, &registry)
                    }));
                    let outcome = match run {
                        Ok(c) => Ok(Arc::new(c)),
                        Err(panic) => {
                            let msg = panic_message(&*panic);
                            log::error!(
                                "collection {} panicked: {msg}; the collector is rebuilt for the next scrape",
                                req.generation
                            );
                            collector = Collector::new(req.loaded.config.clone(), platforms());
                            Err(format!("collection failed: {msg}"))
                        }
                    };
                    let previous = {
                        let mut f = flight.lock().unwrap_or_else(|p| p.into_inner());
                        f.running = None;
                        f.last.replace((req.generation, outcome))
                    };
                    done.send_replace(req.generation);
                    // The old report (thousands of listeners on a busy
                    // range) is freed after the waiting scrapes are woken.
                    drop(previous);
                }
            })?;
        Ok(service)
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
    /// running to its end.
    pub async fn collect(&self, budget: Duration) -> Outcome {
        let mut done = self.done.subscribe();
        loop {
            let mut stale = None;
            let target = {
                let current = self.config();
                let mut f = self.flight.lock().unwrap_or_else(|p| p.into_inner());
                match &f.running {
                    // A collection with the configuration in force: share it.
                    Some(cfg) if Arc::ptr_eq(cfg, &current) => Ok(f.started),
                    // One with a configuration since replaced: wait for it
                    // to end, then start a fresh one.
                    Some(_) => Err(f.started),
                    None => {
                        f.started += 1;
                        f.running = Some(current);
                        // The last result is not served again once a new
                        // collection starts: free it now, so that a busy
                        // range's report is not held twice at the peak.
                        // (It is freed outside the lock, below.)
                        stale = f.last.take();
                        let req = Request {
                            generation: f.started,
                            deadline: Instant::now() + budget,
                            loaded: self.loaded(),
                        };
                        let sent = self
                            .requests
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .send(req);
                        if sent.is_err() {
                            f.running = None;
                            return Err("the collector thread is gone".into());
                        }
                        Ok(f.started)
                    }
                }
            };
            drop(stale);
            let (generation, share) = match target {
                Ok(g) => (g, true),
                Err(g) => (g, false),
            };
            if done.wait_for(|g| *g >= generation).await.is_err() {
                return Err("the collector thread is gone".into());
            }
            if share {
                let f = self.flight.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((_, outcome)) = &f.last {
                    return outcome.clone();
                }
            }
        }
    }

    /// The last finished collection, until the next one starts (never
    /// waits).
    pub fn last(&self) -> Option<Outcome> {
        let f = self.flight.lock().unwrap_or_else(|p| p.into_inner());
        f.last.as_ref().map(|(_, o)| o.clone())
    }

    /// How many collections have started (for tests and logs).
    pub fn collections_started(&self) -> u64 {
        self.flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .started
    }

    /// Re-reads `--config.file` (the built-in default without one). A
    /// refused file keeps the ranges in force and marks the reload failed;
    /// the error names file, line and key. Runs the file read on a
    /// blocking thread.
    pub async fn reload(&self, trigger: &str) -> Result<usize, String> {
        let path = self.config_path.clone();
        let loaded = tokio::task::spawn_blocking(move || load(path.as_deref()))
            .await
            .unwrap_or_else(|e| Err(LoadError::Task(e.to_string())));
        let from = self
            .config_path
            .as_ref()
            .map_or("the built-in default".to_string(), |p| {
                p.display().to_string()
            });
        match loaded {
            Ok(config) => {
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

fn load(path: Option<&std::path::Path>) -> Result<Config, LoadError> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::builtin(),
    })
}

fn run_one(collector: &mut Collector, req: &Request, registry: &prometheus::Registry) -> Collected {
    let report = collector.collect(req.deadline);
    let mut families = metrics::families(&report, req.loaded.reload);
    families.extend(registry.gather());
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
