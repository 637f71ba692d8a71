//! The listener trail against the real binary, in a private network
//! namespace: a listener that lives 3 seconds between two scrapes 15
//! seconds apart is in `GET /api/v1/events`, then its vanishing, and in
//! the counter and the log (its command line there, secrets redacted;
//! withheld from the endpoint, which has no authentication); with the
//! watch turned off it is not; the rate limit under a burst of unexpected
//! listeners and an RTP-like churn of allowed ones.
//!
//! Command lines (issue 26): each shape of secret an operator types, on
//! processes whose executables are named after the programs that read
//! them (copies of python named `mysql`, `redis-cli`, `sshpass`, `curl`,
//! `wget`, `nc`, ...; each rewrites its own command line to the shape's),
//! is cut in `/api/v1/events`, `/api/v1/status` and the log of an exporter
//! behind basic auth, and nothing else is; without authentication the
//! endpoint withholds every command line and says why in one field, unless
//! `--web.serve-command-lines-without-auth` says to serve them.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A python3 that binds UDP `port` on 127.0.0.1, says "ready", keeps it
/// `secs` seconds and exits; `args` end up on its command line only.
fn listen_for(port: u16, secs: f64, args: &[&str]) -> Child {
    let script = format!(
        "import socket,sys,time\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.bind(('127.0.0.1',{port}))\n\
         print('ready',flush=True)\n\
         time.sleep({secs})\n"
    );
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    child
}

fn events(addr: &str, since: u64) -> serde_json::Value {
    let r = get(addr, &format!("/api/v1/events?since={since}"), &[]).expect("GET /api/v1/events");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    serde_json::from_str(&r.text()).expect("events JSON")
}

fn of_port(v: &serde_json::Value, port: u16) -> Vec<serde_json::Value> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["port"] == port)
        .cloned()
        .collect()
}

#[test]
fn a_three_second_listener_between_scrapes_is_in_the_trail() {
    if !enter_netns("a_three_second_listener_between_scrapes_is_in_the_trail") {
        return;
    }
    let exporter = Exporter::start(&[]);
    let first_scrape = Instant::now();
    let m = exporter.metrics();
    let series = r#"portrange_listener_events_total{range="framehawk",protocol="udp",kind="appeared",verdict="unexpected"}"#;
    assert_eq!(m.value(series), 0.0);
    std::thread::sleep(Duration::from_secs(5));
    let mut l = listen_for(
        3230,
        3.0,
        &[
            "--password=hunter2",
            "--api-key",
            "s3kr1t",
            "--port",
            "3230",
        ],
    );
    let pid = l.id();
    l.wait().unwrap();
    // Nothing scrapes until 15 s after the first scrape; the watch runs
    // every 2 s (the default), so the vanishing is recorded within that.
    let give_up = Instant::now() + Duration::from_secs(4);
    let (v, found) = loop {
        let v = events(&exporter.addr, 0);
        let found = of_port(&v, 3230);
        if found.len() >= 2 || Instant::now() > give_up {
            break (v, found);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let kinds: Vec<&str> = found.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    let waited = Instant::now();
    assert_eq!(kinds, vec!["appeared", "vanished"], "{v:#}");
    let appeared = &found[0];
    assert_eq!(appeared["pid"], pid);
    assert_eq!(appeared["ppid"], std::process::id());
    assert_eq!(appeared["protocol"], "udp");
    assert_eq!(appeared["address"], "127.0.0.1");
    assert_eq!(appeared["range"], "framehawk");
    assert_eq!(appeared["verdict"], "unexpected");
    assert_eq!(appeared["user"], "root");
    assert_eq!(appeared["process"], "python3");
    assert_eq!(appeared["exe_gone"], false);
    assert!(
        appeared["exe"].as_str().unwrap().contains("python"),
        "{appeared}"
    );
    assert!(appeared["process_start"].as_str().unwrap().ends_with('Z'));
    // No authentication: no command line, and one field says why.
    assert_eq!(appeared["cmdline"], serde_json::Value::Null, "{appeared}");
    assert!(
        v["cmdline_withheld"]
            .as_str()
            .is_some_and(|w| w.contains("no authentication is configured")),
        "{v}"
    );
    assert_eq!(found[1]["pid"], pid, "the vanishing names the same process");
    // ?since= follows the trail.
    let seq = appeared["seq"].as_u64().unwrap();
    let after = events(&exporter.addr, seq);
    assert_eq!(of_port(&after, 3230).len(), 1);
    assert_eq!(after["last_seq"], found[1]["seq"]);
    let r = get(&exporter.addr, "/api/v1/events?since=x", &[]).unwrap();
    assert_eq!(r.status, 400);
    assert!(
        waited < first_scrape + Duration::from_secs(15),
        "the test took too long to prove anything"
    );
    std::thread::sleep(
        (first_scrape + Duration::from_secs(15)).saturating_duration_since(Instant::now()),
    );
    let m = exporter.metrics();
    assert_eq!(m.value(series), 1.0);
    assert_eq!(
        m.value(r#"portrange_listener_events_total{range="framehawk",protocol="udp",kind="vanished",verdict="unexpected"}"#),
        1.0
    );
    assert_eq!(m.value("portrange_listener_events_dropped_total"), 0.0);
    let log = exporter.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("msg=\"listener appeared\"") && l.contains("port=3230"))
        .unwrap_or_else(|| panic!("no log line:\n{log}"));
    assert!(
        line.contains("level=warn") && line.contains(&format!("pid={pid}")),
        "{line}"
    );
    // No empty netns="" outside --collector.netns.
    assert!(!line.contains("netns="), "{line}");
    // The log has the command line, redacted.
    assert!(
        line.contains("--password=<redacted> --api-key <redacted> --port 3230"),
        "{line}"
    );
    assert!(!log.contains("hunter2") && !log.contains("s3kr1t"));
}

#[test]
fn without_the_watch_only_scrapes_are_compared_and_command_lines_can_be_dropped() {
    if !enter_netns("without_the_watch_only_scrapes_are_compared_and_command_lines_can_be_dropped")
    {
        return;
    }
    let exporter = Exporter::start(&[
        "--collector.trail.interval",
        "off",
        "--collector.trail.no-cmdline",
    ]);
    exporter.metrics();
    let mut l = listen_for(3231, 2.0, &[]);
    l.wait().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    exporter.metrics();
    assert!(
        of_port(&events(&exporter.addr, 0), 3231).is_empty(),
        "no watch pass: a listener between scrapes is missed"
    );
    let mut l = listen_for(3232, 30.0, &[]);
    exporter.metrics();
    let found = of_port(&events(&exporter.addr, 0), 3232);
    l.kill().unwrap();
    l.wait().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["cmdline"], serde_json::Value::Null);
    assert_eq!(found[0]["pid"], l.id());
    assert_eq!(
        events(&exporter.addr, 0)["cmdline_withheld"],
        "command lines are not kept (--collector.trail.no-cmdline)"
    );
}

/// 40 unexpected listeners at once (as nobody) while root churns allowed
/// sockets at about 100 a second: the allowed ones are summed, the burst
/// of unexpected ones is recorded up to the limit and the rest counted as
/// dropped.
#[test]
fn churn_and_a_burst_stay_bounded_and_drops_are_counted() {
    if !enter_netns("churn_and_a_burst_stay_bounded_and_drops_are_counted") {
        return;
    }
    let config = config_file(
        "trail-churn",
        "ranges:\n  - name: rtp\n    ports: 20000-29999\n    protocols: [udp]\n    expected:\n      - user: root\n",
    );
    let exporter = Exporter::start(&[
        "--config.file",
        config.to_str().unwrap(),
        "--collector.trail.interval",
        "200ms",
        "--collector.trail.rate",
        "1",
        "--collector.trail.burst",
        "10",
    ]);
    // About 100 sockets a second, each open for 0.2 s, for 6 s.
    let churn = "import socket,time\n\
        live=[]\n\
        end=time.time()+6\n\
        p=20000\n\
        while time.time()<end:\n\
        \x20 s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('127.0.0.1',p)); p+=1\n\
        \x20 live.append(s)\n\
        \x20 if len(live)>20: live.pop(0).close()\n\
        \x20 time.sleep(0.01)\n";
    let mut rtp = Command::new("python3")
        .arg("-c")
        .arg(churn)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let specs: Vec<String> = (0..40)
        .map(|i| format!("udp:127.0.0.1:{}", 28000 + i))
        .collect();
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let intruder = hold_as_nobody("intruder", &specs);
    rtp.wait().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let v = events(&exporter.addr, 0);
    let all = v["events"].as_array().unwrap();
    let m = exporter.metrics();
    let expected_appeared = m.value(
        r#"portrange_listener_events_total{range="rtp",protocol="udp",kind="appeared",verdict="expected"}"#,
    );
    let unexpected_appeared = m.value(
        r#"portrange_listener_events_total{range="rtp",protocol="udp",kind="appeared",verdict="unexpected"}"#,
    );
    let dropped = m.value("portrange_listener_events_dropped_total");
    drop(intruder);
    assert!(
        expected_appeared > 100.0,
        "the churn was seen: {expected_appeared}"
    );
    assert_eq!(unexpected_appeared, 40.0);
    assert!(
        all.len() <= 30,
        "no event storm: {} events\n{v:#}",
        all.len()
    );
    let intruders = all.iter().filter(|e| e["process"] == "intruder").count();
    assert!(intruders >= 5, "the burst is recorded: {intruders}");
    assert!(
        dropped >= 25.0,
        "the rest is dropped and counted: {dropped}"
    );
    assert_eq!(v["dropped"].as_f64().unwrap(), dropped);
    let expected_events: Vec<&serde_json::Value> =
        all.iter().filter(|e| e["verdict"] == "expected").collect();
    assert!(
        expected_events.len() <= 4,
        "allowed churn is summed: {expected_events:#?}"
    );
}

/// The holder whose command line is the caller's (tests/cmdline_holder.py).
const CMDLINE_HOLDER: &str = include_str!("cmdline_holder.py");

/// The directory of the holder script (`h`, a short name: the command
/// line it starts with must fit in the one it takes).
fn cmdline_holder_dir() -> std::path::PathBuf {
    use std::sync::OnceLock;
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("portrange-cmdline-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("h"), CMDLINE_HOLDER).unwrap();
        d
    })
    .clone()
}

/// A process holding UDP 127.0.0.1:`port` whose executable is a copy of
/// python named `program` and whose command line is `argv`.
struct Typed(Child);

impl Drop for Typed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn typed(program: &str, port: u16, argv: &[&str]) -> Typed {
    use std::os::unix::process::CommandExt;
    let exe = named_python(std::ffi::OsStr::new(program)).expect("a python copy");
    let want = argv.join("\0");
    let port_arg = port.to_string();
    // "m\0h\0PORT\0FILLER\0" must be as long as "ARGV\0".
    let fixed = "m\0h\0".len() + port_arg.len() + 1 + 1;
    let filler = (want.len() + 1)
        .checked_sub(fixed)
        .filter(|&n| n >= 1)
        .unwrap_or_else(|| panic!("{want:?} is too short to be written over the holder's"));
    let hex: String = want.bytes().map(|b| format!("{b:02x}")).collect();
    let mut child = Command::new(&exe)
        .arg0("m")
        .current_dir(cmdline_holder_dir())
        .arg("h")
        .arg(&port_arg)
        .arg("x".repeat(filler))
        .env("CMDLINE_HEX", hex)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the holder");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "{program} {argv:?}");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap();
    assert_eq!(cmdline, format!("{want}\0").as_bytes(), "{program}");
    Typed(child)
}

/// A shape of secret as an operator types it: the program whose
/// executable runs, the command line, what the trail shows, the secrets
/// that must show nowhere.
struct Shape {
    name: &'static str,
    program: &'static str,
    argv: &'static [&'static str],
    shown: &'static str,
    secrets: &'static [&'static str],
}

const SHAPES: [Shape; 13] = [
    Shape {
        name: "the issue's line, as python3: no program's short flags",
        program: "python3",
        argv: &[
            "python3",
            "bind.py",
            "3230",
            "-p",
            "hunter2",
            "--password=abc1",
            "-a",
            "redispw2",
            "https://user:pw3@db.example",
            "-H",
            "Authorization: Bearer tok4",
            "--token",
            "tok5",
            "PGPASSWORD=pg6",
            "--db-password",
            "pass7",
            "-ppass8",
        ],
        shown: "python3 bind.py 3230 -p hunter2 --password=<redacted> -a redispw2 https://user:<redacted>@db.example -H Authorization: <redacted> --token <redacted> PGPASSWORD=<redacted> --db-password <redacted> -ppass8",
        secrets: &["abc1", "pw3", "tok4", "tok5", "pg6", "pass7"],
    },
    Shape {
        name: "URL userinfo",
        program: "psql",
        argv: &["psql", "postgres://app:pgpw1@db.example:5432/app"],
        shown: "psql postgres://app:<redacted>@db.example:5432/app",
        secrets: &["pgpw1"],
    },
    Shape {
        name: "Authorization and Proxy-Authorization headers",
        program: "curl",
        argv: &[
            "curl",
            "-H",
            "Authorization: Bearer tok4",
            "--header=Proxy-Authorization: Basic cHhwdw==",
            "https://h.example/",
        ],
        shown: "curl -H Authorization: <redacted> --header=Proxy-Authorization: <redacted> https://h.example/",
        secrets: &["tok4", "cHhwdw"],
    },
    Shape {
        name: "curl -u user:secret",
        program: "curl",
        argv: &["curl", "-u", "alice:cpw5", "https://h.example/"],
        shown: "curl -u alice:<redacted> https://h.example/",
        secrets: &["cpw5"],
    },
    Shape {
        name: "wget --user=user:secret",
        program: "wget",
        argv: &["wget", "--user=erin:wpw6", "https://h.example/f"],
        shown: "wget --user=erin:<redacted> https://h.example/f",
        secrets: &["wpw6"],
    },
    Shape {
        name: "comma-separated key=value list",
        program: "sshfs",
        argv: &[
            "sshfs",
            "-o",
            "user=u,password=opw7,allow_other",
            "h:/d",
            "/mnt",
        ],
        shown: "sshfs -o user=u,password=<redacted>,allow_other h:/d /mnt",
        secrets: &["opw7"],
    },
    Shape {
        name: "KEY=value and --key value/--key=value with secret names",
        program: "app-server",
        argv: &[
            "app-server",
            "--db-password",
            "dbpw8",
            "API_KEY=ak8",
            "--client-secret=cs9",
            "--port",
            "8080",
        ],
        shown: "app-server --db-password <redacted> API_KEY=<redacted> --client-secret=<redacted> --port 8080",
        secrets: &["dbpw8", "ak8", "cs9"],
    },
    Shape {
        name: "mysql -pX",
        program: "mysql",
        argv: &["mysql", "-uroot", "-pmypw8", "-h", "db.example"],
        shown: "mysql -uroot -p<redacted> -h db.example",
        secrets: &["mypw8"],
    },
    Shape {
        name: "redis-cli -a X",
        program: "redis-cli",
        argv: &["redis-cli", "-h", "db.example", "-a", "rdpw2", "-p", "6379"],
        shown: "redis-cli -h db.example -a <redacted> -p 6379",
        secrets: &["rdpw2"],
    },
    Shape {
        name: "sshpass -p X, not the -p of the command it runs",
        program: "sshpass",
        argv: &["sshpass", "-p", "sshpw1", "ssh", "-p", "2222", "db.example"],
        shown: "sshpass -p <redacted> ssh -p 2222 db.example",
        secrets: &["sshpw1"],
    },
    Shape {
        name: "nothing else: nc keeps its port",
        program: "nc",
        argv: &["nc", "-l", "-u", "-p", "3255"],
        shown: "nc -l -u -p 3255",
        secrets: &[],
    },
    Shape {
        name: "a real mysql started with another argv[0] is still mysql",
        program: "mysql",
        argv: &["db-client", "-uroot", "-ppass11"],
        shown: "db-client -uroot -p<redacted>",
        secrets: &["pass11"],
    },
    Shape {
        name: "argv[0] cannot make python mysql: its -p is its own",
        program: "python3",
        argv: &["mysql", "-uroot", "-pnot-a-secret"],
        shown: "mysql -uroot -pnot-a-secret",
        secrets: &[],
    },
];

const FIRST_SHAPE_PORT: u16 = 3260;

fn hold_shapes() -> Vec<Typed> {
    SHAPES
        .iter()
        .enumerate()
        .map(|(i, s)| typed(s.program, FIRST_SHAPE_PORT + i as u16, s.argv))
        .collect()
}

/// The exporter's events, fetched with `headers` until each shape's port
/// has appeared (at most 10 s).
fn shape_events(addr: &str, headers: &[(&str, &str)]) -> (serde_json::Value, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(addr, "/api/v1/events", headers).expect("GET /api/v1/events");
        assert_eq!(r.status, 200, "{}", r.text());
        let text = r.text();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let all = (0..SHAPES.len()).all(|i| !of_port(&v, FIRST_SHAPE_PORT + i as u16).is_empty());
        if all || Instant::now() > deadline {
            return (v, text);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The exporter behind basic auth: each shape's command line is cut in
/// `/api/v1/events`, `/api/v1/status` and the log, its secrets shown
/// nowhere; what is no secret stays.
#[test]
fn each_secret_shape_is_redacted_in_events_status_and_log() {
    if !enter_netns("each_secret_shape_is_redacted_in_events_status_and_log") {
        return;
    }
    let _held = hold_shapes();
    let dir = std::env::temp_dir().join(format!("portrange-trail-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let hash = bcrypt::hash("trail pw", 4).unwrap();
    let web = dir.join("web.yml");
    std::fs::write(&web, format!("basic_auth_users:\n  alice: {hash}\n")).unwrap();
    let log_path = dir.join("exporter.log");
    let mut exporter = KillOnDrop(
        Command::new(EXPORTER)
            .args(["--web.listen-address", ADDR, "--log.format", "json"])
            .arg("--web.config.file")
            .arg(&web)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .expect("starting the exporter"),
    );
    use base64::Engine;
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:trail pw")
    );
    let headers = [("Authorization", auth.as_str())];
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(ADDR, "/-/healthy", &headers).map_or(true, |r| r.status != 200) {
        assert!(
            exporter.0.try_wait().unwrap().is_none() && Instant::now() < deadline,
            "the exporter did not answer:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        get(ADDR, "/api/v1/events", &[]).unwrap().status,
        401,
        "no events without the credentials"
    );
    let (events, events_text) = shape_events(ADDR, &headers);
    assert_eq!(
        events["cmdline_withheld"],
        serde_json::Value::Null,
        "{events}"
    );
    let r = get(ADDR, "/api/v1/status", &headers).unwrap();
    assert_eq!(r.status, 200);
    let status_text = r.text();
    let status: serde_json::Value = serde_json::from_str(&status_text).unwrap();
    assert_eq!(status["cmdline_withheld"], serde_json::Value::Null);
    let log = std::fs::read_to_string(&log_path).unwrap();
    let log_lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let mut failures = Vec::new();
    for (i, shape) in SHAPES.iter().enumerate() {
        let port = FIRST_SHAPE_PORT + i as u16;
        let served = of_port(&events, port);
        let served = served
            .iter()
            .find(|e| e["kind"] == "appeared")
            .map(|e| e["cmdline"].clone());
        let in_status = status["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["port"] == port && e["kind"] == "appeared")
            .map(|e| e["cmdline"].clone());
        let logged = log_lines
            .iter()
            .find(|l| l["msg"] == "listener appeared" && l["port"] == port)
            .map(|l| l["cmdline"].clone());
        for (place, got) in [("events", served), ("status", in_status), ("log", logged)] {
            if got.as_ref().and_then(|g| g.as_str()) != Some(shape.shown) {
                failures.push(format!(
                    "{}: {place} shows {got:?}, not {:?}",
                    shape.name, shape.shown
                ));
            }
        }
        for secret in shape.secrets {
            for (place, text) in [
                ("events", &events_text),
                ("status", &status_text),
                ("log", &log),
            ] {
                if text.contains(secret) {
                    failures.push(format!("{}: {secret:?} in the {place}", shape.name));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without authentication the endpoint serves no command line: the
/// events and the status document say why in one field, and the log
/// still has them, redacted. `--web.serve-command-lines-without-auth`
/// serves them, redacted.
#[test]
fn without_authentication_command_lines_are_withheld_unless_the_flag_says() {
    if !enter_netns("without_authentication_command_lines_are_withheld_unless_the_flag_says") {
        return;
    }
    let _held = hold_shapes();
    let mysql = SHAPES.iter().position(|s| s.program == "mysql").unwrap();
    let mysql_port = FIRST_SHAPE_PORT + mysql as u16;
    let exporter = Exporter::start(&[]);
    let (v, text) = shape_events(&exporter.addr, &[]);
    let status = status_json(&exporter.addr);
    for doc in [&v, &status] {
        assert!(
            doc["cmdline_withheld"]
                .as_str()
                .is_some_and(|w| w.contains("no authentication is configured")
                    && w.contains("--web.serve-command-lines-without-auth")),
            "{doc}"
        );
        let events = doc["events"].as_array().unwrap();
        assert!(events.len() >= SHAPES.len().min(20), "{doc}");
        assert!(events.iter().all(|e| e["cmdline"].is_null()), "{doc}");
    }
    // No part of any command line anywhere in the document.
    assert!(
        !text.contains("db.example") && !text.contains("<redacted>"),
        "{text}"
    );
    let log = exporter.stderr();
    let line = log
        .lines()
        .find(|l| {
            l.contains("msg=\"listener appeared\"") && l.contains(&format!("port={mysql_port}"))
        })
        .unwrap_or_else(|| panic!("no log line:\n{log}"));
    assert!(
        line.contains("cmdline=\"mysql -uroot -p<redacted> -h db.example\""),
        "{line}"
    );
    assert!(!log.contains("mypw8"), "{log}");
    drop(exporter);
    let exporter = Exporter::start(&["--web.serve-command-lines-without-auth"]);
    let (v, _) = shape_events(&exporter.addr, &[]);
    assert_eq!(v["cmdline_withheld"], serde_json::Value::Null, "{v}");
    let served = of_port(&v, mysql_port);
    assert_eq!(served[0]["cmdline"], SHAPES[mysql].shown, "{v}");
    assert!(
        exporter
            .stderr()
            .contains("--web.serve-command-lines-without-auth: the listener trail's command lines"),
        "the flag is said in the log"
    );
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
