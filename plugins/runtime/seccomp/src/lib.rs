//! The OCI runtime spec's `linux.seccomp` as a seccomp filter for a container's init process.
//!
//! [`compile`] runs in the parent (the shim, before it forks the container's init): it builds the
//! filter with libseccomp, as runc does, and exports it as a classic BPF program. The forked child
//! then only calls [`Program::load`], which makes one seccomp(2) system call and allocates nothing,
//! so it is safe between fork and execve in a process that had threads.
//!
//! The translation follows runc (`libcontainer/seccomp`):
//! - `SCMP_ACT_KILL` kills the thread; `ERRNO` and `TRACE` return the rule's `errnoRet`, or
//!   `EPERM` without one (`defaultErrnoRet` only applies to the default action);
//!   `SCMP_ACT_NOTIFY` is refused, as Berth runs no seccomp agent.
//! - A syscall name libseccomp does not know for this machine's architecture is skipped (with a
//!   debug log), so profiles that list the calls of every architecture, like containerd's default
//!   one, compile. A rule whose action is the default action is skipped.
//! - Conditions on distinct arguments must all hold; as soon as a rule has two conditions on the
//!   same argument, each of its conditions becomes a rule of its own (any may match).
//! - libseccomp's own loader, which would set no_new_privs, is not used: the caller sets it when
//!   the spec's `process.noNewPrivileges` asks. Without it the kernel wants CAP_SYS_ADMIN, so
//!   such a filter must be loaded before capabilities are dropped; with it, as late as possible,
//!   just before execve, so the runtime's own last calls are not filtered.
//!
//! Unlike current runc, the program is not patched to return `ENOSYS` for system calls newer
//! than the profile (runc's `patchbpf`): such calls get the default action, as they did with
//! older runc. containerd's default profile still works as intended: it names `clone3` itself,
//! with `errnoRet` `ENOSYS`, so that libc falls back to `clone`, whose flags the filter can see.

mod error;
mod plan;
mod program;
#[cfg(test)]
mod test_support;

pub use error::{CompileError, LoadError};
pub use program::Program;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use libseccomp::{ScmpArgCompare, ScmpFilterContext, ScmpSyscall, ScmpVersion};
use nix::sys::memfd::{memfd_create, MFdFlags};
use oci_spec::runtime::LinuxSeccomp;

use plan::Plan;

/// Builds the filter `spec` describes and exports it as a BPF program for [`Program::load`].
///
/// Allocates and calls into libseccomp: call it before forking.
pub fn compile(spec: &LinuxSeccomp) -> Result<Program, CompileError> {
    let plan = plan::plan(spec)?;
    let filter = build(&plan)?;
    let bytes = export(&filter)?;
    Program::from_bpf(&bytes, plan.flags)
}

fn build(plan: &Plan) -> Result<ScmpFilterContext, CompileError> {
    let failed = |op| move |source| CompileError::Libseccomp { op, source };
    let mut filter = ScmpFilterContext::new(plan.default).map_err(failed("create a filter"))?;
    // The program is loaded by `Program::load`, never by libseccomp; turning its no_new_privs
    // off anyway keeps the filter's attributes honest about who sets that bit.
    filter
        .set_ctl_nnp(false)
        .map_err(failed("turn off SCMP_FLTATR_CTL_NNP"))?;

    for (arch, name) in &plan.arches {
        filter
            .add_arch(*arch)
            .map_err(|source| CompileError::Architecture {
                arch: name.to_string(),
                version: ScmpVersion::current()
                    .map(|v| v.to_string())
                    .unwrap_or_else(|_| "of unknown version".to_owned()),
                source,
            })?;
    }

    for rule in &plan.rules {
        // Resolved for the native architecture, as runc does; libseccomp then maps the number
        // to every architecture of the filter that has the call.
        let Ok(syscall) = ScmpSyscall::from_name(&rule.syscall) else {
            tracing::debug!(syscall = %rule.syscall, "unknown seccomp syscall ignored");
            continue;
        };
        for set in &rule.condition_sets {
            let conditions: Vec<ScmpArgCompare> = set
                .iter()
                .map(|c| ScmpArgCompare::new(c.index, c.op, c.datum))
                .collect();
            filter
                .add_rule_conditional(rule.action, syscall, &conditions)
                .map_err(|source| CompileError::Rule {
                    syscall: rule.syscall.clone(),
                    action: format!("{:?}", rule.action),
                    source,
                })?;
        }
    }
    Ok(filter)
}

/// libseccomp 2.5 exports only to a file descriptor (`seccomp_export_bpf_mem` is 2.6); a memfd
/// keeps that in memory.
fn export(filter: &ScmpFilterContext) -> Result<Vec<u8>, CompileError> {
    let fd = memfd_create(c"berth-seccomp", MFdFlags::MFD_CLOEXEC).map_err(|errno| {
        CompileError::Export {
            op: "create",
            source: errno.into(),
        }
    })?;
    filter
        .export_bpf(&fd)
        .map_err(|source| CompileError::Libseccomp {
            op: "export the filter as BPF",
            source,
        })?;
    let mut file = File::from(fd);
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(|source| CompileError::Export { op: "read", source })?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::profile;

    #[test]
    fn allow_list_with_default_errno_compiles() {
        let program = compile(&profile(
            r#"{"defaultAction": "SCMP_ACT_ERRNO",
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                "syscalls": [{"names": ["read", "write", "exit_group", "futex"],
                              "action": "SCMP_ACT_ALLOW"}]}"#,
        ))
        .unwrap();
        program.assert_well_formed();
        assert_eq!(program.flags(), 0);
    }

    #[test]
    fn deny_rule_with_default_allow_compiles() {
        let program = compile(&profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                              "errnoRet": 13}]}"#,
        ))
        .unwrap();
        program.assert_well_formed();
        // The errno is the low 16 bits of a RET SECCOMP_RET_ERRNO instruction.
        let errno_ret = 0x0005_0000 | 13;
        assert!(
            program.instructions().iter().any(|i| i.k == errno_ret),
            "no RET ERRNO(13) in {program:?}"
        );
    }

    #[test]
    fn conditions_compile_including_several_on_one_argument_and_masked_eq() {
        let program = compile(&profile(
            r#"{"defaultAction": "SCMP_ACT_ERRNO",
                "syscalls": [
                    {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [
                        {"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
                        {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"},
                        {"index": 0, "value": 4294967295, "op": "SCMP_CMP_EQ"}]},
                    {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "args": [
                        {"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}]},
                    {"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [
                        {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                        {"index": 1, "value": 3, "op": "SCMP_CMP_LE"}]},
                    {"names": ["mmap"], "action": "SCMP_ACT_ALLOW", "args": [
                        {"index": 2, "value": 255, "valueTwo": 3, "op": "SCMP_CMP_MASKED_EQ"}]}
                ]}"#,
        ))
        .unwrap();
        program.assert_well_formed();
    }

    #[test]
    fn unknown_syscall_is_skipped_as_if_absent() {
        let with_unknown = compile(&profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir", "no_such_call_berth", "arm_fadvise64_64"],
                              "action": "SCMP_ACT_ERRNO"}]}"#,
        ))
        .unwrap();
        let without = compile(&profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}"#,
        ))
        .unwrap();
        assert_eq!(with_unknown.words(), without.words());
    }

    #[test]
    fn rule_with_the_default_action_is_skipped() {
        let with_redundant = compile(&profile(
            r#"{"defaultAction": "SCMP_ACT_ERRNO",
                "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO"},
                             {"names": ["write"], "action": "SCMP_ACT_ALLOW"}]}"#,
        ))
        .unwrap();
        let without = compile(&profile(
            r#"{"defaultAction": "SCMP_ACT_ERRNO",
                "syscalls": [{"names": ["write"], "action": "SCMP_ACT_ALLOW"}]}"#,
        ))
        .unwrap();
        assert_eq!(with_redundant.words(), without.words());
    }

    #[test]
    fn unknown_architecture_name_is_refused() {
        // Names outside the runtime spec's list fail when the spec is read.
        let err = serde_json::from_str::<LinuxSeccomp>(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_PDP11"]}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("SCMP_ARCH_PDP11"), "{err}");
    }

    #[test]
    fn architecture_this_libseccomp_lacks_is_refused() {
        // LoongArch came with libseccomp 2.6; Debian 12 ships 2.5.4.
        let spec = profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_LOONGARCH64"]}"#,
        );
        let version = ScmpVersion::current().unwrap();
        if (version.major, version.minor) >= (2, 6) {
            compile(&spec).unwrap().assert_well_formed();
        } else {
            let err = compile(&spec).unwrap_err();
            assert!(
                matches!(err, CompileError::Architecture { ref arch, .. } if arch == "SCMP_ARCH_LOONGARCH64"),
                "{err}"
            );
        }
    }

    #[test]
    fn notify_is_refused() {
        let err = compile(&profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_NOTIFY"}]}"#,
        ))
        .unwrap_err();
        assert!(matches!(err, CompileError::Unsupported { .. }), "{err}");
    }

    #[test]
    fn flags_are_carried_to_the_program() {
        let program = compile(&profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC"]}"#,
        ))
        .unwrap();
        assert_eq!(
            program.flags(),
            libc::SECCOMP_FILTER_FLAG_LOG | libc::SECCOMP_FILTER_FLAG_TSYNC
        );
    }
}
