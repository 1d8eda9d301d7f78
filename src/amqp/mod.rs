//! AMQP 1.0 for business servers: consumers log in with signed credentials (`auth.rs`,
//! `sasl.rs`), attach one receiver link and receive their consumer group's messages
//! (`connection.rs`). TLS is terminated here, from the first byte, as `amqps://` clients expect.

pub mod auth;
mod coalesce;
mod connection;
mod sasl;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use coalesce::Coalescing;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use connection::amqp_message;

use crate::config::AmqpConfig;
use crate::groups::Groups;
use crate::registry::Registry;

/// AMQP start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// TLS material is unusable.
    #[error("AMQP TLS: {0}")]
    Tls(String),
}

/// Counters of the AMQP server, for metrics.
#[derive(Debug, Default)]
pub struct AmqpStats {
    /// TCP connections open now (before and after login).
    pub connections: AtomicU64,
    /// TCP connections accepted.
    pub connections_accepted: AtomicU64,
    /// SASL logins refused (unknown key, bad signature, unknown group, malformed username).
    pub logins_refused: AtomicU64,
    /// Receiver links serving a consumer group now.
    pub links: AtomicU64,
    /// Links refused: sender links, second receiver links, a full group.
    pub links_refused: AtomicU64,
}

/// Counts a gauge up now and down when dropped.
pub(crate) struct GaugeGuard<'a>(&'a AtomicU64);

impl<'a> GaugeGuard<'a> {
    pub(crate) fn new(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(gauge)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) struct Shared {
    stats: Arc<AmqpStats>,
    registry: Arc<Registry>,
    groups: Arc<Groups>,
    auth_timeout: Duration,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// The running AMQP server.
pub struct AmqpServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), AmqpError> {
    let l = TcpListener::bind(addr).await.map_err(|source| AmqpError::Bind { addr, source })?;
    let bound = l.local_addr().map_err(|source| AmqpError::Bind { addr, source })?;
    Ok((l, bound))
}

impl AmqpServer {
    /// Binds the listeners and starts accepting.
    ///
    /// # Errors
    /// A listener cannot bind or the TLS files are unusable.
    pub async fn start(
        config: &AmqpConfig,
        registry: Arc<Registry>,
        groups: Arc<Groups>,
        shutdown: CancellationToken,
    ) -> Result<Self, AmqpError> {
        let tls = match (&config.tls_listen, &config.cert, &config.key) {
            (Some(addr), Some(cert), Some(key)) => {
                Some((*addr, crate::tls::acceptor(cert, key).map_err(AmqpError::Tls)?))
            }
            (Some(_), _, _) => return Err(AmqpError::Tls("tls_listen needs cert and key".into())),
            _ => None,
        };
        let (plain, addr) = bind(config.listen).await?;
        let shared = Arc::new(Shared {
            stats: Arc::new(AmqpStats::default()),
            registry,
            groups,
            auth_timeout: Duration::from_secs(config.auth_timeout_secs),
            shutdown,
            tasks: TaskTracker::new(),
        });
        let mut tls_addr = None;
        if let Some((listen, acceptor)) = tls {
            let (l, bound) = bind(listen).await?;
            tls_addr = Some(bound);
            shared.tasks.spawn(accept_loop(l, Some(acceptor), shared.clone()));
        }
        shared.tasks.spawn(accept_loop(plain, None, shared.clone()));
        Ok(Self { shared, addr, tls_addr })
    }

    /// The plain AMQP address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The AMQP over TLS address.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// Counters.
    pub fn stats(&self) -> &Arc<AmqpStats> {
        &self.shared.stats
    }

    /// Waits until the listeners stopped and every connection ended (after shutdown was cancelled).
    pub async fn stopped(&self) {
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = tokio::select! {
            () = shared.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(error = %e, "AMQP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let shared2 = shared.clone();
        let tls = tls.clone();
        shared.tasks.spawn(async move { serve(stream, peer, tls, shared2).await });
    }
}

/// TCP keepalive finds consumers that vanished without a FIN within about a minute: fe2o3's
/// acceptor cannot enforce an AMQP idle timeout safely (it drops clients heartbeating at the
/// advertised period), so iotpipe advertises none and relies on this instead.
fn keepalive(stream: &TcpStream) {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "Could not set TCP keepalive");
    }
}

async fn serve(stream: TcpStream, peer: SocketAddr, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    shared.stats.connections_accepted.fetch_add(1, Ordering::Relaxed);
    let stats = shared.stats.clone();
    let _open = GaugeGuard::new(&stats.connections);
    let _ = stream.set_nodelay(true);
    keepalive(&stream);
    match tls {
        None => connection::serve(Coalescing::new(stream), peer, shared).await,
        Some(acceptor) => match tokio::time::timeout(shared.auth_timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls_stream)) => connection::serve(Coalescing::new(tls_stream), peer, shared).await,
            Ok(Err(e)) => tracing::warn!(%peer, error = %e, "AMQP TLS handshake failed"),
            Err(_) => tracing::warn!(%peer, "AMQP TLS handshake timed out"),
        },
    }
}
