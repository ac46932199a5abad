//! The `dicoflow` command line. This is the binary's edge: commands return
//! `anyhow::Result` and add context; the library below uses typed errors.
use clap::{Parser, Subcommand};

pub mod convert;
pub mod demo;
pub mod inspect;
pub mod score;
pub mod synth;

/// Train image captioners with DiCO over sharded Parquet datasets.
#[derive(Debug, Parser)]
#[command(name = "dicoflow", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the main job on the embedded synthetic world.
    Demo(demo::DemoArgs),
    /// Generate the synthetic world as Parquet shards (train/val/test).
    Synth(synth::SynthArgs),
    /// Convert external datasets into dicoflow shards.
    #[command(subcommand)]
    Convert(convert::ConvertCommand),
    /// Show a dataset's layout, splits, caption statistics and bad rows.
    Inspect(inspect::InspectArgs),
    /// CLIP-S / PAC-S (and Ref- variants with --annotations) of a COCO results file.
    Score(score::ScoreArgs),
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Synth(args) => synth::run(&args),
        Command::Convert(cmd) => convert::run(&cmd),
        Command::Inspect(args) => inspect::run(&args),
        Command::Score(args) => score::run(&args),
    }
}
