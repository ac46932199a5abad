//! Reading `metrics.jsonl` logs: the per-batch metrics of a run as series,
//! and the logs of a run folder and its sub-runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::flow::sink::METRICS_FILE;

/// One metric's points: (batch time, value), in log order.
pub type Points = Vec<(f64, f64)>;

/// One run's metrics: name → points.
pub type Series = BTreeMap<String, Points>;

/// The per-batch metrics of one log and what was left out of them.
#[derive(Debug, Default)]
pub struct MetricsLog {
    pub series: Series,
    /// Lines that carried a `metrics` object with a numeric `time`.
    pub steps: usize,
    /// Metric values left out for not being finite numbers (`null` is how
    /// JSON writers spell NaN; strings and objects are not plottable).
    pub non_numeric: usize,
    /// Lines with `metrics` but no numeric `time`, left out.
    pub untimed: usize,
}

/// Read the per-batch `metrics` of a `metrics.jsonl`. Summary lines are
/// passed over; a line that is not JSON, or whose `metrics` is not an object,
/// is an error naming the line.
pub fn read_metrics(path: &Path) -> Result<MetricsLog> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let bad_line = |i: usize, what: String| Error::InvalidInput {
        path: path.to_path_buf(),
        what: format!("line {}: {what}", i + 1),
    };
    let mut log = MetricsLog::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad_line(i, e.to_string()))?;
        let Some(m) = v.get("metrics") else {
            continue;
        };
        let m = m
            .as_object()
            .ok_or_else(|| bad_line(i, "`metrics` is not an object of name → number".into()))?;
        let Some(t) = v.get("time").and_then(|t| t.as_f64()) else {
            log.untimed += 1;
            continue;
        };
        log.steps += 1;
        for (k, x) in m {
            match x.as_f64().filter(|x| x.is_finite()) {
                Some(x) => log.series.entry(k.clone()).or_default().push((t, x)),
                None => log.non_numeric += 1,
            }
        }
    }
    Ok(log)
}

/// The metrics logs of `run_dir`, by run name: its own (named after the
/// folder) and those of its sub-folders (named after them).
pub fn find_logs(run_dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    if !run_dir.is_dir() {
        return Err(Error::InvalidInput {
            path: run_dir.to_path_buf(),
            what: format!(
                "not a folder; pass the run folder that holds {METRICS_FILE} (or whose sub-folders do, as runs/demo)"
            ),
        });
    }
    let mut logs = Vec::new();
    if run_dir.join(METRICS_FILE).is_file() {
        let name = run_dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "run".to_owned());
        logs.push((name, run_dir.join(METRICS_FILE)));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_numeric_values_and_untimed_lines_are_counted_not_plotted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(METRICS_FILE);
        std::fs::write(
            &path,
            concat!(
                "{\"time\":0,\"metrics\":{\"loss\":0.5,\"kl\":null,\"note\":\"warmup\"}}\n",
                "\n",
                "{\"metrics\":{\"loss\":0.4}}\n",
                "{\"time\":1,\"metrics\":{\"loss\":0.3,\"kl\":0.01}}\n",
                "{\"summary\":{\"batches\":2}}\n",
            ),
        )
        .unwrap();
        let log = read_metrics(&path).unwrap();
        assert_eq!(log.series["loss"], vec![(0.0, 0.5), (1.0, 0.3)]);
        assert_eq!(log.series["kl"], vec![(1.0, 0.01)]);
        assert!(!log.series.contains_key("note"));
        assert_eq!((log.steps, log.non_numeric, log.untimed), (2, 2, 1));
    }

    #[test]
    fn malformed_lines_are_errors_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(METRICS_FILE);
        std::fs::write(
            &path,
            "{\"time\":0,\"metrics\":{}}\n{\"time\":1,\"metrics\":[1]}\n",
        )
        .unwrap();
        let err = read_metrics(&path).unwrap_err().to_string();
        assert!(
            err.contains("line 2") && err.contains("not an object"),
            "{err}"
        );
        std::fs::write(&path, "{\"time\":0,\"metrics\":{}}\n{\"time\":1,\n").unwrap();
        let err = read_metrics(&path).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn the_run_itself_is_named_after_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("dico_beta02");
        std::fs::create_dir_all(run.join("phase2")).unwrap();
        std::fs::write(run.join(METRICS_FILE), "").unwrap();
        std::fs::write(run.join("phase2").join(METRICS_FILE), "").unwrap();
        let names: Vec<String> = find_logs(&run).unwrap().into_iter().map(|l| l.0).collect();
        assert_eq!(names, ["dico_beta02", "phase2"]);
        std::fs::create_dir_all(dir.path().join("empty")).unwrap();
        let err = find_logs(&dir.path().join("empty"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no metrics.jsonl"), "{err}");
        let err = find_logs(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not a folder") && err.contains("missing"),
            "{err}"
        );
    }
}
