//! A device connection's socket with its read and write buffers.
//!
//! An idle connection holds no buffer: a read waits for data with nothing allocated (it reads
//! into a stack buffer first), the read buffer is released as soon as every packet in it has
//! been taken, and a write buffer that grew for a large packet is released once written. A
//! buffer grows only while a packet larger than one read is in flight, and only up to that
//! packet (the codec refuses more than `max_packet`).

use std::future::poll_fn;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Read-buffer growth step while a packet is incomplete, and the size of the stack buffer an
/// idle connection reads into: one read usually takes a batch of small publishes.
const READ_CHUNK: usize = 4096;

/// A write buffer above this capacity is released after it was written: it grew for a large
/// packet (a cloud-to-device payload). Below it, it is kept for the next PUBACKs, which a
/// publishing device gets after every batch.
const KEEP_WRITE_BUFFER: usize = 1024;

/// A connection's socket and its read and write buffers.
pub(super) struct Io<S> {
    pub(super) stream: S,
    pub(super) rbuf: BytesMut,
    pub(super) wbuf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Io<S> {
    /// A connection without buffers yet.
    pub(super) fn new(stream: S) -> Self {
        Self { stream, rbuf: BytesMut::new(), wbuf: BytesMut::new() }
    }

    /// Reads more bytes into the read buffer; `Ok(0)` at the end of the stream.
    ///
    /// With nothing buffered the read goes to a stack buffer and only what arrived is copied to
    /// a fresh read buffer, so that a connection waiting for its device allocates nothing. With
    /// part of a packet buffered it reads straight into the buffer, grown by [`READ_CHUNK`].
    pub(super) async fn read_more(&mut self) -> std::io::Result<usize> {
        if !self.rbuf.is_empty() {
            if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
                self.rbuf.reserve(READ_CHUNK);
            }
            return self.stream.read_buf(&mut self.rbuf).await;
        }
        // Message payloads taken from the old buffer share its allocation; they keep it alive
        // for as long as they need it.
        self.rbuf = BytesMut::new();
        let (stream, rbuf) = (&mut self.stream, &mut self.rbuf);
        poll_fn(|cx| {
            let mut stack = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut buf = ReadBuf::uninit(&mut stack);
            ready!(Pin::new(&mut *stream).poll_read(cx, &mut buf))?;
            let read = buf.filled();
            // A full stack buffer suggests more is coming: leave room for it.
            let room = if read.len() == READ_CHUNK { 2 * READ_CHUNK } else { read.len() };
            rbuf.reserve(room);
            rbuf.extend_from_slice(read);
            Poll::Ready(Ok(read.len()))
        })
        .await
    }

    /// Writes the write buffer out; releases it when it grew for a large packet.
    pub(super) async fn flush(&mut self) -> std::io::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        if self.wbuf.capacity() > KEEP_WRITE_BUFFER {
            self.wbuf = BytesMut::new();
        }
        Ok(())
    }
}
