//! One server-sent event as toolgate reads it, and the bytes it forwards.
//!
//! Reading follows the WHATWG HTML "event stream interpretation": lines end
//! in CRLF, LF or CR; `:` starts a comment; one space after the colon is
//! dropped; `data` lines join with `\n`; the last `event` and `id` win.
//!
//! Not every client reads that way: Go readers built on `bufio` (mcp-go,
//! go-sdk) end lines at LF only, so a bare CR joins two of toolgate's lines
//! — or events — into one; Python's httpx (`str.splitlines`, as httpx-sse
//! used it until 0.4.2) also ends lines at VT, FF, FS, GS, RS, NEL, LINE
//! SEPARATOR and PARAGRAPH SEPARATOR; a reader may strip a byte-order mark
//! that toolgate took for part of a field name. So an event is forwarded as
//! received only when every reader reads it alike ([`Event::forwardable`]):
//! LF line endings, no such separators outside `data` lines, and only the
//! fields `data`, `event`, `id`, `retry` and comments. Any other event is
//! forwarded re-emitted from toolgate's reading, in that canonical form,
//! so what a client reads is what toolgate judged.

use bytes::{Bytes, BytesMut};

/// One complete event.
#[derive(Debug, PartialEq, Eq)]
pub struct Event {
    /// As received, blank line included.
    pub raw: Bytes,
    /// The `data` lines, joined with `\n`.
    pub data: Vec<u8>,
    pub has_data: bool,
    /// The last `event`, `id` and `retry` values that every reader can
    /// carry; a value holding a line separator is dropped.
    name: Option<Vec<u8>>,
    id: Option<Vec<u8>>,
    retry: Option<Vec<u8>>,
    /// Whether `raw` reads the same to every reader.
    canonical: bool,
}

/// Line separators of some readers but not of WHATWG's: VT, FF, FS, GS, RS
/// (ASCII) and NEL, LINE SEPARATOR, PARAGRAPH SEPARATOR (UTF-8).
fn has_foreign_separator(text: &[u8]) -> bool {
    const UNICODE: [&[u8]; 3] = [b"\xC2\x85", b"\xE2\x80\xA8", b"\xE2\x80\xA9"];
    text.iter().any(|b| matches!(b, 0x0b | 0x0c | 0x1c..=0x1e))
        || UNICODE.iter().any(|needle| text.windows(needle.len()).any(|w| w == *needle))
}

impl Event {
    /// Reads one event (its bytes up to and including the blank line).
    pub fn parse(raw: Bytes) -> Self {
        let mut event = Event {
            data: Vec::new(),
            has_data: false,
            name: None,
            id: None,
            retry: None,
            canonical: memchr::memchr(b'\r', &raw).is_none(),
            raw: Bytes::new(),
        };
        for line in lines(&raw) {
            if line.is_empty() {
                continue;
            }
            let (field, value) = match memchr::memchr(b':', line) {
                Some(0) => {
                    event.canonical &= !has_foreign_separator(line);
                    continue;
                }
                Some(colon) => {
                    let value = &line[colon + 1..];
                    (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => {
                    event.canonical = false;
                    (line, &[][..])
                }
            };
            match field {
                b"data" => {
                    if event.has_data {
                        event.data.push(b'\n');
                    }
                    event.data.extend_from_slice(value);
                    event.has_data = true;
                }
                b"event" | b"id" | b"retry" => {
                    let clean = !has_foreign_separator(value);
                    event.canonical &= clean;
                    let slot = match field {
                        b"event" => &mut event.name,
                        b"id" => &mut event.id,
                        _ => &mut event.retry,
                    };
                    if clean {
                        *slot = Some(value.to_vec());
                    }
                }
                _ => event.canonical = false,
            }
        }
        event.raw = raw;
        event
    }

    /// The bytes to forward for this event: as received when every reader
    /// reads them alike, else re-emitted canonically (possibly empty, when
    /// nothing of it is carried).
    pub fn forwardable(&self) -> Bytes {
        if self.canonical { self.raw.clone() } else { self.emit(self.has_data.then_some(&self.data[..])) }
    }

    /// The event with its `data` replaced, re-emitted canonically.
    pub fn with_data(&self, data: &[u8]) -> Bytes {
        self.emit(Some(data))
    }

    fn emit(&self, data: Option<&[u8]>) -> Bytes {
        let mut out = BytesMut::with_capacity(self.raw.len() + data.map_or(0, <[u8]>::len) + 16);
        for (field, value) in [(&b"event: "[..], &self.name), (b"id: ", &self.id), (b"retry: ", &self.retry)]
        {
            if let Some(value) = value {
                out.extend_from_slice(field);
                out.extend_from_slice(value);
                out.extend_from_slice(b"\n");
            }
        }
        if let Some(data) = data {
            for part in data.split(|b| *b == b'\n') {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(part);
                out.extend_from_slice(b"\n");
            }
        }
        if !out.is_empty() {
            out.extend_from_slice(b"\n");
        }
        out.freeze()
    }
}

/// The event a refusal becomes on an SSE stream.
pub fn message_event(json: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(json.len() + 24);
    out.extend_from_slice(b"event: message\ndata: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    out.freeze()
}

fn lines(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = raw;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = memchr::memchr2(b'\n', b'\r', rest).unwrap_or(rest.len());
        let line = &rest[..end];
        let skip = match (rest.get(end), rest.get(end + 1)) {
            (Some(b'\r'), Some(b'\n')) => 2,
            (Some(_), _) => 1,
            (None, _) => 0,
        };
        rest = &rest[end + skip..];
        Some(line)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(raw: &[u8]) -> Event {
        Event::parse(Bytes::copy_from_slice(raw))
    }

    #[test]
    fn fields_as_whatwg_reads_them() {
        let e = event(b": keep-alive\ndata: {\"a\":\ndata:1}\nevent: message\nid: 7\nretry: 10\n\n");
        assert_eq!(e.data, b"{\"a\":\n1}");
        assert!(e.has_data);
        assert_eq!(&e.forwardable()[..], &e.raw[..], "already canonical: forwarded as received");
        assert!(!event(b": only a comment\n\n").has_data);
        assert_eq!(event(b"data\n\n").data, b"", "a field without a colon has an empty value");
    }

    #[test]
    fn what_readers_could_split_differently_is_re_emitted() {
        // A bare CR: Go readers join these lines, and read the comment as JSON.
        let e = event(b"data: {\"a\":1,\"zz\"\r:1}\ndata: :0}\r\n\r\n");
        assert_eq!(e.data, b"{\"a\":1,\"zz\"\n:0}");
        assert_eq!(&e.forwardable()[..], b"data: {\"a\":1,\"zz\"\ndata: :0}\n\n");
        // Separators Python's httpx splits at, outside data lines.
        let e = event(": x\x0cdata: {\"tools\":[]}\nevent: message\u{2028}data: 1\ndata: {}\n\n".as_bytes());
        assert_eq!(e.data, b"{}");
        assert_eq!(&e.forwardable()[..], b"data: {}\n\n", "the comment and the event name are not carried");
        // A byte-order mark inside the stream is part of a field name.
        let e = event("\u{feff}data: {\"tools\":[]}\n\n".as_bytes());
        assert!(!e.has_data);
        assert_eq!(&e.forwardable()[..], b"", "nothing of it is carried");
        // Unknown fields are not carried either.
        assert_eq!(&event(b"foo: bar\ndata: 1\n\n").forwardable()[..], b"data: 1\n\n");
        // Inside a data line, a separator sits in a JSON string: carried.
        let e = event("data: {\"a\":\"x\u{2028}y\"}\n\n".as_bytes());
        assert_eq!(&e.forwardable()[..], &e.raw[..]);
    }

    #[test]
    fn rewriting_keeps_the_fields_readers_use() {
        let e = event(b"id: 7\nevent: message\n: note\ndata: {\"old\":\ndata: 1}\n\n");
        assert_eq!(
            &e.with_data(b"{\"new\":\n2}")[..],
            b"event: message\nid: 7\ndata: {\"new\":\ndata: 2}\n\n"
        );
    }
}
