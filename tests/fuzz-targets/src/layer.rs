//! The layer applier target: `berth_archive::apply` on arbitrary tar streams, inside a sandbox
//! that shows any write outside the target.
//!
//! The first input byte chooses the options ([`Flags`]); the rest is the uncompressed layer.
//! Each run applies into `<sandbox>/target` (emptied first, optionally pre-filled with a
//! lower layer's files and symlinks that point out of it: `link-out -> ../outside`,
//! `abs-out -> <sandbox>/outside`, `root-link -> /`, `dotdot -> ..`). Beside it lie
//! `outside/`, `outside-file` and `lower/` (the `parents` directory, read but never written).
//! After the apply, everything in the sandbox but `target` must be exactly as before — same
//! names, inodes, link counts, modes, owners, sizes, contents, mtimes and ctimes (a hard link to
//! an outside file changes its link count and ctime, a chmod or xattr through a symlink its
//! ctime) —, the sandbox's parent must hold nothing new, and the absolute canaries the seeds aim
//! at (`/berth-fuzz-canary`, `/tmp/berth-fuzz-canary`) must not exist.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use berth_archive::{apply, ApplyOptions, IdMap, WhiteoutMode, XattrPrefix};

/// Absolute paths the seeds try to write; an escape would create them.
pub const CANARIES: &[&str] = &["/berth-fuzz-canary", "/tmp/berth-fuzz-canary"];

/// Sparse members expand to their declared size from a few bytes of input (zeros are written
/// for holes); a run skips inputs whose sparse members declare more than this in total, so one
/// input cannot fill the disk. See docs/reliability.md, "Fuzzing".
const MAX_SPARSE_EXPANSION: u64 = 4 << 20;

/// The options byte that starts every layer input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags(pub u8);

impl Flags {
    /// Bits 0–1: whiteouts. 0 and 3: delete; 1: overlay, `trusted.`; 2: overlay, `user.`.
    pub const OVERLAY_TRUSTED: u8 = 1;
    pub const OVERLAY_USER: u8 = 2;
    pub const ALLOW_DEVICES: u8 = 1 << 2;
    pub const NO_SAME_OWNER: u8 = 1 << 3;
    /// Owners shifted by 100000 (a user namespace's mapping).
    pub const ID_MAP: u8 = 1 << 4;
    /// A wrong `expected_diff_id`: a complete apply must end in a digest mismatch.
    pub const WRONG_DIFF_ID: u8 = 1 << 5;
    /// `lower/` as the parent layer (implied directories copy its metadata).
    pub const PARENTS: u8 = 1 << 6;
    /// The target starts with a lower layer's files and escaping symlinks.
    pub const PREFILL: u8 = 1 << 7;

    /// What a seed uses unless it is about options: delete whiteouts, devices allowed, a
    /// pre-filled target.
    pub const SEED: u8 = Self::ALLOW_DEVICES | Self::PREFILL;

    fn options(self, sandbox: &Path) -> ApplyOptions {
        let b = self.0;
        ApplyOptions {
            whiteouts: match b & 3 {
                Self::OVERLAY_TRUSTED => WhiteoutMode::Overlay {
                    xattr_prefix: XattrPrefix::Trusted,
                },
                Self::OVERLAY_USER => WhiteoutMode::Overlay {
                    xattr_prefix: XattrPrefix::User,
                },
                _ => WhiteoutMode::Delete,
            },
            allow_devices: b & Self::ALLOW_DEVICES != 0,
            no_same_owner: b & Self::NO_SAME_OWNER != 0,
            id_map: (b & Self::ID_MAP != 0).then_some(IdMap::Offset {
                uid: 100_000,
                gid: 100_000,
            }),
            expected_diff_id: (b & Self::WRONG_DIFF_ID != 0).then(|| format!("sha256:{:064}", 0)),
            parents: if b & Self::PARENTS != 0 {
                vec![sandbox.join("lower")]
            } else {
                Vec::new()
            },
            sync: false,
        }
    }
}

/// Applies `data[1..]` as a layer with the options `data[0]` selects, and checks that nothing
/// outside the target changed. Panics only when that property breaks (or when Berth panics).
pub fn layer_apply(data: &[u8]) {
    let Some((&flags, layer)) = data.split_first() else {
        return;
    };
    if sparse_expansion(layer) > MAX_SPARSE_EXPANSION {
        return;
    }
    SANDBOX.with(|s| {
        let mut s = s.borrow_mut();
        let sandbox = match s.as_mut() {
            Some(sb) => sb,
            // The harness cannot run without its sandbox: this must not fail.
            None => s.insert(Sandbox::new().expect("creating the fuzz sandbox")),
        };
        sandbox.run(Flags(flags), layer);
    });
}

/// The bytes the layer's GNU sparse members expand to, as the `tar` crate the applier uses
/// reads them (it stops where the applier's read stops: the first error or end marker).
fn sparse_expansion(layer: &[u8]) -> u64 {
    let mut archive = tar::Archive::new(layer);
    let Ok(entries) = archive.entries() else {
        return 0;
    };
    let mut total = 0u64;
    for entry in entries {
        let Ok(entry) = entry else { break };
        if entry.header().entry_type().is_gnu_sparse() {
            total = total.saturating_add(entry.size());
        }
    }
    total
}

thread_local! {
    static SANDBOX: RefCell<Option<Sandbox>> = const { RefCell::new(None) };
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// What the walk records of one path outside the target.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stat {
    ino: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    /// File contents or symlink target.
    content: Vec<u8>,
}

struct Sandbox {
    /// Holds `sandbox` and nothing else.
    base: PathBuf,
    sandbox: PathBuf,
    target: PathBuf,
    before: BTreeMap<PathBuf, Stat>,
    /// Names for directories hoisted while emptying the target.
    trash: u64,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = empty_dir(&self.target, &mut self.trash);
        let _ = fs::remove_dir_all(&self.base);
    }
}

impl Sandbox {
    fn new() -> io::Result<Self> {
        let base = scratch_dir().join(format!(
            "berth-fuzz-layer-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        if base.exists() {
            fs::remove_dir_all(&base)?;
        }
        let sandbox = base.join("sandbox");
        let target = sandbox.join("target");
        fs::create_dir_all(&target)?;
        let outside = sandbox.join("outside");
        fs::create_dir_all(outside.join("dir"))?;
        fs::write(outside.join("file"), b"outside\n")?;
        fs::write(outside.join("dir/file"), b"outside dir\n")?;
        symlink("file", outside.join("link"))?;
        symlink("../target", outside.join("to-target"))?;
        fs::write(sandbox.join("outside-file"), b"outside file\n")?;
        let lower = sandbox.join("lower");
        fs::create_dir_all(lower.join("etc"))?;
        fs::create_dir_all(lower.join("dir/sub"))?;
        fs::set_permissions(lower.join("etc"), fs::Permissions::from_mode(0o750))?;
        fs::write(lower.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n")?;
        symlink("../outside", lower.join("link-out"))?;
        let before = snapshot(&sandbox)?;
        Ok(Sandbox {
            base,
            sandbox,
            target,
            before,
            trash: 0,
        })
    }

    fn run(&mut self, flags: Flags, layer: &[u8]) {
        self.reset(flags)
            .unwrap_or_else(|e| panic!("resetting {}: {e}", self.target.display()));
        let opts = flags.options(&self.sandbox);
        let result = apply(layer, &self.target, &opts);
        if let Err(e) = &result {
            // A typed error that renders (and says what it is about).
            assert!(!e.to_string().is_empty());
        }
        if flags.0 & Flags::WRONG_DIFF_ID != 0 {
            assert!(result.is_err(), "a wrong expected diff_id was accepted");
        }
        self.check(layer, &result);
    }

    /// Empties the target and, when asked, fills it like a lower layer.
    fn reset(&mut self, flags: Flags) -> io::Result<()> {
        fs::set_permissions(&self.target, fs::Permissions::from_mode(0o755))?;
        empty_dir(&self.target, &mut self.trash)?;
        if flags.0 & Flags::PREFILL == 0 {
            return Ok(());
        }
        let t = &self.target;
        fs::create_dir_all(t.join("etc"))?;
        fs::create_dir_all(t.join("dir/sub"))?;
        fs::write(t.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n")?;
        fs::write(t.join("dir/sub/file"), b"lower\n")?;
        fs::write(t.join("hard"), b"hard\n")?;
        fs::hard_link(t.join("hard"), t.join("hard2"))?;
        symlink("../outside", t.join("link-out"))?;
        symlink(self.sandbox.join("outside"), t.join("abs-out"))?;
        symlink("/", t.join("root-link"))?;
        symlink("..", t.join("dotdot"))?;
        symlink("../outside-file", t.join("file-out"))?;
        Ok(())
    }

    fn check(&self, layer: &[u8], result: &dyn std::fmt::Debug) {
        let fail = |what: String| -> ! {
            panic!(
                "layer escaped its target: {what}\napply returned {result:?}\nlayer: {} bytes",
                layer.len()
            )
        };
        let after = match snapshot(&self.sandbox) {
            Ok(a) => a,
            Err(e) => fail(format!("walking the sandbox failed: {e}")),
        };
        if after != self.before {
            let mut diffs = Vec::new();
            for (p, s) in &self.before {
                match after.get(p) {
                    None => diffs.push(format!("{} removed", p.display())),
                    Some(a) if a != s => {
                        diffs.push(format!("{} changed: {s:?} -> {a:?}", p.display()))
                    }
                    _ => {}
                }
            }
            for p in after.keys().filter(|p| !self.before.contains_key(*p)) {
                diffs.push(format!("{} created", p.display()));
            }
            fail(diffs.join("; "));
        }
        match fs::read_dir(&self.base) {
            Ok(rd) => {
                let names: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
                if names != ["sandbox"] {
                    fail(format!("{} now holds {names:?}", self.base.display()));
                }
            }
            Err(e) => fail(format!("listing {}: {e}", self.base.display())),
        }
        for c in CANARIES {
            if fs::symlink_metadata(c).is_ok() {
                fail(format!("{c} exists"));
            }
        }
        // The target itself must still be a directory (never replaced by a link).
        match fs::symlink_metadata(&self.target) {
            Ok(m) if m.is_dir() => {}
            other => fail(format!("target is now {other:?}")),
        }
    }
}

/// Where sandboxes go: `BERTH_FUZZ_TMPDIR`, else `/dev/shm` when writable (tmpfs: deep trees
/// cost microseconds there, milliseconds on a journaled disk), else the temporary directory.
fn scratch_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BERTH_FUZZ_TMPDIR") {
        return PathBuf::from(d);
    }
    let shm = Path::new("/dev/shm");
    let probe = shm.join(format!(".berth-fuzz-probe-{}", std::process::id()));
    if fs::create_dir(&probe).is_ok() && fs::remove_dir(&probe).is_ok() {
        return shm.to_path_buf();
    }
    std::env::temp_dir()
}

/// Every path under `root` but `root/target`, with what it holds.
fn snapshot(root: &Path) -> io::Result<BTreeMap<PathBuf, Stat>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let path = root.join(&rel);
        let m = fs::symlink_metadata(&path)?;
        let content = if m.file_type().is_symlink() {
            use std::os::unix::ffi::OsStrExt;
            fs::read_link(&path)?.as_os_str().as_bytes().to_vec()
        } else if m.is_file() {
            fs::read(&path)?
        } else {
            Vec::new()
        };
        if m.is_dir() {
            for e in fs::read_dir(&path)? {
                let child = rel.join(e?.file_name());
                if child != Path::new("target") {
                    todo.push(child);
                }
            }
        }
        out.insert(
            rel,
            Stat {
                ino: m.ino(),
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                nlink: m.nlink(),
                size: m.size(),
                mtime: (m.mtime(), m.mtime_nsec()),
                ctime: (m.ctime(), m.ctime_nsec()),
                content,
            },
        );
    }
    Ok(out)
}

/// Removes everything in `dir`, however deep (deeper than `PATH_MAX`) and whatever the modes:
/// each directory met one level down has its subdirectories hoisted up to `dir` under fresh
/// names, so no path used is longer than two names.
fn empty_dir(dir: &Path, trash: &mut u64) -> io::Result<()> {
    loop {
        let names: Vec<_> = fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        if names.is_empty() {
            return Ok(());
        }
        for name in names {
            let p = dir.join(&name);
            let m = fs::symlink_metadata(&p)?;
            if !m.is_dir() {
                fs::remove_file(&p)?;
                continue;
            }
            // A directory (lstat says so and nothing else runs), so chmod does not follow a link.
            fs::set_permissions(&p, fs::Permissions::from_mode(0o700))?;
            for e in fs::read_dir(&p)? {
                let e = e?;
                let child = e.path();
                if e.file_type()?.is_dir() {
                    hoist(&child, dir, trash)?;
                } else {
                    fs::remove_file(&child)?;
                }
            }
            fs::remove_dir(&p)?;
        }
    }
}

/// Moves directory `child` to a fresh name in `dir` (the layer may have used some names).
fn hoist(child: &Path, dir: &Path, trash: &mut u64) -> io::Result<()> {
    loop {
        *trash += 1;
        let to = dir.join(format!(".berth-fuzz-trash-{trash}"));
        if fs::symlink_metadata(&to).is_ok() {
            continue;
        }
        return fs::rename(child, to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox() -> Sandbox {
        let mut sb = Sandbox::new().unwrap();
        sb.reset(Flags(Flags::PREFILL)).unwrap();
        sb
    }

    #[test]
    fn an_untouched_sandbox_passes() {
        let sb = sandbox();
        fs::write(sb.target.join("inside"), b"fine").unwrap();
        sb.check(b"", &"ok");
    }

    #[test]
    #[should_panic(expected = "outside/file changed")]
    fn a_write_outside_is_seen() {
        let sb = sandbox();
        fs::write(sb.sandbox.join("outside/file"), b"pwned").unwrap();
        sb.check(b"", &"ok");
    }

    #[test]
    #[should_panic(expected = "outside/file changed")]
    fn a_hard_link_to_outside_is_seen() {
        let sb = sandbox();
        fs::hard_link(sb.sandbox.join("outside/file"), sb.target.join("h")).unwrap();
        sb.check(b"", &"ok");
    }

    #[test]
    #[should_panic(expected = "outside/pwned created")]
    fn a_new_file_outside_is_seen() {
        let sb = sandbox();
        fs::write(sb.target.join("link-out/pwned"), b"through the link").unwrap();
        sb.check(b"", &"ok");
    }

    #[test]
    #[should_panic(expected = "now holds")]
    fn a_file_beside_the_sandbox_is_seen() {
        let sb = sandbox();
        fs::write(sb.base.join("pwned"), b"").unwrap();
        sb.check(b"", &"ok");
    }

    #[test]
    fn the_target_empties_however_deep_and_locked() {
        let mut sb = sandbox();
        let mut p = sb.target.clone();
        for _ in 0..50 {
            p.push("d");
        }
        fs::create_dir_all(&p).unwrap();
        fs::write(p.join("f"), b"").unwrap();
        fs::set_permissions(sb.target.join("d/d"), fs::Permissions::from_mode(0o000)).unwrap();
        sb.reset(Flags(0)).unwrap();
        assert_eq!(fs::read_dir(&sb.target).unwrap().count(), 0);
    }

    #[test]
    fn huge_sparse_members_are_measured() {
        let seeds = crate::seeds::layer();
        let get = |n: &str| &seeds.iter().find(|(name, _)| name == n).unwrap().1[1..];
        assert_eq!(sparse_expansion(get("sparse")), 4096 + 512);
        assert!(sparse_expansion(get("sparse-huge")) > MAX_SPARSE_EXPANSION);
    }
}
