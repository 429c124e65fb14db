//! Parses manifest files (YAML, multi-document, `kind: List`, or JSON) into model objects.
//!
//! Errors carry the file and line, so an operator can fix the exact spot.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service as KubeService;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::convert;
use crate::crd::HealthProbe;
use crate::model::{Probe, Service, Slice};

/// Manifests that leave out the namespace land where kubectl would put them.
pub const DEFAULT_NAMESPACE: &str = "default";

#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Service(Arc<Service>),
    Slice(Arc<Slice>),
    Probe(Arc<Probe>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub path: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Yaml,
    Json,
}

/// Whether a path names a manifest file, by extension.
pub fn is_manifest(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

#[derive(Deserialize)]
struct ListItems {
    #[serde(default)]
    items: Vec<serde_json::Value>,
}

/// A document's parse error: the line inside the document and the message.
type DocError = (usize, String);

/// Parses a whole file; any error rejects the file, so its last good content stays in effect.
pub fn parse_file(path: &Path, text: &str) -> Result<Vec<Object>, ParseError> {
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => Format::Json,
        _ => Format::Yaml,
    };
    let documents = match format {
        Format::Json => vec![(1, text)],
        Format::Yaml => split_documents(text),
    };
    let mut objects = Vec::new();
    for (first_line, doc) in documents {
        if is_blank(doc) {
            continue;
        }
        parse_document(format, doc, &mut objects).map_err(|(line, message)| ParseError {
            path: path.to_owned(),
            line: first_line + line.saturating_sub(1),
            message,
        })?;
    }
    Ok(objects)
}

/// Splits YAML at `---` lines; each part with the 1-based line its content starts on.
fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut documents = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end();
        if bare == "---" || bare.starts_with("--- ") {
            documents.push((start_line, &text[start..offset]));
            start = offset + line.len();
            start_line = index + 2;
        }
        offset += line.len();
    }
    documents.push((start_line, &text[start..]));
    documents
}

fn is_blank(doc: &str) -> bool {
    doc.lines().map(str::trim).all(|l| l.is_empty() || l.starts_with('#') || l == "...")
}

fn from_text<T: DeserializeOwned>(format: Format, text: &str) -> Result<T, DocError> {
    match format {
        Format::Yaml => serde_norway::from_str(text).map_err(|e| {
            let line = e.location().map_or(1, |l| l.line());
            (line, e.to_string())
        }),
        Format::Json => serde_json::from_str(text).map_err(|e| (e.line(), e.to_string())),
    }
}

fn parse_document(format: Format, doc: &str, objects: &mut Vec<Object>) -> Result<(), DocError> {
    let header: Header = from_text(format, doc)?;
    if header.kind.ends_with("List") {
        let list: ListItems = from_text(format, doc)?;
        // Items take the same path as documents; their errors name the item (its lines are not known).
        for (index, item) in list.items.iter().enumerate() {
            parse_document(Format::Json, &item.to_string(), objects)
                .map_err(|(_, message)| (1, format!("items[{index}]: {message}")))?;
        }
        return Ok(());
    }
    let parsed = match (header.api_version.as_str(), header.kind.as_str()) {
        ("v1", "Service") => from_text::<KubeService>(format, doc).map(Typed::Service)?,
        ("discovery.k8s.io/v1", "EndpointSlice") => from_text::<EndpointSlice>(format, doc).map(Typed::Slice)?,
        ("edgexds.io/v1alpha1", "HealthProbe") => from_text::<HealthProbe>(format, doc).map(Typed::Probe)?,
        _ => return Ok(()),
    };
    objects.push(parsed.convert().map_err(|message| (1, message))?);
    Ok(())
}

enum Typed {
    Service(KubeService),
    Slice(EndpointSlice),
    Probe(HealthProbe),
}

impl Typed {
    fn convert(self) -> Result<Object, String> {
        let describe = |kind: &str, name: &Option<String>, e: convert::ConvertError| {
            format!("{kind} {}: {e}", name.as_deref().unwrap_or("<unnamed>"))
        };
        match self {
            Typed::Service(s) => convert::service(&s, DEFAULT_NAMESPACE)
                .map(|s| Object::Service(Arc::new(s)))
                .map_err(|e| describe("Service", &s.metadata.name, e)),
            Typed::Slice(s) => convert::slice(&s, DEFAULT_NAMESPACE)
                .map(|s| Object::Slice(Arc::new(s)))
                .map_err(|e| describe("EndpointSlice", &s.metadata.name, e)),
            Typed::Probe(p) => convert::probe(&p, DEFAULT_NAMESPACE)
                .map(|p| Object::Probe(Arc::new(p)))
                .map_err(|e| describe("HealthProbe", &p.metadata.name, e)),
        }
    }
}

#[cfg(test)]
#[path = "manifests_tests.rs"]
mod tests;
