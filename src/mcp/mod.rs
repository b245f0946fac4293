//! The MCP wire format as far as toolgate needs it: JSON-RPC envelopes,
//! protocol versions and the transport's HTTP headers.

pub mod envelope;
pub mod headers;
pub mod keys;
pub mod list_filter;
pub mod scan;
pub mod sse;
pub mod sse_event;
pub mod version;
