//! The README and docs/ against the code they describe: the README opens
//! with an operator's quick start and stays short; every page in docs/ is
//! in the index and every relative link resolves; the alert table, the
//! flags table, the collectors and the reserved paths match the rules
//! file, `--help`, the metrics and the binary; and every "never" or
//! "always" in docs/ names the test that tries to break it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const EXPORTER: &str = env!("CARGO_BIN_EXE_portrange_exporter");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every Markdown file under docs/, relative to the repository root.
fn docs_pages() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "md") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join("docs"), &mut out);
    let mut pages: Vec<String> = out
        .iter()
        .map(|p| {
            p.strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    pages.sort();
    pages
}

/// The targets of Markdown links `[text](target)` in `text`.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].to_string());
        }
    }
    out
}

#[test]
fn the_readme_opens_with_an_operators_quick_start_and_stays_short() {
    let readme = read("README.md");
    let lines: Vec<&str> = readme.lines().collect();
    assert!(lines.len() < 450, "README.md has {} lines", lines.len());
    let first: String = lines[..100.min(lines.len())].join("\n");
    for needle in [
        // how to get it
        ".deb",
        ".rpm",
        ".tar.gz",
        "cargo install --path .",
        "deploy/release",
        "target/release-artifacts/",
        // run it, open the page, run check
        "http://HOST:10224/",
        "portrange_exporter check",
        // Prometheus
        "scrape_configs:",
        "rule_files:",
        "portrange.rules.yml",
        // Grafana: the UI and provisioning
        "Import",
        "portrange-host.json",
        "grafana/provisioning/dashboards/portrange.yml",
        "grafana/provisioning/datasources/portrange.yml",
        // what to read next
        "docs/README.md",
    ] {
        assert!(
            first.contains(needle),
            "the README's first 100 lines lack {needle:?}"
        );
    }
    // The two commands stay.
    assert!(readme.contains("\n```sh\ncargo run --release\n```\n"));
    assert!(readme.contains("\n```sh\nsudo .ci/run\n```\n"));
    // No systemctl handed an environment it does not pass on.
    for page in docs_pages().iter().map(String::as_str).chain(["README.md"]) {
        let text = read(page);
        assert!(
            !text.lines().any(|l| l.contains("PROMETHEUS_URL=")
                && l.contains("systemctl restart")
                && !l.contains("sets")),
            "{page}: systemctl does not pass its environment to a unit"
        );
    }
}

#[test]
fn every_docs_page_is_in_the_index_and_every_link_resolves() {
    let index = read("docs/README.md");
    let indexed: BTreeSet<String> = links(&index)
        .into_iter()
        .map(|l| l.split('#').next().unwrap().to_string())
        .collect();
    for page in docs_pages() {
        let rel = page.strip_prefix("docs/").unwrap();
        if rel == "README.md" {
            continue;
        }
        assert!(indexed.contains(rel), "docs/README.md does not list {rel}");
    }
    for page in docs_pages().into_iter().chain(["README.md".to_string()]) {
        let text = read(&page);
        let dir = root().join(&page).parent().unwrap().to_path_buf();
        for target in links(&text) {
            if target.starts_with("http://") || target.starts_with("https://") {
                continue;
            }
            let path = target.split('#').next().unwrap();
            if path.is_empty() {
                continue; // an anchor in the same page
            }
            assert!(
                dir.join(path).exists(),
                "{page}: the link {target:?} leads nowhere"
            );
        }
    }
}

/// The alert table lists exactly the alerts of the rules file, and no
/// page counts them in prose (the count went stale once).
#[test]
fn every_alert_is_in_the_docs_table() {
    let rules = read("deploy/prometheus/rules/portrange.rules.yml");
    let alerts: BTreeSet<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(|a| a.trim().to_string())
        .collect();
    assert!(alerts.len() > 10, "{alerts:?}");
    let page = read("docs/dashboards-and-alerts.md");
    let table: BTreeSet<String> = page
        .lines()
        .filter_map(|l| l.strip_prefix("| "))
        .filter_map(|l| l.split(" |").next())
        .filter(|name| {
            name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                && name.chars().all(|c| c.is_ascii_alphanumeric())
        })
        .map(str::to_string)
        .collect();
    assert_eq!(table, alerts, "the alert table against the rules file");
    let counts = [
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
    ];
    for p in docs_pages().iter().map(String::as_str).chain(["README.md"]) {
        let text = read(p).to_lowercase();
        let words: Vec<&str> = text.split_whitespace().collect();
        for w in words.windows(2) {
            let n = w[0].trim_start_matches(|c: char| !c.is_alphanumeric());
            if w[1].starts_with("alerts") && (counts.contains(&n) || n.parse::<u32>().is_ok()) {
                panic!(
                    "{p}: \"{} {}\": name the alerts or point at the table",
                    w[0], w[1]
                );
            }
        }
    }
}

/// Every flag of `--help` has its row (or mention) in docs/flags.md.
#[test]
fn every_flag_is_in_the_flags_table() {
    let out = Command::new(EXPORTER).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let flags: BTreeSet<String> = help
        .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == '=' || c == '<')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches(']').to_string())
        .filter(|w| w != "--help" && w != "--version")
        .collect();
    assert!(flags.contains("--collector.traffic"), "{flags:?}");
    let page = read("docs/flags.md");
    for f in &flags {
        assert!(
            page.contains(&format!("`{f}`")),
            "docs/flags.md lacks `{f}`"
        );
    }
}

/// The collectors named for `portrange_scrape_collector_success` are every
/// collector that can run.
#[test]
fn every_collector_is_named_in_the_metrics_page() {
    let mut collectors = BTreeSet::new();
    for line in read("src/collect.rs").lines() {
        // `pub const RANGES: &str = "ranges";` and its kind.
        if let Some((_, v)) = line
            .strip_prefix("pub const ")
            .and_then(|rest| rest.split_once(": &str = \""))
        {
            collectors.insert(v.trim_end_matches("\";").to_string());
        }
    }
    for line in read("tests/golden/metrics.prom").lines() {
        if let Some(rest) = line.strip_prefix("portrange_scrape_collector_success{collector=\"") {
            collectors.insert(rest.split('"').next().unwrap().to_string());
        }
    }
    for c in ["ranges", "netns", "ephemeral", "traffic"] {
        assert!(collectors.contains(c), "{collectors:?}");
    }
    let page = read("docs/metrics.md");
    let row = page
        .lines()
        .find(|l| l.starts_with("| `portrange_scrape_collector_success` |"))
        .expect("the portrange_scrape_collector_success row");
    for c in &collectors {
        assert!(row.contains(&format!("`{c}`")), "{c} missing from: {row}");
    }
}

/// The paths `--web.telemetry-path` may not take, as docs/flags.md lists
/// them, are exactly those the binary refuses.
#[test]
fn the_reserved_paths_are_those_the_binary_refuses() {
    let page = read("docs/flags.md");
    let row = page
        .lines()
        .find(|l| l.starts_with("| `--web.telemetry-path` |"))
        .expect("the --web.telemetry-path row");
    let listed: Vec<String> = row
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| w.starts_with('/') && *w != "/metrics")
        .map(str::to_string)
        .collect::<BTreeSet<String>>()
        .into_iter()
        .collect();
    // The source's list, with the two paths it names by constant.
    let http = read("src/http.rs");
    let constant = |name: &str| -> String {
        let line = http
            .lines()
            .find(|l| l.starts_with(&format!("pub const {name}: &str = ")))
            .unwrap();
        line.split('"').nth(1).unwrap().to_string()
    };
    let cli = read("src/cli.rs");
    let start = cli.find("const RESERVED_PATHS").unwrap();
    let list = &cli[start..start + cli[start..].find("];").unwrap()];
    let mut reserved: Vec<String> = list
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    reserved.push(constant("STATUS_PATH"));
    reserved.push(constant("EVENTS_PATH"));
    assert!(
        list.contains("STATUS_PATH") && list.contains("EVENTS_PATH"),
        "{list}"
    );
    let (mut a, mut b) = (listed.clone(), reserved.clone());
    a.sort();
    b.sort();
    assert_eq!(a, b, "docs/flags.md against RESERVED_PATHS");
    for path in &listed {
        let out = Command::new(EXPORTER)
            .args([
                "--web.listen-address",
                "127.0.0.1:0",
                "--web.telemetry-path",
                path,
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{path} was not refused");
    }
}

/// Every paragraph of docs/ that says "never" or "always" names the test
/// that tries to break it: `tests/<file>.rs` (or `src/<file>.rs`) followed
/// by the name of a test function in that file.
#[test]
fn every_never_and_always_in_docs_names_its_test() {
    let mut missing = Vec::new();
    for page in docs_pages() {
        let text = read(&page);
        let mut in_code = false;
        let mut para: Vec<&str> = Vec::new();
        let mut paras: Vec<String> = Vec::new();
        for line in text.lines() {
            if line.starts_with("```") {
                in_code = !in_code;
                continue;
            }
            if in_code {
                continue;
            }
            // A paragraph or a list item ends at a blank line or where the
            // next item starts; a table row is one claim.
            let item = line.starts_with("- ") || line.starts_with("| ") || line.starts_with('#');
            if (line.trim().is_empty() || item) && !para.is_empty() {
                paras.push(para.join(" "));
                para.clear();
            }
            if !line.trim().is_empty() {
                para.push(line);
            }
        }
        if !para.is_empty() {
            paras.push(para.join(" "));
        }
        for p in paras {
            let lower = p.to_lowercase();
            let claims = lower
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                // A test's name (`headroom_never_exceeds_...`) is no claim.
                .any(|w| w == "never" || w == "always");
            if claims && !names_a_test(&p) {
                let short: String = p.chars().take(120).collect();
                missing.push(format!("{page}: {short}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} claims with \"never\" or \"always\" name no test (`tests/<file>.rs <test name>`):\n{}",
        missing.len(),
        missing.join("\n")
    );
}

/// Whether `text` names `tests/X.rs` or `src/...X.rs` followed (after
/// spaces, backticks or an opening parenthesis) by a function defined there.
fn names_a_test(text: &str) -> bool {
    let words: Vec<&str> = text
        .split(|c: char| {
            c.is_whitespace()
                || c == '`'
                || c == '('
                || c == ')'
                || c == ','
                || c == ';'
                || c == ':'
        })
        .filter(|w| !w.is_empty())
        .collect();
    words.windows(2).any(|w| {
        let file = w[0].trim_end_matches('.');
        let name = w[1].trim_end_matches(['.', ')']);
        (file.starts_with("tests/") || file.starts_with("src/"))
            && file.ends_with(".rs")
            && std::fs::read_to_string(root().join(file))
                .is_ok_and(|src| src.contains(&format!("fn {name}(")))
    })
}
