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
    pub what: &'static str,
    pub at: usize,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

type Result<T> = std::result::Result<T, SyntaxError>;

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
            .map_err(|e| SyntaxError { what: "invalid UTF-8", at: e.valid_up_to() })?;
        Ok(Self { text, pos: 0, stack: Vec::new() })
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn error<T>(&self, what: &'static str) -> Result<T> {
        Err(SyntaxError { what, at: self.pos })
    }

    fn skip_whitespace(&mut self) {
        self.peek();
    }

    /// The next byte after white space, not consumed. Most values follow
    /// no white space or one space, so the first byte is looked at first.
    #[inline]
    pub fn peek(&mut self) -> Option<u8> {
        let bytes = self.bytes();
        loop {
            match bytes.get(self.pos) {
                Some(&byte) if byte > b' ' => return Some(byte),
                Some(b' ' | b'\n' | b'\t' | b'\r') => self.pos += 1,
                other => return other.copied(),
            }
        }
    }

    fn eat(&mut self, byte: u8, what: &'static str) -> Result<()> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            self.error(what)
        }
    }

    /// The position of the next value, after white space.
    pub fn mark(&mut self) -> usize {
        self.skip_whitespace();
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
            Some(_) => self.error("trailing characters"),
        }
    }

    /// Enters an object: the next value must be one.
    pub fn begin_object(&mut self) -> Result<()> {
        self.eat(b'{', "expected an object")
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
            _ => return self.error("expected `,` or `}`"),
        }
        if self.peek() != Some(b'"') {
            return self.error("expected a key");
        }
        let key = self.string()?;
        self.eat(b':', "expected `:`")?;
        Ok(Some(key))
    }

    /// Enters an array: the next value must be one.
    pub fn begin_array(&mut self) -> Result<()> {
        self.eat(b'[', "expected an array")
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
            _ => self.error("expected `,` or `]`"),
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
        self.skip_whitespace();
        let start = self.pos;
        self.stack.clear();
        loop {
            // A value is expected here.
            match self.peek() {
                Some(b'{') => {
                    self.pos += 1;
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                    } else {
                        self.stack.push(OBJECT);
                        self.skip_key()?;
                        continue;
                    }
                }
                Some(b'[') => {
                    self.pos += 1;
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                    } else {
                        self.stack.push(ARRAY);
                        continue;
                    }
                }
                Some(b'"') => self.skip_string()?,
                Some(b'-' | b'0'..=b'9') => self.skip_number()?,
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                _ => return self.error("expected a value"),
            }
            // A value has ended: close containers until one goes on.
            loop {
                let Some(&open) = self.stack.last() else {
                    return Ok(&self.bytes()[start..self.pos]);
                };
                match (self.peek(), open) {
                    (Some(b','), OBJECT) => {
                        self.pos += 1;
                        self.skip_key()?;
                        break;
                    }
                    (Some(b','), _) => {
                        self.pos += 1;
                        break;
                    }
                    (Some(b'}'), OBJECT) | (Some(b']'), ARRAY) => {
                        self.pos += 1;
                        self.stack.pop();
                    }
                    (_, OBJECT) => return self.error("expected `,` or `}`"),
                    _ => return self.error("expected `,` or `]`"),
                }
            }
        }
    }

    /// A key and its `:` inside a skipped object.
    fn skip_key(&mut self) -> Result<()> {
        if self.peek() != Some(b'"') {
            return self.error("expected a key");
        }
        self.skip_string()?;
        self.eat(b':', "expected `:`")
    }

    fn literal(&mut self, word: &[u8]) -> Result<()> {
        if self.bytes()[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            self.error("expected a value")
        }
    }

    fn digits(&mut self) -> usize {
        let bytes = self.bytes();
        let start = self.pos;
        while bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn skip_number(&mut self) -> Result<()> {
        let bytes = self.bytes();
        if bytes.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match bytes.get(self.pos) {
            Some(b'0') => {
                self.pos += 1;
                if bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
                    return self.error("invalid number");
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return self.error("invalid number"),
        }
        if bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return self.error("invalid number");
            }
        }
        if let Some(b'e' | b'E') = bytes.get(self.pos) {
            self.pos += 1;
            if let Some(b'+' | b'-') = bytes.get(self.pos) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return self.error("invalid number");
            }
        }
        Ok(())
    }

    /// The index of the next `"`, `\` or control character at or after
    /// `from`, or the text's length. Eight bytes at a time: a byte is
    /// flagged when it is zero after an XOR with `"` or `\`, or below 0x20;
    /// the lowest flag of each test is exact, so the lowest of all is.
    fn string_stop(&self, mut from: usize) -> usize {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        let bytes = self.bytes();
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

    /// Skips a string (at its opening quote).
    fn skip_string(&mut self) -> Result<()> {
        self.pos += 1;
        loop {
            self.pos = self.string_stop(self.pos);
            match self.bytes().get(self.pos) {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.bytes().get(self.pos) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.pos += 1,
                        Some(b'u') => {
                            self.pos += 1;
                            self.hex4()?;
                        }
                        _ => return self.error("invalid escape"),
                    }
                }
                Some(_) => return self.error("control character in a string"),
                None => return self.error("unterminated string"),
            }
        }
    }

    fn hex4(&mut self) -> Result<u16> {
        let Some(digits) = self.bytes().get(self.pos..self.pos + 4) else {
            return self.error("invalid escape");
        };
        let mut value = 0u16;
        for digit in digits {
            let Some(nibble) = char::from(*digit).to_digit(16) else {
                return self.error("invalid escape");
            };
            value = value << 4 | nibble as u16;
        }
        self.pos += 4;
        Ok(value)
    }

    /// Reads a string (at its opening quote), decoded. Borrowed from the
    /// text when it has no escapes.
    pub fn string(&mut self) -> Result<Cow<'a, str>> {
        self.pos += 1;
        let start = self.pos;
        self.pos = self.string_stop(self.pos);
        if self.bytes().get(self.pos) == Some(&b'"') {
            let Some(text) = self.text.get(start..self.pos) else { return self.error("invalid UTF-8") };
            self.pos += 1;
            return Ok(Cow::Borrowed(text));
        }
        let mut out = String::from(self.text.get(start..self.pos).unwrap_or_default());
        loop {
            match self.bytes().get(self.pos) {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    self.escape(&mut out)?;
                }
                Some(_) => return self.error("control character in a string"),
                None => return self.error("unterminated string"),
            }
            let from = self.pos;
            self.pos = self.string_stop(from);
            out.push_str(self.text.get(from..self.pos).unwrap_or_default());
        }
    }

    /// Decodes one escape (after its backslash) onto `out`.
    fn escape(&mut self, out: &mut String) -> Result<()> {
        let Some(&byte) = self.bytes().get(self.pos) else { return self.error("invalid escape") };
        self.pos += 1;
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
                let unit = self.hex4()?;
                let code = match unit {
                    0xDC00..=0xDFFF => return self.error("lone surrogate in a string"),
                    0xD800..=0xDBFF => {
                        if self.bytes().get(self.pos..self.pos + 2) != Some(b"\\u") {
                            return self.error("lone surrogate in a string");
                        }
                        self.pos += 2;
                        let low = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return self.error("lone surrogate in a string");
                        }
                        0x10000 + ((u32::from(unit) - 0xD800) << 10) + (u32::from(low) - 0xDC00)
                    }
                    unit => u32::from(unit),
                };
                match char::from_u32(code) {
                    Some(c) => c,
                    None => return self.error("invalid escape"),
                }
            }
            _ => return self.error("invalid escape"),
        };
        out.push(c);
        Ok(())
    }
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
                let scanner = Scanner {
                    text: std::str::from_utf8(&bytes).unwrap_or_default(),
                    pos: 0,
                    stack: Vec::new(),
                };
                assert_eq!(scanner.string_stop(0), at, "{stop:#x} at {at}");
            }
        }
        let text = "ééé\u{7f}\u{80}\u{ff}x".repeat(3);
        let scanner = Scanner { text: &text, pos: 0, stack: Vec::new() };
        assert_eq!(scanner.string_stop(0), text.len());
    }

    #[test]
    fn deep_nesting_is_skipped_without_recursion() {
        let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(skip(&text).map(|s| s.len()), Ok(200_000));
    }
}
