//! containerd's v1 API, generated from the `.proto` files in `proto/`.
//!
//! The module tree mirrors the protobuf packages (`containerd.services.content.v1` is
//! `containerd::services::content::v1`) because prost's generated code refers to other packages by
//! relative `super::` paths. Nothing but generated code lives here.

#![allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]

pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

/// Berth's own services, outside containerd's API.
pub mod berth {
    pub mod services {
        pub mod gc {
            pub mod v1 {
                tonic::include_proto!("berth.services.gc.v1");
            }
        }
        pub mod unpack {
            pub mod v1 {
                tonic::include_proto!("berth.services.unpack.v1");
            }
        }
    }
}

/// cgroup statistics a runc shim reports in `Tasks.Metrics` (containerd's
/// `github.com/containerd/cgroups` stats, v1 and v2).
pub mod io {
    pub mod containerd {
        pub mod cgroups {
            pub mod v1 {
                tonic::include_proto!("io.containerd.cgroups.v1");
            }
            pub mod v2 {
                tonic::include_proto!("io.containerd.cgroups.v2");
            }
        }
    }
}

pub mod containerd {
    pub mod types {
        tonic::include_proto!("containerd.types");
        /// The objects the Transfer service moves images between (registry, image store,
        /// archive streams) and its progress and stream messages.
        pub mod transfer {
            tonic::include_proto!("containerd.types.transfer");
        }
    }
    pub mod v1 {
        pub mod types {
            tonic::include_proto!("containerd.v1.types");
        }
    }
    pub mod events {
        tonic::include_proto!("containerd.events");
    }
    pub mod services {
        pub mod containers {
            pub mod v1 {
                tonic::include_proto!("containerd.services.containers.v1");
            }
        }
        pub mod content {
            pub mod v1 {
                tonic::include_proto!("containerd.services.content.v1");
            }
        }
        pub mod diff {
            pub mod v1 {
                tonic::include_proto!("containerd.services.diff.v1");
            }
        }
        pub mod events {
            pub mod v1 {
                tonic::include_proto!("containerd.services.events.v1");
            }
        }
        pub mod images {
            pub mod v1 {
                tonic::include_proto!("containerd.services.images.v1");
            }
        }
        pub mod introspection {
            pub mod v1 {
                tonic::include_proto!("containerd.services.introspection.v1");
            }
        }
        pub mod leases {
            pub mod v1 {
                tonic::include_proto!("containerd.services.leases.v1");
            }
        }
        pub mod namespaces {
            pub mod v1 {
                tonic::include_proto!("containerd.services.namespaces.v1");
            }
        }
        pub mod snapshots {
            pub mod v1 {
                tonic::include_proto!("containerd.services.snapshots.v1");
            }
        }
        pub mod tasks {
            pub mod v1 {
                tonic::include_proto!("containerd.services.tasks.v1");
            }
        }
        pub mod version {
            pub mod v1 {
                tonic::include_proto!("containerd.services.version.v1");
            }
        }
        pub mod transfer {
            pub mod v1 {
                tonic::include_proto!("containerd.services.transfer.v1");
            }
        }
        pub mod streaming {
            pub mod v1 {
                tonic::include_proto!("containerd.services.streaming.v1");
            }
        }
    }
}

/// Short aliases for the services, so callers need not spell the package path.
pub use containerd::services::{
    containers::v1 as containers, content::v1 as content, diff::v1 as diff, events::v1 as events,
    images::v1 as images, introspection::v1 as introspection, leases::v1 as leases,
    namespaces::v1 as namespaces, snapshots::v1 as snapshots, streaming::v1 as streaming,
    tasks::v1 as tasks, transfer::v1 as transfer, version::v1 as version,
};
pub use containerd::types;
