//! Training a CLIP evaluator contrastively on (image, caption) pairs — how the
//! demo gets a frozen evaluator for the synthetic world, and how a user
//! fine-tunes a CLIP on their own data. The trainer is a plain struct fed with
//! tensors; a device stage hosts it in the pipeline.

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::model::clip::{Clip, ClipConfig, IMAGE_TOWER_PREFIX};
use crate::rng::Rng;
use crate::text::ClipTokenizer;
use crate::train::adamw::{freeze_where, AdamW, AdamWConfig};
use crate::train::contrastive::clip_contrastive_loss_with_negatives;
use crate::train::error::TrainError;
use crate::train::hard_negatives::{HardNegatives, HardNegativesConfig};
use crate::train::loss_scale::LossScaleConfig;
use crate::train::precision::Precision;
use crate::train::schedule::Schedule;
use crate::train::step::{GradientReduce, RowGather, StepConfig, Stepper, Update};

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
    /// Keep the image tower (`visual.*`) as it starts and train only the
    /// text tower and the logit scale: locked-image text tuning (LiT, Zhai
    /// et al. 2022, "LiT: Zero-Shot Transfer with Locked-image text
    /// Tuning"). The image embeddings are then computed without gradient.
    /// Default false. A locked tower is only useful when it starts trained:
    /// `train_evaluator` refuses it without `init`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lock_image: bool,
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
    /// The all-gather with the other replicas, if any.
    gather: Option<Box<dyn RowGather>>,
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
        if cfg.lock_image {
            freeze_where(&vs, |name| name.starts_with(IMAGE_TOWER_PREFIX));
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
            gather: None,
        })
    }

    /// Copies the weights of a trained CLIP (`path`: safetensors in OpenAI's
    /// or open_clip's naming, as `train_evaluator` writes them) into this
    /// model, every variable (strict); for a fresh trainer, before any step.
    ///
    /// # Errors
    /// [`TrainError::Model`] when the file cannot be read, or its names or
    /// shapes do not match this model's config.
    pub fn load_init(&mut self, path: &std::path::Path) -> Result<(), TrainError> {
        crate::model::weights::load_safetensors(
            &mut self.vs,
            path,
            crate::model::weights::WeightNaming::Auto,
        )?;
        Ok(())
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
        Ok(ids.f_to_device(self.vs.device())?)
    }

    /// Train as one of several replicas: `gather` exchanges every replica's
    /// embeddings each batch and `reducer` sums the replicas' gradients
    /// ([`ContrastiveTrainer::step_replica`]).
    pub fn set_replicas(&mut self, reducer: Box<dyn GradientReduce>, gather: Box<dyn RowGather>) {
        self.stepper.set_summing_reducer(reducer);
        self.gather = Some(gather);
    }

    /// Whether this trainer is a replica ([`ContrastiveTrainer::set_replicas`]).
    pub fn replicated(&self) -> bool {
        self.gather.is_some()
    }

    /// Draws one caption per image (from the trainer's generator, in order)
    /// and its hard negatives; returns their token ids, `[b, context]` and
    /// `[m, context]` (`None` without negatives).
    fn draw(&mut self, captions: &[Vec<String>]) -> Result<(Tensor, Option<Tensor>), TrainError> {
        let chosen: Vec<String> = captions
            .iter()
            .map(|c| self.rng.choose(c).clone())
            .collect();
        let ids = self.tokenize(&chosen)?;
        // Drawn from a generator derived from the step, the micro-batch and
        // the caption, not from `rng`: runs without negatives draw the same
        // captions as before, a resumed run (checkpoints sit at step
        // boundaries) the same negatives as an uninterrupted one, and a
        // caption gets the same negatives whichever replica or batch position
        // it has.
        let negatives: Vec<String> = match &self.hard_negatives {
            Some(hn) => chosen
                .iter()
                .flat_map(|c| {
                    let mut rng = Rng::derive(
                        self.cfg.seed,
                        &[0x4E, self.step, u64::from(self.stepper.pending()), fnv1a(c)],
                    );
                    hn.negatives(c, &mut rng)
                })
                .collect(),
            None => Vec::new(),
        };
        let negative_ids = if negatives.is_empty() {
            None
        } else {
            Some(self.tokenize(&negatives)?)
        };
        Ok((ids, negative_ids))
    }

    /// Image, caption and negative-caption embeddings (`[b, d]`, `[b, d]`,
    /// `[m, d]`, not normalised) of one micro-batch, with grad.
    fn embed(
        &self,
        pixels: &Tensor,
        ids: &Tensor,
        negative_ids: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor, Option<Tensor>), TrainError> {
        let model = |e: crate::model::ModelError| TrainError::from(e);
        self.cfg.precision.autocast(|| {
            let pixels = pixels.f_to_device(self.vs.device())?;
            let img = if self.cfg.lock_image {
                tch::no_grad(|| self.clip.encode_image(&pixels))
            } else {
                self.clip.encode_image(&pixels)
            }
            .map_err(model)?;
            let txt = self.clip.encode_text(ids).map_err(model)?;
            let neg = match negative_ids {
                Some(n) => Some(self.clip.encode_text(n).map_err(model)?),
                None => None,
            };
            Ok((img, txt, neg))
        })
    }

    fn check_batch(pixels: &Tensor, captions: &[Vec<String>]) -> Result<(), TrainError> {
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
        Ok(())
    }

    /// Backward of `loss` (the mean over `count` images) and the stats of
    /// the micro-batch; an optimizer step every `accumulate` calls.
    fn finish_step(
        &mut self,
        loss: &Tensor,
        accuracy: f64,
        count: f64,
        lr: f64,
    ) -> Result<ContrastiveStats, TrainError> {
        let mut stats = ContrastiveStats {
            loss: loss.f_double_value(&[])?,
            accuracy,
            lr,
            loss_scale: self.stepper.loss_scale().unwrap_or(1.0),
            ..Default::default()
        };
        // Only a replica's own rows (and, on replica 0, the logit scale) carry
        // gradient: a replica without samples may hold a loss without any.
        let update = if loss.requires_grad() {
            self.stepper.backward(loss, count, lr)?
        } else {
            self.stepper.backward_counted_empty(count, lr)?
        };
        if let Some(update) = update {
            // A skipped fp16 step still counts, as with PyTorch's GradScaler.
            self.step += 1;
            stats.optimizer_step = true;
            match update {
                Update::Applied { grad_norm } => stats.grad_norm = grad_norm,
                Update::Skipped => stats.skipped_step = true,
            }
        }
        stats.logit_scale = self.clip.logit_scale.f_exp()?.f_double_value(&[])?;
        Ok(stats)
    }

    /// One micro-batch on `pixels` `[b, 3, H, W]` and, per image, its
    /// reference captions (one is drawn per image per call); an optimizer step
    /// every `accumulate` calls. The loss takes its negatives within the
    /// micro-batch.
    ///
    /// # Errors
    /// [`TrainError::Shape`] when captions and images do not pair up;
    /// [`TrainError::Setting`] on a replica (use
    /// [`ContrastiveTrainer::step_replica`]).
    pub fn step(
        &mut self,
        pixels: &Tensor,
        captions: &[Vec<String>],
    ) -> Result<ContrastiveStats, TrainError> {
        if self.replicated() {
            return Err(TrainError::Setting {
                name: "replicas",
                value: "step".into(),
                reason: "a replica of a gathered-negatives run steps with step_replica, \
                         which every replica calls for every batch",
            });
        }
        Self::check_batch(pixels, captions)?;
        let (ids, negative_ids) = self.draw(captions)?;
        let lr = self.cfg.schedule.lr_at(self.step);
        let (loss, accuracy) = {
            let (img, txt, neg) = self.embed(pixels, &ids, negative_ids.as_ref())?;
            self.cfg.precision.autocast(|| {
                clip_contrastive_loss_with_negatives(
                    &img,
                    &txt,
                    neg.as_ref(),
                    &self.clip.logit_scale,
                )
            })?
        };
        // The loss averages over the batch's images (both directions).
        let count = pixels.size()[0] as f64;
        self.finish_step(&loss, accuracy, count, lr)
    }

    /// One micro-batch as replica r of R, with **gathered negatives** (open_clip's
    /// `ClipLoss` with `gather_with_grad = False`, `local_loss = False`):
    ///
    /// 1. this replica embeds its `b_r` images, their drawn captions and
    ///    their `m_r` hard negatives (`batch = None`: no sample, 0 rows);
    /// 2. the rows (`[b_r, d] ‖ [b_r, d] ‖ [m_r, d]`, f32, `d = embed_dim`)
    ///    are all-gathered in replica order ([`RowGather`]);
    /// 3. every replica builds the global `[B, d]`, `[B, d]`, `[M, d]`
    ///    (`B = Σ b_r`, `M = Σ m_r`) with its own rows replaced by its tensors
    ///    that carry gradient, and computes the global loss
    ///    ([`clip_contrastive_loss_with_negatives`], the mean over the B
    ///    pairs): the same value on every replica;
    /// 4. it backpropagates; the logit scale, shared, takes gradient on
    ///    replica 0 only (elsewhere it enters detached), so that the sum of
    ///    the replicas' gradients, which the stepper's summing all-reduce
    ///    forms, is the gradient of the global loss, as one device on the
    ///    B images would compute it (up to float summation order).
    ///
    /// Returns `None`, on every replica alike, when the global batch has
    /// fewer than 2 images (no negative to contrast with: no step, as one
    /// device skips such a batch). Every replica must call this for every
    /// batch, in the same order.
    ///
    /// # Errors
    /// [`TrainError::Shape`] when captions and images do not pair up or the
    /// gathered rows do not split into the three parts;
    /// [`TrainError::AllReduce`] when the exchange fails; [`TrainError::Setting`]
    /// when the trainer is not a replica.
    pub fn step_replica(
        &mut self,
        batch: Option<(&Tensor, &[Vec<String>])>,
    ) -> Result<Option<ContrastiveStats>, TrainError> {
        if !self.replicated() {
            return Err(TrainError::Setting {
                name: "replicas",
                value: "step_replica".into(),
                reason: "this trainer is not a replica: call set_replicas first, or step",
            });
        }
        if let Some(rng) = self.stepper.replica_rng(self.cfg.seed, 0xC0, self.step) {
            self.rng = rng;
        }
        let d = self.cfg.clip.embed_dim;
        let device = self.vs.device();
        let lr = self.cfg.schedule.lr_at(self.step);
        let local = match batch {
            Some((pixels, captions)) if pixels.size()[0] > 0 => {
                Self::check_batch(pixels, captions)?;
                let (ids, negative_ids) = self.draw(captions)?;
                Some(self.embed(pixels, &ids, negative_ids.as_ref())?)
            }
            _ => None,
        };
        let (rows, local_count) = match &local {
            Some((img, txt, neg)) => {
                let mut rows = flat_f32(img)?;
                rows.extend(flat_f32(txt)?);
                if let Some(neg) = neg {
                    rows.extend(flat_f32(neg)?);
                }
                (rows, img.size()[0] as f64)
            }
            None => (Vec::new(), 0.0),
        };
        let gather = self.gather.as_mut().expect("checked above");
        let me = gather.replica();
        let parts = gather.all_gather(local_count, rows)?;
        let (mut imgs, mut txts, mut negs) = (Vec::new(), Vec::new(), Vec::new());
        let mut global = 0i64;
        for (k, part) in parts.iter().enumerate() {
            let n = part.count as i64;
            let len = part.values.len() as i64;
            if n < 0 || len % d != 0 || len / d < 2 * n {
                return Err(TrainError::Shape {
                    what: "gathered embeddings",
                    detail: format!(
                        "replica {k} sent {len} values for {n} images: not [{n}, {d}] image \
                         and caption rows and [m, {d}] negatives"
                    ),
                });
            }
            global += n;
            if k == me {
                if let Some((img, txt, neg)) = &local {
                    imgs.push(img.shallow_clone());
                    txts.push(txt.shallow_clone());
                    if let Some(neg) = neg {
                        negs.push(neg.shallow_clone());
                    }
                }
                continue;
            }
            let m = len / d - 2 * n;
            let t = Tensor::f_from_slice(&part.values)?.f_to_device(device)?;
            imgs.push(t.f_narrow(0, 0, n * d)?.f_view([n, d])?);
            txts.push(t.f_narrow(0, n * d, n * d)?.f_view([n, d])?);
            negs.push(t.f_narrow(0, 2 * n * d, m * d)?.f_view([m, d])?);
        }
        if global < 2 {
            return Ok(None); // contrastive loss needs negatives; the same on every replica
        }
        let img = Tensor::f_cat(&imgs, 0)?; // [B, d]
        let txt = Tensor::f_cat(&txts, 0)?; // [B, d]
        let neg = match negs.is_empty() {
            true => None,
            false => Some(Tensor::f_cat(&negs, 0)?).filter(|n| n.size()[0] > 0), // [M, d]
        };
        let scale = if me == 0 {
            self.clip.logit_scale.shallow_clone()
        } else {
            self.clip.logit_scale.f_detach()?
        };
        let (loss, accuracy) = self
            .cfg
            .precision
            .autocast(|| clip_contrastive_loss_with_negatives(&img, &txt, neg.as_ref(), &scale))?;
        self.finish_step(&loss, accuracy, global as f64, lr)
            .map(Some)
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
                .forward(&pixels.f_to_device(self.vs.device())?, &ids)?;
            let n = captions.len() as i64;
            let target = Tensor::f_arange(n, (Kind::Int64, self.vs.device()))?;
            Ok(out
                .logits_per_image
                .f_argmax(1, false)?
                .f_eq_tensor(&target)?
                .f_to_kind(Kind::Double)?
                .f_mean(Kind::Double)?
                .f_double_value(&[])?)
        })
    }
}

/// A tensor's values as f32, flattened (on the CPU; the gather's wire format).
fn flat_f32(t: &Tensor) -> Result<Vec<f32>, TrainError> {
    let t = t
        .f_detach()?
        .f_to_kind(Kind::Float)?
        .f_to_device(Device::Cpu)?
        .f_flatten(0, -1)?;
    Ok(Vec::<f32>::try_from(&t)?)
}

/// FNV-1a of a caption: part of the seed of its hard negatives.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

crate::train::resumable::impl_resumable!(ContrastiveTrainer);
