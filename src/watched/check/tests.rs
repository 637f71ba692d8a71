//! The ranges' judgement and lines as `check` prints them (the first
//! line, the performance data, the tables, `--output json`), on views
//! made here; [`report`] also serves `check`'s own tests.

use std::sync::Arc;

use super::*;
use crate::check::{Options, render, render_json};
use crate::platform::{Holder, Owner};
use crate::ranges::{PortSet, Protocol};
use crate::report::Report;

fn listener(comm: &[u8], port: u16, expected: Expected) -> Listener {
    Listener {
        address: "::".parse().unwrap(),
        ..Listener::held_by("framehawk", port, Owner::named(4242, comm), expected)
    }
}

pub(crate) fn report(in_use: u32, listeners: Vec<(&[u8], Expected)>) -> Report {
    let listeners: Vec<Listener> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, (comm, expected))| listener(comm, 3224 + i as u16, expected))
        .collect();
    Report {
        ranges: vec![RangeView {
            in_use,
            unexpected: listeners
                .iter()
                .filter(|l| l.expected == Expected::False)
                .count() as u64,
            unknown: listeners
                .iter()
                .filter(|l| l.expected == Expected::Unknown)
                .count() as u64,
            listeners,
            ..RangeView::capacity(
                "framehawk",
                Protocol::Udp,
                None,
                PortSet::from_intervals(vec![(3224, 3324)]),
            )
        }],
        ..Report::default()
    }
}

fn opts(w: &str, c: &str) -> Options {
    Options {
        warning: w.parse().unwrap(),
        critical: c.parse().unwrap(),
        verbosity: 0,
        ..Options::default()
    }
}

fn status(r: &Report, o: &Options) -> Status {
    render(r, &[], o).0
}

#[test]
fn statuses() {
    let o = Options::default();
    assert_eq!(status(&report(0, vec![]), &o), Status::Ok);
    assert_eq!(
        status(&report(91, vec![]), &o),
        Status::Warning,
        "10 free < 10.1"
    );
    assert_eq!(status(&report(90, vec![]), &o), Status::Ok, "11 free");
    assert_eq!(status(&report(101, vec![]), &o), Status::Critical);
    assert_eq!(
        status(&report(1, vec![(b"nc", Expected::False)]), &o),
        Status::Critical
    );
    let (s, text) = render(&report(1, vec![(b"nc", Expected::Unknown)]), &[], &o);
    assert_eq!(s, Status::Warning, "an undecided verdict is never OK");
    assert!(
        text.contains("1 listener the allowlist cannot judge (udp [::]:3224 in framehawk held by nc; its executable cannot be read)"),
        "a known owner is not called unknown: {text}"
    );
    assert!(!text.contains("unknown owner"), "{text}");
    let mut unowned = report(1, vec![(b"nc", Expected::Unknown)]);
    unowned.ranges[0].listeners[0].holder = None;
    let (s, text) = render(&unowned, &[], &o);
    assert_eq!(s, Status::Warning, "an unknown owner is never OK");
    assert!(text.contains("1 listener with unknown owner"), "{text}");
    assert!(!text.contains("cannot judge"), "{text}");
    let mut blind = report(1, vec![(b"nc", Expected::Unknown)]);
    blind.missing_privileges = vec!["CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"];
    let (s, text) = render(&blind, &[], &o);
    assert_eq!(s, Status::Warning);
    assert!(
        text.lines()
            .next()
            .unwrap()
            .contains("grant CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"),
        "{text}"
    );
    let five = Options {
        warning: Threshold::min_free("5").unwrap(),
        ..Options::default()
    };
    assert_eq!(status(&report(96, vec![]), &five), Status::Ok);
    assert_eq!(status(&report(97, vec![]), &five), Status::Warning);
    let mut failed = report(0, vec![]);
    failed.error = Some("udp/ipv4 dump: refused".into());
    let (s, text) = render(&failed, &[], &o);
    assert_eq!(s, Status::Unknown);
    assert!(text.starts_with("PORTRANGE UNKNOWN - sockets could not be sampled"));
}

#[test]
fn thresholds_in_the_range_syntax() {
    // Critical below 5 free, warning below 20%.
    let o = opts("20%:", "5:");
    assert_eq!(status(&report(80, vec![]), &o), Status::Ok, "21 free");
    assert_eq!(status(&report(82, vec![]), &o), Status::Warning, "19 free");
    assert_eq!(status(&report(97, vec![]), &o), Status::Critical, "4 free");
    // Inside: critical when 0-2 ports are free.
    let o = opts("10:", "@0:2");
    assert_eq!(status(&report(99, vec![]), &o), Status::Critical);
    assert_eq!(status(&report(98, vec![]), &o), Status::Warning);
    // Outside 10-50 free: a range that should be neither idle nor busy.
    let o = opts("10:50", "1:");
    assert_eq!(status(&report(0, vec![]), &o), Status::Warning, "101 free");
    assert_eq!(status(&report(60, vec![]), &o), Status::Ok, "41 free");
}

#[test]
fn perfdata_on_the_first_line() {
    let (_, text) = render(
        &report(3, vec![(b"CtxGfx", Expected::False)]),
        &[],
        &Options::default(),
    );
    let first = text.lines().next().unwrap();
    let (_, perf) = first.split_once(" | ").expect("performance data");
    assert_eq!(
        perf,
        "framehawk_udp_in_use=3;;;0;101 framehawk_udp_free=98;10.1:;1:;0;101 \
         framehawk_udp_unexpected=1;;0;0; framehawk_udp_unknown=0;0;;0;"
    );
    assert_eq!(first.matches('|').count(), 1);
    let (_, text) = render(&report(0, vec![]), &[], &opts("@0:10%", "~:0"));
    let perf = text.lines().next().unwrap().split_once(" | ").unwrap().1;
    assert!(
        perf.contains("framehawk_udp_free=101;@0:10.1;~:0;0;101"),
        "{perf}"
    );
    assert_eq!(perf_label("a b"), "'a b'");
    assert_eq!(perf_label("it's"), "'it''s'");
    assert_eq!(perf_label("x=y"), "'x=y'");
    assert_eq!(perf_label("fh_udp_free"), "fh_udp_free");
}

#[test]
fn the_first_line_names_the_first_unexpected_listener() {
    let (s, text) = render(
        &report(
            3,
            vec![
                (b"CtxGfx", Expected::True),
                (b"nc", Expected::False),
                (b"socat", Expected::False),
            ],
        ),
        &[],
        &Options::default(),
    );
    assert_eq!(s, Status::Critical);
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with(
            "PORTRANGE CRITICAL - 2 unexpected listeners: nc (user root) on udp [::]:3225 in framehawk; socat (user root) on udp [::]:3226 in framehawk |"
        ),
        "{first}"
    );
}

/// Fifty python3 listeners in one range and one socat in another: the
/// first line and the long output group by owner and range, so socat is
/// named on both, and the long output stays short.
#[test]
fn listeners_are_grouped_by_owner_so_no_offender_hides() {
    let mut many: Vec<(&[u8], Expected)> = vec![(b"python3", Expected::False); 50];
    many.push((b"CtxGfx", Expected::True));
    let mut r = report(51, many);
    let mut mosh = report(1, vec![(b"socat", Expected::False)])
        .ranges
        .remove(0);
    mosh.range = "mosh".into();
    for l in &mut mosh.listeners {
        l.range = "mosh".into();
        l.port = 60001;
    }
    r.ranges.push(mosh);
    let (s, text) = render(&r, &[], &Options::default());
    assert_eq!(s, Status::Critical);
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with(
            "PORTRANGE CRITICAL - 51 unexpected listeners: python3 (user root) on 50 udp ports in framehawk ([::]:3224, [::]:3225, [::]:3226 and 47 more); socat (user root) on udp [::]:60001 in mosh |"
        ),
        "{first}"
    );
    let table: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Unexpected and unknown listeners, by owner and range:"))
        .collect();
    assert_eq!(
        table[1..4],
        [
            "PROTOCOL  PROCESS   PID  USER  EXPECTED  RANGE      COUNT  ADDRESS:PORT",
            "udp       python3  4242  root  false     framehawk     50  [::]:3224, [::]:3225, [::]:3226 and 47 more",
            "udp       socat    4242  root  false     mosh           1  [::]:60001",
        ],
        "{text}"
    );
    assert_eq!(
        table[4], "1 allowed listener not shown (-v lists them).",
        "{text}"
    );
    // Many owners: five named on the first line, twenty in the table,
    // the rest counted; the whole answer fits NRPE's 4 KiB.
    let names: Vec<Vec<u8>> = (0..30)
        .map(|i| format!("evil{i:02}").into_bytes())
        .collect();
    let r = report(
        60,
        names
            .iter()
            .flat_map(|n| {
                [
                    (n.as_slice(), Expected::False),
                    (n.as_slice(), Expected::False),
                ]
            })
            .collect(),
    );
    let (_, text) = render(&r, &[], &Options::default());
    let first = text.lines().next().unwrap();
    assert!(
        first.contains("evil04 (user root) on 2 udp ports"),
        "{first}"
    );
    assert!(!first.contains("evil05"), "{first}");
    assert!(
        first.contains("; and 50 listeners of 25 more owners |"),
        "{first}"
    );
    assert!(
        text.contains("\nudp       evil19   4242  root  false     framehawk      2  "),
        "{text}"
    );
    assert!(!text.contains("evil20"), "{text}");
    assert!(
        text.contains("... and 20 listeners of 10 more owners (-v lists every listener"),
        "{text}"
    );
    assert!(text.len() < 4096, "{} bytes", text.len());
}

#[test]
fn excluded_ports_are_not_free() {
    let o = Options::default();
    let mut r = report(1, vec![]);
    r.ranges[0].excluded = Some(PortSet::from_intervals(vec![(3230, 3324)]));
    let (s, text) = render(&r, &[], &o);
    assert_eq!(s, Status::Warning, "100 free, 95 of them excluded:\n{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with(
            "PORTRANGE WARNING - framehawk/udp has 5 of 101 ports free, 95 excluded (warning 10%:)"
        ),
        "{text}"
    );
    assert_eq!(
        lines[2],
        "RANGE      PROTOCOL  PORTS  IN USE  FREE  EXCLUDED  UNEXPECTED  UNKNOWN"
    );
    assert_eq!(
        lines[3],
        "framehawk  udp         101       1     5        95           0        0"
    );
    r.ranges[0].excluded = Some(PortSet::from_intervals(vec![(3225, 3324)]));
    let (s, text) = render(&r, &[], &o);
    assert_eq!(s, Status::Critical, "{text}");
    assert!(
        text.starts_with(
            "PORTRANGE CRITICAL - framehawk/udp is full (1 of 101 ports in use, 100 excluded)"
        ),
        "{text}"
    );
    let (_, json) = render_json(&r, &[], &o);
    assert!(json.contains("\"excluded_ports\":100"), "{json}");
}

#[test]
fn table_layout_lists_only_what_needs_a_look() {
    let (s, text) = render(
        &report(
            2,
            vec![(b"CtxGfx", Expected::False), (b"CtxGfx", Expected::True)],
        ),
        &[],
        &Options::default(),
    );
    assert_eq!(s, Status::Critical);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[2],
        "RANGE      PROTOCOL  PORTS  IN USE  FREE  UNEXPECTED  UNKNOWN"
    );
    assert_eq!(
        lines[3],
        "framehawk  udp         101       2    99           1        0"
    );
    assert_eq!(
        lines[5],
        "Unexpected and unknown listeners, by owner and range:"
    );
    assert_eq!(
        lines[6],
        "PROTOCOL  PROCESS   PID  USER  EXPECTED  RANGE      COUNT  ADDRESS:PORT"
    );
    assert_eq!(
        lines[7],
        "udp       CtxGfx   4242  root  false     framehawk      1  [::]:3224"
    );
    assert_eq!(lines[8], "1 allowed listener not shown (-v lists them).");
    assert_eq!(lines.len(), 9);
    // -v lists the allowed one too.
    let o = Options {
        verbosity: 1,
        ..Options::default()
    };
    let (_, text) = render(
        &report(
            2,
            vec![(b"CtxGfx", Expected::False), (b"CtxGfx", Expected::True)],
        ),
        &[],
        &o,
    );
    assert_eq!(text.lines().filter(|l| l.starts_with("udp ")).count(), 2);
    // -vv adds the collection's counters.
    let o = Options {
        verbosity: 2,
        ..Options::default()
    };
    let (_, text) = render(&report(0, vec![]), &[], &o);
    assert!(text.contains("Collection: 0.000 s;"), "{text}");
}

#[test]
fn thousands_of_allowed_listeners_stay_short() {
    let many: Vec<(&[u8], Expected)> = (0..5000)
        .map(|i| {
            (
                b"asterisk".as_slice(),
                if i % 100 == 0 {
                    Expected::False
                } else {
                    Expected::True
                },
            )
        })
        .collect();
    let mut r = report(50, many);
    r.ranges[0].spec = PortSet::from_intervals(vec![(1, 10_000)]);
    let (s, text) = render(&r, &[], &Options::default());
    assert_eq!(s, Status::Critical);
    assert!(text.lines().count() < 40, "{}", text.lines().count());
    assert!(text.len() < 4096, "{} bytes", text.len());
    // One owner: one row, whatever the count.
    assert!(
        text.contains("udp       asterisk  4242  root  false     framehawk     50  [::]:3224, [::]:3324, [::]:3424 and 47 more\n"),
        "{text}"
    );
    assert!(text.contains("4950 allowed listeners not shown"), "{text}");
}

#[test]
fn ephemeral_overlap_is_a_named_warning() {
    let mut r = report(0, vec![]);
    r.ranges[0].ephemeral_overlap = Some(25);
    let (s, text) = render(&r, &[], &Options::default());
    assert_eq!(s, Status::Warning);
    assert!(
        text.starts_with(
            "PORTRANGE WARNING - framehawk/udp: 25 ports are in the ephemeral port range"
        ),
        "{text}"
    );
    r.ranges[0].ephemeral_overlap = Some(0);
    assert_eq!(render(&r, &[], &Options::default()).0, Status::Ok);
}

#[test]
fn hostile_names_stay_on_one_line_and_out_of_the_perfdata() {
    let (_, text) = render(
        &report(1, vec![(b"a\nb\tc\\d|x=1", Expected::False)]),
        &[],
        &Options::default(),
    );
    let first = text.lines().next().unwrap();
    assert_eq!(first.matches('|').count(), 1, "{first}");
    assert!(first.contains(r"a\nb\tc\\d\u{7c}x=1"), "{first}");
    let row = text.lines().find(|l| l.starts_with("udp ")).unwrap();
    assert!(row.contains(r"a\nb\tc\\d\u{7c}x=1"), "{row}");
    assert_eq!(text.lines().count(), 8);
}

#[test]
fn gone_and_renamed_owners_are_marked() {
    let mut r = report(
        2,
        vec![(b"CtxGfx", Expected::False), (b"CtxGfx", Expected::False)],
    );
    let set_exe = |l: &mut Listener, exe: &[u8]| {
        let Some(Holder::Process(o)) = &l.holder else {
            unreachable!()
        };
        l.holder = Some(Holder::Process(Arc::new(Owner {
            exe: Some(exe.to_vec()),
            ..(**o).clone()
        })));
    };
    set_exe(&mut r.ranges[0].listeners[0], b"/memfd:CtxGfx (deleted)");
    set_exe(&mut r.ranges[0].listeners[1], b"/usr/bin/python3.11");
    let o = Options {
        verbosity: 1,
        ..opts("0:", "0:")
    };
    let (s, text) = render(&r, &[], &o);
    assert_eq!(s, Status::Critical);
    let first = text.lines().next().unwrap();
    assert!(
        first.contains(
            "2 unexpected listeners: CtxGfx (user root, executable gone) on udp [::]:3224"
        ),
        "{first}"
    );
    assert!(text.contains("CtxGfx (executable gone)"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&render_json(&r, &[], &o).1).unwrap();
    assert_eq!(json["listeners"][0]["exe_gone"], true);
    assert_eq!(json["listeners"][1]["exe_gone"], false);
    // The renamed one, first: why its name did not count.
    r.ranges[0].listeners.remove(0);
    let (_, text) = render(&r, &[], &o);
    assert!(
        text.lines()
            .next()
            .unwrap()
            .contains("CtxGfx (user root, renamed: runs python3.11) on udp"),
        "{text}"
    );
}
