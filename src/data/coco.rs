//! Converting COCO with the Karpathy split file (`dataset_coco.json`) and an
//! image folder into dicoflow shards, one directory per split.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::data::output::Staging;
use crate::data::writer::{ShardRow, ShardWriter, ShardWriterConfig};
use crate::error::{Error, Result};

#[derive(Debug, Deserialize)]
struct KarpathyFile {
    images: Vec<KarpathyImage>,
}

#[derive(Debug, Deserialize)]
struct KarpathyImage {
    #[serde(default)]
    filepath: Option<String>,
    filename: String,
    split: String,
    #[serde(default)]
    cocoid: Option<u64>,
    #[serde(default)]
    imgid: Option<u64>,
    #[serde(default)]
    sentences: Vec<KarpathySentence>,
}

#[derive(Debug, Deserialize)]
struct KarpathySentence {
    raw: String,
}

/// Where Karpathy's `restval` images go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Restval {
    /// Into the training split (the common choice, ~113k training images).
    Train,
    /// Into a split of their own, `restval`.
    Keep,
    /// Not converted.
    Skip,
}

/// Conversion settings.
#[derive(Debug, Clone)]
pub struct CocoConvertOptions {
    pub restval: Restval,
    pub writer: ShardWriterConfig,
    /// Replace an output folder that already holds files (default: refuse it).
    pub overwrite: bool,
}

/// What a conversion did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CocoConvertReport {
    /// Rows written per split.
    pub rows: BTreeMap<String, u64>,
    /// Images listed in the split file but not found in the image folder.
    pub missing_images: Vec<PathBuf>,
    /// Images that had no captions in the split file (written anyway).
    pub without_captions: u64,
    /// Shard files written.
    pub shards: Vec<PathBuf>,
}

/// Convert `karpathy_json` + `images` into shards under `out/<split>/`.
/// `on_image` is called once per listed image (for progress).
///
/// Errors: `out` already holds files and `opts.overwrite` is false. The shards
/// are written beside `out` and swapped in whole when every split is done
/// (`data::output`), so `out` never mixes two conversions.
pub fn convert_karpathy(
    karpathy_json: &Path,
    images: &Path,
    out: &Path,
    opts: &CocoConvertOptions,
    mut on_image: impl FnMut(usize, usize),
) -> Result<CocoConvertReport> {
    let text = std::fs::read_to_string(karpathy_json).map_err(|e| Error::io(karpathy_json, e))?;
    let file: KarpathyFile = serde_json::from_str(&text).map_err(|source| Error::Json {
        path: karpathy_json.into(),
        source,
    })?;
    // Replacing `out` must never delete the inputs.
    if let Ok(out_abs) = out.canonicalize() {
        for input in [images, karpathy_json] {
            if input.canonicalize().is_ok_and(|p| p.starts_with(&out_abs)) {
                return Err(Error::InvalidInput {
                    path: out.into(),
                    what: format!(
                        "holds the input {}; write the shards to another folder",
                        input.display()
                    ),
                });
            }
        }
    }
    let staging = Staging::begin(out, opts.overwrite)?;
    let mut writers: BTreeMap<String, ShardWriter> = BTreeMap::new();
    let mut report = CocoConvertReport::default();
    let total = file.images.len();
    for (i, img) in file.images.into_iter().enumerate() {
        on_image(i + 1, total);
        let split = match (img.split.as_str(), opts.restval) {
            ("restval", Restval::Train) => "train".to_owned(),
            ("restval", Restval::Skip) => continue,
            (s, _) => s.to_owned(),
        };
        let rel = match &img.filepath {
            Some(dir) => Path::new(dir).join(&img.filename),
            None => PathBuf::from(&img.filename),
        };
        let candidates = [images.join(&rel), images.join(&img.filename)];
        let Some(found) = candidates.iter().find(|p| p.is_file()) else {
            report.missing_images.push(candidates[0].clone());
            continue;
        };
        let bytes = std::fs::read(found).map_err(|e| Error::io(found, e))?;
        let key = img
            .cocoid
            .or(img.imgid)
            .map(|id| id.to_string())
            .unwrap_or_else(|| img.filename.clone());
        let captions: Vec<String> = img
            .sentences
            .into_iter()
            .map(|s| s.raw.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if captions.is_empty() {
            report.without_captions += 1;
        }
        let writer = match writers.get_mut(&split) {
            Some(w) => w,
            None => {
                let w = ShardWriter::try_new(
                    &staging.dir().join(&split),
                    &format!("coco-{split}"),
                    opts.writer.clone(),
                )?;
                writers.entry(split.clone()).or_insert(w)
            }
        };
        writer.push(ShardRow {
            key,
            image: bytes,
            image_path: Some(rel.to_string_lossy().into_owned()),
            captions,
            extra: Vec::new(),
        })?;
        *report.rows.entry(split).or_default() += 1;
    }
    for (_, w) in writers {
        report
            .shards
            .extend(w.finish()?.iter().map(|f| staging.final_path(f)));
    }
    staging.commit()?;
    Ok(report)
}
