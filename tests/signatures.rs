//! RFC 9421 request signatures end to end: `toolgate sign` and the signer
//! library against a running toolgate, and every way a signed request can
//! be bad.

mod common;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::*;
use http::{Method, StatusCode};
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};
use toolgate::identity::signature::{self, SignedHeaders, SignerKey};

const SEED: [u8; 32] = [7; 32];
const HMAC_SECRET: &[u8] = b"a shared secret of thirty-two+ bytes!!";

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn ed_key() -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&SEED).expect("seed")
}

fn signatures_policy(upstream: SocketAddr, public_key: &str) -> String {
    let top = format!(
        r#"identity:
  signatures:
    max_skew: 60s
    keys:
      - {{ id: agent-7, alg: ed25519, public_key: "{public_key}", groups: [agents] }}
      - {{ id: svc-1, alg: hmac-sha256, secret: "{}" }}
  api_keys:
    - {{ id: ci, sha256: "{}" }}
  upstream_headers: {{ subject: X-Toolgate-Subject }}
virtual_servers:
  default:
    anonymous: true
    tools: {{ allow: ["read_*"] }}
    rules:
      - when: {{ credentials: [signature] }}
        tools: {{ allow: ["write_*"] }}
"#,
        STANDARD.encode(HMAC_SECRET),
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"ci-key")
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    );
    policy(upstream, "", &top)
}

async fn gate() -> Gate {
    let upstream = start_echo_upstream().await;
    let public = STANDARD.encode(ed_key().public_key().as_ref());
    start_gate(&signatures_policy(upstream, &public)).await
}

fn call(name: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{name}"}}}}"#)
}

fn signed_with(
    key: &SignerKey,
    key_id: &str,
    gate: &Gate,
    path: &str,
    body: &str,
    created: i64,
    nonce: &str,
) -> SignedHeaders {
    let uri: http::Uri = format!("http://{}{path}", gate.addr).parse().expect("uri");
    signature::sign(key, key_id, &Method::POST, &uri, Some(body.as_bytes()), created, nonce).expect("sign")
}

async fn send_signed(gate: &Gate, path: &str, body: &str, signed: &SignedHeaders) -> Reply {
    let mut headers = vec![
        ("mcp-protocol-version", "2025-06-18"),
        ("signature-input", signed.signature_input.as_str()),
        ("signature", signed.signature.as_str()),
    ];
    if let Some(digest) = &signed.content_digest {
        headers.push(("content-digest", digest.as_str()));
    }
    send(gate.addr, "POST", path, &[&headers[..], POST_HEADERS].concat(), body.to_owned()).await
}

fn reached_upstream(reply: &Reply) -> bool {
    reply.json().pointer("/result/headers").is_some()
}

#[tokio::test]
async fn signed_requests_unlock_signed_only_tools() -> TestResult {
    let gate = gate().await;
    let key = SignerKey::Ed25519(ed_key());
    // Anonymous: read tools yes, write tools no.
    assert!(reached_upstream(
        &post(gate.addr, &[("mcp-protocol-version", "2025-06-18")], &call("read_file")).await
    ));
    let reply = post(gate.addr, &[("mcp-protocol-version", "2025-06-18")], &call("write_file")).await;
    assert_eq!(reply.json()["error"]["message"], "Unknown tool: write_file");

    let body = call("write_file");
    let signed = signed_with(&key, "agent-7", &gate, "/mcp", &body, now(), "n-1");
    let reply = send_signed(&gate, "/mcp", &body, &signed).await;
    assert!(reached_upstream(&reply), "{}", reply.text());
    let seen = &reply.json()["result"]["headers"];
    assert_eq!(seen["x-toolgate-subject"], "agent-7");
    assert!(
        seen.get("signature").is_none() && seen.get("signature-input").is_none(),
        "no credential passthrough"
    );

    let hmac =
        SignerKey::HmacSha256(Box::new(aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, HMAC_SECRET)));
    let signed = signed_with(&hmac, "svc-1", &gate, "/mcp", &body, now(), "n-2");
    assert!(reached_upstream(&send_signed(&gate, "/mcp", &body, &signed).await));
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn bad_signatures_are_refused_each_for_its_reason() -> TestResult {
    let gate = gate().await;
    let key = SignerKey::Ed25519(ed_key());
    let body = call("read_file");
    let expect_401 = |reply: Reply, why: &str| {
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{why}: {}", reply.text());
        let message = reply.json()["error"]["message"].as_str().unwrap_or_default().to_owned();
        assert!(message.contains(why), "{why}: {message}");
        assert!(!reached_upstream(&reply));
    };

    // Replayed: the same signed request twice.
    let signed = signed_with(&key, "agent-7", &gate, "/mcp", &body, now(), "replay-me");
    assert!(reached_upstream(&send_signed(&gate, "/mcp", &body, &signed).await));
    expect_401(send_signed(&gate, "/mcp", &body, &signed).await, "replay");

    // `created` outside the skew, both ways.
    for created in [now() - 3600, now() + 3600] {
        let signed = signed_with(&key, "agent-7", &gate, "/mcp", &body, created, &format!("skew-{created}"));
        expect_401(send_signed(&gate, "/mcp", &body, &signed).await, "skew");
    }

    // The body altered after signing.
    let signed = signed_with(&key, "agent-7", &gate, "/mcp", &body, now(), "altered");
    expect_401(send_signed(&gate, "/mcp", &call("read_secrets"), &signed).await, "Content-Digest");

    // The digest header missing.
    let mut signed = signed_with(&key, "agent-7", &gate, "/mcp", &body, now(), "no-digest");
    signed.content_digest = None;
    expect_401(send_signed(&gate, "/mcp", &body, &signed).await, "content-digest");

    // An unknown keyid.
    let signed = signed_with(&key, "agent-99", &gate, "/mcp", &body, now(), "unknown");
    expect_401(send_signed(&gate, "/mcp", &body, &signed).await, "unknown keyid");

    // A signature made for a different path.
    let signed = signed_with(&key, "agent-7", &gate, "/servers/other/mcp", &body, now(), "other-path");
    expect_401(send_signed(&gate, "/mcp", &body, &signed).await, "does not verify");

    // Signed with the right keyid but another key.
    let impostor = SignerKey::Ed25519(Ed25519KeyPair::from_seed_unchecked(&[9; 32]).expect("seed"));
    let signed = signed_with(&impostor, "agent-7", &gate, "/mcp", &body, now(), "impostor");
    expect_401(send_signed(&gate, "/mcp", &body, &signed).await, "does not verify");

    // A signature that does not cover @path.
    let mut signed = signed_with(&key, "agent-7", &gate, "/mcp", &body, now(), "partial");
    signed.signature_input = signed.signature_input.replace(" \"@path\"", "");
    expect_401(send_signed(&gate, "/mcp", &body, &signed).await, "@path");

    // A signature and a bearer token: two credentials.
    let signed = signed_with(&key, "agent-7", &gate, "/mcp", &body, now(), "two");
    let headers = [
        ("mcp-protocol-version", "2025-06-18"),
        ("authorization", "Bearer ci-key"),
        ("signature-input", signed.signature_input.as_str()),
        ("signature", signed.signature.as_str()),
        ("content-digest", signed.content_digest.as_deref().unwrap_or("")),
    ];
    let reply = send(gate.addr, "POST", "/mcp", &[&headers[..], POST_HEADERS].concat(), body.clone()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    // Garbage in the headers.
    let headers = [
        ("mcp-protocol-version", "2025-06-18"),
        ("signature-input", "sig1=(((("),
        ("signature", "sig1=:AAAA:"),
    ];
    let reply = send(gate.addr, "POST", "/mcp", &[&headers[..], POST_HEADERS].concat(), body.clone()).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    // And the proxy still serves.
    assert!(reached_upstream(&post(gate.addr, &[("mcp-protocol-version", "2025-06-18")], &body).await));
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn toolgate_sign_makes_a_request_toolgate_accepts() -> TestResult {
    let dir = scratch_dir();
    let key_file = dir.join("agent.key");
    let exe = env!("CARGO_BIN_EXE_toolgate");
    let out =
        std::process::Command::new(exe).args(["sign", "--new-key", "--key-file"]).arg(&key_file).output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout)?;
    let public = stdout.lines().last().ok_or("no public key printed")?.trim().to_owned();

    let upstream = start_echo_upstream().await;
    let gate = start_gate(&signatures_policy(upstream, &public)).await;
    let body = call("write_file");
    let url = format!("http://{}/mcp", gate.addr);
    let out = std::process::Command::new(exe)
        .args(["sign", "--key-file"])
        .arg(&key_file)
        .args(["--key-id", "agent-7", "--url", &url, "--data", &body])
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let curl = String::from_utf8(out.stdout)?;
    let header = |name: &str| {
        curl.split("-H '")
            .filter_map(|part| part.split('\'').next())
            .find_map(|h| h.strip_prefix(&format!("{name}: ")).map(str::to_owned))
            .unwrap_or_default()
    };
    let signed = SignedHeaders {
        content_digest: Some(header("Content-Digest")),
        signature_input: header("Signature-Input"),
        signature: header("Signature"),
    };
    assert!(curl.contains("--data-raw"), "{curl}");
    let reply = send_signed(&gate, "/mcp", &body, &signed).await;
    assert!(reached_upstream(&reply), "{curl}\n{}", reply.text());
    assert_eq!(reply.json()["result"]["headers"]["x-toolgate-subject"], "agent-7");
    gate.shutdown().await;
    Ok(())
}
