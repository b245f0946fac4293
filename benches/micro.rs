//! Micro-benchmarks of the per-request work: reading a JSON-RPC envelope,
//! allowlist decisions, list filtering (JSON and SSE framing), JWT and
//! RFC 9421 verification. `cargo bench --bench micro`; the load harness
//! (`benches/load.sh`) measures the whole proxy beside nginx.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use bytes::Bytes;
use divan::{Bencher, black_box};
use http::{HeaderMap, HeaderValue, Method, Uri};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use toolgate::identity::{Principal, jwks::RemoteKeys, jwt, signature};
use toolgate::mcp::{envelope, list_filter, sse};
use toolgate::policy::{ListKind, Policy};

fn main() {
    divan::main();
}

/// The load harness's allowlist: 50 patterns, exact names and globs.
fn policy() -> Policy {
    let mut patterns = vec!["\"read_*\"".to_owned()];
    patterns.extend((0..24).map(|i| format!("\"audit_{i}_*\"")));
    patterns.extend((0..25).map(|i| format!("\"ping_{i}\"")));
    let yaml = format!(
        "version: 1\nupstream: {{ url: http://127.0.0.1:9/mcp }}\nvirtual_servers:\n  default:\n    anonymous: true\n    tools: {{ allow: [{}, \"write_0001\"], deny: [\"*_admin\"] }}\n",
        patterns.join(", ")
    );
    match toolgate::config::load_str(&yaml, Path::new("bench.yaml")) {
        Ok(loaded) => loaded.policy,
        Err(error) => panic!("the benchmark's policy: {error}"),
    }
}

const CALL: &[u8] = br#"{"jsonrpc":"2.0","id":17,"method":"tools/call","params":{"name":"read_0002","arguments":{"path":"/srv/data/report.csv","limit":100},"_meta":{"progressToken":"p-17"}}}"#;

#[divan::bench]
fn envelope_tools_call(bencher: Bencher) {
    bencher.bench(|| envelope::parse(black_box(CALL)).map(|payload| payload.messages().len()));
}

#[divan::bench(args = ["read_0002", "write_0001", "audit_23_purge", "delete_everything"])]
fn allowlist_decision(bencher: Bencher, name: &str) {
    let policy = policy();
    let Some(server) = policy.virtual_server("default") else { panic!("no default server") };
    let principal = Principal::anonymous();
    let view = server.view(&principal);
    bencher.bench(|| view.decide(ListKind::Tool, black_box(name)).is_allowed());
}

/// A `tools/list` answer of `count` tools, half of them `read_*`.
fn tools_list(count: usize) -> Vec<u8> {
    let tools: Vec<serde_json::Value> = (0..count)
        .map(|i| {
            serde_json::json!({
                "name": format!("{}_{i:04}", if i % 2 == 0 { "read" } else { "write" }),
                "description": "A tool of the benchmark catalogue ".repeat(2),
                "inputSchema": {"type": "object", "properties": {"path": {"type": "string"}}},
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}}))
        .unwrap_or_default()
}

#[divan::bench(args = [10, 100, 1000])]
fn list_filter_json(bencher: Bencher, count: usize) {
    let policy = policy();
    let Some(server) = policy.virtual_server("default") else { panic!("no default server") };
    let principal = Principal::anonymous();
    let view = server.view(&principal);
    let text = tools_list(count);
    bencher.counter(divan::counter::BytesCount::new(text.len())).bench(|| {
        let mut removed = 0usize;
        list_filter::filter(black_box(&text), &mut |kind, name| {
            let allowed = view.allows(kind, name);
            removed += usize::from(!allowed);
            allowed
        })
        .map(|_| removed)
    });
}

#[divan::bench(args = [10, 100, 1000])]
fn list_filter_sse(bencher: Bencher, count: usize) {
    let policy = policy();
    let Some(server) = policy.virtual_server("default") else { panic!("no default server") };
    let principal = Principal::anonymous();
    let view = server.view(&principal);
    let mut framed = b"event: message\ndata: ".to_vec();
    framed.extend_from_slice(&tools_list(count));
    framed.extend_from_slice(b"\n\n");
    let framed = Bytes::from(framed);
    bencher.counter(divan::counter::BytesCount::new(framed.len())).bench(|| {
        let mut splitter = sse::Splitter::new(1 << 24);
        // As the upstream's chunks arrive: 16 KiB at a time.
        for chunk in framed.chunks(16 * 1024) {
            splitter.push(chunk);
        }
        let Ok(Some(event)) = splitter.next_event() else { panic!("no event") };
        match list_filter::filter(&event.data, &mut |kind, name| view.allows(kind, name)) {
            Ok(list_filter::Outcome::Rewritten(data)) => event.with_data(&data).len(),
            Ok(list_filter::Outcome::Unchanged) => event.forwardable().len(),
            Err(error) => panic!("{}", error.0),
        }
    });
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The key inside a PKCS #8 document (for RSA: the PKCS #1 key that
/// `from_rsa_der` reads): the last element of the outer sequence.
fn pkcs8_payload(der: &[u8]) -> &[u8] {
    // A DER header: tag, then a length (short, or long in 1-2 bytes).
    fn header(bytes: &[u8]) -> (usize, usize) {
        match bytes[1] {
            n if n < 0x80 => (2, n as usize),
            0x81 => (3, bytes[2] as usize),
            _ => (4, (bytes[2] as usize) << 8 | bytes[3] as usize),
        }
    }
    let (outer, _) = header(der);
    let mut at = outer;
    loop {
        let (head, len) = header(&der[at..]);
        if at + head + len >= der.len() {
            return &der[at + head..at + head + len];
        }
        at += head + len;
    }
}

/// An issuer trusting one key, and a token it signed.
fn issuer_and_token(alg: Algorithm) -> (jwt::Issuer, String) {
    let rcgen_alg = match alg {
        Algorithm::RS256 => &rcgen::PKCS_RSA_SHA256,
        Algorithm::ES256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        _ => &rcgen::PKCS_ED25519,
    };
    let pair = rcgen::KeyPair::generate_for(rcgen_alg).unwrap_or_else(|e| panic!("{alg:?} key: {e}"));
    let (private, public) = (pair.serialize_der(), pair.public_key_raw().to_vec());
    let (encoding, decoding) = match alg {
        Algorithm::RS256 => {
            (EncodingKey::from_rsa_der(pkcs8_payload(&private)), DecodingKey::from_rsa_der(&public))
        }
        Algorithm::ES256 => (EncodingKey::from_ec_der(&private), DecodingKey::from_ec_der(&public)),
        _ => (EncodingKey::from_ed_der(&private), DecodingKey::from_ed_der(&public)),
    };
    let claims = serde_json::json!({
        "iss": "https://id.bench", "sub": "bench", "aud": "http://127.0.0.1/mcp",
        "exp": unix_now() + 86_400, "groups": ["bench"],
    });
    let header = Header { kid: Some("bench".into()), ..Header::new(alg) };
    let token = jsonwebtoken::encode(&header, &claims, &encoding).unwrap_or_else(|e| panic!("{alg:?}: {e}"));
    let issuer = jwt::Issuer {
        issuer: "https://id.bench".into(),
        algorithms: vec![alg],
        leeway: Duration::from_secs(30),
        required_claims: Vec::new(),
        groups_claim: "groups".into(),
        scopes_claim: "scope".into(),
        keys: HashMap::from([("bench".to_owned(), decoding)]),
        remote: None,
        secret: None,
    };
    (issuer, token)
}

#[divan::bench(args = ["RS256", "ES256", "EdDSA"])]
fn jwt_verify(bencher: Bencher, alg: &str) {
    let alg = match alg {
        "RS256" => Algorithm::RS256,
        "ES256" => Algorithm::ES256,
        _ => Algorithm::EdDSA,
    };
    let (issuer, token) = issuer_and_token(alg);
    let issuers = [issuer];
    let audiences = ["http://127.0.0.1/mcp".to_owned()];
    let remote = RemoteKeys::default();
    bencher.bench(|| {
        jwt::verify(&issuers, &audiences, black_box(&token), &remote).unwrap_or_else(|e| panic!("{e}"))
    });
}

#[divan::bench(args = ["ed25519", "hmac-sha256"])]
fn rfc9421_verify(bencher: Bencher, alg: &str) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let (key, settings_key) = if alg == "ed25519" {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap_or_else(|e| panic!("{e}"));
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap_or_else(|e| panic!("{e}"));
        let public = b64.encode(pair.public_key().as_ref());
        (signature::SignerKey::Ed25519(pair), format!("public_key: \"{public}\""))
    } else {
        let secret = [7u8; 32];
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret);
        (signature::SignerKey::HmacSha256(Box::new(key)), format!("secret: \"{}\"", b64.encode(secret)))
    };
    let yaml = format!(
        "version: 1\nupstream: {{ url: http://127.0.0.1:9/mcp }}\nidentity:\n  signatures:\n    max_skew: 1h\n    nonce_cache: 10000\n    keys:\n      - {{ id: agent, alg: {alg}, {settings_key} }}\nvirtual_servers:\n  default:\n    tools: {{ allow: [\"*\"] }}\n"
    );
    let policy = match toolgate::config::load_str(&yaml, Path::new("bench.yaml")) {
        Ok(loaded) => loaded.policy,
        Err(error) => panic!("the benchmark's policy: {error}"),
    };
    let Some(settings) = policy.identity.signatures.as_ref() else { panic!("no signature settings") };
    let uri: Uri = "http://127.0.0.1:8000/mcp".parse().unwrap_or_else(|e| panic!("{e}"));
    let created = i64::try_from(unix_now()).unwrap_or(0);
    // Each iteration verifies a fresh nonce: nonces are single-use.
    let signed: Vec<HeaderMap> = (0..4096)
        .map(|n| {
            let s =
                signature::sign(&key, "agent", &Method::POST, &uri, Some(CALL), created, &format!("n{n}"))
                    .unwrap_or_else(|e| panic!("{e}"));
            let mut headers = HeaderMap::new();
            headers.insert(http::header::HOST, HeaderValue::from_static("127.0.0.1:8000"));
            for (name, value) in [
                ("content-digest", s.content_digest.unwrap_or_default()),
                ("signature-input", s.signature_input),
                ("signature", s.signature),
            ] {
                headers.insert(name, HeaderValue::from_str(&value).unwrap_or_else(|e| panic!("{e}")));
            }
            headers
        })
        .collect();
    let mut next = signed.iter().enumerate().cycle();
    let mut nonces = signature::NonceCache::default();
    bencher.bench_local(|| {
        let Some((n, headers)) = next.next() else { panic!("no headers") };
        // A new cache when the nonces come round again.
        if n == 0 {
            nonces = signature::NonceCache::default();
        }
        let request = signature::Request { method: &Method::POST, uri: &uri, headers };
        signature::verify(settings, &request, &nonces)
            .map(|v| v.digest_covered)
            .unwrap_or_else(|e| panic!("{e}"))
    });
}
