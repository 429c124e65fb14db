//! Who may use a privileged service: an allowlist of identities (`namespace/serviceaccount`).

use tonic::Status;

use super::Identity;

/// With authentication off there are no identities to check, and everyone may: the
/// README says what that exposes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    pub enforced: bool,
    /// `namespace/serviceaccount` names.
    pub identities: Vec<String>,
}

impl Access {
    /// Enforced only when clients authenticate.
    pub fn new(enforced: bool, identities: Vec<String>) -> Self {
        Self { enforced, identities }
    }

    /// `PERMISSION_DENIED` unless `identity` is allowed to `what`, naming the flag that allows it.
    pub fn check(&self, identity: Option<&Identity>, what: &str, flag: &str) -> Result<(), Status> {
        if !self.enforced {
            return Ok(());
        }
        let Some(identity) = identity else {
            return Err(Status::unauthenticated(format!("only authenticated clients may {what}")));
        };
        if self.identities.iter().any(|allowed| *allowed == identity.name()) {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "{} may not {what}; allowed: {} (set with {flag})",
            identity.name(),
            if self.identities.is_empty() { "nobody".to_owned() } else { self.identities.join(", ") }
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_identities_pass_and_the_refusal_names_the_flag() {
        let access = Access::new(true, vec!["edge/checker".into()]);
        let checker = Identity::from_spiffe("spiffe://td/ns/edge/sa/checker").unwrap();
        let sidecar = Identity::from_spiffe("spiffe://td/ns/shop/sa/web").unwrap();
        assert!(access.check(Some(&checker), "check endpoints", "--hds-checker-identities").is_ok());
        let refused = access.check(Some(&sidecar), "check endpoints", "--hds-checker-identities").unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            refused.message(),
            "shop/web may not check endpoints; allowed: edge/checker (set with --hds-checker-identities)"
        );
        assert!(Access::default().check(None, "anything", "--x").is_ok(), "not enforced without authentication");
    }
}
