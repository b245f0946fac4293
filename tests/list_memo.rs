//! List results remembered once filtered (`transport.list_memo`): the same
//! answer under the same policy, virtual server and rule set comes back
//! byte for byte, counted and audited as a filtered one is; another rule
//! set, another answer (one name changed, same length) or a reloaded
//! policy is filtered afresh; `list_memo: 0` remembers nothing.

mod common;

use bytes::Bytes;
use common::*;
use http::StatusCode;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const SERVERS: &str = r#"identity:
  trusted_header: { subject: X-User, groups: X-Groups, from: [127.0.0.1/32] }
virtual_servers:
  default:
    tools: { allow: ["search_*"] }
    rules:
      - when: { groups: [sre] }
        tools: { allow: ["scale_*"] }
"#;

const LIST: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#;

/// An upstream answering every request with a catalogue of 91 tools (over
/// 4 KiB; over 64 KiB with descriptions `pad` times as long) whose last
/// tool is `search_zz`, or `delete_zz` once `changed`.
async fn catalogue_upstream(changed: Arc<AtomicBool>, pad: usize) -> SocketAddr {
    serve_http(move |_request: http::Request<hyper::body::Incoming>| {
        let last = if changed.load(Ordering::SeqCst) { "delete_zz" } else { "search_zz" };
        let description = "a tool of the catalogue ".repeat(pad);
        let mut tools: Vec<Value> = (0..30)
            .flat_map(|i| [format!("search_{i:02}"), format!("scale_{i:03}"), format!("user_{i:02}_x")])
            .map(|name| json!({ "name": name, "description": description }))
            .collect();
        tools.push(json!({ "name": last, "description": description }));
        json_answer(json!({ "jsonrpc": "2.0", "id": 7, "result": { "tools": tools } }).to_string())
    })
    .await
}

fn json_answer(body: String) -> std::future::Ready<http::Response<http_body_util::Full<Bytes>>> {
    let mut response = http::Response::new(http_body_util::Full::new(Bytes::from(body)));
    response.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
    std::future::ready(response)
}

async fn list_as(addr: SocketAddr, user: &str, groups: &str) -> Result<(String, Vec<String>), BoxError> {
    let reply =
        post(addr, &[("mcp-protocol-version", "2025-06-18"), ("x-user", user), ("x-groups", groups)], LIST)
            .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let names = reply.json()["result"]["tools"]
        .as_array()
        .ok_or("no tools")?
        .iter()
        .filter_map(|tool| tool["name"].as_str().map(str::to_owned))
        .collect();
    Ok((reply.text(), names))
}

async fn metric(admin: SocketAddr, name: &str) -> u64 {
    let metrics = send(admin, "GET", "/metrics", &[], "").await.text();
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0)
}

fn expected(prefixes: &[&str], last: &str) -> Vec<String> {
    let mut names: Vec<String> = (0..30)
        .flat_map(|i| [format!("search_{i:02}"), format!("scale_{i:03}"), format!("user_{i:02}_x")])
        .filter(|name| prefixes.iter().any(|p| name.starts_with(p)))
        .collect();
    if prefixes.iter().any(|p| last.starts_with(p)) {
        names.push(last.to_owned());
    }
    names
}

#[tokio::test]
async fn a_list_met_again_is_answered_from_the_memo_and_only_then() -> TestResult {
    let changed = Arc::new(AtomicBool::new(false));
    let upstream = catalogue_upstream(changed.clone(), 1).await;
    let policy_file = scratch_dir().join("policy.yaml");
    std::fs::write(&policy_file, policy(upstream, "", SERVERS))?;
    let process = Process::start(&policy_file)?;
    let listening = process.wait_for("toolgate listening")?;
    let addr: SocketAddr = listening["proxy"].as_str().ok_or("no proxy")?.parse()?;
    let admin: SocketAddr = listening["admin"].as_str().ok_or("no admin")?.parse()?;
    let hits = "toolgate_list_memo_hits_total";
    let kept =
        r#"toolgate_decisions_total{virtual_server="default",kind="tool",action="list",outcome="allowed"}"#;
    let removed =
        r#"toolgate_decisions_total{virtual_server="default",kind="tool",action="list",outcome="denied"}"#;

    // Filtered, then remembered: the same bytes, counted and audited twice.
    let (first, names) = list_as(addr, "alice", "dev").await?;
    assert_eq!(names, expected(&["search_"], "search_zz"));
    assert_eq!(metric(admin, hits).await, 0);
    let (again, _) = list_as(addr, "alice", "dev").await?;
    assert_eq!(again, first);
    assert_eq!(metric(admin, hits).await, 1);
    assert_eq!(metric(admin, kept).await, 62);
    assert_eq!(metric(admin, removed).await, 120);
    for _ in 0..2 {
        let audit = process.wait_for("list filtered")?;
        assert_eq!(audit["principal"], "alice");
        assert_eq!(audit["removed"], 60);
    }

    // Another caller with the same rule set shares the entry, and is
    // audited under their own name.
    let (for_carol, _) = list_as(addr, "carol", "dev").await?;
    assert_eq!(for_carol, first);
    assert_eq!(metric(admin, hits).await, 2);
    assert_eq!(process.wait_for("list filtered")?["principal"], "carol");

    // Another rule set: filtered for it, then remembered for it.
    let (for_sre, names) = list_as(addr, "bob", "sre").await?;
    assert_eq!(names, expected(&["search_", "scale_"], "search_zz"));
    assert_eq!(metric(admin, hits).await, 2);
    assert_eq!(list_as(addr, "bob", "sre").await?.0, for_sre);
    assert_eq!(metric(admin, hits).await, 3);

    // The same length, one name changed: filtered afresh.
    changed.store(true, Ordering::SeqCst);
    let (_, names) = list_as(addr, "alice", "dev").await?;
    assert_eq!(names, expected(&["search_"], "delete_zz"));
    assert_eq!(metric(admin, hits).await, 3);
    changed.store(false, Ordering::SeqCst);

    // A reloaded policy: filtered under it.
    let reloaded = SERVERS.replace(r#"allow: ["search_*"]"#, r#"allow: ["search_*", "user_*"]"#);
    let temporary = policy_file.with_extension("yaml.tmp");
    std::fs::write(&temporary, policy(upstream, "", &reloaded))?;
    std::fs::rename(&temporary, &policy_file)?;
    until_generation(admin, 2).await?;
    let (_, names) = list_as(addr, "alice", "dev").await?;
    assert_eq!(names, [expected(&["search_", "user_"], "search_zz")].concat(), "the reloaded policy decides");
    assert_eq!(metric(admin, hits).await, 3);
    Ok(())
}

#[tokio::test]
async fn list_memo_zero_remembers_nothing() -> TestResult {
    let upstream = catalogue_upstream(Arc::default(), 1).await;
    let gate = start_gate(&policy(upstream, "  list_memo: 0", SERVERS)).await;
    let (first, names) = list_as(gate.addr, "alice", "dev").await?;
    assert_eq!(names, expected(&["search_"], "search_zz"));
    for _ in 0..3 {
        assert_eq!(list_as(gate.addr, "alice", "dev").await?.0, first);
    }
    assert_eq!(metric(gate.admin, "toolgate_list_memo_hits_total").await, 0);
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_list_over_64_kib_is_remembered_too() -> TestResult {
    let upstream = catalogue_upstream(Arc::default(), 40).await;
    let gate = start_gate(&policy(upstream, "", SERVERS)).await;
    let (first, names) = list_as(gate.addr, "alice", "dev").await?;
    assert_eq!(names, expected(&["search_"], "search_zz"));
    // The answer (over 64 KiB, filtered off the serving threads) and its
    // filtered form.
    let held = metric(gate.admin, "toolgate_list_memo_bytes").await;
    assert!(held > 64 * 1024 + first.len() as u64, "{held} bytes held");
    assert_eq!(list_as(gate.addr, "alice", "dev").await?.0, first);
    assert_eq!(metric(gate.admin, "toolgate_list_memo_hits_total").await, 1);
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn answers_without_list_items_or_unreadable_are_not_remembered() -> TestResult {
    // A call result that mentions `tools` (the pre-scan reads it), and a
    // list with a duplicate key: both over 4 KiB, neither remembered.
    let text = "tools ".repeat(1_000);
    let call =
        json!({ "jsonrpc": "2.0", "id": 7, "result": { "content": [{ "type": "text", "text": text }] } });
    let tools: Vec<Value> = (0..200).map(|i| json!({ "name": format!("search_{i}") })).collect();
    let list = json!({ "jsonrpc": "2.0", "id": 7, "result": { "tools": tools } }).to_string();
    let duplicated = list.replacen(r#""tools":"#, r#""tools":[],"tools":"#, 1);
    for (body, status) in [(call.to_string(), StatusCode::OK), (duplicated, StatusCode::BAD_GATEWAY)] {
        let answer = body.clone();
        let upstream =
            serve_http(move |_request: http::Request<hyper::body::Incoming>| json_answer(answer.clone()))
                .await;
        let gate = start_gate(&policy(upstream, "", SERVERS)).await;
        for _ in 0..3 {
            let reply = post(
                gate.addr,
                &[("mcp-protocol-version", "2025-06-18"), ("x-user", "alice"), ("x-groups", "dev")],
                LIST,
            )
            .await;
            assert_eq!(reply.status, status, "{}", reply.text());
        }
        assert_eq!(metric(gate.admin, "toolgate_list_memo_hits_total").await, 0);
        assert_eq!(metric(gate.admin, "toolgate_list_memo_bytes").await, 0);
        gate.shutdown().await;
    }
    Ok(())
}

#[tokio::test]
async fn an_sse_list_over_64_kib_is_remembered_too() -> TestResult {
    let description = "a tool of the catalogue ".repeat(40);
    let tools: Vec<Value> = (0..91)
        .map(|i| json!({ "name": format!("{}_{i:02}", if i % 3 == 0 { "search" } else { "user" }), "description": description }))
        .collect();
    let list = json!({ "jsonrpc": "2.0", "id": 7, "result": { "tools": tools } });
    let stream = format!("event: message\ndata: {list}\n\n");
    let upstream = serve_http(move |_request: http::Request<hyper::body::Incoming>| {
        let mut response = http::Response::new(http_body_util::Full::new(Bytes::from(stream.clone())));
        response.headers_mut().insert("content-type", http::HeaderValue::from_static("text/event-stream"));
        std::future::ready(response)
    })
    .await;
    let gate = start_gate(&policy(upstream, "", SERVERS)).await;
    let headers = [
        ("mcp-protocol-version", "2025-06-18"),
        ("accept", "application/json, text/event-stream"),
        ("x-user", "alice"),
        ("x-groups", "dev"),
    ];
    let first = post(gate.addr, &headers, LIST).await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(first.text().contains("search_00") && !first.text().contains("user_01"), "{}", first.text());
    assert_eq!(metric(gate.admin, "toolgate_list_memo_hits_total").await, 0);
    let again = post(gate.addr, &headers, LIST).await;
    assert_eq!(again.text(), first.text());
    assert_eq!(metric(gate.admin, "toolgate_list_memo_hits_total").await, 1);
    gate.shutdown().await;
    Ok(())
}
