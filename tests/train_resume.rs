//! A training run stopped by a failure resumes from its latest checkpoint and
//! ends with weights bit-identical to an uninterrupted run (CPU): the
//! captioner stage (also when optimizer steps accumulate several batches and
//! the crash comes mid-cycle), the evaluator stage, and `dicoflow train
//! --resume` after the process is killed. A batch whose rows were all
//! skipped (failed downloads) makes no optimizer step; resume still skips
//! exactly the batches the checkpoint consumed, with and without accumulation.
mod common;

use common::clip::save_tiny_clip;
use common::dicoflow;
use common::train::{
    captioner_pipeline, crash_stage, registry_with_crash, stage_settings, train_config, write_vocab,
};

use std::path::Path;
use std::time::{Duration, Instant};

use std::sync::Arc;

use arrow::array::{ArrayRef, BinaryArray, StringArray};
use dicoflow::data::world::WorldSpec;
use dicoflow::flow::{run, FlowError, Pipeline, RunOptions, StageSpec};
use dicoflow::model::captioner::Vocab;
use dicoflow::model::clip::ClipConfig;
use dicoflow::train::captioning::{CaptionTrainConfig, Objective};
use dicoflow::train::evaluator::ContrastiveConfig;
use dicoflow::train::stages::{CaptionerStageSettings, EvaluatorStageSettings, WEIGHTS_FILE};
use dicoflow::train::{AdamWConfig, Checkpointer, Precision, Schedule};

/// Runs in this process take turns: model initialisation seeds libtorch's
/// global RNG, and two trainings sharing libtorch's CPU thread pool split
/// their reductions differently, so the sums this file compares bit for bit
/// would depend on timing.
static ONE_RUN_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A run over 6 batches: `accumulate` batches per optimizer step, a
/// checkpoint every `checkpoint_every` steps.
fn settings(
    root: &Path,
    out: &str,
    vocab: &Vocab,
    accumulate: u32,
    checkpoint_every: u64,
) -> CaptionerStageSettings {
    let schedule = Schedule {
        lr: 1e-3,
        warmup_fraction: 0.2,
        total_steps: 6 / accumulate as u64,
        ..Default::default()
    };
    let train = CaptionTrainConfig {
        accumulate,
        ..train_config(Objective::Xe, schedule, 2, 5)
    };
    CaptionerStageSettings {
        checkpoint_every,
        keep_last: 5,
        resume: true,
        ..stage_settings(root, out, vocab, train)
    }
}

/// The captioner pipeline of `s`, crashing at batch `crash` if given.
fn pipeline(root: &Path, s: &CaptionerStageSettings, crash: Option<u64>) -> Pipeline {
    captioner_pipeline(root, s, crash.map(crash_stage).into_iter().collect())
}

/// Writes `vocab` and a random tiny CLIP (the frozen backbone, seed 1) under `root`.
fn write_vocab_and_backbone(root: &Path, vocab: Vocab) -> Vocab {
    write_vocab(root, &vocab);
    save_tiny_clip(&root.join("clip.safetensors"), 1);
    vocab
}

/// The world's 48 training images, a word vocabulary and a random tiny CLIP
/// (the frozen backbone) under `root`.
fn setup(root: &Path) -> Vocab {
    common::train::small_world(root, 48, 48)
}

#[test]
fn resumed_training_is_bit_identical() {
    // Crash while at batch 4: the checkpoint of step 3 (after batch 2) is the latest.
    crash_at_batch_4_and_resume(1, 3, 3);
}

#[test]
fn resumed_accumulating_training_is_bit_identical() {
    // Steps of 2 batches: checkpoints after batches 1 and 3 (steps 1, 2); the
    // crash at batch 4 comes after its gradients were accumulated, which the
    // resumed run must recompute rather than lose or count twice.
    crash_at_batch_4_and_resume(2, 1, 2);
}

fn crash_at_batch_4_and_resume(accumulate: u32, checkpoint_every: u64, latest_step: u64) {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let vocab = setup(root);

    let reg = registry_with_crash();
    let opts = RunOptions::threads(1);

    // Uninterrupted.
    let straight = settings(root, "straight", &vocab, accumulate, checkpoint_every);
    run(&pipeline(root, &straight, None), &reg, &opts).unwrap();

    let interrupted = settings(root, "interrupted", &vocab, accumulate, checkpoint_every);
    let err = run(&pipeline(root, &interrupted, Some(4)), &reg, &opts).unwrap_err();
    assert!(matches!(err, FlowError::StagePanicked { .. }), "{err}");
    assert!(
        !interrupted.out.join(WEIGHTS_FILE).exists(),
        "no final weights after a crash"
    );
    let checkpoints = Checkpointer::new(interrupted.out.join("checkpoints"), 5, None);
    assert_eq!(
        checkpoints.latest().unwrap(),
        Some(checkpoints.path_for(latest_step))
    );
    run(&pipeline(root, &interrupted, None), &reg, &opts).unwrap();
    common::train::assert_same_weights(&straight.out, &interrupted.out);
}

fn evaluator_settings(root: &Path, out: &str) -> EvaluatorStageSettings {
    let clip = ClipConfig::tiny();
    EvaluatorStageSettings {
        init: None,
        train: ContrastiveConfig {
            context_length: clip.text.context_length as usize,
            clip,
            optimizer: AdamWConfig::default(),
            schedule: Schedule {
                lr: 1e-3,
                warmup_fraction: 0.2,
                total_steps: 6,
                ..Default::default()
            },
            grad_clip: Some(1.0),
            seed: 9,
            accumulate: 1,
            precision: Precision::Fp32,
            hard_negatives: None,
            lock_image: false,
        },
        out: root.join(out),
        device: dicoflow::device::DeviceName::Cpu,
        checkpoint_every: 2,
        keep_last: 2,
        resume: false,
    }
}

fn evaluator_pipeline(root: &Path, s: &EvaluatorStageSettings, crash: Option<u64>) -> Pipeline {
    let mut p = pipeline(
        root,
        &settings(root, "unused", &Vocab::build(&["a"], 1, None), 1, 3),
        crash,
    );
    p.device[0] =
        StageSpec::new("train_evaluator").with_settings(toml::Table::try_from(s).unwrap());
    p
}

#[test]
fn resumed_evaluator_training_is_bit_identical() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    setup(root);
    let reg = registry_with_crash();
    let opts = RunOptions::threads(1);

    let straight = evaluator_settings(root, "straight");
    run(&evaluator_pipeline(root, &straight, None), &reg, &opts).unwrap();

    // Crash at batch 2 (step 2 checkpointed, step 3 trained but lost), then
    // resume as `train --resume` does: by the registry turning `resume` on.
    let interrupted = evaluator_settings(root, "interrupted");
    let err = run(
        &evaluator_pipeline(root, &interrupted, Some(2)),
        &reg,
        &opts,
    )
    .unwrap_err();
    assert!(matches!(err, FlowError::StagePanicked { .. }), "{err}");
    let ck = interrupted.out.join("checkpoints");
    assert!(ck.join("step-00000002/state.json").is_file());
    assert!(!ck.join("step-00000004").exists(), "crashed before step 4");
    assert!(!interrupted.out.join(WEIGHTS_FILE).exists());
    let mut resumed = evaluator_pipeline(root, &interrupted, None);
    let set = reg.enable_resume(&mut resumed);
    assert_eq!(set.len(), 1, "only the training stage resumes");
    assert!(resumed.cpu[0].settings.get("resume").is_none());
    run(&resumed, &reg, &opts).unwrap();
    common::train::assert_same_weights(&straight.out, &interrupted.out);
    // Checkpoints 4 and 6 were written after the resume; keep_last = 2.
    let left: Vec<String> = std::fs::read_dir(&ck)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(left, ["step-00000004", "step-00000006"]);
}

/// The captioner pipeline as a file, with a slow stage after training so
/// that the process can be killed in the middle of the run.
fn pipeline_file(root: &Path, vocab: &Vocab, out: &str) -> std::path::PathBuf {
    let mut s = settings(root, out, vocab, 1, 3);
    s.resume = false;
    let mut p = pipeline(root, &s, None);
    let mut delay = toml::Table::new();
    delay.insert("ms_per_batch".into(), toml::Value::Float(400.0));
    p.device.push(StageSpec::new("delay").with_settings(delay));
    let path = root.join(format!("{out}.toml"));
    std::fs::write(&path, toml::to_string(&p).unwrap()).unwrap();
    path
}

#[test]
fn train_resume_continues_a_killed_run_bit_identically() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    // The runs are child processes, but the set-up seeds this process's
    // libtorch generator, which another test's training may be drawing from.
    let vocab = {
        let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        setup(root)
    };
    let run_dir = root.join("run");
    let run_dir = run_dir.to_str().unwrap();

    let straight = pipeline_file(root, &vocab, "straight");
    let o = dicoflow(&[
        "train",
        "--pipeline",
        straight.to_str().unwrap(),
        "--quiet",
        "--run-dir",
        run_dir,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Kill the process (SIGKILL) once the step-3 checkpoint is on disk.
    let killed = pipeline_file(root, &vocab, "killed");
    let mut child = common::dicoflow_command()
        .args([
            "train",
            "--pipeline",
            killed.to_str().unwrap(),
            "--quiet",
            "--run-dir",
            run_dir,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let first = root.join("killed/checkpoints/step-00000003/state.json");
    let start = Instant::now();
    while !first.is_file() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !root.join("killed").join(WEIGHTS_FILE).exists(),
        "killed before the end (the slow stage holds each batch 0.4 s)"
    );

    let o = dicoflow(&[
        "train",
        "--pipeline",
        killed.to_str().unwrap(),
        "--quiet",
        "--run-dir",
        run_dir,
        "--resume",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("resume: stage `train_captioner` from"),
        "{stderr}"
    );
    common::train::assert_same_weights(&root.join("straight"), &root.join("killed"));

    // No checkpoint yet: a notice, then training from scratch.
    let fresh = pipeline_file(root, &vocab, "fresh");
    let o = dicoflow(&[
        "train",
        "--pipeline",
        fresh.to_str().unwrap(),
        "--quiet",
        "--run-dir",
        run_dir,
        "--resume",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("starts from scratch"), "{stderr}");
    assert!(
        stderr.contains("stopped before its first, due every 3 steps"),
        "{stderr}"
    );
    common::train::assert_same_weights(&root.join("straight"), &root.join("fresh"));

    // A pipeline with nothing to resume says so instead of ignoring the flag.
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/demo.toml");
    let o = dicoflow(&[
        "train",
        "--pipeline",
        demo.to_str().unwrap(),
        "--data",
        root.join("data/train").to_str().unwrap(),
        "--quiet",
        "--run-dir",
        run_dir,
        "--resume",
    ]);
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("no stage of this pipeline can resume"),
        "{stderr}"
    );
}

/// Rows of the img2dataset shard: 7 batches of 4 in file order (no shuffle),
/// the whole of batch [`FAILED_BATCH`] failed downloads.
const ROWS: usize = 28;
const BATCH: usize = 4;
const FAILED_BATCH: usize = 2;

/// An img2dataset shard (`key`, `png`, `caption`, `status`) of world images
/// under `root/i2d`, a word vocabulary and a random tiny CLIP. Rows of batch
/// [`FAILED_BATCH`] have status `failed_to_download` and no image.
fn setup_with_failed_batch(root: &Path) -> Vocab {
    let spec = WorldSpec::default();
    let mut keys = Vec::new();
    let mut images: Vec<Option<Vec<u8>>> = Vec::new();
    let mut captions = Vec::new();
    let mut status = Vec::new();
    for i in 0..ROWS {
        let (_, row) = dicoflow::data::world::generate_row(&spec, 0, i).unwrap();
        let failed = i / BATCH == FAILED_BATCH;
        keys.push(row.key);
        images.push((!failed).then_some(row.image));
        captions.push(row.captions[0].clone());
        status.push(if failed {
            "failed_to_download"
        } else {
            "success"
        });
    }
    std::fs::create_dir_all(root.join("i2d")).unwrap();
    common::write_columns(
        &root.join("i2d/00000.parquet"),
        vec![
            ("key", Arc::new(StringArray::from(keys)) as ArrayRef),
            (
                "png",
                Arc::new(BinaryArray::from_iter(images.iter().map(|b| b.as_deref()))),
            ),
            ("caption", Arc::new(StringArray::from(captions.clone()))),
            ("status", Arc::new(StringArray::from(status))),
        ],
        8,
    );
    let vocab = Vocab::build(&captions, 1, None);
    write_vocab_and_backbone(root, vocab)
}

/// Batch time → images trained (`train/samples`) in a run's `metrics.jsonl`,
/// for the batches at or before `until`.
fn trained_per_batch(run_dir: &Path, until: u64) -> std::collections::BTreeMap<u64, u64> {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let (Some(time), Some(n)) = (v["time"].as_u64(), v["metrics"]["train/samples"].as_f64())
        else {
            continue;
        };
        if time <= until {
            assert!(
                out.insert(time, n as u64).is_none(),
                "batch {time} logged twice"
            );
        }
    }
    out
}

/// The failed-download dataset in file order, 4 rows per batch.
fn i2d_pipeline(root: &Path, s: &CaptionerStageSettings, crash: Option<u64>) -> Pipeline {
    let mut p = pipeline(root, s, crash);
    p.source.path = Some(root.join("i2d"));
    p.source.shuffle = false;
    p.flow.batch_size = BATCH;
    p
}

#[test]
fn resume_after_a_batch_of_failed_downloads_is_bit_identical() {
    // Steps after batches 0, 1, 3, 4, 5, 6 (batch 2 is empty); the step-3
    // checkpoint comes after batch 3 — not after batch 2 (3 steps × 1).
    failed_batch_crash_and_resume(1, 3, 6, 4, 3, 3);
}

#[test]
fn resume_after_a_batch_of_failed_downloads_with_accumulation_is_bit_identical() {
    // Cycles {0, 1}, {3, 4}, {5, 6}: the step-2 checkpoint comes after batch
    // 4 — not after batch 3 (2 steps × 2) — and the crash at batch 5 is in
    // the middle of the third cycle.
    failed_batch_crash_and_resume(2, 1, 3, 5, 2, 4);
}

/// Uninterrupted run vs. a run crashing at batch `crash_at` and resumed from
/// its latest checkpoint (step `latest_step`, written after batch
/// `latest_batch`): the same final weights, and every non-empty batch trained
/// exactly once.
fn failed_batch_crash_and_resume(
    accumulate: u32,
    checkpoint_every: u64,
    total_steps: u64,
    crash_at: u64,
    latest_step: u64,
    latest_batch: u64,
) {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let vocab = setup_with_failed_batch(root);
    let reg = registry_with_crash();
    let opts = |log: &str| RunOptions {
        run_dir: Some(root.join(log)),
        ..RunOptions::threads(1)
    };
    let with_steps = |out: &str| {
        let mut s = settings(root, out, &vocab, accumulate, checkpoint_every);
        s.train.schedule.total_steps = total_steps;
        s
    };

    let straight = with_steps("straight");
    run(
        &i2d_pipeline(root, &straight, None),
        &reg,
        &opts("log-straight"),
    )
    .unwrap();

    let interrupted = with_steps("interrupted");
    let err = run(
        &i2d_pipeline(root, &interrupted, Some(crash_at)),
        &reg,
        &opts("log-crashed"),
    )
    .unwrap_err();
    assert!(matches!(err, FlowError::StagePanicked { .. }), "{err}");
    let checkpoints = Checkpointer::new(interrupted.out.join("checkpoints"), 5, None);
    let latest = checkpoints.latest().unwrap().unwrap();
    assert_eq!(latest, checkpoints.path_for(latest_step));
    let state = Checkpointer::read_state(&latest).unwrap();
    assert_eq!(state.last_batch, Some(latest_batch));
    run(
        &i2d_pipeline(root, &interrupted, None),
        &reg,
        &opts("log-resumed"),
    )
    .unwrap();
    common::train::assert_same_weights(&straight.out, &interrupted.out);

    // Direct count: every batch but the failed one trained on its 4 images,
    // once — before the checkpoint or after the resume, never both.
    let expected: std::collections::BTreeMap<u64, u64> = (0..(ROWS / BATCH) as u64)
        .filter(|&t| t != FAILED_BATCH as u64)
        .map(|t| (t, BATCH as u64))
        .collect();
    assert_eq!(
        trained_per_batch(&root.join("log-straight"), u64::MAX),
        expected
    );
    let mut pieced = trained_per_batch(&root.join("log-crashed"), latest_batch);
    let resumed = trained_per_batch(&root.join("log-resumed"), u64::MAX);
    assert!(
        resumed.keys().all(|&t| t > latest_batch),
        "the resumed run trained again on a batch the checkpoint had seen: {resumed:?}"
    );
    pieced.extend(resumed);
    assert_eq!(pieced, expected);
    assert_eq!(
        expected.values().sum::<u64>(),
        (ROWS - BATCH) as u64,
        "all rows but the failed downloads"
    );
}

#[test]
fn resume_refuses_a_checkpoint_without_its_last_batch() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let vocab = setup(root);
    let reg = registry_with_crash();
    let mut s = settings(root, "old", &vocab, 1, 3);
    s.resume = false;
    run(&pipeline(root, &s, None), &reg, &RunOptions::threads(1)).unwrap();
    // A checkpoint as written before batch times were recorded.
    let dir = Checkpointer::new(s.out.join("checkpoints"), 5, None).path_for(6);
    let state_file = dir.join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    assert_eq!(state["last_batch"], 5);
    state.as_object_mut().unwrap().remove("last_batch");
    std::fs::write(&state_file, state.to_string()).unwrap();
    s.resume = true;
    let err = run(&pipeline(root, &s, None), &reg, &RunOptions::threads(1)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("does not record the last batch") && msg.contains("without `resume`"),
        "{msg}"
    );
}

/// A checkpoint that cannot be written stops the run with an error naming
/// the stage and the batch: the optimizer step was taken, so counting the
/// batch as rejected and training on would leave a run that cannot resume
/// to what it reports.
#[test]
fn a_checkpoint_that_cannot_be_written_stops_the_run() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let vocab = setup(root);
    let reg = registry_with_crash();
    let mut s = settings(root, "blocked", &vocab, 1, 3);
    s.resume = false;
    // A file where the step-3 checkpoint's temporary directory goes.
    let ck = s.out.join("checkpoints");
    std::fs::create_dir_all(&ck).unwrap();
    std::fs::write(ck.join("step-00000003.tmp"), b"not a directory").unwrap();
    let err = run(&pipeline(root, &s, None), &reg, &RunOptions::threads(1)).unwrap_err();
    match &err {
        FlowError::StageFatal {
            stage,
            time,
            reason,
        } => {
            assert_eq!(stage, "train_captioner");
            assert_eq!(*time, 2, "the third batch makes step 3");
            assert!(reason.starts_with("checkpoint failed"), "{reason}");
        }
        other => panic!("expected a fatal stage failure, got {other}"),
    }
    assert!(!s.out.join(WEIGHTS_FILE).exists(), "no final weights");
    assert!(!ck.join("step-00000006").exists(), "stopped at step 3");
}
