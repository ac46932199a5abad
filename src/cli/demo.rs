//! `dicoflow demo`: the main job on the embedded synthetic world, every phase a
//! run of the dataflow (shard source → preprocess on every worker → a training
//! or captioning device stage):
//!
//! 1. generate the world (once);
//! 2. train a small CLIP evaluator contrastively;
//! 3. XE-pretrain a captioner over the evaluator's frozen vision tower;
//! 4. fine-tune it with DiCO and, for comparison, with SCST on the same reward;
//! 5. cache the XE model's candidates, rewards and reference log-probs
//!    (`cache-rewards`) and fine-tune with offline DiCO from the cache;
//! 6. caption the test split with every model; score with the evaluator,
//!    the oracle judge and CIDEr-D; write `OUT/report.md`.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::data::world::{generate_row, write_world, WorldSpec};
use crate::data::{LayoutOptions, ShardIndex, ShardSource, SourceConfig, SourceItem};
use crate::flow::{self, FlowConfig, Pipeline, RunOptions, SourceSpec, StageSpec};
use crate::metrics::quality::{caption_quality, CaptionQuality};
use crate::model::captioner::{CaptionerConfig, TokenSpec, Vocab};
use crate::model::clip::{ClipConfig, ClipTextConfig, ClipVisionConfig};
use crate::reward::cache_run::cache_rewards;
use crate::reward::ScoreConfig;
use crate::train::candidates::Decoding;
use crate::train::captioning::{CaptionTrainConfig, Objective};
use crate::train::evaluator::ContrastiveConfig;
use crate::train::fluency::FluencyJudge;
use crate::train::reward_cache_stage::RewardCacheSettings;
use crate::train::stages::{
    registry, CaptionStageSettings, CaptionerStageSettings, EvaluatorStageSettings, WEIGHTS_FILE,
};
use crate::train::validation::{ValMetric, ValidationSettings};
use crate::train::{AdamWConfig, Decay, DicoConfig, Precision, Schedule};

/// Arguments of `demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Run folder.
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// Dataflow workers (CPU preprocessing threads).
    #[arg(long, default_value_t = 2)]
    pub workers: u32,
    /// Training images in the generated world.
    #[arg(long, default_value_t = 4_000)]
    pub train: usize,
    /// Seed of the world, the data order and the models.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Epochs of contrastive evaluator training.
    #[arg(long, default_value_t = 4)]
    pub evaluator_epochs: u64,
    /// Epochs of XE pre-training.
    #[arg(long, default_value_t = 8)]
    pub xe_epochs: u64,
    /// Epochs of DiCO and of SCST fine-tuning.
    #[arg(long, default_value_t = 1)]
    pub rl_epochs: u64,
    /// Learning rate of DiCO and SCST (the paper's 1e-6 is for a pre-trained
    /// ViT-L/14 captioner; the demo's tiny model needs a larger step).
    #[arg(long, default_value_t = 3e-6)]
    pub rl_lr: f64,
    /// DiCO's β (the paper's 0.2).
    #[arg(long, default_value_t = crate::train::dico::DEFAULT_BETA)]
    pub beta: f64,
}

/// Phases the demo prints as [i/PHASES].
const PHASES: usize = 8;

/// Side of the images the demo's models see (the world's 64×64, downscaled).
const IMAGE: u32 = 32;

fn clip_config() -> ClipConfig {
    ClipConfig {
        embed_dim: 64,
        vision: ClipVisionConfig {
            image_size: IMAGE as i64,
            patch_size: 4,
            width: 64,
            layers: 2,
            heads: 4,
            mlp_ratio: 4.0,
        },
        text: ClipTextConfig {
            context_length: 32,
            vocab_size: 49408,
            width: 64,
            layers: 2,
            heads: 4,
            mlp_ratio: 4.0,
        },
        quick_gelu: true,
    }
}

fn captioner_config(vocab: &Vocab) -> CaptionerConfig {
    CaptionerConfig {
        backbone: None,
        feature_dim: 64,
        d_model: 128,
        heads: 4,
        ffn: 256,
        encoder_layers: 2,
        decoder_layers: 2,
        tokens: TokenSpec::words(vocab.len() as i64),
        max_len: 30,
    }
}

/// Batches a run of `epochs` over `data` produces with `workers` × `batch` rows.
fn steps_for(
    data: &Path,
    workers: u32,
    batch: usize,
    epochs: u64,
    seed: u64,
) -> anyhow::Result<u64> {
    let index = Arc::new(ShardIndex::open(data, &LayoutOptions::default())?);
    let cfg = SourceConfig {
        seed,
        ..Default::default()
    };
    let mut steps = 0;
    for w in 0..workers {
        let rows =
            ShardSource::new(index.clone(), cfg.clone(), w, workers)?.rows_per_epoch() * epochs;
        steps = steps.max(rows.div_ceil(batch as u64));
    }
    Ok(steps)
}

fn pipeline(data: &Path, seed: u64, epochs: u64, batch: usize, stage: StageSpec) -> Pipeline {
    let mut pre = toml::Table::new();
    pre.insert("size".into(), toml::Value::Integer(IMAGE.into()));
    Pipeline {
        source: SourceSpec {
            path: Some(data.to_path_buf()),
            seed,
            epochs,
            ..Default::default()
        },
        flow: FlowConfig {
            batch_size: batch,
            ..Default::default()
        },
        cpu: vec![StageSpec::new("preprocess").with_settings(pre)],
        device: vec![stage],
    }
}

/// The demo's validation: BLEU and CIDEr-D (plus the stage's reward for
/// DiCO and SCST) of greedy captions of the first 200 val images, 8 times per
/// phase and before it. No selection: the demo compares the final models.
fn demo_validation(val: &Path, steps: u64, reward: bool) -> ValidationSettings {
    let mut metrics: Vec<ValMetric> = vec![
        ValMetric::Caption(crate::metrics::Metric::Bleu),
        ValMetric::Caption(crate::metrics::Metric::CiderD),
    ];
    if reward {
        metrics.push(ValMetric::Reward);
    }
    ValidationSettings {
        shards: val.to_path_buf(),
        every: (steps / 8).max(1),
        at_start: true,
        max_images: Some(200),
        batch_size: 64,
        metrics,
        meteor_data: None,
        clip: None,
        clip_config: None,
        pac: None,
        pac_config: None,
        best_by: None,
        mode: None,
        keep: None,
        preprocess: None,
        layout: LayoutOptions::default(),
    }
}

fn stage<T: serde::Serialize>(type_name: &str, settings: &T) -> anyhow::Result<StageSpec> {
    let table = toml::Table::try_from(settings).context("stage settings")?;
    Ok(StageSpec::new(type_name).with_settings(table))
}

/// Run one training phase unless its weights exist already (a rerun after an
/// interruption picks up at the first unfinished phase).
fn run_phase(title: &str, p: &Pipeline, run_dir: &Path, workers: u32) -> anyhow::Result<()> {
    println!("{title}");
    if run_dir.join(WEIGHTS_FILE).is_file() {
        println!(
            "      done already ({}); delete that folder to train again",
            run_dir.display()
        );
        return Ok(());
    }
    let opts = RunOptions {
        run_dir: Some(run_dir.to_path_buf()),
        progress: true,
        ..RunOptions::threads(workers.max(1) as usize)
    };
    let started = std::time::Instant::now();
    let summary = flow::run(p, &registry(), &opts).with_context(|| format!("phase: {title}"))?;
    println!(
        "      done in {:.0}s; metrics log {}",
        started.elapsed().as_secs_f64(),
        run_dir.join(crate::flow::sink::METRICS_FILE).display()
    );
    tracing::debug!("{}", summary.telemetry);
    Ok(())
}

/// Mean of a metric over the first and the last `n` batches of a run's log.
fn metric_trend(run_dir: &Path, name: &str, n: usize) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string(run_dir.join(crate::flow::sink::METRICS_FILE)).ok()?;
    let values: Vec<f64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("metrics")?.get(name)?.as_f64())
        .collect();
    if values.is_empty() {
        return None;
    }
    let n = n.min(values.len());
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    Some((mean(&values[..n]), mean(&values[values.len() - n..])))
}

struct Evaluated {
    name: &'static str,
    quality: CaptionQuality,
    score: f64,
    examples: Vec<(String, String)>,
}

fn evaluate(
    name: &'static str,
    captions_file: &Path,
    spec: &WorldSpec,
) -> anyhow::Result<Evaluated> {
    let text = std::fs::read_to_string(captions_file)
        .with_context(|| format!("reading {}", captions_file.display()))?;
    let mut rows: Vec<(String, String, f64)> = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        rows.push((
            v["key"].as_str().unwrap_or_default().to_owned(),
            v["caption"].as_str().unwrap_or_default().to_owned(),
            v["score"].as_f64().unwrap_or(0.0),
        ));
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let (mut scenes, mut caps, mut refs) = (Vec::new(), Vec::new(), Vec::new());
    for (key, caption, _) in &rows {
        let index: usize = key
            .rsplit('-')
            .next()
            .and_then(|i| i.parse().ok())
            .with_context(|| format!("unexpected test key {key}"))?;
        let (scene, row) = generate_row(spec, 2, index)?;
        scenes.push(scene);
        refs.push(row.captions);
        caps.push(caption.clone());
    }
    let quality = caption_quality(&scenes, &caps, &refs)?;
    let score = rows.iter().map(|r| r.2).sum::<f64>() / rows.len().max(1) as f64;
    let examples = rows
        .iter()
        .take(4)
        .map(|r| (r.0.clone(), r.1.clone()))
        .collect();
    Ok(Evaluated {
        name,
        quality,
        score,
        examples,
    })
}

/// Run `demo`.
pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let total_start = std::time::Instant::now();
    let out = &args.out;
    let data = out.join("data");
    let spec = WorldSpec {
        seed: args.seed,
        train: args.train,
        ..Default::default()
    };
    let w = args.workers.max(1);

    println!("[1/{PHASES}] synthetic world -> {}", data.display());
    let total = (spec.train + spec.val + spec.test) as u64;
    let pb = crate::progress::bar(total, "synth world", "images");
    let files = write_world(&data, &spec, false, |_| pb.inc(1))
        .with_context(|| format!("writing the synthetic world to {}", data.display()))?;
    pb.finish_and_clear();
    println!(
        "      {}",
        if files.is_empty() {
            "already generated".to_owned()
        } else {
            format!("wrote {} shards", files.len())
        }
    );
    let (train, test) = (data.join("train"), data.join("test"));

    // Word vocabulary of the training captions.
    let index = Arc::new(ShardIndex::open(&train, &LayoutOptions::default())?);
    let mut all_captions = Vec::new();
    let cfg = SourceConfig {
        shuffle: false,
        ..Default::default()
    };
    for item in ShardSource::new(index, cfg, 0, 1)? {
        if let SourceItem::Sample(s) = item? {
            all_captions.extend(s.captions);
        }
    }
    let vocab = Vocab::build(&all_captions, 1, None);
    let vocab_path = out.join("vocab.json");
    std::fs::create_dir_all(out)?;
    std::fs::write(&vocab_path, serde_json::to_string(&vocab)?)?;

    // 2. Evaluator.
    let clip = clip_config();
    let eval_dir = out.join("evaluator");
    let batch = 32;
    let steps = steps_for(&train, w, batch, args.evaluator_epochs, args.seed)?;
    let settings = EvaluatorStageSettings {
        train: ContrastiveConfig {
            clip: clip.clone(),
            optimizer: AdamWConfig {
                lr: 1e-3,
                weight_decay: 0.0,
                ..Default::default()
            },
            schedule: Schedule {
                lr: 1e-3,
                warmup_fraction: 0.05,
                total_steps: steps,
                decay: Decay::Cosine,
            },
            context_length: clip.text.context_length as usize,
            grad_clip: Some(1.0),
            seed: args.seed,
            accumulate: 1,
            precision: Precision::Fp32,
            hard_negatives: None,
        },
        out: eval_dir.clone(),
        device: crate::device::DeviceName::Cpu,
        checkpoint_every: 0,
        keep_last: 1,
        resume: false,
    };
    let p = pipeline(
        &train,
        args.seed,
        args.evaluator_epochs,
        batch,
        stage("train_evaluator", &settings)?,
    );
    run_phase(
        &format!(
            "[2/{PHASES}] contrastive evaluator: {steps} steps of {} pairs",
            batch * w as usize
        ),
        &p,
        &eval_dir,
        w,
    )?;
    let evaluator = eval_dir.join(WEIGHTS_FILE);

    // 3. XE.
    let cap_cfg = captioner_config(&vocab);
    let xe_dir = out.join("xe");
    let steps = steps_for(&train, w, batch, args.xe_epochs, args.seed)?;
    let base = CaptionerStageSettings {
        captioner: cap_cfg.clone(),
        train: CaptionTrainConfig {
            objective: Objective::Xe,
            optimizer: AdamWConfig {
                lr: 1e-3,
                weight_decay: 0.01,
                ..Default::default()
            },
            schedule: Schedule {
                lr: 1e-3,
                warmup_fraction: 0.05,
                total_steps: steps,
                decay: Decay::Cosine,
            },
            grad_clip: Some(1.0),
            dico: DicoConfig::default(),
            candidates: 5,
            temperature: 1.0,
            seed: args.seed,
            accumulate: 1,
            label_smoothing: 0.0,
            precision: Precision::Fp32,
        },
        vocab: Some(vocab_path.clone()),
        backbone: evaluator.clone(),
        backbone_config: clip.clone(),
        evaluator: None,
        evaluator_config: None,
        reward: None,
        init: None,
        reward_cache: None,
        // Fluency over training: the oracle grammar on each batch's greedy captions.
        fluency_judge: Some(FluencyJudge::SyntheticWorld),
        fluency_every: 10,
        out: xe_dir.clone(),
        device: crate::device::DeviceName::Cpu,
        // An interrupted phase continues from its latest checkpoint.
        checkpoint_every: 50,
        keep_last: 2,
        resume: true,
        // Validation curves: greedy captions of part of the val split.
        validation: Some(demo_validation(&data.join("val"), steps, false)),
    };
    let p = pipeline(
        &train,
        args.seed + 1,
        args.xe_epochs,
        batch,
        stage("train_captioner", &base)?,
    );
    run_phase(
        &format!("[3/{PHASES}] XE pre-training: {steps} steps"),
        &p,
        &xe_dir,
        w,
    )?;
    let xe_weights = xe_dir.join(WEIGHTS_FILE);

    // 4. DiCO and SCST on the same reward, from the XE checkpoint.
    let rl_batch = 8;
    let steps = steps_for(&train, w, rl_batch, args.rl_epochs, args.seed + 2)?;
    let rl_settings = |objective: Objective, dir: &Path| {
        let mut s = base.clone();
        s.train.objective = objective;
        s.train.optimizer = AdamWConfig {
            lr: args.rl_lr,
            weight_decay: 0.0,
            ..Default::default()
        };
        s.train.schedule = Schedule {
            lr: args.rl_lr,
            warmup_fraction: 0.0,
            total_steps: steps,
            decay: Decay::Constant,
        };
        s.train.dico.beta = args.beta;
        s.validation = Some(demo_validation(
            &data.join("val"),
            steps,
            matches!(objective, Objective::Dico | Objective::Scst),
        ));
        s.init = Some(xe_weights.clone());
        s.out = dir.to_path_buf();
        s
    };
    let run_rl = |title: String, s: &CaptionerStageSettings| -> anyhow::Result<()> {
        let p = pipeline(
            &train,
            args.seed + 2,
            args.rl_epochs,
            rl_batch,
            stage("train_captioner", s)?,
        );
        run_phase(&title, &p, &s.out, w)
    };
    let images_per_step = rl_batch * w as usize;
    let mut rl_dirs = Vec::new();
    for (i, (objective, label)) in [(Objective::Dico, "DiCO"), (Objective::Scst, "SCST")]
        .into_iter()
        .enumerate()
    {
        let dir = out.join(label.to_lowercase());
        let mut s = rl_settings(objective, &dir);
        s.evaluator = Some(evaluator.clone());
        s.reward = Some(ScoreConfig::dico_reward().into());
        run_rl(
            format!(
                "[{}/{PHASES}] {label} fine-tuning: {steps} steps of {images_per_step} images × 5 candidates",
                4 + i
            ),
            &s,
        )?;
        rl_dirs.push((label, dir));
    }

    // 5. Offline DiCO: the XE model's beams, their rewards and reference
    //    log-probs cached once (what `dicoflow cache-rewards` does), then DiCO
    //    from the cache with no evaluator or reference model in memory.
    let cache_dir = out.join("reward_cache");
    let cache = RewardCacheSettings {
        captioner: cap_cfg.clone(),
        weights: xe_weights.clone(),
        reference: None,
        vocab: Some(vocab_path.clone()),
        backbone: evaluator.clone(),
        backbone_config: clip.clone(),
        evaluator: evaluator.clone(),
        evaluator_config: None,
        reward: ScoreConfig::dico_reward(),
        candidates: 5,
        decoding: Decoding::Beam,
        seed: args.seed,
        out: cache_dir.clone(),
        part: "all".into(),
        chunk_rows: 2048,
        device: crate::device::DeviceName::Cpu,
    };
    println!(
        "[6/{PHASES}] caching the XE model's 5 beams, rewards and reference log-probs per training image"
    );
    let started = std::time::Instant::now();
    let cached = cache_rewards(
        &pipeline(&train, 0, 1, 32, stage("reward_cache", &cache)?),
        &registry(),
        &out.join("reward_cache_logs"),
        w as usize,
        false,
    )
    .context("caching rewards")?;
    println!(
        "      {} images scored in {:.0}s ({} already cached)",
        cached.scored_images,
        started.elapsed().as_secs_f64(),
        cached.cached_images
    );
    let dir = out.join("dico_offline");
    let mut s = rl_settings(Objective::DicoOffline, &dir);
    s.reward_cache = Some(cache_dir);
    run_rl(
        format!(
            "[7/{PHASES}] offline DiCO fine-tuning from the cache: {steps} steps of {images_per_step} images × 5 candidates"
        ),
        &s,
    )?;
    rl_dirs.push(("DiCO offline", dir));

    // 6. Evaluation on the test split.
    println!("[{PHASES}/{PHASES}] captioning the test split with every model");
    let mut results = Vec::new();
    for (name, dir) in [("XE", xe_dir.clone())]
        .into_iter()
        .chain(rl_dirs.iter().map(|(n, d)| (*n, d.clone())))
    {
        let captions = dir.join("test_captions.jsonl");
        let s = CaptionStageSettings {
            captioner: cap_cfg.clone(),
            weights: dir.join(WEIGHTS_FILE),
            vocab: Some(vocab_path.clone()),
            backbone: evaluator.clone(),
            backbone_config: clip.clone(),
            evaluator: Some(evaluator.clone()),
            evaluator_config: None,
            score: ScoreConfig::clip_s().with_prefix(None),
            out: captions.clone(),
            device: crate::device::DeviceName::Cpu,
        };
        let p = pipeline(&test, 0, 1, 64, stage("caption", &s)?);
        let opts = RunOptions::threads(w as usize);
        flow::run(&p, &registry(), &opts).with_context(|| format!("captioning with {name}"))?;
        results.push(evaluate(name, &captions, &spec)?);
    }

    let charts = crate::report::write_report(out).context("charting the metrics logs")?;
    let secs = total_start.elapsed().as_secs_f64();
    let report = render_report(&results, out, &rl_dirs, &charts, secs);
    std::fs::write(out.join("report.md"), &report)?;
    println!("\n{report}");
    println!("report: {}", out.join("report.md").display());
    println!(
        "charts ({}): {}",
        charts.png.len(),
        charts.summary.display()
    );
    Ok(())
}

/// The charts `report.md` shows: the reward, then fluency over training.
const EMBEDDED_CHARTS: [(&str, &str); 5] = [
    ("evaluator/mean", "mean evaluator reward of the candidates"),
    (
        "val/CIDEr",
        "validation CIDEr-D of greedy captions of 200 val images",
    ),
    (
        "fluency/grammatical",
        "share of the batch's greedy captions that the oracle grammar accepts",
    ),
    ("train/candidate_length", "candidate length (tokens)"),
    ("train/eos_share", "share of candidates that end with EOS"),
];

fn render_report(
    results: &[Evaluated],
    out: &Path,
    rl_dirs: &[(&str, PathBuf)],
    charts: &crate::report::Report,
    secs: f64,
) -> String {
    let mut r = String::new();
    r.push_str("# dicoflow demo: XE vs DiCO vs SCST on the synthetic world\n\n");
    r.push_str(&format!(
        "Test split, greedy captions. Evaluator score = CLIP-S of the demo's own evaluator \
         (2.5 · max(cos, 0), no prefix: the evaluator was trained without one). Fluency and truth \
         come from the oracle judge. Whole run: {secs:.0} s.\n\n"
    ));
    r.push_str("| model | evaluator CLIP-S | grammatical | precision | recall | repetition | words | CIDEr-D |\n");
    r.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for e in results {
        let q = &e.quality;
        r.push_str(&format!(
            "| {} | {:.4} | {:.1}% | {:.3} | {:.3} | {:.1}% | {:.1} | {:.3} |\n",
            e.name,
            e.score,
            100.0 * q.grammatical,
            q.precision,
            q.recall,
            100.0 * q.repetition,
            q.words,
            q.cider_d
        ));
    }
    r.push_str("\n## Reward during fine-tuning\n\nMean evaluator reward of the candidates (w = 2, no prefix, no clipping), first vs last 20 steps:\n\n");
    for (name, dir) in rl_dirs {
        if let Some((a, b)) = metric_trend(dir, "evaluator/mean", 20) {
            r.push_str(&format!("- {name}: {a:.4} → {b:.4}\n"));
        }
    }
    r.push_str(
        "\nPer step of training: the reward, validation CIDEr-D (greedy captions of 200 val \
         images, before training and 8 times per phase; `val/*` in the logs), fluency (the share of each batch's greedy \
         captions that the oracle grammar accepts; the table above judges the test split), \
         candidate length and the share of candidates that end with EOS. Offline DiCO's \
         candidates and rewards are the cached ones of the XE model, so its reward curve is \
         flat by construction.\n\n",
    );
    for (metric, what) in EMBEDDED_CHARTS {
        if let Some(png) = charts.png.get(metric) {
            let rel = png.strip_prefix(out).unwrap_or(png);
            r.push_str(&format!("![{what}]({})\n\n", rel.display()));
        }
    }
    r.push_str("## Example captions\n\n");
    for e in results {
        r.push_str(&format!("**{}**\n\n", e.name));
        for (k, c) in &e.examples {
            r.push_str(&format!("- `{k}`: {c}\n"));
        }
        r.push('\n');
    }
    r.push_str(&format!(
        "Per-step logs: `{0}/*/metrics.jsonl`; charts (PNG and SVG) of every logged metric \
         (reward, loss, KL, margins, ...): `{0}/report/summary.md` (`dicoflow report {0}`).\n",
        out.display()
    ));
    r
}
