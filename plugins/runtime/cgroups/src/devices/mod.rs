//! `linux.resources.devices` on cgroup v2. v2 has no `devices.allow`/`devices.deny`: the kernel
//! asks every `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to the cgroup of a process (and to
//! its ancestors) whenever the process opens or `mknod`s a device node, and refuses with EPERM
//! unless all of them return 1. This module turns the spec's rules into such a program
//! (`program.rs`, pure) and attaches it (`bpf.rs`, the system calls).
//!
//! # What the rules mean
//! The rules are read in order. Each decides the access bits it names (`r`, `w`, `m`; unset
//! means all three) for the devices it matches (its type, or any for `a` or unset; its major and
//! minor, or any when unset or negative); a later rule overrides an earlier one. A request is
//! allowed when each bit it asks for is allowed; a bit no rule decides is allowed, as in a cgroup
//! without rules. A rule for every device and every access (`a *:* rwm`, containerd's first rule
//! `{"allow": false, "access": "rwm"}`) therefore decides everything before it away: it resets
//! the default, and the allow rules after it open holes, exactly as in the v1 controller. Empty
//! rules change nothing (no program is loaded); type `u` or `p`, an access other than `rwm`
//! letters, or a number above 32 bits is refused, as the v1 controller refuses them.
//!
//! This is the v1 controller's behaviour (and runc's emulation of it) for every rule list that
//! containerd, Docker or the kubelet produce. Where the v1 controller's list of exceptions cannot
//! express a rule, the program does what the rule says instead:
//! - A deny that narrows an allowed wildcard (`allow c 1:* rwm` then `deny c 1:3 w`) is
//!   enforced; v1 ignores it silently and runc refuses the spec.
//! - `a` with numbers or with less than `rwm` is a rule like any other (`allow a 1:3 r` allows
//!   reading 1:3 of either type); v1 and runc take any `a` rule as a reset, which for an allow
//!   means allowing everything.
//! - Access granted by several rules adds up: `allow c 1:* r` and `allow c 1:3 w` allow opening
//!   1:3 read-write; v1 wants one exception to cover all the requested bits. The same holds for
//!   deny rules, where v1 agrees: one denied bit refuses the request.
//!
//! # Replacing the program on `update`
//! The new program is attached beside the old one (`BPF_F_ALLOW_MULTI`), then the old ones this
//! crate attached (recognised by their name, [`bpf::PROG_NAME`]) are detached. While both are
//! attached an access needs both to allow it, so the moment of change is never more permissive
//! than either rule set. runc instead swaps with `BPF_F_REPLACE` when exactly one program is
//! attached; that needs Linux 5.6 and a feature probe, and detaches whatever program it finds,
//! while this way needs only what device programs needed from the start (4.15) and leaves
//! programs of other managers in place — they can only restrict further.
//!
//! An attached program lives on after its descriptor is closed, held by the attachment, and goes
//! away with the cgroup.
//!
//! # Limits
//! The kernel's verifier walks every path of a program before loading it; the generated code
//! keeps that linear (see `Policy::program`), and 2,000 rules load in a fraction of a second.
//! Lists long enough that a jump would not fit the instruction's 16-bit offset (some 4,000
//! rules) are refused as invalid. Any failure to load or attach is an error, also in a user
//! namespace without `bpf(2)`, where runc lets a list of plain allow rules pass unenforced.

mod bpf;
mod program;

#[cfg(test)]
mod tests;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::sys::statfs::{fstatfs, CGROUP2_SUPER_MAGIC};
use oci_spec::runtime::LinuxDeviceCgroup;
use tracing::debug;

use crate::error::{Error, Result};
use program::Policy;

/// Enforces `rules` on the v2 cgroup `dir`. No rules: nothing is changed.
pub(crate) fn apply(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<()> {
    // The rules are checked before anything is touched.
    let Some(policy) = Policy::from_spec(rules)? else {
        return Ok(());
    };
    let insns = policy.program()?;
    let fail = |step: &'static str| {
        move |source: io::Error| Error::DeviceProgram {
            dir: dir.to_path_buf(),
            step,
            source,
            verifier_log: None,
        }
    };
    let cgroup = open_cgroup2(dir).map_err(fail("open the cgroup2 directory"))?;
    let prog = bpf::load(&insns).map_err(|e| Error::DeviceProgram {
        dir: dir.to_path_buf(),
        step: "load the eBPF device program (needs CAP_BPF or CAP_SYS_ADMIN; before Linux 5.11 \
               also room under RLIMIT_MEMLOCK)",
        source: e.source,
        verifier_log: e.verifier_log,
    })?;
    // Listed before attaching, so the list holds only the programs to replace.
    let old = bpf::attached(cgroup.as_fd())
        .map_err(fail("list the attached device programs (BPF_PROG_QUERY)"))?;
    bpf::attach(cgroup.as_fd(), prog.as_fd())
        .map_err(fail("attach the device program (BPF_PROG_ATTACH)"))?;
    for id in old {
        let old_prog = match bpf::prog_by_id(id) {
            Ok(fd) => fd,
            // Gone meanwhile, or one a security module keeps us from opening: not ours to
            // replace either way.
            Err(e) => {
                debug!(id, error = %e, dir = %dir.display(), "leaving a device program we cannot open");
                continue;
            }
        };
        let name = bpf::prog_name(old_prog.as_fd()).map_err(fail(
            "read an attached program's name (BPF_OBJ_GET_INFO_BY_FD)",
        ))?;
        if name != bpf::PROG_NAME {
            debug!(id, name = %String::from_utf8_lossy(&name), dir = %dir.display(), "leaving a device program another manager attached");
            continue;
        }
        match bpf::detach(cgroup.as_fd(), old_prog.as_fd()) {
            Ok(()) => debug!(id, dir = %dir.display(), "replaced device program"),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(fail("detach the previous device program (BPF_PROG_DETACH)")(e)),
        }
    }
    Ok(())
}

/// The cgroup directory, opened for `BPF_PROG_ATTACH`. A directory on another file system would
/// fail there with a bare EBADF, so that case gets its own message.
fn open_cgroup2(dir: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)?;
    if fstatfs(&f)?.filesystem_type() != CGROUP2_SUPER_MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is not on a cgroup2 file system",
        ));
    }
    Ok(f)
}
