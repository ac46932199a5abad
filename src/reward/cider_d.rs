//! CIDEr-D as a training reward (the SCST baseline's): each candidate is scored
//! against its image's reference captions, with n-grams weighted by document
//! frequencies of the *training* references, computed once. Captions are
//! tokenized as the COCO toolkit does (PTB rules, lower case, punctuation
//! dropped), each caption on its own, both for the document frequencies and
//! for scoring, so that the two agree on what a word is.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::RewardError;
use crate::data::{LayoutOptions, ShardIndex, SourceConfig};
use crate::metrics::cider::cider_d_with_df;
use crate::metrics::PtbTokenizer;
use crate::reward::cider_df::{corpus_document_frequencies_tokenized, DocFreqs, Tokenization};

/// CIDEr-D's largest n-gram order.
const MAX_N: usize = 4;

/// Where the document frequencies come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CiderDSettings {
    /// Shards (file, directory or glob) whose reference captions give the
    /// document frequencies: the training shards.
    pub references: PathBuf,
    /// Which columns of `references` to read.
    #[serde(default)]
    pub layout: LayoutOptions,
    /// Worker threads for the one pass over `references`.
    #[serde(default = "one")]
    pub workers: usize,
}

fn one() -> usize {
    1
}

/// CIDEr-D against per-image references with fixed corpus document frequencies.
pub struct CiderDReward {
    df: DocFreqs,
    tokenizer: PtbTokenizer,
}

impl std::fmt::Debug for CiderDReward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CiderDReward")
            .field("images", &self.df.images)
            .field("ngrams", &self.df.df.len())
            .finish()
    }
}

impl CiderDReward {
    /// A reward over document frequencies `df`, which must have been counted
    /// with [`Tokenization::Ptb`] and cover at least one image.
    pub fn new(df: DocFreqs) -> Result<Self, RewardError> {
        if df.images == 0 {
            return Err(RewardError::BadInput {
                what: "CIDEr-D reward",
                reason: "the document frequencies cover no image: point `references` at the \
                         training shards"
                    .into(),
            });
        }
        Ok(Self {
            df,
            tokenizer: PtbTokenizer::new(),
        })
    }

    /// Count document frequencies over the reference captions of the shards
    /// named by `settings` (one pass, file order).
    pub fn from_shards(settings: &CiderDSettings) -> Result<Self, RewardError> {
        let bad = |reason: String| RewardError::BadInput {
            what: "CIDEr-D reward",
            reason,
        };
        let index = ShardIndex::open(&settings.references, &settings.layout)
            .map_err(|e| bad(format!("{}: {e}", settings.references.display())))?;
        let source = SourceConfig {
            shuffle: false,
            epochs: Some(1),
            ..Default::default()
        };
        let df = corpus_document_frequencies_tokenized(
            Arc::new(index),
            source,
            MAX_N,
            settings.workers.max(1),
            Tokenization::Ptb,
        )
        .map_err(|e| bad(format!("{}: {e}", settings.references.display())))?;
        Self::new(df)
    }

    /// The document frequencies in use.
    pub fn document_frequencies(&self) -> &DocFreqs {
        &self.df
    }

    /// CIDEr-D of each candidate against `references[i]`, its image's captions.
    pub fn score<C: AsRef<str>>(
        &self,
        candidates: &[C],
        references: &[&[String]],
    ) -> Result<Vec<f32>, RewardError> {
        if candidates.len() != references.len() {
            return Err(RewardError::BadInput {
                what: "CIDEr-D reward",
                reason: format!(
                    "{} candidates but {} reference lists",
                    candidates.len(),
                    references.len()
                ),
            });
        }
        if references.iter().any(|r| r.is_empty()) {
            return Err(RewardError::BadInput {
                what: "CIDEr-D reward",
                reason: "an image has no reference captions; keep `require_captions` on in the \
                         source layout"
                    .into(),
            });
        }
        let cands: Vec<String> = candidates
            .iter()
            .map(|c| self.tokenizer.tokenize(c.as_ref()))
            .collect();
        let refs: Vec<Vec<String>> = references
            .iter()
            .map(|r| r.iter().map(|c| self.tokenizer.tokenize(c)).collect())
            .collect();
        Ok(cider_d_with_df(&cands, &refs, &self.df)
            .per_image
            .into_iter()
            .map(|s| s as f32)
            .collect())
    }
}
