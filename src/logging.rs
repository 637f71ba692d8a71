//! Structured logging to stderr in logfmt or JSON (`--log.format`), with
//! the level set by `--log.level`. Each line carries `ts`, `level` and
//! `msg`; values are quoted and escaped so a hostile process name in a
//! message cannot forge a line. A platform may take the messages instead
//! (the Windows service writes them to the event log, which keeps its own
//! time and level, and one message per event).

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

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
        if let Some(sink) = &self.sink {
            sink(record.level(), &record.args().to_string());
            return;
        }
        let line = format_line(
            self.format,
            SystemTime::now(),
            record.level(),
            &record.args().to_string(),
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

/// One log line, newline included.
pub fn format_line(format: Format, now: SystemTime, level: Level, msg: &str) -> String {
    let ts = rfc3339(now);
    match format {
        Format::Json => {
            let v = serde_json::json!({"ts": ts, "level": level_name(level), "msg": msg});
            format!("{v}\n")
        }
        Format::Logfmt => format!(
            "ts={ts} level={} msg={}\n",
            level_name(level),
            logfmt_value(msg)
        ),
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

/// UTC time as `2026-11-26T03:40:00.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's
/// public-domain algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_664_400_123);
        assert_eq!(rfc3339(t), "2026-11-26T03:40:00.123Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
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
}
