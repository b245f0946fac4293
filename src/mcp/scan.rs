//! A one-pass JSON reader over bytes, for the list filter.
//!
//! It accepts exactly the texts serde_json accepts (RFC 8259): UTF-8, no
//! control characters in strings, only the escapes JSON defines, no leading
//! zeros, no trailing commas or characters. Instead of building a tree it
//! lets its caller walk objects and arrays and hands back, for each value
//! skipped, the bytes it spans, so kept values are forwarded as they came
//! without being read twice. Keys and the few strings the caller reads are
//! decoded, and their escapes must then be Unicode scalars (no lone
//! surrogates), as serde_json requires of a string it decodes; a skipped
//! string's `\u` escapes need only be four hex digits, as in serde_json.
//!
//! Skipping is iterative: nesting costs one byte of a reused stack per
//! level, never recursion, and every byte is looked at a bounded number of
//! times.

use std::borrow::Cow;
use std::fmt;

/// Where and why a text is not JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub what: Fault,
    pub at: usize,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what.text(), self.at)
    }
}

/// What was wrong. An enum rather than text, so that a position or this
/// error fits in two registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    InvalidUtf8,
    Trailing,
    CommaOrBrace,
    CommaOrBracket,
    Key,
    Colon,
    Object,
    Array,
    ControlCharacter,
    Unterminated,
    Value,
    Number,
    Escape,
    LoneSurrogate,
}

impl Fault {
    pub fn text(self) -> &'static str {
        match self {
            Fault::InvalidUtf8 => "invalid UTF-8",
            Fault::Trailing => "trailing characters",
            Fault::CommaOrBrace => "expected `,` or `}`",
            Fault::CommaOrBracket => "expected `,` or `]`",
            Fault::Key => "expected a key",
            Fault::Colon => "expected `:`",
            Fault::Object => "expected an object",
            Fault::Array => "expected an array",
            Fault::ControlCharacter => "control character in a string",
            Fault::Unterminated => "unterminated string",
            Fault::Value => "expected a value",
            Fault::Number => "invalid number",
            Fault::Escape => "invalid escape",
            Fault::LoneSurrogate => "lone surrogate in a string",
        }
    }
}

type Result<T> = std::result::Result<T, SyntaxError>;

/// The work is done by free functions over the bytes and a position held
/// in a local, returning the position after what they read: the position
/// stays in a register instead of going back to the scanner at every byte.
type Step = Result<usize>;

#[cold]
#[inline(never)]
fn fail<T>(what: Fault, at: usize) -> Result<T> {
    Err(SyntaxError { what, at })
}

const OBJECT: u8 = b'{';
const ARRAY: u8 = b'[';

pub struct Scanner<'a> {
    text: &'a str,
    pos: usize,
    /// The containers open while a value is skipped.
    stack: Vec<u8>,
}

impl<'a> Scanner<'a> {
    /// A scanner at the start of `text`, which must be UTF-8 as a whole.
    pub fn new(text: &'a [u8]) -> Result<Self> {
        let text = std::str::from_utf8(text)
            .map_err(|e| SyntaxError { what: Fault::InvalidUtf8, at: e.valid_up_to() })?;
        Ok(Self { text, pos: 0, stack: Vec::new() })
    }

    #[inline]
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// The next byte after white space, not consumed.
    #[inline]
    pub fn peek(&mut self) -> Option<u8> {
        self.pos = whitespace(self.bytes(), self.pos);
        self.bytes().get(self.pos).copied()
    }

    fn eat(&mut self, byte: u8, what: Fault) -> Result<()> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            fail(what, self.pos)
        }
    }

    /// The position of the next value, after white space.
    pub fn mark(&mut self) -> usize {
        self.peek();
        self.pos
    }

    /// The bytes from `start` (a [`Self::mark`]) to here.
    pub fn since(&self, start: usize) -> &'a [u8] {
        self.bytes().get(start..self.pos).unwrap_or_default()
    }

    /// Only white space is left.
    pub fn end(&mut self) -> Result<()> {
        match self.peek() {
            None => Ok(()),
            Some(_) => fail(Fault::Trailing, self.pos),
        }
    }

    /// Enters an object: the next value must be one.
    pub fn begin_object(&mut self) -> Result<()> {
        self.eat(b'{', Fault::Object)
    }

    /// The next key of the object entered, its `:` consumed, or `None` at
    /// its end. `first` is true for the first call on an object.
    pub fn next_key(&mut self, first: bool) -> Result<Option<Cow<'a, str>>> {
        match self.peek() {
            Some(b'}') => {
                self.pos += 1;
                return Ok(None);
            }
            Some(b',') if !first => self.pos += 1,
            _ if first => {}
            _ => return fail(Fault::CommaOrBrace, self.pos),
        }
        if self.peek() != Some(b'"') {
            return fail(Fault::Key, self.pos);
        }
        let key = self.string()?;
        self.eat(b':', Fault::Colon)?;
        Ok(Some(key))
    }

    /// Enters an array: the next value must be one.
    pub fn begin_array(&mut self) -> Result<()> {
        self.eat(b'[', Fault::Array)
    }

    /// Whether the array entered has another element. `first` is true for
    /// the first call on an array.
    pub fn next_element(&mut self, first: bool) -> Result<bool> {
        match self.peek() {
            Some(b']') => {
                self.pos += 1;
                Ok(false)
            }
            Some(b',') if !first => {
                self.pos += 1;
                Ok(true)
            }
            _ if first => Ok(true),
            _ => fail(Fault::CommaOrBracket, self.pos),
        }
    }

    /// The next value, decoded if it is a string; `None`, with the value
    /// skipped, if it is not one.
    pub fn string_or_skip(&mut self) -> Result<Option<Cow<'a, str>>> {
        if self.peek() == Some(b'"') {
            return self.string().map(Some);
        }
        self.skip_value().map(|_| None)
    }

    /// Skips the next value, returning the bytes it spans (without the
    /// white space around it).
    pub fn skip_value(&mut self) -> Result<&'a [u8]> {
        let bytes = self.bytes();
        let start = whitespace(bytes, self.pos);
        self.pos = start;
        let end = skip(bytes, start, &mut self.stack)?;
        self.pos = end;
        Ok(bytes.get(start..end).unwrap_or_default())
    }

    /// Reads a string (at its opening quote), decoded. Borrowed from the
    /// text when it has no escapes.
    #[inline]
    pub fn string(&mut self) -> Result<Cow<'a, str>> {
        let bytes = self.bytes();
        let start = self.pos + 1;
        let pos = string_stop(bytes, start);
        if bytes.get(pos) == Some(&b'"') {
            // Both ends are ASCII, so both are character boundaries.
            let Some(text) = self.text.get(start..pos) else { return fail(Fault::InvalidUtf8, pos) };
            self.pos = pos + 1;
            return Ok(Cow::Borrowed(text));
        }
        self.string_rest(start, pos)
    }

    /// [`Self::string`] from its first escape or stray byte (at `pos`).
    #[inline(never)]
    fn string_rest(&mut self, start: usize, mut pos: usize) -> Result<Cow<'a, str>> {
        let bytes = self.bytes();
        let mut out = String::from(self.text.get(start..pos).unwrap_or_default());
        loop {
            match bytes.get(pos) {
                Some(b'"') => {
                    self.pos = pos + 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => pos = escape(bytes, pos + 1, &mut out)?,
                Some(_) => return fail(Fault::ControlCharacter, pos),
                None => return fail(Fault::Unterminated, pos),
            }
            let from = pos;
            pos = string_stop(bytes, from);
            out.push_str(self.text.get(from..pos).unwrap_or_default());
        }
    }
}

/// The position of the first byte at or after `pos` that is not white space.
#[inline(always)]
fn whitespace(bytes: &[u8], mut pos: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\t' | b'\r') = bytes.get(pos) {
        pos += 1;
    }
    pos
}

/// Skips the value at `pos` (after white space), iteratively: `stack`
/// holds the containers open.
fn skip(bytes: &[u8], mut pos: usize, stack: &mut Vec<u8>) -> Step {
    stack.clear();
    loop {
        // A value is expected here.
        pos = whitespace(bytes, pos);
        match bytes.get(pos) {
            Some(b'"') => pos = skip_string(bytes, pos + 1)?,
            Some(b'{') => {
                pos = whitespace(bytes, pos + 1);
                if bytes.get(pos) == Some(&b'}') {
                    pos += 1;
                } else {
                    stack.push(OBJECT);
                    pos = skip_key(bytes, pos)?;
                    continue;
                }
            }
            Some(b'[') => {
                pos = whitespace(bytes, pos + 1);
                if bytes.get(pos) == Some(&b']') {
                    pos += 1;
                } else {
                    stack.push(ARRAY);
                    continue;
                }
            }
            Some(b'-' | b'0'..=b'9') => pos = skip_number(bytes, pos)?,
            Some(b't') => pos = literal(bytes, pos, b"true")?,
            Some(b'f') => pos = literal(bytes, pos, b"false")?,
            Some(b'n') => pos = literal(bytes, pos, b"null")?,
            _ => return fail(Fault::Value, pos),
        }
        // A value has ended: close containers until one goes on.
        loop {
            let Some(&open) = stack.last() else { return Ok(pos) };
            pos = whitespace(bytes, pos);
            match (bytes.get(pos), open) {
                (Some(b','), OBJECT) => {
                    pos = skip_key(bytes, whitespace(bytes, pos + 1))?;
                    break;
                }
                (Some(b','), _) => {
                    pos += 1;
                    break;
                }
                (Some(b'}'), OBJECT) | (Some(b']'), ARRAY) => {
                    pos += 1;
                    stack.pop();
                }
                (_, OBJECT) => return fail(Fault::CommaOrBrace, pos),
                _ => return fail(Fault::CommaOrBracket, pos),
            }
        }
    }
}

/// A key at `pos` (after white space) and its `:`, inside a skipped object.
#[inline(always)]
fn skip_key(bytes: &[u8], pos: usize) -> Step {
    if bytes.get(pos) != Some(&b'"') {
        return fail(Fault::Key, pos);
    }
    let pos = whitespace(bytes, skip_string(bytes, pos + 1)?);
    if bytes.get(pos) != Some(&b':') {
        return fail(Fault::Colon, pos);
    }
    Ok(pos + 1)
}

fn literal(bytes: &[u8], pos: usize, word: &[u8]) -> Step {
    match bytes.get(pos..pos + word.len()) {
        Some(found) if found == word => Ok(pos + word.len()),
        _ => fail(Fault::Value, pos),
    }
}

#[inline(always)]
fn digits(bytes: &[u8], mut pos: usize) -> usize {
    while bytes.get(pos).is_some_and(u8::is_ascii_digit) {
        pos += 1;
    }
    pos
}

fn skip_number(bytes: &[u8], mut pos: usize) -> Step {
    if bytes.get(pos) == Some(&b'-') {
        pos += 1;
    }
    match bytes.get(pos) {
        Some(b'0') => {
            pos += 1;
            if bytes.get(pos).is_some_and(u8::is_ascii_digit) {
                return fail(Fault::Number, pos);
            }
        }
        Some(b'1'..=b'9') => pos = digits(bytes, pos + 1),
        _ => return fail(Fault::Number, pos),
    }
    if bytes.get(pos) == Some(&b'.') {
        let end = digits(bytes, pos + 1);
        if end == pos + 1 {
            return fail(Fault::Number, end);
        }
        pos = end;
    }
    if let Some(b'e' | b'E') = bytes.get(pos) {
        pos += 1;
        if let Some(b'+' | b'-') = bytes.get(pos) {
            pos += 1;
        }
        let end = digits(bytes, pos);
        if end == pos {
            return fail(Fault::Number, end);
        }
        pos = end;
    }
    Ok(pos)
}

/// The index of the next `"`, `\` or control character at or after
/// `from`, or the text's length. Eight bytes at a time: a byte is flagged
/// when it is zero after an XOR with `"` or `\`, or below 0x20; the lowest
/// flag of each test is exact, so the lowest of all is.
#[inline(always)]
fn string_stop(bytes: &[u8], mut from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = bytes.get(from..from + 8) {
        let Ok(chunk) = <[u8; 8]>::try_from(chunk) else { break };
        let word = u64::from_le_bytes(chunk);
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        let flags = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (word.wrapping_sub(ONES * 0x20) & !word))
            & HIGH;
        if flags != 0 {
            return from + (flags.trailing_zeros() / 8) as usize;
        }
        from += 8;
    }
    while let Some(&byte) = bytes.get(from) {
        if byte == b'"' || byte == b'\\' || byte < 0x20 {
            break;
        }
        from += 1;
    }
    from
}

/// Skips the rest of a string (`pos` just after its opening quote).
#[inline(always)]
fn skip_string(bytes: &[u8], pos: usize) -> Step {
    let end = string_stop(bytes, pos);
    if bytes.get(end) == Some(&b'"') {
        return Ok(end + 1);
    }
    skip_string_rest(bytes, end)
}

/// [`skip_string`] past its first escape or stray byte (at `pos`).
#[inline(never)]
fn skip_string_rest(bytes: &[u8], mut pos: usize) -> Step {
    loop {
        pos = string_stop(bytes, pos);
        match bytes.get(pos) {
            Some(b'"') => return Ok(pos + 1),
            Some(b'\\') => pos = skip_escape(bytes, pos + 1)?,
            Some(_) => return fail(Fault::ControlCharacter, pos),
            None => return fail(Fault::Unterminated, pos),
        }
    }
}

/// Skips one escape (`pos` just after its backslash): a skipped string's
/// `\u` needs only four hex digits.
#[cold]
fn skip_escape(bytes: &[u8], pos: usize) -> Step {
    match bytes.get(pos) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(pos + 1),
        Some(b'u') => hex4(bytes, pos + 1).map(|_| pos + 5),
        _ => fail(Fault::Escape, pos),
    }
}

fn hex4(bytes: &[u8], pos: usize) -> Result<u16> {
    let Some(digits) = bytes.get(pos..pos + 4) else {
        return fail(Fault::Escape, pos);
    };
    let mut value = 0u16;
    for digit in digits {
        let Some(nibble) = char::from(*digit).to_digit(16) else {
            return fail(Fault::Escape, pos);
        };
        value = value << 4 | nibble as u16;
    }
    Ok(value)
}

/// Decodes one escape (`pos` just after its backslash) onto `out`.
fn escape(bytes: &[u8], mut pos: usize, out: &mut String) -> Step {
    let Some(&byte) = bytes.get(pos) else { return fail(Fault::Escape, pos) };
    pos += 1;
    let c = match byte {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let unit = hex4(bytes, pos)?;
            pos += 4;
            let code = match unit {
                0xDC00..=0xDFFF => return fail(Fault::LoneSurrogate, pos),
                0xD800..=0xDBFF => {
                    if bytes.get(pos..pos + 2) != Some(b"\\u") {
                        return fail(Fault::LoneSurrogate, pos);
                    }
                    let low = hex4(bytes, pos + 2)?;
                    pos += 6;
                    if !(0xDC00..=0xDFFF).contains(&low) {
                        return fail(Fault::LoneSurrogate, pos);
                    }
                    0x10000 + ((u32::from(unit) - 0xD800) << 10) + (u32::from(low) - 0xDC00)
                }
                unit => u32::from(unit),
            };
            match char::from_u32(code) {
                Some(c) => c,
                None => return fail(Fault::Escape, pos),
            }
        }
        _ => return fail(Fault::Escape, pos),
    };
    out.push(c);
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skip(text: &str) -> Result<String> {
        let mut scanner = Scanner::new(text.as_bytes())?;
        let span = scanner.skip_value()?;
        scanner.end()?;
        Ok(String::from_utf8_lossy(span).into_owned())
    }

    #[test]
    fn accepts_what_serde_json_accepts() {
        for text in [
            "0",
            "-0",
            "-0.5e+10",
            "1E5",
            "1e999",
            "true",
            " null ",
            "\"\"",
            "\"a\\u00e9\\ud800\\n\\/\"",
            "[]",
            "{}",
            "[1,[2,{\"a\":[{}]}],\"x\"]",
            "{\"a\":1,\"a\":2}",
            "\"\u{7f}é\u{2028}\"",
            " \t\r\n{ \"k\" : [ 1 , 2 ] } ",
        ] {
            assert!(serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok(), "{text}");
            assert_eq!(skip(text).map(|s| s.trim().to_owned()), Ok(text.trim().to_owned()), "{text}");
        }
    }

    #[test]
    fn refuses_what_serde_json_refuses() {
        for text in [
            "",
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "+1",
            "tru",
            "nul",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\"}",
            "{1:2}",
            "[1 2]",
            "\"\\x\"",
            "\"\\u12g4\"",
            "\"a\u{1}\"",
            "\"abc",
            "[",
            "{\"a\":",
            "1 2",
            "NaN",
            "\u{feff}1",
            "\x0c1",
            "[}",
            "{]",
            "'a'",
        ] {
            assert!(serde_json::from_str::<serde::de::IgnoredAny>(text).is_err(), "{text}");
            assert!(skip(text).is_err(), "{text}");
        }
        assert!(Scanner::new(b"\"\xff\"").is_err());
    }

    #[test]
    fn strings_are_decoded_as_serde_json_decodes_them() {
        for text in [
            "\"plain\"",
            "\"a\\u0041\\t\\\\\"",
            "\"\\ud83d\\ude00 x\"",
            "\"é\\\"\"",
            "\"long string past eight bytes\\/\"",
        ] {
            let mut scanner = Scanner::new(text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            let expected: String = serde_json::from_str(text).unwrap_or_default();
            assert_eq!(scanner.string().map(Cow::into_owned), Ok(expected), "{text}");
        }
        for text in ["\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"", "\"\\ud800x\""] {
            assert!(serde_json::from_str::<String>(text).is_err(), "{text}");
            let mut scanner = Scanner::new(text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            assert!(scanner.string().is_err(), "{text}");
        }
    }

    #[test]
    fn every_special_byte_stops_a_string_at_any_offset() {
        for stop in [b'"', b'\\', 0u8, 0x1f] {
            for at in 0..20 {
                let mut bytes = vec![b'a'; 24];
                bytes[at] = stop;
                assert_eq!(string_stop(&bytes, 0), at, "{stop:#x} at {at}");
            }
        }
        let text = "ééé\u{7f}\u{80}\u{ff}x".repeat(3);
        assert_eq!(string_stop(text.as_bytes(), 0), text.len());
    }

    #[test]
    fn deep_nesting_is_skipped_without_recursion() {
        let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(skip(&text).map(|s| s.len()), Ok(200_000));
    }
}
