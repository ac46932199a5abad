//! Training a CLIP evaluator contrastively on (image, caption) pairs — how the
//! demo gets a frozen evaluator for the synthetic world, and how a user
//! fine-tunes a CLIP on their own data. The trainer is a plain struct fed with
//! tensors; a device stage hosts it in the pipeline.

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::model::clip::{Clip, ClipConfig};
use crate::rng::Rng;
use crate::text::ClipTokenizer;
use crate::train::adamw::{AdamW, AdamWConfig};
use crate::train::checkpoint::{Checkpointer, TrainState};
use crate::train::contrastive::clip_contrastive_loss;
use crate::train::error::TrainError;
use crate::train::schedule::Schedule;

/// Per-step numbers of contrastive training.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ContrastiveStats {
    pub loss: f64,
    /// In-batch image→text retrieval accuracy.
    pub accuracy: f64,
    /// exp(logit_scale), the inverse temperature.
    pub logit_scale: f64,
    pub grad_norm: f64,
    pub lr: f64,
}

/// Settings of contrastive training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContrastiveConfig {
    pub clip: ClipConfig,
    pub optimizer: AdamWConfig,
    pub schedule: Schedule,
    /// Token context of the text tower (≤ the config's context length).
    pub context_length: usize,
    pub grad_clip: Option<f64>,
    pub seed: u64,
}

/// A CLIP being trained, its optimizer and tokenizer.
pub struct ContrastiveTrainer {
    pub vs: VarStore,
    pub clip: Clip,
    pub opt: AdamW,
    tokenizer: ClipTokenizer,
    cfg: ContrastiveConfig,
    rng: Rng,
    step: u64,
}

impl std::fmt::Debug for ContrastiveTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContrastiveTrainer")
            .field("step", &self.step)
            .finish()
    }
}

impl ContrastiveTrainer {
    /// A freshly initialised CLIP (seeded) on `device`.
    pub fn new(cfg: ContrastiveConfig, device: Device) -> Result<Self, TrainError> {
        tch::manual_seed(cfg.seed as i64);
        let vs = VarStore::new(device);
        let clip = Clip::new(vs.root(), &cfg.clip).map_err(|e| TrainError::Model(Box::new(e)))?;
        let opt = AdamW::new(&vs, cfg.optimizer);
        let tokenizer = ClipTokenizer::openai()?;
        Ok(Self {
            rng: Rng::derive(cfg.seed, &[0xC0]),
            vs,
            clip,
            opt,
            tokenizer,
            cfg,
            step: 0,
        })
    }

    /// Steps taken.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Tokenise captions for the text tower: `[n, context]` i64 on the model's device.
    pub fn tokenize(&self, captions: &[String]) -> Result<Tensor, TrainError> {
        let ids = self
            .tokenizer
            .encode_batch(captions, self.cfg.context_length)?;
        Ok(ids.to_device(self.vs.device()))
    }

    /// One optimisation step on `pixels` `[b, 3, H, W]` and, per image, its
    /// reference captions (one is drawn per image per step).
    pub fn step(
        &mut self,
        pixels: &Tensor,
        captions: &[Vec<String>],
    ) -> Result<ContrastiveStats, TrainError> {
        if captions.len() as i64 != pixels.size()[0] || captions.iter().any(Vec::is_empty) {
            return Err(TrainError::Shape {
                what: "contrastive step",
                detail: format!(
                    "{} images but {} caption lists (each needs at least one caption)",
                    pixels.size()[0],
                    captions.len()
                ),
            });
        }
        let chosen: Vec<String> = captions
            .iter()
            .map(|c| self.rng.choose(c).clone())
            .collect();
        let ids = self.tokenize(&chosen)?;
        let lr = self.cfg.schedule.lr_at(self.step);
        self.opt.set_lr(lr);
        self.opt.zero_grad();
        let model = |e| TrainError::Model(Box::new(e));
        let img = self
            .clip
            .encode_image(&pixels.to_device(self.vs.device()))
            .map_err(model)?;
        let txt = self.clip.encode_text(&ids).map_err(model)?;
        let (loss, accuracy) = clip_contrastive_loss(&img, &txt, &self.clip.logit_scale)?;
        loss.backward();
        let grad_norm = self.opt.clip_grad_norm(self.cfg.grad_clip);
        self.opt.step();
        self.step += 1;
        Ok(ContrastiveStats {
            loss: loss.double_value(&[]),
            accuracy,
            logit_scale: self.clip.logit_scale.exp().double_value(&[]),
            grad_norm,
            lr,
        })
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

    /// Image→text retrieval accuracy on held-out pairs (one caption per image,
    /// the first), without grad: the share of images whose own caption is the
    /// most similar among the batch's captions.
    pub fn retrieval_accuracy(
        &self,
        pixels: &Tensor,
        captions: &[String],
    ) -> Result<f64, TrainError> {
        let ids = self.tokenize(captions)?;
        tch::no_grad(|| {
            let out = self
                .clip
                .forward(&pixels.to_device(self.vs.device()), &ids)
                .map_err(|e| TrainError::Model(Box::new(e)))?;
            let n = captions.len() as i64;
            let target = Tensor::arange(n, (Kind::Int64, self.vs.device()));
            Ok(out
                .logits_per_image
                .argmax(1, false)
                .eq_tensor(&target)
                .to_kind(Kind::Double)
                .mean(Kind::Double)
                .double_value(&[]))
        })
    }
}
