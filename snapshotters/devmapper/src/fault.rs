//! Fault injection for the crash tests: `BERTH_DEVMAPPER_FAULT=<point>` makes the process abort
//! (no unwinding, no cleanup: as a power cut or `kill -9` would stop it) when it reaches that
//! point. The points:
//!
//! - `after-create-thin`: the base device's thin id was created in the pool, its record still
//!   says `Creating`;
//! - `after-create-snap`: a snapshot's thin device was created in the pool, its record still
//!   says `Creating` and the snapshot record is not written;
//! - `after-activate`: a new snapshot's device is active, its snapshot record not committed;
//! - `before-delete`: a removed snapshot's device is deactivated, not yet deleted from the pool.

/// The environment variable naming the point to abort at.
pub const ENV: &str = "BERTH_DEVMAPPER_FAULT";

/// Aborts the process if `BERTH_DEVMAPPER_FAULT` names `point`.
pub fn point(point: &str) {
    if std::env::var_os(ENV).is_some_and(|v| v == point) {
        eprintln!("{ENV}={point}: aborting here on purpose");
        std::process::abort();
    }
}
