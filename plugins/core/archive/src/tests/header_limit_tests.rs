//! Extension headers (PAX `x`/`g`, GNU `L`/`K`) are capped at containerd's 1 MiB before the tar
//! crate buffers them, and the cap never misfires on what is member data rather than a header.
//!
//! The oversized members here are really in the stream (so without the cap the layer applies,
//! after buffering them whole), but generated lazily: the tests themselves never hold them.

use std::io::{self, Cursor, Read};

use berth_plugin::{Classify, ErrorKind};

use super::*;
use crate::{apply, ApplyOptions, ArchiveError, MAX_EXTENSION_HEADER};

const BLOCK: usize = 512;

/// Counts the bytes `apply` pulls from the layer stream.
struct Counting<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// A header block with the given type, name and size, checksummed.
fn header(kind: tar::EntryType, name: &str, size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).unwrap();
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(size);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    h.as_bytes().to_vec()
}

fn padding(len: u64) -> Vec<u8> {
    vec![0; (BLOCK - (len % BLOCK as u64) as usize) % BLOCK]
}

/// One PAX record, `"<len> <key>=<value>\n"`, its length counting its own digits.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// A member "first" (so messages can name it), then an extension member of `kind` holding
/// exactly `size` bytes, then a regular file "after" that it describes, then the end of archive.
/// The extension member's data is valid for its kind: one `comment` PAX record (which the
/// applier ignores), or a name of `a`s.
fn layer_with_extension(kind: tar::EntryType, size: u64) -> impl Read {
    let mut head = tar(&[E::file("first", "1")]);
    head.truncate(head.len() - 2 * BLOCK); // drop the end-of-archive blocks
    head.extend(header(kind, "././@Ext", size));
    let (prefix, fill, suffix): (Vec<u8>, u64, Vec<u8>) = match kind {
        tar::EntryType::XHeader | tar::EntryType::XGlobalHeader => {
            let len = size.to_string();
            // "<size> comment=" + a…a + "\n" is `size` bytes (same digit count: size is big).
            let prefix = format!("{len} comment=").into_bytes();
            (
                prefix.clone(),
                size - prefix.len() as u64 - 1,
                b"\n".to_vec(),
            )
        }
        // A NUL-terminated name.
        _ => (Vec::new(), size - 1, vec![0]),
    };
    head.extend(prefix);
    let mut tail = suffix;
    tail.extend(padding(size));
    tail.extend(tar(&[E::file("after", "2")]));
    Cursor::new(head)
        .chain(io::repeat(b'a').take(fill))
        .chain(Cursor::new(tail))
}

fn opts() -> ApplyOptions {
    ApplyOptions {
        no_same_owner: true,
        ..Default::default()
    }
}

#[test]
fn oversized_extension_headers_are_refused_before_they_are_read() {
    let size = 64 << 20;
    for (kind, what) in [
        (tar::EntryType::XHeader, "PAX extended header"),
        (tar::EntryType::XGlobalHeader, "PAX global header"),
        (tar::EntryType::GNULongName, "GNU long name"),
        (tar::EntryType::GNULongLink, "GNU long link name"),
    ] {
        let env = Env::new();
        let mut stream = Counting {
            inner: layer_with_extension(kind, size),
            read: 0,
        };
        let e = apply(&mut stream, &env.target, &opts()).unwrap_err();
        assert!(
            matches!(
                &e,
                ArchiveError::HeaderTooLarge { what: w, size: s, limit, after, .. }
                    if *w == what && *s == size && *limit == MAX_EXTENSION_HEADER
                        && after.as_deref() == Some("first")
            ),
            "{what}: {e:?}"
        );
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{what}: {e}");
        let msg = e.to_string();
        assert!(
            msg.contains(what) && msg.contains("67108864") && msg.contains("after entry \"first\""),
            "{msg}"
        );
        // Refused at its header: not one buffer's worth past it was read, let alone 64 MiB.
        assert!(
            stream.read < MAX_EXTENSION_HEADER,
            "{what}: {} bytes read before the refusal",
            stream.read
        );
        assert!(!env.target.join("after").exists(), "{what}");
    }
}

#[test]
fn a_huge_declared_header_in_a_short_stream_fails_at_once() {
    // The 2 GiB record of the report, declared in a stream a few blocks long.
    let mut layer = header(tar::EntryType::XHeader, "PaxHeaders/x", 2 << 30);
    layer.extend(pax_record("comment", b"short"));
    let env = Env::new();
    let started = std::time::Instant::now();
    let e = apply(layer.as_slice(), &env.target, &opts()).unwrap_err();
    assert!(
        matches!(e, ArchiveError::HeaderTooLarge { size, .. } if size == 2 << 30),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn extension_headers_up_to_the_limit_are_read() {
    // Exactly the limit passes (as in Go's archive/tar), one byte more does not.
    for kind in [tar::EntryType::XHeader, tar::EntryType::XGlobalHeader] {
        let env = Env::new();
        let stats = apply(
            layer_with_extension(kind, MAX_EXTENSION_HEADER),
            &env.target,
            &opts(),
        )
        .unwrap();
        assert_eq!(std::fs::read(env.target.join("after")).unwrap(), b"2");
        assert!(stats.size > MAX_EXTENSION_HEADER);

        let env = Env::new();
        let e = apply(
            layer_with_extension(kind, MAX_EXTENSION_HEADER + 1),
            &env.target,
            &opts(),
        )
        .unwrap_err();
        assert!(matches!(e, ArchiveError::HeaderTooLarge { .. }), "{e:?}");
    }
    // A long name within the limit but beyond PATH_MAX is still the entry's own error.
    let env = Env::new();
    let e = apply(
        layer_with_extension(tar::EntryType::GNULongName, 8192),
        &env.target,
        &opts(),
    )
    .unwrap_err();
    assert!(matches!(e, ArchiveError::InvalidEntry { .. }), "{e:?}");
}

/// A checksummed `x` header declaring 64 MiB: what the guard would refuse if it took member data
/// for a header.
fn fake_header() -> Vec<u8> {
    header(tar::EntryType::XHeader, "PaxHeaders/fake", 64 << 20)
}

#[test]
fn member_data_that_looks_like_a_header_is_data() {
    let fake = fake_header();
    let mut second = fake.clone();
    second.extend(vec![b'b'; BLOCK]);

    // 1. Plain file contents.
    // 2. A file whose header says 0 bytes but whose PAX `size` record says 1024, as the tar crate
    //    reads it: its data starts with the fake header.
    // 3. A GNU sparse file with an extension block, whose second stored block is the fake.
    let mut layer = tar(&[E::file("plain", &fake)]);
    layer.truncate(layer.len() - 2 * BLOCK);

    let records = pax_record("size", b"1024");
    layer.extend(header(
        tar::EntryType::XHeader,
        "PaxHeaders/sized",
        records.len() as u64,
    ));
    layer.extend(&records);
    layer.extend(padding(records.len() as u64));
    layer.extend(header(tar::EntryType::Regular, "sized", 0));
    layer.extend(&second);

    let mut h = tar::Header::new_gnu();
    h.set_path("sparse").unwrap();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_mode(0o644);
    h.set_mtime(1_600_000_000);
    h.set_size(1024); // stored bytes
    {
        let gnu = h.as_gnu_mut().unwrap();
        gnu.sparse[0].set_offset(0);
        gnu.sparse[0].set_length(512);
        gnu.set_real_size(1536);
        gnu.set_is_extended(true);
    }
    h.set_cksum();
    layer.extend(h.as_bytes());
    let mut ext = tar::GnuExtSparseHeader::new();
    ext.sparse_mut()[0].set_offset(1024);
    ext.sparse_mut()[0].set_length(512);
    layer.extend(ext.as_bytes());
    let first = vec![b'c'; BLOCK];
    layer.extend(&first);
    layer.extend(&fake);

    layer.extend(tar(&[E::file("end", "end")]));

    let env = Env::new();
    apply(layer.as_slice(), &env.target, &opts()).unwrap();
    let t = &env.target;
    assert_eq!(std::fs::read(t.join("plain")).unwrap(), fake);
    assert_eq!(std::fs::read(t.join("sized")).unwrap(), second);
    let mut sparse = first.clone();
    sparse.extend(vec![0; BLOCK]);
    sparse.extend(&fake);
    assert_eq!(std::fs::read(t.join("sparse")).unwrap(), sparse);
    assert_eq!(std::fs::read(t.join("end")).unwrap(), b"end");
}

#[test]
fn a_pax_size_record_is_taken_by_the_member_it_describes_only() {
    // `x` (size=1024), then a GNU long name, then the member: the record still applies to it
    // (the long name in between does not take it). Then a member with no PAX header of its own
    // whose 0-byte data is followed directly by the next header.
    let records = pax_record("size", b"1024");
    let mut layer = header(
        tar::EntryType::XHeader,
        "PaxHeaders/a",
        records.len() as u64,
    );
    layer.extend(&records);
    layer.extend(padding(records.len() as u64));
    let long = format!("{}/long", "d".repeat(120));
    let mut name = long.clone().into_bytes();
    name.push(0);
    let mut l = tar::Header::new_gnu();
    l.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    l.set_entry_type(tar::EntryType::GNULongName);
    l.set_mode(0o644);
    l.set_size(name.len() as u64);
    l.set_cksum();
    layer.extend(l.as_bytes());
    layer.extend(&name);
    layer.extend(padding(name.len() as u64));
    layer.extend(header(tar::EntryType::Regular, "ignored-short-name", 0));
    let mut data = fake_header();
    data.extend(vec![b'x'; BLOCK]);
    layer.extend(&data);
    layer.extend(header(tar::EntryType::Regular, "empty", 0));
    layer.extend(tar(&[E::file("end", "end")]));

    let env = Env::new();
    apply(layer.as_slice(), &env.target, &opts()).unwrap();
    assert_eq!(std::fs::read(env.target.join(&long)).unwrap(), data);
    assert_eq!(std::fs::read(env.target.join("empty")).unwrap(), b"");
    assert_eq!(std::fs::read(env.target.join("end")).unwrap(), b"end");
}
