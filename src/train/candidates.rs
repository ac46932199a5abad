//! Candidate captions for a batch of images — k beams (DiCO) or k samples
//! (SCST) from a captioner, or k candidates read back from a reward cache — as
//! the padded target tensor the log-prob computations take, plus the numbers
//! every step logs (candidate length, share ending with EOS).

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, TchError, Tensor};

use crate::model::captioner::Captioner;
use crate::model::decode::{beam_search, sample, BeamOptions, SampleOptions};
use crate::model::ModelError;

/// How candidates are drawn from the captioner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Decoding {
    /// k beams, all returned, best first (DiCO).
    #[default]
    Beam,
    /// k multinomial samples at `temperature` (SCST).
    Sample { temperature: f64 },
}

/// k candidates for each of b images.
#[derive(Debug)]
pub struct Candidates {
    /// `[b·k, L]` i64 target ids (no BOS, EOS included, pad after), image-major.
    pub tokens: Tensor,
    /// The same ids per candidate without padding.
    pub ids: Vec<Vec<i64>>,
    pub images: i64,
    pub per_image: i64,
    eos: i64,
}

impl Candidates {
    /// Draw `k` candidates per image from `policy` given its encoder output
    /// `memory` `[b, n, d]` (no gradient flows through generation). `seed`
    /// drives sampling.
    pub fn generate(
        policy: &Captioner,
        memory: &Tensor,
        k: i64,
        decoding: Decoding,
        seed: u64,
    ) -> Result<Self, ModelError> {
        let memory = memory.f_detach()?;
        let decoded = match decoding {
            Decoding::Beam => beam_search(
                policy,
                &memory,
                &BeamOptions {
                    beams: k,
                    ..Default::default()
                },
            )?,
            Decoding::Sample { temperature } => sample(
                policy,
                &memory,
                &SampleOptions {
                    samples: k,
                    temperature,
                    max_len: None,
                    seed,
                },
            )?,
        };
        let b = decoded.tokens.size()[0];
        let pad = policy.tokens().pad;
        let mut ids = Vec::with_capacity((b * k) as usize);
        for i in 0..b {
            for j in 0..k {
                ids.push(decoded.sequence(i, j, pad)?);
            }
        }
        let len = decoded.tokens.size()[2];
        Ok(Self {
            tokens: decoded.tokens.f_view([b * k, len])?,
            ids,
            images: b,
            per_image: k,
            eos: policy.tokens().eos,
        })
    }

    /// Candidates given as ids (e.g. from a reward cache): `ids` holds
    /// `images × per_image` sequences, image-major.
    ///
    /// Errors: [`TchError`] when the tensor cannot be made on `device`.
    pub fn from_ids(
        ids: Vec<Vec<i64>>,
        per_image: i64,
        pad: i64,
        eos: i64,
        device: Device,
    ) -> Result<Self, TchError> {
        let rows = ids.len() as i64;
        Ok(Self {
            tokens: padded(&ids, pad, device)?,
            images: rows / per_image.max(1),
            per_image,
            ids,
            eos,
        })
    }

    /// Mean candidate length in tokens (EOS included).
    pub fn mean_length(&self) -> f64 {
        if self.ids.is_empty() {
            return 0.0;
        }
        self.ids.iter().map(Vec::len).sum::<usize>() as f64 / self.ids.len() as f64
    }

    /// Share of candidates that end with EOS (the rest hit the length limit).
    pub fn eos_share(&self) -> f64 {
        if self.ids.is_empty() {
            return 0.0;
        }
        let ended = self
            .ids
            .iter()
            .filter(|s| s.last() == Some(&self.eos))
            .count();
        ended as f64 / self.ids.len() as f64
    }

    /// Summed log-probs of every candidate under `model` given `memory`
    /// `[b, n, d]`: `[b, k]` float32 (differentiable unless under no_grad).
    pub fn logprobs(&self, model: &Captioner, memory: &Tensor) -> Result<Tensor, ModelError> {
        Ok(model
            .sequence_logprobs(memory, &self.tokens)?
            .f_view([self.images, self.per_image])?)
    }

    /// `[b, k]` float32 tensor of per-candidate values (rewards) on `device`.
    ///
    /// Errors: [`TchError`] when `values` does not hold b·k values.
    pub fn per_candidate(&self, values: &[f32], device: Device) -> Result<Tensor, TchError> {
        Tensor::f_from_slice(values)?
            .f_to_kind(Kind::Float)?
            .f_view([self.images, self.per_image])?
            .f_to_device(device)
    }
}

/// Id sequences as one `[rows, L]` i64 tensor on `device`, right-padded with
/// `pad` to the longest (at least 1).
///
/// Errors: [`TchError`] when the tensor cannot be made on `device`.
pub fn padded(seqs: &[Vec<i64>], pad: i64, device: Device) -> Result<Tensor, TchError> {
    let len = seqs.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let mut flat = vec![pad; seqs.len() * len];
    for (row, s) in flat.chunks_mut(len).zip(seqs) {
        row[..s.len()].copy_from_slice(s);
    }
    Tensor::f_from_slice(&flat)?
        .f_view([seqs.len() as i64, len as i64])?
        .f_to_device(device)
}
