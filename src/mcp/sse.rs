//! A server-sent events splitter with a size limit, for the upstream's SSE
//! answers. It cuts the byte stream into whole events as they complete, so
//! each can be judged and forwarded at once ([`Event`] reads one).
//!
//! Written here because the SSE crates at hand buffer without a bound; an
//! upstream must not be able to make toolgate hold an unbounded event.
//! Framing follows the WHATWG HTML "event stream interpretation": one
//! leading byte-order mark is dropped; lines end in CRLF, LF or CR; a blank
//! line ends an event.

pub use super::sse_event::{Event, message_event};
use bytes::BytesMut;

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
                Ok(Some(Event::parse(raw)))
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
    while let Some(found) = buffer.get(i..).and_then(|rest| memchr::memchr2(b'\n', b'\r', rest)) {
        i += found;
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
    Err(Scan { line_start, position: buffer.len() })
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
}
