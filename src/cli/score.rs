//! `dicoflow score`: CLIP-S / PAC-S (and their Ref- variants) of a COCO results file.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;
use tch::{Kind, Tensor};

use crate::data::layout::LayoutOptions;
use crate::data::shards::{list_shards, ShardIndex};
use crate::device::DeviceName;
use crate::image::{PreprocessConfig, Preprocessor};
use crate::model::clip::{Clip, ClipConfig};
use crate::reward::{ClipScorer, ScoreConfig};
use crate::text::ClipTokenizer;

/// Which score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Metric {
    /// CLIP-S: w = 2.5 (use OpenAI CLIP ViT-B/32 weights for the official numbers).
    ClipS,
    /// PAC-S: w = 2.0 (use the PAC-S fine-tuned CLIP weights).
    PacS,
}

/// Arguments of `score`.
#[derive(Debug, clap::Args)]
pub struct ScoreArgs {
    /// COCO results file: `[{"image_id": .., "caption": ..}]`.
    #[arg(long)]
    pub results: PathBuf,
    /// Images: a folder of image files (COCO names such as
    /// `COCO_val2014_000000391895.jpg`, or the annotations' `file_name`), or Parquet
    /// shards (file, folder or glob) whose `key` is the image id.
    #[arg(long)]
    pub images: PathBuf,
    /// CLIP weights (safetensors, OpenAI or Hugging Face naming).
    #[arg(long)]
    pub clip: PathBuf,
    /// CLIP architecture: a preset (`ViT-B-32`, `ViT-B-16`, `ViT-L-14`, `tiny`) or a JSON file.
    #[arg(long, default_value = "ViT-B-32")]
    pub clip_config: String,
    /// COCO annotations (`captions_val2014.json` layout): adds the Ref- variant.
    #[arg(long)]
    pub annotations: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "clip-s")]
    pub metric: Metric,
    /// Text prefix (default: the official "A photo depicts ").
    #[arg(long)]
    pub prefix: Option<String>,
    /// Encode captions without any prefix.
    #[arg(long, conflicts_with = "prefix")]
    pub no_prefix: bool,
    /// Keep negative cosines instead of clipping them to 0.
    #[arg(long)]
    pub no_clipping: bool,
    /// Images per vision-tower batch.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// `cpu`, `cuda`, `cuda:K` or `auto` (CUDA device 0 when one is visible, else the
    /// CPU). Asking for CUDA where there is none is an error.
    #[arg(long, default_value = "auto")]
    pub device: DeviceName,
    /// Print one JSON object of metric → value.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Deserialize)]
struct ResultEntry {
    image_id: serde_json::Value,
    caption: String,
}

#[derive(Debug, Deserialize)]
struct Annotations {
    #[serde(default)]
    images: Vec<AnnImage>,
    annotations: Vec<AnnCaption>,
}

#[derive(Debug, Deserialize)]
struct AnnImage {
    id: serde_json::Value,
    #[serde(default)]
    file_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AnnCaption {
    image_id: serde_json::Value,
    caption: String,
}

/// `391895` and `"391895"` both become the key `391895`.
fn id_key(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Parses `--clip-config`: a preset name or a JSON file.
pub fn clip_config(spec: &str) -> anyhow::Result<ClipConfig> {
    if let Some(cfg) = ClipConfig::preset(spec) {
        return Ok(cfg);
    }
    let path = Path::new(spec);
    if path.is_file() {
        return Ok(ClipConfig::from_json_file(path)?);
    }
    bail!("--clip-config `{spec}` is neither a preset (ViT-B-32, ViT-B-16, ViT-L-14, tiny) nor a JSON file")
}

/// Id of a COCO-style file name: the trailing digits of its stem, without leading zeros.
fn id_from_file_name(path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_str()?;
    let digits: String = stem
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if digits.is_empty() {
        return Some(stem.to_owned());
    }
    let trimmed = digits.trim_start_matches('0');
    Some(if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed.to_owned()
    })
}

/// Streams `(key, encoded image)` of the needed keys to `f`.
fn for_each_image(
    images: &Path,
    needed: &BTreeSet<String>,
    file_names: &BTreeMap<String, String>,
    mut f: impl FnMut(String, Vec<u8>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let shards = if images.is_dir() {
        list_shards(images).unwrap_or_default()
    } else {
        list_shards(images).with_context(|| format!("listing shards {}", images.display()))?
    };
    if !shards.is_empty() {
        let opts = LayoutOptions {
            require_captions: false,
            ..Default::default()
        };
        let index = ShardIndex::from_paths(shards, &opts)?;
        for (shard, rg) in index.row_group_ids() {
            for (_, outcome) in index.read_row_group(shard, rg)? {
                if let Ok(sample) = outcome {
                    if needed.contains(&sample.key) {
                        f(sample.key, sample.image)?;
                    }
                }
            }
        }
        return Ok(());
    }
    // A folder of image files: by the annotations' file names, else by id in the name.
    let mut by_key: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (key, name) in file_names {
        let p = images.join(name);
        if needed.contains(key) && p.is_file() {
            by_key.insert(key.clone(), p);
        }
    }
    for entry in
        std::fs::read_dir(images).with_context(|| format!("reading {}", images.display()))?
    {
        let p = entry?.path();
        if let Some(key) = id_from_file_name(&p) {
            if needed.contains(&key) && p.is_file() {
                by_key.entry(key).or_insert(p);
            }
        }
    }
    for (key, p) in by_key {
        let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        f(key, bytes)?;
    }
    Ok(())
}

/// Run `score`.
pub fn run(args: &ScoreArgs) -> anyhow::Result<()> {
    let device = args
        .device
        .resolve()
        .with_context(|| format!("--device {}", args.device))?;
    let cfg = clip_config(&args.clip_config)?;
    let results: Vec<ResultEntry> = read_json(&args.results)?;
    if results.is_empty() {
        bail!("{}: no results", args.results.display());
    }
    let keys: Vec<String> = results.iter().map(|r| id_key(&r.image_id)).collect();
    let captions: Vec<&str> = results.iter().map(|r| r.caption.as_str()).collect();
    let needed: BTreeSet<String> = keys.iter().cloned().collect();

    let mut refs_by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut file_names = BTreeMap::new();
    if let Some(ann) = &args.annotations {
        let ann: Annotations = read_json(ann)?;
        for a in ann.annotations {
            refs_by_key
                .entry(id_key(&a.image_id))
                .or_default()
                .push(a.caption);
        }
        for img in ann.images {
            if let Some(name) = img.file_name {
                file_names.insert(id_key(&img.id), name);
            }
        }
    }

    let mut score_cfg = match args.metric {
        Metric::ClipS => ScoreConfig::clip_s(),
        Metric::PacS => ScoreConfig::pac_s(),
    };
    if args.no_prefix {
        score_cfg.prefix = None;
    } else if let Some(p) = &args.prefix {
        score_cfg.prefix = Some(p.clone());
    }
    score_cfg.clip_negative = !args.no_clipping;
    let name = score_cfg.name.clone();

    let (_vs, clip) = Clip::from_safetensors(&args.clip, &cfg, device)
        .with_context(|| format!("loading CLIP weights {}", args.clip.display()))?;
    let mut scorer = ClipScorer::new(clip, ClipTokenizer::openai()?, score_cfg);
    let mut pre = Preprocessor::new(PreprocessConfig {
        size: cfg.vision.image_size as u32,
        ..Default::default()
    });
    let side = cfg.vision.image_size;
    let (mut batch_keys, mut batch_pixels) = (Vec::new(), Vec::<f32>::new());
    let mut bad = Vec::new();
    let flush = |scorer: &mut ClipScorer,
                 keys: &mut Vec<String>,
                 pixels: &mut Vec<f32>|
     -> anyhow::Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let t = Tensor::f_from_slice(pixels)?.f_reshape([keys.len() as i64, 3, side, side])?;
        scorer.add_images(keys, &t.f_to_kind(Kind::Float)?)?;
        keys.clear();
        pixels.clear();
        Ok(())
    };
    for_each_image(&args.images, &needed, &file_names, |key, bytes| {
        if scorer.has_image(&key) || batch_keys.contains(&key) {
            return Ok(());
        }
        match pre.process(&bytes) {
            Ok(px) => {
                batch_pixels.extend_from_slice(&px);
                batch_keys.push(key);
            }
            Err(reason) => bad.push(format!("{key}: {}", reason.label())),
        }
        if batch_keys.len() >= args.batch_size.max(1) {
            flush(&mut scorer, &mut batch_keys, &mut batch_pixels)?;
        }
        Ok(())
    })?;
    flush(&mut scorer, &mut batch_keys, &mut batch_pixels)?;
    let missing: Vec<&String> = needed.iter().filter(|k| !scorer.has_image(k)).collect();
    if !missing.is_empty() {
        bail!(
            "{} of {} images not found or unreadable under {} (e.g. `{}`){}",
            missing.len(),
            needed.len(),
            args.images.display(),
            missing[0],
            bad.first()
                .map(|b| format!("; first decode failure: {b}"))
                .unwrap_or_default()
        );
    }

    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    if args.annotations.is_some() {
        let mut refs = Vec::with_capacity(keys.len());
        for k in &keys {
            match refs_by_key.get(k) {
                Some(r) if !r.is_empty() => refs.push(r.clone()),
                _ => bail!("image {k} has no reference captions in the annotations"),
            }
        }
        let s = scorer.score_with_refs(&keys, &captions, &refs)?;
        out.insert(name.clone(), mean(&s.score));
        out.insert(format!("Ref{name}"), mean(&s.ref_score));
    } else {
        let s = scorer.score(&keys, &captions)?;
        out.insert(name, mean(&s));
    }
    if args.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        for (k, v) in &out {
            println!("{k}: {v:.4}");
        }
    }
    Ok(())
}
