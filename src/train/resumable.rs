//! Periodic checkpoints and resume, shared by the training stages: a trainer
//! that can save and restore itself ([`Resumable`]) and the stage-side policy
//! ([`StageCheckpoints`]): write `out/checkpoints/step-N` every N steps, keep
//! the last few, and on resume restore the latest and skip the batches it
//! has already consumed.
//!
//! Which batches those are is recorded, not derived: each checkpoint holds
//! the dataflow time of the batch after which it was written
//! ([`TrainState::last_batch`]), and a resumed run skips every batch up to
//! and including that time. Counting `step × accumulate` batches instead
//! would be wrong whenever a batch makes no step — all of its rows skipped
//! (failed downloads, undecodable images), too few for the contrastive loss,
//! no cached candidates — and would train one batch twice and never reach
//! the last. Each checkpoint also holds every source worker's data cursor
//! after `last_batch` ([`TrainState::cursors`]), and a resumed run starts
//! its sources there, at time `last_batch + 1` ([`read_resume_point`],
//! `Registry::resume_point`): nothing before the checkpoint is read
//! again. Skipping at the device ([`StageCheckpoints::already_trained`]) is
//! still needed where the sources start earlier: checkpoints without cursors
//! (older versions; the data order is a function of the seed, so the batches
//! up to `last_batch` are exactly those the checkpoint has seen) and
//! pipelines whose resuming stages have checkpoints at different batches.
//! Checkpoints are only taken right after an optimizer
//! step (accumulated gradients are not saved): a crash in the middle of an
//! accumulation cycle loses its micro-batches, which come after
//! `last_batch` and are recomputed by the resumed run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::nn::VarStore;

use crate::data::Cursor;
use crate::flow::source::ResumePoint;
use crate::flow::{FlowError, StageSpec};
use crate::rng::Rng;
use crate::train::checkpoint::{BestSoFar, Checkpointer, TrainState};
use crate::train::error::TrainError;
use crate::train::step::{Stepper, TrainerState};

/// Directory, under a stage's `out`, holding its checkpoints.
pub const CHECKPOINTS_DIR: &str = "checkpoints";

/// The latest complete checkpoint of a stage writing to `out`, if any.
pub fn latest_checkpoint(out: &Path) -> Result<Option<PathBuf>, TrainError> {
    Checkpointer::new(out.join(CHECKPOINTS_DIR), 1, None).latest()
}

/// Where the latest checkpoint of the resumable stage `spec` stands (its
/// `out` setting names the stage's directory): its last batch and every
/// source worker's cursor after it, what the flow engine starts the sources
/// from (`Registry::resume_point`). `None` when the stage has no
/// checkpoint yet, or its checkpoint records no last batch (the stage itself
/// then refuses to resume, with the reason).
///
/// Errors: [`FlowError::Config`] when the checkpoint's `state.json` cannot
/// be read.
pub fn read_resume_point(spec: &StageSpec) -> Result<Option<ResumePoint>, FlowError> {
    let Some(out) = spec.settings.get("out").and_then(|v| v.as_str()) else {
        return Ok(None);
    };
    let config_err = |e: TrainError| FlowError::Config {
        name: "resume",
        what: format!("stage `{}`: {e}", spec.name()),
    };
    let Some(dir) = latest_checkpoint(Path::new(out)).map_err(config_err)? else {
        return Ok(None);
    };
    let state = Checkpointer::read_state(&dir).map_err(config_err)?;
    Ok(state.last_batch.map(|after| ResumePoint {
        stage: spec.name().to_owned(),
        checkpoint: dir,
        after,
        cursors: state.cursors,
    }))
}

/// A trainer's resumable state, borrowed: weights, the optimizer step path
/// (AdamW, accumulation, loss scale), the step count and the RNG.
pub struct TrainerParts<'a> {
    pub vs: &'a mut VarStore,
    pub stepper: &'a mut Stepper,
    pub step: &'a mut u64,
    pub rng: &'a mut Rng,
}

/// Implements [`Resumable`] for a trainer with fields `vs`, `stepper`,
/// `step` and `rng` (`impl_resumable!(T)`), or whose weights are at another
/// field path (`impl_resumable!(T, policy.vs)`).
macro_rules! impl_resumable {
    ($trainer:ty) => {
        $crate::train::resumable::impl_resumable!($trainer, vs);
    };
    ($trainer:ty, $($vs:ident).+) => {
        impl $crate::train::resumable::Resumable for $trainer {
            fn parts(&mut self) -> $crate::train::resumable::TrainerParts<'_> {
                $crate::train::resumable::TrainerParts {
                    vs: &mut self.$($vs).+,
                    stepper: &mut self.stepper,
                    step: &mut self.step,
                    rng: &mut self.rng,
                }
            }
            fn parts_ref(
                &self,
            ) -> (
                &tch::nn::VarStore,
                &$crate::train::step::Stepper,
                u64,
                $crate::rng::Rng,
            ) {
                (&self.$($vs).+, &self.stepper, self.step, self.rng)
            }
        }
    };
}
pub(crate) use impl_resumable;

/// A trainer whose weights, optimizer, RNG and step can be saved and restored.
pub trait Resumable {
    /// The state a checkpoint holds.
    fn parts(&mut self) -> TrainerParts<'_>;
    /// The same, read-only: weights, stepper, step, RNG.
    fn parts_ref(&self) -> (&VarStore, &Stepper, u64, Rng);

    /// Optimizer steps taken.
    fn steps_taken(&self) -> u64 {
        self.parts_ref().2
    }
    /// Micro-batches accumulated since the last optimizer step.
    fn pending_batches(&self) -> u32 {
        self.parts_ref().1.pending()
    }
    /// Write a checkpoint (weights, optimizer, loss scale, RNG, step) with
    /// `ck`; only between optimizer steps (accumulated gradients are not
    /// saved). Returns its directory. It records no batch time, so a
    /// training stage cannot resume from it: stages use
    /// [`Resumable::checkpoint_after_batch`].
    fn checkpoint(
        &self,
        ck: &Checkpointer,
        config: String,
        metrics: BTreeMap<String, f64>,
    ) -> Result<PathBuf, TrainError> {
        self.checkpoint_after_batch(ck, None, &[], config, metrics, None)
    }
    /// [`Resumable::checkpoint`], recording `last_batch`: the dataflow time
    /// of the last batch consumed (see [`TrainState::last_batch`]), every
    /// source worker's data cursor after it ([`TrainState::cursors`]) and the
    /// best validation result so far ([`TrainState::best`]).
    fn checkpoint_after_batch(
        &self,
        ck: &Checkpointer,
        last_batch: Option<u64>,
        cursors: &[Cursor],
        config: String,
        metrics: BTreeMap<String, f64>,
        best: Option<BestSoFar>,
    ) -> Result<PathBuf, TrainError> {
        let (vs, stepper, step, rng) = self.parts_ref();
        let state = TrainerState {
            step,
            last_batch,
            cursors: cursors.to_vec(),
            rng,
            config,
            metrics,
            best,
        };
        stepper.save_checkpoint(vs, ck, state)
    }
    /// Continue from checkpoint `dir`: weights, optimizer, loss scale, RNG
    /// and step.
    fn restore(&mut self, dir: &Path) -> Result<TrainState, TrainError> {
        let parts = self.parts();
        let state = parts.stepper.load_checkpoint(parts.vs, dir)?;
        *parts.step = state.step;
        *parts.rng = state.rng;
        Ok(state)
    }
}

/// A training stage's checkpoint policy and resume point.
#[derive(Debug, Clone)]
pub struct StageCheckpoints {
    checkpointer: Checkpointer,
    every: u64,
    /// Batches at or before this time were consumed before a resume.
    resumed_after: Option<u64>,
    /// The best validation result the resumed checkpoint recorded.
    resumed_best: Option<BestSoFar>,
}

impl StageCheckpoints {
    /// Checkpoints of a stage writing to `out`: every `every` steps (0: none),
    /// keeping the `keep_last` most recent.
    pub fn new(out: &Path, every: u64, keep_last: usize) -> Self {
        Self {
            checkpointer: Checkpointer::new(out.join(CHECKPOINTS_DIR), keep_last, None),
            every,
            resumed_after: None,
            resumed_best: None,
        }
    }

    /// Restore `trainer` from the latest checkpoint, if there is one, and
    /// remember which batches to skip. Returns the checkpoint used; `None`
    /// means there was none and training starts from scratch.
    ///
    /// Errors: [`TrainError::State`] when the checkpoint does not record the
    /// last batch it consumed (written before batch times were recorded):
    /// which batches it has seen cannot be known exactly, so the stage has to
    /// start again without `resume`.
    pub fn resume<T: Resumable>(&mut self, trainer: &mut T) -> Result<Option<PathBuf>, TrainError> {
        let Some(dir) = self.checkpointer.latest()? else {
            return Ok(None);
        };
        let last_batch = Checkpointer::read_state(&dir)?.last_batch;
        let Some(last_batch) = last_batch else {
            return Err(TrainError::State {
                path: dir,
                what: "the checkpoint does not record the last batch it trained on (written \
                       by an older dicoflow, or outside a training stage), so a resume could \
                       train some batches twice or never; run the stage again without \
                       `resume` (or move its `checkpoints` directory away)"
                    .into(),
            });
        };
        let state = trainer.restore(&dir)?;
        self.resumed_after = Some(last_batch);
        self.resumed_best = state.best;
        Ok(Some(dir))
    }

    /// The last batch time consumed before the resume, once resumed.
    pub fn resumed_after(&self) -> Option<u64> {
        self.resumed_after
    }

    /// The best validation result recorded by the checkpoint resumed from
    /// (`None` before a resume, or when it recorded none).
    pub fn resumed_best(&self) -> Option<&BestSoFar> {
        self.resumed_best.as_ref()
    }

    /// Whether batch `time` was consumed before the resume (at or before the
    /// checkpoint's `last_batch`).
    pub fn already_trained(&self, time: u64) -> bool {
        self.resumed_after.is_some_and(|last| time <= last)
    }

    /// After the trainer has consumed batch `time`: write a checkpoint if one
    /// is due (right after every `every`-th optimizer step), recording
    /// `time` as its last batch and `cursors` (the batch's
    /// [`crate::flow::DeviceBatch::cursors`]) as where every source stands.
    /// `config` is the stage's settings as TOML; `metrics` the step's;
    /// `best` the best validation result so far. Returns the checkpoint
    /// written, if one was.
    pub fn after_batch<T: Resumable>(
        &self,
        trainer: &T,
        time: u64,
        cursors: &[Cursor],
        config: impl FnOnce() -> String,
        metrics: &BTreeMap<String, f64>,
        best: Option<&BestSoFar>,
    ) -> Result<Option<PathBuf>, TrainError> {
        let steps = trainer.steps_taken();
        let just_stepped = trainer.pending_batches() == 0 && steps > 0;
        if self.every > 0 && just_stepped && steps.is_multiple_of(self.every) {
            let dir = trainer.checkpoint_after_batch(
                &self.checkpointer,
                Some(time),
                cursors,
                config(),
                metrics.clone(),
                best.cloned(),
            )?;
            return Ok(Some(dir));
        }
        Ok(None)
    }
}
