//! The YAML configuration: which port ranges to watch, on which protocols,
//! and which processes are allowed to listen there. Parsing keeps source
//! positions and key paths so that every refusal names the file, line,
//! column and key at fault (type errors included); validation turns the raw
//! document into the checked model ([`Config`]) that the rest of the
//! exporter reads. Validation refuses what would silently give wrong
//! numbers or never match: two ranges sharing ports on one protocol,
//! process names no process can have, quoted or YAML 1.1 booleans, and
//! per-port series on a huge range without an explicit `per_port: force`.
//! Allowlist users that do not exist, and `exe:` globs in directories
//! users other than root can write, are only warned about (the user
//! database may be down). What a load asks of the host comes in as a value,
//! [`LoadChecks`], that the caller builds from the platform (`cli`):
//! this module never reads the OS itself. [`UserCheck`] runs the user
//! lookup on one thread at a time, bounded by a deadline.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use regex::bytes::RegexBuilder;
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::allowlist::{self, KernelMatch, Matcher, NameMatch, UserMatch};
use crate::deadline::{self, Job, Next};
use crate::names;
use crate::ranges::{PortSet, Protocol};

/// Ranges at or below this many ports get per-port series unless the config
/// says otherwise.
pub const PER_PORT_DEFAULT_LIMIT: u32 = 1024;

/// Unexpected and unknown listeners itemized in `portrange_listener_info`
/// per range and protocol unless the config says otherwise.
pub const LISTENER_SERIES_DEFAULT_LIMIT: u32 = 100;

/// Above this many ports, `per_port: true` is refused: it takes
/// `per_port: force`, which acknowledges the series it costs.
pub const PER_PORT_FORCE_LIMIT: u32 = 4096;

/// Bytes one `portrange_port_in_use` sample takes in the exposition
/// (measured: 131,024 series made 8.5 MB).
const PER_PORT_SERIES_BYTES: u64 = 65;

/// How long the load waits for the user database to answer about
/// allowlist `user:` names.
pub const USER_CHECK_DEADLINE: Duration = Duration::from_secs(2);

/// A checked configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub ranges: Vec<RangeConfig>,
    /// Where it came from: a path, or `None` for the built-in default.
    pub source: Option<PathBuf>,
    /// Allowlist `user:` names with where they were written, for the check
    /// against the user database.
    pub user_names: Vec<UserRef>,
    /// What the load found questionable without refusing the file (logged
    /// when it was loaded; `check` shows them too).
    pub warnings: Vec<ConfigWarning>,
    /// Allowlist `exe:` globs with where they were written, for the check
    /// of who can write their directories.
    pub exe_globs: Vec<ExeRef>,
    /// The `ephemeral` collector's settings: from the command line, not
    /// the file (a reload keeps them).
    pub ephemeral: crate::ephemeral::Options,
}

/// An allowlist `exe:` glob, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExeRef {
    pub glob: String,
    pub line: u64,
    pub column: u64,
    pub key: String,
}

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

/// An allowlist `user:` given by name, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRef {
    pub name: String,
    pub line: u64,
    pub column: u64,
    pub key: String,
}

/// A finding that does not refuse the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigWarning {
    pub path: String,
    pub line: u64,
    pub column: u64,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.path, self.line, self.column, self.key, self.message
        )
    }
}

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

/// One watched range.
#[derive(Clone, Debug)]
pub struct RangeConfig {
    pub name: String,
    pub ports: PortSet,
    pub protocols: Vec<Protocol>,
    pub per_port: bool,
    /// At most this many unexpected or unknown listeners get a
    /// `portrange_listener_info` series, per protocol.
    pub max_listener_series: u32,
    pub expected: Vec<Matcher>,
}

/// The configuration file the Linux packages install and their service
/// reads; `check` reads it when no `--config.file` is given and it exists.
/// The Windows installer installs none.
pub fn default_file() -> Option<&'static Path> {
    if cfg!(windows) {
        None
    } else {
        Some(Path::new("/etc/portrange_exporter/ranges.yml"))
    }
}

/// A refused configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {key}: {message}")]
    Invalid {
        path: String,
        line: u64,
        column: u64,
        key: String,
        message: String,
    },
}

impl Config {
    /// The built-in configuration: the Citrix Framehawk range, UDP and TCP,
    /// with an empty allowlist.
    pub fn builtin() -> Config {
        Config {
            ranges: vec![RangeConfig {
                name: "framehawk".to_string(),
                ports: PortSet::from_intervals(vec![(3224, 3324)]),
                protocols: vec![Protocol::Udp, Protocol::Tcp],
                per_port: true,
                max_listener_series: LISTENER_SERIES_DEFAULT_LIMIT,
                expected: Vec::new(),
            }],
            source: None,
            user_names: Vec::new(),
            warnings: Vec::new(),
            exe_globs: Vec::new(),
            ephemeral: crate::ephemeral::Options::default(),
        }
    }

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

    /// Parses and checks configuration text; `path` only labels errors.
    pub fn parse(text: &str, path: &str) -> Result<Config, ConfigError> {
        let mut options = serde_saphyr::Options::default();
        // `yes`, `on` and friends are YAML 1.1 booleans; only true and false are.
        options.strict_booleans = true;
        let mut failed_at: Option<serde_path_to_error::Path> = None;
        let raw: Result<RawConfig, _> =
            serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
                serde_path_to_error::deserialize(de).map_err(|e| {
                    failed_at = Some(e.path().clone());
                    e.into_inner()
                })
            });
        let raw =
            raw.map_err(|e| newcomer_hint(from_yaml_error(&e, failed_at.as_ref(), path), text))?;
        validate(raw, path)
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

    /// Ranges watched on `protocol`.
    pub fn ranges_for(&self, protocol: Protocol) -> impl Iterator<Item = &RangeConfig> {
        self.ranges
            .iter()
            .filter(move |r| r.protocols.contains(&protocol))
    }

    /// The union of all ports watched on `protocol`: what the kernel filter
    /// lets through.
    pub fn watched_ports(&self, protocol: Protocol) -> PortSet {
        PortSet::union(self.ranges_for(protocol).map(|r| &r.ports))
    }
}

// ---------------------------------------------------------------------------
// The raw document, as written.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    ranges: Spanned<Vec<RawRange>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRange {
    name: Spanned<String>,
    ports: Spanned<RawPorts>,
    #[serde(default)]
    protocols: Option<Spanned<Vec<Spanned<RawProtocol>>>>,
    #[serde(default)]
    per_port: Option<Spanned<RawPerPort>>,
    #[serde(default)]
    max_listener_series: Option<u32>,
    #[serde(default)]
    expected: Vec<Spanned<RawExpected>>,
}

/// `per_port: true`, `false`, or `force` (per-port series on a range above
/// [`PER_PORT_FORCE_LIMIT`] ports). Quoted `"true"` is a string, not a
/// boolean, and is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RawPerPort {
    Bool(bool),
    Force,
}

impl<'de> Deserialize<'de> for RawPerPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawPerPort;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true, false or force")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawPerPort, E> {
                Ok(RawPerPort::Bool(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawPerPort, E> {
                match v {
                    "force" => Ok(RawPerPort::Force),
                    v => Err(E::custom(not_a_boolean(v, "true, false or force"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// The refusal for a string where a boolean belongs: a quoted `"true"`, or
/// YAML 1.1's `yes`/`no`/`on`/`off`, which YAML 1.2 reads as strings.
fn not_a_boolean(v: &str, want: &str) -> String {
    let lower = v.to_ascii_lowercase();
    match lower.as_str() {
        "true" | "false" => format!(
            "{v:?} is a quoted string, not a boolean: write {lower} without quotes (expected {want})"
        ),
        "yes" | "y" | "on" => {
            format!("{v:?} is not a boolean in YAML 1.2: write true (expected {want})")
        }
        "no" | "n" | "off" => {
            format!("{v:?} is not a boolean in YAML 1.2: write false (expected {want})")
        }
        _ => format!("{v:?} is not valid here: expected {want}"),
    }
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawProtocol {
    Tcp,
    Udp,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpected {
    #[serde(default)]
    process: Option<Spanned<String>>,
    #[serde(default)]
    exe: Option<Spanned<String>>,
    #[serde(default)]
    user: Option<Spanned<RawScalar>>,
    #[serde(default)]
    kernel: Option<Spanned<RawKernel>>,
}

/// `kernel: true` or `kernel: <device>`. A quoted `"true"` or a YAML 1.1
/// boolean (`yes`) is refused rather than taken for a device name.
enum RawKernel {
    Flag(bool),
    Device(String),
}

impl<'de> Deserialize<'de> for RawKernel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawKernel;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true or a tunnel device name")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawKernel, E> {
                Ok(RawKernel::Flag(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawKernel, E> {
                match v.to_ascii_lowercase().as_str() {
                    "true" | "false" | "yes" | "y" | "on" | "no" | "n" | "off" => {
                        Err(E::custom(not_a_boolean(v, "true or a tunnel device name")))
                    }
                    _ => Ok(RawKernel::Device(v.to_string())),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A scalar that may be written as a number or a string.
#[derive(Clone, Debug)]
struct RawScalar(String);

impl<'de> Deserialize<'de> for RawScalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawScalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or a string")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawScalar, E> {
                Ok(RawScalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawScalar, E> {
                Ok(RawScalar(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawScalar, E> {
                Ok(RawScalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `ports:` is one item (`3224` or `"3224-3324"`) or a list of items.
struct RawPorts(Vec<Spanned<RawScalar>>, Option<RawScalar>);

impl<'de> Deserialize<'de> for RawPorts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawPorts;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port, a range \"N-M\", or a list of those")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawPorts, E> {
                Ok(RawPorts(Vec::new(), Some(RawScalar(v.to_string()))))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawPorts, E> {
                Ok(RawPorts(Vec::new(), Some(RawScalar(v.to_string()))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawPorts, E> {
                Ok(RawPorts(Vec::new(), Some(RawScalar(v.to_string()))))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawPorts, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<RawScalar>>()? {
                    items.push(item);
                }
                Ok(RawPorts(items, None))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------
// Validation.

struct Errors<'a> {
    path: &'a str,
}

impl Errors<'_> {
    fn at<T>(
        &self,
        span: &Spanned<T>,
        key: impl Into<String>,
        message: impl fmt::Display,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_string(),
            line: span.referenced.line(),
            column: span.referenced.column(),
            key: key.into(),
            message: message.to_string(),
        }
    }
}

fn from_yaml_error(
    e: &serde_saphyr::Error,
    at: Option<&serde_path_to_error::Path>,
    path: &str,
) -> ConfigError {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    // The library's Display may add a source snippet over several lines;
    // keep the first line, which carries the message.
    let full = e.to_string();
    let first = full.lines().next().unwrap_or("invalid YAML").trim();
    // Drop the library's own "error: line N column M:" prefix: ours says it.
    let message = match first.strip_prefix("error: line ") {
        Some(rest) => rest
            .split_once(": ")
            .map(|(_, m)| m)
            .unwrap_or(rest)
            .to_string(),
        None => first.to_string(),
    };
    let parent = at.map(key_path).unwrap_or_default();
    let key = match named_key(&message) {
        Some(k) if parent.is_empty() => k,
        // An unknown key is already the last segment of the path.
        Some(k) if parent == k || parent.ends_with(&format!(".{k}")) => parent,
        Some(k) => format!("{parent}.{k}"),
        None if parent.is_empty() => "(document)".to_string(),
        None => parent,
    };
    ConfigError::Invalid {
        path: path.to_string(),
        line,
        column,
        key,
        message,
    }
}

/// Adds what to write to the parser's message for the mistakes a newcomer
/// makes first: an empty file, a bare list at the top level, keys indented
/// unevenly (or with tabs).
fn newcomer_hint(e: ConfigError, text: &str) -> ConfigError {
    let ConfigError::Invalid {
        path,
        line,
        column,
        key,
        message,
    } = e
    else {
        return e;
    };
    let content: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .collect();
    const EXAMPLE: &str = "ranges:\n  - name: framehawk\n    ports: 3224-3324";
    let hint = if content.is_empty() || content.iter().all(|(_, l)| l.trim() == "---") {
        Some(format!(
            "the file is empty: write at least one range under `ranges:`, for example {EXAMPLE:?}"
        ))
    } else if content[0].1.starts_with('-') {
        Some(format!(
            "the top level is a list, but it must be the key `ranges:` with the list indented under it: add a line `ranges:` first and indent the entries by two spaces, for example {EXAMPLE:?}"
        ))
    } else if let Some((n, _)) = content
        .iter()
        .find(|(_, l)| l.trim_start_matches(' ').starts_with('\t'))
    {
        Some(format!(
            "line {} is indented with a tab: YAML indents with spaces only",
            n + 1
        ))
    } else {
        uneven_keys(&content).map(|(n, k, want, got)| {
            format!(
                "`{k}:` on line {n} is indented {got} spaces where the keys of its entry are indented {want}: line the keys of one entry up under each other"
            )
        })
    };
    ConfigError::Invalid {
        path,
        line,
        column,
        key,
        message: match hint {
            Some(h) => format!("{message} ({h})"),
            None => message,
        },
    }
}

/// The first key of a list entry indented other than the entry's first
/// key (`- name:` at 4, `ports:` at 3): line number (from 1), key, the
/// entry's indentation and the key's.
fn uneven_keys(content: &[(usize, &str)]) -> Option<(usize, String, usize, usize)> {
    let mut entry: Option<(usize, usize)> = None; // (indent of the dash, indent of its keys)
    for (n, l) in content {
        let indent = l.len() - l.trim_start_matches(' ').len();
        let rest = &l[indent..];
        if let Some(after) = rest.strip_prefix("- ") {
            let keys = indent + 2 + (after.len() - after.trim_start_matches(' ').len());
            entry = Some((indent, keys));
            continue;
        }
        let Some((dash, keys)) = entry else { continue };
        if indent <= dash {
            // Back at the list's level or above: the entry has ended.
            entry = None;
            continue;
        }
        let key = rest.split_once(':').map(|(k, _)| k.trim()).filter(|k| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
        // Deeper lines belong to a key's value; only keys near the entry's
        // own indentation can be misaligned entry keys.
        if let Some(k) = key.filter(|_| indent != keys && indent < keys + 2) {
            return Some((n + 1, k.to_string(), keys, indent));
        }
    }
    None
}

/// A deserializer path as the README writes keys: `ranges[0].protocols`.
/// The fields `Spanned` wraps a value in are not keys of the document.
fn key_path(p: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in p.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                if matches!(key.as_str(), "value" | "referenced" | "defined")
                    || key.starts_with("__serde_saphyr")
                {
                    continue;
                }
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    out
}

/// Pulls the key out of serde's "unknown field `x`" and "missing field `x`" messages.
fn named_key(message: &str) -> Option<String> {
    for marker in ["unknown field `", "missing field `", "duplicate field `"] {
        if let Some(start) = message.find(marker) {
            let rest = &message[start + marker.len()..];
            return rest.find('`').map(|end| match &rest[..end] {
                // A key that is the empty string (`"": 1`) still needs a name.
                "" => "\"\"".to_string(),
                key => key.to_string(),
            });
        }
    }
    None
}

fn validate(raw: RawConfig, path: &str) -> Result<Config, ConfigError> {
    let err = Errors { path };
    if raw.ranges.value.is_empty() {
        return Err(err.at(
            &raw.ranges,
            "ranges",
            "the range list is empty: watch at least one range",
        ));
    }
    let mut ranges: Vec<RangeConfig> = Vec::with_capacity(raw.ranges.value.len());
    // Where each range's `ports:` was written, for overlap refusals.
    let mut ports_at: Vec<(u64, u64)> = Vec::with_capacity(raw.ranges.value.len());
    let mut user_names = Vec::new();
    let mut exe_globs = Vec::new();
    let mut warnings = Vec::new();
    for (i, r) in raw.ranges.value.into_iter().enumerate() {
        let key = |field: &str| format!("ranges[{i}].{field}");

        let name = r.name.value.clone();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(err.at(
                &r.name,
                key("name"),
                format!("{name:?} is not a valid range name: use [a-z0-9_]+"),
            ));
        }
        if ranges.iter().any(|other| other.name == name) {
            return Err(err.at(
                &r.name,
                key("name"),
                format!("duplicate range name {name:?}"),
            ));
        }

        let mut intervals = Vec::new();
        if let Some(single) = &r.ports.value.1 {
            let item =
                PortSet::parse_item(&single.0).map_err(|e| err.at(&r.ports, key("ports"), e))?;
            intervals.push(item);
        }
        for (j, item) in r.ports.value.0.iter().enumerate() {
            let parsed = PortSet::parse_item(&item.value.0)
                .map_err(|e| err.at(item, format!("ranges[{i}].ports[{j}]"), e))?;
            intervals.push(parsed);
        }
        if intervals.is_empty() {
            return Err(err.at(&r.ports, key("ports"), "the port list is empty"));
        }
        let ports = PortSet::from_intervals(intervals);

        let protocols = match &r.protocols {
            None => vec![Protocol::Udp, Protocol::Tcp],
            Some(list) => {
                if list.value.is_empty() {
                    return Err(err.at(
                        list,
                        key("protocols"),
                        "no protocols: give tcp, udp or both",
                    ));
                }
                let mut out = Vec::new();
                for (j, p) in list.value.iter().enumerate() {
                    let proto = match p.value {
                        RawProtocol::Tcp => Protocol::Tcp,
                        RawProtocol::Udp => Protocol::Udp,
                    };
                    if out.contains(&proto) {
                        return Err(err.at(
                            p,
                            format!("ranges[{i}].protocols[{j}]"),
                            format!("{proto} is listed twice"),
                        ));
                    }
                    out.push(proto);
                }
                out
            }
        };

        let mut expected = Vec::with_capacity(r.expected.len());
        for (j, entry) in r.expected.iter().enumerate() {
            let ekey = |field: &str| format!("ranges[{i}].expected[{j}].{field}");
            let e = &entry.value;
            if e.process.is_none() && e.exe.is_none() && e.user.is_none() && e.kernel.is_none() {
                return Err(err.at(
                    entry,
                    format!("ranges[{i}].expected[{j}]"),
                    "an allowlist entry must give at least one of process, exe, user, kernel",
                ));
            }
            let kernel = match &e.kernel {
                None => None,
                Some(k) => {
                    if e.process.is_some() || e.exe.is_some() || e.user.is_some() {
                        return Err(err.at(
                            k,
                            ekey("kernel"),
                            "kernel-held sockets have no process, exe or user: give kernel alone in its entry",
                        ));
                    }
                    match &k.value {
                        RawKernel::Flag(true) => Some(KernelMatch::Any),
                        RawKernel::Flag(false) => {
                            return Err(err.at(
                                k,
                                ekey("kernel"),
                                "kernel: false allows nothing; leave the entry out",
                            ));
                        }
                        RawKernel::Device(d) if d.trim().is_empty() => {
                            return Err(err.at(k, ekey("kernel"), "the device name is empty"));
                        }
                        RawKernel::Device(d) => Some(KernelMatch::Device(d.trim().to_string())),
                    }
                }
            };
            let process = match &e.process {
                None => None,
                Some(p) => {
                    Some(parse_name_match(&p.value).map_err(|m| err.at(p, ekey("process"), m))?)
                }
            };
            let exe = match &e.exe {
                None => None,
                Some(p) => {
                    let compiled = allowlist::compile_exe_glob(&p.value, &names::HOST)
                        .map_err(|m| err.at(p, ekey("exe"), m))?;
                    exe_globs.push(ExeRef {
                        glob: p.value.clone(),
                        line: p.referenced.line(),
                        column: p.referenced.column(),
                        key: ekey("exe"),
                    });
                    Some(compiled)
                }
            };
            if let Some(p) = e
                .process
                .as_ref()
                .filter(|_| e.exe.is_none() && e.user.is_none())
            {
                warnings.push(ConfigWarning {
                    path: path.to_string(),
                    line: p.referenced.line(),
                    column: p.referenced.column(),
                    key: ekey("process"),
                    message: format!(
                        "process: {:?} alone: any user who can run a program of that name satisfies this entry (a copy of any program, given that name, is one); \
                         add exe: with a directory only root can write, or user:",
                        p.value
                    ),
                });
            }
            let user = match &e.user {
                None => None,
                Some(u) => {
                    let parsed = parse_user(&u.value.0).map_err(|m| err.at(u, ekey("user"), m))?;
                    if let UserMatch::Name(n) = &parsed {
                        user_names.push(UserRef {
                            name: n.clone(),
                            line: u.referenced.line(),
                            column: u.referenced.column(),
                            key: ekey("user"),
                        });
                    }
                    Some(parsed)
                }
            };
            expected.push(Matcher {
                process,
                exe,
                user,
                kernel,
            });
        }

        let per_port = match &r.per_port {
            None => ports.len() <= PER_PORT_DEFAULT_LIMIT,
            Some(p) => match p.value {
                RawPerPort::Bool(false) => false,
                RawPerPort::Force => true,
                RawPerPort::Bool(true) if ports.len() <= PER_PORT_FORCE_LIMIT => true,
                RawPerPort::Bool(true) => {
                    let series = u64::from(ports.len()) * protocols.len() as u64;
                    let mb = (series * PER_PORT_SERIES_BYTES) as f64 / 1e6;
                    return Err(err.at(
                        p,
                        key("per_port"),
                        format!(
                            "per-port series on {} ports cost {series} series ({} per protocol) and about {mb:.1} MB per scrape; \
                             above {PER_PORT_FORCE_LIMIT} ports write per_port: force to accept that cost, or leave per_port out",
                            ports.len(),
                            ports.len()
                        ),
                    ));
                }
            },
        };

        // Two ranges sharing a port on one protocol would count it twice
        // (ports, listeners and every fleet sum).
        for (j, (other, &(oline, ocol))) in ranges.iter().zip(&ports_at).enumerate() {
            if let Some(proto) = protocols.iter().find(|p| other.protocols.contains(p)) {
                let shared = ports.intersect(&other.ports);
                if !shared.is_empty() {
                    return Err(err.at(
                        &r.ports,
                        key("ports"),
                        format!(
                            "{} overlaps range {:?} ({path}:{oline}:{ocol}: ranges[{j}].ports) on {proto} at {shared}: \
                             those ports would count twice; split the ranges or give them different protocols",
                            ports, other.name
                        ),
                    ));
                }
            }
        }
        ports_at.push((r.ports.referenced.line(), r.ports.referenced.column()));

        ranges.push(RangeConfig {
            name,
            ports,
            protocols,
            per_port,
            max_listener_series: r
                .max_listener_series
                .unwrap_or(LISTENER_SERIES_DEFAULT_LIMIT),
            expected,
        });
    }
    Ok(Config {
        ranges,
        source: None,
        user_names,
        warnings,
        exe_globs,
        ephemeral: crate::ephemeral::Options::default(),
    })
}

/// Whether the path `inner` is `outer` or lies below it.
fn under(inner: &str, outer: &str) -> bool {
    outer == "/"
        || inner == outer
        || inner
            .strip_prefix(outer.trim_end_matches('/'))
            .is_some_and(|rest| rest.starts_with('/'))
}

fn parse_name_match(text: &str) -> Result<NameMatch, String> {
    if text.is_empty() {
        return Err("the process name is empty".into());
    }
    if text.len() >= 2 && text.starts_with('/') && text.ends_with('/') {
        let pattern = &text[1..text.len() - 1];
        return RegexBuilder::new(&format!("^(?:{pattern})$"))
            .case_insensitive(names::HOST.case_insensitive)
            .build()
            .map(NameMatch::Regex)
            .map_err(|e| format!("bad regex {pattern:?}: {}", one_line(&e.to_string())));
    }
    // A process name is the executable's file name, which never holds a
    // slash: the entry could never match.
    if let Some(rest) = text.strip_prefix('/') {
        return Err(format!(
            "{text:?} starts with a slash but does not end with one, so it is a literal name, and a process name never contains a slash: \
             write a regex as /{rest}/, or match the executable's path with exe: (a glob such as /usr/bin/*)"
        ));
    }
    if text.contains('/') {
        return Err(format!(
            "{text:?} contains a slash, and a process name (the executable's file name) never does, so it can never match: \
             match the path with exe: \"*/{text}\", or write a regex between slashes"
        ));
    }
    if let Some(max) = names::HOST.name_max
        && text.len() > max
    {
        return Err(format!(
            "{text:?} is {} bytes, but the kernel reports at most {max} bytes of a process name, so it can never match; \
             match the path with exe: (e.g. exe: \"*/{text}\") or use a regex such as /{}.*/",
            text.len(),
            regex::escape(&text[..floor_char_boundary(text, max)])
        ));
    }
    Ok(NameMatch::Exact(text.as_bytes().to_vec()))
}

/// The largest char boundary at or below `i`.
fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn parse_user(text: &str) -> Result<UserMatch, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("the user is empty".into());
    }
    if names::HOST.numeric_user_is_uid() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<u32>()
            .map(UserMatch::Uid)
            .map_err(|_| format!("uid {text} is out of range"));
    }
    Ok(UserMatch::Name(text.to_string()))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "ranges.yml")
    }

    /// Asserts that `text` is refused at `line:column` for `key`, with a
    /// message containing `needle`.
    #[track_caller]
    fn refused(text: &str, line: u64, key: &str, needle: &str) {
        match parse(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(ConfigError::Invalid {
                path,
                line: l,
                key: k,
                message,
                column,
            }) => {
                let shown = format!("{path}:{l}:{column}: {k}: {message}");
                assert_eq!(path, "ranges.yml", "{shown}");
                assert_eq!(l, line, "{shown}");
                assert!(column > 0, "{shown}");
                assert_eq!(k, key, "{shown}");
                assert!(message.contains(needle), "{shown} lacks {needle:?}");
                assert!(!shown.contains('\n'), "{shown}");
                eprintln!("{shown}");
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    /// The mistakes a newcomer makes first are refused with what to write.
    #[test]
    fn newcomer_mistakes_say_what_to_write() {
        for empty in ["", "\n", "# nothing yet\n", "---\n"] {
            match parse(empty) {
                Err(e) => assert!(
                    e.to_string().contains("the file is empty: write at least one range under `ranges:`, for example \"ranges:\\n  - name: framehawk"),
                    "{e}"
                ),
                Ok(_) => panic!("accepted {empty:?}"),
            }
        }
        refused(
            "- name: mosh\n  ports: 60000-61000\n",
            1,
            "(document)",
            "it must be the key `ranges:` with the list indented under it: add a line `ranges:` first",
        );
        // A key one space left of its entry's keys.
        refused(
            "ranges:\n- name: mosh\n ports: 60000-61000\n",
            2,
            "ranges[0].ports",
            "`ports:` on line 3 is indented 1 spaces where the keys of its entry are indented 2",
        );
        // And one space right of them, deeper in the file.
        let text = "ranges:\n  - name: mosh\n    ports: 60000-61000\n   protocols: [udp]\n";
        match parse(text) {
            Err(e) => assert!(
                e.to_string().contains("`protocols:` on line 4 is indented 3 spaces where the keys of its entry are indented 4"),
                "{e}"
            ),
            Ok(_) => panic!("accepted"),
        }
        match parse("ranges:\n  - name: mosh\n\tports: 60000-61000\n") {
            Err(e) => assert!(
                e.to_string().contains("line 3 is indented with a tab"),
                "{e}"
            ),
            Ok(_) => panic!("accepted"),
        }
        // A well-indented file with a nested allowlist gets no such hint.
        let good = "ranges:\n  - name: a\n    ports: 1-2\n    expected:\n      - process: x\n        user: y\n    protocols: [udp]\n  - name: b\n    ports: 5-6\n";
        assert!(parse(good).is_ok());
        let bad_value = "ranges:\n  - name: a\n    ports: 1-2\n    expected:\n      - process: x\n        users: y\n";
        match parse(bad_value) {
            Err(e) => assert!(!e.to_string().contains("indented"), "{e}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn full_example_parses() {
        let cfg = parse(
            "ranges:\n  - name: framehawk\n    ports: 3224-3324\n    protocols: [udp, tcp]\n    per_port: true\n    expected:\n      - process: CtxGfx\n        exe: /opt/citrix/*\n        user: citrix\n  - name: mosh\n    ports: [60000-61000, 3000, \"4000\"]\n    protocols: [udp]\n",
        )
        .unwrap();
        assert_eq!(cfg.ranges.len(), 2);
        let fh = &cfg.ranges[0];
        assert_eq!(fh.name, "framehawk");
        assert_eq!(fh.ports.len(), 101);
        assert_eq!(fh.protocols, vec![Protocol::Udp, Protocol::Tcp]);
        assert!(fh.per_port);
        assert_eq!(fh.expected.len(), 1);
        assert_eq!(fh.expected[0].user, Some(UserMatch::Name("citrix".into())));
        let exe = fh.expected[0].exe.as_ref().unwrap();
        assert!(exe.regex.is_match(b"/opt/citrix/bin/CtxGfx"));
        assert!(!exe.regex.is_match(b"/usr/opt/citrix/x"));
        let mosh = &cfg.ranges[1];
        assert_eq!(mosh.ports.len(), 1001 + 2);
        assert!(mosh.per_port, "1003 ports is at most 1024");
        assert_eq!(mosh.protocols, vec![Protocol::Udp]);
    }

    #[test]
    fn defaults() {
        let cfg = parse(
            "ranges:\n  - name: big\n    ports: 30000-32767\n  - name: one\n    ports: 3224\n",
        )
        .unwrap();
        assert!(
            !cfg.ranges[0].per_port,
            "2768 ports is above the per-port limit"
        );
        assert_eq!(cfg.ranges[0].protocols, vec![Protocol::Udp, Protocol::Tcp]);
        assert_eq!(cfg.ranges[1].ports.len(), 1);
        assert!(cfg.ranges[1].per_port);
        let builtin = Config::builtin();
        assert_eq!(builtin.ranges[0].name, "framehawk");
        assert_eq!(builtin.ranges[0].ports.to_string(), "3224-3324");
        assert!(builtin.ranges[0].expected.is_empty());
    }

    #[test]
    fn watched_ports_are_the_union_per_protocol() {
        let cfg = parse("ranges:\n  - name: a\n    ports: 100-200\n    protocols: [tcp]\n  - name: b\n    ports: [150-250, 300]\n    protocols: [udp]\n  - name: c\n    ports: 251-260\n").unwrap();
        assert_eq!(
            cfg.watched_ports(Protocol::Tcp).to_string(),
            "100-200,251-260"
        );
        assert_eq!(
            cfg.watched_ports(Protocol::Udp).to_string(),
            "150-260,300",
            "c is watched on both protocols"
        );
    }

    #[test]
    fn port_zero() {
        refused(
            "ranges:\n  - name: a\n    ports: 0\n",
            3,
            "ranges[0].ports",
            "port 0",
        );
    }

    #[test]
    fn port_too_large() {
        refused(
            "ranges:\n  - name: a\n    ports: 3224-65536\n",
            3,
            "ranges[0].ports",
            "above 65535",
        );
        refused(
            "ranges:\n  - name: a\n    ports:\n      - 1\n      - 70000\n",
            5,
            "ranges[0].ports[1]",
            "above 65535",
        );
    }

    #[test]
    fn reversed_range() {
        refused(
            "ranges:\n  - name: a\n    ports: 3324-3224\n",
            3,
            "ranges[0].ports",
            "reversed",
        );
    }

    #[test]
    fn not_a_port() {
        refused(
            "ranges:\n  - name: a\n    ports: [\"12x\"]\n",
            3,
            "ranges[0].ports[0]",
            "not a port",
        );
        refused(
            "ranges:\n  - name: a\n    ports: -5\n",
            3,
            "ranges[0].ports",
            "port",
        );
    }

    #[test]
    fn duplicate_names() {
        refused(
            "ranges:\n  - name: a\n    ports: 1\n  - name: a\n    ports: 2\n",
            4,
            "ranges[1].name",
            "duplicate range name",
        );
    }

    #[test]
    fn bad_name() {
        refused(
            "ranges:\n  - name: Frame-Hawk\n    ports: 1\n",
            2,
            "ranges[0].name",
            "[a-z0-9_]+",
        );
    }

    #[test]
    fn no_protocols() {
        refused(
            "ranges:\n  - name: a\n    ports: 1\n    protocols: []\n",
            4,
            "ranges[0].protocols",
            "no protocols",
        );
    }

    #[test]
    fn unknown_protocol() {
        refused(
            "ranges:\n  - name: a\n    ports: 1\n    protocols: [sctp]\n",
            4,
            "ranges[0].protocols[0]",
            "sctp",
        );
    }

    #[test]
    fn duplicate_protocol() {
        refused(
            "ranges:\n  - name: a\n    ports: 1\n    protocols: [udp, udp]\n",
            4,
            "ranges[0].protocols[1]",
            "twice",
        );
    }

    #[test]
    fn bad_regex() {
        refused(
            "ranges:\n  - name: a\n    ports: 1\n    expected:\n      - process: /ctx(/\n",
            5,
            "ranges[0].expected[0].process",
            "bad regex",
        );
    }

    #[test]
    fn bad_glob() {
        refused(
            "ranges:\n  - name: a\n    ports: 1\n    expected:\n      - exe: /opt/[abc\n",
            5,
            "ranges[0].expected[0].exe",
            "unclosed",
        );
    }

    #[test]
    fn empty_allowlist_entry() {
        refused(
            "ranges:\n  - name: a\n    ports: 1\n    expected:\n      - {}\n",
            5,
            "ranges[0].expected[0]",
            "at least one",
        );
    }

    #[test]
    fn unknown_keys() {
        refused(
            "ranges:\n  - name: a\n    ports: 1\n    prots: [udp]\n",
            4,
            "ranges[0].prots",
            "unknown field",
        );
        refused("rangez: []\n", 1, "rangez", "unknown field");
        refused(
            "ranges:\n  - name: a\n    ports: 1\n    expected:\n      - process: x\n        pid: 1\n",
            6,
            "ranges[0].expected[0].pid",
            "unknown field",
        );
    }

    #[test]
    fn an_empty_key_is_named() {
        // Found by fuzzing (fuzz/seeds/parse_config/empty-key-crash.yml).
        refused("\"\": 1\n", 1, "\"\"", "unknown field");
    }

    #[test]
    fn empty_range_list() {
        refused("ranges: []\n", 1, "ranges", "empty");
    }

    #[test]
    fn missing_keys() {
        refused(
            "ranges:\n  - name: a\n",
            2,
            "ranges[0].ports",
            "missing field",
        );
        refused("{}\n", 1, "ranges", "missing field");
    }

    #[test]
    fn syntax_error() {
        refused(
            "ranges:\n  - name: a\n    ports: [1, 2\n",
            3,
            "ranges[0].ports",
            "unclosed bracket",
        );
    }

    #[test]
    fn empty_port_list() {
        refused(
            "ranges:\n  - name: a\n    ports: []\n",
            3,
            "ranges[0].ports",
            "empty",
        );
    }

    #[test]
    fn process_matchers() {
        let cfg = parse(
            "ranges:\n  - name: a\n    ports: 1\n    expected:\n      - process: nginx\n      - process: /ctx.*/\n      - user: 1000\n      - user: \"0\"\n",
        )
        .unwrap();
        let e = &cfg.ranges[0].expected;
        assert!(matches!(&e[0].process, Some(NameMatch::Exact(n)) if n == b"nginx"));
        match &e[1].process {
            Some(NameMatch::Regex(r)) => {
                assert!(r.is_match(b"ctxgfx"));
                assert!(!r.is_match(b"xctxgfx"), "regex is anchored");
            }
            other => panic!("{other:?}"),
        }
        if cfg!(windows) {
            // Windows has no uids: digits are an account name.
            assert_eq!(e[2].user, Some(UserMatch::Name("1000".into())));
            assert!(r_matches_case_insensitively(&e[1]));
        } else {
            assert_eq!(e[2].user, Some(UserMatch::Uid(1000)));
            assert_eq!(e[3].user, Some(UserMatch::Uid(0)));
        }
    }

    fn r_matches_case_insensitively(m: &Matcher) -> bool {
        matches!(&m.process, Some(NameMatch::Regex(r)) if r.is_match(b"CtxGfx.EXE"))
    }

    #[test]
    fn glob_translation() {
        let g = |p: &str| allowlist::compile_exe_glob(p, &names::UNIX).unwrap().regex;
        let r = g("/usr/bin/python3.[0-9]*");
        assert!(r.is_match(b"/usr/bin/python3.11"));
        assert!(!r.is_match(b"/usr/bin/python3x11"), "the dot is literal");
        let r = g("/opt/?tx/[!a]b");
        assert!(r.is_match(b"/opt/ctx/bb"));
        assert!(!r.is_match(b"/opt/ctx/ab"));
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_process_name_the_kernel_cannot_report_is_refused() {
        refused(
            "ranges:\n  - name: a\n    ports: 1\n    expected:\n      - process: freeswitch-media\n",
            5,
            "ranges[0].expected[0].process",
            "at most 15 bytes",
        );
        // 15 bytes is fine, and so is a regex or an exe glob.
        assert!(parse("ranges:\n  - name: a\n    ports: 1\n    expected:\n      - process: freeswitch-medi\n").is_ok());
        assert!(parse("ranges:\n  - name: a\n    ports: 1\n    expected:\n      - process: /freeswitch-media.*/\n").is_ok());
    }

    #[test]
    fn kernel_entries() {
        let c = parse("ranges:\n  - name: a\n    ports: 1\n    expected:\n      - kernel: true\n      - kernel: vxlan0\n").unwrap();
        let e = &c.ranges[0].expected;
        assert_eq!(e[0].kernel, Some(KernelMatch::Any));
        assert_eq!(e[1].kernel, Some(KernelMatch::Device("vxlan0".into())));
        refused(
            "ranges:\n  - name: a\n    ports: 1\n    expected:\n      - kernel: true\n        user: root\n",
            5,
            "ranges[0].expected[0].kernel",
            "give kernel alone",
        );
        refused(
            "ranges:\n  - name: a\n    ports: 1\n    expected:\n      - kernel: false\n",
            5,
            "ranges[0].expected[0].kernel",
            "allows nothing",
        );
    }

    #[test]
    fn type_errors_name_the_key_path() {
        // Seen by an operator: "(document): expected sequence start".
        refused(
            "ranges:\n  - name: a\n    ports: 1\n    protocols: udp\n",
            4,
            "ranges[0].protocols",
            "",
        );
        refused(
            "ranges:\n  - name: a\n    ports: 1\n  - name: b\n    ports: 2\n    expected:\n      - process: [x]\n",
            7,
            "ranges[1].expected[0].process",
            "",
        );
        refused(
            "ranges:\n  - name: a\n    ports: {x: 1}\n",
            3,
            "ranges[0].ports",
            "",
        );
        refused("ranges: 5\n", 1, "ranges", "");
    }

    #[test]
    fn overlapping_ranges_on_one_protocol_are_refused_with_both_positions() {
        let text = "ranges:\n  - name: framehawk\n    ports: 3224-3324\n  - name: mosh\n    protocols: [udp]\n    ports: [4000, 3300-3400]\n";
        refused(
            text,
            6,
            "ranges[1].ports",
            "overlaps range \"framehawk\" (ranges.yml:3:12: ranges[0].ports) on udp at 3300-3324",
        );
        // The same ports on different protocols do not overlap.
        parse("ranges:\n  - name: a\n    ports: 3224-3324\n    protocols: [udp]\n  - name: b\n    ports: 3224-3324\n    protocols: [tcp]\n").unwrap();
        // A single shared port is enough.
        refused(
            "ranges:\n  - name: a\n    ports: 10-20\n    protocols: [tcp]\n  - name: b\n    ports: 30\n  - name: c\n    ports: [20]\n",
            8,
            "ranges[2].ports",
            "on tcp at 20",
        );
    }

    #[test]
    fn per_port_on_a_huge_range_needs_force_and_says_the_cost() {
        refused(
            "ranges:\n  - name: big\n    ports: 1024-65535\n    per_port: true\n",
            4,
            "ranges[0].per_port",
            "129024 series (64512 per protocol) and about 8.4 MB per scrape",
        );
        let c =
            parse("ranges:\n  - name: big\n    ports: 1024-65535\n    per_port: force\n").unwrap();
        assert!(c.ranges[0].per_port);
        // At the limit, true is enough; false is always fine.
        let c = parse("ranges:\n  - name: a\n    ports: 10001-14096\n    per_port: true\n  - name: b\n    ports: 20000-30000\n    per_port: false\n").unwrap();
        assert!(c.ranges[0].per_port && !c.ranges[1].per_port);
        refused(
            "ranges:\n  - name: a\n    ports: 1\n    per_port: always\n",
            4,
            "ranges[0].per_port",
            "expected true, false or force",
        );
    }

    #[test]
    fn quoted_and_yaml_1_1_booleans_are_not_booleans() {
        for (v, needle) in [
            ("\"yes\"", "not a boolean in YAML 1.2: write true"),
            ("yes", "not a boolean in YAML 1.2: write true"),
            ("\"no\"", "not a boolean in YAML 1.2: write false"),
            ("off", "not a boolean in YAML 1.2: write false"),
            ("\"true\"", "quoted string, not a boolean: write true"),
            ("'false'", "quoted string, not a boolean: write false"),
        ] {
            refused(
                &format!("ranges:\n  - name: a\n    ports: 1\n    per_port: {v}\n"),
                4,
                "ranges[0].per_port",
                needle,
            );
            refused(
                &format!(
                    "ranges:\n  - name: a\n    ports: 1\n    expected:\n      - kernel: {v}\n"
                ),
                5,
                "ranges[0].expected[0].kernel",
                "boolean",
            );
        }
        let c = parse("ranges:\n  - name: a\n    ports: 1\n    per_port: false\n").unwrap();
        assert!(!c.ranges[0].per_port);
    }

    #[test]
    fn process_names_with_a_slash_are_refused() {
        refused(
            "ranges:\n  - name: mosh\n    ports: 60000-61000\n    expected:\n      - process: /mosh.*\n",
            5,
            "ranges[0].expected[0].process",
            "starts with a slash but does not end with one",
        );
        refused(
            "ranges:\n  - name: mosh\n    ports: 60000-61000\n    expected:\n      - process: bin/mosh-server\n",
            5,
            "ranges[0].expected[0].process",
            "never does",
        );
        assert!(parse("ranges:\n  - name: mosh\n    ports: 60000-61000\n    expected:\n      - process: /mosh.*/\n").is_ok());
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
    fn read_error_names_the_file() {
        let e =
            Config::load(Path::new("/nonexistent/ranges.yml"), &LoadChecks::none()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/ranges.yml: cannot read"),
            "{e}"
        );
    }

    #[test]
    fn an_entry_naming_only_a_process_is_warned_about_with_its_key() {
        let c = Config::parse(
            "ranges:\n  - name: fh\n    ports: 3224-3324\n    expected:\n      - process: CtxGfx\n      - process: mosh-server\n        user: mosh\n      - process: rtp\n        exe: /usr/bin/rtp\n",
            "r.yml",
        )
        .unwrap();
        let w: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with(
                "r.yml:5:18: ranges[0].expected[0].process: process: \"CtxGfx\" alone: any user who can run a program of that name satisfies this entry"
            ),
            "{w:?}"
        );
        assert!(w[0].contains("add exe: with a directory only root can write, or user:"));
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
