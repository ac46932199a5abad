//! Offline DiCO's candidates: a DiCO step whose candidates, evaluator
//! rewards and reference log-probs come from a reward cache
//! ([`crate::reward::RewardCache`]) instead of being generated and scored
//! online. Only the policy's log-probs (with gradient) are computed, so
//! neither the evaluator nor the reference model is in memory. The loss is
//! the same [`crate::train::dico_loss`]; with the cache made from the policy's
//! starting weights, the first offline step equals the first online step.
//! The step itself is `train::objective::OfflineDicoObjective`'s.

use tch::Device;

use crate::model::captioner::TokenSpec;
use crate::reward::CacheEntry;
use crate::train::candidates::Candidates;
use crate::train::error::TrainError;

/// The cached candidates of b images as `Candidates`, with their rewards
/// and reference log-probs (b·k values each, image-major): `entries[i]` are
/// image i's cache entries by rank, exactly `k` per image, with token ids of
/// the captioner `tokens` describes.
///
/// Errors: [`TrainError::Shape`] when an image has another number of
/// candidates than `k` or a token id is outside the vocabulary (a cache made
/// for another captioner); [`TrainError::Torch`] when the tensor cannot be
/// made on `device`.
pub fn cached_candidates(
    entries: &[&[CacheEntry]],
    k: i64,
    tokens: TokenSpec,
    device: Device,
) -> Result<(Candidates, Vec<f32>, Vec<f32>), TrainError> {
    let vocab = tokens.vocab_size;
    for image in entries {
        if image.len() as i64 != k {
            return Err(TrainError::Shape {
                what: "offline DiCO step",
                detail: format!(
                    "image `{}` has {} cached candidates, the config asks for {k}",
                    image.first().map_or("?", |e| e.key.as_str()),
                    image.len()
                ),
            });
        }
        if let Some(bad) = image
            .iter()
            .flat_map(|e| &e.tokens)
            .find(|&&t| t < 0 || t as i64 >= vocab)
        {
            return Err(TrainError::Shape {
                what: "offline DiCO step",
                detail: format!(
                    "cached token id {bad} is outside the captioner's vocabulary of \
                     {vocab}: the cache was made for another captioner"
                ),
            });
        }
    }
    let flat: Vec<&CacheEntry> = entries.iter().flat_map(|c| c.iter()).collect();
    let candidates = Candidates::from_ids(
        flat.iter()
            .map(|e| e.tokens.iter().map(|&t| t as i64).collect())
            .collect(),
        k,
        tokens.pad,
        tokens.eos,
        device,
    )?;
    let rewards = flat.iter().map(|e| e.reward).collect();
    let ref_logprobs = flat.iter().map(|e| e.ref_logprob).collect();
    Ok((candidates, rewards, ref_logprobs))
}
