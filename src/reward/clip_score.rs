//! CLIP-S and PAC-S with their reference-based variants, as the official code defines
//! them (jmhessel/clipscore `clipscore.py`, aimagelab/pacscore `evaluation/pac_score`):
//!
//! - `S(i, c) = w · max(cos(E_img(i), E_txt(prefix + c)), 0)`, w = 2.5 (CLIP-S) or
//!   2.0 (PAC-S, with the PAC-S fine-tuned CLIP weights), prefix `"A photo depicts "`;
//! - `R(c, refs) = max_r cos(E_txt(prefix + c), E_txt(prefix + r))` (neither weighted
//!   nor clipped in the official code; references get the prefix too);
//! - `Ref-S = 2 · S · R / (S + R)` (harmonic mean; 0 where `S + R = 0`).
//!
//! Prefix and clipping are options: the evaluation presets use the official choices,
//! [`ScoreConfig::dico_reward`] the paper's DiCO training reward (no prefix, no clipping).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::RewardError;
use crate::model::clip::layers::l2_normalize;
use crate::model::clip::Clip;
use crate::text::ClipTokenizer;

/// CLIP-S weight w.
pub const CLIP_S_WEIGHT: f64 = 2.5;
/// PAC-S weight w.
pub const PAC_S_WEIGHT: f64 = 2.0;
/// Text prefix of the official implementations.
pub const DEFAULT_PREFIX: &str = "A photo depicts ";
/// Texts encoded per text-tower call.
pub const DEFAULT_TEXT_BATCH: usize = 256;

/// How a CLIP similarity becomes a score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreConfig {
    /// Metric name used in reports (`CLIP-S`, `PAC-S`).
    pub name: String,
    /// The weight w.
    pub weight: f64,
    /// Prepended to every caption and reference before tokenization (`None`: nothing).
    pub prefix: Option<String>,
    /// `max(cos, 0)` before weighting (official); `false` keeps negative scores.
    pub clip_negative: bool,
}

impl ScoreConfig {
    /// CLIP-S: w = 2.5, prefix "A photo depicts ", clipped.
    pub fn clip_s() -> Self {
        Self {
            name: "CLIP-S".to_owned(),
            weight: CLIP_S_WEIGHT,
            prefix: Some(DEFAULT_PREFIX.to_owned()),
            clip_negative: true,
        }
    }

    /// PAC-S: w = 2.0, prefix "A photo depicts ", clipped (use with PAC-S weights).
    pub fn pac_s() -> Self {
        Self {
            name: "PAC-S".to_owned(),
            weight: PAC_S_WEIGHT,
            ..Self::clip_s()
        }
    }

    /// The paper's DiCO reward: PAC-S weight 2.0, no prefix, no clipping.
    pub fn dico_reward() -> Self {
        Self {
            prefix: None,
            clip_negative: false,
            ..Self::pac_s()
        }
    }

    /// Replaces the prefix.
    pub fn with_prefix(mut self, prefix: Option<String>) -> Self {
        self.prefix = prefix;
        self
    }

    /// Sets clipping of negative cosines.
    pub fn with_clipping(mut self, clip_negative: bool) -> Self {
        self.clip_negative = clip_negative;
        self
    }

    /// The text actually encoded for `caption`.
    pub fn text_of(&self, caption: &str) -> String {
        match &self.prefix {
            Some(p) => format!("{p}{caption}"),
            None => caption.to_owned(),
        }
    }
}

/// Row-wise cosine of unit vectors `[n, e]` · `[n, e]` → `[n]`.
fn rowwise_dot(a: &Tensor, b: &Tensor) -> Result<Tensor, RewardError> {
    if a.size() != b.size() || a.dim() != 2 {
        return Err(RewardError::BadInput {
            what: "score",
            reason: format!(
                "embeddings {:?} and {:?} must both be [n, e]",
                a.size(),
                b.size()
            ),
        });
    }
    Ok(a.f_mul(b)?
        .f_sum_dim_intlist([1i64].as_slice(), false, Kind::Float)?)
}

/// `w · max(cos, 0)` (or `w · cos` without clipping) of image and text embeddings
/// `[n, e]` (any norm) → `[n]` float32.
pub fn score_embeddings(
    image: &Tensor,
    text: &Tensor,
    cfg: &ScoreConfig,
) -> Result<Tensor, RewardError> {
    let cos = rowwise_dot(&l2_normalize(image)?, &l2_normalize(text)?)?;
    let cos = if cfg.clip_negative {
        cos.f_clamp_min(0.0)?
    } else {
        cos
    };
    Ok(cos.f_mul_scalar(cfg.weight)?)
}

/// `R_i = max_{j : owner_j = i} cos(text_i, refs_j)` for candidate embeddings `[n, e]`,
/// reference embeddings `[m, e]` and `owner` `[m]` (i64, candidate index of each
/// reference) → `[n]` float32. Every candidate needs at least one reference.
pub fn ref_similarity(text: &Tensor, refs: &Tensor, owner: &Tensor) -> Result<Tensor, RewardError> {
    let n = text.size().first().copied().unwrap_or(0);
    let m = refs.size().first().copied().unwrap_or(0);
    if owner.size() != [m] || text.dim() != 2 || refs.dim() != 2 {
        return Err(RewardError::BadInput {
            what: "reference similarity",
            reason: format!(
                "text {:?}, refs {:?}, owner {:?}: expected [n, e], [m, e], [m]",
                text.size(),
                refs.size(),
                owner.size()
            ),
        });
    }
    let owner = owner.f_to_kind(Kind::Int64)?.f_to_device(text.device())?;
    if m > 0 {
        let (lo, hi) = (
            owner.f_min()?.f_int64_value(&[])?,
            owner.f_max()?.f_int64_value(&[])?,
        );
        if lo < 0 || hi >= n {
            return Err(RewardError::BadInput {
                what: "reference similarity",
                reason: format!("owner indices {lo}..={hi} outside 0..{n}"),
            });
        }
    }
    let text = l2_normalize(&text.f_to_kind(Kind::Float)?)?;
    let refs = l2_normalize(&refs.f_to_kind(Kind::Float)?.f_to_device(text.device())?)?;
    let sims = rowwise_dot(&text.f_index_select(0, &owner)?, &refs)?; // [m]
    let init = Tensor::f_full([n], f64::NEG_INFINITY, (Kind::Float, text.device()))?;
    let best = init.f_index_reduce(0, &owner, &sims, "amax", true)?; // [n]
    if bool::try_from(best.f_isneginf()?.f_any()?)? {
        return Err(RewardError::BadInput {
            what: "reference similarity",
            reason: "every candidate needs at least one reference".to_owned(),
        });
    }
    Ok(best)
}

/// Harmonic mean `2 · S · R / (S + R)`, 0 where `S + R = 0`: `[n]`, `[n]` → `[n]`.
pub fn harmonic_mean(score: &Tensor, refsim: &Tensor) -> Result<Tensor, RewardError> {
    let sum = score.f_add(refsim)?;
    let hm = score.f_mul(refsim)?.f_mul_scalar(2.0)?.f_div(&sum)?;
    Ok(hm.f_masked_fill(&sum.f_eq(0.0)?, 0.0)?)
}

/// Per-caption results of [`ClipScorer::score_with_refs`].
#[derive(Debug, Clone, PartialEq)]
pub struct RefScores {
    /// Reference-free score S.
    pub score: Vec<f32>,
    /// Max cosine to the references R.
    pub ref_similarity: Vec<f32>,
    /// Harmonic mean of S and R.
    pub ref_score: Vec<f32>,
}

/// Scores captions against images with a frozen CLIP. Image embeddings are cached by
/// image key, so an image scored against many captions is encoded once.
#[derive(Debug)]
pub struct ClipScorer {
    clip: Clip,
    tokenizer: ClipTokenizer,
    config: ScoreConfig,
    /// key → unit image embedding `[e]` (float32, on the model's device).
    images: BTreeMap<String, Tensor>,
    text_batch: usize,
}

impl ClipScorer {
    pub fn new(clip: Clip, tokenizer: ClipTokenizer, config: ScoreConfig) -> Self {
        Self {
            clip,
            tokenizer,
            config,
            images: BTreeMap::new(),
            text_batch: DEFAULT_TEXT_BATCH,
        }
    }

    pub fn config(&self) -> &ScoreConfig {
        &self.config
    }

    /// Replaces the score settings; cached image embeddings stay valid.
    pub fn set_config(&mut self, config: ScoreConfig) {
        self.config = config;
    }

    pub fn clip(&self) -> &Clip {
        &self.clip
    }

    fn device(&self) -> Device {
        self.clip.logit_scale.device()
    }

    /// Encodes (and caches) the images `[n, 3, H, W]` whose keys are not cached yet.
    ///
    /// Errors: `keys.len() != n`, or one key given twice in `keys` (two images
    /// under one key would be scored as one of them: [`RewardError::BadInput`]).
    pub fn add_images<S: AsRef<str>>(
        &mut self,
        keys: &[S],
        images: &Tensor,
    ) -> Result<(), RewardError> {
        let n = images.size().first().copied().unwrap_or(-1);
        if n != keys.len() as i64 {
            return Err(RewardError::BadInput {
                what: "add_images",
                reason: format!(
                    "{} keys for images of shape {:?}",
                    keys.len(),
                    images.size()
                ),
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = keys.iter().map(AsRef::as_ref).find(|k| !seen.insert(*k)) {
            return Err(RewardError::BadInput {
                what: "add_images",
                reason: format!("key `{dup}` names two images of one batch; keys must be unique"),
            });
        }
        let missing: Vec<i64> = keys
            .iter()
            .enumerate()
            .filter(|(_, k)| !self.images.contains_key(k.as_ref()))
            .map(|(i, _)| i as i64)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let idx = Tensor::f_from_slice(&missing)?.f_to_device(images.device())?;
        let batch = images.f_index_select(0, &idx)?.f_to_device(self.device())?;
        let emb =
            tch::no_grad(|| self.clip.encode_image_normalized(&batch))?.f_to_kind(Kind::Float)?;
        for (row, &i) in missing.iter().enumerate() {
            let key = keys[i as usize].as_ref().to_owned();
            self.images.insert(key, emb.f_get(row as i64)?);
        }
        Ok(())
    }

    /// Whether an image embedding is cached.
    pub fn has_image(&self, key: &str) -> bool {
        self.images.contains_key(key)
    }

    /// Drops every cached image embedding.
    pub fn clear_images(&mut self) {
        self.images.clear();
    }

    /// Unit text embeddings `[n, e]` (float32) of captions, prefix applied.
    pub fn encode_texts<S: AsRef<str>>(&self, captions: &[S]) -> Result<Tensor, RewardError> {
        let ctx = self.clip.config().text.context_length as usize;
        let mut parts = Vec::new();
        for chunk in captions.chunks(self.text_batch.max(1)) {
            let texts: Vec<String> = chunk
                .iter()
                .map(|c| self.config.text_of(c.as_ref()))
                .collect();
            let ids = self
                .tokenizer
                .encode_batch(&texts, ctx)?
                .f_to_device(self.device())?;
            let emb = tch::no_grad(|| self.clip.encode_text_normalized(&ids))?;
            parts.push(emb.f_to_kind(Kind::Float)?);
        }
        if parts.is_empty() {
            let e = self.clip.config().embed_dim;
            return Ok(Tensor::f_zeros([0, e], (Kind::Float, self.device()))?);
        }
        Ok(Tensor::f_cat(&parts, 0)?)
    }

    fn image_rows<S: AsRef<str>>(&self, keys: &[S]) -> Result<Tensor, RewardError> {
        let mut rows = Vec::with_capacity(keys.len());
        for k in keys {
            let k = k.as_ref();
            let emb = self
                .images
                .get(k)
                .ok_or_else(|| RewardError::MissingImage { key: k.to_owned() })?;
            rows.push(emb.shallow_clone());
        }
        if rows.is_empty() {
            let e = self.clip.config().embed_dim;
            return Ok(Tensor::f_zeros([0, e], (Kind::Float, self.device()))?);
        }
        Ok(Tensor::f_stack(&rows, 0)?)
    }

    /// Scores `(image key, caption)` pairs; every key must have been added.
    pub fn score<K: AsRef<str>, C: AsRef<str>>(
        &self,
        keys: &[K],
        captions: &[C],
    ) -> Result<Vec<f32>, RewardError> {
        let (img, txt) = self.pair_embeddings(keys, captions)?;
        let s = score_embeddings(&img, &txt, &self.config)?;
        Ok(Vec::<f32>::try_from(&s.f_to_device(Device::Cpu)?)?)
    }

    fn pair_embeddings<K: AsRef<str>, C: AsRef<str>>(
        &self,
        keys: &[K],
        captions: &[C],
    ) -> Result<(Tensor, Tensor), RewardError> {
        if keys.len() != captions.len() {
            return Err(RewardError::BadInput {
                what: "score",
                reason: format!("{} image keys for {} captions", keys.len(), captions.len()),
            });
        }
        Ok((self.image_rows(keys)?, self.encode_texts(captions)?))
    }

    /// Scores pairs and their reference-based variant; `refs[i]` are the references of
    /// pair `i` (at least one each).
    pub fn score_with_refs<K: AsRef<str>, C: AsRef<str>, R: AsRef<str>>(
        &self,
        keys: &[K],
        captions: &[C],
        refs: &[Vec<R>],
    ) -> Result<RefScores, RewardError> {
        if refs.len() != captions.len() {
            return Err(RewardError::BadInput {
                what: "score_with_refs",
                reason: format!(
                    "{} reference lists for {} captions",
                    refs.len(),
                    captions.len()
                ),
            });
        }
        let (img, txt) = self.pair_embeddings(keys, captions)?;
        let score = score_embeddings(&img, &txt, &self.config)?;
        let flat: Vec<&str> = refs.iter().flatten().map(AsRef::as_ref).collect();
        let owner: Vec<i64> = refs
            .iter()
            .enumerate()
            .flat_map(|(i, r)| std::iter::repeat_n(i as i64, r.len()))
            .collect();
        let ref_emb = self.encode_texts(&flat)?;
        let refsim = ref_similarity(&txt, &ref_emb, &Tensor::f_from_slice(&owner)?)?;
        let hm = harmonic_mean(&score, &refsim)?;
        let cpu = |t: &Tensor| -> Result<Vec<f32>, RewardError> {
            Ok(Vec::<f32>::try_from(&t.f_to_device(Device::Cpu)?)?)
        };
        Ok(RefScores {
            score: cpu(&score)?,
            ref_similarity: cpu(&refsim)?,
            ref_score: cpu(&hm)?,
        })
    }
}
