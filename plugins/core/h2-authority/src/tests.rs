//! The rewriter against client byte streams built here, read back the way the server reads them.

use super::*;

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

fn request(authority: &str, path: &str) -> Fields {
    [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    .iter()
    .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
    .collect()
}

fn encode(enc: &mut loona_hpack::Encoder<'static>, fields: &Fields) -> Vec<u8> {
    enc.encode(fields.iter().map(|(n, v)| (n.as_slice(), v.as_slice())))
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_frame_header(&mut out, payload.len(), kind, flags, stream);
    out.extend_from_slice(payload);
    out
}

const SETTINGS_EMPTY: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];

/// Frames as the server sees them, with header blocks decoded by one server-side decoder.
#[derive(Debug, PartialEq)]
enum Seen {
    Headers {
        stream: u32,
        flags: u8,
        fields: Fields,
    },
    Other {
        kind: u8,
        flags: u8,
        stream: u32,
        payload: Vec<u8>,
    },
}

fn server_view(bytes: &[u8]) -> Vec<Seen> {
    assert!(bytes.starts_with(PREFACE), "preface passed through");
    let mut rest = &bytes[PREFACE.len()..];
    let mut dec = loona_hpack::Decoder::new();
    let mut seen = Vec::new();
    let mut block: Option<(u32, u8, Vec<u8>)> = None;
    while !rest.is_empty() {
        let h = FrameHeader::parse(rest[..9].try_into().unwrap());
        let payload = &rest[9..9 + h.len];
        rest = &rest[9 + h.len..];
        assert!(
            h.len <= DEFAULT_MAX_FRAME_SIZE,
            "frame within the server's size"
        );
        match h.kind {
            TYPE_HEADERS => {
                assert_eq!(h.flags & FLAG_PADDED, 0, "padding is dropped");
                let body = if h.flags & FLAG_PRIORITY != 0 {
                    &payload[PRIORITY_LEN..]
                } else {
                    payload
                };
                block = Some((h.stream, h.flags & !FLAG_END_HEADERS, body.to_vec()));
            }
            TYPE_CONTINUATION => block.as_mut().unwrap().2.extend_from_slice(payload),
            _ => seen.push(Seen::Other {
                kind: h.kind,
                flags: h.flags,
                stream: h.stream,
                payload: payload.to_vec(),
            }),
        }
        if matches!(h.kind, TYPE_HEADERS | TYPE_CONTINUATION) && h.flags & FLAG_END_HEADERS != 0 {
            let (stream, flags, b) = block.take().unwrap();
            seen.push(Seen::Headers {
                stream,
                flags,
                fields: dec.decode(&b).unwrap(),
            });
        }
    }
    assert!(block.is_none(), "no header block left open");
    seen
}

/// Feeds `input` in chunks of every size from 1 to 17 bytes (frame boundaries fall everywhere).
fn rewrite_chunked(input: &[u8], chunk: usize) -> Result<Vec<u8>, RewriteError> {
    let mut rw = Rewriter::default();
    let mut out = Vec::new();
    for c in input.chunks(chunk) {
        rw.feed(c, &mut out)?;
    }
    Ok(out)
}

fn client_stream(authorities: &[&str]) -> (Vec<u8>, Vec<Fields>) {
    let mut enc = loona_hpack::Encoder::new();
    let mut bytes = PREFACE.to_vec();
    bytes.extend_from_slice(&SETTINGS_EMPTY);
    let mut sent = Vec::new();
    for (i, a) in authorities.iter().enumerate() {
        let stream = 1 + 2 * i as u32;
        let fields = request(a, "/containerd.services.version.v1.Version/Version");
        bytes.extend(frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS,
            stream,
            &encode(&mut enc, &fields),
        ));
        bytes.extend(frame(0x0, FLAG_END_STREAM, stream, &[0, 0, 0, 0, 0]));
        sent.push(fields);
    }
    (bytes, sent)
}

fn authority_of(fields: &Fields) -> &[u8] {
    &fields.iter().find(|(n, _)| n == b":authority").unwrap().1
}

#[test]
fn socket_path_authorities_become_localhost_and_valid_ones_stay() {
    let authorities = [
        "/run/berth/berthd.sock",
        "%2Frun%2Fberth%2Fberthd.sock",
        "localhost",
        "unix:/run/x.sock",
        "",
        "127.0.0.1:8080",
        "/run/berth/berthd.sock",
    ];
    let (bytes, sent) = client_stream(&authorities);
    for chunk in 1..=17 {
        let seen = server_view(&rewrite_chunked(&bytes, chunk).unwrap());
        let headers: Vec<&Fields> = seen
            .iter()
            .filter_map(|s| match s {
                Seen::Headers { fields, .. } => Some(fields),
                _ => None,
            })
            .collect();
        assert_eq!(headers.len(), authorities.len());
        for ((got, want), a) in headers.iter().zip(&sent).zip(authorities) {
            let expect: &[u8] = if http::uri::Authority::try_from(a).is_ok() {
                a.as_bytes()
            } else {
                REPLACEMENT_AUTHORITY
            };
            assert_eq!(authority_of(got), expect, "authority {a:?}");
            // Every other field, in order, exactly as sent.
            let others = |f: &Fields| -> Fields {
                f.iter()
                    .filter(|(n, _)| n != b":authority")
                    .cloned()
                    .collect()
            };
            assert_eq!(others(got), others(want));
        }
        // The SETTINGS and DATA frames are untouched.
        assert!(seen.contains(&Seen::Other {
            kind: 4,
            flags: 0,
            stream: 0,
            payload: vec![]
        }));
        assert_eq!(
            seen.iter()
                .filter(|s| matches!(s, Seen::Other { kind: 0, .. }))
                .count(),
            authorities.len()
        );
    }
}

#[test]
fn the_path_authority_is_one_h2_refuses() {
    // The premise of the crate: if this starts passing, h2 may have learned to accept paths.
    assert!(http::uri::Authority::try_from("/run/berth/berthd.sock").is_err());
    assert!(http::uri::Authority::try_from("%2Frun%2Fberth%2Fberthd.sock").is_err());
}

#[test]
fn padding_priority_and_continuation_are_handled() {
    let mut enc = loona_hpack::Encoder::new();
    let mut fields = request("/run/berth/berthd.sock", "/x/Y");
    // A large header (metadata) so the rewritten block needs CONTINUATION frames too.
    fields.push((b"x-big-bin".to_vec(), vec![b'a'; 40_000]));
    let block = encode(&mut enc, &fields);
    let (a, rest) = block.split_at(10);
    let (b, c) = rest.split_at(rest.len() / 2);
    let mut headers_payload = vec![7u8]; // pad length
    let priority = [0x80, 0, 0, 3, 15];
    headers_payload.extend_from_slice(&priority);
    headers_payload.extend_from_slice(a);
    headers_payload.extend_from_slice(&[0; 7]);
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(
        TYPE_HEADERS,
        FLAG_PADDED | FLAG_PRIORITY | FLAG_END_STREAM,
        5,
        &headers_payload,
    ));
    bytes.extend(frame(TYPE_CONTINUATION, 0, 5, b));
    bytes.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 5, c));
    let out = rewrite_chunked(&bytes, 4096).unwrap();
    // The priority fields survive in the first frame.
    let first = FrameHeader::parse(out[24..33].try_into().unwrap());
    assert_eq!(first.flags & FLAG_PRIORITY, FLAG_PRIORITY);
    assert_eq!(out[33..38], priority);
    let seen = server_view(&out);
    match &seen[..] {
        [Seen::Headers {
            stream: 5,
            flags,
            fields: got,
        }] => {
            assert_eq!(flags & FLAG_END_STREAM, FLAG_END_STREAM);
            assert_eq!(authority_of(got), b"localhost");
            assert_eq!(got.last().unwrap().1.len(), 40_000);
        }
        other => panic!("unexpected frames {other:?}"),
    }
}

#[test]
fn not_http2_passes_through_unchanged() {
    let input = b"GET / HTTP/1.1\r\nHost: /run/x.sock\r\n\r\n";
    assert_eq!(rewrite_chunked(input, 5).unwrap(), input);
    // Diverging after a matching prefix of the preface keeps the prefix.
    let input = b"PRI * HTTP/1.1 nonsense";
    assert_eq!(rewrite_chunked(input, 3).unwrap(), input);
}

#[test]
fn data_payloads_can_bypass_the_rewriter() {
    let (bytes, _) = client_stream(&["/run/x.sock"]);
    let mut rw = Rewriter::default();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let direct = rw.passthrough_len();
        if direct > 0 {
            let n = direct.min(bytes.len() - i).min(2);
            out.extend_from_slice(&bytes[i..i + n]);
            rw.passed(n);
            i += n;
        } else {
            rw.feed(&bytes[i..i + 1], &mut out).unwrap();
            i += 1;
        }
    }
    assert_eq!(server_view(&out).len(), 3);
}

#[test]
fn oversized_header_block_closes_the_connection() {
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(TYPE_HEADERS, 0, 1, &[0x82]));
    for _ in 0..20 {
        bytes.extend(frame(TYPE_CONTINUATION, 0, 1, &[0u8; 16_000]));
    }
    let err = rewrite_chunked(&bytes, 16_384).unwrap_err();
    assert!(
        matches!(err, RewriteError::BlockTooLarge { stream: 1, .. }),
        "{err}"
    );
}

#[test]
fn continuation_flood_closes_the_connection() {
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(TYPE_HEADERS, 0, 1, &[0x82]));
    for _ in 0..10_000 {
        bytes.extend(frame(TYPE_CONTINUATION, 0, 1, &[]));
    }
    let err = rewrite_chunked(&bytes, 16_384).unwrap_err();
    assert!(
        matches!(err, RewriteError::TooManyFrames { stream: 1, .. }),
        "{err}"
    );
}

#[test]
fn bad_hpack_closes_the_connection() {
    for block in [
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..], // index integer overflow
        &[0xbf, 0x7f][..],                         // dynamic index that does not exist
        &[0x3f, 0xe1, 0x7f][..],                   // table size update above 4096
        &[0x40, 0x85, 0xff][..],                   // literal shorter than its length
    ] {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, block));
        let err = rewrite_chunked(&bytes, 7).unwrap_err();
        assert!(
            matches!(err, RewriteError::Hpack { stream: 1, .. }),
            "{block:x?}: {err}"
        );
    }
}

#[test]
fn decoding_bomb_closes_the_connection() {
    // One 4000-byte header in the dynamic table, then thousands of one-byte references to it.
    let mut enc = loona_hpack::Encoder::new();
    let mut block = encode(&mut enc, &vec![(b"x-a".to_vec(), vec![b'a'; 4000])]);
    block.extend(std::iter::repeat_n(0x80 | 62, 100_000));
    let mut bytes = PREFACE.to_vec();
    let mut chunks = block.chunks(16_384).peekable();
    let mut first = true;
    while let Some(c) = chunks.next() {
        let kind = if first {
            TYPE_HEADERS
        } else {
            TYPE_CONTINUATION
        };
        let flags = if chunks.peek().is_none() {
            FLAG_END_HEADERS
        } else {
            0
        };
        bytes.extend(frame(kind, flags, 1, c));
        first = false;
    }
    let err = rewrite_chunked(&bytes, 16_384).unwrap_err();
    assert!(
        matches!(err, RewriteError::DecodedTooLarge { stream: 1, .. }),
        "{err}"
    );
}

#[test]
fn a_frame_between_headers_and_continuation_closes_the_connection() {
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(TYPE_HEADERS, 0, 1, &[0x82]));
    bytes.extend(frame(0x0, 0, 1, b"data"));
    let err = rewrite_chunked(&bytes, 64).unwrap_err();
    assert!(
        matches!(
            err,
            RewriteError::ExpectedContinuation {
                expected: 1,
                frame_type: 0,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn padding_longer_than_the_frame_is_malformed() {
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(
        TYPE_HEADERS,
        FLAG_PADDED | FLAG_END_HEADERS,
        1,
        &[9, 0x82],
    ));
    let err = rewrite_chunked(&bytes, 64).unwrap_err();
    assert!(
        matches!(err, RewriteError::Malformed { stream: 1, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn the_adapter_serves_reads_in_any_buffer_size() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (bytes, _) = client_stream(&["/run/a.sock", "localhost", "/run/b.sock"]);
    let (mut client, server) = tokio::io::duplex(64);
    let writer = tokio::spawn(async move {
        client.write_all(&bytes).await.unwrap();
        client.shutdown().await.unwrap();
        client
    });
    let mut conn = AuthorityFix::new(server);
    let mut out = Vec::new();
    let mut buf = [0u8; 13];
    loop {
        let n = conn.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    drop(writer.await.unwrap());
    assert_eq!(conn.rewriter.rewritten(), 2);
    let seen = server_view(&out);
    assert_eq!(seen.len(), 1 + 3 * 2);
}

#[test]
fn a_connection_whose_first_authority_is_fine_passes_through_byte_for_byte() {
    // Padding included: the first block is forwarded exactly as received.
    let (mut bytes, _) = client_stream(&["localhost", "/run/b.sock", "127.0.0.1:1"]);
    let mut padded = PREFACE.to_vec();
    let mut enc = loona_hpack::Encoder::new();
    let mut payload = vec![3u8];
    payload.extend(encode(&mut enc, &request("localhost", "/a/B")));
    payload.extend_from_slice(&[0; 3]);
    padded.extend(frame(
        TYPE_HEADERS,
        FLAG_PADDED | FLAG_END_HEADERS,
        1,
        &payload,
    ));
    padded.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 3, &[0xbe])); // dynamic index 62
    for input in [&mut bytes, &mut padded] {
        for chunk in [1, 5, 4096] {
            let mut rw = Rewriter::default();
            let mut out = Vec::new();
            for c in input.chunks(chunk) {
                rw.feed(c, &mut out).unwrap();
            }
            assert_eq!(&out, input, "chunk {chunk}");
            assert_eq!(
                rw.passthrough_len(),
                usize::MAX,
                "the adapter stepped aside"
            );
        }
    }
}
