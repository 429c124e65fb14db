//! The layout's rules that the compiler does not check: the core (model, translate, cache)
//! imports nothing from the edges and no command-line parser, the model holds no
//! Kubernetes or protobuf types, and an edge imports another edge only where its module
//! doc declares it (a line `Imports: a, b.`). Test code is left out: tests may build their
//! inputs through a source's real conversion.

use std::path::{Path, PathBuf};

const EDGES: [&str; 10] =
    ["kubernetes", "manifests", "xds", "hds", "ops", "serve", "pipeline", "auth", "port", "inject"];
const FOREIGN_TO_MODEL: [&str; 5] = ["kube::", "k8s_openapi", "prost", "envoy_types", "tonic"];

/// The non-test source of a module: its file and everything under its folder, minus test
/// files and blocks.
fn sources(module: &str) -> Vec<(PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![src.join(format!("{module}.rs"))];
    let mut folders = vec![src.join(module)];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(folder).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
        .into_iter()
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.ends_with(".rs") && !name.ends_with("_tests.rs") && name != "fixtures.rs"
        })
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default().to_owned();
            (p, code)
        })
        .collect()
}

#[test]
fn the_core_imports_nothing_from_the_edges() {
    let mut found = Vec::new();
    for module in ["model", "translate", "cache"] {
        for (path, code) in sources(module) {
            for edge in EDGES {
                if code.contains(&format!("crate::{edge}")) {
                    found.push(format!("{} uses crate::{edge}", path.display()));
                }
            }
        }
    }
    assert!(found.is_empty(), "the core must not import an edge:\n{}", found.join("\n"));
}

#[test]
fn the_model_holds_no_kubernetes_or_protobuf_types() {
    let found: Vec<String> = sources("model")
        .into_iter()
        .flat_map(|(path, code)| {
            FOREIGN_TO_MODEL
                .iter()
                .filter(|foreign| code.contains(*foreign))
                .map(|foreign| format!("{} uses {foreign}", path.display()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(found.is_empty(), "the model must stay plain values:\n{}", found.join("\n"));
}

#[test]
fn the_core_parses_no_command_line() {
    let found: Vec<String> = ["model", "translate", "cache"]
        .into_iter()
        .flat_map(sources)
        .filter(|(_, code)| code.contains("clap"))
        .map(|(path, _)| path.display().to_string())
        .collect();
    assert!(found.is_empty(), "the command line belongs beside main.rs, not in the core:\n{}", found.join("\n"));
}

/// The edges a module's doc says it imports: its `Imports: a, b.` line.
fn declared_imports(module: &str) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let text = std::fs::read_to_string(src.join(format!("{module}.rs"))).unwrap_or_default();
    let docs: String = text.lines().take_while(|l| l.starts_with("//!")).collect::<Vec<_>>().join(" ");
    let docs = docs.replace("//!", " ");
    let Some((_, declared)) = docs.split_once("Imports:") else { return Vec::new() };
    // Parentheses say why; only the names before them count.
    let mut plain = String::new();
    let mut depth = 0usize;
    for c in declared.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            '.' if depth == 0 => break,
            c if depth == 0 => plain.push(c),
            _ => {}
        }
    }
    let declared = plain;
    declared
        .split(',')
        .filter_map(|part| part.split_whitespace().next())
        .map(|word| word.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_').to_owned())
        .collect()
}

#[test]
fn an_edge_imports_another_edge_only_where_its_module_doc_declares_it() {
    let mut found = Vec::new();
    // The wiring imports every edge; that is its job.
    for module in EDGES.into_iter().filter(|m| *m != "serve") {
        let declared = declared_imports(module);
        for (path, code) in sources(module) {
            for edge in EDGES.into_iter().filter(|e| *e != module) {
                if code.contains(&format!("crate::{edge}::")) && !declared.iter().any(|d| d == edge) {
                    found.push(format!("{} uses crate::{edge}, which {module}'s doc does not declare", path.display()));
                }
            }
        }
    }
    assert!(found.is_empty(), "undeclared imports between edges:\n{}", found.join("\n"));
}
