//! What toolgate tells operators: structured logs through `tracing` (the
//! access log, audit events in [`audit`]), and Prometheus metrics in one
//! registry served by the admin listener ([`metrics`]).

pub mod access_log;
pub mod audit;
pub mod histogram;
pub mod log_writer;
pub mod metrics;

pub use audit::{audit_call_refused, audit_list_filtered};
pub use metrics::{Metrics, rpc_method_label};

/// Text from outside the process (paths, names, subjects, parser errors
/// quoting input) as a log field: control characters, line and paragraph
/// separators and bidirectional overrides are escaped (`\n`, `\u{202e}`),
/// so no value can end a log line, forge another, or disguise itself on a
/// terminal; a value holding white space, `=` or `"` is quoted (with `"`
/// and `\` escaped), so it cannot pass for more `key=value` fields; and it
/// is cut at 256 characters.
pub struct Untrusted<'a>(pub &'a str);

impl std::fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        let quoted =
            self.0.is_empty() || self.0.contains(|c: char| c.is_whitespace() || c == '=' || c == '"');
        if quoted {
            f.write_char('"')?;
        }
        for (count, c) in self.0.chars().enumerate() {
            if count == 256 {
                f.write_str("…")?;
                break;
            }
            let disguising = matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            if c.is_control() || disguising || c == '\\' || (quoted && c == '"') {
                for escaped in c.escape_default() {
                    f.write_char(escaped)?;
                }
            } else {
                f.write_char(c)?;
            }
        }
        if quoted {
            f.write_char('"')?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Untrusted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Plain,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Installs the global subscriber, writing to stderr through the log's
/// own thread ([`log_writer`]). The filter comes from `RUST_LOG` (default
/// `info`). Keep the returned guard until the end of `main`: dropping it
/// writes out what is still queued.
pub fn init_logging(format: LogFormat) -> Option<log_writer::FlushOnDrop> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, never into files and pipes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let Some((writer, guard)) = log_writer::start(std::io::stderr(), log_writer::dropped_counter().clone())
    else {
        eprintln!("toolgate: no thread for the log: logging is off");
        return None;
    };
    if !ansi {
        access_log::install(writer.clone(), format);
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    let result = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let Err(error) = result {
        eprintln!("toolgate: logging was already set up: {error}");
    }
    Some(guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_text_cannot_forge_lines() {
        let forged =
            "x\n2026-01-01T00:00:00Z  INFO toolgate::audit: call allowed\r\u{1b}[31m\u{202e}\u{2028}\\n";
        let shown = Untrusted(forged).to_string();
        assert!(!shown.chars().any(|c| c.is_control() || c == '\u{202e}' || c == '\u{2028}'), "{shown}");
        assert!(shown.starts_with("\"x\\n2026"), "{shown}");
        assert!(shown.ends_with("\\u{2028}\\\\n\""), "a literal backslash is escaped too: {shown}");
        assert_eq!(Untrusted(&"a".repeat(300)).to_string().chars().count(), 257);
        assert_eq!(Untrusted("tools/call.ünï").to_string(), "tools/call.ünï", "plain values stay plain");
        assert_eq!(Untrusted("x principal=root").to_string(), "\"x principal=root\"");
        assert_eq!(Untrusted("a\"b").to_string(), "\"a\\\"b\"");
        assert_eq!(Untrusted("").to_string(), "\"\"");
    }
}
