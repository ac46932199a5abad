//! What every stage file needs to build itself: its device, its caption
//! text, a CLIP scorer, resuming from a checkpoint, and the defaults of the
//! settings they share.

use std::path::{Path, PathBuf};

use tch::Device;

use crate::device::DeviceName;
use crate::flow::{FlowError, StageFailure};
use crate::model::captioner::{CaptionText, Vocab};
use crate::model::clip::{Clip, ClipConfig};
use crate::reward::{ClipScorer, ScoreConfig};
use crate::text::ClipTokenizer;
use crate::train::resumable::{Resumable, StageCheckpoints};

/// Weights file a training stage writes into its `out` directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Default `device` of every stage: the CPU.
pub(crate) fn default_device() -> DeviceName {
    DeviceName::Cpu
}

/// Default `keep_last` of the training stages: the 2 most recent checkpoints.
pub(crate) fn default_keep_last() -> usize {
    2
}

/// The device stage `stage`'s `device` setting names, checked on this machine (asking
/// for CUDA where there is none is an error, see [`DeviceName::resolve`]).
pub(crate) fn device_of(stage: &'static str, name: DeviceName) -> Result<Device, FlowError> {
    name.resolve().map_err(|source| FlowError::Device {
        setting: format!("stage `{stage}`: device"),
        source,
    })
}

/// A stage's setting error with the message `what`.
pub(crate) fn build_err(stage: &'static str) -> impl Fn(String) -> FlowError {
    move |what| FlowError::Config { name: stage, what }
}

pub(crate) fn load_scorer(
    path: &PathBuf,
    cfg: &ClipConfig,
    score: ScoreConfig,
    device: Device,
) -> Result<ClipScorer, String> {
    let (_vs, clip) = Clip::from_safetensors(path, cfg, device).map_err(|e| e.to_string())?;
    let tok = ClipTokenizer::openai().map_err(|e| e.to_string())?;
    Ok(ClipScorer::new(clip, tok, score))
}

/// The caption text of a stage: the word vocabulary at `vocab`, or CLIP BPE.
pub(crate) fn load_text(vocab: Option<&Path>) -> Result<CaptionText, String> {
    let Some(path) = vocab else {
        return CaptionText::clip_bpe().map_err(|e| e.to_string());
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Vocab = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(CaptionText::Words(v.reindexed()))
}

/// Where every replica writes its final weights as `replica-K.safetensors`
/// (tests and audits of the all-reduce: replicas must be bit-identical).
static REPLICA_WEIGHTS_DIR: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// Have every replica of later `train_captioner` and `train_evaluator` runs
/// in this process write its final weights to `dir/replica-K.safetensors`
/// (`None`: stop). For tests and audits; replica 0 still writes `out/` as
/// always.
pub fn write_replica_weights_to(dir: Option<PathBuf>) {
    *REPLICA_WEIGHTS_DIR
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = dir;
}

/// The directory of [`write_replica_weights_to`], if set.
pub(crate) fn replica_weights_dir() -> Option<PathBuf> {
    REPLICA_WEIGHTS_DIR
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// A training stage's result for a batch, on one of `replicas` devices: with
/// replicas every failure is fatal, since a replica that rejected a batch
/// without taking part in its all-reduce (or gather) would leave the others
/// waiting.
pub(crate) fn fatal_if_replicated(
    replicas: usize,
    result: Result<(), StageFailure>,
) -> Result<(), StageFailure> {
    if replicas > 1 {
        result.map_err(|f| StageFailure { fatal: true, ..f })
    } else {
        result
    }
}

/// Restore `trainer` from the latest checkpoint if `resume` is set.
pub(crate) fn resume_if_asked<T: Resumable>(
    stage: &'static str,
    resume: bool,
    checkpoints: &mut StageCheckpoints,
    trainer: &mut T,
) -> Result<(), FlowError> {
    if !resume {
        return Ok(());
    }
    match checkpoints
        .resume(trainer)
        .map_err(|e| build_err(stage)(format!("resuming: {e}")))?
    {
        Some(dir) => tracing::info!(
            "{stage}: resuming from {} at step {}, after batch {}",
            dir.display(),
            trainer.steps_taken(),
            checkpoints.resumed_after().unwrap_or_default()
        ),
        None => tracing::info!("{stage}: no checkpoint yet, starting from scratch"),
    }
    Ok(())
}

/// Sets `schedule.total_steps` of a training stage from the run's data, or
/// checks it against the data: with `total_steps = 0` (the default) it
/// becomes the optimizer steps that `source.epochs` epochs give, ⌊B /
/// `accumulate`⌋ for the B batch times the sources emit
/// ([`crate::flow::length::RunLength::batches`]); a `total_steps` that
/// needs more batches than the epochs give is refused, naming the epochs it
/// needs. (A batch all of whose rows are skipped makes no step on one device,
/// so a run can end a few steps short of the count; replicas step on every
/// batch.) A stage built outside a dataflow run keeps a set `total_steps`
/// and refuses 0.
///
/// Errors: [`FlowError::StageSetup`] as above.
pub(crate) fn resolve_total_steps(
    stage: &'static str,
    schedule: &mut crate::train::Schedule,
    accumulate: u32,
) -> Result<(), FlowError> {
    let err = build_err(stage);
    let accumulate = u64::from(accumulate.max(1));
    let length = crate::flow::length::run_length();
    let Some(batches) = length.as_ref().and_then(|l| l.batches()) else {
        if schedule.total_steps == 0 {
            return Err(err(
                "train.schedule.total_steps is 0 (from the epochs), but this stage is built \
                 outside a pipeline run with a finite source.epochs: set total_steps"
                    .into(),
            ));
        }
        return Ok(());
    };
    let length = length.expect("batches come from a run length");
    let epochs = length.epochs().unwrap_or(0);
    let available = batches / accumulate;
    if schedule.total_steps == 0 {
        if available == 0 {
            return Err(err(format!(
                "source.epochs = {epochs} gives {batches} batch(es), fewer than one optimizer \
                 step of accumulate = {accumulate}: raise source.epochs"
            )));
        }
        schedule.total_steps = available;
        tracing::info!(
            "{stage}: {available} optimizer steps ({batches} batches of source.epochs = {epochs})"
        );
        return Ok(());
    }
    let needed = schedule.total_steps.saturating_mul(accumulate);
    if needed > batches {
        let hint = match length.epochs_for(needed) {
            Some(e) => format!("set source.epochs = {e}"),
            None => "add data or epochs".into(),
        };
        return Err(err(format!(
            "train.schedule.total_steps = {} needs {needed} batches (accumulate = \
             {accumulate}), but source.epochs = {epochs} gives {batches} with these shards, \
             this batch_size and this many workers: {hint}, or set total_steps <= \
             {available}, or remove total_steps to train for the epochs",
            schedule.total_steps
        )));
    }
    Ok(())
}
