//! `dicoflow eval`: score a COCO results file against COCO caption annotations,
//! with the caption metrics and, given images and CLIP weights, CLIP-S,
//! RefCLIP-S, PAC-S and RefPAC-S (computed as `dicoflow score` computes them).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::device::DeviceName;
use crate::metrics::coco::{load_results, match_results, read_text, Annotations, ImageId};
use crate::metrics::{meteor, Evaluator, Meteor, Metric};
use crate::reward::ScoreConfig;

use super::score::{
    clip_config, clip_scores, corpus_mean, file_names_of, write_per_image, ClipModel, ImageSource,
};

/// Arguments of `dicoflow eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// COCO caption annotations (`{"images": [...], "annotations": [...]}`).
    #[arg(long)]
    pub annotations: PathBuf,
    /// Results: `[{"image_id": ..., "caption": ...}]`.
    #[arg(long)]
    pub results: PathBuf,
    /// Metrics to compute: bleu, meteor, rouge, cider. `meteor` needs
    /// METEOR's data (`--meteor-data`). SPICE is not offered (see
    /// docs/metrics.md). CLIP-S/RefCLIP-S and PAC-S/RefPAC-S are added by
    /// `--clip` and `--pac` (with `--images`), not named here.
    #[arg(long, value_delimiter = ',', default_value = "bleu,rouge,cider")]
    pub metrics: Vec<String>,
    /// Directory with METEOR 1.5's English data (paraphrase-en.gz,
    /// english.synsets, english.exceptions, english.words, english.prefixes),
    /// as `make meteor-data` writes it. Default: $DICOFLOW_METEOR_DATA, else
    /// ./.meteor. Read only when `--metrics` includes meteor.
    #[arg(long, value_name = "DIR")]
    pub meteor_data: Option<PathBuf>,
    /// Print one JSON object of metric name to value instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write per-image scores to this JSON file:
    /// `[{"image_id": .., "Bleu_1": .., ..., "CLIP-S": .., ...}]`, images in
    /// evaluation order.
    #[arg(long, value_name = "OUT.json")]
    pub per_image: Option<PathBuf>,
    /// Images of the results, for CLIP-S and PAC-S: a folder of image files
    /// or Parquet shards, with the lookup of `dicoflow score --images`.
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// CLIP weights (safetensors; OpenAI ViT-B/32 for the official numbers):
    /// adds CLIP-S and RefCLIP-S (w = 2.5). Needs `--images`.
    #[arg(long, value_name = "WEIGHTS")]
    pub clip: Option<PathBuf>,
    /// Architecture of `--clip`: a preset (`ViT-B-32`, `ViT-B-16`, `ViT-L-14`,
    /// `tiny`) or a JSON file.
    #[arg(long, default_value = "ViT-B-32")]
    pub clip_config: String,
    /// PAC-S weights (safetensors): adds PAC-S and RefPAC-S (w = 2.0). Needs
    /// `--images`.
    #[arg(long, value_name = "WEIGHTS")]
    pub pac: Option<PathBuf>,
    /// Architecture of `--pac` (as `--clip-config`).
    #[arg(long, default_value = "ViT-B-32")]
    pub pac_config: String,
    /// Device of the CLIP models: `cpu`, `cuda`, `cuda:K` or `auto`.
    #[arg(long, default_value = "auto")]
    pub device: DeviceName,
    /// Images per vision-tower batch.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
}

/// Names users may try in `--metrics` for the CLIP-based scores.
const CLIP_METRIC_NAMES: [&str; 8] = [
    "clip-s",
    "clips",
    "refclip-s",
    "refclips",
    "pac-s",
    "pacs",
    "refpac-s",
    "refpacs",
];

/// The text key of an image id for the image lookup (`391895`, `image1`),
/// as `dicoflow score` keys the results' ids.
fn lookup_key(id: &ImageId) -> String {
    match id {
        ImageId::Int(i) => i.to_string(),
        ImageId::Str(s) => s.clone(),
    }
}

/// The parts of a COCO captions file pycocotools needs and dicoflow's reader
/// does not.
#[derive(serde::Deserialize)]
struct ToolkitView {
    images: Option<serde::de::IgnoredAny>,
    annotations: Vec<AnnotationId>,
}

#[derive(serde::Deserialize)]
struct AnnotationId {
    id: Option<serde::de::IgnoredAny>,
}

/// Why pycocotools (and so `COCOEvalCap`) would fail on an annotations file
/// that `dicoflow eval` accepts: annotations without `id` (`COCO()` indexes
/// them by id: `KeyError: 'id'`), no `images` list (`loadRes` copies it).
/// dicoflow scores such files the same (it needs only `image_id` and
/// `caption`) and warns, so that the file is fixed before other tools see it.
fn toolkit_gaps(text: &str) -> Vec<String> {
    let Ok(view) = serde_json::from_str::<ToolkitView>(text) else {
        return Vec::new(); // the reader has already accepted it; nothing to add
    };
    let mut gaps = Vec::new();
    let without_id = view.annotations.iter().filter(|a| a.id.is_none()).count();
    if without_id > 0 {
        gaps.push(format!(
            "{without_id} of {} annotations have no `id`: scored here, but pycocotools \
             (COCOEvalCap) fails on this file with KeyError: 'id'",
            view.annotations.len()
        ));
    }
    if view.images.is_none() {
        gaps.push(
            "no `images` list: scored here over the annotated images, but pycocotools' \
             loadRes (COCOEvalCap) fails on this file"
                .to_owned(),
        );
    }
    gaps
}

/// Runs the evaluation and prints the corpus values.
pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    if let Some(m) = args
        .metrics
        .iter()
        .find(|m| CLIP_METRIC_NAMES.contains(&m.trim().to_ascii_lowercase().as_str()))
    {
        anyhow::bail!(
            "--metrics {m}: the CLIP-based scores are not chosen in --metrics; pass \
             --images with --clip WEIGHTS (CLIP-S, RefCLIP-S) and/or --pac WEIGHTS \
             (PAC-S, RefPAC-S)"
        );
    }
    let metrics = args
        .metrics
        .iter()
        .map(|m| m.parse::<Metric>())
        .collect::<Result<Vec<_>, _>>()?;
    let clip_models = [
        (
            &args.clip,
            "--clip",
            &args.clip_config,
            ScoreConfig::clip_s(),
        ),
        (&args.pac, "--pac", &args.pac_config, ScoreConfig::pac_s()),
    ];
    let wanted: Vec<_> = clip_models
        .iter()
        .filter_map(|(w, flag, c, s)| w.as_ref().map(|w| (w, *flag, *c, s)))
        .collect();
    match (&args.images, wanted.first()) {
        (Some(_), None) => anyhow::bail!(
            "--images is used only by the CLIP-based scores: add --clip WEIGHTS and/or \
             --pac WEIGHTS, or drop --images"
        ),
        (None, Some((_, flag, _, _))) => anyhow::bail!(
            "{flag} needs the images of the results: pass --images (a folder of image \
             files or Parquet shards)"
        ),
        _ => {}
    }
    let text = read_text(&args.annotations)?;
    let annotations = Annotations::from_json_str(&text, &args.annotations)?;
    for gap in toolkit_gaps(&text) {
        eprintln!("warning: {}: {gap}", args.annotations.display());
    }
    let results = load_results(&args.results)?;
    let samples = match_results(&annotations, &results)?;
    let mut evaluator = Evaluator::new();
    if metrics.contains(&Metric::Meteor) {
        let dir = meteor::data_dir(args.meteor_data.as_deref());
        let m = Meteor::load(&dir).context("--metrics meteor")?;
        evaluator = evaluator.with_meteor(Arc::new(m));
    }
    let eval = evaluator.evaluate(&samples, &metrics)?;

    // (name, corpus value, per-image values in evaluation order)
    let mut table: Vec<(String, f64, Vec<f64>)> = eval
        .scores
        .iter()
        .map(|s| (s.name.to_string(), s.corpus, s.per_image.clone()))
        .collect();
    if let Some(images) = &args.images {
        let device = args
            .device
            .resolve()
            .with_context(|| format!("--device {}", args.device))?;
        let file_names = file_names_of(&args.annotations)?;
        let source = ImageSource {
            images,
            file_names: &file_names,
        };
        let keys: Vec<String> = samples.iter().map(|s| lookup_key(&s.image_id)).collect();
        let captions: Vec<&str> = samples.iter().map(|s| s.candidate.as_str()).collect();
        let refs: Vec<Vec<String>> = samples.iter().map(|s| s.references.clone()).collect();
        for (weights, flag, config, score) in wanted {
            let cfg = clip_config(config).with_context(|| format!("{flag}-config"))?;
            let model = ClipModel {
                weights,
                config: &cfg,
                score: score.clone(),
            };
            let scores = clip_scores(
                &source,
                &model,
                &keys,
                &captions,
                Some(&refs),
                device,
                args.batch_size,
            )
            .with_context(|| flag.to_string())?;
            for (name, values) in scores.columns() {
                let per_image = values.iter().map(|&x| x as f64).collect();
                table.push((name, corpus_mean(values), per_image));
            }
        }
    }

    if let Some(path) = &args.per_image {
        let ids: Vec<serde_json::Value> = eval
            .image_ids
            .iter()
            .map(|id| serde_json::json!(id))
            .collect();
        let columns: Vec<(String, Vec<f64>)> = table
            .iter()
            .map(|(name, _, per_image)| (name.clone(), per_image.clone()))
            .collect();
        write_per_image(path, &ids, &columns)?;
    }

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        let obj: serde_json::Map<String, serde_json::Value> = table
            .iter()
            .map(|(name, corpus, _)| (name.clone(), serde_json::json!(corpus)))
            .collect();
        writeln!(out, "{}", serde_json::Value::Object(obj))?;
    } else {
        writeln!(out, "{:<10} {:>10}", "metric", "value")?;
        for (name, corpus, _) in &table {
            writeln!(out, "{name:<10} {corpus:>10.6}")?;
        }
        writeln!(
            out,
            "evaluated {} of {} annotated images",
            eval.image_ids.len(),
            annotations.images.len()
        )?;
    }
    Ok(())
}
