//! containerd's shim v2 protocol, as berthd speaks it to every shim it runs (containerd's
//! `docs/runtime-v2.md`): the shim binary is started and cleaned up by invoking it
//! ([`ShimCommand`]), the task it serves is driven over ttrpc ([`TaskClient`]), and the events it
//! publishes arrive on a ttrpc events service that berthd serves at `<grpc address>.ttrpc`
//! ([`EventsServer`]).
//!
//! The messages are containerd's (same packages and field numbers), generated here with prost; the
//! `ttrpc` crate carries their bytes. Nothing here knows about gRPC.

mod binary;
mod client;
mod error;
mod events;

pub use binary::{resolve_runtime_binary, ShimCommand};
pub use client::TaskClient;
pub use error::{Error, Result};
pub use events::{EventsServer, ForwardedEvent};

/// The generated messages, in their protobuf packages.
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod proto {
    pub mod containerd {
        pub mod types {
            include!(concat!(env!("OUT_DIR"), "/containerd.types.rs"));
        }
        pub mod v1 {
            pub mod types {
                include!(concat!(env!("OUT_DIR"), "/containerd.v1.types.rs"));
            }
        }
        pub mod events {
            include!(concat!(env!("OUT_DIR"), "/containerd.events.rs"));
        }
        pub mod task {
            pub mod v2 {
                include!(concat!(env!("OUT_DIR"), "/containerd.task.v2.rs"));
            }
        }
        pub mod services {
            pub mod events {
                pub mod ttrpc {
                    pub mod v1 {
                        include!(concat!(
                            env!("OUT_DIR"),
                            "/containerd.services.events.ttrpc.v1.rs"
                        ));
                    }
                }
            }
        }
    }
    pub use containerd::events;
    pub use containerd::task::v2 as task;
    pub use containerd::types::Mount;
    pub use containerd::v1::types::{ProcessInfo, Status};
}
