//! What every stage file needs to build itself: its device, its caption
//! text, a CLIP scorer, resuming from a checkpoint, and the defaults of the
//! settings they share.

use std::path::{Path, PathBuf};

use tch::Device;

use crate::device::DeviceName;
use crate::flow::FlowError;
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

/// Refuses to resume a run trained on `replicas > 1` devices when `resume`
/// is set and `out/checkpoints` holds a checkpoint: a resumed replicated run
/// did not always end with the weights of an uninterrupted one in tests
/// (docs/distributed.md), so it is refused rather than resumed inexactly.
///
/// # Errors
/// [`FlowError::Config`] naming the checkpoint and what to do.
pub(crate) fn refuse_replicated_resume(
    stage: &'static str,
    out: &Path,
    resume: bool,
    replicas: usize,
) -> Result<(), FlowError> {
    if replicas <= 1 || !resume {
        return Ok(());
    }
    let err = build_err(stage);
    let latest = crate::train::resumable::latest_checkpoint(out).map_err(|e| err(e.to_string()))?;
    match latest {
        None => Ok(()),
        Some(dir) => Err(err(format!(
            "resuming a run trained on {replicas} devices is not supported yet ({} exists): \
             start it again without --resume (move {} away), or train with \
             flow.devices = 1",
            dir.display(),
            out.join(crate::train::resumable::CHECKPOINTS_DIR).display()
        ))),
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
