//! Listeners: the `listen`, `tls_listen`, `cert` and `key` keys a section writes (a
//! [`Listener`], checked here and nowhere else) and the one accept loop the MQTT and the AMQP
//! servers share: TLS termination (rustls with the ring provider) and a bound on the
//! connections served at once.
//!
//! A leaf: a server hands its protocol in as a [`Handler`] and keeps its protocol code.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::check::{key, Problem};

/// A listener as a configuration section writes it: a plain address and an optional TLS one
/// with its PEM files.
///
/// The TOML keys (`listen`, `tls_listen`, `cert`, `key`) are a public contract. serde's
/// `flatten` does not combine with `deny_unknown_fields`, so each section keeps the four fields
/// and hands them over as a `Listener`, which owns their rules and their use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Plain TCP listener; port 0 lets the OS pick.
    pub listen: SocketAddr,
    /// Optional TLS listener (TLS from the first byte); needs `cert` and `key`.
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for `tls_listen`.
    pub cert: Option<PathBuf>,
    /// PEM private key for `tls_listen`.
    pub key: Option<PathBuf>,
}

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// The address could not be bound. The OS error is part of the message and deliberately
    /// not a `source`: error chains would print it a second time.
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        error: std::io::Error,
    },
    /// The TLS keys are incomplete, or the certificate or key is unusable (naming the file).
    #[error("TLS: {0}")]
    Tls(String),
}

impl ListenerError {
    /// The address that could not be bound, if that is what failed.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self {
            ListenerError::Bind { addr, .. } => Some(*addr),
            ListenerError::Tls(_) => None,
        }
    }
}

impl Listener {
    /// A plain listener without TLS.
    pub fn plain(listen: SocketAddr) -> Self {
        Self { listen, tls_listen: None, cert: None, key: None }
    }

    /// The TLS keys: `tls_listen` needs `cert` and `key`, and both files must exist. Paths are
    /// relative to the section; relative file names to the working directory, where the server
    /// opens them.
    pub fn check(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.tls_listen.is_none() {
            return problems;
        }
        let files = [("cert", "PEM certificate chain", &self.cert), ("key", "PEM private key", &self.key)];
        for (name, what, file) in files {
            match file {
                None => problems.push(
                    Problem::new(key(name), format!("missing; tls_listen needs `{name}`, the {what} file"))
                        .on_line_of(key("tls_listen")),
                ),
                Some(file) => match std::fs::metadata(file) {
                    Ok(meta) if meta.is_file() => {}
                    Ok(_) => problems.push(Problem::new(
                        key(name),
                        format!("\"{}\" is not a file; expected the {what} file", file.display()),
                    )),
                    Err(err) => problems.push(Problem::new(
                        key(name),
                        format!("cannot read \"{}\": {err}; expected the {what} file", file.display()),
                    )),
                },
            }
        }
        problems
    }

    /// Binds the plain listener and, when configured, the TLS one with its certificate loaded.
    ///
    /// # Errors
    /// An address cannot be bound, or the TLS keys break [`Self::check`] or their files are
    /// unusable.
    pub async fn bind(&self) -> Result<Bound, ListenerError> {
        if let Some(problem) = self.check().into_iter().next() {
            return Err(ListenerError::Tls(format!("{}: {}", problem.path, problem.message)));
        }
        // After the check, `tls_listen` comes with both files.
        let tls = match (self.tls_listen, &self.cert, &self.key) {
            (Some(addr), Some(cert), Some(key)) => Some((addr, acceptor(cert, key)?)),
            _ => None,
        };
        let plain = bind(self.listen).await?;
        let tls = match tls {
            Some((addr, acceptor)) => Some((bind(addr).await?, acceptor)),
            None => None,
        };
        Ok(Bound { plain, tls })
    }
}

/// A TCP listener and the address it is bound to (port 0 resolved).
struct BoundSocket {
    listener: TcpListener,
    addr: SocketAddr,
}

async fn bind(addr: SocketAddr) -> Result<BoundSocket, ListenerError> {
    let listener = TcpListener::bind(addr).await.map_err(|error| ListenerError::Bind { addr, error })?;
    let bound = listener.local_addr().map_err(|error| ListenerError::Bind { addr, error })?;
    Ok(BoundSocket { listener, addr: bound })
}

/// Builds a TLS acceptor from PEM files.
fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, ListenerError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let tls = |message: String| ListenerError::Tls(message);
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(tls(format!("{}: no certificate found", cert.display())));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| tls(format!("{}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key_der))
        .map_err(|e| tls(format!("{}: {e}", cert.display())))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The bound sockets of a [`Listener`], ready to serve.
pub struct Bound {
    plain: BoundSocket,
    tls: Option<(BoundSocket, TlsAcceptor)>,
}

/// How a server's connections are served.
#[derive(Debug, Clone)]
pub struct Serving {
    /// Names the server in logs (`mqtt`, `amqp`).
    pub name: &'static str,
    /// Connections served at once, over the plain and the TLS listener together; further ones
    /// wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Time a TLS client has to finish its handshake.
    pub handshake_timeout: Duration,
    /// Stops the accept loops; the handler stops its connections itself.
    pub shutdown: CancellationToken,
    /// Tracks the accept loops and every connection, so the server can wait for them.
    pub tasks: TaskTracker,
}

/// A server's protocol, given each accepted connection.
pub trait Handler: Send + Sync + 'static {
    /// What a connection holds from accept to close, made before any TLS handshake (a gauge of
    /// open connections, say).
    type Guard: Send + 'static;

    /// Called at accept, before any TLS handshake: socket options, counters.
    fn accepted(&self, stream: &TcpStream, peer: SocketAddr) -> Self::Guard;

    /// Serves one connection, plain or TLS, until it ends; logs its own errors.
    fn serve<S>(self: Arc<Self>, stream: S, peer: SocketAddr) -> impl Future<Output = ()> + Send
    where
        S: AsyncRead + AsyncWrite + std::fmt::Debug + Unpin + Send + 'static;
}

impl Bound {
    /// The plain listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.plain.addr
    }

    /// The TLS listener's address, if there is one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(|(socket, _)| socket.addr)
    }

    /// The plain TCP listener alone, for a server that runs its own accept loop (the HTTP API).
    pub fn into_plain(self) -> TcpListener {
        self.plain.listener
    }

    /// Starts accepting on every listener, handing each connection to `handler`.
    pub fn serve<H: Handler>(self, handler: Arc<H>, serving: &Serving) {
        let permits = Arc::new(Semaphore::new(serving.max_connections));
        let sockets = std::iter::once((self.plain, None)).chain(self.tls.map(|(s, a)| (s, Some(a))));
        for (socket, tls) in sockets {
            let accept = accept_loop(socket.listener, tls, handler.clone(), permits.clone(), serving.clone());
            serving.tasks.spawn(accept);
        }
    }
}

/// Accepts connections until shutdown. Each connection holds a permit of `permits`, so at most
/// `max_connections` are served at once.
async fn accept_loop<H: Handler>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handler: Arc<H>,
    permits: Arc<Semaphore>,
    serving: Serving,
) {
    let name = serving.name;
    loop {
        let permit = tokio::select! {
            () = serving.shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = serving.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::error!(listener = name, error = %e, "Accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let handler = handler.clone();
        let tls = tls.clone();
        let timeout = serving.handshake_timeout;
        serving.tasks.spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            let _guard = handler.accepted(&stream, peer);
            match tls {
                None => handler.serve(stream, peer).await,
                // Boxed: a TLS stream carries rustls' connection state (several KiB), and an
                // unboxed branch would make every plain connection's task that large too.
                Some(acceptor) => {
                    Box::pin(async move {
                        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => handler.serve(stream, peer).await,
                            Ok(Err(e)) => {
                                tracing::warn!(listener = name, %peer, error = %e, "TLS handshake failed")
                            }
                            Err(_) => tracing::warn!(listener = name, %peer, "TLS handshake timed out"),
                        }
                    })
                    .await
                }
            }
        });
    }
    tracing::debug!(listener = name, addr = ?listener.local_addr().ok(), "Listener stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(tls: bool, cert: Option<&Path>, key: Option<&Path>) -> Listener {
        Listener {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls_listen: tls.then(|| SocketAddr::from(([127, 0, 0, 1], 0))),
            cert: cert.map(Path::to_path_buf),
            key: key.map(Path::to_path_buf),
        }
    }

    #[test]
    fn the_tls_keys_go_together() {
        assert!(listener(false, None, None).check().is_empty());
        let problems = listener(true, None, None).check();
        let keys: Vec<String> = problems.iter().map(|p| p.path.to_string()).collect();
        assert_eq!(keys, ["cert", "key"]);
        assert_eq!(problems[0].line_of, Some(key("tls_listen")));

        let dir = tempfile::tempdir().expect("temp dir");
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "pem").expect("write");
        let problems = listener(true, Some(&cert), Some(dir.path())).check();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains("is not a file"), "{}", problems[0].message);
    }

    #[tokio::test]
    async fn bind_refuses_incomplete_tls_keys() {
        let err = listener(true, None, None).bind().await.err().expect("refused");
        assert!(matches!(err, ListenerError::Tls(_)), "{err}");
        assert!(err.to_string().starts_with("TLS: cert: missing"), "{err}");
        let bound = listener(false, None, None).bind().await.expect("binds");
        assert_ne!(bound.addr().port(), 0);
        assert_eq!(bound.tls_addr(), None);
    }
}
