//! SSE answers are forwarded event by event as the upstream produces them,
//! and a failing upstream never takes the proxy down with it.

mod common;

use bytes::Bytes;
use common::*;
use http::StatusCode;
use http_body_util::BodyExt;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

fn event(n: u32) -> Bytes {
    Bytes::from(format!(
        "id: {n}\nevent: message\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{{\"progressToken\":\"t\",\"progress\":{n}}}}}\n\n"
    ))
}

/// Reads the response body until `needle` has been seen; returns when.
async fn read_until(
    body: &mut hyper::body::Incoming,
    seen: &mut Vec<u8>,
    needle: &str,
) -> Result<Instant, BoxError> {
    while !String::from_utf8_lossy(seen).contains(needle) {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame()).await.map_err(|_| {
            format!("`{needle}` did not reach the client while the upstream held the stream open")
        })?;
        match frame {
            Some(Ok(frame)) => seen.extend_from_slice(frame.data_ref().map(|b| &b[..]).unwrap_or_default()),
            Some(Err(e)) => return Err(e.into()),
            None => return Err(format!("stream ended before `{needle}`").into()),
        }
    }
    Ok(Instant::now())
}

async fn events_flow_one_by_one(method: &str) -> TestResult {
    let (upstream, mut streams) = start_scripted_sse_upstream().await;
    let gate = start_gate(&policy(upstream, "", "")).await;

    let body = if method == "POST" {
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow","_meta":{"progressToken":"t"}}}"#
    } else {
        ""
    };
    let (addr, method_owned) = (gate.addr, method.to_owned());
    let response_future = tokio::spawn(async move {
        let body = http_body_util::Full::new(Bytes::from_static(body.as_bytes()));
        open(addr, &method_owned, "/mcp", POST_0618, body).await
    });

    let upstream_body =
        tokio::time::timeout(Duration::from_secs(10), streams.recv()).await?.ok_or("no request")?;
    let sent_first = Instant::now();
    upstream_body.send(event(1)).await?;
    let response = response_future.await??;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut seen = Vec::new();

    // The upstream has sent one event and keeps the stream open. The client
    // must see that event now; only then does the upstream send the next.
    let got_first = read_until(&mut body, &mut seen, "\"progress\":1").await?;
    let sent_second = Instant::now();
    upstream_body.send(event(2)).await?;
    let got_second = read_until(&mut body, &mut seen, "\"progress\":2").await?;
    upstream_body
        .send(Bytes::from_static(b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n"))
        .await?;
    drop(upstream_body);
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(10), body.frame()).await? {
        seen.extend_from_slice(frame?.data_ref().map(|b| &b[..]).unwrap_or_default());
    }
    assert!(got_first <= sent_second, "event 1 was received before event 2 existed");
    assert_eq!(
        String::from_utf8_lossy(&seen),
        format!(
            "{}{}event: message\ndata: {{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{{}}}}\n\n",
            String::from_utf8_lossy(&event(1)),
            String::from_utf8_lossy(&event(2))
        ),
        "the stream arrives byte for byte"
    );
    println!(
        "{method} SSE through toolgate: event 1 after {:?}, event 2 after {:?} (upstream write to client read)",
        got_first - sent_first,
        got_second - sent_second
    );
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn post_sse_events_reach_the_client_while_the_upstream_streams() -> TestResult {
    events_flow_one_by_one("POST").await
}

#[tokio::test]
async fn get_sse_events_reach_the_client_while_the_upstream_streams() -> TestResult {
    events_flow_one_by_one("GET").await
}

#[tokio::test]
async fn an_upstream_dying_mid_stream_ends_the_client_stream_cleanly() -> TestResult {
    static DYING: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
        b"2b\r\nevent: message\ndata: {\"jsonrpc\":\"2.0\"}\n\n\r\n",
        b"20\r\nevent: message\ndata: {\"partial",
    ];
    let upstream = start_raw_upstream(DYING.iter().map(|c| c.to_vec()).collect(), false).await;
    let gate = start_gate(&policy(upstream, "", "")).await;
    let reply = post(
        gate.addr,
        &[("mcp-protocol-version", "2025-06-18")],
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    // `send` reads the whole body; it ended without an error, carrying what
    // the upstream sent before it died.
    assert!(
        reply.text().starts_with("event: message\ndata: {\"jsonrpc\":\"2.0\"}\n\n"),
        "{:?}",
        reply.text()
    );

    // And toolgate still serves: a healthy upstream behind a second gate,
    // and this gate's admin port, both answer.
    let (_u, healthy) = start_pair(true).await;
    assert_eq!(post(healthy.addr, &[], INITIALIZE).await.status, StatusCode::OK);
    assert_eq!(send(gate.admin, "GET", "/healthz", &[], "").await.status, StatusCode::OK);
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_with_a_json_rpc_error() -> TestResult {
    let closed = TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
    let gate = start_gate(&policy(closed, "", "")).await;
    let reply = post(
        gate.addr,
        &[("mcp-protocol-version", "2025-06-18")],
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    assert_eq!(reply.rpc_code(), Some(-32603));
    assert!(reply.text().contains("unavailable"), "{}", reply.text());
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_silent_upstream_is_a_504_and_other_requests_go_on() -> TestResult {
    static SILENT: &[&[u8]] = &[];
    let upstream = start_raw_upstream(SILENT.iter().map(|c| c.to_vec()).collect(), true).await;
    let text = policy(upstream, "", "").replace("response_timeout: 5s", "response_timeout: 300ms");
    let gate = start_gate(&text).await;
    let started = Instant::now();
    let waiting: Vec<_> = (0..4)
        .map(|_| {
            let addr = gate.addr;
            tokio::spawn(async move {
                post(
                    addr,
                    &[("mcp-protocol-version", "2025-06-18")],
                    r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
                )
                .await
            })
        })
        .collect();
    // While those wait on the upstream, refusals and admin are answered at once.
    let refused = post(gate.addr, &[("origin", "null")], "{}").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    for task in waiting {
        let reply = task.await?;
        assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{}", reply.text());
        assert_eq!(reply.rpc_code(), Some(-32603));
    }
    println!("four concurrent upstream timeouts of 300 ms answered after {:?}", started.elapsed());
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_truncated_json_answer_is_not_passed_off_as_complete() -> TestResult {
    static SHORT: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n",
        b"{\"jsonrpc\":\"2.0\",\"id\":1,",
    ];
    let upstream = start_raw_upstream(SHORT.iter().map(|c| c.to_vec()).collect(), false).await;
    let gate = start_gate(&policy(upstream, "", "")).await;
    let ping = http_body_util::Full::new(Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#));
    let response = open(gate.addr, "POST", "/mcp", POST_0618, ping).await?;
    // Read whole to be inspected, a body shorter than its Content-Length is
    // never passed off as complete: the client gets a clear failure.
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let body = response.into_body().collect().await?.to_bytes();
    let reply: serde_json::Value = serde_json::from_slice(&body)?;
    assert_eq!(reply["id"], 1, "{reply}");
    assert_eq!(reply["error"]["code"], -32603, "{reply}");
    gate.shutdown().await;
    Ok(())
}
