//! Accept loops for the plain and TLS MQTT listeners.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::{connection, IngressError, Shared};

/// Builds a TLS acceptor from PEM files.
///
/// # Errors
/// Unreadable or invalid certificate or key, naming the file.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, IngressError> {
    crate::tls::acceptor(cert, key).map_err(IngressError::Tls)
}

/// Accepts connections until shutdown. Each connection holds a permit of `permits`, so at most
/// `max_connections` are served at once; further ones wait in the kernel's accept queue.
pub(super) async fn run(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
) {
    loop {
        let permit = tokio::select! {
            () = shared.shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = shared.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::error!(error = %e, "Accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let shared2 = shared.clone();
        let tls = tls.clone();
        shared.tasks.spawn(async move {
            serve(stream, peer, tls, shared2).await;
            drop(permit);
        });
    }
    tracing::debug!(addr = ?listener.local_addr().ok(), "MQTT listener stopped");
}

async fn serve(stream: TcpStream, peer: SocketAddr, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    match tls {
        None => connection::serve(stream, peer, shared).await,
        Some(acceptor) => {
            let timeout = Duration::from_secs(shared.limits.connect_timeout_secs);
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => connection::serve(tls_stream, peer, shared).await,
                Ok(Err(e)) => tracing::warn!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::warn!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

/// Binds `addr`, naming it in the error.
pub(super) async fn bind(addr: SocketAddr) -> Result<TcpListener, IngressError> {
    TcpListener::bind(addr).await.map_err(|source| IngressError::Bind { addr, source })
}
