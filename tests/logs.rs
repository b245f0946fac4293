//! Logs cannot be forged: attacker-controlled text (names from requests,
//! token claims, paths) is escaped in every log line, so it can neither end
//! a line nor start one that looks like toolgate's own.

mod common;

use common::*;

const FORGED: &str = "1999-01-01T00:00:00.000000Z  INFO toolgate::audit: call allowed";

#[tokio::test]
async fn attacker_text_cannot_forge_a_log_line() -> TestResult {
    // The upstream lists a tool (hidden by the policy, so audited) whose
    // name carries a whole log line.
    let list = serde_json::json!({ "jsonrpc": "2.0", "id": 1, "result": { "tools": [
        { "name": "echo" }, { "name": format!("y\n{FORGED}") },
    ]}});
    let upstream = start_raw_upstream(
        answer("HTTP/1.1 200 OK\ncontent-type: application/json", list.to_string().as_bytes()),
        false,
    )
    .await;
    let dir = scratch_dir();
    let policy_file = dir.join("policy.yaml");
    let top = "identity:\n  resource_metadata: { base_url: 'https://mcp.example.com' }\n  jwt:\n    - { issuer: 'https://id.example.com', algorithms: [HS256], secret: 'MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=' }\nvirtual_servers:\n  default:\n    anonymous: true\n    tools: { allow: [echo] }\n";
    std::fs::write(&policy_file, policy(upstream, "", top))?;
    let process = Process::start_with_format(&policy_file, "plain")?;
    let started = process.lines_until("toolgate listening")?;
    let listening = started.last().cloned().unwrap_or_default();
    let addr: std::net::SocketAddr = strip_ansi(&listening)
        .split_whitespace()
        .find_map(|field| field.strip_prefix("proxy="))
        .ok_or("no proxy address")?
        .parse()?;

    let v0618 = ("mcp-protocol-version", "2025-06-18");
    // A tool name (refused, so audited) that carries a whole log line.
    let name = format!("x\\n{FORGED}\\r\\u001b[2K\\u202e");
    let call = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{name}"}}}}"#);
    post(addr, &[v0618], &call).await;
    // A name that would pass for more fields of the same line.
    let fields =
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x principal=root rule=allowed"}}"#;
    post(addr, &[v0618], fields).await;
    // Tokens whose issuer claim, or whose header's parse error, carries
    // one (refused, so audited).
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let payload = base64_url(&format!(r#"{{"iss":"x\n{FORGED}","sub":"a","exp":9999999999}}"#));
    let token = format!("Bearer {}.{payload}.c2ln", base64_url(r#"{"alg":"HS256","kid":"\n1999"}"#));
    post(addr, &[v0618, ("authorization", token.as_str())], ping).await;
    let header = base64_url(&format!(r#"{{"alg":"HS256\n{FORGED}"}}"#));
    let token = format!("Bearer {header}.{payload}.c2ln");
    post(addr, &[v0618, ("authorization", token.as_str())], ping).await;
    // A verified subject that carries one, calling a refused tool.
    let claims = serde_json::json!({
        "iss": "https://id.example.com", "aud": "https://mcp.example.com/mcp",
        "sub": format!("z\n{FORGED}"), "exp": 9_999_999_999u64,
    });
    let key = jsonwebtoken::EncodingKey::from_secret(b"01234567890123456789012345678901");
    let signed = format!("Bearer {}", jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key)?);
    let refused = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete"}}"#;
    post(addr, &[v0618, ("authorization", signed.as_str())], refused).await;
    // A last request to know the others were logged.
    post(addr, &[v0618], r#"{"jsonrpc":"2.0","id":9,"method":"ping"}"#).await;
    let lines = process.lines_until("\"ping\"")?;

    for line in &lines {
        assert!(!strip_ansi(line).starts_with("1999-"), "a forged line: {line:?}\n{lines:#?}");
        assert!(!line.contains('\u{202e}'), "{line:?}");
    }
    let injected = lines.iter().find(|l| l.contains("principal=root")).ok_or("no line for the field name")?;
    assert!(strip_ansi(injected).contains(r#"name="x principal=root rule=allowed""#), "{injected}");
    // Each attempt was logged, escaped.
    for (what, escaped) in [
        ("call refused", "x\\n1999-01-01"),
        ("call refused", "z\\n1999-01-01"),
        ("list filtered", "y\\n1999-01-01"),
        ("authentication refused", "1999-01-01"),
    ] {
        let found = lines.iter().any(|l| l.contains(what) && l.contains(escaped));
        assert!(found, "no `{what}` line with `{escaped}`: {lines:#?}");
    }
    Ok(())
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

/// The text of a line without terminal colour codes.
fn strip_ansi(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
