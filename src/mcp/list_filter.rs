//! Filtering of list results: `tools/list`, `prompts/list`,
//! `resources/list` and `resources/templates/list`.
//!
//! A message is rewritten only when an item must go. Then the envelope and
//! the result are rebuilt from their members' original bytes, in their
//! original order, with the list holding the original bytes of the items
//! kept: `nextCursor`, `_meta` and every unknown field survive untouched.
//! Anything the filter cannot read with certainty (not JSON, duplicate keys,
//! a list member that is not an array, an item whose name is not one
//! string, a key that a case-insensitive client would read as a member the
//! filter reads) is an error, and the caller refuses the message rather
//! than pass it on unfiltered.

use super::envelope::CowStr;
use super::keys::{self, Member};
use crate::policy::ListKind;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

/// Whether `text` could hold a list result. A cheap byte scan run before any
/// parse. A list result needs a list member (`tools`, `prompts`,
/// `resources`, `resourceTemplates`) as a key, which every reader of UTF-8
/// JSON finds spelled in the bytes: literally in any letter case (readers
/// such as Go's match keys case-insensitively), with a `\u` escape, or with
/// `ſ`, which such readers fold to `s`. Text with none of these cannot be
/// a list result in anyone's reading.
pub fn may_hold_list(text: &[u8]) -> bool {
    const NEEDLES: [&[u8]; 3] = [b"tools", b"prompts", b"resource"];
    const EXACT: [&[u8]; 2] = [b"\\u", "ſ".as_bytes()];
    NEEDLES.iter().any(|needle| contains_ignore_ascii_case(text, needle))
        || EXACT.iter().any(|needle| text.windows(needle.len()).any(|w| w == *needle))
}

fn contains_ignore_ascii_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

/// What filtering did to one message (a JSON-RPC object or a batch array).
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to remove: forward the original bytes.
    Unchanged,
    /// The message without the denied items.
    Rewritten(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("list result not filterable: {0}")]
pub struct Unfilterable(pub String);

/// An item removed from a list, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    pub kind: ListKind,
    pub name: String,
}

/// Filters every list result in `text`, keeping the items `keep` allows.
pub fn filter(
    text: &[u8],
    keep: &mut dyn FnMut(ListKind, &str) -> bool,
    removed: &mut Vec<Removed>,
) -> Result<Outcome, Unfilterable> {
    let first = text.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let items: Vec<&RawValue> = serde_json::from_slice(text).map_err(|e| Unfilterable(e.to_string()))?;
        let mut changed = false;
        let mut parts: Vec<Cow<'_, [u8]>> = Vec::with_capacity(items.len());
        for item in items {
            match filter_object(item.get().as_bytes(), keep, removed)? {
                Outcome::Unchanged => parts.push(Cow::Borrowed(item.get().as_bytes())),
                Outcome::Rewritten(bytes) => {
                    changed = true;
                    parts.push(Cow::Owned(bytes));
                }
            }
        }
        if !changed {
            return Ok(Outcome::Unchanged);
        }
        let mut out = Vec::with_capacity(text.len());
        out.push(b'[');
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(part);
        }
        out.push(b']');
        return Ok(Outcome::Rewritten(out));
    }
    filter_object(text, keep, removed)
}

/// Keys seen in one object, to refuse duplicates: a short list while the
/// object is small (most are), a hash set past that, so the check is linear.
#[derive(Default)]
struct Seen<'a> {
    few: Vec<Cow<'a, str>>,
    many: HashSet<Cow<'a, str>>,
}

impl<'a> Seen<'a> {
    const FEW: usize = 16;

    /// Whether `key` is new; records it.
    fn insert(&mut self, key: Cow<'a, str>) -> bool {
        if self.many.is_empty() {
            if self.few.contains(&key) {
                return false;
            }
            if self.few.len() < Self::FEW {
                self.few.push(key);
                return true;
            }
            self.many.extend(self.few.drain(..));
        }
        self.many.insert(key)
    }
}

/// The next key of an object, at most [`keys::MAX_MEMBERS`] of them and
/// none twice.
fn next_key<'de, A: MapAccess<'de>>(
    map: &mut A,
    seen: &mut Seen<'de>,
    count: &mut usize,
) -> Result<Option<Cow<'de, str>>, A::Error> {
    let Some(key) = map.next_key::<CowStr<'de>>()? else { return Ok(None) };
    if *count == keys::MAX_MEMBERS {
        return Err(de::Error::custom(format_args!("an object has more than {} members", keys::MAX_MEMBERS)));
    }
    *count += 1;
    if !seen.insert(key.0.clone()) {
        return Err(de::Error::custom(format_args!("duplicate key `{}`", key.0)));
    }
    Ok(Some(key.0))
}

/// Members of a JSON object in order, values as raw text; duplicate keys
/// are an error.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members: Vec<(Cow<'de, str>, &'de RawValue)> = Vec::new();
                let (mut seen, mut count) = (Seen::default(), 0);
                while let Some(key) = next_key(&mut map, &mut seen, &mut count)? {
                    members.push((key, map.next_value()?));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(V)
    }
}

fn members(text: &[u8]) -> Result<Members<'_>, Unfilterable> {
    serde_json::from_slice(text).map_err(|e| Unfilterable(e.to_string()))
}

const LIST_MEMBERS: [(&str, ListKind, &str); 4] = [
    ("tools", ListKind::Tool, "name"),
    ("prompts", ListKind::Prompt, "name"),
    ("resources", ListKind::Resource, "uri"),
    ("resourceTemplates", ListKind::ResourceTemplate, "uriTemplate"),
];

const LIST_MEMBER_NAMES: [&str; 4] = ["tools", "prompts", "resources", "resourceTemplates"];

fn folded(key: &str, name: &str) -> String {
    let shown: String = key.chars().take(64).collect();
    format!("key `{shown}` differs from `{name}` only in case")
}

/// A member's value as read in the one pass over a message: its bytes;
/// for the envelope's `result`, its members; for a list in it, its items.
enum Slot<'a> {
    Raw(&'a RawValue),
    /// `result`, an object.
    Result(Vec<(Cow<'a, str>, Slot<'a>)>),
    /// `result` of another type: nothing to filter.
    NotObject,
    /// A list member of `result` (an index into [`LIST_MEMBERS`]).
    List(usize, Vec<&'a RawValue>),
}

/// The members of one object of a message, read in one pass with the
/// objects and arrays below it that filtering needs: `result` in the
/// envelope, the lists in `result`. Every other value is kept as its bytes.
struct Level {
    result: bool,
}

impl<'de> de::DeserializeSeed<'de> for Level {
    type Value = Slot<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        if self.result { deserializer.deserialize_any(self) } else { deserializer.deserialize_map(self) }
    }
}

impl<'de> Visitor<'de> for Level {
    type Value = Slot<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members: Vec<(Cow<'de, str>, Slot<'de>)> = Vec::new();
        let (mut seen, mut count) = (Seen::default(), 0);
        while let Some(key) = next_key(&mut map, &mut seen, &mut count)? {
            let slot = if self.result {
                match keys::classify(&key, &LIST_MEMBER_NAMES) {
                    Member::Exact(i) => Slot::List(
                        i,
                        map.next_value::<Vec<&'de RawValue>>().map_err(|_| {
                            de::Error::custom(format_args!("`{}` is not an array", LIST_MEMBER_NAMES[i]))
                        })?,
                    ),
                    Member::Folded(i) => return Err(de::Error::custom(folded(&key, LIST_MEMBER_NAMES[i]))),
                    Member::Other => Slot::Raw(map.next_value()?),
                }
            } else {
                match keys::classify(&key, &["result"]) {
                    Member::Exact(_) => map.next_value_seed(Level { result: true })?,
                    Member::Folded(_) => return Err(de::Error::custom(folded(&key, "result"))),
                    Member::Other => Slot::Raw(map.next_value()?),
                }
            };
            members.push((key, slot));
        }
        Ok(Slot::Result(members))
    }

    // `result` of any other type is read and left alone.
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(Slot::NotObject)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Slot::NotObject)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Slot::NotObject)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Slot::NotObject)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Slot::NotObject)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Slot::NotObject)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Slot::NotObject)
    }
}

fn filter_object(
    text: &[u8],
    keep: &mut dyn FnMut(ListKind, &str) -> bool,
    removed: &mut Vec<Removed>,
) -> Result<Outcome, Unfilterable> {
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    let envelope = de::DeserializeSeed::deserialize(Level { result: false }, &mut deserializer)
        .and_then(|slot| deserializer.end().map(|()| slot))
        .map_err(|e| Unfilterable(e.to_string()))?;
    let Slot::Result(envelope) = envelope else {
        return Err(Unfilterable("not a JSON object".into()));
    };
    let Some(result_members) = envelope.iter().find_map(|(_, slot)| match slot {
        Slot::Result(members) => Some(members),
        _ => None,
    }) else {
        return Ok(Outcome::Unchanged);
    };
    let mut replaced: Vec<(usize, Vec<u8>)> = Vec::new();
    for (index, (_, slot)) in result_members.iter().enumerate() {
        if let Slot::List(i, items) = slot {
            let (_, kind, name_key) = &LIST_MEMBERS[*i];
            if let Some(list) = filter_list(items, *kind, name_key, keep, removed)? {
                replaced.push((index, list));
            }
        }
    }
    if replaced.is_empty() {
        return Ok(Outcome::Unchanged);
    }
    let mut out = Vec::with_capacity(text.len());
    out.push(b'{');
    for (index, (key, slot)) in envelope.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_key(&mut out, key);
        match slot {
            Slot::Raw(value) => out.extend_from_slice(value.get().as_bytes()),
            Slot::Result(members) => {
                out.push(b'{');
                for (index, (key, slot)) in members.iter().enumerate() {
                    if index > 0 {
                        out.push(b',');
                    }
                    write_key(&mut out, key);
                    match (replaced.iter().find(|(i, _)| *i == index), slot) {
                        (Some((_, list)), _) => out.extend_from_slice(list),
                        (None, Slot::Raw(value)) => out.extend_from_slice(value.get().as_bytes()),
                        (None, Slot::List(_, items)) => write_items(&mut out, items),
                        (None, Slot::Result(_) | Slot::NotObject) => {
                            return Err(Unfilterable("unexpected nesting".into()));
                        }
                    }
                }
                out.push(b'}');
            }
            // Only `result` is read as anything but bytes, and it was an object.
            Slot::NotObject | Slot::List(..) => return Err(Unfilterable("unexpected nesting".into())),
        }
    }
    out.push(b'}');
    Ok(Outcome::Rewritten(out))
}

fn write_key(out: &mut Vec<u8>, key: &str) {
    // serde_json writes a string as valid JSON; a Vec<u8> writer cannot fail.
    if serde_json::to_writer(&mut *out, key).is_err() {
        out.extend_from_slice(b"\"\"");
    }
    out.push(b':');
}

fn write_items(out: &mut Vec<u8>, items: &[&RawValue]) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item.get().as_bytes());
    }
    out.push(b']');
}

/// The filtered list, or `None` when every item stays.
fn filter_list(
    items: &[&RawValue],
    kind: ListKind,
    name_key: &str,
    keep: &mut dyn FnMut(ListKind, &str) -> bool,
    removed: &mut Vec<Removed>,
) -> Result<Option<Vec<u8>>, Unfilterable> {
    let mut kept: Vec<&RawValue> = Vec::with_capacity(items.len());
    for item in items {
        let item_members = members(item.get().as_bytes())?;
        let mut name = None;
        for (key, value) in &item_members.0 {
            match keys::classify(key, &[name_key]) {
                Member::Exact(_) => name = serde_json::from_str::<Cow<'_, str>>(value.get()).ok(),
                Member::Folded(_) => return Err(Unfilterable(folded(key, name_key))),
                Member::Other => {}
            }
        }
        match name {
            Some(name) if keep(kind, &name) => kept.push(item),
            Some(name) => removed.push(Removed { kind, name: name.into_owned() }),
            None => {
                return Err(Unfilterable(format!(
                    "an item of `{}` has no string `{name_key}`",
                    kind.list_member()
                )));
            }
        }
    }
    if kept.len() == items.len() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(items.iter().map(|i| i.get().len() + 1).sum());
    write_items(&mut out, &kept);
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, allowed: &[&str]) -> (Result<Outcome, Unfilterable>, Vec<Removed>) {
        let mut removed = Vec::new();
        let outcome = filter(text.as_bytes(), &mut |_, name| allowed.contains(&name), &mut removed);
        (outcome, removed)
    }

    fn rewritten(text: &str, allowed: &[&str]) -> String {
        match run(text, allowed).0 {
            Ok(Outcome::Rewritten(bytes)) => String::from_utf8(bytes).unwrap_or_default(),
            other => panic!("expected a rewrite, got {other:?}"),
        }
    }

    #[test]
    fn removes_denied_items_and_keeps_every_other_byte() {
        let text = r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"a","inputSchema":{"type":"object"}}, {"name":"b"},{"name":"c","x":[1, 2]}],"nextCursor":"abc","_meta":{"k":1}}}"#;
        assert_eq!(
            rewritten(text, &["a", "c"]),
            r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"a","inputSchema":{"type":"object"}},{"name":"c","x":[1, 2]}],"nextCursor":"abc","_meta":{"k":1}}}"#
        );
        let (_, removed) = run(text, &["a", "c"]);
        assert_eq!(removed, vec![Removed { kind: ListKind::Tool, name: "b".into() }]);
    }

    #[test]
    fn untouched_when_all_allowed_or_not_a_list() {
        let list = r#"{"jsonrpc":"2.0","id":1,"result":{"prompts":[{"name":"p"}]}}"#;
        assert_eq!(run(list, &["p"]).0, Ok(Outcome::Unchanged));
        let call = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"tools"}]}}"#;
        assert_eq!(run(call, &[]).0, Ok(Outcome::Unchanged));
        let note = r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#;
        assert_eq!(run(note, &[]).0, Ok(Outcome::Unchanged));
        let error = r#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"tools"}}"#;
        assert_eq!(run(error, &[]).0, Ok(Outcome::Unchanged));
    }

    #[test]
    fn resources_and_templates_by_uri() {
        let text = r#"{"jsonrpc":"2.0","id":1,"result":{"resources":[{"uri":"file:///a","name":"a"},{"uri":"file:///b","name":"b"}]}}"#;
        assert_eq!(
            rewritten(text, &["file:///b"]),
            r#"{"jsonrpc":"2.0","id":1,"result":{"resources":[{"uri":"file:///b","name":"b"}]}}"#
        );
        let text =
            r#"{"jsonrpc":"2.0","id":1,"result":{"resourceTemplates":[{"uriTemplate":"t/{x}","name":"t"}]}}"#;
        assert_eq!(rewritten(text, &[]), r#"{"jsonrpc":"2.0","id":1,"result":{"resourceTemplates":[]}}"#);
    }

    #[test]
    fn escaped_keys_and_names_are_read_as_json() {
        let text = r#"{"jsonrpc":"2.0","id":1,"re\u0073ult":{"tool\u0073":[{"n\u0061me":"de\u006cete"},{"name":"ok"}]}}"#;
        assert!(may_hold_list(text.as_bytes()));
        assert_eq!(
            rewritten(text, &["ok"]),
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"ok"}]}}"#
        );
    }

    #[test]
    fn batches_of_responses() {
        let text = r#"[{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"x"}]}}]"#;
        assert_eq!(
            rewritten(text, &[]),
            r#"[{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","id":2,"result":{"tools":[]}}]"#
        );
    }

    #[test]
    fn shapes_it_cannot_vouch_for_are_errors() {
        for text in [
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"}],"tools":[{"name":"b"}]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a","name":"b"}]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":{"name":"a"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"title":"no name"}]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":5}]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"}"#,
            r#"{"jsonrpc":"2.0","result":{},"result":{"tools":[]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"}],"Tools":[{"name":"b"}]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"toolſ":[{"name":"b"}]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a","NAME":"b"}]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"resources":[{"uri":"a","Uri":"b"}]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"Result":{"tools":[{"name":"b"}]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"resource_templates":[{"uriTemplate":"file:///s/{x}"}]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"resourceTemplates":[{"uri_template":"file:///s/{x}"}]}}"#,
        ] {
            assert!(run(text, &["a"]).0.is_err(), "{text}");
        }
    }

    #[test]
    fn duplicate_keys_are_found_in_objects_of_any_size() {
        for size in [2, 16, 17, 40] {
            let keys: Vec<String> = (0..size).map(|i| format!("\"k{i}\":{i}")).collect();
            let item = format!("{{\"name\":\"a\",{}}}", keys.join(","));
            let text = format!(r#"{{"jsonrpc":"2.0","id":1,"result":{{"tools":[{item},{{"name":"b"}}]}}}}"#);
            assert!(run(&text, &["a"]).0.is_ok(), "{size} distinct keys");
            let twice = item.replacen('}', ",\"k1\":0}", 1);
            let text = format!(r#"{{"jsonrpc":"2.0","id":1,"result":{{"tools":[{twice}]}}}}"#);
            assert!(run(&text, &["a"]).0.is_err(), "a repeat among {size} keys");
        }
    }

    #[test]
    fn prescan() {
        assert!(!may_hold_list(
            br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}"#
        ));
        assert!(may_hold_list(br#"{"result":{"tools":[]}}"#));
        assert!(may_hold_list(br#"{"result":{"resourceTemplates":[]}}"#));
        assert!(may_hold_list(br#"{"result":{"TOOLS":[]}}"#));
        assert!(may_hold_list(br#"{"result":{"Prompts":[]}}"#));
        assert!(may_hold_list("{\"result\":{\"toolſ\":[]}}".as_bytes()));
    }
}
