//! Tree comparison: what a mount must look like, entry by entry, against a flat directory.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::path::PathBuf;

use crate::xattrs::list_xattrs;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Content {
    Dir,
    File(Vec<u8>),
    Symlink(PathBuf),
    Special { kind: &'static str, rdev: u64 },
}

impl Content {
    fn kind(&self) -> &'static str {
        match self {
            Content::Dir => "directory",
            Content::File(_) => "file",
            Content::Symlink(_) => "symlink",
            Content::Special { kind, .. } => kind,
        }
    }
}

#[derive(Debug, Clone)]
struct Node {
    content: Content,
    mode: u32,
    uid: u32,
    gid: u32,
    xattrs: BTreeMap<String, Vec<u8>>,
    ino: u64,
}

/// Every entry under `root` (not `root` itself), keyed by `/relative/path`.
fn scan_tree(root: &Path) -> io::Result<BTreeMap<String, Node>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let rel_path = format!("{rel}/{}", entry.file_name().to_string_lossy());
            let meta = fs::symlink_metadata(&path)?;
            let ft = meta.file_type();
            let content = if ft.is_dir() {
                stack.push((path.clone(), rel_path.clone()));
                Content::Dir
            } else if ft.is_file() {
                Content::File(fs::read(&path)?)
            } else if ft.is_symlink() {
                Content::Symlink(fs::read_link(&path)?)
            } else {
                let kind = if ft.is_char_device() {
                    "char device"
                } else if ft.is_block_device() {
                    "block device"
                } else if ft.is_fifo() {
                    "fifo"
                } else {
                    "socket"
                };
                Content::Special {
                    kind,
                    rdev: meta.rdev(),
                }
            };
            let node = Node {
                content,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                xattrs: list_xattrs(&path)?,
                ino: meta.ino(),
            };
            out.insert(rel_path, node);
        }
    }
    Ok(out)
}

/// Groups of paths sharing an inode (hardlinks), for non-directories.
fn link_groups(tree: &BTreeMap<String, Node>) -> BTreeSet<Vec<String>> {
    let mut by_ino: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (path, node) in tree {
        if node.content != Content::Dir {
            by_ino.entry(node.ino).or_default().push(path.clone());
        }
    }
    by_ino.into_values().filter(|g| g.len() > 1).collect()
}

fn show_bytes(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) if s.len() <= 80 => format!("{s:?}"),
        _ => format!("<{} bytes>", b.len()),
    }
}

fn show_xattrs(x: &BTreeMap<String, Vec<u8>>) -> String {
    let parts: Vec<String> = x
        .iter()
        .map(|(k, v)| format!("{k}={}", show_bytes(v)))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// How the tree at `actual` differs from the tree at `expected` (empty when they match). The
/// roots themselves are not compared; nlink is not compared either (a whiteout over one name of
/// a lower hardlink cannot lower the other's count), hardlink groups are.
pub fn tree_differences(expected: &Path, actual: &Path) -> io::Result<Vec<String>> {
    let want = scan_tree(expected)?;
    let got = scan_tree(actual)?;
    let mut diffs = Vec::new();
    for (path, w) in &want {
        let Some(g) = got.get(path) else {
            diffs.push(format!("{path}: missing (expected a {})", w.content.kind()));
            continue;
        };
        if w.content.kind() != g.content.kind() {
            diffs.push(format!(
                "{path}: is a {}, expected a {}",
                g.content.kind(),
                w.content.kind()
            ));
            continue;
        }
        match (&w.content, &g.content) {
            (Content::File(a), Content::File(b)) if a != b => diffs.push(format!(
                "{path}: content {}, expected {}",
                show_bytes(b),
                show_bytes(a)
            )),
            (Content::Symlink(a), Content::Symlink(b)) if a != b => diffs.push(format!(
                "{path}: symlink to {}, expected to {}",
                b.display(),
                a.display()
            )),
            (Content::Special { rdev: a, .. }, Content::Special { rdev: b, .. }) if a != b => {
                diffs.push(format!("{path}: device {b:#x}, expected {a:#x}"))
            }
            _ => {}
        }
        if w.mode != g.mode {
            diffs.push(format!(
                "{path}: mode {:04o}, expected {:04o}",
                g.mode, w.mode
            ));
        }
        if (w.uid, w.gid) != (g.uid, g.gid) {
            diffs.push(format!(
                "{path}: owner {}:{}, expected {}:{}",
                g.uid, g.gid, w.uid, w.gid
            ));
        }
        if w.xattrs != g.xattrs {
            diffs.push(format!(
                "{path}: xattrs {}, expected {}",
                show_xattrs(&g.xattrs),
                show_xattrs(&w.xattrs)
            ));
        }
    }
    for (path, g) in &got {
        if !want.contains_key(path) {
            diffs.push(format!("{path}: unexpected {}", g.content.kind()));
        }
    }
    let (wl, gl) = (link_groups(&want), link_groups(&got));
    if wl != gl {
        diffs.push(format!("hardlink groups {gl:?}, expected {wl:?}"));
    }
    Ok(diffs)
}

/// Panics, listing every difference, unless the tree at `actual` matches the one at `expected`.
#[track_caller]
pub fn assert_same_tree(expected: &Path, actual: &Path, context: &str) {
    let diffs = tree_differences(expected, actual)
        .unwrap_or_else(|e| panic!("{context}: cannot compare trees: {e}"));
    if !diffs.is_empty() {
        panic!(
            "{context}: the mount differs from the expected tree in {} place(s):\n  {}",
            diffs.len(),
            diffs.join("\n  ")
        );
    }
}
