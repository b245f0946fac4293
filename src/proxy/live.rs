//! What wakes a live GET stream when no event arrives: a reload (the
//! stream's caller is re-judged at once, not at the next event, which may
//! never come) and the expiry of the caller's credential (a JWT's `exp`).
//! The stream is polled by hyper, not a task of its own, so the wait is a
//! boxed future it polls beside the upstream's body.

use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;
use tokio::sync::watch;
use tokio::time::Instant;

pub enum Wake {
    /// A policy was published: judge the caller again, and wait on.
    Reload(Waiting),
    /// The credential is no longer accepted.
    Expired,
}

pub type Waiting = Pin<Box<dyn Future<Output = Wake> + Send>>;

/// Waits for the next reload or for `expires`, whichever comes first.
pub fn wait(mut reloads: watch::Receiver<u64>, expires: Option<SystemTime>) -> Waiting {
    Box::pin(async move {
        let deadline = expires.map(|at| {
            let left = at.duration_since(SystemTime::now()).unwrap_or_default();
            Instant::now() + left
        });
        let expiry = async move {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expiry);
        let reloaded = tokio::select! {
            changed = reloads.changed() => changed.is_ok(),
            () = &mut expiry => return Wake::Expired,
        };
        if !reloaded {
            // The store is gone (the process is ending): only expiry is left.
            expiry.await;
            return Wake::Expired;
        }
        Wake::Reload(wait(reloads, expires))
    })
}
