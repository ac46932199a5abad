//! Validation during captioner training and best-model selection, as the
//! official DiCO trainer does it: every N optimizer steps, caption a
//! validation split greedily, score the captions, log the values, and keep
//! the weights that score best by one chosen metric (the paper: CIDEr for
//! XE, RefPAC-S for DiCO).
//!
//! - Data: the val shards are read in file order (no shuffle), the first
//!   `max_images` usable rows, decoded and preprocessed as the training
//!   stage's images (Pillow-exact, [`PreprocessConfig`]; the size defaults
//!   to the backbone's input). They are re-read at every validation, so a
//!   5 000-image split never sits in memory as float pixels.
//! - Captions: greedy ([`Policy::caption`]), in chunks of
//!   `batch_size` images. Each validation writes them as COCO results to
//!   `out/validation/step-NNNNNNNN.json`, beside `annotations.json` (the
//!   val references), so `dicoflow eval` recomputes any logged value.
//! - Metrics ([`ValMetric`]): BLEU-1..4, METEOR, ROUGE-L and CIDEr-D as
//!   `metrics::Evaluator` computes them (the COCO toolkit's corpus values);
//!   CLIP-S, RefCLIP-S, PAC-S and RefPAC-S as the mean over images of
//!   [`ClipScorer::score_with_refs`] (clipscore's and pacscore's corpus
//!   values, official prefix and weights); `reward`, the mean of the stage's
//!   own reward on the greedy captions. Logged as `val/NAME` with
//!   `val/step` (the optimizer step) and `val/images`, in the metrics log
//!   and in `out/validation/log.jsonl`. On a synthetic world's val split
//!   (its shards carry the world's spec), also the oracle judge's
//!   `val/grammatical`, `val/precision` and `val/recall`
//!   ([`crate::metrics::quality::CaptionQuality`]): the captioner's truth and
//!   fluency as training goes on.
//! - Best model: `best_by` names one logged value; the weights of each new
//!   best (strictly better: ties keep the earlier step) are written to
//!   `out/best/step-NNNNNNNN.safetensors` with `out/best/best.json`. The
//!   best so far is stored in every checkpoint ([`BestSoFar`] in
//!   [`crate::train::TrainState`]); a resumed run starts from it, and keeps
//!   only the best weights that checkpoint refers to (a later best written
//!   by the interrupted run is recomputed, or not, by the resumed one), so
//!   it ends with the same best model as an uninterrupted run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tch::{Device, Tensor};

use crate::data::world::WorldSpec;
use crate::data::{LayoutOptions, RawSample, ShardIndex, ShardSource, SourceConfig, SourceItem};
use crate::image::preprocess::{PreprocessConfig, Preprocessor};
use crate::metrics::quality::{caption_quality, CaptionQuality};
use crate::metrics::{Evaluator, ImageId, Meteor, Metric, Sample};
use crate::model::clip::{Clip, ClipConfig};
use crate::reward::Reward;
use crate::reward::{ClipScorer, ScoreConfig};
use crate::text::ClipTokenizer;
use crate::train::checkpoint::{BestBy, BestSoFar};
use crate::train::error::TrainError;
use crate::train::policy::Policy;

/// Prefix of the logged validation values (`val/CIDEr`, `val/step`, ...).
pub const LOG_PREFIX: &str = "val/";
/// Directory, under a stage's `out`, holding the best weights.
pub const BEST_DIR: &str = "best";
/// The record of the best weights in [`BEST_DIR`].
pub const BEST_FILE: &str = "best.json";
/// Directory, under a stage's `out`, holding the validation captions.
pub const CAPTIONS_DIR: &str = "validation";
/// Every validation's values, one JSON object per line, in [`CAPTIONS_DIR`].
pub const LOG_FILE: &str = "log.jsonl";
/// Final weights of a stage that keeps the best as `model.safetensors`.
pub const FINAL_WEIGHTS_FILE: &str = "final.safetensors";
/// Default images per greedy-decoding chunk.
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// A validation metric family, parsed once from its name (any case):
/// `BLEU`, `METEOR`, `ROUGE-L`, `CIDEr` (also `CIDEr-D`), `CLIP-S`,
/// `RefCLIP-S`, `PAC-S`, `RefPAC-S`, `reward`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ValMetric {
    /// Caption metrics of the COCO toolkit.
    Caption(Metric),
    /// CLIP-S (needs `clip` weights).
    ClipS,
    /// RefCLIP-S (needs `clip` weights).
    RefClipS,
    /// PAC-S (needs `pac` weights).
    PacS,
    /// RefPAC-S (needs `pac` weights).
    RefPacS,
    /// The stage's own reward (DiCO / SCST) on the greedy captions.
    Reward,
}

/// The names [`ValMetric`] accepts, for error messages.
const METRIC_NAMES: &str =
    "BLEU, METEOR, ROUGE-L, CIDEr, CLIP-S, RefCLIP-S, PAC-S, RefPAC-S, reward";

impl ValMetric {
    /// The values this metric logs (without [`LOG_PREFIX`]).
    pub fn names(self) -> &'static [&'static str] {
        match self {
            ValMetric::Caption(m) => m.names(),
            ValMetric::ClipS => &["CLIP-S"],
            ValMetric::RefClipS => &["RefCLIP-S"],
            ValMetric::PacS => &["PAC-S"],
            ValMetric::RefPacS => &["RefPAC-S"],
            ValMetric::Reward => &["reward"],
        }
    }

    /// The canonical name, as written back into settings.
    pub fn name(self) -> &'static str {
        match self {
            ValMetric::Caption(Metric::Bleu) => "BLEU",
            ValMetric::Caption(Metric::Meteor) => "METEOR",
            ValMetric::Caption(Metric::RougeL) => "ROUGE-L",
            ValMetric::Caption(Metric::CiderD) => "CIDEr",
            other => other.names()[0],
        }
    }
}

impl FromStr for ValMetric {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "clip-s" | "clip_s" | "clipscore" => ValMetric::ClipS,
            "refclip-s" | "refclip_s" | "refclipscore" => ValMetric::RefClipS,
            "pac-s" | "pac_s" | "pacscore" => ValMetric::PacS,
            "refpac-s" | "refpac_s" | "refpacscore" => ValMetric::RefPacS,
            "reward" => ValMetric::Reward,
            _ => ValMetric::Caption(Metric::from_str(s).map_err(|_| {
                format!("unknown validation metric `{s}`: expected one of {METRIC_NAMES}")
            })?),
        })
    }
}

impl Serialize for ValMetric {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for ValMetric {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether a larger or a smaller value of `best_by` is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Min,
    Max,
}

/// Which weights a stage leaves as `model.safetensors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Keep {
    /// The best by `best_by` (the final weights go to `final.safetensors`).
    Best,
    /// The weights after the last step.
    Final,
}

/// The `validation` table of a `train_captioner` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationSettings {
    /// Val shards: a file, a directory or a glob ([`crate::data::list_shards`]).
    pub shards: PathBuf,
    /// Validate after every `every` optimizer steps (and after the last
    /// step of the schedule). Must be at least 1.
    pub every: u64,
    /// Also validate before the first step (step 0): the start of the curves,
    /// and a candidate for the best model (default true).
    #[serde(default = "yes")]
    pub at_start: bool,
    /// The first `max_images` usable rows of the shards in file order
    /// (default: all).
    #[serde(default)]
    pub max_images: Option<usize>,
    /// Images per greedy-decoding chunk (default [`DEFAULT_BATCH_SIZE`]).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// What to compute (default `["CIDEr"]`), see [`ValMetric`].
    #[serde(default = "default_metrics")]
    pub metrics: Vec<ValMetric>,
    /// METEOR's data directory (default: `$DICOFLOW_METEOR_DATA`, else
    /// `.meteor`, as `make meteor-data` fills it). Read only for METEOR.
    #[serde(default)]
    pub meteor_data: Option<PathBuf>,
    /// CLIP safetensors for CLIP-S / RefCLIP-S, and its config (default:
    /// the stage's `backbone_config`).
    #[serde(default)]
    pub clip: Option<PathBuf>,
    #[serde(default)]
    pub clip_config: Option<ClipConfig>,
    /// PAC-S CLIP safetensors for PAC-S / RefPAC-S, and its config
    /// (default: the stage's `backbone_config`).
    #[serde(default)]
    pub pac: Option<PathBuf>,
    #[serde(default)]
    pub pac_config: Option<ClipConfig>,
    /// The logged value that selects the best model (`CIDEr`, `RefPAC-S`,
    /// `Bleu_4`, ...); must be one `metrics` computes. Absent: no selection.
    #[serde(default)]
    pub best_by: Option<String>,
    /// `max` (default for every metric offered: higher is better) or `min`.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// `best` (default with `best_by`: the model selected on validation, what
    /// the official trainer delivers) or `final` (default without `best_by`).
    #[serde(default)]
    pub keep: Option<Keep>,
    /// Preprocessing of the val images (default: CLIP's, at the backbone's
    /// input size).
    #[serde(default)]
    pub preprocess: Option<PreprocessConfig>,
    /// Column layout of the val shards (default: detected).
    #[serde(default)]
    pub layout: LayoutOptions,
}

fn yes() -> bool {
    true
}

fn default_batch_size() -> usize {
    DEFAULT_BATCH_SIZE
}

fn default_metrics() -> Vec<ValMetric> {
    vec![ValMetric::Caption(Metric::CiderD)]
}

fn setting(name: &'static str) -> impl Fn(String) -> TrainError {
    move |what| TrainError::Validation {
        setting: name,
        what,
    }
}

/// The logged name (without prefix) that `name` means among `computed`:
/// exact, or ignoring case, `-`/`_` and a `-D` suffix (`cider-d` → `CIDEr`,
/// `BLEU-4` → `Bleu_4`, `rouge-l` → `ROUGE_L`).
fn resolve_name(name: &str, computed: &[&'static str]) -> Option<&'static str> {
    let fold = |s: &str| {
        let s = s.to_ascii_lowercase().replace(['-', '_'], "");
        match s.as_str() {
            "ciderd" => "cider".to_owned(),
            _ => s,
        }
    };
    computed
        .iter()
        .find(|c| **c == name)
        .or_else(|| computed.iter().find(|c| fold(c) == fold(name)))
        .copied()
}

/// What the stage tells the validator about itself.
#[derive(Debug, Clone)]
pub struct StageContext<'a> {
    /// The stage's `out` directory.
    pub out: &'a Path,
    /// The frozen backbone's config (input size, default CLIP configs).
    pub backbone_config: &'a ClipConfig,
    /// Whether the stage has a reward (for `reward`).
    pub has_reward: bool,
    pub device: Device,
}

/// Runs validations and keeps the best weights of one stage.
pub struct Validator {
    settings: ValidationSettings,
    index: Arc<ShardIndex>,
    /// The synthetic world the val shards were generated from, if they were
    /// (its spec in their metadata): the oracle judges the captions too.
    world: Option<WorldSpec>,
    prep: PreprocessConfig,
    evaluator: Evaluator,
    clip: Option<ClipScorer>,
    pac: Option<ClipScorer>,
    best_by: Option<BestBy>,
    keep: Keep,
    out: PathBuf,
    best: Option<BestSoFar>,
    /// The best step a written checkpoint refers to (its weights are kept).
    pinned: Option<u64>,
    /// The last step validated in this run.
    last_validated: Option<u64>,
    annotations_written: bool,
}

/// What one pass over the validation split produced, in the split's order.
struct CaptionedSplit {
    keys: Vec<String>,
    /// The greedy caption of each image.
    captions: Vec<String>,
    /// The reference captions of each image.
    references: Vec<Vec<String>>,
    /// Sums over images of the CLIP-based scores and the reward, by metric name.
    sums: BTreeMap<&'static str, f64>,
    /// Rows skipped: by the source, or failing to decode or preprocess.
    skipped: u64,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("settings", &self.settings)
            .field("best", &self.best)
            .finish()
    }
}

fn load_scorer(
    path: &Path,
    cfg: &ClipConfig,
    score: ScoreConfig,
    size: u32,
    name: &'static str,
    device: Device,
) -> Result<ClipScorer, TrainError> {
    if cfg.vision.image_size != size as i64 {
        return Err(setting(name)(format!(
            "this CLIP takes {} px images but the val images are preprocessed to {size} px; \
             set `validation.preprocess.size` (or use weights of the backbone's size)",
            cfg.vision.image_size
        )));
    }
    let (_vs, clip) =
        Clip::from_safetensors(path, cfg, device).map_err(|e| setting(name)(e.to_string()))?;
    let tok = ClipTokenizer::openai().map_err(|e| setting(name)(e.to_string()))?;
    Ok(ClipScorer::new(clip, tok, score))
}

impl Validator {
    /// Checks the settings and loads what they name. Errors
    /// ([`TrainError::Validation`], naming the setting): `every`,
    /// `max_images` or `batch_size` = 0, no
    /// metric, an unreadable val split, METEOR without its data, CLIP-S
    /// without `clip`, PAC-S without `pac`, `reward` in a stage without one,
    /// `best_by` naming a value not computed, `keep = "best"` without
    /// `best_by`.
    pub fn try_new(settings: ValidationSettings, ctx: &StageContext) -> Result<Self, TrainError> {
        if settings.every == 0 {
            return Err(setting("validation.every")(
                "must be at least 1 (optimizer steps between validations)".into(),
            ));
        }
        if settings.max_images == Some(0) {
            return Err(setting("validation.max_images")(
                "must be at least 1 (leave it out for the whole split)".into(),
            ));
        }
        if settings.batch_size == 0 {
            return Err(setting("validation.batch_size")(
                "must be at least 1".into(),
            ));
        }
        if settings.metrics.is_empty() {
            return Err(setting("validation.metrics")(format!(
                "names no metric; choose from {METRIC_NAMES}"
            )));
        }
        let has = |m: ValMetric| settings.metrics.contains(&m);
        let mut evaluator = Evaluator::new();
        if has(ValMetric::Caption(Metric::Meteor)) {
            let dir = crate::metrics::meteor::data_dir(settings.meteor_data.as_deref());
            let meteor = Meteor::load(&dir).map_err(|e| {
                setting("validation.meteor_data")(format!(
                    "METEOR is asked for in `validation.metrics` but its data cannot be \
                     loaded: {e}"
                ))
            })?;
            evaluator = evaluator.with_meteor(Arc::new(meteor));
        }
        let prep = settings.preprocess.clone().unwrap_or(PreprocessConfig {
            size: ctx.backbone_config.vision.image_size as u32,
            ..Default::default()
        });
        let clip = if has(ValMetric::ClipS) || has(ValMetric::RefClipS) {
            let path = settings.clip.as_deref().ok_or_else(|| {
                setting("validation.clip")(
                    "CLIP-S / RefCLIP-S are asked for: set `validation.clip` to CLIP \
                     safetensors (e.g. converted OpenAI ViT-B/32)"
                        .into(),
                )
            })?;
            let cfg = settings.clip_config.as_ref().unwrap_or(ctx.backbone_config);
            Some(load_scorer(
                path,
                cfg,
                ScoreConfig::clip_s(),
                prep.size,
                "validation.clip",
                ctx.device,
            )?)
        } else {
            None
        };
        let pac = if has(ValMetric::PacS) || has(ValMetric::RefPacS) {
            let path = settings.pac.as_deref().ok_or_else(|| {
                setting("validation.pac")(
                    "PAC-S / RefPAC-S are asked for: set `validation.pac` to the PAC-S \
                     CLIP safetensors (`dicoflow convert weights clip_ViT-B-32.pth ...`)"
                        .into(),
                )
            })?;
            let cfg = settings.pac_config.as_ref().unwrap_or(ctx.backbone_config);
            Some(load_scorer(
                path,
                cfg,
                ScoreConfig::pac_s(),
                prep.size,
                "validation.pac",
                ctx.device,
            )?)
        } else {
            None
        };
        if has(ValMetric::Reward) && !ctx.has_reward {
            return Err(setting("validation.metrics")(
                "`reward` is the stage's own reward, and this stage has none (XE and \
                 offline DiCO): remove it, or use CLIP-S / PAC-S with weights"
                    .into(),
            ));
        }
        let computed: Vec<&'static str> = settings
            .metrics
            .iter()
            .flat_map(|m| m.names().iter().copied())
            .collect();
        let best_by = match &settings.best_by {
            None => None,
            Some(name) => {
                let metric = resolve_name(name, &computed).ok_or_else(|| {
                    setting("validation.best_by")(format!(
                        "`{name}` is not among the computed values ({}); add its metric to \
                         `validation.metrics`",
                        computed.join(", ")
                    ))
                })?;
                Some(BestBy {
                    metric: metric.to_owned(),
                    higher_is_better: settings.mode != Some(Mode::Min),
                })
            }
        };
        if settings.mode.is_some() && best_by.is_none() {
            return Err(setting("validation.mode")(
                "only means something with `validation.best_by`".into(),
            ));
        }
        let keep = match (settings.keep, &best_by) {
            (Some(Keep::Best), None) => {
                return Err(setting("validation.keep")(
                    "`best` needs `validation.best_by` (the metric that selects it)".into(),
                ))
            }
            (Some(k), _) => k,
            (None, Some(_)) => Keep::Best,
            (None, None) => Keep::Final,
        };
        let index = ShardIndex::open(&settings.shards, &settings.layout)
            .map_err(|e| setting("validation.shards")(e.to_string()))?;
        if index.num_rows() == 0 {
            return Err(setting("validation.shards")(format!(
                "{}: no rows",
                settings.shards.display()
            )));
        }
        let world = crate::data::world::stored_spec(&settings.shards)
            .map_err(|e| setting("validation.shards")(e.to_string()))?;
        Ok(Self {
            index: Arc::new(index),
            world,
            prep,
            evaluator,
            clip,
            pac,
            best_by,
            keep,
            out: ctx.out.to_path_buf(),
            best: None,
            pinned: None,
            last_validated: None,
            annotations_written: false,
            settings,
        })
    }

    /// The settings.
    pub fn settings(&self) -> &ValidationSettings {
        &self.settings
    }

    /// Which weights `model.safetensors` will hold.
    pub fn keep(&self) -> Keep {
        self.keep
    }

    /// The best validation result so far.
    pub fn best(&self) -> Option<&BestSoFar> {
        self.best.as_ref()
    }

    /// Whether a validation is due after `step` optimizer steps of
    /// `total_steps`: step 0 with `at_start`, every `every` steps, and the
    /// last step; once per step.
    pub fn due(&self, step: u64, total_steps: u64) -> bool {
        if self.last_validated == Some(step) {
            return false;
        }
        if step == 0 {
            return self.settings.at_start;
        }
        step.is_multiple_of(self.settings.every) || step == total_steps
    }

    /// Continue after a resume from a checkpoint of optimizer step `step` that
    /// recorded `best`: it becomes the best so far, its weights file must
    /// exist (when `best_by` selects), and best weights of later steps
    /// (written by the interrupted run after that checkpoint) are removed, as
    /// are the lines of `out/validation/log.jsonl` after `step`, which the
    /// resumed run validates and logs again.
    pub fn resume(&mut self, best: Option<&BestSoFar>, step: u64) -> Result<(), TrainError> {
        self.last_validated = Some(step);
        let log = self.log_path();
        crate::flow::log_rewind::rewind_jsonl(&log, step, |v| {
            v.get("val/step")?.as_f64().map(|s| s as u64)
        })
        .map_err(|e| io(&log, e))?;
        let Some(by) = &self.best_by else {
            return Ok(());
        };
        if let Some(b) = best {
            if b.metric != by.metric {
                return Err(setting("validation.best_by")(format!(
                    "the checkpoint resumed from selected by `{}`, this run by `{}`; resume \
                     with the same `best_by`, or start again without `resume`",
                    b.metric, by.metric
                )));
            }
            let file = self.best_file(b.step);
            if !file.is_file() {
                return Err(TrainError::State {
                    path: file,
                    what: "the best weights the checkpoint refers to are missing".into(),
                });
            }
        }
        self.best = best.cloned();
        self.pinned = best.map(|b| b.step);
        self.prune_best()
    }

    /// A run that does not resume starts a new `out/validation/log.jsonl`
    /// (a resumed one appends to the interrupted run's, cut back by
    /// [`Validator::resume`]).
    pub fn start_fresh(&self) -> Result<(), TrainError> {
        let path = self.log_path();
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path, e)),
            _ => Ok(()),
        }
    }

    /// Record that a checkpoint holding [`Validator::best`] was written: its
    /// best weights are kept from now on, older ones removed.
    pub fn checkpoint_written(&mut self) -> Result<(), TrainError> {
        self.pinned = self.best.as_ref().map(|b| b.step);
        self.prune_best()
    }

    fn best_file(&self, step: u64) -> PathBuf {
        self.out
            .join(BEST_DIR)
            .join(format!("step-{step:08}.safetensors"))
    }

    fn prune_best(&self) -> Result<(), TrainError> {
        let dir = self.out.join(BEST_DIR);
        if !dir.is_dir() {
            return Ok(());
        }
        let keep: Vec<PathBuf> = [self.best.as_ref().map(|b| b.step), self.pinned]
            .into_iter()
            .flatten()
            .map(|s| self.best_file(s))
            .collect();
        let entries = std::fs::read_dir(&dir).map_err(|e| io(&dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| io(&dir, e))?.path();
            let is_weights = path.extension().is_some_and(|x| x == "safetensors");
            if is_weights && !keep.contains(&path) {
                std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
            }
        }
        Ok(())
    }

    /// Caption the val split with `policy` after `step` optimizer steps,
    /// score the captions (with `reward` too, the training objective's, for
    /// the `reward` metric), update the best weights, and return the logged
    /// values (`val/NAME`, `val/step`, `val/images`, `val/skipped`).
    pub fn validate(
        &mut self,
        policy: &Policy,
        reward: Option<&mut Reward>,
        step: u64,
    ) -> Result<BTreeMap<String, f64>, TrainError> {
        self.last_validated = Some(step);
        let CaptionedSplit {
            keys,
            captions,
            references,
            sums,
            skipped,
        } = self.caption_split(policy, reward)?;
        if keys.is_empty() {
            return Err(setting("validation.shards")(format!(
                "{}: no usable image ({skipped} rows skipped)",
                self.settings.shards.display()
            )));
        }
        let mut values = BTreeMap::new();
        let caption_metrics: Vec<Metric> = self
            .settings
            .metrics
            .iter()
            .filter_map(|m| match m {
                ValMetric::Caption(c) => Some(*c),
                _ => None,
            })
            .collect();
        if !caption_metrics.is_empty() {
            let samples: Vec<Sample> = keys
                .iter()
                .zip(&captions)
                .zip(&references)
                .map(|((k, c), r)| Sample {
                    image_id: ImageId::Str(k.clone()),
                    references: r.clone(),
                    candidate: c.clone(),
                })
                .collect();
            let eval = self
                .evaluator
                .evaluate(&samples, &caption_metrics)
                .map_err(|e| setting("validation.metrics")(e.to_string()))?;
            for s in &eval.scores {
                values.insert(s.name.to_owned(), s.corpus);
            }
        }
        if let Some(quality) = self.oracle_quality(&keys, &captions, &references)? {
            values.insert("grammatical".to_owned(), quality.grammatical);
            values.insert("precision".to_owned(), quality.precision);
            values.insert("recall".to_owned(), quality.recall);
        }
        let wanted: Vec<&str> = self
            .settings
            .metrics
            .iter()
            .flat_map(|m| m.names().iter().copied())
            .collect();
        for (name, sum) in sums {
            if wanted.contains(&name) {
                values.insert(name.to_owned(), sum / keys.len() as f64);
            }
        }
        self.write_captions(step, &keys, &captions, &references)?;
        if let Some(by) = self.best_by.clone() {
            let value = values.get(&by.metric).copied().unwrap_or(f64::NAN);
            if by.improves(value, self.best.as_ref()) {
                self.save_best(policy, by.metric.clone(), value, step)?;
            }
        }
        let mut logged: BTreeMap<String, f64> = values
            .into_iter()
            .map(|(k, v)| (format!("{LOG_PREFIX}{k}"), v))
            .collect();
        logged.insert(format!("{LOG_PREFIX}step"), step as f64);
        logged.insert(format!("{LOG_PREFIX}images"), keys.len() as f64);
        logged.insert(format!("{LOG_PREFIX}skipped"), skipped as f64);
        self.append_log(&logged)?;
        Ok(logged)
    }

    /// On a synthetic world's val split, the oracle judge's grammaticality
    /// and factual precision and recall of `captions`
    /// ([`crate::metrics::quality::caption_quality`], each image's scene
    /// regenerated from its key); `None` on other data, or when a key is not
    /// one of the world's rows.
    fn oracle_quality(
        &self,
        keys: &[String],
        captions: &[String],
        references: &[Vec<String>],
    ) -> Result<Option<CaptionQuality>, TrainError> {
        let Some(world) = &self.world else {
            return Ok(None);
        };
        let Some(scenes) = keys
            .iter()
            .map(|k| crate::data::world::scene_of_key(world, k))
            .collect::<Option<Vec<_>>>()
        else {
            return Ok(None);
        };
        caption_quality(&scenes, captions, references)
            .map(Some)
            .map_err(|e| setting("validation.shards")(e.to_string()))
    }

    /// Greedy captions of the split, and the sums over images of the
    /// CLIP-based scores and the reward (scored chunk by chunk on the same
    /// pixels).
    fn caption_split(
        &mut self,
        policy: &Policy,
        reward: Option<&mut Reward>,
    ) -> Result<CaptionedSplit, TrainError> {
        let (mut clip, mut pac) = (self.clip.take(), self.pac.take());
        let result = self.caption_chunks(policy, reward, clip.as_mut(), pac.as_mut());
        self.clip = clip;
        self.pac = pac;
        result
    }

    fn caption_chunks(
        &self,
        policy: &Policy,
        mut reward: Option<&mut Reward>,
        mut clip: Option<&mut ClipScorer>,
        mut pac: Option<&mut ClipScorer>,
    ) -> Result<CaptionedSplit, TrainError> {
        let source = SourceConfig {
            shuffle: false,
            epochs: Some(1),
            ..Default::default()
        };
        let shards = setting("validation.shards");
        let mut src = ShardSource::new(self.index.clone(), source, 0, 1)
            .map_err(|e| shards(e.to_string()))?;
        let max = self.settings.max_images.unwrap_or(usize::MAX);
        let wants_reward = self.settings.metrics.contains(&ValMetric::Reward);
        let (mut keys, mut captions, mut references) = (Vec::new(), Vec::new(), Vec::new());
        let mut sums: BTreeMap<&'static str, f64> = BTreeMap::new();
        let mut skipped = 0u64;
        let mut chunk: Vec<RawSample> = Vec::new();
        loop {
            let item = if keys.len() + chunk.len() < max {
                src.next_item().map_err(|e| shards(e.to_string()))?
            } else {
                None
            };
            let end = item.is_none();
            match item {
                Some(SourceItem::Sample(s)) => chunk.push(s),
                Some(SourceItem::Skipped(_)) => skipped += 1,
                None => {}
            }
            let full = chunk.len() >= self.settings.batch_size;
            if !(full || (end && !chunk.is_empty())) {
                if end {
                    break;
                }
                continue;
            }
            let (ok, pixels, failed) = self.prepare(std::mem::take(&mut chunk))?;
            skipped += failed;
            if !ok.is_empty() {
                let caps = tch::no_grad(|| policy.caption(&pixels))?;
                let k: Vec<String> = ok.iter().map(|s| s.key.clone()).collect();
                let r: Vec<Vec<String>> = ok.into_iter().map(|s| s.captions).collect();
                for (scorer, name, ref_name) in [
                    (clip.as_deref_mut(), "CLIP-S", "RefCLIP-S"),
                    (pac.as_deref_mut(), "PAC-S", "RefPAC-S"),
                ] {
                    let Some(scorer) = scorer else { continue };
                    scorer.add_images(&k, &pixels)?;
                    let s = scorer.score_with_refs(&k, &caps, &r);
                    scorer.clear_images();
                    let s = s?;
                    *sums.entry(name).or_default() +=
                        s.score.iter().map(|&v| v as f64).sum::<f64>();
                    *sums.entry(ref_name).or_default() +=
                        s.ref_score.iter().map(|&v| v as f64).sum::<f64>();
                }
                if wants_reward {
                    if let Some(reward) = reward.as_deref_mut() {
                        let s = reward.score(&k, &pixels, &caps, &r);
                        reward.clear_images();
                        *sums.entry("reward").or_default() +=
                            s?.iter().map(|&v| v as f64).sum::<f64>();
                    }
                }
                keys.extend(k);
                references.extend(r);
                captions.extend(caps);
            }
            if end {
                break;
            }
        }
        Ok(CaptionedSplit {
            keys,
            captions,
            references,
            sums,
            skipped,
        })
    }

    /// Decode and preprocess a chunk on a few threads (order kept):
    /// the usable samples, their pixels `[n, 3, s, s]`, and the failures.
    fn prepare(&self, chunk: Vec<RawSample>) -> Result<(Vec<RawSample>, Tensor, u64), TrainError> {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 8)
            .min(chunk.len().max(1));
        let per = chunk.len().div_ceil(threads).max(1);
        let prepared: Vec<Option<Vec<f32>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = chunk
                .chunks(per)
                .map(|part| {
                    let prep = self.prep.clone();
                    scope.spawn(move || {
                        let mut p = Preprocessor::new(prep);
                        part.iter()
                            .map(|s| p.process(&s.image).ok())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let mut all = Vec::with_capacity(chunk.len());
            for h in handles {
                // A panicking decoder would shift every later image against
                // its key: fail the validation instead.
                all.extend(h.join().map_err(|_| {
                    setting("validation.shards")("an image decoder thread panicked".into())
                })?);
            }
            Ok::<_, TrainError>(all)
        })?;
        let size = self.prep.size as i64;
        let mut flat = Vec::new();
        let mut ok = Vec::new();
        let mut failed = 0;
        for (s, px) in chunk.into_iter().zip(prepared) {
            match px {
                Some(px) => {
                    flat.extend_from_slice(&px);
                    ok.push(s);
                }
                None => failed += 1,
            }
        }
        let pixels = Tensor::f_from_slice(&flat)?.f_view([ok.len() as i64, 3, size, size])?;
        Ok((ok, pixels, failed))
    }

    /// `out/validation/log.jsonl`.
    fn log_path(&self) -> PathBuf {
        self.out.join(CAPTIONS_DIR).join(LOG_FILE)
    }

    /// One line per validation in `out/validation/log.jsonl` (flushed).
    fn append_log(&self, values: &BTreeMap<String, f64>) -> Result<(), TrainError> {
        use std::io::Write;
        let path = self.log_path();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        writeln!(f, "{}", serde_json::json!(values)).map_err(|e| io(&path, e))
    }

    fn write_captions(
        &mut self,
        step: u64,
        keys: &[String],
        captions: &[String],
        references: &[Vec<String>],
    ) -> Result<(), TrainError> {
        let dir = self.out.join(CAPTIONS_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        if !self.annotations_written {
            let images: Vec<_> = keys.iter().map(|k| serde_json::json!({"id": k})).collect();
            let annotations: Vec<_> = keys
                .iter()
                .zip(references)
                .flat_map(|(k, refs)| {
                    refs.iter()
                        .map(move |r| serde_json::json!({"image_id": k, "caption": r}))
                })
                .collect();
            let doc = serde_json::json!({"images": images, "annotations": annotations});
            write_atomic(&dir.join("annotations.json"), doc.to_string().as_bytes())?;
            self.annotations_written = true;
        }
        let results: Vec<_> = keys
            .iter()
            .zip(captions)
            .map(|(k, c)| serde_json::json!({"image_id": k, "caption": c}))
            .collect();
        let path = dir.join(format!("step-{step:08}.json"));
        write_atomic(
            &path,
            serde_json::Value::from(results).to_string().as_bytes(),
        )
    }

    fn save_best(
        &mut self,
        policy: &Policy,
        metric: String,
        value: f64,
        step: u64,
    ) -> Result<(), TrainError> {
        let dir = self.out.join(BEST_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let file = self.best_file(step);
        // The writer picks the format by extension: keep `.safetensors` last.
        let tmp = file.with_extension("tmp.safetensors");
        policy.save_weights(&tmp)?;
        std::fs::rename(&tmp, &file).map_err(|e| io(&file, e))?;
        let best = BestSoFar {
            metric,
            value,
            step,
        };
        let record = serde_json::json!({
            "metric": best.metric,
            "value": best.value,
            "step": best.step,
            "weights": file.file_name().map(|n| n.to_string_lossy().into_owned()),
        });
        write_atomic(&dir.join(BEST_FILE), record.to_string().as_bytes())?;
        self.best = Some(best);
        self.prune_best()
    }

    /// Write the stage's `model.safetensors` at `path`: the best weights
    /// (and the final ones to [`FINAL_WEIGHTS_FILE`] beside it) with
    /// [`Keep::Best`], else the final weights. Error: `keep = "best"` and no
    /// validation produced a value of `best_by` (the final weights are
    /// written to `final.safetensors` first).
    pub fn write_model(&self, policy: &Policy, path: &Path) -> Result<(), TrainError> {
        if self.keep == Keep::Final {
            return policy.save_weights(path);
        }
        let final_path = path.with_file_name(FINAL_WEIGHTS_FILE);
        policy.save_weights(&final_path)?;
        let Some(best) = &self.best else {
            return Err(TrainError::State {
                path: path.to_path_buf(),
                what: format!(
                    "keep = \"best\" but no validation produced a value of `{}`; the final \
                     weights are in {}",
                    self.best_by.as_ref().map_or("", |b| b.metric.as_str()),
                    final_path.display()
                ),
            });
        };
        let src = self.best_file(best.step);
        let tmp = path.with_extension("safetensors.tmp");
        std::fs::copy(&src, &tmp).map_err(|e| io(&src, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
        tracing::info!(
            "kept the best model by {}: {} at step {}",
            best.metric,
            best.value,
            best.step
        );
        Ok(())
    }
}

fn io(path: &Path, source: std::io::Error) -> TrainError {
    TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_parse_in_any_case() {
        assert_eq!("refpac-s".parse::<ValMetric>().unwrap(), ValMetric::RefPacS);
        assert_eq!(
            "CIDEr-D".parse::<ValMetric>().unwrap(),
            ValMetric::Caption(Metric::CiderD)
        );
        let err = "SPICE".parse::<ValMetric>().unwrap_err();
        assert!(err.contains("unknown validation metric `SPICE`"), "{err}");
    }

    #[test]
    fn best_by_names_resolve_to_logged_values() {
        let computed = ["Bleu_1", "Bleu_4", "CIDEr", "ROUGE_L", "RefPAC-S"];
        assert_eq!(resolve_name("BLEU-4", &computed), Some("Bleu_4"));
        assert_eq!(resolve_name("cider-d", &computed), Some("CIDEr"));
        assert_eq!(resolve_name("ROUGE-L", &computed), Some("ROUGE_L"));
        assert_eq!(resolve_name("refpac_s", &computed), Some("RefPAC-S"));
        assert_eq!(resolve_name("METEOR", &computed), None);
    }

    #[test]
    fn ties_keep_the_earlier_best_and_nan_never_wins() {
        let max = BestBy {
            metric: "CIDEr".into(),
            higher_is_better: true,
        };
        let min = BestBy {
            higher_is_better: false,
            ..max.clone()
        };
        let b = BestSoFar {
            metric: "CIDEr".into(),
            value: 1.0,
            step: 3,
        };
        assert!(max.improves(0.5, None));
        assert!(!max.improves(1.0, Some(&b)));
        assert!(max.improves(1.5, Some(&b)));
        assert!(min.improves(0.5, Some(&b)));
        assert!(!min.improves(1.5, Some(&b)));
        assert!(!max.improves(f64::NAN, None));
    }
}
