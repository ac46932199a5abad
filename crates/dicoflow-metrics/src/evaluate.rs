//! Running the chosen metrics over a set of images, as the toolkit's
//! `COCOEvalCap.evaluate` does: PTB-tokenize all references in one batch and
//! all candidates in another (image order, then reference order), then score.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use super::bleu::bleu;
use super::cider::cider_d;
use super::coco::{ImageId, Sample};
use super::error::MetricsError;
use super::meteor::Meteor;
use super::ptb_tokenizer::PtbTokenizer;
use super::rouge::rouge_l;

/// A metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    /// BLEU-1..4, reported as `Bleu_1`..`Bleu_4`.
    Bleu,
    /// METEOR 1.5 (`-l en -norm`), reported as `METEOR`. Needs its data:
    /// [`Evaluator::with_meteor`].
    Meteor,
    /// ROUGE-L, reported as `ROUGE_L`.
    RougeL,
    /// CIDEr-D, reported as `CIDEr`.
    CiderD,
}

impl Metric {
    /// Every metric that needs no data files, in the toolkit's order (all
    /// but [`Metric::Meteor`]).
    pub const ALL: [Metric; 3] = [Metric::Bleu, Metric::RougeL, Metric::CiderD];

    /// The names this metric reports, as the toolkit names them.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            Metric::Bleu => &["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"],
            Metric::Meteor => &["METEOR"],
            Metric::RougeL => &["ROUGE_L"],
            Metric::CiderD => &["CIDEr"],
        }
    }
}

impl FromStr for Metric {
    type Err = MetricsError;

    /// Accepts `bleu`, `meteor`, `rouge` / `rouge_l` / `rouge-l`, `cider` /
    /// `cider-d`, in any case. `spice` is [`MetricsError::SpiceNotOffered`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "bleu" => Ok(Metric::Bleu),
            "meteor" => Ok(Metric::Meteor),
            "rouge" | "rouge_l" | "rouge-l" => Ok(Metric::RougeL),
            "cider" | "cider-d" | "cider_d" => Ok(Metric::CiderD),
            "spice" => Err(MetricsError::SpiceNotOffered),
            _ => Err(MetricsError::UnknownMetric(s.to_string())),
        }
    }
}

/// One reported value (e.g. `Bleu_4`) for the corpus and each image.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricScores {
    /// The toolkit's name for the value.
    pub name: &'static str,
    /// The corpus value.
    pub corpus: f64,
    /// Per image, in [`Evaluation::image_ids`] order.
    pub per_image: Vec<f64>,
}

/// The result of an evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Evaluated images, in evaluation order.
    pub image_ids: Vec<ImageId>,
    /// Reported values, in the toolkit's order.
    pub scores: Vec<MetricScores>,
}

impl Evaluation {
    /// Corpus values by name.
    pub fn corpus(&self) -> BTreeMap<&'static str, f64> {
        self.scores.iter().map(|s| (s.name, s.corpus)).collect()
    }

    /// The scores reported under `name` (e.g. `"CIDEr"`).
    pub fn get(&self, name: &str) -> Option<&MetricScores> {
        self.scores.iter().find(|s| s.name == name)
    }
}

/// Scores already tokenized captions (`references[i]` belongs to
/// `candidates[i]`), skipping tokenization. [`Metric::Meteor`] is an error
/// here ([`MetricsError::MeteorNotLoaded`]): use [`score_tokenized_with`].
pub fn score_tokenized(
    candidates: &[String],
    references: &[Vec<String>],
    metrics: &[Metric],
) -> Result<Vec<MetricScores>, MetricsError> {
    score_tokenized_with(candidates, references, metrics, None)
}

/// [`score_tokenized`] with METEOR's data, when [`Metric::Meteor`] is asked
/// for (else [`MetricsError::MeteorNotLoaded`]).
pub fn score_tokenized_with(
    candidates: &[String],
    references: &[Vec<String>],
    metrics: &[Metric],
    meteor: Option<&Meteor>,
) -> Result<Vec<MetricScores>, MetricsError> {
    if candidates.len() != references.len() {
        return Err(MetricsError::LengthMismatch {
            candidates: candidates.len(),
            references: references.len(),
        });
    }
    if candidates.is_empty() {
        return Err(MetricsError::NoImages);
    }
    let mut metrics = metrics.to_vec();
    metrics.sort();
    metrics.dedup();
    if metrics.contains(&Metric::Meteor) && meteor.is_none() {
        return Err(MetricsError::MeteorNotLoaded);
    }
    // The metrics are independent: compute them on separate threads.
    let results: Vec<Result<Vec<MetricScores>, MetricsError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = metrics
            .iter()
            .map(|&m| scope.spawn(move || score_one(m, candidates, references, meteor)))
            .collect();
        super::scoped::join_all(handles)
    });
    let mut out = Vec::new();
    for r in results {
        out.extend(r?);
    }
    Ok(out)
}

fn score_one(
    m: Metric,
    candidates: &[String],
    references: &[Vec<String>],
    meteor: Option<&Meteor>,
) -> Result<Vec<MetricScores>, MetricsError> {
    Ok(match m {
        Metric::Bleu => {
            let b = bleu(candidates, references);
            m.names()
                .iter()
                .enumerate()
                .map(|(k, name)| MetricScores {
                    name,
                    corpus: b.corpus[k],
                    per_image: b.per_image.iter().map(|v| v[k]).collect(),
                })
                .collect()
        }
        Metric::Meteor => {
            let meteor = meteor.ok_or(MetricsError::MeteorNotLoaded)?;
            let (corpus, per_image) = meteor.score_corpus(candidates, references)?;
            vec![MetricScores {
                name: "METEOR",
                corpus,
                per_image,
            }]
        }
        Metric::RougeL => {
            let s = rouge_l(candidates, references);
            vec![MetricScores {
                name: "ROUGE_L",
                corpus: s.corpus,
                per_image: s.per_image,
            }]
        }
        Metric::CiderD => {
            let s = cider_d(candidates, references);
            vec![MetricScores {
                name: "CIDEr",
                corpus: s.corpus,
                per_image: s.per_image,
            }]
        }
    })
}

/// Evaluates captions; holds the tokenizer (and METEOR's data, if loaded) so
/// repeated evaluations (e.g. during training) do not rebuild them.
#[derive(Debug, Default)]
pub struct Evaluator {
    tokenizer: PtbTokenizer,
    meteor: Option<Arc<Meteor>>,
}

impl Evaluator {
    /// Builds an evaluator without METEOR.
    pub fn new() -> Self {
        Self::default()
    }

    /// Enables [`Metric::Meteor`] with loaded data.
    pub fn with_meteor(mut self, meteor: Arc<Meteor>) -> Self {
        self.meteor = Some(meteor);
        self
    }

    /// Evaluates samples in the given order (which the corpus means follow).
    pub fn evaluate(
        &self,
        samples: &[Sample],
        metrics: &[Metric],
    ) -> Result<Evaluation, MetricsError> {
        if samples.is_empty() {
            return Err(MetricsError::NoImages);
        }
        if let Some(s) = samples.iter().find(|s| s.references.is_empty()) {
            return Err(MetricsError::NoReferences {
                id: s.image_id.clone(),
            });
        }
        let (tok_cands, tok_refs) = self.tokenizer.tokenize_samples(samples);
        Ok(Evaluation {
            image_ids: samples.iter().map(|s| s.image_id.clone()).collect(),
            scores: score_tokenized_with(&tok_cands, &tok_refs, metrics, self.meteor.as_deref())?,
        })
    }

    /// Evaluates in-memory captions keyed by image id; every candidate's image
    /// must have references. Images are evaluated in id order.
    pub fn evaluate_maps(
        &self,
        references: &BTreeMap<ImageId, Vec<String>>,
        candidates: &BTreeMap<ImageId, String>,
        metrics: &[Metric],
    ) -> Result<Evaluation, MetricsError> {
        let mut samples = Vec::with_capacity(candidates.len());
        for (id, c) in candidates {
            let refs = references
                .get(id)
                .ok_or_else(|| MetricsError::UnknownImage { id: id.clone() })?;
            samples.push(Sample {
                image_id: id.clone(),
                references: refs.clone(),
                candidate: c.clone(),
            });
        }
        self.evaluate(&samples, metrics)
    }
}
