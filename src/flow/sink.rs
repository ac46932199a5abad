//! Sinks at the end of the graph (on worker 0, where reports and errors are
//! exchanged to): error counts by stage and reason, the JSONL metrics log, the
//! progress bar and the kept reports.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use indicatif::ProgressBar;
use serde_json::json;

use super::batch::{BatchReport, BatchTime, StageError};
use super::error::FlowError;
use super::telemetry::Telemetry;

/// Name of the metrics log in a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// A metrics-log line's batch time (`None` for the summary line).
fn batch_time(line: &serde_json::Value) -> Option<u64> {
    line.get("time")?.as_u64()
}

/// What a run's first line does to the lines an earlier run left in the log.
#[derive(Debug, Clone, Copy)]
enum Earlier {
    /// A run that does not resume: all of them are dropped.
    Replace,
    /// A run resumed from a checkpoint that had trained on batches up to this
    /// one: the lines after it are dropped (the run logs those batches again).
    KeepThrough(BatchTime),
}

/// Receives every batch report and error record of a run.
#[derive(Debug)]
pub struct MetricsSink {
    telemetry: Arc<Telemetry>,
    log: Option<BufWriter<File>>,
    /// The log's path (with `log`).
    path: Option<PathBuf>,
    /// What is still to be done to the earlier lines, at the run's first line.
    earlier: Option<Earlier>,
    progress: Option<ProgressBar>,
    reports: Option<Arc<Mutex<Vec<BatchReport>>>>,
    /// Whether this run has written a line.
    wrote: bool,
    /// What this sink created (the log file, the run directory), removed
    /// again by [`MetricsSink::finish`] when the run wrote no line, so a run
    /// that fails at start leaves no empty log behind.
    created: Vec<PathBuf>,
}

impl MetricsSink {
    /// A sink writing `run_dir/metrics.jsonl` if a run directory is given.
    /// The file is opened at once (an unwritable one fails the run at start)
    /// but changed only by the run's first batch line: a run that fails before
    /// its first batch leaves an earlier log as it was; a run resumed from a
    /// checkpoint that had trained on batches up to `resumed_after` keeps the
    /// earlier lines up to that batch and appends to them, so the curve goes on
    /// past the crash with every batch logged once
    /// ([`crate::flow::log_rewind::rewind_jsonl`]); any other run replaces it.
    /// A run without a batch line writes nothing (not even its summary), and a
    /// log file (and run directory) it created is removed again.
    pub fn try_new(
        telemetry: Arc<Telemetry>,
        run_dir: Option<&Path>,
        progress: Option<ProgressBar>,
        reports: Option<Arc<Mutex<Vec<BatchReport>>>>,
        resumed_after: Option<BatchTime>,
    ) -> Result<Self, FlowError> {
        let mut created = Vec::new();
        let (path, log) = match run_dir {
            Some(dir) => {
                let path = dir.join(METRICS_FILE);
                let io = |source| FlowError::Io {
                    path: path.clone(),
                    source,
                };
                // The directories about to be made, outermost first.
                let mut missing: Vec<PathBuf> = dir
                    .ancestors()
                    .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
                    .map(Path::to_path_buf)
                    .collect();
                missing.reverse();
                std::fs::create_dir_all(dir).map_err(io)?;
                created.extend(missing);
                if !path.exists() {
                    created.push(path.clone());
                }
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(io)?;
                (Some(path), Some(BufWriter::new(file)))
            }
            None => (None, None),
        };
        Ok(Self {
            telemetry,
            log,
            path,
            earlier: Some(resumed_after.map_or(Earlier::Replace, Earlier::KeepThrough)),
            wrote: false,
            created,
            progress,
            reports,
        })
    }

    /// Count an error record.
    pub fn on_error(&self, e: &StageError) {
        self.telemetry.error(&e.stage, &e.reason);
        if let Some(pb) = &self.progress {
            pb.inc(1);
        }
    }

    /// Log one finished batch: one JSON object per line (and one more per set
    /// in its `more_metrics`), flushed, so a crashed run still leaves every
    /// finished batch on disk.
    pub fn on_report(&mut self, r: &BatchReport) {
        for e in &r.errors {
            self.telemetry.error(&e.stage, &e.reason);
        }
        if let Some(pb) = &self.progress {
            pb.inc(r.samples + r.errors.len() as u64);
        }
        if let Some(log) = &mut self.log {
            let snap = self.telemetry.snapshot();
            let line = json!({
                "time": r.time,
                "device": r.device,
                "samples": r.samples,
                "rejected": r.errors.len(),
                "elapsed_s": snap.elapsed_s,
                "metrics": r.metrics,
                "stages": snap.stages,
                "errors": snap.errors,
                "max_in_flight": snap.max_in_flight,
            });
            // A further set measured at the batch gets a line of its own,
            // with the batch's time and device and nothing counted twice.
            let mut more = r.more_metrics.iter().map(|m| {
                json!({
                    "time": r.time,
                    "device": r.device,
                    "metrics": m,
                })
            });
            // At the first line, the earlier lines go (the file is in append
            // mode: writes go to its end).
            let ok = match (self.earlier.take(), &self.path) {
                (Some(Earlier::Replace), _) => log.get_ref().set_len(0),
                // Rewritten beside itself and renamed: reopened after.
                (Some(Earlier::KeepThrough(last)), Some(path)) => log
                    .flush()
                    .and_then(|_| crate::flow::log_rewind::rewind_jsonl(path, last, batch_time))
                    .map(|dropped| {
                        if dropped > 0 {
                            tracing::info!(
                                "metrics log: {dropped} lines after the checkpoint's batch {last} \
                                 dropped (this run logs those batches again)"
                            );
                        }
                    })
                    .and_then(|_| OpenOptions::new().append(true).open(path))
                    .map(|file| *log = BufWriter::new(file)),
                _ => Ok(()),
            }
            .and_then(|_| writeln!(log, "{line}"))
            .and_then(|_| more.try_for_each(|m| writeln!(log, "{m}")))
            .and_then(|_| log.flush());
            self.wrote = true;
            if let Err(e) = ok {
                tracing::warn!("metrics log: {e}; no further lines are written");
                self.log = None;
            }
        }
        if let Some(keep) = &self.reports {
            keep.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(r.clone());
        }
    }

    /// Append the final summary line; without a batch line, remove what
    /// [`MetricsSink::try_new`] created (the file first, then the directory
    /// if it is still empty).
    pub fn finish(&mut self) {
        if let (Some(log), true) = (&mut self.log, self.wrote) {
            let line = json!({ "summary": self.telemetry.snapshot() });
            let _ = writeln!(log, "{line}").and_then(|_| log.flush());
        }
        if !self.wrote {
            self.log = None;
            for path in self.created.iter().rev() {
                let _ = if path.is_dir() {
                    std::fs::remove_dir(path)
                } else {
                    std::fs::remove_file(path)
                };
            }
        }
        if let Some(pb) = &self.progress {
            pb.finish_and_clear();
        }
    }
}
