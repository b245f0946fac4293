//! A principal is a subject within one credential kind and one issuer, and
//! means the same thing to every reader: in rules, in session ownership and
//! in the identity headers the upstream receives. Each case was a way for
//! one caller to pass for another.

mod common;

use base64::Engine;
use common::*;
use http::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

const V0618: (&str, &str) = ("mcp-protocol-version", "2025-06-18");
const ISSUER_A: &str = "https://a.example.com";
const ISSUER_B: &str = "https://b.example.com";
const SECRET_A: &[u8] = b"issuer-a-secret-issuer-a-secret-0";
const SECRET_B: &[u8] = b"issuer-b-secret-issuer-b-secret-0";

fn token(issuer: &str, secret: &[u8], sub: &str, groups: &[&str]) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let claims = json!({
        "iss": issuer, "sub": sub, "aud": "https://mcp.example.com/mcp",
        "exp": now + 600, "iat": now, "groups": groups,
    });
    let header = Header::new(Algorithm::HS256);
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap_or_default()
}

fn two_issuers(upstream: SocketAddr, trusted_from: &str) -> String {
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let top = format!(
        r#"identity:
  resource_metadata: {{ base_url: "https://mcp.example.com" }}
  jwt:
    - {{ issuer: "{ISSUER_A}", algorithms: [HS256], secret: "{}" }}
    - {{ issuer: "{ISSUER_B}", algorithms: [HS256], secret: "{}" }}
  trusted_header: {{ subject: X-User, groups: X-Groups, from: [{trusted_from}] }}
  upstream_headers: {{ subject: X-Toolgate-Subject, groups: X-Toolgate-Groups }}
virtual_servers:
  default:
    tools: {{ allow: [status] }}
    rules:
      - when: {{ subjects: [alice], issuers: ["{ISSUER_A}"] }}
        tools: {{ allow: [restart_db] }}
      - when: {{ groups: [sre], issuers: ["{ISSUER_A}"] }}
        tools: {{ allow: [scale_service] }}
"#,
        b64(SECRET_A),
        b64(SECRET_B)
    );
    policy(upstream, "", &top)
}

fn call(name: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"{name}"}}}}"#)
}

fn upstream_saw(reply: &Reply) -> Value {
    reply.json()["result"]["headers"].clone()
}

#[tokio::test]
async fn the_same_subject_of_another_issuer_is_someone_else() -> TestResult {
    let upstream = start_echo_upstream().await;
    let gate = start_gate(&two_issuers(upstream, "10.0.0.0/8")).await;
    let alice_a = format!("Bearer {}", token(ISSUER_A, SECRET_A, "alice", &["sre"]));
    let alice_b = format!("Bearer {}", token(ISSUER_B, SECRET_B, "alice", &["sre"]));

    let reply = post(gate.addr, &[V0618, ("authorization", &alice_a)], &call("restart_db")).await;
    let seen = upstream_saw(&reply);
    assert_eq!(seen["x-toolgate-subject"], "alice", "{}", reply.text());
    assert_eq!(seen["x-toolgate-issuer"], ISSUER_A, "the upstream can tell them apart");
    assert_eq!(seen["x-toolgate-credential"], "jwt");
    let reply = post(gate.addr, &[V0618, ("authorization", &alice_a)], &call("scale_service")).await;
    assert!(upstream_saw(&reply).is_object(), "groups of issuer A apply: {}", reply.text());

    for tool in ["restart_db", "scale_service"] {
        let reply = post(gate.addr, &[V0618, ("authorization", &alice_b)], &call(tool)).await;
        assert_eq!(reply.json()["error"]["message"], format!("Unknown tool: {tool}"), "alice of B: {tool}");
    }
    let reply = post(gate.addr, &[V0618, ("authorization", &alice_b)], &call("status")).await;
    assert_eq!(upstream_saw(&reply)["x-toolgate-issuer"], ISSUER_B);
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_session_belongs_to_its_issuers_subject() -> TestResult {
    let upstream = start_sdk_upstream(false).await;
    let gate = start_gate(&two_issuers(upstream, "10.0.0.0/8")).await;
    let alice_a = format!("Bearer {}", token(ISSUER_A, SECRET_A, "alice", &[]));
    let alice_b = format!("Bearer {}", token(ISSUER_B, SECRET_B, "alice", &[]));
    let reply = post(gate.addr, &[("authorization", &alice_a)], INITIALIZE).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let session = reply.headers.get("mcp-session-id").and_then(|v| v.to_str().ok()).ok_or("no session")?;
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let mine =
        post(gate.addr, &[V0618, ("authorization", &alice_a), ("mcp-session-id", session)], list).await;
    assert_ne!(mine.status, StatusCode::NOT_FOUND, "{}", mine.text());
    let theirs =
        post(gate.addr, &[V0618, ("authorization", &alice_b), ("mcp-session-id", session)], list).await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND, "{}", theirs.text());
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn trusted_headers_must_be_single_and_not_empty() -> TestResult {
    let upstream = start_echo_upstream().await;
    let gate = start_gate(&two_issuers(upstream, "127.0.0.1/32")).await;
    let reply = post(gate.addr, &[V0618, ("x-user", "bob"), ("x-user", "root")], PING).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "repeated: {}", reply.text());
    let reply = post(gate.addr, &[V0618, ("x-user", "")], PING).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "empty: {}", reply.text());
    let reply =
        post(gate.addr, &[V0618, ("x-user", "bob"), ("x-groups", "dev"), ("x-groups", "sre")], PING).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "repeated groups: {}", reply.text());
    let forged = [
        V0618,
        ("x-user", "bob"),
        ("x-groups", "dev, ops"),
        ("x_toolgate_subject", "root"),
        ("X_Toolgate_Groups", "admin"),
    ];
    let reply = post(gate.addr, &forged, PING).await;
    let seen = upstream_saw(&reply);
    assert_eq!(seen["x-toolgate-subject"], "bob", "{}", reply.text());
    assert_eq!(seen["x-toolgate-credential"], "trusted_header");
    assert!(seen.get("x-toolgate-issuer").is_none());
    assert_eq!(seen["x-toolgate-groups"], "dev,ops");
    assert!(seen.get("x_toolgate_subject").is_none() && seen.get("x_toolgate_groups").is_none(), "{seen}");
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn identity_headers_cannot_be_misread() -> TestResult {
    let upstream = start_echo_upstream().await;
    let gate = start_gate(&two_issuers(upstream, "10.0.0.0/8")).await;
    // A group holding a comma would read as two groups, one of them `admin`.
    let groups = ["cn=ops,ou=admin", "admin team", "50%"];
    let auth = format!("Bearer {}", token(ISSUER_A, SECRET_A, "José Ø", &groups));
    let reply = post(gate.addr, &[V0618, ("authorization", &auth)], PING).await;
    let seen = upstream_saw(&reply);
    assert_eq!(seen["x-toolgate-groups"], "cn=ops%2Cou=admin,admin%20team,50%25", "{}", reply.text());
    assert_eq!(seen["x-toolgate-subject"], "Jos%C3%A9%20%C3%98", "never dropped for not being ASCII");
    // Every value decodes back to exactly what toolgate judged.
    let decoded: Vec<String> =
        seen["x-toolgate-groups"].as_str().unwrap_or_default().split(',').map(percent_decode).collect();
    assert_eq!(decoded, groups);
    gate.shutdown().await;
    Ok(())
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

#[tokio::test]
async fn one_principal_opening_many_sessions_evicts_only_its_own() -> TestResult {
    const ALICE: &str = "tg_alice_key_0001";
    const MALLORY: &str = "tg_mallory_key_0001";
    let upstream = start_sdk_upstream(false).await;
    let top = format!(
        "identity:\n  api_keys:\n    - {{ id: alice, sha256: \"{}\" }}\n    - {{ id: mallory, sha256: \"{}\" }}\nsessions: {{ max: 100, max_per_principal: 5 }}\nvirtual_servers:\n  default:\n    tools: {{ allow: ['*'] }}\n",
        sha256_hex(ALICE),
        sha256_hex(MALLORY)
    );
    let gate = start_gate(&policy(upstream, "", &top)).await;
    let open = |key: &'static str| {
        let addr = gate.addr;
        async move {
            let auth = format!("Bearer {key}");
            let reply = post(addr, &[("authorization", auth.as_str())], INITIALIZE).await;
            reply.headers.get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_owned)
        }
    };
    let alice = open(ALICE).await.ok_or("alice has no session")?;
    let mut mallorys = Vec::new();
    for _ in 0..200 {
        mallorys.extend(open(MALLORY).await);
    }
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let use_session = |key: &str, session: &str| {
        let (addr, auth, session) = (gate.addr, format!("Bearer {key}"), session.to_owned());
        async move {
            post(addr, &[V0618, ("authorization", auth.as_str()), ("mcp-session-id", session.as_str())], list)
                .await
                .status
        }
    };
    assert_ne!(use_session(ALICE, &alice).await, StatusCode::NOT_FOUND, "alice's session survives");
    let newest = mallorys.last().ok_or("no sessions")?;
    assert_ne!(use_session(MALLORY, newest).await, StatusCode::NOT_FOUND);
    assert_eq!(use_session(MALLORY, &mallorys[0]).await, StatusCode::NOT_FOUND, "mallory's oldest went");
    gate.shutdown().await;
    Ok(())
}
