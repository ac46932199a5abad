//! Stop when done: once every training stage has taken its `total_steps`, the
//! sources stop reading, so the rest of the epoch is neither read nor
//! decoded; the stage still writes its weights and the run succeeds.
mod common;

use common::train::{captioner_pipeline, stage_settings, train_config};
use dicoflow::flow::{run, Registry, RunOptions, StageSpec};
use dicoflow::train::captioning::Objective;
use dicoflow::train::stages::{register, WEIGHTS_FILE};
use dicoflow::train::Schedule;

const ROWS: usize = 96;

#[test]
fn the_sources_stop_once_the_trainer_has_taken_its_steps() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let vocab = common::train::small_world(root, ROWS, 32);
    let schedule = Schedule {
        lr: 1e-3,
        total_steps: 2,
        ..Default::default()
    };
    let s = stage_settings(
        root,
        "out",
        &vocab,
        train_config(Objective::Xe, schedule, 2, 5),
    );
    let mut reg = Registry::with_builtins();
    register(&mut reg);
    let mut p = captioner_pipeline(root, &s, vec![]);
    p.flow.max_in_flight = 2;
    let summary = run(&p, &reg, &RunOptions::threads(1)).unwrap();
    assert!(s.out.join(WEIGHTS_FILE).exists());
    let read = summary.telemetry.stage("source").unwrap().items;
    let decoded = summary.telemetry.stage("preprocess").unwrap().items;
    // Two steps are batches 0 and 1; flow control lets the source run at
    // most K = 2 batches ahead of the last finished one, and a batch or two
    // may be opened while the stop flag is raised: far from the 12 batches
    // of the epoch.
    assert!((16..=6 * 8).contains(&read), "read {read} rows of {ROWS}");
    assert!(decoded <= read);

    // A stage that is never done (here `image_stats` beside the trainer)
    // keeps the sources reading to the end.
    let mut p = captioner_pipeline(
        root,
        &stage_settings(
            root,
            "out2",
            &vocab,
            train_config(Objective::Xe, schedule, 2, 5),
        ),
        vec![StageSpec::new("image_stats")],
    );
    p.flow.max_in_flight = 2;
    let summary = run(&p, &reg, &RunOptions::threads(1)).unwrap();
    assert_eq!(
        summary.telemetry.stage("source").unwrap().items,
        ROWS as u64
    );
}
