//! toolgate judges what the upstream will run. For generated envelopes full
//! of the keys that fooled proxies before (duplicates, escapes, case
//! variants, `ſ` and `ı`), toolgate either refuses the message or reads the
//! same method, `params.name` and `params.uri` as every reader modelled in
//! `readers`: last key wins (JavaScript, Python, serde_json), first key
//! wins, and Go's case-folding last match.

mod readers;

use proptest::prelude::*;
use proptest::test_runner::Config;
use readers::Reader;
use toolgate::mcp::envelope::{self, Field, Payload};

fn config() -> Config {
    let cases = std::env::var("TOOLGATE_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(1024);
    Config { cases, failure_persistence: None, ..Config::default() }
}

fn object(members: Vec<(&'static str, String)>) -> String {
    let body: Vec<String> = members.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", body.join(","))
}

fn params() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        4 => prop::sample::select(vec!["name", "uri", "arguments", "n\\u0061me"]),
        1 => prop::sample::select(vec!["NAME", "Name", "nAme", "URI", "Uri", "naMe", "ſ", "nameſ", "na_me"]),
    ];
    let value = prop::sample::select(vec![
        "\"echo\"".to_owned(),
        "\"delete_database\"".to_owned(),
        "\"file:///public/a\"".to_owned(),
        "{}".to_owned(),
        "7".to_owned(),
    ]);
    prop::collection::vec((key, value), 0..4).prop_map(object)
}

fn envelope_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        4 => prop::sample::select(vec!["method", "params", "extra", "meth\\u006fd"]),
        1 => prop::sample::select(vec!["Method", "METHOD", "paramſ", "PARAMS", "ıd", "ID", "jsonrpc", "ѕ"]),
    ];
    let method =
        prop::sample::select(vec!["\"tools/call\"", "\"tools/list\"", "\"ping\"", "\"resources/read\""]);
    let member = (key, method, params(), any::<bool>()).prop_map(|(key, method, params, pick)| {
        let value = match key {
            "method" | "Method" | "METHOD" | "meth\\u006fd" => method.to_owned(),
            "params" | "paramſ" | "PARAMS" => params,
            "jsonrpc" => "\"2.0\"".to_owned(),
            _ if pick => "1".to_owned(),
            _ => params,
        };
        (key, value)
    });
    prop::collection::vec(member, 0..5).prop_map(|mut members| {
        members.insert(0, ("id", "1".to_owned()));
        members.insert(0, ("jsonrpc", "\"2.0\"".to_owned()));
        object(members)
    })
}

fn text(field: Option<&Field<'_>>) -> Option<String> {
    field.and_then(Field::as_str).map(str::to_owned)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn toolgate_refuses_or_reads_what_every_upstream_reads(body in envelope_text()) {
        let Ok(Payload::Single(message)) = envelope::parse(body.as_bytes()) else {
            return Ok(());
        };
        let judged = (
            message.method().map(str::to_owned),
            text(message.params.name.as_ref()),
            text(message.params.uri.as_ref()),
        );
        for reader in Reader::ALL {
            let read = readers::envelope(reader, &body);
            prop_assert_eq!(read.as_ref(), Some(&judged), "{:?} reads {} otherwise", reader, body);
        }
    }
}

/// The cases that were live bypasses, by name.
#[test]
fn the_reported_bypasses_are_refused() {
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","NAME":"delete_database"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"},"paramſ":{"name":"delete_database"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","Method":"tools/call"}"#,
    ] {
        let go = readers::envelope(Reader::GoFold, body);
        let plain = readers::envelope(Reader::LastWins, body);
        assert_ne!(go, plain, "the models disagree on {body}");
        assert!(envelope::parse(body.as_bytes()).is_err(), "{body}");
    }
}
