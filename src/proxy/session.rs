//! Session binding: the principal that initialized a session owns its
//! `Mcp-Session-Id`. The same id presented by anyone else is answered as an
//! unknown session (404, which tells a compliant client to initialize
//! again), so a leaked or guessed session id is worth nothing to another
//! caller. An id toolgate did not see created — say, from before a restart —
//! is unknown too: binding it to whoever shows it first would hand it to an
//! attacker as readily as to its owner.
//!
//! Memory is bounded: at most `max` sessions, each forgotten after `idle`
//! without use; when full, the longest idle is evicted. And no principal
//! holds more than `max_per_principal`: past that, its own oldest session
//! goes, so one caller opening sessions in a loop evicts only its own
//! (anonymous callers, who share one principal, are counted per address:
//! per IPv4 address, per IPv6 /64, the block one host is usually given).
//! DELETE releases a session. The table is split into shards, each behind
//! its own short-held lock, so concurrent requests rarely wait on one
//! another; the per-principal lists are never locked together with a shard.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 16;

struct Entry {
    owner: String,
    /// Whose quota it counts against.
    quota: String,
    last_seen: Instant,
}

/// Whose quota an anonymous caller's sessions count against: its IPv4
/// address, or its IPv6 /64 (one host commonly holds a whole /64 and could
/// otherwise open a fresh quota per address).
pub fn anonymous_quota(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => format!("anonymous@{v4}"),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("anonymous@{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// The limits a binding is made under (from the policy's `sessions`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max: usize,
    pub max_per_principal: usize,
    pub idle: Duration,
}

pub struct Sessions {
    shards: [Mutex<HashMap<String, Entry>>; SHARDS],
    hasher: RandomState,
    /// Each quota holder's sessions, oldest first.
    holders: Mutex<HashMap<String, VecDeque<String>>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            hasher: RandomState::new(),
            holders: Mutex::new(HashMap::new()),
        }
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

    fn holders(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<String>>> {
        self.holders.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Forgets `id` in its holder's list.
    fn unlist(&self, quota: &str, id: &str) {
        let mut holders = self.holders();
        if let Some(list) = holders.get_mut(quota) {
            list.retain(|held| held != id);
            if list.is_empty() {
                holders.remove(quota);
            }
        }
    }

    /// Records that `owner` created session `id`; `quota` names whose
    /// allowance it counts against.
    pub fn bind(&self, id: &str, owner: String, quota: String, limits: Limits) {
        // The holder's own oldest sessions make room first.
        let evicted: Vec<String> = {
            let mut holders = self.holders();
            let list = holders.entry(quota.clone()).or_default();
            let mut evicted = Vec::new();
            while list.len() >= limits.max_per_principal.max(1) {
                evicted.extend(list.pop_front());
            }
            list.push_back(id.to_owned());
            evicted
        };
        for old in &evicted {
            self.shard(old).remove(old);
        }
        let now = Instant::now();
        let per_shard = limits.max.div_ceil(SHARDS).max(1);
        let mut gone: Vec<(String, String)> = Vec::new();
        {
            let mut shard = self.shard(id);
            if shard.len() >= per_shard {
                shard.retain(|key, e| {
                    let live = now.duration_since(e.last_seen) < limits.idle;
                    if !live {
                        gone.push((e.quota.clone(), key.clone()));
                    }
                    live
                });
            }
            if shard.len() >= per_shard
                && let Some(oldest) = shard.iter().min_by_key(|(_, e)| e.last_seen).map(|(k, _)| k.clone())
                && let Some(entry) = shard.remove(&oldest)
            {
                gone.push((entry.quota, oldest));
            }
            shard.insert(id.to_owned(), Entry { owner, quota, last_seen: now });
        }
        for (quota, old) in gone {
            self.unlist(&quota, &old);
        }
    }

    /// Checks `id` for `owner`, refreshing its idle timer when it is theirs.
    pub fn check(&self, id: &str, owner: &str, idle: Duration) -> Binding {
        let now = Instant::now();
        let expired = {
            let mut shard = self.shard(id);
            match shard.get_mut(id) {
                Some(entry) if now.duration_since(entry.last_seen) >= idle => {
                    shard.remove(id).map(|e| e.quota)
                }
                Some(entry) if entry.owner == owner => {
                    entry.last_seen = now;
                    return Binding::Owned;
                }
                _ => None,
            }
        };
        if let Some(quota) = expired {
            self.unlist(&quota, id);
        }
        Binding::Unknown
    }

    pub fn release(&self, id: &str) {
        let removed = self.shard(id).remove(id);
        if let Some(entry) = removed {
            self.unlist(&entry.quota, id);
        }
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

    fn limits(max: usize, max_per_principal: usize, idle: Duration) -> Limits {
        Limits { max, max_per_principal, idle }
    }

    fn bind(sessions: &Sessions, id: &str, owner: &str, l: Limits) {
        sessions.bind(id, owner.into(), owner.into(), l);
    }

    #[test]
    fn anonymous_callers_share_a_quota_per_ipv6_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(anonymous_quota(ip("2001:db8:1:2::1")), anonymous_quota(ip("2001:db8:1:2:ffff::9")));
        assert_ne!(anonymous_quota(ip("2001:db8:1:2::1")), anonymous_quota(ip("2001:db8:1:3::1")));
        assert_eq!(anonymous_quota(ip("::ffff:192.0.2.7")), anonymous_quota(ip("192.0.2.7")));
        assert_ne!(anonymous_quota(ip("192.0.2.7")), anonymous_quota(ip("192.0.2.8")));
    }

    #[test]
    fn owners_only() {
        let sessions = Sessions::default();
        bind(&sessions, "s1", "jwt:alice", limits(100, 10, HOUR));
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
        assert!(sessions.holders().is_empty(), "released sessions leave no trace");
    }

    #[test]
    fn idle_sessions_expire() {
        let sessions = Sessions::default();
        bind(&sessions, "s1", "a", limits(100, 10, HOUR));
        assert_eq!(sessions.check("s1", "a", Duration::ZERO), Binding::Unknown);
        assert!(sessions.is_empty());
        assert!(sessions.holders().is_empty());
    }

    #[test]
    fn memory_is_bounded() {
        let sessions = Sessions::default();
        for i in 0..10_000 {
            bind(&sessions, &format!("s{i}"), &format!("p{}", i % 500), limits(160, 10_000, HOUR));
        }
        assert!(sessions.len() <= 160, "{}", sessions.len());
        let held: usize = sessions.holders().values().map(VecDeque::len).sum();
        assert_eq!(held, sessions.len(), "the holders' lists follow the table");
        assert_eq!(sessions.check("s9999", "p499", HOUR), Binding::Owned, "the newest stays");
    }

    #[test]
    fn one_principal_evicts_only_its_own_sessions() {
        let sessions = Sessions::default();
        let l = limits(100_000, 5, HOUR);
        bind(&sessions, "alice-1", "alice", l);
        for i in 0..1_000 {
            bind(&sessions, &format!("mallory-{i}"), "mallory", l);
        }
        assert_eq!(sessions.check("alice-1", "alice", HOUR), Binding::Owned);
        assert_eq!(sessions.len(), 6);
        assert_eq!(sessions.check("mallory-999", "mallory", HOUR), Binding::Owned);
        assert_eq!(sessions.check("mallory-994", "mallory", HOUR), Binding::Unknown, "its own oldest went");
    }
}
