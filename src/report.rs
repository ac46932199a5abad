//! `dicoflow report RUN_DIR`: plots and a markdown summary from the
//! `metrics.jsonl` logs of a run (and of its sub-runs, e.g. the demo's
//! phases). Plots are SVG written by hand: they need no fonts or native
//! libraries, and any browser or editor renders them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::flow::sink::METRICS_FILE;

/// One run's metrics: name → (batch time, value), in log order.
pub type Series = BTreeMap<String, Vec<(f64, f64)>>;

/// One line of a chart: its label and points.
pub type NamedSeries = (String, Vec<(f64, f64)>);

/// Read the per-batch `metrics` of a `metrics.jsonl` (summary lines skipped,
/// unparseable lines are an error naming the line).
pub fn read_metrics(path: &Path) -> Result<Series> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut series = Series::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| Error::InvalidInput {
            path: path.to_path_buf(),
            what: format!("line {}: {e}", i + 1),
        })?;
        let (Some(t), Some(m)) = (v.get("time").and_then(|t| t.as_f64()), v.get("metrics")) else {
            continue;
        };
        if let Some(m) = m.as_object() {
            for (k, x) in m {
                if let Some(x) = x.as_f64().filter(|x| x.is_finite()) {
                    series.entry(k.clone()).or_default().push((t, x));
                }
            }
        }
    }
    Ok(series)
}

/// The metrics logs under `run_dir`: its own and those one level below, by run name.
pub fn find_logs(run_dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut logs = Vec::new();
    if run_dir.join(METRICS_FILE).is_file() {
        logs.push((".".to_owned(), run_dir.join(METRICS_FILE)));
    }
    let entries = std::fs::read_dir(run_dir).map_err(|e| Error::io(run_dir, e))?;
    let mut subs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(METRICS_FILE).is_file())
        .collect();
    subs.sort();
    for p in subs {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        logs.push((name, p.join(METRICS_FILE)));
    }
    if logs.is_empty() {
        return Err(Error::InvalidInput {
            path: run_dir.to_path_buf(),
            what: format!("no {METRICS_FILE} here or in a sub-folder; is this a run folder?"),
        });
    }
    Ok(logs)
}

/// A line chart of several series sharing axes, as an SVG document.
pub fn svg_chart(title: &str, series: &[NamedSeries]) -> String {
    const W: f64 = 640.0;
    const H: f64 = 360.0;
    const L: f64 = 64.0;
    const R: f64 = 16.0;
    const T: f64 = 36.0;
    const B: f64 = 40.0;
    const COLOURS: [&str; 6] = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
    ];
    let pts = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-12 {
        y0 -= 0.5;
        y1 += 0.5;
    }
    let sx = |x: f64| L + (x - x0) / (x1 - x0) * (W - L - R);
    let sy = |y: f64| H - B - (y - y0) / (y1 - y0) * (H - T - B);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    let _ = writeln!(
        s,
        r##"<path d="M{L} {T} V{} H{}" fill="none" stroke="#333"/>"##,
        H - B,
        W - R
    );
    for i in 0..=4 {
        let fy = y0 + (y1 - y0) * i as f64 / 4.0;
        let fx = x0 + (x1 - x0) * i as f64 / 4.0;
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" text-anchor="end">{}</text>"##,
            L - 6.0,
            sy(fy) + 4.0,
            tick(fy)
        );
        let _ = writeln!(
            s,
            r##"<line x1="{L}" x2="{0}" y1="{1}" y2="{1}" stroke="#eee"/>"##,
            W - R,
            sy(fy)
        );
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" text-anchor="middle">{}</text>"##,
            sx(fx),
            H - B + 16.0,
            tick(fx)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">step (batch)</text>"#,
        (L + W - R) / 2.0,
        H - 6.0
    );
    for (i, (name, p)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = p
            .iter()
            .enumerate()
            .map(|(j, &(x, y))| {
                format!(
                    "{}{:.1} {:.1}",
                    if j == 0 { "M" } else { "L" },
                    sx(x),
                    sy(y)
                )
            })
            .collect();
        let _ = writeln!(
            s,
            r#"<path d="{}" fill="none" stroke="{colour}" stroke-width="1.5"/>"#,
            path.join(" ")
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" fill="{colour}">{}</text>"#,
            L + 10.0,
            T + 14.0 * (i + 1) as f64,
            escape(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn tick(v: f64) -> String {
    if v.abs() >= 1000.0 || (v != 0.0 && v.abs() < 0.01) {
        format!("{v:.2e}")
    } else {
        format!("{v:.3}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Mean of the last tenth of a series (at least one point).
fn tail_mean(p: &[(f64, f64)]) -> f64 {
    let n = (p.len() / 10).max(1);
    p[p.len() - n..].iter().map(|x| x.1).sum::<f64>() / n as f64
}

/// Write `run_dir/report/` with one SVG per metric (all runs that log it on
/// one chart) and `summary.md`; returns the files written.
pub fn write_report(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let logs = find_logs(run_dir)?;
    let mut by_metric: BTreeMap<String, Vec<NamedSeries>> = BTreeMap::new();
    let mut md = format!("# Run report: {}\n\n| run | metric | steps | first | last 10% mean | min | max |\n|---|---|---:|---:|---:|---:|---:|\n", run_dir.display());
    for (run, path) in &logs {
        for (metric, points) in read_metrics(path)? {
            if points.is_empty() {
                continue;
            }
            let min = points.iter().map(|p| p.1).fold(f64::MAX, f64::min);
            let max = points.iter().map(|p| p.1).fold(f64::MIN, f64::max);
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
    let out = run_dir.join("report");
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    let mut written = Vec::new();
    md.push_str("\n## Plots\n\n");
    for (metric, series) in &by_metric {
        let file = format!("{}.svg", metric.replace(['/', ' '], "_"));
        let path = out.join(&file);
        std::fs::write(&path, svg_chart(metric, series)).map_err(|e| Error::io(&path, e))?;
        let _ = writeln!(md, "![{metric}]({file})");
        written.push(path);
    }
    let path = out.join("summary.md");
    std::fs::write(&path, md).map_err(|e| Error::io(&path, e))?;
    written.push(path);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_logs_and_writes_plots_and_summary() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("dico");
        std::fs::create_dir_all(&run).unwrap();
        let mut log = String::new();
        for t in 0..20 {
            log.push_str(&format!(
                "{{\"time\":{t},\"metrics\":{{\"train/loss\":{},\"evaluator/mean\":{}}}}}\n",
                0.7 - t as f64 * 0.01,
                1.5 + t as f64 * 0.002
            ));
        }
        log.push_str("{\"summary\":{\"batches\":20}}\n");
        std::fs::write(run.join(METRICS_FILE), log).unwrap();
        let series = read_metrics(&run.join(METRICS_FILE)).unwrap();
        assert_eq!(series["train/loss"].len(), 20);
        assert!((series["train/loss"][19].1 - 0.51).abs() < 1e-12);
        let files = write_report(dir.path()).unwrap();
        assert_eq!(files.len(), 3);
        let svg = std::fs::read_to_string(dir.path().join("report/train_loss.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<path d=\"M") && svg.contains("dico"));
        let md = std::fs::read_to_string(dir.path().join("report/summary.md")).unwrap();
        assert!(
            md.contains("| dico | train/loss | 20 | 0.7000 | 0.5150 | 0.5100 | 0.7000 |"),
            "{md}"
        );
        std::fs::write(run.join(METRICS_FILE), "not json\n").unwrap();
        let err = write_report(dir.path()).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
