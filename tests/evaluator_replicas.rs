//! `train_evaluator` on several devices (`flow.devices = 2`, two worker
//! threads), with negatives gathered from every replica: 2 replicas × b
//! images per batch end with the weights of 1 device × 2b images of the same
//! samples, the replicas are bit-identical, every replica logs the loss of
//! the whole batch (the one device's), a replica without samples in a
//! batch neither hangs nor changes the result, and a crashed replicated run
//! resumes to the uninterrupted one's weights.
//!
//! Tolerance: weights within 1e-5 (observed: 1.2e-7, one f32 ulp at 1).
//! The replicated gradient is the f64 sum of each replica's partial gradient
//! of the global loss, where one device lets autograd sum over every row at
//! once; the global batch's rows come in replica order instead of batch order
//! (the loss is the same function of them, its float sums run in another
//! order), and the encoders run on other batch sizes. AdamW runs with eps 1,
//! so that its update stays proportional to the gradient (a gradient off by
//! a factor, such as the mean of the replicas' gradients instead of their
//! sum, moves the weights by 7e-3 to 2e-2 away from one device's here).
//! That the loss uses every replica's negatives shows in the logged loss:
//! the whole batch's, the same bits on both replicas (`tests/evaluator_gather.rs`
//! also checks it against the loss over one replica's images alone).
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::train::{
    assert_same_weight_file, max_weight_diff, one_caption_world, read_weights,
    run_keeping_replicas, world_pipeline, world_swap_classes, CrashAt,
};
use dicoflow::flow::{run, DeviceStage, RunOptions, StageSpec};
use dicoflow::model::clip::ClipConfig;
use dicoflow::model::weights::save_safetensors;
use dicoflow::train::evaluator::{ContrastiveConfig, ContrastiveTrainer};
use dicoflow::train::hard_negatives::HardNegativesConfig;
use dicoflow::train::stages::{register, EvaluatorStage, EvaluatorStageSettings, WEIGHTS_FILE};
use dicoflow::train::{AdamWConfig, Precision, Schedule};
use tch::Device;

/// Runs take turns: libtorch's CPU thread pool is shared, and the replica
/// weights hook is process-wide.
static ONE_RUN_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Images in the training split.
const IMAGES: usize = 32;

/// The world's colour and shape words as swap classes.
pub fn world_swaps() -> HardNegativesConfig {
    HardNegativesConfig {
        per_caption: 2,
        swap: world_swap_classes(),
    }
}

/// A tiny CLIP trained for `steps` steps, AdamW with eps 1 and no clipping
/// (see the module docs), writing to `root/out`.
fn settings(root: &Path, out: &str, steps: u64, negatives: bool) -> EvaluatorStageSettings {
    let clip = ClipConfig::tiny();
    EvaluatorStageSettings {
        init: None,
        train: ContrastiveConfig {
            context_length: clip.text.context_length as usize,
            clip,
            optimizer: AdamWConfig {
                lr: 1e-2,
                eps: 1.0,
                ..Default::default()
            },
            schedule: Schedule {
                lr: 1e-2,
                total_steps: steps,
                ..Default::default()
            },
            grad_clip: None,
            seed: 4,
            accumulate: 1,
            precision: Precision::Fp32,
            hard_negatives: negatives.then(world_swaps),
            lock_image: false,
        },
        out: root.join(out),
        device: dicoflow::device::DeviceName::Cpu,
        checkpoint_every: 0,
        keep_last: 1,
        resume: false,
    }
}

fn registry() -> dicoflow::flow::Registry {
    let mut reg = dicoflow::flow::Registry::with_builtins();
    register(&mut reg);
    reg
}

fn replica_dir(s: &EvaluatorStageSettings) -> PathBuf {
    let out = s.out.file_name().unwrap().to_string_lossy().into_owned();
    s.out.parent().unwrap().join(format!("replicas-{out}"))
}

/// One batch report: time, device, samples the device had, logged loss.
type Report = (u64, u32, f64, Option<f64>);

/// Trains `s` on 2 worker threads, `batch` images per worker per batch, on
/// `devices` devices (with 2, each replica also writes its weights).
fn train(root: &Path, s: &EvaluatorStageSettings, batch: usize, devices: usize) -> Vec<Report> {
    let spec = StageSpec::new("train_evaluator").with_settings(toml::Table::try_from(s).unwrap());
    let mut pipeline = world_pipeline(root, batch, vec![spec]);
    pipeline.flow.devices = devices;
    pipeline.source.epochs = 1;
    let replicas = replica_dir(s);
    run_keeping_replicas(&pipeline, &registry(), (devices > 1).then_some(&*replicas))
        .reports
        .iter()
        .map(|r| {
            let loss = r.metrics.get("evaluator/loss").copied();
            (r.time, r.device, r.samples as f64, loss)
        })
        .collect()
}

/// Trains with `batch` images per worker per batch on 1 and on 2 devices,
/// compares weights and logged losses, and returns the 2-device reports.
fn compare(root: &Path, name: &str, batch: usize, negatives: bool) -> Vec<Report> {
    let steps = (IMAGES / (2 * batch)) as u64;
    let one = settings(root, &format!("{name}-1"), steps, negatives);
    let two = settings(root, &format!("{name}-2"), steps, negatives);
    let single = train(root, &one, batch, 1);
    let replicated = train(root, &two, batch, 2);
    let replicas = replica_dir(&two);
    let (r0, r1) = (
        replicas.join("replica-0.safetensors"),
        replicas.join("replica-1.safetensors"),
    );
    assert_same_weight_file(&r0, &r1);
    assert_same_weight_file(&r0, &two.out.join(WEIGHTS_FILE));
    assert!(
        !replicas.join("replica-2.safetensors").exists() && !one.out.join("checkpoints").exists()
    );
    let d = max_weight_diff(&one.out.join(WEIGHTS_FILE), &two.out.join(WEIGHTS_FILE));
    eprintln!("{name}: 2 replicas differ from 1 device by {d}");
    assert!(d < 1e-5, "{name}: 2 replicas differ from 1 device by {d}");
    // Every replica logs the loss of the whole batch: the same bits on both,
    // the one device's value (its weights differ from the replicas' by float
    // rounding only, so the losses agree to 1e-5).
    let by_time = |reports: &[Report]| {
        let mut m: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
        for (t, _, _, loss) in reports {
            m.entry(*t).or_default().extend(loss);
        }
        m
    };
    let (single, rep) = (by_time(&single), by_time(&replicated));
    assert_eq!(single.len(), steps as usize);
    assert_eq!(
        single.keys().collect::<Vec<_>>(),
        rep.keys().collect::<Vec<_>>()
    );
    for (t, losses) in &rep {
        assert_eq!(losses.len(), 2, "batch {t}: both replicas log a loss");
        assert_eq!(losses[0], losses[1], "batch {t}: replicas log one loss");
        let want = single[t][0];
        assert!(
            (losses[0] - want).abs() < 1e-5,
            "batch {t}: replicas' loss {} against one device's {want}",
            losses[0]
        );
    }
    // Training moved the weights far more than the tolerance.
    let start = root.join(format!("{name}-start.safetensors"));
    let init = ContrastiveTrainer::new(one.train.clone(), Device::Cpu).unwrap();
    save_safetensors(&init.vs, &start).unwrap();
    let moved = max_weight_diff(&start, &one.out.join(WEIGHTS_FILE));
    eprintln!("{name}: training moved the weights by {moved}");
    assert!(moved > 1e-3, "{name} did not move the weights ({moved})");
    replicated
}

#[test]
fn two_replicas_with_gathered_negatives_take_the_steps_of_one_device() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    one_caption_world(root, IMAGES);
    // 4 batches of 2 workers × 4 images, with 2 hard negatives per caption.
    let reports = compare(root, "negatives", 4, true);
    let shares: Vec<f64> = reports.iter().map(|r| r.2).collect();
    assert!(
        shares.iter().all(|&n| n < 8.0),
        "each replica trains on part of the batch: {shares:?}"
    );
}

#[test]
fn a_replica_without_samples_in_a_batch_takes_part_and_changes_nothing() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    one_caption_world(root, IMAGES);
    // One image per worker per batch: the two images of a batch often belong
    // to the same device, leaving the other replica with none.
    let reports = compare(root, "empty", 1, false);
    let empty = reports.iter().filter(|r| r.2 == 0.0).count();
    assert!(empty > 0, "no replica went without samples: {reports:?}");
    assert_eq!(reports.len(), IMAGES, "every replica reports every batch");
}

/// A replicated evaluator run (hard negatives on, several captions per
/// image) that crashed after batch `k` resumes on both replicas to the uninterrupted run's weights, bit for
/// bit, for every `k` of its 4 batches.
#[test]
fn a_replicated_evaluator_run_resumes_to_the_weights_of_an_uninterrupted_one() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    // 5 captions per image: each replica draws one per image of its share.
    common::train::small_world(root, IMAGES, IMAGES);
    let mut reg = registry();
    for k in 0..4u64 {
        reg.register_device(&format!("crash-at-{k}"), move |_: toml::Table| {
            Ok(Box::new(CrashAt(k)) as Box<dyn DeviceStage>)
        });
    }
    let with = |out: &str| EvaluatorStageSettings {
        checkpoint_every: 1,
        keep_last: 2,
        resume: true,
        ..settings(root, out, 4, true)
    };
    let pipeline = |s: &EvaluatorStageSettings, crash: Option<u64>| {
        let mut device = vec![
            StageSpec::new("train_evaluator").with_settings(toml::Table::try_from(s).unwrap())
        ];
        device.extend(crash.map(|k| StageSpec::new(&format!("crash-at-{k}"))));
        let mut p = world_pipeline(root, 4, device);
        p.flow.devices = 2;
        p
    };
    let opts = RunOptions::threads(2);
    let full = with("full");
    run(&pipeline(&full, None), &reg, &opts).unwrap();
    for k in 0..4u64 {
        let cut = with(&format!("cut-{k}"));
        assert!(run(&pipeline(&cut, Some(k)), &reg, &opts).is_err());
        assert!(!cut.out.join(WEIGHTS_FILE).exists());
        let replicas = replica_dir(&cut);
        run_keeping_replicas(&pipeline(&cut, None), &reg, Some(&replicas));
        assert_same_weight_file(
            &replicas.join("replica-0.safetensors"),
            &replicas.join("replica-1.safetensors"),
        );
        let d = max_weight_diff(&full.out.join(WEIGHTS_FILE), &cut.out.join(WEIGHTS_FILE));
        assert_eq!(d, 0.0, "crash after batch {k}");
    }
}

/// LiT (`train.lock_image` with `init`): the image tower ends with the
/// `init` weights bit for bit, on one device and on two replicas, while the
/// text tower and the logit scale train, and the replicas take the steps of
/// one device; a locked tower without `init`, or with an `init` trained
/// with other heads, is refused.
#[test]
fn a_locked_image_tower_keeps_its_init_weights_and_the_text_tower_trains() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    one_caption_world(root, IMAGES);
    // The starting CLIP: an unlocked run's weights.
    let start = settings(root, "start", 2, false);
    train(root, &start, 8, 1);
    let init = start.out.join(WEIGHTS_FILE);
    let locked = |out: &str| {
        let mut s = settings(root, out, 2, true);
        s.init = Some(init.clone());
        s.train.lock_image = true;
        s
    };
    let (one, two) = (locked("lit-1"), locked("lit-2"));
    train(root, &one, 8, 1);
    train(root, &two, 8, 2);
    let before = read_weights(&init);
    for s in [&one, &two] {
        let after = read_weights(&s.out.join(WEIGHTS_FILE));
        let mut text_moved: f64 = 0.0;
        for (name, t) in &before {
            if name.starts_with("visual.") {
                assert!(
                    t.equal(&after[name]),
                    "{name} changed in {}",
                    s.out.display()
                );
            } else {
                text_moved = text_moved.max((t - &after[name]).abs().max().double_value(&[]));
            }
        }
        assert!(
            before.keys().any(|n| n.starts_with("visual.")) && text_moved > 1e-3,
            "the text tower did not train in {} ({text_moved})",
            s.out.display()
        );
    }
    let d = max_weight_diff(&one.out.join(WEIGHTS_FILE), &two.out.join(WEIGHTS_FILE));
    assert!(d < 1e-5, "2 locked replicas differ from 1 device by {d}");

    let mut without_init = locked("lit-no-init");
    without_init.init = None;
    let err = EvaluatorStage::try_new(without_init)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("lock_image") && err.contains("`init`"),
        "{err}"
    );
    // An init of another config is refused, naming what differs, even where
    // every weight's shape is the same (heads): the run writes its config
    // beside its weights.
    let mut other = locked("lit-other");
    other.train.clip.vision.heads = 1;
    let err = EvaluatorStage::try_new(other).err().unwrap().to_string();
    assert!(
        err.contains("`init`") && err.contains("vision.heads is 4 there and 1 in `train.clip`"),
        "{err}"
    );
}
