//! One optimizer step, shared by the trainers: accumulate micro-batch
//! gradients, unscale them (fp16), clip, step AdamW.
//!
//! With `accumulate = N`, each micro-batch's loss is multiplied by 1/N before
//! backward and the gradients add up, so the step follows the gradient of the
//! *mean of the N micro-batch losses* (each micro-batch loss being whatever
//! its objective averages, e.g. the per-token mean of XE within that
//! micro-batch). Clipping and the AdamW update happen once, on the summed
//! gradient, after the N-th micro-batch.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::train::adamw::AdamW;
use crate::train::checkpoint::{Checkpointer, TrainState};
use crate::train::error::TrainError;
use crate::train::loss_scale::{LossScaleConfig, LossScaleState, LossScaler};
use crate::train::precision::Precision;

/// How gradients become an update.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepConfig {
    /// Micro-batches per optimizer step (≥ 1).
    pub accumulate: u32,
    /// Clip the global gradient L2 norm to this value.
    pub grad_clip: Option<f64>,
    /// `fp16` turns on dynamic loss scaling.
    pub precision: Precision,
    pub loss_scale: LossScaleConfig,
}

impl Default for StepConfig {
    fn default() -> Self {
        Self {
            accumulate: 1,
            grad_clip: None,
            precision: Precision::Fp32,
            loss_scale: LossScaleConfig::default(),
        }
    }
}

/// What happened at the end of an accumulation cycle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Update {
    /// AdamW stepped; the gradient norm before clipping.
    Applied { grad_norm: f64 },
    /// The fp16 gradients held inf or NaN: no update, the loss scale backed off.
    Skipped,
}

/// Owns the optimizer and the accumulation and loss-scaling state.
#[derive(Debug)]
pub struct Stepper {
    pub opt: AdamW,
    cfg: StepConfig,
    /// Micro-batches whose gradients are accumulated but not yet applied.
    pending: u32,
    scaler: Option<LossScaler>,
}

impl Stepper {
    pub fn new(opt: AdamW, cfg: StepConfig) -> Result<Self, TrainError> {
        if cfg.accumulate == 0 {
            return Err(TrainError::Setting {
                name: "accumulate",
                value: "0".into(),
                reason: "use 1 or more micro-batches per optimizer step",
            });
        }
        let scaler = cfg
            .precision
            .scales_loss()
            .then(|| LossScaler::new(cfg.loss_scale));
        Ok(Self {
            opt,
            cfg,
            pending: 0,
            scaler,
        })
    }

    /// Micro-batches per optimizer step.
    pub fn accumulate(&self) -> u32 {
        self.cfg.accumulate
    }

    /// Micro-batches accumulated since the last optimizer step (0 at a step
    /// boundary, the only place a checkpoint may be taken).
    pub fn pending(&self) -> u32 {
        self.pending
    }

    /// The current loss scale (fp16 only).
    pub fn loss_scale(&self) -> Option<f64> {
        self.scaler.as_ref().map(LossScaler::scale)
    }

    /// The scaler's state for a checkpoint (fp16 only).
    pub fn scaler_state(&self) -> Option<LossScaleState> {
        self.scaler.as_ref().map(LossScaler::state)
    }

    /// Continue loss scaling from a checkpoint; a checkpoint without scaler
    /// state (written in fp32) leaves the initial scale.
    pub fn restore_scaler(&mut self, state: Option<LossScaleState>) {
        if let (Some(scaler), Some(state)) = (self.scaler.as_mut(), state) {
            scaler.restore(state);
        }
    }

    /// Backward of one micro-batch `loss`; after the N-th micro-batch, update
    /// with learning rate `lr` and say how. `None` while accumulating.
    pub fn backward(&mut self, loss: &Tensor, lr: f64) -> Result<Option<Update>, TrainError> {
        if self.pending == 0 {
            self.opt.zero_grad();
        }
        let scale = self.scaler.as_ref().map_or(1.0, LossScaler::scale);
        loss.f_mul_scalar(scale / self.cfg.accumulate as f64)?
            .f_backward()?;
        self.pending += 1;
        if self.pending < self.cfg.accumulate {
            return Ok(None);
        }
        self.pending = 0;
        if let Some(scaler) = self.scaler.as_mut() {
            let non_finite = scaler.unscale(&self.opt.grads());
            scaler.update(non_finite);
            if non_finite {
                self.opt.zero_grad();
                return Ok(Some(Update::Skipped));
            }
        }
        let grad_norm = self.opt.clip_grad_norm(self.cfg.grad_clip);
        self.opt.set_lr(lr);
        self.opt.step();
        Ok(Some(Update::Applied { grad_norm }))
    }
}

/// What a trainer saves besides its weights and the stepper's state.
#[derive(Debug, Clone)]
pub struct TrainerState {
    pub step: u64,
    /// The dataflow time of the last batch the trainer has consumed (see
    /// [`TrainState::last_batch`]); `None` outside a dataflow.
    pub last_batch: Option<u64>,
    /// Every source worker's data cursor after `last_batch` ([`TrainState::cursors`]).
    pub cursors: Vec<crate::data::Cursor>,
    pub rng: crate::rng::Rng,
    pub config: String,
    pub metrics: std::collections::BTreeMap<String, f64>,
    /// The best validation result so far ([`TrainState::best`]).
    pub best: Option<crate::train::checkpoint::BestSoFar>,
}

impl Stepper {
    /// Write a checkpoint of `vs`, the optimizer and the loss scaler with
    /// `ck`. Only between optimizer steps: accumulated gradients are not saved.
    pub fn save_checkpoint(
        &self,
        vs: &tch::nn::VarStore,
        ck: &Checkpointer,
        state: TrainerState,
    ) -> Result<std::path::PathBuf, TrainError> {
        if self.pending() > 0 {
            return Err(TrainError::State {
                path: ck.path_for(state.step),
                what: format!(
                    "checkpoint asked for after {} of {} accumulated micro-batches; \
                     checkpoint right after an optimizer step",
                    self.pending(),
                    self.accumulate()
                ),
            });
        }
        let full = TrainState {
            step: state.step,
            last_batch: state.last_batch,
            cursors: state.cursors,
            rng: state.rng,
            config: state.config,
            metrics: state.metrics,
            loss_scale: self.scaler_state(),
            best: state.best,
        };
        ck.save(vs, &self.opt, &full)
    }

    /// Load checkpoint `dir` into `vs`, the optimizer and the loss scaler.
    pub fn load_checkpoint(
        &mut self,
        vs: &mut tch::nn::VarStore,
        dir: &std::path::Path,
    ) -> Result<TrainState, TrainError> {
        let state = Checkpointer::load(dir, vs, &mut self.opt)?;
        self.restore_scaler(state.loss_scale);
        Ok(state)
    }
}
