//! `dicoflow cache-rewards --pipeline FILE`: precompute a reward cache, one
//! part per input shard. The pipeline's `reward_cache` device stage does the
//! work; this command plans it: a shard whose part is finished is skipped, and
//! for the others the keys still missing from the cache are found with the
//! differential antijoin (`reward::cache_join`) before the shard is streamed.
//!
//! Before any work, the dataset's keys must be unique (they index the cache),
//! and the cache folder must hold only parts of these inputs (recorded in
//! `inputs.json`): a folder made from other shards is refused, not resumed.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::data::shards::{list_shards, ShardIndex};
use crate::reward::cache_join::missing_keys;
use crate::flow::{run, Pipeline, RunOptions};
use crate::reward::cache::{self, CacheInputs, PartWriter, ShardFingerprint};
use crate::train::reward_cache_stage::{provenance, RewardCacheSettings};

/// Arguments of `cache-rewards`.
#[derive(Debug, clap::Args)]
pub struct CacheRewardsArgs {
    /// Pipeline file with one `reward_cache` device stage (see pipelines/reward_cache.toml).
    #[arg(long)]
    pub pipeline: PathBuf,
    /// Shards to read (overrides `path` in the pipeline's [source]).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Cache directory (overrides the stage's `out`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where each shard's metrics log goes (`RUN_DIR/PART/metrics.jsonl`).
    #[arg(long, default_value = "runs/cache-rewards")]
    pub run_dir: PathBuf,
    /// Worker threads (CPU stages).
    #[arg(short = 'w', long, default_value_t = 1)]
    pub workers: usize,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// What a `cache-rewards` run did.
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
fn shard_keys(shard: &Path, pipeline: &Pipeline) -> anyhow::Result<Vec<String>> {
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

/// Run `cache-rewards`.
pub fn run_cache_rewards(args: &CacheRewardsArgs) -> anyhow::Result<CacheReport> {
    let mut pipeline = Pipeline::load(&args.pipeline)?;
    if let Some(data) = &args.data {
        pipeline.source.path = Some(data.clone());
    }
    if let Some(out) = &args.out {
        for spec in pipeline
            .device
            .iter_mut()
            .filter(|s| s.type_name == "reward_cache")
        {
            spec.settings
                .insert("out".into(), toml::Value::String(out.display().to_string()));
        }
    }
    cache_rewards(&pipeline, &args.run_dir, args.workers, args.quiet)
        .with_context(|| format!("caching rewards with {}", args.pipeline.display()))
}

/// Compute the reward cache that `pipeline`'s one `reward_cache` stage
/// describes, one part per shard of its source, on `workers` threads;
/// per-shard metrics logs go to `run_dir/PART/`.
pub fn cache_rewards(
    pipeline: &Pipeline,
    run_dir: &Path,
    workers: usize,
    quiet: bool,
) -> anyhow::Result<CacheReport> {
    let mut pipeline = pipeline.clone();
    pipeline.source.epochs = 1;
    let stages: Vec<usize> = (0..pipeline.device.len())
        .filter(|&i| pipeline.device[i].type_name == "reward_cache")
        .collect();
    let [stage] = stages[..] else {
        bail!(
            "the pipeline needs exactly one `reward_cache` device stage, found {}",
            stages.len()
        );
    };
    let settings: RewardCacheSettings = pipeline.device[stage]
        .settings
        .clone()
        .try_into()
        .context("reward_cache settings")?;
    let data = pipeline
        .source
        .path
        .clone()
        .context("no shards: set [source] path in the pipeline or pass --data")?;
    let shards = list_shards(&data)?;
    let names: Vec<String> = shards.iter().map(|s| part_name(s)).collect();
    let unique: BTreeSet<&String> = names.iter().collect();
    if unique.len() != names.len() {
        bail!(
            "{}: two shards share a file name; parts are named by it, so give every shard a \
             distinct name (or cache each directory into its own --out)",
            data.display()
        );
    }
    // Keys index the cache: a key shared by two rows would give the second
    // image the first one's candidates. Only the key column is read.
    ShardIndex::from_paths(shards.clone(), &pipeline.source.layout)?
        .check_unique_keys()
        .with_context(|| format!("checking the keys of {}", data.display()))?;
    // A cache folder resumes only with the inputs it was made from.
    let mut inputs = CacheInputs::default();
    for (shard, part) in shards.iter().zip(&names) {
        inputs
            .parts
            .insert(part.clone(), ShardFingerprint::of(shard)?);
    }
    cache::check_and_record_inputs(&settings.out, &inputs)?;
    println!("hashing the weights (the cache records which models made it)");
    let prov = provenance(&settings).map_err(anyhow::Error::msg)?;
    let registry = crate::train::stages::registry();
    let mut report = CacheReport::default();
    for (i, (shard, part)) in shards.iter().zip(&names).enumerate() {
        let label = format!("[{}/{}] {}", i + 1, shards.len(), shard.display());
        if cache::part_path(&settings.out, part).exists() {
            println!("{label}: finished earlier, skipped");
            report.finished += 1;
            continue;
        }
        let present: Vec<String> = cache::present_keys(&settings.out, part, &prov)?
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
            PartWriter::new(&settings.out, part, prov.clone(), settings.chunk_rows)?.finish()?;
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
            let summary = run(&shard_pipeline, &registry, &opts)
                .with_context(|| format!("caching rewards for {}", shard.display()))?;
            if !quiet {
                println!("{}", summary.telemetry);
            }
        }
        report.written += 1;
    }
    println!(
        "cache {}: {} parts written, {} finished earlier; {} images scored, {} already cached",
        settings.out.display(),
        report.written,
        report.finished,
        report.scored_images,
        report.cached_images
    );
    Ok(report)
}
