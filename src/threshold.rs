//! The monitoring plugins' vocabulary that `check` and each collector's
//! judgement share (<https://nagios-plugins.org/doc/guidelines.html>): the
//! states ([`Status`], which are the exit codes), thresholds in the range
//! syntax (`10:`, `~:10`, `10:20`, `@10:20`, each end a count or a
//! percentage of what is judged: [`Threshold`], [`Resolved`]), and
//! performance-data labels ([`perf_label`]): parsing, resolving, deciding,
//! and writing them back as performance data. It sits at the bottom so
//! that a collector judges its own part without importing `check`. No
//! rendering here.

/// Nagios plugin states, as exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::Critical => "CRITICAL",
            Status::Unknown => "UNKNOWN",
        }
    }
}

/// One end of a threshold range: a port count or a share of the range.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Bound {
    Count(f64),
    Percent(f64),
}

impl Bound {
    fn parse(s: &str) -> Result<Bound, String> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            let v: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("{s:?} is not a percentage"))?;
            if !(0.0..=100.0).contains(&v) {
                return Err(format!("{s:?} is not between 0% and 100%"));
            }
            return Ok(Bound::Percent(v));
        }
        let v: f64 = s
            .parse()
            .map_err(|_| format!("{s:?} is neither a number nor a percentage such as 10%"))?;
        if !v.is_finite() {
            return Err(format!("{s:?} is not a finite number"));
        }
        Ok(Bound::Count(v))
    }

    fn resolve(self, capacity: u32) -> f64 {
        match self {
            Bound::Count(v) => v,
            Bound::Percent(p) => f64::from(capacity) * p / 100.0,
        }
    }
}

/// A threshold in the guidelines' range syntax, applied to a range's free
/// ports: `10:` alerts below 10, `~:10` above 10, `10:20` outside 10-20,
/// `@10:20` inside it; each end may be a percentage of the range's ports.
#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    /// `None` is minus infinity (`~`).
    start: Option<Bound>,
    /// `None` is infinity (nothing after the colon).
    end: Option<Bound>,
    /// `@`: alert inside the range instead of outside.
    inside: bool,
    /// As written, for messages.
    text: String,
}

impl std::str::FromStr for Threshold {
    type Err = String;

    /// Parses the range syntax. A bare number (`10`, meaning "alert above
    /// 10 or below 0") is refused: for free ports it never means what it
    /// seems to, and the refusal says what to write instead.
    fn from_str(s: &str) -> Result<Threshold, String> {
        let text = s.trim().to_string();
        let (inside, body) = match text.strip_prefix('@') {
            Some(rest) => (true, rest),
            None => (false, text.as_str()),
        };
        let (start, end) = match body.split_once(':') {
            Some(parts) => parts,
            // `@N` is clear: alert at N or fewer.
            None if inside => ("0", body),
            None => {
                return Err(format!(
                    "{text:?}: in the plugin range syntax a bare {body} alerts when MORE than {body} ports are free; \
                 write {body}: to alert when fewer than {body} are free, or @0:{body} for \"{body} or fewer\""
                ));
            }
        };
        let start = match start.trim() {
            "~" => None,
            "" => Some(Bound::Count(0.0)),
            v => Some(Bound::parse(v)?),
        };
        let end = match end.trim() {
            "" => None,
            v => Some(Bound::parse(v)?),
        };
        let t = Threshold {
            start,
            end,
            inside,
            text: text.clone(),
        };
        let r = t.resolve(100);
        if r.start > r.end {
            return Err(format!("{text:?}: the start is above the end"));
        }
        Ok(t)
    }
}

impl Threshold {
    /// "Alert when fewer than `min` ports are free": what `--warn-free`
    /// takes (a count or a percentage).
    pub fn min_free(min: &str) -> Result<Threshold, String> {
        let bound = Bound::parse(min)?;
        Ok(Threshold {
            start: Some(bound),
            end: None,
            inside: false,
            text: format!("{}:", min.trim()),
        })
    }

    /// The threshold for a range of `capacity` ports.
    pub fn resolve(&self, capacity: u32) -> Resolved {
        Resolved {
            start: self
                .start
                .map_or(f64::NEG_INFINITY, |b| b.resolve(capacity)),
            end: self.end.map_or(f64::INFINITY, |b| b.resolve(capacity)),
            inside: self.inside,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// A threshold with its percentages turned into port counts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Resolved {
    pub start: f64,
    pub end: f64,
    pub inside: bool,
}

impl Resolved {
    pub fn alerts(&self, value: f64) -> bool {
        let within = value >= self.start && value <= self.end;
        within == self.inside
    }

    /// The range in performance-data syntax (`10.1:`, `~:5`, `@0:3`).
    pub fn perf(&self) -> String {
        let start = if self.start == f64::NEG_INFINITY {
            "~".to_string()
        } else {
            number(self.start)
        };
        let body = if self.end == f64::INFINITY {
            format!("{start}:")
        } else if self.start == 0.0 && !self.inside {
            number(self.end)
        } else {
            format!("{start}:{}", number(self.end))
        };
        if self.inside {
            format!("@{body}")
        } else {
            body
        }
    }
}

/// A number as performance data writes it: no exponent, at most two
/// decimals, no trailing zeros.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A performance-data label, single-quoted when it holds a space, `=` or
/// a quote (a quote inside is doubled), as the guidelines ask.
pub fn perf_label(label: &str) -> String {
    if label.contains([' ', '=', '\'']) || label.is_empty() {
        format!("'{}'", label.replace('\'', "''"))
    } else {
        label.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_and_resolving() {
        let t: Threshold = "~:5".parse().unwrap();
        assert!(t.resolve(10).alerts(6.0) && !t.resolve(10).alerts(-100.0));
        assert_eq!(
            "10%:".parse::<Threshold>().unwrap().resolve(101).perf(),
            "10.1:"
        );
        // A bare number would alert on MORE free ports: refused, saying why.
        let e = "10".parse::<Threshold>().unwrap_err();
        assert!(
            e.contains("write 10: to alert when fewer than 10 are free"),
            "{e}"
        );
        assert!("abc".parse::<Threshold>().is_err());
        assert!("abc:".parse::<Threshold>().is_err());
        assert!("150%:".parse::<Threshold>().is_err());
        assert!("20:10".parse::<Threshold>().is_err());
        assert!(Threshold::min_free("x").is_err());
        assert_eq!(Threshold::min_free("10%").unwrap(), "10%:".parse().unwrap());
    }
}
