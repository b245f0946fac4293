//! A GET stream outlives the request that opened it, so its caller is
//! judged for as long as it is open: each event under the policy running
//! when it arrives, and at once — without waiting for an event that may
//! never come — when a reload takes away the caller's access (its virtual
//! server, its API key replaced under the same id) or its JWT expires.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const LIST: &[u8] =
    b"data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"a\"},{\"name\":\"b\"}]}}\n\n";

/// Opens a GET stream through toolgate with `auth` (an Authorization value,
/// if any) and returns its body and the upstream's sender for it.
async fn open_stream(
    addr: SocketAddr,
    auth: Option<String>,
    streams: &mut tokio::sync::mpsc::Receiver<Sender>,
) -> Result<(hyper::body::Incoming, Sender), BoxError> {
    let opened = tokio::spawn(async move {
        let mut headers = vec![("accept", "text/event-stream"), ("mcp-protocol-version", "2025-06-18")];
        if let Some(auth) = auth.as_deref() {
            headers.push(("authorization", auth));
        }
        open(addr, "GET", "/mcp", &headers, http_body_util::Empty::<Bytes>::new()).await
    });
    let sender = tokio::time::timeout(Duration::from_secs(10), streams.recv()).await?.ok_or("no request")?;
    sender.send(Bytes::from_static(LIST)).await?;
    let response = opened.await??;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = next_data(&mut body).await?;
    assert!(first.contains("\"a\""), "{first}");
    Ok((body, sender))
}

/// Expects the stream to end on its own with an error event naming `why`.
async fn ends_with(body: &mut hyper::body::Incoming, why: &str) -> TestResult {
    let last = next_data(body).await?;
    assert!(last.contains("The stream ended") && last.contains(why), "{last}");
    let end = tokio::time::timeout(Duration::from_secs(5), body.frame()).await?;
    assert!(end.is_none(), "the stream is closed");
    Ok(())
}

#[tokio::test]
async fn an_open_get_stream_is_judged_under_the_policy_running_now() -> TestResult {
    let (upstream, mut streams) = start_scripted_sse_upstream().await;
    let servers = |tools: &str| {
        format!(
            "virtual_servers:\n  default:\n    anonymous: true\n    tools: {{ allow: [{tools}] }}\n  other:\n    anonymous: true\n"
        )
    };
    let gate = start_gate(&policy(upstream, "", &servers("a, b"))).await;
    let (mut body, sender) = open_stream(gate.addr, None, &mut streams).await?;

    // A reload narrows the view: the next event is judged under it.
    std::fs::write(&gate.policy_file, policy(upstream, "", &servers("a")))?;
    until_generation(gate.admin, 2).await?;
    sender.send(Bytes::from_static(LIST)).await?;
    let second = next_data(&mut body).await?;
    assert!(second.contains("\"a\"") && !second.contains("\"b\""), "{second}");

    // A reload removes the stream's virtual server: the stream ends at
    // once, though the upstream sends nothing more.
    let without_default = "virtual_servers:\n  other:\n    anonymous: true\n";
    std::fs::write(&gate.policy_file, policy(upstream, "", without_default))?;
    ends_with(&mut body, "virtual server").await?;
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_replaced_api_key_ends_the_streams_opened_with_the_old_one() -> TestResult {
    let (upstream, mut streams) = start_scripted_sse_upstream().await;
    let keys = |alice: &str| {
        let top = format!(
            "identity:\n  api_keys:\n    - {{ id: alice, sha256: \"{}\" }}\n    - {{ id: bob, sha256: \"{}\" }}\nvirtual_servers:\n  default:\n    tools: {{ allow: ['*'] }}\n",
            sha256_hex(alice),
            sha256_hex("tg_bob_key_0001")
        );
        policy(upstream, "", &top)
    };
    let gate = start_gate(&keys("tg_alice_key_0001")).await;
    let (mut alice, _alice_upstream) =
        open_stream(gate.addr, Some("Bearer tg_alice_key_0001".into()), &mut streams).await?;
    let (mut bob, bob_upstream) =
        open_stream(gate.addr, Some("Bearer tg_bob_key_0001".into()), &mut streams).await?;

    // Alice's key is rotated: same id, new secret. Her old stream ends;
    // Bob's, whose key did not change, carries on.
    std::fs::write(&gate.policy_file, keys("tg_alice_key_0002"))?;
    ends_with(&mut alice, "no longer admitted").await?;
    until_generation(gate.admin, 2).await?;
    bob_upstream.send(Bytes::from_static(LIST)).await?;
    let next = next_data(&mut bob).await?;
    assert!(next.contains("\"b\"") && !next.contains("ended"), "{next}");
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_stream_ends_when_its_token_expires() -> TestResult {
    const SECRET: &[u8] = b"live-streams-secret-live-streams-0";
    const ISSUER: &str = "https://issuer.example.com";
    let (upstream, mut streams) = start_scripted_sse_upstream().await;
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, SECRET);
    let top = format!(
        "identity:\n  resource_metadata: {{ base_url: \"https://mcp.example.com\" }}\n  jwt:\n    - {{ issuer: \"{ISSUER}\", algorithms: [HS256], secret: \"{b64}\", leeway: 0s }}\nvirtual_servers:\n  default:\n    tools: {{ allow: ['*'] }}\n"
    );
    let gate = start_gate(&policy(upstream, "", &top)).await;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = json!({
        "iss": ISSUER, "sub": "alice", "aud": "https://mcp.example.com/mcp", "exp": now + 2, "iat": now,
    });
    let token =
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET))?;
    let (mut body, _upstream) = open_stream(gate.addr, Some(format!("Bearer {token}")), &mut streams).await?;
    ends_with(&mut body, "expired").await?;
    let ended = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
    assert!(ended >= (now + 2) as f64, "not before the token's exp");
    gate.shutdown().await;
    Ok(())
}
