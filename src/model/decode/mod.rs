//! Caption generation with an incremental key/value cache: greedy search, beam search
//! (all beams returned with their scores) and multinomial sampling with temperature.
//!
//! Every strategy is batched over images, runs without gradient, never generates BOS or
//! pad, and returns token ids without BOS, EOS included where generated, padded with
//! pad after it. Sequence log-probabilities are sums of the model's full
//! `log_softmax` (temperature 1) over the generated tokens, EOS included: the same
//! numbers [`Captioner::sequence_logprobs`] gives by teacher forcing.

pub(crate) mod beam;
pub(crate) mod sample;

use tch::{Kind, Tensor};

use crate::model::captioner::{Captioner, TokenSpec};
use crate::model::ModelError;

pub use beam::{beam_search, BeamOptions, DEFAULT_BEAMS};
pub use sample::{sample, SampleOptions};

/// Generated captions for a batch of images.
#[derive(Debug)]
pub struct Decoded {
    /// `[images, per_image, len]` i64: token ids without BOS, EOS included where
    /// generated, pad after it.
    pub tokens: Tensor,
    /// `[images, per_image]` float32: summed log-probabilities (−∞ for beam slots that
    /// no sequence could fill).
    pub logprobs: Tensor,
    /// `[images, per_image]` float32: the ranking score (`logprobs`, length-normalised
    /// when a length penalty is set); beams are sorted by it, best first.
    pub scores: Tensor,
    /// `[images, per_image]` i64: tokens before padding (EOS included).
    pub lengths: Tensor,
}

impl Decoded {
    /// Token ids of one sequence with padding removed.
    pub fn sequence(&self, image: i64, index: i64, pad: i64) -> Result<Vec<i64>, ModelError> {
        let row = self
            .tokens
            .f_get(image)?
            .f_get(index)?
            .f_to_device(tch::Device::Cpu)?;
        let ids = Vec::<i64>::try_from(&row)?;
        Ok(ids.into_iter().filter(|&id| id != pad).collect())
    }
}

/// Checks `memory` `[images, n, d]` and returns the number of images.
pub(crate) fn images_of(memory: &Tensor) -> Result<i64, ModelError> {
    match memory.size().as_slice() {
        [b, n, _] if *b >= 1 && *n >= 1 => Ok(*b),
        other => Err(ModelError::BadInput {
            what: "caption decoding",
            expected: "encoder output [images >= 1, tokens >= 1, d]".to_owned(),
            found: other.to_vec(),
            kind: format!("{:?}", memory.kind()),
        }),
    }
}

/// `max_len` defaulting to the model's and capped by it.
pub(crate) fn resolve_max_len(model: &Captioner, max_len: Option<i64>) -> Result<i64, ModelError> {
    let cap = model.config().max_len;
    match max_len {
        None => Ok(cap),
        Some(n) if n >= 1 && n <= cap => Ok(n),
        Some(n) => Err(ModelError::InvalidConfig {
            field: "max_len",
            value: n.to_string(),
            reason: "must be between 1 and the captioner's max_len",
        }),
    }
}

/// Log-probabilities `[rows, vocab]` with BOS and pad set to −∞ (not renormalised, so
/// that scores equal teacher-forced log-probs).
pub(crate) fn generation_logprobs(
    logits: &Tensor,
    tokens: TokenSpec,
) -> Result<Tensor, ModelError> {
    let logp = logits.f_log_softmax(-1, Kind::Float)?;
    let banned = Tensor::f_from_slice(&[tokens.bos, tokens.pad])?.f_to_device(logp.device())?;
    Ok(logp.f_index_fill(1, &banned, f64::NEG_INFINITY)?)
}

/// Accepts the chosen tokens `next` `[rows]` of one step (pad where `done`):
/// adds their log-probs to `total`, marks rows that emitted EOS as done, and
/// returns the next decoder input `[rows, 1]`.
pub(crate) fn accept_step(
    logp: &Tensor,
    next: &Tensor,
    done: &mut Tensor,
    total: &mut Tensor,
    eos: i64,
) -> Result<Tensor, ModelError> {
    let lp = logp
        .f_gather(1, &next.f_unsqueeze(1)?, false)?
        .f_squeeze_dim(1)?;
    *total = total.f_add(&lp.f_masked_fill(done, 0.0)?)?;
    *done = done.f_logical_or(&next.f_eq(eos)?)?;
    Ok(next.f_unsqueeze(1)?)
}

/// Appends the per-step tokens `[rows]` into `[rows, steps]`.
pub(crate) fn stack_steps(
    steps: &[Tensor],
    rows: i64,
    device: tch::Device,
) -> Result<Tensor, ModelError> {
    if steps.is_empty() {
        return Ok(Tensor::f_zeros([rows, 0], (Kind::Int64, device))?);
    }
    Ok(Tensor::f_stack(steps, 1)?)
}

/// Greedy decoding: the most probable next token at every step, one caption per image.
/// `memory`: encoder output `[images, n, d]`; `max_len` defaults to the model's.
pub fn greedy(
    model: &Captioner,
    memory: &Tensor,
    max_len: Option<i64>,
) -> Result<Decoded, ModelError> {
    tch::no_grad(|| {
        let images = images_of(memory)?;
        let max_len = resolve_max_len(model, max_len)?;
        let t = model.tokens();
        let device = model.decoder.wte.device();
        let mut cache = model.start(memory, 1)?;
        let mut input = Tensor::f_full([images, 1], t.bos, (Kind::Int64, device))?;
        let mut done = Tensor::f_zeros([images], (Kind::Bool, device))?;
        let mut total = Tensor::f_zeros([images], (Kind::Float, device))?;
        let mut steps = Vec::new();
        for _ in 0..max_len {
            let logits = model.step(&input, &mut cache)?.f_select(1, 0)?; // [images, vocab]
            let logp = generation_logprobs(&logits, t)?;
            let next = logp.f_argmax(-1, false)?.f_masked_fill(&done, t.pad)?; // [images]
            input = accept_step(&logp, &next, &mut done, &mut total, t.eos)?;
            steps.push(next);
            if bool::try_from(done.f_all()?)? {
                break;
            }
        }
        let tokens = stack_steps(&steps, images, device)?; // [images, len]
        let lengths =
            tokens
                .f_ne(t.pad)?
                .f_sum_dim_intlist([1i64].as_slice(), false, Kind::Int64)?;
        let logprobs = total.f_unsqueeze(1)?;
        Ok(Decoded {
            tokens: tokens.f_unsqueeze(1)?,
            scores: logprobs.shallow_clone(),
            logprobs,
            lengths: lengths.f_unsqueeze(1)?,
        })
    })
}
