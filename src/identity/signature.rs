//! RFC 9421 HTTP Message Signatures over an RFC 9530 `Content-Digest`.
//!
//! The structured fields are parsed with sfv; the signature base, the
//! checks and the replay cache are written here, because no well-kept crate
//! does all three: a signature made for this very request must cover
//! `@method`, `@authority`, `@path` and, when there is a body,
//! `content-digest` (checked against the body received); `created` must be
//! within the configured skew, `expires` not past; and a `nonce` may be
//! used once.
//!
//! Algorithms: `ed25519` (RFC 9421 §3.3.6) and `hmac-sha256` (§3.3.3), on
//! aws-lc-rs. Component identifiers with parameters (`;sf`, `;key`, …) are
//! refused rather than half-supported.

use aws_lc_rs::digest;
use aws_lc_rs::hmac;
use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, Method, Uri};
use sfv::{BareItem, Dictionary, ListEntry, Parser};
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A key a signer may use, by its `keyid`.
#[derive(Clone)]
pub struct VerifyingKey {
    pub id: String,
    pub alg: KeyAlg,
    pub groups: Vec<String>,
    pub scopes: Vec<String>,
    /// SHA-256 over the algorithm and key material: tells a replaced key
    /// from the one a caller signed with.
    pub fingerprint: [u8; 32],
}

impl VerifyingKey {
    /// The fingerprint of key material `bytes` for algorithm `alg`.
    pub fn fingerprint_of(alg: &str, bytes: &[u8]) -> [u8; 32] {
        let mut context = digest::Context::new(&digest::SHA256);
        context.update(b"toolgate signing key\0");
        context.update(alg.as_bytes());
        context.update(b"\0");
        context.update(bytes);
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(context.finish().as_ref());
        fingerprint
    }
}

#[derive(Clone)]
pub enum KeyAlg {
    /// The raw 32-byte public key.
    Ed25519(Vec<u8>),
    /// Boxed: aws-lc's HMAC key is over a kilobyte.
    HmacSha256(Box<hmac::Key>),
}

impl KeyAlg {
    pub fn name(&self) -> &'static str {
        match self {
            KeyAlg::Ed25519(_) => "ed25519",
            KeyAlg::HmacSha256(_) => "hmac-sha256",
        }
    }
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("id", &self.id)
            .field("alg", &self.alg.name())
            .finish_non_exhaustive()
    }
}

/// The compiled `identity.signatures` section.
#[derive(Debug, Clone)]
pub struct SignatureSettings {
    pub keys: HashMap<String, VerifyingKey>,
    pub max_skew: Duration,
    pub require_nonce: bool,
    pub nonce_cache_max: usize,
}

/// What a verified signature established.
#[derive(Debug, Clone)]
pub struct Verified<'k> {
    pub key: &'k VerifyingKey,
    /// The body must match `Content-Digest` once read.
    pub digest_covered: bool,
}

/// A request's view for signature checks.
pub struct Request<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Verifies the request's one signature.
pub fn verify<'k>(
    settings: &'k SignatureSettings,
    request: &Request<'_>,
    nonces: &NonceCache,
) -> Result<Verified<'k>, String> {
    let input = single(request.headers, "signature-input")?;
    let signatures = single(request.headers, "signature")?;
    let input: Dictionary = Parser::new(input).parse().map_err(|e| format!("Signature-Input: {e}"))?;
    let signatures: Dictionary = Parser::new(signatures).parse().map_err(|e| format!("Signature: {e}"))?;
    if input.len() != 1 {
        return Err("exactly one signature is accepted".into());
    }
    let Some((label, ListEntry::InnerList(covered))) = input.iter().next() else {
        return Err("Signature-Input member must be an inner list".into());
    };
    let signature = match signatures.get(label) {
        Some(ListEntry::Item(item)) => {
            item.bare_item.as_byte_sequence().ok_or("Signature must be a byte sequence")?
        }
        _ => return Err(format!("no Signature for `{}`", label.as_str())),
    };

    let mut components: Vec<&str> = Vec::with_capacity(covered.items.len());
    for item in &covered.items {
        let name = item.bare_item.as_string().ok_or("covered components must be strings")?.as_str();
        if !item.params.is_empty() {
            return Err(format!("component parameters are not supported (`{name}`)"));
        }
        if name != name.to_ascii_lowercase() || components.contains(&name) {
            return Err(format!("component `{name}` is not lower case or is repeated"));
        }
        components.push(name);
    }
    for required in ["@method", "@authority", "@path"] {
        if !components.contains(&required) {
            return Err(format!("the signature must cover {required}"));
        }
    }
    let has_body = *request.method == Method::POST
        || request.headers.get(http::header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0");
    let digest_covered = components.contains(&"content-digest");
    if has_body && !digest_covered {
        return Err("the signature must cover content-digest for a request with a body".into());
    }

    let params = &covered.params;
    let integer = |name: &str| params.get(name).and_then(BareItem::as_integer).map(i64::from);
    let string = |name: &str| params.get(name).and_then(|v| v.as_string()).map(|s| s.as_str().to_owned());
    let keyid = string("keyid").ok_or("the signature needs a keyid")?;
    let key = settings.keys.get(&keyid).ok_or_else(|| format!("unknown keyid `{}`", shorten(&keyid)))?;
    if let Some(alg) = string("alg")
        && alg != key.alg.name()
    {
        return Err(format!("alg `{}` does not match the key's", shorten(&alg)));
    }
    let created = integer("created").ok_or("the signature needs `created`")?;
    let now = unix_now();
    let skew = settings.max_skew.as_secs() as i64;
    if (now - created).abs() > skew {
        return Err(format!("`created` is outside the allowed skew of {skew}s"));
    }
    if let Some(expires) = integer("expires")
        && now > expires
    {
        return Err("the signature has expired".into());
    }
    let nonce = string("nonce");
    if settings.require_nonce && nonce.is_none() {
        return Err("the signature needs a nonce".into());
    }

    let base = signature_base(&components, covered, request)?;
    let valid = match &key.alg {
        KeyAlg::Ed25519(public) => {
            UnparsedPublicKey::new(&ED25519, public).verify(base.as_bytes(), signature).is_ok()
        }
        KeyAlg::HmacSha256(secret) => hmac::verify(secret, base.as_bytes(), signature).is_ok(),
    };
    if !valid {
        return Err("the signature does not verify".into());
    }
    // Only a verified signature may use up a nonce (no cache filling by strangers).
    if let Some(nonce) = nonce {
        nonces.use_once(&key.id, &nonce, created + skew, settings.nonce_cache_max)?;
    }
    Ok(Verified { key, digest_covered })
}

fn single<'h>(headers: &'h HeaderMap, name: &str) -> Result<&'h str, String> {
    let mut values = headers.get_all(name).iter();
    let value = values.next().ok_or_else(|| format!("missing {name} header"))?;
    if values.next().is_some() {
        return Err(format!("more than one {name} header"));
    }
    value.to_str().map_err(|_| format!("{name} is not text"))
}

fn shorten(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(80).collect()
}

/// RFC 9421 §2.5: one line per covered component, then the parameters.
fn signature_base(
    components: &[&str],
    covered: &sfv::InnerList,
    request: &Request<'_>,
) -> Result<String, String> {
    let mut base = String::new();
    for name in components {
        let value = component_value(name, request)?;
        base.push('"');
        base.push_str(name);
        base.push_str("\": ");
        base.push_str(&value);
        base.push('\n');
    }
    base.push_str("\"@signature-params\": ");
    base.push_str(&serialize_params(covered)?);
    Ok(base)
}

/// RFC 9421 §2.2.3: the authority of the target URI — the request
/// target's in absolute form (and HTTP/2's `:authority`), else `Host`, as
/// the Host guard judges it.
fn authority(request: &Request<'_>) -> Result<String, String> {
    let host = match (request.uri.authority(), request.headers.get(http::header::HOST)) {
        (Some(authority), _) => authority.as_str(),
        (None, Some(host)) => host.to_str().map_err(|_| "Host is not text")?,
        (None, None) => return Err("the request names no authority".into()),
    };
    // RFC 9110 §4.2.3 normalisation: lower case, default port omitted.
    let host = host.to_ascii_lowercase();
    Ok(host.strip_suffix(":80").map(str::to_owned).unwrap_or(host))
}

fn component_value(name: &str, request: &Request<'_>) -> Result<String, String> {
    let path = || if request.uri.path().is_empty() { "/".to_owned() } else { request.uri.path().to_owned() };
    let query = || format!("?{}", request.uri.query().unwrap_or(""));
    Ok(match name {
        "@method" => request.method.as_str().to_owned(),
        "@authority" => authority(request)?,
        "@path" => path(),
        "@query" => query(),
        "@scheme" => "http".to_owned(),
        "@request-target" => match request.uri.query() {
            Some(q) => format!("{}?{q}", path()),
            None => path(),
        },
        "@target-uri" => {
            let q = request.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
            format!("http://{}{}{q}", authority(request)?, path())
        }
        derived if derived.starts_with('@') => return Err(format!("component `{derived}` is not supported")),
        field => {
            let values: Vec<&str> = request
                .headers
                .get_all(field)
                .iter()
                .map(|v| v.to_str().map(str::trim))
                .collect::<Result<_, _>>()
                .map_err(|_| format!("`{field}` is not text"))?;
            if values.is_empty() {
                return Err(format!("covered header `{field}` is missing"));
            }
            values.join(", ")
        }
    })
}

/// The canonical serialisation of the covered components and parameters.
fn serialize_params(covered: &sfv::InnerList) -> Result<String, String> {
    let mut out = String::from("(");
    for (i, item) in covered.items.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let name = item.bare_item.as_string().ok_or("covered components must be strings")?;
        push_string(&mut out, name.as_str());
    }
    out.push(')');
    for (key, value) in &covered.params {
        out.push(';');
        out.push_str(key.as_str());
        if let Some(i) = value.as_integer() {
            out.push('=');
            out.push_str(&i64::from(i).to_string());
        } else if let Some(s) = value.as_string() {
            out.push('=');
            push_string(&mut out, s.as_str());
        } else if value.as_boolean() != Some(true) {
            return Err(format!("signature parameter `{}` has an unsupported type", key.as_str()));
        }
    }
    Ok(out)
}

fn push_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// RFC 9530: checks the body against `Content-Digest` (`sha-256` and/or
/// `sha-512`; every supported member present must match).
pub fn check_content_digest(headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let value = single(headers, "content-digest")?;
    let digests: Dictionary = Parser::new(value).parse().map_err(|e| format!("Content-Digest: {e}"))?;
    let mut checked = 0;
    for (alg, entry) in &digests {
        let algorithm = match alg.as_str() {
            "sha-256" => &digest::SHA256,
            "sha-512" => &digest::SHA512,
            _ => continue,
        };
        let ListEntry::Item(item) = entry else {
            return Err("Content-Digest values are byte sequences".into());
        };
        let expected = item.bare_item.as_byte_sequence().ok_or("Content-Digest values are byte sequences")?;
        if digest::digest(algorithm, body).as_ref() != expected {
            return Err("the body does not match Content-Digest".into());
        }
        checked += 1;
    }
    if checked == 0 {
        return Err("Content-Digest has no sha-256 or sha-512 digest".into());
    }
    Ok(())
}

/// `sha-256=:…:` for `body`.
pub fn content_digest(body: &[u8]) -> String {
    format!("sha-256=:{}:", STANDARD.encode(digest::digest(&digest::SHA256, body)))
}

/// Nonces seen, by key, until their signature could no longer pass the
/// `created` check: bounded in memory (when full of live nonces, new
/// signatures are refused rather than risk a replay) and in time.
pub struct NonceCache {
    shards: [Mutex<HashMap<(String, String), i64>>; 16],
    hasher: RandomState,
}

impl Default for NonceCache {
    fn default() -> Self {
        Self { shards: std::array::from_fn(|_| Mutex::new(HashMap::new())), hasher: RandomState::new() }
    }
}

impl NonceCache {
    /// Records `nonce` for `key` until `until` (Unix seconds); an error if
    /// it was seen before or the cache is full of live nonces.
    pub fn use_once(&self, key: &str, nonce: &str, until: i64, max: usize) -> Result<(), String> {
        let entry = (key.to_owned(), nonce.to_owned());
        let index = (self.hasher.hash_one(&entry) as usize) % self.shards.len();
        let mut shard = self.shards[index].lock().unwrap_or_else(|e| e.into_inner());
        let now = unix_now();
        if shard.get(&entry).is_some_and(|expiry| *expiry >= now) {
            return Err("the signature's nonce was already used (replay)".into());
        }
        let per_shard = max.div_ceil(self.shards.len()).max(1);
        if shard.len() >= per_shard {
            shard.retain(|_, expiry| *expiry >= now);
            if shard.len() >= per_shard {
                return Err("too many recent signatures; try again shortly".into());
            }
        }
        shard.insert(entry, until);
        Ok(())
    }
}

/// A key to sign with (`toolgate sign`, tests, clients).
pub enum SignerKey {
    Ed25519(aws_lc_rs::signature::Ed25519KeyPair),
    HmacSha256(Box<hmac::Key>),
}

/// The headers that sign one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub content_digest: Option<String>,
    pub signature_input: String,
    pub signature: String,
}

/// Signs a request: covers `@method`, `@authority`, `@path`, `@query` when
/// there is a query, and `content-digest` when there is a body.
pub fn sign(
    key: &SignerKey,
    key_id: &str,
    method: &Method,
    uri: &Uri,
    body: Option<&[u8]>,
    created: i64,
    nonce: &str,
) -> Result<SignedHeaders, String> {
    let mut headers = HeaderMap::new();
    let authority = uri.authority().ok_or("the URL needs a host")?.as_str().to_owned();
    headers.insert(http::header::HOST, authority.parse().map_err(|_| "bad host")?);
    let content_digest = body.map(content_digest);
    if let Some(d) = &content_digest {
        headers.insert("content-digest", d.parse().map_err(|_| "bad digest")?);
    }
    let mut names = vec!["\"@method\"", "\"@authority\"", "\"@path\""];
    if uri.query().is_some() {
        names.push("\"@query\"");
    }
    if body.is_some() {
        names.push("\"content-digest\"");
    }
    let alg = match key {
        SignerKey::Ed25519(_) => "ed25519",
        SignerKey::HmacSha256(_) => "hmac-sha256",
    };
    let mut params = format!("({});created={created};keyid=", names.join(" "));
    push_string(&mut params, key_id);
    params.push_str(";nonce=");
    push_string(&mut params, nonce);
    params.push_str(&format!(";alg=\"{alg}\""));
    let input: Dictionary = Parser::new(&format!("sig1={params}")).parse().map_err(|e| e.to_string())?;
    let Some(ListEntry::InnerList(covered)) = input.get("sig1") else {
        return Err("internal: bad input".into());
    };
    let components: Vec<&str> = names.iter().map(|n| n.trim_matches('"')).collect();
    let request = Request { method, uri, headers: &headers };
    let base = signature_base(&components, covered, &request)?;
    let signature = match key {
        SignerKey::Ed25519(pair) => pair.sign(base.as_bytes()).as_ref().to_vec(),
        SignerKey::HmacSha256(secret) => hmac::sign(secret, base.as_bytes()).as_ref().to_vec(),
    };
    Ok(SignedHeaders {
        content_digest,
        signature_input: format!("sig1={params}"),
        signature: format!("sig1=:{}:", STANDARD.encode(signature)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    /// RFC 9421 Appendix B.2's test request (the parts its signatures cover).
    fn b2_request() -> (Method, Uri, HeaderMap) {
        let mut headers = HeaderMap::new();
        for (k, v) in [
            ("host", "example.com"),
            ("date", "Tue, 20 Apr 2021 02:07:55 GMT"),
            ("content-type", "application/json"),
            ("content-length", "18"),
        ] {
            headers.insert(k, v.parse().expect("header"));
        }
        (Method::POST, "/foo?param=Value&Pet=dog".parse().expect("uri"), headers)
    }

    fn base_of(input: &str, request: &Request<'_>) -> String {
        let dict: Dictionary = Parser::new(input).parse().expect("input");
        let Some((_, ListEntry::InnerList(covered))) = dict.iter().next() else { panic!("inner list") };
        let names: Vec<&str> =
            covered.items.iter().filter_map(|i| i.bare_item.as_string().map(|s| s.as_str())).collect();
        signature_base(&names, covered, request).expect("base")
    }

    #[test]
    fn rfc9421_b_2_5_hmac_sha256() {
        let (method, uri, headers) = b2_request();
        let request = Request { method: &method, uri: &uri, headers: &headers };
        let base = base_of(
            r#"sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret""#,
            &request,
        );
        assert_eq!(
            base,
            "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n\"@authority\": example.com\n\"content-type\": application/json\n\"@signature-params\": (\"date\" \"@authority\" \"content-type\");created=1618884473;keyid=\"test-shared-secret\""
        );
        let secret = STANDARD
            .decode(
                "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ==",
            )
            .expect("secret");
        let key = hmac::Key::new(hmac::HMAC_SHA256, &secret);
        let signature = STANDARD.decode("pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=").expect("sig");
        assert!(hmac::verify(&key, base.as_bytes(), &signature).is_ok());
    }

    #[test]
    fn rfc9421_b_2_6_ed25519() {
        let (method, uri, headers) = b2_request();
        let request = Request { method: &method, uri: &uri, headers: &headers };
        let base = base_of(
            r#"sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#,
            &request,
        );
        let public = URL_SAFE_NO_PAD.decode("JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs").expect("key");
        let signature = STANDARD
            .decode(
                "wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==",
            )
            .expect("sig");
        assert!(UnparsedPublicKey::new(&ED25519, &public).verify(base.as_bytes(), &signature).is_ok());
        // Ed25519 is deterministic: signing the base with the RFC's private key gives the RFC's signature.
        let seed = URL_SAFE_NO_PAD.decode("n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU").expect("seed");
        let pair = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&seed).expect("pair");
        assert_eq!(pair.sign(base.as_bytes()).as_ref(), &signature[..]);
    }

    #[test]
    fn rfc9530_content_digest_examples() {
        let body = br#"{"hello": "world"}"#;
        assert_eq!(content_digest(body), "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:");
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-digest",
            "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"
                .parse()
                .expect("header"),
        );
        assert_eq!(check_content_digest(&headers, body), Ok(()));
        assert!(check_content_digest(&headers, br#"{"hello": "World"}"#).is_err());
        headers.insert("content-digest", "md5=:AAAA:".parse().expect("header"));
        assert!(check_content_digest(&headers, body).is_err(), "no supported algorithm");
    }

    /// Signs `input`'s base with `pair` and checks it through `verify`.
    fn verify_with_input(input_params: &str) -> Result<(), String> {
        let pair =
            aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&[3; 32]).map_err(|e| e.to_string())?;
        use aws_lc_rs::signature::KeyPair;
        let settings = SignatureSettings {
            keys: [(
                "k".to_owned(),
                VerifyingKey {
                    id: "k".into(),
                    alg: KeyAlg::Ed25519(pair.public_key().as_ref().to_vec()),
                    groups: vec![],
                    scopes: vec![],
                    fingerprint: [0; 32],
                },
            )]
            .into(),
            max_skew: Duration::from_secs(60),
            require_nonce: false,
            nonce_cache_max: 10,
        };
        let method = Method::GET;
        let uri: Uri = "/mcp".parse().map_err(|_| "uri")?;
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, "gw.example.com".parse().map_err(|_| "host")?);
        let input = format!("sig1={input_params}");
        let base = {
            let request = Request { method: &method, uri: &uri, headers: &headers };
            base_of(&input, &request)
        };
        let signature = STANDARD.encode(pair.sign(base.as_bytes()));
        headers.insert("signature-input", input.parse().map_err(|_| "input")?);
        headers.insert("signature", format!("sig1=:{signature}:").parse().map_err(|_| "sig")?);
        let request = Request { method: &method, uri: &uri, headers: &headers };
        verify(&settings, &request, &NonceCache::default()).map(|_| ())
    }

    #[test]
    fn expires_is_honoured() {
        let now = unix_now();
        let components = r#"("@method" "@authority" "@path")"#;
        assert_eq!(
            verify_with_input(&format!(r#"{components};created={now};keyid="k";expires={}"#, now + 30)),
            Ok(())
        );
        let expired =
            verify_with_input(&format!(r#"{components};created={now};keyid="k";expires={}"#, now - 5));
        assert_eq!(expired, Err("the signature has expired".into()));
        // The same path refuses a signature whose alg names another algorithm.
        let wrong_alg =
            verify_with_input(&format!(r#"{components};created={now};keyid="k";alg="hmac-sha256""#));
        assert!(wrong_alg.is_err_and(|e| e.contains("alg")));
    }

    #[test]
    fn nonces_are_single_use_and_bounded() {
        let cache = NonceCache::default();
        let later = unix_now() + 60;
        assert!(cache.use_once("k", "n1", later, 1000).is_ok());
        assert!(cache.use_once("k", "n1", later, 1000).unwrap_err().contains("replay"));
        assert!(cache.use_once("other", "n1", later, 1000).is_ok(), "nonces are per key");
        let full = NonceCache::default();
        let mut refused = 0;
        for i in 0..100 {
            if full.use_once("k", &format!("n{i}"), later, 16).is_err() {
                refused += 1;
            }
        }
        assert!(refused > 0, "a full cache refuses rather than forgets");
    }
}
