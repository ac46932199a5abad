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
    clip_contrastive_loss_with_negatives(image_emb, text_emb, None, logit_scale)
}

/// [`clip_contrastive_loss`] with extra negative captions, as NegCLIP
/// (Yuksekgonul et al., ICLR 2023): `negative_emb` `[m, dim]` (any m ≥ 0,
/// normalised here) joins the columns of the image→text logits, which become
/// `[batch, batch + m]` with the true caption of image i still at column i;
/// the text→image side is CLIP's `[batch, batch]` over the true captions only.
/// Loss = (CE(image→text) + CE(text→image)) / 2, each the mean over the batch.
/// The accuracy is over the `batch + m` columns. `None` gives CLIP's loss with
/// exactly its operations.
///
/// # Errors
/// [`TrainError::Shape`] when the embeddings are not `[batch, dim]` with one
/// `dim`.
pub fn clip_contrastive_loss_with_negatives(
    image_emb: &Tensor,
    text_emb: &Tensor,
    negative_emb: Option<&Tensor>,
    logit_scale: &Tensor,
) -> Result<(Tensor, f64), TrainError> {
    let (a, b) = (image_emb.size(), text_emb.size());
    if a.len() != 2 || a != b || a[0] < 1 {
        return Err(TrainError::Shape {
            what: "clip_contrastive_loss",
            detail: format!("image {a:?} and text {b:?} embeddings must both be [batch, dim]"),
        });
    }
    if let Some(n) = negative_emb {
        let n = n.size();
        if n.len() != 2 || n[1] != a[1] {
            return Err(TrainError::Shape {
                what: "clip_contrastive_loss",
                detail: format!("negative caption embeddings {n:?} must be [m, {}]", a[1]),
            });
        }
    }
    let norm = |t: &Tensor| t / t.norm_scalaropt_dim(2.0, [-1], true).clamp_min(1e-12);
    let (i, t) = (norm(image_emb), norm(text_emb));
    let scale = logit_scale.exp().clamp_max(MAX_LOGIT_SCALE);
    let logits = i.matmul(&t.tr()) * &scale; // [batch, batch]
    let target = Tensor::arange(a[0], (Kind::Int64, image_emb.device()));
    // Cross-entropy in the logits' own precision (tch's `cross_entropy_for_logits`
    // computes in f32).
    let ce = |l: &Tensor| l.log_softmax(-1, l.kind()).nll_loss(&target);
    let per_image = match negative_emb {
        Some(n) => Tensor::cat(&[&logits, &(i.matmul(&norm(n).tr()) * &scale)], 1),
        None => logits.shallow_clone(),
    };
    let loss = (ce(&per_image) + ce(&logits.tr())) / 2.0;
    let acc = tch::no_grad(|| {
        per_image
            .argmax(1, false)
            .eq_tensor(&target)
            .to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[])
    });
    Ok((loss, acc))
}
