//! Looks that may never return, each under a key: a `stat` of a process's
//! executable on a file system that stopped answering (a dead NFS server),
//! the read of a command line from a process stuck in one. They run on a
//! small pool of threads ([`Looks`]), so the caller waits for them only
//! until its deadline; what is not answered by then the caller treats as
//! not looked at. A key that is queued or running is not started again,
//! so a look that never returns costs one thread, once; its answer, when
//! it comes at last, is kept for the next time the key is asked for. A
//! worker busy for longer than [`SLOW`] gets a helper for the rest of the
//! queue, up to the pool's size: when every worker is stuck, nothing else
//! is looked at (the keys stay queued and the caller says so).
//! Idle workers end after [`IDLE_EXIT`]. Platform-free: only `std`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

/// A worker busy with one look this long is presumed stuck: another
/// worker takes the rest of the queue.
pub const SLOW: Duration = Duration::from_millis(100);
/// An idle worker ends after this long.
pub const IDLE_EXIT: Duration = Duration::from_secs(30);
/// Answers kept for keys not asked for again, at most.
const MAX_ARRIVED: usize = 4096;

type LookFn<K, V> = Arc<dyn Fn(&K) -> V + Send + Sync>;

/// The pool. Dropping it lets idle workers end at once and a stuck one
/// end when its look returns.
pub struct Looks<K, V> {
    name: &'static str,
    max_workers: usize,
    look: LookFn<K, V>,
    shared: Arc<Shared<K>>,
    tx: mpsc::Sender<(K, Option<V>)>,
    rx: mpsc::Receiver<(K, Option<V>)>,
    /// Keys queued or running.
    asked: HashSet<K>,
    /// Answers that arrived after their caller stopped waiting.
    arrived: HashMap<K, V>,
    /// A worker could not be started (logged once until one can).
    spawn_failed: bool,
}

struct Shared<K> {
    state: Mutex<State<K>>,
    work: Condvar,
}

struct State<K> {
    queue: VecDeque<K>,
    /// What each busy worker looks at, since when.
    running: HashMap<u64, (K, Instant)>,
    workers: usize,
    idle: usize,
    next_id: u64,
    closed: bool,
}

/// A key the pool has not answered: running since how long, or queued
/// behind stuck workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unanswered<K> {
    Running(K, Duration),
    Queued(K),
}

impl<K, V> Looks<K, V>
where
    K: Clone + Eq + Hash + Send + 'static,
    V: Send + 'static,
{
    /// A pool of at most `max_workers` threads named `name` (at least
    /// one), each running `look`.
    pub fn new(
        name: &'static str,
        max_workers: usize,
        look: impl Fn(&K) -> V + Send + Sync + 'static,
    ) -> Looks<K, V> {
        let (tx, rx) = mpsc::channel();
        Looks {
            name,
            max_workers: max_workers.max(1),
            look: Arc::new(look),
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    running: HashMap::new(),
                    workers: 0,
                    idle: 0,
                    next_id: 0,
                    closed: false,
                }),
                work: Condvar::new(),
            }),
            tx,
            rx,
            asked: HashSet::new(),
            arrived: HashMap::new(),
            spawn_failed: false,
        }
    }

    /// The answers for `keys`, waiting no later than `deadline`: each key
    /// answered already (late, for an earlier call), or looked at now.
    /// A key still queued or running from an earlier call is neither
    /// started again nor waited for. The keys missing from the answer are
    /// [`Looks::unanswered`].
    pub fn ask(&mut self, keys: &[K], deadline: Instant) -> HashMap<K, V> {
        self.take_arrived();
        let mut answers = HashMap::new();
        let mut waiting = HashSet::new();
        let mut queued = false;
        for k in keys {
            if let Some(v) = self.arrived.remove(k) {
                answers.insert(k.clone(), v);
            } else if self.asked.insert(k.clone()) {
                self.lock().queue.push_back(k.clone());
                waiting.insert(k.clone());
                queued = true;
            }
            // Else queued or running since an earlier call: not waited
            // for again (a stuck look would cost every call its whole
            // wait); its answer is taken when it comes.
        }
        if queued {
            self.shared.work.notify_one();
        }
        while !waiting.is_empty() {
            self.staff();
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let slice = (deadline - now).min(SLOW / 2);
            match self.rx.recv_timeout(slice) {
                Ok((k, v)) => {
                    self.asked.remove(&k);
                    let wanted = waiting.remove(&k);
                    if let Some(v) = v {
                        if wanted {
                            answers.insert(k, v);
                        } else {
                            self.keep(k, v);
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        answers
    }

    /// The keys asked for and not answered: those running (stuck, when
    /// long), and those queued behind them.
    pub fn unanswered(&self) -> Vec<Unanswered<K>> {
        let now = Instant::now();
        let s = self.lock();
        let mut out: Vec<Unanswered<K>> = s
            .running
            .values()
            .map(|(k, since)| Unanswered::Running(k.clone(), now - *since))
            .collect();
        out.extend(s.queue.iter().cloned().map(Unanswered::Queued));
        out
    }

    /// Workers alive now (busy or idle).
    pub fn workers(&self) -> usize {
        self.lock().workers
    }

    /// Drops the late answers about keys `keep` refuses.
    pub fn retain(&mut self, keep: impl Fn(&K) -> bool) {
        self.take_arrived();
        self.arrived.retain(|k, _| keep(k));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K>> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn keep(&mut self, k: K, v: V) {
        if self.arrived.len() >= MAX_ARRIVED {
            self.arrived.clear();
        }
        self.arrived.insert(k, v);
    }

    fn take_arrived(&mut self) {
        while let Ok((k, v)) = self.rx.try_recv() {
            self.asked.remove(&k);
            if let Some(v) = v {
                self.keep(k, v);
            }
        }
    }

    /// Starts a worker when work is queued and no worker can take it: none
    /// is idle, and every busy one has been at its look for [`SLOW`] or
    /// more (or there is none).
    fn staff(&mut self) {
        let mut s = self.lock();
        if s.queue.is_empty() || s.idle > 0 || s.workers >= self.max_workers {
            return;
        }
        let now = Instant::now();
        let busy_fresh = s
            .running
            .values()
            .filter(|(_, since)| now - *since < SLOW)
            .count();
        // Workers that are neither idle nor running a look are between
        // two looks: they take the queue's next key at once.
        let between = s.workers - s.running.len() - s.idle;
        if busy_fresh + between > 0 {
            return;
        }
        let id = s.next_id;
        s.next_id += 1;
        s.workers += 1;
        drop(s);
        let shared = self.shared.clone();
        let look = self.look.clone();
        let tx = self.tx.clone();
        let started = std::thread::Builder::new()
            .name(self.name.to_string())
            .spawn(move || work(&shared, id, &*look, &tx));
        match started {
            Ok(_) => self.spawn_failed = false,
            Err(e) => {
                self.lock().workers -= 1;
                if !self.spawn_failed {
                    log::warn!("cannot start a {} thread: {e}", self.name);
                }
                self.spawn_failed = true;
            }
        }
    }
}

impl<K, V> Drop for Looks<K, V> {
    fn drop(&mut self) {
        let mut s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        s.closed = true;
        s.queue.clear();
        drop(s);
        self.shared.work.notify_all();
    }
}

/// One worker: takes keys off the queue until it is idle for
/// [`IDLE_EXIT`] or the pool is dropped. A look that panics answers
/// nothing (the key may be asked for again).
fn work<K: Clone, V>(
    shared: &Shared<K>,
    id: u64,
    look: &(dyn Fn(&K) -> V + Send + Sync),
    tx: &mpsc::Sender<(K, Option<V>)>,
) {
    let lock = || shared.state.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let key = {
            let mut s = lock();
            loop {
                if s.closed {
                    s.workers -= 1;
                    return;
                }
                if let Some(k) = s.queue.pop_front() {
                    s.running.insert(id, (k.clone(), Instant::now()));
                    break k;
                }
                s.idle += 1;
                let (g, waited) = shared
                    .work
                    .wait_timeout(s, IDLE_EXIT)
                    .unwrap_or_else(|p| p.into_inner());
                s = g;
                s.idle -= 1;
                if waited.timed_out() && s.queue.is_empty() {
                    s.workers -= 1;
                    return;
                }
            }
        };
        let answer = std::panic::catch_unwind(AssertUnwindSafe(|| look(&key))).ok();
        let mut s = lock();
        s.running.remove(&id);
        if s.closed || tx.send((key, answer)).is_err() {
            s.workers -= 1;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A look that blocks on keys starting with "stuck" until released,
    /// and counts its calls per key.
    struct Script {
        released: Mutex<bool>,
        cv: Condvar,
        calls: Mutex<HashMap<String, usize>>,
        inside: AtomicUsize,
    }

    fn pool(max: usize) -> (Looks<String, String>, Arc<Script>) {
        let script = Arc::new(Script {
            released: Mutex::new(false),
            cv: Condvar::new(),
            calls: Mutex::new(HashMap::new()),
            inside: AtomicUsize::new(0),
        });
        let s = script.clone();
        let looks = Looks::new("test-look", max, move |k: &String| {
            *s.calls.lock().unwrap().entry(k.clone()).or_default() += 1;
            if k.starts_with("stuck") {
                s.inside.fetch_add(1, Ordering::SeqCst);
                let mut r = s.released.lock().unwrap();
                while !*r {
                    r = s.cv.wait(r).unwrap();
                }
                s.inside.fetch_sub(1, Ordering::SeqCst);
            }
            if k == "panics" {
                panic!("injected");
            }
            format!("seen {k}")
        });
        (looks, script)
    }

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    /// Asks for `key` until it is answered (a key asked before is not
    /// waited for: its answer comes with a later call), for up to 5 s.
    fn ask_until_answered(looks: &mut Looks<String, String>, key: &str) -> HashMap<String, String> {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let got = looks.ask(&keys(&[key]), soon(100));
            if !got.is_empty() || Instant::now() > until {
                return got;
            }
        }
    }

    fn soon(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[test]
    fn a_stuck_look_costs_one_thread_once_and_answers_when_it_returns() {
        let (mut looks, script) = pool(3);
        let started = Instant::now();
        let got = looks.ask(&keys(&["stuck-1", "a", "b"]), soon(600));
        assert!(started.elapsed() < Duration::from_secs(2));
        // The others were answered by a second worker.
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got["a"], "seen a");
        assert_eq!(
            looks.unanswered().len(),
            1,
            "{:?}",
            looks.unanswered().len()
        );
        assert!(matches!(&looks.unanswered()[0], Unanswered::Running(k, _) if k == "stuck-1"));
        // Asked again while stuck: not started again, not waited for.
        let t = Instant::now();
        let again = looks.ask(&keys(&["stuck-1", "c"]), soon(5_000));
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!(again.keys().collect::<Vec<_>>(), vec!["c"]);
        assert_eq!(script.calls.lock().unwrap()["stuck-1"], 1);
        assert_eq!(script.inside.load(Ordering::SeqCst), 1);
        assert!(looks.workers() <= 3);
        // It returns: its answer is there for the next call.
        *script.released.lock().unwrap() = true;
        script.cv.notify_all();
        let back = ask_until_answered(&mut looks, "stuck-1");
        assert_eq!(back["stuck-1"], "seen stuck-1");
        assert_eq!(script.calls.lock().unwrap()["stuck-1"], 1);
        assert!(looks.unanswered().is_empty());
    }

    #[test]
    fn when_every_worker_is_stuck_nothing_else_runs_and_keys_wait_queued() {
        let (mut looks, script) = pool(2);
        let got = looks.ask(&keys(&["stuck-1", "stuck-2", "x"]), soon(700));
        assert!(got.is_empty(), "{got:?}");
        assert_eq!(looks.workers(), 2);
        let mut un = looks.unanswered();
        un.sort_by_key(|u| format!("{u:?}"));
        assert!(un.contains(&Unanswered::Queued("x".to_string())), "{un:?}");
        assert!(!script.calls.lock().unwrap().contains_key("x"));
        *script.released.lock().unwrap() = true;
        script.cv.notify_all();
        let got = ask_until_answered(&mut looks, "x");
        assert_eq!(got["x"], "seen x");
    }

    #[test]
    fn a_look_that_panics_answers_nothing_and_is_asked_again() {
        let (mut looks, script) = pool(2);
        let got = looks.ask(&keys(&["panics", "a"]), soon(2_000));
        assert_eq!(got.len(), 1);
        assert!(looks.unanswered().is_empty());
        let _ = looks.ask(&keys(&["panics"]), soon(2_000));
        assert_eq!(script.calls.lock().unwrap()["panics"], 2);
    }
}
