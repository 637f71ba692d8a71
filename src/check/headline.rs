//! `check`'s verdict in one line for the port map page: the same status
//! and the same reasons as the plugin's first line (with its default
//! thresholds), without the performance data, so the page and `check`
//! never disagree about a host.

use super::{Options, Status, render};
use crate::report::Report;

/// The status and why, as `check` with its defaults would say it:
/// `(Warning, "mosh/udp: 1000 ports are in the ephemeral port range, ...")`.
pub fn headline(report: &Report) -> (Status, String) {
    let (status, text) = render(report, &[], &Options::default());
    let first = text.lines().next().unwrap_or_default();
    // A `|` inside a name is escaped, so the first " | " starts the
    // performance data.
    let first = first.split_once(" | ").map_or(first, |(line, _)| line);
    let why = first
        .strip_prefix(&format!("PORTRANGE {} - ", status.label()))
        .unwrap_or(first);
    (status, why.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_headline_is_the_first_line_without_perfdata() {
        let r = Report::default();
        let (s, why) = headline(&r);
        assert_eq!(s, Status::Ok);
        assert_eq!(
            why,
            "0 range/protocol pairs, 0 ports free, no unexpected listener"
        );
    }
}
