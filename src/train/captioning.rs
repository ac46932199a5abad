//! Training a captioner: cross-entropy pre-training (`xe`), DiCO fine-tuning
//! (`dico`) and the SCST baseline (`scst`). The trainer is a plain struct fed
//! with image tensors and captions; a device stage hosts it in the pipeline.
//!
//! - `xe`: teacher forcing, mean token cross-entropy, pad ignored.
//! - `dico`: k beams from the current policy, evaluator rewards, policy and
//!   frozen-reference sequence log-probs, [`crate::train::dico_loss`].
//! - `scst`: k samples, baseline = mean reward of the other k − 1.

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::model::captioner::{Backbone, Captioner, CaptionerConfig, Vocab};
use crate::model::decode::{beam_search, greedy, sample, BeamOptions, SampleOptions};
use crate::model::ModelError;
use crate::reward::Reward;
use crate::rng::Rng;
use crate::train::adamw::{AdamW, AdamWConfig};
use crate::train::checkpoint::{Checkpointer, TrainState};
use crate::train::dico::{dico_loss, DicoConfig};
use crate::train::error::TrainError;
use crate::train::schedule::Schedule;
use crate::train::scst::scst_loss;

/// Which objective a [`CaptionTrainer`] optimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    Xe,
    Dico,
    Scst,
}

/// Settings of captioner training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptionTrainConfig {
    pub objective: Objective,
    pub optimizer: AdamWConfig,
    pub schedule: Schedule,
    pub grad_clip: Option<f64>,
    /// DiCO's β and τ.
    #[serde(default)]
    pub dico: DicoConfig,
    /// Candidates per image (beams for DiCO, samples for SCST).
    pub candidates: i64,
    /// Sampling temperature of SCST.
    #[serde(default = "one")]
    pub temperature: f64,
    pub seed: u64,
}

fn one() -> f64 {
    1.0
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
    /// Objective-specific values by name (DiCO: rewards/chosen, margins, ...).
    pub extra: std::collections::BTreeMap<String, f64>,
}

fn model_err(e: ModelError) -> TrainError {
    TrainError::Model(Box::new(e))
}

/// A captioner being trained, with what its objective needs.
pub struct CaptionTrainer {
    pub vs: VarStore,
    pub policy: Captioner,
    pub opt: AdamW,
    pub vocab: Vocab,
    backbone: Backbone,
    reference: Option<(VarStore, Captioner)>,
    reward: Option<Reward>,
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
    /// `backbone`. `init` loads the policy's starting weights (DiCO/SCST start from
    /// the XE checkpoint, which is also the frozen reference); `reward` scores
    /// the candidates of DiCO and SCST.
    pub fn new(
        captioner: &CaptionerConfig,
        vocab: Vocab,
        backbone: Backbone,
        init: Option<&std::path::Path>,
        reward: Option<Reward>,
        cfg: CaptionTrainConfig,
        device: Device,
    ) -> Result<Self, TrainError> {
        tch::manual_seed(cfg.seed as i64);
        let mut vs = VarStore::new(device);
        let policy = Captioner::new(vs.root(), captioner).map_err(model_err)?;
        let mut reference = None;
        if let Some(path) = init {
            vs.load(path)?;
            if cfg.objective == Objective::Dico {
                let mut rvs = VarStore::new(device);
                let r = Captioner::new(rvs.root(), captioner).map_err(model_err)?;
                rvs.load(path)?;
                rvs.freeze();
                reference = Some((rvs, r));
            }
        }
        if cfg.objective != Objective::Xe && reward.is_none() {
            return Err(TrainError::Setting {
                name: "reward",
                value: format!("{:?}", cfg.objective),
                reason: "DiCO and SCST need a reward: set `evaluator` (CLIP score) or \
                         `reward = { kind = \"cider_d\", references = ... }`",
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
        let opt = AdamW::new(&vs, cfg.optimizer);
        Ok(Self {
            rng: Rng::derive(cfg.seed, &[0xCA]),
            vs,
            policy,
            opt,
            vocab,
            backbone,
            reference,
            reward,
            cfg,
            step: 0,
        })
    }

    /// Steps taken.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The objective.
    pub fn objective(&self) -> Objective {
        self.cfg.objective
    }

    /// The reward scoring candidates, if any.
    pub fn reward_mut(&mut self) -> Option<&mut Reward> {
        self.reward.as_mut()
    }

    fn memory(&self, pixels: &Tensor) -> Result<Tensor, TrainError> {
        let feats = self
            .backbone
            .features(&pixels.to_device(self.vs.device()))
            .map_err(model_err)?;
        self.policy.encode(&feats).map_err(model_err)
    }

    /// Targets `[rows, L]`: word ids + EOS, padded.
    fn targets(&self, captions: &[String]) -> Tensor {
        let max_len = self.policy.config().max_len as usize;
        let seqs: Vec<Vec<i64>> = captions
            .iter()
            .map(|c| self.vocab.encode_target(c, max_len))
            .collect();
        let len = seqs.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let pad = self.policy.tokens().pad;
        let mut flat = vec![pad; seqs.len() * len];
        for (row, s) in flat.chunks_mut(len).zip(&seqs) {
            row[..s.len()].copy_from_slice(s);
        }
        Tensor::from_slice(&flat)
            .view([seqs.len() as i64, len as i64])
            .to_device(self.vs.device())
    }

    fn apply(&mut self, loss: &Tensor) -> (f64, f64) {
        let lr = self.cfg.schedule.lr_at(self.step);
        self.opt.set_lr(lr);
        self.opt.zero_grad();
        loss.backward();
        let norm = self.opt.clip_grad_norm(self.cfg.grad_clip);
        self.opt.step();
        self.step += 1;
        (lr, norm)
    }

    /// One step on images `pixels` `[b, 3, H, W]` with keys `keys` (the
    /// evaluator caches image embeddings by key) and reference captions (XE
    /// draws one per image; CIDEr-D rewards score against them).
    pub fn step(
        &mut self,
        keys: &[String],
        pixels: &Tensor,
        references: &[Vec<String>],
    ) -> Result<StepStats, TrainError> {
        let b = pixels.size()[0];
        if keys.len() as i64 != b || references.len() as i64 != b {
            return Err(TrainError::Shape {
                what: "captioner step",
                detail: format!(
                    "{b} images, {} keys, {} caption lists",
                    keys.len(),
                    references.len()
                ),
            });
        }
        match self.cfg.objective {
            Objective::Xe => self.xe_step(pixels, references),
            Objective::Dico | Objective::Scst => self.rl_step(keys, pixels, references),
        }
    }

    fn xe_step(
        &mut self,
        pixels: &Tensor,
        references: &[Vec<String>],
    ) -> Result<StepStats, TrainError> {
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
        let memory = self.memory(pixels)?;
        let tokens = self.targets(&chosen);
        let logp = self
            .policy
            .token_logprobs(&memory, &tokens)
            .map_err(model_err)?; // [b, L]
        let (_, mask) = self
            .policy
            .teacher_forcing_inputs(&tokens)
            .map_err(model_err)?;
        let count = mask.to_kind(Kind::Float).sum(Kind::Float).clamp_min(1.0);
        let loss = -logp.sum(Kind::Float) / count;
        let (lr, grad_norm) = self.apply(&loss);
        Ok(StepStats {
            loss: loss.double_value(&[]),
            lr,
            grad_norm,
            ..Default::default()
        })
    }

    fn rl_step(
        &mut self,
        keys: &[String],
        pixels: &Tensor,
        references: &[Vec<String>],
    ) -> Result<StepStats, TrainError> {
        let b = pixels.size()[0];
        let k = self.cfg.candidates;
        let memory = self.memory(pixels)?;
        let decoded = match self.cfg.objective {
            Objective::Dico => beam_search(
                &self.policy,
                &memory.detach(),
                &BeamOptions {
                    beams: k,
                    ..Default::default()
                },
            ),
            _ => sample(
                &self.policy,
                &memory.detach(),
                &SampleOptions {
                    samples: k,
                    temperature: self.cfg.temperature,
                    max_len: None,
                    seed: self.rng.next_u64(),
                },
            ),
        }
        .map_err(model_err)?;
        let len = decoded.tokens.size()[2];
        let tokens = decoded.tokens.view([b * k, len]);
        let pad = self.policy.tokens().pad;
        let eos = self.policy.tokens().eos;
        let mut captions = Vec::with_capacity((b * k) as usize);
        for i in 0..b {
            for j in 0..k {
                let ids = decoded.sequence(i, j, pad).map_err(model_err)?;
                captions.push(self.vocab.decode(&ids));
            }
        }
        let reward = self.reward.as_mut().ok_or(TrainError::Setting {
            name: "reward",
            value: "none".into(),
            reason: "no reward to score candidates with",
        })?;
        let rewards = reward
            .score(keys, pixels, &captions, references)
            .map_err(|e| TrainError::Reward(Box::new(e)))?;
        let rewards = Tensor::from_slice(&rewards)
            .to_kind(Kind::Float)
            .view([b, k])
            .to_device(self.vs.device());
        let policy_lp = self
            .policy
            .sequence_logprobs(&memory, &tokens)
            .map_err(model_err)?
            .view([b, k]);
        let lengths = decoded.lengths.to_kind(Kind::Double);
        let candidate_length = lengths.mean(Kind::Double).double_value(&[]);
        let eos_share = decoded
            .tokens
            .eq(eos)
            .any_dim(2, false)
            .to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[]);
        let mut extra = std::collections::BTreeMap::new();
        let loss = match self.cfg.objective {
            Objective::Dico => {
                let (_, reference) = self.reference.as_ref().ok_or(TrainError::Setting {
                    name: "init",
                    value: "none".into(),
                    reason: "DiCO needs a reference model",
                })?;
                let ref_lp = tch::no_grad(|| -> Result<Tensor, TrainError> {
                    let feats = self
                        .backbone
                        .features(&pixels.to_device(self.vs.device()))
                        .map_err(model_err)?;
                    let mem = reference.encode(&feats).map_err(model_err)?;
                    Ok(reference
                        .sequence_logprobs(&mem, &tokens)
                        .map_err(model_err)?
                        .view([b, k]))
                })?;
                let out = dico_loss(&policy_lp, &ref_lp, &rewards, &self.cfg.dico)?;
                let s = out.stats;
                for (name, v) in [
                    ("rewards/chosen", s.reward_chosen),
                    ("rewards/rejected", s.reward_rejected),
                    ("rewards/margins", s.reward_margin),
                    ("rewards/accuracies", s.accuracy),
                    ("evaluator/mean", s.evaluator_reward_mean),
                    ("evaluator/max", s.evaluator_reward_max),
                    ("evaluator/winner", s.evaluator_reward_winner),
                    ("kl", s.kl_estimate),
                ] {
                    extra.insert(name.to_owned(), v);
                }
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
        let (lr, grad_norm) = self.apply(&loss);
        Ok(StepStats {
            loss: loss.double_value(&[]),
            lr,
            grad_norm,
            candidate_length,
            eos_share,
            extra,
        })
    }

    /// Greedy captions for images `pixels` `[b, 3, H, W]`.
    pub fn caption(&self, pixels: &Tensor) -> Result<Vec<String>, TrainError> {
        let memory = tch::no_grad(|| self.memory(pixels))?;
        let decoded = greedy(&self.policy, &memory, None).map_err(model_err)?;
        let pad = self.policy.tokens().pad;
        (0..pixels.size()[0])
            .map(|i| {
                let ids = decoded.sequence(i, 0, pad).map_err(model_err)?;
                Ok(self.vocab.decode(&ids))
            })
            .collect()
    }

    /// Write a checkpoint (weights, optimizer, RNG, step) with `ck`.
    pub fn checkpoint(
        &self,
        ck: &Checkpointer,
        config: String,
        metrics: std::collections::BTreeMap<String, f64>,
    ) -> Result<std::path::PathBuf, TrainError> {
        let state = TrainState {
            step: self.step,
            cursors: Vec::new(),
            rng: self.rng,
            config,
            metrics,
        };
        ck.save(&self.vs, &self.opt, &state)
    }

    /// Continue from checkpoint `dir`: weights, optimizer, RNG and step.
    pub fn restore(&mut self, dir: &std::path::Path) -> Result<TrainState, TrainError> {
        let state = Checkpointer::load(dir, &mut self.vs, &mut self.opt)?;
        self.step = state.step;
        self.rng = state.rng;
        Ok(state)
    }

    /// Save the policy's weights (safetensors).
    pub fn save_weights(&self, path: &std::path::Path) -> Result<(), TrainError> {
        self.vs.save(path)?;
        Ok(())
    }
}
