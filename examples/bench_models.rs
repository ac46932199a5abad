//! Decoding and scoring throughput on the CPU.
//!
//! 1. Greedy decoding of a small random captioner for exactly `max_len` steps, with the
//!    incremental key/value cache (one position per step) and without it (the whole
//!    prefix recomputed every step); plus beam search (k = 5) through the library.
//! 2. CLIP-S of (image, caption) pairs with a tiny random CLIP (`ClipConfig::tiny`):
//!    images and captions encoded, 5 captions per image, each image encoded once.
//!    Images are random pixel tensors (decoding and resizing are not measured).
//!    The Python reference is examples/bench_models_python.py (open_clip).
//!
//! 3. `dico-step` (only this case): online DiCO steps on the demo's model sizes
//!    (`cli/demo.rs`: CLIP 32 px, patch 4, width 64, 2 layers as backbone and
//!    evaluator; captioner d 128, 4 heads, ffn 256, 2 + 2 layers, word vocabulary
//!    of the synthetic world; 8 images, 5 beams, fp32), random weights, images of the
//!    synthetic world. As the `train_captioner` stage does it: one backbone forward,
//!    the step on its features (beam search, rewards, reference and policy log-probs,
//!    update), the greedy fluency captions from the same features. Prints the median
//!    wall time of a step (backbone forward included), of the fluency captions, and
//!    of one backbone forward alone.
//!
//! Commands:
//!
//!     cargo run --release --example bench_models
//!     cargo run --release --example bench_models -- dico-step

use std::time::Instant;

use dicoflow::model::captioner::{Captioner, CaptionerConfig};
use dicoflow::model::clip::{Clip, ClipConfig};
use dicoflow::model::decode::{self, BeamOptions};
use dicoflow::reward::{ClipScorer, ScoreConfig};
use dicoflow::text::ClipTokenizer;
use tch::{nn, Device, Kind, Tensor};

const IMAGES: i64 = 16;
const STEPS: i64 = 30;

fn decode_steps(model: &Captioner, memory: &Tensor, cached: bool) -> Tensor {
    let bos = model.tokens().bos;
    tch::no_grad(|| {
        let mut ids = Tensor::full([IMAGES, 1], bos, (Kind::Int64, Device::Cpu));
        let mut cache = model.start(memory, 1).unwrap();
        for _ in 0..STEPS {
            let logits = if cached {
                let last = ids.narrow(1, ids.size()[1] - 1, 1);
                model.step(&last, &mut cache).unwrap().select(1, 0)
            } else {
                let full = model.logits(memory, &ids).unwrap();
                full.select(1, full.size()[1] - 1)
            };
            let next = logits.argmax(-1, false).unsqueeze(1);
            ids = Tensor::cat(&[ids, next], 1);
        }
        ids
    })
}

fn time<T>(reps: u32, mut f: impl FnMut() -> T) -> f64 {
    f(); // warm-up
    let start = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(f());
    }
    start.elapsed().as_secs_f64() / reps as f64
}

fn main() {
    println!("torch threads: {}", tch::get_num_threads());
    if std::env::args().nth(1).as_deref() == Some("dico-step") {
        dico_step();
        return;
    }
    // A small captioner: d 256, 4 heads, ffn 1024, 3 + 3 layers, 10 000 words,
    // 50 feature tokens of width 768.
    let vs = nn::VarStore::new(Device::Cpu);
    let mut cfg = CaptionerConfig::tiny_words(10_000);
    cfg.feature_dim = 768;
    cfg.d_model = 256;
    cfg.heads = 4;
    cfg.ffn = 1024;
    cfg.encoder_layers = 3;
    cfg.decoder_layers = 3;
    cfg.max_len = STEPS + 1;
    let model = Captioner::new(vs.root(), &cfg).unwrap();
    let features = Tensor::randn([IMAGES, 50, 768], (Kind::Float, Device::Cpu));
    let memory = tch::no_grad(|| model.encode(&features).unwrap());
    assert!(decode_steps(&model, &memory, true).equal(&decode_steps(&model, &memory, false)));
    let tokens = (IMAGES * STEPS) as f64;
    let with_cache = time(5, || decode_steps(&model, &memory, true));
    let without = time(5, || decode_steps(&model, &memory, false));
    println!(
        "greedy, {IMAGES} images x {STEPS} steps: with KV cache {:.0} tokens/s, without {:.0} tokens/s ({:.1}x)",
        tokens / with_cache,
        tokens / without,
        without / with_cache
    );
    let opts = BeamOptions {
        max_len: Some(STEPS),
        ..Default::default()
    };
    let beam = time(3, || decode::beam_search(&model, &memory, &opts).unwrap());
    println!(
        "beam search k=5, {IMAGES} images, max {STEPS}: {:.1} images/s",
        IMAGES as f64 / beam
    );

    // Scoring.
    let vs = nn::VarStore::new(Device::Cpu);
    let clip = Clip::new(vs.root(), &ClipConfig::tiny()).unwrap();
    let mut scorer = ClipScorer::new(
        clip,
        ClipTokenizer::openai().unwrap(),
        ScoreConfig::clip_s(),
    );
    let n_images = 256usize;
    let per_image = 5usize;
    let images = Tensor::randn([n_images as i64, 3, 32, 32], (Kind::Float, Device::Cpu));
    let keys: Vec<String> = (0..n_images).map(|i| i.to_string()).collect();
    let words = [
        "red", "blue", "circle", "square", "left", "of", "a", "big", "small", "green",
    ];
    let mut pair_keys = Vec::new();
    let mut captions = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        for j in 0..per_image {
            pair_keys.push(k.clone());
            let c: Vec<&str> = (0..8)
                .map(|w| words[(i * 7 + j * 3 + w * 5) % words.len()])
                .collect();
            captions.push(c.join(" "));
        }
    }
    let pairs = (n_images * per_image) as f64;
    let secs = time(3, || {
        scorer.clear_images();
        scorer.add_images(&keys, &images).unwrap();
        scorer.score(&pair_keys, &captions).unwrap()
    });
    println!(
        "CLIP-S tiny CLIP, {n_images} images x {per_image} captions: {:.0} pairs/s",
        pairs / secs
    );
}

/// The demo's CLIP (`cli/demo.rs`'s `clip_config`).
fn demo_clip() -> ClipConfig {
    let mut cfg = ClipConfig::tiny();
    cfg.embed_dim = 64;
    cfg.vision.image_size = 32;
    cfg.vision.patch_size = 4;
    cfg.vision.width = 64;
    cfg.vision.layers = 2;
    cfg.vision.heads = 4;
    cfg.vision.mlp_ratio = 4.0;
    cfg.text.context_length = 32;
    cfg.text.width = 64;
    cfg.text.layers = 2;
    cfg.text.heads = 4;
    cfg.text.mlp_ratio = 4.0;
    cfg.quick_gelu = true;
    cfg
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Online DiCO steps on the demo's model sizes (see the module doc, case 3).
fn dico_step() {
    use dicoflow::data::synth::{reference_captions, render, sample_scene, WorldConfig};
    use dicoflow::image::{PreprocessConfig, Preprocessor};
    use dicoflow::model::captioner::{Backbone, TokenSpec, Vocab};
    use dicoflow::rng::Rng;
    use dicoflow::train::captioning::{CaptionTrainConfig, CaptionTrainer, Objective};
    use dicoflow::train::{AdamWConfig, Decay, DicoConfig, Precision, Schedule};

    const BATCH: usize = 8;
    const WARMUP: usize = 3;
    const MEASURED: usize = 21;
    let dir = tempfile::tempdir().unwrap();
    let clip_cfg = demo_clip();
    // Images and captions of the synthetic world, as the demo trains on.
    let world = WorldConfig::default();
    let mut pre = Preprocessor::new(PreprocessConfig {
        size: 32,
        ..Default::default()
    });
    let n = BATCH * (WARMUP + MEASURED);
    let (mut pixels, mut refs, mut keys) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let mut rng = Rng::derive(11, &[i as u64]);
        let scene = sample_scene(&mut rng, &world);
        let hwc = pre.resize_crop(&render(&scene, &world)).unwrap();
        let mut chw = Vec::new();
        pre.normalize_into(&hwc, &mut chw);
        pixels.extend(chw);
        refs.push(reference_captions(&scene, &mut rng, 5));
        keys.push(format!("img{i}"));
    }
    let pixels = Tensor::from_slice(&pixels).view([n as i64, 3, 32, 32]);
    let all: Vec<&String> = refs.iter().flatten().collect();
    let vocab = Vocab::build(&all, 1, None);

    // Random CLIP (backbone and evaluator) and XE-like starting captioner.
    tch::manual_seed(5);
    let clip_path = dir.path().join("clip.safetensors");
    let vs = nn::VarStore::new(Device::Cpu);
    Clip::new(vs.root(), &clip_cfg).unwrap();
    dicoflow::model::weights::save_safetensors(&vs, &clip_path).unwrap();
    let cap = CaptionerConfig {
        backbone: None,
        feature_dim: 64,
        d_model: 128,
        heads: 4,
        ffn: 256,
        encoder_layers: 2,
        decoder_layers: 2,
        tokens: TokenSpec::words(vocab.len() as i64),
        max_len: 30,
    };
    let init = dir.path().join("init.safetensors");
    let vs = nn::VarStore::new(Device::Cpu);
    Captioner::new(vs.root(), &cap).unwrap();
    vs.save(&init).unwrap();

    let backbone = Backbone::from_clip_safetensors(&clip_path, &clip_cfg, Device::Cpu).unwrap();
    let (_vs, evaluator) = Clip::from_safetensors(&clip_path, &clip_cfg, Device::Cpu).unwrap();
    let scorer = ClipScorer::new(
        evaluator,
        ClipTokenizer::openai().unwrap(),
        ScoreConfig::dico_reward(),
    );
    let cfg = CaptionTrainConfig {
        objective: Objective::Dico,
        optimizer: AdamWConfig {
            lr: 1e-6,
            weight_decay: 0.0,
            ..Default::default()
        },
        schedule: Schedule {
            lr: 1e-6,
            warmup_fraction: 0.0,
            total_steps: 1000,
            decay: Decay::Constant,
        },
        grad_clip: Some(1.0),
        dico: DicoConfig::default(),
        candidates: 5,
        temperature: 1.0,
        seed: 7,
        accumulate: 1,
        label_smoothing: 0.0,
        precision: Precision::Fp32,
    };
    let mut trainer = CaptionTrainer::new(
        &cap,
        vocab,
        backbone,
        Some(&init),
        Some(scorer.into()),
        cfg,
        Device::Cpu,
    )
    .unwrap();
    // As the `train_captioner` stage does it: the backbone's features once,
    // the step on them, the fluency captions from the same features.
    let (mut steps, mut fluency, mut backbone) = (Vec::new(), Vec::new(), Vec::new());
    for s in 0..WARMUP + MEASURED {
        let range = s * BATCH..(s + 1) * BATCH;
        let batch = pixels.narrow(0, range.start as i64, BATCH as i64);
        let start = Instant::now();
        let features = trainer.policy.features(&batch).unwrap();
        let forward = start.elapsed().as_secs_f64();
        let stats = trainer
            .step_on_features(&keys[range.clone()], &batch, &features, &refs[range])
            .unwrap();
        let step = start.elapsed().as_secs_f64();
        let start = Instant::now();
        std::hint::black_box(trainer.policy.caption_features(&features).unwrap());
        let greedy = start.elapsed().as_secs_f64();
        if let Some(reward) = trainer.reward_mut() {
            reward.clear_images();
        }
        assert!(stats.loss.is_finite());
        if s >= WARMUP {
            steps.push(step * 1e3);
            fluency.push(greedy * 1e3);
            backbone.push(forward * 1e3);
        }
    }
    assert_eq!(trainer.backbone_forwards(), WARMUP + MEASURED);
    println!(
        "online DiCO step, demo models, {BATCH} images x 5 beams: median {:.1} ms \
         (min {:.1}, max {:.1}, {MEASURED} steps); fluency greedy captions: median {:.1} ms; \
         one backbone forward: median {:.2} ms",
        median(steps.clone()),
        steps.iter().cloned().fold(f64::INFINITY, f64::min),
        steps.iter().cloned().fold(0.0, f64::max),
        median(fluency),
        median(backbone)
    );
}
