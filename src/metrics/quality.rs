//! Caption quality on the synthetic world, where the truth is known: the
//! oracle judge's grammaticality and factual precision/recall, repetition, and
//! CIDEr-D against the reference captions. This is what tells a captioner that
//! games its evaluator apart from one that kept fluent, true captions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::data::synth::{corrupt, judge, Corruption, FactCounts, Judgement, Scene};
use crate::metrics::coco::ImageId;
use crate::metrics::error::MetricsError;
use crate::metrics::evaluate::{Evaluator, Metric};
use crate::rng::Rng;

/// Corpus-level caption quality (means over images; shares in 0..1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CaptionQuality {
    pub images: usize,
    /// Share of captions that are sentences of the world's language.
    pub grammatical: f64,
    /// Mean factual precision (true stated facts / stated facts).
    pub precision: f64,
    /// Mean object recall (scene objects correctly mentioned / scene objects).
    pub recall: f64,
    /// Share of captions with an immediately repeated span of 1–4 words.
    pub repetition: f64,
    /// Mean caption length in words.
    pub words: f64,
    /// CIDEr-D against the reference captions, as the COCO toolkit computes it.
    pub cider_d: f64,
    /// Stated and true claims by kind, summed over the captions
    /// ([`FactCounts::precision`] gives each kind's micro-averaged precision).
    #[serde(default)]
    pub facts: FactCounts,
}

/// Whether some span of 1–4 words is immediately repeated ("circle circle",
/// "a red circle a red circle"): the stutter of degenerate decoding. Plain
/// reuse of a phrase later in a sentence ("... the blue box and the blue box
/// is ...") is not counted; the world's grammar uses it.
pub fn has_immediate_repeat(caption: &str) -> bool {
    let words: Vec<&str> = caption.split_whitespace().collect();
    (1..=4).any(|n| {
        words.len() >= 2 * n
            && (0..=words.len() - 2 * n).any(|i| words[i..i + n] == words[i + n..i + 2 * n])
    })
}

/// Judge `captions[i]` against `scenes[i]` and `references[i]`.
pub fn caption_quality(
    scenes: &[Scene],
    captions: &[String],
    references: &[Vec<String>],
) -> Result<CaptionQuality, MetricsError> {
    if scenes.len() != captions.len() || references.len() != captions.len() {
        return Err(MetricsError::LengthMismatch {
            candidates: captions.len(),
            references: references.len().min(scenes.len()),
        });
    }
    let n = captions.len();
    if n == 0 {
        return Ok(CaptionQuality::default());
    }
    let mut q = CaptionQuality {
        images: n,
        ..Default::default()
    };
    for (scene, caption) in scenes.iter().zip(captions) {
        let j = judge(scene, caption);
        q.grammatical += j.grammatical as u8 as f64;
        q.precision += j.precision;
        q.recall += j.recall;
        q.facts.add(&j.by_kind);
        q.repetition += has_immediate_repeat(caption) as u8 as f64;
        q.words += caption.split_whitespace().count() as f64;
    }
    for v in [
        &mut q.grammatical,
        &mut q.precision,
        &mut q.recall,
        &mut q.repetition,
        &mut q.words,
    ] {
        *v /= n as f64;
    }
    let refs: BTreeMap<ImageId, Vec<String>> = references
        .iter()
        .enumerate()
        .map(|(i, r)| (ImageId::Int(i as i64), r.clone()))
        .collect();
    let cands: BTreeMap<ImageId, String> = captions
        .iter()
        .enumerate()
        .map(|(i, c)| (ImageId::Int(i as i64), c.clone()))
        .collect();
    let eval = Evaluator::new().evaluate_maps(&refs, &cands, &[Metric::CiderD])?;
    q.cider_d = eval.get("CIDEr").map_or(0.0, |s| s.corpus);
    Ok(q)
}

/// One number for how good the oracle finds a caption, to rank an image's
/// candidates: the mean of grammaticality (0 or 1), precision and recall, in 0..=1.
pub fn oracle_quality(j: &Judgement) -> f64 {
    (j.grammatical as u8 as f64 + j.precision + j.recall) / 3.0
}

/// Kendall's τ-b between `x` and `y`, the rank correlation with ties handled as
/// `scipy.stats.kendalltau` does by default (`variant='b'`):
/// `(concordant − discordant) / sqrt((n0 − n1)(n0 − n2))`, with `n0 = n(n−1)/2` and
/// `n1`, `n2` the pairs tied in `x` and in `y` (a pair tied in both counts in both).
/// `None` where scipy returns NaN: fewer than two values, or all of `x` or all of `y`
/// equal. Errors when the lengths differ.
pub fn kendall_tau_b(x: &[f64], y: &[f64]) -> Result<Option<f64>, MetricsError> {
    if x.len() != y.len() {
        return Err(MetricsError::LengthMismatch {
            candidates: x.len(),
            references: y.len(),
        });
    }
    let (mut s, mut untied_x, mut untied_y) = (0i64, 0i64, 0i64);
    for i in 0..x.len() {
        for j in i + 1..x.len() {
            let dx = sign(x[i] - x[j]);
            let dy = sign(y[i] - y[j]);
            s += dx * dy;
            untied_x += (dx != 0) as i64;
            untied_y += (dy != 0) as i64;
        }
    }
    if untied_x == 0 || untied_y == 0 {
        return Ok(None);
    }
    Ok(Some(
        s as f64 / ((untied_x as f64) * (untied_y as f64)).sqrt(),
    ))
}

fn sign(v: f64) -> i64 {
    if v > 0.0 {
        1
    } else if v < 0.0 {
        -1
    } else {
        0
    }
}

/// The corruptions [`corruption_accuracy`] scores for image `index` (caption
/// `caption` of `scene`), one per kind in [`Corruption::ALL`] order, `None` where
/// the kind is impossible for this caption.
pub fn image_corruptions(
    scene: &Scene,
    caption: &str,
    seed: u64,
    index: usize,
) -> Vec<(Corruption, Option<String>)> {
    let mut rng = Rng::new(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    Corruption::ALL
        .iter()
        .map(|&kind| (kind, corrupt(scene, caption, kind, &mut rng)))
        .collect()
}

/// How often an evaluator prefers the true caption over one kind of corruption.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CorruptionAccuracy {
    pub kind: Corruption,
    /// Images where the corruption exists and was scored.
    pub compared: usize,
    /// Images where the evaluator scored the true caption strictly higher.
    pub preferred_true: usize,
    /// Images where no corruption of this kind changes the oracle's verdict (no
    /// relation to swap, a caption every cut leaves grammatical): not scored.
    pub impossible: usize,
}

impl CorruptionAccuracy {
    /// `preferred_true / compared`; `None` when nothing was compared.
    pub fn accuracy(&self) -> Option<f64> {
        (self.compared > 0).then(|| self.preferred_true as f64 / self.compared as f64)
    }
}

/// The evaluator's accuracy at preferring `captions[i]` (a true caption of
/// `scenes[i]`, typically its first reference) over each [`Corruption`] of it
/// ([`corrupt`]: only corruptions the oracle judges worse). `score(i, texts)`
/// returns the evaluator's reward of each text for image `i`. A tie counts as not
/// preferred. Corruptions are drawn from `seed`, image by image, so the same
/// inputs give the same corruptions.
pub fn corruption_accuracy<E>(
    scenes: &[Scene],
    captions: &[String],
    seed: u64,
    mut score: impl FnMut(usize, &[String]) -> Result<Vec<f64>, E>,
) -> Result<Vec<CorruptionAccuracy>, E> {
    let mut out: Vec<CorruptionAccuracy> = Corruption::ALL
        .iter()
        .map(|&kind| CorruptionAccuracy {
            kind,
            compared: 0,
            preferred_true: 0,
            impossible: 0,
        })
        .collect();
    for (i, (scene, caption)) in scenes.iter().zip(captions).enumerate() {
        let mut texts = vec![caption.clone()];
        let mut kinds = Vec::new();
        for (k, (_, corrupted)) in image_corruptions(scene, caption, seed, i)
            .into_iter()
            .enumerate()
        {
            match corrupted {
                Some(c) => {
                    texts.push(c);
                    kinds.push(k);
                }
                None => out[k].impossible += 1,
            }
        }
        if kinds.is_empty() {
            continue;
        }
        let rewards = score(i, &texts)?;
        for (n, &k) in kinds.iter().enumerate() {
            out[k].compared += 1;
            out[k].preferred_true += (rewards[0] > rewards[n + 1]) as usize;
        }
    }
    Ok(out)
}

/// Kendall τ-b between evaluator reward and oracle quality, image by image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RankAgreement {
    /// Mean τ-b over the images where it is defined.
    pub mean_tau: Option<f64>,
    /// Images where τ-b is defined.
    pub images: usize,
    /// Images where it is not (all candidates tied in reward or in oracle quality,
    /// or fewer than two candidates).
    pub undefined: usize,
}

/// [`kendall_tau_b`] between `rewards[i]` and the [`oracle_quality`] of
/// `candidates[i]` against `scenes[i]`, averaged over the images where it is
/// defined. Errors when the lengths disagree.
pub fn rank_agreement(
    scenes: &[Scene],
    candidates: &[Vec<String>],
    rewards: &[Vec<f64>],
) -> Result<RankAgreement, MetricsError> {
    if scenes.len() != candidates.len() || rewards.len() != candidates.len() {
        return Err(MetricsError::LengthMismatch {
            candidates: candidates.len(),
            references: rewards.len().min(scenes.len()),
        });
    }
    let (mut sum, mut images, mut undefined) = (0.0, 0usize, 0usize);
    for ((scene, cands), r) in scenes.iter().zip(candidates).zip(rewards) {
        let quality: Vec<f64> = cands
            .iter()
            .map(|c| oracle_quality(&judge(scene, c)))
            .collect();
        match kendall_tau_b(r, &quality)? {
            Some(tau) => {
                sum += tau;
                images += 1;
            }
            None => undefined += 1,
        }
    }
    Ok(RankAgreement {
        mean_tau: (images > 0).then(|| sum / images as f64),
        images,
        undefined,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth::{reference_captions, sample_scene, WorldConfig};
    use crate::rng::Rng;

    #[test]
    fn references_score_perfectly_and_degenerate_captions_do_not() {
        let cfg = WorldConfig::default();
        let mut scenes = Vec::new();
        let mut refs = Vec::new();
        for i in 0..20 {
            let mut rng = Rng::new(i);
            let s = sample_scene(&mut rng, &cfg);
            refs.push(reference_captions(&s, &mut rng, 5));
            scenes.push(s);
        }
        let firsts: Vec<String> = refs.iter().map(|r| r[0].clone()).collect();
        let good = caption_quality(&scenes, &firsts, &refs).unwrap();
        assert_eq!(good.grammatical, 1.0);
        assert_eq!(good.precision, 1.0);
        assert_eq!(good.repetition, 0.0);
        // Stutter: the last three words again.
        let bad: Vec<String> = firsts
            .iter()
            .map(|c| {
                let w: Vec<&str> = c.split_whitespace().collect();
                format!("{c} {}", w[w.len() - 3..].join(" "))
            })
            .collect();
        let worse = caption_quality(&scenes, &bad, &refs).unwrap();
        assert_eq!(worse.grammatical, 0.0);
        assert_eq!(worse.repetition, 1.0);
        assert!(worse.cider_d < good.cider_d);
    }
}
