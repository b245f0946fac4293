//! List results remembered once filtered. A `tools/list` answer is most
//! often the same catalogue, byte for byte, again and again; filtering it
//! (reading every byte as JSON, deciding every item) is the proxy's largest
//! cost per request.
//!
//! What filtering forwards, counts and audits is a function of four
//! things: the answer's bytes, the policy snapshot, the virtual server, and
//! which of its rules apply to the caller (the [`View`]'s rule set). An
//! answer met again under the same four is answered from here: the same
//! bytes forwarded, the same counts and the same audit record. An answer is
//! recognised by comparing every one of its bytes with the one remembered,
//! never by a hash, and a reload starts from nothing (entries name their
//! snapshot).
//!
//! Bounded by `transport.list_memo` bytes, the answers, their filtered
//! forms and the names they lost together, least recently used out first
//! (and entries of snapshots no one holds before those), and by
//! [`SAME_LENGTH`] answers of one length per key, so a lookup compares few
//! answers in full whatever an upstream sends. Not remembered: answers
//! under [`MIN_TEXT`] (filtering them costs about what looking costs), one
//! entry over half the bound, answers that held no list item or could not
//! be filtered, and anything of a virtual server with more than 64 rules
//! (its view is the caller itself, not a rule set).

use crate::policy::{Policy, View};
use crate::telemetry::audit::Removals;
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Answers shorter than this are filtered every time.
pub const MIN_TEXT: usize = 4096;

/// What filtering one answer came to.
#[derive(Clone)]
pub struct Judged {
    /// The answer without its denied items; `None`: forwarded as it came.
    pub rewritten: Option<Bytes>,
    /// Items kept, by kind.
    pub kept: [u64; 4],
    pub removed: Arc<Removals>,
}

/// Under what an answer was judged.
pub struct Key<'a> {
    policy: &'a Arc<Policy>,
    server: &'a str,
    rules: u64,
}

impl<'a> Key<'a> {
    /// The key of `view` (of virtual server `server` in `policy`), if its
    /// rule set alone decides it.
    pub fn of(policy: &'a Arc<Policy>, server: &'a str, view: &View<'_>) -> Option<Self> {
        view.rule_set().map(|rules| Self { policy, server, rules })
    }

    fn names(&self, entry: &Entry) -> bool {
        std::ptr::eq(entry.policy.as_ptr(), Arc::as_ptr(self.policy))
            && entry.rules == self.rules
            && *entry.server == *self.server
    }
}

struct Entry {
    /// A weak reference keeps the snapshot's address from being reused
    /// while the entry names it.
    policy: Weak<Policy>,
    server: Box<str>,
    rules: u64,
    text: Bytes,
    judged: Judged,
    /// When it was last used, in the memo's own count of uses.
    used: AtomicU64,
}

impl Entry {
    fn size(&self) -> usize {
        size(self.text.len(), &self.judged)
    }
}

/// What an entry for an answer of `length` bytes holds.
fn size(length: usize, judged: &Judged) -> usize {
    length + judged.rewritten.as_ref().map_or(0, Bytes::len) + judged.removed.named_bytes() + 1024
}

/// The most entries of one length under one key: a lookup compares at
/// most this many answers in full, whatever an upstream sends.
const SAME_LENGTH: usize = 4;

#[derive(Default)]
pub struct ListMemo {
    state: Mutex<State>,
    uses: AtomicU64,
}

#[derive(Default)]
struct State {
    entries: Vec<Arc<Entry>>,
    bytes: usize,
}

impl State {
    /// Drops entries until `bytes` is within `budget`: first those of
    /// snapshots no one holds any more, then the least recently used.
    fn shrink(&mut self, budget: usize) {
        self.entries.retain(|e| e.policy.strong_count() > 0);
        self.bytes = self.entries.iter().map(|e| e.size()).sum();
        while self.bytes > budget {
            let Some((at, _)) =
                self.entries.iter().enumerate().min_by_key(|(_, e)| e.used.load(Ordering::Relaxed))
            else {
                break;
            };
            let old = self.entries.swap_remove(at);
            self.bytes -= old.size();
        }
    }
}

impl ListMemo {
    /// What filtering `text` under `key` came to, if remembered.
    pub fn recall(&self, key: &Key<'_>, text: &[u8]) -> Option<Judged> {
        if text.len() < MIN_TEXT {
            return None;
        }
        // Compared outside the lock: a comparison reads the whole answer.
        let candidates: Vec<Arc<Entry>> = {
            let state = self.state.lock().ok()?;
            state.entries.iter().filter(|e| e.text.len() == text.len() && key.names(e)).cloned().collect()
        };
        let found = candidates.into_iter().find(|entry| entry.text == text)?;
        found.used.store(self.uses.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
        Some(found.judged.clone())
    }

    /// Remembers what filtering `text` under `key` came to, within
    /// `budget` bytes for all entries; the bytes held after.
    pub fn remember(&self, key: &Key<'_>, text: &[u8], judged: &Judged, budget: usize) -> usize {
        if text.len() < MIN_TEXT || size(text.len(), judged) > budget / 2 {
            // Nothing new; a budget lowered by a reload still applies.
            let Ok(mut state) = self.state.lock() else { return 0 };
            state.shrink(budget);
            return state.bytes;
        }
        // The copy is made before the lock is taken.
        let entry = Arc::new(Entry {
            policy: Arc::downgrade(key.policy),
            server: key.server.into(),
            rules: key.rules,
            text: Bytes::copy_from_slice(text),
            judged: judged.clone(),
            used: AtomicU64::new(self.uses.fetch_add(1, Ordering::Relaxed)),
        });
        let Ok(mut state) = self.state.lock() else { return 0 };
        let same: Vec<usize> = (0..state.entries.len())
            .filter(|&i| state.entries[i].text.len() == text.len() && key.names(&state.entries[i]))
            .collect();
        // Answers filtered at once by several requests are remembered once.
        if same.iter().any(|&i| state.entries[i].text == text) {
            return state.bytes;
        }
        if same.len() >= SAME_LENGTH
            && let Some(&oldest) = same.iter().min_by_key(|&&i| state.entries[i].used.load(Ordering::Relaxed))
        {
            state.entries.swap_remove(oldest);
        }
        state.entries.push(entry);
        state.shrink(budget);
        state.bytes
    }

    /// The bytes held, answers and filtered forms together.
    pub fn bytes(&self) -> usize {
        self.state.lock().map_or(0, |state| state.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Principal;

    fn policy() -> Arc<Policy> {
        let yaml = "version: 1\nupstream: { url: http://127.0.0.1:9/mcp }\nvirtual_servers:\n  default:\n    anonymous: true\n    tools: { allow: [a] }\n";
        match crate::config::load_str(yaml, std::path::Path::new("memo.yaml")) {
            Ok(loaded) => Arc::new(loaded.policy),
            Err(error) => panic!("{error}"),
        }
    }

    fn judged(text: &[u8]) -> Judged {
        Judged { rewritten: Some(Bytes::copy_from_slice(text)), kept: [1, 0, 0, 0], removed: Arc::default() }
    }

    #[test]
    fn recalls_only_the_same_bytes_within_its_bound() {
        let (policy, principal) = (policy(), Principal::anonymous());
        let Some(server) = policy.virtual_server("default") else { panic!("no server") };
        let view = server.view(&principal);
        let Some(key) = Key::of(&policy, "default", &view) else { panic!("no key") };
        let memo = ListMemo::default();
        let text = |n: u8| vec![n; 10_000];
        let budget = 3 * (2 * 10_000 + 1024);

        assert!(memo.recall(&key, &text(1)).is_none());
        memo.remember(&key, &text(1), &judged(&text(1)), budget);
        assert_eq!(memo.recall(&key, &text(1)).and_then(|j| j.rewritten), Some(Bytes::from(text(1))));
        let mut near = text(1);
        near[9_999] = 2;
        assert!(memo.recall(&key, &near).is_none(), "one byte differs");
        assert!(memo.recall(&key, &text(1)[..9_999]).is_none(), "shorter");
        let other = Key { rules: 1, ..Key::of(&policy, "default", &view).unwrap_or_else(|| panic!()) };
        assert!(memo.recall(&other, &text(1)).is_none(), "another rule set");
        let elsewhere =
            Key { server: "other", ..Key::of(&policy, "default", &view).unwrap_or_else(|| panic!()) };
        assert!(memo.recall(&elsewhere, &text(1)).is_none(), "another virtual server");

        // Remembered once however often; the least recently used out first.
        memo.remember(&key, &text(1), &judged(&text(1)), budget);
        memo.remember(&key, &text(2), &judged(&text(2)), budget);
        memo.remember(&key, &text(3), &judged(&text(3)), budget);
        assert_eq!(memo.bytes(), budget);
        assert!(memo.recall(&key, &text(1)).is_some());
        memo.remember(&key, &text(4), &judged(&text(4)), budget);
        assert!(memo.bytes() <= budget);
        assert!(memo.recall(&key, &text(2)).is_none(), "the least recently used went");
        assert!(memo.recall(&key, &text(1)).is_some());

        // Too big for the bound, or too small to be worth it: not kept.
        let big = vec![5; budget / 2];
        memo.remember(&key, &big, &judged(&big), budget);
        assert!(memo.recall(&key, &big).is_none());
        let small = vec![6; MIN_TEXT - 1];
        memo.remember(&key, &small, &judged(&small), budget);
        assert!(memo.recall(&key, &small).is_none());
        memo.remember(&key, &text(7), &judged(&text(7)), 0);
        assert!(memo.recall(&key, &text(7)).is_none(), "list_memo: 0");
        assert_eq!(memo.bytes(), 0, "a budget of 0 lets go of everything");

        // At most SAME_LENGTH answers of one length per key.
        let budget = 1 << 24;
        for n in 0..=SAME_LENGTH as u8 {
            memo.remember(&key, &text(n), &judged(&text(n)), budget);
        }
        assert!(memo.recall(&key, &text(0)).is_none(), "the oldest of one length went");
        for n in 1..=SAME_LENGTH as u8 {
            assert!(memo.recall(&key, &text(n)).is_some());
        }
    }

    #[test]
    fn entries_of_a_snapshot_no_one_holds_are_dropped() {
        let memo = ListMemo::default();
        let principal = Principal::anonymous();
        let text = vec![1; 10_000];
        let old = policy();
        {
            let Some(server) = old.virtual_server("default") else { panic!("no server") };
            let view = server.view(&principal);
            let Some(key) = Key::of(&old, "default", &view) else { panic!("no key") };
            memo.remember(&key, &text, &judged(&text), 1 << 20);
        }
        let held = memo.bytes();
        assert!(held > 0);
        drop(old);
        let new = policy();
        let Some(server) = new.virtual_server("default") else { panic!("no server") };
        let view = server.view(&principal);
        let Some(key) = Key::of(&new, "default", &view) else { panic!("no key") };
        assert!(memo.recall(&key, &text).is_none(), "a new snapshot starts from nothing");
        memo.remember(&key, &text, &judged(&text), 1 << 20);
        assert_eq!(memo.bytes(), held, "the old snapshot's entry went");
    }
}
