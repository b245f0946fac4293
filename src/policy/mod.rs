//! The compiled policy: an immutable snapshot that every request loads once
//! and is judged under from its first byte to its last, even if a newer
//! snapshot is published meanwhile.

mod hosts;

pub use hosts::{AllowedHosts, AllowedOrigins};

use crate::mcp::version::ProtocolVersion;
use arc_swap::ArcSwap;
use http::uri::Authority;
use std::sync::Arc;
use std::time::Duration;

/// Everything the proxy needs to decide and forward, compiled from one
/// policy file.
#[derive(Debug)]
pub struct Policy {
    pub upstream: Upstream,
    pub transport: Transport,
}

/// Where requests go once they pass.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `host:port` of the upstream MCP server (HTTP).
    pub authority: Authority,
    /// The upstream's MCP endpoint path, e.g. `/mcp`.
    pub path: String,
    /// How long to wait for the upstream's response head, connecting included.
    pub timeout: Duration,
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
}

impl Transport {
    pub fn supports(&self, version: &str) -> bool {
        self.protocol_versions.iter().any(|v| v.as_str() == version)
    }
}

/// The published policy. Readers take a snapshot with [`PolicyStore::load`];
/// a reload replaces it atomically.
#[derive(Debug)]
pub struct PolicyStore {
    current: ArcSwap<Policy>,
}

impl PolicyStore {
    pub fn new(policy: Policy) -> Self {
        Self {
            current: ArcSwap::from_pointee(policy),
        }
    }

    /// The snapshot one request is judged under.
    pub fn load(&self) -> Arc<Policy> {
        self.current.load_full()
    }
}
