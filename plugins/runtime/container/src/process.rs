//! The process side of a container, applied by its init (or an exec'd process) after the
//! filesystem: rlimits, the user and groups, capabilities, `noNewPrivileges`, umask, cwd and the
//! executable to run.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::runtime::{Capabilities, PosixRlimitType, Process};

use crate::error::{sys, Error, Result};

fn rlimit_resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    match t {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

pub fn set_rlimits(p: &Process) -> Result<()> {
    for r in p.rlimits().as_deref().unwrap_or_default() {
        let limit = libc::rlimit {
            rlim_cur: r.soft(),
            rlim_max: r.hard(),
        };
        // SAFETY: `limit` is a valid rlimit that lives across the call.
        let rc = unsafe { libc::setrlimit(rlimit_resource(r.typ()), &limit) };
        nix::errno::Errno::result(rc).map_err(sys("setrlimit"))?;
    }
    Ok(())
}

fn cap_set(set: &Option<Capabilities>) -> Result<caps::CapsHashSet> {
    let mut out = caps::CapsHashSet::new();
    for c in set.iter().flatten() {
        let name = c.to_string();
        let name = if name.starts_with("CAP_") {
            name
        } else {
            format!("CAP_{name}")
        };
        match caps::Capability::from_str(&name) {
            Ok(cap) => {
                out.insert(cap);
            }
            // A capability this kernel or crate does not know cannot be held anyway (runc
            // warns and goes on).
            Err(_) => tracing::warn!(capability = %name, "unknown capability ignored"),
        }
    }
    Ok(out)
}

/// Drops the bounding set to the spec's, while still privileged (needs CAP_SETPCAP).
pub fn drop_bounding(p: &Process) -> Result<()> {
    let Some(c) = p.capabilities() else {
        return Ok(());
    };
    let keep = cap_set(c.bounding())?;
    for cap in caps::all() {
        if !keep.contains(&cap) && caps::has_cap(None, caps::CapSet::Bounding, cap).unwrap_or(false)
        {
            caps::drop(None, caps::CapSet::Bounding, cap)
                .map_err(|e| Error::Caps(format!("drop {cap} from the bounding set: {e}")))?;
        }
    }
    Ok(())
}

/// Switches to the spec's user and groups, keeping capabilities across the uid change so that
/// [`set_capabilities`] can then set exactly the spec's.
pub fn set_user(p: &Process, user_ns: bool) -> Result<()> {
    let u = p.user();
    // SAFETY: prctl with PR_SET_KEEPCAPS takes plain integers.
    let rc = unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    nix::errno::Errno::result(rc).map_err(sys("keep capabilities"))?;
    let groups: Vec<nix::unistd::Gid> = u
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    // In a user namespace setgroups may be denied; an empty list is then simply not applied.
    if !(user_ns && groups.is_empty()) {
        nix::unistd::setgroups(&groups).map_err(sys("setgroups"))?;
    }
    let gid = nix::unistd::Gid::from_raw(u.gid());
    nix::unistd::setresgid(gid, gid, gid).map_err(sys("setgid"))?;
    let uid = nix::unistd::Uid::from_raw(u.uid());
    nix::unistd::setresuid(uid, uid, uid).map_err(sys("setuid"))?;
    // SAFETY: as above.
    let rc = unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    nix::errno::Errno::result(rc).map_err(sys("reset keep capabilities"))?;
    if let Some(mask) = u.umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    Ok(())
}

/// Sets the effective, permitted, inheritable and ambient sets to the spec's (the bounding set
/// was dropped earlier). Without a `capabilities` object a process keeps none, as in runc.
pub fn set_capabilities(p: &Process) -> Result<()> {
    let empty = None;
    let c = p.capabilities().as_ref();
    let set = |which: caps::CapSet, caps_of: &Option<Capabilities>| -> Result<()> {
        let wanted = cap_set(caps_of)?;
        caps::set(None, which, &wanted)
            .map_err(|e| Error::Caps(format!("set {which:?} to {wanted:?}: {e}")))
    };
    // Permitted first would drop what effective still needs to change the others: set the
    // inheritable set while everything is still held, then permitted and effective together.
    set(
        caps::CapSet::Inheritable,
        c.map_or(&empty, |c| c.inheritable()),
    )?;
    let permitted = cap_set(c.map_or(&empty, |c| c.permitted()))?;
    let effective = cap_set(c.map_or(&empty, |c| c.effective()))?;
    caps::set(
        None,
        caps::CapSet::Effective,
        &permitted.union(&effective).copied().collect(),
    )
    .map_err(|e| Error::Caps(format!("set effective: {e}")))?;
    caps::set(None, caps::CapSet::Permitted, &permitted)
        .map_err(|e| Error::Caps(format!("set permitted: {e}")))?;
    caps::set(None, caps::CapSet::Effective, &effective)
        .map_err(|e| Error::Caps(format!("set effective: {e}")))?;
    for cap in cap_set(c.map_or(&empty, |c| c.ambient()))? {
        caps::raise(None, caps::CapSet::Ambient, cap)
            .map_err(|e| Error::Caps(format!("raise ambient {cap}: {e}")))?;
    }
    Ok(())
}

pub fn set_no_new_privileges(p: &Process) -> Result<()> {
    if p.no_new_privileges() == Some(true) {
        // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes plain integers.
        let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        nix::errno::Errno::result(rc).map_err(sys("set no_new_privs"))?;
    }
    Ok(())
}

pub fn chdir_cwd(p: &Process) -> Result<()> {
    let cwd = p.cwd();
    let cwd = if cwd.as_os_str().is_empty() {
        Path::new("/")
    } else {
        cwd.as_path()
    };
    nix::unistd::chdir(cwd).map_err(|e| Error::Cwd {
        path: cwd.to_owned(),
        reason: crate::sync::lower_first(e.desc()),
    })
}

/// What `execve` gets: the resolved path, argv and envp.
#[derive(Debug)]
pub struct Executable {
    pub path: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
}

fn cstring(s: &[u8], what: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Spec(format!("{what} contains a NUL byte")))
}

/// Finds `args[0]` as `exec.LookPath` does in runc — through the process's own `PATH` when it has
/// no slash — and reports runc's messages when it is missing or not executable.
pub fn resolve_executable(p: &Process) -> Result<Executable> {
    let args = p.args().as_deref().unwrap_or_default();
    let Some(name) = args.first() else {
        return Err(Error::Spec("process.args must not be empty".into()));
    };
    let env = p.env().as_deref().unwrap_or_default();
    let path = if name.contains('/') {
        let candidate = PathBuf::from(name);
        check_executable(&candidate).map_err(|reason| Error::Exec {
            name: name.clone(),
            reason,
        })?;
        candidate
    } else {
        let search = env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or("");
        search
            .split(':')
            .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(name))
            .find(|c| check_executable(c).is_ok())
            .ok_or_else(|| Error::Exec {
                name: name.clone(),
                reason: "executable file not found in $PATH".into(),
            })?
    };
    Ok(Executable {
        path: cstring(path.as_os_str().as_bytes(), "the executable path")?,
        argv: args
            .iter()
            .map(|a| cstring(a.as_bytes(), "an argument"))
            .collect::<Result<_>>()?,
        envp: env
            .iter()
            .map(|e| cstring(e.as_bytes(), "an environment variable"))
            .chain(
                needs_home(env)
                    .then(|| home_entry(p.user().uid()))
                    .map(|h| cstring(h.as_bytes(), "HOME")),
            )
            .collect::<Result<_>>()?,
    })
}

/// Whether the environment lacks a `HOME` (an empty one counts as missing, as in runc).
fn needs_home(env: &[String]) -> bool {
    !env.iter()
        .any(|e| e.strip_prefix("HOME=").is_some_and(|v| !v.is_empty()))
}

/// `HOME=` the user's home from the container's `/etc/passwd` (read after `pivot_root`), `/`
/// when the user is not listed — what runc sets when the spec's environment has none.
fn home_entry(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    format!("HOME={}", home_in_passwd(&passwd, uid).unwrap_or("/"))
}

/// The home directory of `uid` in a passwd file (`name:pw:uid:gid:gecos:home:shell`).
fn home_in_passwd(passwd: &str, uid: u32) -> Option<&str> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 7 && fields[2].parse() == Ok(uid)).then(|| fields[5])
    })
}

fn check_executable(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Err(e) => Err(format!(
            "stat {}: {}",
            path.display(),
            crate::sync::lower_first(crate::syscall::io_to_nix(&e).desc())
        )),
        Ok(m) if m.is_dir() => Err(format!("{} is a directory", path.display())),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Err("permission denied".into()),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(json: &str) -> Process {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn home_comes_from_passwd_when_the_environment_has_none() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\n# comment\nbad line\nwww:x:33:33::/var/www:/bin/false\n";
        assert_eq!(home_in_passwd(passwd, 0), Some("/root"));
        assert_eq!(home_in_passwd(passwd, 33), Some("/var/www"));
        assert_eq!(home_in_passwd(passwd, 1000), None);
        assert!(needs_home(&["PATH=/bin".into()]));
        assert!(needs_home(&["HOME=".into()]));
        assert!(!needs_home(&["HOME=/home/u".into()]));
    }

    #[test]
    fn executables_resolve_through_the_process_path() {
        let p = process(
            r#"{"user":{"uid":0,"gid":0},"cwd":"/","args":["sh","-c","true"],"env":["PATH=/nonexistent:/bin:/usr/bin"]}"#,
        );
        let e = resolve_executable(&p).unwrap();
        assert!(e.path.to_str().unwrap().ends_with("/sh"), "{:?}", e.path);
        assert_eq!(e.argv.len(), 3);

        let p = process(
            r#"{"user":{"uid":0,"gid":0},"cwd":"/","args":["no-such-program-here"],"env":["PATH=/bin"]}"#,
        );
        assert_eq!(
            resolve_executable(&p).unwrap_err().to_string(),
            "exec: \"no-such-program-here\": executable file not found in $PATH"
        );
        let p = process(r#"{"user":{"uid":0,"gid":0},"cwd":"/","args":["/nope/x"]}"#);
        assert_eq!(
            resolve_executable(&p).unwrap_err().to_string(),
            "exec: \"/nope/x\": stat /nope/x: no such file or directory"
        );
        let p = process(r#"{"user":{"uid":0,"gid":0},"cwd":"/","args":[]}"#);
        assert!(resolve_executable(&p).is_err());
    }

    #[test]
    fn capability_names_map_to_the_caps_crate() {
        let p = process(
            r#"{"user":{"uid":0,"gid":0},"cwd":"/","capabilities":{"bounding":["CAP_CHOWN","CAP_NET_RAW"]}}"#,
        );
        let set = cap_set(p.capabilities().as_ref().unwrap().bounding()).unwrap();
        assert!(set.contains(&caps::Capability::CAP_CHOWN));
        assert!(set.contains(&caps::Capability::CAP_NET_RAW));
        assert_eq!(set.len(), 2);
    }
}
