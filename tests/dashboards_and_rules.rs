//! The dashboards and rules read the metrics contract: every metric they
//! use must exist in the exporter's golden /metrics; the dashboards follow
//! the lint conventions; the rules pass `promtool check rules` and
//! `promtool test rules`; the dashboard JSON matches its generator.
//!
//! The dashboard lint also checks each class of fault operators found in
//! the shipped dashboards (issue 14): units that do not fit the query,
//! literal label values and ports in queries, queries that ignore `$range`,
//! table columns nobody asked for, missing links between the two
//! dashboards, long-range functions evaluated on every refresh. Each lint
//! runs on the real dashboards (no finding allowed) and on the faulty
//! panels as they were shipped (each must be found), so no lint can pass
//! by finding nothing.

use std::collections::{BTreeMap, BTreeSet};
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
    let mut golden = golden_families();
    // The golden file is written without --collector.netns; these families
    // exist only with it (tests/netns.rs checks them on a live exporter).
    for netns_only in ["portrange_netns_info", "portrange_netns_unsampled"] {
        assert!(
            portrange_exporter::metrics::FAMILIES
                .iter()
                .any(|(name, _)| *name == netns_only),
            "{netns_only} is not a family of the exporter"
        );
        golden.insert(netns_only.to_string());
    }
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
    assert!(out.contains("SUCCESS: 24 rules found"), "{out}");
    let (ok, out) = promtool(
        &["test", "rules", "portrange.test.yml"],
        &root().join("tests/rules"),
    )
    .unwrap();
    assert!(ok && out.contains("SUCCESS"), "{out}");
}

/// `promtool test rules` proves only the cases written down: every alert
/// must have at least one case where it fires and one where it must not.
#[test]
fn every_alert_has_a_firing_and_a_quiet_promtool_case() {
    let text = std::fs::read_to_string(root().join("tests/rules/portrange.test.yml")).unwrap();
    let tests: Value = serde_saphyr::from_str(&text).expect("promtool test YAML");
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for t in tests["tests"].as_array().unwrap() {
        for case in t["alert_rule_test"].as_array().into_iter().flatten() {
            let name = case["alertname"].as_str().unwrap().to_string();
            match case["exp_alerts"].as_array() {
                Some(a) if !a.is_empty() => firing.insert(name),
                _ => quiet.insert(name),
            };
        }
    }
    for g in rules()["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let Some(name) = r["alert"].as_str() else {
                continue;
            };
            assert!(
                firing.contains(name),
                "{name}: no promtool case where it fires"
            );
            assert!(
                quiet.contains(name),
                "{name}: no promtool case where it stays quiet"
            );
        }
    }
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
    assert_eq!(alerts, 17);
}

// ---------------------------------------------------------------------------
// Dashboard lint: one function per class of fault. Each returns what it
// found, as sentences naming the dashboard and panel.

/// Label names each metric family carries in the golden /metrics, plus the
/// recorded series (their level prefix says which labels they keep).
fn golden_labels() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(root().join("tests/golden/metrics.prom")).unwrap();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // name="value" pairs; values may hold escaped quotes.
    let pair = regex::Regex::new(r#"([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*""#).unwrap();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = line.split(['{', ' ']).next().unwrap().to_string();
        let labels = out.entry(name).or_default();
        if let Some((_, rest)) = line.split_once('{') {
            labels.extend(pair.captures_iter(rest).map(|c| c[1].to_string()));
        }
    }
    for (name, _) in rule_exprs() {
        let keep: &[&str] = if name.starts_with("instance:") {
            &["job", "instance", "range", "protocol"]
        } else if name.starts_with("range_protocol:") {
            &["job", "range", "protocol"]
        } else {
            continue;
        };
        out.insert(name, keep.iter().map(|s| s.to_string()).collect());
    }
    out
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

/// Digit runs of 4 or more digits standing alone (ports, not durations
/// such as `5m` or numbers inside names).
fn long_numbers(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let before = start.checked_sub(1).map(|j| chars[j]);
            let after = chars.get(i).copied();
            let glued = |c: Option<char>| {
                c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '$')
            };
            if i - start >= 4 && !glued(before) && !glued(after) {
                out.push(chars[start..i].iter().collect());
            }
            continue;
        }
        i += 1;
    }
    out
}

fn panels_of(board: &Value) -> Vec<Value> {
    panels(board).into_iter().cloned().collect()
}

fn exprs_of(p: &Value) -> Vec<(String, String)> {
    p["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["refId"].as_str().unwrap_or("A").to_string(),
                t["expr"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn title(p: &Value) -> &str {
    p["title"].as_str().unwrap_or("")
}

/// What a query's values are, for the unit check.
#[derive(Debug, PartialEq, Clone, Copy)]
enum Quantity {
    /// CPU seconds per second.
    Cores,
    Seconds,
    /// A share of something: 0..1.
    Ratio,
    /// Ports, sockets, listeners, hosts, or a 0/1 state.
    Count,
    /// The rate of a counter of the exporter's (packets per second).
    PerSecond,
}

fn quantity(expr: &str) -> Quantity {
    let names = metric_names(expr);
    if expr.contains("rate(process_cpu_seconds_total") {
        Quantity::Cores
    } else if names.iter().any(|n| n.contains("_seconds")) {
        Quantity::Seconds
    } else if names.iter().any(|n| n.ends_with(":ratio"))
        || regex::Regex::new(r"/\s*portrange_ports\{")
            .unwrap()
            .is_match(expr)
    {
        Quantity::Ratio
    } else if names.iter().any(|n| n.ends_with("_total")) && expr.contains("rate(") {
        Quantity::PerSecond
    } else {
        Quantity::Count
    }
}

fn unit_fits(q: Quantity, unit: &str) -> bool {
    match q {
        Quantity::Cores => unit.contains("cores"),
        Quantity::Seconds => unit == "s",
        Quantity::Ratio => unit == "percentunit",
        Quantity::Count => unit == "none" || unit == "short",
        Quantity::PerSecond => unit == "pps",
    }
}

fn organize_of(p: &Value) -> Option<&Value> {
    p["transformations"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["id"] == "organize")
        .map(|t| &t["options"])
}

/// The unit shown for each target of a panel: the panel's unit, or for a
/// table the override of the column the target's value lands in.
fn units_by_target(p: &Value) -> Vec<(String, String, String)> {
    let default = p["fieldConfig"]["defaults"]["unit"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let targets = exprs_of(p);
    targets
        .iter()
        .map(|(r, expr)| {
            let mut unit = default.clone();
            if p["type"] == "table" {
                let value = if targets.len() == 1 {
                    "Value".to_string()
                } else {
                    format!("Value #{r}")
                };
                let column = organize_of(p)
                    .and_then(|o| o["renameByName"][&value].as_str())
                    .unwrap_or(&value)
                    .to_string();
                for o in p["fieldConfig"]["overrides"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    if o["matcher"]["id"] == "byName" && o["matcher"]["options"] == column.as_str()
                    {
                        for prop in o["properties"].as_array().unwrap() {
                            if prop["id"] == "unit" {
                                unit = prop["value"].as_str().unwrap().to_string();
                            }
                        }
                    }
                }
            }
            (expr.clone(), unit, r.clone())
        })
        .collect()
}

/// Units consistent with the query: cores for CPU rates, seconds for
/// durations, percentunit only for ratios (never on cores or seconds).
fn lint_units(name: &str, board: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in panels_of(board) {
        for (expr, unit, r) in units_by_target(&p) {
            let q = quantity(&expr);
            if !unit_fits(q, &unit) {
                out.push(format!(
                    "{name}: {:?} target {r} is {q:?} but its unit is {unit:?}: {expr}",
                    title(&p)
                ));
            }
        }
    }
    out
}

/// Label values that are the metrics contract's own vocabulary, not a
/// property of one site: these may be written literally.
fn contract_value(label: &str, value: &str) -> bool {
    match label {
        "expected" => ["true", "false", "unknown"].contains(&value),
        "protocol" => ["tcp", "udp"].contains(&value),
        "port_state" => ["listening", "closed"].contains(&value),
        "state" => value
            .split('|')
            .all(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_lowercase() || c == '_')),
        _ => false,
    }
}

/// No hard-coded ports or other literal label values (hosts, ranges, jobs,
/// processes come from variables), no port numbers in titles, and every
/// selector follows the dashboard's job, instance and range variables.
fn lint_literals(name: &str, board: &Value) -> Vec<String> {
    let labels = golden_labels();
    let mut out = Vec::new();
    for p in panels_of(board) {
        for n in long_numbers(title(&p)) {
            out.push(format!("{name}: panel title {:?} names {n}", title(&p)));
        }
        for (_, expr) in exprs_of(&p) {
            out.extend(literals_in(
                &labels,
                &format!("{name}: {:?}", title(&p)),
                &expr,
                true,
            ));
        }
    }
    for v in board["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            let place = format!("{name}: variable {}", v["name"]);
            out.extend(literals_in(&labels, &place, q, false));
        }
    }
    out
}

/// `lint_literals` for one expression; `is_panel`: it must also follow the
/// job, instance and range variables (variable queries build them).
fn literals_in(
    labels: &BTreeMap<String, BTreeSet<String>>,
    place: &str,
    expr: &str,
    is_panel: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for n in long_numbers(expr) {
        out.push(format!("{place}: literal number {n} (a port?) in {expr}"));
    }
    for (metric, matchers) in selectors(expr) {
        for (label, _, value) in &matchers {
            if !value.contains('$') && !contract_value(label, value) {
                out.push(format!(
                    "{place}: literal {label}=\"{value}\" in {expr}: use a variable"
                ));
            }
        }
        if !is_panel {
            continue;
        }
        let carried = labels.get(&metric).cloned().unwrap_or_default();
        let mut need = vec!["job"];
        if !metric.starts_with("range_protocol:") {
            need.push("instance");
        }
        if carried.contains("range") {
            need.push("range");
        }
        for l in need {
            let var = format!("${l}");
            if !matchers.iter().any(|(k, _, v)| k == l && v.contains(&var)) {
                out.push(format!("{place}: {metric} ignores {var} in {expr}"));
            }
        }
    }
    out
}

/// Functions over long ranges (predict_linear over hours, ...) belong in
/// recording rules, not in every refresh of every viewer.
fn lint_long_range(name: &str, board: &Value) -> Vec<String> {
    let range = regex::Regex::new(r"\[([^\]]+)\]").unwrap();
    let mut out = Vec::new();
    for p in panels_of(board) {
        for (_, expr) in exprs_of(&p) {
            for f in [
                "predict_linear(",
                "deriv(",
                "holt_winters(",
                "quantile_over_time(",
            ] {
                if expr.contains(f) {
                    out.push(format!(
                        "{name}: {:?} computes {f}...) live; read a recording rule: {expr}",
                        title(&p)
                    ));
                }
            }
            for c in range.captures_iter(&expr) {
                if !c[1].starts_with("$__") {
                    out.push(format!(
                        "{name}: {:?} uses a fixed range [{}]: {expr}",
                        title(&p),
                        &c[1]
                    ));
                }
            }
        }
    }
    out
}

/// Labels a table query can return: the grouping labels of an outer
/// `agg by (...)`, else every label of the metrics it selects.
fn table_labels(expr: &str) -> BTreeSet<String> {
    let labels = golden_labels();
    let agg = regex::Regex::new(r"^\s*(sum|count|max|min|avg) by \(([^)]*)\)").unwrap();
    if let Some(c) = agg.captures(expr) {
        return c[2]
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
    }
    let mut out: BTreeSet<String> = ["__name__", "job", "instance"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for m in metric_names(expr) {
        out.extend(labels.get(&m).cloned().unwrap_or_default());
    }
    out
}

/// Tables hide `__name__`, `Time` and every label they do not list as a
/// column.
fn lint_tables(name: &str, board: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in panels_of(board).iter().filter(|p| p["type"] == "table") {
        let Some(org) = organize_of(p) else {
            out.push(format!(
                "{name}: table {:?} has no organize transformation",
                title(p)
            ));
            continue;
        };
        let hidden: BTreeSet<String> = org["excludeByName"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| v.as_bool() == Some(true))
            .map(|(k, _)| k.clone())
            .collect();
        let shown: BTreeSet<String> = org["indexByName"]
            .as_object()
            .into_iter()
            .flat_map(|o| o.keys().cloned())
            .collect();
        let targets = exprs_of(p);
        let mut columns: BTreeSet<String> = ["Time".to_string()].into();
        for (r, expr) in &targets {
            columns.extend(table_labels(expr));
            columns.insert(if targets.len() == 1 {
                "Value".to_string()
            } else {
                format!("Value #{r}")
            });
        }
        for c in ["Time", "__name__"] {
            if !hidden.contains(c) {
                out.push(format!("{name}: table {:?} shows a {c} column", title(p)));
            }
        }
        for c in columns {
            if !hidden.contains(&c) && !shown.contains(&c) {
                out.push(format!(
                    "{name}: table {:?} shows a stray {c} column (neither hidden nor placed)",
                    title(p)
                ));
            }
        }
    }
    out
}

/// The two dashboards link to each other (keeping the time range), and every
/// fleet panel whose rows are hosts links each row to the host dashboard
/// with its instance and a range.
fn lint_links(host: &Value, fleet: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for (name, board, other) in [
        ("host", host, "/d/portrange-fleet"),
        ("fleet", fleet, "/d/portrange-host"),
    ] {
        let ok = board["links"].as_array().into_iter().flatten().any(|l| {
            l["url"].as_str().is_some_and(|u| u.starts_with(other)) && l["keepTime"] == true
        });
        if !ok {
            out.push(format!(
                "{name}: no dashboard link to {other} keeping the time range"
            ));
        }
    }
    let good = |url: &str, instance: &str| {
        url.starts_with("/d/portrange-host")
            && url.contains(&format!("var-instance={instance}"))
            && (url.contains("var-range=") || url.contains("${range:queryparam}"))
            && url.contains("${__url_time_range}")
            && url.contains("${job:queryparam}")
    };
    for p in panels_of(fleet) {
        if p["type"] == "table" {
            let shows_instance = organize_of(&p).is_some_and(|o| {
                o["indexByName"].get("instance").is_some() && o["excludeByName"]["instance"] != true
            });
            if !shows_instance {
                continue;
            }
            let linked = p["fieldConfig"]["overrides"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|o| o["matcher"]["options"] == "instance")
                .flat_map(|o| o["properties"].as_array().unwrap().iter())
                .filter(|prop| prop["id"] == "links")
                .flat_map(|prop| prop["value"].as_array().unwrap().iter())
                .any(|l| good(l["url"].as_str().unwrap_or(""), "${__data.fields.instance}"));
            if !linked {
                out.push(format!(
                    "fleet: table {:?} lists hosts without a link to the host dashboard",
                    title(&p)
                ));
            }
        } else if exprs_of(&p)
            .iter()
            .any(|(_, e)| e.contains("by (instance)"))
        {
            let linked = p["fieldConfig"]["defaults"]["links"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|l| {
                    good(
                        l["url"].as_str().unwrap_or(""),
                        "${__field.labels.instance}",
                    )
                });
            if !linked {
                out.push(format!(
                    "fleet: {:?} draws hosts without a link to the host dashboard",
                    title(&p)
                ));
            }
        }
    }
    out
}

fn board(name: &str) -> Value {
    dashboards().into_iter().find(|(n, _)| n == name).unwrap().1
}

fn panel_titled<'a>(board: &'a Value, prefix: &str) -> &'a Value {
    panels(board)
        .into_iter()
        .find(|p| title(p).starts_with(prefix))
        .unwrap_or_else(|| panic!("no panel {prefix:?}"))
}

/// A board holding just these panels, for the lint's negative cases.
fn board_with(panels: Value) -> Value {
    serde_json::json!({"panels": panels, "templating": {"list": []}, "links": []})
}

/// The faulty panels as they were shipped before issue 14.
fn shipped_faults() -> Value {
    let ds = serde_json::json!({"type": "prometheus", "uid": "${datasource}"});
    serde_json::json!([
        {"type": "stat", "title": "Unexpected on port 3224", "datasource": ds,
         "fieldConfig": {"defaults": {"unit": "none"}, "overrides": []},
         "targets": [{"refId": "A", "expr": "count(portrange_listener_info{job=\"$job\",instance=\"$instance\",port=\"3224\",expected=\"false\"}) or vector(0)"}]},
        {"type": "timeseries", "title": "Exporter CPU", "datasource": ds,
         "fieldConfig": {"defaults": {"unit": "percentunit"}, "overrides": []},
         "targets": [{"refId": "A", "expr": "rate(process_cpu_seconds_total{job=\"$job\",instance=\"$instance\"}[$__rate_interval])"}]},
        {"type": "table", "title": "Hosts by free capacity", "datasource": ds,
         "fieldConfig": {"defaults": {"unit": "none"}, "overrides": [
             {"matcher": {"id": "byName", "options": "Free ports"}, "properties": [{"id": "unit", "value": "none"}]},
             {"matcher": {"id": "byName", "options": "Utilisation"}, "properties": [{"id": "unit", "value": "percentunit"}]}]},
         "targets": [
             {"refId": "A", "expr": "portrange_ports_free{job=\"$job\",instance=~\"$instance\",range=~\"$range\"}"},
             {"refId": "B", "expr": "portrange_ports_in_use{job=\"$job\",instance=~\"$instance\",range=~\"$range\"} / portrange_ports{job=\"$job\",instance=~\"$instance\",range=~\"$range\"}"}],
         "transformations": [{"id": "merge", "options": {}}, {"id": "organize", "options": {
             "excludeByName": {"Time": true, "job": true},
             "indexByName": {"instance": 0, "range": 1, "protocol": 2, "Value #A": 3, "Value #B": 4},
             "renameByName": {"Value #A": "Free ports", "Value #B": "Utilisation"}}}]},
        {"type": "table", "title": "Time to exhaustion", "datasource": ds,
         "fieldConfig": {"defaults": {"unit": "s"}, "overrides": []},
         "targets": [{"refId": "A", "expr": "portrange_ports_free{job=\"$job\",instance=~\"$instance\",range=~\"$range\"} / clamp_min(predict_linear(portrange_ports_free{job=\"$job\",instance=~\"$instance\",range=~\"$range\"}[6h], 0) - predict_linear(portrange_ports_free{job=\"$job\",instance=~\"$instance\",range=~\"$range\"}[6h], 1), 0)"}],
         "transformations": [{"id": "organize", "options": {"excludeByName": {"Time": true, "job": true},
             "renameByName": {"Value": "Time to exhaustion"}}}]}
    ])
}

#[test]
fn dashboard_lint_finds_nothing_in_the_shipped_dashboards() {
    let mut found = Vec::new();
    for (name, board) in dashboards() {
        found.extend(lint_units(&name, &board));
        found.extend(lint_literals(&name, &board));
        found.extend(lint_long_range(&name, &board));
        found.extend(lint_tables(&name, &board));
    }
    found.extend(lint_links(
        &board("portrange-host.json"),
        &board("portrange-fleet.json"),
    ));
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn dashboard_lint_finds_each_fault_operators_reported() {
    let old = board_with(shipped_faults());
    let joined = |v: Vec<String>| v.join("\n");
    // The CPU panel said cores but used percentunit.
    let units = joined(lint_units("old", &old));
    assert!(
        units.contains("\"Exporter CPU\" target A is Cores but its unit is \"percentunit\""),
        "{units}"
    );
    // The port-3224 panel: a literal port, a port in the title, no $range.
    let lit = joined(lint_literals("old", &old));
    for want in [
        "literal port=\"3224\"",
        "panel title \"Unexpected on port 3224\" names 3224",
        "portrange_listener_info ignores $range",
    ] {
        assert!(lit.contains(want), "{want} not found in:\n{lit}");
    }
    // Time to exhaustion ran a 6-hour predict_linear on every refresh.
    let long = joined(lint_long_range("old", &old));
    assert!(
        long.contains("computes predict_linear(") && long.contains("fixed range [6h]"),
        "{long}"
    );
    // The fleet table showed __name__ (and Time to exhaustion placed no column).
    let tables = joined(lint_tables("old", &old));
    assert!(
        tables.contains("table \"Hosts by free capacity\" shows a __name__ column")
            && tables.contains("stray instance column"),
        "{tables}"
    );
    // No links at all.
    let links = joined(lint_links(&board_with(serde_json::json!([])), &old));
    for want in [
        "host: no dashboard link to /d/portrange-fleet",
        "fleet: no dashboard link to /d/portrange-host",
        "table \"Hosts by free capacity\" lists hosts without a link",
    ] {
        assert!(links.contains(want), "{want} not found in:\n{links}");
    }
    // The helpers themselves.
    assert_eq!(
        long_numbers("port=\"3224\" [5m] x3600 1e3 4 * 3600"),
        ["3224", "3600"]
    );
    assert_eq!(
        quantity("portrange_scrape_duration_seconds{}"),
        Quantity::Seconds
    );
    assert_eq!(
        quantity("instance:portrange_exhaustion_seconds:predict_linear6h{}"),
        Quantity::Seconds
    );
    assert_eq!(
        quantity("portrange_ports_free{a=\"b\"} / portrange_ports{a=\"b\"}"),
        Quantity::Ratio
    );
    assert!(contract_value("expected", "false") && !contract_value("port", "3224"));
}

/// The ratio in `portrange_ports_free < R * portrange_ports` of an alert.
fn alert_ratio(name: &str) -> f64 {
    let expr = rule_exprs().into_iter().find(|(n, _)| n == name).unwrap().1;
    let re = regex::Regex::new(r"portrange_ports_free < ([0-9.]+) \* portrange_ports").unwrap();
    re.captures(&expr).unwrap_or_else(|| panic!("{expr}"))[1]
        .parse()
        .unwrap()
}

fn steps(p: &Value) -> Vec<(String, Option<f64>)> {
    p["fieldConfig"]["defaults"]["thresholds"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["color"].as_str().unwrap().to_string(),
                s["value"].as_f64(),
            )
        })
        .collect()
}

#[test]
fn free_ports_colours_follow_the_alerts() {
    let warn = alert_ratio("PortRangeNearlyExhausted");
    assert_eq!(warn, 0.10, "check --warn-free defaults to 10%");
    let host = board("portrange-host.json");
    // Free ports: a share of capacity, red at 0, orange below 10%, green from 10%.
    let free = panel_titled(&host, "Free ports");
    assert_eq!(free["fieldConfig"]["defaults"]["unit"], "percentunit");
    assert_eq!(
        quantity(free["targets"][0]["expr"].as_str().unwrap()),
        Quantity::Ratio
    );
    let s = steps(free);
    assert_eq!(s[0], ("red".to_string(), None), "{s:?}");
    assert!(
        s[1].0 == "orange" && s[1].1.unwrap() > 0.0 && s[1].1.unwrap() < 1e-6,
        "{s:?}"
    );
    assert_eq!(s[2], ("green".to_string(), Some(warn)), "{s:?}");
    // Utilisation turns red where free turns orange.
    for p in [
        panel_titled(&host, "Utilisation"),
        panel_titled(&board("portrange-fleet.json"), "Utilisation heatmap"),
    ] {
        let red = steps(p).into_iter().find(|(c, _)| c == "red").unwrap().1;
        assert_eq!(red, Some(1.0 - warn), "{}", title(p));
    }
    // Time to exhaustion turns red at the prediction alert's horizon.
    let expr = rule_exprs()
        .into_iter()
        .find(|(n, _)| n == "PortRangeExhaustionPredicted")
        .unwrap()
        .1;
    let horizon = regex::Regex::new(r"< (\d+) \* 3600")
        .unwrap()
        .captures(&expr)
        .unwrap()[1]
        .parse::<f64>()
        .unwrap()
        * 3600.0;
    let fleet = board("portrange-fleet.json");
    let tte = panel_titled(&fleet, "Time to exhaustion");
    assert_eq!(
        tte["targets"][0]["expr"]
            .as_str()
            .unwrap()
            .split('{')
            .next()
            .unwrap(),
        "instance:portrange_exhaustion_seconds:predict_linear6h",
        "time to exhaustion reads the recording rule"
    );
    let s = steps(tte);
    assert_eq!(s[0], ("red".to_string(), None));
    assert_eq!(s[1].1, Some(horizon), "{s:?}");
}

#[test]
fn per_port_timeline_is_bounded_and_neutral() {
    let host = board("portrange-host.json");
    let p = panel_titled(&host, "Per-port occupancy");
    let expr = p["targets"][0]["expr"].as_str().unwrap();
    let limit = regex::Regex::new(r"portrange_ports\{[^}]*\} <= (\d+)\)")
        .unwrap()
        .captures(expr)
        .unwrap_or_else(|| panic!("per-port rows are not limited to small ranges: {expr}"))[1]
        .parse::<u32>()
        .unwrap();
    assert!(
        (101..1001).contains(&limit),
        "Framehawk's 101 ports fit, mosh's 1,001 do not: {limit}"
    );
    let in_use = &p["fieldConfig"]["defaults"]["mappings"][0]["options"]["1"]["color"];
    assert!(
        !["red", "orange", "dark-red", "semi-dark-red"].contains(&in_use.as_str().unwrap()),
        "normal use is coloured {in_use}"
    );
}

#[test]
fn sampling_says_down_when_the_target_is_down() {
    let host = board("portrange-host.json");
    let p = panel_titled(&host, "Sampling");
    let expr = p["targets"][0]["expr"].as_str().unwrap();
    assert!(
        expr.contains("portrange_up{") && expr.contains("or (up{") && expr.contains("- 1)"),
        "{expr}"
    );
    let map = &p["fieldConfig"]["defaults"]["mappings"][0]["options"];
    assert_eq!(
        (&map["-1"]["text"], &map["0"]["text"], &map["1"]["text"]),
        (&"DOWN".into(), &"FAILED".into(), &"OK".into())
    );
    // A host whose exporter is down can be picked at all.
    let vars = host["templating"]["list"].as_array().unwrap();
    let instance = vars.iter().find(|v| v["name"] == "instance").unwrap();
    assert!(
        instance["query"]["query"]
            .as_str()
            .unwrap()
            .starts_with("label_values(up{")
    );
}

#[test]
fn provisioned_datasource_takes_over_nothing() {
    let text = std::fs::read_to_string(
        root().join("deploy/grafana/provisioning/datasources/portrange.yml"),
    )
    .unwrap();
    let v: Value = serde_saphyr::from_str(&text).unwrap();
    let list = v["datasources"].as_array().unwrap();
    assert!(!list.is_empty());
    for ds in list {
        let name = ds["name"].as_str().unwrap();
        let uid = ds["uid"].as_str().unwrap();
        assert!(
            name != "Prometheus" && name.contains("portrange"),
            "datasource name {name:?} would replace a usual one"
        );
        assert!(
            uid != "prometheus" && uid.contains("portrange"),
            "uid {uid:?}"
        );
        assert_ne!(ds["isDefault"], true, "{name} must not become the default");
    }
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

/// Runs tests/grafana/check.mjs on `files`; `None` (after saying why) when
/// node or the pinned @grafana/schema is not installed outside CI.
fn grafana_schema_check(files: &[PathBuf]) -> Option<(bool, String)> {
    let dir = root().join("tests/grafana");
    let ready = dir.join("node_modules/@grafana/schema").is_dir()
        && dir.join("node_modules/typescript").is_dir();
    let node = Command::new("node")
        .arg("check.mjs")
        .args(files)
        .current_dir(&dir)
        .output();
    match node {
        Ok(out) if ready => Some((
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!("no node or tests/grafana/node_modules in CI: .ci/run runs npm ci there");
            }
            eprintln!("SKIPPED grafana schema check: needs node and `npm ci` in tests/grafana");
            None
        }
    }
}

/// The dashboards against Grafana's own published types (@grafana/schema,
/// pinned), not only our lint: unknown keys, wrong types, values outside
/// Grafana's enums, each panel's options against its panel type. And the
/// check can fail: each class of fault, planted in a copy, is found.
#[test]
fn dashboards_match_grafanas_published_schema() {
    let files: Vec<PathBuf> = ["portrange-host.json", "portrange-fleet.json"]
        .iter()
        .map(|n| root().join("dashboards").join(n))
        .collect();
    let Some((ok, out)) = grafana_schema_check(&files) else {
        return;
    };
    assert!(ok, "{out}");
    assert!(out.contains("2 dashboards match @grafana/schema"), "{out}");
    let (_, host) = &dashboards()[0];
    let panel = |b: &Value| {
        b["panels"]
            .as_array()
            .unwrap()
            .iter()
            .position(|p| p["type"] == "timeseries")
            .unwrap()
    };
    type Plant = fn(&mut Value, usize);
    let faults: [(&str, Plant, &str); 5] = [
        (
            "unknown top-level key",
            |b, _| b["refresh_every"] = "30s".into(),
            "refresh_every",
        ),
        (
            "gridPos as text",
            |b, i| b["panels"][i]["gridPos"]["w"] = "12".into(),
            "Type 'string' is not assignable to type 'number'",
        ),
        (
            "colour mode outside Grafana's enum",
            |b, i| {
                b["panels"][i]["fieldConfig"]["defaults"]["color"] =
                    serde_json::json!({"mode": "pallete-classic"})
            },
            "pallete-classic",
        ),
        (
            "misspelt timeseries option",
            |b, i| b["panels"][i]["options"]["legend"]["displayMod"] = "table".into(),
            "displayMod",
        ),
        (
            "a panel type the check has no types for",
            |b, i| b["panels"][i]["type"] = "piechart".into(),
            "piechart",
        ),
    ];
    let dir = std::env::temp_dir().join(format!("portrange-grafana-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (what, plant, needle) in faults {
        let mut b = host.clone();
        let i = panel(&b);
        plant(&mut b, i);
        let f = dir.join("planted.json");
        std::fs::write(&f, serde_json::to_string_pretty(&b).unwrap()).unwrap();
        let (ok, out) = grafana_schema_check(&[f]).unwrap();
        assert!(!ok, "{what}: not found\n{out}");
        assert!(out.contains(needle), "{what}: {out}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
