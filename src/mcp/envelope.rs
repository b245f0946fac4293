//! The JSON-RPC envelope of a client message, parsed only as deep as policy
//! needs: `jsonrpc`, `id`, `method`, and of `params` only `name`, `uri`,
//! `cursor`, `taskId` and `protocolVersion`. Everything else is skipped (but
//! still checked to be well-formed JSON) and reaches the upstream as the
//! original bytes.
//!
//! Why a hand-written visitor rather than a derived struct: a derived struct
//! silently keeps the last of two duplicate keys, while an upstream parser
//! may keep the first. A message such as
//! `{"method":"tools/list","method":"tools/call",…}` would then be judged as
//! one method and executed as another. Every key of the envelope, and the
//! keys of `params` that policy reads, are therefore checked for duplicates,
//! after JSON unescaping (`"\u006dethod"` is `"method"`); and a key that
//! folds onto one of them (`"Method"`, `"paramſ"`) is refused too, because
//! a case-insensitive upstream reads it as that member (see [`keys`]).

use super::keys::{self, Member};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

/// What a client POSTed: one message or, under protocol 2025-03-26, a batch.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "one Payload lives on the stack per request; boxing the common case would allocate per request"
)]
pub enum Payload<'a> {
    Single(Message<'a>),
    Batch(Vec<Message<'a>>),
}

impl<'a> Payload<'a> {
    pub fn messages(&self) -> &[Message<'a>] {
        match self {
            Payload::Single(m) => std::slice::from_ref(m),
            Payload::Batch(ms) => ms,
        }
    }

    pub fn is_batch(&self) -> bool {
        matches!(self, Payload::Batch(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Has a method and an id: expects a response.
    Request,
    /// Has a method, no id.
    Notification,
    /// A client's answer to a server request (sampling, elicitation, roots).
    Response,
}

/// One JSON-RPC message, borrowing from the request body.
#[derive(Debug)]
pub struct Message<'a> {
    pub kind: Kind,
    /// The id exactly as sent, to echo back in a refusal.
    pub id: Option<Cow<'a, RawValue>>,
    pub method: Option<Cow<'a, str>>,
    pub params: Params<'a>,
}

impl Message<'_> {
    pub fn method(&self) -> Option<&str> {
        self.method.as_deref()
    }

    pub fn id(&self) -> Option<&RawValue> {
        self.id.as_deref()
    }

    /// The same message owning its text, to outlive the body it was read
    /// from (a large body is parsed off the runtime's workers).
    pub fn into_owned(self) -> Message<'static> {
        Message {
            kind: self.kind,
            id: self.id.map(|id| Cow::Owned(id.into_owned())),
            method: self.method.map(|m| Cow::Owned(m.into_owned())),
            params: self.params.into_owned(),
        }
    }
}

impl Payload<'_> {
    /// The same payload owning its text (see [`Message::into_owned`]).
    pub fn into_owned(self) -> Payload<'static> {
        match self {
            Payload::Single(message) => Payload::Single(message.into_owned()),
            Payload::Batch(messages) => {
                Payload::Batch(messages.into_iter().map(Message::into_owned).collect())
            }
        }
    }
}

/// The few members of `params` that policy and the transport rules read.
#[derive(Debug, Default)]
pub struct Params<'a> {
    pub name: Option<Field<'a>>,
    pub uri: Option<Field<'a>>,
    pub cursor: Option<Field<'a>>,
    pub task_id: Option<Field<'a>>,
    pub protocol_version: Option<Field<'a>>,
    /// `completion/complete` names what it completes in `params.ref`.
    pub reference: Option<Reference<'a>>,
}

impl Params<'_> {
    fn into_owned(self) -> Params<'static> {
        let own = |field: Option<Field<'_>>| field.map(Field::into_owned);
        Params {
            name: own(self.name),
            uri: own(self.uri),
            cursor: own(self.cursor),
            task_id: own(self.task_id),
            protocol_version: own(self.protocol_version),
            reference: self.reference.map(|r| Reference {
                kind: own(r.kind),
                name: own(r.name),
                uri: own(r.uri),
            }),
        }
    }
}

/// `params.ref` of `completion/complete`: `{"type":"ref/prompt","name":…}`
/// or `{"type":"ref/resource","uri":…}`.
#[derive(Debug, Default)]
pub struct Reference<'a> {
    pub kind: Option<Field<'a>>,
    pub name: Option<Field<'a>>,
    pub uri: Option<Field<'a>>,
}

/// A params member that policy reads: a string, or some other JSON value
/// (which no MCP method uses there, and which policy treats as no name).
#[derive(Debug, PartialEq, Eq)]
pub enum Field<'a> {
    Str(Cow<'a, str>),
    NotString,
}

impl Field<'_> {
    fn into_owned(self) -> Field<'static> {
        match self {
            Field::Str(s) => Field::Str(Cow::Owned(s.into_owned())),
            Field::NotString => Field::NotString,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Field::Str(s) => Some(s),
            Field::NotString => None,
        }
    }
}

/// Why a body is not an acceptable JSON-RPC payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Not JSON at all (JSON-RPC -32700).
    #[error("Parse error: {0}")]
    Parse(String),
    /// JSON, but not a valid JSON-RPC message (JSON-RPC -32600).
    #[error("Invalid Request: {0}")]
    Invalid(String),
}

/// Parses a POST body. The whole body must be one JSON value.
pub fn parse(body: &[u8]) -> Result<Payload<'_>, EnvelopeError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let parsed = if first == Some(&b'[') {
        serde_json::from_slice::<Vec<Message<'_>>>(body).map(Payload::Batch)
    } else {
        serde_json::from_slice::<Message<'_>>(body).map(Payload::Single)
    };
    match parsed {
        Ok(Payload::Batch(messages)) if messages.is_empty() => {
            Err(EnvelopeError::Invalid("an empty batch is not a request".into()))
        }
        Ok(payload) => Ok(payload),
        // A data error may be met before a syntax error further on; only a
        // body that is JSON throughout is an invalid request rather than a
        // parse error. This second pass runs on the error path alone.
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            match serde_json::from_slice::<IgnoredAny>(body) {
                Ok(_) => Err(EnvelopeError::Invalid(e.to_string())),
                Err(syntax) => Err(EnvelopeError::Parse(syntax.to_string())),
            }
        }
        Err(e) => Err(EnvelopeError::Parse(e.to_string())),
    }
}

/// A JSON string that borrows when it has no escapes (object keys
/// included, after unescaping).
pub(crate) struct CowStr<'a>(pub(crate) Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Field<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Owned(v)))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Field::NotString)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Field::NotString)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Field::NotString)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Field::NotString)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Field::NotString)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Field::NotString)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Field::NotString)
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// The error for a key that a case-insensitive upstream reads as `name`.
fn folded<E: de::Error>(key: &str, name: &str, path: &str) -> E {
    let shown: String = key.chars().take(64).collect();
    E::custom(format_args!(
        "key `{shown}` differs from `{path}{name}` only in case; refused because case-insensitive upstreams read it as `{name}`"
    ))
}

/// Counts an object's members, refusing one past [`keys::MAX_MEMBERS`].
fn count_member<E: de::Error>(count: &mut usize) -> Result<(), E> {
    *count += 1;
    if *count > keys::MAX_MEMBERS {
        return Err(E::custom(format_args!(
            "an object of the message has more than {} members",
            keys::MAX_MEMBERS
        )));
    }
    Ok(())
}

/// Fills `slot` with the value of `{path}{key}`, refusing it twice (the
/// key's path is spelled out on that error alone).
fn set_once<T, E: de::Error>(slot: &mut Option<T>, path: &str, key: &str, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::custom(format_args!("duplicate key `{path}{key}` in the JSON-RPC message")));
    }
    *slot = Some(value);
    Ok(())
}

/// The members of `params` that policy reads, in the order of [`Params`].
const PARAMS: [&str; 6] = ["name", "uri", "cursor", "taskId", "protocolVersion", "ref"];
/// The members of `params.ref`.
const REFERENCE: [&str; 3] = ["type", "name", "uri"];
/// The members of the envelope.
const ENVELOPE: [&str; 6] = ["jsonrpc", "id", "method", "params", "result", "error"];

impl<'de> Deserialize<'de> for Params<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Params<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("params as an object or an array")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut params = Params::default();
                let mut count = 0;
                while let Some(CowStr(key)) = map.next_key()? {
                    count_member(&mut count)?;
                    let slot = match keys::classify(&key, &PARAMS) {
                        Member::Exact(0) => &mut params.name,
                        Member::Exact(1) => &mut params.uri,
                        Member::Exact(2) => &mut params.cursor,
                        Member::Exact(3) => &mut params.task_id,
                        Member::Exact(4) => &mut params.protocol_version,
                        Member::Exact(_) => {
                            let reference: Reference<'de> = map.next_value()?;
                            set_once(&mut params.reference, "params.", "ref", reference)?;
                            continue;
                        }
                        Member::Folded(i) => return Err(folded(&key, PARAMS[i], "params.")),
                        Member::Other => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    let value: Field<'de> = map.next_value()?;
                    set_once(slot, "params.", &key, value)?;
                }
                Ok(params)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Params::default())
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Reference<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Reference<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a reference object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut reference = Reference::default();
                let mut count = 0;
                while let Some(CowStr(key)) = map.next_key()? {
                    count_member(&mut count)?;
                    let slot = match keys::classify(&key, &REFERENCE) {
                        Member::Exact(0) => &mut reference.kind,
                        Member::Exact(1) => &mut reference.name,
                        Member::Exact(_) => &mut reference.uri,
                        Member::Folded(i) => return Err(folded(&key, REFERENCE[i], "params.ref.")),
                        Member::Other => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    let value: Field<'de> = map.next_value()?;
                    set_once(slot, "params.ref.", &key, value)?;
                }
                Ok(reference)
            }
        }
        deserializer.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for Message<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MessageVisitor)
    }
}

struct MessageVisitor;

impl<'de> Visitor<'de> for MessageVisitor {
    type Value = Message<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON-RPC message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut jsonrpc: Option<CowStr<'de>> = None;
        let mut id: Option<&'de RawValue> = None;
        let mut method: Option<CowStr<'de>> = None;
        let mut params: Option<Params<'de>> = None;
        let mut result: Option<()> = None;
        let mut error: Option<()> = None;
        let mut other_keys: HashSet<Cow<'de, str>> = HashSet::new();
        let mut count = 0;

        while let Some(CowStr(key)) = map.next_key()? {
            count_member(&mut count)?;
            match keys::classify(&key, &ENVELOPE) {
                Member::Exact(0) => set_once(&mut jsonrpc, "", "jsonrpc", map.next_value()?)?,
                Member::Exact(1) => set_once(&mut id, "", "id", map.next_value()?)?,
                Member::Exact(2) => set_once(&mut method, "", "method", map.next_value()?)?,
                Member::Exact(3) => set_once(&mut params, "", "params", map.next_value()?)?,
                Member::Exact(4) => {
                    map.next_value::<IgnoredAny>()?;
                    set_once(&mut result, "", "result", ())?;
                }
                Member::Exact(_) => {
                    map.next_value::<IgnoredAny>()?;
                    set_once(&mut error, "", "error", ())?;
                }
                Member::Folded(i) => return Err(folded(&key, ENVELOPE[i], "")),
                Member::Other => {
                    map.next_value::<IgnoredAny>()?;
                    if other_keys.contains(&key) {
                        return Err(de::Error::custom(format_args!(
                            "duplicate key `{key}` in the JSON-RPC message"
                        )));
                    }
                    other_keys.insert(key);
                }
            }
        }

        if jsonrpc.as_ref().map(|v| v.0.as_ref()) != Some("2.0") {
            return Err(de::Error::custom("`jsonrpc` must be \"2.0\""));
        }
        if let Some(raw) = id {
            check_id(raw, method.is_some())?;
        }
        let id = id.map(Cow::Borrowed);
        let kind = match (&method, &id, result.is_some(), error.is_some()) {
            (Some(_), _, false, false) if id.is_some() => Kind::Request,
            (Some(_), _, false, false) => Kind::Notification,
            (None, Some(_), true, false) | (None, Some(_), false, true) => Kind::Response,
            (Some(_), ..) => {
                return Err(de::Error::custom("a request cannot carry `result` or `error`"));
            }
            (None, ..) => {
                return Err(de::Error::custom(
                    "not a request (no `method`) nor a response (needs `id` and one of `result`/`error`)",
                ));
            }
        };
        Ok(Message { kind, id, method: method.map(|m| m.0), params: params.unwrap_or_default() })
    }
}

/// MCP: "Requests MUST include a string or integer ID" and "the ID MUST NOT
/// be null". Responses may carry null when the request could not be read.
fn check_id<E: de::Error>(raw: &RawValue, is_request: bool) -> Result<(), E> {
    match raw.get().as_bytes().first() {
        Some(b'"') => Ok(()),
        Some(b'-' | b'0'..=b'9') => Ok(()),
        Some(b'n') if !is_request => Ok(()),
        _ => Err(E::custom("`id` must be a string or an integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(body: &str) -> Message<'_> {
        match parse(body.as_bytes()) {
            Ok(Payload::Single(m)) => m,
            other => panic!("expected one message from {body}, got {other:?}"),
        }
    }

    fn invalid(body: &[u8]) -> String {
        match parse(body) {
            Err(EnvelopeError::Invalid(m)) => m,
            other => panic!("expected Invalid for {:?}, got {other:?}", String::from_utf8_lossy(body)),
        }
    }

    #[test]
    fn request_with_params() {
        let m = single(
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search","arguments":{"name":"x","q":[1,{"a":null}]}}}"#,
        );
        assert_eq!(m.kind, Kind::Request);
        assert_eq!(m.id().map(RawValue::get), Some("7"));
        assert_eq!(m.method(), Some("tools/call"));
        assert_eq!(m.params.name.as_ref().and_then(Field::as_str), Some("search"));
        assert!(m.params.uri.is_none());
    }

    #[test]
    fn escaped_names_are_unescaped() {
        let m = single(
            r#"{"jsonrpc":"2.0","id":"a","\u006dethod":"tools/call","params":{"na\u006de":"del\u0065te"}}"#,
        );
        assert_eq!(m.method(), Some("tools/call"));
        assert_eq!(m.params.name.as_ref().and_then(Field::as_str), Some("delete"));
    }

    #[test]
    fn notifications_and_responses() {
        assert_eq!(
            single(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).kind,
            Kind::Notification
        );
        assert_eq!(single(r#"{"jsonrpc":"2.0","id":3,"result":{}}"#).kind, Kind::Response);
        assert_eq!(
            single(r#"{"jsonrpc":"2.0","id":3,"error":{"code":1,"message":"x"}}"#).kind,
            Kind::Response
        );
    }

    #[test]
    fn duplicate_keys_are_refused() {
        assert!(
            invalid(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call"}"#)
                .contains("duplicate key `method`")
        );
        assert!(invalid(br#"{"jsonrpc":"2.0","id":1,"method":"x","\u006dethod":"y"}"#).contains("duplicate"));
        assert!(invalid(br#"{"jsonrpc":"2.0","id":1,"id":2,"method":"x"}"#).contains("duplicate key `id`"));
        assert!(
            invalid(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#)
                .contains("params.name")
        );
        assert!(
            invalid(br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a","uri":"b"}}"#)
                .contains("params.uri")
        );
        assert!(
            invalid(br#"{"jsonrpc":"2.0","id":1,"method":"x","extra":1,"extra":2}"#)
                .contains("duplicate key `extra`")
        );
    }

    #[test]
    fn keys_a_case_insensitive_upstream_would_read_are_refused() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","NAME":"delete_database"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"},"paramſ":{"name":"delete_database"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","Method":"tools/call"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"Name":"delete_database"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","n\u0061ME":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"ıd":2,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a","URI":"b"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"a","Name":"b"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"REF":{"type":"ref/prompt","name":"b"}}}"#,
        ] {
            assert!(invalid(body.as_bytes()).contains("only in case"), "{body}");
        }
        // Members policy does not read may use any case.
        single(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"NAME":"b","Name":1}}}"#,
        );
    }

    #[test]
    fn completion_references() {
        let m = single(
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"p"},"argument":{"name":"a","value":"x"}}}"#,
        );
        let reference = m.params.reference.as_ref();
        assert_eq!(reference.and_then(|r| r.kind.as_ref()).and_then(Field::as_str), Some("ref/prompt"));
        assert_eq!(reference.and_then(|r| r.name.as_ref()).and_then(Field::as_str), Some("p"));
        assert_eq!(m.params.name, None, "argument.name is not params.name");
        assert!(invalid(br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"a","name":"b"}}}"#).contains("params.ref.name"));
    }

    #[test]
    fn objects_policy_reads_have_a_bounded_size() {
        let many = |n: usize| (0..n).map(|i| format!(",\"k{i}\":0")).collect::<String>();
        single(&format!(r#"{{"jsonrpc":"2.0","id":1,"method":"x"{}}}"#, many(1000)));
        assert!(
            invalid(format!(r#"{{"jsonrpc":"2.0","id":1,"method":"x"{}}}"#, many(1100)).as_bytes())
                .contains("more than 1024")
        );
        let params = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{"a":0{}}}}}"#, many(1100));
        assert!(invalid(params.as_bytes()).contains("more than 1024"));
        // Arguments are not read: any size.
        single(&format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"a","arguments":{{"a":0{}}}}}}}"#,
            many(5000)
        ));
    }

    #[test]
    fn duplicates_deeper_in_arguments_are_not_policy_relevant() {
        single(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"k":1,"k":2}}}"#,
        );
    }

    #[test]
    fn malformed_json_is_a_parse_error() {
        for body in [
            &b""[..],
            b"{",
            br#"{"jsonrpc":"2.0","id":1,"method":"x""#,
            b"{} {}",
            b"\xff\xfe",
            b"{\"jsonrpc\":\"2.0\",\"method\":\"\xc3\x28\"}",
        ] {
            assert!(
                matches!(parse(body), Err(EnvelopeError::Parse(_))),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn valid_json_that_is_not_json_rpc_is_invalid() {
        invalid(b"5");
        invalid(b"\"tools/list\"");
        invalid(b"[]");
        invalid(b"[1]");
        invalid(br#"{"id":1,"method":"x"}"#);
        invalid(br#"{"jsonrpc":"1.0","id":1,"method":"x"}"#);
        invalid(br#"{"jsonrpc":"2.0","id":null,"method":"x"}"#);
        invalid(br#"{"jsonrpc":"2.0","id":{"a":1},"method":"x"}"#);
        invalid(br#"{"jsonrpc":"2.0","id":1,"method":5}"#);
        invalid(br#"{"jsonrpc":"2.0","id":1,"method":"x","result":{}}"#);
        invalid(br#"{"jsonrpc":"2.0","id":1}"#);
        invalid(br#"{"jsonrpc":"2.0","id":1,"method":"x","params":"s"}"#);
        invalid(br#"[{"jsonrpc":"2.0","id":1,"method":"x"},[]]"#);
    }

    #[test]
    fn batches() {
        let body = br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","method":"notifications/x"}]"#;
        let payload = parse(body).map_err(|e| e.to_string());
        let Ok(payload) = payload else { panic!("{payload:?}") };
        assert!(payload.is_batch());
        assert_eq!(payload.messages().len(), 2);
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let mut body = String::from(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":"#);
        body.push_str(&"[".repeat(100_000));
        assert!(parse(body.as_bytes()).is_err());
    }
}
