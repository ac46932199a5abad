//! `caption`: greedy captions of every image plus evaluator scores, appended
//! to a JSONL file (one `{"key", "caption", "references"[, "score"]}` per image).

use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::device::DeviceName;
use crate::flow::{DeviceBatch, DeviceStage, FlowError, StageFailure};
use crate::model::captioner::{Backbone, CaptionerConfig};
use crate::model::clip::ClipConfig;
use crate::reward::{ClipScorer, ScoreConfig};
use crate::train::captioning::{CaptionTrainConfig, CaptionTrainer, Objective};
use crate::train::precision::Precision;
use crate::train::stages::setup::{build_err, default_device, device_of, load_scorer, load_text};
use crate::train::stages::tensors::batch_tensors;

/// Settings of `caption`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptionStageSettings {
    pub captioner: CaptionerConfig,
    pub weights: PathBuf,
    /// Word vocabulary (JSON); absent: CLIP BPE.
    #[serde(default)]
    pub vocab: Option<PathBuf>,
    pub backbone: PathBuf,
    pub backbone_config: ClipConfig,
    /// Evaluator for the per-caption score (CLIP-S by default); absent: no score.
    #[serde(default)]
    pub evaluator: Option<PathBuf>,
    /// The evaluator's CLIP config (default: `backbone_config`).
    #[serde(default)]
    pub evaluator_config: Option<ClipConfig>,
    #[serde(default = "ScoreConfig::clip_s")]
    pub score: ScoreConfig,
    /// JSONL output: one `{"key", "caption", "references"}` per image, plus
    /// `"score"` with an evaluator.
    pub out: PathBuf,
    /// `cpu` (default), `cuda`, `cuda:K` or `auto` ([`DeviceName`]).
    #[serde(default = "default_device")]
    pub device: DeviceName,
}

/// Captions every image and scores it with the evaluator.
pub struct CaptionStage {
    trainer: CaptionTrainer,
    scorer: Option<ClipScorer>,
    out: std::io::BufWriter<std::fs::File>,
}

impl CaptionStage {
    pub fn try_new(s: CaptionStageSettings) -> Result<Self, FlowError> {
        let err = build_err("caption");
        let device = device_of("caption", s.device)?;
        let text = load_text(s.vocab.as_deref()).map_err(&err)?;
        let backbone = Backbone::from_clip_safetensors(&s.backbone, &s.backbone_config, device)
            .map_err(|e| err(e.to_string()))?;
        let train = CaptionTrainConfig {
            objective: Objective::Xe,
            optimizer: Default::default(),
            schedule: Default::default(),
            grad_clip: None,
            dico: Default::default(),
            candidates: 1,
            temperature: 1.0,
            seed: 0,
            accumulate: 1,
            label_smoothing: 0.0,
            precision: Precision::Fp32,
        };
        let trainer = CaptionTrainer::new(
            &s.captioner,
            text,
            backbone,
            Some(&s.weights),
            None,
            train,
            device,
        )
        .map_err(|e| err(e.to_string()))?;
        let evaluator_config = s.evaluator_config.as_ref().unwrap_or(&s.backbone_config);
        let scorer = s
            .evaluator
            .as_ref()
            .map(|p| load_scorer(p, evaluator_config, s.score.clone(), device))
            .transpose()
            .map_err(&err)?;
        if let Some(dir) = s.out.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
        }
        let file =
            std::fs::File::create(&s.out).map_err(|e| err(format!("{}: {e}", s.out.display())))?;
        Ok(Self {
            trainer,
            scorer,
            out: std::io::BufWriter::new(file),
        })
    }
}

impl DeviceStage for CaptionStage {
    fn process(&mut self, batch: &mut DeviceBatch) -> Result<(), StageFailure> {
        if batch.samples.is_empty() {
            return Ok(());
        }
        let (pixels, keys, references) = batch_tensors(batch)?;
        let captions = tch::no_grad(|| self.trainer.caption(&pixels))
            .map_err(|e| StageFailure::new("captioning failed").with_detail(e))?;
        let scores = match self.scorer.as_mut() {
            Some(scorer) => {
                scorer
                    .add_images(&keys, &pixels)
                    .map_err(|e| StageFailure::new("image scoring failed").with_detail(e))?;
                let scores = scorer
                    .score(&keys, &captions)
                    .map_err(|e| StageFailure::new("caption scoring failed").with_detail(e))?;
                scorer.clear_images();
                Some(scores)
            }
            None => None,
        };
        for (i, (k, c)) in keys.iter().zip(&captions).enumerate() {
            let mut line = serde_json::json!({"key": k, "caption": c, "references": references[i]});
            if let Some(scores) = &scores {
                line["score"] = serde_json::json!(scores[i]);
            }
            writeln!(self.out, "{line}")
                .map_err(|e| StageFailure::new("captions not written").with_detail(e))?;
        }
        self.out
            .flush()
            .map_err(|e| StageFailure::new("captions not written").with_detail(e))?;
        if let Some(scores) = &scores {
            let sum: f64 = scores.iter().map(|&s| s as f64).sum();
            batch
                .metrics
                .insert("caption/score".into(), sum / keys.len() as f64);
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), StageFailure> {
        self.out
            .flush()
            .map_err(|e| StageFailure::new("captions not written").with_detail(e))
    }
}
