//! The crate's top-level modules (`src/*.rs`, `src/*/`) must not import each other in a circle:
//! a cycle means neither side can be understood, tested or moved without the other.
//!
//! The graph is read from the source: every `crate::name` path (in `use` lines and inline, in
//! test modules too) outside comments is an edge from the module of the file to `name`'s
//! top-level module; a name re-exported at the crate root (`crate::Error`) is resolved through
//! the `pub use` lines of `src/lib.rs`. A name the test cannot place fails it, so a path written in
//! a way the parser does not understand cannot hide an edge.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The crate's `src/`; `MODULE_GRAPH_SRC` points the test at another tree (an older commit, to
/// see it fail on the cycles it was written against).
fn src() -> PathBuf {
    std::env::var_os("MODULE_GRAPH_SRC").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        PathBuf::from,
    )
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments: `//` comment lines and trailing `// ...` comments removed.
fn code_of(text: &str) -> String {
    let mut code = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        let line = match line.find("// ") {
            Some(at) => &line[..at],
            None => line,
        };
        code.push_str(line);
        code.push('\n');
    }
    code
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first path segment of every `crate::...` path in `code`; for `crate::{a::b, c}` each of
/// `a` and `c`.
fn crate_paths(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        let after = &rest[at + "crate::".len()..];
        rest = after;
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `uno_crate::`, say: not ours
        }
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if c.is_whitespace() => {}
                    _ if item_start => {
                        item_start = false;
                        names.push(ident_at(&group[i..]).to_owned());
                    }
                    _ => {}
                }
            }
        } else {
            names.push(ident_at(after).to_owned());
        }
    }
    names
}

/// The top-level modules: `src/name.rs` and `src/name/mod.rs`, but not `lib.rs` and `bin/`.
fn top_modules() -> BTreeSet<String> {
    let mut modules = BTreeSet::new();
    for entry in fs::read_dir(src()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let is_dir_module = path.is_dir() && path.join("mod.rs").exists();
        let is_file_module = path.extension().is_some_and(|e| e == "rs") && name != "lib";
        if is_dir_module || is_file_module {
            modules.insert(name);
        }
    }
    modules
}

/// Names re-exported at the crate root (`pub use crate::module::...::{A, B}` in `lib.rs`),
/// mapped to the top-level module they come from.
fn root_reexports(modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    let lib = code_of(&fs::read_to_string(src().join("lib.rs")).unwrap());
    let mut map = BTreeMap::new();
    let mut rest = lib.as_str();
    while let Some(at) = rest.find("pub use crate::") {
        rest = &rest[at + "pub use crate::".len()..];
        let module = ident_at(rest).to_owned();
        assert!(
            modules.contains(&module),
            "lib.rs re-exports from unknown module {module}"
        );
        let stmt = &rest[..rest.find(';').unwrap()];
        let items = match stmt.find('{') {
            Some(open) => &stmt[open + 1..stmt.rfind('}').unwrap()],
            None => stmt.rsplit("::").next().unwrap(),
        };
        for item in items.split(',') {
            let item = item.trim();
            let name = item.rsplit(" as ").next().unwrap().trim();
            let name = name.rsplit("::").next().unwrap().trim();
            if !name.is_empty() {
                map.insert(name.to_owned(), module.clone());
            }
        }
    }
    map
}

/// Edges between top-level modules, read from the source under `src/`.
fn module_graph() -> Graph {
    let modules = top_modules();
    let reexports = root_reexports(&modules);
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut graph: Graph = modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    for file in files {
        let rel = file.strip_prefix(src()).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_str().unwrap();
        let from = first.trim_end_matches(".rs").to_owned();
        if !modules.contains(&from) {
            continue; // lib.rs and the binary
        }
        let code = code_of(&fs::read_to_string(&file).unwrap());
        for name in crate_paths(&code) {
            let to = if modules.contains(&name) {
                name.clone()
            } else if let Some(module) = reexports.get(&name) {
                module.clone()
            } else if name == "__fuzz" {
                continue;
            } else {
                panic!(
                    "{}: cannot place `crate::{name}` in a top-level module",
                    rel.display()
                );
            };
            if to != from {
                graph.get_mut(&from).unwrap().insert(to);
            }
        }
    }
    graph
}

/// A cycle in `graph` as a path `a -> b -> ... -> a`, or `None`.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit(
        node: &str,
        graph: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_owned(), Mark::OnPath);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            match marks.get(next.as_str()).copied().unwrap_or(Mark::New) {
                Mark::OnPath => {
                    let start = path.iter().position(|n| n == next).unwrap();
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(cycle) = visit(next, graph, marks, path) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if marks.get(node.as_str()).copied().unwrap_or(Mark::New) == Mark::New {
            if let Some(cycle) = visit(node, graph, &mut marks, &mut Vec::new()) {
                return Some(cycle);
            }
        }
    }
    None
}

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    let graph = module_graph();
    let edges: Vec<String> = graph
        .iter()
        .flat_map(|(from, tos)| tos.iter().map(move |to| format!("{from} -> {to}")))
        .collect();
    if std::env::var_os("MODULE_GRAPH_PRINT").is_some() {
        println!("{}", edges.join("\n"));
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "module cycle: {}\nall edges:\n  {}",
            cycle.join(" -> "),
            edges.join("\n  ")
        );
    }
}

#[test]
fn the_graph_reader_sees_imports_in_every_form_it_must_parse() {
    // A sanity check on the reader itself, so that an empty graph cannot pass as acyclic.
    let graph = module_graph();
    assert!(graph.len() >= 10, "too few modules found: {graph:?}");
    assert!(
        graph["manager"].contains("storage"),
        "`use crate::storage::...` missed"
    );
    assert!(
        graph["manager"].contains("perms"),
        "an inline `crate::perms::X` path missed"
    );
    assert_eq!(
        crate_paths(
            "use crate::{\n    a::b,\n    c::{d, e},\n    f,\n};\nlet x = crate::g::h;\nuno_crate::z;"
        ),
        vec!["a", "c", "f", "g"]
    );
    assert_eq!(
        crate_paths(&code_of("// crate::a\nlet b = 1; // crate::c\n")),
        Vec::<String>::new()
    );
}

#[test]
fn the_cycle_finder_reports_a_cycle_and_accepts_a_dag() {
    let graph = |edges: &[(&str, &str)]| {
        let mut g = Graph::new();
        for (from, to) in edges {
            g.entry((*from).to_owned()).or_default().insert((*to).to_owned());
            g.entry((*to).to_owned()).or_default();
        }
        g
    };
    let dag = graph(&[("a", "b"), ("b", "c"), ("a", "c")]);
    assert_eq!(find_cycle(&dag), None);
    let cyclic = graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]);
    let cycle = find_cycle(&cyclic).expect("the cycle a -> b -> c -> a");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4, "{cycle:?}");
}
