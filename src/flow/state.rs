//! State shared by the workers of one process: the first fatal error and the
//! abort flag that sources watch, so a failure anywhere drains the graph
//! instead of hanging it; and the stop flag, raised when every training
//! stage of the run has done its steps, so the sources stop reading. In a
//! cluster run that is every device owner of every process: a process
//! learns of the others' from their notices (`super::peers`), so a process
//! that owns no device stops reading too.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use timely::CommunicationConfig;

use super::error::FlowError;

/// Shared by all workers of a process.
#[derive(Debug, Default)]
pub struct RunState {
    aborted: AtomicBool,
    stop: AtomicBool,
    /// Device owners in this process, and how many of them are done.
    local_devices: AtomicUsize,
    devices_done: AtomicUsize,
    /// This process's index, the number of processes that own a device, and
    /// those of them whose device owners are all done.
    this_process: AtomicUsize,
    device_processes: AtomicUsize,
    processes_done: Mutex<BTreeSet<usize>>,
    failure: Mutex<Option<FlowError>>,
    id: RunId,
    /// How long a replica waits for a combined gradient, in ms (0: no limit).
    collective_timeout_ms: AtomicU64,
    /// The other processes that own devices, for errors that name them.
    device_peers: Mutex<String>,
    /// Device threads of this process that have not ended yet.
    device_threads: AtomicUsize,
}

/// A number no other run of this process has.
#[derive(Debug)]
struct RunId(u64);

impl Default for RunId {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl RunState {
    /// This run's number, unique in the process: state that stages of one
    /// run share (e.g. an output file several devices append to) is keyed
    /// by it, so that it never carries over into a later run.
    pub fn id(&self) -> u64 {
        self.id.0
    }

    /// Record a fatal error (the first one wins) and ask sources to stop.
    pub fn fail(&self, err: FlowError) {
        let mut slot = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            // Debug only: the caller reports the error once the run has
            // drained (`error: ...`); an error log here printed it twice.
            tracing::debug!("stopping the run: {err}");
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

    /// Set, before the graph starts, where the run's `devices` device
    /// owners are: how many this process runs (`owners_in`) and which
    /// processes of `comm` run any.
    pub fn expect_devices(&self, comm: &CommunicationConfig, devices: usize) {
        let (threads, process, processes) = layout(comm);
        let owning = (0..processes)
            .filter(|&p| owners_in(p, threads, devices) > 0)
            .count();
        if let CommunicationConfig::Cluster { addresses, .. } = comm {
            let peers: Vec<String> = (0..processes)
                .filter(|&p| p != process && owners_in(p, threads, devices) > 0)
                .map(|p| format!("process {p} ({})", addresses[p]))
                .collect();
            *self.device_peers.lock().unwrap_or_else(|e| e.into_inner()) = peers.join(" or ");
        }
        self.local_devices
            .store(owners_in(process, threads, devices), Ordering::SeqCst);
        self.this_process.store(process, Ordering::SeqCst);
        self.device_processes.store(owning, Ordering::SeqCst);
    }

    /// One device owner's stages are all done ([`super::DeviceStage::done`]):
    /// once every device owner of this process is, so is this process
    /// ([`RunState::process_done`]).
    pub fn device_done(&self) {
        let done = self.devices_done.fetch_add(1, Ordering::SeqCst) + 1;
        if done >= self.local_devices.load(Ordering::SeqCst) {
            self.process_done(self.this_process.load(Ordering::SeqCst));
        }
    }

    /// Whether this process owns devices and all of them are done (what it
    /// tells the other processes of a cluster run).
    pub fn local_devices_done(&self) -> bool {
        let local = self.local_devices.load(Ordering::SeqCst);
        local > 0 && self.devices_done.load(Ordering::SeqCst) >= local
    }

    /// Every device owner of process `process` is done (this one's, or
    /// another's as its notice says): once every process that owns a device
    /// is, the sources stop.
    pub fn process_done(&self, process: usize) {
        let mut done = self
            .processes_done
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        done.insert(process);
        if done.len() >= self.device_processes.load(Ordering::SeqCst) {
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

    /// Limit how long a replica waits for the combined gradient of a batch
    /// ([`super::RunOptions::collective_timeout`]); `None`: no limit (the
    /// replicas are threads of one process, which cannot vanish alone).
    pub fn set_collective_timeout(&self, limit: Option<Duration>) {
        let ms = limit.map_or(0, |d| (d.as_millis() as u64).max(1));
        self.collective_timeout_ms.store(ms, Ordering::SeqCst);
    }

    /// See [`RunState::set_collective_timeout`].
    pub fn collective_timeout(&self) -> Option<Duration> {
        match self.collective_timeout_ms.load(Ordering::SeqCst) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// The other processes of a cluster run that own devices, as
    /// "process P (HOST:PORT)" joined by " or " (empty without a cluster).
    pub fn device_peers(&self) -> String {
        self.device_peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A device thread of this process starts; [`RunState::device_thread_ended`]
    /// when it ends.
    pub fn device_thread_started(&self) {
        self.device_threads.fetch_add(1, Ordering::SeqCst);
    }

    pub fn device_thread_ended(&self) {
        self.device_threads.fetch_sub(1, Ordering::SeqCst);
    }

    /// Device threads of this process still running.
    pub fn device_threads_running(&self) -> usize {
        self.device_threads.load(Ordering::SeqCst)
    }

    /// The first fatal error, if any.
    pub fn take_failure(&self) -> Option<FlowError> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

/// Workers per process, this process's index and the number of processes of `comm`.
fn layout(comm: &CommunicationConfig) -> (usize, usize, usize) {
    match comm {
        CommunicationConfig::Thread => (1, 0, 1),
        CommunicationConfig::Process(n) | CommunicationConfig::ProcessBinary(n) => (*n, 0, 1),
        CommunicationConfig::Cluster {
            threads,
            process,
            addresses,
            ..
        } => (*threads, *process, addresses.len()),
    }
}

/// Device owners among the workers of process `process` with `threads`
/// workers each: workers `0..devices` own a device, and timely numbers a
/// process's workers `process × threads ..`.
fn owners_in(process: usize, threads: usize, devices: usize) -> usize {
    devices.saturating_sub(threads * process).min(threads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use timely::CommunicationConfig;

    fn local_devices(comm: &CommunicationConfig, devices: usize) -> usize {
        let (threads, process, _) = layout(comm);
        owners_in(process, threads, devices)
    }

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
        state.expect_devices(&CommunicationConfig::Process(2), 2);
        state.device_done();
        assert!(!state.stop_requested());
        assert!(!state.local_devices_done());
        state.device_done();
        assert!(state.stop_requested());
        assert!(!state.aborted());
    }

    #[test]
    fn in_a_cluster_the_sources_stop_once_every_process_s_devices_are_done() {
        // 3 devices on 2 processes of 2 workers: both processes own devices.
        let p0 = RunState::default();
        p0.expect_devices(&cluster(2, 0), 3);
        p0.device_done();
        p0.device_done();
        assert!(p0.local_devices_done());
        assert!(!p0.stop_requested(), "process 1's device is not done");
        p0.process_done(1);
        assert!(p0.stop_requested());

        // 1 device: process 1 owns none and stops on process 0's notice.
        let p1 = RunState::default();
        p1.expect_devices(&cluster(2, 1), 1);
        assert!(!p1.local_devices_done(), "it has nothing to tell");
        assert!(!p1.stop_requested());
        p1.process_done(0);
        assert!(p1.stop_requested());
        let p0 = RunState::default();
        p0.expect_devices(&cluster(2, 0), 1);
        p0.device_done();
        assert!(p0.stop_requested());
    }
}
