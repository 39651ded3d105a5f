//! The crate's dependencies point one way, read from the source so the rule cannot drift.
//!
//! Every `crate::…` and `super::…` path in `src/` (imports, inline paths, serde's
//! `default = "crate::…"` strings) is an edge from its file to the file of the module it names.
//! Test-only code (`#[cfg(test)]` items, `tests.rs` files) may use anything and is left out, and
//! so is a file naming one of its own ancestors (a `sinks/kafka/` file using `crate::sinks::Outgoing`
//! is the folder's own business). What remains must hold three rules:
//!
//! 1. no circle between files;
//! 2. no circle between the top-level modules (`config`, `fanout`, `ledger`, …);
//! 3. `metrics` imports nothing of the crate: every part reports to it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// Every library source file by its module path (`src/sinks/kafka/mod.rs` → `sinks::kafka`).
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("src/ is readable")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    let mut out = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(src).expect("under src");
        let mut parts: Vec<String> = rel
            .with_extension("")
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        let last = parts.last().cloned().unwrap_or_default();
        if last == "main" && parts.len() == 1 || last == "tests" {
            continue; // the binary; test-only files
        }
        if last == "mod" || last == "lib" {
            parts.pop();
        }
        out.insert(parts, file);
    }
    out
}

/// The source with comments and `#[cfg(test)]` items taken out.
fn production_code(text: &str) -> String {
    let no_comments: String = text
        .lines()
        .map(|l| match l.find("//") {
            // `//` inside a string (a URL) is kept: only a comment at the start of the code
            // or after code without a quote before it is cut.
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = String::new();
    let mut rest = no_comments.as_str();
    while let Some(i) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..i]);
        let item = &rest[i + "#[cfg(test)]".len()..];
        // The item ends at its first `;` when that comes before any `{`, else at the brace
        // that closes its first `{`.
        let semi = item.find(';');
        let brace = item.find('{');
        let end = match (semi, brace) {
            (Some(s), Some(b)) if s < b => s + 1,
            (Some(s), None) => s + 1,
            (_, Some(b)) => {
                let mut depth = 0usize;
                let mut end = item.len();
                for (k, c) in item[b..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = b + k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (None, None) => item.len(),
        };
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// Every path the code names after `crate::` or `super::`, as written (`super::pool::Link`,
/// `crate::sinks::kafka`, each element of a `{…}` group on its own).
fn named_paths(code: &str) -> Vec<(bool, Vec<String>)> {
    fn ident(s: &str) -> (&str, &str) {
        let end = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        s.split_at(end)
    }
    /// Reads `a::b::{c, d::e}` from the start of `s` into `out`, each prefixed by `prefix`.
    fn read(s: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
        let mut path = prefix;
        let mut pos = 0;
        loop {
            let rest = &s[pos..];
            let trimmed = rest.trim_start();
            let skipped = rest.len() - trimmed.len();
            if let Some(group) = trimmed.strip_prefix('{') {
                pos += skipped + 1;
                let mut inner_pos = 0;
                loop {
                    let inner = &group[inner_pos..];
                    let t = inner.trim_start();
                    let ws = inner.len() - t.len();
                    if t.starts_with('}') || t.is_empty() {
                        inner_pos += ws + 1;
                        break;
                    }
                    // Always move on, whatever the element was (a glob, a `self`, something
                    // this reader does not know), so the loop ends on any input.
                    let used = read(t, path.clone(), out).max(1);
                    inner_pos += ws + used;
                    let after = group[inner_pos..].trim_start();
                    inner_pos = group.len() - after.len();
                    if let Some(a) = after.strip_prefix(',') {
                        inner_pos = group.len() - a.len();
                    }
                }
                pos += inner_pos;
                return pos;
            }
            let (name, _) = ident(trimmed);
            if name.is_empty() {
                out.push(path);
                // A glob (`a::*`) ends the path; it names the module before it.
                return if trimmed.starts_with('*') {
                    pos + skipped + 1
                } else {
                    pos
                };
            }
            path.push(name.to_string());
            pos += skipped + name.len();
            if s[pos..].starts_with("::") {
                pos += 2;
            } else {
                out.push(path);
                return pos;
            }
        }
    }
    let mut out = Vec::new();
    for (marker, is_super) in [("crate::", false), ("super::", true)] {
        let mut from = 0;
        while let Some(i) = code[from..].find(marker) {
            let at = from + i;
            let before = code[..at].chars().next_back();
            from = at + marker.len();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue; // `super::super::`, `callbridge::crate…` never; `foo_crate::`
            }
            let mut found = Vec::new();
            let mut supers = 0;
            let mut start = from;
            if is_super {
                while code[start..].starts_with("super::") {
                    supers += 1;
                    start += "super::".len();
                }
            }
            read(&code[start..], Vec::new(), &mut found);
            for p in found {
                let mut marked = vec![format!("^{supers}")];
                marked.extend(p);
                out.push((is_super, marked));
            }
        }
    }
    out
}

/// The file module a path lands in: the longest prefix of it that is a module.
fn resolve(
    from: &Module,
    is_super: bool,
    path: &[String],
    known: &BTreeMap<Module, PathBuf>,
) -> Option<Module> {
    let (mark, rest) = path.split_first()?;
    let supers: usize = mark.trim_start_matches('^').parse().ok()?;
    let mut base: Module = if is_super {
        // `super` of `a::b` is `a`, whether it is a/b.rs or a/b/mod.rs.
        let mut b = from.clone();
        for _ in 0..=supers {
            b.pop()?;
        }
        b
    } else {
        Vec::new()
    };
    base.extend(rest.iter().cloned());
    (0..=base.len())
        .rev()
        .map(|n| base[..n].to_vec())
        .find(|m| known.contains_key(m))
}

/// Cross edges between files (ancestors and the file itself left out).
fn edges(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let known = modules(src);
    let mut graph: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, file) in &known {
        let text = std::fs::read_to_string(file).expect("source is readable");
        let code = production_code(&text);
        let entry = graph.entry(module.clone()).or_default();
        for (is_super, path) in named_paths(&code) {
            let Some(target) = resolve(module, is_super, &path, &known) else {
                continue;
            };
            if target.is_empty() || module.starts_with(&target) {
                continue; // the crate root, itself or an ancestor
            }
            entry.insert(target);
        }
    }
    graph
}

/// A circle in `graph`, as the list of nodes around it, if there is one.
fn circle<N: Ord + Clone>(graph: &BTreeMap<N, BTreeSet<N>>) -> Option<Vec<N>> {
    fn visit<N: Ord + Clone>(
        n: &N,
        graph: &BTreeMap<N, BTreeSet<N>>,
        state: &mut BTreeMap<N, u8>,
        stack: &mut Vec<N>,
    ) -> Option<Vec<N>> {
        state.insert(n.clone(), 1);
        stack.push(n.clone());
        for m in graph.get(n).into_iter().flatten() {
            match state.get(m).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|x| x == m).unwrap_or(0);
                    let mut c = stack[at..].to_vec();
                    c.push(m.clone());
                    return Some(c);
                }
                0 => {
                    if let Some(c) = visit(m, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if state.get(n).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(n, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn show(m: &Module) -> String {
    m.join("::")
}

#[test]
fn no_circle_between_files() {
    let graph = edges(&src());
    if let Some(c) = circle(&graph) {
        let names: Vec<String> = c.iter().map(show).collect();
        panic!("import circle: {}", names.join(" → "));
    }
}

#[test]
fn no_circle_between_top_level_modules() {
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, tos) in edges(&src()) {
        let Some(a) = from.first() else { continue };
        for to in tos {
            if let Some(b) = to.first().filter(|b| *b != a) {
                top.entry(a.clone()).or_default().insert(b.clone());
            }
        }
    }
    if let Some(c) = circle(&top) {
        panic!("circle between modules: {}", c.join(" → "));
    }
}

#[test]
fn metrics_is_a_leaf() {
    let graph = edges(&src());
    let metrics: Vec<String> = graph
        .iter()
        .filter(|(m, _)| m.first().is_some_and(|f| f == "metrics"))
        .flat_map(|(_, tos)| tos.iter().map(show))
        .filter(|t| !t.starts_with("metrics"))
        .collect();
    assert!(metrics.is_empty(), "metrics imports {metrics:?}");
}

/// The settings types live with their modules and `config` only assembles them: what a
/// request passes through (`ingest`), what it becomes (`event`) and where it goes (`sinks`)
/// never reach back into `config`.
#[test]
fn the_data_path_does_not_import_config() {
    let graph = edges(&src());
    let back: Vec<String> = graph
        .iter()
        .filter(|(m, _)| {
            m.first()
                .is_some_and(|f| ["ingest", "event", "sinks", "fanout"].contains(&f.as_str()))
        })
        .flat_map(|(m, tos)| {
            tos.iter()
                .filter(|t| t.first().is_some_and(|f| f == "config"))
                .map(move |t| format!("{} -> {}", show(m), show(t)))
        })
        .collect();
    assert!(
        back.is_empty(),
        "imports of config on the data path: {back:?}"
    );
}

/// The checker itself finds what it must, on a small tree written here.
#[test]
fn the_checker_finds_a_circle_through_super_and_crate_paths() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let root = dir.path();
    let write = |rel: &str, text: &str| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    };
    write("lib.rs", "pub mod a;\npub mod b;\npub mod metrics;\n");
    write("a/mod.rs", "mod x;\nmod y;\n");
    write(
        "a/x.rs",
        "use super::y::Thing;\n// crate::b is only a comment\n",
    );
    write(
        "a/y.rs",
        "use super::{x::Other, Parent};\n#[cfg(test)]\nmod tests { use crate::b::Q; }\n",
    );
    write(
        "b.rs",
        "#[serde(default = \"crate::metrics::f\")]\nstruct S;\n#[cfg(test)]\nuse crate::a::x;\n",
    );
    write(
        "metrics.rs",
        "use crate::{b::S, a};\nuse crate::{a::*, b::*};\n",
    );
    let graph = edges(root);
    let get = |m: &str| -> Vec<String> {
        let key: Module = m.split("::").map(str::to_string).collect();
        graph
            .get(&key)
            .map(|s| s.iter().map(show).collect())
            .unwrap_or_default()
    };
    assert_eq!(get("a::x"), vec!["a::y"]);
    assert_eq!(
        get("a::y"),
        vec!["a::x"],
        "the parent and test code are left out"
    );
    assert_eq!(get("b"), vec!["metrics"], "a serde default path is an edge");
    assert_eq!(get("metrics"), vec!["a", "b"]);
    let c = circle(&graph).expect("a::x ↔ a::y");
    assert!(c.len() >= 3, "{c:?}");
}
