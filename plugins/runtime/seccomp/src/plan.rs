//! What a spec's `linux.seccomp` asks for, in libseccomp's terms, decided apart from building the
//! filter so that every translation rule (actions and their errnos, redundant rules, argument
//! conditions, flags) is tested without libseccomp's output in the way.

use libseccomp::{ScmpAction, ScmpArch, ScmpCompareOp};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, LinuxSyscall,
};

use crate::CompileError;

/// System calls have at most six arguments; seccomp_data carries no more.
const MAX_ARGUMENTS: usize = 6;

/// The filter to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub default: ScmpAction,
    /// Besides the native one, which every libseccomp filter starts with.
    pub arches: Vec<(ScmpArch, Arch)>,
    /// `SECCOMP_FILTER_FLAG_*` bits for seccomp(2).
    pub flags: libc::c_ulong,
    pub rules: Vec<Rule>,
}

/// One syscall name of a spec rule (a spec rule with several names becomes one [`Rule`] each, as
/// in runc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub syscall: String,
    pub action: ScmpAction,
    /// Each entry becomes one libseccomp rule whose conditions must all hold; the call matches
    /// if any entry does. One empty entry is an unconditional rule.
    pub condition_sets: Vec<Vec<Condition>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Condition {
    pub index: u32,
    /// For `MaskedEqual` the mask is inside the operator and `datum` is what the masked
    /// argument must equal.
    pub op: ScmpCompareOp,
    pub datum: u64,
}

pub(crate) fn plan(spec: &LinuxSeccomp) -> Result<Plan, CompileError> {
    let default = action(spec.default_action(), spec.default_errno_ret(), || {
        "defaultAction".to_owned()
    })?;

    let arches = spec
        .architectures()
        .iter()
        .flatten()
        .map(|arch| (scmp_arch(*arch), *arch))
        .collect();

    let mut flags: libc::c_ulong = 0;
    for flag in spec.flags().iter().flatten() {
        flags |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            // runc accepts TSYNC and ignores it because it loads in a single-threaded process;
            // passing it on costs nothing there and keeps its meaning if the loader has threads.
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            // The kernel rejects it without SECCOMP_FILTER_FLAG_NEW_LISTENER.
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                return Err(CompileError::UnsupportedFlag {
                    flag: "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
                })
            }
        };
    }

    let mut rules = Vec::new();
    for syscall in spec.syscalls().iter().flatten() {
        rules_of(syscall, default, &mut rules)?;
    }

    Ok(Plan {
        default,
        arches,
        flags,
        rules,
    })
}

fn rules_of(
    syscall: &LinuxSyscall,
    default: ScmpAction,
    rules: &mut Vec<Rule>,
) -> Result<(), CompileError> {
    let names = syscall.names();
    let rule_action = action(syscall.action(), syscall.errno_ret(), || {
        format!("the rule for {}", names.join(", "))
    })?;
    if names.iter().any(String::is_empty) {
        return Err(CompileError::EmptySyscallName);
    }
    // libseccomp refuses a rule whose action is the default one; such a rule changes nothing,
    // so it is dropped, as runc does.
    if rule_action == default {
        return Ok(());
    }
    let args = syscall.args().as_deref().unwrap_or_default();
    let condition_sets = condition_sets(args, names)?;
    rules.extend(names.iter().map(|name| Rule {
        syscall: name.clone(),
        action: rule_action,
        condition_sets: condition_sets.clone(),
    }));
    Ok(())
}

/// libseccomp cannot AND two conditions on the same argument in one rule. When a spec rule has
/// them, runc adds each condition as a rule of its own (so the conditions are ORed), and profiles
/// are written for that: Docker's once allowed `personality` for several values with one rule.
/// Otherwise all conditions go into one rule and must all hold.
fn condition_sets(
    args: &[LinuxSeccompArg],
    names: &[String],
) -> Result<Vec<Vec<Condition>>, CompileError> {
    let mut per_index = [0usize; MAX_ARGUMENTS];
    let mut conditions = Vec::with_capacity(args.len());
    for arg in args {
        let index = arg.index();
        let Some(count) = per_index.get_mut(index) else {
            return Err(CompileError::ArgumentIndex {
                syscall: names.join(", "),
                index,
            });
        };
        *count += 1;
        conditions.push(condition(arg, index));
    }
    if per_index.iter().any(|&count| count > 1) {
        Ok(conditions.into_iter().map(|c| vec![c]).collect())
    } else {
        Ok(vec![conditions])
    }
}

fn condition(arg: &LinuxSeccompArg, index: usize) -> Condition {
    let value = arg.value();
    let (op, datum) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, value),
        LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, value),
        LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, value),
        LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, value),
        LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, value),
        LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, value),
        // `(arg & value) == valueTwo`: the spec's value is the mask; a missing valueTwo is 0.
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            ScmpCompareOp::MaskedEqual(value),
            arg.value_two().unwrap_or(0),
        ),
    };
    Condition {
        // The caller checked index < MAX_ARGUMENTS, so this never saturates.
        index: u32::try_from(index).unwrap_or(u32::MAX),
        op,
        datum,
    }
}

/// The spec's action with its return value. As in runc and the runtime spec, an `ERRNO` or
/// `TRACE` without a value returns `EPERM`; a value given with another action is ignored.
fn action(
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    place: impl Fn() -> String,
) -> Result<ScmpAction, CompileError> {
    let value = || -> Result<u16, CompileError> {
        let value = errno_ret.unwrap_or(libc::EPERM.unsigned_abs());
        u16::try_from(value).map_err(|_| CompileError::ErrnoOutOfRange {
            place: place(),
            value,
        })
    };
    Ok(match action {
        // SCMP_ACT_KILL predates KILL_PROCESS and has always meant the thread.
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(i32::from(value()?)),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(value()?),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(CompileError::Unsupported {
                action: "SCMP_ACT_NOTIFY",
                place: place(),
            })
        }
    })
}

fn scmp_arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::profile;

    fn cond(index: u32, op: ScmpCompareOp, datum: u64) -> Condition {
        Condition { index, op, datum }
    }

    #[test]
    fn default_errno_is_eperm_unless_given() {
        let p = plan(&profile(r#"{"defaultAction": "SCMP_ACT_ERRNO"}"#)).unwrap();
        assert_eq!(p.default, ScmpAction::Errno(libc::EPERM));
        let p = plan(&profile(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38}"#,
        ))
        .unwrap();
        assert_eq!(p.default, ScmpAction::Errno(libc::ENOSYS));
        let p = plan(&profile(
            r#"{"defaultAction": "SCMP_ACT_TRACE", "defaultErrnoRet": 7}"#,
        ))
        .unwrap();
        assert_eq!(p.default, ScmpAction::Trace(7));
    }

    #[test]
    fn rule_errno_does_not_inherit_default_errno() {
        // runc and the runtime spec: a rule's ERRNO without errnoRet is EPERM, whatever
        // defaultErrnoRet says.
        let p = plan(&profile(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}"#,
        ))
        .unwrap();
        assert_eq!(p.rules.len(), 1);
        assert_eq!(p.rules[0].action, ScmpAction::Errno(libc::EPERM));
    }

    #[test]
    fn every_action_maps() {
        let cases = [
            ("SCMP_ACT_KILL", ScmpAction::KillThread),
            ("SCMP_ACT_KILL_THREAD", ScmpAction::KillThread),
            ("SCMP_ACT_KILL_PROCESS", ScmpAction::KillProcess),
            ("SCMP_ACT_TRAP", ScmpAction::Trap),
            ("SCMP_ACT_ERRNO", ScmpAction::Errno(libc::EPERM)),
            ("SCMP_ACT_TRACE", ScmpAction::Trace(1)),
            ("SCMP_ACT_LOG", ScmpAction::Log),
            ("SCMP_ACT_ALLOW", ScmpAction::Allow),
        ];
        for (name, want) in cases {
            let p = plan(&profile(&format!(r#"{{"defaultAction": "{name}"}}"#))).unwrap();
            assert_eq!(p.default, want, "{name}");
        }
    }

    #[test]
    fn notify_is_unsupported_as_default_and_in_a_rule() {
        let err = plan(&profile(r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#)).unwrap_err();
        assert!(
            matches!(err, CompileError::Unsupported { ref place, .. } if place == "defaultAction"),
            "{err}"
        );
        let err = plan(&profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["connect"], "action": "SCMP_ACT_NOTIFY"}]}"#,
        ))
        .unwrap_err();
        assert!(err.to_string().contains("connect"), "{err}");
        assert!(err.to_string().contains("SCMP_ACT_NOTIFY"), "{err}");
    }

    #[test]
    fn errno_out_of_range_is_refused() {
        let err = plan(&profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 70000}]}"#,
        ))
        .unwrap_err();
        assert!(
            matches!(err, CompileError::ErrnoOutOfRange { value: 70000, .. }),
            "{err}"
        );
    }

    #[test]
    fn rule_with_the_default_action_is_dropped() {
        let p = plan(&profile(
            r#"{"defaultAction": "SCMP_ACT_ERRNO",
                "syscalls": [
                    {"names": ["getpid"], "action": "SCMP_ACT_ERRNO"},
                    {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
                    {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}
                ]}"#,
        ))
        .unwrap();
        let names: Vec<_> = p.rules.iter().map(|r| r.syscall.as_str()).collect();
        // ERRNO(EPERM) is the default: dropped. ERRNO(ENOSYS) is not.
        assert_eq!(names, ["clone3", "read", "write"]);
    }

    #[test]
    fn conditions_on_distinct_arguments_share_one_rule() {
        let p = plan(&profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ERRNO", "args": [
                    {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"},
                    {"index": 1, "value": 1, "op": "SCMP_CMP_NE"}
                ]}]}"#,
        ))
        .unwrap();
        assert_eq!(
            p.rules[0].condition_sets,
            [vec![
                cond(0, ScmpCompareOp::Equal, 2),
                cond(1, ScmpCompareOp::NotEqual, 1)
            ]]
        );
    }

    #[test]
    fn conditions_on_one_argument_become_a_rule_each() {
        // Like runc: as soon as one index repeats, every condition of the rule (also those on
        // other indexes) is a rule of its own.
        let p = plan(&profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["socket", "socketpair"], "action": "SCMP_ACT_ERRNO", "args": [
                    {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"},
                    {"index": 0, "value": 10, "op": "SCMP_CMP_EQ"},
                    {"index": 2, "value": 5, "op": "SCMP_CMP_GT"}
                ]}]}"#,
        ))
        .unwrap();
        assert_eq!(p.rules.len(), 2);
        for rule in &p.rules {
            assert_eq!(
                rule.condition_sets,
                [
                    vec![cond(0, ScmpCompareOp::Equal, 2)],
                    vec![cond(0, ScmpCompareOp::Equal, 10)],
                    vec![cond(2, ScmpCompareOp::Greater, 5)],
                ]
            );
        }
    }

    #[test]
    fn every_operator_maps_and_masked_eq_takes_value_two() {
        let p = plan(&profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["x"], "action": "SCMP_ACT_LOG", "args": [
                    {"index": 0, "value": 1, "op": "SCMP_CMP_NE"},
                    {"index": 1, "value": 2, "op": "SCMP_CMP_LT"},
                    {"index": 2, "value": 3, "op": "SCMP_CMP_LE"},
                    {"index": 3, "value": 4, "op": "SCMP_CMP_GE"},
                    {"index": 4, "value": 5, "op": "SCMP_CMP_GT"},
                    {"index": 5, "value": 255, "valueTwo": 17, "op": "SCMP_CMP_MASKED_EQ"}
                ]}, {"names": ["clone"], "action": "SCMP_ACT_LOG", "args": [
                    {"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}
                ]}]}"#,
        ))
        .unwrap();
        assert_eq!(
            p.rules[0].condition_sets,
            [vec![
                cond(0, ScmpCompareOp::NotEqual, 1),
                cond(1, ScmpCompareOp::Less, 2),
                cond(2, ScmpCompareOp::LessOrEqual, 3),
                cond(3, ScmpCompareOp::GreaterEqual, 4),
                cond(4, ScmpCompareOp::Greater, 5),
                cond(5, ScmpCompareOp::MaskedEqual(255), 17),
            ]]
        );
        // containerd's clone rule: no valueTwo, so the masked bits must all be clear.
        assert_eq!(
            p.rules[1].condition_sets,
            [vec![cond(0, ScmpCompareOp::MaskedEqual(2114060288), 0)]]
        );
    }

    #[test]
    fn argument_index_past_the_sixth_is_refused() {
        let err = plan(&profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mmap"], "action": "SCMP_ACT_ERRNO", "args": [
                    {"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}
                ]}]}"#,
        ))
        .unwrap_err();
        assert!(
            matches!(err, CompileError::ArgumentIndex { index: 6, .. }),
            "{err}"
        );
    }

    #[test]
    fn empty_syscall_name_is_refused() {
        let err = plan(&profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir", ""], "action": "SCMP_ACT_ERRNO"}]}"#,
        ))
        .unwrap_err();
        assert!(matches!(err, CompileError::EmptySyscallName), "{err}");
    }

    #[test]
    fn flags_map_to_kernel_bits() {
        let p = plan(&profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "flags": [
                "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                "SECCOMP_FILTER_FLAG_TSYNC"]}"#,
        ))
        .unwrap();
        assert_eq!(
            p.flags,
            libc::SECCOMP_FILTER_FLAG_LOG
                | libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
                | libc::SECCOMP_FILTER_FLAG_TSYNC
        );
        let err = plan(&profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}"#,
        ))
        .unwrap_err();
        assert!(matches!(err, CompileError::UnsupportedFlag { .. }), "{err}");
    }

    #[test]
    fn architectures_map() {
        let p = plan(&profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": [
                "SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64",
                "SCMP_ARCH_ARM", "SCMP_ARCH_S390X", "SCMP_ARCH_PPC64LE", "SCMP_ARCH_RISCV64"]}"#,
        ))
        .unwrap();
        let arches: Vec<_> = p.arches.iter().map(|(a, _)| *a).collect();
        assert_eq!(
            arches,
            [
                ScmpArch::X8664,
                ScmpArch::X86,
                ScmpArch::X32,
                ScmpArch::Aarch64,
                ScmpArch::Arm,
                ScmpArch::S390X,
                ScmpArch::Ppc64Le,
                ScmpArch::Riscv64
            ]
        );
    }
}
