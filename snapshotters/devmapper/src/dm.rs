//! Device-mapper through its ioctl interface on `/dev/mapper/control` (linux/dm-ioctl.h), the
//! handful of commands a thin-pool driver needs: version, create/remove a device, load a table,
//! suspend/resume, status, and target messages (`create_thin`, `create_snap`, `delete`).
//!
//! Every request is one buffer: a `struct dm_ioctl` header (312 bytes) followed by the command's
//! data. The header is written and read field by field at its fixed offsets, so the only
//! `unsafe` is the `ioctl(2)` call itself.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

/// Where device-mapper is driven from.
pub const CONTROL: &str = "/dev/mapper/control";

/// The interface version Berth speaks: the kernel accepts any request whose major matches and
/// whose minor is not newer than its own.
const VERSION: [u32; 3] = [4, 0, 0];

/// `sizeof(struct dm_ioctl)`.
const HEADER: usize = 312;
/// `sizeof(struct dm_target_spec)`.
const SPEC: usize = 40;
const NAME_LEN: usize = 128;
const TYPE_NAME_LEN: usize = 16;

// Field offsets in `struct dm_ioctl`.
const OFF_DATA_SIZE: usize = 12;
const OFF_DATA_START: usize = 16;
const OFF_TARGET_COUNT: usize = 20;
const OFF_OPEN_COUNT: usize = 24;
const OFF_FLAGS: usize = 28;
const OFF_DEV: usize = 40;
const OFF_NAME: usize = 48;

// Flags (in/out).
const READONLY_FLAG: u32 = 1 << 0;
const SUSPEND_FLAG: u32 = 1 << 1;
const ACTIVE_PRESENT_FLAG: u32 = 1 << 5;
const BUFFER_FULL_FLAG: u32 = 1 << 8;
const DEFERRED_REMOVE: u32 = 1 << 17;

/// The ioctl commands used here (their numbers in `enum { DM_VERSION_CMD = 0, … }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    Version = 0,
    DevCreate = 3,
    DevRemove = 4,
    DevSuspend = 6,
    DevStatus = 7,
    TableLoad = 9,
    TableStatus = 12,
    TargetMsg = 14,
}

impl Cmd {
    pub fn name(self) -> &'static str {
        match self {
            Cmd::Version => "DM_VERSION",
            Cmd::DevCreate => "DM_DEV_CREATE",
            Cmd::DevRemove => "DM_DEV_REMOVE",
            Cmd::DevSuspend => "DM_DEV_SUSPEND",
            Cmd::DevStatus => "DM_DEV_STATUS",
            Cmd::TableLoad => "DM_TABLE_LOAD",
            Cmd::TableStatus => "DM_TABLE_STATUS",
            Cmd::TargetMsg => "DM_TARGET_MSG",
        }
    }

    /// `_IOWR(0xfd, cmd, struct dm_ioctl)`.
    fn request(self) -> u64 {
        (3u64 << 30) | ((HEADER as u64) << 16) | (0xfd << 8) | self as u64
    }
}

/// A device-mapper request that failed.
#[derive(Debug, thiserror::Error)]
pub enum DmError {
    #[error("open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("device-mapper {op} {device:?}{detail}: {source}", op = cmd.name())]
    Ioctl {
        cmd: Cmd,
        device: String,
        /// The message or table sent, when there is one (`: create_snap 4 1`).
        detail: String,
        source: Errno,
    },
    #[error("device-mapper: {0:?} is not a valid device name (1 to 127 bytes, no '/' or NUL)")]
    BadName(String),
    #[error("device-mapper {op} {device:?}: the kernel's answer does not parse: {reason}", op = cmd.name())]
    BadReply {
        cmd: Cmd,
        device: String,
        reason: String,
    },
}

impl DmError {
    /// The errno the kernel answered with, if that is what failed.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            DmError::Ioctl { source, .. } => Some(*source),
            DmError::Open { source, .. } => source.raw_os_error().map(Errno::from_raw),
            _ => None,
        }
    }
}

/// What `DM_DEV_STATUS` tells about a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevInfo {
    /// The kernel's encoding of the block device number (`huge_encode_dev`).
    pub dev: u64,
    pub open_count: i32,
    pub suspended: bool,
    pub has_table: bool,
}

impl DevInfo {
    pub fn major(&self) -> u64 {
        ((self.dev >> 8) & 0xfff) | ((self.dev >> 32) & !0xfff)
    }

    pub fn minor(&self) -> u64 {
        (self.dev & 0xff) | ((self.dev >> 12) & !0xff)
    }
}

/// An open `/dev/mapper/control`.
pub struct Control {
    file: File,
}

fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(buf: &mut [u8], off: usize, v: u64) {
    buf[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

fn get_u32(buf: &[u8], off: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[off..off + 4]);
    u32::from_ne_bytes(b)
}

fn get_u64(buf: &[u8], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[off..off + 8]);
    u64::from_ne_bytes(b)
}

/// A device name the kernel takes: 1..=127 bytes, no `/`, no NUL.
pub fn check_name(name: &str) -> Result<(), DmError> {
    if name.is_empty() || name.len() >= NAME_LEN || name.contains('/') || name.contains('\0') {
        return Err(DmError::BadName(name.to_owned()));
    }
    Ok(())
}

/// One request: the header plus room for data. The kernel copies the whole buffer into memory
/// of its own before reading it, so the buffer needs no particular alignment.
struct Request {
    buf: Vec<u8>,
}

impl Request {
    fn new(name: &str, flags: u32, capacity: usize) -> Request {
        let size = (HEADER + capacity).div_ceil(8) * 8;
        let mut r = Request { buf: vec![0; size] };
        let len = size as u32;
        let b = r.bytes_mut();
        for (i, v) in VERSION.iter().enumerate() {
            put_u32(b, i * 4, *v);
        }
        put_u32(b, OFF_DATA_SIZE, len);
        put_u32(b, OFF_DATA_START, HEADER as u32);
        put_u32(b, OFF_FLAGS, flags);
        b[OFF_NAME..OFF_NAME + name.len()].copy_from_slice(name.as_bytes());
        r
    }

    fn bytes(&self) -> &[u8] {
        &self.buf
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.bytes_mut()[HEADER..]
    }

    fn flags(&self) -> u32 {
        get_u32(self.bytes(), OFF_FLAGS)
    }
}

impl Control {
    /// Opens the control device; fails when the kernel has no device-mapper (or no permission).
    pub fn open() -> Result<Control, DmError> {
        Control::open_at(Path::new(CONTROL))
    }

    pub fn open_at(path: &Path) -> Result<Control, DmError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| DmError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(Control { file })
    }

    fn ioctl(
        &self,
        cmd: Cmd,
        req: &mut Request,
        device: &str,
        detail: &str,
    ) -> Result<(), DmError> {
        let fd = self.file.as_raw_fd();
        let ptr = req.bytes_mut().as_mut_ptr();
        // SAFETY: `fd` is the open control device; `ptr` points to a writable
        // buffer whose `data_size` field holds its true length, so the kernel reads and writes
        // only inside it; the buffer outlives the call.
        let rc = unsafe { nix::libc::ioctl(fd, cmd.request() as _, ptr) };
        if rc < 0 {
            return Err(DmError::Ioctl {
                cmd,
                device: device.to_owned(),
                detail: detail.to_owned(),
                source: Errno::last(),
            });
        }
        Ok(())
    }

    /// The kernel's interface version (the check that device-mapper works at all).
    pub fn version(&self) -> Result<[u32; 3], DmError> {
        let mut req = Request::new("", 0, 0);
        self.ioctl(Cmd::Version, &mut req, "", "")?;
        let b = req.bytes();
        Ok([get_u32(b, 0), get_u32(b, 4), get_u32(b, 8)])
    }

    /// Creates device `name` without a table.
    pub fn create(&self, name: &str) -> Result<DevInfo, DmError> {
        check_name(name)?;
        let mut req = Request::new(name, 0, 0);
        self.ioctl(Cmd::DevCreate, &mut req, name, "")?;
        Ok(info_of(&req))
    }

    /// Loads a one-target table into `name`'s inactive slot (made live by [`Control::resume`]).
    pub fn load(
        &self,
        name: &str,
        sectors: u64,
        target: &str,
        params: &str,
        readonly: bool,
    ) -> Result<(), DmError> {
        check_name(name)?;
        let mut req = Request::new(
            name,
            if readonly { READONLY_FLAG } else { 0 },
            SPEC + params.len() + 8,
        );
        put_u32(req.bytes_mut(), OFF_TARGET_COUNT, 1);
        let data = req.data_mut();
        put_u64(data, 0, 0);
        put_u64(data, 8, sectors);
        let t = target.as_bytes();
        let n = t.len().min(TYPE_NAME_LEN - 1);
        data[24..24 + n].copy_from_slice(&t[..n]);
        data[SPEC..SPEC + params.len()].copy_from_slice(params.as_bytes());
        let detail = format!(": 0 {sectors} {target} {params}");
        self.ioctl(Cmd::TableLoad, &mut req, name, &detail)
    }

    /// Suspends `name` (I/O is queued; the file system on it is frozen and flushed first).
    pub fn suspend(&self, name: &str) -> Result<(), DmError> {
        check_name(name)?;
        let mut req = Request::new(name, SUSPEND_FLAG, 0);
        self.ioctl(Cmd::DevSuspend, &mut req, name, "")
    }

    /// Resumes `name`, making a freshly loaded table live.
    pub fn resume(&self, name: &str) -> Result<DevInfo, DmError> {
        check_name(name)?;
        let mut req = Request::new(name, 0, 0);
        self.ioctl(Cmd::DevSuspend, &mut req, name, "")?;
        Ok(info_of(&req))
    }

    /// Removes `name`; with `deferred`, a device still open goes when its last user closes it.
    pub fn remove(&self, name: &str, deferred: bool) -> Result<(), DmError> {
        check_name(name)?;
        let mut req = Request::new(name, if deferred { DEFERRED_REMOVE } else { 0 }, 0);
        self.ioctl(Cmd::DevRemove, &mut req, name, "")
    }

    /// `None` when there is no device of that name.
    pub fn info(&self, name: &str) -> Result<Option<DevInfo>, DmError> {
        check_name(name)?;
        let mut req = Request::new(name, 0, 0);
        match self.ioctl(Cmd::DevStatus, &mut req, name, "") {
            Ok(()) => Ok(Some(info_of(&req))),
            Err(e) if e.errno() == Some(Errno::ENXIO) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The status line of `name`'s (single) target, as `dmsetup status` prints after the type.
    pub fn status(&self, name: &str) -> Result<String, DmError> {
        check_name(name)?;
        let mut capacity = 4096;
        loop {
            let mut req = Request::new(name, 0, capacity);
            self.ioctl(Cmd::TableStatus, &mut req, name, "")?;
            if req.flags() & BUFFER_FULL_FLAG != 0 && capacity < 1 << 20 {
                capacity *= 4;
                continue;
            }
            let b = req.bytes();
            let bad = |reason: &str| DmError::BadReply {
                cmd: Cmd::TableStatus,
                device: name.to_owned(),
                reason: reason.to_owned(),
            };
            if get_u32(b, OFF_TARGET_COUNT) == 0 {
                return Err(bad("the device has no table"));
            }
            let start = get_u32(b, OFF_DATA_START) as usize;
            let params = b
                .get(start + SPEC..)
                .ok_or_else(|| bad("data start out of the buffer"))?;
            let end = params.iter().position(|&c| c == 0).unwrap_or(params.len());
            return String::from_utf8(params[..end].to_vec())
                .map_err(|_| bad("the status is not UTF-8"));
        }
    }

    /// Sends `message` to sector 0 of `name`'s target (a thin pool's `create_thin 3`, …).
    pub fn message(&self, name: &str, message: &str) -> Result<(), DmError> {
        check_name(name)?;
        let mut req = Request::new(name, 0, 8 + message.len() + 1);
        let data = req.data_mut();
        put_u64(data, 0, 0);
        data[8..8 + message.len()].copy_from_slice(message.as_bytes());
        self.ioctl(Cmd::TargetMsg, &mut req, name, &format!(": {message}"))
    }
}

fn info_of(req: &Request) -> DevInfo {
    let b = req.bytes();
    let flags = get_u32(b, OFF_FLAGS);
    DevInfo {
        dev: get_u64(b, OFF_DEV),
        open_count: get_u32(b, OFF_OPEN_COUNT) as i32,
        suspended: flags & SUSPEND_FLAG != 0,
        has_table: flags & ACTIVE_PRESENT_FLAG != 0,
    }
}

/// A thin pool's status line: `<transaction id> <used>/<total metadata blocks> <used>/<total
/// data blocks> <held root> rw|ro|out_of_data_space …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStatus {
    pub used_meta: u64,
    pub total_meta: u64,
    pub used_data: u64,
    pub total_data: u64,
    /// `rw`, `ro`, `out_of_data_space`, or `Fail` for a failed pool.
    pub mode: String,
}

impl PoolStatus {
    pub fn parse(line: &str) -> Option<PoolStatus> {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first() == Some(&"Fail") {
            return Some(PoolStatus {
                used_meta: 0,
                total_meta: 0,
                used_data: 0,
                total_data: 0,
                mode: "Fail".into(),
            });
        }
        let pair = |s: &str| -> Option<(u64, u64)> {
            let (a, b) = s.split_once('/')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        };
        let (used_meta, total_meta) = pair(f.get(1)?)?;
        let (used_data, total_data) = pair(f.get(2)?)?;
        Some(PoolStatus {
            used_meta,
            total_meta,
            used_data,
            total_data,
            mode: f.get(4).map(|s| s.to_string()).unwrap_or_default(),
        })
    }

    /// No room for one more block of data (or metadata), or the pool says so.
    pub fn is_full(&self) -> bool {
        self.mode == "out_of_data_space"
            || (self.total_data > 0 && self.used_data >= self.total_data)
            || (self.total_meta > 0 && self.used_meta >= self.total_meta)
    }
}

/// Mapped sectors of a thin device's status (`<mapped sectors> <highest mapped sector>`, or
/// `-` before anything was written, or `Fail`).
pub fn thin_mapped_sectors(line: &str) -> Option<u64> {
    let first = line.split_whitespace().next()?;
    match first {
        "-" => Some(0),
        n => n.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_are_the_kernels() {
        // _IOWR(0xfd, 0, struct dm_ioctl) as libdevmapper's DM_VERSION.
        assert_eq!(Cmd::Version.request(), 0xc138fd00);
        assert_eq!(Cmd::TargetMsg.request(), 0xc138fd0e);
    }

    #[test]
    fn a_request_carries_its_size_name_and_version() {
        let req = Request::new("pool", SUSPEND_FLAG, 10);
        let b = req.bytes();
        assert_eq!(b.len() % 8, 0);
        assert_eq!(get_u32(b, 0), 4);
        assert_eq!(get_u32(b, OFF_DATA_SIZE) as usize, b.len());
        assert_eq!(get_u32(b, OFF_DATA_START) as usize, HEADER);
        assert_eq!(req.flags(), SUSPEND_FLAG);
        assert_eq!(&b[OFF_NAME..OFF_NAME + 5], b"pool\0");
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("berth-snap-1").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name(&"x".repeat(128)).is_err());
    }

    #[test]
    fn dev_numbers_decode_as_the_kernel_encodes_them() {
        // huge_encode_dev(MKDEV(253, 3)) and MKDEV(259, 300).
        let small = DevInfo {
            dev: (253 << 8) | 3,
            open_count: 0,
            suspended: false,
            has_table: true,
        };
        assert_eq!((small.major(), small.minor()), (253, 3));
        let big = DevInfo {
            dev: (300 & 0xff) | (259 << 8) | ((300 & !0xff) << 12),
            ..small
        };
        assert_eq!((big.major(), big.minor()), (259, 300));
    }

    #[test]
    fn pool_and_thin_status_parse() {
        let s =
            PoolStatus::parse("1 10/4096 20/16384 - rw discard_passdown queue_if_no_space - 1024")
                .unwrap();
        assert_eq!((s.used_meta, s.total_meta), (10, 4096));
        assert_eq!((s.used_data, s.total_data), (20, 16384));
        assert!(!s.is_full());
        let full = PoolStatus::parse(
            "7 12/4096 16384/16384 - out_of_data_space discard_passdown error_if_no_space - 1024",
        )
        .unwrap();
        assert!(full.is_full());
        assert!(PoolStatus::parse("Fail").unwrap().mode == "Fail");
        assert_eq!(thin_mapped_sectors("2048 4095"), Some(2048));
        assert_eq!(thin_mapped_sectors("-"), Some(0));
        assert_eq!(thin_mapped_sectors("Fail"), None);
    }
}
