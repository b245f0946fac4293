//! toolgate: a reverse proxy in front of an MCP server that speaks
//! Streamable HTTP, enforcing the transport rules of the MCP specification
//! at the edge and forwarding everything else untouched.
//!
//! # Layout
//!
//! - [`server`]: listeners, the connection cap, graceful drain; [`serve`]
//!   is the entry point the binary, the demo and the tests share.
//! - [`connection`]: one client connection: TLS, protocol detection,
//!   HTTP/1.1 or HTTP/2, idle and handshake timeouts.
//! - [`tls`]: rustls configurations for the listener and the upstream.
//! - [`limits`]: the open-file limit, exhaustion logged once per interval.
//! - [`proxy`]: the request pipeline, one step per rule, then forwarding.
//! - [`mcp`]: the wire format: JSON-RPC envelope, protocol versions, headers.
//! - [`config`]: the YAML policy file, validated with file/line/column.
//! - [`policy`]: the compiled, immutable policy snapshot and its store;
//!   virtual servers, allowlists, decisions.
//! - [`reload`]: watching the policy file, SIGHUP, atomic swap.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics` on their own listener.
//! - [`identity`]: who is calling: JWTs, API keys, RFC 9421 signatures,
//!   trusted proxy headers, client certificates.
//! - [`telemetry`]: logging set-up and the metrics registry.
//! - [`demo`]: the built-in MCP server behind `toolgate demo`.

#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod connection;
pub mod demo;
pub mod identity;
pub mod limits;
pub mod mcp;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod server;
pub mod telemetry;
pub mod tls;

pub use server::{Config, ServeError, Server, serve};
