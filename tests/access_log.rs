//! The access log tells the truth about each exchange: it is written when
//! the exchange ends, with the bytes the client was sent and how it ended,
//! not at the response head (when a stream has barely begun and a list may
//! still be withheld).

mod common;

use bytes::Bytes;
use common::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
const EVENT: &[u8] = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n";

fn binary_in_front_of(upstream: SocketAddr) -> Result<(Process, SocketAddr), BoxError> {
    let dir = scratch_dir();
    let policy_file = dir.join("policy.yaml");
    std::fs::write(&policy_file, policy(upstream, "", ""))?;
    let process = Process::start(&policy_file)?;
    let listening = process.wait_for("toolgate listening")?;
    let addr = listening["proxy"].as_str().ok_or("no proxy field")?.parse()?;
    Ok((process, addr))
}

#[track_caller]
fn assert_logged(line: &Value, status: u64, outcome: &str) {
    assert_eq!(line["status"], status, "{line}");
    assert_eq!(line["outcome"], outcome, "{line}");
}

#[tokio::test]
async fn a_stream_is_logged_when_it_ends_with_what_was_sent() -> TestResult {
    let (upstream, mut streams) = start_scripted_sse_upstream().await;
    let (process, addr) = binary_in_front_of(upstream)?;

    // A stream the upstream ends after 600 ms.
    let response = tokio::spawn(async move {
        let reply = post(addr, &[("mcp-protocol-version", "2025-06-18")], LIST).await;
        reply.body.len()
    });
    let sender = tokio::time::timeout(Duration::from_secs(10), streams.recv()).await?.ok_or("no request")?;
    sender.send(Bytes::from_static(EVENT)).await?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    sender.send(Bytes::from_static(EVENT)).await?;
    drop(sender);
    let received = response.await?;
    let line = process.wait_for("request")?;
    assert_logged(&line, 200, "complete");
    assert_eq!(line["bytes"], received as u64, "{line}");
    assert_eq!(line["bytes"], 2 * EVENT.len() as u64, "{line}");
    let duration = line["duration_ms"].as_f64().ok_or("no duration")?;
    assert!(duration >= 600.0, "logged at the end, not at the head: {line}");
    let text = line["duration_ms"].to_string();
    assert!(text.split('.').nth(1).is_none_or(|decimals| decimals.len() <= 3), "no float noise: {text}");

    // A client that goes away part-way.
    let mut client = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "POST /mcp HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\nmcp-protocol-version: 2025-06-18\r\ncontent-length: {}\r\n\r\n{LIST}",
        LIST.len()
    );
    tokio::io::AsyncWriteExt::write_all(&mut client, request.as_bytes()).await?;
    let sender = tokio::time::timeout(Duration::from_secs(10), streams.recv()).await?.ok_or("no request")?;
    sender.send(Bytes::from_static(EVENT)).await?;
    let mut head = [0u8; 512];
    tokio::io::AsyncReadExt::read(&mut client, &mut head).await?;
    drop(client);
    // The next event finds no one to take it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = sender.send(Bytes::from_static(EVENT)).await;
    let line = process.wait_for("request")?;
    assert_logged(&line, 200, "client_gone");
    Ok(())
}

#[tokio::test]
async fn an_upstream_breaking_off_is_logged_as_such() -> TestResult {
    let dying = vec![
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n".to_vec(),
        format!("{:x}\r\n", EVENT.len())
            .into_bytes()
            .into_iter()
            .chain(EVENT.iter().copied())
            .chain(*b"\r\n")
            .collect(),
        b"20\r\nevent: message\ndata: {\"partial".to_vec(),
    ];
    let upstream = start_raw_upstream(dying, false).await;
    let (process, addr) = binary_in_front_of(upstream)?;
    let reply = post(addr, &[("mcp-protocol-version", "2025-06-18")], LIST).await;
    assert_eq!(reply.body.len(), EVENT.len());
    let line = process.wait_for("request")?;
    assert_logged(&line, 200, "upstream_gone");
    Ok(())
}

#[tokio::test]
async fn a_stream_withheld_part_way_is_logged_as_such() -> TestResult {
    // A list result toolgate cannot read (duplicate keys): withheld.
    let stream =
        b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[],\"tools\":[]}}\n\n";
    let upstream =
        start_raw_upstream(answer("HTTP/1.1 200 OK\ncontent-type: text/event-stream", stream), false).await;
    let (process, addr) = binary_in_front_of(upstream)?;
    let reply = post(addr, &[("mcp-protocol-version", "2025-06-18")], LIST).await;
    assert!(reply.text().contains("withheld"), "{}", reply.text());
    let line = process.wait_for("request")?;
    assert_logged(&line, 200, "withheld");
    assert_eq!(line["bytes"], reply.body.len() as u64, "{line}");
    Ok(())
}
