//! The reward cache: for each image, candidate captions of a captioner with
//! their evaluator rewards and reference log-probs, in Parquet, so DiCO can be
//! trained many times from one precomputation (offline DiCO).
//!
//! Layout (one row per candidate): `key: string`, `rank: int32`,
//! `tokens: list<int32>` (the captioner's target ids, EOS included),
//! `text: string`, `reward: float32`, `ref_logprob: float32`. File metadata
//! names the evaluator, captioner and reference weights by SHA-256 and holds the
//! generation/reward config, so a cache is never mixed with another.
//!
//! A cache directory holds one `part-NAME.parquet` per input shard. While a
//! part is being computed its rows go to `.part-NAME.chunks/chunk-NNNNN.parquet`
//! (each written to a temporary name and renamed), so a crash loses at most the
//! rows since the last chunk; [`PartWriter::finish`] merges the chunks into the
//! part (temporary name, then rename) and removes them. Several devices
//! computing one part write their own chunks side by side
//! (`chunk-device-D-of-N-NNNNN.parquet`, [`PartWriter::for_device`]) and one
//! merges them all: the finished part is the same file whatever the number of
//! devices, and an interrupted part resumes on any number of devices.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, Float32Array, Int32Array, Int32Builder, ListBuilder, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Float32Type, Int32Type, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::RewardError;

/// Version of the layout, stored in every file.
pub const FORMAT_VERSION: &str = "1";
const META_VERSION: &str = "dicoflow.reward_cache.version";
const META_EVALUATOR: &str = "dicoflow.evaluator.sha256";
const META_CAPTIONER: &str = "dicoflow.captioner.sha256";
const META_REFERENCE: &str = "dicoflow.reference.sha256";
const META_CONFIG: &str = "dicoflow.config";

/// One cached candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// Image key (as in the input shards).
    pub key: String,
    /// Position among the image's candidates (beam order, or sample index).
    pub rank: i32,
    /// Target ids of the captioner's vocabulary, EOS included, no padding.
    pub tokens: Vec<i32>,
    pub text: String,
    /// Evaluator reward of the candidate.
    pub reward: f32,
    /// Summed log-prob of `tokens` under the frozen reference model.
    pub ref_logprob: f32,
}

/// What made a cache: the weights (SHA-256 of the files) and the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheProvenance {
    pub evaluator_sha256: String,
    pub captioner_sha256: String,
    pub reference_sha256: String,
    /// Generation and reward settings (JSON).
    pub config: String,
}

impl CacheProvenance {
    fn key_values(&self) -> Vec<KeyValue> {
        [
            (META_VERSION, FORMAT_VERSION),
            (META_EVALUATOR, self.evaluator_sha256.as_str()),
            (META_CAPTIONER, self.captioner_sha256.as_str()),
            (META_REFERENCE, self.reference_sha256.as_str()),
            (META_CONFIG, self.config.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| KeyValue::new(k.to_owned(), v.to_owned()))
        .collect()
    }

    fn from_key_values(kv: Option<&Vec<KeyValue>>, path: &Path) -> Result<Self, RewardError> {
        let get = |name: &str| {
            kv.and_then(|kv| kv.iter().find(|e| e.key == name))
                .and_then(|e| e.value.clone())
                .ok_or_else(|| RewardError::CacheFile {
                    path: path.into(),
                    what: format!(
                        "metadata `{name}` missing: not a dicoflow reward cache (make one with \
                         `dicoflow cache-rewards`)"
                    ),
                })
        };
        let version = get(META_VERSION)?;
        if version != FORMAT_VERSION {
            return Err(RewardError::CacheFile {
                path: path.into(),
                what: format!(
                    "layout version {version}; this build reads version {FORMAT_VERSION}"
                ),
            });
        }
        Ok(Self {
            evaluator_sha256: get(META_EVALUATOR)?,
            captioner_sha256: get(META_CAPTIONER)?,
            reference_sha256: get(META_REFERENCE)?,
            config: get(META_CONFIG)?,
        })
    }

    /// An error unless `self` (found in `path`) equals `expected`.
    pub fn check_same(&self, expected: &Self, path: &Path) -> Result<(), RewardError> {
        let differs = [
            (
                "evaluator",
                &self.evaluator_sha256,
                &expected.evaluator_sha256,
            ),
            (
                "captioner",
                &self.captioner_sha256,
                &expected.captioner_sha256,
            ),
            (
                "reference",
                &self.reference_sha256,
                &expected.reference_sha256,
            ),
            ("config", &self.config, &expected.config),
        ]
        .into_iter()
        .filter(|(_, a, b)| a != b)
        .map(|(what, _, _)| what)
        .collect::<Vec<_>>();
        if differs.is_empty() {
            return Ok(());
        }
        Err(RewardError::CacheMismatch {
            path: path.into(),
            what: format!(
                "made with a different {}; write to a new cache directory, or delete the \
                 old files to recompute them",
                differs.join(", ")
            ),
        })
    }
}

/// SHA-256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, RewardError> {
    let io = |e: std::io::Error| RewardError::CacheFile {
        path: path.into(),
        what: format!("cannot hash: {e}"),
    };
    let mut file = File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("rank", DataType::Int32, false),
        Field::new(
            "tokens",
            DataType::List(Arc::new(Field::new("item", DataType::Int32, true))),
            false,
        ),
        Field::new("text", DataType::Utf8, false),
        Field::new("reward", DataType::Float32, false),
        Field::new("ref_logprob", DataType::Float32, false),
    ]))
}

/// The finished part of input shard `part` in `dir`.
pub fn part_path(dir: &Path, part: &str) -> PathBuf {
    dir.join(format!("part-{part}.parquet"))
}

/// Where the chunks of an unfinished part live.
pub fn chunk_dir(dir: &Path, part: &str) -> PathBuf {
    dir.join(format!(".part-{part}.chunks"))
}

/// Finished parts in `dir`, sorted (none if `dir` does not exist).
pub fn finished_parts(dir: &Path) -> Result<Vec<PathBuf>, RewardError> {
    parquet_files(dir, "part-")
}

fn parquet_files(dir: &Path, prefix: &str) -> Result<Vec<PathBuf>, RewardError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(RewardError::CacheFile {
                path: dir.into(),
                what: e.to_string(),
            })
        }
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".parquet"))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Write `entries` to `path` atomically (temporary name, then rename).
pub fn write_file(
    path: &Path,
    provenance: &CacheProvenance,
    entries: &[CacheEntry],
) -> Result<(), RewardError> {
    let err = |what: String| RewardError::CacheFile {
        path: path.into(),
        what,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    }
    let tmp = path.with_extension("parquet.tmp");
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).map_err(|e| err(e.to_string()))?,
        ))
        .set_key_value_metadata(Some(provenance.key_values()))
        .build();
    let file = File::create(&tmp).map_err(|e| err(e.to_string()))?;
    let mut writer =
        ArrowWriter::try_new(file, schema(), Some(props)).map_err(|e| err(e.to_string()))?;
    let mut tokens = ListBuilder::new(Int32Builder::new());
    for e in entries {
        tokens.values().append_slice(&e.tokens);
        tokens.append(true);
    }
    let batch = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                entries.iter().map(|e| e.key.as_str()),
            )),
            Arc::new(Int32Array::from_iter_values(entries.iter().map(|e| e.rank))),
            Arc::new(tokens.finish()),
            Arc::new(StringArray::from_iter_values(
                entries.iter().map(|e| e.text.as_str()),
            )),
            Arc::new(Float32Array::from_iter_values(
                entries.iter().map(|e| e.reward),
            )),
            Arc::new(Float32Array::from_iter_values(
                entries.iter().map(|e| e.ref_logprob),
            )),
        ],
    )
    .map_err(|e| err(e.to_string()))?;
    writer.write(&batch).map_err(|e| err(e.to_string()))?;
    writer.close().map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
}

fn open_reader(
    path: &Path,
) -> Result<(CacheProvenance, ParquetRecordBatchReaderBuilder<File>), RewardError> {
    let err = |what: String| RewardError::CacheFile {
        path: path.into(),
        what,
    };
    let file = File::open(path).map_err(|e| err(e.to_string()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| err(format!("not a readable Parquet file: {e}")))?;
    let provenance = CacheProvenance::from_key_values(
        builder.metadata().file_metadata().key_value_metadata(),
        path,
    )?;
    let expected = schema();
    for field in expected.fields() {
        match builder.schema().field_with_name(field.name()) {
            Ok(found) if found.data_type() == field.data_type() => {}
            Ok(found) => {
                return Err(err(format!(
                    "column `{}` is {}, expected {}",
                    field.name(),
                    found.data_type(),
                    field.data_type()
                )))
            }
            Err(_) => return Err(err(format!("column `{}` missing", field.name()))),
        }
    }
    Ok((provenance, builder))
}

/// Read a cache file: its provenance and every entry, in file order.
pub fn read_file(path: &Path) -> Result<(CacheProvenance, Vec<CacheEntry>), RewardError> {
    let (provenance, builder) = open_reader(path)?;
    let err = |what: String| RewardError::CacheFile {
        path: path.into(),
        what,
    };
    let reader = builder.build().map_err(|e| err(e.to_string()))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| err(e.to_string()))?;
        let col = |name: &str| batch.column_by_name(name).cloned();
        let (Some(key), Some(rank), Some(tokens), Some(text), Some(reward), Some(ref_lp)) = (
            col("key"),
            col("rank"),
            col("tokens"),
            col("text"),
            col("reward"),
            col("ref_logprob"),
        ) else {
            return Err(err("a record batch lacks a column".into()));
        };
        let (key, text) = (key.as_string::<i32>(), text.as_string::<i32>());
        let rank = rank.as_primitive::<Int32Type>();
        let tokens = tokens.as_list::<i32>();
        let (reward, ref_lp) = (
            reward.as_primitive::<Float32Type>(),
            ref_lp.as_primitive::<Float32Type>(),
        );
        for i in 0..batch.num_rows() {
            if key.is_null(i) || tokens.is_null(i) || text.is_null(i) {
                return Err(err(format!("row {} has a null key, tokens or text", i)));
            }
            let ids = tokens.value(i);
            let ids = ids.as_primitive::<Int32Type>();
            out.push(CacheEntry {
                key: key.value(i).to_owned(),
                rank: rank.value(i),
                tokens: ids.values().to_vec(),
                text: text.value(i).to_owned(),
                reward: reward.value(i),
                ref_logprob: ref_lp.value(i),
            });
        }
    }
    Ok((provenance, out))
}

/// Read only the keys of a cache file (and its provenance).
pub fn read_keys(path: &Path) -> Result<(CacheProvenance, Vec<String>), RewardError> {
    let (provenance, builder) = open_reader(path)?;
    let err = |what: String| RewardError::CacheFile {
        path: path.into(),
        what,
    };
    let mask = ProjectionMask::columns(builder.parquet_schema(), ["key"]);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| err(e.to_string()))?;
    let mut keys = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| err(e.to_string()))?;
        let col = batch
            .column_by_name("key")
            .ok_or_else(|| err("column `key` missing".into()))?;
        keys.extend(col.as_string::<i32>().iter().flatten().map(str::to_owned));
    }
    Ok((provenance, keys))
}

/// Keys of every finished part in `dir` plus the chunks of the unfinished
/// `part`, checking that each file was made by `expected`.
pub fn present_keys(
    dir: &Path,
    part: &str,
    expected: &CacheProvenance,
) -> Result<HashSet<String>, RewardError> {
    let mut files = finished_parts(dir)?;
    files.extend(parquet_files(&chunk_dir(dir, part), "chunk-")?);
    let mut keys = HashSet::new();
    for path in files {
        let (provenance, k) = read_keys(&path)?;
        provenance.check_same(expected, &path)?;
        keys.extend(k);
    }
    Ok(keys)
}

/// File in a cache folder recording which input shard each part was made from.
pub const INPUTS_FILE: &str = "inputs.json";

/// One input shard as a cache records it: enough to tell another file by the
/// same name from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardFingerprint {
    /// The shard's path as given to `cache-rewards` (informational).
    pub file: String,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of the whole file.
    pub sha256: String,
}

impl ShardFingerprint {
    /// Fingerprint the shard at `path` (reads it once).
    pub fn of(path: &Path) -> Result<Self, RewardError> {
        let bytes = std::fs::metadata(path)
            .map_err(|e| RewardError::CacheFile {
                path: path.into(),
                what: e.to_string(),
            })?
            .len();
        Ok(Self {
            file: path.display().to_string(),
            bytes,
            sha256: sha256_file(path)?,
        })
    }
}

/// What a cache folder was made from: part name → input shard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheInputs {
    pub parts: BTreeMap<String, ShardFingerprint>,
}

/// Part names of the finished parts and unfinished chunk folders in `dir`,
/// and the names of entries that belong to no reward cache.
fn cache_contents(dir: &Path) -> Result<(Vec<String>, Vec<String>), RewardError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => {
            return Err(RewardError::CacheFile {
                path: dir.into(),
                what: e.to_string(),
            })
        }
    };
    let (mut parts, mut foreign) = (Vec::new(), Vec::new());
    for entry in entries {
        let entry = entry.map_err(|e| RewardError::CacheFile {
            path: dir.into(),
            what: e.to_string(),
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(part) = name
            .strip_prefix("part-")
            .and_then(|n| n.strip_suffix(".parquet"))
            .or_else(|| {
                name.strip_prefix(".part-")
                    .and_then(|n| n.strip_suffix(".chunks"))
            })
        {
            parts.push(part.to_owned());
        } else if name != INPUTS_FILE && !name.ends_with(".tmp") {
            foreign.push(name);
        }
    }
    parts.sort();
    parts.dedup();
    foreign.sort();
    Ok((parts, foreign))
}

/// Check that the cache folder `dir` holds only parts of the inputs `current`
/// (part name → shard) and record them in [`INPUTS_FILE`]. A cache folder is
/// resumed only with the inputs it was made from: a new shard may join, but a
/// recorded part whose shard is gone or differs, a part with no record (a
/// folder made before records were kept, or by hand) and files that belong to
/// no cache are refused, naming the file. Without this, the keys of another
/// source would count as already cached.
pub fn check_and_record_inputs(dir: &Path, current: &CacheInputs) -> Result<(), RewardError> {
    let (parts, foreign) = cache_contents(dir)?;
    if !foreign.is_empty() {
        return Err(RewardError::CacheMismatch {
            path: dir.into(),
            what: format!(
                "the folder holds files that are not part of a reward cache ({}); write the \
                 cache to an empty or new folder",
                foreign.join(", ")
            ),
        });
    }
    let record = dir.join(INPUTS_FILE);
    let recorded: CacheInputs = match std::fs::read_to_string(&record) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| RewardError::CacheFile {
            path: record.clone(),
            what: format!("unreadable record of the cache's inputs: {e}"),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => CacheInputs::default(),
        Err(e) => {
            return Err(RewardError::CacheFile {
                path: record,
                what: e.to_string(),
            })
        }
    };
    for part in &parts {
        if !recorded.parts.contains_key(part) {
            return Err(RewardError::CacheMismatch {
                path: dir.into(),
                what: format!(
                    "part `{part}` has no record of the shard it was made from ({INPUTS_FILE}); \
                     the folder may cache other inputs: write to a new cache folder, or delete \
                     this one to recompute it"
                ),
            });
        }
    }
    for (part, was) in &recorded.parts {
        match current.parts.get(part) {
            Some(now) if now.bytes == was.bytes && now.sha256 == was.sha256 => {}
            Some(now) => {
                return Err(RewardError::CacheMismatch {
                    path: dir.into(),
                    what: format!(
                        "part `{part}` was made from {} (sha256 {}), but this dataset's {} \
                         differs (sha256 {}); write to a new cache folder",
                        was.file, was.sha256, now.file, now.sha256
                    ),
                })
            }
            None => {
                return Err(RewardError::CacheMismatch {
                    path: dir.into(),
                    what: format!(
                        "part `{part}` was made from {}, which is not a shard of this dataset; \
                         the folder caches other inputs: write to a new cache folder",
                        was.file
                    ),
                })
            }
        }
    }
    let mut merged = recorded;
    merged
        .parts
        .extend(current.parts.iter().map(|(k, v)| (k.clone(), v.clone())));
    let io = |e: std::io::Error| RewardError::CacheFile {
        path: record.clone(),
        what: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(format!("{INPUTS_FILE}.tmp"));
    let text = serde_json::to_string_pretty(&merged).map_err(|e| RewardError::CacheFile {
        path: record.clone(),
        what: e.to_string(),
    })?;
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, &record).map_err(io)
}

/// Writes one part: rows go to chunk files as they come and are merged into
/// the part by [`PartWriter::finish`]. Chunks left by an interrupted run are
/// kept and merged too.
#[derive(Debug)]
pub struct PartWriter {
    dir: PathBuf,
    part: String,
    provenance: CacheProvenance,
    pending: Vec<CacheEntry>,
    /// Rows per chunk file.
    chunk_rows: usize,
    /// What this writer's chunk names start with ([`device_chunk_prefix`]).
    prefix: String,
    next_chunk: usize,
}

/// Chunk names of device `d` of `devices` writing one part together:
/// `chunk-device-D-of-N-`, so concurrent writers never pick the same name. A
/// single writer's chunks are `chunk-NNNNN.parquet`. Every chunk of a part,
/// whoever wrote it, starts with `chunk-`: [`present_keys`] and
/// [`PartWriter::finish`] read them all.
pub fn device_chunk_prefix(d: usize, devices: usize) -> String {
    format!("chunk-device-{d}-of-{devices}-")
}

impl PartWriter {
    /// A writer of part `part` in `dir`, flushing a chunk every `chunk_rows`
    /// rows, named `chunk-NNNNN.parquet`.
    ///
    /// Errors: [`RewardError::CacheFile`] when `part` is not a file name or
    /// the chunk folder cannot be listed.
    pub fn new(
        dir: &Path,
        part: &str,
        provenance: CacheProvenance,
        chunk_rows: usize,
    ) -> Result<Self, RewardError> {
        Self::with_chunk_prefix(dir, part, provenance, chunk_rows, "chunk-")
    }

    /// A writer of device `d`'s share (of `devices`) of part `part`: its chunks
    /// are named with [`device_chunk_prefix`], beside those of the other
    /// devices (and of earlier runs on any number of devices) in the part's
    /// chunk folder. Whichever writer finishes the part merges them all.
    ///
    /// Errors: as [`PartWriter::new`].
    pub fn for_device(
        dir: &Path,
        part: &str,
        provenance: CacheProvenance,
        chunk_rows: usize,
        (d, devices): (usize, usize),
    ) -> Result<Self, RewardError> {
        let prefix = device_chunk_prefix(d, devices);
        Self::with_chunk_prefix(dir, part, provenance, chunk_rows, &prefix)
    }

    fn with_chunk_prefix(
        dir: &Path,
        part: &str,
        provenance: CacheProvenance,
        chunk_rows: usize,
        prefix: &str,
    ) -> Result<Self, RewardError> {
        if part.is_empty() || part.contains(['/', '\\']) {
            return Err(RewardError::CacheFile {
                path: dir.into(),
                what: format!("part name `{part}` must be non-empty without path separators"),
            });
        }
        // Chunk numbers continue after this writer's own earlier chunks
        // (`chunk-00001` is not `chunk-device-0-of-2-00001`).
        let existing = parquet_files(&chunk_dir(dir, part), prefix)?
            .iter()
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_prefix(prefix))
                    .and_then(|n| n.strip_suffix(".parquet"))
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            })
            .count();
        Ok(Self {
            dir: dir.into(),
            part: part.into(),
            provenance,
            pending: Vec::new(),
            chunk_rows: chunk_rows.max(1),
            prefix: prefix.to_owned(),
            next_chunk: existing,
        })
    }

    /// Add rows; a chunk is written once `chunk_rows` are pending.
    pub fn push(
        &mut self,
        entries: impl IntoIterator<Item = CacheEntry>,
    ) -> Result<(), RewardError> {
        self.pending.extend(entries);
        if self.pending.len() >= self.chunk_rows {
            self.flush()?;
        }
        Ok(())
    }

    /// Write pending rows as a chunk file.
    pub fn flush(&mut self) -> Result<(), RewardError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let dir = chunk_dir(&self.dir, &self.part);
        // Names are never reused: a chunk from an earlier run keeps its file.
        let mut path;
        loop {
            path = dir.join(format!("{}{:05}.parquet", self.prefix, self.next_chunk));
            self.next_chunk += 1;
            if !path.exists() {
                break;
            }
        }
        write_file(&path, &self.provenance, &self.pending)?;
        self.pending.clear();
        Ok(())
    }

    /// Merge every chunk of the part (this writer's, the other devices', and
    /// those left by earlier runs on any number of devices) into the part,
    /// sorted by key and rank so the part does not depend on chunking or on
    /// which device computed which image, rename it into place, remove the
    /// chunks. Returns the part's path and its row count.
    ///
    /// Errors: [`RewardError::CacheMismatch`] when a chunk was made with
    /// another provenance or two chunks hold the same candidate (key, rank);
    /// [`RewardError::CacheFile`] when a file cannot be read or written.
    pub fn finish(mut self) -> Result<(PathBuf, usize), RewardError> {
        self.flush()?;
        let dir = chunk_dir(&self.dir, &self.part);
        let mut rows = Vec::new();
        for chunk in parquet_files(&dir, "chunk-")? {
            let (provenance, entries) = read_file(&chunk)?;
            provenance.check_same(&self.provenance, &chunk)?;
            rows.extend(entries);
        }
        rows.sort_by(|a, b| (&a.key, a.rank).cmp(&(&b.key, b.rank)));
        if let Some(pair) = rows
            .windows(2)
            .find(|w| (&w[0].key, w[0].rank) == (&w[1].key, w[1].rank))
        {
            return Err(RewardError::CacheMismatch {
                path: dir.clone(),
                what: format!(
                    "candidate {} of `{}` is in two chunks: delete the chunk folder to \
                     recompute the part",
                    pair[0].rank, pair[0].key
                ),
            });
        }
        let path = part_path(&self.dir, &self.part);
        write_file(&path, &self.provenance, &rows)?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| RewardError::CacheFile {
                path: dir.clone(),
                what: format!("part written, but the chunks could not be removed: {e}"),
            })?;
        }
        Ok((path, rows.len()))
    }
}

/// A whole cache in memory, by image key: what offline DiCO trains from.
#[derive(Debug)]
pub struct RewardCache {
    provenance: CacheProvenance,
    by_key: BTreeMap<String, Vec<CacheEntry>>,
    parts: usize,
}

impl RewardCache {
    /// Load every finished part of `dir`; all parts must share one provenance.
    pub fn open(dir: &Path) -> Result<Self, RewardError> {
        let parts = finished_parts(dir)?;
        let mut provenance: Option<CacheProvenance> = None;
        let mut by_key: BTreeMap<String, Vec<CacheEntry>> = BTreeMap::new();
        // Which part each key came from: a key in two parts (two inputs sharing
        // keys) would give one image the other's candidates.
        let mut part_of: BTreeMap<String, usize> = BTreeMap::new();
        for (i, path) in parts.iter().enumerate() {
            let (p, entries) = read_file(path)?;
            // Every part must have been made like the first.
            match &provenance {
                Some(first) => p.check_same(first, path)?,
                None => provenance = Some(p),
            }
            for e in entries {
                let first = *part_of.entry(e.key.clone()).or_insert(i);
                let list = by_key.entry(e.key.clone()).or_default();
                if first != i || list.iter().any(|o| o.rank == e.rank) {
                    return Err(RewardError::CacheMismatch {
                        path: path.clone(),
                        what: format!(
                            "key `{}` (rank {}) is also in {}: keys must be unique across the \
                             cached dataset; recompute the cache from a dataset with unique keys",
                            e.key,
                            e.rank,
                            parts[first].display()
                        ),
                    });
                }
                list.push(e);
            }
        }
        for entries in by_key.values_mut() {
            entries.sort_by_key(|e| e.rank);
        }
        let Some(provenance) = provenance else {
            return Err(RewardError::CacheFile {
                path: dir.into(),
                what: "no finished parts (part-*.parquet); make them with `dicoflow \
                       cache-rewards`"
                    .into(),
            });
        };
        Ok(Self {
            provenance,
            by_key,
            parts: parts.len(),
        })
    }

    pub fn provenance(&self) -> &CacheProvenance {
        &self.provenance
    }

    /// The candidates of image `key`, by rank.
    pub fn get(&self, key: &str) -> Option<&[CacheEntry]> {
        self.by_key.get(key).map(Vec::as_slice)
    }

    /// Image keys, sorted.
    pub fn keys(&self) -> Vec<&str> {
        self.by_key.keys().map(String::as_str).collect()
    }

    /// Images in the cache.
    pub fn images(&self) -> usize {
        self.by_key.len()
    }

    /// Finished parts loaded.
    pub fn parts(&self) -> usize {
        self.parts
    }

    /// The largest token id in the cache (to check it against a vocabulary).
    pub fn max_token(&self) -> Option<i32> {
        self.by_key
            .values()
            .flatten()
            .flat_map(|e| e.tokens.iter().copied())
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prov(config: &str) -> CacheProvenance {
        CacheProvenance {
            evaluator_sha256: "e".into(),
            captioner_sha256: "c".into(),
            reference_sha256: "r".into(),
            config: config.into(),
        }
    }

    fn entry(key: &str, rank: i32) -> CacheEntry {
        CacheEntry {
            key: key.into(),
            rank,
            tokens: vec![rank, 7, 2],
            text: format!("caption {rank} of {key}"),
            reward: 0.25 * rank as f32,
            ref_logprob: -1.5 - rank as f32,
        }
    }

    #[test]
    fn chunks_merge_into_a_sorted_part() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PartWriter::new(dir.path(), "a", prov("x"), 3).unwrap();
        w.push([entry("k2", 1), entry("k2", 0)]).unwrap();
        w.push([entry("k1", 0), entry("k1", 1)]).unwrap(); // 4 ≥ 3: one chunk
        assert_eq!(
            parquet_files(&chunk_dir(dir.path(), "a"), "chunk-")
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            present_keys(dir.path(), "a", &prov("x")).unwrap(),
            HashSet::from(["k1".to_string(), "k2".to_string()])
        );
        w.push([entry("k0", 0)]).unwrap();
        let (path, rows) = w.finish().unwrap();
        assert_eq!(rows, 5);
        assert!(!chunk_dir(dir.path(), "a").exists());
        let (p, entries) = read_file(&path).unwrap();
        assert_eq!(p, prov("x"));
        let order: Vec<(&str, i32)> = entries.iter().map(|e| (e.key.as_str(), e.rank)).collect();
        assert_eq!(
            order,
            [("k0", 0), ("k1", 0), ("k1", 1), ("k2", 0), ("k2", 1)]
        );
        assert_eq!(entries[2], entry("k1", 1));
        let cache = RewardCache::open(dir.path()).unwrap();
        assert_eq!(cache.images(), 3);
        assert_eq!(cache.get("k2").unwrap()[1], entry("k2", 1));
        assert_eq!(cache.max_token(), Some(7));
    }

    #[test]
    fn device_chunks_and_earlier_chunks_merge_into_one_part() {
        let dir = tempfile::tempdir().unwrap();
        // An earlier one-device run left a chunk; two devices add theirs.
        let mut one = PartWriter::new(dir.path(), "a", prov("x"), 100).unwrap();
        one.push([entry("k3", 0), entry("k3", 1)]).unwrap();
        one.flush().unwrap();
        drop(one);
        let mut d0 = PartWriter::for_device(dir.path(), "a", prov("x"), 2, (0, 2)).unwrap();
        let mut d1 = PartWriter::for_device(dir.path(), "a", prov("x"), 2, (1, 2)).unwrap();
        d1.push([entry("k2", 1), entry("k2", 0)]).unwrap();
        d0.push([entry("k1", 0), entry("k1", 1)]).unwrap();
        d1.push([entry("k0", 0)]).unwrap();
        d0.flush().unwrap();
        d1.flush().unwrap();
        let names: Vec<String> = parquet_files(&chunk_dir(dir.path(), "a"), "chunk-")
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "chunk-00000.parquet",
                "chunk-device-0-of-2-00000.parquet",
                "chunk-device-1-of-2-00000.parquet",
                "chunk-device-1-of-2-00001.parquet"
            ]
        );
        // A device resuming continues its own numbering.
        let mut again = PartWriter::for_device(dir.path(), "a", prov("x"), 2, (1, 2)).unwrap();
        again.push([entry("k4", 0)]).unwrap();
        again.flush().unwrap();
        assert!(chunk_dir(dir.path(), "a")
            .join("chunk-device-1-of-2-00002.parquet")
            .is_file());
        assert_eq!(present_keys(dir.path(), "a", &prov("x")).unwrap().len(), 5);
        let (path, rows) = PartWriter::new(dir.path(), "a", prov("x"), 2)
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(rows, 8);
        let (_, entries) = read_file(&path).unwrap();
        let order: Vec<(&str, i32)> = entries.iter().map(|e| (e.key.as_str(), e.rank)).collect();
        assert_eq!(
            order,
            [
                ("k0", 0),
                ("k1", 0),
                ("k1", 1),
                ("k2", 0),
                ("k2", 1),
                ("k3", 0),
                ("k3", 1),
                ("k4", 0)
            ]
        );
        assert!(!chunk_dir(dir.path(), "a").exists());
    }

    #[test]
    fn a_candidate_in_two_chunks_is_not_merged() {
        let dir = tempfile::tempdir().unwrap();
        let mut d0 = PartWriter::for_device(dir.path(), "a", prov("x"), 1, (0, 2)).unwrap();
        let mut d1 = PartWriter::for_device(dir.path(), "a", prov("x"), 1, (1, 2)).unwrap();
        d0.push([entry("k", 0)]).unwrap();
        d1.push([entry("k", 0)]).unwrap();
        let err = d1.finish().unwrap_err().to_string();
        assert!(err.contains("`k`") && err.contains("two chunks"), "{err}");
        assert!(!part_path(dir.path(), "a").exists());
    }

    #[test]
    fn mixing_provenances_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_file(&part_path(dir.path(), "a"), &prov("x"), &[entry("k", 0)]).unwrap();
        write_file(&part_path(dir.path(), "b"), &prov("y"), &[entry("j", 0)]).unwrap();
        let err = RewardCache::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("different config"), "{err}");
        let err = present_keys(dir.path(), "c", &prov("x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("part-b.parquet"), "{err}");
    }

    #[test]
    fn a_key_in_two_parts_or_twice_in_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_file(&part_path(dir.path(), "a"), &prov("x"), &[entry("k", 0)]).unwrap();
        write_file(&part_path(dir.path(), "b"), &prov("x"), &[entry("k", 0)]).unwrap();
        let err = RewardCache::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("part-a.parquet") && err.contains("part-b.parquet") && err.contains("`k`"),
            "{err}"
        );
        std::fs::remove_file(part_path(dir.path(), "b")).unwrap();
        write_file(
            &part_path(dir.path(), "a"),
            &prov("x"),
            &[entry("k", 0), entry("k", 1), entry("k", 0)],
        )
        .unwrap();
        let err = RewardCache::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("`k` (rank 0)"), "{err}");
    }

    #[test]
    fn inputs_are_recorded_and_other_inputs_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fp = |file: &str, sha: &str| ShardFingerprint {
            file: file.into(),
            bytes: 10,
            sha256: sha.into(),
        };
        let inputs = |parts: &[(&str, ShardFingerprint)]| CacheInputs {
            parts: parts
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        };
        let first = inputs(&[("a", fp("d/a.parquet", "1"))]);
        check_and_record_inputs(dir.path(), &first).unwrap();
        write_file(&part_path(dir.path(), "a"), &prov("x"), &[entry("k", 0)]).unwrap();
        // Same inputs plus a new shard: resumed and recorded.
        let grown = inputs(&[("a", fp("d/a.parquet", "1")), ("b", fp("d/b.parquet", "2"))]);
        check_and_record_inputs(dir.path(), &grown).unwrap();
        let text = std::fs::read_to_string(dir.path().join(INPUTS_FILE)).unwrap();
        assert_eq!(serde_json::from_str::<CacheInputs>(&text).unwrap(), grown);
        // Same name, other file.
        let err = check_and_record_inputs(dir.path(), &inputs(&[("a", fp("e/a.parquet", "9"))]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("part `a`") && err.contains("e/a.parquet"),
            "{err}"
        );
        // A part without a record.
        std::fs::remove_file(dir.path().join(INPUTS_FILE)).unwrap();
        let err = check_and_record_inputs(dir.path(), &first)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no record"), "{err}");
        // Files of no cache.
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("train-00000.parquet"), b"x").unwrap();
        let err = check_and_record_inputs(other.path(), &first)
            .unwrap_err()
            .to_string();
        assert!(err.contains("train-00000.parquet"), "{err}");
    }

    #[test]
    fn foreign_files_are_named_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = RewardCache::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("cache-rewards"), "{err}");
        std::fs::write(part_path(dir.path(), "a"), b"not parquet").unwrap();
        let err = RewardCache::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("part-a.parquet") && err.contains("Parquet"),
            "{err}"
        );
    }
}
