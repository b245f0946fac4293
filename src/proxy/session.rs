//! Session binding: the principal that initialized a session owns its
//! `Mcp-Session-Id`. The same id presented by anyone else is answered as an
//! unknown session (404, which tells a compliant client to initialize
//! again), so a leaked or guessed session id is worth nothing to another
//! caller. An id toolgate did not see created — say, from before a restart —
//! is unknown too: binding it to whoever shows it first would hand it to an
//! attacker as readily as to its owner.
//!
//! Memory is bounded: at most `max` sessions, each forgotten after `idle`
//! without use; when full, the longest idle is evicted. DELETE releases a
//! session. The table is split into shards, each behind its own short-held
//! lock, so concurrent requests rarely wait on one another.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 16;

struct Entry {
    owner: String,
    last_seen: Instant,
}

pub struct Sessions {
    shards: [Mutex<HashMap<String, Entry>>; SHARDS],
    hasher: RandomState,
}

impl Default for Sessions {
    fn default() -> Self {
        Self { shards: std::array::from_fn(|_| Mutex::new(HashMap::new())), hasher: RandomState::new() }
    }
}

/// What the table says about a presented session id.
#[derive(Debug, PartialEq, Eq)]
pub enum Binding {
    /// The presenter created it.
    Owned,
    /// Never seen, expired, or someone else's: all look alike to the caller.
    Unknown,
}

impl Sessions {
    fn shard(&self, id: &str) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        let index = (self.hasher.hash_one(id) as usize) % SHARDS;
        self.shards[index].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records that `owner` created session `id`.
    pub fn bind(&self, id: &str, owner: String, max: usize, idle: Duration) {
        let now = Instant::now();
        let per_shard = max.div_ceil(SHARDS).max(1);
        let mut shard = self.shard(id);
        if shard.len() >= per_shard {
            shard.retain(|_, e| now.duration_since(e.last_seen) < idle);
        }
        if shard.len() >= per_shard
            && let Some(oldest) = shard.iter().min_by_key(|(_, e)| e.last_seen).map(|(k, _)| k.clone())
        {
            shard.remove(&oldest);
        }
        shard.insert(id.to_owned(), Entry { owner, last_seen: now });
    }

    /// Checks `id` for `owner`, refreshing its idle timer when it is theirs.
    pub fn check(&self, id: &str, owner: &str, idle: Duration) -> Binding {
        let now = Instant::now();
        let mut shard = self.shard(id);
        match shard.get_mut(id) {
            Some(entry) if now.duration_since(entry.last_seen) >= idle => {
                shard.remove(id);
                Binding::Unknown
            }
            Some(entry) if entry.owner == owner => {
                entry.last_seen = now;
                Binding::Owned
            }
            _ => Binding::Unknown,
        }
    }

    pub fn release(&self, id: &str) {
        self.shard(id).remove(id);
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map(|m| m.len()).unwrap_or(0)).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn owners_only() {
        let sessions = Sessions::default();
        sessions.bind("s1", "jwt:alice".into(), 100, HOUR);
        assert_eq!(sessions.check("s1", "jwt:alice", HOUR), Binding::Owned);
        assert_eq!(sessions.check("s1", "jwt:mallory", HOUR), Binding::Unknown);
        assert_eq!(
            sessions.check("s1", "api_key:alice", HOUR),
            Binding::Unknown,
            "same name, other credential"
        );
        assert_eq!(sessions.check("s2", "jwt:alice", HOUR), Binding::Unknown);
        sessions.release("s1");
        assert_eq!(sessions.check("s1", "jwt:alice", HOUR), Binding::Unknown);
    }

    #[test]
    fn idle_sessions_expire() {
        let sessions = Sessions::default();
        sessions.bind("s1", "a".into(), 100, HOUR);
        assert_eq!(sessions.check("s1", "a", Duration::ZERO), Binding::Unknown);
        assert!(sessions.is_empty());
    }

    #[test]
    fn memory_is_bounded() {
        let sessions = Sessions::default();
        for i in 0..10_000 {
            sessions.bind(&format!("s{i}"), "a".into(), 160, HOUR);
        }
        assert!(sessions.len() <= 160, "{}", sessions.len());
        assert_eq!(sessions.check("s9999", "a", HOUR), Binding::Owned, "the newest stays");
    }
}
