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
    let report = crate::report::write_report(&args.run_dir)
        .with_context(|| format!("reporting on {}", args.run_dir.display()))?;
    println!(
        "wrote {} charts (PNG and SVG) and {}",
        report.png.len(),
        report.summary.display()
    );
    if !report.empty_runs.is_empty() {
        println!(
            "no per-step metrics yet (left out): {}",
            report.empty_runs.join(", ")
        );
    }
    if report.non_numeric + report.untimed > 0 {
        println!(
            "left out: {} non-numeric metric values, {} lines without a numeric `time`",
            report.non_numeric, report.untimed
        );
    }
    Ok(())
}
