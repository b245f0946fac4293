//! Hostile upstreams: small servers that answer with exactly the bytes a
//! test crafts, to see what toolgate forwards of answers no SDK would send.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An upstream that answers every connection's first request with `script`,
/// written chunk by chunk 20 ms apart, then closes (or, with `hang`, holds
/// the connection open).
pub async fn start_raw_upstream(script: Vec<Vec<u8>>, hang: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let script = std::sync::Arc::new(script);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let script = script.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 64 << 10];
                let _ = stream.read(&mut buffer).await;
                for chunk in script.iter() {
                    let _ = stream.write_all(chunk).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if hang {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                // Dropping the socket mid-body is the upstream dying.
            });
        }
    });
    addr
}

/// A whole HTTP/1.1 answer: `head` is the status line and header lines
/// (without the blank line); a `Content-Length` is added unless `head`
/// has one or says `transfer-encoding`.
pub fn answer(head: &str, body: &[u8]) -> Vec<Vec<u8>> {
    let lower = head.to_ascii_lowercase();
    let mut bytes = head.trim_end().replace('\n', "\r\n").into_bytes();
    if !lower.contains("content-length") && !lower.contains("transfer-encoding") {
        bytes.extend_from_slice(format!("\r\ncontent-length: {}", body.len()).as_bytes());
    }
    bytes.extend_from_slice(b"\r\nconnection: close\r\n\r\n");
    bytes.extend_from_slice(body);
    vec![bytes]
}
