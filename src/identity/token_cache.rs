//! Verified JWTs, remembered until they expire: a signature check (ES256
//! or RS256) costs tens of microseconds, most of a request's CPU, and an
//! agent sends the same token on every request. An entry is used only for
//! the very same token (compared whole, not by hash), for the same
//! audiences, before its `exp` (plus leeway), and — for keys fetched from
//! a JWKS URL — while the key set it was verified with is still the one in
//! use. The cache belongs to the compiled identity settings, so a policy
//! reload starts with an empty one. `nbf` and `iat` only ever become true
//! with time, so a token that passed them once passes them later.
//!
//! Bounded: [`CAPACITY`] entries in shards; a token over [`MAX_TOKEN`]
//! bytes, or whose groups and scopes take more, is not kept; a full shard
//! drops its expired entries, then the one that expires first.

use super::jwks::{KeyMap, KeySet, VerifiedWith};
use super::jwt::Claims;
use crate::policy::pattern::NameHasher;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

/// Entries at most, over all shards.
pub const CAPACITY: usize = 4096;
/// Longer tokens are verified every time.
pub const MAX_TOKEN: usize = 4096;
const SHARDS: usize = 16;
/// The bytes of a token its cache key is taken from: its last ones, of
/// its signature, which no two tokens verified share.
const KEYED_TAIL: usize = 48;

struct Entry {
    token: Box<str>,
    audiences: Box<[String]>,
    claims: Claims,
    /// The URL's key set, and the keys in it the signature was checked
    /// with (weakly: keys replaced by a refetch are freed, and their
    /// address is not reused while this is held).
    keys: Option<(Arc<KeySet>, Weak<KeyMap>)>,
}

/// The cache; see the module's documentation.
pub struct VerifiedTokens {
    shards: [Mutex<HashMap<u64, Entry, Keyed>>; SHARDS],
    /// Random, per cache: where the entries' hash starts ([`Self::key`]).
    seed: u64,
}

/// The shards' maps are keyed by a hash already taken with a random key:
/// it is used as it is, not hashed again.
#[derive(Default, Clone, Copy)]
struct Keyed;

impl BuildHasher for Keyed {
    type Hasher = KeyedHasher;
    fn build_hasher(&self) -> KeyedHasher {
        KeyedHasher(0)
    }
}

#[derive(Default)]
struct KeyedHasher(u64);

impl std::hash::Hasher for KeyedHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here (`write_u64`); were anything else,
        // it would still spread (FNV-1a).
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }
}

impl Default for VerifiedTokens {
    fn default() -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::with_hasher(Keyed))),
            seed: RandomState::new().hash_one(0x746f_6b65_6e73_u64),
        }
    }
}

/// A copy starts empty: entries belong to one compiled policy.
impl Clone for VerifiedTokens {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for VerifiedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedTokens").field("len", &self.len()).finish()
    }
}

impl VerifiedTokens {
    /// The entry's key and shard: a hash of the token's tail, its length
    /// and the audiences, from a random seed. An entry is used only for
    /// the very same token, compared whole, so a hash two tokens share can
    /// only make one replace the other, never one pass for the other. The
    /// hash is the policy's quick one (`NameHasher`), not SipHash: entries
    /// are made only for tokens whose signature verified, and the tail
    /// hashed is that signature's, which nobody but the identity provider
    /// can choose, so nobody can pick tokens that crowd one shard.
    fn key(&self, token: &str, audiences: &[String]) -> (u64, usize) {
        let bytes = token.as_bytes();
        let tail = bytes.get(bytes.len().saturating_sub(KEYED_TAIL)..).unwrap_or(bytes);
        let mut hasher = NameHasher::seeded(self.seed);
        hasher.write(tail);
        hasher.write_usize(bytes.len());
        for audience in audiences {
            hasher.write(audience.as_bytes());
        }
        let hash = hasher.finish();
        (hash, (hash >> 32) as usize % SHARDS)
    }

    /// The claims of `token` verified earlier for `audiences`, if still
    /// good at `now` (and, for keys from a JWKS URL, verified with the keys
    /// still in use).
    pub fn get(&self, token: &str, audiences: &[String], now: SystemTime) -> Option<Claims> {
        self.peek(token, audiences, now, |claims, _| claims.clone())
    }

    /// What `found` makes of the claims [`Self::get`] would return, and of
    /// the JWKS URL's key set they were verified with, without copying them.
    pub fn peek<T>(
        &self,
        token: &str,
        audiences: &[String],
        now: SystemTime,
        found: impl FnOnce(&Claims, Option<&Arc<KeySet>>) -> T,
    ) -> Option<T> {
        let (hash, shard) = self.key(token, audiences);
        let shard = self.shards[shard].lock().unwrap_or_else(|e| e.into_inner());
        let entry = shard.get(&hash)?;
        let fits = *entry.token == *token && *entry.audiences == *audiences && now < entry.claims.expires;
        if !fits {
            return None;
        }
        if let Some((set, verified_with)) = &entry.keys
            && !set.in_use(verified_with)
        {
            return None;
        }
        Some(found(&entry.claims, entry.keys.as_ref().map(|(set, _)| set)))
    }

    /// Remembers a verified token.
    pub fn insert(
        &self,
        token: &str,
        audiences: &[String],
        claims: &Claims,
        keys: Option<VerifiedWith>,
        now: SystemTime,
    ) {
        let claimed: usize = claims.groups.iter().chain(&claims.scopes).map(|c| c.len() + 24).sum();
        if token.len() > MAX_TOKEN || claimed > MAX_TOKEN {
            return;
        }
        let (hash, shard) = self.key(token, audiences);
        let mut shard = self.shards[shard].lock().unwrap_or_else(|e| e.into_inner());
        if shard.len() >= CAPACITY / SHARDS && !shard.contains_key(&hash) {
            shard.retain(|_, entry| now < entry.claims.expires);
            // Still full: the entry that would expire first makes room, so
            // many new tokens evict one entry each, never everyone.
            if shard.len() >= CAPACITY / SHARDS
                && let Some(first) = shard.iter().min_by_key(|(_, e)| e.claims.expires).map(|(h, _)| *h)
            {
                shard.remove(&first);
            }
        }
        let keys = keys.map(|(set, keys)| (set, Arc::downgrade(&keys)));
        let entry = Entry { token: token.into(), audiences: audiences.into(), claims: claims.clone(), keys };
        shard.insert(hash, entry);
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::jwks::Keys;
    use std::time::Duration;

    #[test]
    fn keys_spread_over_every_shard_and_tell_tokens_apart() {
        let cache = VerifiedTokens::default();
        let audiences = ["https://mcp.example.com".to_owned()];
        let mut per_shard = [0usize; SHARDS];
        let mut hashes = std::collections::HashSet::new();
        for n in 0..4000u32 {
            // Tokens alike but for a few bytes of the signature's tail, as
            // one identity provider's tokens are.
            let token = format!("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.{}{n:08}", "s".repeat(60));
            let (hash, shard) = cache.key(&token, &audiences);
            per_shard[shard] += 1;
            hashes.insert(hash);
        }
        assert_eq!(hashes.len(), 4000);
        // 250 expected in each.
        assert!(per_shard.iter().all(|&n| (150..350).contains(&n)), "{per_shard:?}");
        let (one, _) = cache.key("a.b.c", &audiences);
        let (other, _) = cache.key("a.b.c", &["urn:other".to_owned()]);
        assert_ne!(one, other, "audiences are part of the key");
    }

    fn claims(expires: SystemTime) -> Claims {
        Claims {
            issuer: "https://id".into(),
            subject: "alice".into(),
            groups: vec!["g".into()],
            scopes: Vec::new(),
            expires,
        }
    }

    #[test]
    fn an_entry_serves_only_the_same_token_audiences_and_time() {
        let cache = VerifiedTokens::default();
        let now = SystemTime::now();
        let until = now + Duration::from_secs(60);
        let aud = vec!["https://mcp/a".to_owned()];
        cache.insert("t.o.k", &aud, &claims(until), None, now);
        assert_eq!(cache.get("t.o.k", &aud, now), Some(claims(until)));
        assert_eq!(cache.get("t.o.x", &aud, now), None, "another token");
        assert_eq!(cache.get("t.o.k", &["https://mcp/b".to_owned()], now), None, "another audience");
        assert_eq!(cache.get("t.o.k", &aud, until), None, "expired");
        assert_eq!(cache.get("t.o.k", &aud, until - Duration::from_millis(1)), Some(claims(until)));
        // `peek` finds as `get` does.
        let b = vec!["https://mcp/b".to_owned()];
        for (token, audiences, at) in
            [("t.o.k", &aud, now), ("t.o.x", &aud, now), ("t.o.k", &b, now), ("t.o.k", &aud, until)]
        {
            let found = cache.get(token, audiences, at).is_some();
            assert_eq!(cache.peek(token, audiences, at, |_, _| ()).is_some(), found, "{token} {audiences:?}");
        }
    }

    #[test]
    fn tokens_that_share_their_keyed_tail_never_pass_for_each_other() {
        let cache = VerifiedTokens::default();
        let now = SystemTime::now();
        let until = now + Duration::from_secs(60);
        let tail = "s".repeat(KEYED_TAIL);
        let (a, b) = (format!("header.alice.{tail}"), format!("header.mallo.{tail}"));
        let mut mallory = claims(until);
        mallory.subject = "mallory".into();
        cache.insert(&a, &[], &claims(until), None, now);
        assert_eq!(cache.get(&b, &[], now), None, "the same tail and length, another token");
        cache.insert(&b, &[], &mallory, None, now);
        assert_eq!(cache.get(&b, &[], now), Some(mallory));
        assert_eq!(cache.get(&a, &[], now), None, "replaced, not served another's claims");
        // Short tokens are hashed whole: two of them are two entries.
        cache.insert("t.o.k", &[], &claims(until), None, now);
        cache.insert("t.o.x", &[], &claims(until), None, now);
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn an_entry_from_fetched_keys_needs_the_same_key_set() {
        let cache = VerifiedTokens::default();
        let now = SystemTime::now();
        let until = now + Duration::from_secs(60);
        let url: http::Uri = "https://id/jwks".parse().unwrap();
        let set = super::super::jwks::RemoteKeys::new().set(&url);
        let keys: Keys = set.keys();
        cache.insert("t.o.k", &[], &claims(until), Some((set.clone(), keys.clone())), now);
        let weak = Arc::downgrade(&keys);
        assert_eq!(cache.get("t.o.k", &[], now), Some(claims(until)));
        let issuer = |claims: &Claims, found: Option<&Arc<KeySet>>| {
            assert!(found.is_some_and(|found| Arc::ptr_eq(found, &set)), "the URL's key set is given");
            claims.issuer.clone()
        };
        assert_eq!(cache.peek("t.o.k", &[], now, issuer), Some(claims(until).issuer));
        // Keys fetched again: the entry no longer serves.
        set.install(HashMap::new());
        assert_eq!(cache.get("t.o.k", &[], now), None, "keys were fetched again");
        assert_eq!(cache.peek("t.o.k", &[], now, |_, _| ()), None, "nor is it peeked at");
        drop(keys);
        assert!(weak.upgrade().is_none(), "a replaced key set is not kept alive by the cache");
        assert_eq!(cache.get("t.o.k", &[], now), None);
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = VerifiedTokens::default();
        let now = SystemTime::now();
        let until = now + Duration::from_secs(60);
        for n in 0..CAPACITY * 3 {
            cache.insert(&format!("token-{n}"), &[], &claims(until), None, now);
        }
        assert!(cache.len() <= CAPACITY, "{}", cache.len());
        cache.insert(&"x".repeat(MAX_TOKEN + 1), &[], &claims(until), None, now);
        assert_eq!(cache.get(&"x".repeat(MAX_TOKEN + 1), &[], now), None, "too long to keep");
        // Expired entries go first when a shard is full.
        let cache = VerifiedTokens::default();
        for n in 0..CAPACITY {
            cache.insert(&format!("old-{n}"), &[], &claims(now), None, now - Duration::from_secs(1));
        }
        cache.insert("fresh", &[], &claims(until), None, now);
        assert!(cache.get("fresh", &[], now).is_some());
        // A flood of new tokens evicts one entry per token, the one that
        // expires first: a long-lived entry survives a full shard's churn.
        let cache = VerifiedTokens::default();
        cache.insert("kept", &[], &claims(now + Duration::from_secs(3600)), None, now);
        for n in 0..CAPACITY * 2 {
            cache.insert(&format!("churn-{n}"), &[], &claims(until), None, now);
        }
        assert!(cache.get("kept", &[], now).is_some(), "evicted by churn");
        // Claims too big to keep.
        let mut big = claims(until);
        big.groups = (0..200).map(|n| n.to_string()).collect();
        cache.insert("big", &[], &big, None, now);
        assert_eq!(cache.get("big", &[], now), None);
    }
}
