//! Training a captioner: a [`CaptionTrainer`] is a [`Policy`] (the captioner,
//! its frozen backbone and caption text), a [`TrainObjective`] that carries
//! what it needs, a [`Stepper`] (AdamW, accumulation, loss scaling), a
//! generator and a step count. It is a plain struct fed with image tensors
//! and captions; the `train_captioner` device stage hosts it in the pipeline.
//! The objectives ([`crate::train::TrainObjective`]):
//!
//! - `xe`: teacher forcing, mean token cross-entropy, pad ignored, optional
//!   label smoothing ([`crate::train::xe_loss`]).
//! - `dico`: k beams from the current policy, evaluator rewards, policy and
//!   frozen-reference sequence log-probs, [`crate::train::dico_loss`].
//! - `scst`: k samples, baseline = mean reward of the other k − 1.
//! - `dico_offline`: DiCO from a reward cache ([`crate::reward::RewardCache`]):
//!   candidates, rewards and reference log-probs are read, not computed, so no
//!   evaluator or reference model is in memory (see `train::offline_dico`).
//!
//! [`CaptionTrainConfig`] and [`Objective`] are the settings users write
//! (`train` in a pipeline's `train_captioner` stage); construction checks
//! them and builds the objective.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Tensor};

use crate::model::captioner::{Backbone, CaptionText, Captioner, CaptionerConfig};
use crate::reward::{Reward, RewardCache};
use crate::rng::Rng;
use crate::train::adamw::{AdamW, AdamWConfig};
use crate::train::dico::DicoConfig;
use crate::train::error::TrainError;
use crate::train::loss_scale::LossScaleConfig;
use crate::train::objective::{MicroBatch, ObjectiveSettings, TrainObjective};
pub use crate::train::objective::{Objective, ObjectiveInputs, StepStats};
use crate::train::policy::Policy;
use crate::train::precision::Precision;
use crate::train::schedule::Schedule;
use crate::train::step::{StepConfig, Stepper, Update};

/// Settings of captioner training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptionTrainConfig {
    pub objective: Objective,
    pub optimizer: AdamWConfig,
    pub schedule: Schedule,
    pub grad_clip: Option<f64>,
    /// DiCO's β and τ (online and offline).
    #[serde(default)]
    pub dico: DicoConfig,
    /// Candidates per image (beams for DiCO, samples for SCST).
    pub candidates: i64,
    /// Sampling temperature of SCST.
    #[serde(default = "one")]
    pub temperature: f64,
    pub seed: u64,
    /// Micro-batches (pipeline batches) per optimizer step; each micro-batch
    /// is weighted by its normalizer units (XE: target tokens; otherwise
    /// images), so a step follows the mean over the whole cycle
    /// ([`crate::train::step`]). `schedule.total_steps`, the step count and checkpoints count
    /// optimizer steps. Default 1.
    #[serde(default = "one_batch")]
    pub accumulate: u32,
    /// XE label smoothing ε in [0, 1] (PyTorch's `label_smoothing`). Default 0.
    #[serde(default)]
    pub label_smoothing: f64,
    /// `"fp32"` (default) or `"fp16"` (CUDA autocast + dynamic loss scaling
    /// with `torch.amp.GradScaler`'s defaults; the scale is checkpointed).
    /// Master weights and AdamW state stay float32.
    #[serde(default)]
    pub precision: Precision,
}

fn one() -> f64 {
    1.0
}

fn one_batch() -> u32 {
    1
}

/// A captioner being trained: the policy, its objective, the optimizer
/// state, the generator its objective draws from and the step count.
pub struct CaptionTrainer {
    /// The captioner being trained, its backbone and caption text.
    pub policy: Policy,
    /// AdamW plus accumulation and loss-scaling state.
    pub stepper: Stepper,
    objective: TrainObjective,
    cfg: CaptionTrainConfig,
    rng: Rng,
    step: u64,
}

impl std::fmt::Debug for CaptionTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptionTrainer")
            .field("objective", &self.cfg.objective)
            .field("step", &self.step)
            .finish()
    }
}

impl CaptionTrainer {
    /// A trainer for `captioner` (freshly initialised, seeded) over the frozen
    /// `backbone`, with a reward (or none) and no reward cache: see
    /// [`CaptionTrainer::try_new`].
    pub fn new(
        captioner: &CaptionerConfig,
        text: impl Into<CaptionText>,
        backbone: Backbone,
        init: Option<&Path>,
        reward: Option<Reward>,
        cfg: CaptionTrainConfig,
        device: Device,
    ) -> Result<Self, TrainError> {
        let inputs = ObjectiveInputs {
            reward,
            ..Default::default()
        };
        Self::try_new(captioner, text, backbone, init, inputs, cfg, device)
    }

    /// A trainer for `captioner` (freshly initialised from `cfg.seed`) over
    /// the frozen `backbone`. `init` loads the policy's starting weights
    /// (DiCO/SCST start from the XE checkpoint, which is also DiCO's frozen
    /// reference); `inputs` give the reward that scores the candidates of
    /// DiCO and SCST, and the reward cache of offline DiCO. `text` (a word
    /// [`crate::model::captioner::Vocab`] or CLIP BPE) must fit the
    /// captioner's token ids.
    ///
    /// Errors: [`TrainError::Text`] when the text does not fit;
    /// [`TrainError::Setting`] for a setting out of range or an input the
    /// objective needs and lacks ([`TrainObjective::try_new`]); torch and
    /// model errors when the weights cannot be loaded.
    pub fn try_new(
        captioner: &CaptionerConfig,
        text: impl Into<CaptionText>,
        backbone: Backbone,
        init: Option<&Path>,
        inputs: ObjectiveInputs,
        cfg: CaptionTrainConfig,
        device: Device,
    ) -> Result<Self, TrainError> {
        cfg.precision.check_device(device)?;
        if !(0.0..=1.0).contains(&cfg.label_smoothing) {
            return Err(TrainError::Setting {
                name: "label_smoothing",
                value: cfg.label_smoothing.to_string(),
                reason: "must be in [0, 1] (0 turns smoothing off)",
            });
        }
        let mut policy = Policy::new(captioner, text, backbone, cfg.seed, device)?;
        let mut reference = None;
        if let Some(path) = init {
            let init_err = |e: TrainError| TrainError::Init {
                path: path.to_path_buf(),
                source: Box::new(e),
            };
            policy.load_weights(path).map_err(init_err)?;
            if cfg.objective == Objective::Dico {
                let mut rvs = VarStore::new(device);
                let r = Captioner::new(rvs.root(), captioner)?;
                crate::model::weights::load_var_store(&mut rvs, path)
                    .map_err(|e| init_err(e.into()))?;
                rvs.freeze();
                reference = Some((rvs, r));
            }
        }
        let settings = ObjectiveSettings {
            label_smoothing: cfg.label_smoothing,
            dico: cfg.dico,
            candidates: cfg.candidates,
            temperature: cfg.temperature,
        };
        let objective =
            TrainObjective::try_new(cfg.objective, settings, init.is_some(), reference, inputs)?;
        let stepper = Stepper::new(
            AdamW::new(&policy.vs, cfg.optimizer),
            StepConfig {
                accumulate: cfg.accumulate,
                grad_clip: cfg.grad_clip,
                precision: cfg.precision,
                loss_scale: LossScaleConfig::default(),
            },
        )?;
        Ok(Self {
            rng: Rng::derive(cfg.seed, &[0xCA]),
            policy,
            stepper,
            objective,
            cfg,
            step: 0,
        })
    }

    /// Optimizer steps taken.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The training settings.
    pub fn config(&self) -> &CaptionTrainConfig {
        &self.cfg
    }

    /// Micro-batches per optimizer step.
    pub fn batches_per_step(&self) -> u64 {
        self.stepper.accumulate() as u64
    }

    /// The objective.
    pub fn objective(&self) -> Objective {
        self.objective.kind()
    }

    /// The reward scoring candidates (DiCO, SCST), if any.
    pub fn reward_mut(&mut self) -> Option<&mut Reward> {
        self.objective.reward_mut()
    }

    /// The reward cache offline DiCO reads its candidates from, if any.
    pub fn reward_cache(&self) -> Option<&RewardCache> {
        self.objective.reward_cache()
    }

    /// The policy with the objective's reward, if any (validation captions
    /// with one and scores with the other).
    pub fn policy_and_reward(&mut self) -> (&Policy, Option<&mut Reward>) {
        (&self.policy, self.objective.reward_mut())
    }

    /// Forward passes of the frozen backbone since the trainer was made
    /// ([`Policy::backbone_forwards`]).
    pub fn backbone_forwards(&self) -> usize {
        self.policy.backbone_forwards()
    }

    /// The features of a step's images for greedy captions after the step
    /// ([`Policy::caption_features`]): `features` when the step ran in fp32
    /// (the same values a fresh pass would give), `None` under autocast (the
    /// step's features are reduced-precision; captions then run their own pass
    /// in fp32, as they always have).
    pub fn features_for_captions<'a>(&self, features: &'a Tensor) -> Option<&'a Tensor> {
        (self.cfg.precision == Precision::Fp32).then_some(features)
    }

    /// Backward of a micro-batch loss and, at the end of an accumulation
    /// cycle, the update. A skipped fp16 step still counts as a step, so the
    /// schedule and `total_steps` advance as with PyTorch's `GradScaler`.
    /// `count`: the loss's normalizer units (images; target tokens for XE).
    fn apply(
        &mut self,
        loss: &Tensor,
        count: f64,
        stats: &mut StepStats,
    ) -> Result<(), TrainError> {
        let lr = self.cfg.schedule.lr_at(self.step);
        stats.loss = loss.f_double_value(&[])?;
        stats.lr = lr;
        if let Some(scale) = self.stepper.loss_scale() {
            stats.extra.insert("train/loss_scale".into(), scale);
        }
        let update = self.stepper.backward(loss, count, lr)?;
        self.record(update, stats);
        Ok(())
    }

    /// Count an optimizer step and report it in `stats` (with replicas, also
    /// the all-reduce's wait as `train/allreduce_s`, seconds).
    fn record(&mut self, update: Option<Update>, stats: &mut StepStats) {
        if let Some(seconds) = self.stepper.take_allreduce_seconds() {
            stats.extra.insert("train/allreduce_s".into(), seconds);
        }
        match update {
            None => {}
            Some(update) => {
                self.step += 1;
                stats.optimizer_step = true;
                match update {
                    Update::Applied { grad_norm } => stats.grad_norm = grad_norm,
                    Update::Skipped => stats.skipped_step = true,
                }
            }
        }
    }

    /// A micro-batch in which this replica has no image (replicas only): it
    /// contributes nothing and takes part in the all-reduce, so every replica
    /// takes the same step ([`Stepper::backward_empty`]).
    pub fn step_empty(&mut self) -> Result<StepStats, TrainError> {
        let lr = self.cfg.schedule.lr_at(self.step);
        let mut stats = StepStats {
            lr,
            ..Default::default()
        };
        let update = self.stepper.backward_empty(lr)?;
        self.record(update, &mut stats);
        Ok(stats)
    }

    /// One micro-batch on images `pixels` `[b, 3, H, W]` with keys `keys` (the
    /// evaluator caches image embeddings by key; offline DiCO reads the
    /// cache by key) and reference captions (XE draws one per image;
    /// CIDEr-D rewards score against them); an optimizer step every
    /// `accumulate` calls.
    ///
    /// Errors: [`TrainError::Shape`] when the inputs do not hold the same
    /// images; the objective's errors.
    pub fn step(
        &mut self,
        keys: &[String],
        pixels: &Tensor,
        references: &[Vec<String>],
    ) -> Result<StepStats, TrainError> {
        let features = self
            .cfg
            .precision
            .autocast(|| self.policy.features(pixels))?;
        self.step_on_features(keys, pixels, &features, references)
    }

    /// [`Self::step`] on the backbone's `features` `[b, tokens, width]` of
    /// `pixels` ([`Policy::features`], computed under the step's precision, e.g.
    /// `config().precision.autocast(|| trainer.policy.features(pixels))`);
    /// `pixels` still go to a CLIP reward, which encodes images with its own
    /// tower.
    pub fn step_on_features(
        &mut self,
        keys: &[String],
        pixels: &Tensor,
        features: &Tensor,
        references: &[Vec<String>],
    ) -> Result<StepStats, TrainError> {
        let b = pixels.size().first().copied().unwrap_or(0);
        if keys.len() as i64 != b
            || references.len() as i64 != b
            || features.size().first() != Some(&b)
        {
            return Err(TrainError::Shape {
                what: "captioner step",
                detail: format!(
                    "{b} images, {} keys, {} caption lists, features {:?}",
                    keys.len(),
                    references.len(),
                    features.size()
                ),
            });
        }
        if let Some(rng) = self.stepper.replica_rng(self.cfg.seed, 0xCA, self.step) {
            self.rng = rng;
        }
        let batch = MicroBatch {
            keys,
            pixels,
            features,
            references,
        };
        // Forward passes under autocast; backward and the update outside it.
        let (objective, policy, rng) = (&mut self.objective, &self.policy, &mut self.rng);
        let (loss, count, mut stats) = self
            .cfg
            .precision
            .autocast(|| objective.loss(policy, rng, &batch))?;
        self.apply(&loss, count, &mut stats)?;
        Ok(stats)
    }
}

crate::train::resumable::impl_resumable!(CaptionTrainer, policy.vs);
