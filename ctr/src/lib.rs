//! bctr's library half: connecting to a daemon over its unix socket, printing tables, and the
//! pure logic of images (documents, platforms, references, archives) that the commands share.
//! The integration tests use the same connection code to talk to berthd directly.

pub mod archive;
pub mod client;
pub mod oci;
pub mod reference;
pub mod table;
pub mod units;
