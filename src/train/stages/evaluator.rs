//! `train_evaluator`: contrastive CLIP training ([`ContrastiveTrainer`]) as a
//! device stage.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::device::DeviceName;
use crate::flow::{DeviceBatch, DeviceStage, FlowError, StageFailure};
use crate::train::evaluator::{ContrastiveConfig, ContrastiveTrainer};
use crate::train::resumable::StageCheckpoints;
use crate::train::stages::setup::{
    build_err, default_device, default_keep_last, device_of, resolve_total_steps, resume_if_asked,
    WEIGHTS_FILE,
};
use crate::train::stages::tensors::batch_tensors;

/// Settings of `train_evaluator`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluatorStageSettings {
    pub train: ContrastiveConfig,
    /// Directory for the final weights and config.
    pub out: PathBuf,
    /// `cpu` (default), `cuda`, `cuda:K` or `auto` ([`DeviceName`]).
    #[serde(default = "default_device")]
    pub device: DeviceName,
    /// Write a checkpoint every N steps into `out/checkpoints` (0: only the
    /// final weights).
    #[serde(default)]
    pub checkpoint_every: u64,
    /// Checkpoints kept (the most recent).
    #[serde(default = "default_keep_last")]
    pub keep_last: usize,
    /// Continue from the latest checkpoint in `out/checkpoints`, if any,
    /// skipping the batches it has seen (bit-identical on CPU).
    #[serde(default)]
    pub resume: bool,
}

/// Contrastive CLIP training as a device stage.
pub struct EvaluatorStage {
    trainer: ContrastiveTrainer,
    settings: EvaluatorStageSettings,
    checkpoints: StageCheckpoints,
}

impl EvaluatorStage {
    pub fn try_new(mut settings: EvaluatorStageSettings) -> Result<Self, FlowError> {
        let device = device_of("train_evaluator", settings.device)?;
        resolve_total_steps(
            "train_evaluator",
            &mut settings.train.schedule,
            settings.train.accumulate,
        )?;
        let mut trainer = ContrastiveTrainer::new(settings.train.clone(), device)
            .map_err(|e| build_err("train_evaluator")(e.to_string()))?;
        let mut checkpoints =
            StageCheckpoints::new(&settings.out, settings.checkpoint_every, settings.keep_last);
        resume_if_asked(
            "train_evaluator",
            settings.resume,
            &mut checkpoints,
            &mut trainer,
        )?;
        Ok(Self {
            trainer,
            settings,
            checkpoints,
        })
    }
}

impl DeviceStage for EvaluatorStage {
    fn process(&mut self, batch: &mut DeviceBatch) -> Result<(), StageFailure> {
        if batch.samples.len() < 2 || self.checkpoints.already_trained(batch.time) || self.done() {
            return Ok(()); // contrastive loss needs negatives; extra batches past the schedule pass
        }
        let (pixels, _, caps) = batch_tensors(batch)?;
        let s = self
            .trainer
            .step(&pixels, &caps)
            .map_err(|e| StageFailure::new("evaluator step failed").with_detail(e))?;
        for (k, v) in [
            ("evaluator/loss", s.loss),
            ("evaluator/accuracy", s.accuracy),
            ("evaluator/logit_scale", s.logit_scale),
            ("evaluator/lr", s.lr),
        ] {
            batch.metrics.insert(k.into(), v);
        }
        if s.optimizer_step && !s.skipped_step {
            batch
                .metrics
                .insert("evaluator/grad_norm".into(), s.grad_norm);
        }
        if self.settings.train.precision.scales_loss() {
            batch
                .metrics
                .insert("evaluator/loss_scale".into(), s.loss_scale);
        }
        self.checkpoints
            .after_batch(
                &self.trainer,
                batch.time,
                &batch.cursors,
                || toml::to_string(&self.settings).unwrap_or_default(),
                &batch.metrics,
                None,
            )
            .map(|_| ())
            .map_err(|e| StageFailure::fatal("checkpoint failed").with_detail(e))
    }

    /// Done once the schedule's `total_steps` are taken: the sources stop.
    fn done(&self) -> bool {
        self.trainer.step_count() >= self.settings.train.schedule.total_steps
    }

    fn finish(&mut self) -> Result<(), StageFailure> {
        let out = &self.settings.out;
        std::fs::create_dir_all(out).map_err(|e| {
            StageFailure::new("output directory not writable")
                .with_detail(format!("{}: {e}", out.display()))
        })?;
        crate::model::weights::save_safetensors(&self.trainer.vs, out.join(WEIGHTS_FILE))
            .map_err(|e| StageFailure::new("weights not written").with_detail(e))?;
        let cfg = serde_json::to_string_pretty(&self.settings.train.clip).unwrap_or_default();
        std::fs::write(out.join("clip_config.json"), cfg)
            .map_err(|e| StageFailure::new("CLIP config not written").with_detail(e))
    }
}
