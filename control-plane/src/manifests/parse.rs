//! Parses manifest files (YAML, multi-document, `kind: List`, or JSON) into model objects.
//!
//! As `kubectl apply -f` and the API server do, each object is accepted or refused on its
//! own: a Service whose port is out of range is refused, and the slice and probes beside it
//! in the same file stand. Only a file that cannot be read as YAML or JSON at all is
//! refused whole. Every refusal carries the file and line, so an operator can fix the
//! exact spot.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node as KubeNode, Service as KubeService};
use k8s_openapi::api::discovery::v1::EndpointSlice as KubeEndpointSlice;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::kubernetes::convert;
use crate::kubernetes::crd::HealthProbe as KubeHealthProbe;
use crate::kubernetes::gateway::{GrpcRoute as GatewayGrpcRoute, HttpRoute as GatewayHttpRoute};
use crate::model::{ObjectKey, ObjectKind, SourceObject};

/// Manifests that leave out the namespace land where kubectl would put them.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Bytes per manifest file, at most: checked before the file is read.
pub const MAX_FILE_BYTES: usize = 4 << 20;
/// Nesting of YAML/JSON collections, at most: checked before parsing, because the YAML
/// parser's cost grows with the square of the depth. Kubernetes objects nest far less.
pub const MAX_NESTING: usize = 64;

/// An object and the line its document starts on.
#[derive(Clone, Debug, PartialEq)]
pub struct Located {
    pub line: usize,
    pub object: SourceObject,
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

/// An object refused on its own; the file's other objects stand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub error: ParseError,
    /// The object it was meant to be, when its kind and name could be read: its last
    /// accepted version, if any, stays in effect.
    pub object: Option<(ObjectKind, ObjectKey)>,
}

/// What one file holds: the objects accepted, and those refused.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parsed {
    pub objects: Vec<Located>,
    pub refused: Vec<Refused>,
}

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
    #[serde(default)]
    metadata: HeaderMetadata,
}

/// Enough of an object's metadata to name it, before its kind's own rules are applied.
#[derive(Default, Deserialize)]
struct HeaderMetadata {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

impl Header {
    /// The object this document means, if its kind is one of ours and it has a name.
    fn object(&self) -> Option<(ObjectKind, ObjectKey)> {
        let kind = match (self.api_version.as_str(), self.kind.as_str()) {
            ("v1", "Service") => ObjectKind::Service,
            ("discovery.k8s.io/v1", "EndpointSlice") => ObjectKind::EndpointSlice,
            ("edgexds.io/v1alpha1", "HealthProbe") => ObjectKind::HealthProbe,
            ("v1", "Node") => ObjectKind::Node,
            ("gateway.networking.k8s.io/v1", "HTTPRoute") => ObjectKind::HttpRoute,
            ("gateway.networking.k8s.io/v1", "GRPCRoute") => ObjectKind::GrpcRoute,
            _ => return None,
        };
        let name = self.metadata.name.as_deref().filter(|n| !n.is_empty())?;
        if kind == ObjectKind::Node {
            // Nodes have no namespace.
            return Some((kind, ObjectKey::new("", name)));
        }
        let namespace = self.metadata.namespace.as_deref().filter(|n| !n.is_empty()).unwrap_or(DEFAULT_NAMESPACE);
        Some((kind, ObjectKey::new(namespace, name)))
    }
}

/// One document's outcome: an object, or its refusal (a line within the document, a message).
enum Outcome {
    Accepted(SourceObject),
    Refused { line: usize, message: String, object: Option<(ObjectKind, ObjectKey)> },
}

#[derive(Deserialize)]
struct ListItems {
    #[serde(default)]
    items: Vec<serde_json::Value>,
}

/// A document's parse error: the line inside the document and the message.
type DocError = (usize, String);

/// Parses a whole file: each object accepted or refused on its own. `Err` only when the
/// file cannot be read at all (too large, not YAML or JSON, nested too deep): then none of
/// it is taken, and its last good content stays in effect.
pub fn parse_file(path: &Path, text: &str) -> Result<Parsed, ParseError> {
    if text.len() > MAX_FILE_BYTES {
        let message = format!("file of {} bytes exceeds the limit of {MAX_FILE_BYTES} bytes", text.len());
        return Err(ParseError { path: path.to_owned(), line: 1, message });
    }
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => Format::Json,
        _ => Format::Yaml,
    };
    let documents = match format {
        Format::Json => vec![(1, text)],
        Format::Yaml => split_documents(text),
    };
    let mut parsed = Parsed::default();
    for (first_line, doc) in documents {
        if is_blank(doc) {
            continue;
        }
        let at = |line: usize, message: String| ParseError {
            path: path.to_owned(),
            line: first_line + line.saturating_sub(1),
            message,
        };
        check_nesting(doc).map_err(|(line, message)| at(line, message))?;
        let mut outcomes = Vec::new();
        parse_document(format, doc, &mut outcomes).map_err(|(line, message)| at(line, message))?;
        for outcome in outcomes {
            match outcome {
                Outcome::Accepted(object) => parsed.objects.push(Located { line: first_line, object }),
                Outcome::Refused { line, message, object } => {
                    parsed.refused.push(Refused { error: at(line, message), object })
                }
            }
        }
    }
    Ok(parsed)
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

/// Rejects documents nested deeper than [`MAX_NESTING`], counting flow collections
/// (`[`, `{`) and block indentation, without parsing. Quoted text and comments do not count.
fn check_nesting(doc: &str) -> Result<(), DocError> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    for (index, line) in doc.lines().enumerate() {
        let content = line.trim_start_matches(' ');
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let mut depth = flow;
        if flow == 0 {
            // Indentation means nothing inside a flow collection.
            let indent = line.len() - content.len();
            while indents.last().is_some_and(|&top| top >= indent) {
                indents.pop();
            }
            indents.push(indent);
            // Inline block sequences ("- - - x") nest on one line.
            depth += content.split_inclusive("- ").take_while(|part| part.trim() == "-").count();
        }
        let mut quote: Option<char> = None;
        for c in content.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '#') => break,
                (None, '[' | '{') => {
                    flow += 1;
                    depth = depth.max(flow + indents.len());
                }
                (None, ']' | '}') => flow = flow.saturating_sub(1),
                _ => {}
            }
        }
        if depth.max(indents.len()) > MAX_NESTING {
            return Err((index + 1, format!("nested deeper than {MAX_NESTING} levels")));
        }
    }
    Ok(())
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

/// Parses one document into `outcomes`; `Err` when it cannot be read as YAML or JSON at all.
fn parse_document(format: Format, doc: &str, outcomes: &mut Vec<Outcome>) -> Result<(), DocError> {
    let header: Header = from_text(format, doc)?;
    if header.kind.ends_with("List") {
        let list: ListItems = from_text(format, doc)?;
        // Items take the same path as documents; their refusals name the item (its lines are not known).
        for (index, item) in list.items.iter().enumerate() {
            let mut items = Vec::new();
            match parse_document(Format::Json, &item.to_string(), &mut items) {
                Ok(()) => outcomes.extend(items.into_iter().map(|outcome| match outcome {
                    Outcome::Refused { message, object, .. } => {
                        Outcome::Refused { line: 1, message: format!("items[{index}]: {message}"), object }
                    }
                    accepted => accepted,
                })),
                Err((_, message)) => outcomes.push(Outcome::Refused {
                    line: 1,
                    message: format!("items[{index}]: {message}"),
                    object: None,
                }),
            }
        }
        return Ok(());
    }
    let object = header.object();
    if object.is_none()
        && !matches!(
            header.kind.as_str(),
            "Service" | "EndpointSlice" | "HealthProbe" | "Node" | "HTTPRoute" | "GRPCRoute"
        )
    {
        // Another kind (a Deployment beside its Service): not ours to take or refuse.
        return Ok(());
    }
    outcomes.push(match convert_document(format, doc, &header) {
        Ok(Some(accepted)) => Outcome::Accepted(accepted),
        Ok(None) => return Ok(()),
        Err((line, message)) => Outcome::Refused { line, message, object },
    });
    Ok(())
}

/// Converts a document of one of our kinds as the API server would validate it; `None`
/// for another API version of the kind.
fn convert_document(format: Format, doc: &str, header: &Header) -> Result<Option<SourceObject>, DocError> {
    let converted = match (header.api_version.as_str(), header.kind.as_str()) {
        ("v1", "Service") => {
            let s: KubeService = from_text(format, doc)?;
            convert::service(&s, DEFAULT_NAMESPACE)
                .map(|c| SourceObject::Service(Arc::new(c)))
                .map_err(|e| (s.metadata.name, e))
        }
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            let s: KubeEndpointSlice = from_text(format, doc)?;
            convert::slice(&s, DEFAULT_NAMESPACE)
                .map(|c| SourceObject::EndpointSlice(Arc::new(c)))
                .map_err(|e| (s.metadata.name, e))
        }
        ("edgexds.io/v1alpha1", "HealthProbe") => {
            let p: KubeHealthProbe = from_text(format, doc)?;
            // The API server would refuse a probe that breaks the CRD's schema or rules,
            // so a manifest cannot hold one either.
            convert::probe(&p, DEFAULT_NAMESPACE)
                .and_then(|probe| match &probe.valid {
                    Ok(_) => Ok(SourceObject::HealthProbe(Arc::new(probe))),
                    Err(e) => Err(e.clone()),
                })
                .map_err(|e| (p.metadata.name, e))
        }
        ("gateway.networking.k8s.io/v1", "HTTPRoute") => {
            let r: GatewayHttpRoute = from_text(format, doc)?;
            crate::kubernetes::gateway::http_route(&r, DEFAULT_NAMESPACE)
                .map(|c| SourceObject::Route(Arc::new(c)))
                .map_err(|e| (r.metadata.name, e))
        }
        ("gateway.networking.k8s.io/v1", "GRPCRoute") => {
            let r: GatewayGrpcRoute = from_text(format, doc)?;
            crate::kubernetes::gateway::grpc_route(&r, DEFAULT_NAMESPACE)
                .map(|c| SourceObject::Route(Arc::new(c)))
                .map_err(|e| (r.metadata.name, e))
        }
        ("v1", "Node") => {
            let n: KubeNode = from_text(format, doc)?;
            convert::node(&n.metadata).map(|c| SourceObject::Node(Arc::new(c))).map_err(|e| (n.metadata.name, e))
        }
        _ => return Ok(None),
    };
    converted.map(Some).map_err(|(name, e)| {
        let name = name.as_deref().map_or("<unnamed>".to_owned(), convert::shorten);
        (1, format!("{} {name}: {e}", header.kind))
    })
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
