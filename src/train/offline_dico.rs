//! Offline DiCO: a DiCO step whose candidates, evaluator rewards and
//! reference log-probs come from a reward cache instead of being generated
//! and scored online. Only the policy's log-probs (with gradient) are computed,
//! so neither the evaluator nor the reference model is in memory. The loss is
//! the same [`dico_loss`]; with the cache made from the policy's starting
//! weights, the first offline step equals the first online step.

use tch::Tensor;

use crate::reward::CacheEntry;
use crate::train::candidates::Candidates;
use crate::train::captioning::{CaptionTrainer, StepStats};
use crate::train::dico::dico_loss;
use crate::train::error::TrainError;

impl CaptionTrainer {
    /// One offline DiCO step on images `pixels` `[b, 3, H, W]`;
    /// `candidates[i]` are image i's cached candidates, by rank (exactly
    /// `candidates` of the training config per image).
    pub fn offline_step(
        &mut self,
        pixels: &Tensor,
        candidates: &[&[CacheEntry]],
    ) -> Result<StepStats, TrainError> {
        let features = self.config().precision.autocast(|| self.features(pixels))?;
        self.offline_step_on_features(&features, candidates)
    }

    /// [`Self::offline_step`] on the backbone's `features` `[b, tokens, width]`
    /// of the images ([`CaptionTrainer::features`], under the step's precision).
    pub fn offline_step_on_features(
        &mut self,
        features: &Tensor,
        candidates: &[&[CacheEntry]],
    ) -> Result<StepStats, TrainError> {
        let b = features.size().first().copied().unwrap_or(0);
        let k = self.config().candidates;
        if candidates.len() as i64 != b {
            return Err(TrainError::Shape {
                what: "offline DiCO step",
                detail: format!("{b} images, {} candidate lists", candidates.len()),
            });
        }
        let vocab = self.policy.tokens().vocab_size;
        for entries in candidates {
            if entries.len() as i64 != k {
                return Err(TrainError::Shape {
                    what: "offline DiCO step",
                    detail: format!(
                        "image `{}` has {} cached candidates, the config asks for {k}",
                        entries.first().map_or("?", |e| e.key.as_str()),
                        entries.len()
                    ),
                });
            }
            if let Some(bad) = entries
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
        let device = self.vs.device();
        let tokens = self.policy.tokens();
        let flat: Vec<&CacheEntry> = candidates.iter().flat_map(|c| c.iter()).collect();
        let cands = Candidates::from_ids(
            flat.iter()
                .map(|e| e.tokens.iter().map(|&t| t as i64).collect())
                .collect(),
            k,
            tokens.pad,
            tokens.eos,
            device,
        );
        let rewards: Vec<f32> = flat.iter().map(|e| e.reward).collect();
        let ref_lp: Vec<f32> = flat.iter().map(|e| e.ref_logprob).collect();
        let precision = self.config().precision;
        let (loss, mut stats) = precision.autocast(|| -> Result<_, TrainError> {
            let memory = self.policy.encode(features)?;
            let policy_lp = cands.logprobs(&self.policy, &memory)?;
            let out = dico_loss(
                &policy_lp,
                &cands.per_candidate(&ref_lp, device),
                &cands.per_candidate(&rewards, device),
                &self.config().dico,
            )?;
            let stats = StepStats {
                candidate_length: cands.mean_length(),
                eos_share: cands.eos_share(),
                extra: out.stats.metrics().collect(),
                ..Default::default()
            };
            Ok((out.loss, stats))
        })?;
        self.apply(&loss, b as f64, &mut stats)?; // mean over images
        Ok(stats)
    }
}
