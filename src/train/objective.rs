//! The captioner's training objectives, each carrying what it needs:
//!
//! | objective | carries | loss |
//! |---|---|---|
//! | [`XeObjective`] | label smoothing ε | [`crate::train::xe_loss`] on one drawn reference per image |
//! | [`DicoObjective`] | frozen reference, reward, β/τ, k | k beams, [`crate::train::dico_loss`] |
//! | [`ScstObjective`] | reward, k, temperature | k samples, [`crate::train::scst::scst_loss`] |
//! | [`OfflineDicoObjective`] | reward cache, β/τ, k | cached candidates, [`crate::train::dico_loss`] |
//!
//! They share one step interface, [`TrainObjective::loss`]: a micro-batch
//! ([`MicroBatch`]) and the [`Policy`] in, the loss, its normalizer count and
//! statistics out; the trainer ([`crate::train::captioning::CaptionTrainer`])
//! does the backward and the update. An enum of structs rather than a trait
//! object: the set is closed and named by the settings users write
//! ([`Objective`]), the trainer and its stage ask the objective for its
//! reward or its cache (which a `dyn` would have to expose through optional
//! methods anyway), and a match dispatches with no allocation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Kind, Tensor};

use crate::model::captioner::Captioner;
use crate::reward::{Reward, RewardCache};
use crate::rng::Rng;
use crate::train::candidates::{Candidates, Decoding};
use crate::train::dico::{dico_loss, DicoConfig};
use crate::train::error::TrainError;
use crate::train::offline_dico::cached_candidates;
use crate::train::policy::Policy;
use crate::train::scst::scst_loss;
use crate::train::xe::xe_loss;

/// Which objective a captioner optimises: the `train.objective` setting
/// (`"xe"`, `"dico"`, `"scst"`, `"dico_offline"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    Xe,
    Dico,
    Scst,
    #[serde(rename = "dico_offline")]
    DicoOffline,
}

/// The objectives' settings (from [`crate::train::captioning::CaptionTrainConfig`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ObjectiveSettings {
    /// XE label smoothing ε in [0, 1].
    pub label_smoothing: f64,
    /// DiCO's β and τ (online and offline).
    pub dico: DicoConfig,
    /// Candidates per image (beams for DiCO, samples for SCST, cached for
    /// offline DiCO).
    pub candidates: i64,
    /// SCST's sampling temperature.
    pub temperature: f64,
}

/// One micro-batch as an objective sees it; every slice and the first
/// dimension of both tensors hold the same b images.
#[derive(Debug, Clone, Copy)]
pub struct MicroBatch<'a> {
    /// The images' keys (the evaluator caches image embeddings by key; the
    /// reward cache is looked up by key).
    pub keys: &'a [String],
    /// Images `[b, 3, H, W]` (a CLIP reward encodes them with its own tower).
    pub pixels: &'a Tensor,
    /// The frozen backbone's features `[b, tokens, width]` of `pixels`
    /// ([`Policy::features`], under the step's precision).
    pub features: &'a Tensor,
    /// Reference captions per image (XE draws one; CIDEr-D scores against them).
    pub references: &'a [Vec<String>],
}

/// Per-step numbers (the objective's own stats are in `extra`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    /// Mean candidate length in tokens (EOS included) — DiCO/SCST.
    pub candidate_length: f64,
    /// Share of candidates that ended with EOS — DiCO/SCST.
    pub eos_share: f64,
    /// Objective-specific values by name (DiCO: rewards/chosen, margins, ...);
    /// `train/loss_scale` in fp16.
    pub extra: BTreeMap<String, f64>,
    /// This micro-batch completed an accumulation cycle (the step count
    /// advanced); `grad_norm` is meaningful only then.
    pub optimizer_step: bool,
    /// The cycle's fp16 gradients were not finite: no update was made.
    pub skipped_step: bool,
}

/// A micro-batch's loss (a scalar with grad), its normalizer units (XE:
/// target tokens; otherwise images, see [`crate::train::step`]) and its
/// statistics.
pub type Loss = (Tensor, f64, StepStats);

/// Cross-entropy with teacher forcing on one reference per image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct XeObjective {
    /// ε in [0, 1] (PyTorch's `label_smoothing`).
    pub label_smoothing: f64,
}

impl XeObjective {
    /// Draws one reference per image from `rng` (one `choose` per image, in
    /// order) and returns the mean token loss over the kept target tokens.
    fn loss(&self, policy: &Policy, rng: &mut Rng, b: &MicroBatch) -> Result<Loss, TrainError> {
        if b.references.iter().any(Vec::is_empty) {
            return Err(TrainError::Shape {
                what: "xe step",
                detail: "every image needs at least one reference caption".into(),
            });
        }
        let chosen: Vec<String> = b.references.iter().map(|r| rng.choose(r).clone()).collect();
        let model = &policy.captioner;
        let memory = model.encode(b.features)?;
        let tokens = policy.targets(&chosen)?;
        let (inputs, mask) = model.teacher_forcing_inputs(&tokens)?;
        let logits = model.logits(&memory, &inputs)?; // [b, L, V]
        let loss = xe_loss(&logits, &tokens, &mask, self.label_smoothing)?;
        // The loss's normalizer: kept target tokens (EOS included, pad not).
        let count = mask.f_sum(Kind::Int64)?.f_int64_value(&[])? as f64;
        Ok((loss, count, StepStats::default()))
    }
}

/// Online DiCO: k beams from the policy, scored by the reward, against the
/// frozen reference (the XE checkpoint).
pub struct DicoObjective {
    /// The frozen reference's weights (kept alive with the model) and model.
    reference: (VarStore, Captioner),
    reward: Reward,
    dico: DicoConfig,
    /// Beams per image (k ≥ 2).
    candidates: i64,
}

impl DicoObjective {
    fn loss(&mut self, policy: &Policy, rng: &mut Rng, b: &MicroBatch) -> Result<Loss, TrainError> {
        let scored = Scored::new(
            policy,
            &mut self.reward,
            rng,
            b,
            self.candidates,
            Decoding::Beam,
        )?;
        let reference = &self.reference.1;
        // The policy's backbone features: the backbone is frozen and shared,
        // so the reference sees the same values.
        let ref_lp = tch::no_grad(|| -> Result<Tensor, TrainError> {
            let mem = reference.encode(b.features)?;
            Ok(scored.candidates.logprobs(reference, &mem)?)
        })?;
        let out = dico_loss(&scored.policy_lp, &ref_lp, &scored.rewards, &self.dico)?;
        let stats = scored.stats(out.stats.metrics().collect());
        // DiCO averages over images.
        Ok((out.loss, b.keys.len() as f64, stats))
    }
}

/// SCST: k samples from the policy, baseline = mean reward of the others.
pub struct ScstObjective {
    reward: Reward,
    /// Samples per image (k ≥ 2).
    candidates: i64,
    /// Sampling temperature.
    temperature: f64,
}

impl ScstObjective {
    fn loss(&mut self, policy: &Policy, rng: &mut Rng, b: &MicroBatch) -> Result<Loss, TrainError> {
        let decoding = Decoding::Sample {
            temperature: self.temperature,
        };
        let scored = Scored::new(policy, &mut self.reward, rng, b, self.candidates, decoding)?;
        let (loss, adv_std) = scst_loss(&scored.policy_lp, &scored.rewards)?;
        let rewards = &scored.rewards;
        let mut extra = BTreeMap::new();
        extra.insert(
            "evaluator/mean".into(),
            rewards.f_mean(Kind::Double)?.f_double_value(&[])?,
        );
        extra.insert(
            "evaluator/max".into(),
            rewards.f_max()?.f_double_value(&[])?,
        );
        extra.insert("advantage/std".into(), adv_std);
        // SCST averages over images.
        Ok((loss, b.keys.len() as f64, scored.stats(extra)))
    }
}

/// DiCO from a reward cache: candidates, rewards and reference log-probs are
/// read, not computed ([`crate::train::offline_dico`]).
pub struct OfflineDicoObjective {
    cache: RewardCache,
    dico: DicoConfig,
    /// Cached candidates per image (k ≥ 2).
    candidates: i64,
}

impl OfflineDicoObjective {
    /// The cache the candidates are read from.
    pub fn cache(&self) -> &RewardCache {
        &self.cache
    }

    fn loss(&self, policy: &Policy, b: &MicroBatch) -> Result<Loss, TrainError> {
        let entries = b
            .keys
            .iter()
            .map(|key| {
                self.cache.get(key).ok_or_else(|| TrainError::Shape {
                    what: "offline DiCO step",
                    detail: format!("image `{key}` is not in the reward cache"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let device = policy.device();
        let (cands, rewards, ref_lp) =
            cached_candidates(&entries, self.candidates, policy.captioner.tokens(), device)?;
        let memory = policy.captioner.encode(b.features)?;
        let policy_lp = cands.logprobs(&policy.captioner, &memory)?;
        let out = dico_loss(
            &policy_lp,
            &cands.per_candidate(&ref_lp, device)?,
            &cands.per_candidate(&rewards, device)?,
            &self.dico,
        )?;
        let stats = StepStats {
            candidate_length: cands.mean_length(),
            eos_share: cands.eos_share(),
            extra: out.stats.metrics().collect(),
            ..Default::default()
        };
        // Mean over images.
        Ok((out.loss, b.keys.len() as f64, stats))
    }
}

/// The candidates of an online step, their rewards `[b, k]` and the policy's
/// log-probs `[b, k]` (with grad).
struct Scored {
    candidates: Candidates,
    rewards: Tensor,
    policy_lp: Tensor,
}

impl Scored {
    /// Encodes the features, draws one seed from `rng`, generates `k`
    /// candidates per image, scores them with `reward` and recomputes their
    /// log-probs under the policy.
    fn new(
        policy: &Policy,
        reward: &mut Reward,
        rng: &mut Rng,
        b: &MicroBatch,
        k: i64,
        decoding: Decoding,
    ) -> Result<Self, TrainError> {
        let model = &policy.captioner;
        let memory = model.encode(b.features)?;
        let seed = rng.next_u64();
        let candidates = Candidates::generate(model, &memory, k, decoding, seed)?;
        let captions: Vec<String> = candidates
            .ids
            .iter()
            .map(|ids| policy.text.decode(ids))
            .collect();
        let rewards = reward.score(b.keys, b.pixels, &captions, b.references)?;
        let rewards = candidates.per_candidate(&rewards, policy.device())?;
        let policy_lp = candidates.logprobs(model, &memory)?;
        Ok(Self {
            candidates,
            rewards,
            policy_lp,
        })
    }

    /// The step's statistics with the objective's `extra`.
    fn stats(&self, extra: BTreeMap<String, f64>) -> StepStats {
        StepStats {
            candidate_length: self.candidates.mean_length(),
            eos_share: self.candidates.eos_share(),
            extra,
            ..Default::default()
        }
    }
}

/// The objective a [`crate::train::captioning::CaptionTrainer`] optimises,
/// with what it needs.
pub enum TrainObjective {
    Xe(XeObjective),
    /// Boxed: the reference captioner and the reward make it several times
    /// the size of the other variants.
    Dico(Box<DicoObjective>),
    Scst(ScstObjective),
    DicoOffline(OfflineDicoObjective),
}

impl std::fmt::Debug for TrainObjective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.kind() {
            Objective::Xe => "Xe",
            Objective::Dico => "Dico",
            Objective::Scst => "Scst",
            Objective::DicoOffline => "DicoOffline",
        })
    }
}

/// What the objectives may need besides the policy, given to
/// [`TrainObjective::try_new`] (and [`crate::train::captioning::CaptionTrainer::try_new`]).
#[derive(Default)]
pub struct ObjectiveInputs {
    /// The reward scoring DiCO's and SCST's candidates.
    pub reward: Option<Reward>,
    /// The reward cache offline DiCO reads its candidates from.
    pub reward_cache: Option<RewardCache>,
}

impl TrainObjective {
    /// The objective `kind` with what it needs from `inputs`; `has_init`:
    /// the policy starts from a checkpoint; `reference`: online DiCO's frozen
    /// reference (the XE checkpoint) with its weights. The checks run in this order
    /// (their messages name the setting to change): a reward for DiCO and
    /// SCST, the XE checkpoint for offline DiCO, then for online DiCO, at
    /// least 2 candidates for all but XE, then the reward cache of offline
    /// DiCO. What an objective does not use is dropped.
    ///
    /// Errors: [`TrainError::Setting`] as above.
    pub fn try_new(
        kind: Objective,
        cfg: ObjectiveSettings,
        has_init: bool,
        reference: Option<(VarStore, Captioner)>,
        inputs: ObjectiveInputs,
    ) -> Result<Self, TrainError> {
        let ObjectiveInputs {
            reward,
            reward_cache,
        } = inputs;
        let online_rl = matches!(kind, Objective::Dico | Objective::Scst);
        if online_rl && reward.is_none() {
            return Err(TrainError::Setting {
                name: "reward",
                value: format!("{kind:?}"),
                reason: "DiCO and SCST need a reward: set `evaluator` (CLIP score) or \
                         `reward = { kind = \"cider_d\", references = ... }`",
            });
        }
        if kind == Objective::DicoOffline && !has_init {
            return Err(TrainError::Setting {
                name: "init",
                value: "none".into(),
                reason:
                    "offline DiCO starts the policy from the XE checkpoint (the cache's reference)",
            });
        }
        let dico_init = || TrainError::Setting {
            name: "init",
            value: "none".into(),
            reason:
                "DiCO needs the XE checkpoint: it starts the policy and is the frozen reference",
        };
        if kind == Objective::Dico && reference.is_none() {
            return Err(dico_init());
        }
        if kind != Objective::Xe && cfg.candidates < 2 {
            return Err(TrainError::Setting {
                name: "candidates",
                value: cfg.candidates.to_string(),
                reason: "DiCO and SCST need at least 2 candidates per image",
            });
        }
        let no_reward = || TrainError::Setting {
            name: "reward",
            value: format!("{kind:?}"),
            reason: "no reward to score candidates with",
        };
        Ok(match kind {
            Objective::Xe => TrainObjective::Xe(XeObjective {
                label_smoothing: cfg.label_smoothing,
            }),
            Objective::Dico => TrainObjective::Dico(Box::new(DicoObjective {
                reference: reference.ok_or_else(dico_init)?,
                reward: reward.ok_or_else(no_reward)?,
                dico: cfg.dico,
                candidates: cfg.candidates,
            })),
            Objective::Scst => TrainObjective::Scst(ScstObjective {
                reward: reward.ok_or_else(no_reward)?,
                candidates: cfg.candidates,
                temperature: cfg.temperature,
            }),
            Objective::DicoOffline => TrainObjective::DicoOffline(OfflineDicoObjective {
                cache: reward_cache.ok_or(TrainError::Setting {
                    name: "reward_cache",
                    value: "none".into(),
                    reason: "objective = \"dico_offline\" reads its candidates from a reward \
                             cache: a directory made by `dicoflow cache-rewards`",
                })?,
                dico: cfg.dico,
                candidates: cfg.candidates,
            }),
        })
    }

    /// Which objective this is (the settings' name).
    pub fn kind(&self) -> Objective {
        match self {
            TrainObjective::Xe(_) => Objective::Xe,
            TrainObjective::Dico(_) => Objective::Dico,
            TrainObjective::Scst(_) => Objective::Scst,
            TrainObjective::DicoOffline(_) => Objective::DicoOffline,
        }
    }

    /// The reward scoring candidates (DiCO, SCST), if this objective has one.
    pub fn reward_mut(&mut self) -> Option<&mut Reward> {
        match self {
            TrainObjective::Dico(o) => Some(&mut o.reward),
            TrainObjective::Scst(o) => Some(&mut o.reward),
            TrainObjective::Xe(_) | TrainObjective::DicoOffline(_) => None,
        }
    }

    /// The reward cache (offline DiCO), if this objective reads one.
    pub fn reward_cache(&self) -> Option<&RewardCache> {
        match self {
            TrainObjective::DicoOffline(o) => Some(o.cache()),
            _ => None,
        }
    }

    /// The micro-batch's loss under `policy`, its normalizer count and its
    /// statistics. Draws from `rng`: XE one `choose` per image, DiCO and SCST
    /// one `next_u64`, offline DiCO nothing. Runs under the caller's autocast.
    ///
    /// Errors: [`TrainError`] from the model, the reward or the loss (shapes).
    pub fn loss(
        &mut self,
        policy: &Policy,
        rng: &mut Rng,
        batch: &MicroBatch,
    ) -> Result<Loss, TrainError> {
        match self {
            TrainObjective::Xe(o) => o.loss(policy, rng, batch),
            TrainObjective::Dico(o) => o.loss(policy, rng, batch),
            TrainObjective::Scst(o) => o.loss(policy, rng, batch),
            TrainObjective::DicoOffline(o) => o.loss(policy, batch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(candidates: i64) -> ObjectiveSettings {
        ObjectiveSettings {
            label_smoothing: 0.0,
            dico: DicoConfig::default(),
            candidates,
            temperature: 1.0,
        }
    }

    fn refused(kind: Objective, candidates: i64, has_init: bool) -> (&'static str, String) {
        match TrainObjective::try_new(
            kind,
            settings(candidates),
            has_init,
            None,
            ObjectiveInputs::default(),
        ) {
            Err(TrainError::Setting { name, reason, .. }) => (name, reason.to_owned()),
            Err(e) => panic!("{kind:?}: not a setting error: {e}"),
            Ok(o) => panic!("{kind:?}: built {o:?} without what it needs"),
        }
    }

    #[test]
    fn each_objective_is_refused_without_what_it_needs() {
        // XE needs nothing besides the policy.
        let xe = TrainObjective::try_new(
            Objective::Xe,
            settings(1),
            false,
            None,
            ObjectiveInputs::default(),
        )
        .unwrap();
        assert_eq!(xe.kind(), Objective::Xe);
        assert!(xe.reward_cache().is_none());
        // DiCO and SCST: a reward first.
        for kind in [Objective::Dico, Objective::Scst] {
            let (name, reason) = refused(kind, 5, true);
            assert_eq!(name, "reward", "{kind:?}");
            assert!(reason.contains("evaluator"), "{reason}");
        }
        // Offline DiCO: the XE checkpoint, at least 2 candidates, the cache.
        assert_eq!(refused(Objective::DicoOffline, 5, false).0, "init");
        assert_eq!(refused(Objective::DicoOffline, 1, true).0, "candidates");
        let (name, reason) = refused(Objective::DicoOffline, 5, true);
        assert_eq!(name, "reward_cache");
        assert!(reason.contains("cache-rewards"), "{reason}");
    }
}
