//! Raw tar blocks, written by hand: hostile members (`..`, absolute names, escaping links, bad
//! sizes) are exactly what the `tar` crate's builder refuses to write. Also used by the mutator to
//! find and rewrite header blocks.

pub const BLOCK: usize = 512;

/// Header formats: the magic and version fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// POSIX ustar (`ustar\0` `00`).
    Ustar,
    /// GNU (`ustar ` ` \0`).
    Gnu,
    /// Pre-POSIX v7: no magic.
    V7,
}

/// One member's header fields; `Default` is an empty regular file, mode 0644, owned by 0:0.
#[derive(Debug, Clone)]
pub struct Hdr {
    pub name: Vec<u8>,
    pub typ: u8,
    pub size: u64,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub link: Vec<u8>,
    pub dev: (u32, u32),
    pub format: Format,
}

impl Default for Hdr {
    fn default() -> Self {
        Hdr {
            name: Vec::new(),
            typ: b'0',
            size: 0,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            link: Vec::new(),
            dev: (0, 0),
            format: Format::Ustar,
        }
    }
}

/// Writes `v` as a NUL-terminated octal field, or base-256 when it does not fit.
fn numeric(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    if digits < 22 && v >= 1u64 << (3 * digits) {
        // The first byte is the 0x80 marker; the value, big-endian, fills the rest.
        field.fill(0);
        let bytes = v.to_be_bytes();
        let n = (field.len() - 1).min(8);
        let at = field.len() - n;
        field[at..].copy_from_slice(&bytes[8 - n..]);
        field[0] |= 0x80;
        return;
    }
    let s = format!("{v:0digits$o}");
    field[..digits].copy_from_slice(&s.as_bytes()[s.len() - digits..]);
    field[digits] = 0;
}

fn put(field: &mut [u8], v: &[u8]) {
    let n = v.len().min(field.len());
    field[..n].copy_from_slice(&v[..n]);
}

/// Recomputes a header block's checksum (the mutator calls this after editing a field).
pub fn fix_checksum(block: &mut [u8]) {
    block[148..156].fill(b' ');
    let sum: u32 = block[..BLOCK].iter().map(|b| u32::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    block[148..156].copy_from_slice(s.as_bytes());
}

/// Whether `block` is a header block with a valid checksum.
pub fn is_header(block: &[u8]) -> bool {
    if block.len() < BLOCK || block[..BLOCK].iter().all(|b| *b == 0) {
        return false;
    }
    let sum: u32 = block[..148]
        .iter()
        .chain(&block[156..BLOCK])
        .map(|b| u32::from(*b))
        .sum::<u32>()
        + 8 * 32;
    let field = &block[148..156];
    let digits: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(b))
        .collect();
    std::str::from_utf8(&digits)
        .ok()
        .and_then(|s| u32::from_str_radix(s, 8).ok())
        == Some(sum)
}

impl Hdr {
    pub fn new(name: impl AsRef<[u8]>, typ: u8) -> Self {
        Hdr {
            name: name.as_ref().to_vec(),
            typ,
            mode: if typ == b'5' { 0o755 } else { 0o644 },
            ..Hdr::default()
        }
    }

    pub fn link(mut self, target: impl AsRef<[u8]>) -> Self {
        self.link = target.as_ref().to_vec();
        self
    }

    /// The 512-byte header block. A name over 100 bytes goes to the ustar prefix field when it
    /// splits at a `/`, else it is cut (use [`Tar::long_name`] or a PAX `path` for those).
    pub fn block(&self) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        let (prefix, name) = split_name(&self.name, self.format);
        put(&mut b[0..100], name);
        numeric(&mut b[100..108], u64::from(self.mode));
        numeric(&mut b[108..116], self.uid);
        numeric(&mut b[116..124], self.gid);
        numeric(&mut b[124..136], self.size);
        numeric(&mut b[136..148], self.mtime);
        b[156] = self.typ;
        put(&mut b[157..257], &self.link);
        match self.format {
            Format::Ustar => {
                b[257..263].copy_from_slice(b"ustar\0");
                b[263..265].copy_from_slice(b"00");
            }
            Format::Gnu => b[257..265].copy_from_slice(b"ustar  \0"),
            Format::V7 => {}
        }
        if self.format != Format::V7 {
            put(&mut b[265..297], b"root");
            put(&mut b[297..329], b"root");
            numeric(&mut b[329..337], u64::from(self.dev.0));
            numeric(&mut b[337..345], u64::from(self.dev.1));
            put(&mut b[345..500], prefix);
        }
        fix_checksum(&mut b);
        b
    }
}

fn split_name(name: &[u8], format: Format) -> (&[u8], &[u8]) {
    if name.len() <= 100 || format != Format::Ustar {
        return (&[], name);
    }
    // The last `/` that leaves at most 100 bytes after it and at most 155 before it.
    let cut = (0..name.len())
        .rev()
        .find(|&i| name[i] == b'/' && name.len() - i - 1 <= 100 && i <= 155);
    match cut {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => (&[], name),
    }
}

/// A tar stream under construction.
#[derive(Debug, Default, Clone)]
pub struct Tar {
    pub bytes: Vec<u8>,
}

impl Tar {
    pub fn new() -> Self {
        Tar::default()
    }

    /// A member: header, then `data` padded to the block size. The header's size is the data's
    /// unless `hdr.size` is already set (a lying header).
    pub fn add(&mut self, mut hdr: Hdr, data: &[u8]) -> &mut Self {
        if hdr.size == 0 {
            hdr.size = data.len() as u64;
        }
        self.bytes.extend_from_slice(&hdr.block());
        self.data(data)
    }

    /// Raw data, padded to a block.
    pub fn data(&mut self, data: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(data);
        let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
        self.bytes.extend(std::iter::repeat_n(0, pad));
        self
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.add(Hdr::new(name, b'5'), b"")
    }

    pub fn file(&mut self, name: impl AsRef<[u8]>, data: &[u8]) -> &mut Self {
        self.add(Hdr::new(name, b'0'), data)
    }

    pub fn symlink(&mut self, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> &mut Self {
        self.add(Hdr::new(name, b'2').link(target), b"")
    }

    pub fn hardlink(&mut self, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> &mut Self {
        self.add(Hdr::new(name, b'1').link(target), b"")
    }

    /// A PAX extended header (`x`) with these records, for the member that follows.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let body = pax_records(records);
        self.add(Hdr::new("././@PaxHeader", b'x'), &body)
    }

    /// A GNU long name (`L`) or long link (`K`) member for the member that follows.
    pub fn long(&mut self, typ: u8, name: &[u8]) -> &mut Self {
        let mut data = name.to_vec();
        data.push(0);
        let hdr = Hdr {
            format: Format::Gnu,
            ..Hdr::new("././@LongLink", typ)
        };
        self.add(hdr, &data)
    }

    /// The end-of-archive marker: two zero blocks.
    pub fn finish(&mut self) -> Vec<u8> {
        self.bytes.extend(std::iter::repeat_n(0, 2 * BLOCK));
        std::mem::take(&mut self.bytes)
    }
}

/// PAX records: `<len> <key>=<value>\n`, the length counting itself.
pub fn pax_records(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let rest = k.len() + v.len() + 3; // ' ', '=', '\n'
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tar_crate_reads_what_we_write() {
        let long = "d/".repeat(80) + "f";
        let mut t = Tar::new();
        t.dir("a/")
            .file("a/f", b"hello")
            .symlink("a/s", "f")
            .pax(&[("path", long.as_bytes()), ("mtime", b"1.5")])
            .file("short", b"x")
            .long(b'L', b"gnu/long/name")
            .file("cut", b"");
        let bytes = t.finish();
        let mut ar = tar::Archive::new(&bytes[..]);
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
            .collect();
        assert_eq!(names, ["a/", "a/f", "a/s", long.as_str(), "gnu/long/name"]);
        assert!(is_header(&bytes[..BLOCK]));
    }

    #[test]
    fn big_numbers_are_base_256() {
        let h = Hdr {
            size: 1 << 40,
            uid: 1 << 33,
            ..Hdr::new("big", b'0')
        };
        let b = h.block();
        let parsed = tar::Header::from_byte_slice(&b);
        assert_eq!(parsed.size().unwrap(), 1 << 40);
        assert_eq!(parsed.uid().unwrap(), 1 << 33);
    }
}
