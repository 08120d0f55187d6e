//! bctr's library half: connecting to a daemon over its unix socket and printing tables. The
//! integration tests use the same connection code to talk to berthd directly.

pub mod client;
pub mod table;
