//! The port map page in headless Chromium against the real exporter. Each
//! test moves into a private network namespace (root only; SKIPPED
//! elsewhere), holds sockets in the watched ranges, starts the binary and
//! runs the browser checks of tests/web/portmap.test.mjs against it
//! (Debian's chromium through playwright-core, installed by
//! tests/web/setup; SKIPPED when missing outside CI, a failure in CI).
//!
//! `page_in_chromium_against_the_real_exporter`: as root over plain HTTP,
//! the cells of an allowed CtxGfx, a process named
//! `<img src=x onerror=alert(1)>`, a connected socket and a kernel-held
//! VXLAN socket are in their states, a socket bound while the page is open
//! shows within one refresh in the same cell without a reload, hostile
//! names are text and no script runs; with `--collector.traffic` a closed
//! port that received datagrams carries the "probed" mark; the "Recent
//! changes" list shows the trail's events (the late socket on top, what is
//! not expected marked) and, without authentication, says command lines
//! are withheld and why (none in the JSON either); the "Ephemeral ports"
//! section (a dynamic range of 40000-40999 in the test's namespace) names
//! the busiest destination with its counts and holder, the top holders
//! (the hostile name as text), the TIME_WAIT count, and marks the UDP view
//! short of ports for attention;
//! then the same sockets seen by an unprivileged exporter behind TLS and
//! basic auth, where what it cannot attribute is `unknown`,
//! `/api/v1/events` answers only with the credentials (then with command
//! lines, the page showing them and no withheld note), and with
//! `--no-collector.ephemeral` the section is hidden.
//!
//! Ignored, run by hand (see docs/portmap.md): `render_times` (time to
//! render at 101, 10,001 and 65,535 ports) and `screenshot` (writes
//! docs/portmap.png).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// The hostile process name, and what the kernel keeps of it
/// (comm is 15 bytes).
const HOSTILE: &str = "<img src=x onerror=alert(1)>";
const HOSTILE_COMM: &str = "<img src=x oner";
/// A name short enough to survive whole that would become an element (and
/// a request for `x`) if it were ever inserted as markup.
const MARKUP: &str = "<img src=x>";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether node, chromium and the pinned playwright-core are there.
/// Outside CI a missing piece skips the test (saying so); in CI it fails.
fn browser_ready(test: &str) -> bool {
    let web = repo().join("tests/web");
    let mut missing = Vec::new();
    if !Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        missing.push("node");
    }
    if !Path::new("/usr/bin/chromium").exists() {
        missing.push("/usr/bin/chromium");
    }
    if !web.join("node_modules/playwright-core").is_dir() {
        missing.push("tests/web/node_modules/playwright-core");
    }
    if Command::new("certutil").arg("-H").output().is_err() {
        missing.push("certutil");
    }
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{test}: {} missing in CI: .ci/run must run tests/web/setup",
            missing.join(", ")
        );
    }
    eprintln!(
        "SKIPPED {test}: {} missing (run tests/web/setup)",
        missing.join(", ")
    );
    false
}

fn sh(cmd: &str) {
    let st = Command::new("sh").args(["-c", cmd]).status().unwrap();
    assert!(st.success(), "{cmd}");
}

/// A private temporary directory nobody can read (for an unprivileged
/// exporter's files).
fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("portrange-portmap-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn write_readable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// Expected cell states of one map; ports not named are free.
struct Map {
    range: &'static str,
    protocol: &'static str,
    ports: BTreeMap<u16, &'static str>,
}

fn map(range: &'static str, protocol: &'static str, ports: &[(u16, &'static str)]) -> Map {
    Map {
        range,
        protocol,
        ports: ports.iter().copied().collect(),
    }
}

fn maps_json(maps: &[Map]) -> Value {
    Value::Array(
        maps.iter()
            .map(|m| {
                let ports: serde_json::Map<String, Value> = m
                    .ports
                    .iter()
                    .map(|(p, s)| (p.to_string(), json!(s)))
                    .collect();
                json!({"range": m.range, "protocol": m.protocol, "ports": ports, "others": "free"})
            })
            .collect(),
    )
}

/// Where the status disagrees with `maps` (empty when it agrees).
fn disagreements(status: &Value, maps: &[Map]) -> Vec<String> {
    let mut out = Vec::new();
    for m in maps {
        let Some(r) = status["ranges"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["range"] == m.range && r["protocol"] == m.protocol)
        else {
            out.push(format!("no range {}/{}", m.range, m.protocol));
            continue;
        };
        let got: BTreeMap<u16, String> = r["used"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| {
                (
                    u["port"].as_u64().unwrap() as u16,
                    u["state"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let want: BTreeMap<u16, String> =
            m.ports.iter().map(|(p, s)| (*p, s.to_string())).collect();
        let ports: std::collections::BTreeSet<&u16> = got.keys().chain(want.keys()).collect();
        for p in ports {
            let (g, w) = (got.get(p), want.get(p));
            if g != w && out.len() < 12 {
                out.push(format!(
                    "{}/{} port {p}: exporter says {}, expected {}",
                    m.range,
                    m.protocol,
                    g.map_or("free", |s| s.as_str()),
                    w.map_or("free", |s| s.as_str())
                ));
            }
        }
    }
    out
}

/// Polls the status until it agrees with `maps` (a fresh exporter may
/// still be confirming a kernel-held socket); panics after 30 s.
fn wait_for_states(fetch: impl Fn() -> Option<Value>, maps: &[Map]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = fetch();
        let problems = match &status {
            Some(s) => disagreements(s, maps),
            None => vec!["no status".into()],
        };
        if problems.is_empty() {
            return status.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the exporter never reached the scenario: {problems:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs portmap.test.mjs with `args`; on `CHANGE NOW` calls `change` and
/// answers. Returns whether it passed and its output.
fn run_checks(args: &[&str], mut change: Option<&mut dyn FnMut()>) -> (bool, String) {
    let script = repo().join("tests/web/portmap.test.mjs");
    let mut child = Command::new("node")
        .arg(&script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting node tests/web/portmap.test.mjs");
    let mut stdin = child.stdin.take();
    let mut err = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut out = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        eprintln!("  | {line}");
        if line == "CHANGE NOW" {
            if let Some(c) = change.as_mut() {
                c();
            }
            if let Some(s) = stdin.as_mut() {
                s.write_all(b"done\n").unwrap();
                s.flush().unwrap();
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    drop(stdin);
    let st = child.wait().unwrap();
    let stderr = err_reader.join().unwrap();
    if !stderr.is_empty() {
        out.push_str(&format!("stderr:\n{stderr}"));
    }
    (st.success(), out)
}

/// Asserts the run passed, skipped nothing and reported each named check
/// as `ok` (a check that did not run is not a pass).
fn assert_passed(ok: bool, out: &str, required: &[&str]) {
    if !ok {
        // Name every socket of the namespace, so a cell in an unplanned
        // state says who held it (the browser's own sockets included).
        let ss = Command::new("ss")
            .args(["-tuanp"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|e| format!("ss: {e}"));
        panic!("browser checks failed:\n{out}\nsockets in the test's namespace:\n{ss}");
    }
    assert!(
        !out.lines()
            .any(|l| l.starts_with("FAIL") || l.starts_with("SKIPPED")),
        "{out}"
    );
    for r in required {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("ok - {r}"))),
            "no `ok - {r}` in:\n{out}"
        );
    }
}

/// An exporter started by hand (TLS: `Exporter::start` checks health over
/// plain HTTP).
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn start(args: &[&str], prefix: &[&str], log: PathBuf) -> Running {
        let (program, before) = match prefix.split_first() {
            Some((p, rest)) => (*p, rest.to_vec()),
            None => (EXPORTER, Vec::new()),
        };
        let mut cmd = Command::new(program);
        cmd.args(&before);
        if !prefix.is_empty() {
            // As nobody: a copy of the binary it can execute (the checkout
            // may be out of its reach, see `shared_copy`).
            cmd.arg(exporter_for(prefix));
        }
        let child = cmd
            .args(["--web.listen-address", ADDR])
            .args(args)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut r = Running { child, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(ADDR).is_err() {
            if let Ok(Some(st)) = r.child.try_wait() {
                panic!("exporter exited with {st}:\n{}", r.log());
            }
            assert!(Instant::now() < deadline, "no listener:\n{}", r.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Tls {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn tls_material() -> Tls {
    let ca = common::tls::ca("portmap test CA");
    let (cert_pem, key_pem) = common::tls::server_cert(&ca);
    Tls {
        ca_pem: ca.pem,
        cert_pem,
        key_pem,
    }
}

/// GET over TLS trusting `ca_pem`.
fn tls_get(ca_pem: &str, path: &str, headers: &[(&str, &str)]) -> Result<Response, String> {
    common::tls::tls_get(ADDR, ca_pem, path, headers)
}

fn plain_status() -> Option<Value> {
    let r = get(ADDR, "/api/v1/status", &[]).ok()?;
    (r.status == 200).then(|| serde_json::from_slice(&r.body).unwrap())
}

const CONFIG: &str = "\
ranges:
  - name: framehawk
    ports: 3224-3324
    protocols: [udp, tcp]
    expected:
      - process: CtxGfx
  - name: rtp
    ports: 10000-20000
    protocols: [udp]
    expected:
      - process: rtpengine
  - name: mosh
    ports: 40990-41009
    protocols: [udp]
";

const REQUIRED: [&str; 12] = [
    "page loads",
    "top line shows check's verdict",
    "listener table has one row per owner and range",
    "page is served with a strict Content-Security-Policy",
    "first render in time",
    "no error banner",
    "no markup from the JSON became elements",
    "hovering a cell names port, state and owner",
    "no Content-Security-Policy violations",
    "no alert or dialog opened, window.__pwned unset",
    "no script errors on the page",
    "pause stops refreshing and resume restarts it",
];

#[test]
fn page_in_chromium_against_the_real_exporter() {
    if !enter_netns("page_in_chromium_against_the_real_exporter")
        || !browser_ready("page_in_chromium_against_the_real_exporter")
    {
        return;
    }
    let dir = temp_dir("page");
    let cfg = dir.join("config.yml");
    write_readable(&cfg, CONFIG);
    let cfg_arg = cfg.to_str().unwrap();
    // A kernel-held socket: the VXLAN endpoint on 3300.
    sh(
        "ip link add vx0 type vxlan id 42 dstport 3300 local 127.0.0.1 dev lo && ip link set vx0 up",
    );
    let ctx = hold(
        "CtxGfx",
        &[
            "udp:0.0.0.0:3224",
            "udp:[::]:3225",
            "tcp:0.0.0.0:3226",
            "udpc:127.0.0.1:3230:9",
        ],
    );
    let hostile = hold(HOSTILE, &["udp:0.0.0.0:3240"]);
    let markup = hold(MARKUP, &["udp:127.0.0.1:3241"]);
    let rtp = hold("rtpengine", &["udp:0.0.0.0:10000", "udp:0.0.0.0:15000"]);
    let socat = hold("socat", &["udp:0.0.0.0:19999"]);
    // The dynamic range, in this namespace only: 40000-40999. pgbouncer
    // autobinds 810 connected UDP sockets toward 127.0.0.1:5432 (UDP ports
    // are gone for everyone: under 20% free, marked for attention); the
    // hostile name holds two toward 5433; three TCP connections closed by
    // their client leave three TIME_WAIT sockets in the range.
    std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "40000 40999").unwrap();
    let pgbouncer = hold_many("pgbouncer", &vec!["udpc:127.0.0.1:0:5432".to_string(); 810]);
    let hostile_eph = hold(HOSTILE, &["udpc:127.0.0.1:0:5433", "udpc:127.0.0.1:0:5433"]);
    let tw_listener = std::net::TcpListener::bind("127.0.0.1:5501").unwrap();
    for _ in 0..3 {
        let c = TcpStream::connect("127.0.0.1:5501").unwrap();
        let (a, _) = tw_listener.accept().unwrap();
        drop(c);
        std::thread::sleep(Duration::from_millis(20));
        drop(a);
    }

    // 1. Root, plain HTTP: every state a root exporter can see.
    let before = [
        map(
            "framehawk",
            "udp",
            &[
                (3224, "expected"),
                (3225, "expected"),
                (3230, "in_use"),
                (3240, "unexpected"),
                (3241, "unexpected"),
                (3300, "kernel"),
            ],
        ),
        map("framehawk", "tcp", &[(3226, "expected")]),
        map(
            "rtp",
            "udp",
            &[
                (10000, "expected"),
                (15000, "expected"),
                (19999, "unexpected"),
            ],
        ),
    ];
    let mut after_udp = before[0].ports.clone();
    after_udp.insert(3260, "unexpected");
    let after = [Map {
        range: "framehawk",
        protocol: "udp",
        ports: after_udp,
    }];
    let exporter = Exporter::start(&["--config.file", cfg_arg, "--collector.traffic"]);
    let st = wait_for_states(plain_status, &before);
    // --collector.traffic: 7 datagrams to the closed port 3270 make it
    // "probed"; 3271 gets none.
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..7 {
        sender.send_to(b"knock", "127.0.0.1:3270").unwrap();
    }
    let kernel = st["ranges"][0]["used"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["port"] == 3300)
        .unwrap()
        .clone();
    assert_eq!(
        (&kernel["owner"], &kernel["allowed"]),
        (&json!("kernel (vx0)"), &json!(false))
    );
    let udp_view = st["ephemeral"]["views"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["protocol"] == "udp"))
        .unwrap_or_else(|| panic!("no udp ephemeral view: {}", st["ephemeral"]))
        .clone();
    assert_eq!(udp_view["ports"], 1000, "{udp_view}");
    assert!(udp_view["free_min"].as_u64().unwrap() <= 188, "{udp_view}");
    assert_eq!(udp_view["destinations"][0]["port"], 5432, "{udp_view}");
    let scenario = json!({
        "maps": maps_json(&before),
        "ephemeral": {"views": [
            {"protocol": "udp", "attention": true,
             "headroom": " of 1000 ports free toward the busiest destination (127.0.0.1:5432)",
             "destination": {"text": "127.0.0.1:5432", "ports": 810, "sockets": 810, "holder": "pgbouncer"},
             "holders": [["pgbouncer", "root"], [HOSTILE_COMM, "root"]]},
            {"protocol": "tcp", "attention": false, "time_wait_min": 3,
             "headroom": " of 1000 ports free toward the busiest destination"},
        ]},
        "text": [HOSTILE_COMM, MARKUP],
        "probed": [
            {"range": "framehawk", "protocol": "udp", "port": 3270, "packets": 7},
            {"range": "framehawk", "protocol": "udp", "port": 3271, "packets": 0},
        ],
        "hover": {"range": "framehawk", "protocol": "udp", "port": 3240,
                  "owner": format!("{HOSTILE_COMM} (pid {}", hostile.pid())},
        "after": {
            "maps": maps_json(&after),
            // The listener bound while the page is open, above the older
            // changes; without authentication, without its command line.
            "events": [{"kind": "appeared", "attention": true,
                        "text": ["appeared: udp 0.0.0.0:3260 in framehawk by nc (pid ", ", unexpected"],
                        "newer_than": "appeared: udp 0.0.0.0:3240 in framehawk"}],
        },
        // No authentication: the page says command lines are withheld, and why.
        "cmdline_withheld": "no authentication is configured",
        // The trail's first collection: every listener appeared; what is not
        // expected is marked for attention, the hostile name is text.
        "events": [
            {"kind": "appeared", "attention": true,
             "text": ["appeared: udp 0.0.0.0:3240 in framehawk by ", HOSTILE_COMM, ", unexpected"]},
            {"kind": "appeared", "attention": true,
             "text": [":3300 in framehawk by kernel (vx0)", ", kernel"]},
            {"kind": "appeared", "attention": false,
             "text": ["appeared: udp 0.0.0.0:", " in rtp by rtpengine (pid ", ", expected"]},
        ],
    });
    let file = dir.join("plain.json");
    std::fs::write(&file, scenario.to_string()).unwrap();
    let url = format!("http://{ADDR}/");
    let mut late = None;
    let mut bind = || late = Some(hold("nc", &["udp:0.0.0.0:3260"]));
    let (ok, out) = run_checks(
        &[
            "--url",
            &url,
            "--scenario",
            file.to_str().unwrap(),
            "--change-stdin",
        ],
        Some(&mut bind),
    );
    assert!(
        late.is_some(),
        "the harness never asked for the change:\n{out}"
    );
    // Without authentication no command line is served: the events say
    // why in one field, and no event carries one.
    for doc in [
        plain_status().expect("the status document"),
        serde_json::from_slice(&get(ADDR, "/api/v1/events", &[]).unwrap().body).unwrap(),
    ] {
        assert!(
            doc["cmdline_withheld"]
                .as_str()
                .is_some_and(|w| w.contains("no authentication is configured")),
            "{doc}"
        );
        let events = doc["events"].as_array().expect("events");
        assert!(!events.is_empty(), "{doc}");
        assert!(events.iter().all(|e| e["cmdline"].is_null()), "{doc}");
    }
    let mut required = REQUIRED.to_vec();
    required.extend([
        "first render: map framehawk/udp shows the expected states",
        "first render: map framehawk/tcp shows the expected states",
        "first render: map rtp/udp shows the expected states",
        "hostile string shown as text: \"<img src=x oner\"",
        "hostile string shown as text: \"<img src=x>\"",
        "state change shows within one refresh",
        "no reload: window marker kept",
        "cell updated in place",
        "port 3270 of framehawk/udp marked probed",
        "port 3271 of framehawk/udp not marked probed",
        "first render: recent changes list \"appeared: udp 0.0.0.0:3240",
        "first render: recent change \"appeared: udp 0.0.0.0:3240 in framehawk by \" marked for attention",
        "first render: recent changes list \":3300 in framehawk by kernel (vx0)",
        "first render: recent change \":3300 in framehawk by kernel (vx0)\" marked for attention",
        "first render: recent changes list \"appeared: udp 0.0.0.0:",
        "first render: recent change \"appeared: udp 0.0.0.0:\" not marked for attention",
        "after the change: recent changes list \"appeared: udp 0.0.0.0:3260",
        "after the change: recent change \"appeared: udp 0.0.0.0:3260 in framehawk by nc (pid \" marked for attention",
        "after the change: recent change \"appeared: udp 0.0.0.0:3260 in framehawk by nc (pid \" listed above",
        "command lines said to be withheld: \"no authentication is configured\"",
        "listener table sorts by port",
        "listener table filters by text",
        "unexpected listeners come first",
        "ephemeral section shown",
        "ephemeral udp: a block",
        "ephemeral udp: headroom shown",
        "ephemeral udp: marked for attention",
        "ephemeral udp: destination 127.0.0.1:5432 named with its counts and holder",
        "ephemeral udp: holder \"pgbouncer\" listed",
        "ephemeral udp: holder \"<img src=x oner\" listed",
        "ephemeral tcp: a block",
        "ephemeral tcp: headroom shown",
        "ephemeral tcp: not marked for attention",
        "ephemeral tcp: TIME_WAIT count shown",
        "ephemeral overlap of mosh/udp marked with the fix",
    ]);
    assert_passed(ok, &out, &required);
    assert!(
        out.contains("first render: map rtp/udp shows the expected states: 626 block cells"),
        "10,001 ports are drawn in blocks:\n{out}"
    );
    drop(exporter);

    // 2. The same sockets through TLS and basic auth, seen by an exporter
    // without privilege: what it cannot attribute (root's sockets, the
    // kernel's) is unknown, never fine; what nobody holds is judged.
    let tls = tls_material();
    let hash = bcrypt::hash("s3cret pass", 6).unwrap();
    write_readable(&dir.join("server.crt"), &tls.cert_pem);
    write_readable(&dir.join("server.key"), &tls.key_pem);
    write_readable(&dir.join("ca.pem"), &tls.ca_pem);
    write_readable(
        &dir.join("web.yml"),
        &format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  alice: {hash}\n"
        ),
    );
    let nobody_ctx = hold_as_nobody("CtxGfx", &["udp:0.0.0.0:3250"]);
    let nobody_hostile = hold_as_nobody(HOSTILE, &["udp:0.0.0.0:3251"]);
    let web = dir.join("web.yml");
    let exporter = Running::start(
        &[
            "--config.file",
            cfg_arg,
            "--web.config.file",
            web.to_str().unwrap(),
            "--no-collector.ephemeral",
        ],
        &DROP_PRIVILEGES,
        dir.join("exporter.log"),
    );
    use base64::Engine;
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:s3cret pass")
    );
    let wrong = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:wrong")
    );
    for path in ["/", "/portmap.js", "/api/v1/status", "/api/v1/events"] {
        let r = tls_get(&tls.ca_pem, path, &[]).unwrap();
        assert_eq!(r.status, 401, "{path} without credentials");
        let r = tls_get(&tls.ca_pem, path, &[("Authorization", &wrong)]).unwrap();
        assert_eq!(r.status, 401, "{path} with a wrong password");
    }
    // The trail is as sensitive as ps output: over plain HTTP the TLS port
    // answers Go's 400, never the events.
    let plain = get(ADDR, "/api/v1/events", &[("Authorization", &auth)]).unwrap();
    assert_eq!(plain.status, 400, "plain HTTP to the TLS port");
    assert!(
        !String::from_utf8_lossy(&plain.body).contains("events"),
        "{:?}",
        String::from_utf8_lossy(&plain.body)
    );
    let unprivileged = [
        map(
            "framehawk",
            "udp",
            &[
                (3224, "unknown"),
                (3225, "unknown"),
                (3230, "in_use"),
                (3240, "unknown"),
                (3241, "unknown"),
                (3250, "expected"),
                (3251, "unexpected"),
                (3260, "unknown"),
                (3300, "unknown"),
            ],
        ),
        map("framehawk", "tcp", &[(3226, "unknown")]),
        map(
            "rtp",
            "udp",
            &[(10000, "unknown"), (15000, "unknown"), (19999, "unknown")],
        ),
    ];
    let fetch = || {
        let r = tls_get(&tls.ca_pem, "/api/v1/status", &[("Authorization", &auth)]).ok()?;
        (r.status == 200).then(|| serde_json::from_slice(&r.body).unwrap())
    };
    wait_for_states(fetch, &unprivileged);
    // The events over TLS with the right credentials: nobody's hostile
    // listener with its pid, user and command line; root's listeners,
    // which this exporter cannot attribute, as unknown.
    let r = tls_get(&tls.ca_pem, "/api/v1/events", &[("Authorization", &auth)]).unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let events: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        events["cmdline_withheld"],
        Value::Null,
        "served with basic auth"
    );
    let events = events["events"].as_array().expect("an events array");
    let hostile_event = events
        .iter()
        .find(|e| e["port"] == 3251 && e["kind"] == "appeared")
        .unwrap_or_else(|| panic!("no event for 3251 in {events:?}"));
    assert_eq!(hostile_event["verdict"], "unexpected", "{hostile_event}");
    assert_eq!(
        hostile_event["pid"],
        nobody_hostile.pid(),
        "{hostile_event}"
    );
    assert_eq!(hostile_event["user"], "nobody", "{hostile_event}");
    assert_eq!(hostile_event["process"], HOSTILE_COMM, "{hostile_event}");
    assert!(
        hostile_event["cmdline"]
            .as_str()
            .is_some_and(|c| c.contains("udp:0.0.0.0:3251")),
        "{hostile_event}"
    );
    let root_event = events
        .iter()
        .find(|e| e["port"] == 19999 && e["kind"] == "appeared")
        .unwrap_or_else(|| panic!("no event for 19999 in {events:?}"));
    assert_eq!(root_event["verdict"], "unknown", "{root_event}");
    let scenario = json!({
        "maps": maps_json(&unprivileged),
        // With authentication, the command line (holder.py's arguments
        // name the socket), and no withheld note.
        "events": [{"kind": "appeared", "attention": true,
                    "text": ["appeared: udp 0.0.0.0:3251 in framehawk by ", HOSTILE_COMM, "user nobody", ", unexpected", "udp:0.0.0.0:3251"]}],
        "cmdline_withheld": null,
        "text": [HOSTILE_COMM],
        // --no-collector.ephemeral: no section at all.
        "ephemeral": {"absent": true},
        "hover": {"range": "framehawk", "protocol": "udp", "port": 3251,
                  "owner": format!("{HOSTILE_COMM} (pid {}, user nobody)", nobody_hostile.pid())},
    });
    let file = dir.join("tls.json");
    std::fs::write(&file, scenario.to_string()).unwrap();
    let url = format!("https://{ADDR}/");
    let (ok, out) = run_checks(
        &[
            "--url",
            &url,
            "--scenario",
            file.to_str().unwrap(),
            "--ca",
            dir.join("ca.pem").to_str().unwrap(),
            "--user",
            "alice",
            "--password",
            "s3cret pass",
        ],
        None,
    );
    let mut required = REQUIRED.to_vec();
    required.extend([
        "first render: map framehawk/udp shows the expected states",
        "first render: map framehawk/tcp shows the expected states",
        "first render: map rtp/udp shows the expected states",
        "hostile string shown as text: \"<img src=x oner\"",
        "unexpected listeners come first",
        "first render: recent changes list \"appeared: udp 0.0.0.0:3251",
        "first render: recent change \"appeared: udp 0.0.0.0:3251 in framehawk by \" marked for attention",
        "command lines not said to be withheld",
        "ephemeral section hidden when the collector is off",
    ]);
    assert_passed(ok, &out, &required);
    drop(exporter);
    drop((
        ctx,
        hostile,
        markup,
        rtp,
        socat,
        late,
        nobody_ctx,
        nobody_hostile,
        pgbouncer,
        hostile_eph,
        tw_listener,
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Holds `specs` in processes of at most 100 sockets each, all named `name`.
fn hold_many(name: &str, specs: &[String]) -> Vec<Holder> {
    specs
        .chunks(100)
        .map(|c| {
            let c: Vec<&str> = c.iter().map(String::as_str).collect();
            hold(name, &c)
        })
        .collect()
}

/// Time to render in Chromium at 101, 10,001 and 65,535 ports, against the
/// real exporter (docs/portmap.md has the numbers): one UDP range of each
/// size with sockets held in a mix of states (10 of 101, 300 of 10,001, 500
/// of 65,535), 7 fresh loads each. Run as root:
/// `cargo test --release --test portmap -- --ignored render_times --nocapture`.
#[test]
#[ignore]
fn render_times() {
    if !enter_netns("render_times") || !browser_ready("render_times") {
        return;
    }
    let runs = std::env::var("PORTMAP_TIMING_RUNS").unwrap_or_else(|_| "7".into());
    let dir = temp_dir("timing");
    let mut rows = Vec::new();
    for (n, first, held) in [
        (101u32, 3224u16, 10usize),
        (10_001, 10000, 300),
        (65_535, 1, 500),
    ] {
        let last = (u32::from(first) + n - 1) as u16;
        let cfg = dir.join(format!("size{n}.yml"));
        write_readable(
            &cfg,
            &format!(
                "ranges:\n  - name: size{n}\n    ports: {first}-{last}\n    protocols: [udp]\n    expected:\n      - process: worker\n"
            ),
        );
        // Ports spread over the range; every 20th is the VXLAN device's,
        // the rest 60% expected, 25% unexpected, 15% connected (in use).
        let step = n as usize / held;
        let ports: Vec<u16> = (0..held)
            .map(|i| first + (i * step + step / 2) as u16)
            .collect();
        let (mut workers, mut intruders, mut clients) = (Vec::new(), Vec::new(), Vec::new());
        let mut want: Vec<(u16, &'static str)> = Vec::new();
        let vxlan = ports[held / 2];
        sh(&format!(
            "ip link add vx{n} type vxlan id {n} dstport {vxlan} local 127.0.0.1 dev lo && ip link set vx{n} up"
        ));
        for (i, &p) in ports.iter().enumerate() {
            if p == vxlan {
                want.push((p, "kernel"));
            } else if i % 20 < 12 {
                workers.push(format!("udp:0.0.0.0:{p}"));
                want.push((p, "expected"));
            } else if i % 20 < 17 {
                intruders.push(format!("udp:0.0.0.0:{p}"));
                want.push((p, "unexpected"));
            } else {
                clients.push(format!("udpc:127.0.0.1:{p}:9"));
                want.push((p, "in_use"));
            }
        }
        let _held: Vec<Vec<Holder>> = vec![
            hold_many("worker", &workers),
            hold_many("socat", &intruders),
            hold_many("worker", &clients),
        ];
        let name: &'static str = Box::leak(format!("size{n}").into_boxed_str());
        let expected = [map(name, "udp", &want)];
        let exporter = Exporter::start(&["--config.file", cfg.to_str().unwrap()]);
        wait_for_states(plain_status, &expected);
        let raw = get(ADDR, "/api/v1/status", &[]).unwrap();
        let st: Value = serde_json::from_slice(&raw.body).unwrap();
        let gz = get(ADDR, "/api/v1/status", &[("Accept-Encoding", "gzip")]).unwrap();
        let scenario = json!({ "maps": maps_json(&expected) });
        let file = dir.join(format!("size{n}.json"));
        std::fs::write(&file, scenario.to_string()).unwrap();
        let url = format!("http://{ADDR}/");
        let (ok, out) = run_checks(
            &[
                "--url",
                &url,
                "--scenario",
                file.to_str().unwrap(),
                "--refresh",
                "2",
                "--timing-runs",
                &runs,
            ],
            None,
        );
        assert_passed(
            ok,
            &out,
            &[&format!(
                "first render: map size{n}/udp shows the expected states"
            )],
        );
        let cells = out
            .lines()
            .find_map(|l| {
                l.split(&format!("map size{n}/udp shows the expected states: "))
                    .nth(1)
            })
            .unwrap_or("?")
            .to_string();
        let timing = out
            .lines()
            .find(|l| l.starts_with("# timing"))
            .unwrap_or("# no timing line")
            .to_string();
        rows.push(format!(
            "{n} ports, {held} sockets: {cells}; JSON {} bytes ({} gzipped); a steady collection {:.1} ms; {timing}",
            raw.body.len(),
            gz.body.len(),
            st["duration_seconds"].as_f64().unwrap() * 1000.0
        ));
        drop(exporter);
        sh(&format!("ip link del vx{n}"));
    }
    eprintln!("\nrender times against the real exporter:");
    for r in &rows {
        eprintln!("  {r}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes docs/portmap.png: the page of the real exporter (as root) with a
/// realistic framehawk range (CtxGfx sessions, an unexpected socat, an
/// outgoing connection, a VXLAN endpoint) and a mosh range, the tooltip of
/// the socat cell showing. Run as root:
/// `cargo test --release --test portmap -- --ignored screenshot`.
#[test]
#[ignore]
fn screenshot() {
    if !enter_netns("screenshot") || !browser_ready("screenshot") {
        return;
    }
    let dir = temp_dir("shot");
    let cfg = dir.join("config.yml");
    write_readable(
        &cfg,
        "ranges:\n  - name: framehawk\n    ports: 3224-3324\n    protocols: [udp]\n    expected:\n      - process: CtxGfx\n  - name: mosh\n    ports: 60000-61000\n    protocols: [udp]\n    expected:\n      - process: mosh-server\n",
    );
    sh(
        "ip link add vxlan0 type vxlan id 7 dstport 3300 local 127.0.0.1 dev lo && ip link set vxlan0 up",
    );
    let _sessions = [
        hold("CtxGfx", &["udp:0.0.0.0:3224", "udp:0.0.0.0:3225"]),
        hold("CtxGfx", &["udp:0.0.0.0:3226"]),
        hold("CtxGfx", &["udp:0.0.0.0:3227", "udpc:127.0.0.1:3228:9"]),
        hold("CtxGfx", &["udp:0.0.0.0:3229"]),
        hold("CtxGfx", &["udp:0.0.0.0:3231"]),
        hold("socat", &["udp:0.0.0.0:3240"]),
        hold_as_nobody("mosh-server", &["udp:0.0.0.0:60001"]),
        hold_as_nobody("mosh-server", &["udp:0.0.0.0:60002"]),
        hold("mosh-server", &["udp:0.0.0.0:60003"]),
        hold_as_nobody("mosh-server", &["udp:0.0.0.0:60004"]),
    ];
    let expected = [
        map(
            "framehawk",
            "udp",
            &[
                (3224, "expected"),
                (3225, "expected"),
                (3226, "expected"),
                (3227, "expected"),
                (3228, "in_use"),
                (3229, "expected"),
                (3231, "expected"),
                (3240, "unexpected"),
                (3300, "kernel"),
            ],
        ),
        map(
            "mosh",
            "udp",
            &[
                (60001, "expected"),
                (60002, "expected"),
                (60003, "expected"),
                (60004, "expected"),
            ],
        ),
    ];
    let _exporter = Exporter::start(&["--config.file", cfg.to_str().unwrap()]);
    wait_for_states(plain_status, &expected);
    let file = dir.join("shot.json");
    std::fs::write(&file, json!({ "maps": maps_json(&expected) }).to_string()).unwrap();
    let png = repo().join("docs/portmap.png");
    let url = format!("http://{ADDR}/");
    let (ok, out) = run_checks(
        &[
            "--url",
            &url,
            "--scenario",
            file.to_str().unwrap(),
            "--screenshot",
            png.to_str().unwrap(),
            "--hover",
            "3240",
        ],
        None,
    );
    assert_passed(
        ok,
        &out,
        &["first render: map framehawk/udp shows the expected states"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}
