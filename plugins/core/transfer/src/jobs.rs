//! What every transfer job shares: the lease that holds what it writes until the images hold
//! it, status events, and the check that an unpack configuration is one this machine can run.

use std::time::Duration;

use berth_oci::Matcher;

use crate::{Progress, ProgressFn, TransferError, Transferrer, UnpackConfig};

impl Transferrer {
    /// Creates a lease `berth-<kind>-<uuid>` in `ns` that expires after `ttl` if berthd dies
    /// before [`end_lease`](Transferrer::end_lease) deletes it.
    pub(crate) async fn begin_lease(
        &self,
        ns: &str,
        kind: &str,
        ttl: Duration,
    ) -> Result<String, TransferError> {
        let lease = format!("berth-{kind}-{}", uuid::Uuid::new_v4().simple());
        let (db, ns, id) = (self.db.clone(), ns.to_owned(), lease.clone());
        let labels = berth_metadata::expiring_in(ttl);
        tokio::task::spawn_blocking(move || db.create_lease(&ns, &id, labels)).await??;
        Ok(lease)
    }

    /// Deletes a job's lease; a failure leaves it to expire.
    pub(crate) async fn end_lease(&self, ns: &str, lease: &str, job: &str) {
        let (db, ns, lease) = (self.db.clone(), ns.to_owned(), lease.to_owned());
        let r = tokio::task::spawn_blocking(move || db.delete_lease(&ns, &lease)).await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, job, "cannot delete the lease; it expires"),
            Err(e) => tracing::warn!(error = %e, job, "cannot delete the lease; it expires"),
        }
    }
}

/// An unnamed status event (`Importing`, `Completed export`).
pub(crate) fn status(progress: &ProgressFn, event: &str) {
    progress(Progress {
        event: event.to_owned(),
        ..Default::default()
    })
}

/// Whether this machine can unpack for `u`'s platform: containerd unpacks only for platforms
/// the host runs, and skips others with a warning, not an error.
pub(crate) fn host_can_unpack(u: &UnpackConfig) -> bool {
    match &u.platform {
        Some(p) if !Matcher::host().matches(p) => {
            tracing::warn!(
                platform = %berth_oci::platform::format(p),
                snapshotter = %u.snapshotter,
                "unpack configuration not supported, skipping"
            );
            false
        }
        _ => true,
    }
}
