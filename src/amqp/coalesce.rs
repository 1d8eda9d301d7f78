//! Several AMQP frames per write system call.
//!
//! fe2o3-amqp flushes its transport after every frame, so each delivered message costs one
//! `writev`. [`Coalescing`] takes the writes into a buffer and lets one writer task per
//! connection send whatever has gathered: idle, a frame goes out at once (one task hop later);
//! busy, the frames that arrive while a write is in progress leave together in the next one.
//! A flush returns once the bytes are handed to that task, which writes them in order; an error
//! of the socket is reported by the next write, flush or shutdown.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::sync::Notify;

/// Bytes a connection may have waiting for its writer; beyond it writes wait. Bounds the memory
/// a consumer that reads slowly can make the server hold (plus one frame).
const CAP: usize = 256 * 1024;

#[derive(Default)]
struct State {
    buf: BytesMut,
    /// The socket failed: every later call reports it.
    error: Option<(io::ErrorKind, String)>,
    /// A write or shutdown waiting for the writer.
    waiting: Option<Waker>,
    /// Shutdown requested (or the stream dropped): the writer drains, shuts down and ends.
    shutdown: bool,
    /// The writer has ended.
    closed: bool,
}

/// The bytes waiting for the writer task, and how the stream and the task wake each other.
struct WriteQueue {
    state: Mutex<State>,
    writer: Notify,
}

impl WriteQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A stream whose writes a background task sends in batches.
pub struct Coalescing<S> {
    read: ReadHalf<S>,
    shared: Arc<WriteQueue>,
}

impl<S> std::fmt::Debug for Coalescing<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescing").finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Send + 'static> Coalescing<S> {
    /// Wraps `stream` and starts its writer task.
    pub fn new(stream: S) -> Self {
        let (read, write) = tokio::io::split(stream);
        let shared = Arc::new(WriteQueue { state: Mutex::new(State::default()), writer: Notify::new() });
        tokio::spawn(write_loop(write, shared.clone()));
        Self { read, shared }
    }
}

async fn write_loop<S: AsyncWrite>(mut write: WriteHalf<S>, shared: Arc<WriteQueue>) {
    loop {
        let (chunk, shutdown) = {
            let mut st = shared.lock();
            let chunk = st.buf.split().freeze();
            if let Some(w) = st.waiting.take() {
                w.wake();
            }
            (chunk, st.shutdown)
        };
        if chunk.is_empty() {
            if shutdown {
                let _ = write.shutdown().await;
                let mut st = shared.lock();
                st.closed = true;
                if let Some(w) = st.waiting.take() {
                    w.wake();
                }
                return;
            }
            shared.writer.notified().await;
            continue;
        }
        if let Err(e) = write.write_all(&chunk).await {
            let mut st = shared.lock();
            st.error = Some((e.kind(), e.to_string()));
            st.closed = true;
            if let Some(w) = st.waiting.take() {
                w.wake();
            }
            return;
        }
    }
}

fn failed(e: &(io::ErrorKind, String)) -> io::Error {
    io::Error::new(e.0, e.1.clone())
}

impl<S: AsyncRead> AsyncRead for Coalescing<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite> AsyncWrite for Coalescing<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let mut st = self.shared.lock();
        if let Some(e) = &st.error {
            return Poll::Ready(Err(failed(e)));
        }
        if st.shutdown {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "write after shutdown")));
        }
        if st.buf.len() >= CAP {
            st.waiting = Some(cx.waker().clone());
            return Poll::Pending;
        }
        st.buf.extend_from_slice(data);
        drop(st);
        self.shared.writer.notify_one();
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &self.shared.lock().error {
            Some(e) => Poll::Ready(Err(failed(e))),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.shared.lock();
        if st.closed {
            return Poll::Ready(st.error.as_ref().map_or(Ok(()), |e| Err(failed(e))));
        }
        st.shutdown = true;
        st.waiting = Some(cx.waker().clone());
        drop(st);
        self.shared.writer.notify_one();
        Poll::Pending
    }
}

impl<S> Drop for Coalescing<S> {
    /// The writer sends what is left, shuts the socket down and ends.
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.writer.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn writes_arrive_in_order_and_shutdown_drains_them() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut c = Coalescing::new(a);
        let mut expected = Vec::new();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.unwrap();
            got
        });
        for i in 0..2000u32 {
            let frame = format!("frame {i};");
            expected.extend_from_slice(frame.as_bytes());
            c.write_all(frame.as_bytes()).await.unwrap();
            c.flush().await.unwrap();
        }
        c.shutdown().await.unwrap();
        assert_eq!(reader.await.unwrap(), expected);
    }

    #[tokio::test]
    async fn dropping_the_stream_still_delivers_what_was_written() {
        let (a, mut b) = tokio::io::duplex(16);
        let mut c = Coalescing::new(a);
        c.write_all(b"last words").await.unwrap();
        drop(c);
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"last words");
    }

    #[tokio::test]
    async fn a_closed_peer_is_reported() {
        let (a, b) = tokio::io::duplex(16);
        drop(b);
        let mut c = Coalescing::new(a);
        let mut result = Ok(());
        for _ in 0..100 {
            result = c.write_all(b"0123456789").await;
            if result.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(result.is_err() || c.flush().await.is_err());
    }
}
