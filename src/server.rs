//! Listeners and the process lifecycle: bind the proxy and admin sockets,
//! serve HTTP/1.1 and h2c on each, and drain gracefully on shutdown.

use crate::admin::{self, Readiness};
use crate::config::{self, ConfigError, ListenSettings};
use crate::connection::{self, Signals, Timeouts};
use crate::limits::{self, Throttled};
use crate::policy::PolicyStore;
use crate::proxy::{self, Gateway, UpstreamClient};
use crate::reload::Reloader;
use crate::telemetry::Metrics;
use http_body_util::BodyExt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// How to start toolgate: the policy file, and optional overrides of its
/// listen addresses (for command-line flags, tests and the demo).
#[derive(Debug, Clone)]
pub struct Config {
    pub policy_file: PathBuf,
    pub proxy_listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
}

impl Config {
    pub fn new(policy_file: impl Into<PathBuf>) -> Self {
        Self { policy_file: policy_file.into(), proxy_listen: None, admin_listen: None }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot wait for shutdown signals: {0}")]
    Signal(#[source] std::io::Error),
}

/// A toolgate whose sockets are bound and which is ready to [`run`](Self::run).
pub struct Server {
    proxy: TcpListener,
    admin: TcpListener,
    gateway: Arc<Gateway>,
    readiness: Arc<Readiness>,
    reloader: Reloader,
    listen: ListenSettings,
}

/// Connections the admin listener serves at once (probes and scrapes).
const ADMIN_CONNECTIONS: usize = 64;

static CONNECTION_LIMIT: Throttled = Throttled::new(
    "connection limit reached: new clients wait for a free connection",
    Duration::from_secs(10),
);
static ACCEPT_FAILED: Throttled = Throttled::new("accepting connections fails", Duration::from_secs(10));

impl Server {
    /// Loads the policy and binds both listeners.
    pub async fn bind(config: &Config) -> Result<Self, ServeError> {
        let loaded = config::load_file(&config.policy_file)?;
        for warning in &loaded.warnings {
            tracing::warn!(%warning, "policy warning");
        }
        let proxy_addr = config.proxy_listen.unwrap_or(loaded.listen.proxy);
        let admin_addr = config.admin_listen.unwrap_or(loaded.listen.admin);
        let proxy = bind(proxy_addr).await?;
        let admin = bind(admin_addr).await?;
        let listen = loaded.listen.clone();
        let gateway = Arc::new(Gateway {
            policy: PolicyStore::new(loaded.policy),
            upstream: UpstreamClient::new(),
            metrics: Arc::new(Metrics::new()),
            sessions: Default::default(),
            caches: Default::default(),
            list_memo: Default::default(),
        });
        gateway.metrics.policy_running(&gateway.policy.load().meta);
        let reloader = Reloader::new(config.policy_file.clone(), listen.clone(), gateway.clone());
        Ok(Self { proxy, admin, gateway, readiness: Arc::default(), reloader, listen })
    }

    pub fn proxy_addr(&self) -> Option<SocketAddr> {
        self.proxy.local_addr().ok()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.local_addr().ok()
    }

    /// Serves until `shutdown` completes, then stops accepting, reports not
    /// ready, and lets in-flight requests finish for up to the drain period.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let Self { proxy, admin, gateway, readiness, reloader, listen } = self;
        let room = limits::raise_open_file_limit().unwrap_or(usize::MAX);
        let max_connections = listen.max_connections.min(room);
        if max_connections < listen.max_connections {
            tracing::warn!(
                configured = listen.max_connections,
                serving = max_connections,
                "listen.max_connections is more than the open-file limit allows; serving fewer"
            );
        }
        if let (Ok(p), Ok(a)) = (proxy.local_addr(), admin.local_addr()) {
            tracing::info!(proxy = %p, admin = %a, max_connections, "toolgate listening");
        }
        proxy::offload::start();
        let timeouts = Timeouts { handshake: listen.handshake_timeout, idle: listen.idle_timeout };
        let (drain, draining) = watch::channel(false);
        let (pressure, pressured) = watch::channel(false);
        let (admin_stop, admin_stopped) = watch::channel(false);
        let reload_task = tokio::spawn(reloader.run(admin_stopped.clone()));
        let admin_task =
            tokio::spawn(serve_admin(admin, gateway.clone(), readiness.clone(), timeouts, admin_stopped));

        // Connection tasks, so that the drain period can end them.
        let mut connections = tokio::task::JoinSet::new();
        let limit = Arc::new(Semaphore::new(max_connections));
        tokio::pin!(shutdown);
        loop {
            while connections.try_join_next().is_some() {}
            let permit = match limit.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    // At the cap: idle connections make way, and new
                    // clients wait in the backlog for a free slot.
                    CONNECTION_LIMIT.note(&max_connections);
                    let _ = pressure.send(true);
                    tokio::select! {
                        biased;
                        () = &mut shutdown => break,
                        permit = limit.clone().acquire_owned() => match permit {
                            Ok(permit) => permit,
                            Err(_) => break,
                        },
                    }
                }
            };
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = proxy.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            // Out of file descriptors and the like: back off, keep serving.
                            ACCEPT_FAILED.note(&error);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    if limit.available_permits() > max_connections / 10 {
                        pressure.send_if_modified(|on| std::mem::replace(on, false));
                    }
                    let gateway = gateway.clone();
                    // New connections take the running policy's certificate.
                    let tls = gateway.policy.load().listener_tls.clone().map(|tls| connection::Tls {
                        config: tls.config,
                        client_ca: tls.client_ca.unwrap_or_default(),
                        metrics: gateway.metrics.clone(),
                    });
                    let make = move |client: connection::ClientConnection| {
                        let client = Arc::new(client);
                        move |request| proxy::handle(gateway.clone(), request, client.clone())
                    };
                    let signals = Signals { drain: draining.clone(), pressure: pressured.clone() };
                    connections.spawn(async move {
                        connection::serve(stream, peer, tls, make, timeouts, signals).await;
                        drop(permit);
                    });
                }
            }
        }

        drop(proxy);
        readiness.start_draining();
        tracing::info!(
            drain_ms = listen.drain.as_millis() as u64,
            "shutting down: no new connections, draining in-flight requests"
        );
        let _ = drain.send(true);
        let drained =
            tokio::time::timeout(listen.drain, async { while connections.join_next().await.is_some() {} })
                .await;
        match drained {
            Ok(()) => tracing::info!("drained"),
            Err(_) => {
                tracing::warn!(
                    connections = connections.len(),
                    "drain period over: closing the remaining connections"
                );
                connections.abort_all();
                while connections.join_next().await.is_some() {}
            }
        }
        let _ = admin_stop.send(true);
        let _ = admin_task.await;
        let _ = reload_task.await;
        Ok(())
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })
}

/// The admin listener: served until `stop`, at most [`ADMIN_CONNECTIONS`]
/// at once, with the proxy's connection timeouts.
async fn serve_admin(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    readiness: Arc<Readiness>,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
) {
    let limit = Arc::new(Semaphore::new(ADMIN_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    let (_no_pressure, pressure) = watch::channel(false);
    loop {
        while connections.try_join_next().is_some() {}
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                // A full admin listener turns new connections away at once.
                let Ok(permit) = limit.clone().try_acquire_owned() else { continue };
                let (gateway, readiness) = (gateway.clone(), readiness.clone());
                let handler = move |request| {
                    let (gateway, readiness) = (gateway.clone(), readiness.clone());
                    async move {
                        let response = admin::handle(gateway, readiness, request).await?;
                        Ok(response.map(|body| body.map_err(|never| match never {}).boxed_unsync()))
                    }
                };
                let signals = Signals { drain: stop.clone(), pressure: pressure.clone() };
                connections.spawn(async move {
                    connection::serve(stream, peer, None, |_| handler, timeouts, signals).await;
                    drop(permit);
                });
            }
        }
    }
    connections.abort_all();
}

/// Installs SIGTERM and SIGINT handlers now (so a signal during start-up is
/// not fatal) and returns a future that resolves on the first of them.
pub fn shutdown_signals() -> Result<impl Future<Output = ()>, ServeError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(ServeError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServeError::Signal)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

/// Runs toolgate as configured until SIGTERM or SIGINT, then drains.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let signals = shutdown_signals()?;
    Server::bind(&config).await?.run(signals).await
}
