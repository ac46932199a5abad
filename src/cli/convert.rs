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
    /// PyTorch weights (OpenAI `clip.load` TorchScript `.pt`, or a flat `torch.save`d
    /// state dict) → safetensors with OpenAI CLIP names.
    Weights(WeightsArgs),
}

/// Input format of `convert weights`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WeightsFormat {
    /// TorchScript when the archive holds code, a `torch.save`d state dict otherwise.
    Auto,
    /// A TorchScript archive (`clip.load`'s `.pt` files).
    Torchscript,
    /// A `torch.save`d dict of tensors, flat or nested under `state_dict` / `model` /
    /// `module` (read without executing the pickle).
    StateDict,
}

/// Arguments of `convert weights`.
#[derive(Debug, clap::Args)]
pub struct WeightsArgs {
    /// Input `.pt` / `.pth` file.
    pub input: PathBuf,
    /// Output `.safetensors` file.
    pub output: PathBuf,
    #[arg(long, value_enum, default_value = "auto")]
    pub format: WeightsFormat,
    /// Check the result loads strictly into this CLIP (preset or JSON file).
    #[arg(long)]
    pub clip_config: Option<String>,
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
    /// Replace OUT if it already holds files (the whole folder is replaced at
    /// once; without this flag a non-empty OUT is refused).
    #[arg(long)]
    pub overwrite: bool,
}

/// Run `convert`.
pub fn run(cmd: &ConvertCommand) -> anyhow::Result<()> {
    match cmd {
        ConvertCommand::Coco(args) => coco(args),
        ConvertCommand::Weights(args) => weights(args),
    }
}

fn weights(args: &WeightsArgs) -> anyhow::Result<()> {
    use crate::model::convert::{read_torch_weights, TorchFormat};
    let format = match args.format {
        WeightsFormat::Auto => None,
        WeightsFormat::Torchscript => Some(TorchFormat::TorchScript),
        WeightsFormat::StateDict => Some(TorchFormat::StateDict),
    };
    let weights = read_torch_weights(&args.input, format)?;
    println!("read {} ({})", args.input.display(), weights.source);
    let mut out = Vec::with_capacity(weights.tensors.len());
    for (k, t) in weights.tensors {
        out.push((
            k,
            t.f_detach()?
                .f_to_device(tch::Device::Cpu)?
                .f_contiguous()?,
        ));
    }
    tch::Tensor::write_safetensors(&out, &args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    let params: i64 = out.iter().map(|(_, t)| t.numel() as i64).sum();
    println!(
        "{} tensors ({params} values) written to {}",
        out.len(),
        args.output.display()
    );
    if let Some(spec) = &args.clip_config {
        let cfg = super::score::clip_config(spec)?;
        crate::model::clip::Clip::from_safetensors(&args.output, &cfg, tch::Device::Cpu)
            .with_context(|| {
                format!(
                    "checking {} against --clip-config {spec}",
                    args.output.display()
                )
            })?;
        println!("loads as CLIP `{spec}`");
    }
    Ok(())
}

fn coco(args: &CocoArgs) -> anyhow::Result<()> {
    let opts = CocoConvertOptions {
        restval: args.restval,
        writer: ShardWriterConfig {
            rows_per_shard: args.rows_per_shard,
            rows_per_row_group: args.rows_per_row_group,
            ..Default::default()
        },
        overwrite: args.overwrite,
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
