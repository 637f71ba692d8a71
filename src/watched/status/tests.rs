//! The ranges' section of the status document, on a report made here
//! ([`report`], which `status`'s own tests also use): the worst-state
//! rule, the listeners' order, and names that stay text.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::platform::Owner;
use crate::ranges::{PortSet, Protocol};
use crate::report::Report;

pub(crate) const HOSTILE: &str = "<img src=x onerror=alert(1)>";

fn process(comm: &str, pid: u32) -> Option<Holder> {
    Some(Holder::Process(Arc::new(Owner {
        pid,
        comm: comm.as_bytes().to_vec(),
        exe: Some(b"/opt/secret/path/bin".to_vec()),
        user: None,
        user_id: None,
        name_via_link: false,
    })))
}

fn kernel(device: &str) -> Option<Holder> {
    Some(Holder::Kernel {
        device: Some(device.into()),
    })
}

fn listener(
    port: u16,
    address: &str,
    holder: Option<Holder>,
    user: &str,
    expected: Expected,
) -> Listener {
    Listener {
        range: "fh".into(),
        protocol: Protocol::Udp,
        port,
        address: address.parse::<IpAddr>().unwrap(),
        holder,
        user: user.into(),
        expected,
        netns: None,
        since: None,
    }
}

/// 3224 expected; 3225 expected and unexpected (unexpected wins);
/// 3226 kernel allowed beside an unknown owner (unknown wins); 3227
/// kernel not allowed; 3228 in use without listener; 3229 unknown;
/// 3230 an expected listener beside a kernel one not allowed; 3300 a
/// hostile name, two listeners of one owner.
pub(crate) fn report() -> Report {
    let listeners = vec![
        listener(
            3224,
            "0.0.0.0",
            process("CtxGfx", 812),
            "citrix",
            Expected::True,
        ),
        listener(
            3225,
            "0.0.0.0",
            process("CtxGfx", 812),
            "citrix",
            Expected::True,
        ),
        listener(3225, "::", process("socat", 99), "root", Expected::False),
        listener(3226, "0.0.0.0", kernel("vx0"), "root", Expected::True),
        listener(3226, "::", None, "1001", Expected::Unknown),
        listener(3227, "0.0.0.0", kernel("vxlan0"), "root", Expected::False),
        listener(3229, "127.0.0.1", None, "1001", Expected::Unknown),
        listener(
            3230,
            "0.0.0.0",
            process("CtxGfx", 813),
            "citrix",
            Expected::True,
        ),
        listener(3230, "::", kernel("vx1"), "root", Expected::Unknown),
        listener(
            3300,
            "0.0.0.0",
            process(HOSTILE, 4242),
            "<b>",
            Expected::False,
        ),
        listener(3300, "::", process(HOSTILE, 4242), "<b>", Expected::False),
    ];
    Report {
        ranges: vec![RangeView {
            in_use: 8,
            states: vec![("unconn", 10), ("established", 1)],
            unexpected: 3,
            unknown: 3,
            unattributed: 2,
            excluded: Some(PortSet::from_intervals(vec![(3230, 3230)])),
            in_use_ports: vec![3224, 3225, 3226, 3227, 3228, 3229, 3230, 3300],
            listeners,
            ..RangeView::capacity(
                "fh",
                Protocol::Udp,
                None,
                PortSet::from_intervals(vec![(3224, 3230), (3300, 3300)]),
            )
        }],
        duration: Duration::from_millis(12),
        ..Report::default()
    }
}

/// The section of the report's views as JSON bytes, with the keys the
/// status document gives it.
fn bytes(r: &Report) -> Vec<u8> {
    let s = section(&r.ranges, &|_: &Listener| None);
    serde_json::to_vec(&serde_json::json!({"ranges": s.ranges, "listeners": s.listeners})).unwrap()
}

fn json(r: &Report) -> serde_json::Value {
    serde_json::from_slice(&bytes(r)).unwrap()
}

#[test]
fn listeners_unexpected_first_and_nothing_more_than_check_shows() {
    let v = json(&report());
    let ls = v["listeners"].as_array().unwrap();
    assert_eq!(ls.len(), 11);
    let order: Vec<(u64, &str, bool)> = ls
        .iter()
        .map(|l| {
            (
                l["port"].as_u64().unwrap(),
                l["expected"].as_str().unwrap(),
                l["kernel"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        order,
        vec![
            (3225, "false", false),
            (3300, "false", false),
            (3300, "false", false),
            (3226, "unknown", false),
            (3229, "unknown", false),
            (3226, "true", true),
            (3227, "false", true),
            (3230, "unknown", true),
            (3224, "true", false),
            (3225, "true", false),
            (3230, "true", false),
        ]
    );
    let socat = &ls[0];
    assert_eq!(socat["process"], "socat");
    assert_eq!(socat["pid"], 99);
    assert_eq!(socat["address"], "::");
    assert_eq!(socat["protocol"], "udp");
    assert_eq!(socat["range"], "fh");
    assert_eq!(ls[3]["process"], "unknown");
    assert_eq!(ls[3]["pid"], serde_json::Value::Null, "no pid for unknown");
    assert_eq!(ls[5]["process"], "kernel (vx0)");
    assert_eq!(ls[5]["pid"], serde_json::Value::Null, "no pid for kernel");
    let keys: Vec<&str> = socat
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    let mut want = vec![
        "address", "expected", "kernel", "pid", "port", "process", "protocol", "range", "user",
    ];
    want.sort();
    let mut keys = keys;
    keys.sort();
    assert_eq!(keys, want);
    let text = serde_json::to_string(&v).unwrap();
    assert!(!text.contains("/opt/secret"), "no exe paths: {text}");
}

#[test]
fn a_gone_executable_is_marked() {
    let mut r = report();
    r.ranges[0].listeners[0].holder = Some(Holder::Process(Arc::new(Owner {
        pid: 77,
        comm: b"CtxGfx".to_vec(),
        exe: Some(b"/memfd:CtxGfx (deleted)".to_vec()),
        user: None,
        user_id: None,
        name_via_link: false,
    })));
    r.ranges[0].listeners[0].expected = Expected::False;
    let bytes = bytes(&r);
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let gone: Vec<&serde_json::Value> = v["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["pid"] == 77)
        .collect();
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0]["exe_gone"], true);
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains("CtxGfx (pid 77, user "), "{text}");
    assert!(text.contains(", executable gone)"), "{text}");
    assert!(!text.contains("memfd"), "no exe paths: {text}");
    // Only where it is gone.
    assert_eq!(
        v["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l.get("exe_gone").is_some())
            .count(),
        1
    );
}

#[test]
fn hostile_names_survive_as_text() {
    let mut r = report();
    r.ranges[0].listeners[0].holder = process("\"},\u{1b}[31m\u{0}</script>", 1);
    r.ranges[0].listeners[0].user = "\u{202e}evil\n".into();
    let bytes = bytes(&r);
    let raw = String::from_utf8(bytes.clone()).unwrap();
    assert!(!raw.contains('\u{1b}') && !raw.contains('\n') && !raw.contains('\0'));
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let ls = v["listeners"].as_array().unwrap();
    let hostile = ls.iter().find(|l| l["port"] == 3300).unwrap();
    assert_eq!(hostile["process"], HOSTILE);
    assert_eq!(hostile["user"], "<b>");
    let odd = ls.iter().find(|l| l["pid"] == 1).unwrap();
    assert_eq!(odd["process"], "\"},\u{1b}[31m\u{0}</script>");
    assert_eq!(odd["user"], "\u{202e}evil\n");
    // Invalid UTF-8 in a process name is replaced, never an error.
    r.ranges[0].listeners[0].holder = Some(Holder::Process(Arc::new(Owner {
        pid: 2,
        comm: vec![0xff, b'x'],
        exe: None,
        user: None,
        user_id: None,
        name_via_link: false,
    })));
    let v = json(&r);
    let bad = v["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["pid"] == 2)
        .unwrap()
        .clone();
    assert_eq!(bad["process"], "\u{fffd}x");
}
