//! Basic authentication for the HTTP endpoint (`basic_auth_users` of
//! `--web.config.file`, checked by [`crate::webconfig`]): it decides whether
//! a request's `Authorization` header is allowed, keeps the verified
//! credentials, runs bcrypt on threads of its own, and counts refusals
//! (`portrange_web_auth_failures_total{reason}`). [`crate::http`] only maps
//! the [`Outcome`] to an answer.
//!
//! **The cache.** bcrypt is slow on purpose, so a credential that verified
//! is remembered: per configured user, one HMAC-SHA256 tag, under a key
//! drawn at random when the web config is loaded, of the user name, the
//! password and the stored hash, each length-prefixed so that no two
//! triples share a message. A request is allowed from the cache only when
//! the tag of *its* user, password and the user's stored hash matches the
//! remembered one (`ring::hmac::verify`, a constant-time comparison): a hit
//! proves the same user, the same password and the same hash. That is what
//! exporter-toolkit's cache missed in CVE-2022-46146 (fields concatenated
//! without separators, and a success against the unknown-user dummy hash
//! cached as a success, so whoever knew a hash could plant a key that a
//! crafted password for a real user then hit). Here only a known user's
//! success is ever remembered, nothing is remembered for an unknown user,
//! and no password or hash is kept in memory beyond the configured hashes.
//! The cache cannot grow: one slot per configured user. The web config is
//! read once at start (reloads re-read `--config.file` only); a new web
//! config would come with a new [`BasicAuth`], a new key and empty slots,
//! and as the stored hash is part of every tag an old password could not
//! match a changed hash anyway.
//!
//! **The bcrypt threads.** A request whose credential is not in the cache
//! (a first login, a wrong password, an unknown user: unknown users are
//! checked against a dummy hash of the configured cost, so timing does not
//! reveal which users exist) is verified on [`VERIFIER_THREADS`] threads
//! of this module, never on tokio's blocking pool (which gzip, the status
//! document and reloads share) and never on an async worker. A cached
//! credential is answered on the spot without touching them, so wrong
//! passwords, however many, cannot delay a scrape that logged in before.
//! For a *first* login during a flood, the threads are shared per peer:
//! each peer (an IPv4 address, an IPv6 /64) has at most one credential
//! being verified or waiting; another request from it with an uncached
//! credential meanwhile is refused at once with 429 (`Retry-After: 1`),
//! and at most [`QUEUE_MAX`] credentials wait in all. A flood from one
//! address thus holds at most one of the threads, and a scraper from
//! another address is verified next, at the cost of one bcrypt. Many
//! addresses flooding at once can still fill the queue (a first login then
//! gets 429 until the flood ends; logins already cached are unaffected);
//! a flood from the scraper's own address takes its turns, as nothing can
//! tell them apart. A waiting credential whose client has gone is dropped
//! unverified.
//!
//! **Failures.** A refusal says why in the counter (a fixed set of
//! reasons, never a user name or address): `missing` (no `Authorization`
//! header), `malformed` (not `Basic`, bad base64 or UTF-8, no colon),
//! `unknown_user`, `wrong_password`, `throttled` (answered 429) and `error`
//! (the check itself failed: a bcrypt thread that panicked or could not be
//! started, logged at error level and answered 500, never mistaken for a
//! wrong password). Secrets and hashes never reach a log line.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use ring::hmac;

/// Threads that run bcrypt for credentials not in the cache.
pub const VERIFIER_THREADS: usize = 2;
/// Credentials waiting for a bcrypt thread, beyond which a request with an
/// uncached credential gets 429.
pub const QUEUE_MAX: usize = 32;

/// What the check decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The credential is valid.
    Allowed,
    /// Refused (401), with the reason counted.
    Refused(Reason),
    /// Not checked now: the peer already has a credential being verified,
    /// or the queue is full (429).
    Throttled,
    /// The check failed (500); the message is logged, and holds no secret.
    Failed(String),
}

/// Why a request was not allowed: the `reason` label of
/// `portrange_web_auth_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Missing,
    Malformed,
    UnknownUser,
    WrongPassword,
    Throttled,
    Error,
}

impl Reason {
    pub const ALL: [Reason; 6] = [
        Reason::Missing,
        Reason::Malformed,
        Reason::UnknownUser,
        Reason::WrongPassword,
        Reason::Throttled,
        Reason::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Malformed => "malformed",
            Reason::UnknownUser => "unknown_user",
            Reason::WrongPassword => "wrong_password",
            Reason::Throttled => "throttled",
            Reason::Error => "error",
        }
    }
}

/// A configured user: the stored hash and the tag of the credential that
/// last verified against it.
struct User {
    hash: String,
    verified: Mutex<Option<hmac::Tag>>,
}

/// The bcrypt check, replaceable in tests (a panicking one, a gated one).
type Verify = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

fn bcrypt_verify(password: &str, hash: &str) -> bool {
    bcrypt::verify(password, hash).unwrap_or(false)
}

/// Checks `Authorization: Basic` credentials against bcrypt hashes.
pub struct BasicAuth {
    users: BTreeMap<String, User>,
    /// Checked for unknown users, at the configured cost.
    dummy: String,
    key: hmac::Key,
    pool: Pool,
    failures: [AtomicU64; Reason::ALL.len()],
    verify: Verify,
}

impl BasicAuth {
    /// `users` maps each user name to its bcrypt hash (checked by
    /// [`crate::webconfig`]). Computes the dummy hash (one bcrypt at the
    /// highest configured cost) and draws the cache key; the bcrypt threads
    /// start with the first credential that needs them.
    pub fn new(users: BTreeMap<String, String>) -> BasicAuth {
        BasicAuth::with_verify(users, Arc::new(bcrypt_verify))
    }

    fn with_verify(users: BTreeMap<String, String>, verify: Verify) -> BasicAuth {
        let cost = users
            .values()
            .filter_map(|h| h.split('$').nth(2).and_then(|c| c.parse::<u32>().ok()))
            .max()
            .unwrap_or(bcrypt::DEFAULT_COST);
        let dummy = bcrypt::hash("portrange_exporter dummy password", cost.clamp(4, 31))
            .unwrap_or_else(|_| {
                bcrypt::hash("dummy", bcrypt::DEFAULT_COST).expect("bcrypt hashes")
            });
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .expect("the system random generator works");
        BasicAuth {
            users: users
                .into_iter()
                .map(|(name, hash)| {
                    let u = User {
                        hash,
                        verified: Mutex::new(None),
                    };
                    (name, u)
                })
                .collect(),
            dummy,
            key,
            pool: Pool::new(),
            failures: Default::default(),
            verify,
        }
    }

    /// How many users are configured.
    pub fn users(&self) -> usize {
        self.users.len()
    }

    /// Decides on the `Authorization` header of a request from `peer`. A
    /// credential in the cache is answered without waiting on anything;
    /// others wait for a bcrypt thread (see the module doc).
    pub async fn check(&self, header: Option<&[u8]>, peer: IpAddr) -> Outcome {
        let outcome = self.decide(header, peer).await;
        match &outcome {
            Outcome::Allowed => {}
            Outcome::Refused(r) => self.count(*r),
            Outcome::Throttled => self.count(Reason::Throttled),
            Outcome::Failed(message) => {
                self.count(Reason::Error);
                log::error!(peer:% = peer; "basic auth: the credential check failed, answering 500: {message}");
            }
        }
        outcome
    }

    async fn decide(&self, header: Option<&[u8]>, peer: IpAddr) -> Outcome {
        let Some(header) = header else {
            return Outcome::Refused(Reason::Missing);
        };
        let Some((name, password)) = parse_basic(header) else {
            return Outcome::Refused(Reason::Malformed);
        };
        let user = self.users.get(&name);
        let hash = user.map_or(self.dummy.as_str(), |u| u.hash.as_str());
        let message = tag_message(&name, &password, hash);
        if let Some(u) = user {
            let remembered = *lock(&u.verified);
            if remembered.is_some_and(|t| hmac::verify(&self.key, &message, t.as_ref()).is_ok()) {
                return Outcome::Allowed;
            }
        }
        let verify = self.verify.clone();
        let stored = hash.to_string();
        let answer = match self.pool.submit(peer, move || verify(&password, &stored)) {
            Submitted::Busy => return Outcome::Throttled,
            Submitted::Failed(e) => return Outcome::Failed(e),
            Submitted::Queued(rx) => rx.await,
        };
        match answer {
            Ok(Ok(true)) => match user {
                Some(u) => {
                    *lock(&u.verified) = Some(hmac::sign(&self.key, &message));
                    Outcome::Allowed
                }
                // The dummy's password: never a login.
                None => Outcome::Refused(Reason::UnknownUser),
            },
            Ok(Ok(false)) if user.is_some() => Outcome::Refused(Reason::WrongPassword),
            Ok(Ok(false)) => Outcome::Refused(Reason::UnknownUser),
            Ok(Err(panic)) => Outcome::Failed(format!("the bcrypt thread panicked: {panic}")),
            Err(_) => Outcome::Failed("the bcrypt thread went away without an answer".into()),
        }
    }

    fn count(&self, r: Reason) {
        let i = Reason::ALL.iter().position(|x| *x == r).expect("listed");
        self.failures[i].fetch_add(1, Ordering::Relaxed);
    }

    /// `portrange_web_auth_failures_total` in the text format, every
    /// reason present (also at 0).
    pub fn exposition(&self) -> String {
        let mut out = String::from(
            "# HELP portrange_web_auth_failures_total Requests refused by basic authentication, by reason.\n\
             # TYPE portrange_web_auth_failures_total counter\n",
        );
        for (r, n) in Reason::ALL.iter().zip(&self.failures) {
            out.push_str(&format!(
                "portrange_web_auth_failures_total{{reason=\"{}\"}} {}\n",
                r.as_str(),
                n.load(Ordering::Relaxed)
            ));
        }
        out
    }
}

/// The HMAC message of a credential: each field length-prefixed, so that
/// no two (user, password, hash) triples give the same bytes.
fn tag_message(user: &str, password: &str, hash: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(24 + user.len() + password.len() + hash.len());
    for field in [user, password, hash] {
        m.extend_from_slice(&(field.len() as u64).to_be_bytes());
        m.extend_from_slice(field.as_bytes());
    }
    m
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Parses `Basic base64(user:password)`.
pub fn parse_basic(value: &[u8]) -> Option<(String, String)> {
    use base64::Engine;
    let v = std::str::from_utf8(value).ok()?.trim();
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// The unit of fairness: an IPv4 address, or an IPv6 /64 (what one host
/// usually holds); an IPv4-mapped IPv6 address counts as the IPv4 one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum PeerKey {
    V4(u32),
    V6(u64),
}

fn peer_key(ip: IpAddr) -> PeerKey {
    match ip {
        IpAddr::V4(a) => PeerKey::V4(a.into()),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => PeerKey::V4(v4.into()),
            None => PeerKey::V6((u128::from(a) >> 64) as u64),
        },
    }
}

// ---------------------------------------------------------------------------
// The bcrypt threads

/// A job's answer: its result, or the panic's message.
type Answer = Result<bool, String>;

struct Job {
    peer: PeerKey,
    work: Box<dyn FnOnce() -> bool + Send>,
    reply: tokio::sync::oneshot::Sender<Answer>,
}

enum Submitted {
    Queued(tokio::sync::oneshot::Receiver<Answer>),
    /// The peer already has a job, or the queue is full.
    Busy,
    /// No thread could be started.
    Failed(String),
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Peers with a job queued or running.
    busy: HashSet<PeerKey>,
    started: bool,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

/// [`VERIFIER_THREADS`] threads taking jobs in arrival order, at most one
/// per peer at a time; started with the first job, stopped when dropped.
struct Pool {
    shared: Arc<Shared>,
}

impl Pool {
    fn new() -> Pool {
        Pool {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue::default()),
                ready: Condvar::new(),
            }),
        }
    }

    fn submit(&self, peer: IpAddr, work: impl FnOnce() -> bool + Send + 'static) -> Submitted {
        let peer = peer_key(peer);
        let mut q = lock(&self.shared.queue);
        if !q.started {
            let mut spawned = 0;
            let mut error = None;
            for i in 0..VERIFIER_THREADS {
                let shared = self.shared.clone();
                match std::thread::Builder::new()
                    .name(format!("bcrypt-{i}"))
                    .spawn(move || worker(&shared))
                {
                    Ok(_) => spawned += 1,
                    Err(e) => error = Some(e),
                }
            }
            match (spawned, error) {
                (0, e) => {
                    let e = e.map_or_else(String::new, |e| e.to_string());
                    return Submitted::Failed(format!("cannot start a bcrypt thread: {e}"));
                }
                (n, Some(e)) => log::warn!(
                    threads = n, err:% = e;
                    "basic auth: could start only some of the bcrypt threads"
                ),
                (_, None) => {}
            }
            q.started = true;
        }
        if q.busy.contains(&peer) || q.jobs.len() >= QUEUE_MAX {
            return Submitted::Busy;
        }
        let (reply, rx) = tokio::sync::oneshot::channel();
        q.busy.insert(peer);
        q.jobs.push_back(Job {
            peer,
            work: Box::new(work),
            reply,
        });
        drop(q);
        self.shared.ready.notify_one();
        Submitted::Queued(rx)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        self.shared.ready.notify_all();
    }
}

fn worker(shared: &Shared) {
    loop {
        let job = {
            let mut q = lock(&shared.queue);
            loop {
                if q.closed {
                    return;
                }
                if let Some(job) = q.jobs.pop_front() {
                    break job;
                }
                q = shared.ready.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        let Job { peer, work, reply } = job;
        // A client that went away needs no answer.
        let answer = (!reply.is_closed()).then(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).map_err(|p| {
                p.downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into())
            })
        });
        // Free the peer before answering, so that its next request finds
        // its turn.
        lock(&shared.queue).busy.remove(&peer);
        if let Some(a) = answer {
            let _ = reply.send(a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::net::Ipv4Addr;
    use std::pin::pin;
    use std::sync::mpsc;
    use std::task::{Context, Poll, Waker};

    fn b64(s: &str) -> Vec<u8> {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
        .into_bytes()
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// Polls once: `Some` when the future answered without waiting.
    fn poll_once<F: Future>(f: F) -> Option<F::Output> {
        let mut f = pin!(f);
        match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        }
    }

    fn alice(password: &str) -> BasicAuth {
        let hash = bcrypt::hash(password, 4).unwrap();
        BasicAuth::new([("alice".to_string(), hash)].into())
    }

    /// Occupies every bcrypt thread and fills the queue with jobs that
    /// wait for the returned sender to be dropped.
    fn saturate(auth: &BasicAuth) -> (mpsc::Sender<()>, Vec<Submitted>) {
        let (release, gate) = mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        let mut held = Vec::new();
        let (running_tx, running) = mpsc::channel();
        let mut submit = |i: usize| {
            let gate = gate.clone();
            let running_tx = running_tx.clone();
            let s = auth.pool.submit(ip(100 + i as u8), move || {
                let _ = running_tx.send(());
                let _ = gate.lock().unwrap().recv();
                false
            });
            assert!(matches!(s, Submitted::Queued(_)), "job {i} queued");
            held.push(s);
        };
        // First every thread busy, then a full queue behind them.
        for i in 0..VERIFIER_THREADS {
            submit(i);
        }
        for _ in 0..VERIFIER_THREADS {
            running.recv().unwrap();
        }
        for i in VERIFIER_THREADS..VERIFIER_THREADS + QUEUE_MAX {
            submit(i);
        }
        (release, held)
    }

    /// Waits (bounded) until the threads have gone through every job.
    fn drain(auth: &BasicAuth) {
        for _ in 0..1000 {
            let q = lock(&auth.pool.shared.queue);
            if q.jobs.is_empty() && q.busy.is_empty() {
                return;
            }
            drop(q);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("the bcrypt threads did not drain");
    }

    #[test]
    fn a_cached_credential_is_answered_while_the_bcrypt_threads_are_saturated() {
        let auth = alice("s3cret");
        let good = b64("alice:s3cret");
        assert_eq!(block_on(auth.check(Some(&good), ip(1))), Outcome::Allowed);
        let (release, held) = saturate(&auth);
        // Saturated: an uncached credential from a new peer is turned away.
        assert_eq!(
            poll_once(auth.check(Some(&b64("alice:guess")), ip(2))),
            Some(Outcome::Throttled)
        );
        // The cached one answers in one poll, from any peer.
        for peer in [ip(1), ip(3), ip(100)] {
            assert_eq!(
                poll_once(auth.check(Some(&good), peer)),
                Some(Outcome::Allowed),
                "{peer}"
            );
        }
        drop(release);
        drop(held);
        drain(&auth);
        // After the flood, a wrong password is still verified and refused.
        assert_eq!(
            block_on(auth.check(Some(&b64("alice:guess")), ip(2))),
            Outcome::Refused(Reason::WrongPassword)
        );
    }

    #[test]
    fn a_wrong_password_never_hits_the_cache() {
        let auth = alice("s3cret");
        assert_eq!(
            block_on(auth.check(Some(&b64("alice:s3cret")), ip(1))),
            Outcome::Allowed
        );
        let (release, held) = saturate(&auth);
        // With the threads busy, a cache hit would be the only way in.
        for wrong in ["alice:s3cre", "alice:s3cret ", "alice:S3CRET", "alice:"] {
            assert_eq!(
                poll_once(auth.check(Some(&b64(wrong)), ip(1))),
                Some(Outcome::Throttled),
                "{wrong}"
            );
        }
        drop(release);
        drop(held);
    }

    #[test]
    fn the_cve_2022_46146_construction_gets_nothing() {
        // exporter-toolkit cached user+hash+password, concatenated, also
        // for unknown users checked against a dummy hash whose password is
        // public. Knowing alice's hash, log in as the unknown user
        // "alice" + hash with the dummy's password, then as alice with
        // dummy hash + dummy password as the password.
        let auth = alice("s3cret");
        let hash = auth.users["alice"].hash.clone();
        let dummy_pw = "portrange_exporter dummy password";
        assert_eq!(
            block_on(auth.check(Some(&b64(&format!("alice{hash}:{dummy_pw}"))), ip(1))),
            Outcome::Refused(Reason::UnknownUser),
            "the dummy's password logs nobody in"
        );
        let crafted = format!("alice:{}{dummy_pw}", auth.dummy);
        assert_eq!(
            block_on(auth.check(Some(&b64(&crafted)), ip(1))),
            Outcome::Refused(Reason::WrongPassword)
        );
        assert!(lock(&auth.users["alice"].verified).is_none());
        // Field boundaries are part of the message.
        assert_ne!(
            tag_message("alice", "xy", "z"),
            tag_message("alice", "x", "yz")
        );
        assert_ne!(tag_message("ab", "", "c"), tag_message("a", "b", "c"));
    }

    #[test]
    fn the_cache_is_bound_to_the_stored_hash() {
        // Two configs with the same user and password but different hashes
        // share nothing; within one, a tag made for another hash fails.
        let auth = alice("s3cret");
        let other = bcrypt::hash("s3cret", 4).unwrap();
        let tag = hmac::sign(&auth.key, &tag_message("alice", "s3cret", &other));
        *lock(&auth.users["alice"].verified) = Some(tag);
        let (release, held) = saturate(&auth);
        assert_eq!(
            poll_once(auth.check(Some(&b64("alice:s3cret")), ip(1))),
            Some(Outcome::Throttled),
            "a tag for another hash is no hit"
        );
        drop(release);
        drop(held);
        // A key is per BasicAuth: another instance's tag is no hit either.
        let second = alice("s3cret");
        assert_ne!(
            hmac::sign(&auth.key, b"m").as_ref(),
            hmac::sign(&second.key, b"m").as_ref()
        );
    }

    #[test]
    fn one_credential_per_peer_at_a_time_and_the_next_peer_goes_first() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let (release, gate) = mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        let (entered_tx, entered) = mpsc::channel::<String>();
        let auth = BasicAuth::with_verify(
            [("alice".to_string(), hash)].into(),
            Arc::new(move |pw: &str, _: &str| {
                entered_tx.send(pw.to_string()).unwrap();
                let _ = gate.lock().unwrap().recv();
                pw == "s3cret"
            }),
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let auth = Arc::new(auth);
        let flood = ip(1);
        let a = auth.clone();
        let first = rt.spawn(async move { a.check(Some(&b64("alice:w1")), flood).await });
        assert_eq!(entered.recv().unwrap(), "w1");
        // The same peer, while its first guess is checked: 429 at once.
        assert_eq!(
            poll_once(auth.check(Some(&b64("alice:w2")), flood)),
            Some(Outcome::Throttled)
        );
        // The same address as an IPv4-mapped IPv6 one is the same peer.
        assert_eq!(
            poll_once(auth.check(Some(&b64("alice:w3")), "::ffff:192.0.2.1".parse().unwrap())),
            Some(Outcome::Throttled)
        );
        // Another peer gets the other thread.
        let a = auth.clone();
        let scraper = rt.spawn(async move { a.check(Some(&b64("alice:s3cret")), ip(2)).await });
        assert_eq!(entered.recv().unwrap(), "s3cret");
        drop(release);
        assert_eq!(
            rt.block_on(first).unwrap(),
            Outcome::Refused(Reason::WrongPassword)
        );
        assert_eq!(rt.block_on(scraper).unwrap(), Outcome::Allowed);
        let text = auth.exposition();
        assert!(text.contains("{reason=\"throttled\"} 2\n"), "{text}");
        assert!(text.contains("{reason=\"wrong_password\"} 1\n"), "{text}");
    }

    #[test]
    fn a_panicking_check_is_an_error_not_a_wrong_password() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let auth = BasicAuth::with_verify(
            [("alice".to_string(), hash)].into(),
            Arc::new(|_: &str, _: &str| panic!("bcrypt exploded")),
        );
        let got = block_on(auth.check(Some(&b64("alice:s3cret")), ip(1)));
        match got {
            Outcome::Failed(m) => assert!(m.contains("bcrypt exploded"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(auth.exposition().contains("{reason=\"error\"} 1\n"));
        // The thread survives the panic and the peer's turn is freed.
        assert!(matches!(
            block_on(auth.check(Some(&b64("alice:s3cret")), ip(1))),
            Outcome::Failed(_)
        ));
    }

    #[test]
    fn reasons_are_counted_and_every_one_is_shown() {
        let auth = alice("s3cret");
        let zero = auth.exposition();
        for r in Reason::ALL {
            assert!(
                zero.contains(&format!("{{reason=\"{}\"}} 0\n", r.as_str())),
                "{zero}"
            );
        }
        for (header, want) in [
            (None, Reason::Missing),
            (Some(b"Bearer x".to_vec()), Reason::Malformed),
            (Some(b64("nocolon")), Reason::Malformed),
            (Some(b64("bob:s3cret")), Reason::UnknownUser),
            (Some(b64("alice:nope")), Reason::WrongPassword),
        ] {
            assert_eq!(
                block_on(auth.check(header.as_deref(), ip(1))),
                Outcome::Refused(want)
            );
        }
        let text = auth.exposition();
        for r in ["missing", "unknown_user", "wrong_password"] {
            assert!(text.contains(&format!("{{reason=\"{r}\"}} 1\n")), "{text}");
        }
        assert!(text.contains("{reason=\"malformed\"} 2\n"), "{text}");
        assert!(
            !text.contains("alice") && !text.contains("192.0.2"),
            "{text}"
        );
    }

    #[test]
    fn unknown_users_cost_a_dummy_bcrypt_at_the_configured_cost() {
        let hash = bcrypt::hash("s3cret", 5).unwrap();
        let auth = BasicAuth::new([("alice".to_string(), hash)].into());
        assert!(auth.dummy.starts_with("$2") && auth.dummy.contains("$05$"));
        let (tx, rx) = mpsc::channel();
        let auth = BasicAuth::with_verify(
            auth.users
                .iter()
                .map(|(n, u)| (n.clone(), u.hash.clone()))
                .collect(),
            Arc::new(move |pw: &str, hash: &str| {
                tx.send(hash.to_string()).unwrap();
                bcrypt_verify(pw, hash)
            }),
        );
        assert_eq!(
            block_on(auth.check(Some(&b64("mallory:s3cret")), ip(1))),
            Outcome::Refused(Reason::UnknownUser)
        );
        assert_eq!(rx.recv().unwrap(), auth.dummy, "checked against the dummy");
    }

    #[test]
    fn peers_group_by_address_and_ipv6_prefix() {
        let k = |s: &str| peer_key(s.parse().unwrap());
        assert_eq!(k("2001:db8::1"), k("2001:db8::ffff:1"));
        assert_ne!(k("2001:db8::1"), k("2001:db8:0:1::1"));
        assert_eq!(k("::ffff:10.0.0.1"), k("10.0.0.1"));
        assert_ne!(k("10.0.0.1"), k("10.0.0.2"));
    }

    #[test]
    fn basic_header_parsing() {
        assert_eq!(
            parse_basic(b"Basic YWxpY2U6c2VjcmV0"),
            Some(("alice".into(), "secret".into()))
        );
        assert_eq!(
            parse_basic(b"basic YWxpY2U6OmE="),
            Some(("alice".into(), ":a".into()))
        );
        assert_eq!(parse_basic(b"Bearer x"), None);
        assert_eq!(parse_basic(b"Basic !!!"), None);
        assert_eq!(parse_basic(b"Basic YWxpY2U="), None, "no colon");
    }
}
