//! Self-critical sequence training (SCST) with the "mean of the others"
//! baseline: k sampled captions per image, advantage a_i = r_i − mean_{j≠i} r_j,
//! loss = −mean_i a_i · log π(c_i). The conventional method DiCO replaces.

use tch::{Kind, Tensor};

use crate::train::error::TrainError;

/// Per-candidate advantages `[batch, k]` (k ≥ 2); each row sums to zero.
pub fn scst_advantages(rewards: &Tensor) -> Result<Tensor, TrainError> {
    let shape = rewards.size();
    if shape.len() != 2 || shape[1] < 2 {
        return Err(TrainError::Shape {
            what: "scst_advantages",
            detail: format!("rewards must be [batch, k >= 2], got {shape:?}"),
        });
    }
    let k = shape[1] as f64;
    let total = rewards.f_sum_dim_intlist(1, true, rewards.kind())?;
    let others = total.f_sub(rewards)?.f_div_scalar(k - 1.0)?;
    Ok(rewards.f_sub(&others)?)
}

/// The SCST loss (scalar, grad through `logps`) and the advantages' std.
pub fn scst_loss(logps: &Tensor, rewards: &Tensor) -> Result<(Tensor, f64), TrainError> {
    if logps.size() != rewards.size() {
        return Err(TrainError::Shape {
            what: "scst_loss",
            detail: format!(
                "log-probs {:?} and rewards {:?} differ",
                logps.size(),
                rewards.size()
            ),
        });
    }
    let adv = scst_advantages(&rewards.f_detach()?)?.f_to_kind(logps.kind())?;
    let loss = adv.f_mul(logps)?.f_mean(logps.kind())?.f_neg()?;
    let std = adv
        .f_to_kind(Kind::Double)?
        .f_std(false)?
        .f_double_value(&[])?;
    Ok((loss, std))
}
