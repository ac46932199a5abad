//! State shared by the workers of one process: the first fatal error and the
//! abort flag that sources watch, so a failure anywhere drains the graph
//! instead of hanging it; and the stop flag, raised when every training
//! stage has done its steps, so the sources stop reading.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::error::FlowError;

/// Shared by all workers of a process.
#[derive(Debug, Default)]
pub struct RunState {
    aborted: AtomicBool,
    stop: AtomicBool,
    /// Device owners in this process, and how many of them are done.
    local_devices: AtomicUsize,
    devices_done: AtomicUsize,
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

    /// Set how many device owners this process runs ([`local_devices`]),
    /// before the graph starts.
    pub fn expect_devices(&self, n: usize) {
        self.local_devices.store(n, Ordering::SeqCst);
    }

    /// One device owner's stages are all done ([`super::DeviceStage::done`]):
    /// once every device owner of this process is, the sources stop.
    pub fn device_done(&self) {
        let done = self.devices_done.fetch_add(1, Ordering::SeqCst) + 1;
        if done >= self.local_devices.load(Ordering::SeqCst) {
            self.request_stop();
        }
    }

    /// Whether the sources were asked to stop ([`RunState::request_stop`]).
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Calls `f` with the first fatal error, if any, leaving it in place.
    pub fn with_failure<R>(&self, f: impl FnOnce(Option<&FlowError>) -> R) -> R {
        f(self
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref())
    }

    /// The first fatal error, if any.
    pub fn take_failure(&self) -> Option<FlowError> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

/// Device owners among this process's workers: workers `0..devices` own a
/// device, and timely numbers a process's `threads` workers
/// `process × threads ..`.
pub fn local_devices(comm: &timely::CommunicationConfig, devices: usize) -> usize {
    let (threads, process) = match comm {
        timely::CommunicationConfig::Thread => (1, 0),
        timely::CommunicationConfig::Process(n) | timely::CommunicationConfig::ProcessBinary(n) => {
            (*n, 0)
        }
        timely::CommunicationConfig::Cluster {
            threads, process, ..
        } => (*threads, *process),
    };
    let first = threads * process;
    devices.saturating_sub(first).min(threads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use timely::CommunicationConfig;

    fn cluster(threads: usize, process: usize) -> CommunicationConfig {
        CommunicationConfig::Cluster {
            threads,
            process,
            addresses: vec![String::new(); 2],
            report: false,
            zerocopy: false,
        }
    }

    #[test]
    fn local_devices_counts_this_process_s_device_owners() {
        assert_eq!(local_devices(&CommunicationConfig::Thread, 1), 1);
        assert_eq!(local_devices(&CommunicationConfig::Process(4), 2), 2);
        // Workers 0..2 in process 0, 2..4 in process 1.
        assert_eq!(local_devices(&cluster(2, 0), 3), 2);
        assert_eq!(local_devices(&cluster(2, 1), 3), 1);
        assert_eq!(local_devices(&cluster(2, 1), 1), 0);
    }

    #[test]
    fn the_sources_stop_once_every_local_device_is_done() {
        let state = RunState::default();
        state.expect_devices(2);
        state.device_done();
        assert!(!state.stop_requested());
        state.device_done();
        assert!(state.stop_requested());
        assert!(!state.aborted());
    }
}
