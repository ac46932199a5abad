//! The DiCO objective (Moratelli et al., BMVC 2024), exactly as design.md:
//!
//! per image, with candidates c_1..c_k, rewards r_i, policy and frozen
//! reference sequence log-probs (sums over target tokens, EOS included):
//! - winner w = argmax_i r_i (the first one on ties);
//! - losers j ≠ w weighted γ_j = softmax_j(τ · (r_w − r_j));
//! - Δ = [log π(c_w) − Σ_j γ_j log π(c_j)] − [log π_ref(c_w) − Σ_j γ_j log π_ref(c_j)];
//! - loss = −log σ(β · Δ), mean over images.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::train::error::TrainError;

/// Default β (the paper's).
pub const DEFAULT_BETA: f64 = 0.2;
/// Default τ (the paper's).
pub const DEFAULT_TAU: f64 = 300.0;

/// DiCO hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DicoConfig {
    /// Strength of the implicit KL constraint (default `DEFAULT_BETA`).
    pub beta: f64,
    /// Sharpness of the loser weights (default `DEFAULT_TAU`).
    pub tau: f64,
}

impl Default for DicoConfig {
    fn default() -> Self {
        Self {
            beta: DEFAULT_BETA,
            tau: DEFAULT_TAU,
        }
    }
}

/// What a TRL user expects to see per step (means over images unless said).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct DicoStats {
    pub loss: f64,
    /// β (log π − log π_ref) of the winner.
    pub reward_chosen: f64,
    /// γ-weighted β (log π − log π_ref) of the losers.
    pub reward_rejected: f64,
    /// chosen − rejected (= β Δ).
    pub reward_margin: f64,
    /// Share of images with margin > 0.
    pub accuracy: f64,
    /// Mean and max evaluator reward over all candidates.
    pub evaluator_reward_mean: f64,
    pub evaluator_reward_max: f64,
    /// Mean evaluator reward of the winners.
    pub evaluator_reward_winner: f64,
    /// Mean of log π(c) − log π_ref(c) over candidates: a sample estimate of
    /// KL(π ‖ π_ref) on the candidates the policy produced.
    pub kl_estimate: f64,
}

impl DicoStats {
    /// The per-step log entries, named as TRL names them.
    pub fn metrics(&self) -> impl Iterator<Item = (String, f64)> {
        [
            ("rewards/chosen", self.reward_chosen),
            ("rewards/rejected", self.reward_rejected),
            ("rewards/margins", self.reward_margin),
            ("rewards/accuracies", self.accuracy),
            ("evaluator/mean", self.evaluator_reward_mean),
            ("evaluator/max", self.evaluator_reward_max),
            ("evaluator/winner", self.evaluator_reward_winner),
            ("kl", self.kl_estimate),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
    }
}

/// The loss (a scalar with grad through `policy_logps`) and its statistics.
#[derive(Debug)]
pub struct DicoOutput {
    pub loss: Tensor,
    pub stats: DicoStats,
    /// Winner index per image, `[batch]` i64.
    pub winners: Tensor,
    /// Loser weights γ per image (0 at the winner), `[batch, k]`.
    pub weights: Tensor,
}

fn check(t: &Tensor, name: &'static str, shape: &[i64]) -> Result<(), TrainError> {
    if t.size() != shape {
        return Err(TrainError::Shape {
            what: "dico_loss",
            detail: format!("{name} has shape {:?}, expected {shape:?}", t.size()),
        });
    }
    Ok(())
}

/// The DiCO loss for a batch: all inputs `[batch, k]`, k ≥ 2.
/// `ref_logps` and `rewards` are treated as constants (no grad flows into them).
pub fn dico_loss(
    policy_logps: &Tensor,
    ref_logps: &Tensor,
    rewards: &Tensor,
    cfg: &DicoConfig,
) -> Result<DicoOutput, TrainError> {
    let shape = policy_logps.size();
    if shape.len() != 2 || shape[1] < 2 || shape[0] < 1 {
        return Err(TrainError::Shape {
            what: "dico_loss",
            detail: format!("policy log-probs must be [batch >= 1, k >= 2], got {shape:?}"),
        });
    }
    check(ref_logps, "reference log-probs", &shape)?;
    check(rewards, "rewards", &shape)?;
    let valid = cfg.beta.is_finite() && cfg.beta > 0.0 && cfg.tau.is_finite() && cfg.tau >= 0.0;
    if !valid {
        return Err(TrainError::Setting {
            name: "beta/tau",
            value: format!("{}/{}", cfg.beta, cfg.tau),
            reason: "beta must be > 0 and tau >= 0",
        });
    }
    let kind = policy_logps.kind();
    let rewards = rewards.f_detach()?.f_to_kind(Kind::Double)?;
    let reference = ref_logps.f_detach()?.f_to_kind(kind)?;

    // [batch, 1]: argmax returns the first maximum, so ties pick the lowest index.
    let winners = rewards.f_argmax(1, true)?;
    let r_w = rewards.f_gather(1, &winners, false)?;
    // γ over losers: softmax of τ (r_w − r_j) with the winner masked out. In f64:
    // τ = 300 times reward gaps saturates f32 exponentials' useful range.
    let is_winner = Tensor::f_zeros_like(&rewards)?
        .f_scatter_value(1, &winners, 1.0)?
        .f_to_kind(Kind::Bool)?;
    let logits = r_w
        .f_sub(&rewards)?
        .f_mul_scalar(cfg.tau)?
        .f_masked_fill(&is_winner, f64::NEG_INFINITY)?;
    let gamma = logits.f_softmax(1, Kind::Double)?.f_to_kind(kind)?;

    let margin_of = |logps: &Tensor| -> Result<Tensor, TrainError> {
        // [batch]
        let w = logps.f_gather(1, &winners, false)?.f_squeeze_dim(1)?;
        let l = gamma.f_mul(logps)?.f_sum_dim_intlist(1, false, kind)?;
        Ok(w.f_sub(&l)?)
    };
    let delta = margin_of(policy_logps)?.f_sub(&margin_of(&reference)?)?;
    let scaled = delta.f_mul_scalar(cfg.beta)?;
    let loss = scaled.f_log_sigmoid()?.f_mean(kind)?.f_neg()?;

    // Statistics, without grad.
    let stats = tch::no_grad(|| -> Result<DicoStats, TrainError> {
        let log_ratio = policy_logps.f_detach()?.f_sub(&reference)?; // [batch, k]
        let chosen = log_ratio
            .f_gather(1, &winners, false)?
            .f_squeeze_dim(1)?
            .f_mul_scalar(cfg.beta)?;
        let rejected = gamma
            .f_mul(&log_ratio)?
            .f_sum_dim_intlist(1, false, kind)?
            .f_mul_scalar(cfg.beta)?;
        let margin = chosen.f_sub(&rejected)?;
        let mean = |t: &Tensor| -> Result<f64, TrainError> {
            Ok(t.f_mean(Kind::Double)?.f_double_value(&[])?)
        };
        Ok(DicoStats {
            loss: loss.f_double_value(&[])?,
            reward_chosen: mean(&chosen)?,
            reward_rejected: mean(&rejected)?,
            reward_margin: mean(&margin)?,
            accuracy: mean(&margin.f_gt(0.0)?.f_to_kind(Kind::Double)?)?,
            evaluator_reward_mean: mean(&rewards)?,
            evaluator_reward_max: rewards.f_max()?.f_double_value(&[])?,
            evaluator_reward_winner: mean(&r_w)?,
            kl_estimate: mean(&log_ratio)?,
        })
    })?;
    Ok(DicoOutput {
        loss,
        stats,
        winners: winners.f_squeeze_dim(1)?,
        weights: gamma,
    })
}
