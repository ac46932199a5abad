//! Batched multinomial sampling with temperature. Uniform draws come from the crate's
//! own [`Rng`] on the CPU (inverse-CDF sampling on the device), so a seed gives the same
//! captions on every run and device type, and no global libtorch generator is touched.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::{accept_step, generation_logprobs, images_of, resolve_max_len, stack_steps, Decoded};
use crate::model::captioner::Captioner;
use crate::model::ModelError;
use crate::rng::Rng;

/// Sampling settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleOptions {
    /// Sequences drawn per image. Default 5.
    pub samples: i64,
    /// Softmax temperature; `<= 0` means greedy (argmax). Default 1.
    pub temperature: f64,
    /// Maximum generated tokens (EOS included); `None`: the captioner's `max_len`.
    pub max_len: Option<i64>,
    /// Seed of the uniform draws. Default 0.
    pub seed: u64,
}

impl Default for SampleOptions {
    fn default() -> Self {
        Self {
            samples: 5,
            temperature: 1.0,
            max_len: None,
            seed: 0,
        }
    }
}

/// Draws `samples` captions per image of `memory` `[images, n, d]`. `logprobs` are under
/// the model at temperature 1 (what SCST and DiCO need), whatever the sampling
/// temperature; sequences are returned in draw order (`scores` = `logprobs`).
pub fn sample(
    model: &Captioner,
    memory: &Tensor,
    opts: &SampleOptions,
) -> Result<Decoded, ModelError> {
    if opts.samples < 1 || opts.temperature.is_nan() {
        return Err(ModelError::InvalidConfig {
            field: "samples",
            value: format!("samples {} temperature {}", opts.samples, opts.temperature),
            reason: "samples must be >= 1 and the temperature a number",
        });
    }
    tch::no_grad(|| {
        let images = images_of(memory)?;
        let max_len = resolve_max_len(model, opts.max_len)?;
        let n = opts.samples;
        let rows = images * n;
        let t = model.tokens();
        let device = model.decoder.wte.device();
        let mut rng = Rng::new(opts.seed);

        let mut cache = model.start(memory, n)?;
        let mut input = Tensor::f_full([rows, 1], t.bos, (Kind::Int64, device))?;
        let mut done = Tensor::f_zeros([rows], (Kind::Bool, device))?;
        let mut total = Tensor::f_zeros([rows], (Kind::Float, device))?;
        let mut steps = Vec::new();
        for _ in 0..max_len {
            let logits = model.step(&input, &mut cache)?.f_select(1, 0)?; // [rows, vocab]
            let logp = generation_logprobs(&logits, t)?; // temperature 1
            let next = if opts.temperature <= 0.0 {
                logp.f_argmax(-1, false)?
            } else {
                let tempered = generation_logprobs(&logits.f_div_scalar(opts.temperature)?, t)?;
                draw(&tempered, &mut rng)?
            };
            let next = next.f_masked_fill(&done, t.pad)?; // [rows]
            input = accept_step(&logp, &next, &mut done, &mut total, t.eos)?;
            steps.push(next);
            if bool::try_from(done.f_all()?)? {
                break;
            }
        }
        let tokens = stack_steps(&steps, rows, device)?.f_reshape([images, n, -1])?;
        let lengths =
            tokens
                .f_ne(t.pad)?
                .f_sum_dim_intlist([2i64].as_slice(), false, Kind::Int64)?;
        let logprobs = total.f_reshape([images, n])?;
        Ok(Decoded {
            tokens,
            scores: logprobs.shallow_clone(),
            logprobs,
            lengths,
        })
    })
}

/// One token per row of log-probabilities `[rows, vocab]` by inverse CDF: the first
/// index whose cumulative probability reaches `u · total`, `u` uniform in (0, 1].
fn draw(logp: &Tensor, rng: &mut Rng) -> Result<Tensor, ModelError> {
    let (rows, vocab) = logp.size2()?;
    let cdf = logp.f_exp()?.f_cumsum(1, Kind::Double)?; // [rows, vocab]
    let u: Vec<f64> = (0..rows).map(|_| 1.0 - rng.f64()).collect();
    let u = Tensor::f_from_slice(&u)?.f_to_device(cdf.device())?; // [rows]
    let total = cdf.f_select(1, vocab - 1)?;
    let target = u.f_mul(&total)?.f_unsqueeze(1)?; // [rows, 1]
    let below =
        cdf.f_lt_tensor(&target)?
            .f_sum_dim_intlist([1i64].as_slice(), false, Kind::Int64)?;
    Ok(below.f_clamp_max(vocab - 1)?)
}
