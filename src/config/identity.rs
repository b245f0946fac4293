//! Compiling `identity`: API keys, request-signing keys and JWT issuers
//! (inline keys, files and JWKS URLs), checked with the location to fix.
//! Key files are read here, and their bytes added to the inputs the
//! policy's fingerprint covers, so a rotated key file counts as a change
//! on reload.

use super::model::*;
use super::{ConfigError, invalid_at};
use crate::identity::{self, Identity, IpNet, ResourceMetadata, TrustedHeader, UpstreamHeaders};
use serde_saphyr::Spanned;
use std::collections::HashMap;
use std::path::Path;

fn header_name(text: &str) -> Result<http::HeaderName, String> {
    http::HeaderName::from_bytes(text.as_bytes()).map_err(|_| format!("`{text}` is not a valid header name"))
}

impl IdentityDoc {
    pub(super) fn compile(
        mut self,
        path: &Path,
        referenced: &mut Vec<std::path::PathBuf>,
        inputs: &mut Vec<u8>,
    ) -> Result<Identity, ConfigError> {
        // Secrets may live in files of their own (mounted Secrets), so that
        // the policy itself holds none: read them into their places.
        let mut from_file = |at: &Spanned<()>,
                             inline: &mut Option<String>,
                             file: &Option<String>,
                             what: &str| match (inline.as_ref(), file) {
            (Some(_), Some(_)) => {
                Err(invalid_at(path, at, format_args!("give `{what}` or `{what}_file`, not both")))
            }
            (None, Some(name)) => {
                let (_, text) = super::read_input(path, at, name, what, referenced, inputs)?;
                *inline = Some(text.trim().to_owned());
                Ok(())
            }
            _ => Ok(()),
        };
        for key in &mut self.api_keys {
            let here = Spanned::new((), key.referenced, key.defined);
            from_file(&here, &mut key.value.sha256, &key.value.sha256_file, "sha256")?;
        }
        for issuer in &mut self.jwt {
            let here = Spanned::new((), issuer.referenced, issuer.defined);
            from_file(&here, &mut issuer.value.secret, &issuer.value.secret_file, "secret")?;
        }
        if let Some(signatures) = &mut self.signatures {
            for key in &mut signatures.value.keys {
                let here = Spanned::new((), key.referenced, key.defined);
                from_file(&here, &mut key.value.secret, &key.value.secret_file, "secret")?;
            }
        }
        let mut api_keys = Vec::with_capacity(self.api_keys.len());
        for key in &self.api_keys {
            let sha256 = identity::api_key::parse_hash(key.value.sha256.as_deref().ok_or_else(|| {
                invalid_at(
                    path,
                    key,
                    format_args!("API key `{}` needs `sha256` or `sha256_file`", key.value.id),
                )
            })?)
            .map_err(|m| invalid_at(path, key, m))?;
            if api_keys.iter().any(|k: &identity::api_key::ApiKey| k.id == key.value.id || k.sha256 == sha256)
            {
                return Err(invalid_at(
                    path,
                    key,
                    format_args!("API key `{}` repeats an id or a hash", key.value.id),
                ));
            }
            api_keys.push(identity::api_key::ApiKey {
                id: key.value.id.clone(),
                sha256,
                groups: key.value.groups.clone(),
                scopes: key.value.scopes.clone(),
            });
        }
        let mut jwt = Vec::with_capacity(self.jwt.len());
        for issuer in &self.jwt {
            jwt.push(compile_issuer(path, issuer, referenced, inputs)?);
        }
        let trusted_header = match &self.trusted_header {
            None => None,
            Some(doc) => {
                let t = &doc.value;
                let from = t
                    .from
                    .iter()
                    .map(|n| IpNet::parse(n))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|m| invalid_at(path, doc, m))?;
                if from.is_empty() {
                    return Err(invalid_at(
                        path,
                        doc,
                        "trusted_header.from must name the proxies' addresses",
                    ));
                }
                Some(TrustedHeader {
                    subject: header_name(&t.subject).map_err(|m| invalid_at(path, doc, m))?,
                    groups: t
                        .groups
                        .as_deref()
                        .map(header_name)
                        .transpose()
                        .map_err(|m| invalid_at(path, doc, m))?,
                    from,
                })
            }
        };
        let upstream_headers = match &self.upstream_headers {
            None => None,
            Some(doc) => Some(UpstreamHeaders {
                subject: header_name(&doc.value.subject).map_err(|m| invalid_at(path, doc, m))?,
                credential: header_name(&doc.value.credential).map_err(|m| invalid_at(path, doc, m))?,
                issuer: header_name(&doc.value.issuer).map_err(|m| invalid_at(path, doc, m))?,
                groups: doc
                    .value
                    .groups
                    .as_deref()
                    .map(header_name)
                    .transpose()
                    .map_err(|m| invalid_at(path, doc, m))?,
            }),
        };
        let metadata = ResourceMetadata {
            base_url: self.resource_metadata.base_url.map(|u| u.trim_end_matches('/').to_owned()),
            authorization_servers: self.resource_metadata.authorization_servers,
            scopes_supported: self.resource_metadata.scopes_supported,
        };
        let signatures = self.signatures.as_ref().map(|doc| compile_signatures(path, doc)).transpose()?;
        let mut identity = Identity {
            api_keys,
            jwt,
            trusted_header,
            upstream_headers,
            metadata,
            signatures,
            mtls: self.mtls.map(|doc| identity::mtls::MtlsSettings {
                subject: match doc.value.subject {
                    MtlsSubjectDoc::Uri => identity::mtls::SubjectSource::Uri,
                    MtlsSubjectDoc::Dns => identity::mtls::SubjectSource::Dns,
                    MtlsSubjectDoc::Email => identity::mtls::SubjectSource::Email,
                    MtlsSubjectDoc::Cn => identity::mtls::SubjectSource::CommonName,
                },
                // Set from listen.tls.client_ca_file once that is read.
                ca: [0; 32],
            }),
            strip_inbound: Vec::new(),
            verified: Default::default(),
        };
        identity.strip_inbound = identity::headers_to_strip(&identity);
        Ok(identity)
    }
}

fn compile_signatures(
    path: &Path,
    doc: &Spanned<SignaturesDoc>,
) -> Result<identity::signature::SignatureSettings, ConfigError> {
    use base64::Engine;
    use identity::signature::{KeyAlg, VerifyingKey};
    let mut keys = HashMap::new();
    for key in &doc.value.keys {
        let k = &key.value;
        let decode = |text: &Option<String>, what: &str| {
            let text = text
                .as_deref()
                .ok_or_else(|| invalid_at(path, key, format_args!("{} keys need `{what}`", k.alg)))?;
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| invalid_at(path, key, format_args!("`{what}` must be base64")))
        };
        let (alg, material) = match k.alg.as_str() {
            "ed25519" => {
                let public = decode(&k.public_key, "public_key")?;
                if public.len() != 32 {
                    return Err(invalid_at(
                        path,
                        key,
                        "an Ed25519 public key is 32 bytes (base64 of the raw key)",
                    ));
                }
                (KeyAlg::Ed25519(public.clone()), public)
            }
            "hmac-sha256" => {
                let secret = decode(&k.secret, "secret")?;
                if secret.len() < 32 {
                    return Err(invalid_at(path, key, "an hmac-sha256 secret must be at least 32 bytes"));
                }
                (
                    KeyAlg::HmacSha256(Box::new(aws_lc_rs::hmac::Key::new(
                        aws_lc_rs::hmac::HMAC_SHA256,
                        &secret,
                    ))),
                    secret,
                )
            }
            other => {
                return Err(invalid_at(
                    path,
                    key,
                    format_args!("unknown signature alg `{other}`: use ed25519 or hmac-sha256"),
                ));
            }
        };
        let fingerprint = VerifyingKey::fingerprint_of(alg.name(), &material);
        let verifying = VerifyingKey {
            id: k.id.clone(),
            alg,
            groups: k.groups.clone(),
            scopes: k.scopes.clone(),
            fingerprint,
        };
        if keys.insert(k.id.clone(), verifying).is_some() {
            return Err(invalid_at(path, key, format_args!("signature key id `{}` is repeated", k.id)));
        }
    }
    Ok(identity::signature::SignatureSettings {
        keys,
        max_skew: doc.value.max_skew.0,
        require_nonce: doc.value.require_nonce,
        nonce_cache_max: doc.value.nonce_cache.max(1),
    })
}

fn compile_issuer(
    path: &Path,
    doc: &Spanned<JwtDoc>,
    referenced: &mut Vec<std::path::PathBuf>,
    inputs: &mut Vec<u8>,
) -> Result<identity::jwt::Issuer, ConfigError> {
    use jsonwebtoken::Algorithm;
    let j = &doc.value;
    let mut algorithms = Vec::with_capacity(j.algorithms.len());
    for name in &j.algorithms {
        let alg = match name.as_str() {
            "RS256" => Algorithm::RS256,
            "RS384" => Algorithm::RS384,
            "RS512" => Algorithm::RS512,
            "PS256" => Algorithm::PS256,
            "PS384" => Algorithm::PS384,
            "PS512" => Algorithm::PS512,
            "ES256" => Algorithm::ES256,
            "ES384" => Algorithm::ES384,
            "EdDSA" => Algorithm::EdDSA,
            "HS256" => Algorithm::HS256,
            "HS384" => Algorithm::HS384,
            "HS512" => Algorithm::HS512,
            other => {
                return Err(invalid_at(
                    path,
                    doc,
                    format_args!("unknown JWT algorithm `{other}` (`none` is never accepted)"),
                ));
            }
        };
        algorithms.push(alg);
    }
    if j.audiences.is_some() {
        return Err(invalid_at(
            path,
            doc,
            "identity.jwt[].audiences is no longer read: a token's audience is the virtual server's own (RFC 8707), its resource URL from identity.resource_metadata.base_url, or virtual_servers.NAME.audiences",
        ));
    }
    let mut remote = None;
    let keys = match &j.jwks {
        None => Default::default(),
        Some(JwksDoc { file: None, url: Some(url), refresh, min_refetch }) => {
            let uri: http::Uri = url
                .parse()
                .map_err(|_| invalid_at(path, doc, format_args!("jwks.url `{url}` is not a URL")))?;
            let loopback = matches!(uri.host(), Some("localhost" | "127.0.0.1" | "[::1]"));
            match uri.scheme_str() {
                Some("https") => {}
                Some("http") if loopback => {}
                _ => {
                    return Err(invalid_at(
                        path,
                        doc,
                        "jwks.url must be https:// (http:// only for a loopback host)",
                    ));
                }
            }
            remote =
                Some(identity::jwks::RemoteJwks { url: uri, refresh: refresh.0, min_refetch: min_refetch.0 });
            Default::default()
        }
        Some(JwksDoc { file: Some(file), url: None, .. }) => {
            let (file, text) = super::read_input(path, doc, file, "JWKS", referenced, inputs)?;
            identity::jwt::keys_from_jwks(&text)
                .map_err(|m| invalid_at(path, doc, format_args!("{}: {m}", file.display())))?
        }
        Some(_) => return Err(invalid_at(path, doc, "jwks needs exactly one of `file` and `url`")),
    };
    let secret = match &j.secret {
        None => None,
        Some(b64) => {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| invalid_at(path, doc, "jwt secret must be base64"))?;
            if bytes.len() < 32 {
                return Err(invalid_at(path, doc, "a JWT shared secret must be at least 32 bytes"));
            }
            Some(jsonwebtoken::DecodingKey::from_secret(&bytes))
        }
    };
    let uses_hmac =
        algorithms.iter().any(|a| matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512));
    if uses_hmac && secret.is_none() {
        return Err(invalid_at(path, doc, "HS256/384/512 need a `secret`"));
    }
    if !uses_hmac && secret.is_some() {
        return Err(invalid_at(
            path,
            doc,
            "a `secret` is only for HS256/384/512; list one of them in `algorithms`",
        ));
    }
    if algorithms.iter().any(|a| !matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
        && j.jwks.is_none()
    {
        return Err(invalid_at(path, doc, "asymmetric algorithms need `jwks`"));
    }
    Ok(identity::jwt::Issuer {
        issuer: j.issuer.clone(),
        algorithms,
        leeway: j.leeway.0,
        required_claims: j.required_claims.clone(),
        groups_claim: j.groups_claim.clone(),
        scopes_claim: j.scopes_claim.clone(),
        keys,
        remote,
        secret,
    })
}
