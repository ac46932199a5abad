//! The shard source: a deterministic, resumable stream of rows for one worker.
//!
//! Per epoch, all row groups of all shards are put in one list, shuffled with the
//! epoch's seed, and dealt round-robin to the W workers. Each worker reads its row
//! groups in order and emits rows through a bounded shuffle buffer. The order is
//! a function of (seed, epoch, worker, W) and the row-group sizes only, which the
//! footers give without reading data; so a [`Cursor`] is just (epoch, rows
//! emitted): resuming replays the buffer's choices on row addresses, re-reads the
//! row groups whose rows were still buffered, and goes on exactly as an
//! uninterrupted stream would.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::data::sample::{RawSample, RowAddr, SkipRecord};
use crate::data::shards::{RowOutcome, ShardIndex};
use crate::error::{Error, Result};
use crate::rng::Rng;

/// Default seed of data order.
pub const DEFAULT_SEED: u64 = 0;
/// Default shuffle-buffer size in rows: enough to mix neighbouring row groups,
/// small enough to bound memory (rows hold encoded images).
pub const DEFAULT_SHUFFLE_BUFFER: usize = 1024;

/// How a [`ShardSource`] orders its rows: the configuration of one worker's
/// row stream, independent of pipelines (a pipeline file's `[source]` table,
/// `flow::SourceSpec`, adds the shards' path and layout and converts to this;
/// batching is the flow engine's `flow::source::SourceBatching`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceConfig {
    /// Seed of the row-group shuffle and the shuffle buffer (default `DEFAULT_SEED`).
    pub seed: u64,
    /// Shuffle row groups and rows (default true). Off: file order, round-robin row groups.
    pub shuffle: bool,
    /// Rows held by the shuffle buffer (default `DEFAULT_SHUFFLE_BUFFER`).
    pub shuffle_buffer: usize,
    /// Number of epochs; `None` streams forever (default 1).
    pub epochs: Option<u64>,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            seed: DEFAULT_SEED,
            shuffle: true,
            shuffle_buffer: DEFAULT_SHUFFLE_BUFFER,
            epochs: Some(1),
        }
    }
}

/// A position in a worker's stream, saved in checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Current epoch (0-based).
    pub epoch: u64,
    /// Rows (samples and skips) already emitted in this epoch.
    pub emitted: u64,
    /// Settings the position depends on; checked when resuming.
    pub worker: u32,
    pub num_workers: u32,
    pub seed: u64,
    pub shuffle: bool,
    pub shuffle_buffer: usize,
    /// [`ShardIndex::fingerprint`] of the dataset.
    pub dataset: u64,
}

/// What a source yields per row.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceItem {
    Sample(RawSample),
    Skipped(SkipRecord),
}

impl From<RowOutcome> for SourceItem {
    fn from(o: RowOutcome) -> Self {
        match o {
            Ok(s) => SourceItem::Sample(s),
            Err(s) => SourceItem::Skipped(s),
        }
    }
}

/// The address-level shuffle: which row comes next. Holds no data, so it can be
/// replayed cheaply to restore a cursor.
#[derive(Debug, Clone)]
struct Shuffler {
    plan: Vec<(u32, u32)>,
    next_group: usize,
    buffer: VecDeque<RowAddr>,
    capacity: usize,
    shuffle: bool,
    rng: Rng,
}

impl Shuffler {
    /// Next row address; `load` is called for each row group entering the buffer.
    fn next(
        &mut self,
        index: &ShardIndex,
        mut load: impl FnMut(u32, u32) -> Result<()>,
    ) -> Result<Option<RowAddr>> {
        while self.buffer.len() < self.capacity && self.next_group < self.plan.len() {
            let (shard, row_group) = self.plan[self.next_group];
            self.next_group += 1;
            for row in 0..index.row_group_len(shard, row_group) {
                self.buffer.push_back(RowAddr {
                    shard,
                    row_group,
                    row,
                });
            }
            load(shard, row_group)?;
        }
        if self.buffer.is_empty() {
            return Ok(None);
        }
        if self.shuffle {
            let pick = self.rng.index(self.buffer.len());
            Ok(self.buffer.swap_remove_back(pick))
        } else {
            Ok(self.buffer.pop_front())
        }
    }
}

/// One worker's stream of rows.
#[derive(Debug)]
pub struct ShardSource {
    index: Arc<ShardIndex>,
    cfg: SourceConfig,
    worker: u32,
    num_workers: u32,
    epoch: u64,
    emitted: u64,
    shuffler: Shuffler,
    /// Loaded rows not yet emitted, by address (lookups only: never iterated).
    store: HashMap<RowAddr, RowOutcome>,
    finished: bool,
}

impl ShardSource {
    /// A source for `worker` of `num_workers`, at the start of epoch 0.
    pub fn new(
        index: Arc<ShardIndex>,
        cfg: SourceConfig,
        worker: u32,
        num_workers: u32,
    ) -> Result<Self> {
        if num_workers == 0 || worker >= num_workers {
            return Err(Error::Config {
                name: "workers",
                what: format!("worker {worker} of {num_workers}"),
            });
        }
        if cfg.shuffle_buffer == 0 {
            return Err(Error::Config {
                name: "shuffle_buffer",
                what: "must be at least 1".into(),
            });
        }
        let shuffler = Self::shuffler_for(&index, &cfg, 0, worker, num_workers);
        Ok(Self {
            finished: cfg.epochs == Some(0),
            index,
            cfg,
            worker,
            num_workers,
            epoch: 0,
            emitted: 0,
            shuffler,
            store: HashMap::new(),
        })
    }

    /// A source positioned at `cursor`: it yields exactly what the source that
    /// produced the cursor would have yielded next.
    pub fn resume(index: Arc<ShardIndex>, cfg: SourceConfig, cursor: &Cursor) -> Result<Self> {
        let mut src = Self::new(index, cfg, cursor.worker, cursor.num_workers)?;
        let expected = src.cursor();
        let mismatch = |what: String| Err(Error::CursorMismatch { what });
        if cursor.dataset != expected.dataset {
            return mismatch("the shards (names or row-group sizes) differ".into());
        }
        if (cursor.seed, cursor.shuffle, cursor.shuffle_buffer)
            != (expected.seed, expected.shuffle, expected.shuffle_buffer)
        {
            return mismatch(format!(
                "cursor has seed {} shuffle {} buffer {}, config has seed {} shuffle {} buffer {}",
                cursor.seed,
                cursor.shuffle,
                cursor.shuffle_buffer,
                expected.seed,
                expected.shuffle,
                expected.shuffle_buffer
            ));
        }
        if let Some(epochs) = src.cfg.epochs {
            if cursor.epoch > epochs {
                return mismatch(format!(
                    "cursor is in epoch {} but the config has {epochs} epochs",
                    cursor.epoch
                ));
            }
        }
        src.start_epoch(cursor.epoch);
        // Replay the buffer's choices on addresses only.
        let index = src.index.clone();
        for _ in 0..cursor.emitted {
            if src.shuffler.next(&index, |_, _| Ok(()))?.is_none() {
                return mismatch(format!(
                    "epoch {} of worker {} has fewer than {} rows",
                    cursor.epoch, cursor.worker, cursor.emitted
                ));
            }
        }
        src.emitted = cursor.emitted;
        // Re-read the rows still waiting in the buffer.
        let groups: BTreeSet<(u32, u32)> = src
            .shuffler
            .buffer
            .iter()
            .map(|a| (a.shard, a.row_group))
            .collect();
        let waiting: BTreeSet<RowAddr> = src.shuffler.buffer.iter().copied().collect();
        for (shard, row_group) in groups {
            for (addr, outcome) in index.read_row_group(shard, row_group)? {
                if waiting.contains(&addr) {
                    src.store.insert(addr, outcome);
                }
            }
        }
        Ok(src)
    }

    fn shuffler_for(
        index: &ShardIndex,
        cfg: &SourceConfig,
        epoch: u64,
        worker: u32,
        num_workers: u32,
    ) -> Shuffler {
        let mut all = index.row_group_ids();
        if cfg.shuffle {
            Rng::derive(cfg.seed, &[epoch, 0]).shuffle(&mut all);
        }
        let plan = all
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i as u64 % num_workers as u64 == worker as u64)
            .map(|(_, id)| id)
            .collect();
        Shuffler {
            plan,
            next_group: 0,
            buffer: VecDeque::new(),
            capacity: if cfg.shuffle { cfg.shuffle_buffer } else { 1 },
            shuffle: cfg.shuffle,
            rng: Rng::derive(cfg.seed, &[epoch, 1, worker as u64]),
        }
    }

    fn start_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.emitted = 0;
        self.store.clear();
        self.shuffler =
            Self::shuffler_for(&self.index, &self.cfg, epoch, self.worker, self.num_workers);
        self.finished = self.cfg.epochs.is_some_and(|n| epoch >= n);
    }

    /// The position after the last emitted row.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            epoch: self.epoch,
            emitted: self.emitted,
            worker: self.worker,
            num_workers: self.num_workers,
            seed: self.cfg.seed,
            shuffle: self.cfg.shuffle,
            shuffle_buffer: self.cfg.shuffle_buffer,
            dataset: self.index.fingerprint(),
        }
    }

    /// The dataset this source reads.
    pub fn index(&self) -> &Arc<ShardIndex> {
        &self.index
    }

    /// Rows (samples plus skips) that `worker` of `num_workers` reads in
    /// `epoch` of `index` under `cfg`: the lengths of the row groups the
    /// epoch's shuffle assigns it.
    pub fn rows_in_epoch(
        index: &ShardIndex,
        cfg: &SourceConfig,
        epoch: u64,
        worker: u32,
        num_workers: u32,
    ) -> u64 {
        Self::shuffler_for(index, cfg, epoch, worker, num_workers.max(1))
            .plan
            .iter()
            .map(|&(s, g)| index.row_group_len(s, g) as u64)
            .sum()
    }

    /// Rows this worker gets per epoch (samples plus skips).
    pub fn rows_per_epoch(&self) -> u64 {
        self.shuffler
            .plan
            .iter()
            .map(|&(s, g)| self.index.row_group_len(s, g) as u64)
            .sum()
    }

    /// The next row, `Ok(None)` at the end of the last epoch. An error (an
    /// unreadable row group) names the file; the source is finished after it.
    pub fn next_item(&mut self) -> Result<Option<SourceItem>> {
        loop {
            if self.finished {
                return Ok(None);
            }
            let index = self.index.clone();
            let store = &mut self.store;
            let next = self.shuffler.next(&index, |shard, row_group| {
                for (addr, outcome) in index.read_row_group(shard, row_group)? {
                    store.insert(addr, outcome);
                }
                Ok(())
            });
            let next = match next {
                Ok(n) => n,
                Err(e) => {
                    self.finished = true;
                    return Err(e);
                }
            };
            match next {
                Some(addr) => {
                    self.emitted += 1;
                    let outcome = self
                        .store
                        .remove(&addr)
                        .ok_or_else(|| Error::InvalidInput {
                            path: self.index.shards[addr.shard as usize].path.clone(),
                            what: format!(
                                "row group {} has fewer rows than its footer says",
                                addr.row_group
                            ),
                        })?;
                    return Ok(Some(outcome.into()));
                }
                None => {
                    let empty = self.shuffler.plan.is_empty();
                    self.start_epoch(self.epoch + 1);
                    if empty {
                        // This worker has no row groups: an endless stream would spin.
                        self.finished = true;
                    }
                }
            }
        }
    }
}

impl Iterator for ShardSource {
    type Item = Result<SourceItem>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_item().transpose()
    }
}
