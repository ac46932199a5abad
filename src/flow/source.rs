//! The source operator: worker w of W reads its [`ShardSource`] stream and
//! emits batch t (up to `batch_size` rows) at time t. Flow control is end to
//! end: batch t is not opened while the probe at the end of the graph says
//! batch t − K is unfinished (K = `max_in_flight`).
//!
//! Beside its rows, every worker sends a [`BatchMark`] per batch it emits to
//! every device owner: a device forms a batch for every time some source
//! emitted, even when none of that batch's samples are routed to it, and the
//! marks carry each worker's data cursor after the batch (what a checkpoint
//! records, and what a resumed run starts its sources from).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Exchange, OkErr};
use timely::dataflow::{ProbeHandle, Scope, Stream};

use super::batch::{BatchMark, BatchTime, Sample, StageError};
use super::error::FlowError;
use super::state::RunState;
use super::telemetry::{StageKind, Telemetry};
use crate::data::{Cursor, ShardIndex, ShardSource, SourceConfig, SourceItem};

/// How long a source held back by flow control waits before looking again.
/// The probe cannot wake it, so it polls; short enough not to starve a device.
pub const FLOW_CONTROL_POLL: Duration = Duration::from_micros(500);

/// What a source emits per row: a sample, or the skip record of a bad row.
pub type SourceRecord = Result<Sample, StageError>;

/// How the source operator cuts its worker's row stream into batches and how
/// far ahead of the end of the graph it may run: the flow-control half of a
/// source, taken from a pipeline's `[flow]` table ([`super::FlowConfig`]).
/// Which rows, in which order, is the other half: [`crate::data::SourceConfig`]
/// (the `[source]` table, [`super::SourceSpec`]).
#[derive(Debug, Clone, Copy)]
pub struct SourceBatching {
    /// Rows per batch from this worker.
    pub batch_size: usize,
    /// K: batch t is not opened while batch t − K is unfinished.
    pub max_in_flight: u64,
}

/// The source operator named `Source`, reading `src` on this worker from
/// time 0; its batch marks are dropped (see [`marked_shard_source`]).
pub fn shard_source<'scope>(
    scope: Scope<'scope, BatchTime>,
    src: Option<ShardSource>,
    settings: SourceBatching,
    probe: ProbeHandle<BatchTime>,
    telemetry: Arc<Telemetry>,
    state: Arc<RunState>,
) -> Stream<'scope, BatchTime, Vec<SourceRecord>> {
    marked_shard_source(scope, src, settings, 0, probe, telemetry, state).0
}

/// What the source operator emits before it is split: a row, or the mark of
/// a batch.
#[derive(Debug, Clone)]
enum SourceEvent {
    Row(SourceRecord),
    Mark(BatchMark),
}

/// The source operator named `Source`, reading `src` on this worker, its
/// first batch at time `first` (0, or the batch after a checkpoint's when a
/// run resumes from the data cursors): the rows, and one [`BatchMark`] per
/// batch the worker emits (with at least one row), carrying the worker's
/// cursor right after that batch. The marks go to every device owner
/// ([`marks_to_devices`]).
///
/// The source stops at the end of its data, when the run fails, and when
/// every training stage is done ([`RunState::stop_requested`]).
#[allow(clippy::type_complexity)]
pub fn marked_shard_source<'scope>(
    scope: Scope<'scope, BatchTime>,
    mut src: Option<ShardSource>,
    settings: SourceBatching,
    first: BatchTime,
    probe: ProbeHandle<BatchTime>,
    telemetry: Arc<Telemetry>,
    state: Arc<RunState>,
) -> (
    Stream<'scope, BatchTime, Vec<SourceRecord>>,
    Stream<'scope, BatchTime, Vec<BatchMark>>,
) {
    let worker = scope.index() as u32;
    let metrics = telemetry.stage("source", StageKind::Source);
    let events: Stream<'scope, BatchTime, Vec<SourceEvent>> =
        source(scope, "Source", move |mut cap, info| {
            let activator = scope.activator_for(info.address);
            cap.downgrade(&first);
            let mut cap = Some(cap);
            let mut seq = 0u64;
            move |output| {
                let Some(c) = cap.as_mut() else { return };
                if state.aborted() || state.stop_requested() || src.is_none() {
                    cap = None;
                    src = None;
                    return;
                }
                let t = *c.time();
                // Batches finished everywhere are those below the probe's frontier.
                let done_below =
                    probe.with_frontier(|f| f.first().copied().unwrap_or(BatchTime::MAX));
                if t >= settings.max_in_flight && done_below <= t - settings.max_in_flight {
                    activator.activate_after(FLOW_CONTROL_POLL);
                    return;
                }
                telemetry
                    .max_in_flight
                    .fetch_max(t + 1 - done_below.min(t), Ordering::Relaxed);
                let started = Instant::now();
                let mut session = output.session(c);
                let mut emitted = 0;
                let mut finished = false;
                while emitted < settings.batch_size {
                    let Some(reader) = src.as_mut() else { break };
                    match reader.next_item() {
                        Ok(Some(SourceItem::Sample(raw))) => {
                            session.give(SourceEvent::Row(Ok(Sample::from_raw(raw, worker, seq))));
                        }
                        Ok(Some(SourceItem::Skipped(skip))) => {
                            session.give(SourceEvent::Row(Err(StageError::from_skip(skip))));
                        }
                        Ok(None) => {
                            finished = true;
                            break;
                        }
                        Err(e) => {
                            state.fail(FlowError::Data(e));
                            finished = true;
                            break;
                        }
                    }
                    seq += 1;
                    emitted += 1;
                }
                if emitted > 0 {
                    if let Some(reader) = src.as_ref() {
                        session.give(SourceEvent::Mark(BatchMark {
                            time: t,
                            worker,
                            cursor: reader.cursor(),
                        }));
                    }
                }
                drop(session);
                metrics.record(emitted as u64, started.elapsed());
                if finished {
                    cap = None;
                    src = None;
                } else {
                    c.downgrade(&(t + 1));
                    activator.activate();
                }
            }
        });
    events.ok_err::<Vec<SourceRecord>, _, Vec<BatchMark>, _, _>(|e| match e {
        SourceEvent::Row(r) => Ok(r),
        SourceEvent::Mark(m) => Err(m),
    })
}

/// Sends every mark to each of the `devices` device owners (workers
/// `0..devices`), so that each forms a batch for every time a source emitted.
pub fn marks_to_devices<'scope>(
    marks: Stream<'scope, BatchTime, Vec<BatchMark>>,
    devices: usize,
) -> Stream<'scope, BatchTime, Vec<BatchMark>> {
    let devices = devices.max(1) as u64;
    marks
        .flat_map(move |m| (0..devices).map(move |d| (d, m.clone())))
        .exchange(|(d, _): &(u64, BatchMark)| *d)
        .map(|(_, m)| m)
}

/// Where a resumed run's sources start: right after batch `after`, each
/// source worker at its cursor from the checkpoint that recorded them.
#[derive(Debug, Clone, PartialEq)]
pub struct ResumePoint {
    /// The stage whose checkpoint this is.
    pub stage: String,
    /// The checkpoint directory.
    pub checkpoint: PathBuf,
    /// The last batch the checkpoint had trained on.
    pub after: BatchTime,
    /// Every source worker's cursor after `after`; empty in checkpoints
    /// written before cursors were recorded.
    pub cursors: Vec<Cursor>,
}

/// Worker `worker` of `workers`'s source and the time of its first batch:
/// at the beginning, or right after the resume point's batch at the
/// worker's cursor (nothing before it is read again).
///
/// Errors: [`FlowError::Config`] when the checkpoint was written by a run
/// with another number of source workers (its cursors cannot be mapped
/// exactly onto this run's), or has no cursor for a worker that has rows;
/// [`FlowError::Data`] when the cursor does not fit the data or the source
/// settings ([`crate::Error::CursorMismatch`]).
pub fn open_source(
    index: Arc<ShardIndex>,
    cfg: SourceConfig,
    worker: u32,
    workers: u32,
    resume: Option<&ResumePoint>,
) -> Result<(ShardSource, BatchTime), FlowError> {
    let Some(point) = resume else {
        return Ok((ShardSource::new(index, cfg, worker, workers)?, 0));
    };
    if let Some(other) = point.cursors.iter().find(|c| c.num_workers != workers) {
        return Err(FlowError::Config {
            name: "resume",
            what: format!(
                "{} (stage `{}`) was written by a run with {} source workers (threads × \
                 processes) and this run has {workers}: each worker's data cursor only fits \
                 the same split of the data. Resume with {} workers in all (`-w`, `-n`), or \
                 move the checkpoints away to start again",
                point.checkpoint.display(),
                point.stage,
                other.num_workers,
                other.num_workers
            ),
        });
    }
    let first = point.after + 1;
    match point.cursors.iter().find(|c| c.worker == worker) {
        Some(cursor) => Ok((ShardSource::resume(index, cfg, cursor)?, first)),
        None => {
            // A worker with rows emits at time 0, so its cursor is in every
            // checkpoint; only a worker without rows has none.
            let src = ShardSource::new(index, cfg, worker, workers)?;
            if src.rows_per_epoch() > 0 {
                return Err(FlowError::Config {
                    name: "resume",
                    what: format!(
                        "{} (stage `{}`) has no data cursor for source worker {worker}, which \
                         has rows: the checkpoint does not belong to this data; move the \
                         checkpoints away to start again",
                        point.checkpoint.display(),
                        point.stage
                    ),
                });
            }
            Ok((src, first))
        }
    }
}
