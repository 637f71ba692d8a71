//! User names for socket uids, cached, with lookups that can never hold up
//! a collection past its deadline. The platform's resolver (on Linux
//! `getpwuid_r`, so NSS sources such as LDAP work) may block; it runs on a
//! lookup thread of its own, at most one at a time, and a collection waits
//! for its answers only until the deadline. A uid it has not answered by
//! then is [`UserName::Unresolved`]: shown as its number and judged
//! "unknown" by `user: <name>` entries, never "unexpected". A failed lookup
//! is not cached (the next collection asks again); a name is kept for ten
//! minutes and a "no such user" for one. The thread is run through
//! [`crate::deadline`].

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::deadline::{self, Job, Next};
use crate::platform::{UserLookup, UserResolver};

const NAME_TTL: Duration = Duration::from_secs(600);
const NO_ENTRY_TTL: Duration = Duration::from_secs(60);
/// Cached uids beyond this are dropped wholesale.
const MAX_CACHED: usize = 4096;

type Answer = (u32, Result<UserLookup, String>);

/// A socket's user, as far as it is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserName {
    Known(String),
    /// The user database has no entry for the uid.
    NoEntry,
    /// The lookup failed or has not answered yet.
    Unresolved,
}

pub struct UserNames {
    resolver: UserResolver,
    cache: HashMap<u32, (UserLookup, Instant)>,
    /// The lookup thread's answers, and the uids it has yet to answer.
    inflight: Option<(Job<Answer>, HashSet<u32>)>,
    /// uids whose last lookup failed, so the failure is logged once.
    failing: HashSet<u32>,
}

impl UserNames {
    pub fn new(resolver: UserResolver) -> UserNames {
        UserNames {
            resolver,
            cache: HashMap::new(),
            inflight: None,
            failing: HashSet::new(),
        }
    }

    /// Makes sure every uid in `uids` is looked up, waiting for answers no
    /// later than `deadline`.
    pub fn resolve(&mut self, uids: &HashSet<u32>, deadline: Instant) {
        let now = Instant::now();
        self.drain(None);
        let needed: Vec<u32> = uids
            .iter()
            .copied()
            .filter(|u| self.cache.get(u).is_none_or(|(_, exp)| *exp <= now))
            .collect();
        if needed.is_empty() {
            return;
        }
        if self.inflight.is_none() {
            if self.cache.len() + needed.len() > MAX_CACHED {
                self.cache.clear();
            }
            let resolver = self.resolver.clone();
            let batch = needed.clone();
            let pending: HashSet<u32> = needed.iter().copied().collect();
            let spawned = deadline::spawn_stream("user-lookup", move |tx| {
                for uid in batch {
                    if tx.send((uid, resolver(uid))).is_err() {
                        return;
                    }
                }
            });
            match spawned {
                Ok(job) => self.inflight = Some((job, pending)),
                Err(e) => log::warn!("user names are not looked up this time: {e}"),
            }
        }
        let mut waiting: HashSet<u32> = needed.into_iter().collect();
        self.drain(Some((&mut waiting, deadline)));
    }

    /// Takes the lookup thread's answers: those already there, or (with a
    /// wait set) until every uid in it is answered or the deadline passes.
    fn drain(&mut self, mut wait: Option<(&mut HashSet<u32>, Instant)>) {
        let Some((job, mut pending)) = self.inflight.take() else {
            return;
        };
        loop {
            if pending.is_empty() {
                return; // the batch is answered; the thread is ending
            }
            let got = match &wait {
                Some((set, deadline)) if !set.is_empty() => job.next_until(*deadline),
                _ => job.try_next(),
            };
            match got {
                Next::Value((uid, answer)) => {
                    pending.remove(&uid);
                    if let Some((set, _)) = wait.as_mut() {
                        set.remove(&uid);
                    }
                    self.store(uid, answer);
                }
                Next::Pending => {
                    self.inflight = Some((job, pending));
                    return;
                }
                Next::Ended => {
                    log::warn!(
                        "the user lookup thread ended without answering for uids {:?} (it panicked); they are asked again on the next scrape",
                        sorted(&pending)
                    );
                    return;
                }
            }
        }
    }

    fn store(&mut self, uid: u32, answer: Result<UserLookup, String>) {
        let now = Instant::now();
        match answer {
            Ok(found) => {
                self.failing.remove(&uid);
                let ttl = match found {
                    UserLookup::Name(_) => NAME_TTL,
                    UserLookup::NoEntry => NO_ENTRY_TTL,
                };
                self.cache.insert(uid, (found, now + ttl));
            }
            Err(e) => {
                if self.failing.insert(uid) {
                    log::warn!(
                        "user lookup for uid {uid} failed, retrying on the next scrape: {e}"
                    );
                }
            }
        }
    }

    /// The name of `uid` as far as it is known now.
    pub fn get(&self, uid: u32) -> UserName {
        match self.cache.get(&uid) {
            Some((UserLookup::Name(n), _)) => UserName::Known(n.clone()),
            Some((UserLookup::NoEntry, _)) => UserName::NoEntry,
            None => UserName::Unresolved,
        }
    }
}

fn sorted(uids: &HashSet<u32>) -> Vec<u32> {
    let mut v: Vec<u32> = uids.iter().copied().collect();
    v.sort_unstable();
    v
}

/// The `user` label value: the name, or the uid as a number (`unknown`
/// where sockets carry no uid).
pub fn label(name: &UserName, uid: u32) -> String {
    match name {
        UserName::Known(n) => n.clone(),
        UserName::NoEntry | UserName::Unresolved if uid == crate::platform::NO_UID => {
            "unknown".to_string()
        }
        UserName::NoEntry | UserName::Unresolved => uid.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::mpsc;

    fn set(uids: &[u32]) -> HashSet<u32> {
        uids.iter().copied().collect()
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn a_failed_lookup_is_retried_not_cached() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let mut u = UserNames::new(Arc::new(move |uid| {
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                Err("LDAP server unreachable".into())
            } else {
                Ok(UserLookup::Name(format!("user{uid}")))
            }
        }));
        u.resolve(&set(&[1001]), soon());
        assert_eq!(u.get(1001), UserName::Unresolved);
        u.resolve(&set(&[1001]), soon());
        assert_eq!(u.get(1001), UserName::Known("user1001".into()));
        // Cached now: no third call.
        u.resolve(&set(&[1001]), soon());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn no_entry_is_remembered_as_such() {
        let mut u = UserNames::new(Arc::new(|_| Ok(UserLookup::NoEntry)));
        u.resolve(&set(&[4_000_000_000]), soon());
        assert_eq!(u.get(4_000_000_000), UserName::NoEntry);
        assert_eq!(label(&u.get(4_000_000_000), 4_000_000_000), "4000000000");
    }

    #[test]
    fn a_hanging_lookup_never_holds_past_the_deadline() {
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = std::sync::Mutex::new(release_rx);
        let mut u = UserNames::new(Arc::new(move |uid| {
            if uid == 7 {
                let _ = release_rx.lock().unwrap().recv();
            }
            Ok(UserLookup::Name(format!("u{uid}")))
        }));
        let started = Instant::now();
        u.resolve(&set(&[7]), Instant::now() + Duration::from_millis(50));
        let waited = started.elapsed();
        assert!(waited < Duration::from_secs(2), "waited {waited:?}");
        assert_eq!(u.get(7), UserName::Unresolved);
        // While it hangs, another collection also returns by its deadline.
        let started = Instant::now();
        u.resolve(&set(&[7, 8]), Instant::now() + Duration::from_millis(50));
        assert!(started.elapsed() < Duration::from_secs(2));
        // Released: the answer arrives and a later collection takes it.
        release_tx.send(()).unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        while u.get(7) == UserName::Unresolved && Instant::now() < until {
            u.resolve(&set(&[7]), Instant::now() + Duration::from_millis(100));
        }
        assert_eq!(u.get(7), UserName::Known("u7".into()));
    }
}
