//! Fuzzing on the stable toolchain (proptest) of the three parsers that read
//! outside input: the JSON-RPC envelope, the SSE splitter and the list
//! filter. None may panic; the splitter must not depend on how the stream
//! is cut; a filtered list must not show a denied name to any reader; and
//! the envelope must be judged as the upstreams read it (see
//! `tests/differential.rs`). The list filter's one-pass reader must agree
//! with serde_json on every text, refusal for refusal and byte for byte
//! (`readers/serde_filter.rs`). Time is linear in the input (last test).
//!
//! A few seconds in CI; longer on demand:
//! `TOOLGATE_FUZZ_CASES=100000 cargo test --release --test fuzz`.

mod readers;

use proptest::prelude::*;
use proptest::test_runner::Config;
use readers::{Reader, SseReader, list_names, serde_filter, sse_datas};
use std::time::{Duration, Instant};
use toolgate::mcp::envelope;
use toolgate::mcp::list_filter::{self, Outcome};
use toolgate::mcp::sse::Splitter;

fn config() -> Config {
    let cases = std::env::var("TOOLGATE_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(512);
    Config { cases, failure_persistence: None, ..Config::default() }
}

/// Bytes that look like JSON often enough to get past the first byte.
fn jsonish() -> impl Strategy<Value = Vec<u8>> {
    let atoms = prop::sample::select(vec![
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"",
        "\\",
        "\\u",
        "\\u0000",
        "\\ud800",
        "0",
        "-1",
        "1e999",
        "null",
        "true",
        "\"jsonrpc\"",
        "\"2.0\"",
        "\"id\"",
        "\"method\"",
        "\"Method\"",
        "\"params\"",
        "\"paramſ\"",
        "\"name\"",
        "\"NAME\"",
        "\"uri\"",
        "\"ref\"",
        "\"tools/call\"",
        "\"result\"",
        "\"tools\"",
        " ",
        "\n",
        "\u{feff}",
        "\u{2028}",
        "\u{0}",
        "é",
        "NaN",
    ]);
    prop::collection::vec(atoms, 0..64).prop_map(|parts| parts.concat().into_bytes())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_envelope_parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512), json in jsonish()) {
        let _ = envelope::parse(&bytes);
        let _ = envelope::parse(&json);
    }

    #[test]
    fn the_splitter_reads_a_stream_alike_however_it_is_cut(
        stream in prop::collection::vec(prop::sample::select(vec![
            "data: ", "data:", "event: message", ": comment", "id: 7", "\n", "\r\n", "\r", "{\"a\":1}",
            "\u{feff}", "x", "retry: 5", "\n\n",
        ]), 0..40).prop_map(|p| p.concat().into_bytes()),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let whole = events(&[&stream]);
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for point in points {
            chunks.push(&stream[start..point]);
            start = point;
        }
        chunks.push(&stream[start..]);
        prop_assert_eq!(events(&chunks), whole);
    }

    #[test]
    fn every_sse_reader_reads_what_toolgate_forwards_as_toolgate_read_it(
        stream in prop::collection::vec(prop::sample::select(vec![
            "data: ", "data:", "event: message", ": comment", "id: 7", "\n", "\r\n", "\r", "\n\n",
            "{\"a\":1}", "{\"tools\":[]}", "\u{feff}", "\u{b}", "\u{c}", "\u{1e}", "\u{85}", "\u{2028}",
            "ï»¿", "x", "foo: bar", "\"s\u{2028}t\"", "[1,", "2]",
        ]), 0..48).prop_map(|p| p.concat().into_bytes()),
    ) {
        let mut splitter = Splitter::new(1 << 20);
        splitter.push(&stream);
        let mut judged = Vec::new();
        let mut forwarded = Vec::new();
        while let Ok(Some(event)) = splitter.next_event() {
            if event.has_data {
                let data = String::from_utf8_lossy(&event.data).into_owned();
                // As the proxy does: data that may hold a list must be JSON
                // toolgate can read, or the stream ends there.
                let readable = serde_json::from_str::<serde_json::Value>(&data).is_ok();
                if list_filter::may_hold_list(data.as_bytes()) && !readable {
                    break;
                }
                judged.push(data);
            }
            forwarded.extend_from_slice(&event.forwardable());
        }
        // Whatever JSON a client reads from the forwarded bytes that could
        // hold a list is JSON toolgate judged.
        for reader in SseReader::ALL {
            for data in sse_datas(reader, &forwarded) {
                let is_json = serde_json::from_str::<serde_json::Value>(&data).is_ok();
                if is_json && list_filter::may_hold_list(data.as_bytes()) {
                    prop_assert!(judged.contains(&data), "{:?} reads {:?} from {:?}", reader, data, String::from_utf8_lossy(&forwarded));
                }
            }
        }
    }

    #[test]
    fn a_filtered_list_shows_no_reader_a_denied_name(text in list_result()) {
        // What the pre-scan waves through unparsed must hold no list for
        // any reader.
        if !list_filter::may_hold_list(text.as_bytes()) {
            for reader in Reader::ALL {
                prop_assert!(list_names(reader, &text).is_empty(), "{:?} reads a list in {}", reader, text);
            }
        }
        let outcome = list_filter::filter(text.as_bytes(), &mut |_, name| !name.contains("secret"));
        let forwarded = match outcome {
            Ok(Outcome::Unchanged) => text.clone(),
            Ok(Outcome::Rewritten(bytes)) => String::from_utf8(bytes).map_err(|e| TestCaseError::fail(e.to_string()))?,
            Err(_) => return Ok(()),
        };
        for reader in Reader::ALL {
            for name in list_names(reader, &forwarded) {
                prop_assert!(!name.contains("secret"), "{:?} reads `{}` in {}", reader, name, forwarded);
            }
        }
    }
}

/// Whether toolgate's filter and the serde_json reference agree on `text`:
/// both refuse it, or both forward the same bytes having removed the same
/// names.
fn filters_agree(text: &[u8]) -> Result<(), TestCaseError> {
    let keep = |name: &str| !name.contains("secret");
    let mut removed: Vec<String> = Vec::new();
    let ours = list_filter::filter(text, &mut |_, name| {
        if !keep(name) {
            removed.push(name.to_owned());
        }
        keep(name)
    });
    let reference = serde_filter::filter(text, &keep);
    let shown = String::from_utf8_lossy(text);
    match (ours, reference) {
        (Err(_), Err(_)) => {}
        (Ok(outcome), Ok((rewritten, names))) => {
            let ours = match outcome {
                Outcome::Unchanged => None,
                Outcome::Rewritten(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
            };
            prop_assert_eq!(ours, rewritten, "{}", shown);
            prop_assert_eq!(removed, names, "{}", shown);
        }
        (ours, reference) => {
            prop_assert!(
                false,
                "toolgate {:?}, serde_json {:?}: {}",
                ours.map(|_| ()),
                reference.map(|_| ()),
                shown
            )
        }
    }
    Ok(())
}

/// A JSON value of the kinds list items carry, with the strings, escapes
/// and numbers parsers disagree on.
fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop::sample::select(vec![
        "0",
        "-0",
        "-1.5e3",
        "1E+2",
        "1e999",
        "12345678901234567890123",
        "true",
        "false",
        "null",
        "\"\"",
        "\"plain text past eight bytes\"",
        "\"a\\u00e9\\/\\b\"",
        "\"\\ud800\"",
        "\"\\udc00x\"",
        "\"\\ud83d\\ude00\"",
        "\"tab\\t\"",
        "\"é\u{2028}\u{7f}\"",
        "\"secret\"",
    ])
    .prop_map(str::to_owned);
    // Near misses, each refused by serde_json.
    let broken = prop::sample::select(vec![
        "01",
        "-",
        "1.",
        ".5",
        "1e",
        "1e+",
        "+1",
        "tru",
        "nul",
        "NaN",
        "[1,]",
        "{\"a\":1,}",
        "{\"a\"}",
        "\"\\x\"",
        "\"\\u12\"",
        "\"\\u12g4\"",
        "\"\u{1}\"",
        "\"\u{1f}\"",
        "[1 2]",
        "{\"a\" 1}",
        "\u{c}1",
        "'a'",
    ])
    .prop_map(str::to_owned);
    let leaf = prop_oneof![12 => leaf, 1 => broken];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((json_key(), inner), 0..4).prop_map(|members| {
                let members: Vec<String> = members.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    })
}

fn json_key() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "\"type\"",
        "\"description\"",
        "\"a\"",
        "\"\"",
        "\"\\u0041\"",
        "\"\\ud800\"",
        "\"\\udc00\"",
        "\"ti\\tle\"",
        "\"Name\"",
        "\"uri\"",
        "\"name_\"",
    ])
}

/// A list result with items of arbitrary values, as one message or a
/// batch; then bytes deleted, inserted or replaced, mostly where the
/// grammar is decided.
fn mutated_list() -> impl Strategy<Value = Vec<u8>> {
    let name = prop::sample::select(vec![
        "\"echo\"",
        "\"secret\"",
        "\"se\\u0063ret\"",
        "\"\\ud800\"",
        "\"\\udfff\"",
        "\"\\ud800\\u0041\"",
        "\"x\\ud83d\\ude00\"",
        "5",
        "null",
    ]);
    let name_key = prop::sample::select(vec!["\"name\"", "\"name\"", "\"n\\u0061me\"", "\"NAME\""]);
    let item = (
        name_key,
        name,
        prop::collection::vec((json_key(), json_value()), 0..3),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(key, name, mut members, at)| {
            let mut members: Vec<String> = members.drain(..).map(|(k, v)| format!("{k}:{v}")).collect();
            members.insert(at.index(members.len() + 1), format!("{key}:{name}"));
            format!("{{{}}}", members.join(","))
        });
    let list_key =
        prop::sample::select(vec!["\"tools\"", "\"tools\"", "\"resources\"", "\"Tools\"", "\"extra\""]);
    let message = (list_key, prop::collection::vec(item, 0..5), json_value()).prop_map(|(key, items, other)| {
        format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{{{key}:[{}],\"nextCursor\":{other}}},\"x\":{other}}}",
            items.join(" , ")
        )
    });
    let mutation = (
        any::<prop::sample::Index>(),
        0..3u8,
        prop::sample::select(b"\"\\,:{}[] \n\t0-.eu\x01\x0c\xc3\x80a".to_vec()),
    );
    (prop::collection::vec(message, 1..3), any::<bool>(), prop::collection::vec(mutation, 0..3)).prop_map(
        |(messages, batch, mutations)| {
            let mut text = if batch || messages.len() > 1 {
                format!("[{}]", messages.join(","))
            } else {
                messages.concat()
            }
            .into_bytes();
            for (at, op, byte) in mutations {
                let at = at.index(text.len() + 1);
                match op {
                    0 if at < text.len() => {
                        text.remove(at);
                    }
                    1 => text.insert(at, byte),
                    _ if at < text.len() => text[at] = byte,
                    _ => {}
                }
            }
            text
        },
    )
}

proptest! {
    // Cheap cases, and the one test standing between the filter and a
    // parser differential: eight times the others' count.
    #![proptest_config(Config { cases: config().cases * 8, ..config() })]

    #[test]
    fn the_filter_reads_every_text_as_serde_json_does(text in mutated_list(), lists in list_result(), json in jsonish()) {
        filters_agree(&text)?;
        filters_agree(lists.as_bytes())?;
        filters_agree(&json)?;
    }
}

/// An event's bytes as received, and its data.
type Event = (Vec<u8>, Vec<u8>);

/// Every event, or the error, for a stream cut into chunks.
fn events(chunks: &[&[u8]]) -> Result<Vec<Event>, String> {
    let mut splitter = Splitter::new(1 << 20);
    let mut out = Vec::new();
    for chunk in chunks {
        splitter.push(chunk);
        while let Some(event) = splitter.next_event().map_err(|e| e.to_string())? {
            out.push((event.raw.to_vec(), event.data));
        }
    }
    Ok(out)
}

/// List results built from the pieces that fooled proxies before: case
/// variants of keys, escapes, duplicates, names that differ in case.
fn list_result() -> impl Strategy<Value = String> {
    let key = |names: &'static [&'static str]| prop::sample::select(names.to_vec());
    let name_key =
        key(&["name", "name", "name", "NAME", "Name", "n\\u0061me", "title", "uriTemplate", "uri_template"]);
    let name = prop::sample::select(vec!["echo", "secret", "SECRET", "se\\u0063ret", "ok", "secret_admin"]);
    let item = prop::collection::vec((name_key, name), 1..3).prop_map(|members| {
        let body: Vec<String> = members.iter().map(|(k, v)| format!("\"{k}\":\"{v}\"")).collect();
        format!("{{{}}}", body.join(","))
    });
    let list = prop::collection::vec(item, 0..4).prop_map(|items| format!("[{}]", items.join(",")));
    let list_key = key(&[
        "tools",
        "tools",
        "prompts",
        "Tools",
        "toolſ",
        "to\\u006fls",
        "TOOLS",
        "nextCursor",
        "resourceTemplates",
        "resource_templates",
    ]);
    let result = prop::collection::vec((list_key, list), 1..3).prop_map(|members| {
        let body: Vec<String> = members.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(","))
    });
    let result_key = key(&["result", "result", "Result", "re\\u0073ult", "error"]);
    (result_key, result, any::<bool>()).prop_map(|(key, result, batch)| {
        let message = format!("{{\"jsonrpc\":\"2.0\",\"id\":1,\"{key}\":{result}}}");
        if batch { format!("[{message}]") } else { message }
    })
}

/// Time grows with the input no faster than linearly (a quadratic step
/// would take 16 times longer on 16 times the input, not 4).
#[test]
fn time_is_linear_in_the_input() {
    fn ratio(build: impl Fn(usize) -> Vec<u8>, run: impl Fn(&[u8])) -> f64 {
        let time = |n: usize| {
            let input = build(n);
            let started = Instant::now();
            run(&input);
            started.elapsed().max(Duration::from_micros(50))
        };
        time(4_000); // warm up
        let small = (0..3).map(|_| time(4_000)).min().unwrap_or_default();
        let large = (0..3).map(|_| time(64_000)).min().unwrap_or_default();
        large.as_secs_f64() / small.as_secs_f64()
    }
    let keys = |n: usize| {
        let members: String = (0..n).map(|i| format!(",\"k{i}\":0")).collect();
        format!("{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"{members}}}").into_bytes()
    };
    let envelope = ratio(keys, |body| {
        let _ = envelope::parse(body);
    });
    let list = ratio(
        |n| {
            let members: String = (0..n).map(|i| format!(",\"k{i}\":0")).collect();
            format!("{{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{{\"tools\":[{{\"name\":\"a\"{members}}}]}}}}")
                .into_bytes()
        },
        |text| {
            let _ = list_filter::filter(text, &mut |_, _| false);
        },
    );
    let sse = ratio(
        |n| format!("data: {}", "x".repeat(n * 8)).into_bytes(),
        |stream| {
            let mut splitter = Splitter::new(usize::MAX);
            for chunk in stream.chunks(256) {
                splitter.push(chunk);
                let _ = splitter.next_event();
            }
        },
    );
    for (what, ratio) in [("envelope", envelope), ("list filter", list), ("SSE splitter", sse)] {
        println!("{what}: 16x the input took {ratio:.1}x the time");
        assert!(ratio < 64.0, "{what}: 16x the input took {ratio:.1}x the time");
    }
}
