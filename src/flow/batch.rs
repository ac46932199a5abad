//! What flows through the graph: samples (one per image), error records and
//! per-batch reports. Everything that may cross a process boundary is serde.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::data::sample::{RawSample, RowAddr, SkipRecord};
use crate::data::Cursor;

/// Batch number: the timestamp of every record in the graph.
pub type BatchTime = u64;

/// One image on its way through the stages (a dataset row, then its pixels).
/// Not to be confused with `metrics::coco::Sample`, a caption to score with
/// its references.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub key: String,
    pub captions: Vec<String>,
    pub addr: RowAddr,
    /// Worker whose source emitted it, and its position in that worker's stream:
    /// together they order a batch the same way on every run.
    pub worker: u32,
    pub seq: u64,
    /// Encoded image; CPU stages that decode it clear it to free memory early.
    pub image: Vec<u8>,
    /// Planar `[3, size, size]` pixels once preprocessed (empty before).
    pub pixels: Vec<f32>,
    pub size: u32,
}

impl Sample {
    /// A sample straight from the source.
    pub fn from_raw(raw: RawSample, worker: u32, seq: u64) -> Self {
        Self {
            key: raw.key,
            captions: raw.captions,
            addr: raw.addr,
            worker,
            seq,
            image: raw.image,
            pixels: Vec::new(),
            size: 0,
        }
    }
}

/// What every source worker sends to every device owner for each batch it
/// emits (even one whose rows were all skipped or rejected later): the
/// batch's time, the worker, and the worker's data cursor right after the
/// batch. The device operator forms a [`super::DeviceBatch`] for every time
/// that has a mark, so every device sees every batch (with its share of the
/// samples possibly empty), and a checkpoint after batch t knows where every
/// source stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchMark {
    pub time: BatchTime,
    /// Index of the source worker that emitted the batch.
    pub worker: u32,
    /// That worker's position right after its rows of batch `time`.
    pub cursor: Cursor,
}

/// A sample that a stage could not use: counted by `(stage, reason)` and dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageError {
    pub stage: String,
    /// Short, stable label (details stripped) to count by.
    pub reason: String,
    pub key: Option<String>,
    pub addr: Option<RowAddr>,
}

impl StageError {
    /// A row the source skipped (bad status, null image, ...).
    pub fn from_skip(skip: SkipRecord) -> Self {
        Self {
            stage: "source".into(),
            reason: skip.reason.label(),
            key: skip.key,
            addr: Some(skip.addr),
        }
    }
}

/// What a device reports for one finished batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchReport {
    pub time: BatchTime,
    /// Index of the device (worker that owns it).
    pub device: u32,
    /// Keys in the order the device stages saw them; empty unless kept.
    pub keys: Vec<String>,
    pub samples: u64,
    /// Whatever the device stages measured (e.g. loss, reward, pixel mean).
    pub metrics: BTreeMap<String, f64>,
    /// Further sets measured at this batch, one metrics-log line each
    /// ([`crate::flow::DeviceBatch::more_metrics`]).
    pub more_metrics: Vec<BTreeMap<String, f64>>,
    /// Samples the device stages rejected.
    pub errors: Vec<StageError>,
}
