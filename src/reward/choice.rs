//! The reward a captioner is fine-tuned on: a frozen CLIP evaluator's score
//! (CLIP-S / PAC-S, reference-free) or CIDEr-D against the image's reference
//! captions (SCST's conventional choice). Settings name the kind:
//!
//! ```toml
//! reward = { kind = "cider_d", references = "data/coco/train" }
//! reward = { kind = "clip", name = "PAC-S", weight = 2.0, clip_negative = false }
//! ```
//!
//! A `reward` table without `kind` is a CLIP score config: the form written
//! before kinds existed. It is still read, and must stay readable: users'
//! pipeline files have it, and so do the shipped `pipelines/coco_dico.toml`
//! and `pipelines/reward_cache.toml`. What dicoflow writes (a reward cache's
//! `dicoflow.config`) always carries `kind`.

use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tch::{Device, Tensor};

use super::cider_d::{CiderDReward, CiderDSettings};
use super::{ClipScorer, RewardError, ScoreConfig};
use crate::model::clip::{Clip, ClipConfig};
use crate::text::ClipTokenizer;

/// Which reward, as written in a stage's settings.
#[derive(Debug, Clone, PartialEq)]
pub enum RewardSettings {
    /// The evaluator's CLIP score (needs the stage's `evaluator` weights).
    Clip(ScoreConfig),
    /// CIDEr-D with document frequencies of the training references.
    CiderD(CiderDSettings),
}

/// The serialized form: a table tagged by `kind`.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Tagged {
    Clip(ScoreConfig),
    CiderD(CiderDSettings),
}

impl Serialize for RewardSettings {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.clone() {
            RewardSettings::Clip(c) => Tagged::Clip(c),
            RewardSettings::CiderD(c) => Tagged::CiderD(c),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for RewardSettings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut value = toml::Value::deserialize(d)?;
        // The form without `kind` (see the module comment): a CLIP score.
        if let Some(table) = value.as_table_mut() {
            table
                .entry("kind")
                .or_insert_with(|| toml::Value::String("clip".into()));
        }
        let tagged: Tagged = value
            .try_into()
            .map_err(|e: toml::de::Error| serde::de::Error::custom(e.message()))?;
        Ok(match tagged {
            Tagged::Clip(c) => RewardSettings::Clip(c),
            Tagged::CiderD(c) => RewardSettings::CiderD(c),
        })
    }
}

impl From<ScoreConfig> for RewardSettings {
    fn from(c: ScoreConfig) -> Self {
        RewardSettings::Clip(c)
    }
}

/// A reward ready to score candidates.
#[derive(Debug)]
pub enum Reward {
    /// Both boxed: each is large, and a `Reward` is moved between stages.
    Clip(Box<ClipScorer>),
    CiderD(Box<CiderDReward>),
}

impl From<ClipScorer> for Reward {
    fn from(s: ClipScorer) -> Self {
        Reward::Clip(Box::new(s))
    }
}

impl From<CiderDReward> for Reward {
    fn from(r: CiderDReward) -> Self {
        Reward::CiderD(Box::new(r))
    }
}

impl Reward {
    /// Build the reward a stage asks for. `evaluator` is CLIP safetensors
    /// with config `evaluator_config`; without `settings`, an evaluator means
    /// the paper's DiCO reward ([`ScoreConfig::dico_reward`]). `Ok(None)`:
    /// no reward (cross-entropy training).
    pub fn load(
        settings: Option<&RewardSettings>,
        evaluator: Option<&Path>,
        evaluator_config: &ClipConfig,
        device: Device,
    ) -> Result<Option<Reward>, RewardError> {
        let clip = |path: &Path, score: ScoreConfig| -> Result<Reward, RewardError> {
            let (_vs, clip) = Clip::from_safetensors(path, evaluator_config, device)?;
            Ok(ClipScorer::new(clip, ClipTokenizer::openai()?, score).into())
        };
        match (settings, evaluator) {
            (None, None) => Ok(None),
            (None, Some(path)) => clip(path, ScoreConfig::dico_reward()).map(Some),
            (Some(RewardSettings::Clip(score)), Some(path)) => clip(path, score.clone()).map(Some),
            (Some(RewardSettings::Clip(_)), None) => Err(RewardError::BadInput {
                what: "reward",
                reason: "a CLIP score reward needs `evaluator` (CLIP safetensors); set it, or \
                         use `reward = { kind = \"cider_d\", references = ... }`"
                    .into(),
            }),
            (Some(RewardSettings::CiderD(_)), Some(path)) => Err(RewardError::BadInput {
                what: "reward",
                reason: format!(
                    "the CIDEr-D reward uses no evaluator, but `evaluator` names {}: remove it",
                    path.display()
                ),
            }),
            (Some(RewardSettings::CiderD(c)), None) => {
                Ok(Some(CiderDReward::from_shards(c)?.into()))
            }
        }
    }

    /// Short name for logs.
    pub fn name(&self) -> &str {
        match self {
            Reward::Clip(s) => &s.config().name,
            Reward::CiderD(_) => "CIDEr-D",
        }
    }

    /// Rewards of `candidates`, grouped by image: image `i` (key `keys[i]`,
    /// pixels `pixels[i]`, reference captions `references[i]`) owns the
    /// `candidates.len() / keys.len()` consecutive candidates from
    /// `i * candidates.len() / keys.len()`.
    pub fn score(
        &mut self,
        keys: &[String],
        pixels: &Tensor,
        candidates: &[String],
        references: &[Vec<String>],
    ) -> Result<Vec<f32>, RewardError> {
        let images = keys.len();
        if images == 0 || !candidates.len().is_multiple_of(images) || references.len() != images {
            return Err(RewardError::BadInput {
                what: "reward",
                reason: format!(
                    "{} candidates for {images} images with {} reference lists: every image \
                     needs the same number of candidates and one reference list",
                    candidates.len(),
                    references.len()
                ),
            });
        }
        let k = candidates.len() / images;
        match self {
            Reward::Clip(scorer) => {
                scorer.add_images(keys, pixels)?;
                let owners: Vec<&str> = keys
                    .iter()
                    .flat_map(|key| std::iter::repeat_n(key.as_str(), k))
                    .collect();
                scorer.score(&owners, candidates)
            }
            Reward::CiderD(cider) => {
                let refs: Vec<&[String]> = references
                    .iter()
                    .flat_map(|r| std::iter::repeat_n(r.as_slice(), k))
                    .collect();
                cider.score(candidates, &refs)
            }
        }
    }

    /// Forget cached image embeddings (CLIP); images are not revisited
    /// within an epoch.
    pub fn clear_images(&mut self) {
        if let Reward::Clip(scorer) = self {
            scorer.clear_images();
        }
    }
}
