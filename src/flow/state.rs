//! State shared by the workers of one process: the first fatal error and the
//! abort flag that sources watch, so a failure anywhere drains the graph
//! instead of hanging it; and the stop flag, raised when every training
//! stage has done its steps, so the sources stop reading.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::error::FlowError;

/// Shared by all workers of a process.
#[derive(Debug, Default)]
pub struct RunState {
    aborted: AtomicBool,
    stop: AtomicBool,
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

    /// Ask the sources to stop reading: every training stage has done its
    /// steps, so further batches would be read and decoded for nothing. Not a
    /// failure: the batches already in flight finish and the run ends
    /// normally.
    pub fn request_stop(&self) {
        if !self.stop.swap(true, Ordering::SeqCst) {
            tracing::info!("every training stage is done: the sources stop reading");
        }
    }

    /// Whether the sources were asked to stop ([`RunState::request_stop`]).
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The first fatal error, if any.
    pub fn take_failure(&self) -> Option<FlowError> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}
