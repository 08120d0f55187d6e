//! Filters loaded into a forked child: the calls they target fail or kill as the spec says, and
//! the others go through.

mod common;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

use common::{compile, errno, exit_code, run_filtered};
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;

fn c_path(path: &std::path::Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("path without NUL")
}

#[test]
fn denied_mkdir_fails_with_eperm_under_default_allow() {
    let program = compile(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("denied");
    let path = c_path(&target);
    let status = run_filtered(&program, || {
        // SAFETY: a NUL-terminated path prepared before fork.
        if unsafe { libc::mkdir(path.as_ptr(), 0o755) } == 0 {
            0
        } else {
            errno()
        }
    });
    assert_eq!(exit_code(status), libc::EPERM);
    assert!(!target.exists());
}

#[test]
fn rule_errno_ret_is_returned() {
    let program = compile(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["rmdir", "unlinkat"], "action": "SCMP_ACT_ERRNO",
                          "errnoRet": 18}]}"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = c_path(&dir.path().join("absent"));
    let status = run_filtered(&program, || {
        // SAFETY: a NUL-terminated path prepared before fork. Without the filter this is
        // ENOENT; the filter answers before the kernel looks.
        if unsafe { libc::rmdir(path.as_ptr()) } == 0 {
            0
        } else {
            errno()
        }
    });
    assert_eq!(exit_code(status), libc::EXDEV);
}

/// Returns 0 when `close(-1)` reached the kernel (EBADF), else 100 + the errno it got.
fn close_reaches_kernel() -> i32 {
    // SAFETY: closing an invalid descriptor only returns an error.
    if unsafe { libc::close(-1) } == -1 && errno() == libc::EBADF {
        0
    } else {
        100 + errno()
    }
}

#[test]
fn allow_list_under_default_errno_refuses_the_rest() {
    let program = compile(
        r#"{"defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["close", "exit", "exit_group", "write"],
                          "action": "SCMP_ACT_ALLOW"}]}"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = c_path(&dir.path().join("denied"));
    let status = run_filtered(&program, || match close_reaches_kernel() {
        0 => {
            // SAFETY: a NUL-terminated path prepared before fork.
            if unsafe { libc::mkdir(path.as_ptr(), 0o755) } == 0 {
                0
            } else {
                errno()
            }
        }
        failed => failed,
    });
    assert_eq!(exit_code(status), libc::EPERM);
}

#[test]
fn default_errno_ret_is_returned_for_calls_no_rule_allows() {
    let program = compile(
        r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
            "syscalls": [{"names": ["close", "exit", "exit_group"],
                          "action": "SCMP_ACT_ALLOW"}]}"#,
    );
    let status = run_filtered(&program, || match close_reaches_kernel() {
        // SAFETY: getppid has no arguments; under the filter it fails.
        0 => match unsafe { libc::syscall(libc::SYS_getppid) } {
            -1 => errno(),
            _ => 0,
        },
        failed => failed,
    });
    assert_eq!(exit_code(status), libc::ENOSYS);
}

/// Opens a socket and returns 0, or the errno socket(2) failed with.
fn socket_errno(domain: i32, ty: i32) -> i32 {
    // SAFETY: socket(2) with constant arguments; the descriptor is closed at once.
    unsafe {
        let fd = libc::socket(domain, ty, 0);
        if fd < 0 {
            return errno();
        }
        libc::close(fd);
    }
    0
}

#[test]
fn condition_on_an_argument_denies_only_matching_calls() {
    let program = compile(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
                          "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]}]}"#,
    );
    let status = run_filtered(&program, || {
        match socket_errno(libc::AF_UNIX, libc::SOCK_STREAM) {
            0 => socket_errno(libc::AF_INET, libc::SOCK_STREAM),
            unix => 100 + unix,
        }
    });
    assert_eq!(exit_code(status), libc::EACCES);
}

#[test]
fn conditions_on_one_argument_match_any_of_them() {
    // As in runc, two conditions on argument 0 become two rules: AF_INET or AF_INET6.
    let program = compile(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
                          "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"},
                                   {"index": 0, "value": 10, "op": "SCMP_CMP_EQ"}]}]}"#,
    );
    let status = run_filtered(&program, || {
        let unix = socket_errno(libc::AF_UNIX, libc::SOCK_STREAM);
        let inet = socket_errno(libc::AF_INET, libc::SOCK_STREAM);
        let inet6 = socket_errno(libc::AF_INET6, libc::SOCK_STREAM);
        match (unix, inet, inet6) {
            (0, libc::EACCES, libc::EACCES) => 0,
            (0, libc::EACCES, _) => 2,
            (0, _, _) => 1,
            _ => 3,
        }
    });
    assert_eq!(exit_code(status), 0, "1: AF_INET, 2: AF_INET6, 3: AF_UNIX");
}

#[test]
fn conditions_on_distinct_arguments_must_all_hold() {
    // Deny AF_UNIX datagram sockets only, whatever flags are or-ed into the type.
    let program = compile(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
                          "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                                   {"index": 1, "value": 15, "valueTwo": 2,
                                    "op": "SCMP_CMP_MASKED_EQ"}]}]}"#,
    );
    let status = run_filtered(&program, || {
        let stream = socket_errno(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC);
        let dgram = socket_errno(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC);
        let inet_dgram = socket_errno(libc::AF_INET, libc::SOCK_DGRAM);
        match (stream, dgram, inet_dgram) {
            (0, libc::EACCES, e) if e != libc::EACCES => 0,
            (0, libc::EACCES, _) => 3,
            (0, _, _) => 2,
            _ => 1,
        }
    });
    assert_eq!(
        exit_code(status),
        0,
        "1: AF_UNIX stream denied, 2: AF_UNIX datagram allowed, 3: AF_INET datagram denied"
    );
}

fn assert_killed_by_sigsys(action: &str) {
    let program = compile(&format!(
        r#"{{"defaultAction": "SCMP_ACT_ALLOW",
             "syscalls": [{{"names": ["getppid"], "action": "{action}"}}]}}"#
    ));
    let status = run_filtered(&program, || {
        // SAFETY: getppid has no arguments; the filter stops the child here.
        unsafe { libc::syscall(libc::SYS_getppid) };
        0
    });
    assert!(
        matches!(status, WaitStatus::Signaled(_, Signal::SIGSYS, _)),
        "{action}: {status:?}"
    );
}

#[test]
fn kill_process_kills_with_sigsys() {
    assert_killed_by_sigsys("SCMP_ACT_KILL_PROCESS");
}

#[test]
fn kill_and_kill_thread_kill_a_single_threaded_process_with_sigsys() {
    assert_killed_by_sigsys("SCMP_ACT_KILL");
    assert_killed_by_sigsys("SCMP_ACT_KILL_THREAD");
}

#[test]
fn trap_raises_sigsys() {
    assert_killed_by_sigsys("SCMP_ACT_TRAP");
}

#[test]
fn log_allows_the_call() {
    let program = compile(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["close"], "action": "SCMP_ACT_LOG"}]}"#,
    );
    assert_eq!(exit_code(run_filtered(&program, close_reaches_kernel)), 0);
}

#[test]
fn filter_flags_are_accepted_by_the_kernel() {
    let program = compile(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                      "SECCOMP_FILTER_FLAG_TSYNC"],
            "syscalls": [{"names": ["close"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5}]}"#,
    );
    let status = run_filtered(&program, || {
        // SAFETY: closing an invalid descriptor only returns an error.
        unsafe { libc::close(-1) };
        errno()
    });
    assert_eq!(exit_code(status), libc::EIO);
}

#[test]
fn loading_without_no_new_privs_or_cap_sys_admin_says_what_is_missing() {
    let program = compile(r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#);
    // Capability sets are two 32-bit words each with _LINUX_CAPABILITY_VERSION_3.
    const CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let none = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: the child only makes system calls on values prepared before fork, then _exits.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            // SAFETY: capset reads the header and both data words, which live on this stack.
            let dropped = unsafe { libc::syscall(libc::SYS_capset, &header, none.as_ptr()) } == 0;
            let code = match (dropped, program.load()) {
                (false, _) => 10,
                (true, Err(berth_seccomp::LoadError::NeedsNoNewPrivs { .. })) => 0,
                (true, Ok(())) => 1,
                (true, Err(_)) => 2,
            };
            // SAFETY: ends the forked child without running the harness's exit handlers.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            let status = nix::sys::wait::waitpid(child, None).unwrap();
            assert_eq!(
                exit_code(status),
                0,
                "10: capset failed, 1: loaded without no_new_privs, 2: another error"
            );
        }
    }
}
