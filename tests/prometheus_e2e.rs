//! End to end with a real Prometheus server (Debian's `prometheus`
//! package): in a private network namespace, exporters scrape a scenario
//! (sockets in the ranges, an unexpected listener on 3224, a nearly full
//! and a full range, part of a range in the ephemeral range); Prometheus
//! scrapes them every second with the rules loaded; then every target
//! expression of both dashboards and every rule expression must return
//! data through the HTTP API, every alert must be pending or firing, and
//! UnexpectedListener must be firing.
//!
//! Targets: A (root, the scenario), B (unprivileged: its sockets are
//! unattributed), C (sampling fails on purpose), D (nothing listens: down).

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const PROM: &str = "127.0.0.1:9090";
const A: &str = "127.0.0.1:10224";

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

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn exporter_on(addr: &str, args: &[&str], env: &[(&str, &str)], prefix: &[&str]) -> Child {
    let mut cmd = if prefix.is_empty() {
        Command::new(EXPORTER)
    } else {
        let mut c = Command::new(prefix[0]);
        c.args(&prefix[1..]).arg(EXPORTER);
        c
    };
    cmd.args(["--web.listen-address", addr])
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting an exporter")
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
         \x20 - name: full\n    ports: 3420-3421\n    protocols: [udp]\n    expected:\n      - process: CtxGfx\n",
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

    let c = cfg.to_str().unwrap();
    let _exporters = Kill(vec![
        exporter_on(A, &["--config.file", c], &[], &[]),
        exporter_on(
            "127.0.0.1:10225",
            &["--config.file", c],
            &[],
            &DROP_PRIVILEGES,
        ),
        exporter_on(
            "127.0.0.1:10226",
            &["--config.file", c],
            &[("PORTRANGE_EXPORTER_TEST_FAIL_SAMPLES", "1000000")],
            &[],
        ),
    ]);

    let dir = std::env::temp_dir().join(format!("portrange-prom-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let rules = root().join("deploy/prometheus/rules/portrange.rules.yml");
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: portrange\n    static_configs:\n      - targets: ['{A}', '127.0.0.1:10225', '127.0.0.1:10226', '127.0.0.1:10227']\n",
            rules.display()
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

    // Wait for scrapes of all four targets.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = get(PROM, "/-/ready", &[])
            .map(|r| r.status == 200)
            .unwrap_or(false);
        if ready && query("up").len() == 4 && query("portrange_up").len() == 3 {
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
                && a["labels"]["port"] == "3224"
                && a["labels"]["process"] == "intruder"
                && a["labels"]["instance"] == A
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
        .find(|a| a["labels"]["alertname"] == "UnexpectedListener" && a["labels"]["port"] == "3224")
        .unwrap()["annotations"]["description"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        desc.contains("intruder") && desc.contains("3224") && desc.contains("user root"),
        "{desc}"
    );
    // Every alert of the rules file is at least pending in this scenario.
    for name in [
        "PortRangeNearlyExhausted",
        "PortRangeExhausted",
        "UnexpectedListener",
        "PortRangeExporterDown",
        "PortRangeSamplingFailed",
        "PortRangeAttributionIncomplete",
        "PortRangeEphemeralOverlap",
    ] {
        assert!(
            alerts.iter().any(|a| a["labels"]["alertname"] == name),
            "{name} is neither pending nor firing: {alerts:?}"
        );
    }
    // No rule failed to evaluate.
    for g in api("/api/v1/rules")["data"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            assert_eq!(r["health"], "ok", "rule {} : {}", r["name"], r["lastError"]);
        }
    }

    // Every rule expression returns data.
    let rules_text = std::fs::read_to_string(&rules).unwrap();
    let rules_yaml: Value = serde_saphyr::from_str(&rules_text).unwrap();
    let mut checked = 0;
    for g in rules_yaml["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let expr = r["expr"].as_str().unwrap();
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap();
            assert!(
                !query(expr).is_empty(),
                "rule {name} returns no data: {expr}"
            );
            if let Some(rec) = r["record"].as_str() {
                assert!(!query(rec).is_empty(), "recorded series {rec} is empty");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 13);

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
                n += 1;
            }
        }
        assert!(n >= 8, "{file}: only {n} targets");
    }
    // The listener table shows the intruder on 3224 as unexpected.
    let rows = query(&format!(
        "portrange_listener_info{{job=\"portrange\",instance=\"{A}\",port=\"3224\"}}"
    ));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["metric"]["process"], "intruder");
    assert_eq!(rows[0]["metric"]["expected"], "false");
    let _ = std::fs::remove_file(cfg);
}
