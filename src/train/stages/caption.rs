//! `caption`: greedy captions of every image plus evaluator scores, appended
//! to a JSONL file (one `{"key", "caption", "references"[, "score"]}` per image).
//! With several devices (threads of one process) each captions its share of
//! every batch into the same file, so the lines are those of a one-device
//! run, in another order. When the devices are spread over several processes
//! of a cluster, process P of Q writes its devices' lines to
//! `STEM.process-P-of-Q.EXT` beside `out` ([`process_path`]) instead: the Q
//! files together hold the lines of a one-device run, and no two processes
//! write one file (on a shared file system they would overwrite each other).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::device::DeviceName;
use crate::flow::allreduce::{device_process, device_run_id, local_device_index};
use crate::flow::{DeviceBatch, DeviceStage, FlowError, StageFailure};
use crate::model::captioner::{Backbone, CaptionerConfig};
use crate::model::clip::ClipConfig;
use crate::reward::{ClipScorer, ScoreConfig};
use crate::train::policy::Policy;
use crate::train::stages::setup::{
    build_failed, default_device, device_of, load_scorer, load_text, StageBuildError,
};
use crate::train::stages::tensors::batch_tensors;

/// Settings of `caption`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptionStageSettings {
    pub captioner: CaptionerConfig,
    pub weights: PathBuf,
    /// Word vocabulary (JSON); absent: CLIP BPE.
    #[serde(default)]
    pub vocab: Option<PathBuf>,
    pub backbone: PathBuf,
    pub backbone_config: ClipConfig,
    /// Evaluator for the per-caption score (CLIP-S by default); absent: no score.
    #[serde(default)]
    pub evaluator: Option<PathBuf>,
    /// The evaluator's CLIP config (default: `backbone_config`).
    #[serde(default)]
    pub evaluator_config: Option<ClipConfig>,
    #[serde(default = "ScoreConfig::clip_s")]
    pub score: ScoreConfig,
    /// JSONL output: one `{"key", "caption", "references"}` per image, plus
    /// `"score"` with an evaluator.
    pub out: PathBuf,
    /// `cpu` (default), `cuda`, `cuda:K` or `auto` ([`DeviceName`]).
    #[serde(default = "default_device")]
    pub device: DeviceName,
}

/// The JSONL output, shared by the device threads of one process that
/// caption into the same file: each device writes its disjoint share, whole
/// batches at a time, so the file holds the same lines as a one-device run
/// (in another order).
type SharedOut = Arc<Mutex<std::io::BufWriter<std::fs::File>>>;

/// An output file that the devices of one run in this process share.
struct Shared {
    path: PathBuf,
    /// The run ([`crate::flow::RunState::id`]) that created (truncated) it.
    run: u64,
    /// Open while a stage of the run uses it.
    out: Option<SharedOut>,
    users: usize,
}

/// The shared outputs of this process, by path. An entry stays after its
/// last user lets go: a device of the same run whose stage is built only
/// after another device has finished (the devices start and end at their
/// own pace) must append to the file, not create it again, which would
/// drop the lines already written. Only a later run truncates it.
static OPEN: Mutex<Vec<Shared>> = Mutex::new(Vec::new());

/// The output at `path` for a device of run `run` (`None`: the only device,
/// which creates the file for itself).
///
/// Errors: the file cannot be created or opened; another run of this
/// process is writing the same file.
fn open_shared(path: &Path, run: Option<u64>) -> std::io::Result<SharedOut> {
    let create = || {
        let file = std::fs::File::create(path)?;
        Ok::<_, std::io::Error>(Arc::new(Mutex::new(std::io::BufWriter::new(file))))
    };
    let Some(run) = run else {
        return create();
    };
    let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
    let Some(entry) = open.iter_mut().find(|e| e.path == path) else {
        let out = create()?;
        open.push(Shared {
            path: path.to_path_buf(),
            run,
            out: Some(out.clone()),
            users: 1,
        });
        return Ok(out);
    };
    if entry.run != run {
        if entry.users > 0 {
            return Err(std::io::Error::other(
                "another run in this process is writing this file: give each run its own `out`",
            ));
        }
        let out = create()?;
        *entry = Shared {
            path: path.to_path_buf(),
            run,
            out: Some(out.clone()),
            users: 1,
        };
        return Ok(out);
    }
    let out = match &entry.out {
        Some(out) => out.clone(),
        None => {
            let file = std::fs::OpenOptions::new().append(true).open(path)?;
            let out = Arc::new(Mutex::new(std::io::BufWriter::new(file)));
            entry.out = Some(out.clone());
            out
        }
    };
    entry.users += 1;
    Ok(out)
}

/// One user of run `run` is done with `path`; the last one closes it.
fn release_shared(path: &Path, run: Option<u64>) {
    let Some(run) = run else {
        return;
    };
    let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(entry) = open.iter_mut().find(|e| e.path == path && e.run == run) {
        entry.users = entry.users.saturating_sub(1);
        if entry.users == 0 {
            entry.out = None;
        }
    }
}

/// The file process `process` of `processes` writes for `out`:
/// `captions.jsonl` → `captions.process-0-of-2.jsonl` (a name without an
/// extension gets the suffix at its end).
pub fn process_path(out: &Path, process: usize, processes: usize) -> PathBuf {
    let suffix = format!("process-{process}-of-{processes}");
    let name = match (out.file_stem(), out.extension()) {
        (Some(stem), Some(ext)) => format!(
            "{}.{suffix}.{}",
            stem.to_string_lossy(),
            ext.to_string_lossy()
        ),
        _ => format!(
            "{}.{suffix}",
            out.file_name().unwrap_or_default().to_string_lossy()
        ),
    };
    out.with_file_name(name)
}

/// Captions every image and scores it with the evaluator. With several
/// devices in a process, each captions its share into the same file.
pub struct CaptionStage {
    policy: Policy,
    scorer: Option<ClipScorer>,
    path: PathBuf,
    /// The run whose devices share `path` (`None` with one device).
    run: Option<u64>,
    out: Option<SharedOut>,
}

impl CaptionStage {
    pub fn try_new(s: CaptionStageSettings) -> Result<Self, FlowError> {
        let failed = build_failed::<StageBuildError>("caption");
        // With several devices in a process, the d-th runs on the d-th device
        // from the stage's.
        let device = device_of("caption", s.device, local_device_index())?;
        let text = load_text(s.vocab.as_deref()).map_err(&failed)?;
        let backbone = Backbone::from_clip_safetensors(&s.backbone, &s.backbone_config, device)
            .map_err(StageBuildError::in_setting("backbone"))
            .map_err(&failed)?;
        let policy = Policy::from_weights(&s.captioner, text, backbone, &s.weights, device)
            .map_err(StageBuildError::in_setting("weights"))
            .map_err(&failed)?;
        let evaluator_config = s.evaluator_config.as_ref().unwrap_or(&s.backbone_config);
        let scorer = s
            .evaluator
            .as_ref()
            .map(|p| load_scorer(p, evaluator_config, s.score.clone(), device))
            .transpose()
            .map_err(&failed)?;
        let out_path = match device_process() {
            Some((process, processes)) if processes > 1 => process_path(&s.out, process, processes),
            _ => s.out.clone(),
        };
        if let Some(dir) = out_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| failed(StageBuildError::io(dir)(e)))?;
        }
        let run = device_run_id();
        let out =
            open_shared(&out_path, run).map_err(|e| failed(StageBuildError::io(&out_path)(e)))?;
        Ok(Self {
            policy,
            scorer,
            path: out_path,
            run,
            out: Some(out),
        })
    }
}

impl DeviceStage for CaptionStage {
    fn process(&mut self, batch: &mut DeviceBatch) -> Result<(), StageFailure> {
        if batch.samples.is_empty() {
            return Ok(());
        }
        let (pixels, keys, references) = batch_tensors(batch)?;
        let captions = tch::no_grad(|| self.policy.caption(&pixels))
            .map_err(|e| StageFailure::new("captioning failed").with_detail(e))?;
        let scores = match self.scorer.as_mut() {
            Some(scorer) => {
                scorer
                    .add_images(&keys, &pixels)
                    .map_err(|e| StageFailure::new("image scoring failed").with_detail(e))?;
                let scores = scorer
                    .score(&keys, &captions)
                    .map_err(|e| StageFailure::new("caption scoring failed").with_detail(e))?;
                scorer.clear_images();
                Some(scores)
            }
            None => None,
        };
        let mut lines = String::new();
        for (i, (k, c)) in keys.iter().zip(&captions).enumerate() {
            let mut line = serde_json::json!({"key": k, "caption": c, "references": references[i]});
            if let Some(scores) = &scores {
                line["score"] = serde_json::json!(scores[i]);
            }
            lines.push_str(&line.to_string());
            lines.push('\n');
        }
        let out = self
            .out
            .as_ref()
            .ok_or_else(|| StageFailure::new("captions not written").with_detail("closed"))?;
        let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
        out.write_all(lines.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| StageFailure::new("captions not written").with_detail(e))?;
        drop(out);
        if let Some(scores) = &scores {
            let sum: f64 = scores.iter().map(|&s| s as f64).sum();
            batch
                .metrics
                .insert("caption/score".into(), sum / keys.len() as f64);
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), StageFailure> {
        let Some(out) = self.out.take() else {
            return Ok(());
        };
        let flushed = out.lock().unwrap_or_else(|e| e.into_inner()).flush();
        drop(out);
        release_shared(&self.path, self.run);
        flushed.map_err(|e| StageFailure::new("captions not written").with_detail(e))
    }
}

impl Drop for CaptionStage {
    /// A stage dropped without `finish` (a failed run) lets go of the file.
    fn drop(&mut self) {
        if self.out.take().is_some() {
            release_shared(&self.path, self.run);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::stages::setup::StageBuildError;

    /// A backbone that cannot be loaded is a build failure with the model
    /// error as its source (not an invalid setting), naming the stage and
    /// the file.
    /// A device of a run whose stage opens the file after another device of
    /// the same run has finished with it appends; a later run starts the
    /// file again; a run with one device writes its own file.
    #[test]
    fn devices_of_one_run_append_and_a_later_run_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("captions.jsonl");
        let write = |run: Option<u64>, line: &str| {
            let out = open_shared(&path, run).unwrap();
            writeln!(out.lock().unwrap(), "{line}").unwrap();
            out.lock().unwrap().flush().unwrap();
            drop(out);
            release_shared(&path, run);
        };
        let read = || std::fs::read_to_string(&path).unwrap();
        // Two runs' ids that no flow run of this test binary has.
        let (first, second) = (u64::MAX - 1, u64::MAX);
        write(Some(first), "device 0");
        write(Some(first), "device 1");
        assert_eq!(read(), "device 0\ndevice 1\n");
        write(Some(second), "next run");
        assert_eq!(read(), "next run\n");
        // While a run holds the file, another run may not take it.
        let held = open_shared(&path, Some(first)).unwrap();
        assert!(open_shared(&path, Some(second)).is_err());
        drop(held);
        release_shared(&path, Some(first));
        write(None, "one device");
        assert_eq!(read(), "one device\n");
    }

    #[test]
    fn each_process_writes_its_own_file_beside_out() {
        assert_eq!(
            process_path(Path::new("runs/x/captions.jsonl"), 1, 2),
            Path::new("runs/x/captions.process-1-of-2.jsonl")
        );
        assert_eq!(
            process_path(Path::new("captions"), 0, 3),
            Path::new("captions.process-0-of-3")
        );
    }

    #[test]
    fn a_missing_backbone_is_a_build_failure_with_its_model_error() {
        let dir = std::env::temp_dir().join(format!("dicoflow-caption-{}", std::process::id()));
        let missing = dir.join("no-such-clip.safetensors");
        let settings = CaptionStageSettings {
            captioner: CaptionerConfig::tiny(),
            weights: dir.join("no-such-captioner.safetensors"),
            vocab: None,
            backbone: missing.clone(),
            backbone_config: ClipConfig::tiny(),
            evaluator: None,
            evaluator_config: None,
            score: ScoreConfig::clip_s(),
            out: dir.join("captions.jsonl"),
            device: DeviceName::Cpu,
        };
        let err = CaptionStage::try_new(settings).err().expect("no backbone");
        let text = err.to_string();
        let FlowError::StageBuild { stage, source } = err else {
            panic!("not a build failure: {text}");
        };
        assert_eq!(stage, "caption");
        let source = source
            .downcast_ref::<StageBuildError>()
            .expect("a stage build error");
        let StageBuildError::Setting { setting, source } = source else {
            panic!("not named by its setting: {source:?}");
        };
        assert_eq!(*setting, "backbone");
        assert!(matches!(**source, StageBuildError::Model(_)), "{source:?}");
        assert!(text.contains("stage `caption`: `backbone`: "), "{text}");
        assert!(text.contains("no-such-clip.safetensors"), "{text}");
        assert!(!dir.join("captions.jsonl").exists());
    }
}
