//! A server-sent events splitter with a size limit, for the upstream's SSE
//! answers. It cuts the byte stream into whole events as they complete, so
//! each can be forwarded at once (as its original bytes) or, when it carries
//! a list result, inspected and rewritten.
//!
//! Written here because the SSE crates at hand buffer without a bound; an
//! upstream must not be able to make toolgate hold an unbounded event.
//! Parsing follows the WHATWG HTML "event stream interpretation": lines end
//! in CRLF, LF or CR; a blank line ends an event; `:` starts a comment; one
//! space after the colon is dropped; `data` lines join with `\n`.

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
    /// Start of the first line of `buffer` not yet known to be complete:
    /// scanning resumes there.
    resume: usize,
    limit: usize,
}

impl Splitter {
    pub fn new(limit: usize) -> Self {
        Self { buffer: BytesMut::new(), resume: 0, limit }
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
        match find_event_end(&self.buffer, self.resume) {
            Ok(end) => {
                let raw = self.buffer.split_to(end).freeze();
                self.resume = 0;
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

/// The index just past the blank line that ends the first event, scanning
/// from `from` (a line start); or, when there is none yet, the start of the
/// line to scan from next time. A CR at the very end does not end its line
/// yet: a LF may follow in the next chunk.
fn find_event_end(buffer: &[u8], from: usize) -> Result<usize, usize> {
    let mut line_start = from;
    let mut i = from;
    while i < buffer.len() {
        match buffer[i] {
            b'\n' | b'\r' => {
                let end = match (buffer[i], buffer.get(i + 1)) {
                    (b'\r', Some(b'\n')) => i + 2,
                    (b'\r', None) => return Err(line_start),
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
    Err(line_start)
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
    fn rewriting_keeps_other_fields() -> Result<(), TooLarge> {
        let events = all_events(&[b"id: 7\nevent: message\n: note\ndata: {\"old\":\ndata: 1}\n\n"], 1024)?;
        let rewritten = events[0].with_data(b"{\"new\":\n2}");
        assert_eq!(&rewritten[..], b"id: 7\nevent: message\n: note\ndata: {\"new\":\ndata: 2}\n\n");
        Ok(())
    }
}
