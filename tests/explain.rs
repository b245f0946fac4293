//! `toolgate explain` and the live proxy agree: the same table of
//! principals × virtual servers × tools goes through both, and every
//! verdict (allowed, or refused and with which HTTP status) is the same.

mod common;

use base64::Engine;
use common::*;
use http::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use std::process::Command;

const ISSUER: &str = "https://id.example.com";
const SECRET: &[u8] = b"explain-secret-explain-secret-01";
const API_KEY: &str = "tg_ci_bot_key_42";

fn policy_text(upstream: std::net::SocketAddr) -> String {
    let sha = sha256_hex(API_KEY);
    let top = format!(
        r#"identity:
  resource_metadata: {{ base_url: "https://mcp.example.com" }}
  api_keys: [{{ id: ci-bot, sha256: "{sha}", groups: [ci] }}]
  jwt: [{{ issuer: "{ISSUER}", algorithms: [HS256], secret: "{}" }}]
virtual_servers:
  default:
    tools: {{ allow: [status], deny: ["*_admin"] }}
    rules:
      - when: {{ groups: [sre] }}
        tools: {{ allow: ["restart_*", "ns/*"] }}
      - when: {{ groups: [ci] }}
        tools: {{ allow: [deploy] }}
  public:
    anonymous: true
    credentials: [anonymous, jwt]
    tools: {{ allow: ["*"], deny: [deploy] }}
  writers:
    credentials: [jwt]
    required_scopes: [mcp:write]
    tools: {{ allow: ["*"] }}
"#,
        base64::engine::general_purpose::STANDARD.encode(SECRET)
    );
    policy(upstream, "", &top)
}

/// A caller: its `explain` flags and its credential for the proxy.
struct Caller {
    name: &'static str,
    flags: Vec<&'static str>,
    authorization: Option<String>,
}

fn token(sub: &str, audience: &str, groups: &[&str], scope: &str) -> String {
    let claims = json!({ "iss": ISSUER, "sub": sub, "aud": audience, "exp": 9_999_999_999u64, "groups": groups, "scope": scope });
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET))
        .unwrap_or_default()
}

fn callers(server: &str) -> Vec<Caller> {
    let audience = if server == "default" {
        "https://mcp.example.com/mcp".to_owned()
    } else {
        format!("https://mcp.example.com/servers/{server}/mcp")
    };
    vec![
        Caller { name: "anonymous", flags: vec![], authorization: None },
        Caller {
            name: "ci-bot",
            flags: vec!["--credential", "api_key", "--subject", "ci-bot"],
            authorization: Some(format!("Bearer {API_KEY}")),
        },
        Caller {
            name: "alice (sre, mcp:write)",
            flags: vec!["--subject", "alice", "--group", "sre", "--scope", "mcp:write"],
            authorization: Some(format!("Bearer {}", token("alice", &audience, &["sre"], "mcp:write"))),
        },
        Caller {
            name: "bob (mcp:read)",
            flags: vec!["--subject", "bob", "--scope", "mcp:read"],
            authorization: Some(format!("Bearer {}", token("bob", &audience, &[], "mcp:read"))),
        },
    ]
}

/// Allowed, or refused with a status (200 for a refused call).
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Allowed,
    Refused(u16),
}

#[tokio::test]
async fn explain_and_the_proxy_agree_on_every_case() -> TestResult {
    let upstream = start_echo_upstream().await;
    let text = policy_text(upstream);
    let gate = start_gate(&text).await;
    let file = gate.policy_file.to_string_lossy().into_owned();
    let mut cases = 0;
    for server in ["default", "public", "writers"] {
        for caller in callers(server) {
            for tool in ["status", "restart_db", "user_admin", "deploy", "ns/tool", "other"] {
                let mut args = vec!["explain", "--config", &file, "--server", server, "--tool", tool];
                args.extend(caller.flags.iter().copied());
                let out = Command::new(env!("CARGO_BIN_EXE_toolgate")).args(&args).output()?;
                let said = String::from_utf8_lossy(&out.stdout).into_owned();
                let explained = match out.status.code() {
                    Some(0) => Verdict::Allowed,
                    Some(1) => match said.split("with HTTP ").nth(1).and_then(|rest| rest.get(..3)) {
                        Some(status) => Verdict::Refused(status.parse()?),
                        None => Verdict::Refused(200),
                    },
                    other => return Err(format!("explain exited {other:?}: {said}").into()),
                };

                let path =
                    if server == "default" { "/mcp".to_owned() } else { format!("/servers/{server}/mcp") };
                let body = format!(
                    r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}"}}}}"#
                );
                let mut headers = vec![
                    ("content-type", "application/json"),
                    ("accept", "application/json, text/event-stream"),
                    ("mcp-protocol-version", "2025-06-18"),
                ];
                if let Some(authorization) = &caller.authorization {
                    headers.push(("authorization", authorization.as_str()));
                }
                let reply = send(gate.addr, "POST", &path, &headers, body).await;
                let proxied = if reply.status == StatusCode::OK && reply.json()["result"]["method"] == "POST"
                {
                    Verdict::Allowed
                } else {
                    Verdict::Refused(reply.status.as_u16())
                };
                assert_eq!(
                    explained, proxied,
                    "{} on {server}, tool {tool}: explain said {said}",
                    caller.name
                );
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 72);
    gate.shutdown().await;
    Ok(())
}
