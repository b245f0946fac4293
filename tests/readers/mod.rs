//! Models of how real JSON readers take a message, written independently of
//! toolgate's code: JavaScript's `JSON.parse`, Python's `json` and
//! serde_json keep the last of duplicate keys; some readers keep the first;
//! Go's `encoding/json` matches keys to fields case-insensitively under
//! Unicode simple folding (`ſ` is `s`, KELVIN SIGN is `k`) and keeps the
//! last match; the Python SDK's newer pydantic models take a member by its
//! camelCase alias or its snake_case name, the alias winning.

#![allow(dead_code)]

pub mod serde_filter;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    LastWins,
    FirstWins,
    GoFold,
    SnakeOrCamel,
}

impl Reader {
    pub const ALL: [Reader; 4] = [Reader::LastWins, Reader::FirstWins, Reader::GoFold, Reader::SnakeOrCamel];
}

fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// JSON with object members in order, duplicates kept.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Object(Vec<(String, Json)>),
    Array(Vec<Json>),
    String(String),
    Other,
}

impl<'de> serde::Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Json;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut members = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, Json>()? {
                    members.push((key, value));
                }
                Ok(Json::Object(members))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Json>()? {
                    items.push(item);
                }
                Ok(Json::Array(items))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
                Ok(Json::String(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Json, E> {
                Ok(Json::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Json, E> {
                Ok(Json::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Json, E> {
                Ok(Json::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Json, E> {
                Ok(Json::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
                Ok(Json::Other)
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Go's `foldName`: ASCII upper case, and each other rune the smallest of
/// its simple-fold orbit (for the runes that fold onto ASCII letters).
fn go_fold(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            'ſ' => 'S',
            '\u{212A}' => 'K',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

/// The member a reader takes for `name`.
pub fn member<'j>(reader: Reader, object: &'j [(String, Json)], name: &str) -> Option<&'j Json> {
    if reader == Reader::SnakeOrCamel {
        let by_alias = object.iter().rfind(|(key, _)| key == name);
        let snake = snake_case(name);
        return by_alias.or_else(|| object.iter().rfind(|(key, _)| *key == snake)).map(|(_, v)| v);
    }
    let mut matching = object.iter().filter(|(key, _)| match reader {
        Reader::GoFold => go_fold(key) == go_fold(name),
        _ => key == name,
    });
    match reader {
        Reader::FirstWins => matching.next(),
        _ => matching.next_back(),
    }
    .map(|(_, value)| value)
}

fn string(value: Option<&Json>) -> Option<String> {
    match value {
        Some(Json::String(s)) => Some(s.clone()),
        _ => None,
    }
}

/// What a reader takes for the method, `params.name` and `params.uri` of
/// a message; `None` if it cannot read the text.
pub fn envelope(reader: Reader, text: &str) -> Option<(Option<String>, Option<String>, Option<String>)> {
    let Json::Object(message) = serde_json::from_str::<Json>(text).ok()? else { return None };
    let method = string(member(reader, &message, "method"));
    let (name, uri) = match member(reader, &message, "params") {
        Some(Json::Object(params)) => {
            (string(member(reader, params, "name")), string(member(reader, params, "uri")))
        }
        _ => (None, None),
    };
    Some((method, name, uri))
}

const LISTS: [(&str, &str); 4] =
    [("tools", "name"), ("prompts", "name"), ("resources", "uri"), ("resourceTemplates", "uriTemplate")];

/// Every name a reader finds in the list results of `text`.
pub fn list_names(reader: Reader, text: &str) -> Vec<String> {
    let Ok(root) = serde_json::from_str::<Json>(text) else { return Vec::new() };
    let messages = match root {
        Json::Array(items) => items,
        other => vec![other],
    };
    let mut names = Vec::new();
    for message in &messages {
        let Json::Object(message) = message else { continue };
        let Some(Json::Object(result)) = member(reader, message, "result") else { continue };
        for (list, name_key) in LISTS {
            let Some(Json::Array(items)) = member(reader, result, list) else { continue };
            for item in items {
                if let Json::Object(item) = item
                    && let Some(name) = string(member(reader, item, name_key))
                {
                    names.push(name);
                }
            }
        }
    }
    names
}

/// How SSE clients cut a stream into lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseReader {
    /// WHATWG (eventsource-parser, the TypeScript SDK): CR, LF, CRLF; one
    /// leading BOM dropped.
    Whatwg,
    /// Go's bufio readers (mcp-go, go-sdk): LF only, trailing CRs trimmed.
    GoBufio,
    /// Python's `str.splitlines` (httpx-sse before 0.4.2): CR, LF, CRLF,
    /// VT, FF, FS, GS, RS, NEL, U+2028, U+2029; no BOM handling.
    PythonSplitlines,
}

impl SseReader {
    pub const ALL: [SseReader; 3] = [SseReader::Whatwg, SseReader::GoBufio, SseReader::PythonSplitlines];
}

/// The `data` of every event a reader dispatches from `stream`.
pub fn sse_datas(reader: SseReader, stream: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(stream);
    let lines: Vec<String> = match reader {
        SseReader::Whatwg => {
            let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
            text.replace("\r\n", "\n").replace('\r', "\n").split('\n').map(str::to_owned).collect()
        }
        SseReader::GoBufio => text.split('\n').map(|l| l.trim_end_matches(['\r', '\n']).to_owned()).collect(),
        SseReader::PythonSplitlines => {
            let text = text.replace("\r\n", "\n");
            text.split([
                '\n', '\r', '\u{b}', '\u{c}', '\u{1c}', '\u{1d}', '\u{1e}', '\u{85}', '\u{2028}', '\u{2029}',
            ])
            .map(str::to_owned)
            .collect()
        }
    };
    // The last piece has no line ending: an unfinished line, never read.
    let complete = lines.len().saturating_sub(1);
    let mut datas = Vec::new();
    let mut data: Option<String> = None;
    for line in &lines[..complete] {
        if line.is_empty() {
            datas.extend(data.take());
            continue;
        }
        if let Some(value) = line.strip_prefix("data:") {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match &mut data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => data = Some(value.to_owned()),
            }
        }
    }
    datas
}
