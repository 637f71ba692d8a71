//! The crate's import graph, read from its sources: every `crate::` and
//! `super::` path outside `#[cfg(test)]` modules (in place, or in a file
//! of their own) is an edge from the
//! module that names it to the module it names (the longest module prefix
//! of the path; comments and string literals are skipped, so doc links do
//! not count). A module naming its own descendants is containment, not an
//! edge. The graph must have no circle, and every edge must go down (or
//! sideways) in [`LAYERS`]: data flows one way, sample → judgement →
//! report → projections, and the helpers every layer shares sit at the
//! bottom.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, bottom first. A module belongs to the entry that names the
/// longest prefix of its path. Edges may go to a lower layer or within a
/// layer (the cycle check covers those), never up.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "shared helpers",
        &[
            "text",
            // The plugin states and threshold syntax that `check` and
            // each collector's judgement share.
            "threshold",
            "ranges",
            "names",
            "deadline",
            "looks",
            "logging",
            "exposition",
        ],
    ),
    // The boundary: what the rest of the crate asks of the OS.
    ("platform boundary", &["platform"]),
    // Its implementations, which take the boundary's types (and so may
    // use `platform`), and the boundary's trait modules.
    ("platform implementations", &["platform::"]),
    ("user names", &["users"]),
    // What a listener's verdict and its command line are worth.
    ("judgement", &["allowlist", "redact"]),
    // One module per collector: it samples through the platform, holds
    // its own part of the report and renders that part.
    (
        "collectors",
        &["watched", "netns", "ephemeral", "traffic", "trail"],
    ),
    ("configuration and the report", &["config", "report"]),
    (
        "orchestration and projections",
        &["collect", "metrics", "status", "check"],
    ),
    ("service", &["service"]),
    ("serving", &["http", "auth", "webconfig"]),
    ("entry", &["cli"]),
];

/// The projections of the report: none imports another (each renders
/// the report; the collectors render their own parts).
const PROJECTIONS: &[&str] = &["metrics", "status", "check"];

/// Edges tolerated for now, each with why; the test fails when one is
/// gone, so that the list only shrinks.
const KNOWN: &[(&str, &str, &str)] = &[];

fn layer(module: &str) -> usize {
    let mut best: Option<(usize, usize)> = None;
    for (i, (_, prefixes)) in LAYERS.iter().enumerate() {
        for p in *prefixes {
            let hit = if let Some(stem) = p.strip_suffix("::") {
                module.starts_with(p) && module.len() > stem.len()
            } else {
                module == *p || module.starts_with(&format!("{p}::"))
            };
            if hit && best.is_none_or(|(len, _)| p.len() > len) {
                best = Some((p.len(), i));
            }
        }
    }
    best.unwrap_or_else(|| panic!("module {module} is in no layer: add it to LAYERS"))
        .1
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` and `src/a/b/mod.rs` are `a::b`; `src/lib.rs` is the root.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts.join("::")
}

/// The source with comments and the contents of string and character
/// literals blanked (so that braces and paths in them do not count).
fn code_only(src: &str) -> Vec<u8> {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |n| i + n);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = src[i + 2..].find("*/").map_or(b.len(), |n| i + 2 + n + 2);
                blank(&mut out, i, end);
                i = end;
            }
            b'r' if (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let close = format!("\"{}", "#".repeat(hashes));
                let start = i + 2 + hashes;
                let end = src[start..]
                    .find(&close)
                    .map_or(b.len(), |n| start + n + close.len());
                blank(&mut out, i, end);
                i = end;
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                blank(&mut out, i, (j + 1).min(b.len()));
                i = j + 1;
            }
            b'\'' => {
                // A character literal ('x', '\n', '\u{7c}'), not a lifetime.
                let end = if b.get(i + 1) == Some(&b'\\') {
                    b[i + 2..]
                        .iter()
                        .position(|&c| c == b'\'')
                        .map(|n| i + 2 + n + 1)
                } else if b.get(i + 2) == Some(&b'\'') {
                    Some(i + 3)
                } else {
                    src[i + 1..].chars().next().and_then(|c| {
                        let after = i + 1 + c.len_utf8();
                        (b.get(after) == Some(&b'\'')).then_some(after + 1)
                    })
                };
                match end {
                    Some(end) => {
                        blank(&mut out, i, end);
                        i = end;
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// Blanks every `#[cfg(test)]` module written in place
/// (`#[cfg(test)] mod x { ... }`) and returns the names of those kept in
/// a file of their own (`#[cfg(test)] mod x;`), which are test code too.
fn without_test_modules(code: &mut [u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(code).into_owned();
    let mut out_of_line = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("#[cfg(test)]").map(|n| from + n) {
        from = at + 1;
        let rest = text[at + "#[cfg(test)]".len()..].trim_start();
        let rest = ["pub(crate) ", "pub(super) ", "pub "]
            .iter()
            .find_map(|p| rest.strip_prefix(p))
            .unwrap_or(rest);
        let Some(rest) = rest.strip_prefix("mod ") else {
            continue;
        };
        let name: String = rest
            .trim_start()
            .bytes()
            .take_while(|&c| is_ident(c))
            .map(char::from)
            .collect();
        let after = rest.trim_start()[name.len()..].trim_start();
        if after.starts_with(';') {
            out_of_line.push(name);
            continue;
        }
        let Some(open) = text[at..].find('{').map(|n| at + n) else {
            continue;
        };
        let mut depth = 0usize;
        let mut end = code.len();
        for (k, &c) in code.iter().enumerate().skip(open) {
            match c {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        for c in &mut code[at..end] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    }
    out_of_line
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The paths of a `use` tree (or an expression path) starting at `i`,
/// after its `crate::` or `super::`: `a::b`, `a::{b, c::d}`, `a::*`.
fn paths_at(code: &[u8], mut i: usize, prefix: &str, out: &mut Vec<String>) -> usize {
    let mut path = prefix.to_string();
    loop {
        while code.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
            i += 1;
        }
        if code.get(i) == Some(&b'{') {
            i += 1;
            loop {
                while code
                    .get(i)
                    .is_some_and(|c| c.is_ascii_whitespace() || *c == b',')
                {
                    i += 1;
                }
                match code.get(i) {
                    None => return i,
                    Some(b'}') => return i + 1,
                    _ => {
                        let before = i;
                        i = paths_at(code, i, &path, out);
                        if i == before {
                            i += 1;
                        }
                    }
                }
            }
        }
        let start = i;
        while code.get(i).is_some_and(|&c| is_ident(c)) {
            i += 1;
        }
        if i == start {
            out.push(path);
            return i;
        }
        let seg = std::str::from_utf8(&code[start..i]).unwrap();
        if seg == "self" {
            out.push(path);
            return i;
        }
        if !path.is_empty() {
            path.push_str("::");
        }
        path.push_str(seg);
        if code[i..].starts_with(b"::") {
            i += 2;
        } else {
            out.push(path);
            return i;
        }
    }
}

fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.retain(|f| f.file_name().is_some_and(|n| n != "main.rs"));
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(src, f)).collect();
    let resolve = |path: &str| -> Option<String> {
        let parts: Vec<&str> = path.split("::").collect();
        (1..=parts.len())
            .rev()
            .map(|n| parts[..n].join("::"))
            .find(|m| modules.contains(m))
    };
    // Each file's code with its test modules blanked; the modules that
    // are test code in a file of their own are left out whole.
    let mut test_only: BTreeSet<String> = BTreeSet::new();
    let mut codes = Vec::new();
    for file in &files {
        let module = module_of(src, file);
        let mut code = code_only(&std::fs::read_to_string(file).unwrap());
        for name in without_test_modules(&mut code) {
            test_only.insert(if module.is_empty() {
                name
            } else {
                format!("{module}::{name}")
            });
        }
        codes.push((module, code));
    }
    let is_test = |m: &str| {
        test_only
            .iter()
            .any(|t| m == t || m.starts_with(&format!("{t}::")))
    };
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, code) in codes {
        if is_test(&module) {
            continue;
        }
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p).to_string();
        let mut paths = Vec::new();
        let mut i = 0;
        while i < code.len() {
            let boundary = i == 0 || !(is_ident(code[i - 1]) || code[i - 1] == b':');
            if boundary && code[i..].starts_with(b"crate::") {
                i = paths_at(&code, i + "crate::".len(), "", &mut paths);
            } else if boundary && code[i..].starts_with(b"super::") {
                i = paths_at(&code, i + "super::".len(), &parent, &mut paths);
            } else {
                i += 1;
            }
        }
        for path in paths {
            let Some(target) = resolve(&path) else {
                continue;
            };
            let contained = target == module || target.starts_with(&format!("{module}::"));
            if !contained && !module.is_empty() && !target.is_empty() {
                edges.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    edges
}

/// The strongly connected components with more than one module.
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = edges.keys().chain(edges.values().flatten()).collect();
    let reaches = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(n) = todo.pop() {
            for next in edges.get(&n).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|n| (*n, reaches(n))).collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    for n in &nodes {
        if !reach[n].contains(*n) || out.iter().any(|c| c.contains(n)) {
            continue;
        }
        let circle: Vec<String> = nodes
            .iter()
            .filter(|m| reach[n].contains(**m) && reach[*m].contains(*n))
            .map(|m| (*m).clone())
            .collect();
        out.push(circle);
    }
    out
}

#[test]
fn the_import_graph_has_no_circle_and_runs_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut edges = graph(&src);
    let mut problems = Vec::new();
    for (from, to, why) in KNOWN {
        if !edges.get(*from).is_some_and(|t| t.contains(*to)) {
            problems.push(format!(
                "the tolerated edge {from} -> {to} ({why}) is gone: remove it from KNOWN"
            ));
        }
        if let Some(t) = edges.get_mut(*from) {
            t.remove(*to);
        }
    }
    for circle in circles(&edges) {
        problems.push(format!("import circle: {}", circle.join(", ")));
    }
    for (from, targets) in &edges {
        for to in targets {
            let (lf, lt) = (layer(from), layer(to));
            if lt > lf {
                problems.push(format!(
                    "{from} ({}) imports {to} ({}), a layer above",
                    LAYERS[lf].0, LAYERS[lt].0
                ));
            }
        }
    }
    let projection = |m: &str| {
        PROJECTIONS
            .iter()
            .find(|p| m == **p || m.starts_with(&format!("{p}::")))
    };
    for (from, targets) in &edges {
        for to in targets {
            if let (Some(a), Some(b)) = (projection(from), projection(to))
                && a != b
            {
                problems.push(format!("the projection {from} imports the projection {to}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n\nedges:\n{}",
        problems.join("\n"),
        edges
            .iter()
            .map(|(f, t)| format!(
                "  {f} -> {}",
                t.iter().cloned().collect::<Vec<_>>().join(", ")
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The reader itself: paths in use trees, expressions, comments, strings
/// and test modules.
#[test]
fn the_import_reader_sees_what_the_compiler_sees() {
    let dir = std::env::temp_dir().join(format!("imports-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(
        dir.join("lib.rs"),
        "pub mod a; pub mod b; pub mod c; pub mod d; pub mod e;\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("a.rs"),
        "use crate::{b::{self, X}, c::Y};\n// crate::d::Z in a comment\nfn f() -> char { let _ = \"crate::d\"; '{' }\n#[cfg(test)]\nmod tests { use crate::d::W; }\n#[cfg(test)]\nmod more_tests;\nfn g() { crate::e::k(); }\n",
    )
    .unwrap();
    std::fs::write(dir.join("a/inner.rs"), "use super::Q;\n").unwrap();
    std::fs::create_dir_all(dir.join("a/more_tests")).unwrap();
    std::fs::write(dir.join("a/more_tests.rs"), "use crate::d::V;\n").unwrap();
    std::fs::write(dir.join("a/more_tests/deeper.rs"), "use crate::d::U;\n").unwrap();
    std::fs::write(dir.join("b.rs"), "fn g() { crate::c::h(); }\n").unwrap();
    std::fs::write(dir.join("c.rs"), "").unwrap();
    std::fs::write(dir.join("e.rs"), "").unwrap();
    std::fs::write(dir.join("d.rs"), "fn k() { crate::a::inner::z(); }\n").unwrap();
    let edges = graph(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let want: BTreeMap<String, BTreeSet<String>> = [
        ("a", &["b", "c", "e"][..]),
        ("a::inner", &["a"][..]),
        ("b", &["c"][..]),
        ("d", &["a::inner"][..]),
    ]
    .iter()
    .map(|(f, t)| (f.to_string(), t.iter().map(|s| s.to_string()).collect()))
    .collect();
    assert_eq!(edges, want);
    let mut with_circle = edges.clone();
    with_circle
        .entry("c".into())
        .or_default()
        .insert("a".into());
    assert_eq!(circles(&with_circle), vec![vec!["a", "b", "c"]]);
    assert!(circles(&edges).is_empty());
}
