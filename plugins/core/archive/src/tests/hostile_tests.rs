//! Hostile layers. Each must be refused with an error naming the offending entry, or be applied
//! entirely inside the target; in every case a sentinel directory beside the target (and the
//! host's /etc/passwd) must come out byte-for-byte unchanged.

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use super::*;
use crate::{apply, ApplyOptions, WhiteoutMode, XattrPrefix};

type Build = fn(&Env) -> Vec<E>;
type Check = fn(&Env);

enum Expect {
    /// Refused, and the error names this entry.
    Rejected(&'static str),
    /// Applied, with everything inside the target; the check looks at where it went.
    Contained(Check),
}

struct Case {
    name: &'static str,
    build: Build,
    expect: Expect,
    /// Whiteout cases whose outcome differs by mode run in Delete mode only.
    modes: &'static [Mode],
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Delete,
    Overlay,
}

const BOTH: &[Mode] = &[Mode::Delete, Mode::Overlay];
const DELETE: &[Mode] = &[Mode::Delete];
const OVERLAY: &[Mode] = &[Mode::Overlay];

fn read(env: &Env, rel: &str) -> Vec<u8> {
    std::fs::read(env.target.join(rel.trim_start_matches('/'))).unwrap()
}

fn lmd(env: &Env, rel: &str) -> std::fs::Metadata {
    std::fs::symlink_metadata(env.target.join(rel.trim_start_matches('/'))).unwrap()
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "dotdot file",
            build: |_| vec![E::file("../sentinel/secret", "pwned")],
            expect: Expect::Rejected("../sentinel/secret"),
            modes: BOTH,
        },
        Case {
            name: "nested dotdot escaping",
            build: |_| vec![E::file("a/b/../../../sentinel/evil", "x")],
            expect: Expect::Rejected("a/b/../../../sentinel/evil"),
            modes: BOTH,
        },
        Case {
            name: "dotdot directory",
            build: |_| vec![E::dir("../sentinel/newdir/").mode(0o777)],
            expect: Expect::Rejected("../sentinel/newdir/"),
            modes: BOTH,
        },
        Case {
            name: "dotdot in a GNU long name",
            build: |_| vec![E::file(format!("../{}", "z".repeat(150)), "x").gnu_long()],
            expect: Expect::Rejected("../zzzz"),
            modes: BOTH,
        },
        Case {
            name: "PAX path overriding an innocent header name",
            build: |_| vec![E::file("innocent", "x").pax("path", "../sentinel/secret")],
            expect: Expect::Rejected("../sentinel/secret"),
            modes: BOTH,
        },
        Case {
            name: "absolute name is taken relative to the target",
            build: |_| vec![E::file("/abs/evil", "contained")],
            expect: Expect::Contained(|env| assert_eq!(read(env, "abs/evil"), b"contained")),
            modes: BOTH,
        },
        Case {
            name: "absolute name of the sentinel itself",
            build: |env| vec![E::file(format!("{}/secret", env.sentinel_abs()), "pwned")],
            expect: Expect::Contained(|env| {
                assert_eq!(
                    read(env, &format!("{}/secret", env.sentinel_abs())),
                    b"pwned"
                )
            }),
            modes: BOTH,
        },
        Case {
            name: "symlink to an absolute outside dir, then a write through it",
            build: |env| {
                vec![
                    E::symlink("a", env.sentinel_abs()).owner(1000, 1000),
                    E::file("a/secret", "pwned").mode(0o777).owner(1000, 1000),
                    E::dir("a/sub/").mode(0o777),
                ]
            },
            expect: Expect::Contained(|env| {
                assert!(lmd(env, "a").file_type().is_symlink());
                assert_eq!(
                    read(env, &format!("{}/secret", env.sentinel_abs())),
                    b"pwned"
                );
            }),
            modes: BOTH,
        },
        Case {
            name: "relative symlink climbing out, then a write through it",
            build: |_| {
                vec![
                    E::symlink("up", "../sentinel"),
                    E::file("up/secret", "pwned"),
                ]
            },
            expect: Expect::Contained(|env| assert_eq!(read(env, "sentinel/secret"), b"pwned")),
            modes: BOTH,
        },
        Case {
            name: "symlink with many .. then the sentinel's absolute path below it",
            build: |env| {
                vec![
                    E::symlink("rel", "../../../../../../../../../.."),
                    E::file(format!("rel{}/secret", env.sentinel_abs()), "pwned"),
                ]
            },
            expect: Expect::Contained(|env| {
                assert_eq!(
                    read(env, &format!("{}/secret", env.sentinel_abs())),
                    b"pwned"
                )
            }),
            modes: BOTH,
        },
        Case {
            name: "chain of symlinks leading out",
            build: |_| {
                vec![
                    E::symlink("l1", "l2"),
                    E::symlink("l2", "./x/../../sentinel"),
                    E::file("l1/secret", "pwned"),
                ]
            },
            expect: Expect::Contained(|env| assert_eq!(read(env, "sentinel/secret"), b"pwned")),
            modes: BOTH,
        },
        Case {
            name: "symlink loop",
            build: |_| {
                vec![
                    E::symlink("l1", "l2"),
                    E::symlink("l2", "l1"),
                    E::file("l1/x", "x"),
                ]
            },
            expect: Expect::Rejected("l1/x"),
            modes: BOTH,
        },
        Case {
            name: "directory replaced by a symlink, then written through",
            build: |_| {
                vec![
                    E::dir("d/"),
                    E::file("d/f", "1"),
                    E::symlink("d", "../sentinel"),
                    E::file("d/secret", "pwned"),
                    E::file("d/sub/file", "pwned"),
                ]
            },
            expect: Expect::Contained(|env| {
                assert!(lmd(env, "d").file_type().is_symlink());
                assert_eq!(read(env, "sentinel/secret"), b"pwned");
                assert_eq!(read(env, "sentinel/sub/file"), b"pwned");
            }),
            modes: BOTH,
        },
        Case {
            name: "an existing symlink at the entry's own name is replaced, not followed",
            build: |_| {
                vec![
                    E::symlink("ln", "../sentinel/secret"),
                    E::file("ln", "pwned").mode(0o4777),
                    E::symlink("ln2", "../sentinel"),
                    E::dir("ln2/").mode(0o777).owner(1000, 1000),
                    E::symlink("ln3", "../sentinel/passwd"),
                    E::fifo("ln3"),
                ]
            },
            expect: Expect::Contained(|env| {
                assert!(lmd(env, "ln").is_file());
                assert_eq!(read(env, "ln"), b"pwned");
                assert!(lmd(env, "ln2").is_dir());
                assert!(lmd(env, "ln3").file_type().is_fifo());
            }),
            modes: BOTH,
        },
        Case {
            name: "symlink metadata is set on the link, not its target",
            build: |_| {
                vec![E::symlink("s", "../sentinel/secret")
                    .owner(1234, 1234)
                    .mtime(1)
                    .xattr("user.evil", "1")
                    .xattr("trusted.evil", "1")]
            },
            expect: Expect::Contained(|env| {
                let m = lmd(env, "s");
                assert_eq!((m.uid(), m.gid(), m.mtime()), (1234, 1234, 1));
            }),
            modes: BOTH,
        },
        Case {
            name: "hard link to an absolute outside file",
            build: |env| vec![E::hardlink("pw", format!("{}/passwd", env.sentinel_abs()))],
            expect: Expect::Rejected("pw"),
            modes: BOTH,
        },
        Case {
            name: "hard link to /etc/passwd",
            build: |_| vec![E::hardlink("pw", "/etc/passwd")],
            expect: Expect::Rejected("pw"),
            modes: BOTH,
        },
        Case {
            name: "hard link with .. out of the target",
            build: |_| vec![E::hardlink("pw", "../sentinel/passwd")],
            expect: Expect::Rejected("pw"),
            modes: BOTH,
        },
        Case {
            name: "hard link with a PAX linkpath out of the target",
            build: |_| vec![E::hardlink("pw", "innocent").pax("linkpath", "../sentinel/passwd")],
            expect: Expect::Rejected("pw"),
            modes: BOTH,
        },
        Case {
            name: "hard link through an absolute symlinked directory",
            build: |env| {
                vec![
                    E::symlink("s", env.sentinel_abs()),
                    E::hardlink("x", "s/secret"),
                ]
            },
            expect: Expect::Rejected("x"),
            modes: BOTH,
        },
        Case {
            name: "hard link through a relative symlinked directory",
            build: |_| vec![E::symlink("s", "../sentinel"), E::hardlink("x", "s/secret")],
            expect: Expect::Rejected("x"),
            modes: BOTH,
        },
        Case {
            name: "hard link to a symlink links the symlink itself",
            build: |_| vec![E::symlink("s", "../sentinel/secret"), E::hardlink("h", "s")],
            expect: Expect::Contained(|env| {
                assert!(lmd(env, "h").file_type().is_symlink());
                assert_eq!(lmd(env, "h").ino(), lmd(env, "s").ino());
            }),
            modes: BOTH,
        },
        Case {
            name: "hard link entry over an existing symlink",
            build: |_| {
                vec![
                    E::file("real", "r"),
                    E::symlink("ln", "../sentinel/secret"),
                    E::hardlink("ln", "real"),
                ]
            },
            expect: Expect::Contained(|env| {
                assert_eq!(lmd(env, "ln").ino(), lmd(env, "real").ino());
                assert_eq!(read(env, "ln"), b"r");
            }),
            modes: BOTH,
        },
        Case {
            name: "hard link to a directory",
            build: |_| vec![E::dir("d/"), E::hardlink("h", "d")],
            expect: Expect::Rejected("h"),
            modes: BOTH,
        },
        Case {
            name: "character device when devices are not allowed",
            build: |_| vec![E::char_dev("dev/mem", 1, 1)],
            expect: Expect::Rejected("dev/mem"),
            modes: BOTH,
        },
        Case {
            name: "block device when devices are not allowed",
            build: |_| vec![E::block_dev("dev/sda", 8, 0)],
            expect: Expect::Rejected("dev/sda"),
            modes: BOTH,
        },
        Case {
            name: "name longer than PATH_MAX",
            build: |_| vec![E::file("a/".repeat(2500), "x")],
            expect: Expect::Rejected("a/a/a/a/"),
            modes: BOTH,
        },
        Case {
            name: "component longer than NAME_MAX",
            build: |_| vec![E::file("b".repeat(300), "x")],
            expect: Expect::Rejected("bbbbbbbb"),
            modes: BOTH,
        },
        Case {
            name: "parent is a regular file",
            build: |_| vec![E::file("f", "x"), E::file("f/x", "y")],
            expect: Expect::Rejected("f/x"),
            modes: BOTH,
        },
        Case {
            name: "members naming the root are ignored",
            build: |_| {
                vec![
                    E::dir("./").mode(0o777),
                    E::dir("/").mode(0o777),
                    E::file(".", ""),
                ]
            },
            expect: Expect::Contained(|env| {
                assert_ne!(lmd(env, "").mode() & 0o777, 0o777);
            }),
            modes: BOTH,
        },
        Case {
            name: "whiteout with .. out of the target",
            build: |_| vec![E::file("../sentinel/.wh.secret", "")],
            expect: Expect::Rejected("../sentinel/.wh.secret"),
            modes: BOTH,
        },
        Case {
            name: "whiteout through an absolute symlinked directory",
            build: |env| {
                vec![
                    E::symlink("w", env.sentinel_abs()),
                    E::file("w/.wh.secret", ""),
                ]
            },
            expect: Expect::Contained(|_| {}),
            modes: BOTH,
        },
        Case {
            name: "whiteout through a relative symlinked directory",
            build: |_| vec![E::symlink("w", "../sentinel"), E::file("w/.wh.passwd", "")],
            expect: Expect::Contained(|_| {}),
            modes: BOTH,
        },
        Case {
            name: "opaque marker through a symlinked directory",
            build: |_| {
                vec![
                    E::dir("d/"),
                    E::symlink("d", "../sentinel"),
                    E::file("d/.wh..wh..opq", ""),
                ]
            },
            expect: Expect::Contained(|env| assert!(lmd(env, "sentinel").is_dir())),
            modes: BOTH,
        },
        Case {
            name: "whiteout of the link itself removes only the link",
            build: |_| vec![E::symlink("w", "../sentinel"), E::file(".wh.w", "")],
            expect: Expect::Contained(|env| {
                assert!(std::fs::symlink_metadata(env.target.join("w")).is_err())
            }),
            modes: DELETE,
        },
        Case {
            name: "overlay whiteout device lands inside the target",
            build: |_| vec![E::symlink("w", "../sentinel"), E::file("w/.wh.secret", "")],
            expect: Expect::Contained(|env| {
                assert!(lmd(env, "sentinel/secret").file_type().is_char_device())
            }),
            modes: OVERLAY,
        },
    ]
}

#[test]
fn hostile_layers_are_rejected_or_contained() {
    require_root();
    let host_passwd = std::fs::metadata("/etc/passwd")
        .ok()
        .map(|m| (m.ino(), m.nlink(), m.mtime()));
    let mut ran = 0;
    for case in cases() {
        for mode in case.modes {
            let env = Env::new();
            let entries = (case.build)(&env);
            let layer = tar(&entries);
            let opts = ApplyOptions {
                whiteouts: match mode {
                    Mode::Delete => WhiteoutMode::Delete,
                    Mode::Overlay => WhiteoutMode::Overlay {
                        xattr_prefix: XattrPrefix::Trusted,
                    },
                },
                ..Default::default()
            };
            let label = format!("{} ({mode:?})", case.name);
            let result = apply(layer.as_slice(), &env.target, &opts);
            match (&case.expect, result) {
                (Expect::Rejected(entry), Err(e)) => {
                    let msg = e.to_string();
                    assert!(
                        msg.starts_with(&format!("entry \"{entry}")),
                        "{label}: error should name entry {entry:?}: {msg}"
                    );
                }
                (Expect::Rejected(_), Ok(stats)) => {
                    panic!("{label}: should have been refused, applied: {stats:?}")
                }
                (Expect::Contained(check), Ok(_)) => check(&env),
                (Expect::Contained(_), Err(e)) => panic!("{label}: should have applied: {e}"),
            }
            env.assert_sentinel_intact(&label);
            let now = std::fs::metadata("/etc/passwd")
                .ok()
                .map(|m| (m.ino(), m.nlink(), m.mtime()));
            assert_eq!(now, host_passwd, "{label}: /etc/passwd changed");
            ran += 1;
        }
    }
    assert!(ran >= 60, "ran {ran} hostile applications");
}

#[test]
fn devices_allowed_only_with_the_option() {
    require_root();
    let env = Env::new();
    let layer = tar(&[E::char_dev("dev/null", 1, 3)]);
    let err = apply(layer.as_slice(), &env.target, &ApplyOptions::default()).unwrap_err();
    assert!(err.to_string().contains("entry \"dev/null\""), "{err}");
    assert!(err.to_string().contains("allow_devices"), "{err}");
    assert!(!env.target.join("dev/null").exists());
    let opts = ApplyOptions {
        allow_devices: true,
        ..Default::default()
    };
    apply(layer.as_slice(), &env.target, &opts).unwrap();
    assert!(lmd(&env, "dev/null").file_type().is_char_device());
}
