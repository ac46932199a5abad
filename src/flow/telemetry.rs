//! Run telemetry: per stage items, busy time and queue depth; for devices, busy
//! versus idle (starved) time; errors by stage and reason; flow-control gauges.
//! Counters are atomics shared by the workers of one process.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

/// What kind of stage a metrics entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StageKind {
    Source,
    Cpu,
    Device,
}

/// Counters of one stage, summed over its instances in this process.
#[derive(Debug)]
pub struct StageMetrics {
    pub kind: StageKind,
    pub items: AtomicU64,
    pub batches: AtomicU64,
    pub busy_ns: AtomicU64,
    /// Devices only: time the device thread waited for work.
    pub idle_ns: AtomicU64,
    /// Instances (workers or devices) running this stage.
    pub instances: AtomicU64,
    /// Batches waiting in front of the stage, last seen and largest seen.
    pub queue_depth: AtomicU64,
    pub queue_depth_max: AtomicU64,
}

impl StageMetrics {
    fn new(kind: StageKind) -> Self {
        Self {
            kind,
            items: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            idle_ns: AtomicU64::new(0),
            instances: AtomicU64::new(0),
            queue_depth: AtomicU64::new(0),
            queue_depth_max: AtomicU64::new(0),
        }
    }

    /// Account one batch of `items` that took `busy`.
    pub fn record(&self, items: u64, busy: Duration) {
        self.items.fetch_add(items, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.busy_ns
            .fetch_add(busy.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Set the current queue depth.
    pub fn set_queue(&self, depth: u64) {
        self.queue_depth.store(depth, Ordering::Relaxed);
        self.queue_depth_max.fetch_max(depth, Ordering::Relaxed);
    }
}

/// A process's telemetry.
#[derive(Debug)]
pub struct Telemetry {
    start: Instant,
    stages: Mutex<BTreeMap<String, Arc<StageMetrics>>>,
    errors: Mutex<BTreeMap<(String, String), u64>>,
    /// Largest number of batches opened by a source and not yet finished.
    pub max_in_flight: AtomicU64,
    /// Largest number of samples held at once by a device operator and its thread.
    pub max_device_held: AtomicU64,
    pub batches_done: AtomicU64,
    pub samples_done: AtomicU64,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            stages: Mutex::new(BTreeMap::new()),
            errors: Mutex::new(BTreeMap::new()),
            max_in_flight: AtomicU64::new(0),
            max_device_held: AtomicU64::new(0),
            batches_done: AtomicU64::new(0),
            samples_done: AtomicU64::new(0),
        }
    }
}

impl Telemetry {
    /// The metrics of stage `name`, created on first use; each call counts one instance.
    pub fn stage(&self, name: &str, kind: StageKind) -> Arc<StageMetrics> {
        let mut stages = self.stages.lock().unwrap_or_else(|e| e.into_inner());
        let m = stages
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(StageMetrics::new(kind)))
            .clone();
        m.instances.fetch_add(1, Ordering::Relaxed);
        m
    }

    /// Count one error.
    pub fn error(&self, stage: &str, reason: &str) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        *errors
            .entry((stage.to_owned(), reason.to_owned()))
            .or_default() += 1;
    }

    /// Seconds since the run started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// A consistent-enough copy of every counter, for logs and the summary.
    pub fn snapshot(&self) -> Snapshot {
        let elapsed = self.elapsed().as_secs_f64().max(1e-9);
        let stages = self.stages.lock().unwrap_or_else(|e| e.into_inner());
        let stages = stages
            .iter()
            .map(|(name, m)| {
                let items = m.items.load(Ordering::Relaxed);
                let instances = m.instances.load(Ordering::Relaxed).max(1);
                let busy = m.busy_ns.load(Ordering::Relaxed) as f64 * 1e-9;
                let idle = m.idle_ns.load(Ordering::Relaxed) as f64 * 1e-9;
                StageSnapshot {
                    name: name.clone(),
                    kind: m.kind,
                    items,
                    batches: m.batches.load(Ordering::Relaxed),
                    items_per_s: items as f64 / elapsed,
                    busy_s: busy,
                    busy_fraction: busy / (elapsed * instances as f64),
                    idle_s: idle,
                    queue_depth: m.queue_depth.load(Ordering::Relaxed),
                    queue_depth_max: m.queue_depth_max.load(Ordering::Relaxed),
                }
            })
            .collect();
        let errors = self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|((stage, reason), n)| ErrorCount {
                stage: stage.clone(),
                reason: reason.clone(),
                count: *n,
            })
            .collect();
        Snapshot {
            elapsed_s: elapsed,
            batches: self.batches_done.load(Ordering::Relaxed),
            samples: self.samples_done.load(Ordering::Relaxed),
            max_in_flight: self.max_in_flight.load(Ordering::Relaxed),
            max_device_held: self.max_device_held.load(Ordering::Relaxed),
            stages,
            errors,
        }
    }
}

/// One stage's numbers at a point in time.
#[derive(Debug, Clone, Serialize)]
pub struct StageSnapshot {
    pub name: String,
    pub kind: StageKind,
    pub items: u64,
    pub batches: u64,
    pub items_per_s: f64,
    pub busy_s: f64,
    /// Busy time over wall time × instances.
    pub busy_fraction: f64,
    /// Devices: seconds waiting for a batch (starved).
    pub idle_s: f64,
    pub queue_depth: u64,
    pub queue_depth_max: u64,
}

/// Errors of one `(stage, reason)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorCount {
    pub stage: String,
    pub reason: String,
    pub count: u64,
}

/// All counters of a process at a point in time.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub elapsed_s: f64,
    pub batches: u64,
    pub samples: u64,
    pub max_in_flight: u64,
    pub max_device_held: u64,
    pub stages: Vec<StageSnapshot>,
    pub errors: Vec<ErrorCount>,
}

impl Snapshot {
    /// Errors counted for `stage` (all reasons).
    pub fn errors_of(&self, stage: &str) -> u64 {
        self.errors
            .iter()
            .filter(|e| e.stage == stage)
            .map(|e| e.count)
            .sum()
    }

    /// A stage's numbers by name.
    pub fn stage(&self, name: &str) -> Option<&StageSnapshot> {
        self.stages.iter().find(|s| s.name == name)
    }
}

impl fmt::Display for Snapshot {
    /// The end-of-run summary table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<18} {:<7} {:>9} {:>10} {:>6} {:>8} {:>9}",
            "stage", "kind", "items", "items/s", "busy", "idle s", "queue max"
        )?;
        for s in &self.stages {
            let kind = match s.kind {
                StageKind::Source => "source",
                StageKind::Cpu => "cpu",
                StageKind::Device => "device",
            };
            let idle = if s.kind == StageKind::Device {
                format!("{:.2}", s.idle_s)
            } else {
                "-".into()
            };
            writeln!(
                f,
                "{:<18} {:<7} {:>9} {:>10.1} {:>5.0}% {:>8} {:>9}",
                s.name,
                kind,
                s.items,
                s.items_per_s,
                100.0 * s.busy_fraction,
                idle,
                s.queue_depth_max
            )?;
        }
        writeln!(
            f,
            "{} batches, {} samples in {:.2}s; max batches in flight {}; max samples held by a device {}",
            self.batches, self.samples, self.elapsed_s, self.max_in_flight, self.max_device_held
        )?;
        if self.errors.is_empty() {
            write!(f, "errors: none")
        } else {
            write!(f, "errors:")?;
            for e in &self.errors {
                write!(f, "\n  {:<16} {:<28} {}", e.stage, e.reason, e.count)?;
            }
            Ok(())
        }
    }
}
