//! From the YAML model to the compiled [`Policy`]: every rule that
//! needs more than the YAML's shape (URLs, patterns, keys, names that must
//! agree with one another) is checked here, with the location to fix.

use super::model::*;
use super::{
    ConfigError, ConfigWarning, ListenSettings, LoadedPolicy, POLICY_VERSION, checks, invalid_at, sha256_hex,
};
use crate::identity::{
    self, Access, CredentialKind, Identity, IpNet, ResourceMetadata, TrustedHeader, UpstreamHeaders,
};
use crate::mcp::version::ProtocolVersion;
use crate::policy::{
    AllowedHosts, AllowedOrigins, DEFAULT_SERVER, DenialStyle, Grants, ListKind, Policy, PolicyMeta,
    ResponseTimeouts, Rule, Transport, Upstream, VirtualServer, pattern,
};
use serde_saphyr::Spanned;
use std::collections::HashMap;
use std::path::Path;

impl PolicyDoc {
    pub(super) fn compile(self, path: &Path, text: &str) -> Result<LoadedPolicy, ConfigError> {
        if self.version.value != POLICY_VERSION {
            return Err(invalid_at(
                path,
                &self.version,
                format_args!(
                    "unsupported policy version {}: this toolgate reads version {POLICY_VERSION}",
                    self.version.value
                ),
            ));
        }
        let l = &self.listen;
        if l.max_connections == 0 || l.idle_timeout.0.is_zero() || l.handshake_timeout.0.is_zero() {
            return Err(ConfigError::Invalid {
                path: path.display().to_string(),
                line: 1,
                column: 1,
                message:
                    "listen.max_connections, idle_timeout and handshake_timeout must be greater than zero"
                        .into(),
            });
        }
        if l.proxy == l.admin.value {
            return Err(invalid_at(
                path,
                &l.admin,
                format_args!(
                    "listen.proxy and listen.admin are both {}: give the admin endpoints (metrics, health) an address of their own",
                    l.proxy
                ),
            ));
        }
        let listen = ListenSettings {
            proxy: l.proxy,
            admin: l.admin.value,
            drain: l.drain.0,
            max_connections: l.max_connections,
            idle_timeout: l.idle_timeout.0,
            handshake_timeout: l.handshake_timeout.0,
        };
        let upstream = self.upstream.compile(path)?;
        let transport = self.transport.compile(path)?;
        let mut referenced = Vec::new();
        let mut inputs = text.as_bytes().to_vec();
        let identity = self.identity.compile(path, &mut referenced, &mut inputs)?;
        let mut warnings = Vec::new();
        let mut virtual_servers = HashMap::new();
        if self.virtual_servers.value.is_empty() {
            return Err(invalid_at(
                path,
                &self.virtual_servers,
                format_args!("define at least one virtual server (`{DEFAULT_SERVER}` serves /mcp)"),
            ));
        }
        for (name, doc) in self.virtual_servers.value {
            let at = Spanned::new((), doc.referenced, doc.defined);
            let server = doc.value.compile(path, &name, &at, &identity, &mut warnings)?;
            virtual_servers.insert(name, server);
        }
        let meta = PolicyMeta {
            sha256: sha256_hex(text.as_bytes()),
            inputs_sha256: sha256_hex(&inputs),
            referenced_files: referenced,
            generation: 0,
            loaded_at: std::time::SystemTime::now(),
        };
        let sessions = crate::policy::SessionSettings {
            idle: self.sessions.idle_timeout.0,
            max: self.sessions.max.max(1),
            max_per_principal: self.sessions.max_per_principal.max(1),
        };
        Ok(LoadedPolicy {
            listen,
            policy: Policy { upstream, transport, identity, sessions, virtual_servers, meta },
            warnings,
        })
    }
}

impl UpstreamDoc {
    fn compile(self, path: &Path) -> Result<Upstream, ConfigError> {
        let uri: http::Uri = self
            .url
            .value
            .parse()
            .map_err(|e| invalid_at(path, &self.url, format_args!("upstream url is not a URL: {e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(invalid_at(
                path,
                &self.url,
                "upstream url must start with http:// (TLS to the upstream is not supported yet)",
            ));
        }
        let Some(authority) = uri.authority().cloned() else {
            return Err(invalid_at(path, &self.url, "upstream url needs a host"));
        };
        if let Some(old) = &self.timeout {
            return Err(invalid_at(
                path,
                old,
                "upstream.timeout is split in two: connect_timeout (connecting, default 5s) and response_timeout (until the answer's head, default 5m; virtual servers and tools may have their own)",
            ));
        }
        if self.connect_timeout.0.is_zero() || self.response_timeout.0.is_zero() {
            return Err(invalid_at(path, &self.url, "upstream timeouts must be greater than zero"));
        }
        Ok(Upstream {
            authority,
            path: uri.path().to_owned(),
            connect_timeout: self.connect_timeout.0,
            response_timeout: self.response_timeout.0,
        })
    }
}

impl TransportDoc {
    fn compile(self, path: &Path) -> Result<Transport, ConfigError> {
        let mut hosts = Vec::with_capacity(self.allowed_hosts.len());
        for entry in &self.allowed_hosts {
            let host = AllowedHosts::normalize_entry(&entry.value).map_err(|m| invalid_at(path, entry, m))?;
            hosts.push(host);
        }
        let mut origins = Vec::with_capacity(self.allowed_origins.len());
        for entry in &self.allowed_origins {
            let origin =
                AllowedOrigins::normalize_entry(&entry.value).map_err(|m| invalid_at(path, entry, m))?;
            origins.push(origin);
        }
        let mut versions = Vec::with_capacity(self.protocol_versions.len());
        for entry in &self.protocol_versions {
            let version = ProtocolVersion::parse(&entry.value).map_err(|m| invalid_at(path, entry, m))?;
            versions.push(version);
        }
        if versions.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.display().to_string(),
                line: 1,
                column: 1,
                message: "transport.protocol_versions must name at least one version".into(),
            });
        }
        let max_body = usize::try_from(self.max_body.0).unwrap_or(usize::MAX);
        let max_list_result = usize::try_from(self.max_list_result.0).unwrap_or(usize::MAX);
        if max_body == 0 || max_list_result < 1024 {
            return Err(ConfigError::Invalid {
                path: path.display().to_string(),
                line: 1,
                column: 1,
                message:
                    "transport.max_body must be greater than zero and transport.max_list_result at least 1KiB"
                        .into(),
            });
        }
        Ok(Transport {
            allowed_hosts: AllowedHosts::new(hosts),
            allowed_origins: AllowedOrigins::new(origins),
            require_origin: self.require_origin,
            protocol_versions: versions,
            max_body,
            max_list_result,
            body_timeout: self.body_timeout.0,
        })
    }
}

/// Virtual server names appear in paths (`/servers/{name}/mcp`), so they are
/// limited to characters no URL normalisation changes.
fn valid_server_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl VirtualServerDoc {
    fn compile<T>(
        self,
        path: &Path,
        name: &str,
        at: &Spanned<T>,
        identity: &Identity,
        warnings: &mut Vec<ConfigWarning>,
    ) -> Result<VirtualServer, ConfigError> {
        if !valid_server_name(name) {
            return Err(invalid_at(
                path,
                at,
                format_args!(
                    "virtual server name `{}` must be 1-64 of a-z, 0-9, `-` and `_`",
                    name.escape_debug()
                ),
            ));
        }
        let base = GrantsDoc {
            tools: self.tools,
            prompts: self.prompts,
            resources: self.resources,
            resource_templates: self.resource_templates,
        }
        .compile(path, warnings)?;
        let mut rules = Vec::with_capacity(self.rules.len());
        for rule in self.rules {
            let when = &rule.when.value;
            if when.groups.is_empty()
                && when.subjects.is_empty()
                && when.credentials.is_empty()
                && when.issuers.is_empty()
            {
                return Err(invalid_at(
                    path,
                    &rule.when,
                    "a rule's `when` must name groups, subjects, credentials or issuers (grants for everyone belong in the base lists)",
                ));
            }
            let credentials =
                credential_kinds(&when.credentials).map_err(|m| invalid_at(path, &rule.when, m))?;
            for issuer in &when.issuers {
                if !identity.jwt.iter().any(|i| &i.issuer == issuer) {
                    return Err(invalid_at(
                        path,
                        &rule.when,
                        format_args!("issuer `{issuer}` is not one of identity.jwt's issuers"),
                    ));
                }
            }
            let subject_namespace = if when.subjects.is_empty() {
                None
            } else {
                Some(
                    subject_namespace(identity, &credentials, &when.issuers)
                        .map_err(|m| invalid_at(path, &rule.when, m))?,
                )
            };
            rules.push(Rule {
                groups: when.groups.iter().cloned().collect(),
                subjects: when.subjects.iter().cloned().collect(),
                subject_namespace,
                credentials,
                issuers: when.issuers.clone(),
                grants: GrantsDoc {
                    tools: rule.tools,
                    prompts: rule.prompts,
                    resources: rule.resources,
                    resource_templates: rule.resource_templates,
                }
                .compile(path, warnings)?,
            });
        }
        let denial = match self.denial {
            DenialDoc::Hidden => DenialStyle::Hidden,
            DenialDoc::Explicit => DenialStyle::Explicit,
        };
        let credentials = credential_kinds(&self.credentials).map_err(|m| invalid_at(path, at, m))?;
        let accepts_jwt = credentials.is_empty() || credentials.contains(&CredentialKind::Jwt);
        let audiences = match &identity.metadata.base_url {
            _ if !self.audiences.is_empty() => self.audiences,
            Some(base) if accepts_jwt => vec![format!("{base}{}", crate::proxy::auth::resource_path(name))],
            _ => Vec::new(),
        };
        if accepts_jwt && !identity.jwt.is_empty() && audiences.is_empty() {
            return Err(invalid_at(
                path,
                at,
                format_args!(
                    "virtual server `{name}` accepts JWTs but has no audience: set identity.resource_metadata.base_url (its audience is then that URL and {}) or `audiences` here (RFC 8707: a token names the MCP endpoint it is for)",
                    crate::proxy::auth::resource_path(name)
                ),
            ));
        }
        let access = Access {
            anonymous: self.anonymous,
            credentials,
            required_scopes: self.required_scopes,
            audiences,
        };
        checks::access(path, name, at, &access, identity, warnings)?;
        let mut tools = Vec::with_capacity(self.tool_timeouts.len());
        for entry in &self.tool_timeouts {
            for pattern in &entry.value.tools {
                pattern::validate(pattern).map_err(|m| invalid_at(path, entry, m))?;
            }
            let patterns = pattern::PatternSet::new(entry.value.tools.iter().map(String::as_str), false);
            tools.push((patterns, entry.value.response_timeout.0));
        }
        let timeouts = ResponseTimeouts { default: self.response_timeout.map(|t| t.0), tools };
        Ok(VirtualServer { name: name.to_owned(), base, rules, denial, access, timeouts })
    }
}

/// The one credential kind (and, for JWTs, the one issuer) whose subjects a
/// rule's `subjects` name: those of `credentials` and `issuers` when the
/// rule gives them, else every kind the policy can authenticate. A subject
/// is unique only within its kind and issuer, so more than one is refused.
fn subject_namespace(
    identity: &Identity,
    credentials: &[CredentialKind],
    issuers: &[String],
) -> Result<(CredentialKind, Option<String>), String> {
    let wanted = |kind| credentials.is_empty() || credentials.contains(&kind);
    let mut found: Vec<(CredentialKind, Option<String>)> = Vec::new();
    for (kind, configured) in [
        (CredentialKind::ApiKey, !identity.api_keys.is_empty()),
        (CredentialKind::Signature, identity.signatures.is_some()),
        (CredentialKind::TrustedHeader, identity.trusted_header.is_some()),
        (CredentialKind::Anonymous, credentials.contains(&CredentialKind::Anonymous)),
    ] {
        if configured && wanted(kind) && issuers.is_empty() {
            found.push((kind, None));
        }
    }
    if wanted(CredentialKind::Jwt) {
        for issuer in &identity.jwt {
            if issuers.is_empty() || issuers.contains(&issuer.issuer) {
                found.push((CredentialKind::Jwt, Some(issuer.issuer.clone())));
            }
        }
    }
    let describe = |found: &[(CredentialKind, Option<String>)]| {
        found
            .iter()
            .map(|(kind, issuer)| match issuer {
                Some(issuer) => format!("jwt from {issuer}"),
                None => kind.as_str().to_owned(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err("`subjects` names no credential this policy accepts: configure it under `identity`, or fix `credentials`/`issuers`".into()),
        _ => Err(format!(
            "`subjects` is ambiguous: a subject is unique only within one credential kind and issuer, and this rule could match {}; name one with `credentials:` (and `issuers:` for JWTs)",
            describe(&found)
        )),
    }
}

fn credential_kinds(names: &[String]) -> Result<Vec<CredentialKind>, String> {
    names
        .iter()
        .map(|name| {
            CredentialKind::parse(name).ok_or_else(|| {
                format!("unknown credential kind `{name}`: use anonymous, api_key, jwt, signature or trusted_header")
            })
        })
        .collect()
}

fn header_name(text: &str) -> Result<http::HeaderName, String> {
    http::HeaderName::from_bytes(text.as_bytes()).map_err(|_| format!("`{text}` is not a valid header name"))
}

impl IdentityDoc {
    fn compile(
        self,
        path: &Path,
        referenced: &mut Vec<std::path::PathBuf>,
        inputs: &mut Vec<u8>,
    ) -> Result<Identity, ConfigError> {
        let mut api_keys = Vec::with_capacity(self.api_keys.len());
        for key in &self.api_keys {
            let sha256 =
                identity::api_key::parse_hash(&key.value.sha256).map_err(|m| invalid_at(path, key, m))?;
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
            strip_inbound: Vec::new(),
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
        let alg = match k.alg.as_str() {
            "ed25519" => {
                let public = decode(&k.public_key, "public_key")?;
                if public.len() != 32 {
                    return Err(invalid_at(
                        path,
                        key,
                        "an Ed25519 public key is 32 bytes (base64 of the raw key)",
                    ));
                }
                KeyAlg::Ed25519(public)
            }
            "hmac-sha256" => {
                let secret = decode(&k.secret, "secret")?;
                if secret.len() < 32 {
                    return Err(invalid_at(path, key, "an hmac-sha256 secret must be at least 32 bytes"));
                }
                KeyAlg::HmacSha256(Box::new(aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret)))
            }
            other => {
                return Err(invalid_at(
                    path,
                    key,
                    format_args!("unknown signature alg `{other}`: use ed25519 or hmac-sha256"),
                ));
            }
        };
        let verifying =
            VerifyingKey { id: k.id.clone(), alg, groups: k.groups.clone(), scopes: k.scopes.clone() };
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
            let file = path.parent().unwrap_or(Path::new(".")).join(file);
            let text = super::read_capped(&file).map_err(|e| {
                let why = match e {
                    ConfigError::Read { source, .. } => source.to_string(),
                    ConfigError::Invalid { message, .. } => message,
                };
                invalid_at(path, doc, format_args!("cannot read JWKS {}: {why}", file.display()))
            })?;
            inputs.extend_from_slice(text.as_bytes());
            referenced.push(file.clone());
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

impl GrantsDoc {
    fn compile(self, path: &Path, warnings: &mut Vec<ConfigWarning>) -> Result<Grants, ConfigError> {
        let lists = [self.tools, self.prompts, self.resources, self.resource_templates];
        let mut allow: [Vec<String>; 4] = Default::default();
        let mut deny: [Vec<String>; 4] = Default::default();
        for (i, list) in lists.into_iter().enumerate() {
            for (source, target) in [(list.allow, &mut allow[i]), (list.deny, &mut deny[i])] {
                for entry in source {
                    pattern::validate(&entry.value).map_err(|m| invalid_at(path, &entry, m))?;
                    checks::pattern(path, ListKind::ALL[i], &entry, warnings);
                    target.push(entry.value);
                }
            }
        }
        Ok(Grants::new(allow, deny))
    }
}
