use super::*;
use http_body_util::BodyExt;
use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Answers with the request's method, target and body, read whole.
async fn echo(request: Request<ClientBody>) -> Response<ProxyBody> {
    let (parts, body) = request.into_parts();
    let text = match body.collect().await {
        Ok(collected) => {
            let bytes = collected.to_bytes();
            format!("{} {} {}", parts.method, parts.uri, String::from_utf8_lossy(&bytes))
        }
        Err(error) => format!("body error: {error}"),
    };
    Response::new(http_body_util::Full::new(Bytes::from(text)).map_err(|never| match never {}).boxed_unsync())
}

/// A connection served with `handle`, and the client's end of it.
async fn connected<H, Fut>(
    handle: H,
) -> Result<(TcpStream, tokio::task::JoinHandle<Result<(), Error>>), io::Error>
where
    H: Fn(Request<ClientBody>) -> Fut + Send + 'static,
    Fut: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let client = TcpStream::connect(listener.local_addr()?).await?;
    let (server, _) = listener.accept().await?;
    let served = tokio::spawn(async move {
        let closing = AtomicBool::new(false);
        serve(server, b"", handle, &closing, Duration::from_secs(5)).await
    });
    Ok((client, served))
}

/// Everything the server sends until it closes (or 5 s pass).
async fn read_to_close(client: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut all)).await;
    String::from_utf8_lossy(&all).into_owned()
}

/// Reads until `ending` has been received `times` times.
async fn read_until(client: &mut TcpStream, ending: &str, times: usize) -> String {
    let mut all = Vec::new();
    let mut chunk = [0u8; 4096];
    while String::from_utf8_lossy(&all).matches(ending).count() < times {
        match tokio::time::timeout(Duration::from_secs(5), client.read(&mut chunk)).await {
            Ok(Ok(read)) if read > 0 => all.extend_from_slice(&chunk[..read]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

#[tokio::test]
async fn requests_with_length_and_chunked_bodies_are_answered_in_order_on_one_connection() -> TestResult {
    let (mut client, _served) = connected(echo).await?;
    // Two requests in one write: the second waits for the first's answer.
    client
        .write_all(
            b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello\
              POST /b HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nt: v\r\n\r\n",
        )
        .await?;
    let answers = read_until(&mut client, "\r\n\r\n", 2).await;
    let answers = if answers.contains("abcde") {
        answers
    } else {
        answers + &read_until(&mut client, "abcde", 1).await
    };
    let first = answers.find("POST /a hello").ok_or("first answer")?;
    let second = answers.find("POST /b abcde").ok_or("second answer")?;
    assert!(first < second, "{answers}");
    assert_eq!(answers.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{answers}");
    assert!(answers.contains("content-length: 13\r\n"), "{answers}");
    assert!(!answers.contains("connection: close"), "kept open: {answers}");
    Ok(())
}

#[tokio::test]
async fn heads_that_could_be_framed_two_ways_are_refused_and_the_connection_closed() -> TestResult {
    let cases: [(&str, &str); 10] = [
        ("POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n", "400"),
        ("POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip, chunked\r\n\r\n", "501"),
        (
            "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n",
            "501",
        ),
        ("POST / HTTP/1.0\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n", "400"),
        ("POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n", "400"),
        ("POST / HTTP/1.1\r\nhost: x\r\ncontent-length: +3\r\n\r\n", "400"),
        ("POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n", "400"),
        ("POST / HTTP/1.1\r\nhost: x\r\nhost: y\r\n\r\n", "400"),
        ("POST / HTTP/1.1\r\nhost: x\r\n folded: value\r\n\r\n", "400"),
        ("GARBAGE\r\n", "400"),
    ];
    for (head, status) in cases {
        let (mut client, served) = connected(echo).await?;
        client.write_all(head.as_bytes()).await?;
        // Closing its side ends the server's lingering read at once.
        client.shutdown().await?;
        let answer = read_to_close(&mut client).await;
        assert!(answer.starts_with(&format!("HTTP/1.1 {status} ")), "{head:?} → {answer:?}");
        assert!(answer.contains("connection: close\r\n"), "{answer}");
        assert!(answer.contains("\"code\":-32600"), "a JSON-RPC error, as every refusal: {answer}");
        assert!(matches!(served.await?, Err(Error::Head(_))), "{head:?}");
    }
    Ok(())
}

#[tokio::test]
async fn heads_past_their_bounds_are_refused_with_431() -> TestResult {
    let long = format!("GET / HTTP/1.1\r\nhost: x\r\nx: {}\r\n\r\n", "a".repeat(request::MAX_HEAD));
    let many = format!("GET / HTTP/1.1\r\nhost: x\r\n{}\r\n", "x: y\r\n".repeat(request::MAX_FIELDS + 1));
    // Empty lines before a head count against its bound.
    let blank = "\r\n".repeat(request::MAX_HEAD);
    for head in [long, many, blank] {
        let (mut client, _served) = connected(echo).await?;
        let _ = client.write_all(head.as_bytes()).await;
        let answer = read_to_close(&mut client).await;
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_head_trickled_in_pieces_is_read() -> TestResult {
    let (mut client, _served) = connected(echo).await?;
    for piece in ["\r\nGET /t", "rickled HTTP/1.1\r", "\nhost: x\r\n", "\r\n"] {
        client.write_all(piece.as_bytes()).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = read_until(&mut client, "GET /trickled ", 1).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer:?}");
    Ok(())
}

#[tokio::test]
async fn continue_is_sent_when_the_body_is_first_read_and_not_before() -> TestResult {
    let reads = Arc::new(AtomicUsize::new(0));
    let seen = reads.clone();
    let (mut client, _served) = connected(move |request: Request<ClientBody>| {
        let seen = seen.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            seen.fetch_add(1, Ordering::SeqCst);
            echo(request).await
        }
    })
    .await?;
    client
        .write_all(b"POST /c HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n")
        .await?;
    let mut first = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut first)).await??;
    assert_eq!(&first[..read], b"HTTP/1.1 100 Continue\r\n\r\n");
    assert_eq!(reads.load(Ordering::SeqCst), 1, "sent once the handler reads the body");
    client.write_all(b"ok").await?;
    let answer = read_until(&mut client, "POST /c ok", 1).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer:?}");
    Ok(())
}

/// A body of unknown length: these chunks, then its end.
struct Chunks(VecDeque<&'static str>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Poll::Ready(
            self.0.pop_front().map(|chunk| Ok(http_body::Frame::data(Bytes::from_static(chunk.as_bytes())))),
        )
    }
}

fn streamed(chunks: Vec<&'static str>) -> ProxyBody {
    Chunks(chunks.into()).boxed_unsync()
}

/// An event stream that never sends: it holds a [`Dropped`].
struct Silent {
    _guard: Dropped,
}

impl http_body::Body for Silent {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Poll::Pending
    }
}

#[tokio::test]
async fn answers_of_unknown_length_are_chunked_and_close_delimited_for_http10() -> TestResult {
    let (mut client, _served) =
        connected(|_| async { Response::new(streamed(vec!["ab", "", "cde"])) }).await?;
    client.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await?;
    let answer = read_until(&mut client, "0\r\n\r\n", 1).await;
    assert!(answer.contains("transfer-encoding: chunked\r\n"), "{answer:?}");
    assert!(answer.ends_with("\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"), "{answer:?}");

    let (mut client, served) = connected(|_| async { Response::new(streamed(vec!["ab", "cde"])) }).await?;
    client.write_all(b"GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n").await?;
    let answer = read_to_close(&mut client).await;
    assert!(!answer.contains("transfer-encoding"), "{answer:?}");
    assert!(answer.contains("connection: close\r\n") && answer.ends_with("\r\n\r\nabcde"), "{answer:?}");
    assert!(served.await?.is_ok());
    Ok(())
}

/// A body that learns of its end only when polled after its last bytes
/// (a stream whose source has just ended), noting then whether any of
/// the answer had reached the client.
struct EndsUnannounced {
    sent: bool,
    client: std::net::TcpStream,
    answer_out_before_end: Arc<AtomicBool>,
}

impl http_body::Body for EndsUnannounced {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if !self.sent {
            self.sent = true;
            return Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(b"abc")))));
        }
        // Loopback delivers within the write: any write made so far is here.
        let out = self.client.peek(&mut [0u8; 1]).is_ok();
        self.answer_out_before_end.store(out, Ordering::SeqCst);
        Poll::Ready(None)
    }
}

#[tokio::test]
async fn the_last_bytes_and_the_chunked_terminator_go_out_in_one_write() -> TestResult {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let client = TcpStream::connect(listener.local_addr()?).await?.into_std()?;
    let peeker = client.try_clone()?;
    let mut client = TcpStream::from_std(client)?;
    let (server, _) = listener.accept().await?;
    let out_early = Arc::new(AtomicBool::new(false));
    let noted = out_early.clone();
    let peeker = Arc::new(Mutex::new(Some(peeker)));
    let handle = move |_| {
        let peeker = peeker.lock().ok().and_then(|mut slot| slot.take());
        let noted = noted.clone();
        async move {
            let Some(client) = peeker else { return Response::new(streamed(vec!["again"])) };
            let body = EndsUnannounced { sent: false, client, answer_out_before_end: noted };
            Response::new(body.boxed_unsync())
        }
    };
    let _served = tokio::spawn(async move {
        let closing = AtomicBool::new(false);
        serve(server, b"", handle, &closing, Duration::from_secs(5)).await
    });
    client.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await?;
    let answer = read_until(&mut client, "0\r\n\r\n", 1).await;
    assert!(answer.ends_with("\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), "{answer:?}");
    assert!(
        !out_early.load(Ordering::SeqCst),
        "the head and `abc` were written before the end was asked for"
    );
    Ok(())
}

#[tokio::test]
async fn http10_keep_alive_is_honoured_for_answers_of_known_length() -> TestResult {
    let (mut client, _served) = connected(echo).await?;
    client.write_all(b"GET /1 HTTP/1.0\r\nconnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n").await?;
    let answers = read_to_close(&mut client).await;
    assert!(answers.contains("connection: keep-alive\r\n") && answers.contains("GET /1 "), "{answers:?}");
    assert!(answers.contains("connection: close\r\n") && answers.ends_with("GET /2 "), "{answers:?}");
    Ok(())
}

#[tokio::test]
async fn a_head_request_gets_no_body() -> TestResult {
    let (mut client, _served) = connected(echo).await?;
    client
        .write_all(
            b"HEAD /h HTTP/1.1\r\nhost: x\r\n\r\nGET /g HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await?;
    let answers = read_to_close(&mut client).await;
    assert!(!answers.contains("HEAD /h"), "{answers:?}");
    assert!(answers.ends_with("GET /g "), "the next answer follows the head at once: {answers:?}");
    Ok(())
}

#[tokio::test]
async fn a_body_left_unread_closes_the_connection_after_the_answer() -> TestResult {
    let (mut client, served) = connected(|_| async { Response::new(streamed(vec!["no"])) }).await?;
    client.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n0123").await?;
    let answer = read_to_close(&mut client).await;
    assert!(
        answer.contains("connection: close\r\n") && answer.ends_with("2\r\nno\r\n0\r\n\r\n"),
        "{answer:?}"
    );
    assert!(served.await?.is_ok());
    Ok(())
}

#[tokio::test]
async fn a_malformed_chunked_body_is_an_error_to_the_handler_and_ends_the_connection() -> TestResult {
    let (mut client, _served) = connected(echo).await?;
    client
        .write_all(b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n")
        .await?;
    let answer = read_to_close(&mut client).await;
    assert!(answer.contains("body error: ") && answer.contains("connection: close\r\n"), "{answer:?}");
    Ok(())
}

/// Counts its drops: the exchange a departed client leaves is dropped.
struct Dropped(Arc<AtomicUsize>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_client_that_leaves_has_its_pending_exchange_and_its_stream_dropped() -> TestResult {
    for streaming in [false, true] {
        let drops = Arc::new(AtomicUsize::new(0));
        let counted = drops.clone();
        let (mut client, served) = connected(move |_| {
            let guard = Dropped(counted.clone());
            async move {
                if !streaming {
                    std::future::pending::<()>().await;
                }
                Response::new(Silent { _guard: guard }.boxed_unsync())
            }
        })
        .await?;
        client.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await?;
        if streaming {
            let head = read_until(&mut client, "\r\n\r\n", 1).await;
            assert!(
                head.contains("transfer-encoding: chunked"),
                "the head goes out before any event: {head:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        drop(client);
        assert!(tokio::time::timeout(Duration::from_secs(5), served).await?.is_ok());
        assert_eq!(drops.load(Ordering::SeqCst), 1, "streaming: {streaming}");
    }
    Ok(())
}

#[tokio::test]
async fn closing_lets_the_current_exchange_finish_then_ends_the_connection() -> TestResult {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let mut client = TcpStream::connect(listener.local_addr()?).await?;
    let (server, _) = listener.accept().await?;
    let closing = Arc::new(AtomicBool::new(false));
    let flag = closing.clone();
    let handle = move |request| {
        let flag = flag.clone();
        async move {
            flag.store(true, Ordering::SeqCst);
            echo(request).await
        }
    };
    let served =
        tokio::spawn(async move { serve(server, b"", handle, &closing, Duration::from_secs(5)).await });
    client.write_all(b"GET /last HTTP/1.1\r\nhost: x\r\n\r\n").await?;
    let answer = read_to_close(&mut client).await;
    assert!(answer.contains("connection: close\r\n") && answer.ends_with("GET /last "), "{answer:?}");
    assert!(served.await?.is_ok());
    Ok(())
}

#[test]
fn the_date_field_is_now_as_an_http_date() -> TestResult {
    let text = date();
    let parsed = httpdate::parse_http_date(std::str::from_utf8(&text)?)?;
    let apart = std::time::SystemTime::now().duration_since(parsed)?;
    assert!(apart < Duration::from_secs(2), "{apart:?}");
    Ok(())
}

/// A stream of large events without end.
struct Endless;

impl http_body::Body for Endless {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(vec![b'x'; 64 * 1024])))))
    }
}

#[tokio::test]
async fn a_client_that_takes_nothing_is_cut_off_after_the_stall_time() -> TestResult {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let mut client = TcpStream::connect(listener.local_addr()?).await?;
    let (server, _) = listener.accept().await?;
    let handle = |_| async { Response::new(Endless.boxed_unsync()) };
    let served = tokio::spawn(async move {
        let closing = AtomicBool::new(false);
        serve(server, b"", handle, &closing, Duration::from_millis(200)).await
    });
    client.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await?;
    let ended = tokio::time::timeout(Duration::from_secs(10), served).await??;
    assert!(
        matches!(ended, Err(Error::Io(ref error)) if error.kind() == io::ErrorKind::TimedOut),
        "{ended:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_client_that_leaves_a_body_unsent_is_still_watched() -> TestResult {
    let drops = Arc::new(AtomicUsize::new(0));
    let counted = drops.clone();
    let (mut client, served) = connected(move |request: Request<ClientBody>| {
        drop(request);
        let guard = Dropped(counted.clone());
        async move { Response::new(Silent { _guard: guard }.boxed_unsync()) }
    })
    .await?;
    client.write_all(b"GET / HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\n").await?;
    let head = read_until(&mut client, "\r\n\r\n", 1).await;
    assert!(head.contains("connection: close"), "{head:?}");
    drop(client);
    assert!(tokio::time::timeout(Duration::from_secs(5), served).await?.is_ok());
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    Ok(())
}

#[tokio::test]
async fn requests_sent_ahead_are_answered_though_the_client_then_half_closes() -> TestResult {
    // A half-close with a request waiting its turn is not leaving: both
    // are answered. (With nothing waiting, it cannot be told from
    // leaving, and is taken as such, as hyper takes it.)
    let (mut client, _served) = connected(|request| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        echo(request).await
    })
    .await?;
    client.write_all(b"GET /1 HTTP/1.1\r\nhost: x\r\n\r\nGET /2 HTTP/1.1\r\nhost: x\r\n\r\n").await?;
    client.shutdown().await?;
    let answers = read_to_close(&mut client).await;
    assert!(answers.contains("GET /1 ") && answers.ends_with("GET /2 "), "{answers:?}");
    Ok(())
}

#[tokio::test]
async fn an_interim_status_as_the_answer_becomes_a_502() -> TestResult {
    let (mut client, _served) = connected(|_| async {
        let mut response = Response::new(ProxyBody::default());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        response
    })
    .await?;
    client.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await?;
    let answer = read_to_close(&mut client).await;
    assert!(answer.starts_with("HTTP/1.1 502 ") && answer.contains("connection: close\r\n"), "{answer:?}");
    Ok(())
}

#[tokio::test]
async fn a_short_body_left_unread_but_already_here_keeps_the_connection() -> TestResult {
    let (mut client, _served) = connected(|request: Request<ClientBody>| async move {
        Response::new(streamed(vec![if request.uri().path() == "/1" { "one" } else { "two" }]))
    })
    .await?;
    client
        .write_all(b"POST /1 HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\nbodyHEAD /2 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await?;
    let answers = read_until(&mut client, "\r\n\r\n", 3).await;
    assert!(answers.contains("3\r\none\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n"), "{answers:?}");
    assert!(!answers.contains("connection: close") && !answers.contains("two"), "{answers:?}");
    Ok(())
}

#[tokio::test]
async fn a_head_answer_says_the_length_a_get_would_have() -> TestResult {
    let (mut client, _served) = connected(echo).await?;
    client.write_all(b"HEAD /h HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await?;
    let answer = read_to_close(&mut client).await;
    assert!(answer.contains("content-length: 8\r\n") && answer.ends_with("\r\n\r\n"), "{answer:?}");
    Ok(())
}

#[tokio::test]
async fn an_answer_sent_before_a_large_body_is_read_reaches_the_client_whole() -> TestResult {
    let (client, _served) = connected(|_| async { Response::new(streamed(vec!["refused"])) }).await?;
    let (mut reader, mut writer) = client.into_split();
    let body = vec![b'x'; 4 * 1024 * 1024];
    let sending = tokio::spawn(async move {
        let _ = writer.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 4194304\r\n\r\n").await;
        let _ = writer.write_all(&body).await;
        writer
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut answer)).await?;
    assert!(read.is_ok(), "no reset: {read:?}");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200 ") && answer.ends_with("7\r\nrefused\r\n0\r\n\r\n"),
        "{answer:?}"
    );
    drop(sending.await?);
    Ok(())
}

#[tokio::test]
async fn a_client_that_sends_a_byte_more_and_leaves_is_still_noticed() -> TestResult {
    let drops = Arc::new(AtomicUsize::new(0));
    let counted = drops.clone();
    let (mut client, served) = connected(move |_| {
        let guard = Dropped(counted.clone());
        async move { Response::new(Silent { _guard: guard }.boxed_unsync()) }
    })
    .await?;
    client.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await?;
    let head = read_until(&mut client, "\r\n\r\n", 1).await;
    assert!(head.contains("transfer-encoding: chunked"), "{head:?}");
    // The start of a next request, then a reset.
    client.write_all(b"\r\nG").await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.set_zero_linger()?;
    drop(client);
    assert!(tokio::time::timeout(Duration::from_secs(5), served).await?.is_ok());
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    Ok(())
}

#[tokio::test]
async fn a_large_head_that_comes_with_its_body_is_not_taken_for_too_large() -> TestResult {
    let (mut client, _served) = connected(echo).await?;
    let head = format!(
        "POST /big HTTP/1.1\r\nhost: x\r\nx: {}\r\ncontent-length: 8192\r\nconnection: close\r\n\r\n",
        "a".repeat(request::MAX_HEAD - 200)
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(&[b'b'; 8192]);
    client.write_all(&request).await?;
    let answer = read_to_close(&mut client).await;
    assert!(
        answer.starts_with("HTTP/1.1 200 ") && answer.contains("POST /big bbbb"),
        "{:?}",
        &answer[..answer.len().min(200)]
    );
    Ok(())
}
