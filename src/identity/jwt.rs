//! JWT bearer tokens (RFC 7519), verified with jsonwebtoken on aws-lc-rs.
//!
//! The audience is the virtual server's (RFC 8707 and MCP authorization:
//! each MCP endpoint is its own resource, so a token for `/mcp` is not one
//! for `/servers/ops/mcp`). Per issuer:
//! resource), accepted algorithms, leeway, required claims, and the claims
//! that carry groups and scopes. Keys come from a JWKS; the token's `kid`
//! picks the key, and the key's type must fit the token's `alg`, so an
//! HS256 token "signed" with an RSA public key, `alg: none`, or a `kid`
//! naming a key of another type are all refused. `exp` is required and
//! checked, `nbf` is checked when present (jsonwebtoken 9 skipped string
//! `nbf`/`exp`, CVE-2026-25537; 11 does not).

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One trusted issuer, compiled.
#[derive(Clone)]
pub struct Issuer {
    pub issuer: String,
    pub algorithms: Vec<Algorithm>,
    pub leeway: Duration,
    pub required_claims: Vec<String>,
    pub groups_claim: String,
    pub scopes_claim: String,
    /// Keys by `kid`, with the algorithm family each fits (from a file).
    pub keys: HashMap<String, DecodingKey>,
    /// Or: keys fetched from a JWKS URL, held in the shared cache.
    pub remote: Option<super::jwks::RemoteJwks>,
    /// A shared secret for HS256/384/512, if configured.
    pub secret: Option<DecodingKey>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("issuer", &self.issuer)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// What a verified token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The issuer that signed it: `sub` is unique only within it.
    pub issuer: String,
    pub subject: String,
    pub groups: Vec<String>,
    pub scopes: Vec<String>,
    /// When toolgate stops accepting it: `exp` plus the issuer's leeway.
    pub expires: SystemTime,
}

/// Why a token was refused; the text goes into the 401's
/// `error_description`, so it names the rule, never key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub String);

/// Builds the key map from a JWKS document.
pub fn keys_from_jwks(text: &str) -> Result<HashMap<String, DecodingKey>, String> {
    let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            return Err("every JWKS key needs a `kid`".into());
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key `{kid}`: {e}"))?;
        keys.insert(kid, key);
    }
    Ok(keys)
}

/// Whether `token` has the shape of a JWS compact serialisation.
pub fn looks_like_jwt(token: &str) -> bool {
    // Three parts: two dots.
    memchr::memchr_iter(b'.', token.as_bytes()).count() == 2
}

/// The issuer a token claims and the `kid` it names, read without
/// verification, to pick keys (and, for a JWKS URL, to fetch them first).
pub fn claimed<'i>(
    issuers: &'i [Issuer],
    token: &str,
) -> Result<(&'i Issuer, jsonwebtoken::Header), Rejected> {
    // The parsers' own messages quote the input: say what failed instead.
    let header = jsonwebtoken::decode_header(token).map_err(|_| unreadable_header(token))?;
    let unverified: Value = jsonwebtoken::dangerous::insecure_decode_claims(token)
        .map_err(|_| Rejected("malformed token: its claims are not a JSON object".into()))?;
    let iss =
        unverified.get("iss").and_then(Value::as_str).ok_or_else(|| Rejected("token has no `iss`".into()))?;
    let issuer = issuers
        .iter()
        .find(|i| i.issuer == iss)
        .ok_or_else(|| Rejected(format!("issuer `{}` is not trusted", shorten(iss))))?;
    Ok((issuer, header))
}

/// Why a token's header could not be read: most often an `alg` outside
/// RFC 7518 (`none` above all), said as such.
fn unreadable_header(token: &str) -> Rejected {
    use base64::Engine;
    let header = token.split('.').next().unwrap_or_default();
    let alg = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|value| value.get("alg").and_then(Value::as_str).map(shorten));
    match alg {
        Some(alg) => Rejected(format!("algorithm `{alg}` is not accepted")),
        None => Rejected("malformed token: its header is not a JWS header".into()),
    }
}

/// Verifies `token` against the issuers (the one whose `iss` matches), for
/// a resource known by `audiences`: the token's `aud` must name one.
pub fn verify(
    issuers: &[Issuer],
    audiences: &[String],
    token: &str,
    remote: &super::jwks::RemoteKeys,
) -> Result<Claims, Rejected> {
    verify_with(issuers, audiences, token, remote).map(|(claims, _)| claims)
}

/// [`verify`], also giving the fetched keys the token was verified with
/// (and the URL's key set they belong to), when its issuer's keys come
/// from a JWKS URL.
pub fn verify_with(
    issuers: &[Issuer],
    audiences: &[String],
    token: &str,
    remote: &super::jwks::RemoteKeys,
) -> Result<(Claims, Option<super::jwks::VerifiedWith>), Rejected> {
    let (issuer, header) = claimed(issuers, token)?;
    let fetched = issuer.remote.as_ref().map(|source| {
        let set = remote.set(&source.url);
        let keys = set.keys();
        (set, keys)
    });
    let keys = match &fetched {
        Some((_, keys)) => &**keys,
        None => &issuer.keys,
    };
    if !issuer.algorithms.contains(&header.alg) {
        return Err(Rejected(format!("algorithm {:?} is not accepted for this issuer", header.alg)));
    }
    let key = match header.alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            issuer.secret.as_ref().ok_or_else(|| Rejected("this issuer has no shared secret".into()))?
        }
        _ => {
            let kid = header.kid.as_deref().ok_or_else(|| Rejected("token has no `kid`".into()))?;
            keys.get(kid).ok_or_else(|| Rejected(format!("unknown key `{}`", shorten(kid))))?
        }
    };
    if key.family() != header.alg.family() {
        return Err(Rejected(format!("key type does not fit algorithm {:?}", header.alg)));
    }
    let mut validation = Validation::new(header.alg);
    validation.algorithms = vec![header.alg];
    validation.leeway = issuer.leeway.as_secs();
    validation.validate_exp = true;
    validation.validate_nbf = true;
    // A virtual server that accepts JWTs always has an audience (the policy
    // compiler sees to it); one that has none accepts no JWT, and its
    // caller is refused for the credential kind once verified.
    validation.validate_aud = !audiences.is_empty();
    validation.set_audience(audiences);
    validation.set_issuer(&[&issuer.issuer]);
    let mut required: Vec<&str> = vec!["exp", "iss", "aud", "sub"];
    required.extend(issuer.required_claims.iter().map(String::as_str).filter(|c| ["nbf"].contains(c)));
    validation.set_required_spec_claims(&required);
    let data = jsonwebtoken::decode::<Value>(token, key, &validation).map_err(|e| Rejected(describe(&e)))?;
    let claims = data.claims;
    // A token issued in the future (beyond leeway) was minted by a clock or
    // a forger toolgate should not trust; jsonwebtoken does not check `iat`.
    if let Some(iat) = claims.get("iat") {
        let now = jsonwebtoken::get_current_timestamp();
        match iat.as_u64() {
            Some(iat) if iat <= now + issuer.leeway.as_secs() => {}
            Some(_) => return Err(Rejected("token is issued in the future (iat)".into())),
            None => return Err(Rejected("token `iat` is not a number".into())),
        }
    }
    for claim in &issuer.required_claims {
        if claims.get(claim).is_none_or(Value::is_null) {
            return Err(Rejected(format!("token lacks the required claim `{claim}`")));
        }
    }
    let subject = match claims.get("sub").and_then(Value::as_str) {
        Some(sub) if !sub.is_empty() => sub.to_owned(),
        _ => return Err(Rejected("token `sub` must be a non-empty string".into())),
    };
    // Validated above as present and not past; a fraction is rounded down.
    let exp = claims.get("exp").and_then(Value::as_f64).filter(|exp| exp.is_finite() && *exp >= 0.0);
    let exp = exp.ok_or_else(|| Rejected("token `exp` is not a number".into()))?;
    // Capped (at some 35,000 years) so the time is representable.
    let far = Duration::from_secs(1 << 40);
    let expires = UNIX_EPOCH + Duration::from_secs(exp as u64).saturating_add(issuer.leeway).min(far);
    let claims = Claims {
        issuer: issuer.issuer.clone(),
        subject,
        expires,
        groups: strings(claims.get(&issuer.groups_claim)),
        scopes: strings(claims.get(&issuer.scopes_claim)),
    };
    Ok((claims, fetched))
}

/// A claim as a list of strings: an array of strings, or one
/// space-separated string (the `scope` convention, RFC 8693 §4.2).
fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        Some(Value::String(text)) => text.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

fn describe(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "token has expired".into(),
        ErrorKind::ImmatureSignature => "token is not valid yet (nbf)".into(),
        ErrorKind::InvalidAudience => "token is not for this resource (aud)".into(),
        ErrorKind::InvalidIssuer => "token issuer does not match".into(),
        ErrorKind::InvalidSignature => "token signature does not verify".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("token lacks the required claim `{claim}`"),
        ErrorKind::InvalidAlgorithm => "token algorithm does not fit the key".into(),
        ErrorKind::Json(_) | ErrorKind::Utf8(_) | ErrorKind::Base64(_) | ErrorKind::InvalidToken => {
            "malformed token".into()
        }
        // Other kinds' messages may quote the token; name the kind only.
        _ => "token refused".into(),
    }
}

fn shorten(text: &str) -> String {
    text.chars().take(80).filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::crypto;

    /// Verifies a JWS compact serialisation's signature with a key loaded the
    /// way production loads keys: from a JWKS document.
    fn verifies(jwk: serde_json::Value, kid: &str, compact: &str, alg: Algorithm) -> bool {
        let keys = keys_from_jwks(&serde_json::json!({ "keys": [jwk] }).to_string()).unwrap_or_default();
        let Some(key) = keys.get(kid) else { return false };
        let Some((message, signature)) = compact.rsplit_once('.') else { return false };
        crypto::verify(signature, message.as_bytes(), key, alg).unwrap_or(false)
    }

    const RFC7515_PAYLOAD: &str =
        "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";

    #[test]
    fn rfc7515_a1_hs256() {
        let jwk = serde_json::json!({ "kty": "oct", "kid": "a1",
            "k": "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow" });
        let compact = format!(
            "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.{RFC7515_PAYLOAD}.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
        );
        assert!(verifies(jwk.clone(), "a1", &compact, Algorithm::HS256));
        let tampered = compact.replace(".dBjf", ".eBjf");
        assert!(!verifies(jwk, "a1", &tampered, Algorithm::HS256));
    }

    #[test]
    fn rfc7515_a3_es256() {
        let jwk = serde_json::json!({ "kty": "EC", "crv": "P-256", "kid": "a3",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0" });
        let compact = format!(
            "eyJhbGciOiJFUzI1NiJ9.{RFC7515_PAYLOAD}.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
        );
        assert!(verifies(jwk.clone(), "a3", &compact, Algorithm::ES256));
        // The key's family must fit the algorithm (RFC 7518 §3.1).
        let keys = keys_from_jwks(&serde_json::json!({ "keys": [jwk] }).to_string()).unwrap_or_default();
        assert_eq!(keys.get("a3").map(DecodingKey::family), Some(Algorithm::ES256.family()));
        assert_ne!(Algorithm::HS256.family(), Algorithm::ES256.family());
    }

    #[test]
    fn rfc8037_a4_ed25519() {
        let jwk = serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "kid": "a4",
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" });
        let compact = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
        assert!(verifies(jwk.clone(), "a4", compact, Algorithm::EdDSA));
        let other_payload =
            compact.replace("RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc", "RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmcu");
        assert!(!verifies(jwk, "a4", &other_payload, Algorithm::EdDSA));
    }

    #[test]
    fn jwks_documents_are_checked() {
        assert!(keys_from_jwks("{").is_err());
        assert!(keys_from_jwks(r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#)
            .unwrap_err()
            .contains("kid"));
    }
}
