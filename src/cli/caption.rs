//! `dicoflow caption`: caption every image of some shards with a trained
//! captioner and write COCO results (`[{"image_id": .., "caption": ..}]`) that
//! `dicoflow eval` and `dicoflow score` read. Runs the `caption` device stage
//! through the dataflow (decoding on every worker, greedy decoding on the device).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::device::DeviceName;
use crate::flow::{self, FlowConfig, Pipeline, RunOptions, SourceSpec, StageSpec};
use crate::model::captioner::CaptionerConfig;
use crate::reward::ScoreConfig;
use crate::train::stages::{registry, CaptionStageSettings};

/// Arguments of `caption`.
#[derive(Debug, clap::Args)]
pub struct CaptionArgs {
    /// Shards to caption (file, directory or glob).
    #[arg(long)]
    pub data: PathBuf,
    /// Captioner weights (`model.safetensors` of a `train_captioner` run).
    #[arg(long)]
    pub weights: PathBuf,
    /// Captioner architecture: a preset (`paper`, `tiny`) or a JSON file (a
    /// `train_captioner` run writes `captioner.json` next to its weights).
    #[arg(long, default_value = "paper")]
    pub captioner: String,
    /// Word vocabulary (JSON) the captioner was trained with; absent: CLIP BPE.
    #[arg(long)]
    pub vocab: Option<PathBuf>,
    /// CLIP safetensors whose vision tower is the captioner's frozen backbone.
    #[arg(long)]
    pub backbone: PathBuf,
    /// The backbone's CLIP config: a preset (`ViT-B-32`, `ViT-B-16`, `ViT-L-14`, `tiny`)
    /// or a JSON file.
    #[arg(long, default_value = "ViT-L-14")]
    pub backbone_config: String,
    /// COCO results file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the shards' captions as COCO caption annotations
    /// (`captions_val2014.json` layout, with annotation ids): for `dicoflow
    /// eval`, pycocotools and pycocoevalcap.
    #[arg(long, value_name = "ANNOTATIONS.json")]
    pub references: Option<PathBuf>,
    /// Images per worker per batch.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Dataflow workers (image decoding threads).
    #[arg(short = 'w', long, default_value_t = 2)]
    pub workers: usize,
    /// `cpu`, `cuda`, `cuda:K` or `auto` (CUDA device 0 when one is visible, else the
    /// CPU). Asking for CUDA where there is none is an error.
    #[arg(long, default_value = "auto")]
    pub device: DeviceName,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Parses `--captioner`: a preset name or a JSON file.
fn captioner_config(spec: &str) -> anyhow::Result<CaptionerConfig> {
    if let Some(cfg) = CaptionerConfig::preset(spec) {
        return Ok(cfg);
    }
    let path = Path::new(spec);
    if path.is_file() {
        return Ok(CaptionerConfig::from_json_file(path)?);
    }
    bail!("--captioner `{spec}` is neither a preset (paper, tiny) nor a JSON file")
}

/// COCO image id of a shard key: the number when the key is one (what
/// `convert coco` writes: the COCO id), else the key itself.
pub fn image_id_of(key: &str) -> serde_json::Value {
    match key.parse::<i64>() {
        Ok(id) if id.to_string() == key => serde_json::json!(id),
        _ => serde_json::json!(key),
    }
}

/// The COCO captions annotations document `caption --references` writes:
/// `info`, `licenses` (empty), `images` (`id`) and `annotations` (`id`,
/// `image_id`, `caption`), as in `captions_val2014.json`. pycocotools'
/// `COCO()` indexes annotations by `id` and `loadRes` copies `images`, so
/// both are always present; annotation ids count from 1 in file order.
fn references_document(
    data: &Path,
    images: Vec<serde_json::Value>,
    annotations: Vec<serde_json::Value>,
) -> serde_json::Value {
    serde_json::json!({
        "info": {
            "description": format!("reference captions of {}, by dicoflow caption", data.display()),
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
    })
}

/// One line of the caption stage's JSONL output.
#[derive(serde::Deserialize)]
struct CaptionLine {
    key: String,
    caption: String,
    #[serde(default)]
    references: Vec<String>,
}

/// Run `caption`.
pub fn run(args: &CaptionArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    let captioner = captioner_config(&args.captioner)?;
    let backbone_config = super::score::clip_config(&args.backbone_config)?;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let lines_file = args.out.with_extension("captions.jsonl.part");
    let settings = CaptionStageSettings {
        captioner,
        weights: args.weights.clone(),
        vocab: args.vocab.clone(),
        backbone: args.backbone.clone(),
        backbone_config: backbone_config.clone(),
        evaluator: None,
        evaluator_config: None,
        score: ScoreConfig::clip_s(),
        out: lines_file.clone(),
        device: args.device,
    };
    let mut pre = toml::Table::new();
    pre.insert(
        "size".into(),
        toml::Value::Integer(backbone_config.vision.image_size),
    );
    let pipeline = Pipeline {
        source: SourceSpec {
            path: Some(args.data.clone()),
            shuffle: false,
            epochs: 1,
            ..Default::default()
        },
        flow: FlowConfig {
            batch_size: args.batch_size,
            device: args.device,
            ..Default::default()
        },
        cpu: vec![StageSpec::new("preprocess").with_settings(pre)],
        device: vec![StageSpec::new("caption")
            .with_settings(toml::Table::try_from(&settings).context("caption settings")?)],
    };
    let opts = RunOptions {
        progress: !args.quiet,
        ..RunOptions::threads(args.workers.max(1))
    };
    let summary = flow::run(&pipeline, &registry(), &opts)
        .with_context(|| format!("captioning {}", args.data.display()))?;

    let text = std::fs::read_to_string(&lines_file)
        .with_context(|| format!("reading {}", lines_file.display()))?;
    let mut by_key: BTreeMap<String, CaptionLine> = BTreeMap::new();
    let mut duplicates = 0usize;
    for (i, line) in text.lines().enumerate() {
        let row: CaptionLine = serde_json::from_str(line)
            .with_context(|| format!("{} line {}", lines_file.display(), i + 1))?;
        if by_key.contains_key(&row.key) {
            duplicates += 1;
        } else {
            by_key.insert(row.key.clone(), row);
        }
    }
    std::fs::remove_file(&lines_file).ok();

    let results: Vec<serde_json::Value> = by_key
        .values()
        .map(|r| serde_json::json!({"image_id": image_id_of(&r.key), "caption": r.caption}))
        .collect();
    std::fs::write(&args.out, serde_json::to_string(&results)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "{} images captioned -> {}",
        results.len(),
        args.out.display()
    );
    if let Some(path) = &args.references {
        let images: Vec<serde_json::Value> = by_key
            .keys()
            .map(|k| serde_json::json!({"id": image_id_of(k)}))
            .collect();
        let annotations: Vec<serde_json::Value> = by_key
            .values()
            .flat_map(|r| r.references.iter().map(move |c| (r, c)))
            .enumerate()
            .map(|(i, (r, c))| {
                serde_json::json!({"id": i + 1, "image_id": image_id_of(&r.key), "caption": c})
            })
            .collect();
        let count = annotations.len();
        let doc = references_document(&args.data, images, annotations);
        std::fs::write(path, serde_json::to_string(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("{} reference captions -> {}", count, path.display());
    }
    if duplicates > 0 {
        println!("{duplicates} rows repeated a key already captioned (skipped)");
    }
    let rejected: u64 = summary.telemetry.errors.iter().map(|e| e.count).sum();
    if rejected > 0 {
        println!("{rejected} images could not be captioned (skipped):");
        for e in &summary.telemetry.errors {
            println!("  {}: {} ({})", e.stage, e.reason, e.count);
        }
    }
    Ok(())
}
