//! Training a captioner: cross-entropy pre-training (`xe`), DiCO fine-tuning
//! (`dico`) and the SCST baseline (`scst`). The trainer is a plain struct fed
//! with image tensors and captions; a device stage hosts it in the pipeline.
//!
//! - `xe`: teacher forcing, mean token cross-entropy, pad ignored, optional
//!   label smoothing ([`crate::train::xe_loss`]).
//! - `dico`: k beams from the current policy, evaluator rewards, policy and
//!   frozen-reference sequence log-probs, [`crate::train::dico_loss`].
//! - `scst`: k samples, baseline = mean reward of the other k − 1.
//! - `dico_offline`: DiCO from a reward cache ([`crate::reward::RewardCache`]):
//!   candidates, rewards and reference log-probs are read, not computed, so no
//!   evaluator or reference model is in memory (see `train::offline_dico`).

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::model::captioner::{Backbone, CaptionText, Captioner, CaptionerConfig};
use crate::model::decode::greedy;
use crate::reward::Reward;
use crate::rng::Rng;
use crate::train::adamw::{AdamW, AdamWConfig};
use crate::train::candidates::{padded, Candidates, Decoding};
use crate::train::dico::{dico_loss, DicoConfig};
use crate::train::error::TrainError;
use crate::train::loss_scale::LossScaleConfig;
use crate::train::precision::Precision;
use crate::train::schedule::Schedule;
use crate::train::scst::scst_loss;
use crate::train::step::{StepConfig, Stepper, Update};
use crate::train::xe::xe_loss;

/// Which objective a [`CaptionTrainer`] optimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    Xe,
    Dico,
    Scst,
    #[serde(rename = "dico_offline")]
    DicoOffline,
}

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

/// Per-step numbers (the objective's own stats are in `extra`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    /// Mean candidate length in tokens (EOS included) — DiCO/SCST.
    pub candidate_length: f64,
    /// Share of candidates that ended with EOS — DiCO/SCST.
    pub eos_share: f64,
    /// Objective-specific values by name (DiCO: rewards/chosen, margins, ...);
    /// `train/loss_scale` in fp16.
    pub extra: std::collections::BTreeMap<String, f64>,
    /// This micro-batch completed an accumulation cycle (the step count
    /// advanced); `grad_norm` is meaningful only then.
    pub optimizer_step: bool,
    /// The cycle's fp16 gradients were not finite: no update was made.
    pub skipped_step: bool,
}

/// A captioner being trained, with what its objective needs.
pub struct CaptionTrainer {
    pub vs: VarStore,
    pub policy: Captioner,
    /// AdamW plus accumulation and loss-scaling state.
    pub stepper: Stepper,
    /// What the captioner's ids mean.
    pub text: CaptionText,
    backbone: Backbone,
    reference: Option<(VarStore, Captioner)>,
    reward: Option<Reward>,
    cfg: CaptionTrainConfig,
    rng: Rng,
    step: u64,
    /// Forward passes of the frozen backbone so far ([`Self::backbone_forwards`]).
    backbone_forwards: std::sync::atomic::AtomicUsize,
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
    /// `backbone`. `init` loads the policy's starting weights (DiCO/SCST start from
    /// the XE checkpoint, which is also the frozen reference); `reward` scores
    /// the candidates of DiCO and SCST. `text` (a word
    /// [`crate::model::captioner::Vocab`] or CLIP BPE) must fit the captioner's
    /// token ids.
    pub fn new(
        captioner: &CaptionerConfig,
        text: impl Into<CaptionText>,
        backbone: Backbone,
        init: Option<&std::path::Path>,
        reward: Option<Reward>,
        cfg: CaptionTrainConfig,
        device: Device,
    ) -> Result<Self, TrainError> {
        let text = text.into();
        text.check(&captioner.tokens)?;
        cfg.precision.check_device(device)?;
        if !(0.0..=1.0).contains(&cfg.label_smoothing) {
            return Err(TrainError::Setting {
                name: "label_smoothing",
                value: cfg.label_smoothing.to_string(),
                reason: "must be in [0, 1] (0 turns smoothing off)",
            });
        }
        let (mut vs, policy) = crate::rng::with_torch_seed(cfg.seed, || {
            let vs = VarStore::new(device);
            Captioner::new(vs.root(), captioner).map(|p| (vs, p))
        })?;
        let mut reference = None;
        if let Some(path) = init {
            vs.load(path)?;
            if cfg.objective == Objective::Dico {
                let mut rvs = VarStore::new(device);
                let r = Captioner::new(rvs.root(), captioner)?;
                rvs.load(path)?;
                rvs.freeze();
                reference = Some((rvs, r));
            }
        }
        let online_rl = matches!(cfg.objective, Objective::Dico | Objective::Scst);
        if online_rl && reward.is_none() {
            return Err(TrainError::Setting {
                name: "reward",
                value: format!("{:?}", cfg.objective),
                reason: "DiCO and SCST need a reward: set `evaluator` (CLIP score) or \
                         `reward = { kind = \"cider_d\", references = ... }`",
            });
        }
        if cfg.objective == Objective::DicoOffline && init.is_none() {
            return Err(TrainError::Setting {
                name: "init",
                value: "none".into(),
                reason:
                    "offline DiCO starts the policy from the XE checkpoint (the cache's reference)",
            });
        }
        if cfg.objective == Objective::Dico && reference.is_none() {
            return Err(TrainError::Setting {
                name: "init",
                value: "none".into(),
                reason:
                    "DiCO needs the XE checkpoint: it starts the policy and is the frozen reference",
            });
        }
        if cfg.objective != Objective::Xe && cfg.candidates < 2 {
            return Err(TrainError::Setting {
                name: "candidates",
                value: cfg.candidates.to_string(),
                reason: "DiCO and SCST need at least 2 candidates per image",
            });
        }
        let stepper = Stepper::new(
            AdamW::new(&vs, cfg.optimizer),
            StepConfig {
                accumulate: cfg.accumulate,
                grad_clip: cfg.grad_clip,
                precision: cfg.precision,
                loss_scale: LossScaleConfig::default(),
            },
        )?;
        Ok(Self {
            rng: Rng::derive(cfg.seed, &[0xCA]),
            vs,
            policy,
            stepper,
            text,
            backbone,
            reference,
            reward,
            cfg,
            step: 0,
            backbone_forwards: Default::default(),
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
        self.cfg.objective
    }

    /// The reward scoring candidates, if any.
    pub fn reward_mut(&mut self) -> Option<&mut Reward> {
        self.reward.as_mut()
    }

    /// The frozen backbone's features `[b, tokens, width]` of images `pixels`
    /// `[b, 3, H, W]` (moved to the trainer's device), without grad. The only
    /// place the trainer runs the backbone: a step computes them once and hands
    /// them to the policy, the reference and the fluency captions.
    pub fn features(&self, pixels: &Tensor) -> Result<Tensor, TrainError> {
        self.backbone_forwards
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.backbone
            .features(&pixels.to_device(self.vs.device()))
            .map_err(TrainError::from)
    }

    /// Forward passes of the frozen backbone since the trainer was made (a
    /// statistic: a DiCO step with its fluency captions makes one in fp32).
    pub fn backbone_forwards(&self) -> usize {
        self.backbone_forwards
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The features of a step's images for greedy captions after the step
    /// ([`Self::caption_features`]): `features` when the step ran in fp32
    /// (the same values a fresh pass would give), `None` under autocast (the
    /// step's features are reduced-precision; captions then run their own pass
    /// in fp32, as they always have).
    pub fn features_for_captions<'a>(&self, features: &'a Tensor) -> Option<&'a Tensor> {
        (self.cfg.precision == Precision::Fp32).then_some(features)
    }

    /// Targets `[rows, L]`: caption ids + EOS, padded.
    fn targets(&self, captions: &[String]) -> Tensor {
        let max_len = self.policy.config().max_len as usize;
        let seqs: Vec<Vec<i64>> = captions
            .iter()
            .map(|c| self.text.encode_target(c, max_len))
            .collect();
        padded(&seqs, self.policy.tokens().pad, self.vs.device())
    }

    /// Backward of a micro-batch loss and, at the end of an accumulation
    /// cycle, the update. A skipped fp16 step still counts as a step, so the
    /// schedule and `total_steps` advance as with PyTorch's `GradScaler`.
    /// `count`: the loss's normalizer units (images; target tokens for XE).
    pub(crate) fn apply(
        &mut self,
        loss: &Tensor,
        count: f64,
        stats: &mut StepStats,
    ) -> Result<(), TrainError> {
        let lr = self.cfg.schedule.lr_at(self.step);
        stats.loss = loss.double_value(&[]);
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
    /// evaluator caches image embeddings by key) and reference captions (XE
    /// draws one per image; CIDEr-D rewards score against them); an optimizer
    /// step every `accumulate` calls.
    pub fn step(
        &mut self,
        keys: &[String],
        pixels: &Tensor,
        references: &[Vec<String>],
    ) -> Result<StepStats, TrainError> {
        let features = self.cfg.precision.autocast(|| self.features(pixels))?;
        self.step_on_features(keys, pixels, &features, references)
    }

    /// [`Self::step`] on the backbone's `features` `[b, tokens, width]` of
    /// `pixels` ([`Self::features`], computed under the step's precision, e.g.
    /// `config().precision.autocast(|| trainer.features(pixels))`); `pixels`
    /// still go to a CLIP reward, which encodes images with its own tower.
    pub fn step_on_features(
        &mut self,
        keys: &[String],
        pixels: &Tensor,
        features: &Tensor,
        references: &[Vec<String>],
    ) -> Result<StepStats, TrainError> {
        let b = pixels.size()[0];
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
        // Forward passes under autocast; backward and the update outside it.
        let precision = self.cfg.precision;
        let (loss, count, mut stats) = precision.autocast(|| match self.cfg.objective {
            Objective::Xe => self.xe_loss(features, references),
            Objective::Dico | Objective::Scst => self.rl_loss(keys, pixels, features, references),
            Objective::DicoOffline => Err(TrainError::Setting {
                name: "objective",
                value: "dico_offline".into(),
                reason: "offline DiCO reads its candidates from a reward cache: use `offline_step`",
            }),
        })?;
        self.apply(&loss, count, &mut stats)?;
        Ok(stats)
    }

    /// The XE loss, its target-token count and statistics.
    fn xe_loss(
        &mut self,
        features: &Tensor,
        references: &[Vec<String>],
    ) -> Result<(Tensor, f64, StepStats), TrainError> {
        if references.iter().any(Vec::is_empty) {
            return Err(TrainError::Shape {
                what: "xe step",
                detail: "every image needs at least one reference caption".into(),
            });
        }
        let chosen: Vec<String> = references
            .iter()
            .map(|r| self.rng.choose(r).clone())
            .collect();
        let memory = self.policy.encode(features)?;
        let tokens = self.targets(&chosen);
        let (inputs, mask) = self.policy.teacher_forcing_inputs(&tokens)?;
        let logits = self.policy.logits(&memory, &inputs)?; // [b, L, V]
        let loss = xe_loss(&logits, &tokens, &mask, self.cfg.label_smoothing)?;
        // The loss's normalizer: kept target tokens (EOS included, pad not).
        let count = mask.f_sum(Kind::Int64)?.int64_value(&[]) as f64;
        Ok((loss, count, StepStats::default()))
    }

    fn rl_loss(
        &mut self,
        keys: &[String],
        pixels: &Tensor,
        features: &Tensor,
        references: &[Vec<String>],
    ) -> Result<(Tensor, f64, StepStats), TrainError> {
        let k = self.cfg.candidates;
        let memory = self.policy.encode(features)?;
        let decoding = match self.cfg.objective {
            Objective::Dico => Decoding::Beam,
            _ => Decoding::Sample {
                temperature: self.cfg.temperature,
            },
        };
        let seed = self.rng.next_u64();
        let candidates = Candidates::generate(&self.policy, &memory, k, decoding, seed)?;
        let captions: Vec<String> = candidates
            .ids
            .iter()
            .map(|ids| self.text.decode(ids))
            .collect();
        let reward = self.reward.as_mut().ok_or(TrainError::Setting {
            name: "reward",
            value: "none".into(),
            reason: "no reward to score candidates with",
        })?;
        let rewards = reward.score(keys, pixels, &captions, references)?;
        let rewards = candidates.per_candidate(&rewards, self.vs.device());
        let policy_lp = candidates.logprobs(&self.policy, &memory)?;
        let (candidate_length, eos_share) = (candidates.mean_length(), candidates.eos_share());
        let mut extra = std::collections::BTreeMap::new();
        let loss = match self.cfg.objective {
            Objective::Dico => {
                let (_, reference) = self.reference.as_ref().ok_or(TrainError::Setting {
                    name: "init",
                    value: "none".into(),
                    reason: "DiCO needs a reference model",
                })?;
                // The policy's backbone features: the backbone is frozen and
                // shared, so the reference sees the same values.
                let ref_lp = tch::no_grad(|| -> Result<Tensor, TrainError> {
                    let mem = reference.encode(features)?;
                    candidates
                        .logprobs(reference, &mem)
                        .map_err(TrainError::from)
                })?;
                let out = dico_loss(&policy_lp, &ref_lp, &rewards, &self.cfg.dico)?;
                extra.extend(out.stats.metrics());
                out.loss
            }
            _ => {
                let (loss, adv_std) = scst_loss(&policy_lp, &rewards)?;
                extra.insert(
                    "evaluator/mean".into(),
                    rewards.mean(Kind::Double).double_value(&[]),
                );
                extra.insert("evaluator/max".into(), rewards.max().double_value(&[]));
                extra.insert("advantage/std".into(), adv_std);
                loss
            }
        };
        let stats = StepStats {
            candidate_length,
            eos_share,
            extra,
            ..Default::default()
        };
        // DiCO and SCST average over images.
        Ok((loss, keys.len() as f64, stats))
    }

    /// Greedy captions for images `pixels` `[b, 3, H, W]`.
    pub fn caption(&self, pixels: &Tensor) -> Result<Vec<String>, TrainError> {
        let features = self.features(pixels)?;
        self.caption_features(&features)
    }

    /// Greedy captions from backbone features `[b, tokens, width]` (fp32,
    /// [`Self::features`]).
    pub fn caption_features(&self, features: &Tensor) -> Result<Vec<String>, TrainError> {
        let memory = tch::no_grad(|| self.policy.encode(features))?;
        let decoded = greedy(&self.policy, &memory, None)?;
        let pad = self.policy.tokens().pad;
        (0..features.size()[0])
            .map(|i| {
                let ids = decoded.sequence(i, 0, pad)?;
                Ok(self.text.decode(&ids))
            })
            .collect()
    }

    /// Save the policy's weights (safetensors).
    pub fn save_weights(&self, path: &std::path::Path) -> Result<(), TrainError> {
        self.vs.save(path)?;
        Ok(())
    }
}

crate::train::resumable::impl_resumable!(CaptionTrainer);
