//! The dataflow engine: a timely dataflow whose timestamps are batch numbers.
//!
//! ```text
//! Source (every worker) ─► CPU stages (every worker, (oks, errs)) ─► exchange
//!   to the device owner ─► device stage (one thread per device) ─► metrics sink ─► probe
//! ```
//!
//! - `source`: worker w of W reads its shard stream, batch t at time t, and
//!   holds back while the probe shows batch t − K unfinished;
//! - `cpu`: per-sample CPU stages; rejects go to the error stream;
//! - `device`: device stages on a dedicated thread, fed through bounded
//!   channels with `try_send`/`try_recv`, waking the operator by `SyncActivator`;
//! - [`allreduce`]: the gradient all-reduce between replicas (reduce-scatter
//!   and all-gather over timely exchanges, fixed summation order);
//! - [`length`]: the batch times a run's sources emit (training stages
//!   take their step count from `source.epochs`);
//! - `peers`: a lost process of a cluster run stops the others with
//!   [`FlowError::PeerLost`];
//! - [`sink`]: error counts, the JSONL metrics log, the progress bar;
//!   [`log_rewind`]: a resumed run's logs cut back to its checkpoint;
//! - `stage`, `registry`, `pipeline`: the Stage API, stage types by
//!   name, pipeline files;
//! - [`telemetry`]: per-stage counters and the summary table.
//!
//! Domain computations built on this engine live with their domain: CIDEr-D
//! document frequencies in [`crate::reward::cider_df`], the reward cache's
//! antijoin in [`crate::reward::cache_join`].
pub mod allreduce;
pub(crate) mod batch;
pub mod builtin;
pub(crate) mod cpu;
pub(crate) mod device;
pub(crate) mod error;
pub mod length;
pub mod log_rewind;
mod peers;
pub(crate) mod pipeline;
pub(crate) mod registry;
pub mod run;
pub mod sink;
pub(crate) mod source;
pub(crate) mod stage;
pub(crate) mod state;
pub mod telemetry;

pub use batch::{BatchReport, BatchTime, Sample, StageError};
pub use error::FlowError;
pub use pipeline::{FlowConfig, Pipeline, SourceSpec, StageSpec};
pub use registry::Registry;
pub use run::{run, RunOptions, RunSummary};
pub use source::ResumePoint;
pub use stage::{CpuStage, DeviceBatch, DeviceStage, StageFailure};
pub use state::RunState;
pub use telemetry::{Snapshot, Telemetry};
