//! Who is calling: API keys, JWTs (keys from a watched JWKS file), trusted
//! proxy headers, the 401/403 challenges, RFC 9728 metadata, and that the
//! caller's credential never reaches the upstream.

mod common;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use http::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rmcp::ServiceExt;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const API_KEY: &str = "tg_live_4f9c2e7a1b3d";
const ISSUER: &str = "https://id.example.com";
const V0618: (&str, &str) = ("mcp-protocol-version", "2025-06-18");
const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

/// Signing keys generated for this test run, and their JWKS.
struct Keys {
    ed: Vec<u8>,
    ed_public: Vec<u8>,
    ec: Vec<u8>,
    ec_public: Vec<u8>,
}

impl Keys {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let ed = Ed25519KeyPair::generate_pkcs8(&rng).expect("ed25519").as_ref().to_vec();
        let ed_public = Ed25519KeyPair::from_pkcs8(&ed).expect("ed25519").public_key().as_ref().to_vec();
        let ec = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("p256")
            .as_ref()
            .to_vec();
        let ec_public = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &ec)
            .expect("p256")
            .public_key()
            .as_ref()
            .to_vec();
        Self { ed, ed_public, ec, ec_public }
    }

    fn jwks(&self, ed_kid: &str) -> String {
        let (x, y) = (&self.ec_public[1..33], &self.ec_public[33..65]);
        json!({ "keys": [
            { "kty": "OKP", "crv": "Ed25519", "kid": ed_kid, "x": URL_SAFE_NO_PAD.encode(&self.ed_public) },
            { "kty": "EC", "crv": "P-256", "kid": "ec-1", "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y) },
            // RFC 7515 A.2's RSA public key, for the HS/RS confusion case.
            { "kty": "RSA", "kid": "rsa-1", "e": "AQAB", "n": RFC7515_RSA_N },
        ]})
        .to_string()
    }

    fn ed_token(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&self.ed)).expect("sign")
    }

    fn ec_token(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&self.ec)).expect("sign")
    }
}

const RFC7515_RSA_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn claims(extra: Value) -> Value {
    let mut base = json!({
        "iss": ISSUER, "aud": "https://mcp.example.com/mcp", "sub": "alice",
        "exp": now() + 600, "iat": now(), "groups": ["sre"], "scope": "mcp:read mcp:write",
    });
    if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    base
}

fn identity_policy(upstream: SocketAddr, trusted_from: &str) -> String {
    let top = format!(
        r#"identity:
  api_keys:
    - {{ id: ci-bot, sha256: "{}", groups: [ci] }}
  jwt:
    - issuer: {ISSUER}
      algorithms: [EdDSA, ES256, RS256]
      jwks: {{ file: jwks.json }}
      leeway: 5s
  trusted_header: {{ subject: X-Authenticated-User, groups: X-Authenticated-Groups, from: [{trusted_from}] }}
  upstream_headers: {{ subject: X-Toolgate-Subject, groups: X-Toolgate-Groups }}
  resource_metadata:
    base_url: https://mcp.example.com
    authorization_servers: [{ISSUER}]
virtual_servers:
  default:
    tools: {{ allow: [status] }}
    rules:
      - when: {{ groups: [sre] }}
        tools: {{ allow: ["restart_*"] }}
  public:
    anonymous: true
    tools: {{ allow: [status] }}
  jwt-only:
    credentials: [jwt]
    required_scopes: [mcp:write]
    tools: {{ allow: ["*"] }}
  keys-only:
    credentials: [api_key]
    tools: {{ allow: ["*"] }}
"#,
        sha256_hex(API_KEY)
    );
    policy(upstream, "", &top)
}

async fn identity_gate(keys: &Keys, trusted_from: &str) -> Gate {
    let upstream = start_echo_upstream().await;
    let dir = scratch_dir();
    std::fs::write(dir.join("jwks.json"), keys.jwks("ed-1")).expect("jwks");
    std::fs::write(dir.join("policy.yaml"), identity_policy(upstream, trusted_from)).expect("policy");
    start_gate_with_file(&dir.join("policy.yaml")).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// What the upstream received, from the echo upstream's answer.
fn upstream_saw(reply: &Reply) -> Value {
    reply.json()["result"]["headers"].clone()
}

#[tokio::test]
async fn no_credential_is_a_401_with_the_metadata_challenge() -> TestResult {
    let keys = Keys::new();
    let gate = identity_gate(&keys, "10.0.0.0/8").await;
    let reply = post(gate.addr, &[V0618], PING).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let challenge = reply.headers.get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let metadata_url = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp";
    assert_eq!(challenge, format!("Bearer resource_metadata=\"{metadata_url}\""));
    assert_eq!(reply.rpc_code(), Some(-32001));

    // The metadata itself (RFC 9728), per virtual server.
    let metadata = send(gate.addr, "GET", "/.well-known/oauth-protected-resource/mcp", &[], "").await.json();
    assert_eq!(metadata["resource"], "https://mcp.example.com/mcp");
    assert_eq!(metadata["authorization_servers"], json!([ISSUER]));
    let named =
        send(gate.addr, "GET", "/.well-known/oauth-protected-resource/servers/jwt-only/mcp", &[], "").await;
    assert_eq!(named.json()["resource"], "https://mcp.example.com/servers/jwt-only/mcp");
    assert_eq!(named.json()["scopes_supported"], json!(["mcp:write"]));
    let unknown =
        send(gate.addr, "GET", "/.well-known/oauth-protected-resource/servers/nope/mcp", &[], "").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    // A virtual server that allows anonymous access serves without credentials.
    let headers = [&[V0618], POST_HEADERS].concat();
    assert_eq!(send(gate.addr, "POST", "/servers/public/mcp", &headers, PING).await.status, StatusCode::OK);
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn api_keys_authenticate_and_never_reach_the_upstream() -> TestResult {
    let keys = Keys::new();
    let gate = identity_gate(&keys, "10.0.0.0/8").await;
    let auth = bearer(API_KEY);
    let forged = [
        V0618,
        ("authorization", auth.as_str()),
        ("x-toolgate-subject", "root"),
        ("x-toolgate-groups", "admin"),
    ];
    let reply = post(gate.addr, &forged, PING).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let seen = upstream_saw(&reply);
    assert!(seen.get("authorization").is_none(), "token passthrough: {seen}");
    assert_eq!(seen["x-toolgate-subject"], "ci-bot", "the verified identity, not the forged one");
    assert_eq!(seen["x-toolgate-groups"], "ci");

    for wrong in ["tg_live_4f9c2e7a1b3e", "tg_live_4f9c2e7a1b3", "", "x".repeat(5000).as_str()] {
        let auth = bearer(wrong);
        let reply = post(gate.addr, &[V0618, ("authorization", auth.as_str())], PING).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{wrong:.20}");
        let challenge =
            reply.headers.get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    }
    let basic = post(gate.addr, &[V0618, ("authorization", "Basic Y2k6Ym90")], PING).await;
    assert_eq!(basic.status, StatusCode::UNAUTHORIZED);
    let two =
        post(gate.addr, &[V0618, ("authorization", auth.as_str()), ("authorization", auth.as_str())], PING)
            .await;
    assert_eq!(two.status, StatusCode::BAD_REQUEST);
    // A bad credential on a server that allows anonymous access is still refused.
    let headers = [&[V0618, ("authorization", "Bearer nope")], POST_HEADERS].concat();
    assert_eq!(
        send(gate.addr, "POST", "/servers/public/mcp", &headers, PING).await.status,
        StatusCode::UNAUTHORIZED
    );
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn jwts_are_verified_and_their_groups_apply() -> TestResult {
    let keys = Keys::new();
    let gate = identity_gate(&keys, "10.0.0.0/8").await;
    let call = |name: &str| {
        format!(r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"{name}"}}}}"#)
    };

    let token = keys.ed_token("ed-1", &claims(json!({})));
    let auth = bearer(&token);
    let reply = post(gate.addr, &[V0618, ("authorization", auth.as_str())], &call("restart_db")).await;
    assert_eq!(upstream_saw(&reply)["x-toolgate-subject"], "alice", "{}", reply.text());
    assert_eq!(upstream_saw(&reply)["x-toolgate-groups"], "sre");

    let no_sre = bearer(&keys.ec_token("ec-1", &claims(json!({ "groups": ["dev"] }))));
    let reply = post(gate.addr, &[V0618, ("authorization", no_sre.as_str())], &call("restart_db")).await;
    assert_eq!(reply.json()["error"]["message"], "Unknown tool: restart_db", "rule by group does not apply");
    let reply = post(gate.addr, &[V0618, ("authorization", no_sre.as_str())], &call("status")).await;
    assert!(upstream_saw(&reply).is_object());
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn bad_tokens_are_refused_each_for_its_reason() -> TestResult {
    let keys = Keys::new();
    let gate = identity_gate(&keys, "10.0.0.0/8").await;
    let good = keys.ed_token("ed-1", &claims(json!({})));
    let (header, payload, signature) = {
        let mut parts = good.split('.');
        (parts.next().unwrap_or_default(), parts.next().unwrap_or_default(), parts.next().unwrap_or_default())
    };
    let tampered_payload = URL_SAFE_NO_PAD.encode(claims(json!({ "sub": "root" })).to_string());
    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let hs_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT","kid":"rsa-1"}"#);
    let hs_confused = {
        let n = URL_SAFE_NO_PAD.decode(RFC7515_RSA_N)?;
        let message = format!("{hs_header}.{payload}");
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &n);
        format!("{message}.{}", URL_SAFE_NO_PAD.encode(aws_lc_rs::hmac::sign(&key, message.as_bytes())))
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("expired", keys.ed_token("ed-1", &claims(json!({ "exp": now() - 120 }))), "expired"),
        ("future nbf", keys.ed_token("ed-1", &claims(json!({ "nbf": now() + 600 }))), "not valid yet"),
        ("future iat", keys.ed_token("ed-1", &claims(json!({ "iat": now() + 600 }))), "iat"),
        ("string exp", keys.ed_token("ed-1", &claims(json!({ "exp": (now() + 600).to_string() }))), ""),
        (
            "wrong aud",
            keys.ed_token("ed-1", &claims(json!({ "aud": "https://other.example.com/mcp" }))),
            "aud",
        ),
        (
            "wrong iss",
            keys.ed_token("ed-1", &claims(json!({ "iss": "https://evil.example.com" }))),
            "not trusted",
        ),
        ("no exp", keys.ed_token("ed-1", &claims(json!({ "exp": null }))), "exp"),
        ("alg none", format!("{none_header}.{payload}."), "none"),
        ("HS/RS confusion", hs_confused, "HS256"),
        ("kid of another key type", keys.ec_token("ed-1", &claims(json!({}))), "does not fit"),
        ("unknown kid", keys.ed_token("ed-9", &claims(json!({}))), "unknown key"),
        ("tampered payload", format!("{header}.{tampered_payload}.{signature}"), "signature"),
        ("truncated", good[..good.len() - 10].to_owned(), "signature"),
        ("two parts", format!("{header}.{payload}"), ""),
    ];
    for (name, token, reason) in cases {
        let auth = bearer(&token);
        let reply = post(gate.addr, &[V0618, ("authorization", auth.as_str())], PING).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{name}: {}", reply.text());
        let message = reply.json()["error"]["message"].as_str().unwrap_or_default().to_owned();
        assert!(message.contains(reason), "{name}: {message}");
        assert!(upstream_saw(&reply).is_null(), "{name} reached the upstream");
    }
    // An oversized Authorization header is refused without harm.
    let huge = format!("Bearer {}", "a".repeat(200_000));
    let reply = post(gate.addr, &[V0618, ("authorization", huge.as_str())], PING).await;
    assert!(reply.status.is_client_error(), "{}", reply.status);
    let auth = bearer(&good);
    assert_eq!(
        post(gate.addr, &[V0618, ("authorization", auth.as_str())], PING).await.status,
        StatusCode::OK
    );
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn scopes_and_credential_kinds_are_required_per_server() -> TestResult {
    let keys = Keys::new();
    let gate = identity_gate(&keys, "10.0.0.0/8").await;
    let path = "/servers/jwt-only/mcp";
    let with = |auth: String| {
        let addr = gate.addr;
        async move {
            let headers = [&[V0618, ("authorization", auth.as_str())], POST_HEADERS].concat();
            send(addr, "POST", path, &headers, PING).await
        }
    };
    let reply = with(bearer(API_KEY)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "API keys are not accepted here");
    // RFC 8707: each virtual server is its own resource. A token for /mcp
    // is not one for /servers/jwt-only/mcp.
    let reply = with(bearer(&keys.ed_token("ed-1", &claims(json!({}))))).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    assert!(reply.text().contains("not for this resource (aud)"), "{}", reply.text());
    let aud = json!({ "aud": "https://mcp.example.com/servers/jwt-only/mcp" });
    let both =
        json!({ "aud": ["https://mcp.example.com/mcp", "https://mcp.example.com/servers/jwt-only/mcp"] });
    let reply =
        with(bearer(&keys.ed_token("ed-1", &claims(json!({ "scope": "mcp:read", "aud": aud["aud"] })))))
            .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let challenge = reply.headers.get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(
        challenge.contains("error=\"insufficient_scope\"") && challenge.contains("scope=\"mcp:write\""),
        "{challenge}"
    );
    let reply = with(bearer(&keys.ed_token("ed-1", &claims(aud.clone())))).await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = with(bearer(&keys.ed_token("ed-1", &claims(both.clone())))).await;
    assert_eq!(reply.status, StatusCode::OK, "a token may name several resources");
    let headers = [V0618, ("authorization", &bearer(&keys.ed_token("ed-1", &claims(aud))))];
    assert_eq!(post(gate.addr, &headers, PING).await.status, StatusCode::UNAUTHORIZED, "and not /mcp");
    // A good JWT where only API keys are accepted: the kind is refused.
    let good = bearer(&keys.ed_token("ed-1", &claims(json!({}))));
    let headers = [&[V0618, ("authorization", good.as_str())], POST_HEADERS].concat();
    let reply = send(gate.addr, "POST", "/servers/keys-only/mcp", &headers, PING).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());
    assert!(reply.text().contains("does not accept jwt"), "{}", reply.text());
    // No credential at all: the 401 names the scope this server needs.
    let reply = send(gate.addr, "POST", path, &[&[V0618], POST_HEADERS].concat(), PING).await;
    let challenge = reply.headers.get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(
        challenge.contains("scope=\"mcp:write\"") && challenge.contains("/servers/jwt-only/mcp"),
        "{challenge}"
    );
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn trusted_headers_only_from_trusted_proxies() -> TestResult {
    let keys = Keys::new();
    let untrusted = identity_gate(&keys, "10.0.0.0/8").await;
    let headers = [V0618, ("x-authenticated-user", "mallory"), ("x-authenticated-groups", "sre")];
    let reply = post(untrusted.addr, &headers, PING).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "ignored from an untrusted address");
    let headers =
        [V0618, ("authorization", "Bearer tg_live_4f9c2e7a1b3d"), ("x-authenticated-user", "mallory")];
    let reply = post(untrusted.addr, &headers, PING).await;
    assert!(upstream_saw(&reply).get("x-authenticated-user").is_none(), "and stripped");
    untrusted.shutdown().await;

    let trusted = identity_gate(&keys, "127.0.0.1/32").await;
    let headers = [V0618, ("x-authenticated-user", "bob"), ("x-authenticated-groups", "sre, ops")];
    let reply = post(trusted.addr, &headers, PING).await;
    assert_eq!(upstream_saw(&reply)["x-toolgate-subject"], "bob", "{}", reply.text());
    assert_eq!(upstream_saw(&reply)["x-toolgate-groups"], "sre,ops");
    let two = [V0618, ("x-authenticated-user", "bob"), ("authorization", "Bearer tg_live_4f9c2e7a1b3d")];
    assert_eq!(
        post(trusted.addr, &two, PING).await.status,
        StatusCode::BAD_REQUEST,
        "exactly one credential"
    );
    trusted.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn jwks_rotation_is_picked_up_without_restart() -> TestResult {
    let keys = Keys::new();
    let gate = identity_gate(&keys, "10.0.0.0/8").await;
    let jwks_file = gate.policy_file.with_file_name("jwks.json");
    let rotated = bearer(&keys.ed_token("ed-2", &claims(json!({}))));
    assert_eq!(
        post(gate.addr, &[V0618, ("authorization", rotated.as_str())], PING).await.status,
        StatusCode::UNAUTHORIZED
    );
    let written = Instant::now();
    std::fs::write(&jwks_file, keys.jwks("ed-2"))?;
    loop {
        if post(gate.addr, &[V0618, ("authorization", rotated.as_str())], PING).await.status == StatusCode::OK
        {
            break;
        }
        assert!(written.elapsed() < Duration::from_secs(10), "the new kid was never accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("JWKS rotation took effect after {:?}", written.elapsed());
    // A broken JWKS keeps the last good keys.
    std::fs::write(&jwks_file, "{ not json")?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        post(gate.addr, &[V0618, ("authorization", rotated.as_str())], PING).await.status,
        StatusCode::OK
    );
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn an_sdk_client_with_a_bearer_token_sees_its_own_view() -> TestResult {
    let keys = Keys::new();
    let upstream = start_catalog_upstream(false).await;
    let dir = scratch_dir();
    std::fs::write(dir.join("jwks.json"), keys.jwks("ed-1"))?;
    let text = identity_policy(upstream, "10.0.0.0/8")
        .replace("tools: {{ allow: [status] }}", "tools: { allow: [status] }");
    std::fs::write(dir.join("policy.yaml"), text)?;
    let gate = start_gate_with_file(&dir.join("policy.yaml")).await;

    // What one principal sees and may run, through the SDK client.
    let view = |token: String| {
        let url = gate.url();
        async move {
            let config = StreamableHttpClientTransportConfig::with_uri(url).auth_header(token);
            let client = ().serve(StreamableHttpClientTransport::from_config(config)).await?;
            let names: Vec<String> =
                client.list_all_tools().await?.into_iter().map(|t| t.name.to_string()).collect();
            let mut runs = Vec::new();
            for tool in ["status", "restart_db", "delete_file"] {
                let result = client.call_tool(rmcp::model::CallToolRequestParams::new(tool)).await;
                runs.push(result.is_ok());
            }
            client.cancel().await?;
            Ok::<_, BoxError>((names, runs))
        }
    };
    let (names, runs) = view(keys.ed_token("ed-1", &claims(json!({})))).await?;
    assert_eq!(names, ["restart_db", "restart_cache", "status"], "alice (sre) by JWT");
    assert_eq!(runs, [true, true, false]);
    let (names, runs) = view(API_KEY.to_owned()).await?;
    assert_eq!(names, ["status"], "ci-bot by API key");
    assert_eq!(runs, [true, false, false]);
    assert!(view("wrong".to_owned()).await.is_err(), "a bad token cannot even initialize");
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn sessions_belong_to_the_principal_that_opened_them() -> TestResult {
    const OTHER_KEY: &str = "tg_live_other_7781";
    let upstream = start_sdk_upstream(false).await;
    let top = format!(
        "identity:\n  api_keys:\n    - {{ id: alice, sha256: \"{}\" }}\n    - {{ id: bob, sha256: \"{}\" }}\nsessions: {{ idle_timeout: 1h, max: 1000 }}\nvirtual_servers:\n  default:\n    tools: {{ allow: ['*'] }}\n",
        sha256_hex(API_KEY),
        sha256_hex(OTHER_KEY)
    );
    let gate = start_gate(&policy(upstream, "", &top)).await;
    let alice = bearer(API_KEY);
    let bob = bearer(OTHER_KEY);

    let reply = post(gate.addr, &[("authorization", alice.as_str())], INITIALIZE).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let session =
        reply.headers.get("mcp-session-id").and_then(|v| v.to_str().ok()).ok_or("no session")?.to_owned();
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let as_alice = [V0618, ("authorization", alice.as_str()), ("mcp-session-id", session.as_str())];
    let as_bob = [V0618, ("authorization", bob.as_str()), ("mcp-session-id", session.as_str())];
    assert_eq!(post(gate.addr, &as_alice, list).await.status, StatusCode::OK);

    // Bob, holding Alice's session id, gets what an unknown session gets.
    let stolen = post(gate.addr, &as_bob, list).await;
    assert_eq!(stolen.status, StatusCode::NOT_FOUND, "{}", stolen.text());
    let invented = [V0618, ("authorization", alice.as_str()), ("mcp-session-id", "0123456789abcdef")];
    assert_eq!(post(gate.addr, &invented, list).await.status, StatusCode::NOT_FOUND);
    let deleted = send(gate.addr, "DELETE", "/mcp", &as_bob, "").await;
    assert_eq!(deleted.status, StatusCode::NOT_FOUND, "Bob cannot end Alice's session");
    assert_eq!(post(gate.addr, &as_alice, list).await.status, StatusCode::OK, "Alice's session still works");

    // Alice ends it; the id is then unknown to everyone.
    assert!(send(gate.addr, "DELETE", "/mcp", &as_alice, "").await.status.is_success());
    assert_eq!(post(gate.addr, &as_alice, list).await.status, StatusCode::NOT_FOUND);
    gate.shutdown().await;
    Ok(())
}

/// A JWKS endpoint the test controls: its document (None answers 503),
/// a fetch counter, and a delay so that concurrent misses overlap.
struct JwksServer {
    addr: SocketAddr,
    document: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl JwksServer {
    async fn start(document: String) -> Self {
        let shared = std::sync::Arc::new(std::sync::Mutex::new(Some(document)));
        let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let delay_ms = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(100));
        let (doc, count, delay) = (shared.clone(), fetches.clone(), delay_ms.clone());
        let addr = serve_http(move |_request: http::Request<hyper::body::Incoming>| {
            let (doc, count, delay) = (doc.clone(), count.clone(), delay.clone());
            async move {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let delay = delay.load(std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(delay)).await;
                let current = doc.lock().map(|d| d.clone()).unwrap_or(None);
                let mut response = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(
                    current.clone().unwrap_or_default(),
                )));
                if current.is_none() {
                    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                }
                response
            }
        })
        .await;
        Self { addr, document: shared, fetches, delay_ms }
    }

    fn serve(&self, document: Option<String>) {
        if let Ok(mut d) = self.document.lock() {
            *d = document;
        }
    }

    fn fetched(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A gate whose one issuer's keys come from `jwks` (refetched at most once
/// a second).
async fn jwks_url_gate(jwks: &JwksServer) -> Gate {
    let upstream = start_echo_upstream().await;
    let top = format!(
        "identity:\n  resource_metadata: {{ base_url: 'https://mcp.example.com' }}\n  jwt:\n    - issuer: {ISSUER}\n      algorithms: [EdDSA]\n      jwks: {{ url: \"http://{}/jwks.json\", refresh: 10m, min_refetch: 1s }}\nvirtual_servers:\n  default:\n    tools: {{ allow: ['*'] }}\n",
        jwks.addr
    );
    start_gate(&policy(upstream, "", &top)).await
}

#[tokio::test]
async fn jwks_from_a_url_is_cached_shared_and_rotated() -> TestResult {
    let keys = Keys::new();
    let jwks = JwksServer::start(keys.jwks("ed-1")).await;
    let gate = jwks_url_gate(&jwks).await;
    let ok = |kid: &str| bearer(&keys.ed_token(kid, &claims(json!({}))));

    // First use fetches; later uses are served from the cache.
    for _ in 0..5 {
        let auth = ok("ed-1");
        assert_eq!(
            post(gate.addr, &[V0618, ("authorization", auth.as_str())], PING).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(jwks.fetched(), 1, "one fetch for five requests");

    // Rotation: a new kid is fetched on first sight, once for a burst.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    jwks.serve(Some(keys.jwks("ed-2")));
    let burst: Vec<_> = (0..20)
        .map(|_| {
            let (addr, auth) = (gate.addr, ok("ed-2"));
            tokio::spawn(
                async move { post(addr, &[V0618, ("authorization", auth.as_str())], PING).await.status },
            )
        })
        .collect();
    for request in burst {
        assert_eq!(request.await?, StatusCode::OK);
    }
    assert_eq!(jwks.fetched(), 2, "twenty concurrent misses, one fetch");

    // Unknown kids cannot make toolgate hammer the identity provider.
    for _ in 0..10 {
        let auth = ok("ed-unknown");
        assert_eq!(
            post(gate.addr, &[V0618, ("authorization", auth.as_str())], PING).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert!(jwks.fetched() <= 3, "rate-limited: {} fetches", jwks.fetched());

    // The endpoint goes down: the last good keys keep working.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    jwks.serve(None);
    let auth = ok("ed-unknown-2");
    assert_eq!(
        post(gate.addr, &[V0618, ("authorization", auth.as_str())], PING).await.status,
        StatusCode::UNAUTHORIZED
    );
    let auth = ok("ed-2");
    assert_eq!(
        post(gate.addr, &[V0618, ("authorization", auth.as_str())], PING).await.status,
        StatusCode::OK
    );
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn an_unreachable_jwks_url_refuses_tokens_but_not_the_proxy() -> TestResult {
    let keys = Keys::new();
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
    let upstream = start_echo_upstream().await;
    let top = format!(
        "identity:\n  resource_metadata: {{ base_url: 'https://mcp.example.com' }}\n  jwt:\n    - issuer: {ISSUER}\n      algorithms: [EdDSA]\n      jwks: {{ url: \"http://{closed}/jwks.json\" }}\nvirtual_servers:\n  default:\n    anonymous: true\n    tools: {{ allow: ['*'] }}\n"
    );
    let gate = start_gate(&policy(upstream, "", &top)).await;
    let auth = bearer(&keys.ed_token("ed-1", &claims(json!({}))));
    let reply = post(gate.addr, &[V0618, ("authorization", auth.as_str())], PING).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "no keys, no entry (never anonymous)");
    assert_eq!(post(gate.addr, &[V0618], PING).await.status, StatusCode::OK, "others are served");
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_slow_identity_provider_never_stalls_tokens_with_known_keys() -> TestResult {
    let keys = Keys::new();
    let jwks = JwksServer::start(keys.jwks("ed-1")).await;
    let upstream = start_echo_upstream().await;
    let top = format!(
        "identity:\n  resource_metadata: {{ base_url: 'https://mcp.example.com' }}\n  jwt:\n    - issuer: {ISSUER}\n      algorithms: [EdDSA]\n      jwks: {{ url: \"http://{}/jwks.json\", refresh: 10m, min_refetch: 100ms }}\nvirtual_servers:\n  default:\n    tools: {{ allow: ['*'] }}\n",
        jwks.addr
    );
    let gate = start_gate(&policy(upstream, "", &top)).await;
    let known = bearer(&keys.ed_token("ed-1", &claims(json!({}))));
    assert_eq!(
        post(gate.addr, &[V0618, ("authorization", known.as_str())], PING).await.status,
        StatusCode::OK
    );

    // The identity provider turns slow; a token with an unknown kid makes
    // toolgate fetch again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    jwks.delay_ms.store(3000, std::sync::atomic::Ordering::SeqCst);
    let unknown = bearer(&keys.ed_token("ed-9", &claims(json!({}))));
    let addr = gate.addr;
    let slow =
        tokio::spawn(async move { post(addr, &[V0618, ("authorization", unknown.as_str())], PING).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(jwks.fetched(), 2, "the refetch is under way");
    // Meanwhile, tokens whose keys are known are served at once.
    for _ in 0..5 {
        let started = Instant::now();
        let reply = post(gate.addr, &[V0618, ("authorization", known.as_str())], PING).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(
            started.elapsed() < Duration::from_millis(1000),
            "waited {:?} on the fetch",
            started.elapsed()
        );
    }
    assert_eq!(slow.await?.status, StatusCode::UNAUTHORIZED);
    gate.shutdown().await;
    Ok(())
}

/// Verified tokens are remembered until they expire; withdrawing the key
/// that signed one must still refuse it at once, whether the keys come
/// from a file (a reload) or from a JWKS URL (a refetch).
#[tokio::test]
async fn a_remembered_token_is_refused_once_its_key_is_withdrawn() -> TestResult {
    let keys = Keys::new();
    let gate = identity_gate(&keys, "10.0.0.0/8").await;
    let token = bearer(&keys.ed_token("ed-1", &claims(json!({}))));
    for _ in 0..3 {
        let answer = post(gate.addr, &[V0618, ("authorization", token.as_str())], PING).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    std::fs::write(gate.policy_file.with_file_name("jwks.json"), keys.jwks("ed-2"))?;
    let written = Instant::now();
    while post(gate.addr, &[V0618, ("authorization", token.as_str())], PING).await.status == StatusCode::OK {
        assert!(written.elapsed() < Duration::from_secs(10), "a withdrawn key's token is still accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gate.shutdown().await;

    let jwks = JwksServer::start(keys.jwks("ed-1")).await;
    let gate = jwks_url_gate(&jwks).await;
    for _ in 0..3 {
        let answer = post(gate.addr, &[V0618, ("authorization", token.as_str())], PING).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    // The IdP rotates: ed-1 is gone; a token with the new kid makes
    // toolgate fetch the set again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    jwks.serve(Some(keys.jwks("ed-2")));
    let fresh = bearer(&keys.ed_token("ed-2", &claims(json!({}))));
    assert_eq!(
        post(gate.addr, &[V0618, ("authorization", fresh.as_str())], PING).await.status,
        StatusCode::OK
    );
    let answer = post(gate.addr, &[V0618, ("authorization", token.as_str())], PING).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "verified with a key set no longer in use");
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_key_the_identity_provider_withdraws_stops_working_within_refresh() -> TestResult {
    let keys = Keys::new();
    let jwks = JwksServer::start(keys.jwks("ed-1")).await;
    let upstream = start_echo_upstream().await;
    let top = format!(
        "identity:\n  resource_metadata: {{ base_url: 'https://mcp.example.com' }}\n  jwt:\n    - issuer: {ISSUER}\n      algorithms: [EdDSA]\n      jwks: {{ url: \"http://{}/jwks.json\", refresh: 1s, min_refetch: 1s }}\nvirtual_servers:\n  default:\n    tools: {{ allow: ['*'] }}\n",
        jwks.addr
    );
    let gate = start_gate(&policy(upstream, "", &top)).await;
    // One token, sent again and again: verified once, then remembered.
    let auth = bearer(&keys.ed_token("ed-1", &claims(json!({}))));
    let status = || async { post(gate.addr, &[V0618, ("authorization", auth.as_str())], PING).await.status };
    for _ in 0..3 {
        assert_eq!(status().await, StatusCode::OK);
    }
    assert!(jwks.fetched() >= 1);
    // The provider withdraws the key: the remembered token goes with it
    // once the keys are refreshed, though every request still carries it.
    jwks.serve(Some(keys.jwks("ed-2")));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while status().await == StatusCode::OK {
        assert!(
            std::time::Instant::now() < deadline,
            "a withdrawn key still works ({} fetches)",
            jwks.fetched()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status().await, StatusCode::UNAUTHORIZED);
    gate.shutdown().await;
    Ok(())
}
