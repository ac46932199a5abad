//! The source operator: worker w of W reads its [`ShardSource`] stream and
//! emits batch t (up to `batch_size` rows) at time t. Flow control is end to
//! end: batch t is not opened while the probe at the end of the graph says
//! batch t − K is unfinished (K = `max_in_flight`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{ProbeHandle, Scope, Stream};

use super::batch::{BatchTime, Sample, StageError};
use super::error::FlowError;
use super::state::RunState;
use super::telemetry::{StageKind, Telemetry};
use crate::data::{ShardSource, SourceItem};

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

/// The source operator named `Source`, reading `src` on this worker.
pub fn shard_source<'scope>(
    scope: Scope<'scope, BatchTime>,
    mut src: Option<ShardSource>,
    settings: SourceBatching,
    probe: ProbeHandle<BatchTime>,
    telemetry: Arc<Telemetry>,
    state: Arc<RunState>,
) -> Stream<'scope, BatchTime, Vec<SourceRecord>> {
    let worker = scope.index() as u32;
    let metrics = telemetry.stage("source", StageKind::Source);
    source(scope, "Source", move |cap, info| {
        let activator = scope.activator_for(info.address);
        let mut cap = Some(cap);
        let mut seq = 0u64;
        move |output| {
            let Some(c) = cap.as_mut() else { return };
            if state.aborted() || src.is_none() {
                cap = None;
                src = None;
                return;
            }
            let t = *c.time();
            // Batches finished everywhere are those below the probe's frontier.
            let done_below = probe.with_frontier(|f| f.first().copied().unwrap_or(BatchTime::MAX));
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
                        session.give(Ok(Sample::from_raw(raw, worker, seq)));
                    }
                    Ok(Some(SourceItem::Skipped(skip))) => {
                        session.give(Err(StageError::from_skip(skip)));
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
    })
}
