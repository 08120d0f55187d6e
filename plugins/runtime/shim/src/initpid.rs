//! The container's init pid as the bundle records it, for `<shim> delete`: the cleanup that
//! runs when the shim server is gone, maybe long after, when the pid may belong to another
//! process. Beside `init.pid` goes `init.start`, the process's start time (field 22 of
//! `/proc/<pid>/stat`, clock ticks since boot): a pid is signalled only if the process holding
//! it started then, and the signal goes through a pidfd opened before that check, so the
//! process checked is the process signalled.

use std::path::Path;

use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

const PID_FILE: &str = "init.pid";
const START_FILE: &str = "init.start";

/// The start time of `pid`, or `None` if it is gone.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Field 22 of a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses and may
/// hold spaces and parentheses itself, so fields are counted from after the last `)`.
fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (the state): field 22 is the 20th from there.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Records `pid` as the bundle's init process.
pub fn record(bundle: &Path, pid: i32) {
    let _ = std::fs::write(bundle.join(PID_FILE), pid.to_string());
    if let Some(start) = start_time(pid) {
        let _ = std::fs::write(bundle.join(START_FILE), start.to_string());
    }
}

/// Forgets the init process (it has been reaped).
pub fn forget(bundle: &Path) {
    let _ = std::fs::remove_file(bundle.join(PID_FILE));
    let _ = std::fs::remove_file(bundle.join(START_FILE));
}

/// The recorded pid, 0 when there is none.
pub fn recorded(bundle: &Path) -> i32 {
    std::fs::read_to_string(bundle.join(PID_FILE))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(0)
}

/// SIGKILLs the recorded init process if it is still the one that was recorded. Returns
/// whether a process was signalled.
pub fn kill_recorded(bundle: &Path) -> bool {
    let Some(pid) = Pid::from_raw(recorded(bundle)) else {
        return false;
    };
    let Some(start) = std::fs::read_to_string(bundle.join(START_FILE))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    else {
        // No start time (the process was gone before it could be read): nothing to tell a
        // reused pid from ours, so no signal by pid; the cgroup's kill takes the rest.
        return false;
    };
    // The pidfd pins the process: if the check below passes, the signal reaches that process
    // even if it exits and its pid is reused meanwhile (pidfd_send_signal then fails).
    let Ok(pidfd) = pidfd_open(pid, PidfdFlags::empty()) else {
        return false;
    };
    if start_time(pid.as_raw_nonzero().get()) != Some(start) {
        return false;
    }
    pidfd_send_signal(&pidfd, Signal::KILL).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_even_with_parentheses_in_the_name() {
        let stat = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("4242 (x) S 1"), None);
    }

    #[test]
    fn only_the_recorded_process_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        record(dir.path(), pid);
        assert_eq!(recorded(dir.path()), pid);
        // Another process's start time under the same pid: refused.
        let start = start_time(pid).unwrap();
        std::fs::write(dir.path().join(START_FILE), (start + 1).to_string()).unwrap();
        assert!(!kill_recorded(dir.path()));
        assert!(child.try_wait().unwrap().is_none(), "still running");
        // The real one: killed.
        std::fs::write(dir.path().join(START_FILE), start.to_string()).unwrap();
        assert!(kill_recorded(dir.path()));
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        // Gone and reaped: nothing to signal.
        assert!(!kill_recorded(dir.path()));
        forget(dir.path());
        assert_eq!(recorded(dir.path()), 0);
    }
}
