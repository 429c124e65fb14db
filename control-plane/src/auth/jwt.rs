//! What can be known of a ServiceAccount token without asking the API server: that it is a
//! JWT, unexpired, for our audience, from the cluster's issuer, and signed by one of the
//! keys the API server publishes for service-account issuer discovery
//! (`/.well-known/openid-configuration`, `/openid/v1/jwks`). A token failing any of these is
//! refused here and costs the API server nothing; only one passing them all is reviewed.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use ring::signature::{ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;

/// The issuer and its signing keys, by key id.
#[derive(Clone, Debug, Default)]
pub struct IssuerKeys {
    pub issuer: String,
    keys: HashMap<String, Key>,
}

#[derive(Clone, Debug)]
enum Key {
    /// P-256: the uncompressed point.
    Es256(Vec<u8>),
    Rs256 {
        n: Vec<u8>,
        e: Vec<u8>,
    },
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    #[serde(default)]
    kid: String,
    kty: String,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    iss: String,
    aud: Option<Audience>,
    exp: Option<u64>,
    #[serde(default)]
    nbf: Option<u64>,
}

fn unbase64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

impl IssuerKeys {
    /// The issuer of the discovery document and the keys of the JWKS document; keys of a
    /// type or curve not used for ServiceAccount tokens are skipped.
    pub fn parse(discovery: &str, jwks: &str) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Discovery {
            issuer: String,
        }
        let discovery: Discovery =
            serde_json::from_str(discovery).map_err(|e| format!("the issuer discovery document: {e}"))?;
        let jwks: Jwks = serde_json::from_str(jwks).map_err(|e| format!("the JWKS document: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in jwks.keys {
            let key = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
                ("EC", Some("P-256")) => {
                    let (Some(x), Some(y)) = (jwk.x.as_deref().and_then(unbase64), jwk.y.as_deref().and_then(unbase64))
                    else {
                        continue;
                    };
                    Key::Es256([&[4u8][..], &x, &y].concat())
                }
                ("RSA", _) => {
                    let (Some(n), Some(e)) = (jwk.n.as_deref().and_then(unbase64), jwk.e.as_deref().and_then(unbase64))
                    else {
                        continue;
                    };
                    Key::Rs256 { n, e }
                }
                _ => continue,
            };
            keys.insert(jwk.kid, key);
        }
        Ok(Self { issuer: discovery.issuer, keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Why a token was refused without a review.
#[derive(Debug, PartialEq, Eq)]
pub enum LocalRefusal {
    /// Not a JWT, expired, for another audience or issuer, or badly signed.
    Invalid(String),
    /// Signed with a key id the keys do not hold: they may be out of date.
    UnknownKey(String),
}

/// Checks `token` as far as it can be checked here. `keys`: the issuer's, when known; without
/// them, the shape, expiry and audience are still checked, and the rest is the review's.
pub fn check(token: &str, audiences: &[String], keys: Option<&IssuerKeys>) -> Result<(), LocalRefusal> {
    let invalid = |why: &str| LocalRefusal::Invalid(why.to_owned());
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("not a JWT (three dot-separated parts)"));
    };
    let header: Header =
        unbase64(header).and_then(|h| serde_json::from_slice(&h).ok()).ok_or_else(|| invalid("not a JWT header"))?;
    let claims: Claims =
        unbase64(payload).and_then(|c| serde_json::from_slice(&c).ok()).ok_or_else(|| invalid("not JWT claims"))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    match claims.exp {
        None => return Err(invalid("the token has no expiry (exp)")),
        Some(exp) if exp <= now => return Err(invalid("the token has expired")),
        Some(_) => {}
    }
    if claims.nbf.is_some_and(|nbf| nbf > now + 60) {
        return Err(invalid("the token is not valid yet (nbf)"));
    }
    let granted: Vec<&str> = match &claims.aud {
        Some(Audience::One(one)) => vec![one.as_str()],
        Some(Audience::Many(many)) => many.iter().map(String::as_str).collect(),
        None => Vec::new(),
    };
    if !audiences.is_empty() && !granted.iter().any(|a| audiences.iter().any(|ours| ours == a)) {
        return Err(LocalRefusal::Invalid(format!("the token is not for audience {}", audiences.join(" or "))));
    }
    let Some(keys) = keys.filter(|k| !k.is_empty()) else { return Ok(()) };
    if claims.iss != keys.issuer {
        return Err(LocalRefusal::Invalid(format!("the token is not from this cluster's issuer {}", keys.issuer)));
    }
    // The API server's own tokens name their key; one without a name may be signed by any.
    let candidates: Vec<&Key> = match header.kid.as_str() {
        "" => keys.keys.values().collect(),
        kid => vec![keys.keys.get(kid).ok_or_else(|| LocalRefusal::UnknownKey(kid.to_owned()))?],
    };
    let signature = unbase64(signature).ok_or_else(|| invalid("the signature is not base64url"))?;
    let signed = &token.as_bytes()[..header_and_payload_len(token)];
    if candidates.iter().any(|key| key.verifies(&header.alg, signed, &signature)) {
        Ok(())
    } else {
        Err(invalid("the signature does not verify against the cluster's keys"))
    }
}

impl Key {
    /// Whether `signature` is this key's, by `alg`, over `signed`.
    fn verifies(&self, alg: &str, signed: &[u8], signature: &[u8]) -> bool {
        match (self, alg) {
            (Key::Es256(point), "ES256") => {
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).verify(signed, signature).is_ok()
            }
            (Key::Rs256 { n, e }, "RS256") => {
                RsaPublicKeyComponents { n, e }.verify(&RSA_PKCS1_2048_8192_SHA256, signed, signature).is_ok()
            }
            _ => false,
        }
    }
}

/// The length of `header.payload`, the part a JWT signs.
fn header_and_payload_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(token.len())
}

/// How long until the token's `exp`, if it has one.
pub fn expires_in(token: &str) -> Option<std::time::Duration> {
    let payload = token.split('.').nth(1)?;
    let claims: Claims = serde_json::from_slice(&unbase64(payload)?).ok()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(std::time::Duration::from_secs(claims.exp?.saturating_sub(now)))
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

    use super::*;

    fn encode(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    struct Issuer {
        pair: EcdsaKeyPair,
        keys: IssuerKeys,
    }

    fn issuer() -> Issuer {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref();
        let jwks = format!(
            r#"{{"keys":[{{"kid":"k1","kty":"EC","crv":"P-256","x":"{}","y":"{}"}}]}}"#,
            encode(&point[1..33]),
            encode(&point[33..])
        );
        let keys = IssuerKeys::parse(r#"{"issuer":"https://kubernetes.default.svc"}"#, &jwks).unwrap();
        Issuer { pair, keys }
    }

    fn sign(issuer: &Issuer, kid: &str, claims: serde_json::Value) -> String {
        let header = encode(format!(r#"{{"alg":"ES256","kid":"{kid}"}}"#).as_bytes());
        let signed = format!("{header}.{}", encode(claims.to_string().as_bytes()));
        let signature = issuer.pair.sign(&SystemRandom::new(), signed.as_bytes()).unwrap();
        format!("{signed}.{}", encode(signature.as_ref()))
    }

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn only_a_well_formed_unexpired_token_for_our_audience_signed_by_the_cluster_passes() {
        let issuer = issuer();
        let audiences = vec!["edgexds".to_owned()];
        let claims =
            |exp: u64, aud: &str, iss: &str| serde_json::json!({"iss": iss, "aud": [aud], "exp": exp, "sub": "x"});
        let iss = "https://kubernetes.default.svc";
        let good = sign(&issuer, "k1", claims(now() + 600, "edgexds", iss));
        assert_eq!(check(&good, &audiences, Some(&issuer.keys)), Ok(()));
        let refused = |token: &str| match check(token, &audiences, Some(&issuer.keys)) {
            Err(LocalRefusal::Invalid(why)) => why,
            other => panic!("{other:?}"),
        };
        assert_eq!(refused("not-a-token"), "not a JWT (three dot-separated parts)");
        assert_eq!(refused(&sign(&issuer, "k1", claims(now() - 1, "edgexds", iss))), "the token has expired");
        assert_eq!(
            refused(&sign(&issuer, "k1", claims(now() + 600, "api", iss))),
            "the token is not for audience edgexds"
        );
        assert!(refused(&sign(&issuer, "k1", claims(now() + 600, "edgexds", "https://elsewhere"))).contains("issuer"));
        let forged = sign(&self::issuer(), "k1", claims(now() + 600, "edgexds", iss));
        assert_eq!(refused(&forged), "the signature does not verify against the cluster's keys");
        assert_eq!(
            check(&sign(&issuer, "k9", claims(now() + 600, "edgexds", iss)), &audiences, Some(&issuer.keys)),
            Err(LocalRefusal::UnknownKey("k9".into()))
        );
        assert_eq!(check(&forged, &audiences, None), Ok(()), "without keys, the signature is the review's to check");
    }
}
