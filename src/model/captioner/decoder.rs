//! GPT-2-style decoder with cross-attention and an incremental key/value cache. Names
//! under `decoder.`: `wte` `[vocab, d]` (also the output projection), `wpe`
//! `[max_len, d]`, `h.{i}.{ln_1,attn,ln_cross,cross_attn,ln_2,mlp.c_fc,mlp.c_proj}`,
//! `ln_f`.
//!
//! Decoding rows are grouped by image: `rows = images × group`, the `group` consecutive
//! rows of an image (its beams or samples) share the image's cross-attention keys and
//! values, which are computed once by [`Decoder::start`] and never copied.

use tch::{nn, Kind, Tensor};

use super::attention::Attention;
use super::config::CaptionerConfig;
use super::encoder::residual_std;
use crate::model::clip::layers::{LayerNorm, Mlp};
use crate::model::ModelError;

/// Keys and values of one decoder layer.
#[derive(Debug)]
struct LayerKv {
    /// Self-attention keys/values of the positions decoded so far:
    /// `[rows, heads, len, hd]`, `None` before the first step.
    self_kv: Option<(Tensor, Tensor)>,
    /// Cross-attention keys/values of the encoder output: `[images, heads, n, hd]`.
    cross_k: Tensor,
    cross_v: Tensor,
}

/// Incremental decoding state: per-layer key/value caches and the number of positions
/// already decoded.
#[derive(Debug)]
pub struct DecoderCache {
    layers: Vec<LayerKv>,
    images: i64,
    group: i64,
    len: i64,
}

impl DecoderCache {
    /// Positions decoded so far.
    pub fn len(&self) -> i64 {
        self.len
    }

    /// True before the first step.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Decoding rows (`images × group`).
    pub fn rows(&self) -> i64 {
        self.images * self.group
    }

    /// Rows per image.
    pub fn group(&self) -> i64 {
        self.group
    }

    /// Reorders the self-attention caches: new row `i` continues old row `rows[i]`
    /// (`rows`: i64 `[images × group]`). Every `rows[i]` must belong to the same image
    /// as row `i`, as beam search guarantees; the cross-attention keys stay in place.
    pub fn reorder(&mut self, rows: &Tensor) -> Result<(), ModelError> {
        if rows.size() != [self.rows()] {
            return Err(ModelError::BadInput {
                what: "decoder cache reorder",
                expected: format!("row indices [{}]", self.rows()),
                found: rows.size(),
                kind: format!("{:?}", rows.kind()),
            });
        }
        for layer in &mut self.layers {
            if let Some((k, v)) = &layer.self_kv {
                let idx = rows.f_to_device(k.device())?;
                layer.self_kv = Some((k.f_index_select(0, &idx)?, v.f_index_select(0, &idx)?));
            }
        }
        Ok(())
    }
}

/// One decoder layer: causal self-attention, cross-attention, MLP, each pre-LayerNorm
/// with a residual connection.
#[derive(Debug)]
pub struct DecoderLayer {
    pub ln_1: LayerNorm,
    pub attn: Attention,
    pub ln_cross: LayerNorm,
    pub cross_attn: Attention,
    pub ln_2: LayerNorm,
    pub mlp: Mlp,
}

impl DecoderLayer {
    pub fn new(p: nn::Path, cfg: &CaptionerConfig, out_std: f64) -> Self {
        let d = cfg.d_model;
        Self {
            ln_1: LayerNorm::new(&p / "ln_1", d),
            attn: Attention::new(&p / "attn", d, cfg.heads, out_std),
            ln_cross: LayerNorm::new(&p / "ln_cross", d),
            cross_attn: Attention::new(&p / "cross_attn", d, cfg.heads, out_std),
            ln_2: LayerNorm::new(&p / "ln_2", d),
            mlp: Mlp::new(&p / "mlp", d, cfg.ffn, out_std, false),
        }
    }

    /// `x [rows, t, d]` → `[rows, t, d]`, appending this step's keys/values to `kv`.
    fn forward(&self, x: &Tensor, kv: &mut LayerKv, group: i64) -> Result<Tensor, ModelError> {
        let h = self.ln_1.forward(x)?;
        let q = self.attn.queries(&h)?; // [rows, heads, t, hd]
        let (k, v) = self.attn.keys_values(&h)?;
        let (k, v, causal) = match &kv.self_kv {
            None => (k, v, true),
            // One new position attends to every cached one: no mask needed.
            Some((pk, pv)) => (
                Tensor::f_cat(&[pk, &k], 2)?,
                Tensor::f_cat(&[pv, &v], 2)?,
                false,
            ),
        };
        let a = self.attn.attend(&q, &k, &v, 1, causal)?;
        kv.self_kv = Some((k, v));
        let x = x.f_add(&a)?;
        let h = self.ln_cross.forward(&x)?;
        let q = self.cross_attn.queries(&h)?;
        let c = self
            .cross_attn
            .attend(&q, &kv.cross_k, &kv.cross_v, group, false)?;
        let x = x.f_add(&c)?;
        Ok(x.f_add(&self.mlp.forward(&self.ln_2.forward(&x)?)?)?)
    }
}

/// The caption decoder.
#[derive(Debug)]
pub struct Decoder {
    /// `[vocab, d]`, tied output projection.
    pub wte: Tensor,
    /// `[max_len, d]`
    pub wpe: Tensor,
    pub h: Vec<DecoderLayer>,
    pub ln_f: LayerNorm,
    vocab_size: i64,
    max_len: i64,
    d_model: i64,
}

impl Decoder {
    pub fn new(p: nn::Path, cfg: &CaptionerConfig) -> Self {
        let out_std = residual_std(cfg.d_model, cfg.decoder_layers);
        let randn = |stdev| nn::Init::Randn { mean: 0.0, stdev };
        let blocks = &p / "h";
        Self {
            wte: p.var("wte", &[cfg.tokens.vocab_size, cfg.d_model], randn(0.02)),
            wpe: p.var("wpe", &[cfg.max_len, cfg.d_model], randn(0.01)),
            h: (0..cfg.decoder_layers)
                .map(|i| DecoderLayer::new(&blocks / i, cfg, out_std))
                .collect(),
            ln_f: LayerNorm::new(&p / "ln_f", cfg.d_model),
            vocab_size: cfg.tokens.vocab_size,
            max_len: cfg.max_len,
            d_model: cfg.d_model,
        }
    }

    /// Starts decoding `group` rows per image of `memory` (encoder output `[images, n, d]`):
    /// computes every layer's cross-attention keys/values once.
    pub fn start(&self, memory: &Tensor, group: i64) -> Result<DecoderCache, ModelError> {
        let size = memory.size();
        if size.len() != 3 || size[2] != self.d_model || group < 1 {
            return Err(ModelError::BadInput {
                what: "captioner decoder",
                expected: format!(
                    "encoder output [images, tokens, {}] and group >= 1",
                    self.d_model
                ),
                found: size,
                kind: format!("{:?}", memory.kind()),
            });
        }
        let mut layers = Vec::with_capacity(self.h.len());
        for layer in &self.h {
            let (cross_k, cross_v) = layer.cross_attn.keys_values(memory)?;
            layers.push(LayerKv {
                self_kv: None,
                cross_k,
                cross_v,
            });
        }
        Ok(DecoderCache {
            layers,
            images: size[0],
            group,
            len: 0,
        })
    }

    /// Decodes `ids` `[rows, t]` after the `cache.len()` positions already in `cache`,
    /// returning logits `[rows, t, vocab]` (float32) and extending the cache. With an
    /// empty cache any `t` (causal over the block) is accepted; after that, one position
    /// at a time (`t == 1`).
    pub fn forward(&self, ids: &Tensor, cache: &mut DecoderCache) -> Result<Tensor, ModelError> {
        let size = ids.size();
        let integer = matches!(
            ids.kind(),
            Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8
        );
        let t = size.get(1).copied().unwrap_or(0);
        let ok = size.len() == 2
            && size[0] == cache.rows()
            && integer
            && t >= 1
            && (cache.is_empty() || t == 1)
            && cache.len + t <= self.max_len;
        if !ok {
            return Err(ModelError::BadInput {
                what: "captioner decoder",
                expected: format!(
                    "integer ids [{}, t] with t == 1 after the first step and {} + t <= max_len {}",
                    cache.rows(),
                    cache.len,
                    self.max_len
                ),
                found: size,
                kind: format!("{:?}", ids.kind()),
            });
        }
        let ids = ids.f_to_kind(Kind::Int64)?.f_to_device(self.wte.device())?;
        if ids.numel() > 0 {
            let min = ids.f_min()?.f_int64_value(&[])?;
            let max = ids.f_max()?.f_int64_value(&[])?;
            if min < 0 || max >= self.vocab_size {
                return Err(ModelError::BadInput {
                    what: "captioner decoder",
                    expected: format!("token ids in 0..{} (found {min}..={max})", self.vocab_size),
                    found: ids.size(),
                    kind: "ids".to_owned(),
                });
            }
        }
        let x = Tensor::f_embedding(&self.wte, &ids, -1, false, false)?; // [rows, t, d]
        let mut x = x.f_add(&self.wpe.f_narrow(0, cache.len, t)?)?;
        let group = cache.group;
        for (layer, kv) in self.h.iter().zip(cache.layers.iter_mut()) {
            x = layer.forward(&x, kv, group)?;
        }
        cache.len += t;
        let x = self.ln_f.forward(&x)?;
        Ok(x.f_matmul(&self.wte.f_transpose(0, 1)?)?
            .f_to_kind(Kind::Float)?) // [rows, t, vocab]
    }
}
