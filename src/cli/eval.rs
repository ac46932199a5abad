//! `dicoflow eval`: score a COCO results file against COCO caption annotations,
//! with the caption metrics and, given images and CLIP weights, CLIP-S,
//! RefCLIP-S, PAC-S and RefPAC-S (computed as `dicoflow score` computes them).

use std::path::PathBuf;

use anyhow::Context;
pub use dicoflow_metrics::cli::CaptionArgs;
use dicoflow_metrics::cli::{caption_table, parse_metrics, write_outputs, Column};

use crate::device::DeviceName;
use crate::metrics::coco::ImageId;
use crate::reward::ScoreConfig;

use super::score::{clip_config, clip_scores, corpus_mean, file_names_of, ClipModel, ImageSource};

/// Arguments of `dicoflow eval`: those of `dicoflow-eval` (the caption
/// metrics) and the CLIP-based scores'.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Annotations, results, `--metrics`, `--meteor-data`, `--json`,
    /// `--per-image`: as `dicoflow-eval`.
    #[command(flatten)]
    pub caption: CaptionArgs,
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

/// The text key of an image id for the image lookup (`391895`, `image1`),
/// as `dicoflow score` keys the results' ids.
fn lookup_key(id: &ImageId) -> String {
    match id {
        ImageId::Int(i) => i.to_string(),
        ImageId::Str(s) => s.clone(),
    }
}

/// Runs the evaluation and prints the corpus values.
pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    let metrics = parse_metrics(&args.caption)?;
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
    let caption = caption_table(&args.caption, &metrics)?;
    let samples = caption.samples;
    let mut table = caption.table;
    if let Some(images) = &args.images {
        let device = args
            .device
            .resolve()
            .with_context(|| format!("--device {}", args.device))?;
        let file_names = file_names_of(&args.caption.annotations)?;
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
                table.columns.push(Column {
                    name,
                    corpus: corpus_mean(values),
                    per_image: values.iter().map(|&x| x as f64).collect(),
                });
            }
        }
    }
    write_outputs(&args.caption, &table)
}
