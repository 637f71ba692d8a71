//! Structured logging to stderr in logfmt or JSON (`--log.format`), with
//! the level set by `--log.level`. Each line carries `ts`, `level` and
//! `msg`, then the record's key/value fields (`log::info!(address = a;
//! "listening")` gives `address=...`), typed in JSON. Values are quoted
//! and escaped where needed, so a hostile process name in a message or a
//! field cannot forge a line or a field. A platform may take the messages
//! instead (the Windows service writes them to the event log, which keeps
//! its own time and level): the message, then the fields in logfmt.

use std::io::Write;
use std::time::SystemTime;

use log::{Level, LevelFilter, Log, Metadata, Record};

pub use crate::text::rfc3339;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Logfmt,
    Json,
}

/// Takes each message (level and text) instead of stderr.
pub type Sink = Box<dyn Fn(Level, &str) + Send + Sync>;

struct Logger {
    format: Format,
    level: LevelFilter,
    sink: Option<Sink>,
}

/// Installs the logger; later calls are ignored.
pub fn init(level: LevelFilter, format: Format) {
    init_with(level, format, None);
}

/// Installs the logger with messages going to `sink` (when given) rather
/// than stderr; later calls are ignored.
pub fn init_with(level: LevelFilter, format: Format, sink: Option<Sink>) {
    if log::set_boxed_logger(Box::new(Logger {
        format,
        level,
        sink,
    }))
    .is_ok()
    {
        log::set_max_level(level);
    }
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= self.level
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut fields = Fields(Vec::new());
        let _ = record.key_values().visit(&mut fields);
        if let Some(sink) = &self.sink {
            sink(
                record.level(),
                &event_text(&record.args().to_string(), &fields.0),
            );
            return;
        }
        let line = format_fields(
            self.format,
            SystemTime::now(),
            record.level(),
            &record.args().to_string(),
            &fields.0,
        );
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warn => "warn",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "debug",
    }
}

/// A field's value, keeping numbers and booleans typed for JSON.
#[derive(Clone, Debug, PartialEq)]
pub enum Field {
    Str(String),
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
}

impl Field {
    fn text(&self) -> String {
        match self {
            Field::Str(s) => s.clone(),
            Field::U64(v) => v.to_string(),
            Field::I64(v) => v.to_string(),
            Field::F64(v) => v.to_string(),
            Field::Bool(v) => v.to_string(),
        }
    }

    fn json(&self) -> serde_json::Value {
        match self {
            Field::Str(s) => serde_json::Value::from(s.as_str()),
            Field::U64(v) => serde_json::Value::from(*v),
            Field::I64(v) => serde_json::Value::from(*v),
            Field::F64(v) => serde_json::Value::from(*v),
            Field::Bool(v) => serde_json::Value::from(*v),
        }
    }
}

struct Fields(Vec<(String, Field)>);

impl<'kvs> log::kv::VisitSource<'kvs> for Fields {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        let v = if let Some(b) = value.to_bool() {
            Field::Bool(b)
        } else if let Some(u) = value.to_u64() {
            Field::U64(u)
        } else if let Some(i) = value.to_i64() {
            Field::I64(i)
        } else if let Some(f) = value.to_f64() {
            Field::F64(f)
        } else {
            Field::Str(value.to_string())
        };
        self.0.push((key.as_str().to_string(), v));
        Ok(())
    }
}

/// One log line, newline included.
pub fn format_line(format: Format, now: SystemTime, level: Level, msg: &str) -> String {
    format_fields(format, now, level, msg, &[])
}

/// One log line with fields after `msg`. A field named like one of the
/// line's own (`ts`, `level`, `msg`) gets a leading underscore.
pub fn format_fields(
    format: Format,
    now: SystemTime,
    level: Level,
    msg: &str,
    fields: &[(String, Field)],
) -> String {
    let ts = rfc3339(now);
    let key = |k: &str| match k {
        "ts" | "level" | "msg" => format!("_{k}"),
        k => k.to_string(),
    };
    match format {
        Format::Json => {
            let mut m = serde_json::Map::new();
            m.insert("ts".into(), ts.into());
            m.insert("level".into(), level_name(level).into());
            m.insert("msg".into(), msg.into());
            for (k, v) in fields {
                m.insert(key(k), v.json());
            }
            format!("{}\n", serde_json::Value::Object(m))
        }
        Format::Logfmt => {
            let mut line = format!(
                "ts={ts} level={} msg={}",
                level_name(level),
                logfmt_value(msg)
            );
            for (k, v) in fields {
                line.push(' ');
                line.push_str(&logfmt_key(&key(k)));
                line.push('=');
                line.push_str(&logfmt_bare(&v.text()));
            }
            line.push('\n');
            line
        }
    }
}

/// The text of one event for a platform log that keeps its own time and
/// level: the message, then ` key=value` per field (logfmt quoting).
pub fn event_text(msg: &str, fields: &[(String, Field)]) -> String {
    let mut text = msg.to_string();
    for (k, v) in fields {
        text.push(' ');
        text.push_str(&logfmt_key(k));
        text.push('=');
        text.push_str(&logfmt_bare(&v.text()));
    }
    text
}

/// A key as logfmt allows it: no space, `=` or quote.
fn logfmt_key(k: &str) -> String {
    let clean: String = k
        .chars()
        .map(|c| {
            if c.is_whitespace() || c == '=' || c == '"' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if clean.is_empty() { "_".into() } else { clean }
}

/// A value, quoted only when it must be (empty, or a space, `=`, quote,
/// backslash or control character inside).
fn logfmt_bare(v: &str) -> String {
    let plain = !v.is_empty()
        && !v
            .chars()
            .any(|c| c.is_whitespace() || c == '=' || c == '"' || c == '\\' || c.is_control());
    if plain {
        v.to_string()
    } else {
        logfmt_value(v)
    }
}

fn logfmt_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn event_text_is_the_message_and_the_fields() {
        let fields = vec![
            ("err".to_string(), Field::Str("a.yml:3:5: bad \"x\"".into())),
            ("port".to_string(), Field::U64(3224)),
        ];
        assert_eq!(
            event_text("refusing the configuration", &fields),
            r#"refusing the configuration err="a.yml:3:5: bad \"x\"" port=3224"#
        );
        assert_eq!(event_text("shut down", &[]), "shut down");
    }

    #[test]
    fn lines_cannot_be_forged() {
        let l = format_line(
            Format::Logfmt,
            UNIX_EPOCH,
            Level::Warn,
            "evil\" level=error\nts=0",
        );
        assert_eq!(
            l,
            "ts=1970-01-01T00:00:00.000Z level=warn msg=\"evil\\\" level=error\\nts=0\"\n"
        );
        let j = format_line(Format::Json, UNIX_EPOCH, Level::Info, "a\nb\"");
        assert_eq!(j.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["msg"], "a\nb\"");
        assert_eq!(v["level"], "info");
    }

    #[test]
    fn fields_follow_the_message() {
        let fields = vec![
            ("address".to_string(), Field::Str("[::]:10224".into())),
            (
                "ranges".to_string(),
                Field::Str("framehawk=3224-3324 mosh=60000-61000".into()),
            ),
            ("sockets".to_string(), Field::U64(3)),
            ("tls".to_string(), Field::Bool(false)),
            (
                "evil key=x".to_string(),
                Field::Str("a\" level=error".into()),
            ),
            ("msg".to_string(), Field::Str("".into())),
        ];
        let l = format_fields(
            Format::Logfmt,
            UNIX_EPOCH,
            Level::Info,
            "listening",
            &fields,
        );
        assert_eq!(
            l,
            "ts=1970-01-01T00:00:00.000Z level=info msg=\"listening\" address=[::]:10224 \
             ranges=\"framehawk=3224-3324 mosh=60000-61000\" sockets=3 tls=false \
             evil_key_x=\"a\\\" level=error\" _msg=\"\"\n"
        );
        let j = format_fields(Format::Json, UNIX_EPOCH, Level::Info, "listening", &fields);
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["address"], "[::]:10224");
        assert_eq!(v["sockets"], 3);
        assert_eq!(v["tls"], false);
        assert_eq!(v["msg"], "listening");
        assert_eq!(v["_msg"], "");
    }

    #[test]
    fn the_log_macros_fields_reach_the_line() {
        let mut f = Fields(Vec::new());
        let rec = log::Record::builder()
            .args(format_args!("scrape"))
            .key_values(&[("sockets", 5u64), ("listeners", 2u64)])
            .build();
        rec.key_values().visit(&mut f).unwrap();
        assert_eq!(
            f.0,
            vec![
                ("sockets".to_string(), Field::U64(5)),
                ("listeners".to_string(), Field::U64(2))
            ]
        );
    }
}
