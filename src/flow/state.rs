//! State shared by the workers of one process: the first fatal error and the
//! abort flag that sources watch, so a failure anywhere drains the graph
//! instead of hanging it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::error::FlowError;

/// Shared by all workers of a process.
#[derive(Debug, Default)]
pub struct RunState {
    aborted: AtomicBool,
    failure: Mutex<Option<FlowError>>,
}

impl RunState {
    /// Record a fatal error (the first one wins) and ask sources to stop.
    pub fn fail(&self, err: FlowError) {
        let mut slot = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            tracing::error!("stopping the run: {err}");
            *slot = Some(err);
        }
        self.aborted.store(true, Ordering::SeqCst);
    }

    /// Whether the run is stopping.
    pub fn aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }

    /// The first fatal error, if any.
    pub fn take_failure(&self) -> Option<FlowError> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}
