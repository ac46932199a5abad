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
    /// Images: a folder of image files, or Parquet shards (file, folder or glob)
    /// whose `key` is the image id. In a folder, image `ID` is the file the
    /// annotations' `file_name` names, else the file whose stem is `ID`
    /// (`image1.png`), else, for a number, the file whose stem ends in it
    /// (`COCO_val2014_000000391895.jpg`); two files for one id are refused.
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
    /// Write per-caption scores to this JSON file, one row per result in the
    /// results' order: `[{"image_id": .., "CLIP-S": .., "RefCLIP-S": ..}]` (the
    /// shape of `eval --per-image`). The printed values are their means.
    #[arg(long, value_name = "OUT.json")]
    pub per_image: Option<PathBuf>,
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

/// Refuses two different image ids that name the same image key: the number
/// `1` and the string `"1"` are different ids in COCO files, but both are
/// key `1` for `--images` (file stems and shard keys are strings), so one
/// image would be scored for both. `ids` yields (key, the id as written).
fn refuse_shared_keys(
    ids: impl IntoIterator<Item = (String, String)>,
    what: &str,
) -> anyhow::Result<()> {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (key, shown) in ids {
        match seen.get(&key) {
            Some(first) if *first != shown => bail!(
                "{what}: image ids {first} and {shown} are different ids but name the same \
                 image key '{key}' for --images; give every image one id (all numbers or all strings)"
            ),
            Some(_) => {}
            None => {
                seen.insert(key, shown);
            }
        }
    }
    Ok(())
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

/// File extensions (lowercase) of the image files `--images FOLDER` considers:
/// the formats dicoflow decodes.
const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

/// The number a run of digits stands for, as text without leading zeros
/// (`"000042"` → `"42"`), so that ids compare as integers at any length.
fn canonical_number(digits: &str) -> String {
    let trimmed = digits.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// The trailing digits of a file stem as a number (`COCO_val2014_000000391895`
/// → `391895`); `None` when the stem does not end in a digit.
fn trailing_number(stem: &str) -> Option<String> {
    let digits = stem.len() - stem.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    (digits > 0).then(|| canonical_number(&stem[stem.len() - digits..]))
}

/// The image file of each `needed` id among `files` (a folder's listing).
///
/// Rules, in order:
/// 1. the file whose stem is the id (clipscore's convention: `image1.png` is
///    image `image1`; `391895.jpg` is image `391895`);
/// 2. for an id made of digits, the file whose stem ends in the same number
///    (COCO's names: `COCO_val2014_000000391895.jpg` is image `391895`;
///    leading zeros do not count).
///
/// Only files with an image extension ([`IMAGE_EXTENSIONS`], any case) are
/// considered. An id found in no file is left out (the caller reports it).
/// Errors when the rule that decides an id matches two files (`a_12.jpg` and
/// `b_012.png`, or `x.png` and `x.jpg`), naming both.
fn image_files_by_id(
    files: &[PathBuf],
    needed: &BTreeSet<String>,
) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut by_stem: BTreeMap<&str, Vec<&PathBuf>> = BTreeMap::new();
    let mut by_number: BTreeMap<String, Vec<&PathBuf>> = BTreeMap::new();
    for path in files {
        let is_image = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if !is_image {
            continue;
        }
        by_stem.entry(stem).or_default().push(path);
        if let Some(number) = trailing_number(stem) {
            by_number.entry(number).or_default().push(path);
        }
    }
    let mut found = BTreeMap::new();
    for id in needed {
        let matches = match by_stem.get(id.as_str()) {
            Some(exact) => exact,
            None if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => {
                match by_number.get(&canonical_number(id)) {
                    Some(numbered) => numbered,
                    None => continue,
                }
            }
            None => continue,
        };
        match matches.as_slice() {
            [one] => {
                found.insert(id.clone(), (*one).clone());
            }
            [first, second, ..] => bail!(
                "image id `{id}` matches two files, {} and {}: keep one, or name each \
                 image's file in --annotations (`images[].file_name`)",
                first.display(),
                second.display()
            ),
            [] => {}
        }
    }
    Ok(found)
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
        // Results name images by key: a key shared by two rows would score
        // one of them, whichever comes first, as the image of that id.
        index
            .check_unique_keys()
            .with_context(|| format!("checking the keys of {}", images.display()))?;
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
    let mut files = Vec::new();
    for entry in
        std::fs::read_dir(images).with_context(|| format!("reading {}", images.display()))?
    {
        let p = entry?.path();
        if p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    let rest: BTreeSet<String> = needed
        .iter()
        .filter(|k| !by_key.contains_key(*k))
        .cloned()
        .collect();
    by_key.extend(image_files_by_id(&files, &rest)?);
    for (key, p) in by_key {
        let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        f(key, bytes)?;
    }
    Ok(())
}

/// The image ids of an annotations file mapped to its `images[].file_name`,
/// for the folder lookup of [`clip_scores`] (empty where the file names none).
pub(crate) fn file_names_of(annotations: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let ann: Annotations = read_json(annotations)?;
    file_names_in(&ann, annotations)
}

/// Image id key → `file_name`, after refusing ids that share a key
/// ([`refuse_shared_keys`]) among the images and the annotations' `image_id`s.
fn file_names_in(ann: &Annotations, path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    refuse_shared_keys(
        ann.images
            .iter()
            .map(|i| &i.id)
            .chain(ann.annotations.iter().map(|a| &a.image_id))
            .map(|id| (id_key(id), id.to_string())),
        &path.display().to_string(),
    )?;
    Ok(ann
        .images
        .iter()
        .filter_map(|img| Some((id_key(&img.id), img.file_name.clone()?)))
        .collect())
}

/// Where the images are and how to find each id's (see `--images`).
#[derive(Debug, Clone)]
pub(crate) struct ImageSource<'a> {
    /// A folder of image files, or Parquet shards.
    pub images: &'a Path,
    /// Image id → file name in the folder (the annotations' `file_name`).
    pub file_names: &'a BTreeMap<String, String>,
}

/// One CLIP model to score with: weights, architecture and score definition.
#[derive(Debug, Clone)]
pub(crate) struct ClipModel<'a> {
    /// Safetensors weights.
    pub weights: &'a Path,
    /// Architecture of the weights.
    pub config: &'a ClipConfig,
    /// Weight, prefix and clipping of the score (its `name` names the outputs).
    pub score: ScoreConfig,
}

/// Per-caption CLIP-based scores, in the order of the captions given to
/// [`clip_scores`].
#[derive(Debug, Clone)]
pub(crate) struct ClipColumns {
    /// `CLIP-S` or `PAC-S` (the score config's name).
    pub name: String,
    /// The reference-free score of each caption.
    pub score: Vec<f32>,
    /// The Ref- variant of each caption, when references were given.
    pub ref_score: Option<Vec<f32>>,
}

impl ClipColumns {
    /// `(name, per-caption values)`: the score, then its Ref- variant.
    pub fn columns(&self) -> Vec<(String, &[f32])> {
        let mut out = vec![(self.name.clone(), self.score.as_slice())];
        if let Some(r) = &self.ref_score {
            out.push((format!("Ref{}", self.name), r.as_slice()));
        }
        out
    }
}

/// The corpus value of a per-caption score as clipscore and pacscore report it:
/// the mean over captions (accumulated in f64).
pub(crate) fn corpus_mean(values: &[f32]) -> f64 {
    values.iter().map(|&x| x as f64).sum::<f64>() / values.len() as f64
}

/// Scores `captions[i]` against image `keys[i]` (and `refs[i]`, when given) with
/// one CLIP model: the images are found in `source`, decoded and preprocessed as
/// CLIP expects, encoded in batches of `batch_size`. Errors name a missing or
/// unreadable image, an image without references, and weights that do not fit.
pub(crate) fn clip_scores(
    source: &ImageSource<'_>,
    model: &ClipModel<'_>,
    keys: &[String],
    captions: &[&str],
    refs: Option<&[Vec<String>]>,
    device: tch::Device,
    batch_size: usize,
) -> anyhow::Result<ClipColumns> {
    let needed: BTreeSet<String> = keys.iter().cloned().collect();
    let cfg = model.config;
    let (_vs, clip) = Clip::from_safetensors(model.weights, cfg, device)
        .with_context(|| format!("loading CLIP weights {}", model.weights.display()))?;
    let mut scorer = ClipScorer::new(clip, ClipTokenizer::openai()?, model.score.clone());
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
    for_each_image(source.images, &needed, source.file_names, |key, bytes| {
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
        if batch_keys.len() >= batch_size.max(1) {
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
            source.images.display(),
            missing[0],
            bad.first()
                .map(|b| format!("; first decode failure: {b}"))
                .unwrap_or_default()
        );
    }
    let name = model.score.name.clone();
    match refs {
        Some(refs) => {
            if let Some(i) = refs.iter().position(Vec::is_empty) {
                bail!(
                    "image {} has no reference captions in the annotations",
                    keys[i]
                );
            }
            let s = scorer.score_with_refs(keys, captions, refs)?;
            Ok(ClipColumns {
                name,
                score: s.score,
                ref_score: Some(s.ref_score),
            })
        }
        None => Ok(ClipColumns {
            name,
            score: scorer.score(keys, captions)?,
            ref_score: None,
        }),
    }
}

/// The per-image file, as `eval` writes it.
pub(crate) use dicoflow_metrics::cli::write_per_image;

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
    refuse_shared_keys(
        results
            .iter()
            .map(|r| (id_key(&r.image_id), r.image_id.to_string())),
        &args.results.display().to_string(),
    )?;

    let mut refs = None;
    let mut file_names = BTreeMap::new();
    if let Some(ann) = &args.annotations {
        let ann_path = ann;
        let ann: Annotations = read_json(ann_path)?;
        file_names = file_names_in(&ann, ann_path)?;
        let mut refs_by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for a in ann.annotations {
            refs_by_key
                .entry(id_key(&a.image_id))
                .or_default()
                .push(a.caption);
        }
        refs = Some(
            keys.iter()
                .map(|k| refs_by_key.get(k).cloned().unwrap_or_default())
                .collect::<Vec<_>>(),
        );
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

    let source = ImageSource {
        images: &args.images,
        file_names: &file_names,
    };
    let model = ClipModel {
        weights: &args.clip,
        config: &cfg,
        score: score_cfg,
    };
    let scores = clip_scores(
        &source,
        &model,
        &keys,
        &captions,
        refs.as_deref(),
        device,
        args.batch_size,
    )?;
    let columns = scores.columns();
    if let Some(path) = &args.per_image {
        let ids: Vec<serde_json::Value> = results.iter().map(|r| r.image_id.clone()).collect();
        let cols: Vec<(String, Vec<f64>)> = columns
            .iter()
            .map(|(n, v)| (n.clone(), v.iter().map(|&x| x as f64).collect()))
            .collect();
        write_per_image(path, &ids, &cols)?;
    }
    let out: BTreeMap<String, f64> = columns
        .iter()
        .map(|(n, v)| (n.clone(), corpus_mean(v)))
        .collect();
    if args.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        for (k, v) in &out {
            println!("{k}: {v:.4}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(files: &[&str], needed: &[&str]) -> anyhow::Result<BTreeMap<String, String>> {
        let files: Vec<PathBuf> = files.iter().map(|f| Path::new("imgs").join(f)).collect();
        let needed = needed.iter().map(|s| s.to_string()).collect();
        Ok(image_files_by_id(&files, &needed)?
            .into_iter()
            .map(|(k, p)| (k, p.file_name().unwrap().to_string_lossy().into_owned()))
            .collect())
    }

    fn pairs(p: &[(&str, &str)]) -> BTreeMap<String, String> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn clipscore_names_are_found_by_stem() {
        // clipscore's example folder: `image1.png` is image `image1`.
        let got = find(&["image1.png", "image2.png"], &["image1", "image2"]).unwrap();
        assert_eq!(
            got,
            pairs(&[("image1", "image1.png"), ("image2", "image2.png")])
        );
    }

    #[test]
    fn coco_names_are_found_by_their_trailing_number() {
        let files = [
            "COCO_val2014_000000391895.jpg",
            "COCO_val2014_000000000042.jpg",
        ];
        let got = find(&files, &["391895", "42", "0042", "7"]).unwrap();
        assert_eq!(
            got,
            pairs(&[
                ("391895", "COCO_val2014_000000391895.jpg"),
                ("42", "COCO_val2014_000000000042.jpg"),
                ("0042", "COCO_val2014_000000000042.jpg"),
            ])
        );
        // Not numbers: only an exact stem counts.
        assert!(find(&files, &["x391895"]).unwrap().is_empty());
    }

    #[test]
    fn an_exact_stem_comes_before_a_trailing_number() {
        let got = find(&["a_12.jpg", "12.png"], &["12"]).unwrap();
        assert_eq!(got, pairs(&[("12", "12.png")]));
    }

    #[test]
    fn two_files_for_one_id_are_refused_naming_both() {
        let err = find(&["a_12.jpg", "b_012.png"], &["12"]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("a_12.jpg") && msg.contains("b_012.png"),
            "{msg}"
        );
        let err = find(&["x.png", "x.JPG"], &["x"]).unwrap_err().to_string();
        assert!(err.contains("x.png") && err.contains("x.JPG"), "{err}");
        // Ambiguity among ids nobody asks for is no error.
        assert!(find(&["a_12.jpg", "b_012.png"], &["5"]).unwrap().is_empty());
    }

    #[test]
    fn only_image_files_count() {
        assert!(find(&["1.txt", "1.json"], &["1"]).unwrap().is_empty());
        let got = find(&["1.txt", "1.WebP"], &["1"]).unwrap();
        assert_eq!(got, pairs(&[("1", "1.WebP")]));
    }
}
