//! Noticing that the kernel's OOM killer acted in a container, so the shim can publish
//! containerd's `TaskOOM` event.
//!
//! The watcher is a file descriptor the shim polls with its other descriptors; when it is
//! readable, [`OomWatcher::oom_kills`] says how many new OOM events happened.
//! - v1: an eventfd registered on `memory.oom_control` through `cgroup.event_control`; the kernel
//!   adds one to it per OOM event. It is also signalled when the cgroup is removed, which is not
//!   an OOM, so an event on a vanished cgroup counts as none.
//! - v2: inotify on `memory.events`, whose `oom_kill` counter (or `oom`, on kernels that lack
//!   `oom_kill`) is compared with the last value seen.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::cgroup::{Cgroup, Layout};
use crate::error::{Error, Result};
use crate::fs;

/// A pollable source of OOM events for one cgroup.
#[derive(Debug)]
pub struct OomWatcher {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    V1 {
        eventfd: EventFd,
        /// Kept open: the registration lives as long as this descriptor.
        _oom_control: File,
        dir: PathBuf,
    },
    V2 {
        inotify: Inotify,
        events: PathBuf,
        last: u64,
    },
}

impl Cgroup {
    /// Starts watching for OOM events. Events before this call are not reported.
    pub fn oom_watcher(&self) -> Result<OomWatcher> {
        match &self.layout {
            Layout::V1 { dirs, .. } => {
                let dir = dirs.get("memory").ok_or_else(|| Error::Unsupported {
                    setting: "OOM notification".to_string(),
                    controller: "memory".to_string(),
                    file: PathBuf::from("memory.oom_control"),
                })?;
                OomWatcher::v1(dir)
            }
            Layout::V2 { dir, .. } => OomWatcher::v2(dir),
        }
    }
}

impl OomWatcher {
    fn v1(dir: &Path) -> Result<OomWatcher> {
        let control = dir.join("memory.oom_control");
        let oom = |path: &Path, source: std::io::Error| Error::Oom {
            path: path.to_path_buf(),
            source,
        };
        let eventfd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| oom(&control, e.into()))?;
        let oom_control = File::open(&control).map_err(|e| oom(&control, e))?;
        fs::write(
            &dir.join("cgroup.event_control"),
            &format!(
                "{} {}",
                eventfd.as_fd().as_raw_fd(),
                oom_control.as_raw_fd()
            ),
        )?;
        Ok(OomWatcher {
            kind: Kind::V1 {
                eventfd,
                _oom_control: oom_control,
                dir: dir.to_path_buf(),
            },
        })
    }

    fn v2(dir: &Path) -> Result<OomWatcher> {
        let events = dir.join("memory.events");
        let oom = |source: std::io::Error| Error::Oom {
            path: events.clone(),
            source,
        };
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .map_err(|e| oom(e.into()))?;
        inotify
            .add_watch(&events, AddWatchFlags::IN_MODIFY)
            .map_err(|e| oom(e.into()))?;
        let last = read_oom_count(&events)?.unwrap_or(0);
        Ok(OomWatcher {
            kind: Kind::V2 {
                inotify,
                events,
                last,
            },
        })
    }

    /// The number of OOM events since the last call (or since the watcher was made). Never
    /// blocks; call it when the descriptor is readable.
    pub fn oom_kills(&mut self) -> Result<u64> {
        match &mut self.kind {
            Kind::V1 { eventfd, dir, .. } => {
                let n = match eventfd.read() {
                    Ok(n) => n,
                    Err(Errno::EAGAIN) => return Ok(0),
                    Err(e) => {
                        return Err(Error::Oom {
                            path: dir.join("memory.oom_control"),
                            source: e.into(),
                        })
                    }
                };
                // Removal of the cgroup signals the eventfd too.
                if !dir.join("memory.oom_control").exists() {
                    return Ok(0);
                }
                Ok(n)
            }
            Kind::V2 {
                inotify,
                events,
                last,
            } => {
                // Drain the queue so the descriptor stops being readable; the count comes from
                // the file, which is exact however many notifications were merged.
                loop {
                    match inotify.read_events() {
                        Ok(ev) if !ev.is_empty() => continue,
                        Ok(_) | Err(Errno::EAGAIN) => break,
                        Err(e) => {
                            return Err(Error::Oom {
                                path: events.clone(),
                                source: e.into(),
                            })
                        }
                    }
                }
                let Some(now) = read_oom_count(events)? else {
                    // The cgroup is gone.
                    return Ok(0);
                };
                let new = now.saturating_sub(*last);
                *last = now;
                Ok(new)
            }
        }
    }
}

impl AsFd for OomWatcher {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.kind {
            Kind::V1 { eventfd, .. } => eventfd.as_fd(),
            Kind::V2 { inotify, .. } => inotify.as_fd(),
        }
    }
}

/// `oom_kill` from `memory.events`, or `oom` on kernels without it; `None` if the file is gone.
fn read_oom_count(events: &Path) -> Result<Option<u64>> {
    let Some(text) = fs::read_opt(events)? else {
        return Ok(None);
    };
    let m = fs::parse_flat_keyed(&text);
    Ok(Some(
        m.get("oom_kill")
            .or_else(|| m.get("oom"))
            .copied()
            .unwrap_or(0),
    ))
}
