//! The per-pod overrides of the sidecar template, from the pod's annotations. Annotations
//! are written by whoever may create pods: each is checked, and a bad one refuses the pod
//! with a message naming it, never silently ignored.

use std::collections::BTreeMap;

use serde_json::{Value, json};

pub const IMAGE: &str = "edgexds.io/proxy-image";
pub const CPU_REQUEST: &str = "edgexds.io/proxy-cpu";
pub const MEMORY_REQUEST: &str = "edgexds.io/proxy-memory";
pub const CPU_LIMIT: &str = "edgexds.io/proxy-cpu-limit";
pub const MEMORY_LIMIT: &str = "edgexds.io/proxy-memory-limit";
pub const ARGS: &str = "edgexds.io/proxy-args";
pub const PROXY_ENV: &str = "edgexds.io/proxy-env";

/// At most this many extra arguments, each at most [`MAX_ARG_BYTES`].
const MAX_ARGS: usize = 32;
const MAX_ARG_BYTES: usize = 256;
/// Arguments that would replace the generated bootstrap or its identity: refused.
const RESERVED_ARGS: [&str; 7] =
    ["-c", "--config-path", "--config-yaml", "--service-node", "--service-cluster", "--service-zone", "--mode"];

/// Why a pod is refused; the API server relays it to whoever created the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(String);

impl Refusal {
    pub fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }

    pub fn message(&self) -> String {
        format!("edgexds sidecar injection: {}", self.0)
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    pub image: Option<String>,
    /// `(requests|limits, cpu|memory, quantity)`.
    resources: Vec<(&'static str, &'static str, String)>,
    pub extra_args: Vec<String>,
    /// Whether app containers get the proxy variables.
    pub proxy_env: bool,
}

impl Overrides {
    pub fn of(annotations: Option<&BTreeMap<String, String>>) -> Result<Self, Refusal> {
        let empty = BTreeMap::new();
        let annotations = annotations.unwrap_or(&empty);
        let get = |key: &str| annotations.get(key).map(String::as_str);
        let mut overrides = Self { proxy_env: true, ..Self::default() };
        if let Some(image) = get(IMAGE) {
            if image.is_empty() || image.len() > 512 || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Refusal::new(format!("annotation {IMAGE} {image:?} is not an image reference")));
            }
            overrides.image = Some(image.to_owned());
        }
        for (key, section, resource) in [
            (CPU_REQUEST, "requests", "cpu"),
            (MEMORY_REQUEST, "requests", "memory"),
            (CPU_LIMIT, "limits", "cpu"),
            (MEMORY_LIMIT, "limits", "memory"),
        ] {
            if let Some(value) = get(key) {
                if !is_quantity(value) {
                    return Err(Refusal::new(format!(
                        "annotation {key} {value:?} is not a quantity (e.g. 100m, 64Mi)"
                    )));
                }
                overrides.resources.push((section, resource, value.to_owned()));
            }
        }
        if let Some(args) = get(ARGS) {
            overrides.extra_args = parse_args(args)?;
        }
        overrides.proxy_env = match get(PROXY_ENV) {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(Refusal::new(format!(
                    "annotation {PROXY_ENV} is {other:?}; it takes \"true\" or \"false\""
                )));
            }
        };
        Ok(overrides)
    }

    /// Sets the annotated quantities over the template's `resources`.
    pub fn apply_resources(&self, resources: &mut Value) {
        if !resources.is_object() {
            *resources = json!({});
        }
        for (section, resource, value) in &self.resources {
            if !resources[*section].is_object() {
                resources[*section] = json!({});
            }
            resources[*section][*resource] = json!(value);
        }
    }
}

fn parse_args(text: &str) -> Result<Vec<String>, Refusal> {
    let refuse = |why: String| Refusal::new(format!("annotation {ARGS}: {why}"));
    let args: Vec<String> = serde_json::from_str(text)
        .map_err(|_| refuse(format!("{text:?} is not a JSON array of strings, e.g. [\"--concurrency\", \"2\"]")))?;
    if args.len() > MAX_ARGS {
        return Err(refuse(format!("{} arguments; at most {MAX_ARGS}", args.len())));
    }
    for arg in &args {
        if arg.len() > MAX_ARG_BYTES || arg.chars().any(char::is_control) {
            return Err(refuse(format!(
                "argument {:?} is longer than {MAX_ARG_BYTES} bytes or has control characters",
                truncate(arg)
            )));
        }
        let flag = arg.split('=').next().unwrap_or_default();
        if RESERVED_ARGS.contains(&flag) {
            return Err(refuse(format!("{flag} would replace the sidecar's generated bootstrap or identity")));
        }
    }
    Ok(args)
}

fn truncate(text: &str) -> String {
    text.chars().take(40).collect()
}

/// A Kubernetes resource quantity: a decimal number with an optional binary or decimal SI
/// suffix or exponent (`100m`, `0.5`, `64Mi`, `1e3`).
fn is_quantity(text: &str) -> bool {
    if text.is_empty() || text.len() > 64 {
        return false;
    }
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let number_end = unsigned.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_end);
    let valid_number = number.chars().filter(|c| *c == '.').count() <= 1 && number.chars().any(|c| c.is_ascii_digit());
    let valid_suffix = matches!(
        suffix,
        "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
        .is_some_and(|e| !e.is_empty() && e.chars().all(|c| c.is_ascii_digit()));
    valid_number && valid_suffix
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(pairs: &[(&str, &str)]) -> Result<Overrides, Refusal> {
        Overrides::of(Some(&pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()))
    }

    #[test]
    fn quantities_take_the_api_servers_forms_and_nothing_else() {
        for good in ["100m", "0.5", "64Mi", "1Gi", "1e3", "2", ".5"] {
            assert!(is_quantity(good), "{good}");
        }
        for bad in ["", "lots", "64MB", "1..2", "m", "1e", "64 Mi"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn each_bad_annotation_refuses_the_pod_with_a_message_naming_it() {
        let cases = [
            (IMAGE, "envoy proxy", "is not an image reference"),
            (CPU_REQUEST, "lots", "is not a quantity"),
            (MEMORY_LIMIT, "64MB", "is not a quantity"),
            (ARGS, "--concurrency 2", "is not a JSON array of strings"),
            (ARGS, "[\"--config-yaml\", \"{}\"]", "would replace the sidecar's generated bootstrap"),
            (ARGS, "[\"--service-node=x\"]", "would replace"),
            (PROXY_ENV, "off", "it takes \"true\" or \"false\""),
        ];
        for (key, value, expected) in cases {
            let refusal = of(&[(key, value)]).expect_err(key);
            let message = refusal.message();
            assert!(message.contains(key) && message.contains(expected), "{key}={value}: {message}");
        }
    }

    #[test]
    fn annotated_resources_override_the_templates_and_keep_the_rest() {
        let overrides = of(&[(CPU_REQUEST, "10m"), (MEMORY_LIMIT, "128Mi")]).unwrap();
        let mut resources = json!({"requests": {"cpu": "50m", "memory": "64Mi"}});
        overrides.apply_resources(&mut resources);
        assert_eq!(resources, json!({"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}));
    }
}
