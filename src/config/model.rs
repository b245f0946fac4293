//! The policy file as YAML: one struct per section, with the defaults
//! every absent field takes. Unknown and duplicate keys are refused at
//! every level by the deserializer; meaning is checked in [`compile`](super::compile).

use super::units::{ByteSize, HumanDuration};
use crate::mcp::version::ProtocolVersion;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Policy")]
#[serde(deny_unknown_fields)]
pub(super) struct PolicyDoc {
    #[schemars(with = "u32")]
    pub(super) version: Spanned<u32>,
    #[serde(default)]
    pub(super) listen: ListenDoc,
    pub(super) upstream: UpstreamDoc,
    #[serde(default)]
    pub(super) transport: TransportDoc,
    #[serde(default)]
    pub(super) identity: IdentityDoc,
    #[serde(default)]
    pub(super) sessions: SessionsDoc,
    #[schemars(with = "BTreeMap<String, VirtualServerDoc>")]
    pub(super) virtual_servers: Spanned<BTreeMap<String, Spanned<VirtualServerDoc>>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Sessions")]
#[serde(deny_unknown_fields)]
pub(super) struct SessionsDoc {
    #[serde(default = "default_session_idle")]
    pub(super) idle_timeout: HumanDuration,
    #[serde(default = "default_session_max")]
    pub(super) max: usize,
    #[serde(default = "default_session_max_per_principal")]
    pub(super) max_per_principal: usize,
}

impl Default for SessionsDoc {
    fn default() -> Self {
        Self {
            idle_timeout: default_session_idle(),
            max: default_session_max(),
            max_per_principal: default_session_max_per_principal(),
        }
    }
}

pub(super) fn default_session_max_per_principal() -> usize {
    256
}

pub(super) fn default_session_idle() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}
pub(super) fn default_session_max() -> usize {
    100_000
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(rename = "Identity")]
#[serde(deny_unknown_fields)]
pub(super) struct IdentityDoc {
    #[serde(default)]
    #[schemars(with = "Vec<ApiKeyDoc>")]
    pub(super) api_keys: Vec<Spanned<ApiKeyDoc>>,
    #[serde(default)]
    #[schemars(with = "Vec<JwtDoc>")]
    pub(super) jwt: Vec<Spanned<JwtDoc>>,
    #[serde(default)]
    #[schemars(with = "Option<TrustedHeaderDoc>")]
    pub(super) trusted_header: Option<Spanned<TrustedHeaderDoc>>,
    #[serde(default)]
    #[schemars(with = "Option<UpstreamHeadersDoc>")]
    pub(super) upstream_headers: Option<Spanned<UpstreamHeadersDoc>>,
    #[serde(default)]
    pub(super) resource_metadata: ResourceMetadataDoc,
    #[serde(default)]
    #[schemars(with = "Option<SignaturesDoc>")]
    pub(super) signatures: Option<Spanned<SignaturesDoc>>,
    #[serde(default)]
    #[schemars(with = "Option<MtlsDoc>")]
    pub(super) mtls: Option<Spanned<MtlsDoc>>,
}

/// Verified client certificates as credentials of kind `mtls`.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Mtls")]
#[serde(deny_unknown_fields)]
pub(super) struct MtlsDoc {
    /// Which name of the certificate is the subject.
    #[serde(default)]
    pub(super) subject: MtlsSubjectDoc,
}

#[derive(Debug, Default, Clone, Copy, Deserialize, JsonSchema)]
#[schemars(rename = "MtlsSubject")]
#[serde(rename_all = "lowercase")]
pub(super) enum MtlsSubjectDoc {
    /// The URI subject alternative name (a SPIFFE ID).
    #[default]
    Uri,
    /// The DNS subject alternative name.
    Dns,
    /// The email (rfc822Name) subject alternative name.
    Email,
    /// The subject's common name.
    Cn,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Signatures")]
#[serde(deny_unknown_fields)]
pub(super) struct SignaturesDoc {
    #[serde(default = "default_max_skew")]
    pub(super) max_skew: HumanDuration,
    #[serde(default = "default_true")]
    pub(super) require_nonce: bool,
    #[serde(default = "default_nonce_cache")]
    pub(super) nonce_cache: usize,
    #[schemars(with = "Vec<SignatureKeyDoc>")]
    pub(super) keys: Vec<Spanned<SignatureKeyDoc>>,
}

pub(super) fn default_max_skew() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
pub(super) fn default_true() -> bool {
    true
}
pub(super) fn default_nonce_cache() -> usize {
    100_000
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "SignatureKey")]
#[serde(deny_unknown_fields)]
pub(super) struct SignatureKeyDoc {
    pub(super) id: String,
    pub(super) alg: String,
    /// Ed25519: base64 of the 32-byte public key.
    #[serde(default)]
    pub(super) public_key: Option<String>,
    /// hmac-sha256: base64 of the shared secret.
    #[serde(default)]
    pub(super) secret: Option<String>,
    /// hmac-sha256: a file holding `secret` (a mounted Secret).
    #[serde(default)]
    pub(super) secret_file: Option<String>,
    #[serde(default)]
    pub(super) groups: Vec<String>,
    #[serde(default)]
    pub(super) scopes: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "ApiKey")]
#[serde(deny_unknown_fields)]
pub(super) struct ApiKeyDoc {
    pub(super) id: String,
    /// Hex SHA-256 of the key.
    #[serde(default)]
    pub(super) sha256: Option<String>,
    /// A file holding `sha256` (a mounted Secret).
    #[serde(default)]
    pub(super) sha256_file: Option<String>,
    #[serde(default)]
    pub(super) groups: Vec<String>,
    #[serde(default)]
    pub(super) scopes: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Jwt")]
#[serde(deny_unknown_fields)]
pub(super) struct JwtDoc {
    pub(super) issuer: String,
    /// No longer read: a token's audience is the virtual server's. Kept
    /// to say so, rather than "unknown field".
    #[serde(default)]
    #[schemars(skip)]
    pub(super) audiences: Option<Vec<String>>,
    #[serde(default = "default_jwt_algorithms")]
    pub(super) algorithms: Vec<String>,
    #[serde(default)]
    pub(super) jwks: Option<JwksDoc>,
    /// Base64 shared secret for HS256/384/512.
    #[serde(default)]
    pub(super) secret: Option<String>,
    /// A file holding `secret` (a mounted Secret).
    #[serde(default)]
    pub(super) secret_file: Option<String>,
    #[serde(default = "default_leeway")]
    pub(super) leeway: HumanDuration,
    #[serde(default)]
    pub(super) required_claims: Vec<String>,
    #[serde(default = "default_groups_claim")]
    pub(super) groups_claim: String,
    #[serde(default = "default_scopes_claim")]
    pub(super) scopes_claim: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Jwks")]
#[serde(deny_unknown_fields)]
pub(super) struct JwksDoc {
    #[serde(default)]
    pub(super) file: Option<String>,
    #[serde(default)]
    pub(super) url: Option<String>,
    #[serde(default = "default_jwks_refresh")]
    pub(super) refresh: HumanDuration,
    #[serde(default = "default_jwks_min_refetch")]
    pub(super) min_refetch: HumanDuration,
}

pub(super) fn default_jwks_refresh() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}
pub(super) fn default_jwks_min_refetch() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

pub(super) fn default_jwt_algorithms() -> Vec<String> {
    ["RS256", "PS256", "ES256", "EdDSA"].map(String::from).to_vec()
}
pub(super) fn default_leeway() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
pub(super) fn default_groups_claim() -> String {
    "groups".into()
}
pub(super) fn default_scopes_claim() -> String {
    "scope".into()
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "TrustedHeader")]
#[serde(deny_unknown_fields)]
pub(super) struct TrustedHeaderDoc {
    pub(super) subject: String,
    #[serde(default)]
    pub(super) groups: Option<String>,
    pub(super) from: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "UpstreamHeaders")]
#[serde(deny_unknown_fields)]
pub(super) struct UpstreamHeadersDoc {
    pub(super) subject: String,
    #[serde(default = "default_credential_header")]
    pub(super) credential: String,
    #[serde(default = "default_issuer_header")]
    pub(super) issuer: String,
    #[serde(default)]
    pub(super) groups: Option<String>,
}

pub(super) fn default_credential_header() -> String {
    "x-toolgate-credential".into()
}
pub(super) fn default_issuer_header() -> String {
    "x-toolgate-issuer".into()
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(rename = "ResourceMetadata")]
#[serde(deny_unknown_fields)]
pub(super) struct ResourceMetadataDoc {
    #[serde(default)]
    pub(super) base_url: Option<String>,
    #[serde(default)]
    pub(super) authorization_servers: Vec<String>,
    #[serde(default)]
    pub(super) scopes_supported: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "VirtualServer")]
#[serde(deny_unknown_fields)]
pub(super) struct VirtualServerDoc {
    #[serde(default)]
    pub(super) anonymous: bool,
    /// What a JWT's `aud` must name here; default: the resource URL.
    #[serde(default)]
    pub(super) audiences: Vec<String>,
    #[serde(default)]
    pub(super) response_timeout: Option<HumanDuration>,
    #[serde(default)]
    #[schemars(with = "Vec<ToolTimeoutDoc>")]
    pub(super) tool_timeouts: Vec<Spanned<ToolTimeoutDoc>>,
    #[serde(default)]
    pub(super) credentials: Vec<String>,
    #[serde(default)]
    pub(super) required_scopes: Vec<String>,
    #[serde(default)]
    pub(super) denial: DenialDoc,
    #[serde(default)]
    pub(super) tools: ListDoc,
    #[serde(default)]
    pub(super) prompts: ListDoc,
    #[serde(default)]
    pub(super) resources: ListDoc,
    #[serde(default)]
    pub(super) resource_templates: ListDoc,
    #[serde(default)]
    pub(super) rules: Vec<RuleDoc>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(rename = "Denial")]
#[serde(rename_all = "lowercase")]
pub(super) enum DenialDoc {
    #[default]
    Hidden,
    Explicit,
}

/// The four lists, as a virtual server or a rule writes them. (Not a
/// flattened struct: serde's `flatten` would disable `deny_unknown_fields`.)
pub(super) struct GrantsDoc {
    pub(super) tools: ListDoc,
    pub(super) prompts: ListDoc,
    pub(super) resources: ListDoc,
    pub(super) resource_templates: ListDoc,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(rename = "List")]
#[serde(deny_unknown_fields)]
pub(super) struct ListDoc {
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub(super) allow: Vec<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub(super) deny: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Rule")]
#[serde(deny_unknown_fields)]
pub(super) struct RuleDoc {
    #[schemars(with = "WhenDoc")]
    pub(super) when: Spanned<WhenDoc>,
    #[serde(default)]
    pub(super) tools: ListDoc,
    #[serde(default)]
    pub(super) prompts: ListDoc,
    #[serde(default)]
    pub(super) resources: ListDoc,
    #[serde(default)]
    pub(super) resource_templates: ListDoc,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "When")]
#[serde(deny_unknown_fields)]
pub(super) struct WhenDoc {
    #[serde(default)]
    pub(super) groups: Vec<String>,
    #[serde(default)]
    pub(super) subjects: Vec<String>,
    #[serde(default)]
    pub(super) credentials: Vec<String>,
    #[serde(default)]
    pub(super) issuers: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Listen")]
#[serde(deny_unknown_fields)]
pub(super) struct ListenDoc {
    #[serde(default = "default_proxy_addr")]
    pub(super) proxy: SocketAddr,
    #[serde(default = "default_admin_addr")]
    #[schemars(with = "SocketAddr")]
    pub(super) admin: Spanned<SocketAddr>,
    #[serde(default = "default_drain")]
    pub(super) drain: HumanDuration,
    #[serde(default = "default_max_connections")]
    pub(super) max_connections: usize,
    #[serde(default = "default_idle_timeout")]
    pub(super) idle_timeout: HumanDuration,
    #[serde(default = "default_handshake_timeout")]
    pub(super) handshake_timeout: HumanDuration,
    #[serde(default)]
    #[schemars(with = "Option<ListenTlsDoc>")]
    pub(super) tls: Option<Spanned<ListenTlsDoc>>,
}

/// TLS on the proxy listener. File paths are relative to the policy file.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "ListenTls")]
#[serde(deny_unknown_fields)]
pub(super) struct ListenTlsDoc {
    /// PEM certificate chain, leaf first.
    pub(super) cert_file: String,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub(super) key_file: String,
    /// PEM CA bundle that client certificates must chain to.
    #[serde(default)]
    pub(super) client_ca_file: Option<String>,
    /// With `client_ca_file`: whether every client must present one
    /// (default: required).
    #[serde(default)]
    pub(super) client_certificates: Option<ClientCertificatesDoc>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[schemars(rename = "ClientCertificates")]
#[serde(rename_all = "lowercase")]
pub(super) enum ClientCertificatesDoc {
    Required,
    Optional,
}

impl Default for ListenDoc {
    fn default() -> Self {
        Self {
            proxy: default_proxy_addr(),
            admin: default_admin_addr(),
            drain: default_drain(),
            max_connections: default_max_connections(),
            idle_timeout: default_idle_timeout(),
            handshake_timeout: default_handshake_timeout(),
            tls: None,
        }
    }
}

pub(super) fn default_max_connections() -> usize {
    10_000
}
pub(super) fn default_idle_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
pub(super) fn default_handshake_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

pub(super) fn default_proxy_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8000))
}
pub(super) fn default_admin_addr() -> Spanned<SocketAddr> {
    let unknown = serde_saphyr::Location::UNKNOWN;
    Spanned::new(SocketAddr::from(([127, 0, 0, 1], 9090)), unknown, unknown)
}
pub(super) fn default_drain() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Upstream")]
#[serde(deny_unknown_fields)]
pub(super) struct UpstreamDoc {
    #[schemars(with = "String")]
    pub(super) url: Spanned<String>,
    /// No longer read: split into the two below. Kept to say so.
    #[serde(default)]
    #[schemars(skip)]
    pub(super) timeout: Option<Spanned<HumanDuration>>,
    #[serde(default = "default_connect_timeout")]
    pub(super) connect_timeout: HumanDuration,
    #[serde(default = "default_response_timeout")]
    pub(super) response_timeout: HumanDuration,
    #[serde(default)]
    #[schemars(with = "Option<UpstreamTlsDoc>")]
    pub(super) tls: Option<Spanned<UpstreamTlsDoc>>,
}

/// TLS to an `https://` upstream. File paths are relative to the policy file.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "UpstreamTls")]
#[serde(deny_unknown_fields)]
pub(super) struct UpstreamTlsDoc {
    /// PEM CA bundle to trust instead of the system's trust store.
    #[serde(default)]
    pub(super) ca_file: Option<String>,
    /// PEM client certificate chain, for an upstream that asks for one.
    #[serde(default)]
    pub(super) cert_file: Option<String>,
    /// PEM private key of `cert_file`.
    #[serde(default)]
    pub(super) key_file: Option<String>,
}

pub(super) fn default_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
pub(super) fn default_response_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "ToolTimeout")]
#[serde(deny_unknown_fields)]
pub(super) struct ToolTimeoutDoc {
    pub(super) tools: Vec<String>,
    pub(super) response_timeout: HumanDuration,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Transport")]
#[serde(deny_unknown_fields)]
pub(super) struct TransportDoc {
    #[serde(default = "default_allowed_hosts")]
    #[schemars(with = "Vec<String>")]
    pub(super) allowed_hosts: Vec<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub(super) allowed_origins: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) require_origin: bool,
    #[serde(default = "default_protocol_versions")]
    #[schemars(with = "Vec<String>")]
    pub(super) protocol_versions: Vec<Spanned<String>>,
    #[serde(default = "default_max_body")]
    pub(super) max_body: ByteSize,
    #[serde(default = "default_max_list_result")]
    pub(super) max_list_result: ByteSize,
    #[serde(default = "default_list_memo")]
    pub(super) list_memo: ByteSize,
    #[serde(default = "default_body_timeout")]
    pub(super) body_timeout: HumanDuration,
}

pub(super) fn default_body_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
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
            list_memo: default_list_memo(),
            body_timeout: default_body_timeout(),
        }
    }
}

pub(super) fn unspanned(value: &str) -> Spanned<String> {
    let unknown = serde_saphyr::Location::UNKNOWN;
    Spanned::new(value.to_owned(), unknown, unknown)
}
pub(super) fn default_allowed_hosts() -> Vec<Spanned<String>> {
    ["localhost", "127.0.0.1", "[::1]"].into_iter().map(unspanned).collect()
}
pub(super) fn default_protocol_versions() -> Vec<Spanned<String>> {
    ProtocolVersion::DEFAULT_SUPPORTED.iter().map(|v| unspanned(v)).collect()
}
pub(super) fn default_max_body() -> ByteSize {
    ByteSize(4 << 20)
}
pub(super) fn default_max_list_result() -> ByteSize {
    ByteSize(8 << 20)
}
pub(super) fn default_list_memo() -> ByteSize {
    ByteSize(4 << 20)
}
