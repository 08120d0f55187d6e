//! The generated programs, run in a small interpreter of the instructions the generator emits,
//! against tables of requests and against the policy's definition (`Policy::decide`). The
//! interpreter also checks what the kernel's verifier would refuse: backward or out-of-range
//! jumps, unreachable instructions, uninitialised registers, falling off the end.

use oci_spec::runtime::LinuxDeviceCgroup;
use serde_json::json;

use super::program::{
    op, Insn, Policy, ACC_ALL, ACC_MKNOD as M, ACC_READ as R, ACC_WRITE as W, DEV_BLOCK as B,
    DEV_CHAR as C,
};
use crate::Error;

fn rules(v: serde_json::Value) -> Vec<LinuxDeviceCgroup> {
    serde_json::from_value(v).expect("valid device rules JSON")
}

/// A rule list as JSON, and the policy made of it.
#[derive(Debug)]
struct Case {
    spec: serde_json::Value,
    policy: Policy,
}

impl std::ops::Deref for Case {
    type Target = Policy;
    fn deref(&self) -> &Policy {
        &self.policy
    }
}

fn policy(spec: serde_json::Value) -> Case {
    let policy = Policy::from_spec(&rules(spec.clone()))
        .expect("valid rules")
        .expect("some rules");
    Case { spec, policy }
}

/// The decision read straight off the JSON rules, apart from the crate's parsing and collapsing:
/// per requested bit, the last rule that matches the device and names the bit, else allow.
fn reference(spec: &serde_json::Value, typ: u32, major: u32, minor: u32, access: u8) -> bool {
    let rules = spec.as_array().expect("a rule list");
    [(M, 'm'), (R, 'r'), (W, 'w')]
        .into_iter()
        .filter(|(bit, _)| access & bit != 0)
        .all(|(_, letter)| {
            let decided_by = rules.iter().rev().find(|r| {
                let t = r.get("type").and_then(|t| t.as_str()).unwrap_or("a");
                let type_ok = t == "a" || (t == "b" && typ == B) || (t == "c" && typ == C);
                let number_ok = |key: &str, n: u32| match r.get(key).and_then(|v| v.as_i64()) {
                    Some(want) if want >= 0 => want == i64::from(n),
                    _ => true,
                };
                let acc = r.get("access").and_then(|a| a.as_str()).unwrap_or("rwm");
                type_ok
                    && number_ok("major", major)
                    && number_ok("minor", minor)
                    && acc.contains(letter)
            });
            decided_by.is_none_or(|r| r["allow"].as_bool().unwrap_or(false))
        })
}

/// A marker value for R1, the context pointer.
const CTX: u64 = 0xc7c7_0000_0000;

/// Checks the program's shape as the verifier would, without running it.
fn check_shape(prog: &[Insn]) {
    assert!(!prog.is_empty(), "empty program");
    let mut reachable = vec![false; prog.len()];
    reachable[0] = true;
    for (pc, insn) in prog.iter().enumerate() {
        if !reachable[pc] {
            panic!("instruction {pc} is unreachable: {prog:#?}");
        }
        let jump_to = pc as i64 + 1 + i64::from(insn.off);
        let mut mark = |to: i64| {
            let to = usize::try_from(to).expect("jump before the start");
            assert!(to > pc, "backward jump at {pc}");
            assert!(to < prog.len(), "jump past the end at {pc}");
            reachable[to] = true;
        };
        match insn.code {
            op::EXIT => {}
            op::JA => mark(jump_to),
            op::JEQ_IMM | op::JNE_IMM | op::JSET_IMM => {
                mark(jump_to);
                mark(pc as i64 + 1);
            }
            // A load's offset is the field's, not a jump.
            op::LDX_W => mark(pc as i64 + 1),
            _ => {
                assert_eq!(insn.off, 0, "offset on a non-jump at {pc}");
                mark(pc as i64 + 1);
            }
        }
    }
}

/// Runs the program on one request; `true` when it allows it.
fn run(prog: &[Insn], typ: u32, major: u32, minor: u32, access: u8) -> bool {
    let ctx = [(u32::from(access) << 16) | typ, major, minor];
    let mut regs: [Option<u64>; 11] = [None; 11];
    regs[1] = Some(CTX);
    let mut pc = 0usize;
    for _ in 0..100_000 {
        let insn = *prog
            .get(pc)
            .unwrap_or_else(|| panic!("fell off the end at {pc}"));
        let dst = usize::from(insn.dst());
        let src = usize::from(insn.src());
        let read = |r: usize| regs[r].unwrap_or_else(|| panic!("reads uninitialised r{r} at {pc}"));
        // Immediates are sign-extended to 64 bits for 64-bit comparisons, as in the kernel.
        let imm64 = i64::from(insn.imm) as u64;
        let imm32 = insn.imm as u32;
        let jump = |taken: bool| {
            if taken {
                (pc as i64 + 1 + i64::from(insn.off)) as usize
            } else {
                pc + 1
            }
        };
        pc = match insn.code {
            op::LDX_W => {
                assert_eq!(read(src), CTX, "loads from a non-context register at {pc}");
                let field = usize::try_from(insn.off).expect("non-negative offset") / 4;
                assert_eq!(insn.off % 4, 0, "unaligned context load at {pc}");
                regs[dst] = Some(u64::from(ctx[field]));
                pc + 1
            }
            op::AND32_IMM => {
                regs[dst] = Some(u64::from(read(dst) as u32 & imm32));
                pc + 1
            }
            op::RSH32_IMM => {
                regs[dst] = Some(u64::from((read(dst) as u32) >> imm32));
                pc + 1
            }
            op::MOV32_IMM => {
                regs[dst] = Some(u64::from(imm32));
                pc + 1
            }
            op::JA => jump(true),
            op::JEQ_IMM => jump(read(dst) == imm64),
            op::JNE_IMM => jump(read(dst) != imm64),
            op::JSET_IMM => jump(read(dst) & imm64 != 0),
            op::EXIT => {
                return match read(0) {
                    0 => false,
                    1 => true,
                    v => panic!("returns {v}"),
                }
            }
            code => panic!("unexpected opcode {code:#04x} at {pc}"),
        };
    }
    panic!("no exit after 100000 steps")
}

/// Runs `table` (type, major, minor, access, allowed) through the program of `p`, and checks the
/// program against `Policy::decide` and against `reference` on every combination of a few
/// numbers.
fn check(p: &Case, table: &[(u32, u32, u32, u8, bool)]) {
    let prog = p.program().expect("program");
    check_shape(&prog);
    for &(typ, major, minor, access, want) in table {
        let t = if typ == B { "b" } else { "c" };
        assert_eq!(
            run(&prog, typ, major, minor, access),
            want,
            "{t} {major}:{minor} access {access:#b} (program: {prog:#?}, policy: {p:#?})"
        );
        assert_eq!(p.decide(typ, major, minor, access), want, "definition");
    }
    for typ in [B, C] {
        for major in [0, 1, 5, 8, 136, 4095] {
            for minor in [0, 1, 3, 5, 7] {
                for access in 1..=ACC_ALL {
                    let got = run(&prog, typ, major, minor, access);
                    let what = format!("type {typ} {major}:{minor} access {access:#b}");
                    assert_eq!(got, p.decide(typ, major, minor, access), "{what}");
                    assert_eq!(
                        got,
                        reference(&p.spec, typ, major, minor, access),
                        "{what} (reference)"
                    );
                }
            }
        }
    }
}

/// containerd's (and `ctr`'s) default: deny everything, then the standard devices and mknod of
/// any device.
fn containerd_default() -> serde_json::Value {
    json!([
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
        {"allow": true, "type": "c", "major": 136, "access": "rwm"},
        {"allow": true, "type": "c", "access": "m"},
        {"allow": true, "type": "b", "access": "m"}
    ])
}

#[test]
fn deny_all_then_an_allow_list() {
    let p = policy(containerd_default());
    assert!(!p.default_allow);
    assert_eq!(p.rules.len(), 5, "the reset itself is no rule");
    check(
        &p,
        &[
            (C, 1, 3, R | W, true),
            (C, 1, 3, M, true),
            (C, 1, 5, W, true),
            (B, 1, 3, R, false),
            (C, 1, 7, R, false),
            (C, 1, 7, M, true),
            (C, 1, 7, R | M, false),
            (C, 136, 0, R | W, true),
            (C, 136, 999, R, true),
            (C, 137, 0, R, false),
            (B, 8, 0, M, true),
            (B, 8, 0, R, false),
            (B, 8, 0, R | M, false),
            (C, 5, 1, R | W, false),
        ],
    );
    // 4 to read type and access; per rule 1 for the type, 2 per number, 1 for an allow of rwm
    // and 2 for less; the two exits.
    assert_eq!(p.program().unwrap().len(), 4 + (6 + 6 + 4 + 3 + 3) + 4);
}

#[test]
fn allow_all_and_deny_all_need_no_checks() {
    let mov_exit = |v| {
        let p = policy(json!([{"allow": v == 1, "access": "rwm"}]));
        let prog = p.program().unwrap();
        assert_eq!(prog.len(), 2, "{prog:#?}");
        assert_eq!((prog[0].code, prog[0].imm), (op::MOV32_IMM, v));
        assert_eq!(prog[1].code, op::EXIT);
        p
    };
    check(
        &mov_exit(1),
        &[(C, 1, 3, R | W | M, true), (B, 8, 0, W, true)],
    );
    check(&mov_exit(0), &[(C, 1, 3, R, false), (B, 8, 0, M, false)]);
    // An unset type is `a`, an unset access rwm: a reset.
    let p = policy(json!([
        {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": true}
    ]));
    assert!(p.default_allow && p.rules.is_empty(), "{p:?}");
}

#[test]
fn partial_access() {
    // Allow list: a rule allowing `r` alone does not allow `rw`.
    check(
        &policy(json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "r"}
        ])),
        &[
            (C, 1, 3, R, true),
            (C, 1, 3, W, false),
            (C, 1, 3, R | W, false),
            (C, 1, 3, M, false),
            (C, 1, 4, R, false),
        ],
    );
    // Deny list: denying `r` refuses any request that includes it, as v1 does.
    check(
        &policy(json!([
            {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "r"}
        ])),
        &[
            (C, 1, 3, R, false),
            (C, 1, 3, R | W, false),
            (C, 1, 3, W, true),
            (C, 1, 3, M | W, true),
            (C, 1, 4, R, true),
            (B, 1, 3, R, true),
        ],
    );
    // Access from several rules adds up.
    check(
        &policy(json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "access": "r"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "w"}
        ])),
        &[
            (C, 1, 3, R | W, true),
            (C, 1, 4, R | W, false),
            (C, 1, 4, R, true),
            (C, 1, 3, M, false),
        ],
    );
}

#[test]
fn wildcards() {
    check(
        &policy(json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "b", "major": 8, "access": "rw"},
            {"allow": true, "type": "c", "minor": 1, "access": "r"},
            // Negative numbers are wildcards, as in the v1 code.
            {"allow": true, "type": "c", "major": 5, "minor": -1, "access": "w"}
        ])),
        &[
            (B, 8, 0, R | W, true),
            (B, 8, 16, W, true),
            (B, 8, 0, M, false),
            (B, 9, 0, R, false),
            (C, 8, 0, R, false),
            (C, 42, 1, R, true),
            (C, 42, 1, W, false),
            (B, 42, 1, R, false),
            (C, 5, 7, W, true),
            (C, 5, 1, R | W, true),
        ],
    );
}

#[test]
fn a_deny_inside_an_allowed_wildcard_is_enforced() {
    check(
        &policy(json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "access": "rwm"},
            {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "w"}
        ])),
        &[
            (C, 1, 3, R, true),
            (C, 1, 3, W, false),
            (C, 1, 3, R | W, false),
            (C, 1, 4, W, true),
        ],
    );
}

#[test]
fn type_a_in_the_middle() {
    // `a *:* rwm` allows everything again: the rules before it no longer matter.
    let p = policy(json!([
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": true, "type": "a", "access": "rwm"},
        {"allow": false, "type": "b", "major": 8, "minor": 0, "access": "w"}
    ]));
    assert!(p.default_allow);
    assert_eq!(p.rules.len(), 1);
    check(
        &p,
        &[
            (C, 1, 3, R, true),
            (C, 5, 5, R | W, true),
            (B, 8, 0, W, false),
            (B, 8, 0, R, true),
        ],
    );
    // `a` with a number is a rule for both types.
    check(
        &policy(json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "a", "major": 1, "access": "r"},
            {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "r"}
        ])),
        &[
            (C, 1, 3, R, false),
            (C, 1, 4, R, true),
            (B, 1, 0, R, true),
            (B, 1, 0, W, false),
            (B, 2, 0, R, false),
        ],
    );
    // `a *:* r` decides reading only.
    check(
        &policy(json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": false, "access": "r"}
        ])),
        &[
            (C, 1, 3, R, false),
            (C, 1, 3, W, true),
            (C, 1, 3, R | W, false),
            (B, 8, 0, W, false),
        ],
    );
}

#[test]
fn leading_rules_that_agree_with_the_default_are_dropped() {
    let p = policy(json!([
        {"allow": false, "access": "rwm"},
        {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
        {"allow": false, "type": "c", "major": 1, "minor": 5, "access": "w"}
    ]));
    assert_eq!(p.rules.len(), 2);
    check(
        &p,
        &[(C, 1, 3, R, false), (C, 1, 5, R, true), (C, 1, 5, W, false)],
    );
}

#[test]
fn no_rules_need_no_program() {
    assert_eq!(Policy::from_spec(&[]).unwrap(), None);
    // A rule with no access decides nothing.
    let p = policy(json!([{"allow": false, "type": "c", "access": ""}]));
    assert!(p.default_allow && p.rules.is_empty());
}

#[test]
fn rules_the_kernel_could_not_take_are_refused() {
    let err = |v| match Policy::from_spec(&rules(v)) {
        Err(Error::InvalidResource { setting, reason }) => format!("{setting}: {reason}"),
        other => panic!("expected an invalid resource, got {other:?}"),
    };
    let e = err(json!([{"allow": true}, {"allow": true, "type": "u", "access": "r"}]));
    assert!(e.starts_with("linux.resources.devices[1]: "), "{e}");
    assert!(e.contains("\"u\""), "{e}");
    assert!(err(json!([{"allow": true, "type": "c", "access": "rx"}])).contains("'x'"));
    assert!(
        err(json!([{"allow": true, "type": "c", "major": 4_294_967_296_i64}]))
            .contains("larger than 32 bits")
    );
}

#[test]
fn numbers_no_device_has_match_nothing() {
    // Linux majors have 12 bits; 2^31 cannot be compared as a jump immediate and names nothing.
    let p = policy(json!([
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 2_147_483_648_i64, "access": "rwm"},
        {"allow": true, "type": "c", "major": 2_147_483_647_i64, "access": "rwm"}
    ]));
    assert_eq!(p.rules.len(), 1);
    let prog = p.program().unwrap();
    check_shape(&prog);
    assert!(run(&prog, C, 2_147_483_647, 0, R));
    assert!(!run(&prog, C, 2_147_483_648, 0, R));
}

#[test]
fn long_rule_lists_jump_correctly_or_are_refused() {
    let many =
        |n: u32| {
            let mut v = vec![json!({"allow": false, "access": "rwm"})];
            v.extend((0..n).map(
                |i| json!({"allow": true, "type": "c", "major": i, "minor": 0, "access": "r"}),
            ));
            v.push(json!({"allow": false, "type": "c", "major": 0, "minor": 0, "access": "r"}));
            serde_json::Value::Array(v)
        };
    // The deny rule of the last spec entry comes first and jumps over every other rule. (The
    // kernel's verifier takes 2,000 such rules; `tests/root_host.rs` loads a list this long.)
    let p = policy(many(2000));
    let prog = p.program().unwrap();
    check_shape(&prog);
    assert!(!run(&prog, C, 0, 0, R));
    assert!(run(&prog, C, 1, 0, R));
    assert!(run(&prog, C, 1999, 0, R));
    assert!(!run(&prog, C, 1999, 0, W));
    assert!(!run(&prog, C, 2000, 0, R));
    match policy(many(10_000)).program() {
        Err(Error::InvalidResource { reason, .. }) => assert!(reason.contains("too many rules")),
        other => panic!("expected too many rules, got {other:?}"),
    }
}
