//! AMQP 1.0 for business servers: consumers log in with signed credentials (`auth.rs`,
//! `sasl.rs`), attach one receiver link and receive their consumer group's messages
//! (`connection.rs`) through iotpipe's own endpoint (`endpoint.rs`, `wire.rs`). The shared accept loop ([`crate::listener`]) terminates TLS from the first
//! byte, as `amqps://` clients expect, and bounds the connections served at once.

pub mod auth;
pub mod config;
mod connection;
mod endpoint;
mod sasl;
mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::AmqpConfig;

use crate::groups::Groups;
use crate::listener::{Handler, ListenerError, Serving};
use crate::logsafe::RateLimit;
use crate::queues::GroupQueues;
use crate::registry::Registry;

/// AMQP start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    /// A listener could not bind, or its TLS files are unusable.
    #[error("AMQP {0}")]
    Listener(ListenerError),
}

/// Not `#[from]`: the message holds the listener error already, and a `source` would make
/// error chains print it twice.
impl From<ListenerError> for AmqpError {
    fn from(e: ListenerError) -> Self {
        AmqpError::Listener(e)
    }
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

/// Counts an open connection, from accept (before any TLS handshake) to close.
pub(crate) struct OpenConnection(Arc<AmqpStats>);

impl OpenConnection {
    fn new(stats: Arc<AmqpStats>) -> Self {
        stats.connections_accepted.fetch_add(1, Ordering::Relaxed);
        stats.connections.fetch_add(1, Ordering::Relaxed);
        Self(stats)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

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

/// Rate limits of the log lines of refusals anyone can cause without logging in (see
/// [`crate::logsafe`]).
#[derive(Debug, Default)]
pub(crate) struct RefusalLogs {
    /// Refused SASL logins.
    refused: RateLimit,
    /// Connections that did not open: protocol errors, no login in time, a second link.
    protocol: RateLimit,
}

/// What every consumer connection of the AMQP server shares.
pub(crate) struct AmqpContext {
    stats: Arc<AmqpStats>,
    registry: Arc<Registry>,
    groups: Arc<Groups>,
    /// Cluster mode: the consumer groups' queues (otherwise the groups' own).
    cluster: Option<Arc<dyn GroupQueues>>,
    auth_timeout: Duration,
    logs: Arc<RefusalLogs>,
    timestamp_window: Duration,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// The running AMQP server.
pub struct AmqpServer {
    shared: Arc<AmqpContext>,
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
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
        cluster: Option<Arc<dyn GroupQueues>>,
        shutdown: CancellationToken,
    ) -> Result<Self, AmqpError> {
        let bound = config.listener().bind().await?;
        let (addr, tls_addr) = (bound.addr(), bound.tls_addr());
        let shared = Arc::new(AmqpContext {
            stats: Arc::new(AmqpStats::default()),
            registry,
            groups,
            cluster,
            auth_timeout: Duration::from_secs(config.auth_timeout_secs),
            logs: Arc::default(),
            timestamp_window: Duration::from_secs(config.timestamp_window_secs),
            shutdown,
            tasks: TaskTracker::new(),
        });
        let serving = Serving {
            name: "amqp",
            max_connections: config.max_connections,
            // A TLS client gets as long for its handshake as for its login.
            handshake_timeout: shared.auth_timeout,
            shutdown: shared.shutdown.clone(),
            tasks: shared.tasks.clone(),
        };
        bound.serve(shared.clone(), &serving);
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

impl Handler for AmqpContext {
    type Guard = OpenConnection;

    fn accepted(&self, stream: &TcpStream, _peer: SocketAddr) -> OpenConnection {
        keepalive(stream);
        OpenConnection::new(self.stats.clone())
    }

    fn serve<S>(self: Arc<Self>, stream: S, peer: SocketAddr) -> impl Future<Output = ()> + Send
    where
        S: AsyncRead + AsyncWrite + std::fmt::Debug + Unpin + Send + 'static,
    {
        connection::serve(stream, peer, self)
    }
}
