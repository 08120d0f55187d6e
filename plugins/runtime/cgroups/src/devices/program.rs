//! OCI device rules → the policy they describe → the instructions of a
//! `BPF_PROG_TYPE_CGROUP_DEVICE` program that enforces it. Pure code: nothing here touches the
//! system, so every rule set is tested by running the generated program in an interpreter
//! (`devices/tests.rs`).
//!
//! The kernel calls the program with `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major;
//! u32 minor; }` in R1, where `access_type = access << 16 | type`, and allows the access when it
//! returns 1.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use crate::error::{Error, Result};

/// `BPF_DEVCG_DEV_BLOCK` and `BPF_DEVCG_DEV_CHAR`: the low 16 bits of `access_type`.
pub(crate) const DEV_BLOCK: u32 = 1;
pub(crate) const DEV_CHAR: u32 = 2;

/// `BPF_DEVCG_ACC_*`: the high 16 bits of `access_type` (one or more of them).
pub(crate) const ACC_MKNOD: u8 = 1;
pub(crate) const ACC_READ: u8 = 2;
pub(crate) const ACC_WRITE: u8 = 4;
pub(crate) const ACC_ALL: u8 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// The opcodes the generator emits (`BPF_CLASS | BPF_OP | BPF_SRC` from `linux/bpf_common.h`).
pub(crate) mod op {
    /// `BPF_LDX | BPF_MEM | BPF_W`: `dst = *(u32 *)(src + off)`.
    pub const LDX_W: u8 = 0x61;
    /// `BPF_ALU | BPF_AND | BPF_K`: `dst = (u32)dst & imm`.
    pub const AND32_IMM: u8 = 0x54;
    /// `BPF_ALU | BPF_RSH | BPF_K`: `dst = (u32)dst >> imm`.
    pub const RSH32_IMM: u8 = 0x74;
    /// `BPF_ALU | BPF_MOV | BPF_K`: `dst = (u32)imm`.
    pub const MOV32_IMM: u8 = 0xb4;
    /// `BPF_JMP | BPF_JA`: `pc += off`.
    pub const JA: u8 = 0x05;
    /// `BPF_JMP | BPF_JEQ | BPF_K`: `if dst == imm { pc += off }`.
    pub const JEQ_IMM: u8 = 0x15;
    /// `BPF_JMP | BPF_JSET | BPF_K`: `if dst & imm != 0 { pc += off }`.
    pub const JSET_IMM: u8 = 0x45;
    /// `BPF_JMP | BPF_JNE | BPF_K`: `if dst != imm { pc += off }`.
    pub const JNE_IMM: u8 = 0x55;
    /// `BPF_JMP | BPF_EXIT`: return R0.
    pub const EXIT: u8 = 0x95;
}

/// Registers: R0 is the return value, R1 the context.
const R0: u8 = 0;
const R1: u8 = 1;
/// Device type (`access_type & 0xffff`), for the whole program.
const R_TYPE: u8 = 2;
/// The requested access bits not yet decided (starts as `access_type >> 16`).
const R_ACCESS: u8 = 3;
/// The major or minor number, loaded afresh for each comparison (see `Policy::program`).
const R_NUMBER: u8 = 4;

/// Offsets in `struct bpf_cgroup_dev_ctx`.
const CTX_ACCESS_TYPE: i16 = 0;
const CTX_MAJOR: i16 = 4;
const CTX_MINOR: i16 = 8;

/// One instruction, laid out as the kernel's `struct bpf_insn` (8 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    pub code: u8,
    /// `dst_reg:4, src_reg:4` — a C bit-field, so which nibble is which follows the byte order.
    regs: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        #[cfg(target_endian = "little")]
        let regs = (src << 4) | (dst & 0x0f);
        #[cfg(target_endian = "big")]
        let regs = (dst << 4) | (src & 0x0f);
        Insn {
            code,
            regs,
            off,
            imm,
        }
    }

    #[cfg(test)]
    pub fn dst(&self) -> u8 {
        #[cfg(target_endian = "little")]
        return self.regs & 0x0f;
        #[cfg(target_endian = "big")]
        return self.regs >> 4;
    }

    #[cfg(test)]
    pub fn src(&self) -> u8 {
        #[cfg(target_endian = "little")]
        return self.regs >> 4;
        #[cfg(target_endian = "big")]
        return self.regs & 0x0f;
    }
}

/// One OCI rule, checked and in the program's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rule {
    pub allow: bool,
    /// `DEV_BLOCK`/`DEV_CHAR`; `None` matches both (type `a`).
    pub typ: Option<u32>,
    /// `None`: any number.
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// `ACC_*` bits.
    pub access: u8,
}

impl Rule {
    /// Whether the rule names every device and every access: it then decides everything, and
    /// what came before it no longer matters (a reset, as `a *:* rwm` is in the v1 controller).
    fn is_total(&self) -> bool {
        self.typ.is_none() && self.major.is_none() && self.minor.is_none() && self.access == ACC_ALL
    }

    /// Whether the rule applies to device `typ major:minor` (access aside).
    #[cfg(test)]
    pub fn matches_device(&self, typ: u32, major: u32, minor: u32) -> bool {
        self.typ.is_none_or(|t| t == typ)
            && self.major.is_none_or(|m| m == major)
            && self.minor.is_none_or(|m| m == minor)
    }
}

/// What a rule list comes to: a default verdict and the rules that still matter, in spec order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Policy {
    pub default_allow: bool,
    pub rules: Vec<Rule>,
}

impl Policy {
    /// The policy of the spec's rules, or `None` when there are none (nothing to enforce, and on
    /// `update` nothing to change).
    ///
    /// Rules are read in order, each deciding the access bits it names for the devices it
    /// matches, a later rule overriding an earlier one (see `devices/mod.rs` for how this
    /// compares with the v1 controller). The starting point is "allow everything", which is what
    /// a cgroup with no device program gets.
    pub fn from_spec(rules: &[LinuxDeviceCgroup]) -> Result<Option<Policy>> {
        if rules.is_empty() {
            return Ok(None);
        }
        let mut policy = Policy {
            default_allow: true,
            rules: Vec::new(),
        };
        for (i, r) in rules.iter().enumerate() {
            let Some(rule) = parse(i, r)? else {
                continue;
            };
            if rule.is_total() {
                policy.default_allow = rule.allow;
                policy.rules.clear();
            } else {
                policy.rules.push(rule);
            }
        }
        // A rule only overrides what earlier rules decided. Leading rules that agree with the
        // default therefore change nothing (a "deny" right after "deny all", say).
        let keep_from = policy
            .rules
            .iter()
            .position(|r| r.allow != policy.default_allow)
            .unwrap_or(policy.rules.len());
        policy.rules.drain(..keep_from);
        Ok(Some(policy))
    }

    /// The reference decision for a request, straight from the definition (the generated program
    /// must agree with it): every requested access bit must be allowed, and a bit is decided by
    /// the last rule that matches the device and names the bit, else by the default.
    #[cfg(test)]
    pub fn decide(&self, typ: u32, major: u32, minor: u32, access: u8) -> bool {
        [ACC_MKNOD, ACC_READ, ACC_WRITE]
            .into_iter()
            .filter(|bit| access & bit != 0)
            .all(|bit| {
                self.rules
                    .iter()
                    .rev()
                    .find(|r| r.access & bit != 0 && r.matches_device(typ, major, minor))
                    .map_or(self.default_allow, |r| r.allow)
            })
    }

    /// The program. Rules are checked from the last to the first, which makes "last match wins"
    /// a matter of returning early:
    ///
    /// ```text
    ///   r2 = type; r3 = requested access
    ///   for each rule, last first:
    ///       if the device does not match: go to the next rule
    ///       deny:  if r3 & access != 0: return 0       (a requested bit is denied)
    ///       allow: r3 &= ~access; if r3 == 0: return 1 (every requested bit is allowed)
    ///   return default                                 (bits no rule named)
    /// ```
    ///
    /// A rule costs one instruction for its type, two for each number (load, compare) and one or
    /// two for its verdict. The numbers are loaded again for every comparison rather than kept in
    /// registers, for the verifier: it walks every path, and a register a rule left known on the
    /// way to the next one (the major matched, the minor did not: "major is 8") would make the
    /// rest of the program a new state to walk, once per rule — quadratic, so that some 1,000
    /// rules hit its limit of a million instructions. A register loaded afresh is dead at the
    /// next rule, so those paths merge.
    pub fn program(&self) -> Result<Vec<Insn>> {
        let mut asm = Asm::default();
        if !self.rules.is_empty() {
            asm.emit(Insn::new(op::LDX_W, R_TYPE, R1, CTX_ACCESS_TYPE, 0));
            asm.emit(Insn::new(op::AND32_IMM, R_TYPE, 0, 0, 0xffff));
            asm.emit(Insn::new(op::LDX_W, R_ACCESS, R1, CTX_ACCESS_TYPE, 0));
            asm.emit(Insn::new(op::RSH32_IMM, R_ACCESS, 0, 0, 16));
        }
        let allow = asm.label();
        let deny = asm.label();
        for rule in self.rules.iter().rev() {
            let next = asm.label();
            if let Some(typ) = rule.typ {
                asm.jump(Insn::new(op::JNE_IMM, R_TYPE, 0, 0, imm(typ)), next);
            }
            for (field, want) in [(CTX_MAJOR, rule.major), (CTX_MINOR, rule.minor)] {
                if let Some(want) = want {
                    asm.emit(Insn::new(op::LDX_W, R_NUMBER, R1, field, 0));
                    asm.jump(Insn::new(op::JNE_IMM, R_NUMBER, 0, 0, imm(want)), next);
                }
            }
            let access = i32::from(rule.access);
            match (rule.allow, rule.access == ACC_ALL) {
                (false, _) => asm.jump(Insn::new(op::JSET_IMM, R_ACCESS, 0, 0, access), deny),
                (true, true) => asm.jump(Insn::new(op::JA, 0, 0, 0, 0), allow),
                (true, false) => {
                    let rest = i32::from(ACC_ALL & !rule.access);
                    asm.emit(Insn::new(op::AND32_IMM, R_ACCESS, 0, 0, rest));
                    asm.jump(Insn::new(op::JEQ_IMM, R_ACCESS, 0, 0, 0), allow);
                }
            }
            asm.bind(next);
        }
        // The default's exit comes first so the last rule falls through to it. The other exit is
        // only emitted when a rule jumps to it: the verifier refuses unreachable instructions.
        let (first, second) = if self.default_allow {
            ((allow, 1), (deny, 0))
        } else {
            ((deny, 0), (allow, 1))
        };
        for (label, verdict) in [first, second] {
            if label == first.0 || asm.is_used(label) {
                asm.bind(label);
                asm.emit(Insn::new(op::MOV32_IMM, R0, 0, 0, verdict));
                asm.emit(Insn::new(op::EXIT, 0, 0, 0, 0));
            }
        }
        asm.finish()
    }
}

/// A device number as a jump immediate. Numbers above `i32::MAX` never get here (see `parse`).
fn imm(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Checks rule `i`. `Ok(None)`: the rule cannot match any device or access, so it is dropped.
fn parse(i: usize, r: &LinuxDeviceCgroup) -> Result<Option<Rule>> {
    let invalid = |reason: String| Error::InvalidResource {
        setting: format!("linux.resources.devices[{i}]"),
        reason,
    };
    let typ = match r.typ().unwrap_or_default() {
        LinuxDeviceType::A => None,
        LinuxDeviceType::B => Some(DEV_BLOCK),
        LinuxDeviceType::C => Some(DEV_CHAR),
        other => {
            return Err(invalid(format!(
                "device type {:?} cannot be used in a device rule; use a, b or c",
                other.as_str()
            )))
        }
    };
    // As in the v1 code (and runc), a negative number is a wildcard.
    let number = |n: Option<i64>, what: &str| -> Result<Option<u32>> {
        match n {
            None => Ok(None),
            Some(n) if n < 0 => Ok(None),
            Some(n) => u32::try_from(n)
                .map(Some)
                .map_err(|_| invalid(format!("{what} number {n} is larger than 32 bits"))),
        }
    };
    let major = number(r.major(), "major")?;
    let minor = number(r.minor(), "minor")?;
    // Linux device numbers are 12 bits of major and 20 of minor, so a larger number names no
    // device; dropping the rule keeps every jump immediate a non-negative i32, which the kernel
    // compares with the zero-extended context field exactly.
    let too_big = |n: Option<u32>| n.is_some_and(|n| i32::try_from(n).is_err());
    if too_big(major) || too_big(minor) {
        return Ok(None);
    }
    // The v1 code writes "rwm" for a rule without access; so does this.
    let mut access = 0;
    for c in r.access().as_deref().unwrap_or("rwm").chars() {
        access |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            other => {
                return Err(invalid(format!(
                    "access {other:?} is not one of r, w and m"
                )))
            }
        };
    }
    if access == 0 {
        return Ok(None);
    }
    Ok(Some(Rule {
        allow: r.allow(),
        typ,
        major,
        minor,
        access,
    }))
}

/// Forward jumps to labels, resolved once every instruction is placed.
#[derive(Default)]
struct Asm {
    insns: Vec<Insn>,
    /// Per instruction: the label it jumps to.
    targets: Vec<Option<usize>>,
    /// Per label: where it was bound.
    labels: Vec<Option<usize>>,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }

    fn bind(&mut self, label: usize) {
        self.labels[label] = Some(self.insns.len());
    }

    fn is_used(&self, label: usize) -> bool {
        self.targets.contains(&Some(label))
    }

    fn emit(&mut self, insn: Insn) {
        self.insns.push(insn);
        self.targets.push(None);
    }

    fn jump(&mut self, insn: Insn, label: usize) {
        self.insns.push(insn);
        self.targets.push(Some(label));
    }

    fn finish(mut self) -> Result<Vec<Insn>> {
        for (pc, target) in self.targets.iter().enumerate() {
            let Some(label) = target else {
                continue;
            };
            // `program` binds every label it jumps to, after the jumps: offsets count forward
            // from the instruction after the jump. Anything else is a bug here, reported
            // rather than loaded.
            let off = self.labels[*label]
                .and_then(|to| to.checked_sub(pc + 1))
                .ok_or_else(|| Error::InvalidResource {
                    setting: "linux.resources.devices".to_string(),
                    reason: format!("internal error: unresolved jump at instruction {pc}"),
                })?;
            self.insns[pc].off = i16::try_from(off).map_err(|_| Error::InvalidResource {
                setting: "linux.resources.devices".to_string(),
                reason: format!(
                    "too many rules: the device program would need a jump of {off} instructions"
                ),
            })?;
        }
        Ok(self.insns)
    }
}
