//! The compiled policy: an immutable snapshot that every request loads once
//! and is judged under from its first byte to its last, even if a newer
//! snapshot is published meanwhile.

mod hosts;
pub mod pattern;
mod uri;
mod virtual_server;

pub use crate::identity::Principal;
pub use hosts::{AllowedHosts, AllowedOrigins};
pub use virtual_server::{
    Decision, Denial, DenialStyle, Grants, ListKind, ResponseTimeouts, Rule, Source, View, VirtualServer,
};

use crate::mcp::version::ProtocolVersion;
use arc_swap::ArcSwap;
use http::uri::Authority;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The virtual server `/mcp` maps to.
pub const DEFAULT_SERVER: &str = "default";

/// Everything the proxy needs to decide and forward, compiled from one
/// policy file.
#[derive(Debug)]
pub struct Policy {
    pub upstream: Upstream,
    pub transport: Transport,
    pub identity: crate::identity::Identity,
    pub sessions: SessionSettings,
    pub virtual_servers: HashMap<String, VirtualServer>,
    /// The proxy listener's TLS configuration, when it speaks TLS: each
    /// new connection takes the running policy's.
    pub listener_tls: Option<ListenerTls>,
    pub meta: PolicyMeta,
}

/// Where a snapshot came from. Never holds a secret.
#[derive(Debug, Clone)]
pub struct PolicyMeta {
    /// Hex SHA-256 of the policy file's bytes.
    pub sha256: String,
    /// Hex SHA-256 over the policy file and every file it names (JWKS):
    /// a reload is a no-op when this is unchanged.
    pub inputs_sha256: String,
    /// The files the policy names, whose directories are watched too.
    pub referenced_files: Vec<std::path::PathBuf>,
    /// 1 for the policy loaded at start, +1 for each reload that took effect.
    pub generation: u64,
    pub loaded_at: SystemTime,
}

impl Policy {
    pub fn virtual_server(&self, name: &str) -> Option<&VirtualServer> {
        self.virtual_servers.get(name)
    }
}

/// Limits of the session-binding table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSettings {
    /// A session unused this long is forgotten (its id becomes unknown).
    pub idle: Duration,
    /// At most this many sessions are remembered; the longest idle goes first.
    pub max: usize,
    /// At most this many per principal (per address for anonymous callers);
    /// past that, the principal's own oldest goes.
    pub max_per_principal: usize,
}

/// Where requests go once they pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// For an `https://` upstream, how to speak TLS to it.
    pub tls: Option<UpstreamTls>,
    /// `host:port` of the upstream MCP server.
    pub authority: Authority,
    /// The upstream's MCP endpoint path, e.g. `/mcp`.
    pub path: String,
    /// How long connecting to the upstream may take.
    pub connect_timeout: Duration,
    /// How long to wait for the upstream's response head, connecting
    /// included (a virtual server or a tool pattern may say otherwise).
    pub response_timeout: Duration,
    /// `scheme://authority/path`: where a request without a query goes.
    pub target: http::Uri,
    /// The `Host` every forwarded request carries.
    pub host: http::HeaderValue,
}

/// TLS on the proxy listener: the configuration new connections take,
/// and the SHA-256 of the client CA bundle it verifies against (which an
/// `mtls` principal must have been verified under).
#[derive(Debug, Clone)]
pub struct ListenerTls {
    pub config: Arc<rustls::ServerConfig>,
    pub client_ca: Option<[u8; 32]>,
}

/// TLS to the upstream: the client configuration, and a fingerprint of
/// what it was built from (its files), which tells the connection pool
/// when a reload changed it.
#[derive(Clone)]
pub struct UpstreamTls {
    pub config: Arc<rustls::ClientConfig>,
    pub fingerprint: String,
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for UpstreamTls {}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

impl Upstream {
    /// An upstream at `authority` and `path`, with what every request to
    /// it carries worked out once.
    pub fn new(
        tls: Option<UpstreamTls>,
        authority: Authority,
        path: String,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<Self, String> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let target = http::Uri::builder()
            .scheme(scheme)
            .authority(authority.clone())
            .path_and_query(path.as_str())
            .build()
            .map_err(|error| format!("the upstream's URL cannot be used: {error}"))?;
        let host = http::HeaderValue::from_str(authority.as_str())
            .map_err(|_| "the upstream's authority cannot be a Host header".to_owned())?;
        Ok(Self { tls, authority, path, connect_timeout, response_timeout, target, host })
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// The transport rules of the MCP Streamable HTTP specification, with the
/// values this deployment chose.
#[derive(Debug)]
pub struct Transport {
    pub allowed_hosts: AllowedHosts,
    pub allowed_origins: AllowedOrigins,
    /// Refuse requests that carry no `Origin` header at all.
    pub require_origin: bool,
    pub protocol_versions: Vec<ProtocolVersion>,
    /// Largest POST body read, in bytes.
    pub max_body: usize,
    /// Largest list result (or SSE event) toolgate holds to filter.
    pub max_list_result: usize,
    /// Bytes of list results remembered once filtered (0: none).
    pub list_memo: usize,
    /// How long a request body may take to arrive.
    pub body_timeout: std::time::Duration,
}

impl Transport {
    pub fn supports(&self, version: &str) -> bool {
        self.protocol_versions.iter().any(|v| v.as_str() == version)
    }
}

/// The published policy. Readers take a snapshot with [`PolicyStore::load`];
/// [`PolicyStore::publish`] replaces it atomically.
#[derive(Debug)]
pub struct PolicyStore {
    current: ArcSwap<Policy>,
    /// The current generation, for what must act at once on a reload (an
    /// open GET stream re-judges its caller).
    published: tokio::sync::watch::Sender<u64>,
}

impl PolicyStore {
    pub fn new(mut policy: Policy) -> Self {
        policy.meta.generation = 1;
        Self { current: ArcSwap::from_pointee(policy), published: tokio::sync::watch::Sender::new(1) }
    }

    /// Changes each time a policy is published.
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// The snapshot one request is judged under.
    pub fn load(&self) -> Arc<Policy> {
        self.current.load_full()
    }

    /// Makes `policy` the current snapshot and returns its generation.
    /// Called from one place only (the reloader), so generations are dense.
    pub fn publish(&self, mut policy: Policy) -> u64 {
        let generation = self.current.load().meta.generation + 1;
        policy.meta.generation = generation;
        self.current.store(Arc::new(policy));
        self.published.send_replace(generation);
        generation
    }
}
