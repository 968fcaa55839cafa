//! Rules of the codebase's shape that a reviewer would otherwise have to remember: no import
//! cycle between the top-level modules of any crate (a cycle means two modules that cannot be
//! read, changed or tested one without the other), and a README an operator reads in a few
//! minutes. No tool of the registries here answers the first (cargo-modules is not packaged),
//! so the graph is read from the sources: every `crate::<module>` path, `use crate::{...}`
//! group and `super::` path that climbs to the crate root.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates whose module graphs are checked, by their source directory (`contrib/` is one
/// `main.rs`).
const CRATES: &[&str] = &["proto/src", "shim-manager/src", "pod-shim/src", "tests/src"];

/// The README's length bound (issue 37): what a node operator needs, the rest lives in `docs/`.
const README_MAX_LINES: usize = 250;

/// Every `.rs` file under `dir`, with the top-level module it belongs to (`None` for the crate
/// roots and binaries, which may use anything) and how deep below `src/` it sits.
fn sources(dir: &Path) -> Vec<(PathBuf, Option<String>, usize)> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(dir) {
        let entry = entry.expect("reading the source tree");
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let rel = path
            .strip_prefix(dir)
            .expect("under its crate")
            .to_path_buf();
        let parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let top = parts[0].trim_end_matches(".rs").to_string();
        let module = match top.as_str() {
            "lib" | "main" | "bin" => None,
            _ => Some(top),
        };
        out.push((path.to_path_buf(), module, parts.len() - 1));
    }
    out
}

/// The top-level modules that `source` names, comments left out. `depth` is how many
/// directories below `src/` the file sits (a `super::` from `src/a.rs` names the crate root).
fn references(source: &str, depth: usize) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let climb = "super::".repeat(depth + 1);
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or_default();
        for prefix in ["crate::", climb.as_str()] {
            let mut rest = code;
            while let Some(at) = rest.find(prefix) {
                let before = &rest[..at];
                rest = &rest[at + prefix.len()..];
                // `super::super::x` seen from a shallower climb is not the root.
                if prefix != "crate::" && before.ends_with("super::") {
                    continue;
                }
                if let Some(group) = rest.strip_prefix('{') {
                    let inner = group.split('}').next().unwrap_or_default();
                    for item in inner.split(',') {
                        found.insert(ident(item.trim()));
                    }
                } else {
                    found.insert(ident(rest));
                }
            }
        }
    }
    found.retain(|m| !m.is_empty() && m != "self");
    found
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// A cycle of the graph if it has one, as the modules around it.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = path.iter().position(|n| n == node).unwrap_or(0);
                let mut found = path[from..].to_vec();
                found.push(node.to_string());
                return Some(found);
            }
            None => {}
        }
        marks.insert(node.to_string(), Mark::Open);
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, marks, path) {
                return Some(found);
            }
        }
        path.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if let Some(found) = visit(node, graph, &mut marks, &mut Vec::new()) {
            return Some(found);
        }
    }
    None
}

fn module_graph(dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let files = sources(dir);
    let modules: BTreeSet<String> = files.iter().filter_map(|(_, m, _)| m.clone()).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, module, depth) in &files {
        let Some(module) = module else { continue };
        let source = std::fs::read_to_string(path).expect("reading a source file");
        let edges = graph.entry(module.clone()).or_default();
        for target in references(&source, *depth) {
            if &target != module && modules.contains(&target) {
                edges.insert(target);
            }
        }
    }
    graph
}

#[test]
fn no_crate_has_an_import_cycle_between_its_modules() {
    let root = dockpod_tests::workspace();
    for krate in CRATES {
        let graph = module_graph(&root.join(krate));
        assert!(
            graph.len() > 3,
            "{krate}: too few modules found ({graph:?}): the reader is broken"
        );
        if let Some(found) = cycle(&graph) {
            panic!("{krate}: import cycle {}", found.join(" -> "));
        }
    }
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    // The reader and the search on sources shaped like the real ones, so the test above cannot
    // pass by reading nothing.
    let a = "use crate::{b::Thing, c};\nfn f() { super::d::x(); }\n// crate::e in a comment\n";
    assert_eq!(
        references(a, 0),
        ["b", "c", "d"].iter().map(|s| s.to_string()).collect()
    );
    assert_eq!(
        references("use super::super::z::Y;\nuse super::sibling;", 1),
        ["z"].iter().map(|s| s.to_string()).collect()
    );
    let mut graph = BTreeMap::new();
    graph.insert("daemon".to_string(), ["docker".to_string()].into());
    graph.insert("docker".to_string(), ["daemon".to_string()].into());
    graph.insert("route".to_string(), ["docker".to_string()].into());
    let found = cycle(&graph).expect("a cycle");
    assert_eq!(found.first(), found.last());
    assert!(found.contains(&"daemon".to_string()) && found.contains(&"docker".to_string()));
    graph.insert("docker".to_string(), BTreeSet::new());
    assert_eq!(cycle(&graph), None);
}

#[test]
fn the_readme_is_short_enough_to_read() {
    let readme =
        std::fs::read_to_string(dockpod_tests::workspace().join("README.md")).expect("README.md");
    let lines = readme.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines, more than {README_MAX_LINES}: move design, test internals \
         and figures to docs/"
    );
}
