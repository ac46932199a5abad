//! Helpers shared by the training tests: tiny random CLIPs, world folders
//! with a word vocabulary, the in-memory synthetic world as pixels, and the
//! tiny captioner trainer and stage settings the tests vary one field at a
//! time. Every seed is a parameter: each test keeps its own values.

use std::path::Path;

use dicoflow::data::synth::{reference_captions, render, sample_scene, WorldConfig};
use dicoflow::data::world::{generate_row, write_world, WorldSpec};
use dicoflow::flow::{
    DeviceBatch, DeviceStage, FlowConfig, Pipeline, Registry, SourceSpec, StageFailure, StageSpec,
};
use dicoflow::image::{PreprocessConfig, Preprocessor};
use dicoflow::model::captioner::{Backbone, CaptionerConfig, TokenSpec, Vocab};
use dicoflow::model::clip::{Clip, ClipConfig};
use dicoflow::reward::{ClipScorer, ScoreConfig};
use dicoflow::rng::Rng;
use dicoflow::text::ClipTokenizer;
use dicoflow::train::captioning::{CaptionTrainConfig, CaptionTrainer, Objective};
use dicoflow::train::stages::{register, CaptionerStageSettings};
use dicoflow::train::{AdamWConfig, DicoConfig, Precision, Schedule};
use tch::{Device, Tensor};

/// Writes `vocab` as `root/vocab.json`.
pub fn write_vocab(root: &Path, vocab: &Vocab) {
    std::fs::write(
        root.join("vocab.json"),
        serde_json::to_string(vocab).unwrap(),
    )
    .unwrap();
}

/// Writes the world of `spec` under `root/data` and returns the word
/// vocabulary (min count 1) of the captions of its first `train` rows,
/// saved as `root/vocab.json` too.
pub fn world_with_vocab(root: &Path, spec: &WorldSpec, train: usize) -> Vocab {
    write_world(&root.join("data"), spec, false, |_| {}).unwrap();
    let caps: Vec<String> = (0..train)
        .flat_map(|i| generate_row(spec, 0, i).unwrap().1.captions)
        .collect();
    let vocab = Vocab::build(&caps, 1, None);
    write_vocab(root, &vocab);
    vocab
}

/// Panics when it sees batch `.0`: a crash in the middle of training.
pub struct CrashAt(pub u64);

impl DeviceStage for CrashAt {
    fn process(&mut self, batch: &mut DeviceBatch) -> Result<(), StageFailure> {
        assert!(batch.time != self.0, "simulated crash");
        Ok(())
    }
}

/// The built-in stages, the training stages and `crash`: [`CrashAt`] the
/// batch of its setting `at` ([`crash_stage`]).
pub fn registry_with_crash() -> Registry {
    let mut reg = Registry::with_builtins();
    register(&mut reg);
    reg.register_device("crash", |t: toml::Table| {
        let at = t["at"].as_integer().unwrap() as u64;
        Ok(Box::new(CrashAt(at)) as Box<dyn DeviceStage>)
    });
    reg
}

/// The `crash` device stage of [`registry_with_crash`], crashing at batch `at`.
pub fn crash_stage(at: u64) -> StageSpec {
    let mut s = toml::Table::new();
    s.insert("at".into(), toml::Value::Integer(at as i64));
    StageSpec::new("crash").with_settings(s)
}

/// The captioner pipeline over `root/data/train` (source seed 3, batches
/// of 8, images preprocessed to 32 pixels): `train_captioner` with `s`,
/// then the `extra` device stages.
pub fn captioner_pipeline(
    root: &Path,
    s: &CaptionerStageSettings,
    extra: Vec<StageSpec>,
) -> Pipeline {
    let mut device =
        vec![StageSpec::new("train_captioner").with_settings(toml::Table::try_from(s).unwrap())];
    device.extend(extra);
    world_pipeline(root, 8, device)
}

/// The train split of the world under `root/data` (source seed 3), batches of
/// `batch_size`, preprocessed to 32 px, then the `device` stages.
pub fn world_pipeline(root: &Path, batch_size: usize, device: Vec<StageSpec>) -> Pipeline {
    let mut pre = toml::Table::new();
    pre.insert("size".into(), toml::Value::Integer(32));
    Pipeline {
        source: SourceSpec {
            path: Some(root.join("data/train")),
            seed: 3,
            ..Default::default()
        },
        flow: FlowConfig {
            batch_size,
            ..Default::default()
        },
        cpu: vec![StageSpec::new("preprocess").with_settings(pre)],
        device,
    }
}

/// A training configuration for tiny captioners on CPU: default AdamW,
/// gradients clipped at 1, default DiCO, temperature 1, no accumulation,
/// no label smoothing, fp32.
pub fn train_config(
    objective: Objective,
    schedule: Schedule,
    candidates: i64,
    seed: u64,
) -> CaptionTrainConfig {
    CaptionTrainConfig {
        objective,
        optimizer: AdamWConfig::default(),
        schedule,
        grad_clip: Some(1.0),
        dico: DicoConfig::default(),
        candidates,
        temperature: 1.0,
        seed,
        accumulate: 1,
        label_smoothing: 0.0,
        precision: Precision::Fp32,
    }
}

/// Captioner stage settings for a tiny word captioner on the tiny CLIP
/// backbone `root/clip.safetensors`, with vocabulary `root/vocab.json`,
/// writing to `root/out`: no evaluator, reward, init, cache, judge or
/// validation, no checkpoints, one kept, no resume.
pub fn stage_settings(
    root: &Path,
    out: &str,
    vocab: &Vocab,
    train: CaptionTrainConfig,
) -> CaptionerStageSettings {
    let clip = ClipConfig::tiny();
    CaptionerStageSettings {
        captioner: CaptionerConfig {
            feature_dim: clip.vision.width,
            ..CaptionerConfig::tiny_words(vocab.len() as i64)
        },
        train,
        vocab: Some(root.join("vocab.json")),
        backbone: root.join("clip.safetensors"),
        backbone_config: clip,
        evaluator: None,
        evaluator_config: None,
        reward: None,
        init: None,
        reward_cache: None,
        fluency_judge: None,
        fluency_every: 10,
        out: root.join(out),
        device: dicoflow::device::DeviceName::Cpu,
        checkpoint_every: 0,
        keep_last: 1,
        resume: false,
        validation: None,
    }
}

/// `n` images of the synthetic world in memory: keys `img{i}`, pixels
/// `[n, 3, 32, 32]` normalized as CLIP expects, five reference captions each.
pub struct PixelWorld {
    pub keys: Vec<String>,
    pub pixels: Tensor,
    pub refs: Vec<Vec<String>>,
}

/// The world's scenes `0..n`, image `i` drawn from `Rng::derive(seed, [i])`.
pub fn pixel_world(n: usize, seed: u64) -> PixelWorld {
    let cfg = WorldConfig::default();
    let mut pre = Preprocessor::new(PreprocessConfig {
        size: 32,
        ..Default::default()
    });
    let (mut px, mut refs, mut keys) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let mut rng = Rng::derive(seed, &[i as u64]);
        let scene = sample_scene(&mut rng, &cfg);
        let hwc = pre.resize_crop(&render(&scene, &cfg)).unwrap();
        let mut chw = Vec::new();
        pre.normalize_into(&hwc, &mut chw);
        px.extend(chw);
        refs.push(reference_captions(&scene, &mut rng, 5));
        keys.push(format!("img{i}"));
    }
    PixelWorld {
        keys,
        pixels: Tensor::from_slice(&px).view([n as i64, 3, 32, 32]),
        refs,
    }
}

/// A tiny word captioner trainer on the tiny CLIP at `clip_file` (also the
/// reward's scorer, DiCO's definition, unless `objective` is XE): 3
/// candidates, seed 1, AdamW at the constant learning rate `lr` (schedule of
/// 100 steps, no warmup) with weight decay `weight_decay`, gradients clipped at 1.
pub fn tiny_trainer(
    objective: Objective,
    vocab: &Vocab,
    clip_file: &Path,
    init: Option<&Path>,
    lr: f64,
    weight_decay: f64,
) -> CaptionTrainer {
    try_tiny_trainer(objective, vocab, clip_file, init, lr, weight_decay).unwrap()
}

/// [`tiny_trainer`], or the error `CaptionTrainer::new` returns.
pub fn try_tiny_trainer(
    objective: Objective,
    vocab: &Vocab,
    clip_file: &Path,
    init: Option<&Path>,
    lr: f64,
    weight_decay: f64,
) -> Result<CaptionTrainer, dicoflow::train::TrainError> {
    let clip_cfg = ClipConfig::tiny();
    let backbone = Backbone::from_clip_safetensors(clip_file, &clip_cfg, Device::Cpu).unwrap();
    let scorer = (objective != Objective::Xe).then(|| {
        let (_vs, clip) = Clip::from_safetensors(clip_file, &clip_cfg, Device::Cpu).unwrap();
        ClipScorer::new(
            clip,
            ClipTokenizer::openai().unwrap(),
            ScoreConfig::dico_reward(),
        )
    });
    let cap = CaptionerConfig {
        tokens: TokenSpec::words(vocab.len() as i64),
        feature_dim: clip_cfg.vision.width,
        ..CaptionerConfig::tiny_words(vocab.len() as i64)
    };
    let cfg = CaptionTrainConfig {
        optimizer: AdamWConfig {
            lr,
            weight_decay,
            ..Default::default()
        },
        ..train_config(
            objective,
            Schedule {
                lr,
                total_steps: 100,
                ..Default::default()
            },
            3,
            1,
        )
    };
    CaptionTrainer::new(
        &cap,
        vocab.clone(),
        backbone,
        init,
        scorer.map(Into::into),
        cfg,
        Device::Cpu,
    )
}

/// The world's first `rows` training images (`rows_per_shard` per shard, 8 per
/// row group, one val and one test image), a word vocabulary and a random
/// tiny CLIP (seed 1, the frozen backbone) at `root/clip.safetensors`.
pub fn small_world(root: &Path, rows: usize, rows_per_shard: usize) -> Vocab {
    let spec = WorldSpec {
        train: rows,
        val: 1,
        test: 1,
        rows_per_shard,
        rows_per_row_group: 8,
        ..Default::default()
    };
    let vocab = world_with_vocab(root, &spec, rows);
    super::clip::save_tiny_clip(&root.join("clip.safetensors"), 1);
    vocab
}

/// The tensors of a safetensors file, by name.
pub fn read_weights(path: &Path) -> std::collections::BTreeMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .collect()
}

/// Asserts that weight files `a` and `b` hold the same tensors, bit for bit.
pub fn assert_same_weight_file(a: &Path, b: &Path) {
    let (ta, tb) = (read_weights(a), read_weights(b));
    assert!(!ta.is_empty(), "{} holds no tensor", a.display());
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    for (name, t) in &ta {
        assert!(
            t.equal(&tb[name]),
            "{name} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

/// Asserts that the `model.safetensors` in folders `a` and `b` hold the same
/// tensors, bit for bit.
pub fn assert_same_weights(a: &Path, b: &Path) {
    let file = dicoflow::train::stages::WEIGHTS_FILE;
    assert_same_weight_file(&a.join(file), &b.join(file));
}

/// Largest absolute difference between two weight files with the same names.
pub fn max_weight_diff(a: &Path, b: &Path) -> f64 {
    let (a, b) = (read_weights(a), read_weights(b));
    assert!(!a.is_empty());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    a.iter()
        .map(|(name, t)| (t - &b[name]).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

/// The world's first `images` training rows with one reference caption each
/// under `root/data/train` (row groups of 8), a word vocabulary of those
/// captions (`root/vocab.json`) and a random tiny CLIP
/// (`root/clip.safetensors`, seed 1). With one caption per image, a caption
/// drawn per image from a trainer's generator cannot depend on how a batch
/// is split among replicas.
pub fn one_caption_world(root: &Path, images: usize) -> Vocab {
    let spec = WorldSpec::default();
    let cfg = dicoflow::data::ShardWriterConfig {
        rows_per_shard: images,
        rows_per_row_group: 8,
        ..Default::default()
    };
    let mut w =
        dicoflow::data::ShardWriter::try_new(&root.join("data/train"), "part", cfg).unwrap();
    let mut captions = Vec::new();
    for i in 0..images {
        let (_, mut row) = generate_row(&spec, 0, i).unwrap();
        row.captions.truncate(1);
        row.extra.clear();
        captions.push(row.captions[0].clone());
        w.push(row).unwrap();
    }
    w.finish().unwrap();
    let vocab = Vocab::build(&captions, 1, None);
    write_vocab(root, &vocab);
    super::clip::save_tiny_clip(&root.join("clip.safetensors"), 1);
    vocab
}

/// The synthetic world's colour and shape words as swap classes (hard
/// negatives: `train.hard_negatives.swap`).
pub fn world_swap_classes() -> Vec<Vec<String>> {
    [
        vec!["red", "green", "blue", "yellow", "purple|violet", "orange"],
        vec![
            "circle|ball",
            "square|box",
            "triangle",
            "diamond|rhombus",
            "cross",
        ],
    ]
    .iter()
    .map(|c| c.iter().map(|w| w.to_string()).collect())
    .collect()
}

/// A tiny captioner's `objective` training for `total_steps` steps at lr
/// 1e-3, AdamW with eps 1e-3 (replica tests: relative gradient differences
/// of float rounding stay far below their weight tolerance).
pub fn replica_train_config(objective: Objective, total_steps: u64) -> CaptionTrainConfig {
    let schedule = Schedule {
        lr: 1e-3,
        total_steps,
        ..Default::default()
    };
    CaptionTrainConfig {
        optimizer: AdamWConfig {
            lr: 1e-3,
            eps: 1e-3,
            ..Default::default()
        },
        ..train_config(objective, schedule, 2, 5)
    }
}

/// Runs `pipeline` on 2 worker threads keeping its batch reports; with
/// `replicas_dir`, every replica also writes its final weights there as
/// `replica-K.safetensors`.
pub fn run_keeping_replicas(
    pipeline: &Pipeline,
    registry: &dicoflow::flow::Registry,
    replicas_dir: Option<&Path>,
) -> dicoflow::flow::RunSummary {
    use dicoflow::train::stages::captioner::write_replica_weights_to;
    if let Some(dir) = replicas_dir {
        std::fs::create_dir_all(dir).unwrap();
    }
    write_replica_weights_to(replicas_dir.map(Path::to_path_buf));
    let opts = dicoflow::flow::RunOptions {
        keep_reports: true,
        ..dicoflow::flow::RunOptions::threads(2)
    };
    let result = dicoflow::flow::run(pipeline, registry, &opts);
    write_replica_weights_to(None);
    result.unwrap()
}
