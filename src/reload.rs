//! Hot reload of the policy file.
//!
//! The file's directory is watched, not the file: a Kubernetes ConfigMap
//! update swaps the `..data` symlink, an editor renames a new file over the
//! old one, and a plain write modifies it in place; all three are events in
//! the directory. Events are debounced, then the file is read, validated and
//! compiled exactly as `toolgate check` does, and only a policy that passed
//! everything is published, atomically. SIGHUP forces the same path.
//!
//! A bad file changes nothing: the running policy keeps serving, the error
//! is logged with its file, line and column, and counted in
//! `toolgate_policy_reloads_total{result="error"}`. So is a file that
//! changes a setting fixed at start-up (`listen`), which needs a restart.

use crate::config::{self, ListenSettings};
use crate::proxy::Gateway;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Quiet time after the last file event before reading the file.
const DEBOUNCE: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new policy is running under this generation.
    Reloaded { generation: u64 },
    /// The file's content is the running policy's.
    Unchanged,
    /// The running policy stays; the message says why.
    Refused(String),
}

pub struct Reloader {
    path: PathBuf,
    /// The `listen` settings of the file the process started with.
    listen: ListenSettings,
    gateway: Arc<Gateway>,
    /// Wake-ups from the directory watcher.
    changed: mpsc::Receiver<()>,
    /// Kept alive for as long as the reloader; `None` if watching failed.
    watcher: Option<notify::RecommendedWatcher>,
    /// Directories watched: the policy file's and those of the files it names.
    watched: Vec<PathBuf>,
}

impl Reloader {
    /// Starts watching at once, so that no change made after the policy was
    /// loaded can be missed.
    pub fn new(path: PathBuf, listen: ListenSettings, gateway: Arc<Gateway>) -> Self {
        let (events, changed) = mpsc::channel::<()>(1);
        let watcher = match watcher(events) {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                tracing::error!(%error, file = %path.display(), "cannot watch the policy file; reload on SIGHUP only");
                None
            }
        };
        let mut reloader = Self { path, listen, gateway, changed, watcher, watched: Vec::new() };
        reloader.watch_inputs();
        reloader
    }

    /// Watches the directory of the policy file and of every file it names.
    fn watch_inputs(&mut self) {
        use notify::Watcher;
        let Some(watcher) = self.watcher.as_mut() else { return };
        let policy = self.gateway.policy.load();
        let files = std::iter::once(&self.path).chain(policy.meta.referenced_files.iter());
        for file in files {
            let directory = match file.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if self.watched.contains(&directory) {
                continue;
            }
            match watcher.watch(&directory, notify::RecursiveMode::NonRecursive) {
                Ok(()) => self.watched.push(directory),
                Err(error) => {
                    tracing::error!(%error, directory = %directory.display(), "cannot watch directory")
                }
            }
        }
    }

    /// Reads, validates and, if it passes and differs, publishes the file.
    pub fn reload_now(&mut self) -> ReloadOutcome {
        let outcome = self.attempt();
        self.report(&outcome);
        outcome
    }

    fn report(&mut self, outcome: &ReloadOutcome) {
        if matches!(outcome, ReloadOutcome::Reloaded { .. }) {
            self.watch_inputs();
        }
        let metrics = &self.gateway.metrics;
        match &outcome {
            ReloadOutcome::Reloaded { generation } => {
                let policy = self.gateway.policy.load();
                metrics.reload("ok");
                metrics.policy_running(&policy.meta);
                tracing::info!(generation, sha256 = %policy.meta.sha256, file = %self.path.display(), "policy reloaded");
            }
            ReloadOutcome::Unchanged => {
                metrics.reload("unchanged");
                tracing::debug!(file = %self.path.display(), "policy file event, content unchanged");
            }
            ReloadOutcome::Refused(error) => {
                metrics.reload("error");
                tracing::error!(%error, "policy reload refused; the running policy stays");
            }
        }
    }

    fn attempt(&self) -> ReloadOutcome {
        let text = match config::read_capped(&self.path) {
            Ok(text) => text,
            Err(error) => return ReloadOutcome::Refused(error.to_string()),
        };
        let loaded = match config::load_str(&text, &self.path) {
            Ok(loaded) => loaded,
            Err(error) => return ReloadOutcome::Refused(error.to_string()),
        };
        // Unchanged only if the policy and every file it names are.
        if loaded.policy.meta.inputs_sha256 == self.gateway.policy.load().meta.inputs_sha256 {
            return ReloadOutcome::Unchanged;
        }
        for warning in &loaded.warnings {
            tracing::warn!(%warning, "policy warning");
        }
        if loaded.listen != self.listen {
            let (old, new) = (&self.listen, &loaded.listen);
            let changed: Vec<&str> = [
                ("proxy", old.proxy != new.proxy),
                ("admin", old.admin != new.admin),
                ("drain", old.drain != new.drain),
                ("max_connections", old.max_connections != new.max_connections),
                ("idle_timeout", old.idle_timeout != new.idle_timeout),
                ("handshake_timeout", old.handshake_timeout != new.handshake_timeout),
                ("tls (on or off)", old.tls != new.tls),
            ]
            .into_iter()
            .filter_map(|(name, differs)| differs.then_some(name))
            .collect();
            return ReloadOutcome::Refused(format!(
                "{}: listen.{} changed, which applies only at start: restart toolgate (or put it back) for this policy to load",
                self.path.display(),
                changed.join(", listen.")
            ));
        }
        ReloadOutcome::Reloaded { generation: self.gateway.policy.publish(loaded.policy) }
    }

    /// Watches the policy file's directory and SIGHUP until `stop` changes.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        // The files may have changed between loading and watching them.
        let outcome = self.attempt();
        if outcome != ReloadOutcome::Unchanged {
            self.report(&outcome);
        }
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                Some(()) = self.changed.recv() => {
                    // Debounce: wait for a quiet moment, then read once.
                    while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, self.changed.recv()).await {}
                }
                Some(()) = recv_signal(&mut hangup) => tracing::info!("SIGHUP received: reloading the policy"),
            }
            self.reload_now();
        }
    }
}

async fn recv_signal(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

fn watcher(events: mpsc::Sender<()>) -> notify::Result<notify::RecommendedWatcher> {
    notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            // A full channel already holds a wake-up: nothing is lost.
            let _ = events.try_send(());
        }
    })
}
