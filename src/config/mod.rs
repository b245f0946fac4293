//! The policy file: its YAML model, validation with file/line/column, and
//! compilation into the immutable [`Policy`](crate::policy::Policy) snapshot
//! the proxy judges requests under.
//!
//! `toolgate check`, start-up and (later) reload all go through
//! [`load_file`], so a file that passes `check` is exactly a file the proxy
//! accepts. Unknown keys and duplicate keys are errors at every level.

mod units;

pub use units::{ByteSize, HumanDuration};

use crate::mcp::version::ProtocolVersion;
use crate::policy::{AllowedHosts, AllowedOrigins, Policy, Transport, Upstream};
use serde::Deserialize;
use serde_saphyr::Spanned;
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
    Invalid {
        path: String,
        line: u64,
        column: u64,
        message: String,
    },
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
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    load_str(&text, path)
}

/// Validates and compiles policy text; `path` names it in errors.
pub fn load_str(text: &str, path: &Path) -> Result<LoadedPolicy, ConfigError> {
    let doc: PolicyDoc = serde_saphyr::from_str(text).map_err(|e| yaml_error(path, &e))?;
    doc.compile(path)
}

fn yaml_error(path: &Path, error: &serde_saphyr::Error) -> ConfigError {
    let (line, column) = error.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
    let mut options = serde_saphyr::RenderOptions::default();
    options.snippets = serde_saphyr::SnippetMode::Off;
    let message = error
        .render_with_options(options)
        .lines()
        .next()
        .unwrap_or("invalid YAML")
        .to_owned();
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
        Self {
            proxy: default_proxy_addr(),
            admin: default_admin_addr(),
            drain: default_drain(),
        }
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
}

impl Default for TransportDoc {
    fn default() -> Self {
        Self {
            allowed_hosts: default_allowed_hosts(),
            allowed_origins: Vec::new(),
            require_origin: false,
            protocol_versions: default_protocol_versions(),
            max_body: default_max_body(),
        }
    }
}

fn unspanned(value: &str) -> Spanned<String> {
    let unknown = serde_saphyr::Location::UNKNOWN;
    Spanned::new(value.to_owned(), unknown, unknown)
}
fn default_allowed_hosts() -> Vec<Spanned<String>> {
    ["localhost", "127.0.0.1", "[::1]"]
        .into_iter()
        .map(unspanned)
        .collect()
}
fn default_protocol_versions() -> Vec<Spanned<String>> {
    ProtocolVersion::DEFAULT_SUPPORTED
        .iter()
        .map(|v| unspanned(v))
        .collect()
}
fn default_max_body() -> ByteSize {
    ByteSize(4 << 20)
}

impl PolicyDoc {
    fn compile(self, path: &Path) -> Result<LoadedPolicy, ConfigError> {
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
        let listen = ListenSettings {
            proxy: self.listen.proxy,
            admin: self.listen.admin,
            drain: self.listen.drain.0,
        };
        let upstream = self.upstream.compile(path)?;
        let transport = self.transport.compile(path)?;
        Ok(LoadedPolicy {
            listen,
            policy: Policy { upstream, transport },
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
            return Err(invalid_at(
                path,
                &self.url,
                "upstream timeout must be greater than zero",
            ));
        }
        Ok(Upstream {
            authority,
            path: uri.path().to_owned(),
            timeout: self.timeout.0,
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
        if max_body == 0 {
            return Err(ConfigError::Invalid {
                path: path.display().to_string(),
                line: 1,
                column: 1,
                message: "transport.max_body must be greater than zero".into(),
            });
        }
        Ok(Transport {
            allowed_hosts: AllowedHosts::new(hosts),
            allowed_origins: AllowedOrigins::new(origins),
            require_origin: self.require_origin,
            protocol_versions: versions,
            max_body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let loaded = load("version: 1\nupstream: { url: http://127.0.0.1:8080/mcp }\n")?;
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
        let text = "version: 1\nupstream: { url: http://127.0.0.1:8080/mcp }\ntransport:\n  allowed_origins:\n    - https://ok.example.com\n    - app.example.com\n";
        let message = error_of(text);
        assert!(message.starts_with("policy.yaml:6:7: "), "{message}");
        assert!(message.contains("scheme"), "{message}");

        let message = error_of("version: 2\nupstream: { url: http://127.0.0.1:8080/mcp }\n");
        assert!(message.starts_with("policy.yaml:1:10: "), "{message}");

        let message = error_of("version: 1\nupstream: { url: ftp://x/mcp }\n");
        assert!(message.starts_with("policy.yaml:2:"), "{message}");
        assert!(message.contains("http://"), "{message}");

        let message = error_of(
            "version: 1\nupstream: { url: http://x/mcp }\ntransport: { protocol_versions: [2025-6-18] }\n",
        );
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
    fn missing_upstream_is_reported() {
        let message = error_of("version: 1\n");
        assert!(message.contains("upstream"), "{message}");
    }
}
