//! Visual encoder: Linear(feature_dim → d) over the backbone's token features, then
//! pre-LayerNorm transformer encoder layers and a final LayerNorm. Names under
//! `encoder.`: `proj`, `layers.{i}.{ln_1,attn,ln_2,mlp.c_fc,mlp.c_proj}`, `ln_f`.

use tch::{nn, Tensor};

use super::attention::Attention;
use super::config::CaptionerConfig;
use crate::model::clip::layers::{LayerNorm, Linear, Mlp};
use crate::model::ModelError;

/// One encoder layer: `x + attn(ln_1 x)`, then `x + mlp(ln_2 x)` (exact GELU).
#[derive(Debug)]
pub struct EncoderLayer {
    pub ln_1: LayerNorm,
    pub attn: Attention,
    pub ln_2: LayerNorm,
    pub mlp: Mlp,
}

impl EncoderLayer {
    pub fn new(p: nn::Path, cfg: &CaptionerConfig, out_std: f64) -> Self {
        let d = cfg.d_model;
        Self {
            ln_1: LayerNorm::new(&p / "ln_1", d),
            attn: Attention::new(&p / "attn", d, cfg.heads, out_std),
            ln_2: LayerNorm::new(&p / "ln_2", d),
            mlp: Mlp::new(&p / "mlp", d, cfg.ffn, out_std, false),
        }
    }

    /// `[b, n, d]` → `[b, n, d]`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let h = self.ln_1.forward(x)?;
        let q = self.attn.queries(&h)?;
        let (k, v) = self.attn.keys_values(&h)?;
        let x = x.f_add(&self.attn.attend(&q, &k, &v, 1, false)?)?;
        Ok(x.f_add(&self.mlp.forward(&self.ln_2.forward(&x)?)?)?)
    }
}

/// The visual encoder.
#[derive(Debug)]
pub struct Encoder {
    pub proj: Linear,
    pub layers: Vec<EncoderLayer>,
    pub ln_f: LayerNorm,
    feature_dim: i64,
}

impl Encoder {
    pub fn new(p: nn::Path, cfg: &CaptionerConfig) -> Self {
        let out_std = residual_std(cfg.d_model, cfg.encoder_layers);
        let layers = &p / "layers";
        Self {
            proj: Linear::new(
                &p / "proj",
                cfg.feature_dim,
                cfg.d_model,
                (cfg.feature_dim as f64).powf(-0.5),
            ),
            layers: (0..cfg.encoder_layers)
                .map(|i| EncoderLayer::new(&layers / i, cfg, out_std))
                .collect(),
            ln_f: LayerNorm::new(&p / "ln_f", cfg.d_model),
            feature_dim: cfg.feature_dim,
        }
    }

    /// Backbone features `[b, n, feature_dim]` → encoder output `[b, n, d]`.
    pub fn forward(&self, features: &Tensor) -> Result<Tensor, ModelError> {
        let size = features.size();
        if size.len() != 3
            || size[1] < 1
            || size[2] != self.feature_dim
            || !features.is_floating_point()
        {
            return Err(ModelError::BadInput {
                what: "captioner encoder",
                expected: format!(
                    "floating-point features [batch, tokens >= 1, {}]",
                    self.feature_dim
                ),
                found: size,
                kind: format!("{:?}", features.kind()),
            });
        }
        let x = features
            .f_to_kind(self.proj.weight.kind())?
            .f_to_device(self.proj.weight.device())?;
        let mut x = self.proj.forward(&x)?; // [b, n, d]
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        self.ln_f.forward(&x)
    }
}

/// GPT-2's initialisation of residual output projections: `0.02 / sqrt(2 · layers)`.
pub(crate) fn residual_std(_d: i64, layers: i64) -> f64 {
    0.02 / (2.0 * layers.max(1) as f64).sqrt()
}
