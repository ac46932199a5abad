//! CLIP text tower with OpenAI names at the model root: `token_embedding.weight`,
//! `positional_embedding`, `transformer.resblocks.{i}`, `ln_final`, `text_projection`.

use tch::{nn, Kind, Tensor};

use super::config::ClipConfig;
use super::layers::{LayerNorm, Transformer};
use crate::model::ModelError;

/// The causal text encoder; pools the features at the position of the largest token id
/// (the EOT token of CLIP's vocabulary).
#[derive(Debug)]
pub struct TextTransformer {
    /// `[vocab_size, width]`
    pub token_embedding: Tensor,
    /// `[context_length, width]`
    pub positional_embedding: Tensor,
    pub transformer: Transformer,
    pub ln_final: LayerNorm,
    /// `[width, embed_dim]`
    pub text_projection: Tensor,
    context_length: i64,
    vocab_size: i64,
}

impl TextTransformer {
    /// Creates the tower's variables under `p` (normally the model root),
    /// randomly initialised from libtorch's generator under its lock
    /// ([`crate::rng::with_torch_rng`]).
    pub fn new(p: nn::Path, cfg: &ClipConfig) -> Result<Self, ModelError> {
        crate::rng::with_torch_rng(|| Self::build(p, cfg))
    }

    fn build(p: nn::Path, cfg: &ClipConfig) -> Result<Self, ModelError> {
        cfg.validate()?;
        let t = &cfg.text;
        let randn = |stdev| nn::Init::Randn { mean: 0.0, stdev };
        Ok(Self {
            token_embedding: (&p / "token_embedding").var(
                "weight",
                &[t.vocab_size, t.width],
                randn(0.02),
            ),
            positional_embedding: p.var(
                "positional_embedding",
                &[t.context_length, t.width],
                randn(0.01),
            ),
            transformer: Transformer::new(
                &p / "transformer",
                t.width,
                t.layers,
                t.heads,
                t.mlp_ratio,
                cfg.quick_gelu,
            ),
            ln_final: LayerNorm::new(&p / "ln_final", t.width),
            text_projection: p.var(
                "text_projection",
                &[t.width, cfg.embed_dim],
                randn((t.width as f64).powf(-0.5)),
            ),
            context_length: t.context_length,
            vocab_size: t.vocab_size,
        })
    }

    /// Checks `[batch, tokens]` integer ids, `1 <= tokens <= context_length`, ids in the
    /// vocabulary; returns them as i64 on the weights' device.
    fn check_ids(&self, ids: &Tensor) -> Result<Tensor, ModelError> {
        let size = ids.size();
        let bad = |expected: String| ModelError::BadInput {
            what: "CLIP text tower",
            expected,
            found: size.clone(),
            kind: format!("{:?}", ids.kind()),
        };
        let integer = matches!(
            ids.kind(),
            Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8
        );
        if size.len() != 2 || size[1] < 1 || size[1] > self.context_length || !integer {
            return Err(bad(format!(
                "integer token ids [batch, 1..={}]",
                self.context_length
            )));
        }
        let ids = ids
            .f_to_kind(Kind::Int64)?
            .f_to_device(self.token_embedding.device())?;
        if ids.numel() > 0 {
            let min = ids.f_min()?.f_int64_value(&[])?;
            let max = ids.f_max()?.f_int64_value(&[])?;
            if min < 0 || max >= self.vocab_size {
                return Err(bad(format!(
                    "token ids in 0..{} (found {min}..={max})",
                    self.vocab_size
                )));
            }
        }
        Ok(ids)
    }

    /// Features of every position after `ln_final`.
    /// `[batch, tokens]` → `[batch, tokens, width]`
    pub fn token_features(&self, ids: &Tensor) -> Result<Tensor, ModelError> {
        let ids = self.check_ids(ids)?;
        let t = ids.size()[1];
        let x = Tensor::f_embedding(&self.token_embedding, &ids, -1, false, false)?; // [b, t, width]
        let x = x.f_add(&self.positional_embedding.f_narrow(0, 0, t)?)?;
        let x = self.transformer.forward(&x, true)?;
        self.ln_final.forward(&x) // [b, t, width]
    }

    /// Projected text embedding at the EOT (largest id) position, not normalised.
    /// `[batch, tokens]` → `[batch, embed_dim]`
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor, ModelError> {
        let x = self.token_features(ids)?; // [b, t, width]
        let ids = ids.f_to_device(x.device())?;
        let eot = ids.f_argmax(-1, false)?; // [b]
        let batch = Tensor::f_arange(x.size()[0], (Kind::Int64, x.device()))?; // [b]
        let pooled = x.f_index(&[Some(batch), Some(eot)])?; // [b, width]
        Ok(pooled.f_matmul(&self.text_projection)?) // [b, embed]
    }
}
