//! bctr's library half: connecting to a daemon over its unix socket, printing tables, and the
//! pure logic of images (documents, platforms, references, archives) and of containers (runtime
//! specs and their seccomp profiles, signals, Go-shaped JSON) that the commands share. The
//! integration tests use the same connection code to talk to berthd directly.

pub mod client;
pub mod gojson;
pub mod oci;
pub mod protojson;
pub use berth_image_archive::reference;
pub mod seccomp;
pub mod signals;
pub mod spec;
pub mod table;
pub mod units;
