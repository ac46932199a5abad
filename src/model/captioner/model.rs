//! The captioner: encoder + decoder, teacher-forced logits and sequence log-probs.

use tch::{nn, Kind, Tensor};

use super::config::{CaptionerConfig, TokenSpec};
use super::decoder::{Decoder, DecoderCache};
use super::encoder::Encoder;
use crate::model::ModelError;

/// The trainable part of the captioner (the backbone, if any, is a separate
/// [`super::Backbone`]). Variables: `encoder.*`, `decoder.*`.
#[derive(Debug)]
pub struct Captioner {
    pub encoder: Encoder,
    pub decoder: Decoder,
    config: CaptionerConfig,
}

impl Captioner {
    /// Creates the variables under `p` (`p / "encoder"`, `p / "decoder"`),
    /// randomly initialised from libtorch's generator under its lock
    /// ([`crate::rng::with_torch_rng`]).
    pub fn new(p: nn::Path, cfg: &CaptionerConfig) -> Result<Self, ModelError> {
        cfg.validate()?;
        crate::rng::with_torch_rng(|| {
            Ok(Self {
                encoder: Encoder::new(&p / "encoder", cfg),
                decoder: Decoder::new(&p / "decoder", cfg),
                config: cfg.clone(),
            })
        })
    }

    pub fn config(&self) -> &CaptionerConfig {
        &self.config
    }

    pub fn tokens(&self) -> TokenSpec {
        self.config.tokens
    }

    /// Backbone features `[images, n, feature_dim]` → encoder output `[images, n, d]`.
    pub fn encode(&self, features: &Tensor) -> Result<Tensor, ModelError> {
        self.encoder.forward(features)
    }

    /// Starts incremental decoding of `group` rows per image of `memory` `[images, n, d]`.
    pub fn start(&self, memory: &Tensor, group: i64) -> Result<DecoderCache, ModelError> {
        self.decoder.start(memory, group)
    }

    /// One decoding call: ids `[rows, t]` → logits `[rows, t, vocab]` (see
    /// [`Decoder::forward`]).
    pub fn step(&self, ids: &Tensor, cache: &mut DecoderCache) -> Result<Tensor, ModelError> {
        self.decoder.forward(ids, cache)
    }

    /// Rows per image of a batch of `rows` sequences for `memory` `[images, n, d]`.
    fn group_of(memory: &Tensor, rows: i64) -> Result<i64, ModelError> {
        let images = memory.size().first().copied().unwrap_or(0);
        if images < 1 || rows < images || rows % images != 0 {
            return Err(ModelError::BadInput {
                what: "captioner",
                expected: format!("a multiple of the {images} images' rows"),
                found: vec![rows],
                kind: "rows".to_owned(),
            });
        }
        Ok(rows / images)
    }

    /// Teacher-forced logits of full input sequences `[rows, t]` (rows = images × group,
    /// the `group` rows of an image consecutive) → `[rows, t, vocab]` (float32).
    pub fn logits(&self, memory: &Tensor, input_ids: &Tensor) -> Result<Tensor, ModelError> {
        let rows = input_ids.size().first().copied().unwrap_or(0);
        let group = Self::group_of(memory, rows)?;
        let mut cache = self.start(memory, group)?;
        self.step(input_ids, &mut cache)
    }

    /// Teacher-forcing inputs and targets of target sequences `tokens` `[rows, L]`
    /// (no BOS, EOS included where present, padded with pad): inputs are
    /// `[BOS, tokens[:, :-1]]` with pad replaced by EOS (positions whose loss is masked
    /// anyway, so no pad embedding is needed), and the mask keeps targets up to and
    /// including the first EOS and drops pad. Returns `(inputs [rows, L], mask [rows, L])`.
    pub fn teacher_forcing_inputs(&self, tokens: &Tensor) -> Result<(Tensor, Tensor), ModelError> {
        let t = self.config.tokens;
        let size = tokens.size();
        if size.len() != 2 || size[1] < 1 || size[1] > self.config.max_len {
            return Err(ModelError::BadInput {
                what: "captioner teacher forcing",
                expected: format!("target ids [rows, 1..={}]", self.config.max_len),
                found: size,
                kind: format!("{:?}", tokens.kind()),
            });
        }
        let tokens = tokens
            .f_to_kind(Kind::Int64)?
            .f_to_device(self.decoder.wte.device())?;
        let (rows, len) = (size[0], size[1]);
        if tokens.numel() > 0 {
            let min = tokens.f_min()?.f_int64_value(&[])?;
            let max = tokens.f_max()?.f_int64_value(&[])?;
            if min < 0 || max >= t.vocab_size {
                return Err(ModelError::BadInput {
                    what: "captioner teacher forcing",
                    expected: format!("target ids in 0..{} (found {min}..={max})", t.vocab_size),
                    found: size,
                    kind: "ids".to_owned(),
                });
            }
        }
        let bos = Tensor::f_full([rows, 1], t.bos, (Kind::Int64, tokens.device()))?;
        let shifted = tokens.f_narrow(1, 0, len - 1)?;
        let shifted = shifted.f_masked_fill(&shifted.f_eq(t.pad)?, t.eos)?;
        let inputs = Tensor::f_cat(&[bos, shifted], 1)?; // [rows, L]
        let is_eos = tokens.f_eq(t.eos)?.f_to_kind(Kind::Int64)?;
        // EOS strictly before this position → position is after the caption.
        let eos_before = is_eos.f_cumsum(1, Kind::Int64)?.f_sub(&is_eos)?.f_gt(0)?;
        let mask = tokens
            .f_ne(t.pad)?
            .f_logical_and(&eos_before.f_logical_not()?)?; // [rows, L] bool
        Ok((inputs, mask))
    }

    /// Sequence log-probabilities by teacher forcing: for target sequences `tokens`
    /// `[rows, L]` (no BOS, EOS included, padded with pad; rows = images × group),
    /// `log π(c) = Σ_t log softmax(logits_t)[c_t]` over targets up to the first EOS
    /// (included), pad excluded. Returns `[rows]` float32; differentiable unless called
    /// under `tch::no_grad` (frozen reference model).
    pub fn sequence_logprobs(
        &self,
        memory: &Tensor,
        tokens: &Tensor,
    ) -> Result<Tensor, ModelError> {
        Ok(self.token_logprobs(memory, tokens)?.f_sum_dim_intlist(
            [1i64].as_slice(),
            false,
            Kind::Float,
        )?)
    }

    /// Per-token log-probabilities of `tokens` `[rows, L]` by teacher forcing, 0 at
    /// masked positions: `[rows, L]` float32.
    pub fn token_logprobs(&self, memory: &Tensor, tokens: &Tensor) -> Result<Tensor, ModelError> {
        let (inputs, mask) = self.teacher_forcing_inputs(tokens)?;
        let logits = self.logits(memory, &inputs)?; // [rows, L, vocab]
        let logp = logits.f_log_softmax(-1, Kind::Float)?;
        let targets = tokens.f_to_kind(Kind::Int64)?.f_to_device(logp.device())?;
        // Pad targets index the pad row; they are masked below.
        let picked = logp
            .f_gather(2, &targets.f_unsqueeze(2)?, false)?
            .f_squeeze_dim(2)?; // [rows, L]
        Ok(picked.f_mul(&mask.f_to_kind(Kind::Float)?)?)
    }
}
