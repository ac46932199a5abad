//! Running a pipeline: builds the same graph on every worker (threads of this
//! process, and processes in timely's cluster mode) and returns the summary.
//!
//! ```text
//! Source (worker w of W) ─► Cpu[stage]… ─► exchange to device owner ─► Device[..]
//!      │ │ marks (batch, worker, cursor) ─► to every device owner ────────►│
//!      │ skips                │ rejects                                   │ reports
//!      └──────────────► errors ─► exchange to worker 0 ─► counts          └─► exchange to 0 ─► metrics sink ─► probe
//! ```

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use timely::dataflow::operators::{Concatenate, Exchange, Inspect, OkErr, Probe};
use timely::dataflow::ProbeHandle;
use timely::{CommunicationConfig, WorkerConfig};

use super::allreduce::AllReduceExt;
use super::batch::{BatchReport, Sample, StageError};
use super::cpu::CpuStageExt;
use super::device::{owner_of_key, DeviceSpec, DeviceStageExt, ReplicaSpec};
use super::error::FlowError;
use super::length::RunLength;
use super::peers;
use super::pipeline::{FlowConfig, Pipeline};
use super::registry::Registry;
use super::sink::MetricsSink;
use super::source::{
    marked_shard_source, marks_to_devices, open_source, ResumePoint, SourceBatching,
};
use super::stage::{CpuStage, StageFailure};
use super::state::RunState;
use super::telemetry::{Snapshot, Telemetry};
use crate::data::ShardIndex;
use crate::device::DeviceName;

/// How to run a pipeline.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Threads and processes (timely's `Thread`, `Process(n)` or `Cluster`).
    pub communication: CommunicationConfig,
    /// Directory for `metrics.jsonl` (none: no log).
    pub run_dir: Option<PathBuf>,
    /// Show a progress bar.
    pub progress: bool,
    /// Keep every batch report with its keys in the summary (tests, audits).
    pub keep_reports: bool,
    /// Cluster mode only: how long this process waits for the cluster to
    /// form (every other process of the hostfile connected) before the run
    /// fails with [`FlowError::ClusterTimeout`]. Must be above zero.
    /// Default [`DEFAULT_JOIN_TIMEOUT`].
    pub join_timeout: Duration,
    /// Cluster mode only: how long a replica waits for the combined gradient
    /// of a batch before the run fails with [`FlowError::CollectiveTimeout`]
    /// (a process whose machine vanished closes no connection, so nothing
    /// else would end the wait). Must be above zero. Default
    /// [`DEFAULT_COLLECTIVE_TIMEOUT`]. Replicas that are threads of one
    /// process wait without a limit.
    pub collective_timeout: Duration,
}

/// Default of [`RunOptions::join_timeout`]: 600 s, torchrun's rendezvous
/// `join_timeout` default (`torch.distributed.elastic.rendezvous`).
pub const DEFAULT_JOIN_TIMEOUT: Duration = Duration::from_secs(600);

/// Default of [`RunOptions::collective_timeout`]: 600 s, the default
/// `timeout` of PyTorch's `init_process_group` for NCCL.
pub const DEFAULT_COLLECTIVE_TIMEOUT: Duration = Duration::from_secs(600);

/// How often the main thread of a cluster run looks at the run's state while
/// it waits for the workers.
const JOIN_POLL: Duration = Duration::from_millis(100);

/// Timely's communication for `workers` threads in this process.
pub fn threads_communication(workers: usize) -> CommunicationConfig {
    if workers <= 1 {
        CommunicationConfig::Thread
    } else {
        CommunicationConfig::Process(workers)
    }
}

impl RunOptions {
    /// `workers` threads in this process, no log, no progress bar.
    pub fn threads(workers: usize) -> Self {
        Self {
            communication: threads_communication(workers),
            run_dir: None,
            progress: false,
            keep_reports: false,
            join_timeout: DEFAULT_JOIN_TIMEOUT,
            collective_timeout: DEFAULT_COLLECTIVE_TIMEOUT,
        }
    }
}

/// What a run reports. In cluster mode, process 0 holds the reports and error
/// counts; every process holds its own stage counters.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub telemetry: Snapshot,
    /// Finished batches in (time, device) order, if kept.
    pub reports: Vec<BatchReport>,
}

impl RunSummary {
    /// Keys processed by the devices, per batch in device order.
    pub fn keys(&self) -> Vec<String> {
        self.reports.iter().flat_map(|r| r.keys.clone()).collect()
    }
}

/// Stands in for a CPU stage that failed to build on one worker, so the graph
/// keeps the same shape on every worker while the run stops.
struct Broken;

impl CpuStage for Broken {
    fn process(&mut self, _: &mut Sample) -> Result<(), StageFailure> {
        Err(StageFailure::new("stage could not be built"))
    }
}

/// Run `pipeline` with the stage types of `registry`.
pub fn run(
    pipeline: &Pipeline,
    registry: &Registry,
    opts: &RunOptions,
) -> Result<RunSummary, FlowError> {
    pipeline.check().map_err(|what| FlowError::Config {
        name: "pipeline",
        what,
    })?;
    let mut placed = pipeline.clone();
    registry.place_stages(&mut placed);
    let pipeline = &placed;
    registry.check(pipeline)?;
    check_devices(&pipeline.flow)?;
    let cluster = matches!(opts.communication, CommunicationConfig::Cluster { .. });
    if cluster && opts.join_timeout.is_zero() {
        return Err(FlowError::Config {
            name: "join_timeout",
            what: "a cluster run needs a time limit above zero to form the cluster \
                   (the CLI's --join-timeout; default 600 s)"
                .into(),
        });
    }
    if cluster && opts.collective_timeout.is_zero() {
        return Err(FlowError::Config {
            name: "collective_timeout",
            what: "a cluster run needs a time limit above zero for a replica's wait for the \
                   other replicas' gradients (the CLI's --collective-timeout; default 600 s)"
                .into(),
        });
    }
    let path = pipeline.source.path.clone().ok_or(FlowError::Config {
        name: "source.path",
        what: "no shards given: set `path` in [source] or pass --data".into(),
    })?;
    let index = Arc::new(ShardIndex::open(&path, &pipeline.source.layout)?);
    // Keys route samples to devices and index per-image state (image
    // embeddings of a batch's rewards, the reward cache): a key shared by two
    // rows would score or train one image as the other. Only the key column
    // is read.
    index.check_unique_keys()?;
    let resume = Arc::new(registry.resume_point(pipeline)?);

    let telemetry = Arc::new(Telemetry::default());
    let state = Arc::new(RunState::default());
    state.expect_devices(&opts.communication, pipeline.flow.devices);
    state.set_collective_timeout(cluster.then_some(opts.collective_timeout));
    let reports = Arc::new(Mutex::new(Vec::new()));
    let progress = opts
        .progress
        .then(|| crate::progress::bar(index.num_rows(), "pipeline", "images"));

    // Worker w of a process with T threads is thread w mod T of its process
    // (timely numbers workers process by process).
    let threads_per_process = match &opts.communication {
        CommunicationConfig::Thread => 1,
        CommunicationConfig::Process(n) | CommunicationConfig::ProcessBinary(n) => *n,
        CommunicationConfig::Cluster { threads, .. } => *threads,
    }
    .max(1);
    let config = timely::Config {
        communication: opts.communication.clone(),
        worker: WorkerConfig::default(),
    };
    let pipeline = Arc::new(pipeline.clone());
    let registry = Arc::new(registry.clone());
    let run_dir = opts.run_dir.clone();
    let keep = opts.keep_reports;
    // In cluster mode, a lost process becomes this run's error.
    let peer_watch = peers::watch(&opts.communication, &state);
    let bar = progress.clone();
    let start = {
        let (telemetry, state, reports) = (telemetry.clone(), state.clone(), reports.clone());
        move || {
            timely::execute(config, move |worker| {
                build_and_run(
                    worker,
                    &pipeline,
                    &registry,
                    &index,
                    &telemetry,
                    &state,
                    run_dir.clone(),
                    progress.clone(),
                    keep.then(|| reports.clone()),
                    &resume,
                    threads_per_process,
                )
            })
        }
    };
    let guards = match &opts.communication {
        CommunicationConfig::Cluster {
            process, addresses, ..
        } => match join_cluster(start, opts.join_timeout) {
            Ok(started) => started,
            Err(Unjoined::TimedOut) => {
                let timeout = || FlowError::ClusterTimeout {
                    process: *process,
                    processes: addresses.len(),
                    waited_s: opts.join_timeout.as_secs_f64(),
                    addresses: addresses.clone(),
                };
                // If the cluster forms after all, the workers the helper
                // thread then starts find the run failed and drain at once.
                state.fail(timeout());
                if let Some(bar) = &bar {
                    bar.finish_and_clear();
                }
                return Err(timeout());
            }
            Err(Unjoined::Failed(detail)) => return Err(FlowError::Timely(detail)),
        },
        _ => start(),
    }
    .map_err(|e| setup_error(&opts.communication, e))?;
    let panics = if cluster {
        join_cluster_workers(guards, &state)
    } else {
        peers::join_workers(|| guards.join(), &state)
    };
    for panic in panics {
        state.fail(FlowError::Timely(format!("a worker panicked: {panic}")));
    }
    drop(peer_watch);
    if let Some(err) = state.take_failure() {
        return Err(err);
    }
    let mut reports = std::mem::take(&mut *reports.lock().unwrap_or_else(|e| e.into_inner()));
    reports.sort_by_key(|r| (r.time, r.device));
    Ok(RunSummary {
        telemetry: telemetry.snapshot(),
        reports,
    })
}

/// Why [`join_cluster`] has no result.
enum Unjoined {
    /// The limit passed.
    TimedOut,
    /// The helper thread could not start or panicked.
    Failed(String),
}

/// Runs `start` (a `timely::execute` in cluster mode, which returns once
/// every process of the hostfile is connected) on a helper thread and waits
/// for it at most `limit`. On time-out the helper thread, which cannot be
/// stopped (timely retries without end), is left behind holding none of the
/// caller's locks, and ends with the process; a `dicoflow` command then
/// exits with the error.
fn join_cluster<T: Send + 'static>(
    start: impl FnOnce() -> T + Send + 'static,
    limit: Duration,
) -> Result<T, Unjoined> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("dicoflow:join".into())
        .spawn(move || {
            // The receiver is gone when the caller gave up waiting.
            let _ = tx.send(start());
        })
        .map_err(|e| {
            Unjoined::Failed(format!("could not start a thread to form the cluster: {e}"))
        })?;
    rx.recv_timeout(limit).map_err(|e| match e {
        RecvTimeoutError::Timeout => Unjoined::TimedOut,
        RecvTimeoutError::Disconnected => {
            Unjoined::Failed("forming the cluster failed: timely's set-up panicked".into())
        }
    })
}

/// Joins the workers of a cluster run ([`peers::join_workers`]) on a helper
/// thread, and stops waiting once a replica's collective time limit has
/// passed ([`FlowError::CollectiveTimeout`]) and this process's device
/// threads have ended: the process that went silent still holds its part of
/// the dataflow, so the workers here would wait for it without end. They are
/// left behind, parked, and end with the process (a `dicoflow` command exits
/// with the error).
fn join_cluster_workers(
    guards: timely::communication::WorkerGuards<()>,
    state: &Arc<RunState>,
) -> Vec<String> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let joining = state.clone();
    let spawned = std::thread::Builder::new()
        .name("dicoflow:workers".into())
        .spawn(move || {
            let _ = tx.send(peers::join_workers(|| guards.join(), &joining));
        });
    if let Err(e) = spawned {
        state.fail(FlowError::Timely(format!(
            "could not start a thread to wait for the workers: {e}"
        )));
        return Vec::new();
    }
    loop {
        match rx.recv_timeout(JOIN_POLL) {
            Ok(panics) => return panics,
            Err(RecvTimeoutError::Disconnected) => {
                return vec!["the thread waiting for the workers panicked".into()]
            }
            Err(RecvTimeoutError::Timeout) => {
                let silent =
                    state.with_failure(|f| matches!(f, Some(FlowError::CollectiveTimeout { .. })));
                if silent && state.device_threads_running() == 0 {
                    return Vec::new();
                }
            }
        }
    }
}

/// The error of a `timely::execute` that could not start. In a cluster run
/// the one failure it reports is this process's own listening socket (it
/// keeps retrying connections to the others), so the error names its address.
fn setup_error(comm: &CommunicationConfig, detail: String) -> FlowError {
    match comm {
        CommunicationConfig::Cluster {
            process, addresses, ..
        } => FlowError::ClusterNotFormed {
            process: *process,
            address: addresses.get(*process).cloned().unwrap_or_default(),
            detail,
        },
        _ => FlowError::Timely(detail),
    }
}

/// Resolves `flow.device` for every replica before any data is read, so that a pipeline
/// naming CUDA on a machine without it is refused at start with the reason.
fn check_devices(flow: &FlowConfig) -> Result<(), FlowError> {
    let last = match flow.device {
        DeviceName::Cuda(k) => DeviceName::Cuda(k + flow.devices.saturating_sub(1)),
        other => other,
    };
    for device in [flow.device, last] {
        device.resolve().map_err(|source| FlowError::Device {
            setting: "flow.device".into(),
            source,
        })?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn build_and_run(
    worker: &mut timely::worker::Worker,
    pipeline: &Pipeline,
    registry: &Registry,
    index: &Arc<ShardIndex>,
    telemetry: &Arc<Telemetry>,
    state: &Arc<RunState>,
    run_dir: Option<PathBuf>,
    progress: Option<indicatif::ProgressBar>,
    reports: Option<Arc<Mutex<Vec<BatchReport>>>>,
    resume: &Option<ResumePoint>,
    threads_per_process: usize,
) {
    let me = worker.index();
    let peers = worker.peers();
    let flow = &pipeline.flow;
    let devices = flow.devices;
    if devices > peers {
        state.fail(FlowError::Config {
            name: "flow.devices",
            what: format!("{devices} devices need at least as many workers, have {peers}"),
        });
    }
    let devices = devices.min(peers);
    let (src, first) = match open_source(
        index.clone(),
        pipeline.source.source_config(),
        me as u32,
        peers as u32,
        resume.as_ref(),
    ) {
        Ok((s, first)) => (Some(s), first),
        Err(e) => {
            state.fail(e);
            (None, 0)
        }
    };
    let cpu: Vec<(String, Box<dyn CpuStage>)> = pipeline
        .cpu
        .iter()
        .map(|spec| {
            let stage = registry.build_cpu(spec).unwrap_or_else(|e| {
                state.fail(e);
                Box::new(Broken)
            });
            (spec.name().to_owned(), stage)
        })
        .collect();
    // Replicas: worker d's device thread receives its reduced gradients here.
    let (reduced_tx, reduced_rx) = if me < devices && devices > 1 {
        let (tx, rx) = crossbeam_channel::unbounded();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let device_spec = if me < devices {
        let mut stages = Vec::new();
        for spec in &pipeline.device {
            match registry.build_device(spec) {
                Ok(ctor) => stages.push((spec.name().to_owned(), ctor)),
                Err(e) => state.fail(e),
            }
        }
        let device = flow.device.replica_label(me, devices);
        Some(DeviceSpec {
            device,
            stages,
            channel_depth: flow.channel_depth,
            keep_keys: reports.is_some(),
            replica: reduced_rx.map(|reduced| ReplicaSpec {
                index: me,
                local_index: me % threads_per_process,
                replicas: devices,
                process: (
                    me / threads_per_process,
                    devices.div_ceil(threads_per_process),
                ),
                reduced,
            }),
            length: Some(RunLength::new(
                index.clone(),
                pipeline.source.source_config(),
                peers as u32,
                flow.batch_size,
            )),
        })
    } else {
        None
    };
    // Only worker 0 receives reports and errors; only it writes the log.
    let sink = if me == 0 {
        match MetricsSink::try_new(
            telemetry.clone(),
            run_dir.as_deref(),
            progress,
            reports,
            resume.as_ref().map(|r| r.after),
        ) {
            Ok(s) => Some(Rc::new(RefCell::new(s))),
            Err(e) => {
                state.fail(e);
                None
            }
        }
    } else {
        None
    };
    let probe = ProbeHandle::new();
    let settings = SourceBatching {
        batch_size: flow.batch_size,
        max_in_flight: flow.max_in_flight,
    };
    worker.dataflow::<u64, _, _>(|scope| {
        let (records, marks) = marked_shard_source(
            scope,
            src,
            settings,
            first,
            probe.clone(),
            telemetry.clone(),
            state.clone(),
        );
        let (mut samples, source_errors) =
            records.ok_err::<Vec<Sample>, _, Vec<StageError>, _, _>(|r| r);
        let mut errors = vec![source_errors];
        for (name, stage) in cpu {
            let (oks, errs) = samples.cpu_stage(&name, stage, telemetry, state.clone());
            samples = oks;
            errors.push(errs);
        }
        let (reports, gradients) = samples
            .exchange(move |s: &Sample| owner_of_key(&s.key, devices))
            .device_stage(
                marks_to_devices(marks, devices),
                device_spec,
                telemetry.clone(),
                state.clone(),
            );
        gradients.all_reduce(devices, reduced_tx, state.clone());
        if peers > threads_per_process {
            peers::notices(scope, threads_per_process, probe.clone(), state.clone());
        }
        let error_sink = sink.clone();
        scope
            .concatenate(errors)
            .exchange(|_: &StageError| 0)
            .inspect(move |e: &StageError| {
                if let Some(s) = &error_sink {
                    s.borrow().on_error(e);
                }
            });
        let report_sink = sink.clone();
        reports
            .exchange(|_: &BatchReport| 0)
            .inspect(move |r: &BatchReport| {
                if let Some(s) = &report_sink {
                    s.borrow_mut().on_report(r);
                }
            })
            .probe_with(&probe);
    });
    while worker.step_or_park(None) {}
    if let Some(s) = sink {
        s.borrow_mut().finish();
    }
}
