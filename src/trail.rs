//! The listener trail: a bounded record of what listened in the watched
//! ranges, and when, for the operator who answers an alert after the
//! listener is gone. [`Recorder`] compares each collection's listeners
//! (scrapes, and the collector thread's watch passes between them) with
//! the previous ones and turns the differences into [`Event`]s:
//! `appeared`, `vanished`, `verdict_changed`, each with what the report
//! says of the listener plus the process's parent, command line and start
//! time (read once per recorded event through the platform). Events go
//! into a ring ([`Trail`], the last `--collector.trail.events`), one log
//! line each (warning level when the listener is not expected), and are
//! counted by range, protocol, kind and verdict. Bounded on purpose:
//! every listener that is not expected is recorded one by one under a
//! token-bucket rate limit whose drops are counted; expected listeners
//! that churn (an RTP engine's sessions) are aggregated per range,
//! protocol, namespace, process, user, kind and verdict: the first change of
//! such a group in a window (a minute) is recorded as it is, the others
//! of the window are summed into one event with `count` at its end.
//! Command lines are redacted as the program that reads them would take
//! them ([`crate::redact`], by the executable's file name), escaped and
//! cut at 256 bytes ([`render_cmdline`]); the ring and the log keep them
//! so, and the HTTP endpoint serves them only with authentication
//! ([`cmdline_withheld`]); a flag leaves them out entirely. Platform-free:
//! the recorder gets the report (as an [`Observed`]: the trail sits below
//! the report that carries its view, and reads only the ranges, the
//! namespaces and what was skipped) and a function that reads a process's
//! details.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::proto::MetricFamily;
use serde::Serialize;

use crate::allowlist::Expected;
use crate::exposition::{counter_family, counter_metric};
use crate::netns::NetnsReport;
use crate::platform::{ProcessDetails, Skipped};
use crate::ranges::Protocol;
pub use crate::text::rfc3339_unix;
use crate::watched::{Listener, RangeView};

/// What the trail reads of a collection: whether it succeeded, the
/// ranges collector's part, the namespaces and what was skipped. The
/// trail sits below the [`crate::report::Report`], which carries its
/// view; the report hands this out through [`Observed`].
#[derive(Clone, Copy, Debug)]
pub struct Collection<'a> {
    pub up: bool,
    pub ranges: &'a [RangeView],
    pub netns: Option<&'a NetnsReport>,
    pub skipped: &'a [Skipped],
}

impl<'a> Collection<'a> {
    pub fn up(&self) -> bool {
        self.up
    }

    /// Every listener, range by range.
    pub fn listeners(&self) -> impl Iterator<Item = &'a Listener> + 'a {
        self.ranges.iter().flat_map(|r| r.listeners.iter())
    }

    /// How many parts were skipped in `stage`.
    pub fn skipped_in(&self, stage: &str) -> usize {
        self.skipped.iter().filter(|s| s.stage == stage).count()
    }
}

/// A collection the trail observes and attaches its view to (the report).
pub trait Observed {
    fn collection(&self) -> Collection<'_>;
    fn set_trail(&mut self, view: TrailView);
}
use crate::redact::Program;

/// The longest command line an event carries, in bytes.
pub const CMDLINE_MAX: usize = 256;

/// Event kinds (the `kind` label values).
pub const KINDS: [&str; 3] = ["appeared", "vanished", "verdict_changed"];
/// Verdicts (the `verdict` label values).
pub const VERDICTS: [&str; 4] = ["expected", "unexpected", "unknown", "kernel"];

/// Recent events shown on the port map page.
pub const RECENT_SHOWN: usize = 20;

/// The trail's settings (`--collector.trail.*`).
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// How often the collector thread samples the ranges between scrapes;
    /// `None`: only scrapes are compared.
    pub watch_interval: Option<Duration>,
    /// Events kept (the ring's size).
    pub capacity: usize,
    /// Events per second recorded one by one, on average.
    pub rate: f64,
    /// Events recorded at once before the rate applies.
    pub burst: f64,
    /// Keep command lines (off: `cmdline` is always null).
    pub cmdline: bool,
    /// How long expected listeners' changes are summed per group.
    pub aggregate_window: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            watch_interval: Some(Duration::from_secs(2)),
            capacity: 1000,
            rate: 10.0,
            burst: 100.0,
            cmdline: true,
            aggregate_window: Duration::from_secs(60),
        }
    }
}

/// One change of a listener.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Event {
    /// Increasing from 1 over the exporter's life (`?since=`).
    pub seq: u64,
    /// When the change was seen (RFC 3339, UTC).
    pub time: String,
    pub kind: &'static str,
    pub range: String,
    pub protocol: &'static str,
    pub address: String,
    pub port: u16,
    /// The `netns` label with `--collector.netns`; null without.
    pub netns: Option<String>,
    /// The container and pod the namespace belongs to, where known.
    pub container: Option<String>,
    pub pod: Option<String>,
    pub pod_namespace: Option<String>,
    /// Null for kernel-held and unknown holders, and for aggregates.
    pub pid: Option<u32>,
    pub ppid: Option<u32>,
    pub process: String,
    /// The executable's path; `exe_gone` marks one deleted or anonymous.
    pub exe: Option<String>,
    pub exe_gone: bool,
    /// Cut, escaped and redacted; null when unreadable or turned off.
    pub cmdline: Option<String>,
    pub user: String,
    pub verdict: &'static str,
    /// For `verdict_changed`: the verdict before.
    pub previous_verdict: Option<&'static str>,
    /// When the process started (RFC 3339), where the platform says.
    pub process_start: Option<String>,
    /// 1, or how many changes of an expected group this event sums.
    pub count: u64,
    /// For an aggregate: when its window began (RFC 3339).
    pub first_time: Option<String>,
}

/// What identifies a listener from one collection to the next.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId {
    pub netns: Option<Arc<str>>,
    pub range: Arc<str>,
    pub protocol: Protocol,
    pub address: IpAddr,
    pub port: u16,
    /// The holder's pid; `None` when kernel-held or unknown.
    pub pid: Option<u32>,
}

impl ListenerId {
    pub fn of(l: &Listener) -> ListenerId {
        ListenerId {
            netns: l.netns.clone(),
            range: l.range.clone(),
            protocol: l.protocol,
            address: l.address,
            port: l.port,
            pid: l.owner().map(|o| o.pid),
        }
    }

    /// Where it listens ([`Place`]).
    fn place(&self) -> Place {
        (
            self.netns.clone(),
            self.range.clone(),
            self.protocol,
            self.address,
            self.port,
        )
    }
}

/// Where a listener listens, whoever holds it: namespace, range,
/// protocol, address, port.
type Place = (Option<Arc<str>>, Arc<str>, Protocol, IpAddr, u16);

/// The trail's map of tracked listeners, looked up for every listener of
/// every collection (9,900 in a busy range): a fast hash (foldhash,
/// seeded per process) rather than SipHash, whose cost was most of the
/// trail's per-scrape time.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Since when a listener is known, and what that time is.
#[derive(Clone, Debug, PartialEq)]
pub struct Since {
    /// Unix seconds.
    pub unix: f64,
    /// `observed`: the exporter first saw it then (the listener may be
    /// older, up to the exporter's start); `process_start`: its process
    /// started then (`check`, which looks once: the listener is no older).
    pub source: &'static str,
}

/// The trail as one report carries it (for `/metrics`, the status
/// document and `check`).
#[derive(Clone, Debug, Default)]
pub struct TrailView {
    /// Changes detected, by (range, protocol, kind, verdict), every
    /// combination of the ranges seen (zeros included).
    pub counts: BTreeMap<(String, &'static str, &'static str, &'static str), u64>,
    /// Events not recorded because of the rate limit.
    pub dropped: u64,
    /// The newest events, newest last (at most [`RECENT_SHOWN`]).
    pub recent: Vec<Arc<Event>>,
    /// Since when each listener of the report is known, in the order of
    /// [`Collection::listeners`] (`None`: not known). The report moves
    /// these onto its listeners ([`Listener::since`]) when it takes the
    /// view, and this is then empty.
    pub since: Vec<Option<Since>>,
}

/// The verdict of a listener, as events and their counter say it.
pub fn verdict(l: &Listener) -> &'static str {
    if l.is_kernel() {
        return "kernel";
    }
    match l.expected {
        Expected::True => "expected",
        Expected::False => "unexpected",
        Expected::Unknown => "unknown",
    }
}

/// The shared ring: what `/api/v1/events` reads.
#[derive(Debug)]
pub struct Trail {
    ring: VecDeque<Arc<Event>>,
    capacity: usize,
    next_seq: u64,
    counts: BTreeMap<(String, &'static str, &'static str, &'static str), u64>,
    dropped: u64,
}

impl Trail {
    pub fn new(capacity: usize) -> Trail {
        Trail {
            ring: VecDeque::with_capacity(capacity.min(4096)),
            capacity: capacity.max(1),
            next_seq: 1,
            counts: BTreeMap::new(),
            dropped: 0,
        }
    }

    /// The events with a sequence number above `seq`, oldest first.
    pub fn since(&self, seq: u64) -> Vec<Arc<Event>> {
        // Sequence numbers increase along the ring.
        let start = self.ring.partition_point(|e| e.seq <= seq);
        self.ring.range(start..).cloned().collect()
    }

    /// The last sequence number given (0 before the first event).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn push(&mut self, mut event: Event) -> Arc<Event> {
        event.seq = self.next_seq;
        self.next_seq += 1;
        let e = Arc::new(event);
        if self.ring.len() == self.capacity {
            self.ring.pop_front();
        }
        self.ring.push_back(e.clone());
        e
    }
}

/// A token bucket.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A listener being tracked: what its next event (its vanishing, when the
/// process may be gone) needs beyond its id. Small, as a busy range
/// tracks thousands: the holder's fields are one [`HolderFields`] shared
/// by every listener of that holder (a whole event per listener was 13 MiB
/// of the peak for 9,900 listeners of one process).
struct Live {
    first_seen: SystemTime,
    /// The last pass ([`Recorder::diff`]) that saw it.
    seen: u64,
    verdict: &'static str,
    /// Whether the process's details were read into `holder`.
    details_read: bool,
    /// The program that reads the command line (its secret flags).
    program: Program,
    holder: Arc<HolderFields>,
}

/// The event fields that describe a listener's holder, as last recorded
/// or seen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct HolderFields {
    process: String,
    exe: Option<String>,
    exe_gone: bool,
    user: String,
    container: Option<String>,
    pod: Option<String>,
    pod_namespace: Option<String>,
    ppid: Option<u32>,
    cmdline: Option<String>,
    process_start: Option<String>,
}

impl Live {
    /// Since when the listener is known: when the exporter first saw it.
    fn since(&self) -> Since {
        Since {
            unix: unix(self.first_seen),
            source: "observed",
        }
    }

    /// The listener's event (kind and time are set by the caller).
    fn event(&self, id: &ListenerId) -> Event {
        let h = &*self.holder;
        Event {
            seq: 0,
            time: String::new(),
            kind: "appeared",
            range: id.range.to_string(),
            protocol: id.protocol.as_str(),
            address: id.address.to_string(),
            port: id.port,
            netns: id.netns.as_deref().map(str::to_string),
            container: h.container.clone(),
            pod: h.pod.clone(),
            pod_namespace: h.pod_namespace.clone(),
            pid: id.pid,
            ppid: h.ppid,
            process: h.process.clone(),
            exe: h.exe.clone(),
            exe_gone: h.exe_gone,
            cmdline: h.cmdline.clone(),
            user: h.user.clone(),
            verdict: self.verdict,
            previous_verdict: None,
            process_start: h.process_start.clone(),
            count: 1,
            first_time: None,
        }
    }
}

/// The group expected listeners' changes are summed in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Group {
    range: String,
    protocol: &'static str,
    netns: Option<String>,
    process: String,
    user: String,
    kind: &'static str,
    verdict: &'static str,
}

struct Aggregate {
    window_start: SystemTime,
    window_started: Instant,
    /// Changes after the first, not yet recorded.
    pending: u64,
    last: Event,
}

/// Turns collections into events; lives on the collector thread.
pub struct Recorder {
    options: Options,
    shared: Arc<Mutex<Trail>>,
    live: FastMap<ListenerId, Live>,
    /// Passes of [`Recorder::diff`] so far.
    pass: u64,
    /// One [`HolderFields`] per distinct holder, shared by its listeners.
    holders: HashSet<Arc<HolderFields>>,
    bucket: Bucket,
    groups: HashMap<Group, Aggregate>,
}

/// The namespace details of a `netns` label.
struct NsInfo {
    container: Option<String>,
    pod: Option<String>,
    pod_namespace: Option<String>,
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

impl Recorder {
    pub fn new(options: Options) -> Recorder {
        let shared = Arc::new(Mutex::new(Trail::new(options.capacity)));
        Recorder {
            bucket: Bucket {
                tokens: options.burst,
                rate: options.rate,
                burst: options.burst.max(1.0),
                at: Instant::now(),
            },
            options,
            shared,
            live: FastMap::default(),
            pass: 0,
            holders: HashSet::new(),
            groups: HashMap::new(),
        }
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The ring, for readers (`/api/v1/events`).
    pub fn shared(&self) -> Arc<Mutex<Trail>> {
        self.shared.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Trail> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Compares `report`'s listeners with the last ones, records the
    /// changes, and attaches the trail's view to the report. A failed
    /// collection changes nothing (its listeners are unknown, not gone);
    /// one that had to leave out part of the sample records what appeared
    /// but nothing as vanished. `details` reads a process's details.
    pub fn observe(
        &mut self,
        observed: &mut impl Observed,
        now: SystemTime,
        details: &mut dyn FnMut(u32) -> Option<ProcessDetails>,
    ) {
        let report = observed.collection();
        let clock = Instant::now();
        let mut out: Vec<Event> = Vec::new();
        let mut counted: Vec<(String, &'static str, &'static str, &'static str)> = Vec::new();
        self.flush_groups(clock, now, &mut out);
        let since = if report.up() {
            self.diff(&report, now, details, &mut out, &mut counted)
        } else {
            report
                .listeners()
                .map(|l| self.live.get(&ListenerId::of(l)).map(Live::since))
                .collect()
        };
        let mut recorded = Vec::new();
        {
            let mut trail = self.lock();
            for r in report.ranges {
                for kind in KINDS {
                    for verdict in VERDICTS {
                        trail
                            .counts
                            .entry((r.range.clone(), r.protocol.as_str(), kind, verdict))
                            .or_insert(0);
                    }
                }
            }
            for key in counted {
                *trail.counts.entry(key).or_insert(0) += 1;
            }
            for event in out {
                recorded.push(trail.push(event));
            }
        }
        for e in &recorded {
            log_event(e);
        }
        let trail = self.lock();
        let skip = trail.ring.len().saturating_sub(RECENT_SHOWN);
        observed.set_trail(TrailView {
            counts: trail.counts.clone(),
            dropped: trail.dropped,
            recent: trail.ring.iter().skip(skip).cloned().collect(),
            since,
        });
    }

    /// Records the groups whose window ended as one event each.
    fn flush_groups(&mut self, clock: Instant, now: SystemTime, out: &mut Vec<Event>) {
        let window = self.options.aggregate_window;
        let ended: Vec<Group> = self
            .groups
            .iter()
            .filter(|(_, a)| clock.saturating_duration_since(a.window_started) >= window)
            .map(|(g, _)| g.clone())
            .collect();
        for g in ended {
            let a = self.groups.remove(&g).expect("listed above");
            if a.pending == 0 {
                continue;
            }
            let mut e = a.last;
            e.time = crate::text::rfc3339(now);
            e.first_time = Some(crate::text::rfc3339(a.window_start));
            e.count = a.pending;
            e.pid = None;
            e.ppid = None;
            e.cmdline = None;
            e.process_start = None;
            e.address = String::new();
            e.port = 0;
            out.push(e);
        }
    }

    /// Compares the collection's listeners with the tracked ones and
    /// records the changes; returns since when each listener is known, in
    /// the collection's order. One hash lookup per listener in the common
    /// case (nothing changed): each tracked listener is marked with the
    /// pass that saw it, and what no pass mark reaches vanished.
    fn diff(
        &mut self,
        report: &Collection<'_>,
        now: SystemTime,
        details: &mut dyn FnMut(u32) -> Option<ProcessDetails>,
        out: &mut Vec<Event>,
        counted: &mut Vec<(String, &'static str, &'static str, &'static str)>,
    ) -> Vec<Option<Since>> {
        let partial = report.skipped_in(Skipped::SAMPLE) > 0;
        let namespaces: HashMap<&str, NsInfo> = report
            .netns
            .iter()
            .flat_map(|n| &n.namespaces)
            .map(|n| {
                (
                    n.label.as_str(),
                    NsInfo {
                        container: non_empty(&n.container),
                        pod: non_empty(&n.pod),
                        pod_namespace: non_empty(&n.namespace),
                    },
                )
            })
            .collect();
        self.pass += 1;
        let pass = self.pass;
        let observed = |live: &Live| Some(live.since());
        // 1. Mark what is tracked; note what changed verdict and what is
        //    new (a listener identical to one before it, SO_REUSEPORT, is
        //    the same listener).
        let listeners: Vec<&Listener> = report.listeners().collect();
        let mut since: Vec<Option<Since>> = Vec::with_capacity(listeners.len());
        let mut todo: Vec<(usize, bool)> = Vec::new(); // (index, new)
        for (i, l) in listeners.iter().enumerate() {
            let id = ListenerId::of(l);
            match self.live.get_mut(&id) {
                Some(live) => {
                    if live.seen != pass {
                        live.seen = pass;
                        if live.verdict != verdict(l) {
                            todo.push((i, false));
                        }
                    }
                    since.push(observed(live));
                }
                None => {
                    todo.push((i, true));
                    since.push(None);
                }
            }
        }
        // A holder found or lost between two passes (the scan ran out of
        // time) is the same listener: match it by its place.
        let mut unmatched_live: FastMap<Place, Vec<ListenerId>> = FastMap::default();
        if todo.iter().any(|&(_, new)| new) {
            for (id, live) in &self.live {
                if live.seen != pass {
                    unmatched_live
                        .entry(id.place())
                        .or_default()
                        .push(id.clone());
                }
            }
        }
        // 2. Record the changes, in the listeners' order.
        let clock = Instant::now();
        for (i, new) in todo {
            let l = listeners[i];
            let id = ListenerId::of(l);
            let v = verdict(l);
            if new {
                if let Some(live) = self.live.get(&id) {
                    // Identical to a new listener before it.
                    since[i] = observed(live);
                    continue;
                }
                if let Some(list) = unmatched_live.get_mut(&id.place())
                    && let Some(k) = list
                        .iter()
                        .position(|old| old.pid.is_none() || id.pid.is_none())
                {
                    let old = list.swap_remove(k);
                    let mut entry = self.live.remove(&old).expect("listed from live");
                    entry.seen = pass;
                    since[i] = observed(&entry);
                    self.live.insert(id.clone(), entry);
                } else {
                    let live = Live {
                        first_seen: now,
                        seen: pass,
                        verdict: v,
                        details_read: false,
                        program: program_of(l),
                        holder: intern(&mut self.holders, holder_fields(l, &namespaces)),
                    };
                    since[i] = observed(&live);
                    let mut e = live.event(&id);
                    self.live.insert(id.clone(), live);
                    counted.push((l.range.to_string(), id.protocol.as_str(), "appeared", v));
                    e.kind = "appeared";
                    self.emit(e, &id, now, clock, details, out);
                    continue;
                }
            }
            let live = self.live.get_mut(&id).expect("tracked");
            if live.verdict != v {
                let before = live.verdict;
                live.verdict = v;
                live.holder = intern(&mut self.holders, holder_fields(l, &namespaces));
                live.details_read = false;
                live.program = program_of(l);
                counted.push((
                    l.range.to_string(),
                    id.protocol.as_str(),
                    "verdict_changed",
                    v,
                ));
                let mut e = live.event(&id);
                e.kind = "verdict_changed";
                e.previous_verdict = Some(before);
                self.emit(e, &id, now, clock, details, out);
            }
        }
        // 3. What no listener of this collection marked vanished.
        // Listeners of ranges no longer watched (a reload) are dropped
        // without an event: they did not vanish.
        let watched: HashSet<(&str, &str)> = report
            .ranges
            .iter()
            .map(|r| (r.range.as_str(), r.protocol.as_str()))
            .collect();
        let gone: Vec<ListenerId> = if partial {
            Vec::new()
        } else {
            self.live
                .iter()
                .filter(|(_, live)| live.seen != pass)
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in gone {
            let live = self.live.get(&id).expect("listed");
            if !watched.contains(&(&*id.range, id.protocol.as_str())) {
                self.live.remove(&id);
                continue;
            }
            counted.push((
                id.range.to_string(),
                id.protocol.as_str(),
                "vanished",
                live.verdict,
            ));
            let mut e = live.event(&id);
            e.kind = "vanished";
            self.emit(e, &id, now, clock, details, out);
            self.live.remove(&id);
        }
        // Holders no listener shares any more.
        self.holders.retain(|h| Arc::strong_count(h) > 1);
        since
    }

    /// Records `e` (of the listener `id`), aggregated when expected, under
    /// the rate limit otherwise.
    fn emit(
        &mut self,
        mut e: Event,
        id: &ListenerId,
        now: SystemTime,
        clock: Instant,
        details: &mut dyn FnMut(u32) -> Option<ProcessDetails>,
        out: &mut Vec<Event>,
    ) {
        e.time = crate::text::rfc3339(now);
        if e.verdict == "expected" {
            let g = Group {
                range: e.range.clone(),
                protocol: e.protocol,
                netns: e.netns.clone(),
                process: e.process.clone(),
                user: e.user.clone(),
                kind: e.kind,
                verdict: e.verdict,
            };
            if let Some(a) = self.groups.get_mut(&g) {
                a.pending += 1;
                a.last = e;
                return;
            }
            self.groups.insert(
                g.clone(),
                Aggregate {
                    window_start: now,
                    window_started: clock,
                    pending: 0,
                    last: e.clone(),
                },
            );
        }
        if !self.bucket.take(clock) {
            self.lock().dropped += 1;
            return;
        }
        self.fill_details(&mut e, id, details);
        out.push(e);
    }

    /// Adds the process's parent, command line and start time: read once
    /// per listener and kept for its later events (its vanishing, when
    /// the process may be gone).
    fn fill_details(
        &mut self,
        e: &mut Event,
        id: &ListenerId,
        details: &mut dyn FnMut(u32) -> Option<ProcessDetails>,
    ) {
        let Some(pid) = id.pid else { return };
        if let Some(live) = self.live.get(id)
            && live.details_read
        {
            e.ppid = live.holder.ppid;
            e.cmdline = live.holder.cmdline.clone();
            e.process_start = live.holder.process_start.clone();
            return;
        }
        let program = self.live.get(id).map_or(Program::Unknown, |l| l.program);
        if let Some(d) = details(pid) {
            e.ppid = d.ppid;
            e.cmdline = if self.options.cmdline {
                d.cmdline.as_deref().map(|c| render_cmdline(c, program))
            } else {
                None
            };
            e.process_start = d
                .start_time
                .map(|t| crate::text::rfc3339(UNIX_EPOCH + Duration::from_secs_f64(t.max(0.0))));
        }
        if let Some(live) = self.live.get_mut(id) {
            let mut h = (*live.holder).clone();
            h.ppid = e.ppid;
            h.cmdline = e.cmdline.clone();
            h.process_start = e.process_start.clone();
            live.holder = intern(&mut self.holders, h);
            live.details_read = true;
        }
    }
}

/// For a report made once (`check`): since when each listener that is
/// not expected is known is its process's start time (the listener is no
/// older), where the platform says; allowed listeners are not looked up.
pub fn since_process_start(
    observed: &mut impl Observed,
    details: &mut dyn FnMut(u32) -> Option<ProcessDetails>,
) {
    let report = observed.collection();
    let since = report
        .listeners()
        .map(|l| {
            let o = l.owner().filter(|_| l.expected != Expected::True)?;
            let t = details(o.pid).and_then(|d| d.start_time)?;
            Some(Since {
                unix: t,
                source: "process_start",
            })
        })
        .collect();
    observed.set_trail(TrailView {
        since,
        ..TrailView::default()
    });
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The holder's event fields the report gives (the details are read
/// later, by [`Recorder::fill_details`]).
fn holder_fields(l: &Listener, namespaces: &HashMap<&str, NsInfo>) -> HolderFields {
    let ns = l.netns.as_deref().and_then(|n| namespaces.get(n));
    let owner = l.owner();
    HolderFields {
        process: l.process(),
        exe: owner.and_then(|o| {
            o.exe
                .as_deref()
                .map(|x| escape(&String::from_utf8_lossy(x)))
        }),
        exe_gone: owner.is_some_and(|o| o.exe_gone()),
        user: l.user.to_string(),
        container: ns.and_then(|n| n.container.clone()),
        pod: ns.and_then(|n| n.pod.clone()),
        pod_namespace: ns.and_then(|n| n.pod_namespace.clone()),
        ppid: None,
        cmdline: None,
        process_start: None,
    }
}

/// The shared copy of `fields`: the listeners of one holder hold one.
fn intern(holders: &mut HashSet<Arc<HolderFields>>, fields: HolderFields) -> Arc<HolderFields> {
    if let Some(h) = holders.get(&fields) {
        return h.clone();
    }
    let h = Arc::new(fields);
    holders.insert(h.clone());
    h
}

/// One line in the log per recorded event: warning level for listeners
/// not expected.
fn log_event(e: &Event) {
    let level = if e.verdict == "expected" {
        log::Level::Info
    } else {
        log::Level::Warn
    };
    let exe = e.exe.as_deref().unwrap_or("");
    let cmdline = e.cmdline.as_deref().unwrap_or("");
    let started = e.process_start.as_deref().unwrap_or("");
    let pid = e.pid.map_or(String::new(), |p| p.to_string());
    let ppid = e.ppid.map_or(String::new(), |p| p.to_string());
    // `netns` only where the listener is in another namespace: an empty
    // netns="" on every line says nothing.
    macro_rules! emit {
        ($($netns:tt)*) => {
            log::log!(
                level,
                seq = e.seq,
                kind = e.kind,
                range = e.range.as_str(),
                protocol = e.protocol,
                address = e.address.as_str(),
                port = e.port,
                $($netns)*
                pid = pid.as_str(),
                ppid = ppid.as_str(),
                process = e.process.as_str(),
                exe = exe,
                exe_gone = e.exe_gone,
                cmdline = cmdline,
                user = e.user.as_str(),
                verdict = e.verdict,
                process_start = started,
                count = e.count;
                "listener {}", e.kind
            )
        };
    }
    match e.netns.as_deref() {
        Some(netns) => emit!(netns = netns,),
        None => emit!(),
    }
}

/// The program that reads `l`'s holder's command line.
fn program_of(l: &Listener) -> Program {
    Program::of_exe(l.owner().and_then(|o| o.exe.as_deref()))
}

/// Escapes what a terminal, a log reader or a page could take for
/// something else: backslash, control and format characters (bidi
/// overrides included) as `\u{..}` or the usual `\n`, `\t`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control()
                || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}') =>
            {
                out.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// A command line as the trail shows it: the arguments (NUL-separated in
/// `raw`) with their secrets redacted as `program` reads them
/// ([`crate::redact`]), each escaped, joined by spaces, then cut to
/// [`CMDLINE_MAX`] bytes (after redaction, so a cut never leaves half a
/// secret), ending in `...` when cut.
pub fn render_cmdline(raw: &[u8], program: Program) -> String {
    let shown: Vec<String> = crate::redact::redact(raw, program)
        .iter()
        .map(|a| escape(a))
        .collect();
    let line = shown.join(" ");
    if line.len() <= CMDLINE_MAX {
        return line;
    }
    let mut cut = CMDLINE_MAX - 3;
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &line[..cut])
}

pub const EVENTS_HELP: &str = "Listener changes the trail detected in the range since the exporter started (scrapes and watch passes), by kind (appeared, vanished, verdict_changed) and verdict (expected, unexpected, unknown, kernel); also those the rate limit dropped or the expected ones summed. GET /api/v1/events lists them.";
pub const EVENTS_DROPPED_HELP: &str = "Trail events not recorded (no event, no log line) because of the rate limit, --collector.trail.rate and --collector.trail.burst.";

/// The listener trail's counters, when the report carries a trail.
pub fn families(trail: Option<&TrailView>) -> Vec<MetricFamily> {
    let Some(trail) = trail else {
        return Vec::new();
    };
    let counter =
        |name: &'static str, help: &'static str, series: Vec<(Vec<(&str, &str)>, u64)>| {
            let metrics = series
                .into_iter()
                .map(|(labels, v)| counter_metric(&labels, v))
                .collect();
            counter_family(name, help, metrics)
        };
    let events = trail
        .counts
        .iter()
        .map(|((range, protocol, kind, verdict), n)| {
            (
                vec![
                    ("range", range.as_str()),
                    ("protocol", *protocol),
                    ("kind", *kind),
                    ("verdict", *verdict),
                ],
                *n,
            )
        })
        .collect();
    let mut out = Vec::new();
    // The text encoder refuses a family without series (no range yet).
    if !trail.counts.is_empty() {
        out.push(counter(
            "portrange_listener_events_total",
            EVENTS_HELP,
            events,
        ));
    }
    out.push(counter(
        "portrange_listener_events_dropped_total",
        EVENTS_DROPPED_HELP,
        vec![(Vec::new(), trail.dropped)],
    ));
    out
}

/// Why the HTTP endpoint withholds command lines (`None`: it serves them,
/// redacted): always when the trail keeps none, and without
/// authentication unless the operator said to serve them anyway. A
/// command line is a process's own account of itself and often carries
/// what redaction cannot recognise; without authentication anyone who
/// reaches the port would read it. The log keeps them redacted: it is
/// read by those who may read the host's processes anyway.
pub fn cmdline_withheld(
    kept: bool,
    authenticated: bool,
    serve_without_auth: bool,
) -> Option<String> {
    if !kept {
        return Some("command lines are not kept (--collector.trail.no-cmdline)".to_string());
    }
    if authenticated || serve_without_auth {
        return None;
    }
    Some(WITHHELD_WITHOUT_AUTH.to_string())
}

/// The reason command lines are withheld without authentication.
pub const WITHHELD_WITHOUT_AUTH: &str = "no authentication is configured (basic_auth_users, or client certificates \
     verified with client_auth_type RequireAndVerifyClientCert, in --web.config.file); \
     --web.serve-command-lines-without-auth serves them anyway";

/// `events` as served where command lines are withheld: each `cmdline` null.
pub fn without_cmdlines(events: &[Arc<Event>]) -> Vec<Event> {
    events
        .iter()
        .map(|e| Event {
            cmdline: None,
            ..(**e).clone()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::Owner;
    use crate::ranges::{PortSet, Protocol};
    use crate::report::{RangeView, Report};

    /// Each shape of issue 26, through the trail's rendering, for the
    /// program that has it; the secrets are all within the first 256
    /// bytes, so a redaction that missed one would show it.
    #[test]
    fn secrets_are_redacted_in_every_spelling() {
        let cases: [(&[u8], Program, &str); 9] = [
            (
                b"app\0https://user:pw3@db.example/x",
                Program::Other,
                "app https://user:<redacted>@db.example/x",
            ),
            (
                b"curl\0-H\0Authorization: Bearer tok4\0--header=Proxy-Authorization: Basic Zm9v",
                Program::Curl,
                "curl -H Authorization: <redacted> --header=Proxy-Authorization: <redacted>",
            ),
            (
                b"curl\0-u\0alice:cpw\0--user=bob:cpw2",
                Program::Curl,
                "curl -u alice:<redacted> --user=bob:<redacted>",
            ),
            (
                b"sshfs\0-o\0user=u,password=opw,ro",
                Program::Other,
                "sshfs -o user=u,password=<redacted>,ro",
            ),
            (
                b"/usr/bin/rtpengine\0--password=hunter2\0--Api-Key\0abc123\0TOKEN=t0k\0db_passwd=x1\0--db-password\0pass7\0API_KEY=ak\0--secret\0--port\0-v",
                Program::Other,
                "/usr/bin/rtpengine --password=<redacted> --Api-Key <redacted> TOKEN=<redacted> db_passwd=<redacted> --db-password <redacted> API_KEY=<redacted> --secret --port -v",
            ),
            (
                b"mysql\0-uroot\0-ppass8\0-h\0db",
                Program::MySql,
                "mysql -uroot -p<redacted> -h db",
            ),
            (
                b"redis-cli\0-a\0redispw2\0-p\x006379",
                Program::RedisCli,
                "redis-cli -a <redacted> -p 6379",
            ),
            (
                b"sshpass\0-p\0hunter2\0ssh\0-p\x002222\0h",
                Program::Sshpass,
                "sshpass -p <redacted> ssh -p 2222 h",
            ),
            (b"nc\0-l\0-p\x003255", Program::Other, "nc -l -p 3255"),
        ];
        for (raw, program, want) in cases {
            let line = render_cmdline(raw, program);
            assert_eq!(line, want, "{program:?}");
            for secret in [
                "pw3", "tok4", "Zm9v", "cpw", "opw", "hunter2", "abc123", "t0k", "x1", "pass7",
                "=ak", "pass8", "redispw2",
            ] {
                assert!(!line.contains(secret), "{secret} in {line}");
            }
        }
    }

    #[test]
    fn command_lines_are_escaped_and_cut_at_256_bytes() {
        let line = render_cmdline(
            b"a\nb\0\x1b[31m\0\xe2\x80\xaeevil\0back\\slash",
            Program::Other,
        );
        assert_eq!(line, "a\\nb \\u{1b}[31m \\u{202e}evil back\\\\slash");
        // Cut at 256 bytes on a character boundary, ending in "...".
        let long = format!("/bin/x\0{}", "é".repeat(300));
        let line = render_cmdline(long.as_bytes(), Program::Other);
        assert!(
            line.len() <= CMDLINE_MAX && line.len() > CMDLINE_MAX - 4 && line.ends_with("..."),
            "{}",
            line.len()
        );
        // Redacted before the cut: a secret straddling byte 256 is not
        // half shown. The same line under a name that is no secret shows
        // the secret's head, so the assertion can fail.
        let straddling = |key: &str| {
            let raw = format!("{}\0--{key}=SECRETSECRETSECRET", "a".repeat(230));
            render_cmdline(raw.as_bytes(), Program::Other)
        };
        let control = straddling("colour");
        assert!(
            control.contains("SECRET") && control.ends_with("..."),
            "{control}"
        );
        let line = straddling("password");
        assert!(!line.contains("SEC"), "{line}");
        assert_eq!(line, format!("{} --password=<redacted>", "a".repeat(230)));
    }

    fn view(listeners: Vec<Listener>) -> Report {
        Report {
            ranges: vec![RangeView {
                listeners,
                ..RangeView::capacity(
                    "rtp",
                    Protocol::Udp,
                    None,
                    PortSet::from_intervals(vec![(1, 65535)]),
                )
            }],
            ..Report::default()
        }
    }

    fn listener(port: u16, pid: u32, comm: &str, expected: Expected) -> Listener {
        let owner = Owner {
            exe: Some(b"/usr/bin/x".to_vec()),
            ..Owner::named(pid, comm.as_bytes())
        };
        Listener::held_by("rtp", port, owner, expected)
    }

    fn no_details(_: u32) -> Option<ProcessDetails> {
        Some(ProcessDetails {
            ppid: Some(1),
            cmdline: Some(b"x\0--key=k\0".to_vec()),
            start_time: Some(1_700_000_000.0),
        })
    }

    fn events(r: &Recorder) -> Vec<Arc<Event>> {
        r.shared().lock().unwrap().since(0)
    }

    #[test]
    fn a_listener_appears_changes_verdict_and_vanishes() {
        let mut rec = Recorder::new(Options::default());
        let t0 = SystemTime::now();
        let mut r = view(vec![listener(5000, 42, "nc", Expected::False)]);
        rec.observe(&mut r, t0, &mut no_details);
        let since = r.since_of(&r.ranges[0].listeners[0]).unwrap();
        assert_eq!(since.1, "observed");
        // The owner is not found this time: the same listener, unknown.
        let mut r = view(vec![Listener {
            holder: None,
            expected: Expected::Unknown,
            ..listener(5000, 42, "nc", Expected::False)
        }]);
        rec.observe(&mut r, t0, &mut no_details);
        let mut r = view(vec![]);
        rec.observe(&mut r, t0, &mut no_details);
        let ev = events(&rec);
        let kinds: Vec<(&str, &str)> = ev.iter().map(|e| (e.kind, e.verdict)).collect();
        assert_eq!(
            kinds,
            vec![
                ("appeared", "unexpected"),
                ("verdict_changed", "unknown"),
                ("vanished", "unknown")
            ]
        );
        assert_eq!(ev[0].cmdline.as_deref(), Some("x --key=<redacted>"));
        assert_eq!(ev[0].ppid, Some(1));
        assert_eq!(ev[1].previous_verdict, Some("unexpected"));
        assert_eq!(ev.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        let counts = &r.trail.as_ref().unwrap().counts;
        assert_eq!(
            counts[&("rtp".to_string(), "udp", "appeared", "unexpected")],
            1
        );
        assert_eq!(
            counts[&("rtp".to_string(), "udp", "vanished", "unknown")],
            1
        );
        assert_eq!(
            counts.len(),
            12,
            "every kind and verdict of the range, zeros included"
        );
    }

    #[test]
    fn each_listener_keeps_the_time_it_was_first_seen() {
        let mut rec = Recorder::new(Options::default());
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000);
        let t1 = UNIX_EPOCH + Duration::from_secs(2_000);
        let a = listener(5000, 42, "nc", Expected::False);
        rec.observe(&mut view(vec![a.clone()]), t0, &mut no_details);
        // Two identical listeners (SO_REUSEPORT) and a new one, in the
        // report's order: each gets its own time, the old one keeps t0.
        let b = listener(5001, 43, "nc", Expected::False);
        let mut r = view(vec![a.clone(), a.clone(), b]);
        rec.observe(&mut r, t1, &mut no_details);
        let since: Vec<Option<(f64, &str)>> = r.listeners().map(|l| r.since_of(l)).collect();
        assert_eq!(
            since,
            vec![
                Some((1_000.0, "observed")),
                Some((1_000.0, "observed")),
                Some((2_000.0, "observed"))
            ]
        );
        // A failed collection knows no listener's time.
        let mut failed = Report::failed("refused".into(), vec![], Duration::ZERO);
        rec.observe(&mut failed, t1, &mut no_details);
        assert!(failed.listeners().all(|l| l.since.is_none()));
    }

    #[test]
    fn a_failed_or_partial_collection_makes_nothing_vanish() {
        let mut rec = Recorder::new(Options::default());
        let t = SystemTime::now();
        rec.observe(
            &mut view(vec![listener(5000, 42, "nc", Expected::False)]),
            t,
            &mut no_details,
        );
        let mut failed = Report::failed("refused".into(), vec![], Duration::ZERO);
        rec.observe(&mut failed, t, &mut no_details);
        let mut partial = view(vec![]);
        partial.skipped.push(crate::platform::Skipped::new(
            "sample",
            "udp dump",
            "deadline passed",
        ));
        rec.observe(&mut partial, t, &mut no_details);
        assert_eq!(events(&rec).len(), 1);
    }

    #[test]
    fn without_command_lines_the_flag_leaves_them_out() {
        let mut rec = Recorder::new(Options {
            cmdline: false,
            ..Options::default()
        });
        rec.observe(
            &mut view(vec![listener(5000, 42, "nc", Expected::False)]),
            SystemTime::now(),
            &mut no_details,
        );
        assert_eq!(events(&rec)[0].cmdline, None);
    }

    /// An RTP engine opening and closing 100 sockets a second for 10 s,
    /// watched every second, with an intruder in the middle: the expected
    /// churn is summed, every unexpected change is kept.
    #[test]
    fn rtp_churn_is_aggregated_and_never_crowds_out_the_unexpected() {
        let mut rec = Recorder::new(Options {
            aggregate_window: Duration::from_millis(300),
            ..Options::default()
        });
        let t = SystemTime::now();
        for second in 0..10u16 {
            let mut ls: Vec<Listener> = (0..100)
                .map(|i| listener(10_000 + second * 100 + i, 7, "rtpengine", Expected::True))
                .collect();
            if second == 5 {
                ls.push(listener(4444, 666, "nc", Expected::False));
            }
            rec.observe(&mut view(ls), t, &mut no_details);
            if second == 4 {
                std::thread::sleep(Duration::from_millis(350));
            }
        }
        let ev = events(&rec);
        let individual = ev
            .iter()
            .filter(|e| e.verdict == "expected" && e.count == 1)
            .count();
        let summed: u64 = ev.iter().filter(|e| e.count > 1).map(|e| e.count).sum();
        assert!(ev.len() < 12, "no storm: {} events", ev.len());
        assert!(individual <= 4, "{individual}");
        assert!(summed > 0);
        let nc: Vec<&str> = ev
            .iter()
            .filter(|e| e.process == "nc")
            .map(|e| e.kind)
            .collect();
        assert_eq!(nc, vec!["appeared", "vanished"]);
        let trail = rec.shared();
        let trail = trail.lock().unwrap();
        assert_eq!(
            trail.counts[&("rtp".to_string(), "udp", "appeared", "expected")],
            1000
        );
        assert_eq!(
            trail.counts[&("rtp".to_string(), "udp", "vanished", "expected")],
            900
        );
    }

    /// 1,000 unexpected listeners at once: the burst is recorded, the rest
    /// dropped and counted; the ring keeps its size.
    #[test]
    fn the_rate_limit_drops_and_counts() {
        let mut rec = Recorder::new(Options {
            capacity: 50,
            rate: 1.0,
            burst: 100.0,
            ..Options::default()
        });
        let ls: Vec<Listener> = (0..1000)
            .map(|i| listener(20_000 + i, 1000 + u32::from(i), "evil", Expected::False))
            .collect();
        let mut r = view(ls);
        rec.observe(&mut r, SystemTime::now(), &mut no_details);
        let trail = rec.shared();
        let t = trail.lock().unwrap();
        assert_eq!(t.dropped(), 900);
        assert_eq!(t.since(0).len(), 50, "the ring keeps the last 50");
        assert_eq!(t.last_seq(), 100);
        assert_eq!(
            t.since(95).iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![96, 97, 98, 99, 100]
        );
        assert_eq!(r.trail.as_ref().unwrap().dropped, 900);
        assert_eq!(r.trail.as_ref().unwrap().recent.len(), RECENT_SHOWN);
    }
}
