//! Compiles containerd's cgroup metrics messages (`io.containerd.cgroups.v1` and
//! `io.containerd.cgroups.v2`) into plain prost structs, from the same `.proto` files the API
//! crate uses (`api/proto`). The shim returns them, encoded, inside the `Any` of a Stats reply;
//! containerd's Go client decodes them by field number.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "containerd/cgroups/v1/metrics.proto",
        "containerd/cgroups/v2/metrics.proto",
    ];
    println!("cargo:rerun-if-changed=../../../api/proto/containerd/cgroups");
    let fds = protox::compile(files, ["../../../api/proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
