//! The snapshotter conformance suite every Berth storage driver runs, as a dev-dependency.
//!
//! It holds containerd's snapshot test-suite cases (`core/snapshots/testsuite`, same scenarios
//! and expectations) and Berth's own: deep chains, hardlinks, xattrs, concurrency, crash recovery
//! and error codes. The cases live in [`cases`], one module per topic (basics, chains, file
//! metadata, views, labels, removal, walk, deep chains, concurrency, crash recovery, error
//! codes), and are re-exported here.
//!
//! Every case is a `pub fn case(make: &MakeSnapshotter)`. It creates a fresh temporary root,
//! builds the driver with `make(root)`, runs one scenario and panics saying what deviated. Cases
//! that mount need root and panic when run without it; they never skip silently.
//!
//! File trees are written with [`Op`] lists (containerd's fstest "appliers", [`ops`]). Each
//! change goes both to a snapshot's mount and to a plain "flat" directory. The mount must then
//! look exactly like the flat directory ([`assert_same_tree`]): same entries, types, contents,
//! modes, owners, symlink targets, `user.*`/`trusted.*` xattrs and hardlink groups.
//!
//! A driver runs the suite from its own tests, in a module of its own (each case becomes a
//! `#[test]` of that name):
//!
//! ```ignore
//! #[cfg(test)]
//! mod conformance {
//!     fn make(root: &std::path::Path) -> Box<dyn berth_snapshotter::Snapshotter> {
//!         Box::new(crate::OverlaySnapshotter::new(root).expect("open overlay snapshotter"))
//!     }
//!     // Every case every driver must pass. `Quirks` is optional (default: all true).
//!     berth_snapshotter_testsuite::conformance_tests!(make, berth_snapshotter_testsuite::Quirks {
//!         rename_lower_dirs: false,
//!         ..Default::default()
//!     });
//!     // Cases only some drivers run, with their arguments if they take any.
//!     berth_snapshotter_testsuite::conformance_extra_tests!(make; deep_chain_500, deep_chain(200));
//! }
//! ```

use std::path::{Path, PathBuf};

use berth_snapshotter::Snapshotter;

/// Builds the driver under test on the given root directory.
pub type MakeSnapshotter = dyn Fn(&Path) -> Box<dyn Snapshotter>;

/// The label containerd's suite puts on every snapshot (to keep it from garbage collection).
pub const GC_ROOT: &str = "containerd.io/gc.root";

/// How a driver legitimately differs from the default expectations.
#[derive(Debug, Clone, Copy)]
pub struct Quirks {
    /// Whether a directory that comes from a lower layer can be renamed. overlayfs without
    /// `redirect_dir` answers EXDEV, and containerd's suite skips that step for overlayfs too.
    pub rename_lower_dirs: bool,
    /// The directory holding one entry per snapshot, where `cleanup` removes entries that have
    /// no metadata record (`<root>/snapshots` for native and overlayfs).
    pub snapshots_dir: fn(&Path) -> PathBuf,
}

impl Default for Quirks {
    fn default() -> Self {
        Quirks {
            rename_lower_dirs: true,
            snapshots_dir: default_snapshots_dir,
        }
    }
}

/// `<root>/snapshots`, where native and overlayfs keep `<id>/` per snapshot.
pub fn default_snapshots_dir(root: &Path) -> PathBuf {
    root.join("snapshots")
}

/// Expands to one `#[test] fn` per conformance case that every driver must pass.
///
/// `conformance_tests!(make)` or `conformance_tests!(make, quirks)`, where `make` is a function
/// or closure `Fn(&Path) -> Box<dyn Snapshotter>` and `quirks` a
/// [`Quirks`](crate::Quirks). Invoke it inside a module of its own.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!($make, $crate::Quirks::default());
    };
    ($make:expr, $quirks:expr) => {
        $crate::conformance_extra_tests!($make;
            basic,
            stat_active,
            stat_committed,
            transitivity,
            prepare_view_failing,
            update,
            remove,
            walk,
            layer_file_update,
            remove_directory_in_lower_layer,
            chown,
            directory_permission_on_commit,
            remove_intermediate_snapshot,
            deleted_files_in_child_snapshot,
            move_file_from_lower_layer,
            view_readonly,
            stat_in_walk,
            close_twice,
            root_permission,
            layers_128_mount,
            hardlinks_across_layers,
            xattrs,
            concurrent_prepare_commit,
            error_codes,
            commit_labels,
        );
        #[test]
        fn rename() {
            let quirks: $crate::Quirks = $quirks;
            $crate::rename_with(&$make, quirks.rename_lower_dirs)
        }
        #[test]
        fn crash_recovery() {
            let quirks: $crate::Quirks = $quirks;
            $crate::crash_recovery_in(&$make, quirks.snapshots_dir)
        }
    };
}

/// Expands to one `#[test] fn` per named case, for cases only some drivers run:
/// `conformance_extra_tests!(make; deep_chain_500, deep_chain(200))`. A case's extra arguments
/// follow in parentheses; the test is named after the case.
#[macro_export]
macro_rules! conformance_extra_tests {
    ($make:expr; $($case:ident $(( $($arg:expr),* $(,)? ))?),+ $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::$case(&$make $($(, $arg)*)?)
            }
        )+
    };
}

/// Asserts that `$result` is `Err(SnapshotError::$variant(_))`; the rest is a format! message
/// naming the operation.
macro_rules! expect_err {
    ($result:expr, $variant:ident, $($what:tt)+) => {{
        let what = format!($($what)+);
        match $result {
            Err(::berth_snapshotter::SnapshotError::$variant(_)) => {}
            Err(other) => panic!(
                "{what}: expected SnapshotError::{}, got {other:?} ({other})",
                stringify!($variant)
            ),
            Ok(v) => panic!(
                "{what}: expected SnapshotError::{}, but it succeeded with {v:?}",
                stringify!($variant)
            ),
        }
    }};
}

pub mod cases;
pub mod ops;
mod scenario;
mod support;
mod tree;
mod xattrs;

#[cfg(test)]
mod reference;

pub use cases::*;
pub use ops::{apply, dir, file, link, remove_all, remove_xattr, set_xattr, symlink, Op};
pub use support::require_root;
pub use tree::{assert_same_tree, tree_differences};
pub use xattrs::{get_xattr, list_xattrs};
