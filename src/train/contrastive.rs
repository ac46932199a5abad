//! CLIP's symmetric InfoNCE loss with a learnable temperature: trains the
//! evaluator on (image, caption) pairs where the i-th caption belongs to the
//! i-th image.

use tch::{Kind, Tensor};

use crate::train::error::TrainError;

/// Largest logit scale (CLIP clamps exp(logit_scale) at 100).
pub const MAX_LOGIT_SCALE: f64 = 100.0;

/// Loss and in-batch retrieval accuracy (image→text argmax is the true pair).
/// `image_emb`, `text_emb`: `[batch, dim]` (normalised here); `logit_scale`: the
/// log of the temperature's inverse, a scalar parameter.
pub fn clip_contrastive_loss(
    image_emb: &Tensor,
    text_emb: &Tensor,
    logit_scale: &Tensor,
) -> Result<(Tensor, f64), TrainError> {
    let (a, b) = (image_emb.size(), text_emb.size());
    if a.len() != 2 || a != b || a[0] < 1 {
        return Err(TrainError::Shape {
            what: "clip_contrastive_loss",
            detail: format!("image {a:?} and text {b:?} embeddings must both be [batch, dim]"),
        });
    }
    let norm = |t: &Tensor| t / t.norm_scalaropt_dim(2.0, [-1], true).clamp_min(1e-12);
    let (i, t) = (norm(image_emb), norm(text_emb));
    let scale = logit_scale.exp().clamp_max(MAX_LOGIT_SCALE);
    let logits = i.matmul(&t.tr()) * scale; // [batch, batch]
    let target = Tensor::arange(a[0], (Kind::Int64, image_emb.device()));
    // Cross-entropy in the logits' own precision (tch's `cross_entropy_for_logits`
    // computes in f32).
    let ce = |l: &Tensor| l.log_softmax(-1, l.kind()).nll_loss(&target);
    let loss = (ce(&logits) + ce(&logits.tr())) / 2.0;
    let acc = tch::no_grad(|| {
        logits
            .argmax(1, false)
            .eq_tensor(&target)
            .to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[])
    });
    Ok((loss, acc))
}
