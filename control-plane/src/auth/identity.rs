//! A client's identity, as its certificate (a SPIFFE ID) or its ServiceAccount token (as
//! the API server vouches for it) shows it.

use std::fmt;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::value::Kind;
use tonic::Status;

/// Who a verified client is. Only what a verifier vouched for is here: a namespace and
/// ServiceAccount always, a pod and node only when a bound token carries them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub namespace: String,
    pub service_account: String,
    /// For bound tokens: the pod and node the API server says the token belongs to.
    pub pod: Option<String>,
    pub node: Option<String>,
    /// The SPIFFE trust domain, for certificate identities.
    pub trust_domain: Option<String>,
}

impl Identity {
    /// `spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>`, the shape Istio, Linkerd
    /// and cert-manager's CSI driver issue; anything else is not an identity we understand.
    pub fn from_spiffe(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix("spiffe://")?;
        let (trust_domain, path) = rest.split_once('/')?;
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            ["ns", namespace, "sa", account] if valid(trust_domain) && valid(namespace) && valid(account) => {
                Some(Self {
                    namespace: (*namespace).to_owned(),
                    service_account: (*account).to_owned(),
                    pod: None,
                    node: None,
                    trust_domain: Some(trust_domain.to_owned()),
                })
            }
            _ => None,
        }
    }

    /// `<namespace>/<serviceaccount>`: how flags such as `--hds-checker-identities` name it.
    pub fn name(&self) -> String {
        format!("{}/{}", self.namespace, self.service_account)
    }
}

impl Identity {
    /// `PERMISSION_DENIED` when the node a client announces contradicts its identity: a
    /// namespace in its metadata (`NAMESPACE` as Istio sets it, or `namespace`) other than
    /// its identity's, or a pod name other than the one its bound token names.
    pub fn agrees_with(&self, node: &Node) -> Result<(), Status> {
        // Every spelling a node gives must say the same: a contradiction is a lie in one of them.
        let field = |keys: [&str; 2]| -> Result<Option<String>, Status> {
            let Some(metadata) = node.metadata.as_ref() else { return Ok(None) };
            let said: Vec<(&str, &String)> = keys
                .iter()
                .filter_map(|key| match metadata.fields.get(*key)?.kind.as_ref()? {
                    Kind::StringValue(value) if !value.is_empty() => Some((*key, value)),
                    _ => None,
                })
                .collect();
            match said.as_slice() {
                [(a, first), (b, second)] if first != second => Err(Status::permission_denied(format!(
                    "node {} says {a} {first} and {b} {second}: one node, one answer",
                    node.id
                ))),
                _ => Ok(said.first().map(|(_, value)| (*value).clone())),
            }
        };
        if let Some(namespace) = field(["NAMESPACE", "namespace"])?
            && namespace != self.namespace
        {
            return Err(Status::permission_denied(format!(
                "node {} says namespace {namespace}, but the client is {self}",
                node.id
            )));
        }
        if let (Some(pod), Some(bound)) = (field(["POD_NAME", "pod_name"])?, &self.pod)
            && pod != *bound
        {
            return Err(Status::permission_denied(format!(
                "node {} says pod {pod}, but the client is {self}",
                node.id
            )));
        }
        Ok(())
    }
}

fn valid(part: &str) -> bool {
    !part.is_empty() && part.len() <= 253 && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.service_account)?;
        if let Some(pod) = &self.pod {
            write!(f, " (pod {pod}")?;
            if let Some(node) = &self.node {
                write!(f, " on {node}")?;
            }
            write!(f, ")")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spiffe_id_names_namespace_and_service_account_and_nothing_else_passes() {
        let id = Identity::from_spiffe("spiffe://cluster.local/ns/shop/sa/web").unwrap();
        assert_eq!((id.namespace.as_str(), id.service_account.as_str()), ("shop", "web"));
        assert_eq!(id.trust_domain.as_deref(), Some("cluster.local"));
        assert_eq!(id.name(), "shop/web");
        for bad in [
            "https://cluster.local/ns/shop/sa/web",
            "spiffe://cluster.local/ns/shop",
            "spiffe://cluster.local/ns/shop/sa/web/extra",
            "spiffe://cluster.local/ns//sa/web",
            "spiffe:///ns/shop/sa/web",
            "spiffe://cluster.local/ns/sh op/sa/web",
        ] {
            assert_eq!(Identity::from_spiffe(bad), None, "{bad}");
        }
    }

    fn node(fields: &[(&str, &str)]) -> Node {
        use envoy_types::pb::google::protobuf::{Struct, Value};
        let fields = fields
            .iter()
            .map(|(k, v)| (k.to_string(), Value { kind: Some(Kind::StringValue(v.to_string())) }))
            .collect();
        Node { id: "sidecar-1".into(), metadata: Some(Struct { fields }), ..Default::default() }
    }

    #[test]
    fn a_node_that_names_another_namespace_or_pod_than_its_identity_is_refused() {
        let mut id = Identity::from_spiffe("spiffe://td/ns/shop/sa/web").unwrap();
        assert!(id.agrees_with(&node(&[])).is_ok(), "a node that says nothing contradicts nothing");
        assert!(id.agrees_with(&node(&[("NAMESPACE", "shop")])).is_ok());
        let refused = id.agrees_with(&node(&[("namespace", "payments")])).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert_eq!(refused.message(), "node sidecar-1 says namespace payments, but the client is shop/web");
        id.pod = Some("web-1".into());
        assert!(id.agrees_with(&node(&[("POD_NAME", "web-1")])).is_ok());
        assert!(id.agrees_with(&node(&[("POD_NAME", "web-2")])).is_err());
    }

    #[test]
    fn a_node_whose_two_spellings_of_a_field_contradict_each_other_is_refused() {
        let mut id = Identity::from_spiffe("spiffe://td/ns/shop/sa/web").unwrap();
        id.pod = Some("web-1".into());
        let refused = id.agrees_with(&node(&[("NAMESPACE", "shop"), ("namespace", "payments")])).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(refused.message().contains("says NAMESPACE shop and namespace payments"), "{}", refused.message());
        assert!(id.agrees_with(&node(&[("POD_NAME", "web-1"), ("pod_name", "web-9")])).is_err());
        assert!(id.agrees_with(&node(&[("NAMESPACE", "shop"), ("namespace", "shop")])).is_ok(), "agreeing is fine");
    }
}
