//! `dicoflow demo`: the main job on the embedded synthetic world. It generates
//! the world (once), then streams the training split through the CPU data path
//! (shard source → decode → resize/crop → normalise) on several workers.
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::data::world::{write_world, WorldSpec};
use crate::data::{LayoutOptions, ShardIndex, SourceConfig};
use crate::image::parallel::preprocess_parallel;
use crate::image::PreprocessConfig;

/// Arguments of `demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Run folder (the world goes to OUT/data).
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// CPU workers for the data path.
    #[arg(long, default_value_t = 2)]
    pub workers: u32,
    /// Training images in the generated world.
    #[arg(long, default_value_t = 4_000)]
    pub train: usize,
    /// Seed of the world and of the data order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Side of the preprocessed images (the world's images are 64×64).
    #[arg(long, default_value_t = 64)]
    pub image_size: u32,
}

/// Run `demo`.
pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let data = args.out.join("data");
    let spec = WorldSpec {
        seed: args.seed,
        train: args.train,
        ..Default::default()
    };
    let total = (spec.train + spec.val + spec.test) as u64;
    println!("[1/2] synthetic world -> {}", data.display());
    let pb = crate::progress::bar(total, "synth world", "images");
    let files = write_world(&data, &spec, false, |_| pb.inc(1))
        .with_context(|| format!("writing the synthetic world to {}", data.display()))?;
    pb.finish_and_clear();
    if files.is_empty() {
        println!(
            "      (already generated; delete {} to regenerate)",
            data.display()
        );
    } else {
        println!("      wrote {} shards", files.len());
    }

    println!("[2/2] streaming the training split through preprocessing");
    let index = Arc::new(
        ShardIndex::open(&data.join("train"), &LayoutOptions::default())
            .context("opening the training split")?,
    );
    let source = SourceConfig {
        seed: args.seed,
        ..Default::default()
    };
    let prep = PreprocessConfig {
        size: args.image_size,
        ..Default::default()
    };
    let pb = crate::progress::bar(index.num_rows(), "preprocessing", "images");
    let mut checksum = 0f64;
    let stats = preprocess_parallel(
        index,
        &source,
        &prep,
        args.workers,
        |p| {
            checksum += p.pixels.iter().map(|&v| v as f64).sum::<f64>();
            pb.inc(1);
        },
        |_| pb.inc(1),
    )
    .context("streaming the training split")?;
    pb.finish_and_clear();
    let secs = stats.elapsed.as_secs_f64();
    println!(
        "      {} images preprocessed to [3, {s}, {s}] on {} workers in {secs:.2}s ({:.0} images/s); skipped: {}; pixel checksum {checksum:.3}",
        stats.samples,
        args.workers,
        stats.samples as f64 / secs.max(1e-9),
        stats.skipped,
        s = args.image_size,
    );
    Ok(())
}
