//! Bounds on what clients can hold, and honest reports when a bound bites.
//!
//! - The open-file soft limit is raised to the hard limit at start: the
//!   default soft limit (often 1,024) is what let about a thousand idle
//!   connections lock every client out.
//! - A listener serves at most `max_connections` at once; past that, new
//!   clients wait in the kernel's listen backlog until a connection ends
//!   (idle ones end after `listen.idle_timeout`), rather than being
//!   accepted into a process that cannot serve them.
//! - Exhaustion (the cap reached, `accept` failing with EMFILE) is logged
//!   once per interval with a count, not once per event.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// File descriptors kept for the upstream connections, the admin listener,
/// watched files and logs: each client connection may need one upstream
/// connection as well.
const RESERVED_FILES: u64 = 64;

/// Raises the open-file soft limit to the hard limit, and returns how many
/// client connections that leaves room for (half of what is left after a
/// reserve: each may need an upstream connection).
pub fn raise_open_file_limit() -> Option<usize> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            let room = limit.saturating_sub(RESERVED_FILES) / 2;
            Some(usize::try_from(room).unwrap_or(usize::MAX).max(1))
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read or raise the open-file limit");
            None
        }
    }
}

/// A warning logged at most once per interval, with how many times it
/// happened meanwhile.
pub struct Throttled {
    what: &'static str,
    interval: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Throttled {
    pub const fn new(what: &'static str, interval: Duration) -> Self {
        Self { what, interval, last: Mutex::new(None), suppressed: AtomicU64::new(0) }
    }

    /// Records one occurrence; logs it if the interval has passed.
    pub fn note(&self, detail: &dyn std::fmt::Display) {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| now.duration_since(at) < self.interval) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(now);
        drop(last);
        let since = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::warn!(
            %detail,
            also_since_last_report = since,
            interval_s = self.interval.as_secs(),
            "{}",
            self.what
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_raised_and_leaves_room() {
        let room = raise_open_file_limit();
        assert!(room.is_some_and(|room| room >= 1));
        let (soft, hard) = rlimit::Resource::NOFILE.get().unwrap_or((0, 0));
        assert_eq!(soft, hard, "soft raised to hard");
    }

    #[test]
    fn bursts_are_reported_once_per_interval() {
        let throttled = Throttled::new("x", Duration::from_secs(60));
        for _ in 0..100 {
            throttled.note(&"y");
        }
        assert_eq!(throttled.suppressed.load(Ordering::Relaxed), 99);
    }
}
