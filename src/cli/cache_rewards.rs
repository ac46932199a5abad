//! `dicoflow cache-rewards --pipeline FILE`: precompute a reward cache, one
//! part per input shard, with [`crate::reward::cache_run::cache_rewards`]
//! (which says how shards are planned and what is refused). This command
//! reads the pipeline file and applies the command line's overrides. It runs
//! in one process: `flow.devices = N` splits each shard's images over N
//! worker threads (`-w N` or more); there are no cluster options.
use std::path::PathBuf;

use anyhow::Context;

use crate::flow::Pipeline;
use crate::reward::cache_run::{cache_rewards, CacheReport};
use crate::train::stages::RewardCacheSettings;

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
    /// Worker threads (CPU stages); with `flow.devices = N`, worker d < N owns
    /// device d, so give at least N.
    #[arg(short = 'w', long, default_value_t = 1)]
    pub workers: usize,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
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
    let registry = crate::train::stages::registry();
    cache_rewards::<RewardCacheSettings>(
        &pipeline,
        &registry,
        &args.run_dir,
        args.workers,
        args.quiet,
    )
    .with_context(|| format!("caching rewards with {}", args.pipeline.display()))
}
