//! What `check` says beyond the shape of the file: errors for settings that
//! cannot both hold (the proxy would misbehave), warnings for what is most
//! likely not meant (it would work, just not as written). Each names the
//! place to fix.

use super::{ConfigError, ConfigWarning, invalid_at};
use crate::identity::{Access, CredentialKind, Identity};
use crate::policy::ListKind;
use serde_saphyr::Spanned;
use std::path::Path;

/// The credential kinds `identity` can authenticate at all.
fn configured(identity: &Identity, kind: CredentialKind) -> bool {
    match kind {
        CredentialKind::Anonymous => true,
        CredentialKind::ApiKey => !identity.api_keys.is_empty(),
        CredentialKind::Jwt => !identity.jwt.is_empty(),
        CredentialKind::Signature => identity.signatures.is_some(),
        CredentialKind::TrustedHeader => identity.trusted_header.is_some(),
        CredentialKind::Mtls => identity.mtls.is_some(),
    }
}

const SOURCES: [(CredentialKind, &str); 5] = [
    (CredentialKind::Mtls, "identity.mtls"),
    (CredentialKind::ApiKey, "identity.api_keys"),
    (CredentialKind::Jwt, "identity.jwt"),
    (CredentialKind::Signature, "identity.signatures"),
    (CredentialKind::TrustedHeader, "identity.trusted_header"),
];

/// A virtual server's access settings against the identity section.
pub(super) fn access<T>(
    path: &Path,
    name: &str,
    at: &Spanned<T>,
    access: &Access,
    identity: &Identity,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<(), ConfigError> {
    if access.anonymous && !access.required_scopes.is_empty() {
        return Err(invalid_at(
            path,
            at,
            format_args!(
                "virtual server `{name}` serves anonymous callers but requires scopes, which anonymous callers have none of: drop `anonymous: true` or `required_scopes`"
            ),
        ));
    }
    if access.anonymous
        && !access.credentials.is_empty()
        && !access.credentials.contains(&CredentialKind::Anonymous)
    {
        return Err(invalid_at(
            path,
            at,
            format_args!(
                "virtual server `{name}` has `anonymous: true` but `credentials` does not list `anonymous`: add it, or drop `anonymous: true`"
            ),
        ));
    }
    for kind in &access.credentials {
        if let Some((_, section)) = SOURCES.iter().find(|(k, _)| k == kind)
            && !configured(identity, *kind)
        {
            return Err(invalid_at(
                path,
                at,
                format_args!(
                    "virtual server `{name}` accepts `{kind}` credentials but none can be verified: configure {section}"
                ),
            ));
        }
    }
    let reachable = access.anonymous
        || SOURCES.iter().any(|(kind, _)| {
            configured(identity, *kind)
                && (access.credentials.is_empty() || access.credentials.contains(kind))
        });
    if !reachable {
        warnings.push(ConfigWarning::at(
            path,
            at,
            format!(
                "virtual server `{name}` can be reached by no caller: it serves no anonymous callers (`anonymous: true`) and this policy verifies no credential it accepts"
            ),
        ));
    }
    Ok(())
}

/// A pattern with what looks like another pattern language's syntax, which
/// here matches itself as text.
pub(super) fn pattern(
    path: &Path,
    kind: ListKind,
    entry: &Spanned<String>,
    warnings: &mut Vec<ConfigWarning>,
) {
    let text = &entry.value;
    let foreign: &[char] = match kind {
        // Tool and prompt names are words: none of these appear in them.
        ListKind::Tool | ListKind::Prompt => &['[', ']', '?', '{', '}', '(', ')', '|', '^', '$', '+', '\\'],
        // In URIs `?` and `{}` (templates) are ordinary; `[a-z]` is not.
        ListKind::Resource | ListKind::ResourceTemplate => &[],
    };
    let class = text.find('[').is_some_and(|open| {
        text[open..].find(']').is_some_and(|close| {
            let inside = &text[open + 1..open + close];
            inside.contains('-') && !inside.contains(':')
        })
    });
    if let Some(c) = text.chars().find(|c| foreign.contains(c)).or(class.then_some('[')) {
        warnings.push(ConfigWarning::at(
            path,
            entry,
            format!(
                "pattern `{text}`: `{c}` is not pattern syntax here and matches only itself; toolgate patterns know `*` and `**` only (a `[a-z]` class needs one pattern per name, or a glob)"
            ),
        ));
    }
}
