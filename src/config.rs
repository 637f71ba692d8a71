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
//! database may be down). This module parses and validates; what a load
//! asks of the host (the user lookups on their own thread, who can write
//! the `exe:` directories, reading the file) is `config/host.rs`'s, and comes in
//! as a value, [`LoadChecks`], that the caller builds from the platform
//! (`cli`): neither module reads the OS itself.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use regex::bytes::RegexBuilder;
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::allowlist::{self, KernelMatch, Matcher, NameMatch, UserMatch};
use crate::names;
use crate::ranges::{PortSet, Protocol};

mod host;
pub use host::{DirWriters, LoadChecks, UserCheck, UserLookup};

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
pub fn default_file() -> Option<&'static std::path::Path> {
    if cfg!(windows) {
        None
    } else {
        Some(std::path::Path::new("/etc/portrange_exporter/ranges.yml"))
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
    use std::path::Path;

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
}
