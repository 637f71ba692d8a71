//! Listeners grouped by owner and range, for `check`'s first line and long
//! output: one group per network namespace, range, protocol, process, user
//! and verdict, with its count and first ports. Fifty listeners of one
//! process and one of another are two groups, so the second is named on
//! the first line and in the table, never hidden behind the first one's
//! count, and the output stays within NRPE's buffer.

use crate::allowlist::Expected;

use super::{Listener, Seen, address, owner_marks, plural, printable, where_};

/// Groups named on the first line; the long output lists the rest.
pub const FIRST_LINE_GROUPS: usize = 5;
/// Addresses shown per group on the first line and in the table.
pub const FIRST_PORTS: usize = 3;

/// Listeners of one owner in one range.
pub struct Group<'a> {
    pub listeners: Vec<&'a Listener>,
}

impl<'a> Group<'a> {
    fn first(&self) -> &'a Listener {
        self.listeners[0]
    }

    /// The first addresses and how many more: `0.0.0.0:3224, 0.0.0.0:3225`,
    /// `0.0.0.0:3224, [::]:3224, 0.0.0.0:3225 and 47 more`.
    pub fn ports(&self) -> String {
        let shown: Vec<String> = self
            .listeners
            .iter()
            .take(FIRST_PORTS)
            .map(|l| address(l))
            .collect();
        let rest = self.listeners.len().saturating_sub(FIRST_PORTS);
        if rest > 0 {
            format!("{} and {rest} more", shown.join(", "))
        } else {
            shown.join(", ")
        }
    }

    /// The PID cell: the one pid, `-` for none, or how many.
    pub fn pids(&self) -> String {
        let mut pids: Vec<u32> = self
            .listeners
            .iter()
            .filter_map(|l| l.owner().map(|o| o.pid))
            .collect();
        pids.sort_unstable();
        pids.dedup();
        match pids.as_slice() {
            [] => "-".to_string(),
            [one] => one.to_string(),
            many => format!("{} pids", many.len()),
        }
    }

    /// `socat (user root) on udp 0.0.0.0:60001 in mosh`, or with a count:
    /// `python3 (user bob) on 50 udp ports in framehawk: 0.0.0.0:3224, ...`.
    pub fn phrase(&self) -> String {
        let l = self.first();
        let who = format!(
            "{} (user {}{})",
            printable(&l.process()),
            printable(&l.user),
            owner_marks(l)
        );
        let place = format!("{}{}", l.range, where_(l.netns.as_deref()));
        if self.listeners.len() == 1 {
            format!("{who} on {} {} in {place}", l.protocol, address(l))
        } else {
            format!(
                "{who} on {} {} ports in {place} ({})",
                self.listeners.len(),
                l.protocol,
                self.ports()
            )
        }
    }
}

/// Groups `listeners` (already in the report's order) by namespace, range,
/// protocol, process, user, marks and verdict, each group where its first
/// listener came.
pub fn group<'a>(listeners: impl IntoIterator<Item = &'a Listener>) -> Vec<Group<'a>> {
    let key = |l: &Listener| {
        (
            l.netns.clone(),
            l.range.clone(),
            l.protocol,
            l.process(),
            l.user.clone(),
            owner_marks(l),
            l.expected,
        )
    };
    let mut groups: Vec<Group<'a>> = Vec::new();
    for l in listeners {
        let k = key(l);
        match groups.iter_mut().find(|g| key(g.first()) == k) {
            Some(g) => g.listeners.push(l),
            None => groups.push(Group { listeners: vec![l] }),
        }
    }
    groups
}

/// The first line's reason for unexpected listeners: every owner named (up
/// to [`FIRST_LINE_GROUPS`], then how many more), `None` when there are none.
pub fn unexpected_reason(all: &[&Listener]) -> Option<String> {
    let unexpected: Vec<&Listener> = all
        .iter()
        .copied()
        .filter(|l| l.expected == Expected::False)
        .collect();
    if unexpected.is_empty() {
        return None;
    }
    let groups = group(unexpected.iter().copied());
    let named: Vec<String> = groups
        .iter()
        .take(FIRST_LINE_GROUPS)
        .map(Group::phrase)
        .collect();
    let mut text = format!(
        "{}: {}",
        plural(
            unexpected.len(),
            "unexpected listener",
            "unexpected listeners"
        ),
        named.join("; ")
    );
    if groups.len() > FIRST_LINE_GROUPS {
        let rest = &groups[FIRST_LINE_GROUPS..];
        let n: usize = rest.iter().map(|g| g.listeners.len()).sum();
        text.push_str(&format!(
            "; and {} of {}",
            plural(n, "listener", "listeners"),
            plural(rest.len(), "more owner", "more owners")
        ));
    }
    Some(text)
}

/// The long output's table of listeners that need a look, one row per
/// owner and range: at most `rows` groups, then how many more.
pub fn table(out: &mut String, seen: &Seen<'_>, listeners: &[&Listener], rows: usize) {
    use std::fmt::Write;
    let per_netns = seen.netns.is_some();
    let groups = group(listeners.iter().copied());
    let shown = &groups[..groups.len().min(rows)];
    let since = shown
        .iter()
        .any(|g| g.listeners.iter().any(|l| (seen.since)(l).is_some()));
    let mut head = vec![
        "PROTOCOL".to_string(),
        "PROCESS".into(),
        "PID".into(),
        "USER".into(),
        "EXPECTED".into(),
        "RANGE".into(),
        "COUNT".into(),
        "ADDRESS:PORT".into(),
    ];
    if since {
        head.push("SINCE".into());
    }
    let mut table_rows = vec![super::netns_first(per_netns, "NETNS", head)];
    for g in shown {
        let l = g.first();
        let mut row = vec![
            l.protocol.to_string(),
            super::process_cell(l),
            g.pids(),
            printable(&l.user),
            l.expected.as_str().to_string(),
            l.range.to_string(),
            g.listeners.len().to_string(),
            g.ports(),
        ];
        if since {
            row.push(super::since_text(seen, l));
        }
        table_rows.push(super::netns_first(
            per_netns,
            &super::netns_cell(seen, l.netns.as_deref()),
            row,
        ));
    }
    let right = [false, false, true, false, false, false, true, false, false];
    let right = &right[..if since { 9 } else { 8 }];
    super::table(
        out,
        &table_rows,
        &super::netns_first_align(per_netns, right),
    );
    if groups.len() > shown.len() {
        let rest = &groups[shown.len()..];
        let n: usize = rest.iter().map(|g| g.listeners.len()).sum();
        let _ = writeln!(
            out,
            "... and {} of {} (-v lists every listener, --output json gives the whole report)",
            plural(n, "listener", "listeners"),
            plural(rest.len(), "more owner", "more owners")
        );
    }
}
