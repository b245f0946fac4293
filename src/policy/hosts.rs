//! Host and Origin allowlists, the DNS-rebinding guard the MCP transport
//! specification asks for ("Servers MUST validate the Origin header on all
//! incoming connections"). Entries are normalised once at compile time so a
//! request costs one hash lookup.

use super::pattern::NameHasher;
use std::collections::HashSet;
use std::hash::BuildHasherDefault;

/// Hostnames (optionally with a port) the proxy answers to. `*` accepts any
/// Host and must be written explicitly.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    any: bool,
    /// `host` entries match on any port, `host:port` entries on that port.
    /// Hashed without a random key: the entries are the policy's, fixed
    /// when it is compiled, so a client's Host cannot lengthen a chain.
    entries: HashSet<String, BuildHasherDefault<NameHasher>>,
}

impl AllowedHosts {
    pub fn new(entries: Vec<String>) -> Self {
        let any = entries.iter().any(|e| e == "*");
        Self { any, entries: entries.into_iter().filter(|e| e != "*").collect() }
    }

    /// Checks and lower-cases one policy entry.
    pub fn normalize_entry(entry: &str) -> Result<String, String> {
        let entry = entry.trim();
        if entry == "*" {
            return Ok(entry.to_owned());
        }
        match split_authority(entry) {
            Some(_) => Ok(entry.to_ascii_lowercase()),
            None => Err(format!(
                "allowed host `{entry}` must be a hostname or address, optionally with :port (e.g. mcp.example.com or localhost:8000)"
            )),
        }
    }

    /// Whether a request's `Host` (or HTTP/2 `:authority`) is allowed.
    pub fn allows(&self, authority: &str) -> bool {
        if self.any {
            return true;
        }
        let Some((host, port)) = split_authority(authority) else {
            return false;
        };
        // Lower-cased copy only when the client sent capitals.
        let host: std::borrow::Cow<str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            host.to_ascii_lowercase().into()
        } else {
            host.into()
        };
        let host = host.strip_suffix('.').unwrap_or(&host);
        if self.entries.contains(host) {
            return true;
        }
        match port {
            Some(port) => self.entries.contains(&format!("{host}:{port}")),
            None => false,
        }
    }
}

/// Splits `host[:port]` / `[v6][:port]`; `None` for anything else, including
/// userinfo (`a@b`), paths and empty hosts.
fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    // Delimiters of userinfo, path, query and fragment, space, `%`, and
    // the control bytes (DEL too).
    const REFUSED: [bool; 256] = {
        let mut refused = [false; 256];
        let mut byte = 0;
        while byte < 256 {
            refused[byte] = byte < 0x20 || byte == 0x7f;
            byte += 1;
        }
        let mut at = 0;
        while at < 7 {
            refused[b"@/\\?# %"[at] as usize] = true;
            at += 1;
        }
        refused
    };
    if authority.is_empty() || authority.bytes().any(|b| REFUSED[usize::from(b)]) {
        return None;
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &authority[..end + 2];
        match &rest[end + 1..] {
            "" => (host, None),
            tail => (host, Some(tail.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host.contains(':') && !host.starts_with('[') {
        return None;
    }
    let port = match port {
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
        None => None,
    };
    Some((host, port))
}

/// Browser origins allowed to call the proxy, as `scheme://host[:port]`.
#[derive(Debug, Clone, Default)]
pub struct AllowedOrigins {
    entries: HashSet<String>,
}

impl AllowedOrigins {
    pub fn new(entries: Vec<String>) -> Self {
        Self { entries: entries.into_iter().collect() }
    }

    pub fn normalize_entry(entry: &str) -> Result<String, String> {
        let entry = entry.trim();
        if entry.eq_ignore_ascii_case("null") {
            return Err("allowed origin `null` would admit sandboxed frames and local files; name real origins instead".into());
        }
        normalize_origin(entry).ok_or_else(|| {
            format!("allowed origin `{entry}` must be scheme://host[:port] with an http or https scheme and no path (e.g. https://app.example.com)")
        })
    }

    /// Whether an `Origin` header value is one of the allowed origins. RFC
    /// 6454 compares scheme, host and port; `null` and anything with a path
    /// never match.
    pub fn allows(&self, origin: &str) -> bool {
        normalize_origin(origin).is_some_and(|o| self.entries.contains(&o))
    }
}

/// `Some("scheme://host[:port]")` lower-cased with the scheme's default port
/// removed, or `None` when the text is not a serialised origin.
fn normalize_origin(origin: &str) -> Option<String> {
    let (scheme, rest) = origin.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let (host, port) = split_authority(rest)?;
    let host = host.to_ascii_lowercase();
    Some(match port {
        Some(p) if p != default_port => format!("{scheme}://{host}:{p}"),
        _ => format!("{scheme}://{host}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_authority_with_a_delimiter_space_percent_or_control_is_refused() {
        // `:` and brackets are judged as the port's and an IPv6 address's.
        for byte in (0..=0x7fu8).filter(|b| !b":[]".contains(b)) {
            let refused =
                matches!(byte, b'@' | b'/' | b'\\' | b'?' | b'#' | b' ' | b'%') || byte.is_ascii_control();
            let authority = format!("a{}b:80", char::from(byte));
            assert_eq!(split_authority(&authority).is_none(), refused, "byte {byte:#04x}");
        }
        assert_eq!(split_authority("ünï.example:80"), Some(("ünï.example", Some(80))));
    }

    fn hosts(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::new(
            entries.iter().map(|e| AllowedHosts::normalize_entry(e).unwrap_or_default()).collect(),
        )
    }

    #[test]
    fn host_entries_with_and_without_port() {
        let allowed = hosts(&["localhost", "MCP.example.com:8443", "[::1]"]);
        assert!(allowed.allows("localhost"));
        assert!(allowed.allows("LOCALHOST:8000"));
        assert!(allowed.allows("localhost."));
        assert!(allowed.allows("mcp.example.com:8443"));
        assert!(!allowed.allows("mcp.example.com"));
        assert!(!allowed.allows("mcp.example.com:443"));
        assert!(allowed.allows("[::1]:9000"));
        assert!(!allowed.allows("localhost.evil.com"));
        assert!(!allowed.allows("evil.com@localhost"));
        assert!(!allowed.allows("localhost:80/x"));
        assert!(!allowed.allows("localhost:abc"));
        assert!(!allowed.allows(""));
        assert!(hosts(&["*"]).allows("anything.example"));
    }

    #[test]
    fn bad_host_entries_are_refused() {
        assert!(AllowedHosts::normalize_entry("http://x").is_err());
        assert!(AllowedHosts::normalize_entry("a b").is_err());
        assert!(AllowedHosts::normalize_entry("x:").is_err());
    }

    #[test]
    fn origins_compare_scheme_host_port() {
        let allowed = AllowedOrigins::new(vec![
            AllowedOrigins::normalize_entry("https://App.example.com:443").unwrap_or_default(),
            AllowedOrigins::normalize_entry("http://localhost:6274").unwrap_or_default(),
        ]);
        assert!(allowed.allows("https://app.example.com"));
        assert!(allowed.allows("HTTPS://APP.EXAMPLE.COM"));
        assert!(allowed.allows("http://localhost:6274"));
        assert!(!allowed.allows("http://app.example.com"));
        assert!(!allowed.allows("http://localhost"));
        assert!(!allowed.allows("http://localhost.evil.com:6274"));
        assert!(!allowed.allows("null"));
        assert!(!allowed.allows("https://app.example.com/path"));
        assert!(AllowedOrigins::normalize_entry("null").is_err());
        assert!(AllowedOrigins::normalize_entry("app.example.com").is_err());
    }
}
