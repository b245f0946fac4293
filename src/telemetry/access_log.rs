//! The access log's line, one per exchange. It is the only line written
//! for every request, so it is formatted by hand (no `fmt` machinery, no
//! field visitor) and handed straight to the log's writer queue, byte for
//! byte the line the `tracing` subscriber would write for it, in the plain
//! and the JSON format. The level filter (`RUST_LOG`) still decides
//! whether it is written. With colours on (a person at a terminal), or
//! before the log is set up (tests), the line goes through `tracing`.

use super::LogFormat;
use super::log_writer::QueuedWriter;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The log target, as filters name it (`RUST_LOG=toolgate::access=off`).
pub const TARGET: &str = "toolgate::access";

/// What the line says of one exchange.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub peer: SocketAddr,
    pub method: &'a str,
    /// Outside text: written as [`super::Untrusted`] writes it.
    pub path: &'a str,
    pub rpc: &'static str,
    pub status: u16,
    pub refusal: &'static str,
    pub bytes: u64,
    pub outcome: &'static str,
    pub duration: Duration,
}

struct Sink {
    writer: QueuedWriter,
    format: LogFormat,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Sends access-log lines to `writer` in `format` from now on (called
/// once, by `init_logging`, when lines are not coloured).
pub(crate) fn install(writer: QueuedWriter, format: LogFormat) {
    let _ = SINK.set(Sink { writer, format });
}

/// Writes the line for `entry`, if the filter lets `toolgate::access`
/// lines through.
pub fn write(entry: &Entry<'_>) {
    if !enabled() {
        return;
    }
    let now = SystemTime::now();
    // A clock before 1970 or past 9999 is written as the subscriber writes it.
    let ordinary = now.duration_since(UNIX_EPOCH).is_ok_and(|since| since.as_secs() < LAST_ORDINARY_SECOND);
    match SINK.get() {
        Some(sink) if ordinary => {
            let mut line = sink.writer.line(256);
            format(line.buffer(), entry, sink.format, now);
            // Queued for the writer when `line` drops.
        }
        _ => through_tracing(entry),
    }
}

/// 9999-12-31T23:59:59Z: later times need more than four digits of year.
const LAST_ORDINARY_SECOND: u64 = 253_402_300_800;

/// Whether the filter lets the line through: asked of an event with the
/// line's own fields, so that a directive naming fields decides as it
/// would for the line itself.
fn enabled() -> bool {
    tracing::enabled!(
        kind: tracing::metadata::Kind::EVENT,
        target: TARGET,
        tracing::Level::INFO,
        { message, peer, method, path, rpc, status, refusal, bytes, outcome, duration_ms }
    )
}

fn through_tracing(entry: &Entry<'_>) {
    tracing::info!(
        target: TARGET,
        peer = %entry.peer,
        method = %entry.method,
        path = %super::Untrusted(entry.path),
        rpc = entry.rpc,
        status = entry.status,
        refusal = entry.refusal,
        bytes = entry.bytes,
        outcome = entry.outcome,
        duration_ms = millis(entry.duration),
        "request"
    );
}

/// Milliseconds to the microsecond, which print without float noise.
fn millis(elapsed: Duration) -> f64 {
    elapsed.as_micros() as f64 / 1000.0
}

/// The line, as the subscriber writes it: `plain` is
/// `<time>  INFO toolgate::access: request peer=… method=… …`, JSON is
/// `{"timestamp":…,"level":"INFO","message":"request","peer":…,…,"target":…}`.
fn format(line: &mut Vec<u8>, entry: &Entry<'_>, format: LogFormat, now: SystemTime) {
    let path = shown_path(entry.path);
    match format {
        LogFormat::Plain => {
            timestamp(line, now);
            line.extend_from_slice(b"  INFO toolgate::access: request peer=");
            peer(line, entry.peer);
            line.extend_from_slice(b" method=");
            line.extend_from_slice(entry.method.as_bytes());
            line.extend_from_slice(b" path=");
            line.extend_from_slice(path.as_bytes());
            line.extend_from_slice(b" rpc=");
            debug_str(line, entry.rpc);
            line.extend_from_slice(b" status=");
            decimal(line, u64::from(entry.status));
            line.extend_from_slice(b" refusal=");
            debug_str(line, entry.refusal);
            line.extend_from_slice(b" bytes=");
            decimal(line, entry.bytes);
            line.extend_from_slice(b" outcome=");
            debug_str(line, entry.outcome);
            line.extend_from_slice(b" duration_ms=");
            milliseconds(line, entry.duration);
            line.push(b'\n');
        }
        LogFormat::Json => {
            line.extend_from_slice(b"{\"timestamp\":\"");
            timestamp(line, now);
            line.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\",\"peer\":\"");
            peer(line, entry.peer);
            line.extend_from_slice(b"\",\"method\":");
            json_str(line, entry.method);
            line.extend_from_slice(b",\"path\":");
            json_str(line, &path);
            line.extend_from_slice(b",\"rpc\":");
            json_str(line, entry.rpc);
            line.extend_from_slice(b",\"status\":");
            decimal(line, u64::from(entry.status));
            line.extend_from_slice(b",\"refusal\":");
            json_str(line, entry.refusal);
            line.extend_from_slice(b",\"bytes\":");
            decimal(line, entry.bytes);
            line.extend_from_slice(b",\"outcome\":");
            json_str(line, entry.outcome);
            line.extend_from_slice(b",\"duration_ms\":");
            milliseconds(line, entry.duration);
            line.extend_from_slice(b",\"target\":\"toolgate::access\"}\n");
        }
    }
}

/// The path as [`super::Untrusted`] shows it: itself when it is short
/// printable ASCII with nothing to quote or escape (nearly always).
fn shown_path(path: &str) -> std::borrow::Cow<'_, str> {
    let plain = !path.is_empty()
        && path.len() <= 256
        && path.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'=' | b'\\'));
    if plain { path.into() } else { super::Untrusted(path).to_string().into() }
}

/// A string as `{:?}` writes it.
fn debug_str(out: &mut Vec<u8>, text: &str) {
    if text.bytes().all(|b| (b' '..=b'~').contains(&b) && !matches!(b, b'"' | b'\\' | b'\'')) {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        let _ = write!(out, "{text:?}");
    }
}

/// A JSON string, escaped as serde_json escapes it.
fn json_str(out: &mut Vec<u8>, text: &str) {
    let _ = serde_json::to_writer(&mut *out, text);
}

fn decimal(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Zero-padded to `width` digits.
fn padded(out: &mut Vec<u8>, value: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut rest = value;
    for at in (0..width).rev() {
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.extend_from_slice(&digits[..width]);
}

/// Milliseconds to the microsecond as an `f64` prints them (`{:?}`, and
/// serde_json's shortest form): `0.038`, `1.5`, `12.0`. The shortest
/// decimal that reads back as `µs / 1000.0` is that quotient's own
/// decimal: another of at most three decimals is at least 0.001 away,
/// far more than a rounding step below 2⁵³ µs.
fn milliseconds(out: &mut Vec<u8>, duration: Duration) {
    let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX).min((1 << 53) - 1);
    decimal(out, micros / 1000);
    out.push(b'.');
    let mut fraction = micros % 1000;
    if fraction == 0 {
        out.push(b'0');
        return;
    }
    let mut width = 3;
    while fraction % 10 == 0 {
        fraction /= 10;
        width -= 1;
    }
    padded(out, fraction, width);
}

fn peer(out: &mut Vec<u8>, peer: SocketAddr) {
    match peer {
        SocketAddr::V4(v4) => {
            for (n, octet) in v4.ip().octets().into_iter().enumerate() {
                if n > 0 {
                    out.push(b'.');
                }
                decimal(out, u64::from(octet));
            }
            out.push(b':');
            decimal(out, u64::from(v4.port()));
        }
        SocketAddr::V6(_) => {
            let _ = write!(out, "{peer}");
        }
    }
}

/// RFC 3339 in UTC to the microsecond, as the subscriber's clock writes
/// it: `2026-11-22T07:04:32.958038Z`.
fn timestamp(out: &mut Vec<u8>, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let (year, month, day) = civil_date(seconds / 86_400);
    let time = seconds % 86_400;
    padded(out, year, 4);
    out.push(b'-');
    padded(out, month, 2);
    out.push(b'-');
    padded(out, day, 2);
    out.push(b'T');
    padded(out, time / 3600, 2);
    out.push(b':');
    padded(out, time / 60 % 60, 2);
    out.push(b':');
    padded(out, time % 60, 2);
    out.push(b'.');
    padded(out, u64::from(since.subsec_micros()), 6);
    out.push(b'Z');
}

/// The proleptic Gregorian date `days` after 1970-01-01 (H. Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The line the `tracing` subscriber writes for `entry`, as installed
    /// by `init_logging` without colours.
    fn subscriber_line(entry: &Entry<'_>, format: LogFormat) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let builder = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone());
        match format {
            LogFormat::Plain => {
                tracing::subscriber::with_default(builder.finish(), || through_tracing(entry))
            }
            LogFormat::Json => {
                let subscriber = builder.json().flatten_event(true).finish();
                tracing::subscriber::with_default(subscriber, || through_tracing(entry));
            }
        }
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    fn own_line(entry: &Entry<'_>, format: LogFormat, now: SystemTime) -> String {
        let mut line = Vec::new();
        super::format(&mut line, entry, format, now);
        String::from_utf8(line).unwrap()
    }

    /// Where the timestamp sits in a line of `format`.
    fn stamp(format: LogFormat) -> std::ops::Range<usize> {
        match format {
            LogFormat::Plain => 0..27,
            LogFormat::Json => 14..41,
        }
    }

    #[test]
    fn the_line_is_the_subscribers_byte_for_byte() {
        let long = format!("/{}", "a".repeat(300));
        let paths = [
            "/mcp",
            "/",
            "",
            "/a b",
            "/a\"b",
            "/a=b",
            "/x\\y",
            "/é",
            "/\u{202e}x",
            "/a\nb",
            "/t\tb",
            "/'q'",
            &long,
            "/%2e%2E/ok",
            "/{}[]<>|^`~!$&*+,;:@?#",
        ];
        let peers: [SocketAddr; 4] = [
            "127.0.0.1:1".parse().unwrap(),
            "10.200.0.255:65535".parse().unwrap(),
            "[::1]:8080".parse().unwrap(),
            "[fe80::1:2]:443".parse().unwrap(),
        ];
        let durations = [0, 1, 10, 100, 999, 1000, 1001, 1500, 12_000, 38, 703, 1_234_567, 864_000_000_000];
        let mut compared = 0;
        for format in [LogFormat::Plain, LogFormat::Json] {
            for (n, path) in paths.iter().enumerate() {
                for (m, micros) in durations.iter().enumerate() {
                    let entry = Entry {
                        peer: peers[(n + m) % peers.len()],
                        method: ["POST", "GET", "DELETE", "PATCH"][m % 4],
                        path,
                        rpc: ["tools/call", "", "tools/list", "notifications/initialized"][n % 4],
                        status: [200, 404, 502, 413, 101][(n + m) % 5],
                        refusal: ["", "not_found", "tool_denied"][m % 3],
                        bytes: [0, 84, 190_000, u64::MAX][(n * m) % 4],
                        outcome: ["complete", "client_gone", "upstream_gone", "withheld"][(n + 2 * m) % 4],
                        duration: Duration::from_micros(*micros),
                    };
                    let before = SystemTime::now();
                    let theirs = subscriber_line(&entry, format);
                    let after = SystemTime::now();
                    let ours = own_line(&entry, format, before);
                    let range = stamp(format);
                    assert_eq!(theirs.len(), ours.len(), "\n{theirs}{ours}");
                    assert_eq!(theirs[..range.start], ours[..range.start], "\n{theirs}{ours}");
                    assert_eq!(theirs[range.end..], ours[range.end..], "\n{theirs}{ours}");
                    // Fixed-width RFC 3339 times sort as text.
                    let latest = own_line(&entry, format, after);
                    assert!(ours[range.clone()] <= theirs[range.clone()], "{ours} is not before {theirs}");
                    assert!(
                        theirs[range.clone()] <= latest[range.clone()],
                        "{theirs} is not before {latest}"
                    );
                    compared += 1;
                }
            }
        }
        assert_eq!(compared, 2 * 15 * 13);
    }

    #[test]
    fn the_filter_decides_as_it_would_for_the_line_itself() {
        let entry = Entry {
            peer: "127.0.0.1:1".parse().unwrap(),
            method: "POST",
            path: "/mcp",
            rpc: "tools/call",
            status: 200,
            refusal: "",
            bytes: 1,
            outcome: "complete",
            duration: Duration::from_micros(1),
        };
        let filters = [
            ("info", true),
            ("warn", false),
            ("info,toolgate::access=off", false),
            ("warn,toolgate::access=info", true),
            ("info,[{error}]=off", true),
            ("warn,[{error}]=info", false),
            ("warn,[{status}]=info", true),
            ("info,toolgate::access[{outcome}]=off", false),
        ];
        for (filter, expected) in filters {
            let captured = Captured::default();
            let writer = captured.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish();
            let asked = tracing::subscriber::with_default(subscriber, || {
                through_tracing(&entry);
                enabled()
            });
            let written = !captured.0.lock().unwrap().is_empty();
            assert_eq!(written, expected, "{filter}: the line itself");
            assert_eq!(asked, written, "{filter}: asked before writing");
        }
    }

    #[test]
    fn dates_agree_with_counting_days_one_by_one() {
        let (mut year, mut month, mut day) = (1970, 1, 1);
        for days in 0..(500 * 366) {
            assert_eq!(civil_date(days), (year, month, day), "{days} days after the epoch");
            let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
            let length = match month {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            day += 1;
            if day > length {
                (day, month) = (1, month + 1);
                if month > 12 {
                    (month, year) = (1, year + 1);
                }
            }
        }
    }

    #[test]
    fn times_are_written_to_the_microsecond_in_utc() {
        let line = |seconds: u64, micros: u64| {
            let mut out = Vec::new();
            timestamp(&mut out, UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_micros(micros));
            String::from_utf8(out).unwrap()
        };
        assert_eq!(line(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(line(951_868_799, 999_999), "2000-02-29T23:59:59.999999Z");
        assert_eq!(line(1_795_331_072, 958_038), "2026-11-22T07:04:32.958038Z");
        assert_eq!(line(4_107_542_400, 7), "2100-03-01T00:00:00.000007Z");
        assert_eq!(line(LAST_ORDINARY_SECOND - 1, 0), "9999-12-31T23:59:59.000000Z");
        assert_eq!(line(LAST_ORDINARY_SECOND, 0)[..5], *"0000-", "past it, four digits no longer suffice");
    }
}
