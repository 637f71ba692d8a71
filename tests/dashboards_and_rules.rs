//! The dashboards and rules read the metrics contract: every metric they
//! use must exist in the exporter's golden /metrics; the dashboards follow
//! the lint conventions; the rules pass `promtool check rules` and
//! `promtool test rules`; the dashboard JSON matches its generator.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn dashboards() -> Vec<(String, Value)> {
    ["portrange-host.json", "portrange-fleet.json"]
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(root().join("dashboards").join(name)).unwrap();
            (
                name.to_string(),
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}")),
            )
        })
        .collect()
}

fn rules() -> Value {
    let text = std::fs::read_to_string(root().join("deploy/prometheus/rules/portrange.rules.yml"))
        .unwrap();
    serde_saphyr::from_str(&text).expect("rules YAML")
}

/// Every panel, rows' nested panels included.
fn panels(board: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in board["panels"].as_array().unwrap() {
        out.push(p);
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested.iter());
        }
    }
    out
}

/// (where, expression) of every PromQL expression in a dashboard.
fn dashboard_exprs(name: &str, board: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(board) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                format!("{name} panel {:?}", p["title"]),
                t["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    for v in board["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            out.push((format!("{name} variable {}", v["name"]), q.to_string()));
        }
    }
    out
}

/// (alert or record name, expression) of every rule.
fn rule_exprs() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for g in rules()["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let name = r["alert"]
                .as_str()
                .or(r["record"].as_str())
                .unwrap()
                .to_string();
            out.push((name, r["expr"].as_str().unwrap().to_string()));
        }
    }
    out
}

/// Metric names a PromQL expression selects: identifiers outside label
/// matchers, strings, ranges and grouping clauses that are not functions,
/// keywords or numbers.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Blank out strings, {...}, [...] and by/without/on/ignoring (...) lists.
    let mut cleaned = String::new();
    let mut depth_brace = 0;
    let mut depth_bracket = 0;
    let mut in_string = false;
    for c in expr.chars() {
        match c {
            '"' => {
                in_string = !in_string;
                cleaned.push(' ');
            }
            _ if in_string => cleaned.push(' '),
            '{' => {
                depth_brace += 1;
                cleaned.push(' ');
            }
            '}' => {
                depth_brace -= 1;
                cleaned.push(' ');
            }
            '[' => {
                depth_bracket += 1;
                cleaned.push(' ');
            }
            ']' => {
                depth_bracket -= 1;
                cleaned.push(' ');
            }
            _ if depth_brace > 0 || depth_bracket > 0 => cleaned.push(' '),
            c => cleaned.push(c),
        }
    }
    let grouping = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Aggregations may be followed by `by (...)` instead of `(`.
    let keywords = [
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    let chars: Vec<char> = cleaned.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_parens_after_grouping = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j] == ' ' {
                j += 1;
            }
            let call = j < chars.len() && chars[j] == '(';
            if grouping.contains(&word.as_str()) {
                skip_parens_after_grouping = true;
                continue;
            }
            if call || keywords.contains(&word.as_str()) {
                continue;
            }
            // "1e-9" style numbers start with a digit and never get here.
            names.insert(word);
            continue;
        }
        if c == '(' && skip_parens_after_grouping {
            // Skip the label list.
            while i < chars.len() && chars[i] != ')' {
                i += 1;
            }
            skip_parens_after_grouping = false;
        }
        i += 1;
    }
    names
}

fn golden_families() -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("tests/golden/metrics.prom")).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect()
}

#[test]
fn metric_name_extraction() {
    let n = metric_names(
        r#"sum by (range, protocol) (rate(process_cpu_seconds_total{job="$job"}[$__rate_interval])) / on(instance) group_left(x) up{a="b"} > 0 or vector(0)"#,
    );
    assert_eq!(
        n,
        ["process_cpu_seconds_total", "up"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    let n =
        metric_names("portrange_ports_free < 0.10 * portrange_ports and portrange_ports_free > 0");
    assert_eq!(n.len(), 2);
    let n = metric_names("label_values(portrange_up{job=\"$job\"}, instance)");
    assert_eq!(
        n,
        ["instance", "portrange_up"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
}

#[test]
fn every_metric_used_by_dashboards_and_rules_exists() {
    let golden = golden_families();
    assert!(
        golden.contains("portrange_listener_info") && golden.contains("process_cpu_seconds_total")
    );
    let recorded: BTreeSet<String> = rules()["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .filter_map(|r| r["record"].as_str().map(str::to_string))
        .collect();
    let mut exprs = rule_exprs();
    for (name, board) in dashboards() {
        exprs.extend(dashboard_exprs(&name, &board));
    }
    let mut checked = 0;
    for (place, expr) in &exprs {
        for metric in metric_names(expr) {
            // label_values(metric, label): the second argument is a label.
            if expr.starts_with("label_values(")
                && expr.trim_end_matches(')').ends_with(&format!(", {metric}"))
            {
                continue;
            }
            assert!(
                golden.contains(&metric) || recorded.contains(&metric) || metric == "up",
                "{place} uses {metric}, which the exporter does not emit (see tests/golden/metrics.prom): {expr}"
            );
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} metric references found");
}

#[test]
fn dashboards_follow_the_conventions() {
    let ds = serde_json::json!({"type": "prometheus", "uid": "${datasource}"});
    for (name, board) in dashboards() {
        let uid = board["uid"].as_str().unwrap_or("");
        assert_eq!(uid, name.trim_end_matches(".json"), "{name}: fixed uid");
        assert!(
            board["schemaVersion"].as_u64().unwrap() >= 39,
            "{name}: schemaVersion"
        );
        assert!(!board["title"].as_str().unwrap().is_empty());
        let vars = board["templating"]["list"].as_array().unwrap();
        let var = |n: &str| vars.iter().find(|v| v["name"] == n);
        let dsv = var("datasource").unwrap_or_else(|| panic!("{name}: no datasource variable"));
        assert_eq!(
            (dsv["type"].as_str(), dsv["query"].as_str()),
            (Some("datasource"), Some("prometheus"))
        );
        assert!(
            var("job").is_some() && var("instance").is_some(),
            "{name}: job and instance variables"
        );
        for v in vars.iter().filter(|v| v["type"] == "query") {
            assert_eq!(
                v["datasource"], ds,
                "{name}: variable {} uses the datasource variable",
                v["name"]
            );
        }
        let mut ids = BTreeSet::new();
        for p in panels(&board) {
            let title = p["title"].as_str().unwrap_or("");
            assert!(!title.is_empty(), "{name}: a panel without title: {p}");
            assert!(
                ids.insert(p["id"].as_u64().unwrap()),
                "{name}: duplicate panel id in {title}"
            );
            if p["type"] == "row" {
                continue;
            }
            assert!(
                !p["description"].as_str().unwrap_or("").is_empty(),
                "{name}: {title} has no description"
            );
            assert!(
                !p["fieldConfig"]["defaults"]["unit"]
                    .as_str()
                    .unwrap_or("")
                    .is_empty(),
                "{name}: {title} has no unit"
            );
            assert_eq!(
                p["datasource"], ds,
                "{name}: {title} uses the datasource variable"
            );
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{name}: {title} has no query");
            for t in targets {
                assert_eq!(
                    t["datasource"], ds,
                    "{name}: {title}: a target uses the datasource variable"
                );
                let expr = t["expr"].as_str().unwrap();
                for f in ["rate(", "irate(", "increase("] {
                    if expr.contains(f) {
                        assert!(
                            expr.contains("[$__rate_interval]"),
                            "{name}: {title}: {f} without $__rate_interval: {expr}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn dashboards_match_their_generator() {
    let st = Command::new("python3")
        .arg(root().join("dashboards/generate.py"))
        .arg("--check")
        .status()
        .expect("python3");
    assert!(
        st.success(),
        "dashboards/*.json differ from dashboards/generate.py"
    );
}

fn promtool(args: &[&str], dir: &Path) -> Option<(bool, String)> {
    match Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
    {
        Ok(out) => Some((
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )),
        Err(_) if std::env::var_os("CI").is_some() => panic!("promtool is missing in CI"),
        Err(_) => {
            eprintln!(
                "SKIPPED promtool {args:?}: promtool not installed (apt-get install prometheus)"
            );
            None
        }
    }
}

#[test]
fn rules_pass_promtool_check_and_unit_tests() {
    let Some((ok, out)) = promtool(
        &[
            "check",
            "rules",
            "deploy/prometheus/rules/portrange.rules.yml",
        ],
        &root(),
    ) else {
        return;
    };
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS: 17 rules found"), "{out}");
    let (ok, out) = promtool(
        &["test", "rules", "portrange.test.yml"],
        &root().join("tests/rules"),
    )
    .unwrap();
    assert!(ok && out.contains("SUCCESS"), "{out}");
}

#[test]
fn alerts_follow_the_conventions() {
    let runbook = std::fs::read_to_string(root().join("docs/runbook.md")).unwrap();
    let mut alerts = 0;
    for g in rules()["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let Some(name) = r["alert"].as_str() else {
                continue;
            };
            alerts += 1;
            assert!(
                name.chars().next().unwrap().is_ascii_uppercase() && !name.contains('_'),
                "{name}: CamelCase"
            );
            let sev = r["labels"]["severity"].as_str().unwrap();
            assert!(
                ["critical", "warning", "info"].contains(&sev),
                "{name}: severity {sev}"
            );
            assert!(r["for"].as_str().is_some(), "{name}: for");
            let summary = r["annotations"]["summary"].as_str().unwrap();
            assert!(
                !summary.contains("{{") && summary.ends_with('.'),
                "{name}: plain-sentence summary"
            );
            assert!(
                r["annotations"]["description"]
                    .as_str()
                    .unwrap()
                    .contains("{{"),
                "{name}: templated description"
            );
            let url = r["annotations"]["runbook_url"].as_str().unwrap();
            let anchor = url
                .strip_prefix("docs/runbook.md#")
                .unwrap_or_else(|| panic!("{name}: runbook_url {url}"));
            assert_eq!(anchor, name.to_lowercase());
            assert!(
                runbook.contains(&format!("\n## {name}\n")),
                "{name}: no runbook section"
            );
        }
    }
    assert_eq!(alerts, 10);
}

/// (metric, [(label, op, value)]) for every `metric{...}` selector.
type Selector = (String, Vec<(String, String, String)>);
fn selectors(expr: &str) -> Vec<Selector> {
    let sel = regex::Regex::new(r#"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}"#).unwrap();
    let matcher =
        regex::Regex::new(r#"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)""#)
            .unwrap();
    sel.captures_iter(expr)
        .map(|c| {
            let m = matcher
                .captures_iter(&c[2])
                .map(|m| (m[1].to_string(), m[2].to_string(), m[3].to_string()))
                .collect();
            (c[1].to_string(), m)
        })
        .collect()
}

/// The job matcher the rules use for `up`, from the file's header.
fn rules_job_matcher() -> String {
    let text = std::fs::read_to_string(root().join("deploy/prometheus/rules/portrange.rules.yml"))
        .unwrap();
    let re = regex::Regex::new(r#"(?m)^#\s+(job=~"[^"]+")\s*$"#).unwrap();
    re.captures(&text).expect("the job matcher in the header")[1].to_string()
}

#[test]
fn up_rules_find_the_shipped_jobs_and_only_them() {
    let matcher = rules_job_matcher();
    // Every rule on `up` uses exactly the documented matcher.
    let mut on_up = 0;
    for (name, expr) in rule_exprs() {
        for (metric, m) in selectors(&expr) {
            if metric == "up" {
                on_up += 1;
                let got: Vec<String> = m
                    .iter()
                    .map(|(l, op, v)| format!("{l}{op}\"{v}\""))
                    .collect();
                assert_eq!(got, std::slice::from_ref(&matcher), "{name}: {expr}");
            }
        }
        assert!(
            !expr.contains(".*portrange"),
            "{name} matches any job containing portrange: {expr}"
        );
    }
    assert_eq!(
        on_up, 2,
        "PortRangeExporterDown and PortRangeExporterMissing"
    );
    let value = matcher
        .strip_prefix("job=~\"")
        .unwrap()
        .trim_end_matches('"');
    let re = regex::Regex::new(&format!("^(?:{value})$")).unwrap();
    // The jobs the shipped scrape configs set.
    let mut jobs = Vec::new();
    for entry in std::fs::read_dir(root().join("deploy/prometheus")).unwrap() {
        let path = entry.unwrap().path();
        let fname = path.file_name().unwrap().to_str().unwrap().to_string();
        if !fname.starts_with("scrape-") {
            continue;
        }
        let v: Value = serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for sc in v["scrape_configs"].as_array().unwrap() {
            jobs.push((fname.clone(), sc["job_name"].as_str().unwrap().to_string()));
        }
    }
    assert!(jobs.len() >= 3, "{jobs:?}");
    // The Kubernetes ServiceMonitor: job is the Service's jobLabel label.
    let sm: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(root().join("deploy/kubernetes/servicemonitor.yaml")).unwrap(),
    )
    .unwrap();
    let svc: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(root().join("deploy/kubernetes/service.yaml")).unwrap(),
    )
    .unwrap();
    let job_label = sm["spec"]["jobLabel"].as_str().unwrap();
    jobs.push((
        "servicemonitor.yaml".to_string(),
        svc["metadata"]["labels"][job_label]
            .as_str()
            .unwrap()
            .to_string(),
    ));
    for (file, job) in &jobs {
        assert!(re.is_match(job), "{file}: job {job} escapes {matcher}");
    }
    for other in ["node", "portrange-blackbox", "my-portrange", "portrange2"] {
        assert!(!re.is_match(other), "{matcher} also takes job {other}");
    }
}

#[test]
fn alertmanager_inhibitions_name_real_alerts_and_labels() {
    let path = root().join("deploy/prometheus/alertmanager-inhibit.yml");
    let v: Value = serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let alerts: BTreeSet<String> = rules()["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect();
    let name = regex::Regex::new(r#"^alertname(=~|=)"([^"]+)"$"#).unwrap();
    let rules = v["inhibit_rules"].as_array().unwrap();
    assert!(!rules.is_empty());
    let mut inhibited = BTreeSet::new();
    for r in rules {
        for side in ["source_matchers", "target_matchers"] {
            for m in r[side].as_array().unwrap() {
                let c = name.captures(m.as_str().unwrap()).unwrap();
                for n in c[2].split('|') {
                    assert!(alerts.contains(n), "{side}: no alert {n}");
                    if side == "target_matchers" {
                        inhibited.insert(n.to_string());
                    }
                }
            }
        }
        let equal: Vec<&str> = r["equal"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        assert_eq!(equal, ["job", "instance", "range", "protocol"]);
    }
    assert!(inhibited.contains("PortRangeNearlyExhausted"));
    // amtool is not needed by CI; where installed, it checks the syntax too.
    let am = std::env::temp_dir().join(format!("portrange-am-{}.yml", std::process::id()));
    std::fs::write(
        &am,
        format!(
            "route:\n  receiver: x\nreceivers:\n  - name: x\n{}",
            std::fs::read_to_string(&path).unwrap()
        ),
    )
    .unwrap();
    match Command::new("amtool").arg("check-config").arg(&am).output() {
        Ok(out) => assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => eprintln!(
            "SKIPPED amtool check-config: amtool not installed (apt-get install prometheus-alertmanager)"
        ),
    }
    let _ = std::fs::remove_file(am);
}
