//! The policy file: its YAML model ([`model`]), validation with
//! file/line/column, and compilation ([`compile`]) into the immutable
//! [`Policy`](crate::policy::Policy) snapshot the proxy judges requests
//! under.
//!
//! `toolgate check`, start-up and (later) reload all go through
//! [`load_file`], so a file that passes `check` is exactly a file the proxy
//! accepts. Unknown keys and duplicate keys are errors at every level.

mod compile;
mod model;
#[cfg(test)]
mod tests;
mod units;

pub use units::{ByteSize, HumanDuration};

use crate::policy::Policy;
use model::PolicyDoc;
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
    /// Client connections served at once on the proxy listener.
    pub max_connections: usize,
    /// How long a connection may have no request in flight.
    pub idle_timeout: Duration,
    /// How long a new connection may take to show its protocol.
    pub handshake_timeout: Duration,
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
