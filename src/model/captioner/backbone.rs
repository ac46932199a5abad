//! The frozen CLIP vision backbone of a captioner, in its own `VarStore` so that the
//! captioner's checkpoints and optimizer hold only the trainable head.

use std::path::{Path, PathBuf};

use tch::{nn, Device, Tensor};

use crate::model::clip::{ClipConfig, VisionTransformer};
use crate::model::weights::{self, WeightNaming};
use crate::model::ModelError;

/// A frozen CLIP vision tower producing `last_hidden_state` features.
#[derive(Debug)]
pub struct Backbone {
    vs: nn::VarStore,
    pub visual: VisionTransformer,
}

impl Backbone {
    /// Random weights on `device` (tests, benchmarks); frozen.
    pub fn new(cfg: &ClipConfig, device: Device) -> Result<Self, ModelError> {
        let mut vs = nn::VarStore::new(device);
        let visual = VisionTransformer::new(vs.root() / "visual", cfg)?;
        vs.freeze();
        Ok(Self { vs, visual })
    }

    /// Loads the `visual.*` tensors of a CLIP safetensors file (OpenAI or Hugging Face
    /// naming; text-tower tensors are ignored); frozen.
    pub fn from_clip_safetensors(
        path: impl AsRef<Path>,
        cfg: &ClipConfig,
        device: Device,
    ) -> Result<Self, ModelError> {
        let path = path.as_ref();
        let mut vs = nn::VarStore::new(device);
        let visual = VisionTransformer::new(vs.root() / "visual", cfg)?;
        let tensors: Vec<(String, Tensor)> = weights::read_openai_named(path, WeightNaming::Auto)?
            .into_iter()
            .filter(|(k, _)| k.starts_with(crate::model::clip::IMAGE_TOWER_PREFIX))
            .collect();
        weights::load_named_tensors(&mut vs, tensors, &PathBuf::from(path))?;
        vs.freeze();
        Ok(Self { vs, visual })
    }

    /// Images `[b, 3, H, W]` → features `[b, tokens, width]`, without gradient.
    pub fn features(&self, images: &Tensor) -> Result<Tensor, ModelError> {
        tch::no_grad(|| self.visual.last_hidden_state(images))
    }

    /// The backbone's variables (frozen).
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
}
