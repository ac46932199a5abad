//! `dicoflow inspect`: what a dataset looks like to the shard source — layout,
//! rows per split, caption statistics and the rows that would be skipped.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::data::layout::{Layout, LayoutOptions};
use crate::data::sample::SkipCounts;
use crate::data::shards::{list_shards, ShardIndex};
use crate::data::source::{ShardSource, SourceConfig, SourceItem};
use crate::error::Result;
use crate::image::decode_rgb;

/// Min / mean / max of a count.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stat {
    pub min: u64,
    pub max: u64,
    pub sum: u64,
    pub n: u64,
}

impl Stat {
    fn add(&mut self, v: u64) {
        if self.n == 0 || v < self.min {
            self.min = v;
        }
        self.max = self.max.max(v);
        self.sum += v;
        self.n += 1;
    }
    /// Mean (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum as f64 / self.n as f64
        }
    }
}

impl fmt::Display for Stat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "min {} / mean {:.2} / max {}",
            self.min,
            self.mean(),
            self.max
        )
    }
}

/// Everything `inspect` reports about one split.
#[derive(Debug, Clone, Default)]
pub struct SplitReport {
    pub shards: usize,
    pub row_groups: usize,
    pub rows: u64,
    pub usable: u64,
    pub skipped: SkipCounts,
    pub captions_per_row: Stat,
    pub words_per_caption: Stat,
}

/// The result of inspecting a dataset.
#[derive(Debug, Clone)]
pub struct InspectReport {
    pub path: PathBuf,
    pub layout: Layout,
    pub splits: BTreeMap<String, SplitReport>,
    pub decoded: bool,
}

/// The split a shard belongs to: its directory below `root` (`out/train/x.parquet`
/// → `train`), else the file-name prefix before the first `-` (`val-00000` → `val`).
pub fn split_name(root: &Path, shard: &Path) -> String {
    if let Ok(rel) = shard.strip_prefix(root) {
        let mut parts = rel.components();
        if let (Some(first), Some(_)) = (parts.next(), parts.next()) {
            return first.as_os_str().to_string_lossy().into_owned();
        }
    }
    let stem = shard
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    stem.split(['-', '_']).next().unwrap_or("all").to_owned()
}

/// Scan every row of the dataset at `path`. With `decode`, every image is also
/// decoded (slower) so undecodable images are counted too. `on_row` is called
/// per row (for progress).
pub fn inspect(
    path: &Path,
    opts: &LayoutOptions,
    decode: bool,
    mut on_row: impl FnMut(),
) -> Result<InspectReport> {
    let shards = list_shards(path)?;
    let mut by_split: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for s in shards {
        by_split.entry(split_name(path, &s)).or_default().push(s);
    }
    let mut splits = BTreeMap::new();
    let mut layout = None;
    for (name, paths) in by_split {
        let index = Arc::new(ShardIndex::from_paths(paths, opts)?);
        layout.get_or_insert_with(|| index.layout.clone());
        let mut rep = SplitReport {
            shards: index.shards.len(),
            row_groups: index.shards.iter().map(|s| s.row_groups.len()).sum(),
            rows: index.num_rows(),
            ..Default::default()
        };
        let cfg = SourceConfig {
            shuffle: false,
            ..Default::default()
        };
        for item in ShardSource::new(index, cfg, 0, 1)? {
            on_row();
            match item? {
                SourceItem::Skipped(s) => rep.skipped.add(&s.reason),
                SourceItem::Sample(s) => {
                    if decode {
                        if let Err(reason) = decode_rgb(&s.image, crate::image::DEFAULT_MAX_PIXELS)
                        {
                            rep.skipped.add(&reason);
                            continue;
                        }
                    }
                    rep.usable += 1;
                    rep.captions_per_row.add(s.captions.len() as u64);
                    for c in &s.captions {
                        rep.words_per_caption
                            .add(c.split_whitespace().count() as u64);
                    }
                }
            }
        }
        splits.insert(name, rep);
    }
    Ok(InspectReport {
        path: path.to_path_buf(),
        layout: layout.expect("list_shards returns at least one shard"),
        splits,
        decoded: decode,
    })
}

impl fmt::Display for InspectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.layout;
        writeln!(f, "dataset   {}", self.path.display())?;
        writeln!(f, "layout    {}", l.kind)?;
        writeln!(f, "  image   `{}`", l.image_column)?;
        let opt = |c: &Option<String>| c.as_ref().map_or("-".to_owned(), |c| format!("`{c}`"));
        writeln!(f, "  caption {}", opt(&l.caption_column))?;
        writeln!(f, "  key     {}", opt(&l.key_column))?;
        writeln!(f, "  status  {}", opt(&l.status_column))?;
        for (name, s) in &self.splits {
            writeln!(
                f,
                "split {name}: {} shards, {} row groups, {} rows, {} usable",
                s.shards, s.row_groups, s.rows, s.usable
            )?;
            writeln!(f, "  captions per row   {}", s.captions_per_row)?;
            writeln!(f, "  words per caption  {}", s.words_per_caption)?;
            let checked = if self.decoded {
                "(images decoded)"
            } else {
                "(images not decoded; --decode checks them)"
            };
            writeln!(f, "  skipped rows       {} {checked}", s.skipped)?;
        }
        Ok(())
    }
}
