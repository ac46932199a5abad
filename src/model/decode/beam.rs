//! Batched beam search that returns all `k` beams of every image with their summed
//! log-probabilities. Finished beams (EOS generated) stay in the beam with a frozen
//! score and compete with unfinished ones; the search stops when every beam is
//! finished or `max_len` tokens were generated.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::{generation_logprobs, images_of, resolve_max_len, stack_steps, Decoded};
use crate::model::captioner::Captioner;
use crate::model::ModelError;

/// Default number of beams (the paper's k = 5).
pub const DEFAULT_BEAMS: i64 = 5;

/// Beam search settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BeamOptions {
    /// Beams kept and returned per image. Default [`DEFAULT_BEAMS`].
    pub beams: i64,
    /// Maximum generated tokens (EOS included); `None`: the captioner's `max_len` (30).
    pub max_len: Option<i64>,
    /// GNMT length penalty α used to rank the final beams:
    /// `score = logprob / ((5 + len) / 6)^α`. Default 0 (rank by summed log-prob); the
    /// search itself always ranks by summed log-prob.
    pub length_penalty: f64,
}

impl Default for BeamOptions {
    fn default() -> Self {
        Self {
            beams: DEFAULT_BEAMS,
            max_len: None,
            length_penalty: 0.0,
        }
    }
}

/// Beam search over encoder output `memory` `[images, n, d]`. Returns `[images, beams, len]`
/// sequences sorted by score; slots no sequence could fill (more beams than distinct
/// sequences) have log-prob −∞ and only pad tokens.
pub fn beam_search(
    model: &Captioner,
    memory: &Tensor,
    opts: &BeamOptions,
) -> Result<Decoded, ModelError> {
    if opts.beams < 1 || !opts.length_penalty.is_finite() {
        return Err(ModelError::InvalidConfig {
            field: "beams",
            value: format!(
                "beams {} length_penalty {}",
                opts.beams, opts.length_penalty
            ),
            reason: "beams must be >= 1 and the length penalty finite",
        });
    }
    tch::no_grad(|| {
        let images = images_of(memory)?;
        let max_len = resolve_max_len(model, opts.max_len)?;
        let k = opts.beams;
        let rows = images * k;
        let t = model.tokens();
        let vocab = t.vocab_size;
        let device = model.decoder.wte.device();
        let neg_inf = f64::NEG_INFINITY;

        let mut cache = model.start(memory, k)?;
        // Only beam 0 of each image is live at the start, so the first step does not
        // pick the same token k times.
        let mut scores = Tensor::f_full([images, k], neg_inf, (Kind::Float, device))?;
        let _ = scores.f_select(1, 0)?.f_fill_(0.0)?;
        let mut done = Tensor::f_zeros([rows], (Kind::Bool, device))?;
        let mut seqs: Vec<Tensor> = Vec::new(); // per step [rows]
        let mut input = Tensor::f_full([rows, 1], t.bos, (Kind::Int64, device))?;
        // A finished beam has one continuation: pad, at log-prob 0.
        let finished = Tensor::f_full([1, vocab], neg_inf, (Kind::Float, device))?.f_index_fill(
            1,
            &Tensor::f_from_slice(&[t.pad])?.f_to_device(device)?,
            0.0,
        )?;
        let base = Tensor::f_arange(images, (Kind::Int64, device))?
            .f_mul_scalar(k)?
            .f_unsqueeze(1)?; // [images, 1]

        for _ in 0..max_len {
            let logits = model.step(&input, &mut cache)?.f_select(1, 0)?; // [rows, vocab]
            let logp = generation_logprobs(&logits, t)?;
            let logp = finished.f_where_self(&done.f_unsqueeze(1)?, &logp)?; // [rows, vocab]
            let cand = scores
                .f_reshape([rows, 1])?
                .f_add(&logp)?
                .f_reshape([images, k * vocab])?;
            let (top, idx) = cand.f_topk(k, 1, true, true)?; // [images, k]
            let origin = idx.f_div_scalar_mode(vocab, "floor")?; // [images, k]
            let token = idx.f_remainder(vocab)?.f_reshape([rows])?;
            let from = origin.f_add(&base)?.f_reshape([rows])?; // old row of each new row
            cache.reorder(&from)?;
            for s in seqs.iter_mut() {
                *s = s.f_index_select(0, &from)?;
            }
            done = done
                .f_index_select(0, &from)?
                .f_logical_or(&token.f_eq(t.eos)?)?;
            seqs.push(token.shallow_clone());
            scores = top;
            input = token.f_unsqueeze(1)?;
            if bool::try_from(done.f_all()?)? {
                break;
            }
        }

        let mut tokens = stack_steps(&seqs, rows, device)?.f_reshape([images, k, -1])?;
        let len = tokens.size()[2];
        // Unfillable slots: pad only.
        let empty = scores.f_isneginf()?; // [images, k]
        tokens = tokens.f_masked_fill(
            &empty.f_unsqueeze(2)?.f_expand([images, k, len], false)?,
            t.pad,
        )?;
        let lengths =
            tokens
                .f_ne(t.pad)?
                .f_sum_dim_intlist([2i64].as_slice(), false, Kind::Int64)?; // [images, k]
        let logprobs = scores;
        let ranking = if opts.length_penalty != 0.0 {
            let lp = lengths
                .f_to_kind(Kind::Float)?
                .f_add_scalar(5.0)?
                .f_div_scalar(6.0)?
                .f_pow_tensor_scalar(opts.length_penalty)?;
            logprobs.f_div(&lp)?
        } else {
            logprobs.shallow_clone()
        };
        let (scores, order) = ranking.f_sort(1, true)?; // [images, k]
        let gather3 = order.f_unsqueeze(2)?.f_expand([images, k, len], false)?;
        Ok(Decoded {
            tokens: tokens.f_gather(1, &gather3, false)?,
            logprobs: logprobs.f_gather(1, &order, false)?,
            scores,
            lengths: lengths.f_gather(1, &order, false)?,
        })
    })
}
