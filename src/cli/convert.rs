//! `dicoflow convert coco ...`.
use std::path::PathBuf;

use anyhow::Context;

use crate::data::coco::{convert_karpathy, CocoConvertOptions, Restval};
use crate::data::writer::{ShardWriterConfig, DEFAULT_ROWS_PER_ROW_GROUP, DEFAULT_ROWS_PER_SHARD};

/// What to convert.
#[derive(Debug, clap::Subcommand)]
pub enum ConvertCommand {
    /// COCO images + Karpathy split file → shards per split (train/val/test).
    Coco(CocoArgs),
}

/// Arguments of `convert coco`.
#[derive(Debug, clap::Args)]
pub struct CocoArgs {
    /// The Karpathy split file (`dataset_coco.json`).
    #[arg(long)]
    pub karpathy: PathBuf,
    /// Folder holding the images (`train2014/`, `val2014/` below it, or the files directly).
    #[arg(long)]
    pub images: PathBuf,
    /// Output folder; shards go to `OUT/<split>/coco-<split>-NNNNN.parquet`.
    #[arg(long)]
    pub out: PathBuf,
    /// Rows per shard file.
    #[arg(long, default_value_t = DEFAULT_ROWS_PER_SHARD)]
    pub rows_per_shard: usize,
    /// Rows per row group (the unit of shuffling and reading).
    #[arg(long, default_value_t = DEFAULT_ROWS_PER_ROW_GROUP)]
    pub rows_per_row_group: usize,
    /// Where Karpathy's `restval` images go.
    #[arg(long, value_enum, default_value = "train")]
    pub restval: Restval,
}

/// Run `convert`.
pub fn run(cmd: &ConvertCommand) -> anyhow::Result<()> {
    match cmd {
        ConvertCommand::Coco(args) => coco(args),
    }
}

fn coco(args: &CocoArgs) -> anyhow::Result<()> {
    let opts = CocoConvertOptions {
        restval: args.restval,
        writer: ShardWriterConfig {
            rows_per_shard: args.rows_per_shard,
            rows_per_row_group: args.rows_per_row_group,
            ..Default::default()
        },
    };
    let pb = crate::progress::bar(0, "converting", "images");
    let report = convert_karpathy(&args.karpathy, &args.images, &args.out, &opts, |i, n| {
        pb.set_length(n as u64);
        pb.set_position(i as u64);
    })
    .with_context(|| format!("converting {}", args.karpathy.display()))?;
    pb.finish_and_clear();
    for (split, rows) in &report.rows {
        println!("{split}: {rows} images");
    }
    println!(
        "{} shards written under {}",
        report.shards.len(),
        args.out.display()
    );
    if report.without_captions > 0 {
        println!(
            "{} images had no captions (written anyway)",
            report.without_captions
        );
    }
    if !report.missing_images.is_empty() {
        println!(
            "{} images listed in the split file were not found (skipped), e.g. {}",
            report.missing_images.len(),
            report.missing_images[0].display()
        );
    }
    Ok(())
}
