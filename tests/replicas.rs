//! Training on several devices (`flow.devices = 2`, two worker threads):
//! 2 replicas × b images per batch end with the weights of 1 replica × 2b
//! images of the same samples, after XE steps and after DiCO steps, and the
//! two replicas are bit-identical to each other. A training stage that
//! cannot train replicas is refused at start, before any data is read or any
//! output written.
//!
//! Tolerance: the replicated update sums each replica's mean gradient
//! weighted by its share (n_r / N) instead of one mean over all samples, so
//! float sums run in another order (and the forward passes run on other
//! batch sizes); the weights agree to 1e-5 (parameters are O(0.1), AdamW
//! with eps 1e-3 turns relative gradient differences of ~1e-6 into weight
//! differences far below that; a replica that trained on its half alone
//! would be off by ~lr per step, 1e-3).
mod common;

use std::path::Path;

use common::clip::save_tiny_clip;
use common::train::{
    assert_same_weight_file, captioner_pipeline, max_weight_diff, one_caption_world,
    replica_train_config, run_keeping_replicas, stage_settings, train_config, world_with_vocab,
    CrashAt,
};

use dicoflow::data::world::WorldSpec;
use dicoflow::flow::{run, DeviceStage, FlowError, RunOptions, StageSpec};
use dicoflow::model::captioner::Vocab;
use dicoflow::train::captioning::Objective;
use dicoflow::train::stages::{register, CaptionerStageSettings, WEIGHTS_FILE};
use dicoflow::train::Schedule;

/// Runs take turns: libtorch's CPU thread pool is shared, and the replica
/// weights hook is process-wide.
static ONE_RUN_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Images in the training split.
const IMAGES: usize = 32;

/// The world's 32 training images, a word vocabulary and a random tiny CLIP
/// (the frozen backbone) under `root`.
fn setup(root: &Path) -> Vocab {
    let spec = WorldSpec {
        train: 32,
        val: 1,
        test: 1,
        rows_per_shard: 32,
        rows_per_row_group: 8,
        ..Default::default()
    };
    let vocab = world_with_vocab(root, &spec, 32);
    save_tiny_clip(&root.join("clip.safetensors"), 1);
    vocab
}

fn registry() -> dicoflow::flow::Registry {
    let mut reg = dicoflow::flow::Registry::with_builtins();
    register(&mut reg);
    reg
}

#[test]
fn training_stage_without_replicas_refuses_two_devices() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let vocab = setup(root);
    let schedule = Schedule {
        lr: 1e-3,
        total_steps: 2,
        ..Default::default()
    };
    let train = train_config(Objective::Xe, schedule, 2, 5);
    let s = stage_settings(root, "out", &vocab, train);
    let mut pipeline = captioner_pipeline(root, &s, vec![]);
    pipeline.flow.devices = 2;
    // A stage declared single-device (each device would write its own copy
    // of one file) is refused on two devices before anything runs.
    struct OneFile;
    impl DeviceStage for OneFile {
        fn process(
            &mut self,
            _: &mut dicoflow::flow::DeviceBatch,
        ) -> Result<(), dicoflow::flow::StageFailure> {
            Ok(())
        }
    }
    let mut reg = registry();
    reg.register_device("one_file", |_: toml::Table| {
        Ok(Box::new(OneFile) as Box<dyn DeviceStage>)
    });
    reg.declare_single_device("one_file", "each device would write its own copy");
    let mut single = pipeline;
    single.device = vec![StageSpec::new("one_file")];
    let err = run(&single, &reg, &RunOptions::threads(2)).unwrap_err();
    assert!(
        matches!(
            err,
            FlowError::Config {
                name: "flow.devices",
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("flow.devices = 1"), "{text}");
    assert!(!root.join("out").exists(), "nothing is written");
}

/// `objective` for `epochs` epochs of 4 batches (2 workers × 4 images),
/// one optimizer step per batch, AdamW with eps 1e-3 (see the module docs).
fn settings(
    root: &Path,
    out: &str,
    vocab: &Vocab,
    objective: Objective,
    steps: u64,
) -> CaptionerStageSettings {
    let train = replica_train_config(objective, steps);
    let mut s = stage_settings(root, out, vocab, train);
    if objective == Objective::Dico {
        s.init = Some(root.join("xe-b4-1").join(WEIGHTS_FILE));
        s.evaluator = Some(root.join("clip.safetensors"));
    }
    s
}

/// Trains with `s` on 2 worker threads, `batch` images per worker per batch
/// and `devices` devices; with 2, every replica also writes its weights
/// under `root/replicas-OUT/`. Returns the images each device trained on, per
/// batch and device.
fn train(
    root: &Path,
    s: &CaptionerStageSettings,
    batch: usize,
    devices: usize,
    epochs: u64,
) -> Vec<(u64, u32, f64)> {
    let mut pipeline = captioner_pipeline(root, s, vec![]);
    pipeline.flow.batch_size = batch;
    pipeline.flow.devices = devices;
    pipeline.source.epochs = epochs;
    let replicas = replica_dir(root, s);
    run_keeping_replicas(&pipeline, &registry(), (devices > 1).then_some(&*replicas))
        .reports
        .iter()
        .map(|r| {
            let n = r.metrics.get("train/samples").copied().unwrap_or(-1.0);
            (r.time, r.device, n)
        })
        .collect()
}

fn replica_dir(root: &Path, s: &CaptionerStageSettings) -> std::path::PathBuf {
    let out = s.out.file_name().unwrap().to_string_lossy().into_owned();
    root.join(format!("replicas-{out}"))
}

/// Runs `objective` with `batch` images per worker per batch on 1 and on 2
/// devices, compares, and returns what each replica trained on per batch.
fn compare(
    root: &Path,
    vocab: &Vocab,
    objective: Objective,
    batch: usize,
    epochs: u64,
) -> Vec<(u64, u32, f64)> {
    let name = format!("{objective:?}-b{batch}").to_lowercase();
    let steps = (IMAGES / (2 * batch)) as u64 * epochs;
    let one = settings(root, &format!("{name}-1"), vocab, objective, steps);
    let two = settings(root, &format!("{name}-2"), vocab, objective, steps);
    train(root, &one, batch, 1, epochs);
    let shares = train(root, &two, batch, 2, epochs);
    let w1 = one.out.join(WEIGHTS_FILE);
    let w2 = two.out.join(WEIGHTS_FILE);
    let replicas = replica_dir(root, &two);
    let (r0, r1) = (
        replicas.join("replica-0.safetensors"),
        replicas.join("replica-1.safetensors"),
    );
    assert_same_weight_file(&r0, &r1);
    assert_same_weight_file(&r0, &w2);
    let d = max_weight_diff(&w1, &w2);
    assert!(d < 1e-5, "{name}: 2 replicas differ from 1 device by {d}");
    // The comparison has something to compare: training moved the weights.
    let start = match objective {
        Objective::Xe => None,
        _ => one.init.clone(),
    };
    if let Some(start) = start {
        let moved = max_weight_diff(&start, &w1);
        assert!(moved > 1e-4, "{name} did not move the weights ({moved})");
    }
    shares
}

#[test]
fn two_replicas_take_the_steps_of_one_device_on_the_whole_batch() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let vocab = one_caption_world(root, IMAGES);
    // XE for 2 epochs (8 steps), then DiCO from the 1-device XE weights for
    // 1 epoch (4 steps).
    compare(root, &vocab, Objective::Xe, 4, 2);
    compare(root, &vocab, Objective::Dico, 4, 1);
}

#[test]
fn a_replica_without_samples_in_a_batch_takes_part_and_changes_nothing() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let vocab = one_caption_world(root, IMAGES);
    // One image per worker per batch: the two images of a batch often belong
    // to the same device, leaving the other replica with none.
    let shares = compare(root, &vocab, Objective::Xe, 1, 1);
    let empty = shares.iter().filter(|(_, _, n)| *n == 0.0).count();
    assert!(empty > 0, "no replica went without samples: {shares:?}");
    assert_eq!(
        shares.len(),
        2 * IMAGES / 2,
        "every replica reports every batch"
    );
}

/// A replicated run that crashed after batch `k` (its checkpoint at step
/// k + 1 written by replica 0, whichever replica failed first) resumes on
/// both replicas to the bit-identical weights of the uninterrupted run, for
/// every `k` of 2 epochs of 4 batches (the epoch boundary, the first and the
/// last batch included; after the last, the resumed run only writes the
/// weights).
#[test]
fn a_replicated_run_resumes_to_the_weights_of_an_uninterrupted_one_from_every_batch() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let vocab = one_caption_world(root, IMAGES);
    resume_after_each(root, &vocab, 4, &[0, 1, 2, 3, 4, 5, 6, 7], true);
}

/// The same with 5 captions per image (XE draws one per image, each replica
/// as many as its share has) and 1 image per worker per batch (shares of 0,
/// 1 or 2 images): the replicas' draws differ in number from batch to batch,
/// and a resumed run still draws what the uninterrupted one drew.
#[test]
fn a_replicated_run_with_uneven_draws_resumes_exactly() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let vocab = common::train::small_world(root, IMAGES, IMAGES);
    resume_after_each(root, &vocab, 1, &[3, 10, 21, 28], false);
}

/// Trains XE with 2 replicas for 2 epochs of `batch` images per worker per
/// batch, uninterrupted and crashed after each batch of `crashes` then
/// resumed, and checks the resumed weights against the uninterrupted ones,
/// bit for bit; with `refuse_one_device`, also that a resume on one device is
/// refused with what to do.
fn resume_after_each(
    root: &Path,
    vocab: &Vocab,
    batch: usize,
    crashes: &[u64],
    refuse_one_device: bool,
) {
    let steps = (IMAGES / (2 * batch)) as u64 * 2;
    let with = |out: &str| CaptionerStageSettings {
        checkpoint_every: 1,
        keep_last: 2,
        resume: true,
        ..settings(root, out, vocab, Objective::Xe, steps)
    };
    let mut reg = registry();
    for &k in crashes {
        reg.register_device(&format!("crash-at-{k}"), move |_: toml::Table| {
            Ok(Box::new(CrashAt(k)) as Box<dyn DeviceStage>)
        });
    }
    let pipeline = |s: &CaptionerStageSettings, crash: Option<u64>| {
        let extra = crash
            .map(|k| vec![StageSpec::new(&format!("crash-at-{k}"))])
            .unwrap_or_default();
        let mut p = captioner_pipeline(root, s, extra);
        p.flow.batch_size = batch;
        p.flow.devices = 2;
        p.source.epochs = 2;
        p
    };
    let opts = RunOptions::threads(2);
    let full = with("full");
    run(&pipeline(&full, None), &reg, &opts).unwrap();
    for &k in crashes {
        let cut = with(&format!("cut-{k}"));
        assert!(run(&pipeline(&cut, Some(k)), &reg, &opts).is_err());
        assert!(!cut.out.join(WEIGHTS_FILE).exists());
        let replicas = replica_dir(root, &cut);
        let resumed = run_keeping_replicas(&pipeline(&cut, None), &reg, Some(&replicas));
        // Nothing before the checkpoint is trained again.
        let first = resumed.reports.iter().map(|r| r.time).min();
        assert!(
            first.is_none_or(|t| t > k),
            "crash at {k}: resumed at {first:?}"
        );
        assert_same_weight_file(
            &replicas.join("replica-0.safetensors"),
            &replicas.join("replica-1.safetensors"),
        );
        let (a, b) = (full.out.join(WEIGHTS_FILE), cut.out.join(WEIGHTS_FILE));
        assert_eq!(max_weight_diff(&a, &b), 0.0, "crash after batch {k}");
    }
    if refuse_one_device {
        // On one device the updates would be summed in another order:
        // refused, with what to do.
        let mut one = pipeline(&with(&format!("cut-{}", crashes[0])), None);
        one.flow.devices = 1;
        let err = run(&one, &reg, &opts).unwrap_err().to_string();
        assert!(
            err.contains("trained on 2 device(s)") && err.contains("flow.devices = 2"),
            "{err}"
        );
    }
}
