//! A training run stopped by a failure resumes from its latest checkpoint and
//! ends with weights bit-identical to an uninterrupted run (CPU).
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
use dicoflow::train::{AdamWConfig, DicoConfig, Schedule};
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

fn settings(root: &Path, out: &str, vocab: &Vocab) -> CaptionerStageSettings {
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
                total_steps: 6,
                ..Default::default()
            },
            grad_clip: Some(1.0),
            dico: DicoConfig::default(),
            candidates: 2,
            temperature: 1.0,
            seed: 5,
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
        checkpoint_every: 3,
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

#[test]
fn resumed_training_is_bit_identical() {
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
    let straight = settings(root, "straight", &vocab);
    run(&pipeline(root, &straight, false), &reg, &opts).unwrap();

    // Crash while at batch 4 (checkpoint at step 3 written), then resume.
    let interrupted = settings(root, "interrupted", &vocab);
    let err = run(&pipeline(root, &interrupted, true), &reg, &opts).unwrap_err();
    assert!(matches!(err, FlowError::StagePanicked { .. }), "{err}");
    assert!(
        !interrupted.out.join(WEIGHTS_FILE).exists(),
        "no final weights after a crash"
    );
    assert!(interrupted
        .out
        .join("checkpoints/step-00000003/state.json")
        .is_file());
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
