//! The Stage API: what user code implements to add a stage to a pipeline.
//!
//! - A [`CpuStage`] runs on every worker and maps a batch to a batch, one
//!   sample at a time; a sample it cannot handle is returned as a
//!   [`StageFailure`] and goes to the error stream, counted by stage name and
//!   reason, while the batch goes on.
//! - A [`DeviceStage`] owns device state (models, optimizers, tensors) and runs
//!   on the device's own thread, created there (tch tensors are not `Sync`,
//!   grad mode is thread-local). All device stages of a pipeline run in order
//!   on that thread, each seeing the whole batch.
//!
//! Stages are registered by type name in a [`super::Registry`] and named in a
//! pipeline file; see `docs/pipelines.md`.

use std::collections::BTreeMap;

use super::batch::{BatchTime, Sample};
use crate::data::Cursor;

/// Why a sample (or a whole device batch) was rejected: a short, stable
/// label (`reason`, a `&'static str`, so runs count per `(stage, reason)`
/// without splitting the count per message) and the detail of this one case
/// beside it (`detail`, logged and shown with fatal or finish errors, never
/// counted by).
///
/// A *fatal* failure is one after which the run cannot go on correctly,
/// because the stage's state has already changed (an optimizer step was
/// taken but its checkpoint could not be written): the flow stops with
/// [`super::FlowError::StageFatal`] instead of counting the batch's samples
/// as rejected and carrying on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageFailure {
    pub reason: &'static str,
    /// What happened in this case (an error message, a path); may be empty.
    pub detail: String,
    pub fatal: bool,
}

impl StageFailure {
    /// The batch (or sample) is rejected; the run goes on.
    pub fn new(reason: &'static str) -> Self {
        Self {
            reason,
            detail: String::new(),
            fatal: false,
        }
    }

    /// The run must stop (see the type's docs).
    pub fn fatal(reason: &'static str) -> Self {
        Self {
            reason,
            detail: String::new(),
            fatal: true,
        }
    }

    /// The same failure with `detail` beside its label.
    pub fn with_detail(mut self, detail: impl std::fmt::Display) -> Self {
        self.detail = detail.to_string();
        self
    }
}

impl std::fmt::Display for StageFailure {
    /// `reason: detail`, or the reason alone without a detail.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.detail.is_empty() {
            f.write_str(self.reason)
        } else {
            write!(f, "{}: {}", self.reason, self.detail)
        }
    }
}

/// A per-sample CPU stage, one instance per worker.
pub trait CpuStage: 'static {
    /// Transform `sample` in place, or reject it.
    fn process(&mut self, sample: &mut Sample) -> Result<(), StageFailure>;
}

/// One batch as a device sees it: the union of every worker's share of batch
/// `time`, sorted by `(worker, seq)` so the order does not depend on arrival.
///
/// Every device owner gets a batch for every time some source emitted, so
/// `samples` may be empty (none of the batch's keys belong to this device, or
/// all its rows were skipped or rejected): a stage must take no optimizer
/// step on an empty share it does not reduce with others, and must not fail.
#[derive(Debug, Default)]
pub struct DeviceBatch {
    pub time: BatchTime,
    pub samples: Vec<Sample>,
    /// Numbers to report for this batch (written to the metrics log).
    pub metrics: BTreeMap<String, f64>,
    /// Further sets of numbers measured at this batch, each logged as a line
    /// of its own after `metrics`'s (a stage that measured the same names
    /// twice here: the validations before and after the batch's step).
    pub more_metrics: Vec<BTreeMap<String, f64>>,
    /// Every source worker's data cursor right after its part of this batch
    /// (for a worker that emitted nothing at `time`: after its last batch
    /// before it), sorted by worker; a worker absent here has emitted no
    /// row yet. What a checkpoint after this batch records.
    pub cursors: Vec<Cursor>,
}

/// A stage on a device thread. Constructed on that thread by its registered
/// constructor, so it may hold non-`Send` state.
pub trait DeviceStage {
    /// Process a batch: it may change or remove samples and add metrics. An
    /// error rejects the whole batch (its samples are counted under `reason`);
    /// the run goes on. A panic stops the run with an error naming the stage.
    fn process(&mut self, batch: &mut DeviceBatch) -> Result<(), StageFailure>;

    /// Whether the stage needs no further batch (a trainer that has taken
    /// all its steps). When every stage of every device of a process is
    /// done, its sources stop reading (nothing is decoded for nothing); the
    /// batches already in flight still reach the stages. Default: never.
    fn done(&self) -> bool {
        false
    }

    /// Called once on the device thread after the last batch of a run that did
    /// not fail: write final results (weights, files). An error fails the run.
    fn finish(&mut self) -> Result<(), StageFailure> {
        Ok(())
    }
}
