//! The length of a run: the batch times `dicoflow::flow::length` computes
//! before any row is read are those the sources then emit (uneven row
//! groups, 1 to 3 workers, several batch sizes and epochs), and a training
//! stage without `total_steps` trains for `source.epochs`, while one whose
//! `total_steps` the epochs cannot give is refused with the epochs it needs.
mod common;

use std::path::Path;
use std::sync::Arc;

use common::train::{captioner_pipeline, stage_settings, train_config};
use dicoflow::data::writer::{ShardRow, ShardWriter, ShardWriterConfig};
use dicoflow::data::{LayoutOptions, ShardIndex};
use dicoflow::flow::length::RunLength;
use dicoflow::flow::{run, Pipeline, Registry, RunOptions, StageSpec};
use dicoflow::train::captioning::Objective;
use dicoflow::train::stages::register;
use dicoflow::train::Schedule;

/// 37 rows in row groups of 5 (the last of each shard shorter), 3 shards.
fn uneven_dataset(dir: &Path) {
    let cfg = ShardWriterConfig {
        rows_per_shard: 13,
        rows_per_row_group: 5,
        ..Default::default()
    };
    let mut w = ShardWriter::try_new(dir, "part", cfg).unwrap();
    for i in 0..37u32 {
        w.push(ShardRow {
            key: format!("k{i:03}"),
            image: common::png(4, 4, i),
            image_path: None,
            captions: vec![format!("caption {i}")],
            extra: vec![],
        })
        .unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn the_batch_count_is_the_batch_times_the_sources_emit() {
    let dir = tempfile::tempdir().unwrap();
    uneven_dataset(dir.path());
    let index = Arc::new(ShardIndex::open(dir.path(), &LayoutOptions::default()).unwrap());
    for workers in 1..=3usize {
        for batch in [1usize, 4, 7] {
            for epochs in [1u64, 3] {
                let mut p = Pipeline::default();
                p.source.path = Some(dir.path().to_path_buf());
                p.source.seed = 11;
                p.source.epochs = epochs;
                p.flow.batch_size = batch;
                p.device = vec![StageSpec::new("image_stats")];
                let opts = RunOptions {
                    keep_reports: true,
                    ..RunOptions::threads(workers)
                };
                let summary = run(&p, &Registry::with_builtins(), &opts).unwrap();
                let emitted = summary.reports.iter().map(|r| r.time + 1).max().unwrap();
                assert_eq!(summary.reports.len() as u64, emitted, "one report per time");
                let length = RunLength::new(
                    index.clone(),
                    p.source.source_config(),
                    workers as u32,
                    batch,
                );
                assert_eq!(
                    length.batches(),
                    Some(emitted),
                    "{workers} workers, batch {batch}, {epochs} epochs"
                );
                assert_eq!(length.batches_in(epochs), emitted);
                let fewest = length.epochs_for(emitted).unwrap();
                assert!(fewest <= epochs && length.batches_in(fewest) >= emitted);
                assert!(fewest == 1 || length.batches_in(fewest - 1) < emitted);
            }
        }
    }
}

/// Optimizer steps a training run took (batches with a `train/lr`).
fn steps(summary: &dicoflow::flow::run::RunSummary) -> usize {
    summary
        .reports
        .iter()
        .filter(|r| r.metrics.contains_key("train/lr"))
        .count()
}

#[test]
fn a_stage_without_total_steps_trains_for_the_epochs_and_too_many_steps_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    // 48 rows in row groups of 8: 6 batches of 8 per epoch on one worker;
    // on two, each worker reads 3 row groups, 3 batches per epoch.
    let vocab = common::train::small_world(root, 48, 48);
    let mut reg = Registry::with_builtins();
    register(&mut reg);
    let train = |out: &str, total_steps: u64| {
        let schedule = Schedule {
            lr: 1e-3,
            total_steps,
            ..Default::default()
        };
        let s = stage_settings(
            root,
            out,
            &vocab,
            train_config(Objective::Xe, schedule, 2, 5),
        );
        let mut p = captioner_pipeline(root, &s, vec![]);
        p.source.epochs = 2;
        p
    };
    let keep = |workers| RunOptions {
        keep_reports: true,
        ..RunOptions::threads(workers)
    };
    let one = run(&train("one", 0), &reg, &keep(1)).unwrap();
    assert_eq!(steps(&one), 12);
    let two = run(&train("two", 0), &reg, &keep(2)).unwrap();
    assert_eq!(steps(&two), 6);
    // 13 steps need a third epoch on one worker: refused before training.
    let err = run(&train("more", 13), &reg, &keep(1))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("total_steps = 13") && err.contains("source.epochs = 3"),
        "{err}"
    );
    assert!(!root.join("more").join("model.safetensors").exists());
}
