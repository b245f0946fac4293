//! Listeners and the process lifecycle: bind the proxy and admin sockets,
//! serve HTTP/1.1 and h2c on each, and drain gracefully on shutdown.

use crate::admin::{self, Readiness};
use crate::config::{self, ConfigError};
use crate::policy::PolicyStore;
use crate::proxy::{self, Gateway, UpstreamClient};
use crate::reload::Reloader;
use crate::telemetry::Metrics;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

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
    drain: Duration,
}

/// Slow clients may not hold a connection open without sending headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

impl Server {
    /// Loads the policy and binds both listeners.
    pub async fn bind(config: &Config) -> Result<Self, ServeError> {
        let loaded = config::load_file(&config.policy_file)?;
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
        });
        gateway.metrics.policy_running(&gateway.policy.load().meta);
        let reloader = Reloader::new(config.policy_file.clone(), listen.clone(), gateway.clone());
        Ok(Self { proxy, admin, gateway, readiness: Arc::default(), reloader, drain: listen.drain })
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
        let Self { proxy, admin, gateway, readiness, reloader, drain } = self;
        if let (Ok(p), Ok(a)) = (proxy.local_addr(), admin.local_addr()) {
            tracing::info!(proxy = %p, admin = %a, "toolgate listening");
        }
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
        let graceful = GracefulShutdown::new();
        let (admin_stop, admin_stopped) = tokio::sync::watch::channel(false);
        let reload_task = tokio::spawn(reloader.run(admin_stopped.clone()));
        let admin_task = tokio::spawn(serve_admin(
            admin,
            builder.clone(),
            gateway.clone(),
            readiness.clone(),
            admin_stopped,
        ));

        // Connection tasks, so that the drain period can end them.
        let mut connections = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            while connections.try_join_next().is_some() {}
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = proxy.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            // Out of file descriptors and the like: back off, keep serving.
                            tracing::warn!(%error, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let gateway = gateway.clone();
                    let service = service_fn(move |request| proxy::handle(gateway.clone(), request, peer));
                    let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    let connection = graceful.watch(connection);
                    connections.spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%peer, error = %error, "connection ended with an error");
                        }
                    });
                }
            }
        }

        drop(proxy);
        readiness.start_draining();
        tracing::info!(
            drain_ms = drain.as_millis() as u64,
            "shutting down: no new connections, draining in-flight requests"
        );
        match tokio::time::timeout(drain, graceful.shutdown()).await {
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

async fn serve_admin(
    listener: TcpListener,
    builder: auto::Builder<TokioExecutor>,
    gateway: Arc<Gateway>,
    readiness: Arc<Readiness>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let gateway = gateway.clone();
                let readiness = readiness.clone();
                let service = service_fn(move |request| admin::handle(gateway.clone(), readiness.clone(), request));
                let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
        }
    }
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
