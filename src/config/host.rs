//! What a configuration load asks of the host beyond the file: whether
//! allowlist `user:` names exist ([`UserCheck`], one lookup thread at a
//! time, bounded by a deadline: NSS or LDAP may hang) and who can write
//! the directories of `exe:` globs ([`DirWriters`]). Both come in as a
//! value, [`LoadChecks`], that the caller builds from the platform
//! (`cli`); nothing here reads the OS itself. [`Config::load`] reads the
//! file, parses it ([`Config::parse`], the parent module) and runs them.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Config, ConfigError, ConfigWarning, USER_CHECK_DEADLINE, one_line};
use crate::allowlist;
use crate::deadline::{self, Job, Next};
use crate::names;

/// Says who can write a directory: `Some(Ok(()))` root alone,
/// `Some(Err(why))` others too (or it cannot be read), `None` where the
/// platform cannot tell. The host's is
/// [`crate::platform::trust::exe_dir_writers`]; tests pass fakes.
pub type DirWriters<'a> = &'a dyn Fn(&Path) -> Option<Result<(), String>>;

/// What a load asks of the host beyond the file: whether allowlist `user:`
/// names exist ([`UserCheck`], kept across loads so that a hung user
/// database holds at most one thread) and who can write the directories of
/// `exe:` globs. Built once by the caller from the platform and passed to
/// every load (start, reload, `check`); [`LoadChecks::none`] checks
/// nothing (tests, fuzzing).
#[derive(Clone)]
pub struct LoadChecks {
    users: Option<Arc<UserCheck>>,
    dir_writers: Arc<DirWritersFn>,
}

/// A [`DirWriters`] kept across loads.
type DirWritersFn = dyn Fn(&Path) -> Option<Result<(), String>> + Send + Sync;

impl LoadChecks {
    /// Checks `user:` names with `lookup` (where the platform has one) and
    /// `exe:` directories with `dir_writers`.
    pub fn new(
        lookup: Option<UserLookup>,
        dir_writers: impl Fn(&Path) -> Option<Result<(), String>> + Send + Sync + 'static,
    ) -> LoadChecks {
        LoadChecks {
            users: lookup.map(|l| Arc::new(UserCheck::new(l))),
            dir_writers: Arc::new(dir_writers),
        }
    }

    /// Checks nothing: no user lookup, no directory can be judged.
    pub fn none() -> LoadChecks {
        LoadChecks::new(None, |_: &Path| None)
    }
}

impl fmt::Debug for LoadChecks {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("LoadChecks")
            .field("users", &self.users.is_some())
            .finish_non_exhaustive()
    }
}

/// Directories any user can write on most hosts: an `exe:` glob whose
/// `*` reaches below one of them matches what a user put there.
const WRITABLE_BY_ALL: [&str; 3] = ["/tmp", "/var/tmp", "/dev/shm"];

/// Looks an account up by name: `Ok(true)` when it exists, `Ok(false)`
/// when the user database says there is no such account, `Err` when the
/// lookup failed. May block (NSS, LDAP).
pub type UserLookup = Arc<dyn Fn(&str) -> Result<bool, String> + Send + Sync>;

/// The allowlist user check across loads: the lookup, run on a thread of
/// its own ([`crate::deadline`]), and that thread while it has not
/// answered. At most one lookup thread is outstanding: a load while the
/// previous lookup still hangs (NSS or LDAP down) starts no other one and
/// says so, so that reloads against a hung user database cannot pile up
/// threads.
pub struct UserCheck {
    lookup: UserLookup,
    /// The lookup thread of an earlier load that has not finished, and
    /// when it started.
    outstanding: Mutex<Option<(Job<UserAnswer>, Instant)>>,
    /// Test hook: start lookup threads with this stack size (a huge one
    /// makes the OS refuse the thread).
    #[cfg(test)]
    stack_size: Option<usize>,
}

type UserAnswer = (String, Result<bool, String>);

/// Why a name has no answer from the user database.
enum NoAnswer {
    /// The lookup thread could not be started.
    Spawn(String),
    /// The database did not answer by the deadline.
    TimedOut(Duration),
    /// The lookup of an earlier load still hangs; no other was started.
    Busy(Duration),
    /// The lookup thread ended without answering (a panic in the lookup).
    Ended,
}

impl UserCheck {
    pub fn new(lookup: UserLookup) -> UserCheck {
        UserCheck {
            lookup,
            outstanding: Mutex::new(None),
            #[cfg(test)]
            stack_size: None,
        }
    }

    /// Answers for `names` by `deadline` (a name missing from the answer
    /// has none), or why there are none at all.
    fn answers(
        &self,
        names: &[String],
        deadline: Duration,
    ) -> Result<HashMap<String, Result<bool, String>>, NoAnswer> {
        let mut outstanding = self.outstanding.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((job, since)) = outstanding.as_ref() {
            // Answers to an earlier load's names are of no use now; what
            // matters is whether that thread has ended.
            loop {
                match job.try_next() {
                    Next::Value(_) => continue,
                    Next::Pending => return Err(NoAnswer::Busy(since.elapsed())),
                    Next::Ended => break,
                }
            }
            *outstanding = None;
        }
        let resolver = self.lookup.clone();
        let batch = names.to_vec();
        let work = move |tx: std::sync::mpsc::Sender<UserAnswer>| {
            for name in batch {
                let answer = resolver(&name);
                if tx.send((name, answer)).is_err() {
                    return;
                }
            }
        };
        let builder = std::thread::Builder::new();
        #[cfg(test)]
        let builder = match self.stack_size {
            Some(n) => builder.stack_size(n),
            None => builder,
        };
        let started = Instant::now();
        let job = deadline::spawn_stream_on(builder, "user-check", work)
            .map_err(|e| NoAnswer::Spawn(e.to_string()))?;
        let until = started + deadline;
        let mut answers = HashMap::new();
        while answers.len() < names.len() {
            match job.next_until(until) {
                Next::Value((name, answer)) => {
                    answers.insert(name, answer);
                }
                Next::Pending => {
                    *outstanding = Some((job, started));
                    if answers.is_empty() {
                        return Err(NoAnswer::TimedOut(deadline));
                    }
                    return Ok(answers);
                }
                Next::Ended => {
                    if answers.is_empty() {
                        return Err(NoAnswer::Ended);
                    }
                    return Ok(answers);
                }
            }
        }
        Ok(answers)
    }
}

impl Config {
    /// Reads and checks `path`, or gives the built-in configuration when
    /// there is none: the one place a configuration is loaded.
    pub fn load_or_builtin(
        path: Option<&Path>,
        checks: &LoadChecks,
    ) -> Result<Config, ConfigError> {
        match path {
            Some(p) => Config::load(p, checks),
            None => Ok(Config::builtin()),
        }
    }

    /// Reads and checks a configuration file, then runs `checks`: the
    /// allowlist's user names against the user database and who can write
    /// the directories of `exe:` globs ([`Config::check_exe_dirs`]). What
    /// they find is logged, once per load, and kept in `warnings`.
    pub fn load(path: &Path, checks: &LoadChecks) -> Result<Config, ConfigError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: display.clone(),
            source,
        })?;
        let mut cfg = Config::parse(&text, &display)?;
        cfg.source = Some(path.to_path_buf());
        if let Some(check) = &checks.users {
            let found = cfg.check_users(check, &display, USER_CHECK_DEADLINE);
            cfg.warnings.extend(found);
        }
        let found = cfg.check_exe_dirs(&display, &*checks.dir_writers);
        cfg.warnings.extend(found);
        for w in &cfg.warnings {
            log::warn!(
                file = w.path.as_str(), line = w.line, column = w.column, key = w.key.as_str();
                "configuration: {}", w.message
            );
        }
        Ok(cfg)
    }

    /// Looks up every allowlist `user:` name, waiting for the user
    /// database no longer than `deadline` in all. A name it says does not
    /// exist, or that it could not answer for, is a warning naming the
    /// file, line and key: the entry can never match (or cannot be judged
    /// while the database is down). Never refuses the file: NSS may be
    /// down only for now.
    pub fn check_users(
        &self,
        check: &UserCheck,
        path: &str,
        deadline: Duration,
    ) -> Vec<ConfigWarning> {
        let mut names: Vec<String> = self.user_names.iter().map(|u| u.name.clone()).collect();
        names.sort();
        names.dedup();
        if names.is_empty() {
            return Vec::new();
        }
        let (answers, none) = match check.answers(&names, deadline) {
            Ok(a) => (a, NoAnswer::TimedOut(deadline)),
            Err(why) => (HashMap::new(), why),
        };
        let mut out = Vec::new();
        for u in &self.user_names {
            let message = match answers.get(&u.name) {
                Some(Ok(true)) => continue,
                Some(Ok(false)) => format!(
                    "user {:?} does not exist on this host (the user database has no such account): this entry can never match; \
                     the file is loaded anyway",
                    u.name
                ),
                Some(Err(e)) => format!(
                    "cannot tell whether user {:?} exists: the user lookup failed ({}); listeners it would allow read \"unknown\" until it answers",
                    u.name,
                    one_line(e)
                ),
                None => format!(
                    "cannot tell whether user {:?} exists: {}; listeners it would allow read \"unknown\" until it answers",
                    u.name,
                    match &none {
                        NoAnswer::TimedOut(d) => format!(
                            "the user database did not answer within {} s (NSS or LDAP down?)",
                            d.as_secs_f64()
                        ),
                        NoAnswer::Busy(d) => format!(
                            "NSS has not answered the previous lookup (started {:.0} s ago), so no other was started (NSS or LDAP down?)",
                            d.as_secs_f64()
                        ),
                        NoAnswer::Spawn(e) => format!("the user lookup could not run: {e}"),
                        NoAnswer::Ended => {
                            "the user lookup ended without an answer (it panicked)".to_string()
                        }
                    }
                ),
            };
            out.push(ConfigWarning {
                path: path.to_string(),
                line: u.line,
                column: u.column,
                key: u.key.clone(),
                message,
            });
        }
        out
    }

    /// Asks `writers` about the fixed directory part of every `exe:` glob
    /// (what comes before its first wildcard, up to the last `/`). One
    /// users other than root can write is a warning naming the file, line,
    /// column and key: any such user can put a program there that the
    /// entry allows. So is a glob with no fixed directory (`*CtxGfx*`), and
    /// one whose leading `*` (which crosses `/`) reaches into a directory
    /// every user can write (`/tmp`). Never refuses the file.
    pub fn check_exe_dirs(&self, path: &str, writers: DirWriters<'_>) -> Vec<ConfigWarning> {
        let mut out = Vec::new();
        for e in &self.exe_globs {
            let glob = names::HOST.exe_glob(&e.glob);
            let message = match allowlist::exe_fixed_dir(&glob) {
                None => Some(format!(
                    "exe: {:?} names no fixed directory, so it matches a program in any directory, one any user can write included (a copy in /tmp): start it with the directory the program is installed in, one only root can write",
                    e.glob
                )),
                Some((dir, rest)) => match writers(Path::new(&dir)) {
                    Some(Err(why)) => Some(format!(
                        "exe: {:?}: users other than root can write its directory {dir} ({why}), so they can put a program there that this entry allows: install the program in a directory only root can write",
                        e.glob
                    )),
                    _ if rest.starts_with('*') => WRITABLE_BY_ALL
                        .iter()
                        .filter(|w| under(w, &dir))
                        .find_map(|w| match writers(Path::new(w)) {
                            Some(Err(why)) => Some(format!(
                                "exe: {:?}: its `*` crosses directories, so it matches below {w} ({why}), where any user can put a program: give the directory the program is installed in",
                                e.glob
                            )),
                            _ => None,
                        }),
                    _ => None,
                },
            };
            if let Some(message) = message {
                out.push(ConfigWarning {
                    path: path.to_string(),
                    line: e.line,
                    column: e.column,
                    key: e.key.clone(),
                    message,
                });
            }
        }
        out
    }
}

/// Whether the path `inner` is `outer` or lies below it.
fn under(inner: &str, outer: &str) -> bool {
    outer == "/"
        || inner == outer
        || inner
            .strip_prefix(outer.trim_end_matches('/'))
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "ranges.yml")
    }

    fn lookup(f: impl Fn(&str) -> Result<bool, String> + Send + Sync + 'static) -> UserLookup {
        Arc::new(f)
    }

    #[test]
    fn allowlist_users_that_do_not_exist_are_warned_about_with_their_position() {
        let c = parse(
            "ranges:\n  - name: a\n    ports: 1\n    expected:\n      - user: root\n      - process: x\n        user: nosuchuser\n      - user: 1000\n      - user: ldapuser\n",
        )
        .unwrap();
        let names: Vec<&str> = c.user_names.iter().map(|u| u.name.as_str()).collect();
        if cfg!(windows) {
            // Windows has no uids: "1000" is an account name there.
            assert_eq!(names, ["root", "nosuchuser", "1000", "ldapuser"]);
            return;
        }
        assert_eq!(
            names,
            ["root", "nosuchuser", "ldapuser"],
            "uids need no lookup"
        );
        let w = c.check_users(
            &UserCheck::new(lookup(|n| match n {
                "root" => Ok(true),
                "nosuchuser" => Ok(false),
                _ => Err("LDAP server unreachable".into()),
            })),
            "ranges.yml",
            Duration::from_secs(5),
        );
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(
            (w[0].line, w[0].key.as_str()),
            (7, "ranges[0].expected[1].user")
        );
        let shown = w[0].to_string();
        assert!(
            shown.starts_with(
                "ranges.yml:7:15: ranges[0].expected[1].user: user \"nosuchuser\" does not exist"
            ),
            "{shown}"
        );
        assert!(shown.contains("can never match"), "{shown}");
        assert_eq!(w[1].key, "ranges[0].expected[3].user");
        assert!(
            w[1].message
                .contains("the user lookup failed (LDAP server unreachable)"),
            "{}",
            w[1].message
        );
    }

    #[test]
    fn a_hanging_user_database_is_a_warning_after_the_deadline() {
        let c = parse("ranges:\n  - name: a\n    ports: 1\n    expected:\n      - user: slow\n")
            .unwrap();
        let started = std::time::Instant::now();
        let w = c.check_users(
            &UserCheck::new(lookup(|_| {
                std::thread::sleep(Duration::from_secs(30));
                Ok(true)
            })),
            "ranges.yml",
            Duration::from_millis(200),
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(w.len(), 1);
        assert!(
            w[0].message.contains("did not answer within 0.2 s"),
            "{}",
            w[0].message
        );
    }

    #[test]
    fn loads_while_the_user_database_hangs_leave_one_lookup_thread() {
        let c = parse("ranges:\n  - name: a\n    ports: 1\n    expected:\n      - user: slow\n")
            .unwrap();
        // Every lookup blocks until released; `inside` counts the lookups
        // running now, one per thread stuck in NSS.
        let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        let (i, g) = (inside.clone(), gate.clone());
        let check = UserCheck::new(lookup(move |_| {
            i.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = g.lock().unwrap().recv();
            i.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            Ok(true)
        }));
        let w = c.check_users(&check, "ranges.yml", Duration::from_millis(50));
        assert!(
            w[0].message.contains("did not answer within 0.05 s"),
            "{w:?}"
        );
        for _ in 0..10 {
            let w = c.check_users(&check, "ranges.yml", Duration::from_millis(50));
            assert_eq!(w.len(), 1);
            assert!(
                w[0].message
                    .contains("NSS has not answered the previous lookup"),
                "{}",
                w[0].message
            );
        }
        let running = inside.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(running, 1, "11 loads, {running} lookups hanging");
        // Once it answers, a later load looks up afresh (and is answered).
        release.send(()).unwrap();
        release.send(()).unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let w = c.check_users(&check, "ranges.yml", Duration::from_secs(10));
            if w.is_empty() {
                break;
            }
            assert!(w[0].message.contains("previous lookup"), "{w:?}");
            assert!(Instant::now() < until, "the lookup never ended");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(inside.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[test]
    fn a_lookup_thread_that_cannot_start_is_said_as_such() {
        let c = parse("ranges:\n  - name: a\n    ports: 1\n    expected:\n      - user: someone\n")
            .unwrap();
        let mut check = UserCheck::new(lookup(|_| Ok(true)));
        // A stack larger than any address space: the OS refuses the thread.
        check.stack_size = Some(1 << 60);
        let w = c.check_users(&check, "ranges.yml", Duration::from_secs(5));
        assert_eq!(w.len(), 1);
        let m = &w[0].message;
        assert!(
            m.contains("the user lookup could not run: cannot start a user-check thread: "),
            "{m}"
        );
        assert!(!m.contains("did not answer"), "{m}");
    }

    #[test]
    fn exe_globs_in_directories_others_can_write_are_warned_about() {
        let text = "ranges:\n  - name: fh\n    ports: 3224-3324\n    expected:\n      - exe: /opt/citrix/*\n      - exe: /home/u/bin/x\n      - exe: \"*CtxGfx*\"\n      - exe: /*\n      - exe: /usr/bin/x?\n";
        let c = Config::parse(text, "r.yml").unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let asked = std::cell::RefCell::new(Vec::new());
        let writers = |d: &Path| {
            let d = d.to_str().unwrap().to_string();
            let answer = match d.as_str() {
                "/home/u/bin" => Err("/home/u is owned by uid 1000".to_string()),
                "/tmp" => Err("/tmp is writable by others (mode 1777)".to_string()),
                _ => Ok(()),
            };
            Some(answer)
        };
        let w: Vec<String> = c
            .check_exe_dirs("r.yml", &|d: &Path| {
                asked.borrow_mut().push(d.to_path_buf());
                writers(d)
            })
            .iter()
            .map(|w| w.to_string())
            .collect();
        assert_eq!(w.len(), 3, "{w:#?}");
        assert!(
            w[0].starts_with("r.yml:6:14: ranges[0].expected[1].exe: exe: \"/home/u/bin/x\": users other than root can write its directory /home/u/bin (/home/u is owned by uid 1000)"),
            "{w:#?}"
        );
        assert!(
            w[1].starts_with(
                "r.yml:7:14: ranges[0].expected[2].exe: exe: \"*CtxGfx*\" names no fixed directory"
            ),
            "{w:#?}"
        );
        assert!(
            w[2].starts_with("r.yml:8:14: ranges[0].expected[3].exe: exe: \"/*\": its `*` crosses directories, so it matches below /tmp"),
            "{w:#?}"
        );
        assert!(asked.borrow().contains(&PathBuf::from("/opt/citrix")));
        // A platform that cannot tell (Windows) warns of nothing it cannot see.
        let c = Config::parse(
            "ranges:\n  - name: fh\n    ports: 3224-3324\n    expected:\n      - exe: /home/u/bin/x\n",
            "r.yml",
        )
        .unwrap();
        assert!(c.check_exe_dirs("r.yml", &|_: &Path| None).is_empty());
    }

    #[test]
    fn load_warns_with_the_checker_it_is_given() {
        let dir = std::env::temp_dir().join(format!("portrange-exe-warn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("r.yml");
        std::fs::write(
            &file,
            "ranges:\n  - name: fh\n    ports: 3224-3324\n    expected:\n      - exe: /srv/app/*\n        user: 0\n",
        )
        .unwrap();
        let c = Config::load(
            &file,
            &LoadChecks::new(None, |_: &Path| Some(Err("/srv is owned by uid 7".into()))),
        )
        .unwrap();
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert_eq!(c.warnings[0].key, "ranges[0].expected[0].exe");
        let c = Config::load(&file, &LoadChecks::new(None, |_: &Path| Some(Ok(())))).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        // The user lookup it is given runs on the allowlist's names.
        std::fs::write(
            &file,
            "ranges:\n  - name: fh\n    ports: 3224-3324\n    expected:\n      - process: CtxGfx\n        user: citrix\n",
        )
        .unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let seen = asked.clone();
        let checks = LoadChecks::new(
            Some(Arc::new(move |n: &str| {
                seen.lock().unwrap().push(n.to_string());
                Ok(false)
            })),
            |_: &Path| None,
        );
        let c = Config::load(&file, &checks).unwrap();
        assert_eq!(*asked.lock().unwrap(), ["citrix"]);
        assert!(
            c.warnings
                .iter()
                .any(|w| w.key == "ranges[0].expected[0].user"),
            "{:?}",
            c.warnings
        );
        let c = Config::load(&file, &LoadChecks::none()).unwrap();
        assert!(
            !c.warnings.iter().any(|w| w.key.ends_with(".user")),
            "{:?}",
            c.warnings
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
