//! The shim's log: lines written to the `log` FIFO in the bundle, which berthd (and containerd)
//! copy into their own log; stderr until it is open. Kept tiny on purpose — the shim lives as
//! long as its container and every page it touches counts.

use std::io::Write;
use std::sync::Mutex;

static SINK: Mutex<Option<std::fs::File>> = Mutex::new(None);
static DEBUG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Opens `log` in the current directory (the bundle). The FIFO is opened read-write so the open
/// never blocks, whether or not the daemon reads it yet.
pub fn open_fifo(debug: bool) {
    DEBUG.store(debug, std::sync::atomic::Ordering::Relaxed);
    if let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("log")
    {
        if let Ok(mut s) = SINK.lock() {
            *s = Some(f);
        }
    }
}

pub fn debug_enabled() -> bool {
    DEBUG.load(std::sync::atomic::Ordering::Relaxed)
}

pub fn write(level: &str, msg: std::fmt::Arguments<'_>) {
    let line = format!("level={level} msg=\"{msg}\"\n");
    match SINK.lock().ok().as_mut().and_then(|s| s.as_mut()) {
        Some(f) => {
            let _ = f.write_all(line.as_bytes());
        }
        None => {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
}

macro_rules! warning {
    ($($t:tt)*) => { $crate::log::write("warning", format_args!($($t)*)) };
}
macro_rules! debug {
    ($($t:tt)*) => { if $crate::log::debug_enabled() { $crate::log::write("debug", format_args!($($t)*)) } };
}
pub(crate) use {debug, warning};
