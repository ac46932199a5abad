//! Resume from the data cursors: a checkpoint records every source worker's
//! cursor after its last batch, and a resumed run starts each source right
//! there. Nothing before the checkpoint is emitted or decoded again (the
//! source and preprocess counters), the run ends with weights bit-identical
//! to an uninterrupted one (CPU; 1 and 2 workers), a checkpoint from another
//! worker count is refused with the counts, and one without cursors (older
//! dicoflow) falls back to reading from the start and skipping.
mod common;

use std::path::Path;

use common::train::{
    captioner_pipeline, crash_stage, registry_with_crash, stage_settings, train_config,
};
use dicoflow::flow::{run, FlowError, RunOptions, RunSummary, StageSpec};
use dicoflow::model::captioner::Vocab;
use dicoflow::train::captioning::Objective;
use dicoflow::train::stages::{CaptionerStageSettings, WEIGHTS_FILE};
use dicoflow::train::{Checkpointer, Schedule};

/// Runs take turns: libtorch's global RNG and thread pool are shared.
static ONE_RUN_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Rows of the world's train split; 8 per row group, 8 per batch and worker.
const ROWS: usize = 64;

fn setup(root: &Path) -> Vocab {
    common::train::small_world(root, ROWS, 32)
}

/// XE over one epoch (one step per batch), a checkpoint after every step.
fn settings(root: &Path, out: &str, vocab: &Vocab, steps: u64) -> CaptionerStageSettings {
    let schedule = Schedule {
        lr: 1e-3,
        warmup_fraction: 0.2,
        total_steps: steps,
        ..Default::default()
    };
    CaptionerStageSettings {
        checkpoint_every: 1,
        keep_last: 2,
        resume: true,
        ..stage_settings(
            root,
            out,
            vocab,
            train_config(Objective::Xe, schedule, 2, 5),
        )
    }
}

fn crash_at(t: u64) -> Vec<StageSpec> {
    vec![crash_stage(t)]
}

fn items(s: &RunSummary, stage: &str) -> u64 {
    s.telemetry.stage(stage).map_or(0, |s| s.items)
}

/// Train one epoch on `workers` workers straight, then again crashing right
/// after the checkpoint of the last batch but one (the crash stage runs
/// after the trainer) and resuming: the resumed run emits and decodes only the
/// last batch's rows and ends with the same weights.
fn crash_late_and_resume(workers: usize) {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let vocab = setup(root);
    let reg = registry_with_crash();
    let opts = RunOptions::threads(workers);
    let batches = (ROWS / 8 / workers) as u64;
    let last = batches - 1;

    let straight = settings(root, "straight", &vocab, batches);
    let s = run(&captioner_pipeline(root, &straight, vec![]), &reg, &opts).unwrap();
    assert_eq!(items(&s, "source"), ROWS as u64);

    let resumed = settings(root, "resumed", &vocab, batches);
    let err = run(
        &captioner_pipeline(root, &resumed, crash_at(last - 1)),
        &reg,
        &opts,
    )
    .unwrap_err();
    assert!(matches!(err, FlowError::StagePanicked { .. }), "{err}");
    let ck = Checkpointer::new(resumed.out.join("checkpoints"), 2, None);
    let state = Checkpointer::read_state(&ck.latest().unwrap().unwrap()).unwrap();
    assert_eq!(state.last_batch, Some(last - 1));
    assert_eq!(state.cursors.len(), workers);
    for c in &state.cursors {
        assert_eq!(c.num_workers as usize, workers);
        assert_eq!(c.emitted, 8 * last);
    }

    let s = run(&captioner_pipeline(root, &resumed, vec![]), &reg, &opts).unwrap();
    // Only the last batch's rows are emitted and decoded again.
    let rest = 8 * workers as u64;
    assert_eq!(items(&s, "source"), rest);
    assert_eq!(items(&s, "preprocess"), rest);
    assert_eq!(s.telemetry.samples, rest);
    common::train::assert_same_weights(&straight.out, &resumed.out);
}

#[test]
fn a_resume_late_in_the_epoch_reads_only_what_is_left_one_worker() {
    crash_late_and_resume(1);
}

#[test]
fn a_resume_late_in_the_epoch_reads_only_what_is_left_two_workers() {
    crash_late_and_resume(2);
}

#[test]
fn a_resume_with_another_worker_count_is_refused_with_both_counts() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let vocab = setup(root);
    let reg = registry_with_crash();
    let s = settings(root, "out", &vocab, 4);
    let p = captioner_pipeline(root, &s, crash_at(2));
    run(&p, &reg, &RunOptions::threads(2)).unwrap_err();
    let err = run(
        &captioner_pipeline(root, &s, vec![]),
        &reg,
        &RunOptions::threads(1),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, FlowError::Config { name: "resume", .. }),
        "{text}"
    );
    assert!(text.contains("2 source workers"), "{text}");
    assert!(text.contains("this run has 1"), "{text}");
    assert!(!s.out.join(WEIGHTS_FILE).exists());
}

#[test]
fn a_checkpoint_without_cursors_reads_from_the_start_and_skips() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let vocab = setup(root);
    let reg = registry_with_crash();
    let opts = RunOptions::threads(1);
    let straight = settings(root, "straight", &vocab, 8);
    run(&captioner_pipeline(root, &straight, vec![]), &reg, &opts).unwrap();
    let old = settings(root, "old", &vocab, 8);
    run(&captioner_pipeline(root, &old, crash_at(5)), &reg, &opts).unwrap_err();
    // As an older dicoflow wrote it: no cursors.
    let ck = Checkpointer::new(old.out.join("checkpoints"), 2, None);
    let state_file = ck.latest().unwrap().unwrap().join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    state["cursors"] = serde_json::json!([]);
    std::fs::write(&state_file, state.to_string()).unwrap();
    let s = run(&captioner_pipeline(root, &old, vec![]), &reg, &opts).unwrap();
    assert_eq!(items(&s, "source"), ROWS as u64);
    common::train::assert_same_weights(&straight.out, &old.out);
}
