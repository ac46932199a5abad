//! `dicoflow inspect PATH`.
use std::path::PathBuf;

use anyhow::Context;

use crate::data::inspect::inspect;
use crate::data::LayoutOptions;

/// Arguments of `inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// A shard file, a directory of shards (searched recursively) or a glob.
    pub path: PathBuf,
    /// Image column (default: auto-detect).
    #[arg(long)]
    pub image_column: Option<String>,
    /// Caption column (default: auto-detect).
    #[arg(long)]
    pub caption_column: Option<String>,
    /// Key column (default: `key` if present).
    #[arg(long)]
    pub key_column: Option<String>,
    /// Also decode every image to count undecodable ones.
    #[arg(long)]
    pub decode: bool,
}

/// Run `inspect`.
pub fn run(args: &InspectArgs) -> anyhow::Result<()> {
    let opts = LayoutOptions {
        image_column: args.image_column.clone(),
        caption_column: args.caption_column.clone(),
        key_column: args.key_column.clone(),
        require_captions: true,
    };
    let pb = crate::progress::bar(0, "inspecting", "rows");
    let report = inspect(&args.path, &opts, args.decode, || pb.inc(1))
        .with_context(|| format!("inspecting {}", args.path.display()))?;
    pb.finish_and_clear();
    print!("{report}");
    Ok(())
}
