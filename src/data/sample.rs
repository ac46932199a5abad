//! What the shard source yields: raw samples, and skip records for rows that
//! cannot be used (counted by reason, never silently dropped).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a row lives: shard index (in the sorted shard list), row group, row in the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RowAddr {
    pub shard: u32,
    pub row_group: u32,
    pub row: u32,
}

/// One usable row: encoded image bytes and its captions (possibly several references).
#[derive(Debug, Clone, PartialEq)]
pub struct RawSample {
    pub key: String,
    pub image: Vec<u8>,
    pub captions: Vec<String>,
    pub addr: RowAddr,
}

/// Why a row or sample was skipped. The label (see [`SkipReason::label`]) is what
/// reports count by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// img2dataset rows whose `status` is not `success`.
    StatusNotSuccess,
    /// The image cell is null.
    NullImage,
    /// The image cell holds zero bytes.
    EmptyImage,
    /// The caption cell is null or an empty list (only when captions are required).
    NoCaptions,
    /// A caption stored as binary is not valid UTF-8.
    CaptionNotUtf8,
    /// The image bytes could not be decoded (the detail says why).
    Decode(String),
    /// The image decoded but could not be resized as the reference does (the
    /// detail says why); distinct from [`SkipReason::Decode`].
    Resize(String),
    /// The image has zero width or height.
    ZeroSize,
    /// The image has more pixels than the configured limit (decompression bombs).
    TooLarge { width: u32, height: u32, limit: u64 },
    /// Failure in a named pipeline stage.
    Stage { stage: String, reason: String },
    /// The image struct names a file by `path` (bytes null) that does not exist
    /// (the detail is the resolved path).
    ImageFileMissing(String),
    /// The image file named by `path` exists but could not be read (detail: path and error).
    ImageFileUnreadable(String),
    /// The image struct names a remote file (a URL or a `::` chained URL); never fetched.
    RemoteImagePath(String),
}

impl SkipReason {
    /// A short, stable label to count by (details stripped).
    pub fn label(&self) -> String {
        match self {
            SkipReason::StatusNotSuccess => "status not success".into(),
            SkipReason::NullImage => "null image".into(),
            SkipReason::EmptyImage => "empty image bytes".into(),
            SkipReason::NoCaptions => "no captions".into(),
            SkipReason::CaptionNotUtf8 => "caption not UTF-8".into(),
            SkipReason::Decode(_) => "image decode failed".into(),
            SkipReason::Resize(_) => "image resize failed".into(),
            SkipReason::ZeroSize => "zero-size image".into(),
            SkipReason::TooLarge { .. } => "image too large".into(),
            SkipReason::Stage { stage, reason } => format!("{stage}: {reason}"),
            SkipReason::ImageFileMissing(_) => "image file missing".into(),
            SkipReason::ImageFileUnreadable(_) => "image file unreadable".into(),
            SkipReason::RemoteImagePath(_) => "remote image path (not fetched)".into(),
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Decode(detail) => write!(f, "image decode failed: {detail}"),
            SkipReason::Resize(detail) => write!(f, "image resize failed: {detail}"),
            SkipReason::TooLarge {
                width,
                height,
                limit,
            } => write!(
                f,
                "image is {width}x{height}, more than the limit of {limit} pixels"
            ),
            SkipReason::ImageFileMissing(detail)
            | SkipReason::ImageFileUnreadable(detail)
            | SkipReason::RemoteImagePath(detail) => write!(f, "{}: {detail}", self.label()),
            other => f.write_str(&other.label()),
        }
    }
}

/// A row or sample that was skipped, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkipRecord {
    pub addr: RowAddr,
    pub key: Option<String>,
    pub reason: SkipReason,
}

/// Counts of skipped items by reason label, in a stable (sorted) order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkipCounts {
    counts: BTreeMap<String, u64>,
}

impl SkipCounts {
    /// Count one skip.
    pub fn add(&mut self, reason: &SkipReason) {
        *self.counts.entry(reason.label()).or_default() += 1;
    }

    /// Add all counts of `other`.
    pub fn merge(&mut self, other: &SkipCounts) {
        for (k, v) in &other.counts {
            *self.counts.entry(k.clone()).or_default() += v;
        }
    }

    /// Total number of skips.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Count for one label (0 if none).
    pub fn get(&self, label: &str) -> u64 {
        self.counts.get(label).copied().unwrap_or(0)
    }

    /// `(label, count)` pairs sorted by label.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.counts.iter().map(|(k, v)| (k.as_str(), *v))
    }
}

impl fmt::Display for SkipCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.counts.is_empty() {
            return f.write_str("none");
        }
        let parts: Vec<String> = self.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        f.write_str(&parts.join(", "))
    }
}
