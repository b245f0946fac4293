//! Who is calling. Every request is authenticated by exactly one verified
//! credential — a JWT or an API key as a bearer token, an RFC 9421 request
//! signature, or a header set by a trusted fronting proxy — or is the anonymous principal where the virtual
//! server allows anonymous access. A credential that fails verification is
//! refused (401), never downgraded to anonymous.
//!
//! The inbound credential never reaches the upstream (MCP forbids token
//! passthrough): `Authorization`, signature headers and any inbound copy of
//! an identity header are removed before forwarding, and the policy may
//! instead send the verified identity in headers of its own.

pub mod api_key;
pub mod describe;
pub mod jwks;
pub mod jwt;
pub mod mtls;
mod net;
pub mod signature;
pub mod token_cache;

pub use net::IpNet;

use crate::mcp::headers::{SingleHeader, single};
use http::header::{AUTHORIZATION, HeaderName};
use http::{HeaderMap, HeaderValue};
pub use signature::NonceCache;
use std::fmt;
use std::net::IpAddr;
use std::time::SystemTime;

/// How a principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    Anonymous,
    ApiKey,
    Jwt,
    Mtls,
    Signature,
    TrustedHeader,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Anonymous => "anonymous",
            CredentialKind::ApiKey => "api_key",
            CredentialKind::Jwt => "jwt",
            CredentialKind::Mtls => "mtls",
            CredentialKind::Signature => "signature",
            CredentialKind::TrustedHeader => "trusted_header",
        }
    }

    /// What an unknown kind's error lists.
    pub const NAMES: &'static str = "anonymous, api_key, jwt, mtls, signature or trusted_header";

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "anonymous" => CredentialKind::Anonymous,
            "api_key" => CredentialKind::ApiKey,
            "jwt" => CredentialKind::Jwt,
            "mtls" => CredentialKind::Mtls,
            "signature" => CredentialKind::Signature,
            "trusted_header" => CredentialKind::TrustedHeader,
            _ => return None,
        })
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is calling, as established by one verified credential. A subject
/// means something only together with its credential kind and, for a JWT,
/// its issuer (OIDC makes `sub` unique per issuer only): rules, session
/// ownership and the identity sent upstream all use the three together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub kind: CredentialKind,
    /// The JWT's `iss`; `None` for every other kind.
    pub issuer: Option<String>,
    /// The JWT `sub`, the API key's id, the signing key's id, or the
    /// trusted header's value.
    pub subject: String,
    pub groups: Vec<String>,
    pub scopes: Vec<String>,
    /// When the credential stops being accepted: a JWT's `exp` plus the
    /// issuer's leeway. A GET stream ends then.
    pub expires: Option<SystemTime>,
    /// Which configured key it presented (an API key's hash, a signing
    /// key's fingerprint): an open stream is re-admitted after a reload
    /// only if that same key is still configured, not merely its id.
    pub key: Option<[u8; 32]>,
}

impl Principal {
    pub fn anonymous() -> Self {
        Self::with_groups(CredentialKind::Anonymous, "anonymous", &[])
    }

    /// A principal with a subject and groups (for rules and `explain`).
    pub fn with_groups(kind: CredentialKind, subject: &str, groups: &[String]) -> Self {
        Self {
            kind,
            issuer: None,
            subject: subject.to_owned(),
            groups: groups.to_vec(),
            scopes: Vec::new(),
            expires: None,
            key: None,
        }
    }

    /// The same principal, as issued by `issuer`.
    pub fn issued_by(mut self, issuer: &str) -> Self {
        self.issuer = Some(issuer.to_owned());
        self
    }

    /// What owns a session: kind, issuer and subject, written so that no
    /// two principals share one (the issuer's length goes first, since an
    /// issuer or a subject may hold any character).
    pub fn owner_key(&self) -> String {
        let issuer = self.issuer.as_deref().unwrap_or("");
        format!("{}:{}:{issuer}{}", self.kind.as_str(), issuer.len(), self.subject)
    }
}

/// A header an authenticating proxy in front of toolgate sets. Honoured
/// only on connections from `from`; stripped from everyone else. It must
/// appear once and not be empty: a repeated header would be read as its
/// first value by one reader and its last by another.
#[derive(Debug, Clone)]
pub struct TrustedHeader {
    pub subject: HeaderName,
    pub groups: Option<HeaderName>,
    pub from: Vec<IpNet>,
}

/// Headers toolgate sets for the upstream with the verified identity: the
/// subject with its credential kind and (for a JWT) its issuer, so that the
/// upstream can tell `alice` of one issuer from `alice` of another.
#[derive(Debug, Clone)]
pub struct UpstreamHeaders {
    pub subject: HeaderName,
    pub credential: HeaderName,
    pub issuer: HeaderName,
    pub groups: Option<HeaderName>,
}

/// RFC 9728 protected-resource metadata, per virtual server.
#[derive(Debug, Clone, Default)]
pub struct ResourceMetadata {
    /// The public base URL (`https://mcp.example.com`); when absent,
    /// `http://` and the request's Host.
    pub base_url: Option<String>,
    pub authorization_servers: Vec<String>,
    pub scopes_supported: Vec<String>,
}

/// The compiled `identity` section.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub api_keys: Vec<api_key::ApiKey>,
    pub jwt: Vec<jwt::Issuer>,
    pub trusted_header: Option<TrustedHeader>,
    pub upstream_headers: Option<UpstreamHeaders>,
    pub metadata: ResourceMetadata,
    pub signatures: Option<signature::SignatureSettings>,
    /// Verified client certificates as credentials.
    pub mtls: Option<mtls::MtlsSettings>,
    /// Inbound headers removed before forwarding (computed once).
    pub strip_inbound: Vec<HeaderName>,
    /// JWTs verified under these settings, until they expire.
    pub verified: token_cache::VerifiedTokens,
}

/// What a virtual server demands of its callers.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Whether callers without a credential are served (as `anonymous`).
    pub anonymous: bool,
    /// Credential kinds accepted; empty accepts every verified kind.
    pub credentials: Vec<CredentialKind>,
    /// Scopes every caller's token must carry.
    pub required_scopes: Vec<String>,
    /// What a JWT's `aud` must name to be accepted here: the virtual
    /// server's resource URL, or the audiences configured on it.
    pub audiences: Vec<String>,
}

/// Why a request is not authenticated or not authorized to use the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No credential, and anonymous access is not allowed (401).
    Missing,
    /// A credential was presented and failed (401, `invalid_token`).
    Invalid(String),
    /// More than one credential, or a malformed `Authorization` (400/401).
    Ambiguous(String),
    /// Verified, but this server wants another credential kind (403).
    WrongKind { kind: CredentialKind, accepted: Vec<CredentialKind> },
    /// Verified, but missing scopes (403, `insufficient_scope`).
    InsufficientScope(Vec<String>),
}

/// RFC 9421's fields, as names (a name given as a string is parsed again
/// at every lookup).
const SIGNATURE: HeaderName = HeaderName::from_static("signature");
const SIGNATURE_INPUT: HeaderName = HeaderName::from_static("signature-input");

/// Headers that carry credentials or identity and never go upstream as
/// the client sent them.
pub fn headers_to_strip(identity: &Identity) -> Vec<HeaderName> {
    let mut names = vec![AUTHORIZATION, SIGNATURE, SIGNATURE_INPUT];
    if let Some(h) = &identity.upstream_headers {
        names.extend([h.subject.clone(), h.credential.clone(), h.issuer.clone()]);
        names.extend(h.groups.clone());
    }
    if let Some(t) = &identity.trusted_header {
        names.push(t.subject.clone());
        names.extend(t.groups.clone());
    }
    names
}

/// The identity headers for the upstream, if the policy asks for them.
/// Values are percent-encoded where they hold `%`, `,` or anything but
/// visible ASCII, so a group named `cn=a,ou=b` cannot read as two groups
/// and no value is ever dropped for not fitting in a header.
pub fn upstream_identity(identity: &Identity, principal: &Principal) -> Vec<(HeaderName, HeaderValue)> {
    let Some(names) = &identity.upstream_headers else { return Vec::new() };
    let mut out = vec![
        (names.subject.clone(), header_text(&principal.subject)),
        (names.credential.clone(), HeaderValue::from_static(principal.kind.as_str())),
    ];
    if let Some(issuer) = &principal.issuer {
        out.push((names.issuer.clone(), header_text(issuer)));
    }
    if let Some(groups) = &names.groups {
        let encoded: Vec<String> = principal.groups.iter().map(|g| percent_encode(g)).collect();
        if let Ok(value) = HeaderValue::from_str(&encoded.join(",")) {
            out.push((groups.clone(), value));
        }
    }
    out
}

/// `text` with `%`, `,` and every byte outside visible ASCII as `%XX`.
pub fn percent_encode(text: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x21..=0x7e).contains(&byte) && byte != b'%' && byte != b',' {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

fn header_text(text: &str) -> HeaderValue {
    // Percent-encoded text is visible ASCII, which a header always holds.
    HeaderValue::from_str(&percent_encode(text)).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// State shared by every request: signature nonces and fetched JWKS.
#[derive(Default)]
pub struct Caches {
    pub nonces: signature::NonceCache,
    pub jwks: std::sync::Arc<jwks::RemoteKeys>,
}

/// Before [`authenticate`]: if the request carries a JWT whose issuer's
/// keys come from a URL, makes sure the shared cache has them (fetching,
/// single-flight and rate-limited, when the `kid` is unknown).
pub async fn prepare(identity: &Identity, access: &Access, headers: &HeaderMap, caches: &Caches) {
    // Only issuers with a JWKS URL need anything before verification; with
    // file keys, skip the unverified decode that `authenticate` repeats.
    if !identity.jwt.iter().any(|issuer| issuer.remote.is_some()) {
        return;
    }
    let Ok(Some(token)) = bearer_token(headers) else { return };
    if !jwt::looks_like_jwt(token) {
        return;
    }
    // A token verified against the keys in use needs none fetched: its
    // header is not decoded again (the common case, every request). Its
    // keys are still refreshed when stale, so that a key the identity
    // provider withdrew stops working within `refresh`.
    let now = std::time::SystemTime::now();
    // The remembered token's own issuer, found as `claimed` finds it.
    // Its key set is the one of that issuer's URL: the token was verified
    // with the issuer `claimed` found, in this same compiled policy.
    let remembered = identity.verified.peek(token, &access.audiences, now, |claims, set| {
        let source = identity
            .jwt
            .iter()
            .find(|issuer| issuer.issuer == claims.issuer)
            .and_then(|issuer| issuer.remote.as_ref());
        if let (Some(source), Some(set)) = (source, set) {
            caches.jwks.refresh_stale(set, source);
        }
    });
    if remembered.is_some() {
        return;
    }
    if let Ok((issuer, header)) = jwt::claimed(&identity.jwt, token)
        && let Some(source) = &issuer.remote
    {
        caches.jwks.prepare(source, header.kid.as_deref()).await;
    }
}

/// An established principal, and whether the body still has to match the
/// signed `Content-Digest` once it is read.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub principal: Principal,
    pub check_digest: bool,
}

/// Establishes the principal of one request. `client_cert` is the
/// connection's verified client certificate, a credential where
/// `identity.mtls` is configured.
pub fn authenticate(
    identity: &Identity,
    access: &Access,
    request: &signature::Request<'_>,
    peer: IpAddr,
    client_cert: Option<&mtls::ClientCertificate>,
    caches: &Caches,
) -> Result<Authenticated, AuthError> {
    let headers = request.headers;
    let bearer = bearer_token(headers)?;
    let signed = headers.contains_key(SIGNATURE) || headers.contains_key(SIGNATURE_INPUT);
    let trusted =
        identity.trusted_header.as_ref().filter(|t| t.from.iter().any(|net| net.contains(peer))).and_then(
            |t| match single(headers, &t.subject) {
                SingleHeader::Absent => None,
                found => Some((t, found)),
            },
        );
    // A certificate is a credential only where `mtls` ones are accepted:
    // elsewhere it gated the connection and another credential may speak.
    let accepts_mtls = access.credentials.is_empty() || access.credentials.contains(&CredentialKind::Mtls);
    let certified = identity.mtls.as_ref().filter(|_| accepts_mtls).zip(client_cert);
    let presented = usize::from(bearer.is_some())
        + usize::from(signed)
        + usize::from(trusted.is_some())
        + usize::from(certified.is_some());
    if presented > 1 {
        return Err(AuthError::Ambiguous("present exactly one credential".into()));
    }
    let mut check_digest = false;
    let principal = if let Some(token) = bearer {
        verify_bearer(identity, &access.audiences, token, &caches.jwks)?
    } else if signed {
        let settings = identity
            .signatures
            .as_ref()
            .ok_or_else(|| AuthError::Invalid("request signatures are not accepted by this policy".into()))?;
        let verified = signature::verify(settings, request, &caches.nonces).map_err(AuthError::Invalid)?;
        check_digest = verified.digest_covered;
        Principal {
            kind: CredentialKind::Signature,
            issuer: None,
            subject: verified.key.id.clone(),
            groups: verified.key.groups.clone(),
            scopes: verified.key.scopes.clone(),
            expires: None,
            key: Some(verified.key.fingerprint),
        }
    } else if let Some((header, value)) = trusted {
        let subject = match value {
            SingleHeader::Value(subject) if !subject.is_empty() => subject,
            SingleHeader::Repeated => {
                return Err(AuthError::Ambiguous(
                    "the trusted identity header appears more than once".into(),
                ));
            }
            _ => return Err(AuthError::Invalid("the trusted identity header is empty or not text".into())),
        };
        let groups = match header.groups.as_ref().map(|g| single(headers, g)) {
            None | Some(SingleHeader::Absent) => Vec::new(),
            Some(SingleHeader::Value(v)) => {
                v.split(',').map(|g| g.trim().to_owned()).filter(|g| !g.is_empty()).collect()
            }
            Some(SingleHeader::Repeated) => {
                return Err(AuthError::Ambiguous("the trusted groups header appears more than once".into()));
            }
            Some(SingleHeader::NotText) => {
                return Err(AuthError::Invalid("the trusted groups header is not text".into()));
            }
        };
        Principal {
            kind: CredentialKind::TrustedHeader,
            issuer: None,
            subject: subject.to_owned(),
            groups,
            scopes: Vec::new(),
            expires: None,
            key: None,
        }
    } else if let Some((settings, cert)) = certified {
        mtls::principal(settings, cert)?
    } else {
        Principal::anonymous()
    };
    admit(access, &principal)?;
    Ok(Authenticated { principal, check_digest })
}

/// Whether a virtual server admits an established principal: anonymous
/// callers only where `anonymous` is on, credential kinds per
/// `credentials`, and every required scope. `toolgate explain` judges by
/// this same function.
pub fn admit(access: &Access, principal: &Principal) -> Result<(), AuthError> {
    if principal.kind == CredentialKind::Anonymous && !access.anonymous {
        return Err(AuthError::Missing);
    }
    if !access.credentials.is_empty() && !access.credentials.contains(&principal.kind) {
        return Err(AuthError::WrongKind { kind: principal.kind, accepted: access.credentials.clone() });
    }
    let missing: Vec<String> =
        access.required_scopes.iter().filter(|s| !principal.scopes.contains(s)).cloned().collect();
    if !missing.is_empty() {
        return Err(AuthError::InsufficientScope(missing));
    }
    Ok(())
}

/// The bearer token, if `Authorization` holds one. RFC 6750 §2.1: the
/// scheme is case-insensitive; one header only.
fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(AuthError::Ambiguous("more than one Authorization header".into()));
    }
    let text = value.to_str().map_err(|_| AuthError::Invalid("Authorization is not text".into()))?;
    let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Invalid("use the Bearer scheme".into()));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Invalid("empty bearer token".into()));
    }
    Ok(Some(token))
}

fn verify_bearer(
    identity: &Identity,
    audiences: &[String],
    token: &str,
    jwks: &jwks::RemoteKeys,
) -> Result<Principal, AuthError> {
    if !identity.jwt.is_empty() && jwt::looks_like_jwt(token) {
        let now = std::time::SystemTime::now();
        let claims = match identity.verified.get(token, audiences, now) {
            Some(claims) => claims,
            None => {
                let (claims, keys) = jwt::verify_with(&identity.jwt, audiences, token, jwks)
                    .map_err(|e| AuthError::Invalid(e.0))?;
                identity.verified.insert(token, audiences, &claims, keys, now);
                claims
            }
        };
        return Ok(Principal {
            kind: CredentialKind::Jwt,
            issuer: Some(claims.issuer),
            subject: claims.subject,
            groups: claims.groups,
            scopes: claims.scopes,
            expires: Some(claims.expires),
            key: None,
        });
    }
    match api_key::find(&identity.api_keys, token) {
        Some(key) => Ok(Principal {
            kind: CredentialKind::ApiKey,
            issuer: None,
            subject: key.id.clone(),
            groups: key.groups.clone(),
            scopes: key.scopes.clone(),
            expires: None,
            key: Some(key.sha256),
        }),
        None => Err(AuthError::Invalid("unknown bearer token".into())),
    }
}
