//! The cases, one module per topic. Each is a `pub fn case(make: &MakeSnapshotter)` (some take
//! an argument more), re-exported at the crate root where the macros find them.

mod basics;
mod chains;
mod concurrency;
mod crash;
mod deep_chains;
mod error_codes;
mod file_metadata;
mod labels;
mod removal;
mod views;
mod walk;

pub use basics::{basic, close_twice, root_permission, stat_active, stat_committed};
pub use chains::{
    deleted_files_in_child_snapshot, layer_file_update, move_file_from_lower_layer,
    remove_directory_in_lower_layer, rename, rename_with, transitivity,
};
pub use concurrency::concurrent_prepare_commit;
pub use crash::{crash_recovery, crash_recovery_in};
pub use deep_chains::{deep_chain, deep_chain_500, layers_128_mount};
pub use error_codes::error_codes;
pub use file_metadata::{chown, directory_permission_on_commit, hardlinks_across_layers, xattrs};
pub use labels::{commit_labels, update};
pub use removal::{remove, remove_intermediate_snapshot};
pub use views::{prepare_view_failing, view_readonly};
pub use walk::{stat_in_walk, walk};
