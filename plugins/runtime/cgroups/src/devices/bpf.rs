//! The `bpf(2)` calls that put a device program on a cgroup: load, attach, list, detach. The
//! `union bpf_attr` layouts are declared here for just the commands used, from
//! `include/uapi/linux/bpf.h`.

use std::ffi::c_int;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::program::Insn;

const BPF_PROG_LOAD: c_int = 5;
const BPF_PROG_ATTACH: c_int = 8;
const BPF_PROG_DETACH: c_int = 9;
const BPF_PROG_GET_FD_BY_ID: c_int = 13;
const BPF_OBJ_GET_INFO_BY_FD: c_int = 15;
const BPF_PROG_QUERY: c_int = 16;

const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
/// Several programs may be attached to the cgroup (ours, and any that systemd or another
/// manager put there); an access must pass all of them.
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The kernel caps programs per cgroup and attach type at 64 (`BPF_CGROUP_MAX_PROGS`).
const MAX_PROGS: usize = 64;

/// Our programs' name (`prog_name`: up to 15 bytes of `[A-Za-z0-9_.]`), by which a later apply
/// recognises the ones it should replace.
pub(crate) const PROG_NAME: &[u8] = b"berth_devices";

/// Any licence string works: the program calls no GPL-only helper (it calls none at all).
const LICENSE: &[u8] = b"Apache-2.0\0";

/// The verifier log asked for when a load fails. Since Linux 6.4 the kernel keeps the end of a
/// log that does not fit, which is the part that says why.
const LOG_SIZE: usize = 256 * 1024;

/// How much of the log's end goes into the error message: the reason and the instructions
/// that led to it, not the whole walk.
const LOG_TAIL: usize = 4096;

/// `union bpf_attr`, padded well past its size in current kernels. The kernel copies in at most
/// its own size, requires what lies beyond to be zero, and writes some results (such as
/// `query.revision`) at its own offsets whatever size was passed, so a struct cut to our fields
/// would let it write past the end.
#[repr(C)]
union Attr<T: Copy> {
    cmd: T,
    _size: [u64; 64],
}

impl<T: Copy> Attr<T> {
    /// Zero everywhere but `cmd`. Each `T` below spells out its padding, so no byte passed to
    /// the kernel is left uninitialised.
    fn new(cmd: T) -> Attr<T> {
        let mut attr = Attr { _size: [0; 64] };
        attr.cmd = cmd;
        attr
    }
}

/// `BPF_PROG_LOAD`.
#[repr(C)]
#[derive(Clone, Copy)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

/// `BPF_PROG_ATTACH` and `BPF_PROG_DETACH`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Attach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

/// `BPF_PROG_QUERY`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Query {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

/// `BPF_PROG_GET_FD_BY_ID`.
#[repr(C)]
#[derive(Clone, Copy)]
struct GetFdById {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
#[derive(Clone, Copy)]
struct InfoByFd {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The head of `struct bpf_prog_info`, up to the name; the kernel fills only `info_len` bytes.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct ProgInfo {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; 16],
}

/// Calls `bpf(cmd, attr)`.
///
/// # Safety
/// Every pointer field of `attr.cmd` must be null or point to memory that is valid for what
/// command `cmd` does with it (reads of the given length, or writes) for the whole call.
unsafe fn bpf<T: Copy>(cmd: c_int, attr: &mut Attr<T>) -> io::Result<i64> {
    // SAFETY: `attr` is a live, writable `union bpf_attr` of the size passed, so the kernel's
    // reads and writes of it stay inside; the caller vouches for the buffers its fields name.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut Attr<T>,
            size_of::<Attr<T>>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// Wraps the descriptor a `bpf` command returned.
fn owned_fd(r: i64) -> io::Result<OwnedFd> {
    let fd = RawFd::try_from(r).map_err(|_| io::Error::other(format!("bpf returned {r}")))?;
    // SAFETY: the command just created this descriptor for us and nothing else refers to it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Descriptors are never negative, so this is the value the kernel reads back as an `int`.
fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    fd.as_raw_fd().unsigned_abs()
}

/// A load the kernel refused, with what the verifier said about it.
#[derive(Debug)]
pub(crate) struct LoadError {
    pub source: io::Error,
    pub verifier_log: Option<String>,
}

/// Loads `insns` as a `BPF_PROG_TYPE_CGROUP_DEVICE` program named [`PROG_NAME`].
pub(crate) fn load(insns: &[Insn]) -> Result<OwnedFd, LoadError> {
    // Without a log first: a log costs the verifier work, and it is only wanted on failure.
    let source = match load_with_log(insns, None) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    let mut log = vec![0u8; LOG_SIZE];
    let verifier_log = match load_with_log(insns, Some(&mut log)) {
        // Refused once and accepted on the second try: report the first refusal as is.
        Ok(_) => None,
        Err(_) => log_tail(&log),
    };
    Err(LoadError {
        source,
        verifier_log,
    })
}

/// The end of a NUL-terminated log, from a line start, or `None` if it is empty.
fn log_tail(log: &[u8]) -> Option<String> {
    let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end]);
    let text = text.trim();
    if text.len() <= LOG_TAIL {
        return (!text.is_empty()).then(|| text.to_string());
    }
    let mut start = text.len() - LOG_TAIL;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let tail = &text[start..];
    let tail = tail.split_once('\n').map_or(tail, |(_, rest)| rest);
    Some(format!("[…]\n{tail}"))
}

fn load_with_log(insns: &[Insn], log: Option<&mut [u8]>) -> io::Result<OwnedFd> {
    let insn_cnt = u32::try_from(insns.len())
        .map_err(|_| io::Error::other(format!("{} instructions", insns.len())))?;
    let mut prog_name = [0u8; 16];
    prog_name[..PROG_NAME.len()].copy_from_slice(PROG_NAME);
    let (log_level, log_size, log_buf) = match log {
        Some(buf) => (
            1,
            u32::try_from(buf.len()).unwrap_or(u32::MAX),
            buf.as_mut_ptr() as u64,
        ),
        None => (0, 0, 0),
    };
    let mut attr = Attr::new(ProgLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt,
        insns: insns.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        kern_version: 0,
        prog_flags: 0,
        prog_name,
    });
    // SAFETY: `insns` holds `insn_cnt` instructions in the kernel's layout, the licence is
    // NUL-terminated, and the log buffer, when given, is writable for `log_size` bytes; all
    // outlive the call.
    let r = unsafe { bpf(BPF_PROG_LOAD, &mut attr) }?;
    owned_fd(r)
}

/// Attaches `prog` to the cgroup, beside whatever is attached already.
pub(crate) fn attach(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = Attr::new(Attach {
        target_fd: fd_u32(cgroup),
        attach_bpf_fd: fd_u32(prog),
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
    });
    // SAFETY: the command has no pointer fields.
    unsafe { bpf(BPF_PROG_ATTACH, &mut attr) }.map(drop)
}

/// Detaches `prog` from the cgroup.
pub(crate) fn detach(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = Attr::new(Attach {
        target_fd: fd_u32(cgroup),
        attach_bpf_fd: fd_u32(prog),
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: 0,
    });
    // SAFETY: the command has no pointer fields.
    unsafe { bpf(BPF_PROG_DETACH, &mut attr) }.map(drop)
}

/// The ids of the device programs attached to this cgroup itself (not inherited ones).
pub(crate) fn attached(cgroup: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    let mut ids = vec![0u32; MAX_PROGS];
    // The kernel says how many there are when the buffer is too small (ENOSPC); one retry with
    // that size is enough unless programs are being attached meanwhile.
    for _ in 0..4 {
        let mut attr = Attr::new(Query {
            target_fd: fd_u32(cgroup),
            attach_type: BPF_CGROUP_DEVICE,
            query_flags: 0,
            attach_flags: 0,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: u32::try_from(ids.len()).unwrap_or(u32::MAX),
            _pad: 0,
        });
        // SAFETY: `prog_ids` points to `prog_cnt` writable u32s, alive for the call.
        let r = unsafe { bpf(BPF_PROG_QUERY, &mut attr) };
        // SAFETY: `cmd` is the field `Attr::new` wrote; the kernel only updated its counts.
        let count = unsafe { attr.cmd.prog_cnt } as usize;
        match r {
            Ok(_) => {
                ids.truncate(count.min(ids.len()));
                return Ok(ids);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && count > ids.len() => {
                ids = vec![0; count];
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(
        "the list of attached programs kept growing while it was read",
    ))
}

/// A descriptor for program `id`.
pub(crate) fn prog_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = Attr::new(GetFdById {
        prog_id: id,
        next_id: 0,
        open_flags: 0,
    });
    // SAFETY: the command has no pointer fields.
    let r = unsafe { bpf(BPF_PROG_GET_FD_BY_ID, &mut attr) }?;
    owned_fd(r)
}

/// The name a program was loaded with (up to 15 bytes).
pub(crate) fn prog_name(prog: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let mut info = ProgInfo::default();
    let mut attr = Attr::new(InfoByFd {
        bpf_fd: fd_u32(prog),
        info_len: u32::try_from(size_of::<ProgInfo>()).unwrap_or(u32::MAX),
        info: &mut info as *mut ProgInfo as u64,
    });
    // SAFETY: `info` points to a writable `ProgInfo` of `info_len` bytes, alive for the call.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    let end = info.name.iter().position(|b| *b == 0).unwrap_or(16);
    Ok(info.name[..end].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The offsets the kernel expects (`include/uapi/linux/bpf.h`).
    #[test]
    fn layouts_match_the_kernel() {
        assert_eq!(size_of::<Insn>(), 8);
        assert_eq!(std::mem::offset_of!(ProgLoad, log_buf), 32);
        assert_eq!(std::mem::offset_of!(ProgLoad, prog_name), 48);
        assert_eq!(std::mem::offset_of!(Query, prog_ids), 16);
        assert_eq!(std::mem::offset_of!(Query, prog_cnt), 24);
        assert_eq!(std::mem::offset_of!(ProgInfo, name), 64);
        assert_eq!(size_of::<Attr<ProgLoad>>(), 512);
        assert!(PROG_NAME.len() < 16);
    }

    #[test]
    fn a_long_verifier_log_is_cut_to_its_end() {
        assert_eq!(log_tail(b"\0\0"), None);
        assert_eq!(
            log_tail(b"R0 !read_ok\n\0junk").as_deref(),
            Some("R0 !read_ok")
        );
        let mut long = "0: (b4) w0 = 0\n".repeat(1000).into_bytes();
        long.extend_from_slice(b"too complex\n\0");
        let tail = log_tail(&long).unwrap();
        assert!(tail.starts_with("[…]\n0: (b4)"), "{}", &tail[..40]);
        assert!(tail.ends_with("too complex"));
        assert!(tail.len() <= LOG_TAIL + 8);
    }
}
