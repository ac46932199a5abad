//! Training and captioning as device stages of the dataflow: each owns its
//! models on the device thread, steps once per batch, reports per-step metrics
//! into the batch (the metrics log), and writes its weights when the run ends.
//!
//! | type | does |
//! |---|---|
//! | `train_evaluator` | contrastive CLIP training ([`ContrastiveTrainer`]) |
//! | `train_captioner` | XE / DiCO / SCST ([`CaptionTrainer`]) |
//! | `caption` | greedy captions + evaluator scores, appended to a JSONL file |
//! | `reward_cache` | candidates, rewards, reference log-probs → a reward-cache part ([`RewardCacheStage`]) |

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::device::DeviceName;
use crate::flow::{DeviceBatch, DeviceStage, FlowError, Registry, Sample, StageFailure};
use crate::model::captioner::{Backbone, CaptionText, CaptionerConfig, Vocab};
use crate::model::clip::{Clip, ClipConfig};
use crate::reward::{ClipScorer, Reward, RewardCache, RewardSettings, ScoreConfig};
use crate::text::ClipTokenizer;
use crate::train::captioning::{CaptionTrainConfig, CaptionTrainer, Objective};
use crate::train::evaluator::{ContrastiveConfig, ContrastiveTrainer};
use crate::train::fluency::FluencyJudge;
use crate::train::precision::Precision;
use crate::train::resumable::{Resumable, StageCheckpoints};
use crate::train::reward_cache_stage::{RewardCacheSettings, RewardCacheStage};
use crate::train::validation::{StageContext, ValidationSettings, Validator};

/// Weights file a training stage writes into its `out` directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Captioner config a `train_captioner` stage writes next to its weights.
pub const CAPTIONER_CONFIG_FILE: &str = "captioner.json";

/// The built-in stages plus the training stages.
pub fn registry() -> Registry {
    let mut r = Registry::with_builtins();
    register(&mut r);
    r
}

/// Register the training stages.
pub fn register(r: &mut Registry) {
    r.register_device("train_evaluator", |s: EvaluatorStageSettings| {
        Ok(Box::new(EvaluatorStage::try_new(s)?) as Box<dyn DeviceStage>)
    });
    r.register_device("train_captioner", |s: CaptionerStageSettings| {
        Ok(Box::new(CaptionerStage::try_new(s)?) as Box<dyn DeviceStage>)
    });
    r.register_device("caption", |s: CaptionStageSettings| {
        Ok(Box::new(CaptionStage::try_new(s)?) as Box<dyn DeviceStage>)
    });
    r.register_device("reward_cache", |s: RewardCacheSettings| {
        Ok(Box::new(RewardCacheStage::try_new(s)?) as Box<dyn DeviceStage>)
    });
    r.declare_resumable("train_evaluator");
    r.declare_resumable("train_captioner");
    for placed in [
        "train_evaluator",
        "train_captioner",
        "caption",
        "reward_cache",
    ] {
        r.declare_device_setting(placed);
    }
}

/// The device stage `stage`'s `device` setting names, checked on this machine (asking
/// for CUDA where there is none is an error, see [`DeviceName::resolve`]).
pub(crate) fn device_of(stage: &'static str, name: DeviceName) -> Result<Device, FlowError> {
    name.resolve().map_err(|source| FlowError::Device {
        setting: format!("stage `{stage}`: device"),
        source,
    })
}

pub(crate) fn build_err(stage: &'static str) -> impl Fn(String) -> FlowError {
    move |what| FlowError::Config { name: stage, what }
}

/// A device batch as tensors: pixels `[n, 3, s, s]`, keys, reference captions.
type BatchTensors = (Tensor, Vec<String>, Vec<Vec<String>>);

/// The batch's preprocessed pixels, keys and captions.
pub(crate) fn batch_tensors(batch: &DeviceBatch) -> Result<BatchTensors, StageFailure> {
    sample_tensors(&batch.samples.iter().collect::<Vec<_>>())
}

/// Pixels, keys and captions of some samples of a batch.
pub(crate) fn sample_tensors(samples: &[&Sample]) -> Result<BatchTensors, StageFailure> {
    let n = samples.len();
    let size = samples.first().map_or(0, |s| s.size) as i64;
    let mut flat = Vec::with_capacity(n * (3 * size * size) as usize);
    for s in samples {
        if s.pixels.len() as i64 != 3 * size * size {
            return Err(StageFailure::new("samples not preprocessed to one size"));
        }
        flat.extend_from_slice(&s.pixels);
    }
    let pixels = Tensor::from_slice(&flat).view([n as i64, 3, size, size]);
    let keys = samples.iter().map(|s| s.key.clone()).collect();
    let caps = samples.iter().map(|s| s.captions.clone()).collect();
    Ok((pixels, keys, caps))
}

/// Settings of `train_evaluator`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluatorStageSettings {
    pub train: ContrastiveConfig,
    /// Directory for the final weights and config.
    pub out: PathBuf,
    /// `cpu` (default), `cuda`, `cuda:K` or `auto` ([`DeviceName`]).
    #[serde(default = "cpu")]
    pub device: DeviceName,
    /// Write a checkpoint every N steps into `out/checkpoints` (0: only the
    /// final weights).
    #[serde(default)]
    pub checkpoint_every: u64,
    /// Checkpoints kept (the most recent).
    #[serde(default = "two")]
    pub keep_last: usize,
    /// Continue from the latest checkpoint in `out/checkpoints`, if any,
    /// skipping the batches it has seen (bit-identical on CPU).
    #[serde(default)]
    pub resume: bool,
}

pub(crate) fn cpu() -> DeviceName {
    DeviceName::Cpu
}

/// Restore `trainer` from the latest checkpoint if `resume` is set.
fn resume_if_asked<T: Resumable>(
    stage: &'static str,
    resume: bool,
    checkpoints: &mut StageCheckpoints,
    trainer: &mut T,
) -> Result<(), FlowError> {
    if !resume {
        return Ok(());
    }
    match checkpoints
        .resume(trainer)
        .map_err(|e| build_err(stage)(format!("resuming: {e}")))?
    {
        Some(dir) => tracing::info!(
            "{stage}: resuming from {} at step {}, after batch {}",
            dir.display(),
            trainer.steps_taken(),
            checkpoints.resumed_after().unwrap_or_default()
        ),
        None => tracing::info!("{stage}: no checkpoint yet, starting from scratch"),
    }
    Ok(())
}

/// Contrastive CLIP training as a device stage.
pub struct EvaluatorStage {
    trainer: ContrastiveTrainer,
    settings: EvaluatorStageSettings,
    checkpoints: StageCheckpoints,
}

impl EvaluatorStage {
    pub fn try_new(settings: EvaluatorStageSettings) -> Result<Self, FlowError> {
        let device = device_of("train_evaluator", settings.device)?;
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
        if batch.samples.len() < 2
            || self.checkpoints.already_trained(batch.time)
            || self.trainer.step_count() >= self.settings.train.schedule.total_steps
        {
            return Ok(()); // contrastive loss needs negatives; extra batches past the schedule pass
        }
        let (pixels, _, caps) = batch_tensors(batch)?;
        let s = self
            .trainer
            .step(&pixels, &caps)
            .map_err(|e| StageFailure::new(format!("evaluator step failed: {e}")))?;
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
                || toml::to_string(&self.settings).unwrap_or_default(),
                &batch.metrics,
                None,
            )
            .map(|_| ())
            .map_err(|e| StageFailure::fatal(format!("checkpoint failed: {e}")))
    }

    fn finish(&mut self) -> Result<(), StageFailure> {
        let out = &self.settings.out;
        std::fs::create_dir_all(out)
            .map_err(|e| StageFailure::new(format!("{}: {e}", out.display())))?;
        crate::model::weights::save_safetensors(&self.trainer.vs, out.join(WEIGHTS_FILE))
            .map_err(|e| StageFailure::new(e.to_string()))?;
        let cfg = serde_json::to_string_pretty(&self.settings.train.clip).unwrap_or_default();
        std::fs::write(out.join("clip_config.json"), cfg)
            .map_err(|e| StageFailure::new(e.to_string()))
    }
}

/// Settings of `train_captioner`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptionerStageSettings {
    pub captioner: CaptionerConfig,
    pub train: CaptionTrainConfig,
    /// Word vocabulary (JSON written by [`Vocab`]'s serde form); absent: CLIP BPE.
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
    #[serde(default = "ten")]
    pub fluency_every: u64,
    pub out: PathBuf,
    /// `cpu` (default), `cuda`, `cuda:K` or `auto` ([`DeviceName`]).
    #[serde(default = "cpu")]
    pub device: DeviceName,
    /// Write a checkpoint every N steps into `out/checkpoints` (0: only the
    /// final weights).
    #[serde(default)]
    pub checkpoint_every: u64,
    /// Checkpoints kept (the most recent).
    #[serde(default = "two")]
    pub keep_last: usize,
    /// Continue from the latest checkpoint in `out/checkpoints`, if any. The
    /// data order is a function of the seed, so the stage skips the batches
    /// the checkpoint has already seen and goes on bit-identically.
    #[serde(default)]
    pub resume: bool,
    /// Validate every N steps on a val split, log `val/*` values and keep
    /// the best model ([`ValidationSettings`], docs/training.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationSettings>,
}

fn two() -> usize {
    2
}

fn ten() -> u64 {
    10
}

pub(crate) fn load_scorer(
    path: &PathBuf,
    cfg: &ClipConfig,
    score: ScoreConfig,
    device: Device,
) -> Result<ClipScorer, String> {
    let (_vs, clip) = Clip::from_safetensors(path, cfg, device).map_err(|e| e.to_string())?;
    let tok = ClipTokenizer::openai().map_err(|e| e.to_string())?;
    Ok(ClipScorer::new(clip, tok, score))
}

/// The caption text of a stage: the word vocabulary at `vocab`, or CLIP BPE.
pub(crate) fn load_text(vocab: Option<&Path>) -> Result<CaptionText, String> {
    let Some(path) = vocab else {
        return CaptionText::clip_bpe().map_err(|e| e.to_string());
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Vocab = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(CaptionText::Words(v.reindexed()))
}

/// The reward cache of `dico_offline` (checked against the settings), or
/// `None` for the other objectives.
fn open_reward_cache(s: &CaptionerStageSettings) -> Result<Option<RewardCache>, String> {
    let offline = s.train.objective == Objective::DicoOffline;
    match (&s.reward_cache, offline) {
        (None, false) => return Ok(None),
        (Some(_), false) => {
            return Err(format!(
                "`reward_cache` is only read by objective = \"dico_offline\" (this stage \
                 trains {:?})",
                s.train.objective
            ))
        }
        (None, true) => {
            return Err(
                "objective = \"dico_offline\" needs `reward_cache`: a directory made \
                        by `dicoflow cache-rewards`"
                    .into(),
            )
        }
        (Some(_), true) if s.evaluator.is_some() => {
            return Err(
                "dico_offline reads its rewards from the cache: remove `evaluator` \
                        (it would only take memory)"
                    .into(),
            )
        }
        (Some(_), true) => {}
    }
    let dir = s.reward_cache.as_ref().expect("checked above");
    let cache = RewardCache::open(dir).map_err(|e| e.to_string())?;
    if let Some(max) = cache.max_token() {
        if max as i64 >= s.captioner.tokens.vocab_size {
            return Err(format!(
                "{}: token id {max} is outside the captioner's vocabulary of {}: the cache \
                 was made for another captioner",
                dir.display(),
                s.captioner.tokens.vocab_size
            ));
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

/// Captioner training (XE, DiCO, SCST) as a device stage.
pub struct CaptionerStage {
    trainer: CaptionTrainer,
    /// The candidates of `dico_offline`.
    cache: Option<RewardCache>,
    settings: CaptionerStageSettings,
    checkpoints: StageCheckpoints,
    validator: Option<Validator>,
    /// Validation values not yet logged: a batch line holds one validation,
    /// so when the step-0 validation and the first step's share a batch
    /// (`every = 1`), the later one goes into the next batch's line (with
    /// its `val/step`). `out/validation/log.jsonl` has every one.
    unlogged: std::collections::VecDeque<std::collections::BTreeMap<String, f64>>,
}

fn step_failed(e: crate::train::TrainError) -> StageFailure {
    StageFailure::new(format!("captioner step failed: {e}"))
}

/// Adds validation `values` to the batch's metrics, or queues them when the
/// batch already carries a validation.
fn log_validation(
    batch: &mut DeviceBatch,
    unlogged: &mut std::collections::VecDeque<std::collections::BTreeMap<String, f64>>,
    values: std::collections::BTreeMap<String, f64>,
) {
    if batch.metrics.contains_key("val/step") {
        unlogged.push_back(values);
    } else {
        batch.metrics.extend(values);
    }
}

impl CaptionerStage {
    pub fn try_new(s: CaptionerStageSettings) -> Result<Self, FlowError> {
        let err = build_err("train_captioner");
        let device = device_of("train_captioner", s.device)?;
        let text = load_text(s.vocab.as_deref()).map_err(&err)?;
        let backbone = Backbone::from_clip_safetensors(&s.backbone, &s.backbone_config, device)
            .map_err(|e| err(e.to_string()))?;
        let cache = open_reward_cache(&s).map_err(&err)?;
        let reward = Reward::load(
            s.reward.as_ref(),
            s.evaluator.as_deref(),
            s.evaluator_config.as_ref().unwrap_or(&s.backbone_config),
            device,
        )
        .map_err(|e| err(e.to_string()))?;
        let has_reward = reward.is_some();
        let mut trainer = CaptionTrainer::new(
            &s.captioner,
            text,
            backbone,
            s.init.as_deref(),
            reward,
            s.train.clone(),
            device,
        )
        .map_err(|e| err(e.to_string()))?;
        let mut validator = match &s.validation {
            Some(v) => Some(
                Validator::try_new(
                    v.clone(),
                    &StageContext {
                        out: &s.out,
                        backbone_config: &s.backbone_config,
                        has_reward,
                        device,
                    },
                )
                .map_err(|e| err(e.to_string()))?,
            ),
            None => None,
        };
        let mut checkpoints = StageCheckpoints::new(&s.out, s.checkpoint_every, s.keep_last);
        resume_if_asked("train_captioner", s.resume, &mut checkpoints, &mut trainer)?;
        if let Some(v) = validator.as_mut() {
            if checkpoints.resumed_after().is_some() {
                v.resume(checkpoints.resumed_best(), trainer.step_count())
                    .map_err(|e| err(format!("resuming: {e}")))?;
            } else {
                v.start_fresh()
                    .map_err(|e| err(format!("validation log: {e}")))?;
            }
        }
        Ok(Self {
            trainer,
            cache,
            settings: s,
            checkpoints,
            validator,
            unlogged: Default::default(),
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
        if batch.samples.is_empty()
            || self.checkpoints.already_trained(batch.time)
            || self.trainer.step_count() >= self.settings.train.schedule.total_steps
        {
            return Ok(());
        }
        let total_steps = self.settings.train.schedule.total_steps;
        if let Some(values) = self.unlogged.pop_front() {
            batch.metrics.extend(values);
        }
        if let Some(v) = self.validator.as_mut() {
            let step = self.trainer.step_count();
            if step == 0 && v.due(0, total_steps) {
                let values = v
                    .validate(&mut self.trainer, 0)
                    .map_err(|e| StageFailure::new(format!("validation failed: {e}")))?;
                log_validation(batch, &mut self.unlogged, values);
            }
        }
        // The frozen backbone runs once per batch: its features feed the
        // step (policy and reference) and the fluency captions.
        let precision = self.settings.train.precision;
        let (pixels, features, s, trained) = match &self.cache {
            Some(cache) => {
                let k = self.trainer.config().candidates as usize;
                let mut samples = Vec::new();
                let mut candidates = Vec::new();
                let (mut missing, mut incomplete) = (0, 0);
                for sample in &batch.samples {
                    match cache.get(&sample.key) {
                        Some(c) if c.len() == k => {
                            samples.push(sample);
                            candidates.push(c);
                        }
                        Some(_) => incomplete += 1,
                        None => missing += 1,
                    }
                }
                batch.metrics.insert("cache/missing".into(), missing as f64);
                batch
                    .metrics
                    .insert("cache/incomplete".into(), incomplete as f64);
                if samples.is_empty() {
                    return Ok(());
                }
                let (pixels, _, _) = sample_tensors(&samples)?;
                let features = precision
                    .autocast(|| self.trainer.features(&pixels))
                    .map_err(step_failed)?;
                let s = self
                    .trainer
                    .offline_step_on_features(&features, &candidates);
                (pixels, features, s, samples.len())
            }
            None => {
                let (pixels, keys, caps) = batch_tensors(batch)?;
                let features = precision
                    .autocast(|| self.trainer.features(&pixels))
                    .map_err(step_failed)?;
                let s = self
                    .trainer
                    .step_on_features(&keys, &pixels, &features, &caps);
                (pixels, features, s, keys.len())
            }
        };
        let s = s.map_err(step_failed)?;
        let every = self.settings.fluency_every.max(1);
        let due = s.optimizer_step && self.trainer.step_count() % every == 1 % every;
        if let (Some(judge), true) = (self.settings.fluency_judge, due) {
            let captions = match self.trainer.features_for_captions(&features) {
                Some(features) => self.trainer.caption_features(features),
                None => self.trainer.caption(&pixels),
            }
            .map_err(|e| StageFailure::new(format!("greedy captions for fluency: {e}")))?;
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
        if let Some(v) = self.validator.as_mut() {
            let step = self.trainer.step_count();
            if s.optimizer_step && v.due(step, total_steps) {
                let values = v
                    .validate(&mut self.trainer, step)
                    .map_err(|e| StageFailure::new(format!("validation failed: {e}")))?;
                log_validation(batch, &mut self.unlogged, values);
            }
        }
        let written = self
            .checkpoints
            .after_batch(
                &self.trainer,
                batch.time,
                || toml::to_string(&self.settings).unwrap_or_default(),
                &batch.metrics,
                self.validator.as_ref().and_then(Validator::best),
            )
            .map_err(|e| StageFailure::fatal(format!("checkpoint failed: {e}")))?;
        if let (Some(v), Some(_)) = (self.validator.as_mut(), written) {
            v.checkpoint_written()
                .map_err(|e| StageFailure::fatal(format!("checkpoint failed: {e}")))?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), StageFailure> {
        let out = &self.settings.out;
        std::fs::create_dir_all(out)
            .map_err(|e| StageFailure::new(format!("{}: {e}", out.display())))?;
        let weights = out.join(WEIGHTS_FILE);
        match &self.validator {
            Some(v) => v.write_model(&self.trainer, &weights),
            None => self.trainer.save_weights(&weights),
        }
        .map_err(|e| StageFailure::new(e.to_string()))?;
        let cfg = serde_json::to_string_pretty(&self.settings.captioner).unwrap_or_default();
        std::fs::write(out.join(CAPTIONER_CONFIG_FILE), cfg)
            .map_err(|e| StageFailure::new(e.to_string()))
    }
}

/// Settings of `caption`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptionStageSettings {
    pub captioner: CaptionerConfig,
    pub weights: PathBuf,
    /// Word vocabulary (JSON); absent: CLIP BPE.
    #[serde(default)]
    pub vocab: Option<PathBuf>,
    pub backbone: PathBuf,
    pub backbone_config: ClipConfig,
    /// Evaluator for the per-caption score (CLIP-S by default); absent: no score.
    #[serde(default)]
    pub evaluator: Option<PathBuf>,
    /// The evaluator's CLIP config (default: `backbone_config`).
    #[serde(default)]
    pub evaluator_config: Option<ClipConfig>,
    #[serde(default = "ScoreConfig::clip_s")]
    pub score: ScoreConfig,
    /// JSONL output: one `{"key", "caption", "references"}` per image, plus
    /// `"score"` with an evaluator.
    pub out: PathBuf,
    /// `cpu` (default), `cuda`, `cuda:K` or `auto` ([`DeviceName`]).
    #[serde(default = "cpu")]
    pub device: DeviceName,
}

/// Captions every image and scores it with the evaluator.
pub struct CaptionStage {
    trainer: CaptionTrainer,
    scorer: Option<ClipScorer>,
    out: std::io::BufWriter<std::fs::File>,
}

impl CaptionStage {
    pub fn try_new(s: CaptionStageSettings) -> Result<Self, FlowError> {
        let err = build_err("caption");
        let device = device_of("caption", s.device)?;
        let text = load_text(s.vocab.as_deref()).map_err(&err)?;
        let backbone = Backbone::from_clip_safetensors(&s.backbone, &s.backbone_config, device)
            .map_err(|e| err(e.to_string()))?;
        let train = CaptionTrainConfig {
            objective: Objective::Xe,
            optimizer: Default::default(),
            schedule: Default::default(),
            grad_clip: None,
            dico: Default::default(),
            candidates: 1,
            temperature: 1.0,
            seed: 0,
            accumulate: 1,
            label_smoothing: 0.0,
            precision: Precision::Fp32,
        };
        let trainer = CaptionTrainer::new(
            &s.captioner,
            text,
            backbone,
            Some(&s.weights),
            None,
            train,
            device,
        )
        .map_err(|e| err(e.to_string()))?;
        let evaluator_config = s.evaluator_config.as_ref().unwrap_or(&s.backbone_config);
        let scorer = s
            .evaluator
            .as_ref()
            .map(|p| load_scorer(p, evaluator_config, s.score.clone(), device))
            .transpose()
            .map_err(&err)?;
        if let Some(dir) = s.out.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
        }
        let file =
            std::fs::File::create(&s.out).map_err(|e| err(format!("{}: {e}", s.out.display())))?;
        Ok(Self {
            trainer,
            scorer,
            out: std::io::BufWriter::new(file),
        })
    }
}

impl DeviceStage for CaptionStage {
    fn process(&mut self, batch: &mut DeviceBatch) -> Result<(), StageFailure> {
        if batch.samples.is_empty() {
            return Ok(());
        }
        let (pixels, keys, references) = batch_tensors(batch)?;
        let captions = tch::no_grad(|| self.trainer.caption(&pixels))
            .map_err(|e| StageFailure::new(format!("captioning failed: {e}")))?;
        let scores = match self.scorer.as_mut() {
            Some(scorer) => {
                scorer
                    .add_images(&keys, &pixels)
                    .map_err(|e| StageFailure::new(e.to_string()))?;
                let scores = scorer
                    .score(&keys, &captions)
                    .map_err(|e| StageFailure::new(e.to_string()))?;
                scorer.clear_images();
                Some(scores)
            }
            None => None,
        };
        for (i, (k, c)) in keys.iter().zip(&captions).enumerate() {
            let mut line = serde_json::json!({"key": k, "caption": c, "references": references[i]});
            if let Some(scores) = &scores {
                line["score"] = serde_json::json!(scores[i]);
            }
            writeln!(self.out, "{line}").map_err(|e| StageFailure::new(e.to_string()))?;
        }
        self.out
            .flush()
            .map_err(|e| StageFailure::new(e.to_string()))?;
        if let Some(scores) = &scores {
            let sum: f64 = scores.iter().map(|&s| s as f64).sum();
            batch
                .metrics
                .insert("caption/score".into(), sum / keys.len() as f64);
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), StageFailure> {
        self.out
            .flush()
            .map_err(|e| StageFailure::new(e.to_string()))
    }
}
