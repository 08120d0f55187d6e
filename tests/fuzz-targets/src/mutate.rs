//! A small mutator for the stable-toolchain run (libFuzzer does this far better under
//! `cargo fuzz`; this exists so CI explores a little around every seed on every run).
//!
//! Generic byte mutations (bit flips, byte sets, inserts, deletes, truncation, duplication,
//! splicing two corpus entries, dictionary tokens) plus tar-aware ones for layers: a header's
//! type, size, name, link name, mode or owner rewritten with its checksum fixed, whole blocks
//! inserted, dropped or repeated, the options byte changed.

use crate::tarball::{fix_checksum, is_header, Hdr, BLOCK};

/// splitmix64: small, fast, and the same sequence everywhere for a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// How an input is laid out, which decides the structure-aware mutations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// An options byte, then a tar stream.
    Layer,
    /// Text (references, filters).
    Text,
    /// A media-type byte, then JSON.
    Json,
}

impl Shape {
    fn max_len(self) -> usize {
        match self {
            Shape::Layer => 64 * 1024,
            Shape::Text => 4096,
            Shape::Json => 16 * 1024,
        }
    }

    fn dict(self) -> &'static [&'static [u8]] {
        match self {
            Shape::Layer => LAYER_NAMES,
            Shape::Text => TEXT_TOKENS,
            Shape::Json => JSON_TOKENS,
        }
    }
}

/// Hostile names for tar headers (also inserted raw).
const LAYER_NAMES: &[&[u8]] = &[
    b"..",
    b"../",
    b"../outside/pwned",
    b"../../pwned",
    b"/berth-fuzz-canary",
    b"/tmp/berth-fuzz-canary",
    b"/",
    b".",
    b"./",
    b"",
    b"a/../../x",
    b"link-out",
    b"link-out/pwned",
    b"abs-out/pwned",
    b"root-link/tmp/berth-fuzz-canary",
    b"dotdot/outside/pwned",
    b"file-out",
    b"hard",
    b"hard2",
    b"etc/passwd",
    b"etc",
    b"dir/sub",
    b"dir/sub/file",
    b".wh..wh..opq",
    b"dir/.wh..wh..opq",
    b"link-out/.wh..wh..opq",
    b".wh.etc",
    b".wh.link-out",
    b"link-out/.wh.file",
    b".wh..wh.plnk",
    b".wh..",
    b"a",
    b"a/b",
    b"s",
    b"s/x",
];

const TEXT_TOKENS: &[&[u8]] = &[
    b"docker.io/",
    b"library/",
    b"localhost:5000/",
    b"[::1]:5000/",
    b"index.docker.io/",
    b":latest",
    b"@sha256:",
    b"sha256:",
    b"sha512:",
    b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    b"__",
    b"--",
    b"linux/",
    b"arm/v7",
    b"arm64",
    b"amd64/v3",
    b"==",
    b"!=",
    b"~=",
    b",",
    b"labels.",
    b"\"",
    b"`",
    b"/",
    b"\\",
    b".*",
    b"(?i)",
    b"[",
    b"]",
    b"{1000}",
    b"\n",
    b" ",
];

const JSON_TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"true",
    b"0",
    b"-1",
    b"1e999",
    b"18446744073709551616",
    b"\"\\u0000\"",
    b"\"\\ud800\"",
    b"\"schemaVersion\":2",
    b"\"mediaType\":",
    b"\"manifests\":",
    b"\"layers\":",
    b"\"config\":",
    b"\"fsLayers\":[{}]",
    b"\"digest\":\"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"",
    b"\"size\":",
    b"\"platform\":{\"os\":\"linux\",\"architecture\":\"arm\",\"variant\":\"v7\"}",
    b"\"annotations\":{\"a\":\"b\"}",
    b"\"rootfs\":{\"type\":\"layers\",\"diff_ids\":null}",
    b"\"application/vnd.oci.image.manifest.v1+json\"",
    b"\"application/vnd.oci.image.index.v1+json\"",
    b"\"application/vnd.docker.distribution.manifest.list.v2+json\"",
];

/// One to four stacked mutations of `input`; `corpus` supplies splice partners.
pub fn mutate(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>], shape: Shape) -> Vec<u8> {
    let mut data = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let structured = shape == Shape::Layer && data.len() > 1 + BLOCK && rng.below(2) == 0;
        if structured {
            tar_mutation(rng, &mut data, corpus);
        } else {
            byte_mutation(rng, &mut data, corpus, shape);
        }
    }
    data.truncate(shape.max_len());
    data
}

fn byte_mutation(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>], shape: Shape) {
    let len = data.len();
    match rng.below(9) {
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = *rng.pick(&[0, 0xff, 0x80, b'/', b'.', b'0', b'7', b' ', b'\n', b':'][..]);
        }
        2 => {
            let i = rng.below(len + 1);
            let n = 1 + rng.below(8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            data.splice(i..i, bytes);
        }
        3 if len > 0 => {
            let i = rng.below(len);
            let n = 1 + rng.below((len - i).min(64));
            data.drain(i..i + n);
        }
        4 if len > 0 => data.truncate(rng.below(len)),
        5 if len > 0 => {
            let i = rng.below(len);
            let n = 1 + rng.below((len - i).min(256));
            let chunk = data[i..i + n].to_vec();
            let at = rng.below(len + 1);
            data.splice(at..at, chunk);
        }
        6 if !corpus.is_empty() => {
            let other = rng.pick(corpus);
            let cut_a = rng.below(len + 1);
            let cut_b = rng.below(other.len() + 1);
            data.truncate(cut_a);
            data.extend_from_slice(&other[cut_b..]);
        }
        7 => {
            let tok = rng.pick(shape.dict());
            let i = rng.below(len + 1);
            data.splice(i..i, tok.iter().copied());
        }
        _ if len > 0 => {
            // Overwrite with a token.
            let tok = rng.pick(shape.dict());
            let i = rng.below(len);
            let end = (i + tok.len()).min(len);
            data[i..end].copy_from_slice(&tok[..end - i]);
        }
        _ => data.push(rng.next_u64() as u8),
    }
}

/// Offsets (in `data`, after the options byte) of blocks that are valid tar headers.
fn headers(data: &[u8]) -> Vec<usize> {
    (1..data.len().saturating_sub(BLOCK - 1))
        .step_by(BLOCK)
        .filter(|&o| is_header(&data[o..o + BLOCK]))
        .collect()
}

fn tar_mutation(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    let hdrs = headers(data);
    match rng.below(8) {
        0 => data[0] = rng.next_u64() as u8,
        1..=3 if !hdrs.is_empty() => {
            let o = *rng.pick(&hdrs);
            edit_header(rng, &mut data[o..o + BLOCK]);
        }
        4 => {
            // Insert a fresh member header at a block boundary.
            let blocks = (data.len() - 1) / BLOCK;
            let at = 1 + rng.below(blocks + 1) * BLOCK;
            let name = rng.pick(LAYER_NAMES);
            let mut h = Hdr::new(name, *rng.pick(TYPES));
            h.link = rng.pick(LAYER_NAMES).to_vec();
            data.splice(at..at, h.block());
        }
        5 if !hdrs.is_empty() => {
            // Drop a header block (its data then reads as headers).
            let o = *rng.pick(&hdrs);
            data.drain(o..o + BLOCK);
        }
        6 if !hdrs.is_empty() => {
            // Repeat a member header (a duplicate name).
            let o = *rng.pick(&hdrs);
            let block = data[o..o + BLOCK].to_vec();
            let at = *rng.pick(&hdrs);
            data.splice(at..at, block);
        }
        _ if !corpus.is_empty() => {
            // Splice two layers at block boundaries, keeping our options byte.
            let other = rng.pick(corpus);
            if other.len() > 1 {
                let a = 1 + rng.below((data.len() - 1) / BLOCK + 1) * BLOCK;
                let b = 1 + rng.below((other.len() - 1) / BLOCK + 1) * BLOCK;
                data.truncate(a.min(data.len()));
                data.extend_from_slice(&other[b.min(other.len())..]);
            }
        }
        _ => data[0] = rng.next_u64() as u8,
    }
}

const TYPES: &[u8] = b"0125634 7gxLKSVA\0";

fn octal(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    let s = &s.as_bytes()[s.len().saturating_sub(digits)..];
    field[..s.len()].copy_from_slice(s);
    field[digits] = 0;
}

fn edit_header(rng: &mut Rng, b: &mut [u8]) {
    match rng.below(7) {
        0 => b[156] = *rng.pick(TYPES),
        1 => {
            let size = *rng.pick(&[0, 1, 511, 512, 513, 4096, 1 << 20, (1 << 20) + 1, 1 << 33]);
            if size >= 1 << 33 {
                b[124..136].fill(0);
                b[124] = 0x80;
                b[128..136].copy_from_slice(&(rng.next_u64() >> rng.below(64)).to_be_bytes());
            } else {
                octal(&mut b[124..136], size);
            }
        }
        2 => {
            let name = rng.pick(LAYER_NAMES);
            b[0..100].fill(0);
            b[0..name.len()].copy_from_slice(name);
            if rng.below(2) == 0 {
                b[345..500].fill(0); // no ustar prefix
            }
        }
        3 => {
            let name = rng.pick(LAYER_NAMES);
            b[157..257].fill(0);
            b[157..157 + name.len()].copy_from_slice(name);
        }
        4 => octal(&mut b[100..108], rng.next_u64() & 0o7777),
        5 => {
            if rng.below(2) == 0 {
                b[108..116].fill(0);
                b[108] = 0x80;
                b[112..116].copy_from_slice(&(rng.next_u64() as u32).to_be_bytes());
            } else {
                octal(&mut b[108..116], rng.below(70_000) as u64);
            }
        }
        _ => {
            // Device numbers.
            octal(&mut b[329..337], rng.below(300) as u64);
            octal(&mut b[337..345], rng.below(300) as u64);
        }
    }
    fix_checksum(b);
}
