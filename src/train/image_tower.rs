//! Supervised pre-training of a CLIP image tower on multi-label targets —
//! how the demo gets an image tower that localises before its evaluator is
//! trained on top of it with the tower locked (LiT; docs/training.md, "Why
//! the evaluator cannot localise, and what would fix it").
//!
//! A linear head on the image tower's class token (the output of its last
//! residual block, before `ln_post` and the projection) predicts `labels` independent binary
//! targets per image (binary cross-entropy with logits, averaged over images
//! and labels); the image tower and the head train, the text tower and the
//! logit scale keep their initialisation. The tower's `ln_post` and `proj`,
//! which come after the class token, get no gradient either: they keep their
//! initialisation, so an evaluator that locks this tower (LiT) embeds images
//! by a fixed random projection of the layer-normed class token. The trainer keeps a whole CLIP so
//! that what it writes ([`ImageTowerTrainer::save_clip`]) is what
//! `train_evaluator`'s `init` loads. The trainer is a plain struct fed with
//! tensors; the `pretrain_image_tower` stage hosts it in the pipeline.

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Kind, Reduction, Tensor};

use crate::model::clip::{Clip, ClipConfig, IMAGE_TOWER_PREFIX};
use crate::train::adamw::{freeze_where, AdamW, AdamWConfig};
use crate::train::error::TrainError;
use crate::train::precision::Precision;
use crate::train::schedule::Schedule;
use crate::train::step::{StepConfig, Stepper, Update};

/// Prefix of the label head's variables, which [`ImageTowerTrainer::save_clip`] leaves out.
const HEAD: &str = "label_head";

/// Settings of the image tower's pre-training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageTowerConfig {
    /// The CLIP whose image tower trains (the text tower is written as
    /// initialised from `seed`).
    pub clip: ClipConfig,
    /// AdamW over the image tower and the head.
    pub optimizer: AdamWConfig,
    /// Learning rate per step (`total_steps` 0 in a stage: from the epochs).
    pub schedule: Schedule,
    /// Clip the global gradient L2 norm to this value.
    pub grad_clip: Option<f64>,
    /// Seeds the CLIP's and the head's initialisation.
    pub seed: u64,
}

/// Per-step numbers of the pre-training.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageTowerStats {
    /// Binary cross-entropy, mean over images and labels.
    pub loss: f64,
    /// Share of the batch's present labels (target 1) predicted present
    /// (logit > 0), before the update.
    pub recall: f64,
    /// Share of the labels predicted present that are present (1 when none
    /// is predicted present).
    pub precision: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate of this step.
    pub lr: f64,
}

/// A CLIP whose image tower trains on multi-label targets, with its head
/// and optimizer.
pub struct ImageTowerTrainer {
    /// Every variable: the CLIP's and the head's.
    pub vs: VarStore,
    /// The CLIP whose image tower trains.
    pub clip: Clip,
    /// `[labels, width]` and `[labels]`.
    head_weight: Tensor,
    head_bias: Tensor,
    stepper: Stepper,
    cfg: ImageTowerConfig,
    step: u64,
}

impl std::fmt::Debug for ImageTowerTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageTowerTrainer")
            .field("step", &self.step)
            .field("labels", &self.labels())
            .finish()
    }
}

impl ImageTowerTrainer {
    /// A freshly initialised CLIP (seeded, as `train_evaluator` would
    /// initialise it) and a head of `labels` outputs on `device`,
    /// initialised as PyTorch's `nn.Linear` (uniform in ±1/√width).
    ///
    /// # Errors
    /// [`TrainError::Setting`] when `labels` is 0; [`TrainError::Model`]
    /// when the config is invalid.
    pub fn new(cfg: ImageTowerConfig, labels: usize, device: Device) -> Result<Self, TrainError> {
        if labels == 0 {
            return Err(TrainError::Setting {
                name: "labels",
                value: "0".into(),
                reason: "the head needs at least one label",
            });
        }
        let labels = labels as i64;
        let (vs, clip, head_weight, head_bias) = crate::rng::with_torch_seed(cfg.seed, || {
            let vs = VarStore::new(device);
            let clip = Clip::new(vs.root(), &cfg.clip)?;
            let head = vs.root() / HEAD;
            let width = cfg.clip.vision.width;
            let bound = 1.0 / (width as f64).sqrt();
            let init = tch::nn::Init::Uniform {
                lo: -bound,
                up: bound,
            };
            let w = head.var("weight", &[labels, width], init);
            let b = head.var("bias", &[labels], init);
            Ok::<_, TrainError>((vs, clip, w, b))
        })?;
        // The text tower and the logit scale get no update.
        freeze_where(&vs, |name| {
            !name.starts_with(IMAGE_TOWER_PREFIX) && !name.starts_with(HEAD)
        });
        let stepper = Stepper::new(
            AdamW::new(&vs, cfg.optimizer),
            StepConfig {
                grad_clip: cfg.grad_clip,
                precision: Precision::Fp32,
                ..StepConfig::default()
            },
        )?;
        Ok(Self {
            vs,
            clip,
            head_weight,
            head_bias,
            stepper,
            cfg,
            step: 0,
        })
    }

    /// Optimizer steps taken.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Outputs of the head: the labels per image.
    fn labels(&self) -> i64 {
        self.head_bias.size()[0]
    }

    /// Label logits of `pixels` `[b, 3, H, W]`: `[b, labels]`.
    pub fn logits(&self, pixels: &Tensor) -> Result<Tensor, TrainError> {
        let tokens = self.clip.vision_last_hidden_state(pixels)?; // [b, tokens, width]
        let cls = tokens.f_select(1, 0)?; // [b, width]
        Ok(cls.f_linear(&self.head_weight, Some(&self.head_bias))?)
    }

    /// One optimizer step on `pixels` `[b, 3, H, W]` and their targets
    /// `labels` `[b, labels]` (0.0 / 1.0, f32).
    ///
    /// # Errors
    /// [`TrainError::Shape`] when the batch is empty or the targets do not
    /// match the images and the head.
    pub fn step(
        &mut self,
        pixels: &Tensor,
        labels: &Tensor,
    ) -> Result<ImageTowerStats, TrainError> {
        let b = pixels.size().first().copied().unwrap_or(0);
        if b == 0 || labels.size() != [b, self.labels()] {
            return Err(TrainError::Shape {
                what: "image tower step",
                detail: format!(
                    "{b} images with targets of shape {:?} (expected [{b}, {}])",
                    labels.size(),
                    self.labels()
                ),
            });
        }
        let device = self.vs.device();
        let pixels = pixels.f_to_device(device)?;
        let targets = labels.f_to_device(device)?.f_to_kind(Kind::Float)?;
        let lr = self.cfg.schedule.lr_at(self.step);
        let logits = self.logits(&pixels)?;
        let loss = logits.f_binary_cross_entropy_with_logits(
            &targets,
            None::<Tensor>,
            None::<Tensor>,
            Reduction::Mean,
        )?;
        let predicted = logits.f_gt(0.0)?.f_to_kind(Kind::Float)?.f_detach()?;
        let hits = predicted
            .f_mul(&targets)?
            .f_sum(Kind::Double)?
            .f_double_value(&[])?;
        let present = targets.f_sum(Kind::Double)?.f_double_value(&[])?;
        let called = predicted.f_sum(Kind::Double)?.f_double_value(&[])?;
        let mut stats = ImageTowerStats {
            loss: loss.f_double_value(&[])?,
            recall: if present > 0.0 { hits / present } else { 1.0 },
            precision: if called > 0.0 { hits / called } else { 1.0 },
            lr,
            ..Default::default()
        };
        if let Some(update) = self.stepper.backward(&loss, b as f64, lr)? {
            self.step += 1;
            if let Update::Applied { grad_norm } = update {
                stats.grad_norm = grad_norm;
            }
        }
        Ok(stats)
    }

    /// Writes the CLIP (every variable but the head's: the image tower as
    /// trained, the text tower and logit scale as initialised) to a
    /// safetensors file in OpenAI's names, loadable as `train_evaluator`'s
    /// `init`.
    ///
    /// # Errors
    /// [`TrainError::Model`] when the file cannot be written.
    pub fn save_clip(&self, path: &std::path::Path) -> Result<(), TrainError> {
        crate::model::weights::save_safetensors_where(&self.vs, path, |name| {
            !name.starts_with(HEAD)
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ImageTowerConfig {
        let mut schedule = Schedule {
            lr: 3e-3,
            ..Schedule::default()
        };
        schedule.total_steps = 60;
        ImageTowerConfig {
            clip: ClipConfig::tiny_test(),
            optimizer: AdamWConfig {
                lr: 3e-3,
                weight_decay: 0.0,
                ..AdamWConfig::default()
            },
            schedule,
            grad_clip: Some(1.0),
            seed: 3,
        }
    }

    /// The 16 images whose quadrants are lit in every combination: label k
    /// is on when quadrant k (reading order) is lit.
    fn quadrant_batch() -> (Tensor, Tensor) {
        let s = ClipConfig::tiny_test().vision.image_size;
        let h = s / 2;
        let pixels = Tensor::zeros([16, 3, s, s], (Kind::Float, Device::Cpu));
        let mut on = vec![0f32; 16 * 4];
        for i in 0..16i64 {
            for k in 0..4i64 {
                if i >> k & 1 == 1 {
                    on[(i * 4 + k) as usize] = 1.0;
                    let _ = pixels
                        .get(i)
                        .narrow(1, (k / 2) * h, h)
                        .narrow(2, (k % 2) * h, h)
                        .fill_(1.0);
                }
            }
        }
        (pixels, Tensor::from_slice(&on).view([16, 4]))
    }

    #[test]
    fn the_tower_learns_where_things_are_and_the_text_tower_stays_as_initialised() {
        let mut trainer = ImageTowerTrainer::new(config(), 4, Device::Cpu).unwrap();
        let text_before = trainer.clip.text.token_embedding.copy();
        let (pixels, labels) = quadrant_batch();
        let first = trainer.step(&pixels, &labels).unwrap();
        let mut last = first;
        for _ in 1..60 {
            last = trainer.step(&pixels, &labels).unwrap();
        }
        assert!(
            last.loss < 0.1 && last.loss < first.loss / 5.0,
            "{first:?} → {last:?}"
        );
        assert!(last.recall > 0.95 && last.precision > 0.95, "{last:?}");
        assert_eq!(trainer.step_count(), 60);
        assert!(text_before.equal(&trainer.clip.text.token_embedding));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        trainer.save_clip(&path).unwrap();
        let (_vs, loaded) = Clip::from_safetensors(&path, &ClipConfig::tiny_test(), Device::Cpu)
            .expect("a whole CLIP without the head");
        let names: Vec<String> = Tensor::read_safetensors(&path)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert!(names.iter().all(|n| !n.starts_with(HEAD)), "{names:?}");
        let ours = trainer.clip.encode_image(&pixels).unwrap();
        let theirs = loaded.encode_image(&pixels).unwrap();
        assert!(ours.equal(&theirs));
    }

    #[test]
    fn targets_of_another_shape_are_refused() {
        let mut trainer = ImageTowerTrainer::new(config(), 4, Device::Cpu).unwrap();
        let (pixels, _) = quadrant_batch();
        let wrong = Tensor::zeros([16, 5], (Kind::Float, Device::Cpu));
        let err = trainer.step(&pixels, &wrong).unwrap_err().to_string();
        assert!(err.contains("expected [16, 4]"), "{err}");
        assert!(ImageTowerTrainer::new(config(), 0, Device::Cpu).is_err());
    }
}
