//! Container creation from an OCI runtime spec, as Berth's shim does it without runc: the
//! namespaces, the root filesystem (`rootfs`), the process's identity and limits (`process`),
//! and the fork/handshake that ties them together (`launch`). Every privileged call of the
//! filesystem set-up goes through [`syscall::Syscall`], so its order is unit-tested without root.

mod error;
pub mod hooks;
pub mod launch;
pub mod process;
pub mod rootfs;
pub mod sync;
pub mod syscall;

pub use error::{Error, Result};
pub use launch::{create, Created, Mode, Parent, Request};
pub use rootfs::CgroupMounts;
