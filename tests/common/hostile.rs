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

/// What a kept-alive upstream does once it has answered a connection's
/// quota of requests.
#[derive(Clone, Copy, Debug)]
pub enum Then {
    /// Keep answering.
    Serve,
    /// Close the connection soon after, as an idle timeout does.
    Close,
    /// Read the next request, then close without answering.
    ReadAndClose,
}

/// An upstream that keeps connections alive, counting them and the
/// requests it reads.
pub struct KeptAlive {
    pub addr: SocketAddr,
    pub connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl KeptAlive {
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Reads one HTTP/1.1 request (head and `Content-Length` body) from
/// `stream`, keeping what follows it in `pending`; false at the end.
async fn read_request(stream: &mut tokio::net::TcpStream, pending: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 << 10];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if pending.len() >= end + 4 + length {
                pending.drain(..end + 4 + length);
                return true;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
        }
    }
}

/// An upstream that answers `answers` requests per connection with
/// `reply` (a whole HTTP/1.1 answer, kept alive), then does `then`.
pub async fn start_kept_alive_upstream(reply: Vec<u8>, answers: usize, then: Then) -> KeptAlive {
    use std::sync::atomic::Ordering;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reply = std::sync::Arc::new(reply);
    let counted = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            counted.0.fetch_add(1, Ordering::SeqCst);
            let (requests, reply) = (counted.1.clone(), reply.clone());
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut answered = 0;
                loop {
                    if answered == answers {
                        match then {
                            Then::Serve => {}
                            Then::Close => {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                return;
                            }
                            Then::ReadAndClose => {
                                if read_request(&mut stream, &mut pending).await {
                                    requests.fetch_add(1, Ordering::SeqCst);
                                }
                                return;
                            }
                        }
                    }
                    if !read_request(&mut stream, &mut pending).await {
                        return;
                    }
                    requests.fetch_add(1, Ordering::SeqCst);
                    if stream.write_all(&reply).await.is_err() {
                        return;
                    }
                    answered += 1;
                }
            });
        }
    });
    KeptAlive { addr, connections, requests }
}

/// A whole HTTP/1.1 answer that keeps the connection alive.
pub fn kept_alive_answer(head: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = head.trim_end().replace('\n', "\r\n").into_bytes();
    if !head.to_ascii_lowercase().contains("transfer-encoding") {
        bytes.extend_from_slice(format!("\r\ncontent-length: {}", body.len()).as_bytes());
    }
    bytes.extend_from_slice(b"\r\n\r\n");
    bytes.extend_from_slice(body);
    bytes
}
