//! Opaque API keys, stored in the policy only as SHA-256 hashes. A
//! presented key is hashed and compared with every stored hash in constant
//! time, so neither the comparison nor the lookup order tells an attacker
//! how close a guess was.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest::{SHA256, digest};

#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: String,
    pub sha256: [u8; 32],
    pub groups: Vec<String>,
    pub scopes: Vec<String>,
}

/// The key whose hash matches `presented`, if any.
pub fn find<'k>(keys: &'k [ApiKey], presented: &str) -> Option<&'k ApiKey> {
    let hash = digest(&SHA256, presented.as_bytes());
    let mut found = None;
    // Compare against every key, whatever matched first.
    for key in keys {
        if verify_slices_are_equal(hash.as_ref(), &key.sha256).is_ok() && found.is_none() {
            found = Some(key);
        }
    }
    found
}

/// Parses a hex SHA-256 as written in the policy.
pub fn parse_hash(hex: &str) -> Result<[u8; 32], String> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return Err("an API key hash is 64 hex digits (the SHA-256 of the key)".into());
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).map_err(|_| "not hex".to_owned())?;
        out[i] = u8::from_str_radix(text, 16).map_err(|_| format!("`{text}` is not hex"))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, secret: &str) -> ApiKey {
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(digest(&SHA256, secret.as_bytes()).as_ref());
        ApiKey { id: id.into(), sha256, groups: vec![], scopes: vec![] }
    }

    #[test]
    fn finds_by_hash_only() {
        let keys = [key("a", "alpha-secret"), key("b", "beta-secret")];
        assert_eq!(find(&keys, "beta-secret").map(|k| k.id.as_str()), Some("b"));
        assert!(find(&keys, "beta-secre").is_none());
        assert!(find(&keys, "").is_none());
    }

    #[test]
    fn hashes_parse() {
        let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        assert_eq!(parse_hash(hex).map(|h| h[0]), Ok(0x9f));
        assert!(parse_hash("9f86").is_err());
        assert!(parse_hash(&"zz".repeat(32)).is_err());
    }
}
