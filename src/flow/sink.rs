//! Sinks at the end of the graph (on worker 0, where reports and errors are
//! exchanged to): error counts by stage and reason, the JSONL metrics log, the
//! progress bar and the kept reports.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use indicatif::ProgressBar;
use serde_json::json;

use super::batch::{BatchReport, StageError};
use super::error::FlowError;
use super::telemetry::Telemetry;

/// Name of the metrics log in a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// Receives every batch report and error record of a run.
#[derive(Debug)]
pub struct MetricsSink {
    telemetry: Arc<Telemetry>,
    log: Option<BufWriter<File>>,
    progress: Option<ProgressBar>,
    reports: Option<Arc<Mutex<Vec<BatchReport>>>>,
}

impl MetricsSink {
    /// A sink writing `run_dir/metrics.jsonl` if a run directory is given.
    pub fn try_new(
        telemetry: Arc<Telemetry>,
        run_dir: Option<&Path>,
        progress: Option<ProgressBar>,
        reports: Option<Arc<Mutex<Vec<BatchReport>>>>,
    ) -> Result<Self, FlowError> {
        let log = match run_dir {
            Some(dir) => {
                let io = |source| FlowError::Io {
                    path: dir.join(METRICS_FILE),
                    source,
                };
                std::fs::create_dir_all(dir).map_err(io)?;
                Some(BufWriter::new(
                    File::create(dir.join(METRICS_FILE)).map_err(io)?,
                ))
            }
            None => None,
        };
        Ok(Self {
            telemetry,
            log,
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

    /// Log one finished batch: one JSON object per line, flushed, so a crashed
    /// run still leaves every finished batch on disk.
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
            let ok = writeln!(log, "{line}").and_then(|_| log.flush());
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

    /// Append the final summary line.
    pub fn finish(&mut self) {
        if let Some(log) = &mut self.log {
            let line = json!({ "summary": self.telemetry.snapshot() });
            let _ = writeln!(log, "{line}").and_then(|_| log.flush());
        }
        if let Some(pb) = &self.progress {
            pb.finish_and_clear();
        }
    }
}
