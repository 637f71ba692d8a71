//! The YAML configuration: which port ranges to watch, on which protocols,
//! and which processes are allowed to listen there. Parsing keeps source
//! positions so that every refusal names the file, line, column and key at
//! fault; validation turns the raw document into the checked model
//! ([`Config`]) that the rest of the exporter reads.

use std::fmt;
use std::path::{Path, PathBuf};

use regex::bytes::RegexBuilder;
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::allowlist::{self, KernelMatch, Matcher, NameMatch, UserMatch};
use crate::platform;
use crate::ranges::{PortSet, Protocol};

/// Ranges at or below this many ports get per-port series unless the config
/// says otherwise.
pub const PER_PORT_DEFAULT_LIMIT: u32 = 1024;

/// A checked configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub ranges: Vec<RangeConfig>,
    /// Where it came from: a path, or `None` for the built-in default.
    pub source: Option<PathBuf>,
}

/// One watched range.
#[derive(Clone, Debug)]
pub struct RangeConfig {
    pub name: String,
    pub ports: PortSet,
    pub protocols: Vec<Protocol>,
    pub per_port: bool,
    pub expected: Vec<Matcher>,
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
                expected: Vec::new(),
            }],
            source: None,
        }
    }

    /// Reads and checks `path`, or gives the built-in configuration when
    /// there is none: the one place a configuration is loaded.
    pub fn load_or_builtin(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(p) => Config::load(p),
            None => Ok(Config::builtin()),
        }
    }

    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: display.clone(),
            source,
        })?;
        let mut cfg = Config::parse(&text, &display)?;
        cfg.source = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// Parses and checks configuration text; `path` only labels errors.
    pub fn parse(text: &str, path: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = serde_saphyr::from_str(text).map_err(|e| from_yaml_error(&e, path))?;
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
    per_port: Option<bool>,
    #[serde(default)]
    expected: Vec<Spanned<RawExpected>>,
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

/// `kernel: true` or `kernel: <device>`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawKernel {
    Flag(bool),
    Device(String),
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

fn from_yaml_error(e: &serde_saphyr::Error, path: &str) -> ConfigError {
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
    let key = unknown_key(&message).unwrap_or_else(|| "(document)".to_string());
    ConfigError::Invalid {
        path: path.to_string(),
        line,
        column,
        key,
        message,
    }
}

/// Pulls the key out of serde's "unknown field `x`" and "missing field `x`" messages.
fn unknown_key(message: &str) -> Option<String> {
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
                Some(p) => Some(
                    allowlist::compile_exe_glob(&p.value, &platform::names::HOST)
                        .map_err(|m| err.at(p, ekey("exe"), m))?,
                ),
            };
            let user = match &e.user {
                None => None,
                Some(u) => Some(parse_user(&u.value.0).map_err(|m| err.at(u, ekey("user"), m))?),
            };
            expected.push(Matcher {
                process,
                exe,
                user,
                kernel,
            });
        }

        let per_port = r.per_port.unwrap_or(ports.len() <= PER_PORT_DEFAULT_LIMIT);
        ranges.push(RangeConfig {
            name,
            ports,
            protocols,
            per_port,
            expected,
        });
    }
    Ok(Config {
        ranges,
        source: None,
    })
}

fn parse_name_match(text: &str) -> Result<NameMatch, String> {
    if text.is_empty() {
        return Err("the process name is empty".into());
    }
    if text.len() >= 2 && text.starts_with('/') && text.ends_with('/') {
        let pattern = &text[1..text.len() - 1];
        return RegexBuilder::new(&format!("^(?:{pattern})$"))
            .case_insensitive(platform::names::HOST.case_insensitive)
            .build()
            .map(NameMatch::Regex)
            .map_err(|e| format!("bad regex {pattern:?}: {}", one_line(&e.to_string())));
    }
    if let Some(max) = platform::PROCESS_NAME_MAX
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
    if platform::names::HOST.numeric_user_is_uid() && text.bytes().all(|b| b.is_ascii_digit()) {
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
        let cfg = parse("ranges:\n  - name: a\n    ports: 100-200\n    protocols: [tcp]\n  - name: b\n    ports: [150-250, 300]\n").unwrap();
        assert_eq!(cfg.watched_ports(Protocol::Tcp).to_string(), "100-250,300");
        assert_eq!(cfg.watched_ports(Protocol::Udp).to_string(), "150-250,300");
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
            "(document)",
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
            "prots",
            "unknown field",
        );
        refused("rangez: []\n", 1, "rangez", "unknown field");
        refused(
            "ranges:\n  - name: a\n    ports: 1\n    expected:\n      - process: x\n        pid: 1\n",
            6,
            "pid",
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
        refused("ranges:\n  - name: a\n", 2, "ports", "missing field");
        refused("{}\n", 1, "ranges", "missing field");
    }

    #[test]
    fn syntax_error() {
        refused(
            "ranges:\n  - name: a\n    ports: [1, 2\n",
            3,
            "(document)",
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
        let g = |p: &str| {
            allowlist::compile_exe_glob(p, &platform::names::UNIX)
                .unwrap()
                .regex
        };
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
    fn read_error_names_the_file() {
        let e = Config::load(Path::new("/nonexistent/ranges.yml")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/ranges.yml: cannot read"),
            "{e}"
        );
    }
}
