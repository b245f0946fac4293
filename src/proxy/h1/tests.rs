use super::*;
use http_body_util::BodyExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// What the upstream does after its scripted answers.
#[derive(Clone, Copy)]
enum After {
    Close,
    Hold,
    /// Writes an answer nobody asked for, a moment later, and holds.
    Unasked,
}

/// An upstream on one connection: for each answer, reads one request
/// (head and `content-length` body) and writes the answer's bytes as
/// given. The requests it read come out of the channel.
async fn upstream(
    answers: Vec<Vec<u8>>,
    after: After,
) -> io::Result<(TcpStream, mpsc::UnboundedReceiver<Vec<u8>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let (sent, requests) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let Ok((mut socket, _)) = listener.accept().await else { return };
        let mut buf = Vec::new();
        for answer in answers {
            let Some(request) = read_request(&mut socket, &mut buf).await else { return };
            let _ = sent.send(request);
            if socket.write_all(&answer).await.is_err() {
                return;
            }
        }
        if let After::Unasked = after {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        }
        if let After::Hold | After::Unasked = after {
            let mut rest = Vec::new();
            let _ = socket.read_to_end(&mut rest).await;
        }
    });
    Ok((TcpStream::connect(address).await?, requests))
}

async fn read_request(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Some(end) = buf.windows(4).position(|window| window == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .and_then(|value| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return Some(buf.drain(..end + 4 + length).collect());
            }
        }
        let mut more = [0u8; 4096];
        match socket.read(&mut more).await {
            Ok(0) | Err(_) => return None,
            Ok(read) => buf.extend_from_slice(&more[..read]),
        }
    }
}

/// Reads a request's head and nothing past it.
async fn head_only(socket: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(socket.read_u8().await.ok()?);
    }
    Some(head)
}

fn post(body: &'static str) -> Request<Bytes> {
    let mut request = Request::new(Bytes::from_static(body.as_bytes()));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = http::Uri::from_static("/mcp?x=1");
    request.headers_mut().insert(http::header::HOST, http::HeaderValue::from_static("upstream"));
    request
}

fn kept() -> Arc<Kept> {
    Kept::new(8, Duration::from_secs(60))
}

async fn send(conn: Conn, request: Request<Bytes>, kept: &Arc<Kept>) -> Result<Response<Body>, Error> {
    exchange(conn, request, kept).await.map_err(|failure| match failure {
        Failure::Unsent(_, error) | Failure::Failed(error) => error,
    })
}

async fn whole(response: Response<Body>) -> Result<Bytes, Error> {
    Ok(response.into_body().collect().await?.to_bytes())
}

#[tokio::test]
async fn one_connection_carries_answers_of_every_framing_in_turn() -> TestResult {
    let answers = vec![
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}".to_vec(),
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-t: 1\r\n\r\n"
            .to_vec(),
        b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nend".to_vec(),
    ];
    let (io, mut requests) = upstream(answers, After::Hold).await?;
    let kept = kept();
    let mut conn = Conn::new(io);
    for expected in [&b"{}"[..], b"abc", b"", b"end"] {
        let response = send(conn, post(r#"{"id":1}"#), &kept).await?;
        assert_eq!(whole(response).await?, expected);
        assert_eq!(kept.len(), 1, "the connection came back after {expected:?}");
        conn = kept.checkout().ok_or("no connection kept")?;
        assert!(conn.buf.is_empty() && conn.buf.capacity() == 0, "an idle connection holds no buffer");
    }
    let first = requests.recv().await.ok_or("no request")?;
    assert_eq!(
        String::from_utf8(first)?,
        "POST /mcp?x=1 HTTP/1.1\r\nhost: upstream\r\ncontent-length: 8\r\n\r\n{\"id\":1}"
    );
    Ok(())
}

#[tokio::test]
async fn a_long_body_follows_its_head_whole() -> TestResult {
    let long: &'static str = Box::leak("x".repeat(INLINE_BODY * 3).into_boxed_str());
    let (io, mut requests) = upstream(vec![b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()], After::Hold).await?;
    let response = send(Conn::new(io), post(long), &kept()).await?;
    assert_eq!(response.status(), http::StatusCode::NO_CONTENT);
    let request = requests.recv().await.ok_or("no request")?;
    assert!(request.ends_with(long.as_bytes()));
    Ok(())
}

#[tokio::test]
async fn a_connection_is_not_kept_unless_its_answer_ended_exactly_and_allows_it() -> TestResult {
    for answer in [
        // Bytes past the declared length: the framing is not to be trusted.
        &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}EXTRA"[..],
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\nEXTRA",
        b"HTTP/1.1 204 No Content\r\n\r\nEXTRA",
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}",
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n{}",
    ] {
        let (io, _requests) = upstream(vec![answer.to_vec()], After::Hold).await?;
        let kept = kept();
        let response = send(Conn::new(io), post("{}"), &kept).await?;
        let _ = whole(response).await;
        assert_eq!(kept.len(), 0, "kept after {:?}", String::from_utf8_lossy(answer));
    }
    Ok(())
}

#[tokio::test]
async fn a_body_to_the_close_is_read_whole_and_its_connection_goes() -> TestResult {
    let (io, _requests) = upstream(vec![b"HTTP/1.1 200 OK\r\n\r\nevery byte".to_vec()], After::Close).await?;
    let kept = kept();
    assert_eq!(whole(send(Conn::new(io), post("{}"), &kept).await?).await?, "every byte");
    assert_eq!(kept.len(), 0);
    Ok(())
}

#[tokio::test]
async fn a_body_cut_short_is_an_error_never_a_shorter_body() -> TestResult {
    for answer in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"[..],
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nshort\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nsho",
    ] {
        let (io, _requests) = upstream(vec![answer.to_vec()], After::Close).await?;
        let response = send(Conn::new(io), post("{}"), &kept()).await?;
        assert!(
            matches!(whole(response).await, Err(Error::ClosedBeforeEnd)),
            "{:?} was read as whole",
            String::from_utf8_lossy(answer)
        );
    }
    let (io, _requests) = upstream(vec![b"HTTP/1.1 200 OK\r\ncontent-le".to_vec()], After::Close).await?;
    assert!(matches!(send(Conn::new(io), post("{}"), &kept()).await, Err(Error::ClosedBeforeHead)));
    Ok(())
}

#[tokio::test]
async fn a_connection_closed_or_talked_on_while_idle_is_not_lent() -> TestResult {
    for after in [After::Close, After::Unasked] {
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}".to_vec();
        let (io, _requests) = upstream(vec![answer], after).await?;
        let kept = kept();
        let response = send(Conn::new(io), post("{}"), &kept).await?;
        assert_eq!(whole(response).await?, "{}");
        assert_eq!(kept.len(), 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(kept.checkout().is_none(), "a connection the upstream closed or wrote on was lent");
    }
    Ok(())
}

#[tokio::test]
async fn a_body_dropped_before_its_end_takes_its_connection_with_it() -> TestResult {
    let (io, _requests) =
        upstream(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf".to_vec()], After::Hold).await?;
    let kept = kept();
    let response = send(Conn::new(io), post("{}"), &kept).await?;
    let mut body = response.into_body();
    assert_eq!(body.frame().await.ok_or("no frame")??.into_data().ok(), Some(Bytes::from_static(b"half")));
    drop(body);
    assert_eq!(kept.len(), 0);
    Ok(())
}

#[tokio::test]
async fn a_waiting_stream_holds_no_read_buffer() -> TestResult {
    let answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n7\r\ndata: 1\r\n";
    let (io, _requests) = upstream(vec![answer.to_vec()], After::Hold).await?;
    let response = send(Conn::new(io), post("{}"), &kept()).await?;
    let mut body = response.into_body();
    assert_eq!(body.frame().await.ok_or("no frame")??.into_data().ok(), Some(Bytes::from_static(b"data: 1")));
    let waiting = tokio::time::timeout(Duration::from_millis(50), body.frame()).await;
    assert!(waiting.is_err(), "the stream ended");
    let conn = body.conn.as_ref().ok_or("the stream let its connection go")?;
    assert_eq!(conn.buf.capacity(), 0);
    Ok(())
}

#[tokio::test]
async fn an_answer_sent_a_byte_at_a_time_is_read_whole() -> TestResult {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        let Ok((mut socket, _)) = listener.accept().await else { return };
        let _ = read_request(&mut socket, &mut Vec::new()).await;
        let answer = b"\r\n\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
        for byte in answer {
            if socket.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let _ = socket.read_to_end(&mut Vec::new()).await;
    });
    let kept = kept();
    let response = send(Conn::new(TcpStream::connect(address).await?), post("{}"), &kept).await?;
    assert_eq!(whole(response).await?, "{}");
    assert_eq!(kept.len(), 1);
    Ok(())
}

#[tokio::test]
async fn an_answer_before_a_long_body_is_read_is_forwarded_and_its_connection_goes() -> TestResult {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        let Ok((mut socket, _)) = listener.accept().await else { return };
        // Reads the head only, answers, and reads no more for a while.
        if head_only(&mut socket).await.is_none() {
            return;
        }
        let _ = socket.write_all(b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 0\r\n\r\n").await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let long: &'static str = Box::leak("x".repeat(32 << 20).into_boxed_str());
    let kept = kept();
    let sending = send(Conn::new(TcpStream::connect(address).await?), post(long), &kept);
    let response = tokio::time::timeout(Duration::from_secs(10), sending).await??;
    assert_eq!(response.status(), http::StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(whole(response).await?, "");
    assert_eq!(kept.len(), 0, "a connection with a request half sent was kept");
    Ok(())
}

#[tokio::test]
async fn an_answer_begun_before_a_long_body_was_read_still_gets_all_of_it() -> TestResult {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        let Ok((mut socket, _)) = listener.accept().await else { return };
        // Sends its answer's head at once, then reads the body, then ends.
        let Some(head) = head_only(&mut socket).await else { return };
        let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").await;
        let length = String::from_utf8_lossy(&head)
            .lines()
            .find_map(|line| {
                line.strip_prefix("content-length: ").and_then(|value| value.trim().parse().ok())
            })
            .unwrap_or(0usize);
        let mut body = vec![0u8; length];
        if socket.read_exact(&mut body).await.is_ok() {
            let _ = socket
                .write_all(format!("{:x}\r\n{length}\r\n0\r\n\r\n", length.to_string().len()).as_bytes())
                .await;
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let long: &'static str = Box::leak("x".repeat(32 << 20).into_boxed_str());
    let kept = kept();
    let sending = send(Conn::new(TcpStream::connect(address).await?), post(long), &kept);
    let response = tokio::time::timeout(Duration::from_secs(10), sending).await??;
    let body = tokio::time::timeout(Duration::from_secs(10), whole(response)).await??;
    assert_eq!(body, (32usize << 20).to_string(), "the upstream read the whole body");
    Ok(())
}

#[tokio::test]
async fn an_answer_that_starts_malformed_fails_at_once() -> TestResult {
    for start in
        [&b"SSH-2.0-OpenSSH\r\n"[..], b"HTTP/1.1 2000 OK\r\n", b"\r\n\nHTTP/1.1 200 OK\r\nbad field: 1\r\n"]
    {
        let (io, _requests) = upstream(vec![start.to_vec()], After::Hold).await?;
        let kept = kept();
        let sending = send(Conn::new(io), post("{}"), &kept);
        let failed = tokio::time::timeout(Duration::from_secs(10), sending).await?;
        assert!(
            matches!(failed, Err(Error::Framing(FramingError::Malformed(_)))),
            "{:?}: {failed:?}",
            String::from_utf8_lossy(start)
        );
    }
    Ok(())
}
