//! Captioner configuration, token ids and named presets.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::clip::ClipConfig;
use crate::model::error::{non_negative, positive};
use crate::model::preset::impl_preset_serde;
use crate::model::ModelError;
use crate::text::clip_tokenizer::{EOT_TOKEN, SOT_TOKEN, VOCAB_SIZE};

/// Default maximum caption length in generated tokens (EOS included), as in the paper.
pub const DEFAULT_MAX_LEN: i64 = 30;

/// Output vocabulary size and special token ids of a captioner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSpec {
    /// Rows of the token embedding (and columns of the logits).
    pub vocab_size: i64,
    /// Padding id: never generated, excluded from log-probs and the loss.
    pub pad: i64,
    /// First input token of every sequence; never generated.
    pub bos: i64,
    /// End of sequence; generated, counted in log-probs.
    pub eos: i64,
}

impl TokenSpec {
    /// CLIP BPE (49 408 ids) plus one pad id 49 408; BOS 49 406, EOS 49 407.
    pub fn clip() -> Self {
        let clip_vocab = VOCAB_SIZE as i64;
        Self {
            vocab_size: clip_vocab + 1,
            pad: clip_vocab,
            bos: SOT_TOKEN,
            eos: EOT_TOKEN,
        }
    }

    fn validate(&self) -> Result<(), ModelError> {
        positive("tokens.vocab_size", self.vocab_size)?;
        for (field, id) in [
            ("tokens.pad", self.pad),
            ("tokens.bos", self.bos),
            ("tokens.eos", self.eos),
        ] {
            if id < 0 || id >= self.vocab_size {
                return Err(ModelError::InvalidConfig {
                    field,
                    value: id.to_string(),
                    reason: "must be an id below tokens.vocab_size",
                });
            }
        }
        if self.pad == self.bos || self.pad == self.eos || self.bos == self.eos {
            return Err(ModelError::InvalidConfig {
                field: "tokens",
                value: format!("pad {} bos {} eos {}", self.pad, self.bos, self.eos),
                reason: "pad, bos and eos must be distinct",
            });
        }
        Ok(())
    }
}

/// Captioner architecture: (optional frozen CLIP vision backbone) → Linear(feature_dim → d)
/// → `encoder_layers` pre-LN transformer encoder layers → `decoder_layers` GPT-2-style
/// decoder layers (causal self-attention, cross-attention to the encoder output, MLP),
/// output projection tied to the token embedding. Settings files may name a preset
/// instead of giving the fields (`captioner = "paper"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct CaptionerConfig {
    /// The CLIP whose vision tower provides the features (its `last_hidden_state`);
    /// `None` when features are precomputed or random (tests).
    pub backbone: Option<ClipConfig>,
    /// Width of the features fed to the encoder (= `backbone.vision.width` when set).
    pub feature_dim: i64,
    /// Model width.
    pub d_model: i64,
    /// Attention heads; `d_model` must be a multiple of it.
    pub heads: i64,
    /// MLP hidden width.
    pub ffn: i64,
    pub encoder_layers: i64,
    pub decoder_layers: i64,
    pub tokens: TokenSpec,
    /// Maximum number of generated tokens (EOS included); also the rows of the decoder's
    /// positional embedding.
    pub max_len: i64,
}

impl_preset_serde!(CaptionerConfig, "captioner config", "paper, tiny");

impl CaptionerConfig {
    /// The paper's captioner: CLIP ViT-L/14 features (width 1024), d 512, 8 heads, ffn
    /// 2048, 3 encoder + 3 decoder layers, CLIP BPE + pad, max length 30.
    pub fn paper() -> Self {
        let backbone = ClipConfig::vit_l_14();
        Self {
            feature_dim: backbone.vision.width,
            backbone: Some(backbone),
            d_model: 512,
            heads: 8,
            ffn: 2048,
            encoder_layers: 3,
            decoder_layers: 3,
            tokens: TokenSpec::clip(),
            max_len: DEFAULT_MAX_LEN,
        }
    }

    /// A small captioner over [`ClipConfig::tiny`] features with the CLIP vocabulary:
    /// d 64, 4 heads, ffn 128, 1 + 1 layers (about 3.3 M parameters, mostly embeddings).
    pub fn tiny() -> Self {
        let backbone = ClipConfig::tiny();
        Self {
            feature_dim: backbone.vision.width,
            backbone: Some(backbone),
            d_model: 64,
            heads: 4,
            ffn: 128,
            encoder_layers: 1,
            decoder_layers: 1,
            tokens: TokenSpec::clip(),
            max_len: DEFAULT_MAX_LEN,
        }
    }

    /// A small captioner with a word-level vocabulary of `vocab_size` ids (see
    /// [`super::Vocab`]), no backbone, 32-dimensional features: d 64, 4 heads, ffn 128,
    /// 2 + 2 layers.
    pub fn tiny_words(vocab_size: i64) -> Self {
        Self {
            backbone: None,
            feature_dim: 32,
            d_model: 64,
            heads: 4,
            ffn: 128,
            encoder_layers: 2,
            decoder_layers: 2,
            tokens: TokenSpec::words(vocab_size),
            max_len: DEFAULT_MAX_LEN,
        }
    }

    /// Preset by name: `paper`, `tiny` (case-insensitive).
    pub fn preset(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "paper" => Some(Self::paper()),
            "tiny" => Some(Self::tiny()),
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
        positive("feature_dim", self.feature_dim)?;
        positive("d_model", self.d_model)?;
        positive("heads", self.heads)?;
        positive("ffn", self.ffn)?;
        positive("max_len", self.max_len)?;
        non_negative("encoder_layers", self.encoder_layers)?;
        non_negative("decoder_layers", self.decoder_layers)?;
        if self.d_model % self.heads != 0 {
            return Err(ModelError::InvalidConfig {
                field: "d_model",
                value: self.d_model.to_string(),
                reason: "must be a multiple of heads",
            });
        }
        self.tokens.validate()?;
        if let Some(backbone) = &self.backbone {
            backbone.validate()?;
            if backbone.vision.width != self.feature_dim {
                return Err(ModelError::InvalidConfig {
                    field: "feature_dim",
                    value: self.feature_dim.to_string(),
                    reason: "must equal backbone.vision.width",
                });
            }
        }
        Ok(())
    }

    /// Number of trainable parameters (backbone excluded), from the config alone.
    pub fn num_parameters(&self) -> i64 {
        let d = self.d_model;
        let linear = |i: i64, o: i64| i * o + o;
        let ln = 2 * d;
        let attn = 4 * linear(d, d);
        let mlp = linear(d, self.ffn) + linear(self.ffn, d);
        let enc_layer = 2 * ln + attn + mlp;
        let dec_layer = 3 * ln + 2 * attn + mlp;
        let encoder = linear(self.feature_dim, d) + self.encoder_layers * enc_layer + ln;
        let decoder =
            self.tokens.vocab_size * d + self.max_len * d + self.decoder_layers * dec_layer + ln;
        encoder + decoder
    }
}
