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

/// The module path of a file under src/: `calls/iomux/poll.rs` is
/// `[calls, iomux, poll]`, a `mod.rs` is its directory's module.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// Comments, string and character literals blanked out (so that neither
/// `// crate::x` nor `"http://"` is taken for code or cuts it short).
fn strip_comments_and_literals(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            let end = rest.find('\n').unwrap_or(rest.len());
            i += end;
        } else if let Some(inner) = rest.strip_prefix("/*") {
            let end = inner.find("*/").map_or(rest.len(), |e| e + 4);
            out.extend(rest[..end].chars().filter(|&c| c == '\n'));
            i += end;
        } else if let Some(len) = literal_len(rest) {
            out.extend(rest[..len].chars().filter(|&c| c == '\n'));
            out.push_str("\"\"");
            i += len;
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The length of a string, raw string or character literal starting `s`.
fn literal_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if let Some(r) = s.strip_prefix('r').or_else(|| s.strip_prefix("br")) {
        let hashes = r.bytes().take_while(|&c| c == b'#').count();
        if r[hashes..].starts_with('"') {
            let close = format!("\"{}", "#".repeat(hashes));
            let body = s.len() - r.len() + hashes + 1;
            return Some(
                s[body..]
                    .find(&close)
                    .map_or(s.len(), |e| body + e + close.len()),
            );
        }
        return None;
    }
    let start = usize::from(b.first() == Some(&b'b'));
    match b.get(start) {
        Some(b'"') => {
            let mut i = start + 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            Some((i + 1).min(b.len()))
        }
        // A character literal ('x', '\n', '\''), not a lifetime ('a).
        Some(b'\'') => {
            let c = s[start + 1..].chars().next()?;
            if c == '\\' {
                s[start + 3..].find('\'').map(|e| start + 3 + e + 1)
            } else {
                let after = start + 1 + c.len_utf8();
                (s[after..].starts_with('\'')).then_some(after + 1)
            }
        }
        _ => None,
    }
}

/// The code of a file: comments and literals removed, `a :: b` written
/// `a::b`, `super::` paths spelled from the crate root, and the unit
/// tests at the end (`#[cfg(test)] mod tests { .. }` closing the file, or
/// a `mod tests;` declaration) left out.
fn code(text: &str, module: &[String]) -> String {
    let mut text = strip_comments_and_literals(text);
    while text.contains(" ::") || text.contains(":: ") || text.contains("\n::") {
        text = text
            .replace(" ::", "::")
            .replace(":: ", "::")
            .replace("\n::", "::");
    }
    text = text.replace("#[cfg(test)]\nmod tests;", "");
    if let Some(at) = text.rfind("#[cfg(test)]\nmod tests {") {
        let tail = &text[at..];
        let mut depth = 0i32;
        let mut closed_at_end = false;
        for (i, c) in tail.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        closed_at_end = tail[i + 1..].trim().is_empty();
                        break;
                    }
                }
                _ => {}
            }
        }
        if closed_at_end {
            text.truncate(at);
        }
    }
    absolute_supers(&text, module)
}

/// `super::super::x` in module `a::b::c` becomes `crate::a::x`; one that
/// climbs past the crate root becomes `crate::<escape>`.
fn absolute_supers(text: &str, module: &[String]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("super::") {
        let before = rest[..at].chars().last();
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            out.push_str("super::");
            rest = &rest["super::".len()..];
            continue;
        }
        let mut up = 0;
        while rest.starts_with("super::") {
            up += 1;
            rest = &rest["super::".len()..];
        }
        match module.len().checked_sub(up) {
            Some(keep) => {
                out.push_str("crate::");
                for m in &module[..keep] {
                    out.push_str(m);
                    out.push_str("::");
                }
            }
            None => out.push_str("crate::escape::"),
        }
    }
    out.push_str(rest);
    out
}

/// Every `layer::module` a piece of code names through `crate::` (or
/// `$crate::`), including inside `use crate::layer::{a, b}` and
/// `use crate::{layer::a, layer::b}` groups.
fn references(code: &str) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            for item in top_level_items(group) {
                if let Some((layer, path)) = item.trim().split_once("::") {
                    push_path(layer.trim(), path, &mut found);
                }
            }
            continue;
        }
        let layer: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let path = rest[layer.len()..].trim_start_matches("::");
        push_path(&layer, path, &mut found);
    }
    found
}

/// The items of a `{a, b::{c, d}, e}` group (`group` starts after `{`).
fn top_level_items(group: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut depth = 0;
    let mut item = String::new();
    for c in group.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(std::mem::take(&mut item));
                continue;
            }
            _ => {}
        }
        item.push(c);
    }
    items.push(item);
    items
}

/// `layer` then `module...` or `{module, module::x}`.
fn push_path(layer: &str, path: &str, found: &mut BTreeSet<(String, String)>) {
    if layer == "escape" {
        found.insert(("escape".to_owned(), String::new()));
        return;
    }
    if rank(layer).is_none() {
        return;
    }
    let items = match path.strip_prefix('{') {
        Some(group) => top_level_items(group),
        None => vec![path.to_owned()],
    };
    for item in items {
        let module: String = item
            .trim()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !module.is_empty() && module != "self" {
            found.insert((layer.to_owned(), module));
        }
    }
}

/// Whether `file` is a `tests.rs` that its parent module declares as
/// `#[cfg(test)] mod tests;` (then all of it is test code).
fn is_test_file(file: &Path) -> bool {
    if file.file_name().is_none_or(|n| n != "tests.rs") {
        return false;
    }
    let dir = file.parent().unwrap();
    let parents = [dir.join("mod.rs"), dir.with_extension("rs")];
    parents
        .iter()
        .any(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("#[cfg(test)]\nmod tests;")))
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut edges = BTreeMap::new();
    for file in files {
        let module = module_path(&src, &file);
        if module.first().and_then(|l| rank(l)).is_none() || is_test_file(&file) {
            continue;
        }
        let name = format!("{}::{}", module[0], module.get(1).map_or("mod", |m| m));
        let text = std::fs::read_to_string(&file).unwrap();
        let to: &mut BTreeSet<String> = edges.entry(name.clone()).or_default();
        for (l, m) in references(&code(&text, &module)) {
            let target = format!("{l}::{m}");
            if target != name {
                to.insert(target);
            }
        }
    }
    edges
}

/// The crate root renamed (`use crate as x`) would hide paths from
/// `references`.
#[test]
fn the_crate_root_is_never_renamed() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    for file in files {
        let text = strip_comments_and_literals(&std::fs::read_to_string(&file).unwrap());
        assert!(
            !text.contains("crate as ") && !text.contains("self as "),
            "{} renames the crate root",
            file.display()
        );
    }
}

#[test]
fn every_import_points_down() {
    let mut upward = Vec::new();
    for (from, to) in graph() {
        let from_rank = rank(from.split("::").next().unwrap()).unwrap();
        for target in to {
            let Some(to_rank) = rank(target.split("::").next().unwrap()) else {
                upward.push(format!("{from} -> {target} (past the crate root)"));
                continue;
            };
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

/// The ring crate's modules (`ring/src`, one node per top-level module)
/// and the `crate::` modules each names.
fn ring_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ring/src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_path(&src, file);
        let Some(name) = module.first().cloned() else {
            continue; // lib.rs
        };
        if is_test_file(file) {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        let code = code(&text, &module);
        let to = edges.entry(name.clone()).or_default();
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            let items = match rest.strip_prefix('{') {
                Some(group) => top_level_items(group),
                None => vec![rest.to_owned()],
            };
            for item in items {
                let target: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !target.is_empty() && target != name {
                    to.insert(target);
                }
            }
        }
    }
    edges
}

#[test]
fn the_ring_crate_has_no_import_cycles() {
    let graph = ring_graph();
    assert!(graph.len() > 5, "ring modules found: {graph:?}");
    assert_eq!(cycles(&graph), Vec::<Vec<String>>::new());
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
    let module = [
        "platform".to_owned(),
        "netlink".to_owned(),
        "wire".to_owned(),
    ];
    let refs = references(&code(
        "use crate::platform::{sys, lock::Mutex, log::{a, b}};\n\
         use crate::{calls::process, sockets::{carry, stale}};\n\
         fn f() { crate :: sockets :: registry::get(1); } // crate::abi::x\n\
         const URL: &str = \"http://\"; fn g() { crate::transport::pool::x(); }\n\
         use super::super::super::abi::exports;\n\
         use super::super::fork;\n\
         #[cfg(test)]\nmod tests { use crate::abi::decode; }\n",
        &module,
    ));
    let names: Vec<String> = refs.iter().map(|(l, m)| format!("{l}::{m}")).collect();
    assert_eq!(
        names,
        [
            "abi::exports",
            "calls::process",
            "platform::fork",
            "platform::lock",
            "platform::log",
            "platform::sys",
            "sockets::carry",
            "sockets::registry",
            "sockets::stale",
            "transport::pool",
        ]
    );
    // Test modules are skipped only at the end of a file.
    let early = code(
        "#[cfg(test)]\nmod tests {}\nuse crate::abi::decode;\n",
        &module,
    );
    assert!(references(&early).contains(&("abi".to_owned(), "decode".to_owned())));
    let escape = code("use super::super::super::super::x;", &module);
    assert!(references(&escape).contains(&("escape".to_owned(), String::new())));
}

/// The logic layers get their arguments decoded into safe types (`abi`)
/// and reach memory only through `platform`: no unsafe in them, ever.
#[test]
fn the_logic_layers_forbid_unsafe() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for layer in ["calls", "sockets", "transport"] {
        let root = std::fs::read_to_string(src.join(layer).join("mod.rs")).unwrap();
        let root = strip_comments_and_literals(&root);
        assert!(
            root.lines().any(|l| l.trim() == "#![forbid(unsafe_code)]"),
            "{layer}/mod.rs must forbid(unsafe_code)"
        );
    }
}
