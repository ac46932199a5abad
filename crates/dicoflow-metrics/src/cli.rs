//! The command line of caption evaluation, shared by `dicoflow-eval` and
//! `dicoflow eval`: the flags ([`CaptionArgs`]), the caption metrics' table
//! ([`caption_table`]) and its output ([`write_outputs`]). `dicoflow eval`
//! flattens [`CaptionArgs`] into its own arguments, adds the CLIP-based columns
//! to the [`Table`] and writes it with the same function, so that both
//! commands accept the same flags and print the same JSON, per-image file and
//! errors.
//!
//! This module is a binary's edge: its errors are `anyhow` errors with the
//! flag or file as context; the library's errors stay typed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::coco::{load_results, match_results, read_text, Annotations, ImageId, Sample};
use crate::{meteor, Evaluator, Meteor, Metric};

/// The caption-metric arguments of `dicoflow-eval` and `dicoflow eval`.
#[derive(clap::Args, Debug, Clone)]
pub struct CaptionArgs {
    /// COCO caption annotations (`{"images": [...], "annotations": [...]}`).
    #[arg(long)]
    pub annotations: PathBuf,
    /// Results: `[{"image_id": ..., "caption": ...}]`.
    #[arg(long)]
    pub results: PathBuf,
    /// Metrics to compute: bleu, meteor, rouge, cider. `meteor` needs
    /// METEOR's data (`--meteor-data`). SPICE is not offered (see
    /// docs/metrics.md). CLIP-S/RefCLIP-S and PAC-S/RefPAC-S are added by
    /// `dicoflow eval --clip` and `--pac` (with `--images`), not named here.
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
}

/// Names users may try in `--metrics` for the CLIP-based scores.
const CLIP_METRIC_NAMES: [&str; 12] = [
    "clip",
    "refclip",
    "pac",
    "refpac",
    "clip-s",
    "clips",
    "refclip-s",
    "refclips",
    "pac-s",
    "pacs",
    "refpac-s",
    "refpacs",
];

/// The one-line message a command prints for `err`: its context chain joined
/// by `: `, as anyhow's `{:#}` writes it, but without a cause whose text an
/// outer message already quotes. Many errors (ours with `{source}` in their
/// message, and third-party ones) both print their cause and return it from
/// `source()`, so the plain chain says "No such file or directory" twice.
pub fn error_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// The metrics named by `--metrics`.
///
/// # Errors
/// A CLIP-based score named there (they come from `dicoflow eval --clip` /
/// `--pac`), an unknown metric name, or one metric named twice.
pub fn parse_metrics(args: &CaptionArgs) -> anyhow::Result<Vec<Metric>> {
    if let Some(m) = args
        .metrics
        .iter()
        .find(|m| CLIP_METRIC_NAMES.contains(&m.trim().to_ascii_lowercase().as_str()))
    {
        anyhow::bail!(
            "--metrics {m}: the CLIP-based scores are not chosen in --metrics; pass \
             --images with --clip WEIGHTS (CLIP-S, RefCLIP-S) and/or --pac WEIGHTS \
             (PAC-S, RefPAC-S) to `dicoflow eval`"
        );
    }
    let mut metrics: Vec<Metric> = Vec::new();
    for name in &args.metrics {
        let metric = name.parse::<Metric>()?;
        // `bleu,bleu` or `cider,cider-d` is a slip in a script; the output
        // would show the metric once, so say so rather than guess.
        if metrics.contains(&metric) {
            anyhow::bail!(
                "--metrics names {} twice (the second time as `{name}`); name each metric once",
                metric.names().join("/")
            );
        }
        metrics.push(metric);
    }
    Ok(metrics)
}

/// One output column: a metric's corpus value and its per-image values.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// The toolkit's name (`Bleu_4`, `CIDEr`, `CLIP-S`).
    pub name: String,
    /// The corpus value.
    pub corpus: f64,
    /// Per image, in evaluation order ([`Table::image_ids`]).
    pub per_image: Vec<f64>,
}

/// Everything `eval` prints or writes.
#[derive(Debug, Clone)]
pub struct Table {
    /// The evaluated images, in evaluation order.
    pub image_ids: Vec<ImageId>,
    /// How many images the annotations hold.
    pub annotated: usize,
    /// The columns, in output order.
    pub columns: Vec<Column>,
}

/// The caption metrics' part of an evaluation: the matched samples (for the
/// CLIP-based scores of `dicoflow eval`) and the table.
#[derive(Debug)]
pub struct CaptionEval {
    /// Result captions matched to their references, in evaluation order.
    pub samples: Vec<Sample>,
    /// The caption metrics' columns.
    pub table: Table,
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
/// that `eval` accepts: annotations without `id` (`COCO()` indexes them by
/// id: `KeyError: 'id'`), no `images` list (`loadRes` copies it). dicoflow
/// scores such files the same (it needs only `image_id` and `caption`) and
/// warns, so that the file is fixed before other tools see it.
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

/// Reads the annotations and results, matches them as the toolkit does and
/// computes `metrics` (from [`parse_metrics`]). Warnings about annotation
/// files the toolkit would refuse go to stderr.
///
/// # Errors
/// Unreadable or malformed files, results that do not match the annotations,
/// METEOR without its data (the message says how to get it), and the
/// evaluator's errors, each with its file or flag as context.
pub fn caption_table(args: &CaptionArgs, metrics: &[Metric]) -> anyhow::Result<CaptionEval> {
    let text = read_text(&args.annotations)?;
    let annotations = Annotations::from_json_str(&text, &args.annotations)?;
    for gap in toolkit_gaps(&text) {
        eprintln!("warning: {}: {gap}", args.annotations.display());
    }
    let results = load_results(&args.results)?;
    let samples = match_results(&annotations, &results).with_context(|| {
        format!(
            "{} against {}",
            args.results.display(),
            args.annotations.display()
        )
    })?;
    let mut evaluator = Evaluator::new();
    if metrics.contains(&Metric::Meteor) {
        let dir = meteor::data_dir(args.meteor_data.as_deref());
        let m = Meteor::load(&dir).context("--metrics meteor")?;
        evaluator = evaluator.with_meteor(Arc::new(m));
    }
    let eval = evaluator.evaluate(&samples, metrics)?;
    let columns = eval
        .scores
        .into_iter()
        .map(|s| Column {
            name: s.name.to_string(),
            corpus: s.corpus,
            per_image: s.per_image,
        })
        .collect();
    Ok(CaptionEval {
        samples,
        table: Table {
            image_ids: eval.image_ids,
            annotated: annotations.images.len(),
            columns,
        },
    })
}

/// Writes `columns` per image to `path` as a JSON array of
/// `{"image_id": .., NAME: value, ..}` objects, one per id, in order.
///
/// # Errors
/// The file cannot be written.
pub fn write_per_image(
    path: &Path,
    ids: &[serde_json::Value],
    columns: &[(String, Vec<f64>)],
) -> anyhow::Result<()> {
    let rows: Vec<serde_json::Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut row = serde_json::Map::new();
            row.insert("image_id".into(), id.clone());
            for (name, values) in columns {
                row.insert(name.clone(), serde_json::json!(values[i]));
            }
            serde_json::Value::Object(row)
        })
        .collect();
    let text = serde_json::to_string(&rows)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Writes the per-image file (`--per-image`) and prints the corpus values to
/// stdout: one JSON object (`--json`) or a table.
///
/// # Errors
/// The per-image file or stdout cannot be written.
pub fn write_outputs(args: &CaptionArgs, table: &Table) -> anyhow::Result<()> {
    if let Some(path) = &args.per_image {
        let ids: Vec<serde_json::Value> = table
            .image_ids
            .iter()
            .map(|id| serde_json::json!(id))
            .collect();
        let columns: Vec<(String, Vec<f64>)> = table
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.per_image.clone()))
            .collect();
        write_per_image(path, &ids, &columns)?;
    }

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        let obj: serde_json::Map<String, serde_json::Value> = table
            .columns
            .iter()
            .map(|c| (c.name.clone(), serde_json::json!(c.corpus)))
            .collect();
        writeln!(out, "{}", serde_json::Value::Object(obj))?;
    } else {
        writeln!(out, "{:<10} {:>10}", "metric", "value")?;
        for c in &table.columns {
            writeln!(out, "{:<10} {:>10.6}", c.name, c.corpus)?;
        }
        writeln!(
            out,
            "evaluated {} of {} annotated images",
            table.image_ids.len(),
            table.annotated
        )?;
    }
    Ok(())
}

/// `dicoflow-eval`: the caption metrics, printed and written as `dicoflow
/// eval` does.
///
/// # Errors
/// Those of [`parse_metrics`], [`caption_table`] and [`write_outputs`].
pub fn run(args: &CaptionArgs) -> anyhow::Result<()> {
    let metrics = parse_metrics(args)?;
    let eval = caption_table(args, &metrics)?;
    write_outputs(args, &eval.table)
}

#[cfg(test)]
mod tests {
    use super::error_line;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read x.json: {source}")]
    struct Quoting {
        source: std::io::Error,
    }

    #[test]
    fn error_line_drops_causes_the_message_already_quotes() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let err = anyhow::Error::new(Quoting { source: io }).context("--annotations");
        assert_eq!(error_line(&err), "--annotations: cannot read x.json: gone");
        // A cause that is not quoted stays in the line.
        let err = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_line(&err), "outer: inner");
        assert_eq!(format!("{err:#}"), error_line(&err));
    }
}
