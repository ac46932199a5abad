//! The frozen vision backbone runs once per training batch: an online DiCO
//! step's policy memory, its reference log-probs and the fluency captions of
//! the same batch all read one set of backbone features (as the official DiCO
//! trainer does). Before, the stage ran the backbone three times per logged
//! step. Self-contained: a tiny random CLIP (backbone and evaluator), a random
//! "XE" captioner as DiCO's start and reference, images of the synthetic world.

use dicoflow::data::synth::{reference_captions, render, sample_scene, WorldConfig};
use dicoflow::data::RowAddr;
use dicoflow::flow::{DeviceBatch, DeviceStage, Sample};
use dicoflow::image::{PreprocessConfig, Preprocessor};
use dicoflow::model::captioner::{Captioner, CaptionerConfig, Vocab};
use dicoflow::model::clip::{Clip, ClipConfig};
use dicoflow::rng::{with_torch_seed, Rng};
use dicoflow::train::captioning::{CaptionTrainConfig, Objective};
use dicoflow::train::fluency::FluencyJudge;
use dicoflow::train::stages::{CaptionerStage, CaptionerStageSettings};
use dicoflow::train::{AdamWConfig, DicoConfig, Precision, Schedule};
use tch::nn::VarStore;
use tch::Device;

/// Samples `first..first + n` of the synthetic world, preprocessed to 32 px.
fn samples(first: usize, n: usize) -> Vec<Sample> {
    let world = WorldConfig::default();
    let mut pre = Preprocessor::new(PreprocessConfig {
        size: 32,
        ..Default::default()
    });
    (first..first + n)
        .map(|i| {
            let mut rng = Rng::derive(21, &[i as u64]);
            let scene = sample_scene(&mut rng, &world);
            let hwc = pre.resize_crop(&render(&scene, &world)).unwrap();
            let mut pixels = Vec::new();
            pre.normalize_into(&hwc, &mut pixels);
            Sample {
                key: format!("img{i}"),
                captions: reference_captions(&scene, &mut rng, 5),
                addr: RowAddr {
                    shard: 0,
                    row_group: 0,
                    row: i as u32,
                },
                worker: 0,
                seq: i as u64,
                image: Vec::new(),
                pixels,
                size: 32,
            }
        })
        .collect()
}

#[test]
fn an_online_dico_step_with_fluency_runs_the_backbone_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let clip_cfg = ClipConfig::tiny();
    let clip_path = root.join("clip.safetensors");
    with_torch_seed(4, || {
        let vs = VarStore::new(Device::Cpu);
        Clip::new(vs.root(), &clip_cfg).unwrap();
        dicoflow::model::weights::save_safetensors(&vs, &clip_path).unwrap();
    });
    let batches: Vec<Vec<Sample>> = (0..3).map(|b| samples(4 * b, 4)).collect();
    let all: Vec<String> = batches
        .iter()
        .flatten()
        .flat_map(|s| s.captions.clone())
        .collect();
    let vocab = Vocab::build(&all, 1, None);
    std::fs::write(
        root.join("vocab.json"),
        serde_json::to_string(&vocab).unwrap(),
    )
    .unwrap();
    let captioner = CaptionerConfig {
        feature_dim: clip_cfg.vision.width,
        ..CaptionerConfig::tiny_words(vocab.len() as i64)
    };
    let init = root.join("xe.safetensors");
    with_torch_seed(5, || {
        let vs = VarStore::new(Device::Cpu);
        Captioner::new(vs.root(), &captioner).unwrap();
        vs.save(&init).unwrap();
    });
    let settings = CaptionerStageSettings {
        captioner,
        train: CaptionTrainConfig {
            objective: Objective::Dico,
            optimizer: AdamWConfig::default(),
            schedule: Schedule {
                lr: 1e-4,
                total_steps: 10,
                ..Default::default()
            },
            grad_clip: Some(1.0),
            dico: DicoConfig::default(),
            candidates: 3,
            temperature: 1.0,
            seed: 1,
            accumulate: 1,
            label_smoothing: 0.0,
            precision: Precision::Fp32,
        },
        vocab: Some(root.join("vocab.json")),
        backbone: clip_path.clone(),
        backbone_config: clip_cfg,
        evaluator: Some(clip_path),
        evaluator_config: None,
        reward: None,
        init: Some(init),
        reward_cache: None,
        // Fluency captions on every step: the most backbone work a step asks for.
        fluency_judge: Some(FluencyJudge::SyntheticWorld),
        fluency_every: 1,
        out: root.join("out"),
        device: dicoflow::device::DeviceName::Cpu,
        checkpoint_every: 0,
        keep_last: 1,
        resume: false,
        validation: None,
    };
    let mut stage = CaptionerStage::try_new(settings).unwrap();
    assert_eq!(stage.trainer().backbone_forwards(), 0);
    for (t, samples) in batches.into_iter().enumerate() {
        let mut batch = DeviceBatch {
            time: t as u64,
            samples,
            ..Default::default()
        };
        stage.process(&mut batch).unwrap();
        assert!(
            batch.metrics.contains_key("fluency/grammatical"),
            "fluency is logged on every step here: {:?}",
            batch.metrics.keys().collect::<Vec<_>>()
        );
        assert!(batch.metrics.contains_key("rewards/margins"));
        assert_eq!(
            stage.trainer().backbone_forwards(),
            t + 1,
            "backbone forward passes after {} DiCO steps with fluency captions",
            t + 1
        );
    }
}
