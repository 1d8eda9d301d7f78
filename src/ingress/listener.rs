//! The MQTT side of the shared accept loop ([`crate::listener`]): each accepted connection,
//! plain or TLS, goes to the session layer.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::{connection, IngressContext};
use crate::listener::Handler;

impl Handler for IngressContext {
    type Guard = ();

    fn accepted(&self, _stream: &TcpStream, _peer: SocketAddr) {}

    fn serve<S>(self: Arc<Self>, stream: S, peer: SocketAddr) -> impl Future<Output = ()> + Send
    where
        S: AsyncRead + AsyncWrite + std::fmt::Debug + Unpin + Send + 'static,
    {
        connection::serve(stream, peer, self)
    }
}
