//! `dicoflow demo`: the main job on the embedded synthetic world. It generates
//! the world (once), then streams the training split through the dataflow of
//! `pipelines/demo.toml` (shard source → preprocess on every worker → image
//! statistics on the device thread).
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::data::world::{write_world, WorldSpec};
use crate::flow::{self, Pipeline, Registry, RunOptions};

/// The demo's pipeline, built in so the binary runs from any directory.
const DEMO_PIPELINE: &str = include_str!("../../pipelines/demo.toml");

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

    println!("[2/2] streaming the training split through the dataflow (pipelines/demo.toml)");
    let mut pipeline = Pipeline::from_toml(DEMO_PIPELINE, Path::new("pipelines/demo.toml"))?;
    pipeline.source.path = Some(data.join("train"));
    pipeline.source.seed = args.seed;
    for stage in &mut pipeline.cpu {
        if stage.type_name == "preprocess" {
            stage
                .settings
                .insert("size".into(), toml::Value::Integer(args.image_size.into()));
        }
    }
    let opts = RunOptions {
        run_dir: Some(args.out.clone()),
        progress: true,
        ..RunOptions::threads(args.workers.max(1) as usize)
    };
    let summary = flow::run(&pipeline, &Registry::with_builtins(), &opts)
        .context("streaming the training split")?;
    println!("{}", summary.telemetry);
    println!(
        "      metrics log: {}",
        args.out.join(crate::flow::sink::METRICS_FILE).display()
    );
    Ok(())
}
