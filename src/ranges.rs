//! The port-range model: a set of ports kept as sorted, disjoint, inclusive
//! intervals, and the transport protocols a range is watched on. Everything
//! that counts ports (capacity, free ports, overlap with the kernel's
//! ephemeral range) and the kernel filter compiler work from this one type.

use std::fmt;

/// A transport protocol watched in a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub const ALL: [Protocol; 2] = [Protocol::Tcp, Protocol::Udp];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a port expression was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PortError {
    #[error("empty port expression")]
    Empty,
    #[error("{0:?} is not a port number")]
    NotANumber(String),
    #[error("port 0 is not a usable port")]
    Zero,
    #[error("port {0} is above 65535")]
    TooLarge(u64),
    #[error("range {0}-{1} is reversed (the lower port must come first)")]
    Reversed(u16, u16),
}

/// A set of ports as sorted, non-overlapping, non-adjacent inclusive intervals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortSet {
    intervals: Vec<(u16, u16)>,
}

impl PortSet {
    /// Builds a set from intervals in any order; overlapping and adjacent
    /// intervals are merged.
    pub fn from_intervals(mut intervals: Vec<(u16, u16)>) -> PortSet {
        intervals.retain(|(lo, hi)| lo <= hi);
        intervals.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::with_capacity(intervals.len());
        for (lo, hi) in intervals {
            match merged.last_mut() {
                Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        PortSet { intervals: merged }
    }

    /// Parses one `"N"` or `"N-M"` item.
    pub fn parse_item(text: &str) -> Result<(u16, u16), PortError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(PortError::Empty);
        }
        let (lo, hi) = match text.split_once('-') {
            Some((a, b)) => (parse_port(a)?, parse_port(b)?),
            None => {
                let p = parse_port(text)?;
                (p, p)
            }
        };
        if lo > hi {
            return Err(PortError::Reversed(lo, hi));
        }
        Ok((lo, hi))
    }

    pub fn intervals(&self) -> &[(u16, u16)] {
        &self.intervals
    }

    /// Number of ports in the set.
    pub fn len(&self) -> u32 {
        self.intervals
            .iter()
            .map(|&(lo, hi)| u32::from(hi) - u32::from(lo) + 1)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
    }

    pub fn contains(&self, port: u16) -> bool {
        // Intervals are sorted: find the last one starting at or below `port`.
        let idx = self.intervals.partition_point(|&(lo, _)| lo <= port);
        idx > 0 && self.intervals[idx - 1].1 >= port
    }

    /// The set for a log line: as written when it has a few intervals,
    /// otherwise a count and the span (`4001 ports in 4001 intervals,
    /// 1000-21000`), so that a set of thousands of single ports does not
    /// make a 20 KB line.
    pub fn summary(&self) -> String {
        const SHOWN: usize = 8;
        match (self.intervals.first(), self.intervals.last()) {
            (Some(&(lo, _)), Some(&(_, hi))) if self.intervals.len() > SHOWN => format!(
                "{} ports in {} intervals, {lo}-{hi}",
                self.len(),
                self.intervals.len()
            ),
            _ => self.to_string(),
        }
    }

    /// Every port of the set, in ascending order.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.intervals.iter().flat_map(|&(lo, hi)| lo..=hi)
    }

    /// Ports present in both sets.
    pub fn intersect(&self, other: &PortSet) -> PortSet {
        let mut out = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < self.intervals.len() && j < other.intervals.len() {
            let (a_lo, a_hi) = self.intervals[i];
            let (b_lo, b_hi) = other.intervals[j];
            let lo = a_lo.max(b_lo);
            let hi = a_hi.min(b_hi);
            if lo <= hi {
                out.push((lo, hi));
            }
            if a_hi < b_hi {
                i += 1;
            } else {
                j += 1;
            }
        }
        PortSet::from_intervals(out)
    }

    /// Ports of `self` that are not in `other`.
    pub fn difference(&self, other: &PortSet) -> PortSet {
        let mut out = Vec::new();
        for &(lo, hi) in &self.intervals {
            let mut start = u32::from(lo);
            let end = u32::from(hi);
            for &(o_lo, o_hi) in &other.intervals {
                let (o_lo, o_hi) = (u32::from(o_lo), u32::from(o_hi));
                if o_hi < start || o_lo > end {
                    continue;
                }
                if o_lo > start {
                    out.push((start as u16, (o_lo - 1) as u16));
                }
                start = o_hi + 1;
                if start > end {
                    break;
                }
            }
            if start <= end {
                out.push((start as u16, end as u16));
            }
        }
        PortSet::from_intervals(out)
    }

    /// The union of several sets.
    pub fn union<'a>(sets: impl IntoIterator<Item = &'a PortSet>) -> PortSet {
        PortSet::from_intervals(
            sets.into_iter()
                .flat_map(|s| s.intervals.iter().copied())
                .collect(),
        )
    }

    /// Parses the kernel's comma-separated list format (as in
    /// `ip_local_reserved_ports`): `"8080,9000-9010"`, possibly empty.
    pub fn parse_kernel_list(text: &str) -> Result<PortSet, PortError> {
        let mut intervals = Vec::new();
        for item in text.trim().split(',').filter(|s| !s.trim().is_empty()) {
            intervals.push(PortSet::parse_item(item)?);
        }
        Ok(PortSet::from_intervals(intervals))
    }
}

impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(lo, hi)) in self.intervals.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

fn parse_port(text: &str) -> Result<u16, PortError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(PortError::Empty);
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PortError::NotANumber(text.to_string()));
    }
    let n: u64 = text.parse().unwrap_or(u64::MAX);
    match n {
        0 => Err(PortError::Zero),
        1..=65535 => Ok(n as u16),
        _ => Err(PortError::TooLarge(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_set_is_summarised_for_the_log() {
        let every_fifth: Vec<(u16, u16)> = (1000..=21000u16).step_by(5).map(|p| (p, p)).collect();
        assert_eq!(
            PortSet::from_intervals(every_fifth).summary(),
            "4001 ports in 4001 intervals, 1000-21000"
        );
        let few = PortSet::from_intervals(vec![(3224, 3324), (5000, 5000)]);
        assert_eq!(few.summary(), "3224-3324,5000");
        assert_eq!(PortSet::default().summary(), "");
    }

    #[test]
    fn parses_single_ports_and_ranges() {
        assert_eq!(PortSet::parse_item("3224"), Ok((3224, 3224)));
        assert_eq!(PortSet::parse_item(" 3224-3324 "), Ok((3224, 3324)));
        assert_eq!(PortSet::parse_item("1-65535"), Ok((1, 65535)));
    }

    #[test]
    fn refuses_bad_ports() {
        assert_eq!(PortSet::parse_item("0"), Err(PortError::Zero));
        assert_eq!(
            PortSet::parse_item("65536"),
            Err(PortError::TooLarge(65536))
        );
        assert_eq!(
            PortSet::parse_item("99999999999999999999999"),
            Err(PortError::TooLarge(u64::MAX))
        );
        assert_eq!(
            PortSet::parse_item("3324-3224"),
            Err(PortError::Reversed(3324, 3224))
        );
        assert_eq!(PortSet::parse_item(""), Err(PortError::Empty));
        assert_eq!(PortSet::parse_item("3224-"), Err(PortError::Empty));
        assert_eq!(PortSet::parse_item("-5"), Err(PortError::Empty));
        assert_eq!(
            PortSet::parse_item("12a"),
            Err(PortError::NotANumber("12a".into()))
        );
        assert_eq!(
            PortSet::parse_item("+5"),
            Err(PortError::NotANumber("+5".into()))
        );
    }

    #[test]
    fn merges_overlapping_and_adjacent_intervals() {
        let s = PortSet::from_intervals(vec![(10, 20), (5, 9), (15, 30), (40, 40), (41, 45)]);
        assert_eq!(s.intervals(), &[(5, 30), (40, 45)]);
        assert_eq!(s.len(), 26 + 6);
        assert_eq!(s.to_string(), "5-30,40-45");
        let edge = PortSet::from_intervals(vec![(65535, 65535), (1, 1), (65000, 65534)]);
        assert_eq!(edge.intervals(), &[(1, 1), (65000, 65535)]);
    }

    #[test]
    fn framehawk_has_101_ports() {
        let s = PortSet::from_intervals(vec![(3224, 3324)]);
        assert_eq!(s.len(), 101);
        assert!(s.contains(3224) && s.contains(3324));
        assert!(!s.contains(3223) && !s.contains(3325));
        assert_eq!(s.ports().count(), 101);
    }

    #[test]
    fn contains_across_several_intervals() {
        let s = PortSet::from_intervals(vec![(1, 1), (100, 200), (65535, 65535)]);
        for (p, want) in [
            (1, true),
            (2, false),
            (99, false),
            (100, true),
            (200, true),
            (201, false),
            (65535, true),
        ] {
            assert_eq!(s.contains(p), want, "port {p}");
        }
        assert!(!PortSet::default().contains(1));
    }

    #[test]
    fn intersect_and_difference() {
        let a = PortSet::from_intervals(vec![(3224, 3324)]);
        let eph = PortSet::from_intervals(vec![(3300, 60999)]);
        let i = a.intersect(&eph);
        assert_eq!(i.intervals(), &[(3300, 3324)]);
        assert_eq!(
            PortSet::parse_kernel_list("3301,70000"),
            Err(PortError::TooLarge(70000))
        );
        let reserved = PortSet::parse_kernel_list("3301,3310-3312,7").unwrap();
        let exposed = i.difference(&reserved);
        assert_eq!(
            exposed.intervals(),
            &[(3300, 3300), (3302, 3309), (3313, 3324)]
        );
        assert_eq!(exposed.len(), 25 - 4);
        assert_eq!(a.difference(&a).len(), 0);
        assert_eq!(a.difference(&PortSet::default()), a);
        let full = PortSet::from_intervals(vec![(1, 65535)]);
        assert_eq!(
            full.difference(&PortSet::from_intervals(vec![(1, 1), (65535, 65535)]))
                .len(),
            65533
        );
    }

    #[test]
    fn kernel_list_format() {
        assert_eq!(PortSet::parse_kernel_list("").unwrap().len(), 0);
        assert_eq!(PortSet::parse_kernel_list("\n").unwrap().len(), 0);
        assert_eq!(
            PortSet::parse_kernel_list("8080,9000-9010\n")
                .unwrap()
                .len(),
            12
        );
    }
}
