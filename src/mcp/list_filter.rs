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
                let mut seen: HashSet<Cow<'de, str>> = HashSet::new();
                while let Some(key) = map.next_key::<CowStr<'de>>()? {
                    if members.len() == keys::MAX_MEMBERS {
                        return Err(de::Error::custom(format_args!(
                            "an object has more than {} members",
                            keys::MAX_MEMBERS
                        )));
                    }
                    if !seen.insert(key.0.clone()) {
                        return Err(de::Error::custom(format_args!("duplicate key `{}`", key.0)));
                    }
                    members.push((key.0, map.next_value()?));
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

fn folded(key: &str, name: &str) -> Unfilterable {
    let shown: String = key.chars().take(64).collect();
    Unfilterable(format!("key `{shown}` differs from `{name}` only in case"))
}

fn filter_object(
    text: &[u8],
    keep: &mut dyn FnMut(ListKind, &str) -> bool,
    removed: &mut Vec<Removed>,
) -> Result<Outcome, Unfilterable> {
    let envelope = members(text)?;
    let mut result = None;
    for (key, value) in &envelope.0 {
        match keys::classify(key, &["result"]) {
            Member::Exact(_) => result = Some(*value),
            Member::Folded(_) => return Err(folded(key, "result")),
            Member::Other => {}
        }
    }
    let Some(result) = result else {
        return Ok(Outcome::Unchanged);
    };
    if !result.get().starts_with('{') {
        return Ok(Outcome::Unchanged);
    }
    let result_members = members(result.get().as_bytes())?;
    let mut replaced: Vec<(usize, Vec<u8>)> = Vec::new();
    for (index, (key, value)) in result_members.0.iter().enumerate() {
        let (_, kind, name_key) = match keys::classify(key, &LIST_MEMBER_NAMES) {
            Member::Exact(i) => &LIST_MEMBERS[i],
            Member::Folded(i) => return Err(folded(key, LIST_MEMBER_NAMES[i])),
            Member::Other => continue,
        };
        if let Some(list) = filter_list(value, *kind, name_key, keep, removed)? {
            replaced.push((index, list));
        }
    }
    if replaced.is_empty() {
        return Ok(Outcome::Unchanged);
    }
    let mut new_result = Vec::with_capacity(result.get().len());
    new_result.push(b'{');
    for (index, (key, value)) in result_members.0.iter().enumerate() {
        if index > 0 {
            new_result.push(b',');
        }
        write_key(&mut new_result, key);
        match replaced.iter().find(|(i, _)| *i == index) {
            Some((_, list)) => new_result.extend_from_slice(list),
            None => new_result.extend_from_slice(value.get().as_bytes()),
        }
    }
    new_result.push(b'}');

    let mut out = Vec::with_capacity(text.len());
    out.push(b'{');
    for (index, (key, value)) in envelope.0.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_key(&mut out, key);
        if key == "result" {
            out.extend_from_slice(&new_result);
        } else {
            out.extend_from_slice(value.get().as_bytes());
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

/// The filtered list, or `None` when every item stays.
fn filter_list(
    value: &RawValue,
    kind: ListKind,
    name_key: &str,
    keep: &mut dyn FnMut(ListKind, &str) -> bool,
    removed: &mut Vec<Removed>,
) -> Result<Option<Vec<u8>>, Unfilterable> {
    let items: Vec<&RawValue> = serde_json::from_str(value.get())
        .map_err(|_| Unfilterable(format!("`{}` is not an array", kind.list_member())))?;
    let mut kept: Vec<&RawValue> = Vec::with_capacity(items.len());
    for item in &items {
        let item_members = members(item.get().as_bytes())?;
        let mut name = None;
        for (key, value) in &item_members.0 {
            match keys::classify(key, &[name_key]) {
                Member::Exact(_) => name = serde_json::from_str::<Cow<'_, str>>(value.get()).ok(),
                Member::Folded(_) => return Err(folded(key, name_key)),
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
    let mut out = Vec::with_capacity(value.get().len());
    out.push(b'[');
    for (i, item) in kept.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item.get().as_bytes());
    }
    out.push(b']');
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
