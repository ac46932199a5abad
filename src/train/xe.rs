//! Teacher-forced cross-entropy with optional label smoothing, as PyTorch's
//! `cross_entropy(logits, targets, ignore_index = pad, label_smoothing = ε)`:
//! per kept token, `(1 − ε) · (−log p[target]) + ε · mean over all classes of
//! (−log p)`, averaged over the kept tokens (positions outside `mask` — pad,
//! and anything after EOS — contribute nothing). "All classes" is every
//! output of the model, the pad id included, as in PyTorch.

use tch::{Kind, Tensor};

use crate::train::error::TrainError;

/// Mean token loss of `logits` `[rows, L, classes]` against `targets`
/// `[rows, L]` (class ids) at the positions where `mask` `[rows, L]` is true;
/// a scalar float32 tensor. `label_smoothing` is ε in `[0, 1]`.
pub fn xe_loss(
    logits: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
    label_smoothing: f64,
) -> Result<Tensor, TrainError> {
    if !(0.0..=1.0).contains(&label_smoothing) {
        return Err(TrainError::Setting {
            name: "label_smoothing",
            value: label_smoothing.to_string(),
            reason: "must be in [0, 1] (0 turns smoothing off)",
        });
    }
    let (ls, ts, ms) = (logits.size(), targets.size(), mask.size());
    if ls.len() != 3 || ts.len() != 2 || ls[..2] != ts[..] || ts != ms {
        return Err(TrainError::Shape {
            what: "xe loss",
            detail: format!(
                "logits {ls:?} must be [rows, L, classes], targets {ts:?} and mask {ms:?} [rows, L]"
            ),
        });
    }
    let logp = logits.f_log_softmax(-1, Kind::Float)?;
    let targets = targets.f_to_kind(Kind::Int64)?.f_to_device(logp.device())?;
    let keep = mask.f_to_kind(Kind::Float)?.f_to_device(logp.device())?;
    let nll = logp
        .f_gather(2, &targets.f_unsqueeze(2)?, false)?
        .f_squeeze_dim(2)?
        .f_neg()?; // [rows, L]
    let per_token = if label_smoothing > 0.0 {
        let uniform = logp
            .f_mean_dim([-1i64].as_slice(), false, Kind::Float)?
            .f_neg()?;
        nll.f_mul_scalar(1.0 - label_smoothing)?
            .f_add(&uniform.f_mul_scalar(label_smoothing)?)?
    } else {
        nll
    };
    let count = keep.f_sum(Kind::Float)?.f_clamp_min(1.0)?;
    Ok(per_token.f_mul(&keep)?.f_sum(Kind::Float)?.f_div(&count)?)
}
