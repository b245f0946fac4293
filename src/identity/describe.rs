//! The principal a credential would establish, described without the
//! credential itself: what `toolgate explain` judges. It follows
//! [`authenticate`](super::authenticate): an API key or a signing key must
//! be configured, and brings its own groups and scopes; a JWT must come
//! from a configured issuer, and brings the groups and scopes it claims.

use super::{AuthError, CredentialKind, Identity, Principal};
use std::time::SystemTime;

/// What is known of a caller: how it authenticates and what its credential
/// says.
#[derive(Debug, Clone, Default)]
pub struct Described {
    pub kind: Option<CredentialKind>,
    pub subject: String,
    pub issuer: Option<String>,
    pub groups: Vec<String>,
    pub scopes: Vec<String>,
    /// The configured key it presented, when known: a key configured under
    /// the same id with other material does not describe it.
    pub key: Option<[u8; 32]>,
    /// When the credential stops being accepted.
    pub expires: Option<SystemTime>,
}

impl Described {
    /// An established principal, to be established again under another
    /// policy (an open stream after a reload).
    pub fn of(principal: &Principal) -> Self {
        Self {
            kind: Some(principal.kind),
            subject: principal.subject.clone(),
            issuer: principal.issuer.clone(),
            groups: principal.groups.clone(),
            scopes: principal.scopes.clone(),
            key: principal.key,
            expires: principal.expires,
        }
    }
}

/// The principal, or why no such credential could authenticate under
/// `identity` (the proxy's 401).
pub fn principal(identity: &Identity, described: &Described) -> Result<Principal, AuthError> {
    let kind = described.kind.unwrap_or(if described.subject == "anonymous" {
        CredentialKind::Anonymous
    } else {
        CredentialKind::Jwt
    });
    if described.expires.is_some_and(|at| at <= SystemTime::now()) {
        return Err(AuthError::Invalid("the credential has expired".into()));
    }
    let with = |groups: &[String], scopes: &[String]| Principal {
        kind,
        issuer: None,
        subject: described.subject.clone(),
        groups: groups.to_vec(),
        scopes: scopes.to_vec(),
        expires: described.expires,
        key: described.key,
    };
    let same_key = |configured: &[u8; 32]| described.key.is_none_or(|key| &key == configured);
    match kind {
        CredentialKind::Anonymous => Ok(Principal::anonymous()),
        CredentialKind::ApiKey => identity
            .api_keys
            .iter()
            .find(|key| key.id == described.subject && same_key(&key.sha256))
            .map(|key| with(&key.groups, &key.scopes))
            .ok_or_else(|| AuthError::Invalid(format!("no API key `{}` is configured", described.subject))),
        CredentialKind::Signature => identity
            .signatures
            .as_ref()
            .and_then(|settings| settings.keys.get(&described.subject))
            .filter(|key| same_key(&key.fingerprint))
            .map(|key| with(&key.groups, &key.scopes))
            .ok_or_else(|| {
                AuthError::Invalid(format!("no signing key `{}` is configured", described.subject))
            }),
        // The same CA and subject source must still vouch for it.
        CredentialKind::Mtls => match &identity.mtls {
            Some(settings) if same_key(&settings.binding()) => Ok(with(&[], &[])),
            Some(_) => Err(AuthError::Invalid("the client CA or the subject source changed".into())),
            None => Err(AuthError::Invalid("no identity.mtls is configured".into())),
        },
        CredentialKind::TrustedHeader => match &identity.trusted_header {
            Some(_) => Ok(with(&described.groups, &described.scopes)),
            None => Err(AuthError::Invalid("no trusted_header is configured".into())),
        },
        CredentialKind::Jwt => {
            let issuer = match (&described.issuer, identity.jwt.as_slice()) {
                (_, []) => return Err(AuthError::Invalid("no JWT issuer is configured".into())),
                (Some(issuer), issuers) if issuers.iter().any(|i| &i.issuer == issuer) => issuer.clone(),
                (Some(issuer), _) => {
                    return Err(AuthError::Invalid(format!("issuer `{issuer}` is not trusted")));
                }
                (None, [only]) => only.issuer.clone(),
                (None, _) => {
                    return Err(AuthError::Invalid(
                        "several JWT issuers are configured: name the token's with --issuer".into(),
                    ));
                }
            };
            Ok(with(&described.groups, &described.scopes).issued_by(&issuer))
        }
    }
}
