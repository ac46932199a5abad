//! Periodic checkpoints and resume, shared by the training stages: a trainer
//! that can save and restore itself ([`Resumable`]) and the stage-side policy
//! ([`StageCheckpoints`]): write `out/checkpoints/step-N` every N steps, keep
//! the last few, and on resume restore the latest and skip the batches it
//! has already trained on. The data order is a function of the seed and a
//! trainer steps once per `accumulate` batches, so the first
//! `step × accumulate` batches of a resumed run are exactly those the
//! checkpoint has seen. Checkpoints are only taken right after an optimizer
//! step (accumulated gradients are not saved).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::nn::VarStore;

use crate::rng::Rng;
use crate::train::checkpoint::{Checkpointer, TrainState};
use crate::train::error::TrainError;
use crate::train::step::{Stepper, TrainerState};

/// Directory, under a stage's `out`, holding its checkpoints.
pub const CHECKPOINTS_DIR: &str = "checkpoints";

/// The latest complete checkpoint of a stage writing to `out`, if any.
pub fn latest_checkpoint(out: &Path) -> Result<Option<PathBuf>, TrainError> {
    Checkpointer::new(out.join(CHECKPOINTS_DIR), 1, None).latest()
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
/// `step` and `rng`.
macro_rules! impl_resumable {
    ($trainer:ty) => {
        impl $crate::train::resumable::Resumable for $trainer {
            fn parts(&mut self) -> $crate::train::resumable::TrainerParts<'_> {
                $crate::train::resumable::TrainerParts {
                    vs: &mut self.vs,
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
                (&self.vs, &self.stepper, self.step, self.rng)
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
    /// Batches (micro-batches) per optimizer step.
    fn batches_per_step(&self) -> u64 {
        self.parts_ref().1.accumulate() as u64
    }
    /// Micro-batches accumulated since the last optimizer step.
    fn pending_batches(&self) -> u32 {
        self.parts_ref().1.pending()
    }
    /// Write a checkpoint (weights, optimizer, loss scale, RNG, step) with
    /// `ck`; only between optimizer steps (accumulated gradients are not
    /// saved). Returns its directory.
    fn checkpoint(
        &self,
        ck: &Checkpointer,
        config: String,
        metrics: BTreeMap<String, f64>,
    ) -> Result<PathBuf, TrainError> {
        let (vs, stepper, step, rng) = self.parts_ref();
        let state = TrainerState {
            step,
            rng,
            config,
            metrics,
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
    /// Batches before this time were trained on before a resume.
    resume_from: u64,
}

impl StageCheckpoints {
    /// Checkpoints of a stage writing to `out`: every `every` steps (0: none),
    /// keeping the `keep_last` most recent.
    pub fn new(out: &Path, every: u64, keep_last: usize) -> Self {
        Self {
            checkpointer: Checkpointer::new(out.join(CHECKPOINTS_DIR), keep_last, None),
            every,
            resume_from: 0,
        }
    }

    /// Restore `trainer` from the latest checkpoint, if there is one, and
    /// remember which batches to skip. Returns the checkpoint used; `None`
    /// means there was none and training starts from scratch.
    pub fn resume<T: Resumable>(&mut self, trainer: &mut T) -> Result<Option<PathBuf>, TrainError> {
        let Some(dir) = self.checkpointer.latest()? else {
            return Ok(None);
        };
        let state = trainer.restore(&dir)?;
        self.resume_from = state.step * trainer.batches_per_step();
        Ok(Some(dir))
    }

    /// Whether batch `time` was trained on before the resume.
    pub fn already_trained(&self, time: u64) -> bool {
        time < self.resume_from
    }

    /// After a step: write a checkpoint if one is due. `config` is the
    /// stage's settings as TOML; `metrics` the step's.
    pub fn after_step<T: Resumable>(
        &self,
        trainer: &T,
        config: impl FnOnce() -> String,
        metrics: &BTreeMap<String, f64>,
    ) -> Result<(), TrainError> {
        let steps = trainer.steps_taken();
        let just_stepped = trainer.pending_batches() == 0 && steps > 0;
        if self.every > 0 && just_stepped && steps.is_multiple_of(self.every) {
            trainer.checkpoint(&self.checkpointer, config(), metrics.clone())?;
        }
        Ok(())
    }
}
