//! Layers still arriving: a pull unpacks while it downloads, each layer extracted as soon as its
//! blob is in the content store instead of after the last download. The puller opens the gate
//! for each layer it has stored and closes it when it is done (or failed); an extraction waits
//! at the gate for its layer.

use std::collections::HashSet;
use std::sync::{Condvar, Mutex};

use crate::UnpackError;

#[derive(Debug, Default)]
pub struct LayerGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    ready: HashSet<String>,
    /// No more layers will come: why (`None` once every download succeeded).
    closed: Option<Option<String>>,
}

impl LayerGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The blob `digest` is in the content store.
    pub fn ready(&self, digest: &str) {
        self.lock().ready.insert(digest.to_owned());
        self.changed.notify_all();
    }

    /// Every layer that will come has come; `failure` says why the others will not.
    pub fn close(&self, failure: Option<String>) {
        let mut s = self.lock();
        if s.closed.is_none() {
            s.closed = Some(failure);
        }
        drop(s);
        self.changed.notify_all();
    }

    /// Blocks until `digest` is ready, or fails if the gate closed without it.
    pub(crate) fn wait(&self, digest: &str) -> Result<(), UnpackError> {
        let mut s = self.lock();
        loop {
            if s.ready.contains(digest) {
                return Ok(());
            }
            if let Some(why) = &s.closed {
                return Err(UnpackError::LayerNotFetched {
                    digest: digest.to_owned(),
                    why: why
                        .clone()
                        .unwrap_or_else(|| "the pull did not fetch it".to_owned()),
                });
            }
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn waits_for_its_layer_and_fails_when_it_will_not_come() {
        let gate = Arc::new(LayerGate::default());
        let g = gate.clone();
        let waiter = std::thread::spawn(move || g.wait("sha256:a"));
        gate.ready("sha256:b");
        gate.ready("sha256:a");
        assert!(waiter.join().unwrap().is_ok());

        let g = gate.clone();
        let waiter = std::thread::spawn(move || g.wait("sha256:c"));
        gate.close(Some("connection refused".into()));
        let e = waiter.join().unwrap().unwrap_err();
        assert!(e.to_string().contains("connection refused"), "{e}");
        // Ready before the close still is.
        assert!(gate.wait("sha256:a").is_ok());
    }
}
