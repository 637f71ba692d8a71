//! What one collection found, as plain data: the [`Report`]. It is the
//! one input of every projection ([`crate::metrics`], [`crate::status`],
//! [`crate::check`]), and it carries everything they show, so that none of
//! them reads the configuration or the OS: one [`RangeView`] per watched
//! range, protocol and (with `--collector.netns`) network namespace, with
//! the range's spec, per-port flag and series cap, its counts and its
//! [`Listener`]s; the namespaces; what the collection had to skip; and how
//! each collector ([`CollectorRun`]) fared. [`crate::collect`] builds it.

use std::time::Duration;

pub use crate::netns::{NetnsInfo, NetnsReport};
use crate::platform::{PassStats, Skipped};
pub use crate::watched::{Listener, RangeView};

/// How one collector fared in a collection
/// (`portrange_scrape_collector_success`, `_duration_seconds`).
#[derive(Clone, Debug, PartialEq)]
pub struct CollectorRun {
    /// The `collector` label value: `ranges`, `netns`.
    pub name: &'static str,
    pub success: bool,
    pub duration: Duration,
}

/// Everything one collection found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The sampling error, when sampling failed.
    pub error: Option<String>,
    /// One view per range, protocol and namespace. When sampling failed,
    /// the views carry the capacity only (the host's, per namespace).
    pub ranges: Vec<RangeView>,
    pub attribution: PassStats,
    /// The privileges attribution lacks (named by `check`).
    pub missing_privileges: Vec<&'static str>,
    pub duration: Duration,
    /// Set with `--collector.netns`: the namespaces reported.
    pub netns: Option<NetnsReport>,
    /// What the collection had to leave out: what those parts hold is
    /// unknown.
    pub skipped: Vec<Skipped>,
    /// Each collector that ran, in order.
    pub collectors: Vec<CollectorRun>,
    /// The listener trail as of this collection (its counts, recent
    /// events, and since when each listener is known); `None` where no
    /// trail is kept.
    pub trail: Option<crate::trail::TrailView>,
    /// With `--collector.traffic`, when it succeeded: what the ranges
    /// received.
    pub traffic: Option<crate::traffic::TrafficReport>,
    /// The dynamic port range (the `ephemeral` collector); `None` when
    /// the collector is off, empty views when it failed.
    pub ephemeral: Option<crate::ephemeral::EphemeralReport>,
}

impl Report {
    pub fn up(&self) -> bool {
        self.error.is_none()
    }

    /// A report for a failed sample, with the ranges' capacity.
    pub fn failed(error: String, capacity: Vec<RangeView>, duration: Duration) -> Report {
        Report {
            error: Some(error),
            ranges: capacity,
            duration,
            ..Report::default()
        }
    }

    /// Every listener, range by range.
    pub fn listeners(&self) -> impl Iterator<Item = &Listener> + '_ {
        self.ranges.iter().flat_map(|r| r.listeners.iter())
    }

    /// Since when the trail knows `l` (Unix seconds, and whether the
    /// exporter observed it then or its process started then): what the
    /// ranges' renderers take as their [`crate::watched::SinceOf`].
    pub fn since_of(&self, l: &Listener) -> Option<(f64, &'static str)> {
        l.since
    }

    /// How many parts were skipped in `stage`.
    pub fn skipped_in(&self, stage: &str) -> usize {
        self.skipped.iter().filter(|s| s.stage == stage).count()
    }
}

impl crate::trail::Observed for Report {
    fn collection(&self) -> crate::trail::Collection<'_> {
        crate::trail::Collection {
            up: self.up(),
            ranges: &self.ranges,
            netns: self.netns.as_ref(),
            skipped: &self.skipped,
        }
    }

    /// Takes the trail's view, moving each listener's since-time onto
    /// the listener (the view lists them in [`Report::listeners`] order).
    fn set_trail(&mut self, mut view: crate::trail::TrailView) {
        let since = std::mem::take(&mut view.since);
        let listeners = self.ranges.iter_mut().flat_map(|r| r.listeners.iter_mut());
        for (l, s) in listeners.zip(since) {
            l.since = s.map(|s| (s.unix, s.source));
        }
        self.trail = Some(view);
    }
}
