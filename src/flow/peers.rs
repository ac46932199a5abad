//! When a process of a cluster run (timely's `-n/-p/-H` mode) dies or fails,
//! the run in every other process stops with an error that names it
//! ([`FlowError::PeerLost`], [`FlowError::PeerFailed`]) instead of a cascade
//! of panics or a wait without end.
//!
//! Why a panic hook: timely's communication threads (`timely:recv-K`,
//! `timely:send-K`, one pair per remote process K) report a broken connection
//! only by panicking ("timely communication error: ..."). The panic poisons
//! the queues the worker threads read, so each worker then panics too
//! ("MergeQueue poisoned."), and the join of the communication threads at the
//! end of the run panics once more on the main thread. None of these panics
//! can be caught where it happens (the threads are timely's), and the join
//! hands back only an opaque payload. So while a cluster run is in progress,
//! [`watch`] keeps a process-wide hook that
//!
//! - on the first communication panic, records [`FlowError::PeerLost`] in the
//!   run's [`RunState`] (which raises the abort flag: the sources stop and a
//!   device thread waiting for a reduced gradient returns within
//!   `allreduce::WAIT_POLL`), and keeps the panic off stderr;
//! - keeps the panics that follow from it off stderr (poisoned queues, the
//!   communication threads' join);
//!
//! and passes every other panic to the hook that was there before. The run
//! catches the main thread's panic at the join ([`join_workers`]) and returns
//! the recorded error.
//!
//! A process that fails with an error (a stage error, a bad file) stays up
//! while its run drains, so its peers would never learn of it from the
//! connections, and would wait for its replica's gradient forever. So every
//! worker of a cluster run also runs [`notices`]: when its process's
//! run fails, it sends the error to every worker of the other processes, which
//! record [`FlowError::PeerFailed`] and stop as well; every process then drains
//! as one process does after a failure. The same notices carry the end of
//! training: once a process's device owners are all done, it tells the
//! others, and every process stops reading once all processes that own a
//! device are done ([`RunState::process_done`]), including one that owns
//! none and would otherwise read its whole share.
//!
//! What the hook covers: a peer process that exits, crashes or is killed while
//! its machine stays up (the kernel closes its sockets, so the reads here end
//! at once). A peer machine that vanishes without closing its connections
//! (power loss, a network partition) is not detected: timely sets no timeout
//! on its sockets, and the run waits.

use std::panic::PanicHookInfo;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::{Exchange, Inspect};
use timely::dataflow::{ProbeHandle, Scope};
use timely::CommunicationConfig;

use super::batch::BatchTime;
use super::error::{panic_message, FlowError};
use super::state::RunState;

/// How often a worker of a cluster run checks whether its process's run has
/// failed (and, at the end, whether the run is done).
const NOTICE_POLL: Duration = Duration::from_millis(50);

/// Prefix of the panics of timely's communication threads (timely keeps it
/// stable for callers that look for it, `timely_communication::...::tcp`).
const COMMUNICATION_ERROR: &str = "timely communication error";

/// Panics that follow from a communication panic: a worker reading a queue
/// the failed thread poisoned, and the join of the failed threads.
const CONSEQUENCES: [&str; 3] = [
    "MergeQueue poisoned",
    "Send thread panic",
    "Recv thread panic",
];

/// One cluster run in progress in this process.
struct Watch {
    state: Arc<RunState>,
    /// The other processes' addresses, by process index.
    addresses: Vec<String>,
    /// Whether a peer was lost (so the panics that follow are expected).
    lost: AtomicBool,
}

static WATCHES: Mutex<Vec<Weak<Watch>>> = Mutex::new(Vec::new());

/// Keeps a cluster run's watch registered; dropping it ends the watch.
pub(crate) struct WatchGuard(Option<Arc<Watch>>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        if let Some(watch) = self.0.take() {
            drop(watch);
            let mut watches = WATCHES.lock().unwrap_or_else(|e| e.into_inner());
            watches.retain(|w| w.strong_count() > 0);
        }
    }
}

/// Watches for lost peers during a run with `comm` (only cluster runs have
/// peers; with threads the guard does nothing).
pub(crate) fn watch(comm: &CommunicationConfig, state: &Arc<RunState>) -> WatchGuard {
    let CommunicationConfig::Cluster { addresses, .. } = comm else {
        return WatchGuard(None);
    };
    install_hook();
    let watch = Arc::new(Watch {
        state: state.clone(),
        addresses: addresses.clone(),
        lost: AtomicBool::new(false),
    });
    WATCHES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Arc::downgrade(&watch));
    WatchGuard(Some(watch))
}

/// Joins timely's worker threads (`join`) and, through its drop, the
/// communication threads, whose panic on a lost peer would otherwise end the
/// calling thread. Returns the workers' panics (as timely words them); a
/// failure of the communication threads is recorded in `state` (after a
/// recorded [`FlowError::PeerLost`], which stays the run's error).
pub(crate) fn join_workers(
    join: impl FnOnce() -> Vec<Result<(), String>>,
    state: &RunState,
) -> Vec<String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(join)) {
        Ok(results) => results.into_iter().filter_map(Result::err).collect(),
        Err(panic) => {
            state.fail(FlowError::Timely(format!(
                "timely's communication threads failed: {}",
                panic_message(&*panic)
            )));
            Vec::new()
        }
    }
}

/// News from process `process`, on its way to worker `dest` of another process.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Notice {
    dest: u64,
    process: u64,
    news: News,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum News {
    /// The process's run failed with this error.
    Failed(String),
    /// The process's device owners have all done their training steps.
    Done,
}

/// The failure this process would tell its peers about: its own, not one
/// it learned from them (a lost peer cannot be told, and a failed one knows).
fn own_failure(state: &RunState) -> Option<String> {
    state.with_failure(|f| match f {
        None | Some(FlowError::PeerLost { .. } | FlowError::PeerFailed { .. }) => None,
        Some(e) => Some(e.to_string()),
    })
}

/// Builds, on every worker of a cluster run with `threads` workers per
/// process, the operators that send this process's failure, and the end of
/// its training, to every worker of the other processes and record theirs
/// in `state` (see the module docs). The sending operator polls `state`
/// every [`NOTICE_POLL`] and lets go of its capability once `probe` (the end
/// of the graph) is done and this process's device threads have ended, so a
/// run that ends well ends at most one poll later, and in no process before
/// every process's device stages have finished (`finish`).
pub(crate) fn notices(
    scope: Scope<'_, BatchTime>,
    threads: usize,
    probe: ProbeHandle<BatchTime>,
    state: Arc<RunState>,
) {
    let me = scope.index();
    let peers = scope.peers();
    let threads = threads.max(1);
    let process = me / threads;
    let sender_state = state.clone();
    // Only worker 0 of a process tells of its end of training: the others
    // would repeat it.
    let teller = me.is_multiple_of(threads);
    source::<_, CapacityContainerBuilder<Vec<Notice>>, _, _>(scope, "Notices", move |cap, info| {
        let activator = scope.activator_for(info.address);
        let mut cap = Some(cap);
        let mut told_done = !teller;
        move |output| {
            let Some(c) = cap.as_ref() else { return };
            if probe.with_frontier(|f| f.is_empty()) {
                // Held until this process's device threads have ended (their
                // stages' `finish`: final weights, cache chunks): the run then
                // ends in no process before every process's outputs are
                // written, so process 0 can act on all of them afterwards.
                if sender_state.device_threads_running() > 0 {
                    activator.activate_after(NOTICE_POLL);
                    return;
                }
                cap = None;
                return;
            }
            let mut tell = |news: News| {
                let mut session = output.session(c);
                for dest in (0..peers).filter(|w| w / threads != process) {
                    session.give(Notice {
                        dest: dest as u64,
                        process: process as u64,
                        news: news.clone(),
                    });
                }
            };
            if sender_state.aborted() {
                if let Some(message) = own_failure(&sender_state) {
                    tell(News::Failed(message));
                }
                // Told once (or nothing to tell); the run drains.
                cap = None;
                return;
            }
            if !told_done && sender_state.local_devices_done() {
                tell(News::Done);
                told_done = true;
            }
            activator.activate_after(NOTICE_POLL);
        }
    })
    .exchange(|n: &Notice| n.dest)
    .inspect(move |n: &Notice| match &n.news {
        News::Failed(message) => state.fail(FlowError::PeerFailed {
            process: n.process as usize,
            message: message.clone(),
        }),
        News::Done => state.process_done(n.process as usize),
    });
}

fn install_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !on_panic(info) {
                previous(info);
            }
        }));
    });
}

/// The remote process a communication thread named `timely:recv-K` or
/// `timely:send-K` talks to.
fn remote_process(thread: &str) -> Option<usize> {
    let rest = thread
        .strip_prefix("timely:recv-")
        .or_else(|| thread.strip_prefix("timely:send-"))?;
    rest.parse().ok()
}

/// Handles a panic of a watched run; `false` when it is not one (the previous
/// hook reports it).
fn on_panic(info: &PanicHookInfo<'_>) -> bool {
    let message = panic_message(info.payload());
    let thread = std::thread::current();
    let watches: Vec<Arc<Watch>> = WATCHES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    if watches.is_empty() {
        return false;
    }
    if message.starts_with(COMMUNICATION_ERROR) {
        let Some(process) = thread.name().and_then(remote_process) else {
            return false;
        };
        for w in &watches {
            w.lost.store(true, Ordering::SeqCst);
            let detail = message
                .strip_prefix(COMMUNICATION_ERROR)
                .unwrap_or(&message)
                .trim_start_matches(':')
                .trim();
            w.state.fail(FlowError::PeerLost {
                process,
                address: w.addresses.get(process).cloned().unwrap_or_default(),
                detail: detail.to_owned(),
            });
        }
        return true;
    }
    CONSEQUENCES.iter().any(|c| message.starts_with(c))
        && watches.iter().any(|w| w.lost.load(Ordering::SeqCst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn communication_threads_name_their_remote_process() {
        assert_eq!(remote_process("timely:recv-1"), Some(1));
        assert_eq!(remote_process("timely:send-12"), Some(12));
        assert_eq!(remote_process("timely:work-0"), None);
        assert_eq!(remote_process("main"), None);
    }

    #[test]
    fn a_panicking_join_becomes_the_run_s_error() {
        let state = RunState::default();
        let panics = join_workers(|| panic!("Send thread panic: Any {{ .. }}"), &state);
        assert!(panics.is_empty());
        assert!(state.aborted());
        let err = state.take_failure().unwrap().to_string();
        assert!(err.contains("communication threads failed"), "{err}");
        let panics = join_workers(|| vec![Ok(()), Err("boom".into())], &state);
        assert_eq!(panics, vec!["boom".to_owned()]);
    }
}
