//! Compiles the shim protocol's `.proto` files (and the containerd types they use, shared with
//! `api/`) into plain prost messages: ttrpc carries them, so no gRPC code is generated.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/containerd/task/v2/shim.proto",
        "proto/containerd/services/ttrpc/events/v1/events.proto",
        // The task events a shim publishes (shared with `api/`).
        "containerd/events/task.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=../../../api/proto/containerd/types");
    println!("cargo:rerun-if-changed=../../../api/proto/containerd/events/task.proto");
    let fds = protox::compile(files, ["proto", "../../../api/proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
