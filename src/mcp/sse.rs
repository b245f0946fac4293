//! A server-sent events splitter with a size limit, for the upstream's SSE
//! answers. It cuts the byte stream into whole events as they complete, so
//! each can be forwarded at once (as its original bytes) or, when it carries
//! a list result, inspected and rewritten.
//!
//! Written here because the SSE crates at hand buffer without a bound; an
//! upstream must not be able to make toolgate hold an unbounded event.
//! Parsing follows the WHATWG HTML "event stream interpretation": one
//! leading byte-order mark is dropped; lines end in CRLF, LF or CR; a blank
//! line ends an event; `:` starts a comment; one space after the colon is
//! dropped; `data` lines join with `\n`.
//!
//! Not every reader follows it: Go readers built on `bufio` end lines at LF
//! only (a bare CR joins two lines into one), and Python's httpx also ends
//! lines at VT, FF, FS, GS, RS, NEL, LINE SEPARATOR and PARAGRAPH SEPARATOR
//! (`str.splitlines`). [`ambiguous_framing`] finds events those readers
//! would split differently.

use bytes::{Bytes, BytesMut};

/// One complete event: its bytes as received (blank line included) and its
/// joined `data`.
#[derive(Debug, PartialEq, Eq)]
pub struct Event {
    pub raw: Bytes,
    pub data: Vec<u8>,
    pub has_data: bool,
}

impl Event {
    /// The event with its `data` replaced by `data`, every other line kept
    /// in order. `data` may contain newlines; each becomes its own line.
    pub fn with_data(&self, data: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(self.raw.len() + data.len());
        let mut wrote_data = false;
        for line in lines(&self.raw) {
            if line.is_empty() {
                continue;
            }
            if field_name(line) == b"data" {
                if !wrote_data {
                    for part in data.split(|b| *b == b'\n') {
                        out.extend_from_slice(b"data: ");
                        out.extend_from_slice(part);
                        out.extend_from_slice(b"\n");
                    }
                    wrote_data = true;
                }
                continue;
            }
            out.extend_from_slice(line);
            out.extend_from_slice(b"\n");
        }
        out.extend_from_slice(b"\n");
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

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("an SSE event exceeds {limit} bytes")]
pub struct TooLarge {
    pub limit: usize,
}

/// Accumulates chunks and yields whole events.
#[derive(Debug)]
pub struct Splitter {
    buffer: BytesMut,
    /// Where scanning resumes: the start of the line not yet known to be
    /// complete, and how far into it the scan has looked. Each byte is
    /// scanned once, however the stream is cut into chunks.
    resume: Scan,
    limit: usize,
    /// Whether the stream's start was checked for a byte-order mark.
    started: bool,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl Splitter {
    pub fn new(limit: usize) -> Self {
        Self { buffer: BytesMut::new(), resume: Scan::default(), limit, started: false }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// Bytes held that do not yet form a whole event.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }

    /// The next complete event, if the buffer holds one.
    pub fn next_event(&mut self) -> Result<Option<Event>, TooLarge> {
        if !self.started {
            // WHATWG: the stream is decoded as UTF-8, which drops one
            // leading BOM; without this the first field name would be
            // `\u{feff}data` and its event would go unread.
            if self.buffer.len() < BOM.len() && BOM.starts_with(&self.buffer) {
                return Ok(None);
            }
            if self.buffer.starts_with(BOM) {
                let _ = self.buffer.split_to(BOM.len());
            }
            self.started = true;
        }
        match find_event_end(&self.buffer, self.resume) {
            Ok(end) => {
                let raw = self.buffer.split_to(end).freeze();
                self.resume = Scan::default();
                if raw.len() > self.limit {
                    return Err(TooLarge { limit: self.limit });
                }
                let (data, has_data) = event_data(&raw);
                Ok(Some(Event { raw, data, has_data }))
            }
            Err(resume) => {
                self.resume = resume;
                if self.buffer.len() > self.limit {
                    return Err(TooLarge { limit: self.limit });
                }
                Ok(None)
            }
        }
    }
}

/// Where a scan for the end of an event stands.
#[derive(Debug, Default, Clone, Copy)]
struct Scan {
    line_start: usize,
    position: usize,
}

/// The index just past the blank line that ends the first event, scanning
/// on from `from`; or, when there is none yet, where to scan from next
/// time. A CR at the very end does not end its line yet: a LF may follow in
/// the next chunk.
fn find_event_end(buffer: &[u8], from: Scan) -> Result<usize, Scan> {
    let Scan { mut line_start, position: mut i } = from;
    while i < buffer.len() {
        match buffer[i] {
            b'\n' | b'\r' => {
                let end = match (buffer[i], buffer.get(i + 1)) {
                    (b'\r', Some(b'\n')) => i + 2,
                    (b'\r', None) => return Err(Scan { line_start, position: i }),
                    _ => i + 1,
                };
                if i == line_start {
                    return Ok(end);
                }
                line_start = end;
                i = end;
            }
            _ => i += 1,
        }
    }
    Err(Scan { line_start, position: i })
}

/// Whether readers other than WHATWG's would split `raw` (one event, as
/// received) into other lines: a bare CR (Go's `bufio` readers do not end
/// a line there), VT, FF, FS, GS or RS anywhere, or NEL, LINE SEPARATOR or
/// PARAGRAPH SEPARATOR outside a `data` line (Python's httpx ends lines at
/// all of these). Inside a `data` line the last three can only sit in a JSON
/// string, where splitting leaves text no JSON reader accepts.
pub fn ambiguous_framing(raw: &[u8]) -> bool {
    let bare_cr = raw.iter().enumerate().any(|(i, b)| *b == b'\r' && raw.get(i + 1) != Some(&b'\n'));
    if bare_cr || raw.iter().any(|b| matches!(b, 0x0b | 0x0c | 0x1c..=0x1e)) {
        return true;
    }
    const UNICODE_BREAKS: [&[u8]; 3] = [b"\xC2\x85", b"\xE2\x80\xA8", b"\xE2\x80\xA9"];
    lines(raw)
        .filter(|line| field_name(line) != b"data")
        .any(|line| UNICODE_BREAKS.iter().any(|needle| line.windows(needle.len()).any(|w| w == *needle)))
}

fn lines(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = raw;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest.iter().position(|b| *b == b'\n' || *b == b'\r').unwrap_or(rest.len());
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

fn field_name(line: &[u8]) -> &[u8] {
    match line.iter().position(|b| *b == b':') {
        Some(colon) => &line[..colon],
        None => line,
    }
}

fn event_data(raw: &[u8]) -> (Vec<u8>, bool) {
    let mut data = Vec::new();
    let mut has_data = false;
    for line in lines(raw) {
        if field_name(line) != b"data" {
            continue;
        }
        let value = match line.iter().position(|b| *b == b':') {
            Some(colon) => {
                let v = &line[colon + 1..];
                v.strip_prefix(b" ").unwrap_or(v)
            }
            None => &[][..],
        };
        if has_data {
            data.push(b'\n');
        }
        data.extend_from_slice(value);
        has_data = true;
    }
    (data, has_data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_events(chunks: &[&[u8]], limit: usize) -> Result<Vec<Event>, TooLarge> {
        let mut splitter = Splitter::new(limit);
        let mut events = Vec::new();
        for chunk in chunks {
            splitter.push(chunk);
            while let Some(event) = splitter.next_event()? {
                events.push(event);
            }
        }
        Ok(events)
    }

    #[test]
    fn events_in_one_chunk_and_across_chunks() -> Result<(), TooLarge> {
        let events = all_events(&[b"event: message\ndata: {\"a\":1}\n\nid: 2\ndata: x\n", b"\n"], 1024)?;
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].data, b"{\"a\":1}");
        assert_eq!(&events[0].raw[..], b"event: message\ndata: {\"a\":1}\n\n");
        assert_eq!(events[1].data, b"x");

        let bytes = b"data: first\r\n\r\ndata:second\r\rdata: third\n\n";
        for split in 0..bytes.len() {
            let (a, b) = bytes.split_at(split);
            let events = all_events(&[a, b], 1024)?;
            let datas: Vec<&[u8]> = events.iter().map(|e| &e.data[..]).collect();
            assert_eq!(datas, vec![&b"first"[..], b"second", b"third"], "split at {split}");
        }
        Ok(())
    }

    #[test]
    fn multi_line_data_and_comments() -> Result<(), TooLarge> {
        let events = all_events(&[b": keep-alive\ndata: {\"a\":\ndata: 1}\n: padding\nretry: 10\n\n"], 1024)?;
        assert_eq!(events[0].data, b"{\"a\":\n1}");
        assert!(events[0].has_data);
        let events = all_events(&[b": only a comment\n\n"], 1024)?;
        assert!(!events[0].has_data);
        Ok(())
    }

    #[test]
    fn events_over_the_limit_are_refused() {
        assert_eq!(all_events(&[b"data: 0123456789\n\n"], 8).err(), Some(TooLarge { limit: 8 }));
        let mut splitter = Splitter::new(8);
        splitter.push(b"data: 0123456789");
        assert!(splitter.next_event().is_err(), "an unfinished event over the limit is refused too");
    }

    #[test]
    fn one_leading_byte_order_mark_is_dropped() -> Result<(), TooLarge> {
        let bytes = b"\xEF\xBB\xBFdata: {\"a\":1}\n\n\xEF\xBB\xBFdata: 2\n\n";
        for split in 0..bytes.len() {
            let (a, b) = bytes.split_at(split);
            let events = all_events(&[a, b], 1024)?;
            assert_eq!(events.len(), 2, "split at {split}");
            assert_eq!(events[0].data, b"{\"a\":1}", "split at {split}");
            assert_eq!(&events[0].raw[..], b"data: {\"a\":1}\n\n");
            // Only the stream's first BOM is dropped.
            assert!(!events[1].has_data, "split at {split}");
        }
        Ok(())
    }

    #[test]
    fn framing_other_readers_split_differently() {
        assert!(!ambiguous_framing(b"event: message\r\ndata: {\"a\":1}\r\n\r\n"));
        assert!(!ambiguous_framing("data: {\"a\":\"x\u{2028}y\u{85}\"}\n\n".as_bytes()));
        assert!(ambiguous_framing(b"data: {\"a\"\r: 1}\n\n"));
        assert!(ambiguous_framing(b"data: 1\r\r"));
        assert!(ambiguous_framing(b": x\x0cdata: {}\n\n"));
        assert!(ambiguous_framing(b"data: {\"a\":\"\x1e\"}\n\n"));
        assert!(ambiguous_framing(": note\u{2028}data: {}\n\n".as_bytes()));
        assert!(ambiguous_framing("event: x\u{2029}data: {}\n\n".as_bytes()));
        assert!(ambiguous_framing("id: 1\u{85}data: {}\n\n".as_bytes()));
    }

    #[test]
    fn rewriting_keeps_other_fields() -> Result<(), TooLarge> {
        let events = all_events(&[b"id: 7\nevent: message\n: note\ndata: {\"old\":\ndata: 1}\n\n"], 1024)?;
        let rewritten = events[0].with_data(b"{\"new\":\n2}");
        assert_eq!(&rewritten[..], b"id: 7\nevent: message\n: note\ndata: {\"new\":\ndata: 2}\n\n");
        Ok(())
    }
}
