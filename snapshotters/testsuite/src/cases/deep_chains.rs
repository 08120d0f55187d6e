//! Deep chains: containerd's 128-layer mount and the longer chains a driver claims (up to
//! 500 layers, beyond one page of mount options).

use std::fs;

use crate::ops::{dir, file, remove_all, Op};
use crate::scenario::*;
use crate::support::*;
use crate::tree::assert_same_tree;
use crate::MakeSnapshotter;

/// The ops of layer `i` (0 = lowest) of containerd's 128-layer scenario.
fn stacked_layer_ops(i: usize) -> Vec<Op> {
    if i == 0 {
        return vec![
            file("/bottom", "way at the bottom\n", 0o777),
            file("/overwriteme", "FIRST!\n", 0o777),
            dir("/addhere", 0o755),
            dir("/onlyme", 0o755),
            file("/onlyme/bottom", "bye!\n", 0o777),
        ];
    }
    vec![
        file("/overwriteme", format!("{i} WAS HERE!\n"), 0o777),
        file(&format!("/addhere/file-{i}"), "same\n", 0o755),
        remove_all("/onlyme"),
        dir("/onlyme", 0o755),
        file(&format!("/onlyme/file-{i}"), "only me!\n", 0o777),
    ]
}

/// A chain of `layers` committed layers, each overwriting one file, adding one, and replacing a
/// directory; every `check_every`th active snapshot (and the last) is compared in full before and
/// after its changes, and a view of the top shows everything.
fn stacked_layers(make: &MakeSnapshotter, layers: usize, check_every: usize) {
    require_root();
    assert!(layers > 0, "a chain needs at least one layer");
    let env = Env::new(make);
    let flat = env.flat();
    let mut parent = String::new();
    for i in 0..layers {
        let name = format!("committed-{i}");
        let full = i % check_every == 0 || i + 1 == layers;
        commit_layer_checked(&*env, &name, &parent, &stacked_layer_ops(i), &flat, full);
        parent = name;
    }
    let mounts = env
        .view("fullview", &parent, gc_root())
        .must("view the top layer");
    let m = mount(&mounts, &format!("a view of {layers} layers"));
    assert_same_tree(
        flat.path(),
        m.path(),
        &format!("view of the top of {layers} layers"),
    );
    let added = fs::read_dir(m.path().join("addhere"))
        .must("list /addhere")
        .count();
    assert_eq!(
        added,
        layers - 1,
        "files added by the layers above the lowest"
    );
}

/// containerd's 128LayersMount: a chain of 128 committed layers, each active snapshot checked
/// in full before and after its changes; the top's view shows what all 128 did.
pub fn layers_128_mount(make: &MakeSnapshotter) {
    stacked_layers(make, 128, 1)
}

/// The 128-layer scenario with `layers` layers, checked in full every 50 layers (mounting
/// every layer still): the limit a driver claims to support.
pub fn deep_chain(make: &MakeSnapshotter, layers: usize) {
    stacked_layers(make, layers, 50)
}

/// 500 layers: the kernel's overlay stack limit, beyond the single mount(2) page of options.
pub fn deep_chain_500(make: &MakeSnapshotter) {
    deep_chain(make, 500)
}
