//! The list filter as serde_json reads a message, for the differential
//! test of toolgate's one-pass filter: the envelope, `result` and each list
//! item read as serde_json objects of raw values, duplicate keys and
//! case-folded names refused, each item read twice (as a raw value, then
//! its members). Slow and plain on purpose; it is what toolgate's own
//! filter must agree with, value for value and refusal for refusal.

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use toolgate::mcp::keys::{self, Member};

/// Names removed, in order, and the message filtered (`None`: unchanged),
/// or an error.
pub type Filtered = Result<(Option<String>, Vec<String>), String>;

struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// An object's members in order, values raw; duplicate keys and more than
/// `keys::MAX_MEMBERS` members refused.
struct Object<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Object<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Object<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                let mut seen = HashSet::new();
                while let Some(Key(key)) = map.next_key()? {
                    if members.len() == keys::MAX_MEMBERS {
                        return Err(de::Error::custom("too many members"));
                    }
                    if !seen.insert(key.clone()) {
                        return Err(de::Error::custom("duplicate key"));
                    }
                    members.push((key, map.next_value()?));
                }
                Ok(Object(members))
            }
        }
        deserializer.deserialize_map(V)
    }
}

const LISTS: [(&str, &str); 4] =
    [("tools", "name"), ("prompts", "name"), ("resources", "uri"), ("resourceTemplates", "uriTemplate")];

fn key_text(key: &str) -> String {
    serde_json::to_string(key).unwrap_or_default()
}

/// `{"key":value,…}` of members written as given.
fn object_text(members: &[(String, String)]) -> String {
    let members: Vec<String> =
        members.iter().map(|(key, value)| format!("{}:{value}", key_text(key))).collect();
    format!("{{{}}}", members.join(","))
}

/// Filters one message with `keep`, as serde_json reads it. The message
/// rewritten as toolgate writes it: members in order without white space
/// between them, keys as serde_json writes strings, values as they came
/// except the lists that lost an item, whose kept items are as they came.
fn message(
    text: &str,
    keep: &dyn Fn(&str) -> bool,
    removed: &mut Vec<String>,
) -> Result<Option<String>, String> {
    let envelope: Object<'_> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut changed = false;
    for (key, value) in &envelope.0 {
        let mut value_out = value.get().to_owned();
        match keys::classify(key, &["result"]) {
            Member::Folded(_) => return Err("result folded".into()),
            Member::Exact(_) if value.get().starts_with('{') => {
                let result: Object<'_> = serde_json::from_str(value.get()).map_err(|e| e.to_string())?;
                let mut result_out = Vec::new();
                let names: Vec<&str> = LISTS.iter().map(|(list, _)| *list).collect();
                for (key, value) in &result.0 {
                    let mut member = value.get().to_owned();
                    match keys::classify(key, &names) {
                        Member::Folded(_) => return Err("list folded".into()),
                        Member::Exact(i) => {
                            let items: Vec<&RawValue> =
                                serde_json::from_str(value.get()).map_err(|_| "not an array".to_owned())?;
                            let mut kept = Vec::new();
                            for item in &items {
                                let object: Object<'_> =
                                    serde_json::from_str(item.get()).map_err(|e| e.to_string())?;
                                let mut name = None;
                                for (key, value) in &object.0 {
                                    match keys::classify(key, &[LISTS[i].1]) {
                                        Member::Exact(_) => {
                                            name = serde_json::from_str::<String>(value.get()).ok();
                                        }
                                        Member::Folded(_) => return Err("name folded".into()),
                                        Member::Other => {}
                                    }
                                }
                                let name = name.ok_or("no name")?;
                                if keep(&name) {
                                    kept.push(item.get());
                                } else {
                                    removed.push(name);
                                }
                            }
                            if kept.len() < items.len() {
                                changed = true;
                                member = format!("[{}]", kept.join(","));
                            }
                        }
                        Member::Other => {}
                    }
                    result_out.push((key.to_string(), member));
                }
                value_out = object_text(&result_out);
            }
            Member::Exact(_) | Member::Other => {}
        }
        out.push((key.to_string(), value_out));
    }
    Ok(changed.then(|| object_text(&out)))
}

/// Filters a message or a batch of them.
pub fn filter(text: &[u8], keep: &dyn Fn(&str) -> bool) -> Filtered {
    let text = std::str::from_utf8(text).map_err(|e| e.to_string())?;
    let mut removed = Vec::new();
    if text.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('[') {
        let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut parts = Vec::new();
        let mut changed = false;
        for item in items {
            match message(item.get(), keep, &mut removed)? {
                Some(part) => {
                    changed = true;
                    parts.push(part);
                }
                None => parts.push(item.get().to_owned()),
            }
        }
        return Ok((changed.then(|| format!("[{}]", parts.join(","))), removed));
    }
    Ok((message(text, keep, &mut removed)?, removed))
}
