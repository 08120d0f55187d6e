//! Lets every gRPC client reach the daemon, whatever it puts in HTTP/2's `:authority`.
//!
//! Clients that dial a unix socket disagree on what the authority of such a connection is: grpc-go
//! and containerd's client send `localhost`, but grpc-core (Python's `grpcio`, Ruby, C++), grpc-java,
//! older crictl and Go programs that dial the path themselves send the socket path, raw
//! (`/run/berth/berthd.sock`) or %-encoded. Go's HTTP/2 server (and so containerd) accepts any of
//! them; the `h2` crate under tonic refuses an authority that is not a valid URI authority and
//! resets the stream with PROTOCOL_ERROR before any service sees the request.
//!
//! [`AuthorityFix`] sits between the accepted socket and the HTTP/2 server and reads the client's
//! frames. It HPACK-decodes the connection's first header block (HEADERS plus its CONTINUATION
//! frames). If that block's `:authority` is one `h2` accepts, the block goes on byte for byte and
//! the adapter steps aside: the rest of the connection is copied straight into the server's
//! buffer, so well-behaved clients (containerd's Go client, tonic, ctr) pay one decode per
//! connection and nothing per call. gRPC clients fix the authority per channel, so a client
//! whose first authority is fine does not send a bad one later; if one did, `h2` would refuse that
//! stream as it does today.
//!
//! If the first `:authority` must be replaced, the connection stays in rewriting mode: every
//! header block is decoded, an unusable `:authority` becomes `localhost`, and the block is
//! re-encoded for the server (padding dropped, priority kept). Every block is re-encoded, not only
//! the ones that change, because HPACK is stateful: the client's encoder and our decoder share one
//! dynamic table, our encoder and the server's decoder another, and the two must never be mixed.
//! Both tables have HTTP/2's default size of 4096 bytes, which is what the server advertises
//! (tonic does not change `SETTINGS_HEADER_TABLE_SIZE`). Other frames — SETTINGS, DATA,
//! WINDOW_UPDATE, … — pass through untouched, DATA payloads straight into the server's buffer.
//! What the server writes back is never touched.
//!
//! Hostile input is bounded before it is buffered: a header block the adapter reads larger than
//! [`Limits::max_block`], spread over more than [`Limits::max_frames`] frames (the CONTINUATION
//! flood), decoding to more than [`Limits::max_decoded`], or not valid HPACK ends that connection
//! with an `InvalidData` error; the server drops it and keeps serving the others.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// What an unusable `:authority` becomes.
pub const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";

const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
const PRIORITY_LEN: usize = 5;
/// HTTP/2's default SETTINGS_HEADER_TABLE_SIZE, on both sides of the adapter.
const HEADER_TABLE_SIZE: usize = 4096;
/// RFC 9113's default SETTINGS_MAX_FRAME_SIZE: the largest frame the server accepts unless it
/// says otherwise, so the largest the adapter writes.
const DEFAULT_MAX_FRAME_SIZE: usize = 16_384;

/// Bounds on what one header block may cost before the connection is closed.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest encoded header block (all fragments of HEADERS and CONTINUATION frames together).
    pub max_block: usize,
    /// Most frames one header block may span.
    pub max_frames: usize,
    /// Largest decoded header list, counted as HTTP/2 does (name + value + 32 per field).
    pub max_decoded: usize,
}

impl Default for Limits {
    /// Generous for gRPC (whose clients cap metadata at 8–16 KiB) and small enough that a hostile
    /// client cannot make the daemon buffer or decode much.
    fn default() -> Self {
        Limits {
            max_block: 256 * 1024,
            max_frames: 64,
            max_decoded: 256 * 1024,
        }
    }
}

/// Why a connection was closed.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("header block of stream {stream} is larger than {limit} bytes")]
    BlockTooLarge { stream: u32, limit: usize },
    #[error("header block of stream {stream} spans more than {limit} frames")]
    TooManyFrames { stream: u32, limit: usize },
    #[error("headers of stream {stream} decode to more than {limit} bytes")]
    DecodedTooLarge { stream: u32, limit: usize },
    #[error("header block of stream {stream} is not valid HPACK: {detail}")]
    Hpack { stream: u32, detail: String },
    #[error("expected a CONTINUATION frame for stream {expected}, got frame type {frame_type:#x} on stream {stream}")]
    ExpectedContinuation {
        expected: u32,
        frame_type: u8,
        stream: u32,
    },
    #[error("malformed HEADERS frame on stream {stream}: {what}")]
    Malformed { stream: u32, what: &'static str },
}

impl From<RewriteError> for io::Error {
    fn from(e: RewriteError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// A header block being collected across HEADERS and CONTINUATION frames.
struct PendingBlock {
    stream: u32,
    /// END_STREAM and PRIORITY of the HEADERS frame; the rest is recomputed.
    flags: u8,
    priority: Option<[u8; PRIORITY_LEN]>,
    fragment: Vec<u8>,
    frames: usize,
}

#[derive(Clone, Copy)]
struct FrameHeader {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl FrameHeader {
    fn parse(b: &[u8; FRAME_HEADER_LEN]) -> FrameHeader {
        FrameHeader {
            len: usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }
}

enum State {
    /// Matching the client preface; `usize` bytes of it seen so far.
    Preface(usize),
    /// Collecting a frame header.
    Header,
    /// Copying the payload of a frame the adapter does not touch.
    Passthrough(usize),
    /// Collecting the payload of a HEADERS or CONTINUATION frame.
    Collect(FrameHeader),
    /// Not an HTTP/2 client: everything passes through for the server to refuse.
    Transparent,
}

/// The client-to-server half of the adapter, without I/O: bytes in, rewritten bytes out.
pub struct Rewriter {
    state: State,
    limits: Limits,
    header: [u8; FRAME_HEADER_LEN],
    header_len: usize,
    payload: Vec<u8>,
    pending: Option<PendingBlock>,
    decoder: loona_hpack::Decoder<'static>,
    encoder: loona_hpack::Encoder<'static>,
    rewritten: u64,
    /// Until the first header block is decided: its frames exactly as received, to forward
    /// unchanged if it needs no rewriting.
    first_block: Option<Vec<u8>>,
}

impl Default for Rewriter {
    fn default() -> Self {
        Rewriter::new(Limits::default())
    }
}

impl Rewriter {
    pub fn new(limits: Limits) -> Rewriter {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE_SIZE);
        let mut encoder = loona_hpack::Encoder::new();
        encoder.set_max_table_size(HEADER_TABLE_SIZE);
        Rewriter {
            state: State::Preface(0),
            limits,
            header: [0; FRAME_HEADER_LEN],
            header_len: 0,
            payload: Vec::new(),
            pending: None,
            decoder,
            encoder,
            rewritten: 0,
            first_block: Some(Vec::new()),
        }
    }

    /// How many header blocks had their `:authority` replaced so far.
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// Bytes that may be copied from the client to the server unchanged right now, without
    /// passing through [`Rewriter::feed`]; report them with [`Rewriter::passed`].
    pub fn passthrough_len(&self) -> usize {
        match self.state {
            State::Passthrough(n) => n,
            State::Transparent => usize::MAX,
            _ => 0,
        }
    }

    /// Records that `n` (at most [`Rewriter::passthrough_len`]) bytes were copied unchanged.
    pub fn passed(&mut self, n: usize) {
        if let State::Passthrough(left) = &mut self.state {
            *left -= n.min(*left);
            if *left == 0 {
                self.state = State::Header;
            }
        }
    }

    /// Consumes `input` from the client and appends what the server should read to `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        while !input.is_empty() {
            match self.state {
                State::Transparent => {
                    out.extend_from_slice(input);
                    return Ok(());
                }
                State::Preface(seen) => {
                    let n = (PREFACE.len() - seen).min(input.len());
                    if input[..n] != PREFACE[seen..seen + n] {
                        // Not HTTP/2 prior knowledge: let the server answer it as it would (the
                        // matching part of the preface has already gone out).
                        self.state = State::Transparent;
                        continue;
                    }
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.state = if seen + n == PREFACE.len() {
                        State::Header
                    } else {
                        State::Preface(seen + n)
                    };
                }
                State::Header => {
                    let n = (FRAME_HEADER_LEN - self.header_len).min(input.len());
                    self.header[self.header_len..self.header_len + n].copy_from_slice(&input[..n]);
                    self.header_len += n;
                    input = &input[n..];
                    if self.header_len == FRAME_HEADER_LEN {
                        self.header_len = 0;
                        let header = FrameHeader::parse(&self.header);
                        self.begin_frame(header, out)?;
                    }
                }
                State::Passthrough(left) => {
                    let n = left.min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.passed(n);
                }
                State::Collect(header) => {
                    let n = (header.len - self.payload.len()).min(input.len());
                    self.payload.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if self.payload.len() == header.len {
                        self.state = State::Header;
                        self.end_frame(header, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn begin_frame(&mut self, header: FrameHeader, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        if let Some(pending) = &self.pending {
            if header.kind != TYPE_CONTINUATION || header.stream != pending.stream {
                return Err(RewriteError::ExpectedContinuation {
                    expected: pending.stream,
                    frame_type: header.kind,
                    stream: header.stream,
                });
            }
        }
        let ours = header.kind == TYPE_HEADERS
            || (header.kind == TYPE_CONTINUATION && self.pending.is_some());
        if !ours {
            // Includes a stray CONTINUATION, which the server rejects as the protocol error it is.
            out.extend_from_slice(&self.header);
            self.state = if header.len == 0 {
                State::Header
            } else {
                State::Passthrough(header.len)
            };
            return Ok(());
        }
        let buffered = self.pending.as_ref().map_or(0, |p| p.fragment.len());
        if buffered + header.len > self.limits.max_block {
            return Err(RewriteError::BlockTooLarge {
                stream: header.stream,
                limit: self.limits.max_block,
            });
        }
        if let Some(raw) = &mut self.first_block {
            raw.extend_from_slice(&self.header);
        }
        self.payload.clear();
        self.state = State::Collect(header);
        if header.len == 0 {
            self.state = State::Header;
            self.end_frame(header, out)?;
        }
        Ok(())
    }

    fn end_frame(&mut self, header: FrameHeader, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        if let Some(raw) = &mut self.first_block {
            raw.extend_from_slice(&self.payload);
        }
        let malformed = |what| RewriteError::Malformed {
            stream: header.stream,
            what,
        };
        if header.kind == TYPE_HEADERS {
            let mut body = &self.payload[..];
            let mut pad = 0;
            if header.flags & FLAG_PADDED != 0 {
                let (&p, rest) = body
                    .split_first()
                    .ok_or(malformed("padding length missing"))?;
                pad = usize::from(p);
                body = rest;
            }
            let mut priority = None;
            if header.flags & FLAG_PRIORITY != 0 {
                let (p, rest) = body
                    .split_first_chunk::<PRIORITY_LEN>()
                    .ok_or(malformed("priority fields missing"))?;
                priority = Some(*p);
                body = rest;
            }
            if pad > body.len() {
                return Err(malformed("padding longer than the frame"));
            }
            let fragment = body[..body.len() - pad].to_vec();
            self.pending = Some(PendingBlock {
                stream: header.stream,
                flags: header.flags & (FLAG_END_STREAM | FLAG_PRIORITY),
                priority,
                fragment,
                frames: 1,
            });
        } else if let Some(pending) = &mut self.pending {
            pending.frames += 1;
            if pending.frames > self.limits.max_frames {
                return Err(RewriteError::TooManyFrames {
                    stream: header.stream,
                    limit: self.limits.max_frames,
                });
            }
            pending.fragment.extend_from_slice(&self.payload);
        }
        if header.flags & FLAG_END_HEADERS != 0 {
            if let Some(block) = self.pending.take() {
                self.rewrite_block(block, out)?;
            }
        }
        Ok(())
    }

    fn rewrite_block(
        &mut self,
        block: PendingBlock,
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        let stream = block.stream;
        let limit = self.limits.max_decoded;
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut size = 0usize;
        let mut replaced = false;
        // Decoding runs to the end of the block even past the limit, so the shared table stays
        // right; only the copies stop, so a small block cannot make us hold a large list.
        self.decoder
            .decode_with_cb(&block.fragment, |name, value| {
                size += name.len() + value.len() + 32;
                if size > limit {
                    return;
                }
                let value = if &*name == b":authority"
                    && http::uri::Authority::try_from(&*value).is_err()
                {
                    replaced = true;
                    REPLACEMENT_AUTHORITY.to_vec()
                } else {
                    value.into_owned()
                };
                fields.push((name.into_owned(), value));
            })
            .map_err(|e| RewriteError::Hpack {
                stream,
                detail: format!("{e:?}"),
            })?;
        if size > limit {
            return Err(RewriteError::DecodedTooLarge { stream, limit });
        }
        if let Some(raw) = self.first_block.take() {
            if !replaced {
                // The server's decoder sees exactly the client's encoding, so the two tables stay
                // one and the adapter can step aside for good.
                out.extend_from_slice(&raw);
                self.state = State::Transparent;
                return Ok(());
            }
        }
        if replaced {
            self.rewritten += 1;
            tracing::trace!(
                stream,
                "replaced an :authority the HTTP/2 server would refuse"
            );
        }
        let mut encoded = Vec::with_capacity(block.fragment.len() + 16);
        // Writing into a Vec cannot fail.
        let _ = self.encoder.encode_into(
            fields.iter().map(|(n, v)| (n.as_slice(), v.as_slice())),
            &mut encoded,
        );
        write_header_frames(stream, block.flags, block.priority, &encoded, out);
        Ok(())
    }
}

/// Writes `block` as one HEADERS frame and as many CONTINUATION frames as the server's default
/// frame size needs.
fn write_header_frames(
    stream: u32,
    flags: u8,
    priority: Option<[u8; PRIORITY_LEN]>,
    block: &[u8],
    out: &mut Vec<u8>,
) {
    let prio_len = priority.map_or(0, |_| PRIORITY_LEN);
    let first = block.len().min(DEFAULT_MAX_FRAME_SIZE - prio_len);
    let (head, mut rest) = block.split_at(first);
    let end = if rest.is_empty() { FLAG_END_HEADERS } else { 0 };
    write_frame_header(
        out,
        prio_len + head.len(),
        TYPE_HEADERS,
        flags | end,
        stream,
    );
    if let Some(p) = priority {
        out.extend_from_slice(&p);
    }
    out.extend_from_slice(head);
    while !rest.is_empty() {
        let n = rest.len().min(DEFAULT_MAX_FRAME_SIZE);
        let (chunk, tail) = rest.split_at(n);
        let end = if tail.is_empty() { FLAG_END_HEADERS } else { 0 };
        write_frame_header(out, n, TYPE_CONTINUATION, end, stream);
        out.extend_from_slice(chunk);
        rest = tail;
    }
}

fn write_frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    // `len` is at most DEFAULT_MAX_FRAME_SIZE, well inside HTTP/2's 24-bit length.
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
}

/// An accepted connection with the client's header blocks passed through a [`Rewriter`].
pub struct AuthorityFix<S> {
    inner: S,
    rewriter: Rewriter,
    out: Vec<u8>,
    out_pos: usize,
    scratch: Box<[u8]>,
    eof: bool,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> Self {
        AuthorityFix::with_limits(inner, Limits::default())
    }

    pub fn with_limits(inner: S, limits: Limits) -> Self {
        AuthorityFix {
            inner,
            rewriter: Rewriter::new(limits),
            out: Vec::new(),
            out_pos: 0,
            scratch: vec![0; DEFAULT_MAX_FRAME_SIZE].into_boxed_slice(),
            eof: false,
        }
    }

    /// The connection underneath.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.out.len() {
                let n = (this.out.len() - this.out_pos).min(buf.remaining());
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let direct = this.rewriter.passthrough_len();
            if direct > 0 {
                // Frame payloads the adapter does not touch (DATA above all) go straight into the
                // server's buffer.
                let want = direct.min(buf.remaining());
                let dst = buf.initialize_unfilled_to(want);
                let mut limited = ReadBuf::new(dst);
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
                let n = limited.filled().len();
                if n == 0 {
                    this.eof = true;
                    return Poll::Ready(Ok(()));
                }
                buf.advance(n);
                this.rewriter.passed(n);
                return Poll::Ready(Ok(()));
            }
            let mut scratch = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut scratch))?;
            if scratch.filled().is_empty() {
                this.eof = true;
                continue;
            }
            if let Err(e) = this.rewriter.feed(scratch.filled(), &mut this.out) {
                tracing::warn!(error = %e, "closing a client connection");
                return Poll::Ready(Err(e.into()));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
