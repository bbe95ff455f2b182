//! The layering rule, checked on the sources: every `crate::` path in a
//! module points to its own layer or one below (abi → calls → sockets →
//! transport → platform), and no two modules import each other, directly
//! or around a loop. Unit tests (`mod tests` at the end of a file) may
//! reach anywhere; comments are not code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top to bottom.
const LAYERS: [&str; 5] = ["abi", "calls", "sockets", "transport", "platform"];

/// Module-level cycles not yet broken, each as the sorted list of its
/// modules (a strongly connected component). This list may only shrink.
const KNOWN_CYCLES: &[&[&str]] = &[];

fn rank(layer: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == layer)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `layer::module` of a file under src/ (a layer's mod.rs is `layer::mod`).
fn module_of(src: &Path, file: &Path) -> Option<(String, String)> {
    let rel = file.strip_prefix(src).ok()?;
    let mut parts = rel.iter().map(|p| p.to_string_lossy().into_owned());
    let layer = parts.next()?;
    rank(&layer)?;
    let module = parts.next()?.trim_end_matches(".rs").to_owned();
    Some((layer, module))
}

/// The code of a file: comments and the trailing unit tests removed.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `layer::module` a piece of code names through `crate::` (or
/// `$crate::`), including inside `use crate::layer::{a, b}` groups.
fn references(code: &str) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let layer: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if rank(&layer).is_none() {
            continue;
        }
        let rest = rest[layer.len()..].trim_start_matches("::");
        if let Some(group) = rest.strip_prefix('{') {
            // use crate::layer::{a, b::c, d::{e, f}}
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    _ => {}
                }
                if c == ',' && depth == 0 {
                    push_item(&layer, &item, &mut found);
                    item.clear();
                } else {
                    item.push(c);
                }
            }
            push_item(&layer, &item, &mut found);
        } else {
            push_item(&layer, rest, &mut found);
        }
    }
    found
}

fn push_item(layer: &str, item: &str, found: &mut BTreeSet<(String, String)>) {
    let module: String = item
        .trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if !module.is_empty() && module != "self" {
        found.insert((layer.to_owned(), module));
    }
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut edges = BTreeMap::new();
    for file in files {
        let Some((layer, module)) = module_of(&src, &file) else {
            continue;
        };
        // A module's unit tests in a file of their own.
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let name = format!("{layer}::{module}");
        let to: &mut BTreeSet<String> = edges.entry(name.clone()).or_default();
        for (l, m) in references(&code(&text)) {
            let target = format!("{l}::{m}");
            if target != name {
                to.insert(target);
            }
        }
    }
    edges
}

#[test]
fn every_import_points_down() {
    let mut upward = Vec::new();
    for (from, to) in graph() {
        let from_rank = rank(from.split("::").next().unwrap()).unwrap();
        for target in to {
            let to_rank = rank(target.split("::").next().unwrap()).unwrap();
            if to_rank < from_rank {
                upward.push(format!("{from} -> {target}"));
            }
        }
    }
    assert!(upward.is_empty(), "imports that point up: {upward:#?}");
}

/// Tarjan's strongly connected components of more than one module.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.edges.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.edges.contains_key(w) {
                continue; // a `mod.rs` or a name that is not a module file
            }
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found.sort();
    s.found
}

#[test]
fn no_import_cycles_beyond_the_known() {
    let found = cycles(&graph());
    let known: Vec<Vec<String>> = KNOWN_CYCLES
        .iter()
        .map(|c| c.iter().map(|m| (*m).to_owned()).collect())
        .collect();
    assert_eq!(
        found, known,
        "module import cycles (KNOWN_CYCLES may only shrink)"
    );
}

#[test]
fn the_checker_sees_groups_and_paths() {
    let refs = references(&code(
        "use crate::platform::{sys, lock::Mutex, log::{a, b}};\n\
         fn f() { crate::sockets::registry::get(1); } // crate::abi::x\n\
         #[cfg(test)]\nmod tests { use crate::abi::exports; }",
    ));
    let names: Vec<String> = refs.iter().map(|(l, m)| format!("{l}::{m}")).collect();
    assert_eq!(
        names,
        [
            "platform::lock",
            "platform::log",
            "platform::sys",
            "sockets::registry"
        ]
    );
}
