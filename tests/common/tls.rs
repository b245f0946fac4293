//! Certificates made in the test (rcgen), TLS clients that speak HTTP/1.1
//! or HTTP/2 by ALPN, and TLS upstreams.

use super::BoxError;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// A certificate authority made for one test.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert: String,
    pub key: String,
}

impl Issued {
    /// The leaf certificate, DER, as a TLS peer presents it.
    pub fn leaf_der(&self) -> Vec<u8> {
        certs(&self.cert).first().map(|c| c.to_vec()).unwrap_or_default()
    }

    /// Writes `cert.pem` and `key.pem` into `dir`.
    pub fn write(&self, dir: &Path) {
        std::fs::create_dir_all(dir).expect("create the certificate directory");
        std::fs::write(dir.join("cert.pem"), &self.cert).expect("write cert.pem");
        std::fs::write(dir.join("key.pem"), &self.key).expect("write key.pem");
    }
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("a CA key");
        Self { issuer: CertifiedIssuer::self_signed(params, key).expect("a CA certificate") }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn issue(&self, mut params: CertificateParams, usage: ExtendedKeyUsagePurpose) -> Issued {
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &self.issuer).expect("a certificate");
        Issued { cert: format!("{}{}", cert.pem(), self.pem()), key: key.serialize_pem() }
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, names: &[&str]) -> Issued {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        for name in names {
            params.subject_alt_names.push(match name.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*name).try_into().expect("a DNS name")),
            });
        }
        self.issue(params, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate whose URI SAN is `uri`; expired if `expired`.
    pub fn client(&self, uri: &str, expired: bool) -> Issued {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "test client");
        params.subject_alt_names.push(SanType::URI(uri.try_into().expect("a URI")));
        if expired {
            params.not_before = rcgen::date_time_ymd(2001, 1, 1);
            params.not_after = rcgen::date_time_ymd(2002, 1, 1);
        }
        self.issue(params, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client trusting `ca`, offering `alpn`, with an optional certificate.
pub fn client_config(ca: &str, alpn: &[&[u8]], identity: Option<&Issued>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("a CA");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(issued) => {
            builder.with_client_auth_cert(certs(&issued.cert), key(&issued.key)).expect("a client identity")
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes()).map(|c| c.expect("certificate PEM")).collect()
}

fn key(pem: &str) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).expect("key PEM")
}

/// A TLS connection to `addr` (as `localhost`), and what the server chose.
pub struct TlsConnection {
    pub alpn: Option<Vec<u8>>,
    /// The server's leaf certificate.
    pub server_cert: Vec<u8>,
    sender: Sender,
}

enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl TlsConnection {
    pub async fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Result<Self, BoxError> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost")?;
        let stream = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
        let (_, session) = stream.get_ref();
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let server_cert =
            session.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
        let io = TokioIo::new(stream);
        let sender = if alpn.as_deref() == Some(b"h2") {
            let (sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(connection);
            Sender::Http2(sender)
        } else {
            let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(connection);
            Sender::Http1(sender)
        };
        Ok(Self { alpn, server_cert, sender })
    }

    /// Sends a request and returns the response with its body streaming.
    pub async fn open(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<http::Response<hyper::body::Incoming>, BoxError> {
        let mut request = Request::builder().method(method).uri(format!("https://localhost{path}"));
        if matches!(self.sender, Sender::Http1(_)) {
            request = request.header("host", "localhost");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::from(body.to_owned())))?;
        Ok(match &mut self.sender {
            Sender::Http1(sender) => sender.send_request(request).await?,
            Sender::Http2(sender) => sender.send_request(request).await?,
        })
    }

    /// Like [`open`](Self::open), with the body read whole.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<super::Reply, BoxError> {
        let (parts, body) = self.open(method, path, headers, body).await?.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(super::Reply { status: parts.status, headers: parts.headers, body })
    }
}

/// Serves `handler` over TLS (HTTP/1.1 and HTTP/2 by ALPN) on a fresh
/// loopback port; with `clients`, client certificates from that CA are
/// required.
pub async fn serve_https<F, Fut>(server: &Issued, clients: Option<&Ca>, handler: F) -> SocketAddr
where
    F: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = http::Response<Full<Bytes>>> + Send + 'static,
{
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions");
    let builder = match clients {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.issuer.der().clone()).expect("a CA");
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                    .build()
                    .expect("a verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config =
        builder.with_single_cert(certs(&server.cert), key(&server.key)).expect("a server identity");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    serve_tls(config, Duration::ZERO, Arc::default(), handler).await
}

/// Serves `handler` over TLS offering HTTP/1.1 only, each handshake held
/// back by `delay`; `handshaking` is the most handshakes that were under
/// way at once.
pub async fn serve_https1_slowly<F, Fut>(
    server: &Issued,
    delay: Duration,
    handler: F,
) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = http::Response<Full<Bytes>>> + Send + 'static,
{
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs(&server.cert), key(&server.key))
        .expect("a server identity");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let most = Arc::new(AtomicUsize::new(0));
    (serve_tls(config, delay, most.clone(), handler).await, most)
}

async fn serve_tls<F, Fut>(
    config: rustls::ServerConfig,
    delay: Duration,
    most: Arc<AtomicUsize>,
    handler: F,
) -> SocketAddr
where
    F: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = http::Response<Full<Bytes>>> + Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    let under_way = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let (acceptor, handler) = (acceptor.clone(), handler.clone());
            let (under_way, most) = (under_way.clone(), most.clone());
            tokio::spawn(async move {
                let now = under_way.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                let accepted = acceptor.accept(tcp).await;
                under_way.fetch_sub(1, Ordering::SeqCst);
                let Ok(stream) = accepted else { return };
                let service = hyper::service::service_fn(move |request| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(request).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}
