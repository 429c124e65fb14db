//! A client's identity, as its certificate (a SPIFFE ID) or its ServiceAccount token (as
//! the API server vouches for it) shows it.

use std::fmt;

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
}
