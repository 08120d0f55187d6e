//! containerd's real default profile compiles and behaves as it does under runc. The fixtures
//! are what containerd 1.6's `contrib/seccomp.DefaultProfile` returns on x86_64 for the spec
//! `ctr oci spec` prints, with that spec's capabilities and with every capability; see
//! `tests/fixtures/README.md`.

mod common;

use common::{errno, exit_code, profile, run_filtered};

const DEFAULT: &str = include_str!("fixtures/containerd-1.6-default.json");
const ALL_CAPABILITIES: &str = include_str!("fixtures/containerd-1.6-all-capabilities.json");

fn compile(json: &str) -> berth_seccomp::Program {
    match berth_seccomp::compile(&profile(json)) {
        Ok(program) => program,
        Err(err) => panic!("containerd's profile does not compile: {err}"),
    }
}

#[test]
fn containerd_profiles_compile() {
    for (name, json) in [("default", DEFAULT), ("all capabilities", ALL_CAPABILITIES)] {
        let program = compile(json);
        // Hundreds of calls on three architectures: far more than a trivial filter, and within
        // the kernel's 4096 instructions.
        assert!(
            (300..=4096).contains(&program.instruction_count()),
            "{name}: {program:?}"
        );
    }
}

/// mount(2) on a path that does not exist: ENOENT from the kernel, or what the filter says.
fn mount_errno() -> i32 {
    // SAFETY: NUL-terminated literals; the target does not exist, so nothing is mounted.
    let rc = unsafe {
        libc::mount(
            c"none".as_ptr(),
            c"/nonexistent/berth-seccomp-test".as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        0
    } else {
        errno()
    }
}

#[test]
fn default_profile_denies_mount_and_answers_clone3_with_enosys() {
    let program = compile(DEFAULT);
    let status = run_filtered(&program, || {
        // containerd lists clone3 with errnoRet ENOSYS so that glibc falls back to clone.
        // SAFETY: clone3 with a null, zero-sized argument is refused before it does anything.
        let clone3 = match unsafe { libc::syscall(libc::SYS_clone3, 0usize, 0usize) } {
            -1 => errno(),
            _ => 0,
        };
        // personality(0xffffffff) only queries, and the profile allows exactly that value.
        // SAFETY: a query that changes nothing.
        let persona = unsafe { libc::personality(0xffff_ffff) };
        match (clone3, persona, mount_errno()) {
            (libc::ENOSYS, p, libc::EPERM) if p >= 0 => 0,
            (c, _, _) if c != libc::ENOSYS => 1,
            (_, p, _) if p < 0 => 2,
            _ => 3,
        }
    });
    assert_eq!(
        exit_code(status),
        0,
        "1: clone3 not ENOSYS, 2: personality query refused, 3: mount not EPERM"
    );
}

#[test]
fn profile_with_every_capability_lets_mount_reach_the_kernel() {
    let program = compile(ALL_CAPABILITIES);
    let status = run_filtered(&program, mount_errno);
    let code = exit_code(status);
    // Not the filter's EPERM: the kernel looked at the path (ENOENT), or refused an unprivileged
    // caller itself, which it also signals with EPERM; so only assert when running as root.
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(code, libc::ENOENT);
    } else {
        assert_ne!(code, 0);
    }
}
