//! `dicoflow synth`: generate the synthetic world.
use std::path::PathBuf;

use anyhow::Context;

use crate::data::world::{write_world, WorldSpec};

/// Arguments of `synth`.
#[derive(Debug, clap::Args)]
pub struct SynthArgs {
    /// Output folder (splits go to OUT/train, OUT/val, OUT/test).
    #[arg(long, default_value = "data/synth")]
    pub out: PathBuf,
    /// Seed of the world.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Training images.
    #[arg(long, default_value_t = 4_000)]
    pub train: usize,
    /// Validation images.
    #[arg(long, default_value_t = 500)]
    pub val: usize,
    /// Test images.
    #[arg(long, default_value_t = 500)]
    pub test: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = 64)]
    pub image_size: u32,
    /// Rows per shard file.
    #[arg(long, default_value_t = 1_000)]
    pub rows_per_shard: usize,
    /// Rows per row group.
    #[arg(long, default_value_t = 100)]
    pub rows_per_row_group: usize,
    /// Replace the output folder if it holds anything but this very world (it
    /// is replaced whole: written beside it, then swapped in).
    #[arg(long)]
    pub overwrite: bool,
}

impl SynthArgs {
    /// The world these arguments describe.
    pub fn spec(&self) -> WorldSpec {
        let mut spec = WorldSpec {
            seed: self.seed,
            train: self.train,
            val: self.val,
            test: self.test,
            rows_per_shard: self.rows_per_shard,
            rows_per_row_group: self.rows_per_row_group,
            ..Default::default()
        };
        spec.world.image_size = self.image_size;
        spec
    }
}

/// Run `synth`.
pub fn run(args: &SynthArgs) -> anyhow::Result<()> {
    let spec = args.spec();
    let total = (spec.train + spec.val + spec.test) as u64;
    let pb = crate::progress::bar(total, "synth world", "images");
    let files = write_world(&args.out, &spec, args.overwrite, |_| pb.inc(1))
        .with_context(|| format!("writing the synthetic world to {}", args.out.display()))?;
    pb.finish_and_clear();
    if files.is_empty() {
        println!(
            "{}: already holds this world (same settings); nothing to do",
            args.out.display()
        );
    } else {
        println!("wrote {} shards under {}", files.len(), args.out.display());
    }
    Ok(())
}
