//! `train_evaluator`: contrastive CLIP training ([`ContrastiveTrainer`]) as a
//! device stage. With `flow.devices = R > 1` every device owner holds a
//! replica that trains with negatives gathered from every replica
//! ([`ContrastiveTrainer::step_replica`], docs/distributed.md); replica 0
//! alone writes checkpoints and weights.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::device::DeviceName;
use crate::flow::allreduce::take_replica_link;
use crate::flow::{DeviceBatch, DeviceStage, FlowError, StageFailure};
use crate::model::clip::ClipConfig;
use crate::train::error::TrainError;
use crate::train::evaluator::{ContrastiveConfig, ContrastiveTrainer};
use crate::train::resumable::StageCheckpoints;
use crate::train::stages::setup::{
    build_failed, create_out_dir, default_device, default_keep_last, device_of,
    fatal_if_replicated, replica_weights_dir, resolve_total_steps, resume_if_asked,
    write_clip_config, StageBuildError, CLIP_CONFIG_FILE, WEIGHTS_FILE,
};
use crate::train::stages::tensors::batch_tensors;

/// Settings of `train_evaluator`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluatorStageSettings {
    pub train: ContrastiveConfig,
    /// Starting weights: a whole trained CLIP of the same config
    /// (safetensors, as `train_evaluator` writes them, or converted
    /// OpenAI/open_clip weights); a `clip_config.json` beside them must equal
    /// `train.clip`. Default: a fresh initialisation from `train.seed`.
    /// Needed with `train.lock_image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<PathBuf>,
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

/// Refuses an `init` whose `clip_config.json` (written beside it by
/// `train_evaluator`) differs from `clip`: heads and `quick_gelu` leave
/// every weight's shape as it is, so loading alone would take such weights
/// into another network without a word. Without that file only the names
/// and shapes are checked, and a warning says so.
fn check_init_config(init: &std::path::Path, clip: &ClipConfig) -> Result<(), FlowError> {
    let beside = init.with_file_name(CLIP_CONFIG_FILE);
    if !beside.is_file() {
        tracing::warn!(
            "`init`: no {CLIP_CONFIG_FILE} beside {}: its weights are checked by name and \
             shape only, so make sure `train.clip` has the heads and `quick_gelu` they were \
             trained with",
            init.display()
        );
        return Ok(());
    }
    let theirs = ClipConfig::from_json_file(&beside)
        .map_err(StageBuildError::from)
        .map_err(StageBuildError::in_setting("init"))
        .map_err(build_failed::<StageBuildError>("train_evaluator"))?;
    if &theirs == clip {
        return Ok(());
    }
    let (theirs, ours) = (flat_json(&theirs), flat_json(clip));
    let differ: Vec<String> = theirs
        .iter()
        .filter(|(k, v)| ours.get(*k) != Some(*v))
        .map(|(k, v)| {
            let ours = ours.get(k).map_or("absent".into(), ToString::to_string);
            format!("{k} is {v} there and {ours} in `train.clip`")
        })
        .collect();
    Err(FlowError::StageSetup {
        stage: "train_evaluator".into(),
        message: format!(
            "`init` was trained with another CLIP config ({}): {}; make `train.clip` equal to \
             that file",
            beside.display(),
            differ.join(", ")
        ),
    })
}

/// `value`'s leaves by dotted path (`vision.heads` → 4).
fn flat_json(
    value: &impl serde::Serialize,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    fn walk(
        prefix: &str,
        v: serde_json::Value,
        out: &mut std::collections::BTreeMap<String, serde_json::Value>,
    ) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let path = if prefix.is_empty() {
                        k
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&path, v, out);
                }
            }
            leaf => {
                out.insert(prefix.to_owned(), leaf);
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(
        "",
        serde_json::to_value(value).unwrap_or_default(),
        &mut out,
    );
    out
}

/// Contrastive CLIP training as a device stage.
pub struct EvaluatorStage {
    trainer: ContrastiveTrainer,
    settings: EvaluatorStageSettings,
    checkpoints: StageCheckpoints,
    /// This stage's replica index and count (`flow.devices`; 0 of 1 without
    /// replicas). Only replica 0 writes checkpoints and weights.
    replica: (usize, usize),
}

impl EvaluatorStage {
    pub fn try_new(mut settings: EvaluatorStageSettings) -> Result<Self, FlowError> {
        let link = take_replica_link("train_evaluator")?;
        let local = link.as_ref().map(|l| l.local_index());
        let device = device_of("train_evaluator", settings.device, local)?;
        resolve_total_steps(
            "train_evaluator",
            &mut settings.train.schedule,
            settings.train.accumulate,
        )?;
        let replica = link.as_ref().map_or((0, 1), |l| (l.index(), l.replicas()));
        if settings.train.lock_image && settings.init.is_none() {
            return Err(FlowError::StageSetup {
                stage: "train_evaluator".into(),
                message: "`train.lock_image = true` keeps the image tower as it starts, and \
                          without `init` it starts untrained: set `init` to the weights of a \
                          trained CLIP of this config (e.g. a `train_evaluator` run's \
                          model.safetensors), or drop `lock_image`"
                    .into(),
            });
        }
        let mut trainer = ContrastiveTrainer::new(settings.train.clone(), device)
            .map_err(build_failed::<TrainError>("train_evaluator"))?;
        if let Some(init) = &settings.init {
            check_init_config(init, &settings.train.clip)?;
            trainer
                .load_init(init)
                .map_err(StageBuildError::in_setting("init"))
                .map_err(build_failed::<StageBuildError>("train_evaluator"))?;
        }
        if let Some(link) = link {
            trainer.set_replicas(Box::new(link.clone()), Box::new(link));
        }
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
            replica,
        })
    }

    /// One batch: a step on its images (a replica steps on every batch, its
    /// share possibly empty, with the others).
    fn process_batch(&mut self, batch: &mut DeviceBatch) -> Result<(), StageFailure> {
        let replicated = self.replica.1 > 1;
        if (batch.samples.len() < 2 && !replicated)
            || self.checkpoints.already_trained(batch.time)
            || self.done()
        {
            return Ok(()); // contrastive loss needs negatives; extra batches past the schedule pass
        }
        let failed = |e| StageFailure::new("evaluator step failed").with_detail(e);
        let s = if replicated {
            let tensors = match batch.samples.is_empty() {
                true => None,
                false => Some(batch_tensors(batch)?),
            };
            let input = tensors.as_ref().map(|(p, _, c)| (p, c.as_slice()));
            batch
                .metrics
                .insert("evaluator/samples".into(), batch.samples.len() as f64);
            match self.trainer.step_replica(input).map_err(failed)? {
                Some(s) => s,
                None => return Ok(()), // fewer than 2 images in the whole batch
            }
        } else {
            let (pixels, _, caps) = batch_tensors(batch)?;
            self.trainer.step(&pixels, &caps).map_err(failed)?
        };
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
        if self.replica.0 != 0 {
            return Ok(()); // replica 0 writes the checkpoints
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
}

impl DeviceStage for EvaluatorStage {
    fn process(&mut self, batch: &mut DeviceBatch) -> Result<(), StageFailure> {
        let result = self.process_batch(batch);
        fatal_if_replicated(self.replica.1, result)
    }

    /// Done once the schedule's `total_steps` are taken: the sources stop.
    fn done(&self) -> bool {
        self.trainer.step_count() >= self.settings.train.schedule.total_steps
    }

    fn finish(&mut self) -> Result<(), StageFailure> {
        if let Some(dir) = replica_weights_dir() {
            let path = dir.join(format!("replica-{}.safetensors", self.replica.0));
            crate::model::weights::save_safetensors(&self.trainer.vs, &path)
                .map_err(|e| StageFailure::new("replica weights not written").with_detail(e))?;
        }
        if self.replica.0 != 0 {
            return Ok(()); // replica 0 writes the outputs
        }
        let out = &self.settings.out;
        create_out_dir(out)?;
        crate::model::weights::save_safetensors(&self.trainer.vs, out.join(WEIGHTS_FILE))
            .map_err(|e| StageFailure::new("weights not written").with_detail(e))?;
        write_clip_config(out, &self.settings.train.clip)
    }
}
