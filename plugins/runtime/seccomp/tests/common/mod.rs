//! Loading filters for real: each test compiles in the parent, forks, and the child sets
//! no_new_privs (so no root is needed), loads the filter, makes the calls under test and exits
//! with a code that tells the parent what it saw.

// Each test binary uses only part of this.
#![allow(dead_code)]

use berth_seccomp::Program;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use oci_spec::runtime::LinuxSeccomp;

/// Exit codes of the child when something other than the filter went wrong.
pub const NO_NEW_PRIVS_FAILED: i32 = 120;
pub const LOAD_FAILED: i32 = 121;

pub fn profile(json: &str) -> LinuxSeccomp {
    match serde_json::from_str(json) {
        Ok(profile) => profile,
        Err(err) => panic!("test profile does not parse: {err}\n{json}"),
    }
}

pub fn compile(json: &str) -> Program {
    match berth_seccomp::compile(&profile(json)) {
        Ok(program) => program,
        Err(err) => panic!("compile: {err}\n{json}"),
    }
}

/// Runs `body` in a forked child under `program` and returns how the child ended. `body` runs
/// after fork in a process whose other threads (the test harness's) are gone: it may only make
/// async-signal-safe calls — plain system calls through libc, nothing that allocates or locks.
pub fn run_filtered(program: &Program, body: impl FnOnce() -> i32) -> WaitStatus {
    // SAFETY: the child only makes async-signal-safe calls (prctl, setrlimit, seccomp, the
    // system calls `body` makes, _exit) and never returns into the test harness.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: plain system calls on values that live on this stack; a test killed by
            // SIGSYS should not leave a core file behind.
            let code = unsafe {
                libc::setrlimit(libc::RLIMIT_CORE, &no_core);
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    NO_NEW_PRIVS_FAILED
                } else if program.load().is_err() {
                    LOAD_FAILED
                } else {
                    body()
                }
            };
            // SAFETY: ends the child without running the harness's atexit handlers or
            // destructors, which are not ours to run in a forked copy.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => waitpid(child, None).expect("waitpid"),
    }
}

/// The errno of the last failed call, in the child.
pub fn errno() -> i32 {
    nix::errno::Errno::last_raw()
}

/// The exit code of a child that exited, or a panic that says how it ended instead.
pub fn exit_code(status: WaitStatus) -> i32 {
    match status {
        WaitStatus::Exited(_, NO_NEW_PRIVS_FAILED) => {
            panic!("the child could not set no_new_privs")
        }
        WaitStatus::Exited(_, LOAD_FAILED) => panic!("the child could not load the filter"),
        WaitStatus::Exited(_, code) => code,
        other => panic!("the child did not exit: {other:?}"),
    }
}
