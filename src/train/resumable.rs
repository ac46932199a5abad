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

use crate::train::captioning::CaptionTrainer;
use crate::train::checkpoint::{Checkpointer, TrainState};
use crate::train::error::TrainError;
use crate::train::evaluator::ContrastiveTrainer;

/// Directory, under a stage's `out`, holding its checkpoints.
pub const CHECKPOINTS_DIR: &str = "checkpoints";

/// The latest complete checkpoint of a stage writing to `out`, if any.
pub fn latest_checkpoint(out: &Path) -> Result<Option<PathBuf>, TrainError> {
    Checkpointer::new(out.join(CHECKPOINTS_DIR), 1, None).latest()
}

/// A trainer whose weights, optimizer, RNG and step can be saved and restored.
pub trait Resumable {
    /// Optimizer steps taken.
    fn steps_taken(&self) -> u64;
    /// Batches (micro-batches) per optimizer step.
    fn batches_per_step(&self) -> u64;
    /// Micro-batches accumulated since the last optimizer step.
    fn pending_batches(&self) -> u32;
    /// Write a checkpoint with `ck`; returns its directory.
    fn save_to(
        &self,
        ck: &Checkpointer,
        config: String,
        metrics: BTreeMap<String, f64>,
    ) -> Result<PathBuf, TrainError>;
    /// Continue from checkpoint `dir`.
    fn restore_from(&mut self, dir: &Path) -> Result<TrainState, TrainError>;
}

impl Resumable for CaptionTrainer {
    fn steps_taken(&self) -> u64 {
        self.step_count()
    }
    fn batches_per_step(&self) -> u64 {
        self.stepper.accumulate() as u64
    }
    fn pending_batches(&self) -> u32 {
        self.stepper.pending()
    }
    fn save_to(
        &self,
        ck: &Checkpointer,
        config: String,
        metrics: BTreeMap<String, f64>,
    ) -> Result<PathBuf, TrainError> {
        self.checkpoint(ck, config, metrics)
    }
    fn restore_from(&mut self, dir: &Path) -> Result<TrainState, TrainError> {
        self.restore(dir)
    }
}

impl Resumable for ContrastiveTrainer {
    fn steps_taken(&self) -> u64 {
        self.step_count()
    }
    fn batches_per_step(&self) -> u64 {
        self.stepper.accumulate() as u64
    }
    fn pending_batches(&self) -> u32 {
        self.stepper.pending()
    }
    fn save_to(
        &self,
        ck: &Checkpointer,
        config: String,
        metrics: BTreeMap<String, f64>,
    ) -> Result<PathBuf, TrainError> {
        self.checkpoint(ck, config, metrics)
    }
    fn restore_from(&mut self, dir: &Path) -> Result<TrainState, TrainError> {
        self.restore(dir)
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
        let state = trainer.restore_from(&dir)?;
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
            trainer.save_to(&self.checkpointer, config(), metrics.clone())?;
        }
        Ok(())
    }
}
