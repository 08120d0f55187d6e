//! Plugin type names, spelled as containerd spells them so `ctr plugins ls` reads the same.

pub const CONTENT: &str = "io.containerd.content.v1";
pub const SNAPSHOTTER: &str = "io.containerd.snapshotter.v1";
pub const METADATA: &str = "io.containerd.metadata.v1";
pub const DIFF: &str = "io.containerd.differ.v1";
pub const EVENT: &str = "io.containerd.event.v1";
pub const GC: &str = "io.containerd.gc.v1";
pub const LEASE: &str = "io.containerd.lease.v1";
pub const SERVICE: &str = "io.containerd.service.v1";
pub const GRPC: &str = "io.containerd.grpc.v1";
pub const RUNTIME_V2: &str = "io.containerd.runtime.v2";
pub const INTERNAL: &str = "io.containerd.internal.v1";
pub const TRANSFER: &str = "io.containerd.transfer.v1";
