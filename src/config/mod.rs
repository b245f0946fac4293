//! The policy file: its YAML model ([`model`]), validation with
//! file/line/column, and compilation ([`compile`]) into the immutable
//! [`Policy`](crate::policy::Policy) snapshot the proxy judges requests
//! under.
//!
//! `toolgate check`, start-up and (later) reload all go through
//! [`load_file`], so a file that passes `check` is exactly a file the proxy
//! accepts. Unknown keys and duplicate keys are errors at every level.

mod checks;
mod compile;
mod identity;
mod model;
#[cfg(test)]
mod tests;
mod tls;
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
    /// How long a new connection may take to show its protocol (the TLS
    /// handshake included).
    pub handshake_timeout: Duration,
    /// Whether the proxy listener speaks TLS (its certificates reload).
    pub tls: bool,
}

/// A validated policy file: what the running process needs at start-up and
/// the compiled snapshot, and what `check` warns of.
#[derive(Debug)]
pub struct LoadedPolicy {
    pub listen: ListenSettings,
    pub policy: Policy,
    pub warnings: Vec<ConfigWarning>,
}

/// Something a policy says that is probably not meant; it loads all the
/// same. Displays as `FILE:LINE:COLUMN: warning: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    pub path: String,
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl ConfigWarning {
    fn at<T>(path: &Path, spanned: &Spanned<T>, message: String) -> Self {
        Self {
            path: path.display().to_string(),
            line: spanned.referenced.line(),
            column: spanned.referenced.column(),
            message,
        }
    }
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: warning: {}", self.path, self.line, self.column, self.message)
    }
}

/// The largest policy file read: far above any real policy, and a bound
/// on what a mistaken path (a symlink to `/dev/zero`) can cost.
pub const MAX_POLICY_BYTES: u64 = 1 << 20;

/// Reads a file the policy consists of, up to [`MAX_POLICY_BYTES`].
pub fn read_capped(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let read_error = |source| ConfigError::Read { path: path.display().to_string(), source };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_POLICY_BYTES + 1).read_to_end(&mut bytes).map_err(read_error)?;
    if bytes.len() as u64 > MAX_POLICY_BYTES {
        return Err(ConfigError::Invalid {
            path: path.display().to_string(),
            line: 1,
            column: 1,
            message: format!("the file is larger than {} KiB: is this the policy?", MAX_POLICY_BYTES >> 10),
        });
    }
    String::from_utf8(bytes).map_err(|_| ConfigError::Invalid {
        path: path.display().to_string(),
        line: 1,
        column: 1,
        message: "the file is not UTF-8 text".into(),
    })
}

/// Reads a file the policy names (`name`, relative to the policy file's
/// directory) and adds it to the policy's inputs, so that a change to it
/// reloads the policy. Returns its path and text.
pub(super) fn read_input<T>(
    path: &Path,
    at: &Spanned<T>,
    name: &str,
    what: &str,
    referenced: &mut Vec<std::path::PathBuf>,
    inputs: &mut Vec<u8>,
) -> Result<(std::path::PathBuf, String), ConfigError> {
    let file = path.parent().unwrap_or(Path::new(".")).join(name);
    let text = read_capped(&file).map_err(|e| {
        let why = match e {
            ConfigError::Read { source, .. } => source.to_string(),
            ConfigError::Invalid { message, .. } => message,
        };
        invalid_at(path, at, format_args!("cannot read {what} {}: {why}", file.display()))
    })?;
    inputs.extend_from_slice(&(text.len() as u64).to_le_bytes());
    inputs.extend_from_slice(text.as_bytes());
    referenced.push(file.clone());
    Ok((file, text))
}

/// Reads, validates and compiles a policy file.
pub fn load_file(path: &Path) -> Result<LoadedPolicy, ConfigError> {
    let text = read_capped(path)?;
    load_str(&text, path)
}

/// Validates and compiles policy text; `path` names it in errors.
pub fn load_str(text: &str, path: &Path) -> Result<LoadedPolicy, ConfigError> {
    // Blank lines, comments and document markers (`---`, `...`) say nothing.
    let says_nothing = |line: &str| {
        let line = line.trim();
        match line.strip_prefix("---").or_else(|| line.strip_prefix("...")) {
            Some(rest) => {
                rest.is_empty() || (rest.starts_with([' ', '\t']) && rest.trim_start().starts_with('#'))
            }
            None => line.is_empty() || line.starts_with('#'),
        }
    };
    if text.lines().all(says_nothing) {
        return Err(ConfigError::Invalid {
            path: path.display().to_string(),
            line: 1,
            column: 1,
            message: "the policy file is empty: it needs at least `version: 1`, `upstream` and `virtual_servers` (see examples/demo.yaml)".into(),
        });
    }
    let doc: PolicyDoc = serde_saphyr::from_str(text).map_err(|e| yaml_error(path, &e))?;
    doc.compile(path, text)
}

fn yaml_error(path: &Path, error: &serde_saphyr::Error) -> ConfigError {
    let (line, column) = error.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
    let mut options = serde_saphyr::RenderOptions::default();
    options.snippets = serde_saphyr::SnippetMode::Off;
    let rendered = error.render_with_options(options).lines().next().unwrap_or("invalid YAML").to_owned();
    ConfigError::Invalid {
        path: path.display().to_string(),
        line,
        column,
        message: plain_yaml_message(&strip_location_suffix(&rendered)),
    }
}

/// The YAML library's messages, said in terms of what to fix.
fn plain_yaml_message(message: &str) -> String {
    if message.contains("anchor or alias") || message.contains("unknown anchor") {
        return "`*` starts a YAML alias: to mean \"every name\", quote the pattern, as in allow: [\"*\"] or \"*_admin\"".into();
    }
    if message.starts_with("expected sequence start") || message.contains("expected a sequence") {
        return "expected a list: write [a, b] or one `- item` per line, as in allow: [\"*\"]".into();
    }
    if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
        let key = rest.split(',').next().unwrap_or(rest).trim();
        return format!("duplicate key: `{key}` is given twice here, keep one");
    }
    message.to_owned()
}

/// The plain rendering ends with " at line L column C"; the error already
/// carries both in front, so say them once.
fn strip_location_suffix(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

/// The JSON Schema of the policy file, generated from the very types the
/// file is read into, so that it cannot drift from what `check` accepts.
/// (What needs more than a shape — patterns, files, names that must agree
/// — is still `check`'s to say.) Draft 7, which every YAML editor and
/// Helm's values validation read.
pub fn json_schema() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let mut schema = generator.into_root_schema_for::<PolicyDoc>();
    schema.insert("title".into(), "toolgate policy".into());
    schema.insert(
        "description".into(),
        format!("A toolgate policy file, version {POLICY_VERSION}. Validate with `toolgate check`.").into(),
    );
    schema.to_value()
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref());
    out
}

/// Hex SHA-256, the fingerprint by which operators tell policies apart.
pub fn sha256_hex(bytes: &[u8]) -> String {
    sha256(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn invalid_at<T>(path: &Path, spanned: &Spanned<T>, message: impl fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        path: path.display().to_string(),
        line: spanned.referenced.line(),
        column: spanned.referenced.column(),
        message: message.to_string(),
    }
}
