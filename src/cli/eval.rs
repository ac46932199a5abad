//! `dicoflow eval`: score a COCO results file against COCO caption annotations.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::metrics::coco::{load_results, match_results, Annotations};
use crate::metrics::{meteor, Evaluator, Meteor, Metric};

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
    /// METEOR's data (`--meteor-data`).
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
    /// Write per-image scores to this JSON file.
    #[arg(long, value_name = "OUT.json")]
    pub per_image: Option<PathBuf>,
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
    let metrics = args
        .metrics
        .iter()
        .map(|m| m.parse::<Metric>())
        .collect::<Result<Vec<_>, _>>()?;
    let text = std::fs::read_to_string(&args.annotations)
        .with_context(|| format!("reading {}", args.annotations.display()))?;
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

    if let Some(path) = &args.per_image {
        let rows: Vec<serde_json::Value> = eval
            .image_ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let mut row = serde_json::Map::new();
                row.insert("image_id".into(), serde_json::json!(id));
                for s in &eval.scores {
                    row.insert(s.name.into(), serde_json::json!(s.per_image[i]));
                }
                serde_json::Value::Object(row)
            })
            .collect();
        let text = serde_json::to_string(&rows)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        let obj: serde_json::Map<String, serde_json::Value> = eval
            .scores
            .iter()
            .map(|s| (s.name.to_string(), serde_json::json!(s.corpus)))
            .collect();
        writeln!(out, "{}", serde_json::Value::Object(obj))?;
    } else {
        writeln!(out, "{:<10} {:>10}", "metric", "value")?;
        for s in &eval.scores {
            writeln!(out, "{:<10} {:>10.6}", s.name, s.corpus)?;
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
