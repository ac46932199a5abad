//! `dicoflow report RUN_DIR`.
use std::path::PathBuf;

use anyhow::Context;

/// Arguments of `report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A run folder (holding `metrics.jsonl`, or sub-folders that do, as `runs/demo`).
    pub run_dir: PathBuf,
}

/// Run `report`.
pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let files = crate::report::write_report(&args.run_dir)
        .with_context(|| format!("reporting on {}", args.run_dir.display()))?;
    println!(
        "wrote {} plots and {}",
        files.len().saturating_sub(1),
        args.run_dir.join("report/summary.md").display()
    );
    Ok(())
}
