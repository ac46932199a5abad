//! `dicoflow report RUN_DIR`: charts and a markdown summary from the
//! `metrics.jsonl` logs of a run (and of its sub-runs, e.g. the demo's
//! phases). Each metric gets a PNG chart (drawn here with an embedded bitmap
//! font: no system fonts, native libraries or network) and the same chart as
//! SVG.

pub(crate) mod axis;
pub(crate) mod canvas;
pub mod compare;
pub(crate) mod metrics_log;
pub mod png_chart;
pub(crate) mod svg_chart;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub use canvas::PixelRect;
pub use metrics_log::{find_logs, read_metrics, MetricsLog, Points, Series};

/// One line of a chart: its label and points.
pub type NamedSeries = (String, Points);

/// Sub-folder of the run folder that receives the report.
pub const REPORT_DIR: &str = "report";
/// The markdown summary inside [`REPORT_DIR`].
pub const SUMMARY_FILE: &str = "summary.md";

/// What [`write_report`] wrote and what it left out.
#[derive(Debug)]
pub struct Report {
    /// `RUN_DIR/report/summary.md`.
    pub summary: PathBuf,
    /// Metric name → its PNG chart.
    pub png: BTreeMap<String, PathBuf>,
    /// Metric name → its SVG chart.
    pub svg: BTreeMap<String, PathBuf>,
    /// Runs whose log has no per-step metrics yet (no chart line).
    pub empty_runs: Vec<String>,
    /// Metric values left out for not being finite numbers, over all logs.
    pub non_numeric: usize,
    /// Log lines with metrics but no numeric `time`, over all logs.
    pub untimed: usize,
}

/// File name (without extension) of the chart of `metric`.
pub fn chart_stem(metric: &str) -> String {
    metric
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Logged values that are bookkeeping, not curves: in the table, not charted
/// (a validation's step, image count and skipped rows).
pub const NOT_CHARTED: [&str; 3] = ["val/step", "val/images", "val/skipped"];

/// Mean of the last tenth of a series (at least one point).
fn tail_mean(p: &[(f64, f64)]) -> f64 {
    let n = (p.len() / 10).max(1);
    p[p.len() - n..].iter().map(|x| x.1).sum::<f64>() / n as f64
}

/// Write a scatter chart of `series` ([`png_chart::render_scatter`]) as
/// `dir/STEM.png` and `dir/STEM.svg` (making `dir`); returns both paths.
pub fn write_scatter(
    dir: &Path,
    stem: &str,
    title: &str,
    x_title: &str,
    series: &[NamedSeries],
) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    save_chart(
        dir,
        stem,
        png_chart::render_scatter(title, x_title, series),
        svg_chart::render_scatter(title, x_title, series),
    )
}

/// Save one chart as `dir/STEM.png` and `dir/STEM.svg`; returns both paths.
fn save_chart(
    dir: &Path,
    stem: &str,
    png: png_chart::Chart,
    svg: String,
) -> Result<(PathBuf, PathBuf)> {
    let png_path = dir.join(format!("{stem}.png"));
    png.image
        .save_with_format(&png_path, image::ImageFormat::Png)
        .map_err(|e| Error::InvalidInput {
            path: png_path.clone(),
            what: format!("writing the chart failed: {e}"),
        })?;
    let svg_path = dir.join(format!("{stem}.svg"));
    std::fs::write(&svg_path, svg).map_err(|e| Error::io(&svg_path, e))?;
    Ok((png_path, svg_path))
}

/// Write `run_dir/report/`: for every metric, a PNG and an SVG chart with one
/// line per run that logs it, and `summary.md` with a table of every series
/// and the charts. A log without per-step metrics is a counted skip; no
/// metrics in any log is an error.
pub fn write_report(run_dir: &Path) -> Result<Report> {
    let logs = find_logs(run_dir)?;
    let mut by_metric: BTreeMap<String, Vec<NamedSeries>> = BTreeMap::new();
    let (mut empty_runs, mut non_numeric, mut untimed) = (Vec::new(), 0, 0);
    let mut md = format!(
        "# Run report: {}\n\n| run | metric | steps | first | last 10% mean | min | max |\n|---|---|---:|---:|---:|---:|---:|\n",
        run_dir.display()
    );
    for (run, path) in &logs {
        let log = read_metrics(path)?;
        non_numeric += log.non_numeric;
        untimed += log.untimed;
        if log.series.is_empty() {
            empty_runs.push(run.clone());
        }
        for (metric, points) in log.series {
            let min = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
            let max = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
            let _ = writeln!(
                md,
                "| {run} | {metric} | {} | {:.4} | {:.4} | {min:.4} | {max:.4} |",
                points.len(),
                points[0].1,
                tail_mean(&points)
            );
            by_metric
                .entry(metric)
                .or_default()
                .push((run.clone(), points));
        }
    }
    if by_metric.is_empty() {
        let files: Vec<String> = logs.iter().map(|(_, p)| p.display().to_string()).collect();
        return Err(Error::InvalidInput {
            path: run_dir.to_path_buf(),
            what: format!(
                "no per-step metrics to plot in {}; report on a run that has finished at least one step",
                files.join(", ")
            ),
        });
    }
    if !empty_runs.is_empty() || non_numeric + untimed > 0 {
        md.push_str("\nLeft out:");
        if !empty_runs.is_empty() {
            let _ = write!(
                md,
                " runs with no per-step metrics yet: {};",
                empty_runs.join(", ")
            );
        }
        let _ = writeln!(
            md,
            " {non_numeric} non-numeric metric values; {untimed} lines without a numeric `time`."
        );
    }

    let out = run_dir.join(REPORT_DIR);
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    let (mut png, mut svg) = (BTreeMap::new(), BTreeMap::new());
    md.push_str("\n## Charts\n\n");
    for (metric, series) in &by_metric {
        if NOT_CHARTED.contains(&metric.as_str()) {
            continue;
        }
        let stem = chart_stem(metric);
        let (png_path, svg_path) = save_chart(
            &out,
            &stem,
            png_chart::render(metric, series),
            svg_chart::render(metric, series),
        )?;
        let _ = writeln!(md, "![{metric}]({stem}.png) ([SVG]({stem}.svg))\n");
        png.insert(metric.clone(), png_path);
        svg.insert(metric.clone(), svg_path);
    }
    let summary = out.join(SUMMARY_FILE);
    std::fs::write(&summary, md).map_err(|e| Error::io(&summary, e))?;
    Ok(Report {
        summary,
        png,
        svg,
        empty_runs,
        non_numeric,
        untimed,
    })
}
