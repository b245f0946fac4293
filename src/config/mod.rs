//! The policy file: its YAML model, validation with file/line/column, and
//! compilation into the immutable [`Policy`](crate::policy::Policy) snapshot
//! the proxy judges requests under.
//!
//! `toolgate check`, start-up and (later) reload all go through
//! [`load_file`], so a file that passes `check` is exactly a file the proxy
//! accepts. Unknown keys and duplicate keys are errors at every level.

mod units;

pub use units::{ByteSize, HumanDuration};

use crate::identity::{
    self, Access, CredentialKind, Identity, IpNet, ResourceMetadata, TrustedHeader, UpstreamHeaders,
};
use crate::mcp::version::ProtocolVersion;
use crate::policy::{
    AllowedHosts, AllowedOrigins, DEFAULT_SERVER, DenialStyle, Grants, Policy, PolicyMeta, Rule, Transport,
    Upstream, VirtualServer, pattern,
};
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// The only policy file version this build understands.
pub const POLICY_VERSION: u32 = 1;

/// A policy file that could not be read or accepted. Displays as
/// `FILE:LINE:COLUMN: message`, the form editors and CI logs link to.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read policy file: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid { path: String, line: u64, column: u64, message: String },
}

/// Settings that are fixed for the life of a process: the sockets it listens
/// on and how long it drains. A reload that changes them is refused with a
/// message that a restart is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSettings {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub drain: Duration,
}

/// A validated policy file: what the running process needs at start-up and
/// the compiled snapshot.
#[derive(Debug)]
pub struct LoadedPolicy {
    pub listen: ListenSettings,
    pub policy: Policy,
}

/// Reads, validates and compiles a policy file.
pub fn load_file(path: &Path) -> Result<LoadedPolicy, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
    load_str(&text, path)
}

/// Validates and compiles policy text; `path` names it in errors.
pub fn load_str(text: &str, path: &Path) -> Result<LoadedPolicy, ConfigError> {
    let doc: PolicyDoc = serde_saphyr::from_str(text).map_err(|e| yaml_error(path, &e))?;
    doc.compile(path, text)
}

fn yaml_error(path: &Path, error: &serde_saphyr::Error) -> ConfigError {
    let (line, column) = error.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
    let mut options = serde_saphyr::RenderOptions::default();
    options.snippets = serde_saphyr::SnippetMode::Off;
    let message = error.render_with_options(options).lines().next().unwrap_or("invalid YAML").to_owned();
    ConfigError::Invalid {
        path: path.display().to_string(),
        line,
        column,
        message: strip_location_suffix(&message),
    }
}

/// The plain rendering ends with " at line L column C"; the error already
/// carries both in front, so say them once.
fn strip_location_suffix(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

/// Hex SHA-256, the fingerprint by which operators tell policies apart.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn invalid_at<T>(path: &Path, spanned: &Spanned<T>, message: impl fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        path: path.display().to_string(),
        line: spanned.referenced.line(),
        column: spanned.referenced.column(),
        message: message.to_string(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyDoc {
    version: Spanned<u32>,
    #[serde(default)]
    listen: ListenDoc,
    upstream: UpstreamDoc,
    #[serde(default)]
    transport: TransportDoc,
    #[serde(default)]
    identity: IdentityDoc,
    #[serde(default)]
    sessions: SessionsDoc,
    virtual_servers: Spanned<BTreeMap<String, Spanned<VirtualServerDoc>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionsDoc {
    #[serde(default = "default_session_idle")]
    idle_timeout: HumanDuration,
    #[serde(default = "default_session_max")]
    max: usize,
}

impl Default for SessionsDoc {
    fn default() -> Self {
        Self { idle_timeout: default_session_idle(), max: default_session_max() }
    }
}

fn default_session_idle() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}
fn default_session_max() -> usize {
    100_000
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityDoc {
    #[serde(default)]
    api_keys: Vec<Spanned<ApiKeyDoc>>,
    #[serde(default)]
    jwt: Vec<Spanned<JwtDoc>>,
    #[serde(default)]
    trusted_header: Option<Spanned<TrustedHeaderDoc>>,
    #[serde(default)]
    upstream_headers: Option<Spanned<UpstreamHeadersDoc>>,
    #[serde(default)]
    resource_metadata: ResourceMetadataDoc,
    #[serde(default)]
    signatures: Option<Spanned<SignaturesDoc>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignaturesDoc {
    #[serde(default = "default_max_skew")]
    max_skew: HumanDuration,
    #[serde(default = "default_true")]
    require_nonce: bool,
    #[serde(default = "default_nonce_cache")]
    nonce_cache: usize,
    keys: Vec<Spanned<SignatureKeyDoc>>,
}

fn default_max_skew() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_true() -> bool {
    true
}
fn default_nonce_cache() -> usize {
    100_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureKeyDoc {
    id: String,
    alg: String,
    /// Ed25519: base64 of the 32-byte public key.
    #[serde(default)]
    public_key: Option<String>,
    /// hmac-sha256: base64 of the shared secret.
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiKeyDoc {
    id: String,
    sha256: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JwtDoc {
    issuer: String,
    audiences: Vec<String>,
    #[serde(default = "default_jwt_algorithms")]
    algorithms: Vec<String>,
    #[serde(default)]
    jwks: Option<JwksDoc>,
    /// Base64 shared secret for HS256/384/512.
    #[serde(default)]
    secret: Option<String>,
    #[serde(default = "default_leeway")]
    leeway: HumanDuration,
    #[serde(default)]
    required_claims: Vec<String>,
    #[serde(default = "default_groups_claim")]
    groups_claim: String,
    #[serde(default = "default_scopes_claim")]
    scopes_claim: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JwksDoc {
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default = "default_jwks_refresh")]
    refresh: HumanDuration,
    #[serde(default = "default_jwks_min_refetch")]
    min_refetch: HumanDuration,
}

fn default_jwks_refresh() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}
fn default_jwks_min_refetch() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

fn default_jwt_algorithms() -> Vec<String> {
    ["RS256", "PS256", "ES256", "EdDSA"].map(String::from).to_vec()
}
fn default_leeway() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_scopes_claim() -> String {
    "scope".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustedHeaderDoc {
    subject: String,
    #[serde(default)]
    groups: Option<String>,
    from: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamHeadersDoc {
    subject: String,
    #[serde(default)]
    groups: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceMetadataDoc {
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    authorization_servers: Vec<String>,
    #[serde(default)]
    scopes_supported: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VirtualServerDoc {
    #[serde(default)]
    anonymous: bool,
    #[serde(default)]
    credentials: Vec<String>,
    #[serde(default)]
    required_scopes: Vec<String>,
    #[serde(default)]
    denial: DenialDoc,
    #[serde(default)]
    tools: ListDoc,
    #[serde(default)]
    prompts: ListDoc,
    #[serde(default)]
    resources: ListDoc,
    #[serde(default)]
    resource_templates: ListDoc,
    #[serde(default)]
    rules: Vec<RuleDoc>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum DenialDoc {
    #[default]
    Hidden,
    Explicit,
}

/// The four lists, as a virtual server or a rule writes them. (Not a
/// flattened struct: serde's `flatten` would disable `deny_unknown_fields`.)
struct GrantsDoc {
    tools: ListDoc,
    prompts: ListDoc,
    resources: ListDoc,
    resource_templates: ListDoc,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListDoc {
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    deny: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDoc {
    when: Spanned<WhenDoc>,
    #[serde(default)]
    tools: ListDoc,
    #[serde(default)]
    prompts: ListDoc,
    #[serde(default)]
    resources: ListDoc,
    #[serde(default)]
    resource_templates: ListDoc,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WhenDoc {
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    subjects: Vec<String>,
    #[serde(default)]
    credentials: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenDoc {
    #[serde(default = "default_proxy_addr")]
    proxy: SocketAddr,
    #[serde(default = "default_admin_addr")]
    admin: SocketAddr,
    #[serde(default = "default_drain")]
    drain: HumanDuration,
}

impl Default for ListenDoc {
    fn default() -> Self {
        Self { proxy: default_proxy_addr(), admin: default_admin_addr(), drain: default_drain() }
    }
}

fn default_proxy_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8000))
}
fn default_admin_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}
fn default_drain() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamDoc {
    url: Spanned<String>,
    #[serde(default = "default_upstream_timeout")]
    timeout: HumanDuration,
}

fn default_upstream_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransportDoc {
    #[serde(default = "default_allowed_hosts")]
    allowed_hosts: Vec<Spanned<String>>,
    #[serde(default)]
    allowed_origins: Vec<Spanned<String>>,
    #[serde(default)]
    require_origin: bool,
    #[serde(default = "default_protocol_versions")]
    protocol_versions: Vec<Spanned<String>>,
    #[serde(default = "default_max_body")]
    max_body: ByteSize,
    #[serde(default = "default_max_list_result")]
    max_list_result: ByteSize,
}

impl Default for TransportDoc {
    fn default() -> Self {
        Self {
            allowed_hosts: default_allowed_hosts(),
            allowed_origins: Vec::new(),
            require_origin: false,
            protocol_versions: default_protocol_versions(),
            max_body: default_max_body(),
            max_list_result: default_max_list_result(),
        }
    }
}

fn unspanned(value: &str) -> Spanned<String> {
    let unknown = serde_saphyr::Location::UNKNOWN;
    Spanned::new(value.to_owned(), unknown, unknown)
}
fn default_allowed_hosts() -> Vec<Spanned<String>> {
    ["localhost", "127.0.0.1", "[::1]"].into_iter().map(unspanned).collect()
}
fn default_protocol_versions() -> Vec<Spanned<String>> {
    ProtocolVersion::DEFAULT_SUPPORTED.iter().map(|v| unspanned(v)).collect()
}
fn default_max_body() -> ByteSize {
    ByteSize(4 << 20)
}
fn default_max_list_result() -> ByteSize {
    ByteSize(8 << 20)
}

impl PolicyDoc {
    fn compile(self, path: &Path, text: &str) -> Result<LoadedPolicy, ConfigError> {
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
        let listen =
            ListenSettings { proxy: self.listen.proxy, admin: self.listen.admin, drain: self.listen.drain.0 };
        let upstream = self.upstream.compile(path)?;
        let transport = self.transport.compile(path)?;
        let mut referenced = Vec::new();
        let mut inputs = text.as_bytes().to_vec();
        let identity = self.identity.compile(path, &mut referenced, &mut inputs)?;
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
            let server = doc.value.compile(path, &name, &at)?;
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
        };
        Ok(LoadedPolicy {
            listen,
            policy: Policy { upstream, transport, identity, sessions, virtual_servers, meta },
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
        if self.timeout.0.is_zero() {
            return Err(invalid_at(path, &self.url, "upstream timeout must be greater than zero"));
        }
        Ok(Upstream { authority, path: uri.path().to_owned(), timeout: self.timeout.0 })
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
    fn compile<T>(self, path: &Path, name: &str, at: &Spanned<T>) -> Result<VirtualServer, ConfigError> {
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
        .compile(path)?;
        let mut rules = Vec::with_capacity(self.rules.len());
        for rule in self.rules {
            let when = &rule.when.value;
            if when.groups.is_empty() && when.subjects.is_empty() && when.credentials.is_empty() {
                return Err(invalid_at(
                    path,
                    &rule.when,
                    "a rule's `when` must name groups, subjects or credentials (grants for everyone belong in the base lists)",
                ));
            }
            rules.push(Rule {
                groups: when.groups.iter().cloned().collect(),
                subjects: when.subjects.iter().cloned().collect(),
                credentials: credential_kinds(&when.credentials)
                    .map_err(|m| invalid_at(path, &rule.when, m))?,
                grants: GrantsDoc {
                    tools: rule.tools,
                    prompts: rule.prompts,
                    resources: rule.resources,
                    resource_templates: rule.resource_templates,
                }
                .compile(path)?,
            });
        }
        let denial = match self.denial {
            DenialDoc::Hidden => DenialStyle::Hidden,
            DenialDoc::Explicit => DenialStyle::Explicit,
        };
        let access = Access {
            anonymous: self.anonymous,
            credentials: credential_kinds(&self.credentials).map_err(|m| invalid_at(path, at, m))?,
            required_scopes: self.required_scopes,
        };
        Ok(VirtualServer { name: name.to_owned(), base, rules, denial, access })
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
    if j.audiences.is_empty() {
        return Err(invalid_at(
            path,
            doc,
            "a JWT issuer needs at least one audience: the resource's URL (RFC 8707)",
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
            let text = std::fs::read_to_string(&file).map_err(|e| {
                invalid_at(path, doc, format_args!("cannot read JWKS {}: {e}", file.display()))
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
        audiences: j.audiences.clone(),
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
    fn compile(self, path: &Path) -> Result<Grants, ConfigError> {
        let lists = [self.tools, self.prompts, self.resources, self.resource_templates];
        let mut allow: [Vec<String>; 4] = Default::default();
        let mut deny: [Vec<String>; 4] = Default::default();
        for (i, list) in lists.into_iter().enumerate() {
            for (source, target) in [(list.allow, &mut allow[i]), (list.deny, &mut deny[i])] {
                for entry in source {
                    pattern::validate(&entry.value).map_err(|m| invalid_at(path, &entry, m))?;
                    target.push(entry.value);
                }
            }
        }
        Ok(Grants::new(allow, deny))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VS: &str = "virtual_servers:\n  default:\n    tools: { allow: ['*'] }\n";

    fn load(text: &str) -> Result<LoadedPolicy, ConfigError> {
        load_str(text, Path::new("policy.yaml"))
    }

    fn error_of(text: &str) -> String {
        match load(text) {
            Ok(_) => panic!("policy should have been refused:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn minimal_policy_gets_safe_defaults() -> Result<(), ConfigError> {
        let loaded = load(&format!("version: 1\nupstream: {{ url: http://127.0.0.1:8080/mcp }}\n{VS}"))?;
        assert_eq!(loaded.listen.proxy, default_proxy_addr());
        assert_eq!(loaded.policy.upstream.path, "/mcp");
        assert_eq!(loaded.policy.transport.max_body, 4 << 20);
        assert!(loaded.policy.transport.allowed_hosts.allows("localhost:8000"));
        assert!(!loaded.policy.transport.allowed_hosts.allows("evil.example.com"));
        Ok(())
    }

    #[test]
    fn unknown_key_is_located() {
        let text = "version: 1\nupstream:\n  url: http://127.0.0.1:8080/mcp\n  tmeout: 5s\n";
        let message = error_of(text);
        assert!(message.starts_with("policy.yaml:4:3: "), "{message}");
        assert!(message.contains("tmeout"), "{message}");
    }

    #[test]
    fn bad_scalar_is_located() {
        let text =
            "version: 1\nupstream: { url: http://127.0.0.1:8080/mcp }\ntransport:\n  max_body: 4 parsecs\n";
        let message = error_of(text);
        assert!(message.starts_with("policy.yaml:4:"), "{message}");
        assert!(message.contains("unknown unit"), "{message}");
    }

    #[test]
    fn semantic_errors_are_located() {
        let text = format!(
            "version: 1\nupstream: {{ url: http://127.0.0.1:8080/mcp }}\ntransport:\n  allowed_origins:\n    - https://ok.example.com\n    - app.example.com\n{VS}"
        );
        let message = error_of(&text);
        assert!(message.starts_with("policy.yaml:6:7: "), "{message}");
        assert!(message.contains("scheme"), "{message}");

        let message = error_of(&format!("version: 2\nupstream: {{ url: http://127.0.0.1:8080/mcp }}\n{VS}"));
        assert!(message.starts_with("policy.yaml:1:10: "), "{message}");

        let message = error_of(&format!("version: 1\nupstream: {{ url: ftp://x/mcp }}\n{VS}"));
        assert!(message.starts_with("policy.yaml:2:"), "{message}");
        assert!(message.contains("http://"), "{message}");

        let message = error_of(&format!(
            "version: 1\nupstream: {{ url: http://x/mcp }}\ntransport: {{ protocol_versions: [2025-6-18] }}\n{VS}"
        ));
        assert!(message.contains("YYYY-MM-DD"), "{message}");
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let message =
            error_of("version: 1\nupstream: { url: http://x/mcp }\nupstream: { url: http://y/mcp }\n");
        assert!(message.starts_with("policy.yaml:3:"), "{message}");
        assert!(message.to_lowercase().contains("duplicate"), "{message}");
    }

    #[test]
    fn virtual_servers_are_validated() {
        let head = "version: 1\nupstream: { url: http://x/mcp }\n";
        let message = error_of(&format!("{head}virtual_servers:\n  Ops:\n    tools: {{ allow: [a] }}\n"));
        // Located at the server's body, the line after its name.
        assert!(message.starts_with("policy.yaml:5:5: ") && message.contains("`Ops`"), "{message}");
        let message = error_of(&format!("{head}virtual_servers:\n  ops:\n    tols: {{ allow: [a] }}\n"));
        assert!(message.starts_with("policy.yaml:5:5: ") && message.contains("tols"), "{message}");
        let message = error_of(&format!(
            "{head}virtual_servers:\n  ops:\n    rules:\n      - when: {{}}\n        tools: {{ allow: [a] }}\n"
        ));
        assert!(message.starts_with("policy.yaml:6:") && message.contains("when"), "{message}");
        let message = error_of(&format!(
            "{head}virtual_servers:\n  ops:\n    rules:\n      - when: {{ groups: [a] }}\n        tools: {{ alow: [a] }}\n"
        ));
        assert!(message.contains("alow"), "{message}");
        let message = error_of(&format!("{head}virtual_servers:\n  ops:\n    denial: loud\n"));
        assert!(message.starts_with("policy.yaml:5:"), "{message}");
        let message =
            error_of(&format!("{head}virtual_servers:\n  ops:\n    tools: {{ allow: ['a', ''] }}\n"));
        assert!(message.contains("empty"), "{message}");
        let message = error_of(&format!("{head}virtual_servers: {{}}\n"));
        assert!(message.contains("at least one virtual server"), "{message}");
        assert!(error_of(head).contains("virtual_servers"));
    }

    #[test]
    fn a_policy_compiles_to_virtual_servers() -> Result<(), ConfigError> {
        let loaded = load(
            "version: 1\nupstream: { url: http://x/mcp }\nvirtual_servers:\n  default:\n    tools: { allow: ['search_*'], deny: ['*_admin'] }\n  ops:\n    denial: explicit\n    rules:\n      - when: { groups: [sre] }\n        tools: { allow: ['restart_*'] }\n",
        )?;
        let policy = loaded.policy;
        assert_eq!(policy.meta.sha256.len(), 64);
        let anon = crate::policy::Principal::anonymous();
        let default = policy.virtual_server("default").ok_or_else(|| panic_error("default"))?;
        assert!(default.view(&anon).decide(crate::policy::ListKind::Tool, "search_web").is_allowed());
        let ops = policy.virtual_server("ops").ok_or_else(|| panic_error("ops"))?;
        assert_eq!(ops.denial, DenialStyle::Explicit);
        assert!(!ops.view(&anon).decide(crate::policy::ListKind::Tool, "restart_db").is_allowed());
        let sre = crate::policy::Principal::with_groups(CredentialKind::Jwt, "a", &["sre".into()]);
        assert!(ops.view(&sre).decide(crate::policy::ListKind::Tool, "restart_db").is_allowed());
        Ok(())
    }

    fn panic_error(what: &str) -> ConfigError {
        ConfigError::Invalid { path: String::new(), line: 0, column: 0, message: format!("missing {what}") }
    }

    #[test]
    fn jwks_sources_are_validated() {
        let with = |jwks: &str| {
            format!(
                "version: 1\nupstream: {{ url: http://x/mcp }}\nidentity:\n  jwt:\n    - issuer: i\n      audiences: [a]\n      jwks: {jwks}\n{VS}"
            )
        };
        assert!(load(&with("{ url: 'https://id.example.com/jwks.json' }")).is_ok());
        assert!(load(&with("{ url: 'http://127.0.0.1:9/jwks.json' }")).is_ok());
        assert!(error_of(&with("{ url: 'http://id.example.com/jwks.json' }")).contains("https://"));
        assert!(error_of(&with("{ url: 'https://a/j', file: j.json }")).contains("exactly one"));
        assert!(error_of(&with("{}")).contains("exactly one"));
        assert!(error_of(&with("{ file: /no/such/jwks.json }")).contains("cannot read JWKS"));
    }

    #[test]
    fn missing_upstream_is_reported() {
        let message = error_of("version: 1\n");
        assert!(message.contains("upstream"), "{message}");
    }
}
