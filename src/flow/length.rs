//! How long a run is: the batch times its sources emit, so that a training
//! stage can take its number of optimizer steps from `source.epochs` (or
//! check that the epochs give the steps it asks for).
//!
//! Every source worker reads `epochs` times the rows of the row groups each
//! epoch's shuffle assigns it, `flow.batch_size` rows (samples or skips) per
//! batch time, across epoch boundaries; the run's batch times are those of
//! the worker that reads most. This is a function of the shards' row counts,
//! the seed and the worker count alone, known before any row is read.

use std::cell::RefCell;
use std::sync::Arc;

use crate::data::{ShardIndex, ShardSource, SourceConfig};

/// The length of a run's data: what [`RunLength::batches`] counts.
#[derive(Debug, Clone)]
pub struct RunLength {
    index: Arc<ShardIndex>,
    cfg: SourceConfig,
    workers: u32,
    batch_size: usize,
}

impl RunLength {
    /// The run that reads `index` under `cfg` on `workers` source workers
    /// (all processes), `batch_size` rows per worker per batch.
    pub fn new(index: Arc<ShardIndex>, cfg: SourceConfig, workers: u32, batch_size: usize) -> Self {
        Self {
            index,
            cfg,
            workers: workers.max(1),
            batch_size: batch_size.max(1),
        }
    }

    /// `source.epochs` (`None`: the sources stream until the stages are done).
    pub fn epochs(&self) -> Option<u64> {
        self.cfg.epochs
    }

    /// Batch times the sources emit from the start of the run (a resumed run
    /// included): `max_w ⌈rows_w / batch_size⌉` over the workers, `rows_w`
    /// being worker w's rows over all epochs. `None` without an epoch count.
    pub fn batches(&self) -> Option<u64> {
        self.epochs().map(|e| self.batches_in(e))
    }

    /// Batch times that `epochs` epochs give.
    pub fn batches_in(&self, epochs: u64) -> u64 {
        (0..self.workers)
            .map(|w| {
                let rows: u64 = (0..epochs)
                    .map(|e| ShardSource::rows_in_epoch(&self.index, &self.cfg, e, w, self.workers))
                    .sum();
                rows.div_ceil(self.batch_size as u64)
            })
            .max()
            .unwrap_or(0)
    }

    /// The fewest epochs that give at least `batches` batch times (`None`
    /// when the dataset has no row, or more than 1,000,000 epochs are needed).
    pub fn epochs_for(&self, batches: u64) -> Option<u64> {
        let one = self.batches_in(1);
        if one == 0 {
            return None;
        }
        // Epochs differ by at most a row group per worker: start near the
        // answer and walk.
        let mut e = (batches / one).max(1);
        while e > 1 && self.batches_in(e - 1) >= batches {
            e -= 1;
        }
        while self.batches_in(e) < batches {
            e += 1;
            if e > 1_000_000 {
                return None;
            }
        }
        Some(e)
    }
}

thread_local! {
    /// The run length the device thread offers to the stages it builds.
    static OFFERED: RefCell<Option<RunLength>> = const { RefCell::new(None) };
}

/// Offer `length` to the stages built next on this (device) thread.
pub(crate) fn offer_run_length(length: Option<RunLength>) {
    OFFERED.with(|o| *o.borrow_mut() = length);
}

/// For a device stage's constructor, on its device thread: the length of the
/// run it is built for. `None` outside a dataflow run (a stage built by hand).
pub fn run_length() -> Option<RunLength> {
    OFFERED.with(|o| o.borrow().clone())
}
