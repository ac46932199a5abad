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
//!     cargo run --release --example bench_models

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
