//! Computing a reward cache, one part per input shard. The pipeline's
//! `reward_cache` device stage does the work; this plans it: a shard whose
//! part is finished is skipped, and for the others the keys still missing
//! from the cache are found with the differential antijoin
//! ([`super::cache_join`]) before the shard is streamed.
//!
//! Before any work, the dataset's keys must be unique (they index the cache),
//! and the cache folder must hold only parts of these inputs (recorded in
//! `inputs.json`): a folder made from other shards is refused, not resumed.
//!
//! The stage is known here only through [`CacheStage`], which its settings
//! implement (`crate::train::stages::reward_cache`): the training stages
//! depend on the reward module, not the other way round.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::de::DeserializeOwned;

use super::cache::{self, CacheInputs, CacheProvenance, PartWriter, ShardFingerprint};
use super::cache_join::missing_keys;
use super::error::RewardError;
use crate::data::shards::{list_shards, ShardIndex};
use crate::flow::{run, FlowError, Pipeline, Registry, RunOptions};

/// The settings of the device stage that writes a reward cache, as a cache
/// run needs them.
pub trait CacheStage: DeserializeOwned {
    /// The stage's type name in a pipeline (`reward_cache`).
    const TYPE_NAME: &'static str;
    /// The cache directory.
    fn out(&self) -> &Path;
    /// Candidates per chunk file.
    fn chunk_rows(&self) -> usize;
    /// Why these settings cannot be computed on several devices (`None`:
    /// they can; the default).
    fn several_devices_refused(&self) -> Option<&'static str> {
        None
    }
    /// The provenance the stage writes into every part (hashes the weights
    /// it names).
    ///
    /// Errors: [`ProvenanceError`] when a weights file cannot be hashed.
    fn provenance(&self) -> Result<CacheProvenance, ProvenanceError>;
}

/// Why a reward cache's provenance could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum ProvenanceError {
    /// A weights file cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A weights file cannot be hashed.
    #[error(transparent)]
    Hash(#[from] RewardError),
    /// The settings record cannot be written as JSON.
    #[error("the cache's config record: {0}")]
    Config(#[source] serde_json::Error),
}

/// A file as of one moment: path, size, modification time.
type FileVersion = (PathBuf, u64, std::time::SystemTime);

/// SHA-256 (hex) of a weights file, remembered per (path, size, mtime) in
/// this process so each shard's run does not re-hash gigabytes.
///
/// Errors: [`ProvenanceError::Io`] when the file's metadata cannot be read,
/// [`ProvenanceError::Hash`] when the file cannot be read.
pub fn weights_sha256(path: &Path) -> Result<String, ProvenanceError> {
    static SEEN: Mutex<Vec<(FileVersion, String)>> = Mutex::new(Vec::new());
    let io = |source| ProvenanceError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let id = (path.to_path_buf(), meta.len(), meta.modified().map_err(io)?);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, h)) = seen.iter().find(|(k, _)| *k == id) {
        return Ok(h.clone());
    }
    let h = cache::sha256_file(path)?;
    seen.push((id, h.clone()));
    Ok(h)
}

/// Why a reward cache could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum CacheRunError {
    /// The pipeline does not have exactly one `reward_cache` device stage.
    #[error("the pipeline needs exactly one `reward_cache` device stage, found {found}")]
    StageCount { found: usize },
    /// The `reward_cache` stage's settings do not parse.
    #[error("reward_cache settings")]
    Settings(#[source] toml::de::Error),
    /// The pipeline names no shards.
    #[error("no shards: set [source] path in the pipeline or pass --data")]
    NoShards,
    /// Two shards have the same file name, which names their parts.
    #[error(
        "{}: two shards share a file name; parts are named by it, so give every shard a \
         distinct name (or cache each directory into its own --out)",
        data.display()
    )]
    SharedPartName { data: PathBuf },
    /// The dataset's keys are not unique (or cannot be read).
    #[error("checking the keys of {}", data.display())]
    Keys {
        data: PathBuf,
        #[source]
        source: Box<crate::Error>,
    },
    /// Shards that cannot be listed or read.
    #[error(transparent)]
    Data(#[from] crate::Error),
    /// The cache folder, its parts or its provenance.
    #[error(transparent)]
    Cache(#[from] RewardError),
    /// The weights named by the stage cannot be hashed for the provenance.
    #[error(transparent)]
    Provenance(#[from] ProvenanceError),
    /// The dataflow that finds the missing keys failed.
    #[error(transparent)]
    Join(#[from] FlowError),
    /// `flow.devices` cannot be honoured with these settings or workers,
    /// found before anything is hashed or written.
    #[error("flow.devices = {devices}: {why}")]
    Devices { devices: usize, why: String },
    /// The pipeline's stages refuse their settings, found before anything
    /// is hashed or written.
    #[error("the pipeline cannot run")]
    Pipeline(#[source] Box<FlowError>),
    /// The run that scores one shard failed.
    #[error("caching rewards for {}", shard.display())]
    Run {
        shard: PathBuf,
        #[source]
        source: Box<FlowError>,
    },
}

/// What a cache run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CacheReport {
    /// Shards whose part was already finished.
    pub finished: usize,
    /// Shards computed by this run (parts written).
    pub written: usize,
    /// Images of those shards already in the cache, and images scored now.
    pub cached_images: usize,
    pub scored_images: usize,
}

/// Part name of a shard: its file stem.
fn part_name(shard: &Path) -> String {
    shard
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "shard".into())
}

/// Keys of the rows of `shard` that the source yields (skipped rows are not
/// requested: they never reach the stage).
fn shard_keys(shard: &Path, pipeline: &Pipeline) -> Result<Vec<String>, crate::Error> {
    let index = ShardIndex::from_paths(vec![shard.to_path_buf()], &pipeline.source.layout)?;
    let mut keys = Vec::new();
    for (s, rg) in index.row_group_ids() {
        for (_, outcome) in index.read_row_group(s, rg)? {
            if let Ok(sample) = outcome {
                keys.push(sample.key);
            }
        }
    }
    Ok(keys)
}

/// Computes the reward cache that `pipeline`'s one cache stage (type
/// [`CacheStage::TYPE_NAME`], settings `S`, e.g.
/// `crate::train::stages::RewardCacheSettings`) describes, one part per shard of its source (read for one epoch), on
/// `workers` threads, with the stage types of `registry` (which must know
/// `reward_cache` and the pipeline's CPU stages); per-shard metrics logs go
/// to `run_dir/PART/`. Progress lines go to stdout; `quiet` leaves out the
/// progress bars and per-shard summaries.
///
/// With `flow.devices = N > 1` (at most `workers`), each shard's run splits
/// its images over N devices, each writing its own chunks of the part, and
/// the part is merged from all of them: the same part as on one device. A
/// part left unfinished resumes on any number of devices (its chunks count
/// whoever wrote them).
///
/// Errors: [`CacheRunError`], naming the pipeline setting, shard or cache
/// file at fault.
pub fn cache_rewards<S: CacheStage>(
    pipeline: &Pipeline,
    registry: &Registry,
    run_dir: &Path,
    workers: usize,
    quiet: bool,
) -> Result<CacheReport, CacheRunError> {
    let mut pipeline = pipeline.clone();
    pipeline.source.epochs = 1;
    let stages: Vec<usize> = (0..pipeline.device.len())
        .filter(|&i| pipeline.device[i].type_name == S::TYPE_NAME)
        .collect();
    let [stage] = stages[..] else {
        return Err(CacheRunError::StageCount {
            found: stages.len(),
        });
    };
    let settings: S = pipeline.device[stage]
        .settings
        .clone()
        .try_into()
        .map_err(CacheRunError::Settings)?;
    registry
        .check(&pipeline)
        .map_err(|e| CacheRunError::Pipeline(Box::new(e)))?;
    let devices = pipeline.flow.devices;
    if devices > 1 {
        if let Some(why) = settings.several_devices_refused() {
            return Err(CacheRunError::Devices {
                devices,
                why: why.to_owned(),
            });
        }
        if devices > workers {
            return Err(CacheRunError::Devices {
                devices,
                why: format!(
                    "every device is owned by a worker thread, and -w gave {workers}: \
                     pass -w {devices} (or more)"
                ),
            });
        }
    }
    let data = pipeline
        .source
        .path
        .clone()
        .ok_or(CacheRunError::NoShards)?;
    let shards = list_shards(&data)?;
    let names: Vec<String> = shards.iter().map(|s| part_name(s)).collect();
    let unique: BTreeSet<&String> = names.iter().collect();
    if unique.len() != names.len() {
        return Err(CacheRunError::SharedPartName { data });
    }
    // Keys index the cache: a key shared by two rows would give the second
    // image the first one's candidates. Only the key column is read.
    ShardIndex::from_paths(shards.clone(), &pipeline.source.layout)?
        .check_unique_keys()
        .map_err(|source| CacheRunError::Keys {
            data: data.clone(),
            source: Box::new(source),
        })?;
    // A cache folder resumes only with the inputs it was made from.
    let mut inputs = CacheInputs::default();
    for (shard, part) in shards.iter().zip(&names) {
        inputs
            .parts
            .insert(part.clone(), ShardFingerprint::of(shard)?);
    }
    cache::check_and_record_inputs(settings.out(), &inputs)?;
    println!("hashing the weights (the cache records which models made it)");
    let prov = settings.provenance()?;
    let mut report = CacheReport::default();
    for (i, (shard, part)) in shards.iter().zip(&names).enumerate() {
        let label = format!("[{}/{}] {}", i + 1, shards.len(), shard.display());
        if cache::part_path(settings.out(), part).exists() {
            println!("{label}: finished earlier, skipped");
            report.finished += 1;
            continue;
        }
        let present: Vec<String> = cache::present_keys(settings.out(), part, &prov)?
            .into_iter()
            .collect();
        let requested = shard_keys(shard, &pipeline)?;
        let missing = missing_keys(&present, &requested, 1)?;
        let cached = requested.len().saturating_sub(missing.len());
        report.cached_images += cached;
        report.scored_images += missing.len();
        println!(
            "{label}: {} images, {cached} already cached, {} to score",
            requested.len(),
            missing.len()
        );
        if missing.is_empty() {
            // Everything is cached elsewhere or in this part's chunks: seal the part.
            PartWriter::new(settings.out(), part, prov.clone(), settings.chunk_rows())?.finish()?;
        } else {
            let mut shard_pipeline = pipeline.clone();
            shard_pipeline.source.path = Some(shard.clone());
            shard_pipeline.device[stage]
                .settings
                .insert("part".into(), toml::Value::String(part.clone()));
            let opts = RunOptions {
                progress: !quiet,
                run_dir: Some(run_dir.join(part)),
                ..RunOptions::threads(workers)
            };
            let summary =
                run(&shard_pipeline, registry, &opts).map_err(|source| CacheRunError::Run {
                    shard: shard.clone(),
                    source: Box::new(source),
                })?;
            if !quiet {
                println!("{}", summary.telemetry);
            }
            // The run succeeded, so every device has written its chunks. The
            // last device to finish merges them; it may not have known it
            // was the last (a device that finished before another joined),
            // so a part left open is merged here.
            if devices > 1 && !cache::part_path(settings.out(), part).exists() {
                PartWriter::new(settings.out(), part, prov.clone(), settings.chunk_rows())?
                    .finish()?;
            }
        }
        report.written += 1;
    }
    println!(
        "cache {}: {} parts written, {} finished earlier; {} images scored, {} already cached",
        settings.out().display(),
        report.written,
        report.finished,
        report.scored_images,
        report.cached_images
    );
    Ok(report)
}
