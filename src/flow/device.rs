//! Device stages: one dedicated thread per device owns the device state (tch
//! models, optimizers; tensors are not `Sync` and grad mode is thread-local).
//! The timely operator talks to it through two bounded crossbeam channels with
//! `try_send`/`try_recv` only, never blocking a worker; the thread wakes the
//! operator with a `SyncActivator` when a result is ready.
//!
//! A device batch is the union of every worker's share of batch t, complete
//! once the operator's input frontiers have passed t, sorted by `(worker, seq)`:
//! batches reach the device in timestamp order, each in a fixed order. Every
//! source sends every device owner a mark per batch it emits, so every device
//! sees every batch, its share possibly empty (what replicas that reduce
//! gradients per batch need), and each batch carries every source's cursor.
//!
//! With replicas (`flow.devices > 1`), the operator also forwards its device
//! thread's gradient contributions as chunks on a second stream, at the time
//! of the batch being trained (see [`super::allreduce`]).

use std::collections::{BTreeMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender, TryRecvError, TrySendError};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Capability, InputCapability, OkErr, Operator};
use timely::dataflow::Stream;
use timely::scheduling::SyncActivator;

use super::allreduce::{
    offer_replica_link, split, withdraw_replica_link, Contribution, GradChunk, Reduced,
    ReplicaLink, ReplicaPlace,
};
use super::batch::{BatchMark, BatchReport, BatchTime, Sample, StageError};
use super::error::{panic_message, FlowError};
use super::length::{offer_run_length, RunLength};
use super::stage::{DeviceBatch, DeviceStage};
use super::state::RunState;
use super::telemetry::{StageKind, StageMetrics, Telemetry};
use crate::data::Cursor;

/// Builds a device stage on the device thread.
pub type DeviceStageCtor = Box<dyn FnOnce() -> Result<Box<dyn DeviceStage>, FlowError> + Send>;

/// What runs on one device.
pub struct DeviceSpec {
    /// Device name in metrics and thread names (`cpu`, `cuda:0`, ...).
    pub device: String,
    /// Stages in order, each with its name.
    pub stages: Vec<(String, DeviceStageCtor)>,
    /// Depth of each channel between operator and thread (batches).
    pub channel_depth: usize,
    /// Whether reports carry the keys of their batch (tests, audits).
    pub keep_keys: bool,
    /// This device's place among the replicas (`flow.devices > 1`).
    pub replica: Option<ReplicaSpec>,
    /// The run's length, offered to the stages while they are built
    /// ([`super::length::run_length`]).
    pub length: Option<RunLength>,
}

/// Replica `index` of `replicas`, and where its reduced gradients arrive
/// (from the all-reduce's gather operator, [`super::allreduce`]).
#[derive(Debug)]
pub struct ReplicaSpec {
    pub index: usize,
    /// The index among this process's replicas (`cuda:K + local_index`).
    pub local_index: usize,
    pub replicas: usize,
    /// This replica's process, and how many processes own replicas
    /// (processes own the first `flow.devices` workers, in order).
    pub process: (usize, usize),
    pub reduced: Receiver<Reduced>,
}

impl std::fmt::Debug for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.stages.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("DeviceSpec")
            .field("device", &self.device)
            .field("stages", &names)
            .field("channel_depth", &self.channel_depth)
            .finish()
    }
}

enum Reply {
    Done {
        batch: DeviceBatch,
        errors: Vec<StageError>,
    },
    Failed(FlowError),
}

/// The operator's end of a running device thread.
struct DeviceLink {
    jobs: Option<Sender<DeviceBatch>>,
    replies: Receiver<Reply>,
    /// Gradient contributions of the device thread (replicas only).
    contributions: Option<Receiver<Contribution>>,
    /// The replica index chunks are sent under.
    replica: u32,
    thread: Option<JoinHandle<()>>,
    /// The device's name and the run's state, for a link dropped mid-run.
    device: String,
    state: Arc<RunState>,
}

impl DeviceLink {
    /// Close the job channel and wait for the thread, which then has nothing
    /// left to do (every batch sent has been answered, or it has failed).
    /// A failure the thread reported and the operator has not read yet (a
    /// stage that could not be built, in a run with no batch for this
    /// device) still fails the run.
    fn shut_down(&mut self, device: &str, state: &RunState) {
        self.jobs = None;
        if let Some(handle) = self.thread.take() {
            if let Err(panic) = handle.join() {
                state.fail(FlowError::DeviceThread {
                    device: device.to_owned(),
                    message: panic_message(&*panic),
                });
            }
        }
        while let Ok(reply) = self.replies.try_recv() {
            if let Reply::Failed(err) = reply {
                state.fail(err);
            }
        }
    }
}

impl Drop for DeviceLink {
    /// A link dropped before [`DeviceLink::shut_down`] (a worker that stops
    /// in the middle of a run, e.g. on a lost peer process): the run has
    /// failed, and the device thread must not outlive it, or the process
    /// exits while the thread still runs libtorch (a crash in libtorch's
    /// exit-time destructors). Marks the run failed (so the thread skips
    /// `finish` and writes nothing), closes its channels and waits for it: it
    /// ends after its current batch (a replica waiting for its reduced
    /// gradient sees the abort flag within `allreduce::WAIT_POLL`).
    fn drop(&mut self) {
        let Some(handle) = self.thread.take() else {
            return;
        };
        self.state.fail(FlowError::DeviceThread {
            device: self.device.clone(),
            message: "the dataflow stopped before the device finished its batches".into(),
        });
        self.jobs = None;
        self.replies = crossbeam_channel::never();
        let _ = handle.join();
    }
}

/// Counts a device thread as running until it ends, however it ends
/// ([`RunState::device_threads_running`]).
struct RunningThread(Arc<RunState>);

impl Drop for RunningThread {
    fn drop(&mut self) {
        self.0.device_thread_ended();
    }
}

fn spawn_device(
    spec: DeviceSpec,
    activator: SyncActivator,
    telemetry: &Telemetry,
    device_metrics: Arc<StageMetrics>,
    state: Arc<RunState>,
) -> Result<DeviceLink, FlowError> {
    let (job_tx, job_rx) = bounded::<DeviceBatch>(spec.channel_depth.max(1));
    let (reply_tx, reply_rx) = bounded::<Reply>(spec.channel_depth.max(1));
    let stage_metrics: Vec<Arc<StageMetrics>> = spec
        .stages
        .iter()
        .map(|(name, _)| telemetry.stage(name, StageKind::Device))
        .collect();
    let stages = spec.stages;
    let length = spec.length;
    let time = Arc::new(AtomicU64::new(0));
    let (replica, link, contributions) = match spec.replica {
        Some(r) => {
            let (tx, rx) = unbounded();
            let link = ReplicaLink::new(
                ReplicaPlace {
                    index: r.index,
                    local_index: r.local_index,
                    replicas: r.replicas,
                    process: r.process,
                },
                time.clone(),
                tx,
                r.reduced,
                activator.clone(),
                state.clone(),
            );
            (r.index as u32, Some(link), Some(rx))
        }
        None => (0, None, None),
    };
    let (device_name, link_state) = (spec.device.clone(), state.clone());
    state.device_thread_started();
    let running = RunningThread(state.clone());
    let thread = std::thread::Builder::new()
        .name(format!("device-{}", spec.device))
        .spawn(move || {
            let _running = running;
            device_loop(
                stages,
                stage_metrics,
                device_metrics,
                (job_rx, reply_tx),
                (link, time, length),
                activator,
                &state,
            )
        })
        .map_err(|e| FlowError::DeviceThread {
            device: spec.device.clone(),
            message: format!("could not start the thread: {e}"),
        })?;
    Ok(DeviceLink {
        jobs: Some(job_tx),
        replies: reply_rx,
        contributions,
        replica,
        thread: Some(thread),
        device: device_name,
        state: link_state,
    })
}

/// The device thread: build the stages here, then run every batch through
/// them. A replica's link is offered to the stages while they are built
/// ([`super::allreduce::take_replica_link`]), and so is the run's length
/// ([`super::length::run_length`]); `time` tells the link which batch is
/// being processed.
#[allow(clippy::type_complexity)]
fn device_loop(
    ctors: Vec<(String, DeviceStageCtor)>,
    stage_metrics: Vec<Arc<StageMetrics>>,
    device_metrics: Arc<StageMetrics>,
    (jobs, replies): (Receiver<DeviceBatch>, Sender<Reply>),
    (link, time, length): (Option<ReplicaLink>, Arc<AtomicU64>, Option<RunLength>),
    activator: SyncActivator,
    state: &RunState,
) {
    let fail = |err: FlowError| {
        let _ = replies.send(Reply::Failed(err));
        let _ = activator.activate();
    };
    let mut stages = Vec::new();
    offer_replica_link(link);
    offer_run_length(length);
    for (name, ctor) in ctors {
        match catch_unwind(AssertUnwindSafe(ctor)) {
            Ok(Ok(stage)) => stages.push((name, stage)),
            Ok(Err(err)) => {
                withdraw_replica_link();
                return fail(err);
            }
            Err(panic) => {
                withdraw_replica_link();
                return fail(FlowError::StagePanicked {
                    stage: name,
                    message: panic_message(&*panic),
                });
            }
        }
    }
    withdraw_replica_link();
    offer_run_length(None);
    let mut done = false;
    loop {
        let waiting = Instant::now();
        let Ok(mut batch) = jobs.recv() else { break };
        time.store(batch.time, Ordering::SeqCst);
        device_metrics
            .idle_ns
            .fetch_add(waiting.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let busy = Instant::now();
        let items = batch.samples.len() as u64;
        let mut errors = Vec::new();
        for ((name, stage), metrics) in stages.iter_mut().zip(&stage_metrics) {
            let started = Instant::now();
            let n = batch.samples.len() as u64;
            match catch_unwind(AssertUnwindSafe(|| stage.process(&mut batch))) {
                Ok(Ok(())) => metrics.record(n, started.elapsed()),
                Ok(Err(failure)) if failure.fatal => {
                    return fail(FlowError::StageFatal {
                        stage: name.clone(),
                        time: batch.time,
                        reason: failure.to_string(),
                    })
                }
                Ok(Err(failure)) => {
                    metrics.record(n, started.elapsed());
                    tracing::warn!("stage `{name}` rejected batch {}: {failure}", batch.time);
                    errors.extend(batch.samples.drain(..).map(|s| StageError {
                        stage: name.clone(),
                        reason: failure.reason.to_owned(),
                        key: Some(s.key),
                        addr: Some(s.addr),
                    }));
                }
                Err(panic) => {
                    return fail(FlowError::StagePanicked {
                        stage: name.clone(),
                        message: panic_message(&*panic),
                    })
                }
            }
        }
        device_metrics.record(items, busy.elapsed());
        if !done && !stages.is_empty() && stages.iter().all(|(_, s)| s.done()) {
            done = true;
            state.device_done();
        }
        if replies.send(Reply::Done { batch, errors }).is_err() {
            break; // the operator is gone
        }
        let _ = activator.activate();
    }
    // Every batch is done: let stages write what they hold (final weights,
    // open files). Skipped when the run is stopping on an error.
    if state.aborted() {
        return;
    }
    for (name, stage) in &mut stages {
        match catch_unwind(AssertUnwindSafe(|| stage.finish())) {
            Ok(Ok(())) => {}
            Ok(Err(failure)) => state.fail(FlowError::StageFinish {
                stage: name.clone(),
                reason: failure.to_string(),
            }),
            Err(panic) => state.fail(FlowError::StagePanicked {
                stage: name.clone(),
                message: panic_message(&*panic),
            }),
        }
    }
}

/// What a device owner holds of batch t until both of its inputs have passed
/// t: the capability for t, the samples routed here, and the sources' marks.
struct Part {
    cap: Capability<BatchTime>,
    samples: Vec<Sample>,
    marks: Vec<BatchMark>,
}

impl Part {
    fn new(cap: Capability<BatchTime>) -> Self {
        Self {
            cap,
            samples: Vec::new(),
            marks: Vec::new(),
        }
    }

    /// Moves an input's `data` at `cap`'s time into that time's part (into
    /// the vector `field` picks); once the stage has `failed`, drops it.
    fn stash<'a, T: 'a>(
        pending: &mut BTreeMap<BatchTime, Part>,
        failed: bool,
        cap: InputCapability<BatchTime>,
        port: usize,
        data: impl Iterator<Item = &'a mut Vec<T>>,
        field: impl Fn(&mut Part) -> &mut Vec<T>,
    ) {
        if failed {
            data.for_each(|d| d.clear());
            return;
        }
        let Some(cap) = cap.retain_least(port) else {
            return;
        };
        let part = pending.entry(*cap.time()).or_insert_with(|| Part::new(cap));
        for d in data {
            field(part).append(d);
        }
    }
}

/// The device that owns the sample with `key` among `devices` devices, as an
/// index in `0..devices` (worker d owns device d): the exchange routes the
/// sample there. Stable: FNV-1a of the key, the same on every machine and
/// Rust version, unlike `DefaultHasher`. (Not a device *setting*: that is
/// [`crate::device::DeviceName`].)
pub fn owner_of_key(key: &str, devices: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % devices.max(1) as u64
}

/// Streams of samples (already exchanged to their device owner) that can be
/// handed to a device.
pub trait DeviceStageExt<'scope> {
    /// Run `spec` (on workers that own a device; `None` elsewhere) and report
    /// each batch. `marks` are every source's [`BatchMark`]s, sent to this
    /// device owner ([`super::source::marks_to_devices`]): a batch is formed
    /// for every time with a mark or a sample, once both inputs have passed it.
    /// The second stream holds a replica's gradient chunks for the all-reduce
    /// (empty without replicas).
    #[allow(clippy::type_complexity)]
    fn device_stage(
        self,
        marks: Stream<'scope, BatchTime, Vec<BatchMark>>,
        spec: Option<DeviceSpec>,
        telemetry: Arc<Telemetry>,
        state: Arc<RunState>,
    ) -> (
        Stream<'scope, BatchTime, Vec<BatchReport>>,
        Stream<'scope, BatchTime, Vec<GradChunk>>,
    );
}

impl<'scope> DeviceStageExt<'scope> for Stream<'scope, BatchTime, Vec<Sample>> {
    fn device_stage(
        self,
        marks: Stream<'scope, BatchTime, Vec<BatchMark>>,
        spec: Option<DeviceSpec>,
        telemetry: Arc<Telemetry>,
        state: Arc<RunState>,
    ) -> (
        Stream<'scope, BatchTime, Vec<BatchReport>>,
        Stream<'scope, BatchTime, Vec<GradChunk>>,
    ) {
        let scope = self.scope();
        let device_index = scope.index() as u32;
        let name = spec
            .as_ref()
            .map(|s| s.device.clone())
            .unwrap_or_else(|| "none".into());
        let keep_keys = spec.as_ref().is_some_and(|s| s.keep_keys);
        let op_name = format!("Device[{name}]");
        type Out = CapacityContainerBuilder<Vec<Result<BatchReport, GradChunk>>>;
        let out = self.binary_frontier::<_, Out, _, _, _, _>(
            marks,
            Pipeline,
            Pipeline,
            &op_name,
            move |_cap, info| {
                let activator = scope.worker().sync_activator_for(info.address.to_vec());
                let device_metrics = spec
                    .as_ref()
                    .map(|s| telemetry.stage(&format!("device:{}", s.device), StageKind::Device));
                let spawned = spec
                    .zip(device_metrics.clone())
                    .map(|(s, m)| spawn_device(s, activator, &telemetry, m, state.clone()));
                let mut link = match spawned {
                    Some(Ok(link)) => Some(link),
                    Some(Err(e)) => {
                        state.fail(e);
                        None
                    }
                    None => None,
                };
                let mut failed = link.is_none();
                // Batch parts not yet complete, complete batches not yet sent, and
                // batches on the device: each with the capability for its time.
                let mut pending: BTreeMap<BatchTime, Part> = BTreeMap::new();
                let mut ready: VecDeque<(Capability<BatchTime>, DeviceBatch)> = VecDeque::new();
                let mut on_device: VecDeque<(Capability<BatchTime>, usize)> = VecDeque::new();
                // The last cursor each source worker reported, by worker.
                let mut cursors: BTreeMap<u32, Cursor> = BTreeMap::new();
                move |(input, frontier), (mark_input, mark_frontier), output| {
                    let port = output.output_index();
                    input.for_each_stamp(|cap, data| {
                        Part::stash(&mut pending, failed, cap, port, data, |p| &mut p.samples)
                    });
                    mark_input.for_each_stamp(|cap, data| {
                        Part::stash(&mut pending, failed, cap, port, data, |p| &mut p.marks)
                    });
                    let Some(dev) = link.as_mut() else { return };
                    // Batches both frontiers have passed are complete.
                    while let Some(entry) = pending.first_entry() {
                        if frontier.less_equal(entry.key()) || mark_frontier.less_equal(entry.key())
                        {
                            break;
                        }
                        let time = *entry.key();
                        let Part {
                            cap,
                            mut samples,
                            marks,
                        } = entry.remove();
                        samples.sort_by_key(|s| (s.worker, s.seq));
                        for m in marks {
                            cursors.insert(m.worker, m.cursor);
                        }
                        ready.push_back((
                            cap,
                            DeviceBatch {
                                time,
                                samples,
                                metrics: BTreeMap::new(),
                                more_metrics: Vec::new(),
                                cursors: cursors.values().cloned().collect(),
                            },
                        ));
                    }
                    // Hand complete batches to the device while its channel has room.
                    while let Some((cap, batch)) = ready.pop_front() {
                        let Some(jobs) = dev.jobs.as_ref() else { break };
                        let n = batch.samples.len();
                        match jobs.try_send(batch) {
                            Ok(()) => on_device.push_back((cap, n)),
                            Err(TrySendError::Full(batch)) => {
                                ready.push_front((cap, batch));
                                break;
                            }
                            Err(TrySendError::Disconnected(_)) => break,
                        }
                    }
                    // Collect finished batches.
                    loop {
                        match dev.replies.try_recv() {
                            Ok(Reply::Done { batch, errors }) => {
                                let Some((cap, _)) = on_device.pop_front() else {
                                    break;
                                };
                                debug_assert_eq!(*cap.time(), batch.time);
                                telemetry.batches_done.fetch_add(1, Ordering::Relaxed);
                                telemetry
                                    .samples_done
                                    .fetch_add(batch.samples.len() as u64, Ordering::Relaxed);
                                let report = BatchReport {
                                    time: batch.time,
                                    device: device_index,
                                    keys: if keep_keys {
                                        batch.samples.iter().map(|s| s.key.clone()).collect()
                                    } else {
                                        Vec::new()
                                    },
                                    samples: batch.samples.len() as u64,
                                    metrics: batch.metrics,
                                    more_metrics: batch.more_metrics,
                                    errors,
                                };
                                output.session(&cap).give(Ok(report));
                            }
                            Ok(Reply::Failed(err)) => {
                                state.fail(err);
                                failed = true;
                                break;
                            }
                            Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
                        }
                    }
                    // Forward the device thread's gradient contributions, at the
                    // time of the batch they belong to (on the device now).
                    while let Some(Ok(c)) = dev.contributions.as_ref().map(|r| r.try_recv()) {
                        match on_device.iter().find(|(cap, _)| *cap.time() == c.time) {
                            Some((cap, _)) => {
                                output
                                    .session(cap)
                                    .give_iterator(split(c, dev.replica).into_iter().map(Err));
                            }
                            None => {
                                state.fail(FlowError::DeviceThread {
                                    device: name.clone(),
                                    message: format!(
                                        "a gradient for batch {} came from the device thread, \
                                     which does not hold that batch",
                                        c.time
                                    ),
                                });
                                failed = true;
                                break;
                            }
                        }
                    }
                    let held: usize = pending.values().map(|p| p.samples.len()).sum::<usize>()
                        + ready.iter().map(|(_, b)| b.samples.len()).sum::<usize>()
                        + on_device.iter().map(|(_, n)| *n).sum::<usize>();
                    telemetry
                        .max_device_held
                        .fetch_max(held as u64, Ordering::Relaxed);
                    if let Some(m) = &device_metrics {
                        let queued = dev.jobs.as_ref().map_or(0, |j| j.len());
                        m.set_queue((ready.len() + queued) as u64);
                    }
                    if failed {
                        pending.clear();
                        ready.clear();
                        on_device.clear();
                        dev.shut_down(&name, &state);
                        link = None;
                    } else if frontier.is_empty()
                        && pending.is_empty()
                        && ready.is_empty()
                        && on_device.is_empty()
                    {
                        dev.shut_down(&name, &state);
                        link = None;
                    }
                }
            },
        );
        out.ok_err(|r| r)
    }
}
