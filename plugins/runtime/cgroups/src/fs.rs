//! Reading and writing cgroup files, and parsing the few formats the kernel uses in them.
//!
//! Writes open the existing file without `O_CREAT`: cgroupfs refuses to create files, and a
//! missing file means a missing controller, which callers check for before writing. In unit tests
//! every write is also recorded (per test thread) so a test can assert the order of writes to the
//! same file, which a fixture tree of plain files would otherwise lose.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `value` to the cgroup file `path` in one `write(2)`, as the kernel expects.
pub(crate) fn write(path: &Path, value: &str) -> Result<()> {
    #[cfg(test)]
    recording::record(path, value);
    let err = |source| Error::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(err)?;
    f.write_all(value.as_bytes()).map_err(err)
}

/// The whole content of a cgroup file.
pub(crate) fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The content of a cgroup file, or `None` if it does not exist (the controller is absent).
pub(crate) fn read_opt(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// A file holding one unsigned number; `max` (v2's "no limit") reads as `u64::MAX`.
pub(crate) fn read_u64(path: &Path) -> Result<u64> {
    parse_u64(path, read(path)?.trim())
}

/// Like [`read_u64`], `None` if the file does not exist.
pub(crate) fn read_u64_opt(path: &Path) -> Result<Option<u64>> {
    read_opt(path)?
        .map(|s| parse_u64(path, s.trim()))
        .transpose()
}

pub(crate) fn parse_u64(path: &Path, s: &str) -> Result<u64> {
    if s == "max" {
        return Ok(u64::MAX);
    }
    s.parse().map_err(|_| Error::Parse {
        path: path.to_path_buf(),
        reason: format!("{s:?} is not a number"),
    })
}

/// A flat-keyed file (`memory.stat`, `cpu.stat`, `memory.events`): `key value` per line.
/// Lines that do not fit are skipped: kernels add keys and we read only the ones we know.
pub(crate) fn parse_flat_keyed(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let k = it.next()?;
            let v = it.next()?.parse().ok()?;
            Some((k.to_string(), v))
        })
        .collect()
}

/// A flat-keyed file, empty if the file does not exist.
pub(crate) fn read_flat_keyed_opt(path: &Path) -> Result<BTreeMap<String, u64>> {
    Ok(read_opt(path)?
        .map(|t| parse_flat_keyed(&t))
        .unwrap_or_default())
}

#[cfg(test)]
pub(crate) mod recording {
    //! The writes a test thread made, in order.
    use std::cell::RefCell;
    use std::path::{Path, PathBuf};

    thread_local! {
        static WRITES: RefCell<Vec<(PathBuf, String)>> = const { RefCell::new(Vec::new()) };
    }

    pub(crate) fn record(path: &Path, value: &str) {
        WRITES.with(|w| w.borrow_mut().push((path.to_path_buf(), value.to_string())));
    }

    /// Takes the writes recorded so far on this thread.
    pub(crate) fn take() -> Vec<(PathBuf, String)> {
        WRITES.with(|w| std::mem::take(&mut *w.borrow_mut()))
    }
}
