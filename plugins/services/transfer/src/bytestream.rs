//! Bytes over a named stream: containerd's binary stream protocol
//! (`core/transfer/streaming/stream.go`), which carries an archive to import or an export.
//!
//! The receiver grants credit with `containerd.types.transfer.WindowUpdate`; the sender sends
//! `containerd.types.transfer.Data` of at most the credit it has, and closes the stream at the
//! end. Here:
//!
//! - [`receive`] makes a stream into a blocking [`std::io::Read`] (an import reads the client's
//!   archive on a blocking thread): a task grants [`WINDOW`] whenever less than that is
//!   outstanding (containerd grants 64 KiB; any sender honours what it is given) and queues
//!   the data, so a slow reader holds the sender back; the client closing its side is the end
//!   of the archive.
//! - [`send`] makes one into a blocking [`std::io::Write`] (an export writes on a blocking
//!   thread): a task sends what is written in `Data` of at most [`MAX_CHUNK`] bytes and never
//!   more than the client has granted, and closes the stream once the writer is dropped and
//!   everything is out.
//!
//! Type URLs are matched by name whatever their prefix (Go clients send bare names); what the
//! daemon sends carries `type.googleapis.com/`, which Go's `typeurl` resolves too.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use berth_api::types::transfer as tt;
use berth_streams::{Message, Stream, StreamError};
use prost::Message as _;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

const DATA: &str = "containerd.types.transfer.Data";
const WINDOW_UPDATE: &str = "containerd.types.transfer.WindowUpdate";

/// The credit the daemon grants a sender at a time (containerd's receiver grants 64 KiB; a
/// larger window keeps a fast client busy over more round trips).
pub(crate) const WINDOW: i32 = 1 << 20;
/// The largest `Data` the daemon sends. Go's receiver takes any size up to gRPC's 4 MiB
/// message limit; containerd's own sender sends 32 KiB, and its receiver's 64 KiB window caps
/// what a Go client is sent anyway.
pub(crate) const MAX_CHUNK: usize = 128 * 1024;
/// Chunks queued between a stream's task and its blocking reader or writer.
const QUEUE: usize = 16;

/// The archive a client streams in, as a blocking reader. Must only be read off the async
/// runtime (on a blocking thread).
pub(crate) struct ByteReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ByteReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(e),
                // The client closed its side: the end of the archive.
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The task behind a [`ByteReader`]; dropping it (or [`Receiving::finish`]) ends the stream.
pub(crate) struct Receiving {
    stream: Stream,
    task: JoinHandle<()>,
}

impl Receiving {
    /// Ends the stream (the client's Streaming RPC ends) once the import is done with it.
    pub(crate) fn finish(self) {
        // Drop does it.
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        self.stream.close();
        self.task.abort();
    }
}

/// Receives the bytes the client sends on `stream`.
pub(crate) fn receive(stream: Stream) -> (ByteReader, Receiving) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = tokio::spawn(pump_in(stream.clone(), tx).in_current_span());
    (
        ByteReader {
            rx,
            buf: Vec::new(),
            pos: 0,
        },
        Receiving { stream, task },
    )
}

fn window_update(update: i32) -> Message {
    Message::new(WINDOW_UPDATE, tt::WindowUpdate { update }.encode_to_vec())
}

async fn pump_in(stream: Stream, tx: mpsc::Sender<io::Result<Vec<u8>>>) {
    // Credit granted and not yet used by the client.
    let mut window: i64 = 0;
    let mut received: u64 = 0;
    loop {
        if window < i64::from(WINDOW) {
            match stream.send(window_update(WINDOW)).await {
                Ok(()) => window += i64::from(WINDOW),
                // The client is gone or closed the stream; what it sent before is still read.
                Err(e) => {
                    tracing::debug!(stream = stream.id(), error = %e, "window update not sent")
                }
            }
        }
        let m = tokio::select! {
            m = stream.recv() => m,
            // The import stopped reading (it failed, or the archive ended): no more credit.
            () = tx.closed() => break,
        };
        match m {
            Ok(m) if m.is(DATA) => {
                let data = match tt::Data::decode(m.value.as_slice()) {
                    Ok(d) => d.data,
                    Err(e) => {
                        let _ = tx
                            .send(Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("undecodable {DATA} on stream {}: {e}", stream.id()),
                            )))
                            .await;
                        break;
                    }
                };
                window -= i64::try_from(data.len()).unwrap_or(i64::MAX);
                received += data.len() as u64;
                if !data.is_empty() && tx.send(Ok(data)).await.is_err() {
                    break;
                }
            }
            Ok(m) => {
                tracing::warn!(stream = stream.id(), type_url = %m.type_url, "ignoring an unexpected message on a data stream");
            }
            Err(StreamError::Closed { .. }) => {
                tracing::debug!(stream = stream.id(), received, "client finished sending");
                break;
            }
            Err(e) => {
                tracing::debug!(stream = stream.id(), error = %e, "data stream ended");
                break;
            }
        }
    }
}

/// The archive an export writes for the client, as a blocking writer. Must only be written
/// off the async runtime (on a blocking thread); dropping it is the end of the archive.
pub(crate) struct ByteWriter {
    tx: mpsc::Sender<Vec<u8>>,
}

impl Write for ByteWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.tx.blocking_send(buf.to_vec()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the client stopped receiving the archive",
            )
        })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Everything written is queued for the stream; the stream task sends it in order.
        Ok(())
    }
}

/// Credit the client granted, shared between the task reading its updates and the sender.
#[derive(Default)]
struct Window {
    available: AtomicI64,
    closed: AtomicBool,
    changed: Notify,
}

impl Window {
    /// Waits until there is credit; `None` once the client is gone.
    async fn wait(&self) -> Option<i64> {
        loop {
            let changed = self.changed.notified();
            let a = self.available.load(Ordering::SeqCst);
            if a > 0 {
                return Some(a);
            }
            if self.closed.load(Ordering::SeqCst) {
                return None;
            }
            changed.await;
        }
    }
}

/// The task behind a [`ByteWriter`].
pub(crate) struct Sending {
    task: Option<JoinHandle<Result<u64, StreamError>>>,
    stream: Stream,
}

impl Sending {
    /// Waits until everything written (the writer must be gone) is sent and the stream is
    /// closed; the bytes sent, or why the client did not get them.
    pub(crate) async fn finish(mut self) -> Result<u64, StreamError> {
        let Some(task) = self.task.take() else {
            return Ok(0);
        };
        match task.await {
            Ok(r) => r,
            Err(_) => Err(StreamError::Closed {
                id: self.stream.id().to_owned(),
            }),
        }
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            self.stream.close();
        }
    }
}

/// Sends what is written to the returned writer on `stream`, as the client's window allows.
pub(crate) fn send(stream: Stream) -> (ByteWriter, Sending) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = tokio::spawn(pump_out(stream.clone(), rx).in_current_span());
    (
        ByteWriter { tx },
        Sending {
            task: Some(task),
            stream,
        },
    )
}

async fn read_updates(stream: Stream, window: Arc<Window>) {
    loop {
        match stream.recv().await {
            Ok(m) if m.is(WINDOW_UPDATE) => match tt::WindowUpdate::decode(m.value.as_slice()) {
                Ok(u) if u.update > 0 => {
                    window
                        .available
                        .fetch_add(i64::from(u.update), Ordering::SeqCst);
                    window.changed.notify_one();
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(stream = stream.id(), error = %e, "undecodable window update")
                }
            },
            Ok(m) => {
                tracing::warn!(stream = stream.id(), type_url = %m.type_url, "ignoring an unexpected message on a data stream");
            }
            Err(_) => break,
        }
    }
    window.closed.store(true, Ordering::SeqCst);
    window.changed.notify_one();
}

async fn pump_out(stream: Stream, mut rx: mpsc::Receiver<Vec<u8>>) -> Result<u64, StreamError> {
    let window = Arc::new(Window::default());
    let updates = tokio::spawn(read_updates(stream.clone(), window.clone()).in_current_span());
    let gone = || StreamError::Closed {
        id: stream.id().to_owned(),
    };
    let result = async {
        let mut sent: u64 = 0;
        while let Some(buf) = rx.recv().await {
            let mut off = 0;
            while off < buf.len() {
                let available = window.wait().await.ok_or_else(gone)?;
                let n = (buf.len() - off)
                    .min(MAX_CHUNK)
                    .min(usize::try_from(available).unwrap_or(usize::MAX));
                let data = tt::Data {
                    data: buf[off..off + n].to_vec(),
                };
                stream
                    .send(Message::new(DATA, data.encode_to_vec()))
                    .await?;
                window
                    .available
                    .fetch_sub(i64::try_from(n).unwrap_or(i64::MAX), Ordering::SeqCst);
                off += n;
                sent += n as u64;
            }
        }
        Ok(sent)
    }
    .await;
    // The sender closes the stream at the end (what was sent is delivered first); on a failure
    // too, so the client's copy ends.
    stream.close();
    updates.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_streams::StreamManager;

    /// A client that sends `data` in chunks as containerd's `SendStream` does: nothing before
    /// credit, never more than the credit, the stream closed at the end.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_go_shaped_sender_is_read_whole() {
        let m = StreamManager::new();
        let (mut ep, incoming) = m.register("ns", "import-1").unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let client = tokio::spawn(async move {
            let mut window: i64 = 0;
            let mut off = 0;
            let mut max_in_flight = 0;
            while off < data.len() {
                while window <= 0 {
                    let u = ep.outgoing.recv().await.expect("credit");
                    assert!(u.is(WINDOW_UPDATE), "{}", u.type_url);
                    window +=
                        i64::from(tt::WindowUpdate::decode(u.value.as_slice()).unwrap().update);
                }
                max_in_flight = max_in_flight.max(window);
                let n = (data.len() - off).min(32 * 1024).min(window as usize);
                let d = tt::Data {
                    data: data[off..off + n].to_vec(),
                };
                // Bare type names, as Go's typeurl writes them.
                incoming
                    .send(Message {
                        type_url: DATA.into(),
                        value: d.encode_to_vec(),
                    })
                    .await
                    .unwrap();
                window -= n as i64;
                off += n;
            }
            drop(incoming);
            // The daemon closes the stream once it has read everything.
            ep.closed_signal().wait().await;
            max_in_flight
        });
        let stream = m.get("ns", "import-1").unwrap();
        let (mut reader, receiving) = receive(stream);
        let got = tokio::task::spawn_blocking(move || {
            let mut v = Vec::new();
            reader.read_to_end(&mut v).unwrap();
            v
        })
        .await
        .unwrap();
        receiving.finish();
        assert_eq!(got, expected);
        let max = client.await.unwrap();
        assert!(max <= 2 * i64::from(WINDOW), "{max}");
    }

    /// A client that grants 64 KiB at a time, as containerd's `ReceiveStream` does.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_writer_honours_a_small_window_and_closes_at_the_end() {
        let m = StreamManager::new();
        let (mut ep, incoming) = m.register("ns", "export-1").unwrap();
        let stream = m.get("ns", "export-1").unwrap();
        let (mut writer, sending) = send(stream);
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
        let expected = data.clone();
        let write = tokio::task::spawn_blocking(move || {
            writer.write_all(&data).unwrap();
            writer.flush().unwrap();
        });
        const GRANT: i32 = 64 * 1024;
        let mut got = Vec::new();
        let mut window: i64 = 0;
        loop {
            if window < i64::from(GRANT) {
                incoming
                    .send(Message {
                        type_url: WINDOW_UPDATE.into(),
                        value: tt::WindowUpdate { update: GRANT }.encode_to_vec(),
                    })
                    .await
                    .unwrap();
                window += i64::from(GRANT);
            }
            let mut closed = ep.closed_signal();
            let m = tokio::select! {
                biased;
                m = ep.outgoing.recv() => m,
                () = closed.wait() => ep.outgoing.try_recv().ok(),
            };
            let Some(m) = m else { break };
            assert!(m.is(DATA));
            let d = tt::Data::decode(m.value.as_slice()).unwrap().data;
            assert!(
                d.len() as i64 <= window,
                "{} over a window of {window}",
                d.len()
            );
            window -= d.len() as i64;
            got.extend(d);
        }
        write.await.unwrap();
        assert_eq!(sending.finish().await.unwrap(), expected.len() as u64);
        assert_eq!(got, expected);
    }

    /// A client that goes away: the writer fails instead of blocking for ever.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_writer_fails_when_the_client_goes() {
        let m = StreamManager::new();
        let (ep, incoming) = m.register("ns", "export-2").unwrap();
        let stream = m.get("ns", "export-2").unwrap();
        let (mut writer, sending) = send(stream);
        drop(incoming);
        drop(ep);
        let r = tokio::task::spawn_blocking(move || {
            let chunk = vec![0u8; 64 * 1024];
            for _ in 0..1000 {
                writer.write_all(&chunk)?;
            }
            Ok::<(), io::Error>(())
        })
        .await
        .unwrap();
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::BrokenPipe);
        assert!(sending.finish().await.is_err());
    }
}
