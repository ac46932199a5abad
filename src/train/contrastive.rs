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
    let norm = |t: &Tensor| -> Result<Tensor, TrainError> {
        let n = t
            .f_norm_scalaropt_dim(2.0, [-1], true)?
            .f_clamp_min(1e-12)?;
        Ok(t.f_div(&n)?)
    };
    let (i, t) = (norm(image_emb)?, norm(text_emb)?);
    let scale = logit_scale.f_exp()?.f_clamp_max(MAX_LOGIT_SCALE)?;
    let logits = i.f_matmul(&t.f_tr()?)?.f_mul(&scale)?; // [batch, batch]
    let target = Tensor::f_arange(a[0], (Kind::Int64, image_emb.device()))?;
    // Cross-entropy in the logits' own precision (tch's `cross_entropy_for_logits`
    // computes in f32).
    let ce = |l: &Tensor| -> Result<Tensor, TrainError> {
        Ok(l.f_log_softmax(-1, l.kind())?.f_nll_loss::<Tensor>(
            &target,
            None,
            tch::Reduction::Mean,
            -100,
        )?)
    };
    let per_image = match negative_emb {
        Some(n) => {
            let negatives = i.f_matmul(&norm(n)?.f_tr()?)?.f_mul(&scale)?;
            Tensor::f_cat(&[&logits, &negatives], 1)?
        }
        None => logits.shallow_clone(),
    };
    let loss = ce(&per_image)?
        .f_add(&ce(&logits.f_tr()?)?)?
        .f_div_scalar(2.0)?;
    let acc = tch::no_grad(|| -> Result<f64, TrainError> {
        Ok(per_image
            .f_argmax(1, false)?
            .f_eq_tensor(&target)?
            .f_to_kind(Kind::Double)?
            .f_mean(Kind::Double)?
            .f_double_value(&[])?)
    })?;
    Ok((loss, acc))
}
