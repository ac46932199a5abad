//! CLIP architecture configuration and named presets.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::error::{non_negative, positive};
use crate::model::preset::impl_preset_serde;
use crate::model::ModelError;

/// Vision tower (ViT) configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipVisionConfig {
    /// Input side length in pixels (square images).
    pub image_size: i64,
    /// Patch side length; `image_size` must be a multiple of it.
    pub patch_size: i64,
    /// Residual stream width.
    pub width: i64,
    /// Number of residual attention blocks.
    pub layers: i64,
    /// Attention heads; `width` must be a multiple of it.
    pub heads: i64,
    /// MLP hidden width = `width * mlp_ratio`.
    pub mlp_ratio: f64,
}

/// Text tower configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipTextConfig {
    /// Maximum number of tokens (rows of `positional_embedding`).
    pub context_length: i64,
    /// Rows of `token_embedding`. The EOT id must be the largest id in use: pooling
    /// takes the position of the largest token id.
    pub vocab_size: i64,
    /// Residual stream width.
    pub width: i64,
    /// Number of residual attention blocks.
    pub layers: i64,
    /// Attention heads; `width` must be a multiple of it.
    pub heads: i64,
    /// MLP hidden width = `width * mlp_ratio`.
    pub mlp_ratio: f64,
}

/// CLIP = vision tower + text tower + learned temperature. Settings files may
/// name a preset instead of giving the fields (`backbone_config = "ViT-L-14"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct ClipConfig {
    /// Joint embedding size (columns of `visual.proj` and `text_projection`).
    pub embed_dim: i64,
    pub vision: ClipVisionConfig,
    pub text: ClipTextConfig,
    /// `x * sigmoid(1.702 x)` (OpenAI checkpoints, PAC-S) instead of exact GELU
    /// (open_clip models trained without `-quickgelu`).
    pub quick_gelu: bool,
}

impl_preset_serde!(
    ClipConfig,
    "CLIP config",
    "ViT-B-32, ViT-B-16, ViT-L-14, tiny, tiny-test"
);

fn openai_text(width: i64, heads: i64) -> ClipTextConfig {
    ClipTextConfig {
        context_length: 77,
        vocab_size: 49408,
        width,
        layers: 12,
        heads,
        mlp_ratio: 4.0,
    }
}

impl ClipConfig {
    /// OpenAI ViT-B/32 (also the PAC-S evaluator backbone).
    pub fn vit_b_32() -> Self {
        Self {
            embed_dim: 512,
            vision: ClipVisionConfig {
                image_size: 224,
                patch_size: 32,
                width: 768,
                layers: 12,
                heads: 12,
                mlp_ratio: 4.0,
            },
            text: openai_text(512, 8),
            quick_gelu: true,
        }
    }

    /// OpenAI ViT-B/16.
    pub fn vit_b_16() -> Self {
        let mut cfg = Self::vit_b_32();
        cfg.vision.patch_size = 16;
        cfg
    }

    /// OpenAI ViT-L/14 (224 px).
    pub fn vit_l_14() -> Self {
        Self {
            embed_dim: 768,
            vision: ClipVisionConfig {
                image_size: 224,
                patch_size: 14,
                width: 1024,
                layers: 24,
                heads: 16,
                mlp_ratio: 4.0,
            },
            text: openai_text(768, 12),
            quick_gelu: true,
        }
    }

    /// A small CLIP for CPU runs that uses the real tokenizer (vocabulary 49408, context
    /// 77): 32 px images, 8 px patches, width 64, 2 layers per tower.
    pub fn tiny() -> Self {
        Self {
            embed_dim: 64,
            vision: ClipVisionConfig {
                image_size: 32,
                patch_size: 8,
                width: 64,
                layers: 2,
                heads: 4,
                mlp_ratio: 4.0,
            },
            text: ClipTextConfig {
                context_length: 77,
                vocab_size: 49408,
                width: 64,
                layers: 2,
                heads: 4,
                mlp_ratio: 4.0,
            },
            quick_gelu: true,
        }
    }

    /// The configuration of the parity fixture `tests/fixtures/clip/clip_tiny.*`: like
    /// [`ClipConfig::tiny`] but width 32, MLP ratio 2, a 128-token vocabulary (SOT 126,
    /// EOT 127) and context 16, so that the weights file stays under 200 KB. Not usable
    /// with the CLIP tokenizer.
    pub fn tiny_test() -> Self {
        Self {
            embed_dim: 16,
            vision: ClipVisionConfig {
                image_size: 32,
                patch_size: 8,
                width: 32,
                layers: 2,
                heads: 4,
                mlp_ratio: 2.0,
            },
            text: ClipTextConfig {
                context_length: 16,
                vocab_size: 128,
                width: 32,
                layers: 2,
                heads: 4,
                mlp_ratio: 2.0,
            },
            quick_gelu: true,
        }
    }

    /// Preset by name: `ViT-B-32`, `ViT-B-16`, `ViT-L-14`, `tiny`, `tiny-test`
    /// (`/` accepted for `-`, case-insensitive).
    pub fn preset(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().replace('/', "-").as_str() {
            "vit-b-32" => Some(Self::vit_b_32()),
            "vit-b-16" => Some(Self::vit_b_16()),
            "vit-l-14" => Some(Self::vit_l_14()),
            "tiny" => Some(Self::tiny()),
            "tiny-test" => Some(Self::tiny_test()),
            _ => None,
        }
    }

    /// Reads a JSON config file.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        let cfg: Self = crate::model::error::read_json_config(path.as_ref())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks sizes that would otherwise fail inside libtorch.
    pub fn validate(&self) -> Result<(), ModelError> {
        positive("embed_dim", self.embed_dim)?;
        let v = &self.vision;
        positive("vision.image_size", v.image_size)?;
        positive("vision.patch_size", v.patch_size)?;
        positive("vision.width", v.width)?;
        positive("vision.heads", v.heads)?;
        non_negative("vision.layers", v.layers)?;
        ratio("vision.mlp_ratio", v.width, v.mlp_ratio)?;
        if v.image_size % v.patch_size != 0 {
            return Err(ModelError::InvalidConfig {
                field: "vision.image_size",
                value: v.image_size.to_string(),
                reason: "must be a multiple of vision.patch_size",
            });
        }
        divisible("vision.width", v.width, v.heads)?;
        let t = &self.text;
        positive("text.context_length", t.context_length)?;
        positive("text.vocab_size", t.vocab_size)?;
        positive("text.width", t.width)?;
        positive("text.heads", t.heads)?;
        non_negative("text.layers", t.layers)?;
        ratio("text.mlp_ratio", t.width, t.mlp_ratio)?;
        divisible("text.width", t.width, t.heads)?;
        Ok(())
    }

    /// Number of image tokens of the vision tower: patches + class token.
    pub fn vision_tokens(&self) -> i64 {
        let grid = self.vision.image_size / self.vision.patch_size;
        grid * grid + 1
    }
}

/// MLP hidden width as open_clip computes it: `int(width * mlp_ratio)`.
pub(crate) fn mlp_width(width: i64, mlp_ratio: f64) -> i64 {
    (width as f64 * mlp_ratio) as i64
}

fn ratio(field: &'static str, width: i64, r: f64) -> Result<(), ModelError> {
    if r.is_finite() && mlp_width(width, r) > 0 {
        Ok(())
    } else {
        Err(ModelError::InvalidConfig {
            field,
            value: r.to_string(),
            reason: "must give a positive MLP width",
        })
    }
}

fn divisible(field: &'static str, width: i64, heads: i64) -> Result<(), ModelError> {
    if width % heads == 0 {
        Ok(())
    } else {
        Err(ModelError::InvalidConfig {
            field,
            value: width.to_string(),
            reason: "must be a multiple of the number of heads",
        })
    }
}
