//! CLIP (vision + text towers + learned temperature) with OpenAI state-dict names, so
//! that `clip.load`, open_clip and PAC-S state dicts exported to safetensors load as is.

pub(crate) mod config;
pub mod layers;
pub(crate) mod text;
pub(crate) mod vision;

use std::path::Path;

use tch::{nn, Device, Tensor};

pub use config::{ClipConfig, ClipTextConfig, ClipVisionConfig};
pub use text::TextTransformer;
pub use vision::{VisionOutput, VisionTransformer};

use crate::model::weights::{self, WeightNaming};
use crate::model::ModelError;

/// Prefix of the image tower's variables in OpenAI's names (`visual.conv1.weight`, ...).
pub const IMAGE_TOWER_PREFIX: &str = "visual.";

/// Similarity logits of a batch of images against a batch of texts.
#[derive(Debug)]
pub struct ClipOutput {
    /// `exp(logit_scale) * img · txtᵀ` on normalised embeddings: `[images, texts]`.
    pub logits_per_image: Tensor,
    /// Transpose of `logits_per_image`: `[texts, images]`.
    pub logits_per_text: Tensor,
}

/// The CLIP model.
#[derive(Debug)]
pub struct Clip {
    pub visual: VisionTransformer,
    pub text: TextTransformer,
    /// Scalar; the logit scale is `exp(logit_scale)` (initialised to `ln(1 / 0.07)`).
    pub logit_scale: Tensor,
    config: ClipConfig,
}

impl Clip {
    /// Creates all variables under `p` with OpenAI names (`visual.*` for the image tower,
    /// the text tower at the root, `logit_scale`).
    pub fn new(p: nn::Path, cfg: &ClipConfig) -> Result<Self, ModelError> {
        cfg.validate()?;
        Ok(Self {
            visual: VisionTransformer::new(&p / "visual", cfg)?,
            text: TextTransformer::new(p.clone(), cfg)?,
            logit_scale: p.var("logit_scale", &[], nn::Init::Const((1.0f64 / 0.07).ln())),
            config: cfg.clone(),
        })
    }

    /// Builds a model on `device` and loads a safetensors file into it (naming detected);
    /// the variables are frozen (`requires_grad = false`), as for an evaluator or backbone.
    pub fn from_safetensors(
        path: impl AsRef<Path>,
        cfg: &ClipConfig,
        device: Device,
    ) -> Result<(nn::VarStore, Self), ModelError> {
        let mut vs = nn::VarStore::new(device);
        let model = Self::new(vs.root(), cfg)?;
        weights::load_safetensors(&mut vs, path, WeightNaming::Auto)?;
        vs.freeze();
        Ok((vs, model))
    }

    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// `[batch, 3, H, W]` → `[batch, embed_dim]` (projected, not normalised)
    pub fn encode_image(&self, images: &Tensor) -> Result<Tensor, ModelError> {
        self.visual.forward(images)
    }

    /// `[batch, tokens]` → `[batch, embed_dim]` (projected, not normalised)
    pub fn encode_text(&self, ids: &Tensor) -> Result<Tensor, ModelError> {
        self.text.forward(ids)
    }

    /// `[batch, 3, H, W]` → `[batch, embed_dim]`, unit L2 norm
    pub fn encode_image_normalized(&self, images: &Tensor) -> Result<Tensor, ModelError> {
        layers::l2_normalize(&self.encode_image(images)?)
    }

    /// `[batch, tokens]` → `[batch, embed_dim]`, unit L2 norm
    pub fn encode_text_normalized(&self, ids: &Tensor) -> Result<Tensor, ModelError> {
        layers::l2_normalize(&self.encode_text(ids)?)
    }

    /// Vision backbone features for a captioner: `[batch, 3, H, W]` →
    /// `[batch, tokens, width]` (output of the last block, before `ln_post`).
    pub fn vision_last_hidden_state(&self, images: &Tensor) -> Result<Tensor, ModelError> {
        self.visual.last_hidden_state(images)
    }

    /// Contrastive logits of `images` `[n, 3, H, W]` against `ids` `[m, tokens]`.
    pub fn forward(&self, images: &Tensor, ids: &Tensor) -> Result<ClipOutput, ModelError> {
        let img = self.encode_image_normalized(images)?; // [n, embed]
        let txt = self.encode_text_normalized(ids)?; // [m, embed]
        let scale = self.logit_scale.f_exp()?.f_to_kind(img.kind())?;
        let logits_per_image = img.f_matmul(&txt.f_transpose(0, 1)?)?.f_mul(&scale)?; // [n, m]
        let logits_per_text = logits_per_image.f_transpose(0, 1)?; // [m, n]
        Ok(ClipOutput {
            logits_per_image,
            logits_per_text,
        })
    }
}
