//! Caption quality on the synthetic world, where the truth is known: the
//! oracle judge's grammaticality and factual precision/recall, repetition, and
//! CIDEr-D against the reference captions. This is what tells a captioner that
//! games its evaluator apart from one that kept fluent, true captions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::data::synth::{judge, Scene};
use crate::metrics::coco::ImageId;
use crate::metrics::error::MetricsError;
use crate::metrics::evaluate::{Evaluator, Metric};

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
