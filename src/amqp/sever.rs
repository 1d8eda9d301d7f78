//! A stream the connection task can cut, whoever holds it.
//!
//! fe2o3's connection engine runs as its own task and owns the transport: dropping the
//! connection handle (after a close that the peer never answers, say) leaves the engine, and the
//! TCP socket, alive. [`Severable`] gives the connection task the last word: once its
//! [`Sever`] guard drops, every read and write fails, the engine ends on that error and drops
//! the stream, and the socket closes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, DropGuard, WaitForCancellationFutureOwned};

/// A stream that fails every call once its [`Sever`] is dropped.
pub struct Severable<S> {
    inner: S,
    severed: Pin<Box<WaitForCancellationFutureOwned>>,
}

/// Cuts its [`Severable`] when dropped.
pub struct Sever(#[allow(dead_code)] DropGuard);

/// Wraps `stream`; the stream lives until the returned guard drops.
pub fn severable<S>(stream: S) -> (Severable<S>, Sever) {
    let token = CancellationToken::new();
    let severed = Box::pin(token.clone().cancelled_owned());
    (Severable { inner: stream, severed }, Sever(token.drop_guard()))
}

impl<S> std::fmt::Debug for Severable<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Severable").finish_non_exhaustive()
    }
}

impl<S> Severable<S> {
    /// Whether the guard dropped; registers the task to be woken when it does.
    fn cut(&mut self, cx: &mut Context<'_>) -> bool {
        self.severed.as_mut().poll(cx).is_ready()
    }
}

fn severed() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "the connection task ended")
}

impl<S: AsyncRead + Unpin> AsyncRead for Severable<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.cut(cx) {
            return Poll::Ready(Err(severed()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Severable<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.cut(cx) {
            return Poll::Ready(Err(severed()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.cut(cx) {
            return Poll::Ready(Err(severed()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_pending_read_fails_when_the_guard_drops() {
        let (a, mut b) = tokio::io::duplex(64);
        let (mut s, sever) = severable(a);
        b.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        s.read_exact(&mut one).await.unwrap();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            s.read(&mut buf).await
        });
        tokio::task::yield_now().await;
        drop(sever);
        let got = reader.await.unwrap();
        assert_eq!(got.unwrap_err().kind(), io::ErrorKind::ConnectionAborted);
    }
}
