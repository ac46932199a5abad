//! Finding Parquet shards and indexing their row groups (footers only; no data
//! is read until a row group is requested).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::Array;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;

use crate::data::layout::{generated_key, Layout, LayoutOptions};
use crate::data::sample::{RawSample, RowAddr, SkipRecord};
use crate::error::{Error, Result};

/// One row's outcome: a usable sample or a counted skip.
pub type RowOutcome = std::result::Result<RawSample, SkipRecord>;

/// List the Parquet files named by `spec`: a file, a directory (searched
/// recursively), or a glob pattern (`data/*/train-*.parquet`). Sorted, so the
/// order is the same on every machine. Hidden files and unfinished `*.tmp` files
/// are ignored.
pub fn list_shards(spec: &Path) -> Result<Vec<PathBuf>> {
    let text = spec.to_string_lossy();
    let mut found = Vec::new();
    if text.contains(['*', '?', '[']) {
        let paths = glob::glob(&text).map_err(|e| Error::InvalidInput {
            path: spec.into(),
            what: format!("invalid glob pattern: {e}"),
        })?;
        for p in paths {
            let p = p.map_err(|e| Error::io(e.path().to_path_buf(), std::io::Error::from(e)))?;
            if p.is_file() && is_shard_name(&p) {
                found.push(p);
            }
        }
    } else if spec.is_file() {
        found.push(spec.to_path_buf());
    } else if spec.is_dir() {
        walk(spec, &mut found)?;
    } else {
        return Err(Error::io(
            spec,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
        ));
    }
    found.sort();
    if found.is_empty() {
        return Err(Error::NoShards { path: spec.into() });
    }
    Ok(found)
}

fn is_shard_name(p: &Path) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    !name.starts_with('.') && name.ends_with(".parquet")
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let p = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if p.is_dir() && !hidden {
            walk(&p, out)?;
        } else if p.is_file() && is_shard_name(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// A shard's footer, row-group sizes and projection.
#[derive(Debug, Clone)]
pub struct ShardInfo {
    pub path: PathBuf,
    /// Rows in each row group.
    pub row_groups: Vec<u32>,
    /// Used to build keys when the layout has no key column.
    pub key_prefix: String,
    metadata: ArrowReaderMetadata,
    projection: ProjectionMask,
}

/// All shards of a dataset, with one layout checked on every shard.
#[derive(Debug, Clone)]
pub struct ShardIndex {
    pub shards: Vec<ShardInfo>,
    pub layout: Layout,
}

impl ShardIndex {
    /// Index the shards named by `spec` (see [`list_shards`]). Fails naming the
    /// file on an unreadable footer or a schema without the needed columns.
    pub fn open(spec: &Path, opts: &LayoutOptions) -> Result<ShardIndex> {
        Self::from_paths(list_shards(spec)?, opts)
    }

    /// Index an explicit, already ordered list of shard files.
    pub fn from_paths(paths: Vec<PathBuf>, opts: &LayoutOptions) -> Result<ShardIndex> {
        let mut shards = Vec::with_capacity(paths.len());
        let mut layout: Option<Layout> = None;
        for path in paths {
            let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
            let metadata =
                ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(|source| {
                    Error::Parquet {
                        path: path.clone(),
                        source,
                    }
                })?;
            let schema = metadata.schema().clone();
            let layout = match &layout {
                Some(l) => {
                    l.check_compatible(&schema, &path)?;
                    l
                }
                None => layout.insert(Layout::detect(&schema, opts, &path)?),
            };
            let projection =
                ProjectionMask::roots(metadata.parquet_schema(), layout.needed_columns(&schema));
            let row_groups = metadata
                .metadata()
                .row_groups()
                .iter()
                .map(|rg| u32::try_from(rg.num_rows()).unwrap_or(u32::MAX))
                .collect();
            let key_prefix = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            shards.push(ShardInfo {
                path,
                row_groups,
                key_prefix,
                metadata,
                projection,
            });
        }
        let layout = layout.ok_or_else(|| Error::InvalidInput {
            path: PathBuf::new(),
            what: "no shards given".into(),
        })?;
        Ok(ShardIndex { shards, layout })
    }

    /// Total rows over all shards.
    pub fn num_rows(&self) -> u64 {
        self.shards
            .iter()
            .flat_map(|s| s.row_groups.iter())
            .map(|&n| n as u64)
            .sum()
    }

    /// Every `(shard, row_group)` in file order.
    pub fn row_group_ids(&self) -> Vec<(u32, u32)> {
        let mut ids = Vec::new();
        for (s, shard) in self.shards.iter().enumerate() {
            for rg in 0..shard.row_groups.len() {
                ids.push((s as u32, rg as u32));
            }
        }
        ids
    }

    /// Rows in one row group.
    pub fn row_group_len(&self, shard: u32, row_group: u32) -> u32 {
        self.shards[shard as usize].row_groups[row_group as usize]
    }

    /// A fingerprint of the shard list and sizes, stored in cursors so a cursor
    /// is never applied to a different dataset.
    pub fn fingerprint(&self) -> u64 {
        let mut h = Fnv::new();
        for s in &self.shards {
            h.write(
                s.path
                    .file_name()
                    .map(|n| n.as_encoded_bytes())
                    .unwrap_or_default(),
            );
            for &n in &s.row_groups {
                h.write(&n.to_le_bytes());
            }
        }
        h.finish()
    }

    /// Refuse a dataset whose keys are not unique, naming both files (and row
    /// groups and rows) of the first duplicate found in file order. Keys index
    /// state — the reward cache, its resumption, lookups of images by key — so
    /// a duplicate would silently give one image another's state.
    ///
    /// Every row counts, skipped or not (a failed img2dataset row still holds its
    /// key). With a key column only that column is read (projection); without
    /// one, keys are `STEM/ROW_GROUP/ROW` and unique exactly when the shards'
    /// file stems are, so only names are compared. Returns the rows checked.
    pub fn check_unique_keys(&self) -> Result<u64> {
        let mut seen: HashMap<String, (usize, RowAddr)> = HashMap::new();
        let duplicate = |key: &str, first: (usize, RowAddr), second: (usize, RowAddr)| {
            let at = |(s, a): (usize, RowAddr)| {
                format!(
                    "{} (row group {}, row {})",
                    self.shards[s].path.display(),
                    a.row_group,
                    a.row
                )
            };
            Error::DuplicateKey {
                key: key.to_owned(),
                first: at(first),
                second: at(second),
            }
        };
        let mut rows = 0u64;
        for (s, info) in self.shards.iter().enumerate() {
            let Some(key_column) = self.layout.key_column.as_deref() else {
                // Generated keys: unique exactly when file stems are.
                if let Some(prev) = self.shards[..s]
                    .iter()
                    .position(|p| p.key_prefix == info.key_prefix)
                {
                    let addr = RowAddr {
                        shard: s as u32,
                        row_group: 0,
                        row: 0,
                    };
                    return Err(duplicate(
                        &generated_key(&info.key_prefix, 0, 0),
                        (
                            prev,
                            RowAddr {
                                shard: prev as u32,
                                ..addr
                            },
                        ),
                        (s, addr),
                    ));
                }
                rows += info.row_groups.iter().map(|&n| n as u64).sum::<u64>();
                continue;
            };
            let file = File::open(&info.path).map_err(|e| Error::io(&info.path, e))?;
            let mask = ProjectionMask::columns(info.metadata.parquet_schema(), [key_column]);
            let reader =
                ParquetRecordBatchReaderBuilder::new_with_metadata(file, info.metadata.clone())
                    .with_projection(mask)
                    .with_batch_size(65_536)
                    .build()
                    .map_err(|source| Error::Parquet {
                        path: info.path.clone(),
                        source,
                    })?;
            // Rows arrive in file order; walk the row-group sizes alongside.
            let (mut row_group, mut row) = (0u32, 0u32);
            for batch in reader {
                let batch = batch.map_err(|e| Error::Parquet {
                    path: info.path.clone(),
                    source: e.into(),
                })?;
                let keys = self.layout.keys_of(&batch, &info.path)?;
                for i in 0..batch.num_rows() {
                    while row
                        >= info
                            .row_groups
                            .get(row_group as usize)
                            .copied()
                            .unwrap_or(u32::MAX)
                    {
                        row_group += 1;
                        row = 0;
                    }
                    let addr = RowAddr {
                        shard: s as u32,
                        row_group,
                        row,
                    };
                    let key = match &keys {
                        Some(k) if k.is_valid(i) => k.value(i).to_owned(),
                        _ => generated_key(&info.key_prefix, row_group, row),
                    };
                    if let Some(&first) = seen.get(&key) {
                        return Err(duplicate(&key, first, (s, addr)));
                    }
                    seen.insert(key, (s, addr));
                    row += 1;
                    rows += 1;
                }
            }
        }
        Ok(rows)
    }

    /// Read one row group (only the needed columns) into per-row outcomes.
    pub fn read_row_group(&self, shard: u32, row_group: u32) -> Result<Vec<(RowAddr, RowOutcome)>> {
        let info = &self.shards[shard as usize];
        let rg_err = |source| Error::RowGroup {
            path: info.path.clone(),
            row_group: row_group as usize,
            source,
        };
        let file = File::open(&info.path).map_err(|e| Error::io(&info.path, e))?;
        let reader =
            ParquetRecordBatchReaderBuilder::new_with_metadata(file, info.metadata.clone())
                .with_projection(info.projection.clone())
                .with_row_groups(vec![row_group as usize])
                .with_batch_size(8192)
                .build()
                .map_err(rg_err)?;
        let mut out = Vec::with_capacity(info.row_groups[row_group as usize] as usize);
        let mut next_row = 0u32;
        for batch in reader {
            let batch = batch.map_err(|e| rg_err(e.into()))?;
            let first = RowAddr {
                shard,
                row_group,
                row: next_row,
            };
            self.layout
                .extract(&batch, first, &info.key_prefix, &mut out, &info.path)?;
            next_row += batch.num_rows() as u32;
        }
        Ok(out)
    }
}

/// FNV-1a, 64 bit: a stable hash (std's hasher may change between releases).
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Fnv {
    pub fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    pub fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for Fnv {
    fn default() -> Self {
        Self::new()
    }
}
