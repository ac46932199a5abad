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
use crate::train::contrastive::clip_contrastive_loss_with_negatives;
use crate::train::error::TrainError;
use crate::train::hard_negatives::{HardNegatives, HardNegativesConfig};
use crate::train::loss_scale::LossScaleConfig;
use crate::train::precision::Precision;
use crate::train::schedule::Schedule;
use crate::train::step::{StepConfig, Stepper, Update};

/// Per-step numbers of contrastive training.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ContrastiveStats {
    pub loss: f64,
    /// In-batch image→text retrieval accuracy.
    pub accuracy: f64,
    /// exp(logit_scale), the inverse temperature.
    pub logit_scale: f64,
    /// Gradient norm before clipping; meaningful when `optimizer_step` and
    /// not `skipped_step`.
    pub grad_norm: f64,
    pub lr: f64,
    /// This micro-batch completed an accumulation cycle (the step count advanced).
    pub optimizer_step: bool,
    /// The cycle's fp16 gradients were not finite: no update was made.
    pub skipped_step: bool,
    /// The fp16 loss scale before this micro-batch (1 in fp32).
    pub loss_scale: f64,
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
    /// Micro-batches per optimizer step (default 1). The contrastive loss
    /// takes its negatives within each micro-batch; the step follows the
    /// micro-batch losses weighted by their image counts ([`crate::train::step`]).
    #[serde(default = "one_batch")]
    pub accumulate: u32,
    /// `"fp32"` (default) or `"fp16"` (CUDA autocast + dynamic loss scaling).
    #[serde(default)]
    pub precision: Precision,
    /// Hard negative captions made by swapping one word of each drawn caption
    /// (NegCLIP; [`crate::train::hard_negatives`]). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_negatives: Option<HardNegativesConfig>,
}

fn one_batch() -> u32 {
    1
}

/// A CLIP being trained, its optimizer and tokenizer.
pub struct ContrastiveTrainer {
    pub vs: VarStore,
    pub clip: Clip,
    /// AdamW plus accumulation and loss-scaling state.
    pub stepper: Stepper,
    tokenizer: ClipTokenizer,
    cfg: ContrastiveConfig,
    hard_negatives: Option<HardNegatives>,
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
        cfg.precision.check_device(device)?;
        let (vs, clip) = crate::rng::with_torch_seed(cfg.seed, || {
            let vs = VarStore::new(device);
            Clip::new(vs.root(), &cfg.clip).map(|c| (vs, c))
        })?;
        let stepper = Stepper::new(
            AdamW::new(&vs, cfg.optimizer),
            StepConfig {
                accumulate: cfg.accumulate,
                grad_clip: cfg.grad_clip,
                precision: cfg.precision,
                loss_scale: LossScaleConfig::default(),
            },
        )?;
        let tokenizer = ClipTokenizer::openai()?;
        let hard_negatives = cfg
            .hard_negatives
            .as_ref()
            .map(HardNegatives::new)
            .transpose()?;
        Ok(Self {
            rng: Rng::derive(cfg.seed, &[0xC0]),
            hard_negatives,
            vs,
            clip,
            stepper,
            tokenizer,
            cfg,
            step: 0,
        })
    }

    /// Optimizer steps taken.
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

    /// One micro-batch on `pixels` `[b, 3, H, W]` and, per image, its
    /// reference captions (one is drawn per image per call); an optimizer step
    /// every `accumulate` calls.
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
        // Drawn from a generator derived from the step and the micro-batch, not
        // from `rng`: runs without negatives draw the same captions as before,
        // and a resumed run (checkpoints sit at step boundaries) the same
        // negatives as an uninterrupted one.
        let negatives: Vec<String> = match &self.hard_negatives {
            Some(hn) => {
                let mut rng = Rng::derive(
                    self.cfg.seed,
                    &[0x4E, self.step, u64::from(self.stepper.pending())],
                );
                chosen
                    .iter()
                    .flat_map(|c| hn.negatives(c, &mut rng))
                    .collect()
            }
            None => Vec::new(),
        };
        let negative_ids = if negatives.is_empty() {
            None
        } else {
            Some(self.tokenize(&negatives)?)
        };
        let lr = self.cfg.schedule.lr_at(self.step);
        let model = |e: crate::model::ModelError| TrainError::from(e);
        let (loss, accuracy) = self.cfg.precision.autocast(|| {
            let img = self
                .clip
                .encode_image(&pixels.to_device(self.vs.device()))
                .map_err(model)?;
            let txt = self.clip.encode_text(&ids).map_err(model)?;
            let neg = match &negative_ids {
                Some(n) => Some(self.clip.encode_text(n).map_err(model)?),
                None => None,
            };
            clip_contrastive_loss_with_negatives(&img, &txt, neg.as_ref(), &self.clip.logit_scale)
        })?;
        let mut stats = ContrastiveStats {
            loss: loss.double_value(&[]),
            accuracy,
            lr,
            loss_scale: self.stepper.loss_scale().unwrap_or(1.0),
            ..Default::default()
        };
        // The loss averages over the batch's images (both directions).
        let count = pixels.size()[0] as f64;
        if let Some(update) = self.stepper.backward(&loss, count, lr)? {
            // A skipped fp16 step still counts, as with PyTorch's GradScaler.
            self.step += 1;
            stats.optimizer_step = true;
            match update {
                Update::Applied { grad_norm } => stats.grad_norm = grad_norm,
                Update::Skipped => stats.skipped_step = true,
            }
        }
        stats.logit_scale = self.clip.logit_scale.exp().double_value(&[]);
        Ok(stats)
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
                .forward(&pixels.to_device(self.vs.device()), &ids)?;
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

crate::train::resumable::impl_resumable!(ContrastiveTrainer);
