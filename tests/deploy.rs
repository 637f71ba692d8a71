//! The deploy files carry what they promise: the systemd unit passes
//! `systemd-analyze verify` with exactly the two capabilities and the
//! hardening the README states (and a security exposure score at most 2.5),
//! and so does its `--collector.netns` drop-in, which adds CAP_SYS_ADMIN
//! and network namespaces only;
//! the Kubernetes manifests parse and hold the fields operators rely on;
//! the Prometheus scrape configs pass `promtool check config`; the
//! Dockerfile is multi-stage, non-root, with the same two capabilities.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml(rel: &str) -> Value {
    serde_saphyr::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn tool_missing(name: &str) -> bool {
    if Command::new(name).arg("--version").output().is_ok() {
        return false;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{name} is missing in CI");
    }
    eprintln!("SKIPPED: {name} not installed");
    true
}

#[test]
fn systemd_unit_verifies_and_is_hardened() {
    let unit = read("deploy/systemd/portrange_exporter.service");
    let directives: Vec<(&str, &str)> = unit
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .filter_map(|l| l.split_once('='))
        .collect();
    let get = |k: &str| {
        directives
            .iter()
            .filter(|(key, _)| *key == k)
            .map(|(_, v)| *v)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        get("AmbientCapabilities"),
        vec!["CAP_SYS_PTRACE CAP_DAC_READ_SEARCH"]
    );
    assert_eq!(
        get("CapabilityBoundingSet"),
        vec!["CAP_SYS_PTRACE CAP_DAC_READ_SEARCH"]
    );
    assert_eq!(
        get("RestrictAddressFamilies"),
        vec!["AF_INET AF_INET6 AF_NETLINK AF_UNIX"]
    );
    for (k, v) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("EnvironmentFile", "-/etc/default/portrange_exporter"),
        ("User", "portrange_exporter"),
        ("ProtectProc", "default"),
        // Room for --web.max-connections 4096 without the start-up warning.
        ("LimitNOFILE", "65536"),
    ] {
        assert_eq!(get(k), vec![v], "{k}");
    }
    assert!(get("SystemCallFilter").contains(&"@system-service"));
    assert!(get("ExecReload").iter().any(|v| v.contains("-HUP")));
    assert!(read("deploy/systemd/portrange_exporter.default").contains("PORTRANGE_EXPORTER_ARGS="));

    if tool_missing("systemd-analyze") {
        return;
    }
    // verify checks that ExecStart exists: point it at the built binary.
    let dir = std::env::temp_dir().join(format!("portrange-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("portrange_exporter.service");
    std::fs::write(
        &copy,
        unit.replace(
            "/usr/local/bin/portrange_exporter",
            env!("CARGO_BIN_EXE_portrange_exporter"),
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "systemd-analyze verify:\n{text}");
    assert!(
        !text.contains("Unknown key") && !text.contains("Failed to parse"),
        "{text}"
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&copy)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for portrange_exporter.service: ")
                .nth(1)
        })
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in:\n{text}"));
    assert!(score <= 2.5, "exposure {score}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `KEY=VALUE` lines of a unit file, comments left out.
fn directives(text: &str) -> Vec<(&str, &str)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .filter_map(|l| l.split_once('='))
        .collect()
}

/// The unit with `drop_in` (named `name`.conf) beside it, as systemd loads
/// them, checked by `systemd-analyze verify`; returns `systemd-analyze
/// security`'s report and its exposure score.
fn unit_with_drop_in(name: &str, drop_in: &str) -> (String, f64) {
    let dir = std::env::temp_dir().join(format!("portrange-unit-{name}-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("portrange_exporter.service.d")).unwrap();
    let unit = dir.join("portrange_exporter.service");
    std::fs::write(
        &unit,
        read("deploy/systemd/portrange_exporter.service").replace(
            "/usr/local/bin/portrange_exporter",
            env!("CARGO_BIN_EXE_portrange_exporter"),
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join(format!("portrange_exporter.service.d/{name}.conf")),
        drop_in,
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && !text.contains("Unknown key"),
        "{text}"
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for portrange_exporter.service: ")
                .nth(1)
        })
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in:\n{text}"));
    let _ = std::fs::remove_dir_all(&dir);
    (text, score)
}

#[test]
fn systemd_netns_drop_in_adds_exactly_cap_sys_admin() {
    let rel = "deploy/systemd/portrange_exporter.service.d/netns.conf";
    let drop_in = read(rel);
    assert_eq!(
        directives(&drop_in),
        vec![
            ("Environment", "PORTRANGE_EXPORTER_COLLECTOR_NETNS=true"),
            ("AmbientCapabilities", "CAP_SYS_ADMIN"),
            ("CapabilityBoundingSet", "CAP_SYS_ADMIN"),
            ("RestrictNamespaces", ""),
            ("RestrictNamespaces", "net"),
        ]
    );
    assert!(drop_in.contains("[Service]"));
    assert!(drop_in.contains("setns(2)"), "the drop-in says why");
    if tool_missing("systemd-analyze") {
        return;
    }
    let (text, score) = unit_with_drop_in("netns", &drop_in);
    let line = |key: &str| finding(&text, key);
    // The drop-in was merged: the service now has CAP_SYS_ADMIN and may
    // use network namespaces, and nothing else changed kind.
    assert!(
        line("CapabilityBoundingSet=~CAP_SYS_ADMIN").starts_with('✗'),
        "{text}"
    );
    assert!(line("RestrictNamespaces=~net").starts_with('✗'), "{text}");
    for kind in ["user", "pid", "mnt", "uts", "ipc", "cgroup"] {
        assert!(
            line(&format!("RestrictNamespaces=~{kind} ")).starts_with('✓'),
            "{kind}: {text}"
        );
    }
    assert!(score <= 2.5, "exposure {score}");
}

#[test]
fn kubernetes_manifests_carry_the_fields() {
    let ds = yaml("deploy/kubernetes/daemonset.yaml");
    assert_eq!(ds["kind"], "DaemonSet");
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&ds["spec"]["selector"]["matchLabels"], labels);
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["hostPID"], true);
    assert_eq!(pod["automountServiceAccountToken"], false);
    let c = &pod["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&"--path.procfs=/host/proc"), "{args:?}");
    let proc_mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/host/proc")
        .expect("/host/proc mount");
    assert_eq!(proc_mount["readOnly"], true);
    let proc_vol = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == proc_mount["name"])
        .unwrap();
    assert_eq!(proc_vol["hostPath"]["path"], "/proc");
    let sc = &c["securityContext"];
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let mut add: Vec<&str> = sc["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    add.sort();
    assert_eq!(add, ["DAC_READ_SEARCH", "SYS_ADMIN", "SYS_PTRACE"]);
    // --collector.netns: pods' namespaces from their processes (hostPID)
    // and from /run/netns, which must follow new mounts on the host; pod
    // names from the kubelet's log directories.
    assert!(args.contains(&"--collector.netns"), "{args:?}");
    for (path, propagation) in [
        ("/run/netns", Some("HostToContainer")),
        ("/var/log/pods", None),
    ] {
        let m = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("{path} mount"));
        assert_eq!(m["readOnly"], true, "{path}");
        if let Some(p) = propagation {
            assert_eq!(m["mountPropagation"], p, "{path}");
        }
        let vol = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap();
        assert_eq!(vol["hostPath"]["path"], path);
    }
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["privileged"], false);
    for k in ["requests", "limits"] {
        assert!(
            c["resources"][k]["cpu"].is_string() && c["resources"][k]["memory"].is_string(),
            "resources.{k}"
        );
    }
    for p in ["livenessProbe", "readinessProbe"] {
        assert_eq!(c[p]["httpGet"]["path"], "/-/healthy", "{p}");
    }
    assert_eq!(c["ports"][0]["containerPort"], 10224);
    let port_name = c["ports"][0]["name"].as_str().unwrap();

    let svc = yaml("deploy/kubernetes/service.yaml");
    assert_eq!(svc["kind"], "Service");
    assert_eq!(&svc["spec"]["selector"], labels);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], port_name);
    let svc_port = svc["spec"]["ports"][0]["name"].as_str().unwrap();

    let sm = yaml("deploy/kubernetes/servicemonitor.yaml");
    assert_eq!(sm["kind"], "ServiceMonitor");
    assert_eq!(
        &sm["spec"]["selector"]["matchLabels"],
        &svc["metadata"]["labels"]
    );
    assert_eq!(sm["spec"]["endpoints"][0]["port"], svc_port);

    let cm = yaml("deploy/kubernetes/configmap.yaml");
    let ranges = cm["data"]["ranges.yml"].as_str().unwrap();
    portrange_exporter::config::Config::parse(ranges, "configmap.yaml")
        .expect("the ConfigMap's ranges.yml is valid");
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "config")
        .unwrap();
    assert!(
        args.contains(
            &format!(
                "--config.file={}/ranges.yml",
                mount["mountPath"].as_str().unwrap()
            )
            .as_str()
        )
    );
}

#[test]
fn scrape_configs_pass_promtool() {
    if tool_missing("promtool") {
        return;
    }
    for f in [
        "scrape-plain.yml",
        "scrape-tls-basic-auth.yml",
        "scrape-file-sd.yml",
    ] {
        let out = Command::new("promtool")
            .args(["check", "config", "--syntax-only", f])
            .current_dir(root().join("deploy/prometheus"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{f}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let targets = yaml("deploy/prometheus/targets/portrange.yml");
    assert!(
        targets[0]["targets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t.as_str().unwrap().ends_with(":10224"))
    );
}

#[test]
fn dockerfiles_are_non_root_with_two_capabilities() {
    // The image from source: two stages, locked dependencies.
    let d = read("deploy/docker/Dockerfile.source");
    let froms = d.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(froms >= 2, "multi-stage");
    let user = d.lines().rfind(|l| l.starts_with("USER ")).expect("USER");
    assert!(!user.contains(" 0") && !user.contains("root"), "{user}");
    assert!(d.contains("setcap cap_sys_ptrace,cap_dac_read_search=ep"));
    assert!(d.contains("--cap-drop ALL --cap-add SYS_PTRACE --cap-add DAC_READ_SEARCH"));
    assert!(d.contains("--locked"));
    // The release image: the static binary alone, the same user, its file
    // capabilities set by the build script (tests/release.rs runs it).
    let r = read("deploy/docker/Dockerfile");
    assert!(r.lines().any(|l| l == "FROM scratch"), "{r}");
    let user = r.lines().rfind(|l| l.starts_with("USER ")).expect("USER");
    assert!(!user.contains(" 0") && !user.contains("root"), "{user}");
    assert!(r.contains("--cap-drop ALL --cap-add SYS_PTRACE --cap-add DAC_READ_SEARCH"));
    assert!(read("deploy/docker/build").contains("setcap cap_sys_ptrace,cap_dac_read_search=ep"));
}

/// The line of `systemd-analyze security` output `text` that names `key`.
fn finding<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains(key))
        .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
}

#[test]
fn systemd_bpf_drop_in_adds_exactly_cap_bpf_cap_perfmon_and_bpf_2() {
    let rel = "deploy/systemd/portrange_exporter.service.d/bpf.conf";
    let drop_in = read(rel);
    assert_eq!(
        directives(&drop_in),
        vec![
            ("AmbientCapabilities", "CAP_BPF CAP_PERFMON"),
            ("CapabilityBoundingSet", "CAP_BPF CAP_PERFMON"),
            ("SystemCallFilter", "bpf"),
            ("LimitMEMLOCK", "16M"),
        ]
    );
    assert!(drop_in.contains("bind bucket"), "the drop-in says why");
    if tool_missing("systemd-analyze") {
        return;
    }
    let (text, score) = unit_with_drop_in("bpf", &drop_in);
    let line = |key: &str| finding(&text, key);
    // The two capabilities were added, and no other.
    assert!(
        line("CapabilityBoundingSet=~CAP_BPF").starts_with('✗'),
        "{text}"
    );
    assert!(
        line("CapabilityBoundingSet=~CAP_SYS_ADMIN").starts_with('✓'),
        "{text}"
    );
    assert!(score <= 2.5, "exposure {score}");
}
