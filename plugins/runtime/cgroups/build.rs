//! Compiles containerd's cgroup metrics messages (`io.containerd.cgroups.v1` and
//! `io.containerd.cgroups.v2`) into plain prost structs. The shim returns them, encoded, inside the
//! `Any` of a Stats reply; containerd's Go client decodes them by field number.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/io/containerd/cgroups/v1/metrics.proto",
        "proto/io/containerd/cgroups/v2/metrics.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(files, ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
