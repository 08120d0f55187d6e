//! A bare HTTP/2 client over a unix socket, frame by frame: it can send what no well-behaved
//! library sends — a socket path as `:authority`, oversized or malformed header blocks, floods of
//! CONTINUATION frames — and read back exactly what the server answered.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;
pub const RST_STREAM: u8 = 0x3;
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const ACK: u8 = 0x1;

#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

pub struct RawClient {
    sock: UnixStream,
    encoder: loona_hpack::Encoder<'static>,
    decoder: loona_hpack::Decoder<'static>,
}

/// What the server answered on one stream.
#[derive(Debug, Default)]
pub struct Answer {
    pub headers: Vec<(String, String)>,
    pub data: Vec<u8>,
    pub trailers: Vec<(String, String)>,
    pub reset: Option<u32>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .chain(&self.trailers)
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl RawClient {
    /// Connects and sends the preface and an empty SETTINGS frame.
    pub fn connect(path: &Path) -> io::Result<RawClient> {
        let sock = UnixStream::connect(path)?;
        sock.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut c = RawClient {
            sock,
            encoder: loona_hpack::Encoder::new(),
            decoder: loona_hpack::Decoder::new(),
        };
        c.sock.write_all(PREFACE)?;
        c.frame(SETTINGS, 0, 0, &[])?;
        Ok(c)
    }

    pub fn frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> io::Result<()> {
        let len = u32::try_from(payload.len())
            .expect("frame length")
            .to_be_bytes();
        let mut buf = Vec::with_capacity(9 + payload.len());
        buf.extend_from_slice(&len[1..]);
        buf.push(kind);
        buf.push(flags);
        buf.extend_from_slice(&stream.to_be_bytes());
        buf.extend_from_slice(payload);
        self.sock.write_all(&buf)
    }

    /// HPACK-encodes `fields` with this connection's encoder.
    pub fn encode(&mut self, fields: &[(&str, &str)]) -> Vec<u8> {
        self.encoder
            .encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }

    /// Sends a unary gRPC call with `authority` and waits for its answer.
    pub fn unary(
        &mut self,
        stream: u32,
        authority: &str,
        method: &str,
        extra: &[(&str, &str)],
        message: &[u8],
    ) -> io::Result<Answer> {
        let mut fields = vec![
            (":method", "POST"),
            (":scheme", "http"),
            (":path", method),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ];
        fields.extend_from_slice(extra);
        let block = self.encode(&fields);
        self.frame(HEADERS, END_HEADERS, stream, &block)?;
        let mut body = vec![0];
        body.extend_from_slice(&u32::try_from(message.len()).expect("len").to_be_bytes());
        body.extend_from_slice(message);
        self.frame(DATA, END_STREAM, stream, &body)?;
        self.answer(stream)
    }

    /// Reads frames until `stream` ends, answering SETTINGS and PING as a client must.
    pub fn answer(&mut self, stream: u32) -> io::Result<Answer> {
        let mut answer = Answer::default();
        loop {
            let f = self.read_frame()?;
            match f.kind {
                SETTINGS if f.flags & ACK == 0 => self.frame(SETTINGS, ACK, 0, &[])?,
                PING if f.flags & ACK == 0 => self.frame(PING, ACK, 0, &f.payload)?,
                GOAWAY => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        format!("GOAWAY {:?}", f.payload),
                    ))
                }
                HEADERS if f.stream == stream => {
                    let fields = self.decode(&f.payload)?;
                    if answer.headers.is_empty() {
                        answer.headers = fields;
                    } else {
                        answer.trailers = fields;
                    }
                    if f.flags & END_STREAM != 0 {
                        return Ok(answer);
                    }
                }
                DATA if f.stream == stream => {
                    answer.data.extend_from_slice(&f.payload);
                    if f.flags & END_STREAM != 0 {
                        return Ok(answer);
                    }
                }
                RST_STREAM if f.stream == stream => {
                    let code = f
                        .payload
                        .get(..4)
                        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                    answer.reset = Some(code);
                    return Ok(answer);
                }
                _ => {}
            }
        }
    }

    fn decode(&mut self, block: &[u8]) -> io::Result<Vec<(String, String)>> {
        let fields = self
            .decoder
            .decode(block)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e:?}")))?;
        Ok(fields
            .into_iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(&n).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect())
    }

    pub fn read_frame(&mut self) -> io::Result<Frame> {
        let mut h = [0u8; 9];
        self.sock.read_exact(&mut h)?;
        let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        let mut payload = vec![0; len];
        self.sock.read_exact(&mut payload)?;
        Ok(Frame {
            kind: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
            payload,
        })
    }

    /// Reads until the server closes the connection (or sends GOAWAY): true if it did within the
    /// read timeout.
    pub fn closed_by_server(&mut self) -> bool {
        loop {
            match self.read_frame() {
                Ok(f) if f.kind == GOAWAY => return true,
                Ok(_) => continue,
                Err(e) => {
                    return matches!(
                        e.kind(),
                        io::ErrorKind::UnexpectedEof
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::BrokenPipe
                    )
                }
            }
        }
    }
}
