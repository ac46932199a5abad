//! A training run stopped by a failure resumes from its latest checkpoint and
//! ends with weights bit-identical to an uninterrupted run (CPU), also when
//! optimizer steps accumulate several batches and the crash comes mid-cycle.
use std::path::Path;

use dicoflow::data::world::{write_world, WorldSpec};
use dicoflow::flow::{
    run, DeviceBatch, DeviceStage, FlowConfig, FlowError, Pipeline, RunOptions, SourceSpec,
    StageFailure, StageSpec,
};
use dicoflow::model::captioner::{CaptionerConfig, Vocab};
use dicoflow::model::clip::{Clip, ClipConfig};
use dicoflow::train::captioning::{CaptionTrainConfig, Objective};
use dicoflow::train::stages::{register, CaptionerStageSettings, WEIGHTS_FILE};
use dicoflow::train::{AdamWConfig, Checkpointer, DicoConfig, Precision, Schedule};
use tch::nn::VarStore;
use tch::{Device, Tensor};

/// Panics when it sees batch `at`: a crash in the middle of training.
struct CrashAt(u64);

impl DeviceStage for CrashAt {
    fn process(&mut self, batch: &mut DeviceBatch) -> Result<(), StageFailure> {
        assert!(batch.time != self.0, "simulated crash");
        Ok(())
    }
}

/// A run over 6 batches: `accumulate` batches per optimizer step, a
/// checkpoint every `checkpoint_every` steps.
fn settings(
    root: &Path,
    out: &str,
    vocab: &Vocab,
    accumulate: u32,
    checkpoint_every: u64,
) -> CaptionerStageSettings {
    let clip = ClipConfig::tiny();
    CaptionerStageSettings {
        captioner: CaptionerConfig {
            feature_dim: clip.vision.width,
            ..CaptionerConfig::tiny_words(vocab.len() as i64)
        },
        train: CaptionTrainConfig {
            objective: Objective::Xe,
            optimizer: AdamWConfig::default(),
            schedule: Schedule {
                lr: 1e-3,
                warmup_fraction: 0.2,
                total_steps: 6 / accumulate as u64,
                ..Default::default()
            },
            grad_clip: Some(1.0),
            dico: DicoConfig::default(),
            candidates: 2,
            temperature: 1.0,
            seed: 5,
            accumulate,
            label_smoothing: 0.0,
            precision: Precision::Fp32,
        },
        vocab: Some(root.join("vocab.json")),
        backbone: root.join("clip.safetensors"),
        backbone_config: clip,
        evaluator: None,
        evaluator_config: None,
        reward: None,
        init: None,
        reward_cache: None,
        out: root.join(out),
        device: "cpu".into(),
        checkpoint_every,
        keep_last: 5,
        resume: true,
    }
}

fn pipeline(root: &Path, s: &CaptionerStageSettings, crash: bool) -> Pipeline {
    let mut pre = toml::Table::new();
    pre.insert("size".into(), toml::Value::Integer(32));
    let mut device =
        vec![StageSpec::new("train_captioner").with_settings(toml::Table::try_from(s).unwrap())];
    if crash {
        device.push(StageSpec::new("crash"));
    }
    Pipeline {
        source: SourceSpec {
            path: Some(root.join("data/train")),
            seed: 3,
            ..Default::default()
        },
        flow: FlowConfig {
            batch_size: 8,
            ..Default::default()
        },
        cpu: vec![StageSpec::new("preprocess").with_settings(pre)],
        device,
    }
}

/// The tests of this file run one at a time: two trainings sharing libtorch's
/// CPU thread pool split their reductions differently, so floating-point sums
/// (and with them the bit-identity this file checks) would depend on timing.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn resumed_training_is_bit_identical() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Crash while at batch 4: the checkpoint of step 3 (after batch 2) is the latest.
    crash_at_batch_4_and_resume(1, 3, 3);
}

#[test]
fn resumed_accumulating_training_is_bit_identical() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Steps of 2 batches: checkpoints after batches 1 and 3 (steps 1, 2); the
    // crash at batch 4 comes after its gradients were accumulated, which the
    // resumed run must recompute rather than lose or count twice.
    crash_at_batch_4_and_resume(2, 1, 2);
}

fn crash_at_batch_4_and_resume(accumulate: u32, checkpoint_every: u64, latest_step: u64) {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let spec = WorldSpec {
        train: 48,
        val: 1,
        test: 1,
        rows_per_shard: 48,
        rows_per_row_group: 8,
        ..Default::default()
    };
    write_world(&root.join("data"), &spec, false, |_| {}).unwrap();
    let caps: Vec<String> = (0..48)
        .flat_map(|i| {
            dicoflow::data::world::generate_row(&spec, 0, i)
                .unwrap()
                .1
                .captions
        })
        .collect();
    let vocab = Vocab::build(&caps, 1, None);
    std::fs::write(
        root.join("vocab.json"),
        serde_json::to_string(&vocab).unwrap(),
    )
    .unwrap();
    tch::manual_seed(1);
    let vs = VarStore::new(Device::Cpu);
    let _clip = Clip::new(vs.root(), &ClipConfig::tiny()).unwrap();
    vs.save(root.join("clip.safetensors")).unwrap();

    let mut reg = dicoflow::flow::Registry::with_builtins();
    register(&mut reg);
    reg.register_device("crash", |_: toml::Table| {
        Ok(Box::new(CrashAt(4)) as Box<dyn DeviceStage>)
    });
    let opts = RunOptions::threads(1);

    // Uninterrupted.
    let straight = settings(root, "straight", &vocab, accumulate, checkpoint_every);
    run(&pipeline(root, &straight, false), &reg, &opts).unwrap();

    let interrupted = settings(root, "interrupted", &vocab, accumulate, checkpoint_every);
    let err = run(&pipeline(root, &interrupted, true), &reg, &opts).unwrap_err();
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
    run(&pipeline(root, &interrupted, false), &reg, &opts).unwrap();

    let read = |p: &Path| -> std::collections::BTreeMap<String, Tensor> {
        Tensor::read_safetensors(p.join(WEIGHTS_FILE))
            .unwrap()
            .into_iter()
            .collect()
    };
    let (a, b) = (read(&straight.out), read(&interrupted.out));
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na} differs after resume");
    }
}
