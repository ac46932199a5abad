//! Checkpoints: a directory per step holding the weights, the optimizer state,
//! the data cursors, the RNG state, the step and the run's config, written to a
//! temporary directory and renamed when complete — a crash mid-write never
//! leaves a checkpoint that looks whole. Keeps the last N, and the best by a
//! chosen metric.
//!
//! ```text
//! RUN/checkpoints/step-00000100/
//!     model.safetensors      trainable and frozen weights (VarStore)
//!     optimizer.safetensors  AdamW moments and step count
//!     state.json             step, last batch time, cursors, RNG, config, metrics,
//!                            fp16 loss scale
//! RUN/checkpoints/best.json  which checkpoint is best, by which metric
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;

use crate::data::Cursor;
use crate::rng::Rng;
use crate::train::adamw::AdamW;
use crate::train::error::TrainError;
use crate::train::loss_scale::LossScaleState;

const MODEL_FILE: &str = "model.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const STATE_FILE: &str = "state.json";
const BEST_FILE: &str = "best.json";
const PREFIX: &str = "step-";

/// Everything besides tensors that a resumed run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps completed.
    pub step: u64,
    /// The dataflow time (batch number) of the last batch consumed before
    /// this checkpoint: a resumed training stage skips the batches up to and
    /// including it. Recorded from what was read, not derived from `step`:
    /// a batch whose rows were all skipped makes no optimizer step, and an
    /// accumulation cycle spans several batches. `None` in checkpoints
    /// written outside a dataflow and by versions before this field, which
    /// a training stage refuses to resume from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_batch: Option<u64>,
    /// Every source worker's data cursor right after `last_batch`, sorted by
    /// worker (a worker that has emitted no row has none): a resumed run
    /// starts each source there. Empty in checkpoints written outside a
    /// dataflow and by older versions, which resume by reading from the start.
    pub cursors: Vec<Cursor>,
    /// The training RNG (sampling, dropout seeds) after `step`.
    pub rng: Rng,
    /// The pipeline configuration the run was started with (TOML text).
    pub config: String,
    /// Metric values at this step (e.g. validation scores), by name.
    pub metrics: std::collections::BTreeMap<String, f64>,
    /// The fp16 loss scaler's state (absent in fp32 runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<LossScaleState>,
    /// The best validation result up to this step (absent without
    /// validation, or before the first validation): a resumed run compares
    /// its next validations with it, so it keeps the same best model as an
    /// uninterrupted run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best: Option<BestSoFar>,
    /// Replicas that trained to this step (`flow.devices` of a training
    /// stage with replicas, docs/distributed.md); absent means 1. A resume
    /// on another number is refused: the updates would be summed in another
    /// order.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub replicas: u64,
}

fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

/// The best validation value seen so far, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestSoFar {
    /// The metric's logged name (e.g. `CIDEr`, `RefPAC-S`).
    pub metric: String,
    /// Its value at `step`.
    pub value: f64,
    /// The optimizer step the value was measured after (0: before training).
    pub step: u64,
}

impl BestBy {
    /// Whether `value` beats `best` (strictly: on ties the earlier step
    /// stays best). `NaN` never beats anything, and anything beats nothing.
    pub fn improves(&self, value: f64, best: Option<&BestSoFar>) -> bool {
        if value.is_nan() {
            return false;
        }
        match best {
            None => true,
            Some(b) if self.higher_is_better => value > b.value,
            Some(b) => value < b.value,
        }
    }
}

/// Which metric selects the best checkpoint, and in which direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestBy {
    pub metric: String,
    pub higher_is_better: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct BestRecord {
    checkpoint: String,
    metric: String,
    value: f64,
}

/// Writes and finds checkpoints under one directory.
#[derive(Debug, Clone)]
pub struct Checkpointer {
    dir: PathBuf,
    keep_last: usize,
    best_by: Option<BestBy>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Checkpointer {
    /// Checkpoints in `dir`, keeping the `keep_last` most recent (at least 1)
    /// plus the best by `best_by` if given.
    pub fn new(dir: impl Into<PathBuf>, keep_last: usize, best_by: Option<BestBy>) -> Self {
        Self {
            dir: dir.into(),
            keep_last: keep_last.max(1),
            best_by,
        }
    }

    /// The directory a checkpoint of `step` is written to.
    pub fn path_for(&self, step: u64) -> PathBuf {
        self.dir.join(format!("{PREFIX}{step:08}"))
    }

    /// Complete checkpoints, oldest first.
    pub fn list(&self) -> Result<Vec<(u64, PathBuf)>, TrainError> {
        if !self.dir.exists() {
            return Ok(Vec::new());
        }
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let entry = entry.map_err(io(&self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(step) = name
                .strip_prefix(PREFIX)
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue; // temporary directories end in `.tmp` and do not parse
            };
            if entry.path().join(STATE_FILE).is_file() {
                found.push((step, entry.path()));
            }
        }
        found.sort();
        Ok(found)
    }

    /// The most recent complete checkpoint.
    pub fn latest(&self) -> Result<Option<PathBuf>, TrainError> {
        Ok(self.list()?.pop().map(|(_, p)| p))
    }

    /// The best checkpoint recorded so far, if any.
    pub fn best(&self) -> Result<Option<PathBuf>, TrainError> {
        let path = self.dir.join(BEST_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let rec: BestRecord = serde_json::from_str(&text).map_err(|e| TrainError::State {
            path: path.clone(),
            what: e.to_string(),
        })?;
        Ok(Some(self.dir.join(rec.checkpoint)))
    }

    /// Write a checkpoint of `state.step` atomically, update the best record,
    /// and delete checkpoints beyond the last N (never the best).
    pub fn save(
        &self,
        vs: &VarStore,
        opt: &AdamW,
        state: &TrainState,
    ) -> Result<PathBuf, TrainError> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let final_dir = self.path_for(state.step);
        let tmp = final_dir.with_extension("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        vs.save(tmp.join(MODEL_FILE))?;
        opt.save(&tmp.join(OPTIMIZER_FILE))?;
        let json = serde_json::to_string_pretty(state).map_err(|e| TrainError::State {
            path: tmp.join(STATE_FILE),
            what: e.to_string(),
        })?;
        std::fs::write(tmp.join(STATE_FILE), json).map_err(io(&tmp))?;
        if final_dir.exists() {
            std::fs::remove_dir_all(&final_dir).map_err(io(&final_dir))?;
        }
        std::fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
        self.update_best(&final_dir, state)?;
        self.prune()?;
        Ok(final_dir)
    }

    fn update_best(&self, dir: &Path, state: &TrainState) -> Result<(), TrainError> {
        let Some(by) = &self.best_by else {
            return Ok(());
        };
        let Some(&value) = state.metrics.get(&by.metric) else {
            return Ok(());
        };
        let path = self.dir.join(BEST_FILE);
        let current: Option<BestRecord> = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let better = match &current {
            None => true,
            Some(c) if by.higher_is_better => value > c.value,
            Some(c) => value < c.value,
        };
        if better {
            let rec = BestRecord {
                checkpoint: dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                metric: by.metric.clone(),
                value,
            };
            let tmp = path.with_extension("json.tmp");
            let json = serde_json::to_string_pretty(&rec).unwrap_or_default();
            std::fs::write(&tmp, json).map_err(io(&tmp))?;
            std::fs::rename(&tmp, &path).map_err(io(&path))?;
        }
        Ok(())
    }

    fn prune(&self) -> Result<(), TrainError> {
        let all = self.list()?;
        let best = self.best()?;
        let excess = all.len().saturating_sub(self.keep_last);
        for (_, dir) in all.into_iter().take(excess) {
            if Some(&dir) != best.as_ref() {
                std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
            }
        }
        Ok(())
    }

    /// The state of checkpoint `dir` (its `state.json`), without loading any
    /// tensors.
    pub fn read_state(dir: &Path) -> Result<TrainState, TrainError> {
        let state_path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&state_path).map_err(io(&state_path))?;
        serde_json::from_str(&text).map_err(|e| TrainError::State {
            path: state_path.clone(),
            what: e.to_string(),
        })
    }

    /// Load weights and optimizer state from `dir` and return the rest.
    pub fn load(dir: &Path, vs: &mut VarStore, opt: &mut AdamW) -> Result<TrainState, TrainError> {
        let state = Self::read_state(dir)?;
        crate::model::weights::load_var_store(vs, dir.join(MODEL_FILE))?;
        opt.load(&dir.join(OPTIMIZER_FILE))?;
        Ok(state)
    }
}
