//! The `dicoflow` command line. This is the binary's edge: commands return
//! `anyhow::Result` and add context; the library below uses typed errors.
use clap::{Parser, Subcommand};

pub mod cache_rewards;
pub mod caption;
pub mod convert;
pub mod cores;
pub mod demo;
pub mod diagnose;
pub mod eval;
pub mod inspect;
pub mod report;
pub mod score;
pub mod synth;
pub mod train;

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
    /// Score captions as the COCO toolkit does (BLEU, METEOR, ROUGE-L, CIDEr-D), and with images CLIP-S, RefCLIP-S, PAC-S, RefPAC-S.
    Eval(eval::EvalArgs),
    /// Show a dataset's layout, splits, caption statistics and bad rows.
    Inspect(inspect::InspectArgs),
    /// Charts (PNG and SVG) and a markdown summary of a run's metrics logs.
    Report(report::ReportArgs),
    /// Run a pipeline file through the dataflow engine.
    Train(train::TrainArgs),
    /// Caption every image of some shards with a trained captioner (COCO results JSON).
    Caption(caption::CaptionArgs),
    /// CLIP-S / PAC-S (and Ref- variants with --annotations) of a COCO results file.
    Score(score::ScoreArgs),
    /// Precompute candidates, rewards and reference log-probs for offline DiCO.
    CacheRewards(cache_rewards::CacheRewardsArgs),
    /// A demo run's evaluator against the oracle: accuracy on corrupted captions, rank agreement.
    Diagnose(diagnose::DiagnoseArgs),
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Synth(args) => synth::run(&args),
        Command::Convert(cmd) => convert::run(&cmd),
        Command::Inspect(args) => inspect::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Report(args) => report::run(&args),
        Command::Train(args) => train::run_train(&args),
        Command::Score(args) => score::run(&args),
        Command::Caption(args) => caption::run(&args),
        Command::CacheRewards(args) => cache_rewards::run_cache_rewards(&args).map(|_| ()),
        Command::Diagnose(args) => diagnose::run(&args),
    }
}
