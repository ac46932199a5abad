//! The reward cache: `cache-rewards` writes one part per shard whose rewards
//! and reference log-probs equal a direct recomputation, re-runs skip finished
//! parts and cached images, an interrupted part resumes from its chunks, a
//! cache is never mixed with one from other models, offline DiCO's first
//! step equals online DiCO's, and two devices write the one-device cache
//! (also when resuming a part left by runs on other numbers of devices).
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::clip::save_tiny_clip;
use common::train::{train_config, world_pipeline, world_with_vocab};
use dicoflow::cli::cache_rewards::{run_cache_rewards, CacheRewardsArgs};
use dicoflow::data::world::{write_world, WorldSpec};
use dicoflow::flow::{
    run, DeviceBatch, DeviceStage, Pipeline, Registry, RunOptions, StageFailure, StageSpec,
};
use dicoflow::model::captioner::{Backbone, Captioner, CaptionerConfig, Vocab};
use dicoflow::model::clip::{Clip, ClipConfig};
use dicoflow::reward::cache::{self, CacheEntry};
use dicoflow::reward::cache_run::CacheReport;
use dicoflow::reward::{ClipScorer, RewardCache, ScoreConfig};
use dicoflow::text::ClipTokenizer;
use dicoflow::train::captioning::{CaptionTrainer, Objective, ObjectiveInputs};
use dicoflow::train::offline_dico::cached_candidates;
use dicoflow::train::stages::RewardCacheSettings;
use dicoflow::train::Schedule;
use tch::nn::VarStore;
use tch::{Device, Tensor};

const K: i64 = 3;

struct World {
    _dir: tempfile::TempDir,
    root: PathBuf,
    vocab: Vocab,
}

fn captioner_config(vocab: &Vocab) -> CaptionerConfig {
    CaptionerConfig {
        feature_dim: ClipConfig::tiny().vision.width,
        ..CaptionerConfig::tiny_words(vocab.len() as i64)
    }
}

/// The world of these tests drawn with `seed`: 24 training images in 2
/// shards of 3 row groups.
fn world_spec(seed: u64) -> WorldSpec {
    WorldSpec {
        seed,
        train: 24,
        val: 1,
        test: 1,
        rows_per_shard: 12,
        rows_per_row_group: 4,
        ..Default::default()
    }
}

/// 24 training images in 2 shards, a vocabulary, a tiny CLIP (backbone and
/// evaluator) and a tiny captioner with random weights.
fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let vocab = world_with_vocab(&root, &world_spec(0), 24);
    save_tiny_clip(&root.join("clip.safetensors"), 1);
    let vs = common::with_tch_seed(2, || {
        let vs = VarStore::new(Device::Cpu);
        let _cap = Captioner::new(vs.root(), &captioner_config(&vocab)).unwrap();
        vs
    });
    vs.save(root.join("xe.safetensors")).unwrap();
    World {
        _dir: dir,
        root,
        vocab,
    }
}

fn settings(w: &World) -> RewardCacheSettings {
    RewardCacheSettings {
        captioner: captioner_config(&w.vocab),
        weights: w.root.join("xe.safetensors"),
        reference: None,
        vocab: Some(w.root.join("vocab.json")),
        backbone: w.root.join("clip.safetensors"),
        backbone_config: ClipConfig::tiny(),
        evaluator: w.root.join("clip.safetensors"),
        evaluator_config: None,
        reward: ScoreConfig::clip_s(),
        candidates: K,
        decoding: Default::default(),
        seed: 0,
        out: w.root.join("cache"),
        part: "all".into(),
        chunk_rows: 9,
        device: dicoflow::device::DeviceName::Cpu,
    }
}

fn pipeline(w: &World, device: StageSpec) -> Pipeline {
    world_pipeline(&w.root, 5, vec![device])
}

/// Write the cache pipeline to a file and run `cache-rewards` on it.
fn cache_rewards(w: &World, s: &RewardCacheSettings) -> anyhow::Result<CacheReport> {
    cache_rewards_with(w, s, None)
}

/// [`cache_rewards`] reading the shards at `data` (`--data`) instead of
/// the pipeline's, when given.
fn cache_rewards_with(
    w: &World,
    s: &RewardCacheSettings,
    data: Option<&Path>,
) -> anyhow::Result<CacheReport> {
    cache_rewards_on(w, s, data, 1, 1)
}

/// [`cache_rewards_with`] on `flow.devices = devices` and `-w workers`.
fn cache_rewards_on(
    w: &World,
    s: &RewardCacheSettings,
    data: Option<&Path>,
    devices: usize,
    workers: usize,
) -> anyhow::Result<CacheReport> {
    let mut p = pipeline(
        w,
        StageSpec::new("reward_cache").with_settings(toml::Table::try_from(s).unwrap()),
    );
    p.flow.devices = devices;
    let file = w.root.join("reward_cache.toml");
    std::fs::write(&file, toml::to_string(&p).unwrap()).unwrap();
    run_cache_rewards(&CacheRewardsArgs {
        pipeline: file,
        data: data.map(Path::to_path_buf),
        out: None,
        run_dir: w.root.join("runs"),
        workers,
        quiet: true,
    })
}

/// Every training image's preprocessed pixels, by key (through the same
/// preprocessing stage the cache run uses).
fn pixels_by_key(w: &World) -> BTreeMap<String, Tensor> {
    type Grabbed = Arc<Mutex<Vec<(String, Vec<f32>)>>>;
    struct Grab(Grabbed);
    impl DeviceStage for Grab {
        fn process(&mut self, batch: &mut DeviceBatch) -> Result<(), StageFailure> {
            let mut out = self.0.lock().unwrap();
            for s in &batch.samples {
                out.push((s.key.clone(), s.pixels.clone()));
            }
            Ok(())
        }
    }
    let seen: Grabbed = Arc::default();
    let mut reg = Registry::with_builtins();
    let grab = seen.clone();
    reg.register_device("grab", move |_: toml::Table| {
        Ok(Box::new(Grab(grab.clone())) as Box<dyn DeviceStage>)
    });
    run(
        &pipeline(w, StageSpec::new("grab")),
        &reg,
        &RunOptions::threads(1),
    )
    .unwrap();
    let seen = seen.lock().unwrap();
    seen.iter()
        .map(|(k, p)| (k.clone(), Tensor::from_slice(p).view([1, 3, 32, 32])))
        .collect()
}

fn part_entries(dir: &Path) -> Vec<(PathBuf, Vec<CacheEntry>)> {
    cache::finished_parts(dir)
        .unwrap()
        .into_iter()
        .map(|p| {
            let (_, e) = cache::read_file(&p).unwrap();
            (p, e)
        })
        .collect()
}

fn sha256sum(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

#[test]
fn parts_hold_what_a_direct_recomputation_gives_and_reruns_skip() {
    let w = world();
    let s = settings(&w);
    let report = cache_rewards(&w, &s).unwrap();
    assert_eq!(
        report,
        CacheReport {
            finished: 0,
            written: 2,
            cached_images: 0,
            scored_images: 24
        }
    );
    let parts = part_entries(&s.out);
    let names: Vec<String> = parts
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "part-synth-train-00000.parquet",
            "part-synth-train-00001.parquet"
        ]
    );
    let (prov, _) = cache::read_file(&parts[0].0).unwrap();
    assert_eq!(prov.evaluator_sha256, sha256sum(&s.evaluator));
    assert_eq!(prov.captioner_sha256, sha256sum(&s.weights));
    assert_eq!(prov.reference_sha256, sha256sum(&s.weights));

    // Recompute rewards and reference log-probs image by image.
    let pixels = pixels_by_key(&w);
    let (_vs, clip) =
        Clip::from_safetensors(&s.evaluator, &ClipConfig::tiny(), Device::Cpu).unwrap();
    let mut scorer = ClipScorer::new(
        clip,
        ClipTokenizer::openai().unwrap(),
        ScoreConfig::clip_s(),
    );
    let backbone =
        Backbone::from_clip_safetensors(&s.backbone, &ClipConfig::tiny(), Device::Cpu).unwrap();
    let mut vs = VarStore::new(Device::Cpu);
    let cap = Captioner::new(vs.root(), &s.captioner).unwrap();
    vs.load(&s.weights).unwrap();
    let mut keys_seen = 0;
    for (_, entries) in &parts {
        assert_eq!(entries.len() as i64, 12 * K);
        for image in entries.chunks(K as usize) {
            let key = &image[0].key;
            keys_seen += 1;
            let ranks: Vec<i32> = image.iter().map(|e| e.rank).collect();
            assert_eq!(ranks, [0, 1, 2], "{key}");
            assert!(image.iter().all(|e| &e.key == key));
            let px = &pixels[key];
            scorer.add_images(&[key], px).unwrap();
            for e in image {
                let ids: Vec<i64> = e.tokens.iter().map(|&t| t as i64).collect();
                assert_eq!(e.text, w.vocab.decode(&ids));
                let reward = scorer.score(&[key], &[&e.text]).unwrap()[0];
                assert!(
                    (reward - e.reward).abs() < 1e-5,
                    "{key}: {reward} vs {}",
                    e.reward
                );
                let lp = tch::no_grad(|| {
                    let mem = cap.encode(&backbone.features(px).unwrap()).unwrap();
                    let t = Tensor::from_slice(&ids).view([1, ids.len() as i64]);
                    cap.sequence_logprobs(&mem, &t).unwrap().double_value(&[0])
                });
                assert!(
                    (lp - e.ref_logprob as f64).abs() < 1e-4,
                    "{key}: {lp} vs {}",
                    e.ref_logprob
                );
            }
            scorer.clear_images();
        }
    }
    assert_eq!(keys_seen, 24);

    // A second run finds both parts finished and rewrites nothing.
    let bytes: Vec<Vec<u8>> = parts
        .iter()
        .map(|(p, _)| std::fs::read(p).unwrap())
        .collect();
    let again = cache_rewards(&w, &s).unwrap();
    assert_eq!(again.finished, 2);
    assert_eq!(again.written, 0);
    for ((p, _), b) in parts.iter().zip(&bytes) {
        assert_eq!(&std::fs::read(p).unwrap(), b, "{} rewritten", p.display());
    }
}

#[test]
fn an_interrupted_part_resumes_from_its_chunks_and_other_models_are_refused() {
    let w = world();
    let s = settings(&w);
    cache_rewards(&w, &s).unwrap();
    let parts = part_entries(&s.out);
    let (first_part, first_entries) = &parts[0];
    let (prov, _) = cache::read_file(first_part).unwrap();

    // As if the run had died after writing a chunk of the first 5 images.
    let part = "synth-train-00000";
    let done = 5 * K as usize;
    cache::write_file(
        &cache::chunk_dir(&s.out, part).join("chunk-00000.parquet"),
        &prov,
        &first_entries[..done],
    )
    .unwrap();
    std::fs::remove_file(first_part).unwrap();

    // Another evaluator with those chunks present: refused, chunk kept.
    let other = w.root.join("other-clip.safetensors");
    save_tiny_clip(&other, 9);
    let err = cache_rewards(
        &w,
        &RewardCacheSettings {
            evaluator: other,
            ..s.clone()
        },
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("different evaluator"), "{msg}");
    assert!(cache::chunk_dir(&s.out, part)
        .join("chunk-00000.parquet")
        .is_file());

    let report = cache_rewards(&w, &s).unwrap();
    assert_eq!(report.finished, 1);
    assert_eq!(report.written, 1);
    assert_eq!(report.cached_images, 5);
    assert_eq!(report.scored_images, 7);
    assert!(!cache::chunk_dir(&s.out, part).exists());
    let (_, resumed) = cache::read_file(first_part).unwrap();
    assert_eq!(resumed.len(), first_entries.len());
    for (a, b) in resumed.iter().zip(first_entries) {
        assert_eq!(
            (&a.key, a.rank, &a.tokens, &a.text),
            (&b.key, b.rank, &b.tokens, &b.text)
        );
        assert!((a.reward - b.reward).abs() < 1e-5);
        assert!((a.ref_logprob - b.ref_logprob).abs() < 1e-4);
    }
}

fn trainer(
    w: &World,
    objective: Objective,
    scorer: Option<ClipScorer>,
    reward_cache: Option<RewardCache>,
) -> CaptionTrainer {
    let backbone = Backbone::from_clip_safetensors(
        w.root.join("clip.safetensors"),
        &ClipConfig::tiny(),
        Device::Cpu,
    )
    .unwrap();
    let inputs = ObjectiveInputs {
        reward: scorer.map(Into::into),
        reward_cache,
    };
    CaptionTrainer::try_new(
        &captioner_config(&w.vocab),
        w.vocab.clone(),
        backbone,
        Some(&w.root.join("xe.safetensors")),
        inputs,
        train_config(
            objective,
            Schedule {
                lr: 1e-3,
                total_steps: 10,
                ..Default::default()
            },
            K,
            4,
        ),
        Device::Cpu,
    )
    .unwrap()
}

#[test]
fn offline_dico_first_step_equals_online_dico() {
    let w = world();
    let s = settings(&w);
    cache_rewards(&w, &s).unwrap();
    let cache = RewardCache::open(&s.out).unwrap();
    assert_eq!(cache.images(), 24);
    let pixels = pixels_by_key(&w);
    let keys: Vec<String> = pixels.keys().take(4).cloned().collect();
    let batch = Tensor::cat(&keys.iter().map(|k| &pixels[k]).collect::<Vec<_>>(), 0);

    let (_vs, clip) =
        Clip::from_safetensors(&s.evaluator, &ClipConfig::tiny(), Device::Cpu).unwrap();
    let scorer = ClipScorer::new(
        clip,
        ClipTokenizer::openai().unwrap(),
        ScoreConfig::clip_s(),
    );
    let mut online = trainer(&w, Objective::Dico, Some(scorer), None);
    let refs = vec![Vec::<String>::new(); keys.len()];
    let a = online.step(&keys, &batch, &refs).unwrap();

    // The offline objective reads the same images' candidates from the cache.
    let cands: Vec<&[CacheEntry]> = keys.iter().map(|k| cache.get(k).unwrap()).collect();
    let reopened = RewardCache::open(&s.out).unwrap();
    let mut offline = trainer(&w, Objective::DicoOffline, None, Some(reopened));
    let b = offline.step(&keys, &batch, &refs).unwrap();

    // Policy = reference at the start: Δ = 0, loss = log 2 for both.
    assert!((a.loss - std::f64::consts::LN_2).abs() < 1e-4, "{}", a.loss);
    assert!((a.loss - b.loss).abs() < 1e-5, "{} vs {}", a.loss, b.loss);
    assert!((a.grad_norm - b.grad_norm).abs() < 1e-4 * a.grad_norm.max(1.0));
    for name in ["evaluator/mean", "evaluator/winner", "rewards/margins"] {
        assert!(
            (a.extra[name] - b.extra[name]).abs() < 1e-5,
            "{name}: {} vs {}",
            a.extra[name],
            b.extra[name]
        );
    }
    assert_eq!(a.candidate_length, b.candidate_length);
    // Same gradients (still held after the step). Weights are not compared:
    // Adam's first step moves every parameter by about ±lr, so float noise in
    // a near-zero gradient can flip its direction.
    let (va, vb) = (online.policy.vs.variables(), offline.policy.vs.variables());
    for (name, t) in &va {
        let (ga, gb) = (t.grad(), vb[name].grad());
        let scale = ga.abs().max().double_value(&[]).max(1e-3);
        let diff = (&ga - &gb).abs().max().double_value(&[]);
        assert!(
            diff < 1e-3 * scale,
            "{name}: gradients differ by {diff} (scale {scale})"
        );
    }

    // A step asks for exactly `candidates` per image.
    let short: Vec<&[CacheEntry]> = cands.iter().map(|c| &c[..2]).collect();
    let tokens = offline.policy.captioner.tokens();
    let err = cached_candidates(&short, K, tokens, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 cached candidates"), "{err}");
}

#[test]
fn a_failed_batch_leaves_the_part_open_with_what_was_computed() {
    use dicoflow::data::RowAddr;
    use dicoflow::flow::Sample;
    use dicoflow::reward::cache_run::CacheStage;
    use dicoflow::train::stages::RewardCacheStage;
    let w = world();
    let s = settings(&w);
    let sample = |key: &str, size: u32| Sample {
        key: key.into(),
        captions: Vec::new(),
        addr: RowAddr {
            shard: 0,
            row_group: 0,
            row: 0,
        },
        worker: 0,
        seq: 0,
        image: Vec::new(),
        pixels: vec![0.1; (3 * size * size) as usize],
        size,
    };
    let batch = |time, samples| DeviceBatch {
        time,
        samples,
        ..Default::default()
    };
    let mut stage = RewardCacheStage::try_new(s.clone()).unwrap();
    stage
        .process(&mut batch(0, vec![sample("a", 32), sample("b", 32)]))
        .unwrap();
    // A sample preprocessed to another size: the batch cannot be computed.
    assert!(stage
        .process(&mut batch(1, vec![sample("c", 32), sample("d", 16)]))
        .is_err());
    let err = stage.finish().unwrap_err().reason;
    assert!(err.contains("run again"), "{err}");
    assert!(!cache::part_path(&s.out, "all").exists(), "part sealed");
    let kept = cache::present_keys(&s.out, "all", &s.provenance().unwrap()).unwrap();
    assert_eq!(
        kept,
        ["a", "b"].iter().map(|k| k.to_string()).collect(),
        "the computed images stay in a chunk"
    );
}

#[test]
fn duplicate_keys_and_a_cache_folder_of_other_inputs_are_refused() {
    use arrow::array::{ArrayRef, BinaryArray, StringArray};
    let w = world();
    let s = settings(&w);

    // Two img2dataset outputs whose keys both start at 000000000.
    let i2d = w.root.join("i2d");
    let mut files = Vec::new();
    for (sub, name, n) in [("laion", "00000.parquet", 3), ("cc", "00001.parquet", 2)] {
        let dir = i2d.join(sub);
        std::fs::create_dir_all(&dir).unwrap();
        let keys: Vec<String> = (0..n).map(|i| format!("{i:09}")).collect();
        let pngs: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                dicoflow::data::world::generate_row(&WorldSpec::default(), 0, i)
                    .unwrap()
                    .1
                    .image
            })
            .collect();
        let batch = arrow::record_batch::RecordBatch::try_from_iter([
            ("key", Arc::new(StringArray::from(keys)) as ArrayRef),
            (
                "jpg",
                Arc::new(BinaryArray::from_iter_values(pngs)) as ArrayRef,
            ),
            (
                "caption",
                Arc::new(StringArray::from(vec!["a red square"; n])) as ArrayRef,
            ),
        ])
        .unwrap();
        let path = dir.join(name);
        let mut wr = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&path).unwrap(),
            batch.schema(),
            None,
        )
        .unwrap();
        wr.write(&batch).unwrap();
        wr.close().unwrap();
        files.push(path);
    }
    let err = format!("{:#}", cache_rewards_with(&w, &s, Some(&i2d)).unwrap_err());
    assert!(err.contains("`000000000`"), "{err}");
    for f in &files {
        assert!(err.contains(&f.display().to_string()), "{err}");
    }
    assert!(!s.out.exists(), "refused before anything was written");

    // A cache of the world's training shards, then the same folder given
    // other shards of the same names (another world): refused, not resumed.
    cache_rewards(&w, &s).unwrap();
    let record = std::fs::read_to_string(s.out.join(cache::INPUTS_FILE)).unwrap();
    assert!(record.contains("synth-train-00001"), "{record}");
    let other = w.root.join("other");
    write_world(&other, &world_spec(1), false, |_| {}).unwrap();
    let err = format!(
        "{:#}",
        cache_rewards_with(&w, &s, Some(&other.join("train"))).unwrap_err()
    );
    assert!(
        err.contains("part `synth-train-00000`") && err.contains("differs"),
        "{err}"
    );
    // One shard of the cached dataset alone: the other part is not among the inputs.
    let err = format!(
        "{:#}",
        cache_rewards_with(
            &w,
            &s,
            Some(&w.root.join("data/train/synth-train-00000.parquet"))
        )
        .unwrap_err()
    );
    assert!(
        err.contains("part `synth-train-00001`") && err.contains("not a shard of this dataset"),
        "{err}"
    );
    // The same inputs again: resumed (everything finished).
    let report = cache_rewards(&w, &s).unwrap();
    assert_eq!((report.finished, report.written), (2, 0));
}

/// Two caches' parts hold the same candidates (keys, ranks, tokens, texts
/// exactly) with the same rewards and reference log-probs to 1e-5 relative.
/// Not bit for bit: MKL's sgemm rounds a row differently depending on how
/// many rows the call has and where the row falls, so an image's embedding
/// and log-probs change in their last bit with the batch it is computed in
/// (one device: batches of every worker's rows; two: each device's share).
/// Returns the largest difference of a reward and of a log-prob.
fn assert_same_cache(one: &Path, other: &Path) -> (f32, f32) {
    let (a, b) = (part_entries(one), part_entries(other));
    let names = |parts: &[(PathBuf, Vec<CacheEntry>)]| -> Vec<String> {
        parts
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(names(&a), names(&b));
    assert_eq!(a.len(), 2);
    let close = |x: f32, y: f32| (x - y).abs() <= 1e-5 * x.abs().max(1.0);
    let (mut reward, mut logprob) = (0f32, 0f32);
    for ((pa, ea), (pb, eb)) in a.iter().zip(&b) {
        assert_eq!(ea.len(), 12 * K as usize, "{}", pa.display());
        assert_eq!(ea.len(), eb.len(), "{}", pb.display());
        for (x, y) in ea.iter().zip(eb) {
            assert_eq!(
                (&x.key, x.rank, &x.tokens, &x.text),
                (&y.key, y.rank, &y.tokens, &y.text)
            );
            assert!(
                close(x.reward, y.reward) && close(x.ref_logprob, y.ref_logprob),
                "{} rank {}: reward {} vs {}, ref_logprob {} vs {}",
                x.key,
                x.rank,
                x.reward,
                y.reward,
                x.ref_logprob,
                y.ref_logprob
            );
            reward = reward.max((x.reward - y.reward).abs());
            logprob = logprob.max((x.ref_logprob - y.ref_logprob).abs());
        }
    }
    assert!(!std::fs::read_dir(other).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".chunks")));
    eprintln!("largest differences: reward {reward:e}, reference log-prob {logprob:e}");
    (reward, logprob)
}

/// Images each device computed, by device, from the per-shard metrics logs
/// of the last run.
fn images_by_device(w: &World) -> BTreeMap<u64, f64> {
    let mut by = BTreeMap::new();
    for shard in ["synth-train-00000", "synth-train-00001"] {
        for (d, n) in images_by_device_of(w, shard) {
            *by.entry(d).or_default() += n;
        }
    }
    by
}

#[test]
fn two_devices_write_the_one_device_cache() {
    // One device on one worker: batches of 5 images. Two devices on two
    // workers: each device gets its share of two workers' batches, so
    // every image is computed in another batch.
    let w = world();
    let one = settings(&w);
    cache_rewards(&w, &one).unwrap();
    let two = RewardCacheSettings {
        out: w.root.join("cache-2"),
        ..one.clone()
    };
    let report = cache_rewards_on(&w, &two, None, 2, 2).unwrap();
    assert_eq!(
        report,
        CacheReport {
            finished: 0,
            written: 2,
            cached_images: 0,
            scored_images: 24
        }
    );
    let by_device = images_by_device(&w);
    assert_eq!(by_device.values().sum::<f64>(), 24.0, "{by_device:?}");
    assert!(
        by_device.len() == 2 && by_device.values().all(|&n| n > 0.0),
        "both devices compute images: {by_device:?}"
    );
    assert_same_cache(&one.out, &two.out);
    // The offline reader sees the same cache.
    let (a, b) = (
        RewardCache::open(&one.out).unwrap(),
        RewardCache::open(&two.out).unwrap(),
    );
    assert_eq!(a.keys(), b.keys());
    assert_eq!(a.provenance(), b.provenance());
}

#[test]
fn a_part_interrupted_on_any_number_of_devices_resumes_on_two() {
    let w = world();
    let one = settings(&w);
    cache_rewards(&w, &one).unwrap();
    let parts = part_entries(&one.out);
    let (prov, _) = cache::read_file(&parts[0].0).unwrap();

    // A cache whose second shard is finished and whose first was left by
    // runs on 2 devices (device 1 wrote 3 images, device 0 none) and on one
    // device (2 more images, another chunk).
    let two = RewardCacheSettings {
        out: w.root.join("cache-2"),
        ..one.clone()
    };
    std::fs::create_dir_all(&two.out).unwrap();
    std::fs::copy(&parts[1].0, two.out.join(parts[1].0.file_name().unwrap())).unwrap();
    std::fs::copy(
        one.out.join(cache::INPUTS_FILE),
        two.out.join(cache::INPUTS_FILE),
    )
    .unwrap();
    let chunks = cache::chunk_dir(&two.out, "synth-train-00000");
    let first = &parts[0].1;
    let k = K as usize;
    cache::write_file(
        &chunks.join(format!("{}00000.parquet", cache::device_chunk_prefix(1, 2))),
        &prov,
        &first[..3 * k],
    )
    .unwrap();
    cache::write_file(
        &chunks.join("chunk-00000.parquet"),
        &prov,
        &first[3 * k..5 * k],
    )
    .unwrap();

    let report = cache_rewards_on(&w, &two, None, 2, 2).unwrap();
    assert_eq!(
        report,
        CacheReport {
            finished: 1,
            written: 1,
            cached_images: 5,
            scored_images: 7
        }
    );
    let by_device = images_by_device_of(&w, "synth-train-00000");
    assert_eq!(by_device.values().sum::<f64>(), 7.0, "{by_device:?}");
    assert_same_cache(&one.out, &two.out);
}

/// [`images_by_device`] for one shard.
fn images_by_device_of(w: &World, shard: &str) -> BTreeMap<u64, f64> {
    let mut by = BTreeMap::new();
    let log = w.root.join("runs").join(shard).join("metrics.jsonl");
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(n) = v["metrics"]["cache/images"].as_f64() {
            *by.entry(v["device"].as_u64().unwrap()).or_default() += n;
        }
    }
    by
}

#[test]
fn settings_several_devices_cannot_honour_are_refused_before_anything_is_written() {
    use dicoflow::train::Decoding;
    let w = world();
    // Sampled candidates depend on the batch: refused on 2 devices.
    let sampled = RewardCacheSettings {
        decoding: Decoding::Sample { temperature: 1.0 },
        ..settings(&w)
    };
    let err = format!(
        "{:#}",
        cache_rewards_on(&w, &sampled, None, 2, 2).unwrap_err()
    );
    assert!(
        err.contains("flow.devices = 2") && err.contains("beam"),
        "{err}"
    );
    assert!(!sampled.out.exists(), "refused before anything was written");
    // The stage refuses it too, in a run without cache-rewards.
    let mut p = pipeline(
        &w,
        StageSpec::new("reward_cache").with_settings(toml::Table::try_from(&sampled).unwrap()),
    );
    p.flow.devices = 2;
    let err = run(
        &p,
        &dicoflow::train::stages::registry(),
        &RunOptions::threads(2),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("beam"), "{err}");
    assert!(!sampled.out.exists(), "refused before anything was written");
    // Two devices need two worker threads.
    let s = settings(&w);
    let err = format!("{:#}", cache_rewards_on(&w, &s, None, 2, 1).unwrap_err());
    assert!(err.contains("-w 2"), "{err}");
    assert!(!s.out.exists(), "refused before anything was written");
}

/// The entries of the finished part `all` under `out`, by key and rank.
fn sorted_part(out: &Path) -> Vec<CacheEntry> {
    let mut entries: Vec<CacheEntry> = part_entries(out).into_iter().flat_map(|(_, e)| e).collect();
    entries.sort_by(|a, b| (&a.key, a.rank).cmp(&(&b.key, b.rank)));
    entries
}

/// The same rows; rewards and log-probs to float rounding (the batch a row
/// was computed in changes their last bits, docs/distributed.md).
fn assert_same_rows(got: &[CacheEntry], expected: &[CacheEntry]) {
    assert_eq!(got.len(), expected.len());
    for (x, y) in got.iter().zip(expected) {
        assert_eq!(
            (&x.key, x.rank, &x.tokens, &x.text),
            (&y.key, y.rank, &y.tokens, &y.text)
        );
        assert!((x.reward - y.reward).abs() <= 1e-5 * y.reward.abs().max(1.0));
        assert!((x.ref_logprob - y.ref_logprob).abs() <= 1e-5 * y.ref_logprob.abs().max(1.0));
    }
}

/// The cache pipeline of `one`'s settings writing to `w.root/out` on 2
/// devices, and those settings.
fn two_device_pipeline(
    w: &World,
    one: &RewardCacheSettings,
    out: &str,
) -> (Pipeline, RewardCacheSettings) {
    let two = RewardCacheSettings {
        out: w.root.join(out),
        ..one.clone()
    };
    let mut p = pipeline(
        w,
        StageSpec::new("reward_cache").with_settings(toml::Table::try_from(&two).unwrap()),
    );
    p.flow.devices = 2;
    (p, two)
}

/// A `reward_cache` pipeline on 2 devices in 2 processes (`dicoflow train`,
/// `-n 2`, 1 worker each, on loopback): each process's device writes its
/// chunks, and process 0 merges the part once the run has ended everywhere;
/// the part holds the rows of a one-device run.
#[test]
fn a_pipeline_run_on_two_processes_merges_its_part_after_the_run() {
    use common::cluster::{self, cluster_not_formed, stderr, wait_all, Proc};
    let w = world();
    let one = settings(&w);
    cache_rewards(&w, &one).unwrap();
    let expected = sorted_part(&one.out);
    let (p, two) = two_device_pipeline(&w, &one, "cache-procs");
    let file = w.root.join("procs.toml");
    std::fs::write(&file, toml::to_string(&p).unwrap()).unwrap();
    let spawn = |hostfile: &Path, process: usize| {
        let mut command = common::dicoflow_command();
        command
            .args(["train", "--quiet", "--pipeline"])
            .arg(&file)
            .arg("--run-dir")
            .arg(w.root.join(format!("run-{process}")))
            .args(cluster::cluster_args(hostfile, 2, process));
        Proc::spawn(command, &w.root, &format!("cache-p{process}"))
    };
    let mut last = String::new();
    for _attempt in 0..2 {
        let hostfile = cluster::hostfile(&w.root, 2);
        let outs = wait_all(
            vec![spawn(&hostfile, 0), spawn(&hostfile, 1)],
            std::time::Duration::from_secs(120),
        );
        last = outs.iter().map(stderr).collect::<Vec<_>>().join("\n---\n");
        if outs.iter().any(cluster_not_formed) {
            continue;
        }
        assert!(outs.iter().all(|o| o.status.success()), "{last}");
        assert!(!cache::chunk_dir(&two.out, "all").exists(), "chunks merged");
        assert_same_rows(&sorted_part(&two.out), &expected);
        return;
    }
    panic!("the 2-process run failed to connect twice:\n{last}");
}

#[test]
fn a_pipeline_run_on_two_devices_merges_its_part() {
    // Without cache-rewards (which would merge a part left open), the last
    // of the two devices to finish merges the part.
    let w = world();
    let one = settings(&w);
    cache_rewards(&w, &one).unwrap();
    let (p, two) = two_device_pipeline(&w, &one, "cache-2");
    run(
        &p,
        &dicoflow::train::stages::registry(),
        &RunOptions::threads(2),
    )
    .unwrap();
    assert!(!cache::chunk_dir(&two.out, "all").exists(), "chunks merged");
    assert_same_rows(&sorted_part(&two.out), &sorted_part(&one.out));
}
