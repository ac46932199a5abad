//! The data plane: Parquet shards in, raw samples out.
//!
//! - `shards`: find shards, index their row groups (footers only);
//! - `layout`: which columns hold image, captions, key, status;
//! - `source`: a worker's deterministic, shuffled, resumable row stream;
//! - [`writer`]: write shards in dicoflow's layout;
//! - `output`: write a dataset folder whole (refuse or replace, never mix);
//! - `sample`: samples and counted skip records.
pub mod coco;
pub mod inspect;
pub(crate) mod layout;
pub(crate) mod output;
pub(crate) mod sample;
pub(crate) mod shards;
pub(crate) mod source;
pub mod synth;
pub mod world;
pub mod writer;

pub use layout::{Layout, LayoutKind, LayoutOptions};
pub use sample::{RawSample, RowAddr, SkipCounts, SkipReason, SkipRecord};
pub use shards::{list_shards, ShardIndex, ShardInfo};
pub use source::{Cursor, ShardSource, SourceConfig, SourceItem};
pub use writer::{ShardRow, ShardWriter, ShardWriterConfig};
