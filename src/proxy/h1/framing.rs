//! Reading an upstream's HTTP/1.1 answer from bytes: its head, where its
//! body ends (RFC 9112 §6.3), and the chunked coding.
//!
//! Where the RFC lets a recipient be lenient, this is strict wherever a
//! lenient reading could leave toolgate, the client and the upstream
//! disagreeing on where an answer ends: a `Transfer-Encoding` other than
//! `chunked` alone, one beside a `Content-Length`, differing lengths, a
//! malformed chunk line — each is an error, and the connection is never
//! used again. What toolgate forwards is what it decoded, framed anew by
//! the server side, so the client reads exactly the bytes judged.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use memchr::memmem::Finder;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::LazyLock;

/// The most an answer's head may take, interim answers included.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most fields an answer's head may have.
pub const MAX_FIELDS: usize = 100;
/// Interim (1xx) answers skipped before the final one, at most.
pub const MAX_INTERIM: usize = 8;
/// The most bytes of chunk extensions over one body, blanks and leading
/// zeros in chunk sizes counted in (they are read and dropped; a body of
/// such would otherwise cost reading without bound for nothing
/// forwarded).
const MAX_EXTENSIONS: usize = 16 * 1024;
/// The most bytes of trailer fields (read and dropped).
const MAX_TRAILERS: usize = 16 * 1024;

/// Why an answer could not be read with certainty.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    #[error("the answer's head is longer than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("the answer's head has more than {MAX_FIELDS} fields")]
    TooManyFields,
    #[error("the answer's head is malformed: {0}")]
    Malformed(httparse::Error),
    #[error("the answer's head has a field value that cannot be carried")]
    BadValue,
    #[error("more than {MAX_INTERIM} interim answers")]
    TooManyInterim,
    #[error("the upstream switched protocols unasked")]
    Switched,
    #[error("an HTTP/1.0 answer with a Transfer-Encoding")]
    CodedHttp10,
    #[error("an answer with both Transfer-Encoding and Content-Length")]
    CodedAndLength,
    #[error("a Transfer-Encoding other than chunked alone")]
    Coding,
    #[error("an invalid or conflicting Content-Length")]
    Length,
    #[error("a malformed chunk: {0}")]
    Chunk(&'static str),
    #[error("a chunk larger than can be counted")]
    ChunkTooLarge,
    #[error("chunk extensions longer than {MAX_EXTENSIONS} bytes")]
    ExtensionsTooLong,
    #[error("trailers longer than {MAX_TRAILERS} bytes")]
    TrailersTooLong,
}

/// Where an answer's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (a `HEAD`, a 204, a 304).
    Empty,
    Length(u64),
    Chunked,
    /// At the connection's close.
    Close,
}

/// A final answer's head.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// Whether the connection may carry another exchange once this one's
    /// body has been read to its end.
    pub keep_alive: bool,
}

/// What [`parse_head`] found at the front of the buffer.
#[derive(Debug)]
pub enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// An interim answer of this many bytes, taken off the buffer: the
    /// final one follows.
    Interim(usize),
    Final(Head),
}

/// Parses the answer head at the front of `buf`, taking it off the buffer
/// when whole. `method` is the request's (a `HEAD`'s answer has no body);
/// `limit` is what is left of [`MAX_HEAD`] after interim heads.
pub fn parse_head(buf: &mut BytesMut, method: &Method, limit: usize) -> Result<Parsed, FramingError> {
    // Left uninitialised: httparse writes the fields it finds (3 KiB a
    // head otherwise zeroed for nothing).
    let mut slots = [const { MaybeUninit::uninit() }; MAX_FIELDS];
    let mut response = httparse::Response::new(&mut []);
    let length = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buf.len() >= limit => return Err(FramingError::HeadTooLarge),
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(FramingError::TooManyFields),
        Err(error) => return Err(FramingError::Malformed(error)),
    };
    if length > limit {
        return Err(FramingError::HeadTooLarge);
    }
    let code = response.code.unwrap_or_default();
    let status = StatusCode::from_u16(code).map_err(|_| FramingError::Malformed(httparse::Error::Status))?;
    let version = if response.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(FramingError::Switched);
    }
    if status.is_informational() {
        buf.advance(length);
        return Ok(Parsed::Interim(length));
    }
    let fields = owned_fields(buf, length, response.headers).map_err(|bad| match bad {
        BadField::Name => FramingError::Malformed(httparse::Error::HeaderName),
        BadField::Value | BadField::Outside => FramingError::BadValue,
    })?;
    let head = buf.split_to(length).freeze();
    let headers = header_map(&head, fields).map_err(|_| FramingError::BadValue)?;
    let framing = framing(method, status, version, &headers)?;
    let keep_alive = version == Version::HTTP_11 && framing != Framing::Close && !closes(&headers);
    Ok(Parsed::Final(Head { status, version, headers, framing, keep_alive }))
}

/// A field of a head that cannot be carried.
#[derive(Debug)]
pub enum BadField {
    Name,
    Value,
    /// A slice httparse gave that is not within the head.
    Outside,
}

/// Where `slice`, one of httparse's slices of `buf`, lies within the
/// head's first `length` bytes (an empty one may point anywhere).
pub fn range_in(buf: &[u8], length: usize, slice: &[u8]) -> Result<Range<usize>, BadField> {
    (slice.as_ptr() as usize)
        .checked_sub(buf.as_ptr() as usize)
        .filter(|start| start + slice.len() <= length)
        .or(slice.is_empty().then_some(0))
        .map(|start| start..start + slice.len())
        .ok_or(BadField::Outside)
}

/// The fields httparse found in a head of `length` bytes at the front of
/// `buf`: names read now, values as ranges of the head, to be taken from
/// it ([`header_map`]) once it is off the buffer.
pub fn owned_fields(
    buf: &[u8],
    length: usize,
    fields: &[httparse::Header<'_>],
) -> Result<Vec<(HeaderName, Range<usize>)>, BadField> {
    let mut owned = Vec::with_capacity(fields.len());
    for field in fields {
        let name = match known_name(field.name.as_bytes()) {
            Some(name) => name,
            None => HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| BadField::Name)?,
        };
        owned.push((name, range_in(buf, length, field.value)?));
    }
    Ok(owned)
}

type Known = (&'static [u8], HeaderName);

/// The names MCP clients and servers send on nearly every request and
/// answer, lowercase, by length.
static KNOWN_4: [Known; 4] =
    [(b"host", header::HOST), (b"date", header::DATE), (b"etag", header::ETAG), (b"vary", header::VARY)];
static KNOWN_6: [Known; 3] =
    [(b"accept", header::ACCEPT), (b"origin", header::ORIGIN), (b"server", header::SERVER)];
static KNOWN_10: [Known; 3] = [
    (b"user-agent", header::USER_AGENT),
    (b"connection", header::CONNECTION),
    (b"keep-alive", HeaderName::from_static("keep-alive")),
];
static KNOWN_12: [Known; 2] =
    [(b"content-type", header::CONTENT_TYPE), (b"x-powered-by", HeaderName::from_static("x-powered-by"))];
static KNOWN_13: [Known; 5] = [
    (b"authorization", header::AUTHORIZATION),
    (b"cache-control", header::CACHE_CONTROL),
    (b"last-modified", header::LAST_MODIFIED),
    (b"accept-ranges", header::ACCEPT_RANGES),
    (b"last-event-id", HeaderName::from_static("last-event-id")),
];
static KNOWN_14: [Known; 2] = [
    (b"content-length", header::CONTENT_LENGTH),
    (b"mcp-session-id", HeaderName::from_static("mcp-session-id")),
];
static KNOWN_15: [Known; 2] =
    [(b"accept-encoding", header::ACCEPT_ENCODING), (b"accept-language", header::ACCEPT_LANGUAGE)];
static KNOWN_17: [Known; 1] = [(b"transfer-encoding", header::TRANSFER_ENCODING)];
static KNOWN_20: [Known; 1] = [(b"mcp-protocol-version", HeaderName::from_static("mcp-protocol-version"))];

/// A known name in any case, without `HeaderName::from_bytes`'s parse
/// (and, for a name outside the standard set, its allocation): about a
/// third of what reading a field cost.
///
/// `raw` is a token (httparse checked it), and a known spelling is
/// lowercase letters and `-`: `raw | 0x20` equals such a byte only for
/// that letter in either case, or for `-` itself (`0x0d` would fold to
/// `-`, and is no token byte), so a name found here is exactly the one
/// `from_bytes` would give.
fn known_name(raw: &[u8]) -> Option<HeaderName> {
    let candidates: &[Known] = match raw.len() {
        4 => &KNOWN_4,
        6 => &KNOWN_6,
        10 => &KNOWN_10,
        12 => &KNOWN_12,
        13 => &KNOWN_13,
        14 => &KNOWN_14,
        15 => &KNOWN_15,
        17 => &KNOWN_17,
        20 => &KNOWN_20,
        _ => return None,
    };
    candidates.iter().find(|(spelling, _)| folded_eq(spelling, raw)).map(|(_, name)| name.clone())
}

/// Whether `raw`, a token as long as `lower`, is `lower` in any case
/// (see [`known_name`]): eight bytes at a time, the last eight taken
/// overlapping.
fn folded_eq(lower: &[u8], raw: &[u8]) -> bool {
    const FOLD: u64 = 0x2020_2020_2020_2020;
    let word = |bytes: &[u8], at: usize| {
        bytes.get(at..at + 8).and_then(|eight| <[u8; 8]>::try_from(eight).ok()).map(u64::from_le_bytes)
    };
    let length = raw.len();
    if length < 8 || lower.len() != length {
        return lower.len() == length && raw.iter().zip(lower).all(|(byte, lower)| byte | 0x20 == *lower);
    }
    let same =
        |at| matches!((word(raw, at), word(lower, at)), (Some(raw), Some(lower)) if raw | FOLD == lower);
    (0..length - 8).step_by(8).all(same) && same(length - 8)
}

/// The head's fields, their values slices of `head`'s bytes.
pub fn header_map(head: &Bytes, fields: Vec<(HeaderName, Range<usize>)>) -> Result<HeaderMap, BadField> {
    let mut headers = HeaderMap::with_capacity(fields.len());
    for (name, range) in fields {
        let value = HeaderValue::from_maybe_shared(head.slice(range)).map_err(|_| BadField::Value)?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// Takes the empty lines (CRLF or LF) at the front of `buf` off it, as
/// httparse skips them before a head; how many bytes they were.
pub fn leading_empty_lines(buf: &mut BytesMut) -> usize {
    let mut skipped = 0;
    loop {
        let line = match buf.get(skipped..skipped + 2) {
            Some([b'\r', b'\n']) => 2,
            _ if buf.get(skipped) == Some(&b'\n') => 1,
            _ => break,
        };
        skipped += line;
    }
    buf.advance(skipped);
    skipped
}

/// Where the first blank line (a head's end: LF, an optional CR, LF) in
/// `buf` ends, searching from about `from` (where an earlier search
/// stopped).
///
/// Two substring searches, not a look at every line: the first `\n\r\n`,
/// then a `\n\n` only before it. Each checks two bytes at once, a pair
/// that no line inside a head holds, so neither stops at every line end.
pub fn blank_line(buf: &[u8], from: usize) -> Option<usize> {
    static CR_LF: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\n\r\n"));
    static LF: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\n\n"));
    let start = from.saturating_sub(2);
    let rest = buf.get(start..)?;
    let crlf = CR_LF.find(rest);
    let before = crlf.and_then(|at| rest.get(..at + 1)).unwrap_or(rest);
    match LF.find(before) {
        Some(at) => Some(start + at + 2),
        None => crlf.map(|at| start + at + 3),
    }
}

/// RFC 9112 §6.3, strictly: see the module's introduction.
fn framing(
    method: &Method,
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
) -> Result<Framing, FramingError> {
    if method == Method::HEAD || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Empty);
    }
    Ok(declared(version, headers)?.unwrap_or(Framing::Close))
}

/// Where a message's body ends by its fields, for answers and requests
/// alike: `chunked` alone, in HTTP/1.1 and without a `Content-Length`;
/// or lengths that agree; `None` when neither field is present.
pub fn declared(version: Version, headers: &HeaderMap) -> Result<Option<Framing>, FramingError> {
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter().peekable();
    if codings.peek().is_some() {
        if version == Version::HTTP_10 {
            return Err(FramingError::CodedHttp10);
        }
        if headers.contains_key(header::CONTENT_LENGTH) {
            return Err(FramingError::CodedAndLength);
        }
        let mut named = codings.flat_map(|value| value.as_bytes().split(|&byte| byte == b','));
        let only_chunked =
            named.next().is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"))
                && named.next().is_none();
        return if only_chunked { Ok(Some(Framing::Chunked)) } else { Err(FramingError::Coding) };
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&byte| byte == b',') {
            let parsed = decimal(item.trim_ascii()).ok_or(FramingError::Length)?;
            if length.is_some_and(|seen| seen != parsed) {
                return Err(FramingError::Length);
            }
            length = Some(parsed);
        }
    }
    Ok(length.map(Framing::Length))
}

fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |total, &digit| {
        if !digit.is_ascii_digit() {
            return None;
        }
        total.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

/// Whether the comma-separated field `name` lists `token`.
pub fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Whether `Connection` says `close`.
fn closes(headers: &HeaderMap) -> bool {
    has_token(headers, header::CONNECTION, "close")
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the chunk size; whether a digit has been seen.
    Size(bool),
    /// Whitespace after the size.
    SizeSpace,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

/// What the decoder took off the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Some of a chunk's data.
    Data(Bytes),
    /// The buffer holds nothing more to decode.
    More,
    /// The last chunk and the trailers have been read.
    Done,
}

/// The chunked coding's decoder (RFC 9112 §7.1): every line ends in CRLF;
/// extensions and trailers are read, bounded, and dropped.
#[derive(Debug)]
pub struct Chunked {
    state: State,
    /// What is left of the current chunk.
    size: u64,
    extensions: usize,
    trailers: usize,
}

impl Default for Chunked {
    fn default() -> Self {
        Self { state: State::Size(false), size: 0, extensions: 0, trailers: 0 }
    }
}

impl Chunked {
    /// Decodes from the front of `buf`: data as it is found, without
    /// copying it.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, FramingError> {
        loop {
            match self.state {
                State::Done => return Ok(Step::Done),
                State::Data if buf.is_empty() => return Ok(Step::More),
                State::Data => {
                    let take = usize::try_from(self.size).unwrap_or(usize::MAX).min(buf.len());
                    self.size -= take as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok(Step::Data(buf.split_to(take).freeze()));
                }
                _ => {}
            }
            let Some(&byte) = buf.first() else { return Ok(Step::More) };
            buf.advance(1);
            self.state = self.next(byte)?;
        }
    }

    /// Counts a byte of a size line that carries no data (an extension's,
    /// a blank, a leading zero) against [`MAX_EXTENSIONS`].
    fn spend(&mut self) -> Result<(), FramingError> {
        self.extensions += 1;
        if self.extensions > MAX_EXTENSIONS {
            return Err(FramingError::ExtensionsTooLong);
        }
        Ok(())
    }

    /// The state after `byte`, outside a chunk's data.
    fn next(&mut self, byte: u8) -> Result<State, FramingError> {
        use FramingError::Chunk;
        Ok(match (self.state, byte) {
            (State::Size(seen), digit) if digit.is_ascii_hexdigit() => {
                let value = u64::from(hex(digit));
                if seen && self.size == 0 {
                    // Leading zeros carry nothing: counted as extensions.
                    self.spend()?;
                }
                self.size = self
                    .size
                    .checked_mul(16)
                    .and_then(|size| size.checked_add(value))
                    .ok_or(FramingError::ChunkTooLarge)?;
                State::Size(true)
            }
            (State::Size(false), _) => return Err(Chunk("no chunk size")),
            (State::Size(true) | State::SizeSpace, b' ' | b'\t') => {
                self.spend()?;
                State::SizeSpace
            }
            (State::Size(true) | State::SizeSpace, b';') => State::Extension,
            (State::Size(true) | State::SizeSpace | State::Extension, b'\r') => State::SizeLf,
            (State::Size(true) | State::SizeSpace, _) => {
                return Err(Chunk("a chunk size that is not hexadecimal"));
            }
            (State::Extension, byte) if byte == b'\t' || (byte >= b' ' && byte != 0x7f) => {
                self.spend()?;
                State::Extension
            }
            (State::Extension, _) => return Err(Chunk("a control character in a chunk extension")),
            (State::SizeLf, b'\n') if self.size == 0 => State::TrailerStart,
            (State::SizeLf, b'\n') => State::Data,
            (State::SizeLf, _) => return Err(Chunk("a chunk size line not ended by CRLF")),
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => State::Size(false),
            (State::DataCr | State::DataLf, _) => return Err(Chunk("chunk data not followed by CRLF")),
            (State::TrailerStart, b'\r') => State::EndLf,
            (State::TrailerStart | State::Trailer, byte) if byte != b'\r' && byte != b'\n' => {
                self.trailers += 1;
                if self.trailers > MAX_TRAILERS {
                    return Err(FramingError::TrailersTooLong);
                }
                State::Trailer
            }
            (State::Trailer, b'\r') => State::TrailerLf,
            (State::TrailerLf, b'\n') => State::TrailerStart,
            (State::EndLf, b'\n') => State::Done,
            (State::TrailerStart | State::Trailer | State::TrailerLf | State::EndLf, _) => {
                return Err(Chunk("a trailer line not ended by CRLF"));
            }
            // `decode` handles these before reading a byte.
            (State::Data | State::Done, _) => return Err(Chunk("a byte read in the wrong state")),
        })
    }
}

fn hex(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

#[cfg(test)]
#[path = "framing_tests.rs"]
mod tests;
