//! End to end with a real Prometheus server (Debian's `prometheus`
//! package): in a private network namespace, exporters scrape a scenario
//! (sockets in the ranges, an unexpected listener on 3224, a nearly full,
//! a full and a filling range, part of a range in the ephemeral range, a
//! closed port of framehawk probed 20 times a second, counted by A's
//! `--collector.traffic`);
//! Prometheus scrapes them every second with the rules loaded; then every
//! target expression of both dashboards and every rule expression must
//! return data through the HTTP API (finite numbers only), every alert must
//! be pending or firing, and UnexpectedListener must be firing.
//!
//! Targets, job `portrange`: A (root, the scenario), B (unprivileged: its
//! sockets are unattributed, and its `--collector.traffic` fails without
//! CAP_NET_ADMIN: PortRangeCollectorFailed), C (sampling fails: a seccomp filter denies it
//! sock_diag sockets, as a unit without AF_NETLINK would), E (a reload of
//! a broken config file was refused). Job `portrange-exporter` (the name
//! the Kubernetes ServiceMonitor gives): D (nothing listens: down). Job
//! `portrange-netns`: F (`--collector.netns` without CAP_SYS_ADMIN, in
//! private pid and mount namespaces where `ip netns add` left a namespace
//! no process is in: it cannot be sampled) and G (`--collector.netns` as
//! root in its own pid and mount namespaces, with a namespace whose
//! dynamic range of 10 ports a client takes toward one listener, one port
//! every 1.5 s: the ephemeral alerts), in a job of its own so that the
//! dashboards' and fleet sums' `job="portrange"` do not see them.
//!
//! PortRangeExporterMissing cannot fire while the jobs exist: the shipped
//! rule must stay empty here, and a copy renamed as the rules file tells
//! operators to (a job this Prometheus does not have) must fire. The
//! flapping (0/1 free port) case of PortRangeExhausted needs minutes of
//! `for:`, so it is proven by `promtool test rules` only.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const PROM: &str = "127.0.0.1:9090";
const A: &str = "127.0.0.1:10224";
const C: &str = "127.0.0.1:10226";
const D: &str = "127.0.0.1:10227";
const E: &str = "127.0.0.1:10228";
const F: &str = "127.0.0.1:10229";
const G: &str = "127.0.0.1:10230";

struct Prometheus(Child, PathBuf);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn api(path: &str) -> Value {
    let r = get(PROM, path, &[]).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let v: Value =
        serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("GET {path}: {e}: {}", r.text()));
    assert_eq!(v["status"], "success", "GET {path}: {v}");
    v
}

fn query(expr: &str) -> Vec<Value> {
    api(&format!("/api/v1/query?query={}", encode(expr)))["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The value of a one-series result.
fn value(v: &Value) -> f64 {
    v["value"][1].as_str().unwrap().parse().unwrap()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// An exporter on `addr`, wrapped in `prefix`; with `deny_sampling` it
/// cannot open sock_diag sockets, so every sample fails.
fn exporter_on(addr: &str, args: &[&str], deny_sampling: bool, prefix: &[&str]) -> Child {
    let mut cmd = if prefix.is_empty() {
        Command::new(EXPORTER)
    } else {
        let mut c = Command::new(prefix[0]);
        // B runs as nobody: a copy of the binary it can execute, from a
        // directory it can enter (the checkout may be out of its reach, see
        // `shared_copy`).
        c.args(&prefix[1..]).arg(exporter_for(prefix));
        if runs_as_other_user(prefix) {
            c.current_dir("/");
        }
        c
    };
    if deny_sampling {
        deny_sock_diag(&mut cmd);
    }
    cmd.args(["--web.listen-address", addr])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting an exporter")
}

/// The prefix that runs an exporter in pid and mount namespaces of its
/// own (dying with it: --kill-child), after `script` (`sh -c`, which ends
/// with `exec "$@"` on the exporter's command line).
fn private_pid_and_mount(script: &str) -> [&str; 10] {
    [
        "unshare",
        "--mount",
        "--pid",
        "--kill-child",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
    ]
}

/// Runs its closure on drop.
struct Defer<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Drop for Defer<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

struct Kill(Vec<Child>);
impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn dashboards_and_rules_return_data_on_a_live_prometheus() {
    if !enter_netns("dashboards_and_rules_return_data_on_a_live_prometheus") {
        return;
    }
    let Ok(_) = Command::new("prometheus").arg("--version").output() else {
        if std::env::var_os("CI").is_some() {
            panic!("prometheus is missing in CI: .ci/run installs the prometheus package");
        }
        eprintln!("SKIPPED: prometheus not installed (apt-get install prometheus)");
        return;
    };
    // 3300-3324 of framehawk can be taken by outgoing connections.
    let st = Command::new("sh")
        .args([
            "-c",
            "echo '3300 60999' > /proc/sys/net/ipv4/ip_local_port_range",
        ])
        .status()
        .unwrap();
    assert!(st.success());

    let cfg = config_file(
        "e2e",
        "ranges:\n  - name: framehawk\n    ports: 3224-3324\n    expected:\n      - process: CtxGfx\n\
         \x20 - name: nearly\n    ports: 3400-3419\n    protocols: [udp]\n    expected:\n      - process: CtxGfx\n\
         \x20 - name: full\n    ports: 3420-3421\n    protocols: [udp]\n    expected:\n      - process: CtxGfx\n\
         \x20 - name: filling\n    ports: 3430-3449\n    protocols: [udp]\n    expected:\n      - process: CtxGfx\n",
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut specs: Vec<String> = ["udp:0.0.0.0:3225", "udp:0.0.0.0:3226", "tcp:127.0.0.1:3300"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    specs.extend((3400..3419).map(|p| format!("udp:0.0.0.0:{p}"))); // 19 of 20
    specs.extend((3420..=3421).map(|p| format!("udp:0.0.0.0:{p}"))); // all of 2
    let spec_refs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let _ctx = hold("CtxGfx", &spec_refs);
    let _intruder = hold("intruder", &["udp:0.0.0.0:3224"]);

    // The filling range: one more port taken every 1.5 s until 15 of 20 are
    // held (more than half, not below 10% free), for a falling trend.
    let filler = std::thread::spawn(|| {
        let mut held = Vec::new();
        for port in 3430..3445 {
            held.push(hold("CtxGfx", &[&format!("udp:0.0.0.0:{port}")]));
            std::thread::sleep(Duration::from_millis(1500));
        }
        held
    });

    // A probe of framehawk's closed port 3250: 20 datagrams a second for
    // the whole test, counted by A's --collector.traffic (PortRangeProbed,
    // the traffic panels).
    let probing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let prober = std::thread::spawn({
        let probing = probing.clone();
        move || {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            while probing.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = s.send_to(b"knock", "127.0.0.1:3250");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    });
    let _stop_probing = Defer(Some(move || {
        probing.store(false, std::sync::atomic::Ordering::Relaxed);
        let _ = prober.join();
    }));

    // E reloads a broken copy of the file once it runs.
    let cfg_e = config_file("e2e-reload", &std::fs::read_to_string(&cfg).unwrap());
    std::fs::set_permissions(&cfg_e, std::fs::Permissions::from_mode(0o644)).unwrap();

    let c = cfg.to_str().unwrap();
    // G's client: listens on 127.0.0.1:5000 of its namespace and connects
    // to it, one more connection every 1.5 s, until connect() fails.
    let client =
        std::env::temp_dir().join(format!("portrange-e2e-client-{}.py", std::process::id()));
    std::fs::write(
        &client,
        "import socket, time\n\
         l = socket.socket()\n\
         l.bind(('127.0.0.1', 5000))\n\
         l.listen(100)\n\
         held = []\n\
         while True:\n\
         \x20   c = socket.socket()\n\
         \x20   try:\n\
         \x20       c.connect(('127.0.0.1', 5000))\n\
         \x20   except OSError:\n\
         \x20       break\n\
         \x20   held.append(c)\n\
         \x20   time.sleep(1.5)\n\
         time.sleep(3600)\n",
    )
    .unwrap();
    let g_script = format!(
        "mount -t proc proc /proc && mount -t tmpfs tmpfs /run && mkdir /run/netns \
         && ip netns add e2e-ephemeral \
         && ip netns exec e2e-ephemeral sh -c 'ip link set lo up \
            && echo \"40000 40009\" > /proc/sys/net/ipv4/ip_local_port_range' \
         && {{ ip netns exec e2e-ephemeral /usr/bin/python3 {} & }} \
         && exec \"$@\"",
        client.display()
    );
    let _exporters = Kill(vec![
        exporter_on(A, &["--config.file", c, "--collector.traffic"], false, &[]),
        exporter_on(
            "127.0.0.1:10225",
            &["--config.file", c, "--collector.traffic"],
            false,
            &DROP_PRIVILEGES,
        ),
        exporter_on(C, &["--config.file", c], true, &[]),
        exporter_on(
            E,
            &[
                "--config.file",
                cfg_e.to_str().unwrap(),
                "--web.enable-lifecycle",
            ],
            false,
            &[],
        ),
        // F: its own pid namespace (it sees only itself, so the real host's
        // namespaces stay out) and mount namespace, with a tmpfs over /run
        // (nothing is created on the host's) holding one `ip netns` namespace
        // that no process is in; without CAP_SYS_ADMIN it reads
        // /proc/<pid>/net, which cannot reach that namespace. --kill-child:
        // the namespaces die with it.
        exporter_on(
            F,
            &["--config.file", c, "--collector.netns"],
            false,
            &private_pid_and_mount(
                "mount -t proc proc /proc && mount -t tmpfs tmpfs /run && mkdir /run/netns \
                 && ip netns add e2e-unsampled \
                 && exec setpriv --inh-caps=-sys_admin --bounding-set=-sys_admin \"$@\"",
            ),
        ),
        // G: --collector.netns as root in its own pid and mount namespaces,
        // where `ip netns add` made a namespace whose dynamic range is
        // 40000-40009; a client there takes one more of those ports every
        // 1.5 s toward one listener until none is left, so the ephemeral
        // alerts (nearly exhausted, exhausted, predicted) have data.
        exporter_on(
            G,
            &["--config.file", c, "--collector.netns"],
            false,
            &private_pid_and_mount(&g_script),
        ),
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = get(F, "/metrics", &[])
            .ok()
            .filter(|r| r.status == 200)
            .map(|r| Metrics::parse(&r.text()));
        if let Some(m) = m {
            assert_eq!(m.value("portrange_netns_unsampled"), 1.0, "exporter F");
            break;
        }
        assert!(Instant::now() < deadline, "exporter F did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !get(G, "/metrics", &[]).is_ok_and(|r| {
        r.status == 200 && Metrics::parse(&r.text()).value("portrange_netns_unsampled") == 0.0
    }) {
        assert!(Instant::now() < deadline, "exporter G did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !get(E, "/metrics", &[]).is_ok_and(|r| r.status == 200) {
        assert!(Instant::now() < deadline, "exporter E did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::write(&cfg_e, "ranges:\n  - name: broken\n    ports: 3324-3224\n").unwrap();
    let r = request(E, "POST", "/-/reload", &[]).unwrap();
    assert_eq!(r.status, 500, "reload of a broken file: {}", r.text());
    let m = Metrics::parse(&get(E, "/metrics", &[]).unwrap().text());
    assert_eq!(m.value("portrange_config_last_reload_successful"), 0.0);

    let dir = std::env::temp_dir().join(format!("portrange-prom-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let rules = root().join("deploy/prometheus/rules/portrange.rules.yml");
    let rules_text = std::fs::read_to_string(&rules).unwrap();
    let rules_yaml: Value = serde_saphyr::from_str(&rules_text).unwrap();
    // PortRangeExporterMissing with its job matcher rewritten as the rules
    // file tells operators to, for a job this Prometheus does not scrape
    // (JSON is YAML).
    let shipped_matcher = r#"job=~"portrange|portrange-exporter""#;
    assert!(rules_text.contains(shipped_matcher));
    let mut missing = rules_yaml["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .find(|r| r["alert"] == "PortRangeExporterMissing")
        .unwrap()
        .clone();
    let renamed_expr = missing["expr"]
        .as_str()
        .unwrap()
        .replace(shipped_matcher, r#"job=~"vda-ports""#);
    missing["expr"] = renamed_expr.into();
    missing["for"] = "0s".into();
    let renamed = dir.join("renamed.rules.yml");
    std::fs::write(
        &renamed,
        serde_json::json!({"groups": [{"name": "renamed", "rules": [missing]}]}).to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n  - {}\n\
             scrape_configs:\n  - job_name: portrange\n    static_configs:\n      - targets: ['{A}', '127.0.0.1:10225', '{C}', '{E}']\n\
             \x20 - job_name: portrange-exporter\n    static_configs:\n      - targets: ['{D}']\n\
             \x20 - job_name: portrange-netns\n    static_configs:\n      - targets: ['{F}', '{G}']\n",
            rules.display(),
            renamed.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let prom = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={PROM}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting prometheus");
    let _prom = Prometheus(prom, dir.clone());
    let prom_log = || std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();

    // Wait for scrapes of all seven targets (six answer).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = get(PROM, "/-/ready", &[])
            .map(|r| r.status == 200)
            .unwrap_or(false);
        if ready && query("up").len() == 7 && query("portrange_up").len() == 6 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus did not scrape the targets:\n{}",
            prom_log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // UnexpectedListener (for: 1m) must fire.
    let deadline = Instant::now() + Duration::from_secs(120);
    let alerts = loop {
        let alerts = api("/api/v1/alerts")["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap();
        let firing = alerts.iter().any(|a| {
            a["labels"]["alertname"] == "UnexpectedListener"
                && a["state"] == "firing"
                && a["labels"]["process"] == "intruder"
                && a["labels"]["instance"] == A
                && a["annotations"]["description"].as_str().is_some_and(|d| {
                    d.contains("holds 1 udp listener(s)") && d.contains("0.0.0.0:3224")
                })
        });
        if firing {
            break alerts;
        }
        assert!(
            Instant::now() < deadline,
            "UnexpectedListener did not fire: {alerts:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    let desc = alerts
        .iter()
        .find(|a| a["labels"]["alertname"] == "UnexpectedListener" && a["labels"]["instance"] == A)
        .unwrap()["annotations"]["description"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        desc.contains("intruder") && desc.contains("0.0.0.0:3224") && desc.contains("user root"),
        "{desc}"
    );
    // Every alert of the rules file is at least pending in this scenario,
    // for the target or range that should raise it.
    let alerts = loop {
        let alerts = api("/api/v1/alerts")["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap();
        let has = |name: &str, label: &str, v: &str| {
            alerts
                .iter()
                .any(|a| a["labels"]["alertname"] == name && a["labels"][label] == v)
        };
        let wanted = [
            ("PortRangeNearlyExhausted", "range", "nearly"),
            ("PortRangeExhausted", "range", "full"),
            ("PortRangeExhaustionPredicted", "range", "filling"),
            ("UnexpectedListener", "process", "intruder"),
            ("PortRangeExporterDown", "instance", D),
            ("PortRangeExporterMissing", "severity", "warning"),
            ("PortRangeSamplingFailed", "instance", C),
            ("PortRangeConfigReloadFailed", "instance", E),
            (
                "PortRangeAttributionIncomplete",
                "instance",
                "127.0.0.1:10225",
            ),
            ("PortRangeEphemeralOverlap", "range", "framehawk"),
            // B cannot find the owners of root's sockets.
            ("PortRangeListenerUnknown", "instance", "127.0.0.1:10225"),
            ("PortRangeNetnsUnsampled", "instance", F),
            ("PortRangeProbed", "range", "framehawk"),
            // G's namespace with 10 dynamic ports, all taken toward one
            // listener, the last ones 1.5 s apart.
            ("EphemeralPortsNearlyExhausted", "instance", G),
            ("EphemeralPortsExhausted", "instance", G),
            ("EphemeralPortsExhaustionPredicted", "instance", G),
        ];
        let absent: Vec<_> = wanted.iter().filter(|(n, l, v)| !has(n, l, v)).collect();
        if absent.is_empty() {
            break alerts;
        }
        assert!(
            Instant::now() < deadline,
            "neither pending nor firing: {absent:?}\n{alerts:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    // The down target is in the job the ServiceMonitor names.
    assert!(
        alerts
            .iter()
            .any(|a| a["labels"]["alertname"] == "PortRangeExporterDown"
                && a["labels"]["job"] == "portrange-exporter")
    );
    // A flat range predicts nothing; a full one is PortRangeExhausted's.
    assert!(
        !alerts.iter().any(
            |a| a["labels"]["alertname"] == "PortRangeExhaustionPredicted"
                && a["labels"]["range"] != "filling"
        ),
        "{alerts:?}"
    );
    // No rule failed to evaluate; PortRangeExporterMissing came from the
    // renamed copy, the shipped rule stays inactive.
    for g in api("/api/v1/rules")["data"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            assert_eq!(r["health"], "ok", "rule {} : {}", r["name"], r["lastError"]);
            if r["name"] == "PortRangeExporterMissing" {
                let want_active = g["name"] == "renamed";
                assert_eq!(
                    r["state"] != "inactive",
                    want_active,
                    "{} in group {}: {}",
                    r["name"],
                    g["name"],
                    r["state"]
                );
            }
        }
    }

    // Every rule expression returns data, only finite numbers; the absent()
    // of the job matcher returns nothing while the jobs exist.
    let mut checked = 0;
    for g in rules_yaml["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let expr = r["expr"].as_str().unwrap();
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap();
            let result = query(expr);
            checked += 1;
            if name == "PortRangeExporterMissing" {
                assert!(
                    result.is_empty(),
                    "{name} with the jobs present: {result:?}"
                );
                continue;
            }
            assert!(!result.is_empty(), "rule {name} returns no data: {expr}");
            for v in &result {
                assert!(value(v).is_finite(), "rule {name}: {v}");
            }
            if let Some(rec) = r["record"].as_str() {
                assert!(!query(rec).is_empty(), "recorded series {rec} is empty");
            }
        }
    }
    assert_eq!(
        checked, 24,
        "every rule of the shipped file (tests/dashboards_and_rules.rs counts 24)"
    );

    // Fleet capacity leaves out C, which cannot sample: A, B and E only.
    let cap = query(
        r#"range_protocol:portrange_ports:sum{job="portrange",range="framehawk",protocol="udp"}"#,
    );
    assert_eq!(cap.len(), 1, "{cap:?}");
    assert_eq!(value(&cap[0]), 303.0, "{cap:?}");
    // Time to exhaustion: 0 for the full range (not NaN), a finite positive
    // time for the filling one, nothing for flat ranges with room.
    let tte = query(&format!(
        "instance:portrange_exhaustion_seconds:predict_linear6h{{instance=\"{A}\"}}"
    ));
    let by_range: std::collections::BTreeMap<(String, String), f64> = tte
        .iter()
        .map(|v| {
            let m = &v["metric"];
            let key = |l: &str| m[l].as_str().unwrap().to_string();
            ((key("range"), key("protocol")), value(v))
        })
        .collect();
    let at = |r: &str| by_range.get(&(r.to_string(), "udp".to_string())).copied();
    assert_eq!(at("full"), Some(0.0), "{tte:?}");
    let filling = at("filling").unwrap_or_else(|| panic!("{tte:?}"));
    assert!(filling > 0.0 && filling < 4.0 * 3600.0, "{tte:?}");
    // (UDP: the test's own TCP connections, from the widened ephemeral
    // range, can touch framehawk's TCP ports.)
    assert_eq!(at("framehawk"), None, "{tte:?}");

    // Every dashboard target returns data, with the variables substituted.
    for (file, instance, range) in [
        ("portrange-host.json", A, "framehawk"),
        ("portrange-fleet.json", ".+", ".+"),
    ] {
        let board: Value = serde_json::from_str(
            &std::fs::read_to_string(root().join("dashboards").join(file)).unwrap(),
        )
        .unwrap();
        let mut n = 0;
        let mut all = board["panels"].as_array().unwrap().clone();
        for p in board["panels"].as_array().unwrap() {
            all.extend(p["panels"].as_array().cloned().unwrap_or_default());
        }
        for p in &all {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$job", "portrange")
                    .replace("$instance", instance)
                    .replace("$range", range)
                    // What Grafana's "All" gives (the exporters here run
                    // without --collector.netns: no netns label at all).
                    .replace("$netns", ".*")
                    .replace("$__rate_interval", "30s");
                let result = query(&expr);
                assert!(
                    !result.is_empty(),
                    "{file}: panel {:?} returns no data: {expr}",
                    p["title"]
                );
                for v in &result {
                    assert!(value(v).is_finite(), "{file}: panel {:?}: {v}", p["title"]);
                }
                // A table shows only the labels it places; the rest are hidden.
                if p["type"] == "table" {
                    let org = &p["transformations"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|t| t["id"] == "organize")
                        .unwrap()["options"];
                    for v in &result {
                        for label in v["metric"].as_object().unwrap().keys() {
                            assert!(
                                org["excludeByName"][label] == true
                                    || org["indexByName"].get(label).is_some(),
                                "{file}: table {:?} shows a stray {label} column",
                                p["title"]
                            );
                        }
                    }
                }
                n += 1;
            }
        }
        assert!(n >= 8, "{file}: only {n} targets");
    }
    // Host dashboard: Sampling reads OK (1), FAILED (0) and DOWN (-1);
    // Configuration reads FAILED for E.
    let host: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("dashboards/portrange-host.json")).unwrap(),
    )
    .unwrap();
    let expr_of = |title: &str| {
        host["panels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["title"] == title)
            .unwrap()["targets"][0]["expr"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for (panel, job, instance, want) in [
        ("Sampling", "portrange", A, 1.0),
        ("Sampling", "portrange", C, 0.0),
        ("Sampling", "portrange-exporter", D, -1.0),
        ("Configuration", "portrange", A, 1.0),
        ("Configuration", "portrange", E, 0.0),
    ] {
        let expr = expr_of(panel)
            .replace("$job", job)
            .replace("$instance", instance);
        let r = query(&expr);
        assert_eq!(r.len(), 1, "{panel} for {instance}: {r:?}");
        assert_eq!(value(&r[0]), want, "{panel} for {instance}: {r:?}");
    }
    // The listener table shows the intruder on 3224 as unexpected.
    let rows = query(&format!(
        "portrange_listener_info{{job=\"portrange\",instance=\"{A}\",port=\"3224\"}}"
    ));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["metric"]["process"], "intruder");
    assert_eq!(rows[0]["metric"]["expected"], "false");
    drop(filler.join().unwrap());
    let _ = std::fs::remove_file(cfg);
    let _ = std::fs::remove_file(cfg_e);
}
