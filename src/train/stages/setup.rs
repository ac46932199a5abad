//! What every stage file needs to build itself: its device, its caption
//! text, a CLIP scorer, resuming from a checkpoint, the defaults of the
//! settings they share, and the two kinds of build error:
//!
//! - a setting the stage refuses: [`FlowError::Config`] ([`setting_err`]),
//!   whose message names the setting and what to do;
//! - something the stage loads failing (a backbone, weights, a vocabulary,
//!   a reward, a reward cache, a checkpoint): [`FlowError::StageBuild`] with
//!   the real error as its source, a [`StageBuildError`] ([`build_failed`]).

use std::path::{Path, PathBuf};

use tch::Device;

use crate::device::DeviceName;
use crate::flow::{FlowError, StageFailure};
use crate::model::captioner::{CaptionText, TextMismatch, Vocab};
use crate::model::clip::{Clip, ClipConfig};
use crate::model::ModelError;
use crate::reward::cache_run::ProvenanceError;
use crate::reward::{ClipScorer, RewardError, ScoreConfig};
use crate::text::{ClipTokenizer, TokenizerError};
use crate::train::error::TrainError;
use crate::train::resumable::{Resumable, StageCheckpoints};

/// Why a training stage could not be built: the error of what it loads.
/// The source of [`FlowError::StageBuild`] (`build_failed`).
#[derive(Debug, thiserror::Error)]
pub enum StageBuildError {
    /// A model (backbone, evaluator, captioner) could not be built or its
    /// weights read (boxed: `ModelError` is large next to the other
    /// variants, as in [`TrainError::Model`]).
    #[error(transparent)]
    Model(Box<ModelError>),
    /// A trainer or validator could not be built.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// A reward, an evaluator or a reward cache could not be loaded.
    #[error(transparent)]
    Reward(#[from] RewardError),
    /// The CLIP tokenizer could not be loaded.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The weights a reward cache records could not be hashed.
    #[error(transparent)]
    Provenance(#[from] ProvenanceError),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A word vocabulary file is not a vocabulary's JSON.
    #[error("{}: {source}", path.display())]
    Vocab {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The latest checkpoint could not be restored.
    #[error("resuming: {0}")]
    Resume(#[source] TrainError),
    /// The validation log could not be started.
    #[error("validation log: {0}")]
    ValidationLog(#[source] TrainError),
    /// What the stage's setting `setting` names (a file) could not be loaded.
    #[error("`{setting}`: {source}")]
    Setting {
        setting: &'static str,
        #[source]
        source: Box<StageBuildError>,
    },
}

impl From<ModelError> for StageBuildError {
    fn from(e: ModelError) -> Self {
        StageBuildError::Model(Box::new(e))
    }
}

impl From<TextMismatch> for StageBuildError {
    fn from(e: TextMismatch) -> Self {
        StageBuildError::Train(e.into())
    }
}

impl StageBuildError {
    /// Wraps an error of loading what the setting `setting` names, so the
    /// message says which setting to fix.
    pub(crate) fn in_setting<E: Into<StageBuildError>>(
        setting: &'static str,
    ) -> impl Fn(E) -> Self {
        move |e| StageBuildError::Setting {
            setting,
            source: Box::new(e.into()),
        }
    }

    /// An io error on `path`.
    pub(crate) fn io(path: &Path) -> impl Fn(std::io::Error) -> Self + '_ {
        move |source| StageBuildError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Weights file a training stage writes into its `out` directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// CLIP config that `train_evaluator` and `pretrain_image_tower` write next
/// to their weights.
pub const CLIP_CONFIG_FILE: &str = "clip_config.json";

/// Default `device` of every stage: the CPU.
pub(crate) fn default_device() -> DeviceName {
    DeviceName::Cpu
}

/// Default `keep_last` of the training stages: the 2 most recent checkpoints.
pub(crate) fn default_keep_last() -> usize {
    2
}

/// The device stage `stage`'s `device` setting names, for the `local`-th
/// device of this process when the stage runs on several (`flow.devices`;
/// `None` with one), checked on this machine (asking for CUDA where there is
/// none is an error, see [`DeviceName::resolve`]).
pub(crate) fn device_of(
    stage: &'static str,
    name: DeviceName,
    local: Option<usize>,
) -> Result<Device, FlowError> {
    local_device(name, local)
        .resolve()
        .map_err(|source| FlowError::Device {
            setting: format!("stage `{stage}`: device"),
            source,
        })
}

/// The device the `local`-th device owner of a process uses when the stage
/// names `name`: `cuda:K` becomes `cuda:(K + local)`; `cpu` and `auto` stay
/// as they are (`auto` resolves to the same device for every owner,
/// docs/distributed.md).
fn local_device(name: DeviceName, local: Option<usize>) -> DeviceName {
    match (name, local) {
        (DeviceName::Cuda(k), Some(d)) => DeviceName::Cuda(k + d),
        (d, _) => d,
    }
}

/// A setting of stage `stage` that cannot be honoured, with the message
/// `what` (which names the setting and what to do).
pub(crate) fn setting_err(stage: &'static str) -> impl Fn(String) -> FlowError {
    move |what| FlowError::Config { name: stage, what }
}

/// Stage `stage` could not load something it needs (the error `e`).
pub(crate) fn build_failed<E: Into<StageBuildError>>(
    stage: &'static str,
) -> impl Fn(E) -> FlowError {
    move |e| FlowError::StageBuild {
        stage: stage.into(),
        source: Box::new(e.into()),
    }
}

/// A CLIP scorer with the weights at `path` (CLIP safetensors, config `cfg`).
///
/// Errors: the weights cannot be loaded ([`StageBuildError::Model`]) or the
/// tokenizer cannot be made ([`StageBuildError::Tokenizer`]).
pub(crate) fn load_scorer(
    path: &Path,
    cfg: &ClipConfig,
    score: ScoreConfig,
    device: Device,
) -> Result<ClipScorer, StageBuildError> {
    let (_vs, clip) = Clip::from_safetensors(path, cfg, device)?;
    let tok = ClipTokenizer::openai()?;
    Ok(ClipScorer::new(clip, tok, score))
}

/// The caption text of a stage: the word vocabulary at `vocab`, or CLIP BPE.
///
/// Errors: the vocabulary cannot be read ([`StageBuildError::Io`]) or is not
/// one ([`StageBuildError::Vocab`]), both within [`StageBuildError::Setting`]
/// naming `vocab`; the BPE tokenizer cannot be made.
pub(crate) fn load_text(vocab: Option<&Path>) -> Result<CaptionText, StageBuildError> {
    let Some(path) = vocab else {
        return Ok(CaptionText::clip_bpe()?);
    };
    let in_vocab = StageBuildError::in_setting::<StageBuildError>("vocab");
    let text = std::fs::read_to_string(path)
        .map_err(StageBuildError::io(path))
        .map_err(&in_vocab)?;
    let v: Vocab = serde_json::from_str(&text)
        .map_err(|source| StageBuildError::Vocab {
            path: path.to_path_buf(),
            source,
        })
        .map_err(&in_vocab)?;
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

/// Creates a stage's `out` folder (and its parents) for its final outputs.
pub(crate) fn create_out_dir(out: &Path) -> Result<(), StageFailure> {
    std::fs::create_dir_all(out).map_err(|e| {
        StageFailure::new("output directory not writable")
            .with_detail(format!("{}: {e}", out.display()))
    })
}

/// Writes `clip` as `out/`[`CLIP_CONFIG_FILE`] (pretty JSON), beside the
/// weights of a stage that trains a CLIP.
pub(crate) fn write_clip_config(out: &Path, clip: &ClipConfig) -> Result<(), StageFailure> {
    let cfg = serde_json::to_string_pretty(clip).unwrap_or_default();
    std::fs::write(out.join(CLIP_CONFIG_FILE), cfg)
        .map_err(|e| StageFailure::new("CLIP config not written").with_detail(e))
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
        .map_err(|e| build_failed(stage)(StageBuildError::Resume(e)))?
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
/// Errors: [`FlowError::Config`] as above.
pub(crate) fn resolve_total_steps(
    stage: &'static str,
    schedule: &mut crate::train::Schedule,
    accumulate: u32,
) -> Result<(), FlowError> {
    let err = setting_err(stage);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_d_th_device_owner_of_a_process_uses_the_d_th_cuda_device() {
        assert_eq!(
            local_device(DeviceName::Cuda(1), Some(2)),
            DeviceName::Cuda(3)
        );
        assert_eq!(local_device(DeviceName::Cuda(1), None), DeviceName::Cuda(1));
        assert_eq!(local_device(DeviceName::Cpu, Some(2)), DeviceName::Cpu);
        assert_eq!(local_device(DeviceName::Auto, Some(1)), DeviceName::Auto);
    }
}
