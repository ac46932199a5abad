//! The policy: a captioner with its weights, the frozen visual backbone that
//! feeds it, and the caption text that gives its token ids a meaning. What
//! training optimises ([`crate::train::captioning::CaptionTrainer`]), what
//! validation and the `caption` stage caption with, and what the reward-cache
//! stage generates candidates from all share this one type, so a caption is
//! made the same way wherever it is made.
//!
//! The backbone runs only in [`Policy::features`]: a training step computes
//! the features once and hands them to the policy, the frozen reference and
//! the fluency captions ([`Policy::backbone_forwards`] counts the passes).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use tch::nn::VarStore;
use tch::{Device, Tensor};

use crate::model::captioner::{Backbone, CaptionText, Captioner, CaptionerConfig};
use crate::model::decode::greedy;
use crate::train::candidates::padded;
use crate::train::error::TrainError;

/// A captioner, its weights, its frozen backbone and its caption text.
pub struct Policy {
    /// The captioner's weights (the only trained variables).
    pub vs: VarStore,
    pub captioner: Captioner,
    /// What the captioner's ids mean.
    pub text: CaptionText,
    backbone: Backbone,
    /// Forward passes of the frozen backbone so far ([`Policy::backbone_forwards`]).
    backbone_forwards: AtomicUsize,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("captioner", self.captioner.config())
            .field("device", &self.vs.device())
            .finish()
    }
}

impl Policy {
    /// A captioner `cfg` initialised from the torch generator seeded with
    /// `seed` ([`crate::rng::with_torch_seed`]), on `device`, over the frozen
    /// `backbone`. `text` (a word [`crate::model::captioner::Vocab`] or CLIP
    /// BPE) must fit the captioner's token ids.
    ///
    /// Errors: [`TrainError::Text`] when `text` does not fit `cfg.tokens`;
    /// [`TrainError::Model`] when the captioner cannot be built.
    pub fn new(
        cfg: &CaptionerConfig,
        text: impl Into<CaptionText>,
        backbone: Backbone,
        seed: u64,
        device: Device,
    ) -> Result<Self, TrainError> {
        let text = text.into();
        text.check(&cfg.tokens)?;
        let (vs, captioner) = crate::rng::with_torch_seed(seed, || {
            let vs = VarStore::new(device);
            Captioner::new(vs.root(), cfg).map(|p| (vs, p))
        })?;
        Ok(Self {
            vs,
            captioner,
            text,
            backbone,
            backbone_forwards: Default::default(),
        })
    }

    /// A policy with the captioner weights at `weights` (safetensors written
    /// by [`Policy::save_weights`]), for captioning.
    ///
    /// Errors: as [`Policy::new`], and [`TrainError::Torch`] when the weights
    /// cannot be read or do not fit `cfg`.
    pub fn from_weights(
        cfg: &CaptionerConfig,
        text: impl Into<CaptionText>,
        backbone: Backbone,
        weights: &Path,
        device: Device,
    ) -> Result<Self, TrainError> {
        let mut policy = Self::new(cfg, text, backbone, 0, device)?;
        policy.load_weights(weights)?;
        Ok(policy)
    }

    /// Replace the captioner's weights with those at `path` (safetensors).
    ///
    /// Errors: [`TrainError::Model`] when the file cannot be read or its
    /// tensors do not fit the captioner (it names the file, the key or the
    /// shape).
    pub fn load_weights(&mut self, path: &Path) -> Result<(), TrainError> {
        crate::model::weights::load_var_store(&mut self.vs, path)?;
        Ok(())
    }

    /// The device the captioner and the backbone live on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// The frozen backbone's features `[b, tokens, width]` of images `pixels`
    /// `[b, 3, H, W]` (moved to the policy's device), without grad. The only
    /// place the backbone runs.
    ///
    /// Errors: [`TrainError::Torch`] / [`TrainError::Model`] on a device or
    /// shape error.
    pub fn features(&self, pixels: &Tensor) -> Result<Tensor, TrainError> {
        self.backbone_forwards.fetch_add(1, Ordering::Relaxed);
        let pixels = pixels.f_to_device(self.device())?;
        Ok(self.backbone.features(&pixels)?)
    }

    /// Forward passes of the frozen backbone since the policy was made (a
    /// statistic: a DiCO step with its fluency captions makes one in fp32).
    pub fn backbone_forwards(&self) -> usize {
        self.backbone_forwards.load(Ordering::Relaxed)
    }

    /// Targets `[rows, L]` i64 on the policy's device: each caption's ids
    /// followed by EOS (cut at the captioner's `max_len`), right-padded.
    pub fn targets(&self, captions: &[String]) -> Result<Tensor, TrainError> {
        let max_len = self.captioner.config().max_len as usize;
        let seqs: Vec<Vec<i64>> = captions
            .iter()
            .map(|c| self.text.encode_target(c, max_len))
            .collect();
        Ok(padded(&seqs, self.captioner.tokens().pad, self.device())?)
    }

    /// Greedy captions for images `pixels` `[b, 3, H, W]`.
    ///
    /// Errors: as [`Policy::features`] and [`Policy::caption_features`].
    pub fn caption(&self, pixels: &Tensor) -> Result<Vec<String>, TrainError> {
        let features = self.features(pixels)?;
        self.caption_features(&features)
    }

    /// Greedy captions from backbone features `[b, tokens, width]` (fp32,
    /// [`Policy::features`]).
    ///
    /// Errors: [`TrainError::Model`] when encoding or decoding fails.
    pub fn caption_features(&self, features: &Tensor) -> Result<Vec<String>, TrainError> {
        let memory = tch::no_grad(|| self.captioner.encode(features))?;
        let decoded = greedy(&self.captioner, &memory, None)?;
        let pad = self.captioner.tokens().pad;
        (0..features.size()[0])
            .map(|i| {
                let ids = decoded.sequence(i, 0, pad)?;
                Ok(self.text.decode(&ids))
            })
            .collect()
    }

    /// Save the captioner's weights (safetensors).
    ///
    /// Errors: [`TrainError::Torch`] when the file cannot be written.
    pub fn save_weights(&self, path: &Path) -> Result<(), TrainError> {
        self.vs.save(path)?;
        Ok(())
    }
}
