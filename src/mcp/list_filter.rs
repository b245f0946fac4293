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

use super::keys::{self, Member};
use super::scan::{Scanner, SyntaxError};
use crate::policy::ListKind;
use std::borrow::Cow;
use std::collections::HashSet;

/// Whether `text` could hold a list result. A cheap scan run before any
/// parse. A list result needs a list member (`tools`, `prompts`,
/// `resources`, `resourceTemplates`) as a key, which every reader of UTF-8
/// JSON finds spelled in the bytes: literally in any letter case (readers
/// such as Go's match keys case-insensitively), with a `\u` escape, or with
/// `ſ`, which such readers fold to `s`. Text with none of these cannot be
/// a list result in anyone's reading.
pub fn may_hold_list(text: &[u8]) -> bool {
    // Two vectorised scans, not a look at every byte. `ſ` anywhere is
    // taken as a sign; so is `\u`. Every list member holds an `o`, at a
    // known place in each spelling, so the words are looked for only
    // around the `o`s (and the `\`s).
    const AROUND_O: [(&[u8], usize); 4] = [(b"tools", 1), (b"tools", 2), (b"prompts", 2), (b"resource", 3)];
    if memchr::memchr_iter(0xc5, text).any(|at| text.get(at + 1) == Some(&0xbf)) {
        return true;
    }
    memchr::memchr3_iter(b'o', b'O', b'\\', text).any(|at| {
        if text.get(at) == Some(&b'\\') {
            return text.get(at + 1) == Some(&b'u');
        }
        AROUND_O.iter().any(|(word, o)| {
            at.checked_sub(*o)
                .and_then(|start| text.get(start..start + word.len()))
                .is_some_and(|found| found.eq_ignore_ascii_case(word))
        })
    })
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

impl From<SyntaxError> for Unfilterable {
    fn from(error: SyntaxError) -> Self {
        Unfilterable(format!("not JSON: {error}"))
    }
}

type Keep<'k> = dyn FnMut(ListKind, &str) -> bool + 'k;

/// Filters every list result in `text`, keeping the items `keep` allows.
/// `keep` is asked once about each item, in order, so it can count and
/// note what goes.
///
/// One pass over the text (see [`super::scan`]): the envelope's members,
/// `result`'s members and each list item's members are read as keys and
/// value spans, so a kept item is copied from the text, never read again.
pub fn filter(text: &[u8], keep: &mut Keep<'_>) -> Result<Outcome, Unfilterable> {
    let mut scanner = Scanner::new(text)?;
    if scanner.peek() != Some(b'[') {
        let message = message(&mut scanner, keep)?;
        scanner.end()?;
        return Ok(match message {
            Some(members) => Outcome::Rewritten(write_message(&members)),
            None => Outcome::Unchanged,
        });
    }
    // A batch: each message, as its bytes or as rewritten.
    let mut parts: Vec<Cow<'_, [u8]>> = Vec::new();
    let mut changed = false;
    scanner.begin_array()?;
    let mut first = true;
    while scanner.next_element(first)? {
        first = false;
        let start = scanner.mark();
        match message(&mut scanner, keep)? {
            Some(members) => {
                changed = true;
                parts.push(Cow::Owned(write_message(&members)));
            }
            None => parts.push(Cow::Borrowed(scanner.since(start))),
        }
    }
    scanner.end()?;
    if !changed {
        return Ok(Outcome::Unchanged);
    }
    let mut out = Vec::with_capacity(list_length(&parts));
    write_list(&mut out, &parts);
    Ok(Outcome::Rewritten(out))
}

/// Keys seen in one object, to refuse duplicates: a short list while the
/// object is small (most are), a hash set past that, so the check is linear.
#[derive(Default)]
struct Seen<'a> {
    few: Vec<Cow<'a, str>>,
    many: HashSet<Cow<'a, str>>,
    count: usize,
}

impl<'a> Seen<'a> {
    const FEW: usize = 16;

    /// Forgets the keys of the last object, keeping the space.
    fn clear(&mut self) {
        self.few.clear();
        self.many.clear();
        self.count = 0;
    }

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
fn next_key<'a>(
    scanner: &mut Scanner<'a>,
    seen: &mut Seen<'a>,
) -> Result<Option<Cow<'a, str>>, Unfilterable> {
    let Some(key) = scanner.next_key(seen.count == 0)? else { return Ok(None) };
    if seen.count == keys::MAX_MEMBERS {
        return Err(Unfilterable(format!("an object has more than {} members", keys::MAX_MEMBERS)));
    }
    seen.count += 1;
    if !seen.insert(key.clone()) {
        let shown: String = key.chars().take(64).collect();
        return Err(Unfilterable(format!("duplicate key `{shown}`")));
    }
    Ok(Some(key))
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

/// A member's value as read: its bytes; for the envelope's `result` when it
/// is an object, its members; for a list in it, the list filtered.
enum Slot<'a> {
    Raw(&'a [u8]),
    Result(Vec<(Cow<'a, str>, Slot<'a>)>),
    /// A list member of `result`: its bytes, and the items kept when an
    /// item had to go.
    List(&'a [u8], Option<Vec<&'a [u8]>>),
}

type Members<'a> = Vec<(Cow<'a, str>, Slot<'a>)>;

/// Reads one message (an object). Its members when a list in it was
/// rewritten, `None` when it stays as it came.
fn message<'a>(scanner: &mut Scanner<'a>, keep: &mut Keep<'_>) -> Result<Option<Members<'a>>, Unfilterable> {
    if scanner.peek() != Some(b'{') {
        return Err(Unfilterable("a message is not a JSON object".into()));
    }
    scanner.begin_object()?;
    let mut members: Members<'a> = Vec::new();
    let mut seen = Seen::default();
    let mut changed = false;
    while let Some(key) = next_key(scanner, &mut seen)? {
        let slot = match keys::classify(&key, &["result"]) {
            Member::Exact(_) if scanner.peek() == Some(b'{') => {
                let (members, rewritten) = result(scanner, keep)?;
                changed |= rewritten;
                Slot::Result(members)
            }
            Member::Folded(_) => return Err(folded(&key, "result")),
            Member::Exact(_) | Member::Other => Slot::Raw(scanner.skip_value()?),
        };
        members.push((key, slot));
    }
    Ok(changed.then_some(members))
}

/// Reads `result`, an object, filtering the lists in it; whether one of
/// them was rewritten.
fn result<'a>(scanner: &mut Scanner<'a>, keep: &mut Keep<'_>) -> Result<(Members<'a>, bool), Unfilterable> {
    scanner.begin_object()?;
    let mut members: Members<'a> = Vec::new();
    let mut seen = Seen::default();
    let mut changed = false;
    while let Some(key) = next_key(scanner, &mut seen)? {
        let slot = match keys::classify(&key, &LIST_MEMBER_NAMES) {
            Member::Exact(i) => {
                let start = scanner.mark();
                let filtered = list(scanner, i, keep)?;
                changed |= filtered.is_some();
                Slot::List(scanner.since(start), filtered)
            }
            Member::Folded(i) => return Err(folded(&key, LIST_MEMBER_NAMES[i])),
            Member::Other => Slot::Raw(scanner.skip_value()?),
        };
        members.push((key, slot));
    }
    Ok((members, changed))
}

/// Reads a list, deciding on each item; the list rewritten, or `None`
/// when every item stays.
fn list<'a>(
    scanner: &mut Scanner<'a>,
    index: usize,
    keep: &mut Keep<'_>,
) -> Result<Option<Vec<&'a [u8]>>, Unfilterable> {
    let (member, kind, name_key) = LIST_MEMBERS[index];
    if scanner.peek() != Some(b'[') {
        return Err(Unfilterable(format!("`{member}` is not an array")));
    }
    scanner.begin_array()?;
    let mut kept: Vec<&'a [u8]> = Vec::new();
    let (mut count, mut first) = (0usize, true);
    // One set of keys for every item in turn.
    let mut seen = Seen::default();
    while scanner.next_element(first)? {
        first = false;
        count += 1;
        let start = scanner.mark();
        let name = item_name(scanner, &mut seen, member, name_key)?;
        if keep(kind, &name) {
            kept.push(scanner.since(start));
        }
    }
    if kept.len() == count {
        return Ok(None);
    }
    Ok(Some(kept))
}

/// Reads one list item, an object, for its name.
fn item_name<'a>(
    scanner: &mut Scanner<'a>,
    seen: &mut Seen<'a>,
    member: &str,
    name_key: &str,
) -> Result<Cow<'a, str>, Unfilterable> {
    let no_name = || Unfilterable(format!("an item of `{member}` has no string `{name_key}`"));
    if scanner.peek() != Some(b'{') {
        return Err(Unfilterable(format!("an item of `{member}` is not an object")));
    }
    scanner.begin_object()?;
    seen.clear();
    let mut name = None;
    while let Some(key) = next_key(scanner, seen)? {
        match keys::classify(&key, &[name_key]) {
            Member::Exact(_) => name = Some(scanner.string_or_skip()?.ok_or_else(no_name)?),
            Member::Folded(_) => return Err(folded(&key, name_key)),
            Member::Other => {
                scanner.skip_value()?;
            }
        }
    }
    name.ok_or_else(no_name)
}

/// A message rebuilt from its members: keys as JSON strings, values as
/// their bytes, kept items in place of the lists they came in. Written
/// once, into a buffer sized for it.
fn write_message(members: &Members<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(members_length(members));
    write_members(&mut out, members);
    out
}

/// The length of `members` written, keys counted as they are when they
/// need no escapes (the buffer grows for the rare key that does).
fn members_length(members: &Members<'_>) -> usize {
    2 + members
        .iter()
        .map(|(key, slot)| {
            let value = match slot {
                Slot::Raw(bytes) | Slot::List(bytes, None) => bytes.len(),
                Slot::List(_, Some(items)) => list_length(items),
                Slot::Result(members) => members_length(members),
            };
            key.len() + 4 + value
        })
        .sum::<usize>()
}

fn write_members(out: &mut Vec<u8>, members: &Members<'_>) {
    out.push(b'{');
    for (index, (key, slot)) in members.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        // serde_json writes a string as valid JSON; a Vec<u8> writer cannot fail.
        if serde_json::to_writer(&mut *out, key).is_err() {
            out.extend_from_slice(b"\"\"");
        }
        out.push(b':');
        match slot {
            Slot::Raw(bytes) | Slot::List(bytes, None) => out.extend_from_slice(bytes),
            Slot::List(_, Some(items)) => write_list(out, items),
            Slot::Result(members) => write_members(out, members),
        }
    }
    out.push(b'}');
}

/// The length of `[a,b,…]` of the given parts.
fn list_length<T: AsRef<[u8]>>(parts: &[T]) -> usize {
    2 + parts.iter().map(|part| part.as_ref().len() + 1).sum::<usize>()
}

/// Writes `[a,b,…]` of the given parts.
fn write_list<T: AsRef<[u8]>>(out: &mut Vec<u8>, parts: &[T]) {
    out.push(b'[');
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(part.as_ref());
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, allowed: &[&str]) -> (Result<Outcome, Unfilterable>, Vec<(ListKind, String)>) {
        let mut removed = Vec::new();
        let outcome = filter(text.as_bytes(), &mut |kind, name| {
            let keep = allowed.contains(&name);
            if !keep {
                removed.push((kind, name.to_owned()));
            }
            keep
        });
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
        assert_eq!(removed, vec![(ListKind::Tool, "b".to_owned())]);
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

    /// The prescan's definition, spelled out slowly.
    fn holds_a_sign(text: &[u8]) -> bool {
        let within = |needle: &[u8], fold: bool| {
            text.windows(needle.len())
                .any(|w| if fold { w.eq_ignore_ascii_case(needle) } else { w == needle })
        };
        within(b"tools", true)
            || within(b"prompts", true)
            || within(b"resource", true)
            || within(b"\\u", false)
            || within("ſ".as_bytes(), false)
    }

    proptest::proptest! {
        #[test]
        fn the_prescan_finds_every_sign_of_a_list(
            pieces in proptest::collection::vec(proptest::sample::select(vec![
                &b"t"[..], b"T", b"o", b"O", b"l", b"s", b"S", b"p", b"P", b"r", b"R", b"m", b"e", b"u", b"c",
                b"\\", b"\xc5", b"\xbf", b"\"", b"{", b":", b"tool", b"prompt", b"resourc", b"\xc5\xbf",
            ]), 0..40),
        ) {
            let text = pieces.concat();
            proptest::prop_assert_eq!(may_hold_list(&text), holds_a_sign(&text), "{:?}", String::from_utf8_lossy(&text));
        }
    }
}
