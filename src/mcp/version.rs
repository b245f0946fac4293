//! MCP protocol versions and the transport rules that hang on them.

use std::fmt;

/// A protocol version string, `YYYY-MM-DD`. Versions are dates, so their
/// order is the order of their strings.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolVersion(String);

impl ProtocolVersion {
    /// What a request without an `MCP-Protocol-Version` header is taken to
    /// speak. MCP 2025-06-18 transports: "the server SHOULD assume protocol
    /// version 2025-03-26".
    pub const ASSUMED_WHEN_ABSENT: &'static str = "2025-03-26";

    /// The versions a policy supports unless it says otherwise: the
    /// Streamable HTTP revisions.
    pub const DEFAULT_SUPPORTED: &'static [&'static str] =
        &["2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"];

    /// From this version on, requests carry `Mcp-Method`/`Mcp-Name` headers
    /// that must agree with the body (SEP-2243).
    pub const STANDARD_HEADERS: &'static str = "2026-07-28";

    pub fn parse(text: &str) -> Result<Self, String> {
        let bytes = text.as_bytes();
        let shaped = bytes.len() == 10
            && bytes.iter().enumerate().all(|(i, b)| match i {
                4 | 7 => *b == b'-',
                _ => b.is_ascii_digit(),
            });
        if shaped {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!("protocol version `{text}` must be a date, YYYY-MM-DD (e.g. 2025-06-18)"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// JSON-RPC batches exist only in protocol 2025-03-26: 2025-06-18 removed
/// them ("Remove support for JSON-RPC batching").
pub fn allows_batches(version: &str) -> bool {
    version == "2025-03-26"
}

/// Whether `Mcp-Method` and `Mcp-Name` must accompany a request of this
/// version.
pub fn requires_standard_headers(version: &str) -> bool {
    version >= ProtocolVersion::STANDARD_HEADERS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_rules() {
        assert!(ProtocolVersion::parse("2025-06-18").is_ok());
        assert!(ProtocolVersion::parse("2025-6-18").is_err());
        assert!(ProtocolVersion::parse("latest").is_err());
        assert!(allows_batches("2025-03-26"));
        assert!(!allows_batches("2025-06-18"));
        assert!(!requires_standard_headers("2025-11-25"));
        assert!(requires_standard_headers("2026-07-28"));
        assert!(requires_standard_headers("2027-01-01"));
    }
}
