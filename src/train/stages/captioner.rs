//! `train_captioner`: captioner training (XE, DiCO, SCST, offline DiCO from a
//! reward cache; [`CaptionTrainer`]) as a device stage, with validation,
//! checkpoints and the fluency log.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::device::DeviceName;
use crate::flow::allreduce::take_replica_link;
use crate::flow::{DeviceBatch, DeviceStage, FlowError, StageFailure};
use crate::model::captioner::{Backbone, CaptionerConfig};
use crate::model::clip::ClipConfig;
use crate::reward::{Reward, RewardCache, RewardError, RewardSettings};
use crate::train::captioning::{CaptionTrainConfig, CaptionTrainer, Objective, ObjectiveInputs};
use crate::train::fluency::FluencyJudge;
use crate::train::resumable::StageCheckpoints;
pub use crate::train::stages::setup::write_replica_weights_to;
use crate::train::stages::setup::{
    build_failed, create_out_dir, default_device, default_keep_last, device_of,
    fatal_if_replicated, load_text, replica_weights_dir, resolve_total_steps, resume_if_asked,
    setting_err, StageBuildError, WEIGHTS_FILE,
};
use crate::train::stages::tensors::{batch_tensors, sample_tensors};
use crate::train::validation::{StageContext, ValidationSettings, Validator};

/// Captioner config a `train_captioner` stage writes next to its weights.
pub const CAPTIONER_CONFIG_FILE: &str = "captioner.json";

/// Settings of `train_captioner`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptionerStageSettings {
    pub captioner: CaptionerConfig,
    pub train: CaptionTrainConfig,
    /// Word vocabulary (JSON written by [`crate::model::captioner::Vocab`]'s serde form); absent: CLIP BPE.
    #[serde(default)]
    pub vocab: Option<PathBuf>,
    /// CLIP safetensors whose vision tower is the frozen backbone, and its config.
    pub backbone: PathBuf,
    pub backbone_config: ClipConfig,
    /// Evaluator weights (CLIP safetensors) for a CLIP score reward.
    #[serde(default)]
    pub evaluator: Option<PathBuf>,
    /// The evaluator's CLIP config (default: `backbone_config`).
    #[serde(default)]
    pub evaluator_config: Option<ClipConfig>,
    /// DiCO/SCST reward: a CLIP score config (default with an evaluator: the
    /// paper's DiCO reward) or `{ kind = "cider_d", references = SHARDS }`.
    #[serde(default)]
    pub reward: Option<RewardSettings>,
    /// Starting weights (the XE checkpoint for DiCO/SCST; also DiCO's reference).
    #[serde(default)]
    pub init: Option<PathBuf>,
    /// Reward cache directory that `dico_offline` trains from (made by
    /// `dicoflow cache-rewards`).
    #[serde(default)]
    pub reward_cache: Option<PathBuf>,
    /// Log `fluency/grammatical` every `fluency_every` steps: the share of
    /// the policy's greedy captions of the batch that this judge finds fluent.
    #[serde(default)]
    pub fluency_judge: Option<FluencyJudge>,
    /// Steps between fluency measurements (greedy decoding costs about as
    /// much as an XE step).
    #[serde(default = "default_fluency_every")]
    pub fluency_every: u64,
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
    /// Continue from the latest checkpoint in `out/checkpoints`, if any: the
    /// sources start right after its last batch, at its data cursors, and
    /// the run goes on bit-identically (docs/training.md).
    #[serde(default)]
    pub resume: bool,
    /// Validate every N steps on a val split, log `val/*` values and keep
    /// the best model ([`ValidationSettings`], docs/training.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationSettings>,
}

/// Default `fluency_every`: fluency logged every 10 steps.
fn default_fluency_every() -> u64 {
    10
}

/// The reward cache of `dico_offline` (checked against the settings), or
/// `None` for the other objectives.
///
/// Errors: [`FlowError::Config`] for settings that do not go together or a
/// cache made for another captioner; [`FlowError::StageBuild`] when the
/// cache cannot be read.
fn open_reward_cache(s: &CaptionerStageSettings) -> Result<Option<RewardCache>, FlowError> {
    const STAGE: &str = "train_captioner";
    let err = setting_err(STAGE);
    let offline = s.train.objective == Objective::DicoOffline;
    let dir = match (&s.reward_cache, offline) {
        (None, false) => return Ok(None),
        (Some(_), false) => {
            return Err(err(format!(
                "`reward_cache` is only read by objective = \"dico_offline\" (this stage \
                 trains {:?})",
                s.train.objective
            )))
        }
        (None, true) => {
            return Err(err(
                "objective = \"dico_offline\" needs `reward_cache`: a directory made \
                        by `dicoflow cache-rewards`"
                    .into(),
            ))
        }
        (Some(_), true) if s.evaluator.is_some() => {
            return Err(err(
                "dico_offline reads its rewards from the cache: remove `evaluator` \
                        (it would only take memory)"
                    .into(),
            ))
        }
        (Some(dir), true) => dir,
    };
    let cache = RewardCache::open(dir).map_err(build_failed::<RewardError>(STAGE))?;
    if let Some(max) = cache.max_token() {
        if max as i64 >= s.captioner.tokens.vocab_size {
            return Err(err(format!(
                "{}: token id {max} is outside the captioner's vocabulary of {}: the cache \
                 was made for another captioner",
                dir.display(),
                s.captioner.tokens.vocab_size
            )));
        }
    }
    tracing::info!(
        "offline DiCO from {} ({} images in {} parts)",
        dir.display(),
        cache.images(),
        cache.parts()
    );
    Ok(Some(cache))
}

/// Captioner training (XE, DiCO, SCST, offline DiCO) as a device stage.
pub struct CaptionerStage {
    trainer: CaptionTrainer,
    settings: CaptionerStageSettings,
    checkpoints: StageCheckpoints,
    validator: Option<Validator>,
    /// This stage's replica index and count (`flow.devices`; 0 of 1 without
    /// replicas). Only replica 0 validates, writes checkpoints and weights.
    replica: (usize, usize),
}

fn step_failed(e: crate::train::TrainError) -> StageFailure {
    StageFailure::new("captioner step failed").with_detail(e)
}

/// Adds validation `values` to the batch's metrics or, when the batch
/// already carries a validation (the step-0 one and the first step's share
/// a batch with `every = 1`), logs them as a line of their own after it.
fn log_validation(batch: &mut DeviceBatch, values: std::collections::BTreeMap<String, f64>) {
    if batch.metrics.contains_key("val/step") {
        batch.more_metrics.push(values);
    } else {
        batch.metrics.extend(values);
    }
}

impl CaptionerStage {
    pub fn try_new(mut s: CaptionerStageSettings) -> Result<Self, FlowError> {
        let failed = build_failed::<StageBuildError>("train_captioner");
        let link = take_replica_link("train_captioner")?;
        let local = link.as_ref().map(|l| l.local_index());
        let device = device_of("train_captioner", s.device, local)?;
        resolve_total_steps("train_captioner", &mut s.train.schedule, s.train.accumulate)?;
        let text = load_text(s.vocab.as_deref()).map_err(&failed)?;
        let backbone = Backbone::from_clip_safetensors(&s.backbone, &s.backbone_config, device)
            .map_err(StageBuildError::in_setting("backbone"))
            .map_err(&failed)?;
        let cache = open_reward_cache(&s)?;
        let reward = Reward::load(
            s.reward.as_ref(),
            s.evaluator.as_deref(),
            s.evaluator_config.as_ref().unwrap_or(&s.backbone_config),
            device,
        )
        .map_err(|e| failed(e.into()))?;
        let has_reward = reward.is_some();
        let replica = link.as_ref().map_or((0, 1), |l| (l.index(), l.replicas()));
        let inputs = ObjectiveInputs {
            reward,
            reward_cache: cache,
        };
        let mut trainer = CaptionTrainer::try_new(
            &s.captioner,
            text,
            backbone,
            s.init.as_deref(),
            inputs,
            s.train.clone(),
            device,
        )
        .map_err(|e| failed(e.into()))?;
        if let Some(link) = link {
            trainer.stepper.set_reducer(Box::new(link));
        }
        let mut validator = match &s.validation {
            Some(v) if replica.0 == 0 => Some(
                Validator::try_new(
                    v.clone(),
                    &StageContext {
                        out: &s.out,
                        backbone_config: &s.backbone_config,
                        has_reward,
                        device,
                    },
                )
                .map_err(|e| failed(e.into()))?,
            ),
            _ => None,
        };
        let mut checkpoints = StageCheckpoints::new(&s.out, s.checkpoint_every, s.keep_last);
        resume_if_asked("train_captioner", s.resume, &mut checkpoints, &mut trainer)?;
        if let Some(v) = validator.as_mut() {
            if checkpoints.resumed_after().is_some() {
                v.resume(checkpoints.resumed_best(), trainer.step_count())
                    .map_err(|e| failed(StageBuildError::Resume(e)))?;
            } else {
                v.start_fresh()
                    .map_err(|e| failed(StageBuildError::ValidationLog(e)))?;
            }
        }
        Ok(Self {
            trainer,
            settings: s,
            checkpoints,
            validator,
            replica,
        })
    }
}

impl CaptionerStage {
    /// The trainer the stage hosts (its step count, statistics, weights).
    pub fn trainer(&self) -> &CaptionTrainer {
        &self.trainer
    }
}

impl DeviceStage for CaptionerStage {
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
            self.trainer
                .policy
                .save_weights(&path)
                .map_err(|e| StageFailure::new("replica weights not written").with_detail(e))?;
        }
        if self.replica.0 != 0 {
            return Ok(()); // replica 0 writes the outputs
        }
        self.write_outputs()
    }
}

impl CaptionerStage {
    fn process_batch(&mut self, batch: &mut DeviceBatch) -> Result<(), StageFailure> {
        let replicated = self.replica.1 > 1;
        if (batch.samples.is_empty() && !replicated)
            || self.checkpoints.already_trained(batch.time)
            || self.done()
        {
            return Ok(());
        }
        let total_steps = self.settings.train.schedule.total_steps;
        if let Some(v) = self.validator.as_mut() {
            let step = self.trainer.step_count();
            if step == 0 && v.due(0, total_steps) {
                let (policy, reward) = self.trainer.policy_and_reward();
                let values = v
                    .validate(policy, reward, 0)
                    .map_err(|e| StageFailure::new("validation failed").with_detail(e))?;
                log_validation(batch, values);
            }
        }
        // The frozen backbone runs once per batch: its features feed the
        // step (policy and reference) and the fluency captions.
        let precision = self.settings.train.precision;
        let (pixels, keys, caps) = match self.trainer.reward_cache() {
            Some(cache) => {
                // Offline DiCO trains on the images with all their candidates
                // in the cache; the others are counted and left out.
                let k = self.trainer.config().candidates as usize;
                let mut samples = Vec::new();
                let (mut missing, mut incomplete) = (0, 0);
                for sample in &batch.samples {
                    match cache.get(&sample.key) {
                        Some(c) if c.len() == k => samples.push(sample),
                        Some(_) => incomplete += 1,
                        None => missing += 1,
                    }
                }
                batch.metrics.insert("cache/missing".into(), missing as f64);
                batch
                    .metrics
                    .insert("cache/incomplete".into(), incomplete as f64);
                if samples.is_empty() {
                    return self.step_without_samples(batch);
                }
                sample_tensors(&samples)?
            }
            None if batch.samples.is_empty() => return self.step_without_samples(batch),
            None => batch_tensors(batch)?,
        };
        let trained = keys.len();
        let features = precision
            .autocast(|| self.trainer.policy.features(&pixels))
            .map_err(step_failed)?;
        let s = self
            .trainer
            .step_on_features(&keys, &pixels, &features, &caps);
        let s = s.map_err(step_failed)?;
        let every = self.settings.fluency_every.max(1);
        let due = s.optimizer_step && self.trainer.step_count() % every == 1 % every;
        if let (Some(judge), true) = (self.settings.fluency_judge, due) {
            let policy = &self.trainer.policy;
            let captions = match self.trainer.features_for_captions(&features) {
                Some(features) => policy.caption_features(features),
                None => policy.caption(&pixels),
            }
            .map_err(|e| StageFailure::new("greedy captions for fluency failed").with_detail(e))?;
            batch
                .metrics
                .insert("fluency/grammatical".into(), judge.share(&captions));
        }
        if let Some(reward) = self.trainer.reward_mut() {
            reward.clear_images(); // images are not revisited within an epoch
        }
        batch.metrics.insert("train/samples".into(), trained as f64);
        batch.metrics.insert("train/loss".into(), s.loss);
        batch.metrics.insert("train/lr".into(), s.lr);
        if s.optimizer_step && !s.skipped_step {
            batch.metrics.insert("train/grad_norm".into(), s.grad_norm);
        }
        if s.skipped_step {
            batch.metrics.insert("train/skipped_step".into(), 1.0);
        }
        if self.trainer.objective() != Objective::Xe {
            batch
                .metrics
                .insert("train/candidate_length".into(), s.candidate_length);
            batch.metrics.insert("train/eos_share".into(), s.eos_share);
        }
        for (k, v) in s.extra {
            batch.metrics.insert(k, v);
        }
        self.validate_if_due(batch, s.optimizer_step)?;
        self.after_step(batch)
    }

    /// A batch in which this replica has no sample (replicas only; without
    /// replicas such a batch is not a step): it takes part in the step's
    /// all-reduce with nothing to add.
    fn step_without_samples(&mut self, batch: &mut DeviceBatch) -> Result<(), StageFailure> {
        if self.replica.1 == 1 {
            return Ok(());
        }
        let s = self.trainer.step_empty().map_err(step_failed)?;
        batch.metrics.insert("train/samples".into(), 0.0);
        batch.metrics.insert("train/lr".into(), s.lr);
        if s.optimizer_step && !s.skipped_step {
            batch.metrics.insert("train/grad_norm".into(), s.grad_norm);
        }
        if s.skipped_step {
            batch.metrics.insert("train/skipped_step".into(), 1.0);
        }
        batch.metrics.extend(s.extra);
        self.validate_if_due(batch, s.optimizer_step)?;
        self.after_step(batch)
    }

    /// Validation after an optimizer step when its cadence says so (replica 0
    /// only: the others have no validator), logged with `batch`.
    fn validate_if_due(
        &mut self,
        batch: &mut DeviceBatch,
        optimizer_step: bool,
    ) -> Result<(), StageFailure> {
        let total_steps = self.settings.train.schedule.total_steps;
        if let Some(v) = self.validator.as_mut() {
            let step = self.trainer.step_count();
            if optimizer_step && v.due(step, total_steps) {
                let (policy, reward) = self.trainer.policy_and_reward();
                let values = v
                    .validate(policy, reward, step)
                    .map_err(|e| StageFailure::new("validation failed").with_detail(e))?;
                log_validation(batch, values);
            }
        }
        Ok(())
    }

    /// Checkpoints (replica 0 only) after a trained batch.
    fn after_step(&mut self, batch: &mut DeviceBatch) -> Result<(), StageFailure> {
        if self.replica.0 != 0 {
            return Ok(());
        }
        let written = self
            .checkpoints
            .after_batch(
                &self.trainer,
                batch.time,
                &batch.cursors,
                || toml::to_string(&self.settings).unwrap_or_default(),
                &batch.metrics,
                self.validator.as_ref().and_then(Validator::best),
            )
            .map_err(|e| StageFailure::fatal("checkpoint failed").with_detail(e))?;
        if let (Some(v), Some(_)) = (self.validator.as_mut(), written) {
            v.checkpoint_written()
                .map_err(|e| StageFailure::fatal("checkpoint failed").with_detail(e))?;
        }
        Ok(())
    }

    /// `out/model.safetensors` (or the validator's choice) and `out/captioner.json`.
    fn write_outputs(&mut self) -> Result<(), StageFailure> {
        let out = &self.settings.out;
        create_out_dir(out)?;
        let weights = out.join(WEIGHTS_FILE);
        match &self.validator {
            Some(v) => v.write_model(&self.trainer.policy, &weights),
            None => self.trainer.policy.save_weights(&weights),
        }
        .map_err(|e| StageFailure::new("weights not written").with_detail(e))?;
        let cfg = serde_json::to_string_pretty(&self.settings.captioner).unwrap_or_default();
        std::fs::write(out.join(CAPTIONER_CONFIG_FILE), cfg)
            .map_err(|e| StageFailure::new("captioner config not written").with_detail(e))
    }
}
