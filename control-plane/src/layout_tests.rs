//! The layout's one rule that the compiler does not check: the core (model, translate,
//! cache) imports nothing from the edges, and the model holds no Kubernetes or protobuf
//! types. Test code is left out: core tests may build their inputs through a source's
//! real conversion.

use std::path::{Path, PathBuf};

const EDGES: [&str; 8] = ["kubernetes", "manifests", "xds", "hds", "ops", "serve", "pipeline", "auth"];
const FOREIGN_TO_MODEL: [&str; 5] = ["kube::", "k8s_openapi", "prost", "envoy_types", "tonic"];

/// The non-test source of a core module: its file and its folder, minus test files and blocks.
fn sources(module: &str) -> Vec<(PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![src.join(format!("{module}.rs"))];
    if let Ok(entries) = std::fs::read_dir(src.join(module)) {
        files.extend(entries.flatten().map(|e| e.path()));
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
