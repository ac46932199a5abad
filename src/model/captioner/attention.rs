//! Multi-head attention with separate q/k/v projections (`q_proj`, `k_proj`, `v_proj`,
//! `out_proj`), used for the encoder's self-attention and the decoder's self- and
//! cross-attention. Keys and values can be computed once and reused (KV cache).

use tch::{nn, Tensor};

use crate::model::clip::layers::Linear;
use crate::model::ModelError;

/// Multi-head scaled dot-product attention.
#[derive(Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    heads: i64,
}

impl Attention {
    pub fn new(p: nn::Path, d: i64, heads: i64, out_std: f64) -> Self {
        let std = (d as f64).powf(-0.5);
        Self {
            q_proj: Linear::new(&p / "q_proj", d, d, std),
            k_proj: Linear::new(&p / "k_proj", d, d, std),
            v_proj: Linear::new(&p / "v_proj", d, d, std),
            out_proj: Linear::new(&p / "out_proj", d, d, out_std),
            heads,
        }
    }

    /// `[b, t, d]` → `[b, heads, t, d / heads]`
    fn split_heads(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let (b, t, d) = x.size3()?;
        Ok(x.f_reshape([b, t, self.heads, d / self.heads])?
            .f_transpose(1, 2)?)
    }

    /// Queries of `x`: `[b, t, d]` → `[b, heads, t, d / heads]`
    pub fn queries(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        self.split_heads(&self.q_proj.forward(x)?)
    }

    /// Keys and values of `x`: `[b, t, d]` → 2 × `[b, heads, t, d / heads]`
    pub fn keys_values(&self, x: &Tensor) -> Result<(Tensor, Tensor), ModelError> {
        Ok((
            self.split_heads(&self.k_proj.forward(x)?)?,
            self.split_heads(&self.v_proj.forward(x)?)?,
        ))
    }

    /// Attends queries `[rows, heads, t, hd]` to keys/values `[rows / group, heads, s, hd]`:
    /// each consecutive run of `group` query rows shares one row of keys/values (the beams
    /// or samples of one image share its encoder output). `causal` masks future positions
    /// (only meaningful when `t == s`). Returns `[rows, t, d]` after `out_proj`.
    pub fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        group: i64,
        causal: bool,
    ) -> Result<Tensor, ModelError> {
        let (rows, h, t, hd) = q.size4()?;
        let y = if group == 1 {
            Tensor::f_scaled_dot_product_attention::<Tensor>(
                q, k, v, None, 0.0, causal, None, false,
            )? // [rows, h, t, hd]
        } else {
            let b = rows / group;
            // [b, group, h, t, hd] → [b, h, group * t, hd]: all queries of an image at once.
            let qg = q
                .f_reshape([b, group, h, t, hd])?
                .f_transpose(1, 2)?
                .f_reshape([b, h, group * t, hd])?;
            let y = Tensor::f_scaled_dot_product_attention::<Tensor>(
                &qg, k, v, None, 0.0, false, None, false,
            )?; // [b, h, group * t, hd]
            y.f_reshape([b, h, group, t, hd])?
                .f_transpose(1, 2)?
                .f_reshape([rows, h, t, hd])?
        };
        let y = y.f_transpose(1, 2)?.f_reshape([rows, t, h * hd])?; // [rows, t, d]
        self.out_proj.forward(&y)
    }
}
