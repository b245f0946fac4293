//! From the YAML model to the compiled [`Policy`]: every rule that
//! needs more than the YAML's shape (URLs, patterns, keys, names that must
//! agree with one another) is checked here, with the location to fix.

use super::model::*;
use super::{
    ConfigError, ConfigWarning, ListenSettings, LoadedPolicy, POLICY_VERSION, checks, invalid_at, sha256_hex,
};
use crate::identity::{Access, CredentialKind, Identity};
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
        // Two sockets clash on one port when their addresses are equal or
        // either is a wildcard (`0.0.0.0`, `[::]`); port 0 picks a free one.
        let (proxy, admin) = (l.proxy, l.admin.value);
        let overlapping =
            proxy.ip() == admin.ip() || proxy.ip().is_unspecified() || admin.ip().is_unspecified();
        if proxy.port() == admin.port() && proxy.port() != 0 && overlapping {
            return Err(invalid_at(
                path,
                &l.admin,
                format_args!(
                    "listen.proxy ({proxy}) and listen.admin ({admin}) would share port {}: give the admin endpoints (metrics, health) a port of their own",
                    proxy.port()
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
            tls: l.tls.is_some(),
        };
        let mut referenced = Vec::new();
        let mut inputs = text.as_bytes().to_vec();
        let mut files = super::tls::Inputs { referenced: &mut referenced, bytes: &mut inputs };
        let listener_tls =
            l.tls.as_ref().map(|doc| super::tls::listener(path, doc, &mut files)).transpose()?;
        let upstream = self.upstream.compile(path, &mut files)?;
        let transport = self.transport.compile(path)?;
        let verifies_clients = l.tls.as_ref().is_some_and(|t| t.value.client_ca_file.is_some());
        if let Some(mtls) = &self.identity.mtls
            && !verifies_clients
        {
            return Err(invalid_at(
                path,
                mtls,
                "identity.mtls needs verified client certificates: set listen.tls.client_ca_file",
            ));
        }
        let mut identity = self.identity.compile(path, &mut referenced, &mut inputs)?;
        if let (Some(mtls), Some(ca)) = (&mut identity.mtls, listener_tls.as_ref().and_then(|t| t.client_ca))
        {
            mtls.ca = ca;
        }
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
            policy: Policy { upstream, transport, identity, sessions, virtual_servers, listener_tls, meta },
            warnings,
        })
    }
}

impl UpstreamDoc {
    fn compile(self, path: &Path, files: &mut super::tls::Inputs<'_>) -> Result<Upstream, ConfigError> {
        let uri: http::Uri = self
            .url
            .value
            .parse()
            .map_err(|e| invalid_at(path, &self.url, format_args!("upstream url is not a URL: {e}")))?;
        let tls = match (uri.scheme_str(), &self.tls) {
            (Some("https"), doc) => Some(super::tls::upstream(path, &self.url, doc.as_ref(), files)?),
            (Some("http"), None) => None,
            (Some("http"), Some(doc)) => {
                return Err(invalid_at(path, doc, "upstream.tls is for an https:// upstream url"));
            }
            _ => return Err(invalid_at(path, &self.url, "upstream url must start with http:// or https://")),
        };

        let Some(authority) = uri.authority().cloned() else {
            return Err(invalid_at(path, &self.url, "upstream url needs a host"));
        };
        if authority.as_str().contains('@') {
            // `user:password@host` would be sent as the upstream's Host.
            return Err(invalid_at(
                path,
                &self.url,
                "upstream url must not carry credentials (user:password@)",
            ));
        }
        if uri.query().is_some() {
            // It would be silently dropped: requests carry the client's query.
            return Err(invalid_at(
                path,
                &self.url,
                "upstream url must not carry a query (?...): each request is forwarded with the client's own query",
            ));
        }
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
        Upstream::new(tls, authority, uri.path().to_owned(), self.connect_timeout.0, self.response_timeout.0)
            .map_err(|message| invalid_at(path, &self.url, message))
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
            list_memo: usize::try_from(self.list_memo.0).unwrap_or(usize::MAX),
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
        (CredentialKind::Mtls, identity.mtls.is_some()),
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
            CredentialKind::parse(name)
                .ok_or_else(|| format!("unknown credential kind `{name}`: use {}", CredentialKind::NAMES))
        })
        .collect()
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
