//! TLS on both sides, with certificates made in each test: the listener
//! over HTTP/1.1 and HTTP/2, certificate rotation under an open stream,
//! client certificates verified and used as `mtls` principals, and HTTPS
//! upstreams (private CA, HTTP/2, client certificate, wrong name).

mod common;

use bytes::Bytes;
use common::tls::*;
use common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const CALL_ECHO: &str =
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;
const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

/// A policy whose proxy listener speaks TLS with `certs/cert.pem` and
/// `certs/key.pem`, plus `listen_tls` (further `listen.tls` keys) and `top`.
fn tls_policy(upstream_url: &str, listen_tls: &str, top: &str) -> String {
    let servers = if top.contains("virtual_servers:") { "" } else { ALLOW_ALL };
    format!(
        "version: 1\nlisten:\n  drain: 5s\n  tls:\n    cert_file: certs/cert.pem\n    key_file: certs/key.pem\n{listen_tls}\nupstream:\n  url: {upstream_url}\n  response_timeout: 5s\ntransport:\n  allowed_hosts: [localhost, 127.0.0.1]\n{top}\n{servers}"
    )
}

/// Writes the policy beside its certificates and starts toolgate.
async fn start_in(dir: &Path, policy: &str) -> Gate {
    let file = dir.join("policy.yaml");
    std::fs::write(&file, policy).expect("write the policy");
    start_gate_with_file(&file).await
}

/// Connects and sends one request: the TLS handshake and the request fail
/// together when a client certificate is refused (under TLS 1.3 the client
/// learns of it only when it reads).
async fn attempt(
    addr: SocketAddr,
    config: std::sync::Arc<rustls::ClientConfig>,
    body: &str,
) -> Result<Reply, BoxError> {
    let mut connection = TlsConnection::connect(addr, config).await?;
    connection.send("POST", "/mcp", POST_0618, body).await
}

async fn metric(admin: SocketAddr, line_start: &str) -> u64 {
    let text = send(admin, "GET", "/metrics", &[], "").await.text();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_listener_serves_http1_and_http2_and_never_plain_http() -> TestResult {
    let ca = Ca::new("test CA");
    let dir = scratch_dir();
    ca.server(&["localhost"]).write(&dir.join("certs"));
    let upstream = start_sdk_upstream(true).await;
    let gate = start_in(&dir, &tls_policy(&format!("http://{upstream}/mcp"), "", "")).await;

    for alpn in [&b"http/1.1"[..], b"h2"] {
        let mut connection =
            TlsConnection::connect(gate.addr, client_config(&ca.pem(), &[alpn], None)).await?;
        assert_eq!(connection.alpn.as_deref(), Some(alpn), "ALPN chose another protocol");
        let reply = connection.send("POST", "/mcp", POST_0618, INITIALIZE).await?;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert!(reply.text().contains("toolgate test server"), "{}", reply.text());
    }
    // A client that offers no ALPN speaks HTTP/1.1.
    let reply = attempt(gate.addr, client_config(&ca.pem(), &[], None), INITIALIZE).await?;
    assert_eq!(reply.status, 200);
    // Plain HTTP on the TLS port gets no HTTP answer.
    let (status, _) =
        raw(gate.addr, b"POST /mcp HTTP/1.1\r\nhost: localhost\r\ncontent-length: 0\r\n\r\n").await;
    assert_eq!(status, 0, "plain HTTP was answered on the TLS listener");
    // A client that trusts another CA does not get in.
    let other = Ca::new("other CA");
    assert!(attempt(gate.addr, client_config(&other.pem(), &[b"h2"], None), INITIALIZE).await.is_err());
    Ok(())
}

#[tokio::test]
async fn the_upstream_hears_that_the_client_came_over_tls() -> TestResult {
    let ca = Ca::new("test CA");
    let dir = scratch_dir();
    ca.server(&["localhost"]).write(&dir.join("certs"));
    let upstream = start_echo_upstream().await;
    let gate = start_in(&dir, &tls_policy(&format!("http://{upstream}/mcp"), "", "")).await;
    let reply = attempt(gate.addr, client_config(&ca.pem(), &[b"h2"], None), PING).await?;
    assert_eq!(reply.json()["result"]["headers"]["x-forwarded-proto"], "https", "{}", reply.text());
    Ok(())
}

#[tokio::test]
async fn a_rotated_certificate_serves_new_connections_while_an_open_stream_continues() -> TestResult {
    let ca = Ca::new("test CA");
    let dir = scratch_dir();
    let first = ca.server(&["localhost"]);
    // Mounted as Kubernetes mounts a Secret: files behind a `..data` symlink.
    kubelet_swap(&dir.join("certs"), &[("cert.pem", &first.cert), ("key.pem", &first.key)]);
    let (upstream, mut streams) = start_scripted_sse_upstream().await;
    let gate = start_in(&dir, &tls_policy(&format!("http://{upstream}/mcp"), "", "")).await;

    let mut open = TlsConnection::connect(gate.addr, client_config(&ca.pem(), &[b"h2"], None)).await?;
    assert_eq!(open.server_cert, first.leaf_der());
    let opening = tokio::spawn(async move {
        let response = open.open("POST", "/mcp", POST_0618, CALL_ECHO).await;
        (open, response)
    });
    let events = tokio::time::timeout(Duration::from_secs(10), streams.recv()).await?.ok_or("no stream")?;
    let progress = "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":1,\"progress\":1}}\n\n";
    events.send(Bytes::from(progress)).await?;
    let (_open, response) = opening.await?;
    let mut body = response?.into_body();
    assert!(next_data(&mut body).await?.contains("notifications/progress"));

    let second = ca.server(&["localhost"]);
    kubelet_swap(&dir.join("certs"), &[("cert.pem", &second.cert), ("key.pem", &second.key)]);
    until_generation(gate.admin, 2).await?;
    let fresh = TlsConnection::connect(gate.addr, client_config(&ca.pem(), &[b"h2"], None)).await?;
    assert_eq!(fresh.server_cert, second.leaf_der(), "a new connection still got the old certificate");

    // The stream opened before the rotation goes on.
    let result = "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"hi\"}]}}\n\n";
    events.send(Bytes::from(result)).await?;
    assert!(next_data(&mut body).await?.contains("\"result\""));
    Ok(())
}

#[tokio::test]
async fn client_certificates_are_verified_before_any_request() -> TestResult {
    let (servers, clients, stranger) = (Ca::new("server CA"), Ca::new("client CA"), Ca::new("stranger CA"));
    let dir = scratch_dir();
    servers.server(&["localhost"]).write(&dir.join("certs"));
    std::fs::write(dir.join("certs/clients.pem"), clients.pem())?;
    let upstream = start_sdk_upstream(true).await;
    let listen_tls = "    client_ca_file: certs/clients.pem";
    let gate = start_in(&dir, &tls_policy(&format!("http://{upstream}/mcp"), listen_tls, "")).await;
    let with = |identity: Option<&Issued>| client_config(&servers.pem(), &[b"h2"], identity);

    let valid = clients.client("spiffe://example.org/agent", false);
    let reply = attempt(gate.addr, with(Some(&valid)), INITIALIZE).await?;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let refused = [
        ("no certificate", None),
        ("an expired certificate", Some(clients.client("spiffe://example.org/agent", true))),
        ("a certificate from another CA", Some(stranger.client("spiffe://example.org/agent", false))),
    ];
    for (what, identity) in &refused {
        let outcome = attempt(gate.addr, with(identity.as_ref()), INITIALIZE).await;
        assert!(outcome.is_err(), "{what} was let in: {:?}", outcome.map(|r| r.status));
    }
    let failures = r#"toolgate_tls_handshake_failures_total{reason="client_certificate"}"#;
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(gate.admin, failures).await < 3 {
        assert!(Instant::now() < deadline, "failed handshakes were not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The proxy keeps serving.
    assert_eq!(attempt(gate.addr, with(Some(&valid)), INITIALIZE).await?.status, 200);
    Ok(())
}

#[tokio::test]
async fn an_mtls_principal_is_allowed_and_denied_by_rules() -> TestResult {
    let (servers, clients) = (Ca::new("server CA"), Ca::new("client CA"));
    let dir = scratch_dir();
    servers.server(&["localhost"]).write(&dir.join("certs"));
    std::fs::write(dir.join("certs/clients.pem"), clients.pem())?;
    let upstream = start_sdk_upstream(true).await;
    let listen_tls = "    client_ca_file: certs/clients.pem\n    client_certificates: optional";
    let top = format!(
        "identity:\n  mtls: {{ subject: uri }}\n  api_keys: [{{ id: ops, sha256: {} }}]\nvirtual_servers:\n  default:\n    tools: {{ allow: [] }}\n    rules:\n      - when: {{ credentials: [mtls], subjects: ['spiffe://example.org/agent-a'] }}\n        tools: {{ allow: [echo] }}\n",
        sha256_hex("ops-key")
    );
    let policy = tls_policy(&format!("http://{upstream}/mcp"), listen_tls, &top);
    let gate = start_in(&dir, &policy).await;
    let with = |identity: Option<&Issued>| client_config(&servers.pem(), &[b"h2"], identity);
    let (agent_a, agent_b) = (
        clients.client("spiffe://example.org/agent-a", false),
        clients.client("spiffe://example.org/agent-b", false),
    );

    let allowed = attempt(gate.addr, with(Some(&agent_a)), CALL_ECHO).await?;
    assert_eq!(allowed.json()["result"]["content"][0]["text"], "hi", "{}", allowed.text());
    let denied = attempt(gate.addr, with(Some(&agent_b)), CALL_ECHO).await?;
    assert!(denied.json()["error"].is_object(), "agent-b reached the tool: {}", denied.text());
    // No certificate and no credential: the server is not anonymous.
    let nobody = attempt(gate.addr, with(None), CALL_ECHO).await?;
    assert_eq!(nobody.status, 401, "{}", nobody.text());
    // A certificate is one credential; a bearer token beside it is a second.
    let mut both = TlsConnection::connect(gate.addr, with(Some(&agent_a))).await?;
    let mut headers = POST_0618.to_vec();
    headers.push(("authorization", "Bearer ops-key"));
    let ambiguous = both.send("POST", "/mcp", &headers, CALL_ECHO).await?;
    assert_eq!(ambiguous.status, 400, "{}", ambiguous.text());

    // A reload that trusts another client CA stops the old one vouching,
    // on connections already open too.
    let mut open = TlsConnection::connect(gate.addr, with(Some(&agent_a))).await?;
    assert_eq!(open.send("POST", "/mcp", POST_0618, CALL_ECHO).await?.status, 200);
    std::fs::write(dir.join("certs/clients.pem"), Ca::new("replacement client CA").pem())?;
    until_generation(gate.admin, 2).await?;
    let after = open.send("POST", "/mcp", POST_0618, CALL_ECHO).await?;
    assert_eq!(after.status, 401, "{}", after.text());
    assert!(after.text().contains("no longer trusts"), "{}", after.text());
    std::fs::write(dir.join("certs/clients.pem"), clients.pem())?;
    until_generation(gate.admin, 3).await?;

    // `explain` judges an mtls caller as the proxy does.
    let file = dir.join("policy.yaml");
    for (subject, code) in
        [("spiffe://example.org/agent-a", Some(0)), ("spiffe://example.org/agent-b", Some(1))]
    {
        let out = Command::new(env!("CARGO_BIN_EXE_toolgate"))
            .args(["explain", "--config"])
            .arg(&file)
            .args(["--tool", "echo", "--credential", "mtls", "--subject", subject])
            .output()?;
        assert_eq!(out.status.code(), code, "{}", String::from_utf8_lossy(&out.stdout));
    }
    Ok(())
}

/// An HTTPS upstream that answers every request with the HTTP version it
/// was asked in.
async fn versions_upstream(server: &Issued, clients: Option<&Ca>) -> SocketAddr {
    serve_https(server, clients, |request: http::Request<hyper::body::Incoming>| async move {
        let version = format!("{:?}", request.version());
        let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {"version": version}});
        let mut response = http::Response::new(http_body_util::Full::new(Bytes::from(body.to_string())));
        response.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
        response
    })
    .await
}

/// A plain-HTTP toolgate in front of `url`, with `upstream_tls` as
/// `upstream.tls` and the files in `dir`.
async fn gate_to(dir: &Path, url: &str, upstream_tls: &str) -> Gate {
    let policy = format!(
        "version: 1\nupstream:\n  url: {url}\n  response_timeout: 5s\n{upstream_tls}\ntransport:\n  allowed_hosts: [localhost, 127.0.0.1]\n{ALLOW_ALL}"
    );
    start_in(dir, &policy).await
}

#[tokio::test]
async fn an_https_upstream_with_a_private_ca_speaks_http2_and_presents_a_client_certificate() -> TestResult {
    let (upstream_ca, client_ca) = (Ca::new("upstream CA"), Ca::new("upstream client CA"));
    let dir = scratch_dir();
    std::fs::create_dir_all(dir.join("certs"))?;
    std::fs::write(dir.join("certs/upstream-ca.pem"), upstream_ca.pem())?;
    client_ca.client("spiffe://example.org/toolgate", false).write(&dir.join("certs/client"));
    let upstream = versions_upstream(&upstream_ca.server(&["localhost"]), Some(&client_ca)).await;
    let url = format!("https://localhost:{}/mcp", upstream.port());

    let tls = "  tls:\n    ca_file: certs/upstream-ca.pem\n    cert_file: certs/client/cert.pem\n    key_file: certs/client/key.pem";
    let gate = gate_to(&dir, &url, tls).await;
    let reply = post(gate.addr, &[("mcp-protocol-version", "2025-06-18")], PING).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["result"]["version"], "HTTP/2.0", "{}", reply.text());

    // Without the client certificate the upstream refuses, and so toolgate: 502.
    let bare = scratch_dir();
    std::fs::create_dir_all(bare.join("certs"))?;
    std::fs::write(bare.join("certs/upstream-ca.pem"), upstream_ca.pem())?;
    let gate = gate_to(&bare, &url, "  tls:\n    ca_file: certs/upstream-ca.pem").await;
    let reply = post(gate.addr, &[("mcp-protocol-version", "2025-06-18")], PING).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    // Under TLS 1.3 the refusal comes as an alert after the handshake: it
    // is still named.
    assert!(reply.text().contains("client certificate"), "{}", reply.text());
    Ok(())
}

#[tokio::test]
async fn an_https1_upstream_is_connected_to_in_parallel_once_its_protocol_is_known() -> TestResult {
    let ca = Ca::new("upstream CA");
    let dir = scratch_dir();
    std::fs::create_dir_all(dir.join("certs"))?;
    std::fs::write(dir.join("certs/upstream-ca.pem"), ca.pem())?;
    // Each exchange takes a while, so a burst needs a connection each.
    let (upstream, most) =
        serve_https1_slowly(&ca.server(&["localhost"]), Duration::from_millis(300), |_| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let body = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
            let mut response =
                http::Response::new(http_body_util::Full::new(Bytes::from_static(body.as_bytes())));
            response.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
            response
        })
        .await;
    let url = format!("https://localhost:{}/mcp", upstream.port());
    let gate = gate_to(&dir, &url, "  tls:\n    ca_file: certs/upstream-ca.pem").await;
    let headers = [("mcp-protocol-version", "2025-06-18")];
    // The first connection tells toolgate the upstream speaks HTTP/1.1.
    assert_eq!(post(gate.addr, &headers, PING).await.status, 200);
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let addr = gate.addr;
        burst.spawn(async move { post(addr, &headers, PING).await });
    }
    while let Some(reply) = burst.join_next().await {
        let reply = reply?;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let most = most.load(std::sync::atomic::Ordering::SeqCst);
    assert!(most >= 2, "a burst's TLS handshakes were made one at a time ({most} at most)");
    Ok(())
}

#[tokio::test]
async fn an_upstream_certificate_for_another_name_or_ca_is_refused_with_a_clear_502() -> TestResult {
    let upstream_ca = Ca::new("upstream CA");
    let dir = scratch_dir();
    std::fs::create_dir_all(dir.join("certs"))?;
    std::fs::write(dir.join("certs/upstream-ca.pem"), upstream_ca.pem())?;
    let elsewhere = versions_upstream(&upstream_ca.server(&["other.example"]), None).await;
    let url = format!("https://localhost:{}/mcp", elsewhere.port());
    let gate = gate_to(&dir, &url, "  tls:\n    ca_file: certs/upstream-ca.pem").await;
    let reply = post(gate.addr, &[("mcp-protocol-version", "2025-06-18")], PING).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert!(reply.text().contains("not valid for the upstream url's host"), "{}", reply.text());

    // Trusting only the system's store, a private CA is unknown.
    let private = versions_upstream(&upstream_ca.server(&["localhost"]), None).await;
    let gate = gate_to(&dir, &format!("https://localhost:{}/mcp", private.port()), "").await;
    let reply = post(gate.addr, &[("mcp-protocol-version", "2025-06-18")], PING).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert!(reply.text().contains("not signed by a trusted CA"), "{}", reply.text());
    Ok(())
}

#[test]
fn check_says_what_is_wrong_with_tls_settings() {
    let ca = Ca::new("test CA");
    let dir = scratch_dir();
    ca.server(&["localhost"]).write(&dir.join("certs"));
    std::fs::write(dir.join("certs/ca.pem"), ca.pem()).expect("write");
    let file = dir.join("policy.yaml");
    let check = |text: &str| match toolgate::config::load_str(text, &file) {
        Ok(_) => String::new(),
        Err(error) => error.to_string(),
    };
    let base = |listen: &str, upstream: &str, identity: &str| {
        format!("version: 1\nlisten:\n{listen}\nupstream:\n{upstream}\n{identity}\n{ALLOW_ALL}")
    };
    let plain_upstream = "  url: http://127.0.0.1:9/mcp";
    let listen_ok = "  tls:\n    cert_file: certs/cert.pem\n    key_file: certs/key.pem";
    assert_eq!(check(&base(listen_ok, plain_upstream, "")), "", "a valid TLS listener");
    let cases = [
        (
            base("  tls:\n    cert_file: certs/missing.pem\n    key_file: certs/key.pem", plain_upstream, ""),
            "policy.yaml:4:5: cannot read listen.tls.cert_file",
        ),
        (
            base("  tls:\n    cert_file: certs/key.pem\n    key_file: certs/key.pem", plain_upstream, ""),
            "listen.tls: cert_file holds no PEM certificate",
        ),
        (
            base("  tls:\n    cert_file: certs/cert.pem\n    key_file: certs/ca.pem", plain_upstream, ""),
            "listen.tls: key_file holds no PEM private key",
        ),
        (
            base(listen_ok, plain_upstream, "identity:\n  mtls: { subject: uri }"),
            "identity.mtls needs verified client certificates: set listen.tls.client_ca_file",
        ),
        (
            base(listen_ok, "  url: http://127.0.0.1:9/mcp\n  tls: { ca_file: certs/ca.pem }", ""),
            "upstream.tls is for an https:// upstream url",
        ),
        (
            base(listen_ok, "  url: https://localhost:9/mcp\n  tls: { cert_file: certs/cert.pem }", ""),
            "upstream.tls needs both cert_file and key_file, or neither",
        ),
        (
            base(listen_ok, "  url: ftp://localhost/mcp", ""),
            "upstream url must start with http:// or https://",
        ),
        (
            base(listen_ok, plain_upstream, "identity:\n  mtls: { subject: spiffe }"),
            "unknown variant `spiffe`",
        ),
        (
            base(&format!("{listen_ok}\n    client_certificates: required"), plain_upstream, ""),
            "listen.tls.client_certificates needs client_ca_file",
        ),
    ];
    for (text, expected) in cases {
        let said = check(&text);
        assert!(said.contains(expected), "expected {expected:?}, got {said:?} for\n{text}");
    }
}

#[tokio::test]
async fn a_tls_handshake_that_never_finishes_is_cut_off() -> TestResult {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = Ca::new("test CA");
    let dir = scratch_dir();
    ca.server(&["localhost"]).write(&dir.join("certs"));
    let upstream = start_sdk_upstream(true).await;
    let gate =
        start_in(&dir, &tls_policy(&format!("http://{upstream}/mcp"), "  handshake_timeout: 1s", "")).await;
    // Silence, and the first bytes of a ClientHello that never goes on.
    for start in [&b""[..], &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]] {
        let mut stream = tokio::net::TcpStream::connect(gate.addr).await?;
        stream.write_all(start).await?;
        let began = Instant::now();
        let mut buffer = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await?;
        assert!(matches!(read, Ok(0) | Err(_)), "the connection was not closed: {read:?}");
        assert!(began.elapsed() < Duration::from_secs(5), "closed only after {:?}", began.elapsed());
    }
    // Everyone else is still served.
    let reply = attempt(gate.addr, client_config(&ca.pem(), &[b"h2"], None), INITIALIZE).await?;
    assert_eq!(reply.status, 200);
    Ok(())
}
