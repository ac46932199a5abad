//! Transformer building blocks shared by the CLIP towers, with OpenAI state-dict names:
//! `ln_1`, `attn.{in_proj_weight,in_proj_bias,out_proj.{weight,bias}}`, `ln_2`,
//! `mlp.{c_fc,c_proj}.{weight,bias}`, blocks under `resblocks.{i}`.

use tch::{nn, Tensor};

use super::config::mlp_width;
use crate::model::ModelError;

/// LayerNorm over the last dimension, eps 1e-5 (PyTorch default, as CLIP).
#[derive(Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    width: i64,
}

impl LayerNorm {
    pub fn new(p: nn::Path, width: i64) -> Self {
        Self {
            weight: p.var("weight", &[width], nn::Init::Const(1.0)),
            bias: p.var("bias", &[width], nn::Init::Const(0.0)),
            width,
        }
    }

    /// `[..., width]` → `[..., width]`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        Ok(x.f_layer_norm(
            [self.width],
            Some(&self.weight),
            Some(&self.bias),
            1e-5,
            true,
        )?)
    }
}

/// Linear layer with PyTorch layout: `weight [out, in]`, `bias [out]`.
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Linear {
    pub fn new(p: nn::Path, in_dim: i64, out_dim: i64, std: f64) -> Self {
        Self {
            weight: p.var(
                "weight",
                &[out_dim, in_dim],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: std,
                },
            ),
            bias: p.var("bias", &[out_dim], nn::Init::Const(0.0)),
        }
    }

    /// `[..., in]` → `[..., out]`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        Ok(x.f_linear(&self.weight, Some(&self.bias))?)
    }
}

/// `torch.nn.MultiheadAttention` as CLIP uses it (self-attention, packed q/k/v).
#[derive(Debug)]
pub struct MultiheadAttention {
    /// `[3 * width, width]`, rows ordered q, k, v.
    pub in_proj_weight: Tensor,
    /// `[3 * width]`
    pub in_proj_bias: Tensor,
    pub out_proj: Linear,
    heads: i64,
}

impl MultiheadAttention {
    pub fn new(p: nn::Path, width: i64, heads: i64, out_std: f64) -> Self {
        let in_std = (width as f64).powf(-0.5);
        Self {
            in_proj_weight: p.var(
                "in_proj_weight",
                &[3 * width, width],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: in_std,
                },
            ),
            in_proj_bias: p.var("in_proj_bias", &[3 * width], nn::Init::Const(0.0)),
            out_proj: Linear::new(p / "out_proj", width, width, out_std),
            heads,
        }
    }

    /// `[batch, tokens, width]` → `[batch, tokens, width]`; `causal` masks future tokens.
    pub fn forward(&self, x: &Tensor, causal: bool) -> Result<Tensor, ModelError> {
        let (b, t, w) = x.size3()?;
        let head_dim = w / self.heads;
        let qkv = x.f_linear(&self.in_proj_weight, Some(&self.in_proj_bias))?; // [b, t, 3w]
        let qkv = qkv
            .f_reshape([b, t, 3, self.heads, head_dim])?
            .f_permute([2, 0, 3, 1, 4])?; // [3, b, heads, t, head_dim]
        let parts = qkv.f_unbind(0)?; // 3 x [b, heads, t, head_dim]
        let [q, k, v] = <[Tensor; 3]>::try_from(parts).map_err(|p| ModelError::BadInput {
            what: "attention",
            expected: "q, k and v".to_owned(),
            found: vec![p.len() as i64],
            kind: "tensors".to_owned(),
        })?;
        let y = Tensor::f_scaled_dot_product_attention::<Tensor>(
            &q, &k, &v, None, 0.0, causal, None, false,
        )?; // [b, heads, t, head_dim]
        let y = y.f_transpose(1, 2)?.f_reshape([b, t, w])?; // [b, t, w]
        self.out_proj.forward(&y)
    }
}

/// CLIP MLP: `c_fc` → activation → `c_proj`.
#[derive(Debug)]
pub struct Mlp {
    pub c_fc: Linear,
    pub c_proj: Linear,
    quick_gelu: bool,
}

impl Mlp {
    pub fn new(p: nn::Path, width: i64, hidden: i64, out_std: f64, quick_gelu: bool) -> Self {
        let fc_std = (2.0 * width as f64).powf(-0.5);
        Self {
            c_fc: Linear::new(&p / "c_fc", width, hidden, fc_std),
            c_proj: Linear::new(&p / "c_proj", hidden, width, out_std),
            quick_gelu,
        }
    }

    /// `[..., width]` → `[..., width]`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let h = self.c_fc.forward(x)?;
        let h = if self.quick_gelu {
            // x * sigmoid(1.702 x)
            h.f_mul(&h.f_mul_scalar(1.702)?.f_sigmoid()?)?
        } else {
            h.f_gelu("none")?
        };
        self.c_proj.forward(&h)
    }
}

/// Pre-LayerNorm residual block.
#[derive(Debug)]
pub struct ResidualAttentionBlock {
    pub ln_1: LayerNorm,
    pub attn: MultiheadAttention,
    pub ln_2: LayerNorm,
    pub mlp: Mlp,
}

impl ResidualAttentionBlock {
    pub fn new(
        p: nn::Path,
        width: i64,
        heads: i64,
        layers: i64,
        mlp_ratio: f64,
        quick_gelu: bool,
    ) -> Self {
        // open_clip's initialisation of the residual projections.
        let proj_std = (width as f64).powf(-0.5) * (2.0 * layers.max(1) as f64).powf(-0.5);
        Self {
            ln_1: LayerNorm::new(&p / "ln_1", width),
            attn: MultiheadAttention::new(&p / "attn", width, heads, proj_std),
            ln_2: LayerNorm::new(&p / "ln_2", width),
            mlp: Mlp::new(
                &p / "mlp",
                width,
                mlp_width(width, mlp_ratio),
                proj_std,
                quick_gelu,
            ),
        }
    }

    /// `[batch, tokens, width]` → `[batch, tokens, width]`
    pub fn forward(&self, x: &Tensor, causal: bool) -> Result<Tensor, ModelError> {
        let x = x.f_add(&self.attn.forward(&self.ln_1.forward(x)?, causal)?)?;
        Ok(x.f_add(&self.mlp.forward(&self.ln_2.forward(&x)?)?)?)
    }
}

/// Stack of residual blocks under `resblocks.{i}`.
#[derive(Debug)]
pub struct Transformer {
    pub resblocks: Vec<ResidualAttentionBlock>,
}

impl Transformer {
    pub fn new(
        p: nn::Path,
        width: i64,
        layers: i64,
        heads: i64,
        mlp_ratio: f64,
        quick_gelu: bool,
    ) -> Self {
        let blocks = &p / "resblocks";
        Self {
            resblocks: (0..layers)
                .map(|i| {
                    ResidualAttentionBlock::new(
                        &blocks / i,
                        width,
                        heads,
                        layers,
                        mlp_ratio,
                        quick_gelu,
                    )
                })
                .collect(),
        }
    }

    /// `[batch, tokens, width]` → `[batch, tokens, width]`
    pub fn forward(&self, x: &Tensor, causal: bool) -> Result<Tensor, ModelError> {
        let mut x = x.shallow_clone();
        for block in &self.resblocks {
            x = block.forward(&x, causal)?;
        }
        Ok(x)
    }
}

/// `x / max(‖x‖₂, 1e-12)` along the last dimension (`F.normalize`).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor, ModelError> {
    let norm = x
        .f_norm_scalaropt_dim(2.0, [-1i64].as_slice(), true)?
        .f_clamp_min(1e-12)?;
    Ok(x.f_div(&norm)?)
}
