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
//!
//! Every phase's settings live in a pipeline file of `pipelines/demo/`
//! ([`Phase::embedded`], built into the binary; `--pipelines DIR` reads edited
//! copies instead). The files name their inputs and outputs under
//! [`DEMO_ROOT`], so each runs on its own with `dicoflow train --pipeline`;
//! the demo fills in only what follows from its arguments and the data
//! ([`fill_phase`]): paths moved under `--out`, seeds shifted by `--seed`,
//! step counts computed from the data, and the vocabulary size. The demo's
//! flags that name a setting (`--xe-epochs`, `--rl-lr`, `--beta`, ...)
//! override the file's value only when given.
//!
//! With `--seeds N` (N > 1) the world, the vocabulary and the evaluator are
//! made once ([`SHARED`]: the fixed setting) and the captioner phases run
//! once per seed under `OUT/seed-S/`; with `--betas` DiCO runs once per β.
//! The report then shows mean ± sample standard deviation over the seeds,
//! every seed's row, a reward-vs-fluency chart and the verdict on the
//! paper's claim ([`crate::report::compare`]).
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::data::synth::FactKind;
use crate::data::world::{generate_row, write_world, WorldSpec};
use crate::data::{LayoutOptions, ShardIndex, ShardSource, SourceConfig, SourceItem};
use crate::flow::length::RunLength;
use crate::flow::{self, Pipeline, RunOptions};
use crate::metrics::quality::{caption_quality, CaptionQuality};
use crate::model::captioner::Vocab;
use crate::report::compare::{
    fluency_series, mean, reward_fluency_points, sample_sd, verdict, ModelScores, SeedScores,
    VerdictModels,
};
use crate::reward::cache_run::cache_rewards;
use crate::train::stages::{registry, RewardCacheSettings, CAPTIONER_CONFIG_FILE, WEIGHTS_FILE};

/// Arguments of `demo`. The training settings are those of the pipeline
/// files ([`Phase::embedded`]); the flags that name one override it when given.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Run folder: every `runs/demo` path of the pipeline files moves here.
    #[arg(long, default_value = DEMO_ROOT)]
    pub out: PathBuf,
    /// Folder with the phases' pipeline files (image_tower.toml, evaluator.toml, xe.toml,
    /// dico.toml, scst.toml, reward_cache.toml, dico_offline.toml,
    /// caption.toml) to run instead of the embedded copies of pipelines/demo/.
    #[arg(long)]
    pub pipelines: Option<PathBuf>,
    /// Dataflow workers (CPU preprocessing threads).
    #[arg(long, default_value_t = 2)]
    pub workers: u32,
    /// Training images in the generated world.
    #[arg(long, default_value_t = 4_000)]
    pub train: usize,
    /// Seed of the world; added to the seeds of the files (the models' seeds
    /// and the training phases' data order).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Epochs of contrastive evaluator training (default: evaluator.toml's 8).
    #[arg(long)]
    pub evaluator_epochs: Option<u64>,
    /// Epochs of XE pre-training (default: xe.toml's 8).
    #[arg(long)]
    pub xe_epochs: Option<u64>,
    /// Epochs of DiCO, SCST and offline DiCO fine-tuning (default: the files' 1).
    #[arg(long)]
    pub rl_epochs: Option<u64>,
    /// Learning rate of DiCO, SCST and offline DiCO, all three alike
    /// (default: the files', 3e-6 for DiCO and offline DiCO and 1e-5 for
    /// SCST, its rate at a matched reward gain; the paper's 1e-6 is for a
    /// pre-trained ViT-L/14 captioner, the demo's tiny model needs a larger
    /// step).
    /// 0 is allowed: the fine-tuned models then equal XE (a sanity check).
    #[arg(long, allow_negative_numbers = true)]
    pub rl_lr: Option<f64>,
    /// β of DiCO and offline DiCO (default: the files' 0.2, the paper's).
    #[arg(long, conflicts_with = "betas", allow_negative_numbers = true)]
    pub beta: Option<f64>,
    /// Seeds of the captioners: XE, DiCO, SCST, the reward cache, offline
    /// DiCO and captioning run once per seed `--seed + k` (k < N), each
    /// under `OUT/seed-S/` when N > 1, on the one world, vocabulary and
    /// evaluator (made with `--seed`). The report shows mean ± standard
    /// deviation over the seeds. N times the captioner phases' time: the
    /// default 3 took 694 s on 2 CPU cores (docs/training.md); `--seeds 1`
    /// about a third of that, with every output directly under `OUT/`.
    #[arg(long, default_value_t = 3, value_parser = parse_seeds)]
    pub seeds: u64,
    /// β values of DiCO, at least two, comma-separated (e.g.
    /// `0.05,0.2,1.0`): DiCO runs once per β (models "DiCO β=B", folders
    /// `dico-beta-B`); offline DiCO keeps dico_offline.toml's β. Default:
    /// the one β of dico.toml (or `--beta`).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub betas: Option<Vec<f64>>,
    /// Validation images in the generated world.
    #[arg(long, default_value_t = WorldSpec::default().val)]
    pub val: usize,
    /// Test images in the generated world (the report's split).
    #[arg(long, default_value_t = WorldSpec::default().test)]
    pub test: usize,
}

/// Phases the demo prints as [i/PHASES].
const PHASES: usize = 9;

/// The folder under which the demo's pipeline files name their inputs and
/// outputs; the demo moves every such path under its `--out`.
pub const DEMO_ROOT: &str = "runs/demo";

/// What every seed of a `--seeds` run shares, as the first component of a
/// path under [`DEMO_ROOT`]: the world, the vocabulary, the evaluator's
/// pre-trained image tower and the evaluator.
/// Every other path (a captioner's folder, the reward cache, ...) belongs to
/// one seed and moves under its folder ([`Fill::seed_out`]).
pub const SHARED: [&str; 4] = ["data", "vocab.json", "image_tower", "evaluator"];

/// A phase of the demo: the name of its file in `pipelines/demo/` (without
/// `.toml`) and what it does, in the order the demo runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `pretrain_image_tower`: the evaluator's image tower, trained on the
    /// world's scene labels.
    ImageTower,
    /// `train_evaluator`: the contrastive CLIP evaluator (LiT on that tower).
    Evaluator,
    /// `train_captioner`, objective `xe`.
    Xe,
    /// `train_captioner`, objective `dico`.
    Dico,
    /// `train_captioner`, objective `scst`.
    Scst,
    /// `reward_cache`: the XE model's beams, rewards and reference log-probs.
    RewardCache,
    /// `train_captioner`, objective `dico_offline`, from the reward cache.
    DicoOffline,
    /// `caption`: greedy captions of the test split with one model.
    Caption,
}

impl Phase {
    /// Every phase, in run order.
    pub const ALL: [Phase; 8] = [
        Phase::ImageTower,
        Phase::Evaluator,
        Phase::Xe,
        Phase::Dico,
        Phase::Scst,
        Phase::RewardCache,
        Phase::DicoOffline,
        Phase::Caption,
    ];

    /// The file's name without `.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Phase::ImageTower => "image_tower",
            Phase::Evaluator => "evaluator",
            Phase::Xe => "xe",
            Phase::Dico => "dico",
            Phase::Scst => "scst",
            Phase::RewardCache => "reward_cache",
            Phase::DicoOffline => "dico_offline",
            Phase::Caption => "caption",
        }
    }

    /// The copy of `pipelines/demo/NAME.toml` built into the binary.
    pub fn embedded(self) -> &'static str {
        match self {
            Phase::ImageTower => include_str!("../../pipelines/demo/image_tower.toml"),
            Phase::Evaluator => include_str!("../../pipelines/demo/evaluator.toml"),
            Phase::Xe => include_str!("../../pipelines/demo/xe.toml"),
            Phase::Dico => include_str!("../../pipelines/demo/dico.toml"),
            Phase::Scst => include_str!("../../pipelines/demo/scst.toml"),
            Phase::RewardCache => include_str!("../../pipelines/demo/reward_cache.toml"),
            Phase::DicoOffline => include_str!("../../pipelines/demo/dico_offline.toml"),
            Phase::Caption => include_str!("../../pipelines/demo/caption.toml"),
        }
    }

    /// Phases whose data order and step count follow from `--seed` and the
    /// data: the training phases.
    fn trains(self) -> bool {
        !matches!(self, Phase::RewardCache | Phase::Caption)
    }

    /// DiCO, SCST and offline DiCO: the phases `--rl-*` and `--beta` set.
    fn fine_tunes(self) -> bool {
        matches!(self, Phase::Dico | Phase::Scst | Phase::DicoOffline)
    }
}

/// Parse `phase`'s pipeline: `DIR/NAME.toml` when `dir` is given, else the
/// embedded copy. Errors name the file.
pub fn load_phase(phase: Phase, dir: Option<&Path>) -> anyhow::Result<Pipeline> {
    let file = format!("{}.toml", phase.name());
    match dir {
        Some(dir) => {
            let path = dir.join(&file);
            Pipeline::load(&path).with_context(|| {
                format!(
                    "--pipelines {}: the demo reads {file} there (copy pipelines/demo/ to \
                     start from the shipped files)",
                    dir.display()
                )
            })
        }
        None => Ok(Pipeline::from_toml(
            phase.embedded(),
            &Path::new("pipelines/demo").join(&file),
        )?),
    }
}

/// What the demo fills into a phase's pipeline: the run folder, the seed,
/// the workers and the overrides given on the command line.
#[derive(Debug, Clone)]
pub struct Fill<'a> {
    /// Replaces the [`DEMO_ROOT`] prefix of the paths of [`SHARED`] things.
    pub out: &'a Path,
    /// Replaces the [`DEMO_ROOT`] prefix of every other path: `out` with
    /// one seed, `out/seed-S` with several.
    pub seed_out: &'a Path,
    /// Added to the seeds of the files.
    pub seed: u64,
    /// Workers: the step counts are per worker's share of the data.
    pub workers: u32,
    /// Words of the vocabulary (XE's `captioner.tokens.vocab_size`).
    pub vocab_size: usize,
    pub evaluator_epochs: Option<u64>,
    pub xe_epochs: Option<u64>,
    pub rl_epochs: Option<u64>,
    pub rl_lr: Option<f64>,
    pub beta: Option<f64>,
}

/// `p` as the demo runs `phase`:
/// - every string under `source.path` and the stages' settings that is
///   [`DEMO_ROOT`] or starts with `runs/demo/` moves under `fill.out` when
///   what follows starts with a [`SHARED`] name (or is empty), else under
///   `fill.seed_out`;
/// - `fill.seed` is added to `train.seed` (and to the reward cache's `seed`)
///   and, for the training phases, to `source.seed`;
/// - the overrides given replace `source.epochs`, the learning rate
///   (`train.optimizer.lr`, `train.schedule.lr`) and `train.dico.beta`;
/// - for the training phases `train.schedule.total_steps` becomes the
///   batches of `source.epochs` over each worker's share of the data (the
///   largest share), and `validation.every` keeps the file's number of
///   validations per phase (`total_steps / every`);
/// - XE's `captioner.tokens.vocab_size` becomes `fill.vocab_size`.
///
/// Reads the shard index of the phase's data (errors name it); settings
/// are checked when the stage is built, not here.
pub fn fill_phase(phase: Phase, mut p: Pipeline, fill: &Fill) -> anyhow::Result<Pipeline> {
    let rebase = |s: &str| -> Option<String> {
        let rest = s.strip_prefix(DEMO_ROOT)?;
        if rest.is_empty() {
            return Some(fill.out.display().to_string());
        }
        let rest = rest.strip_prefix('/')?;
        let first = rest.split('/').next().unwrap_or_default();
        let root = if SHARED.contains(&first) {
            fill.out
        } else {
            fill.seed_out
        };
        Some(root.join(rest).display().to_string())
    };
    if let Some(path) = &p.source.path {
        if let Some(moved) = path.to_str().and_then(rebase) {
            p.source.path = Some(PathBuf::from(moved));
        }
    }
    for stage in p.cpu.iter_mut().chain(p.device.iter_mut()) {
        for (_, value) in stage.settings.iter_mut() {
            rebase_strings(value, &rebase);
        }
    }
    if phase.trains() {
        p.source.seed += fill.seed;
    }
    let epochs = match phase {
        Phase::Evaluator => fill.evaluator_epochs,
        Phase::Xe => fill.xe_epochs,
        _ if phase.fine_tunes() => fill.rl_epochs,
        _ => None,
    };
    if let Some(epochs) = epochs {
        p.source.epochs = epochs;
    }
    let steps = if phase.trains() {
        let data = p
            .source
            .path
            .clone()
            .with_context(|| format!("{}.toml: no [source] path", phase.name()))?;
        Some(steps_for(
            &data,
            fill.workers,
            p.flow.batch_size,
            p.source.source_config(),
        )?)
    } else {
        None
    };
    let Some(stage) = p.device.first_mut() else {
        anyhow::bail!("{}.toml: no [[device]] stage", phase.name());
    };
    let settings = &mut stage.settings;
    if phase == Phase::RewardCache {
        add_to_int(settings, &["seed"], fill.seed)?;
    } else if phase != Phase::Caption {
        add_to_int(settings, &["train", "seed"], fill.seed)?;
    }
    if phase.fine_tunes() {
        if let Some(lr) = fill.rl_lr {
            set(
                settings,
                &["train", "optimizer", "lr"],
                toml::Value::Float(lr),
            );
            set(
                settings,
                &["train", "schedule", "lr"],
                toml::Value::Float(lr),
            );
        }
        if let Some(beta) = fill.beta {
            if phase != Phase::Scst {
                set(
                    settings,
                    &["train", "dico", "beta"],
                    toml::Value::Float(beta),
                );
            }
        }
    }
    if let Some(steps) = steps {
        let path = ["train", "schedule", "total_steps"];
        let file_steps = get(settings, &path).and_then(toml::Value::as_integer);
        set(settings, &path, toml::Value::Integer(steps as i64));
        let every = get(settings, &["validation", "every"]).and_then(toml::Value::as_integer);
        if let (Some(total), Some(every)) = (file_steps, every) {
            let runs = (total / every.max(1)).max(1) as u64;
            let every = (steps / runs).max(1);
            set(
                settings,
                &["validation", "every"],
                toml::Value::Integer(every as i64),
            );
        }
    }
    if phase == Phase::Xe && get(settings, &["captioner", "tokens"]).is_some() {
        set(
            settings,
            &["captioner", "tokens", "vocab_size"],
            toml::Value::Integer(fill.vocab_size as i64),
        );
    }
    Ok(p)
}

/// The DiCO phase `p` (filled) at β = `beta`, writing to
/// `seed_out/dico-beta-B` ([`beta_label`]): one run of a `--betas` sweep.
pub fn dico_at_beta(mut p: Pipeline, beta: f64, seed_out: &Path) -> anyhow::Result<Pipeline> {
    let Some(stage) = p.device.first_mut() else {
        anyhow::bail!("dico.toml: no [[device]] stage");
    };
    let s = &mut stage.settings;
    set(s, &["train", "dico", "beta"], toml::Value::Float(beta));
    let dir = seed_out.join(format!("dico-beta-{}", beta_label(beta)));
    set(s, &["out"], toml::Value::String(dir.display().to_string()));
    Ok(p)
}

/// β as model and folder names show it: Rust's shortest form (`0.05`, `1`).
pub fn beta_label(beta: f64) -> String {
    format!("{beta}")
}

/// `p` captioning with the model a training phase wrote to `dir`: its
/// `captioner.json` and weights, the captions to `dir/test_captions.jsonl`.
pub fn caption_with(mut p: Pipeline, dir: &Path) -> anyhow::Result<Pipeline> {
    let Some(stage) = p.device.first_mut() else {
        anyhow::bail!("caption.toml: no [[device]] stage");
    };
    let path = |f: PathBuf| toml::Value::String(f.display().to_string());
    let s = &mut stage.settings;
    set(s, &["captioner"], path(dir.join(CAPTIONER_CONFIG_FILE)));
    set(s, &["weights"], path(dir.join(WEIGHTS_FILE)));
    set(s, &["out"], path(dir.join(TEST_CAPTIONS)));
    Ok(p)
}

/// Captions of the test split a captioning run writes into a model's folder.
const TEST_CAPTIONS: &str = "test_captions.jsonl";

fn rebase_strings(value: &mut toml::Value, rebase: &impl Fn(&str) -> Option<String>) {
    match value {
        toml::Value::String(s) => {
            if let Some(moved) = rebase(s) {
                *s = moved;
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(|v| rebase_strings(v, rebase)),
        toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| rebase_strings(v, rebase)),
        _ => {}
    }
}

fn get<'a>(table: &'a toml::Table, path: &[&str]) -> Option<&'a toml::Value> {
    let (last, parents) = path.split_last()?;
    let mut t = table;
    for key in parents {
        t = t.get(*key)?.as_table()?;
    }
    t.get(*last)
}

/// Set `path` in `table`, making the tables on the way.
fn set(table: &mut toml::Table, path: &[&str], value: toml::Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut t = table;
    for key in parents {
        let entry = t
            .entry(key.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        t = entry.as_table_mut().expect("made a table above");
    }
    t.insert(last.to_string(), value);
}

/// Add `n` to the integer at `path` (0 when absent).
fn add_to_int(table: &mut toml::Table, path: &[&str], n: u64) -> anyhow::Result<()> {
    let now = match get(table, path) {
        None => 0,
        Some(v) => v
            .as_integer()
            .with_context(|| format!("`{}` must be an integer", path.join(".")))?,
    };
    set(table, path, toml::Value::Integer(now + n as i64));
    Ok(())
}

/// Batches a run over `data` produces with `workers` × `batch` rows under
/// `source` ([`RunLength`], what a training stage without `total_steps`
/// would take).
fn steps_for(data: &Path, workers: u32, batch: usize, source: SourceConfig) -> anyhow::Result<u64> {
    let index = Arc::new(
        ShardIndex::open(data, &LayoutOptions::default())
            .with_context(|| format!("counting the rows of {}", data.display()))?,
    );
    RunLength::new(index, source, workers, batch)
        .batches()
        .context("the demo's sources have a finite number of epochs")
}

/// A string setting of the first device stage.
fn setting_path(p: &Pipeline, key: &str) -> Option<PathBuf> {
    p.device
        .first()?
        .settings
        .get(key)?
        .as_str()
        .map(PathBuf::from)
}

/// `train.schedule.total_steps` of the first device stage.
fn total_steps(p: &Pipeline) -> u64 {
    p.device
        .first()
        .and_then(|s| get(&s.settings, &["train", "schedule", "total_steps"]))
        .and_then(toml::Value::as_integer)
        .unwrap_or_default() as u64
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

/// The val images a fine-tuning phase validates on: its
/// `validation.max_images` (all when absent) of the world's `val`.
fn validated_images(phase: &Pipeline, val: usize) -> usize {
    phase
        .device
        .first()
        .and_then(|s| get(&s.settings, &["validation", "max_images"]))
        .and_then(toml::Value::as_integer)
        .map_or(val, |m| val.min(m.max(0) as usize))
}

/// Means of a metric over the first and the last `n` batches of a run's log,
/// and that `n`: at most `max`, and at most half of a shorter log so that the
/// two windows do not overlap (1 for a log of one batch).
fn metric_trend(run_dir: &Path, name: &str, max: usize) -> Option<(f64, f64, usize)> {
    let text = std::fs::read_to_string(run_dir.join(crate::flow::sink::METRICS_FILE)).ok()?;
    let values: Vec<f64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("metrics")?.get(name)?.as_f64())
        .collect();
    if values.is_empty() {
        return None;
    }
    let n = max.min(values.len() / 2).max(1);
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    Some((mean(&values[..n]), mean(&values[values.len() - n..]), n))
}

struct Evaluated {
    name: String,
    quality: CaptionQuality,
    score: f64,
    examples: Vec<(String, String)>,
}

impl Evaluated {
    fn scores(&self) -> ModelScores {
        ModelScores {
            model: self.name.clone(),
            evaluator: self.score,
            grammatical: self.quality.grammatical,
            precision: self.quality.precision,
        }
    }

    /// The table's columns: evaluator CLIP-S, grammatical (%), precision,
    /// recall, repetition (%), words, CIDEr-D.
    fn columns(&self) -> [f64; 7] {
        let q = &self.quality;
        [
            self.score,
            100.0 * q.grammatical,
            q.precision,
            q.recall,
            100.0 * q.repetition,
            q.words,
            q.cider_d,
        ]
    }
}

fn evaluate(name: &str, captions_file: &Path, spec: &WorldSpec) -> anyhow::Result<Evaluated> {
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
        let (split, index) = crate::data::world::row_of_key(spec, key)
            .with_context(|| format!("unexpected test key {key}"))?;
        let (scene, row) = generate_row(spec, split, index)?;
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
        name: name.to_owned(),
        quality,
        score,
        examples,
    })
}

/// One seed's models: their folders and test-split results.
struct SeedRun {
    seed: u64,
    /// `OUT` with one seed, `OUT/seed-S` with several.
    dir: PathBuf,
    /// The fine-tuned models' names and folders (for the reward trends).
    rl_dirs: Vec<(String, PathBuf)>,
    results: Vec<Evaluated>,
}

/// `--seeds`: a count of at least 1.
fn parse_seeds(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(0) => Err("the demo trains at least one seed; use 1 or more".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{text}` is not a number of seeds (1, 2, 3, ...)")),
    }
}

/// The β values DiCO runs at: `--betas` (checked: finite, > 0, distinct) or
/// the one β of dico.toml / `--beta`; `--rl-lr` is checked here too.
fn dico_betas(args: &DemoArgs, file_beta: f64) -> anyhow::Result<Vec<f64>> {
    if let Some(lr) = args.rl_lr {
        // Checked with the β values, before anything is trained.
        anyhow::ensure!(
            lr.is_finite() && lr >= 0.0,
            "--rl-lr {lr}: the learning rate must be a number of 0 or more (the files' are 3e-6 \
             for DiCO and offline DiCO, 1e-5 for SCST)"
        );
    }
    let Some(betas) = &args.betas else {
        if let Some(b) = args.beta {
            // Checked now, not when DiCO's stage is built after the world,
            // the evaluator and XE have been trained.
            anyhow::ensure!(
                b.is_finite() && b > 0.0,
                "--beta {b}: β must be a positive number (the paper's is 0.2)"
            );
        }
        return Ok(vec![args.beta.unwrap_or(file_beta)]);
    };
    anyhow::ensure!(
        betas.len() > 1,
        "--betas {}: a sweep needs at least two β values; for one β use --beta {} \
         (which sets offline DiCO's β too)",
        betas
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(","),
        betas.first().map_or("B".to_owned(), |b| b.to_string())
    );
    for (i, b) in betas.iter().enumerate() {
        anyhow::ensure!(
            b.is_finite() && *b > 0.0,
            "--betas: {b} is not a positive number; give β values like 0.05,0.2,1.0"
        );
        anyhow::ensure!(
            !betas[..i].iter().any(|a| beta_label(*a) == beta_label(*b)),
            "--betas: {b} is given twice; each β trains one model, list it once"
        );
    }
    Ok(betas.clone())
}

/// Run `demo`.
pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let total_start = std::time::Instant::now();
    // The seeds go into the filled phase files as TOML integers (64-bit
    // signed), with the files' own seeds added: refuse what cannot fit now,
    // not after some seeds have trained.
    const MAX_SEED: u64 = 1 << 62;
    anyhow::ensure!(
        args.seed
            .checked_add(args.seeds)
            .is_some_and(|s| s <= MAX_SEED),
        "--seed {}: with --seeds {} the seeds pass 2^62, the largest the pipeline files can \
         hold (TOML integers are 64-bit signed and the files' own seeds are added); use a \
         smaller --seed",
        args.seed,
        args.seeds
    );
    let out = &args.out;
    let data = out.join("data");
    let spec = WorldSpec {
        seed: args.seed,
        train: args.train,
        val: args.val,
        test: args.test,
        ..Default::default()
    };
    let w = args.workers.max(1);
    // Every phase file parses before anything is written or trained, so an
    // edited copy with a mistake in a late phase fails now, not an hour in.
    for phase in Phase::ALL {
        load_phase(phase, args.pipelines.as_deref())?;
    }
    let dir = args.pipelines.as_deref();
    let dico_file = load_phase(Phase::Dico, dir)?;
    let file_beta = dico_file
        .device
        .first()
        .and_then(|s| get(&s.settings, &["train", "dico", "beta"]))
        .and_then(toml::Value::as_float)
        .context("dico.toml: no `train.dico.beta` in the device stage")?;
    let betas = dico_betas(args, file_beta)?;

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
    let train = data.join("train");

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

    let shared = Fill {
        out,
        seed_out: out,
        seed: args.seed,
        workers: w,
        vocab_size: vocab.len(),
        evaluator_epochs: args.evaluator_epochs,
        xe_epochs: args.xe_epochs,
        rl_epochs: args.rl_epochs,
        rl_lr: args.rl_lr,
        beta: args.beta,
    };
    let out_of = |phase: Phase, p: &Pipeline| {
        setting_path(p, "out")
            .with_context(|| format!("{}.toml: the stage has no `out` folder", phase.name()))
    };

    // 2. The evaluator's image tower, then 3. the evaluator (LiT on it):
    // made once, shared by every seed.
    for (number, phase) in [(2, Phase::ImageTower), (3, Phase::Evaluator)] {
        let p = fill_phase(phase, load_phase(phase, dir)?, &shared)?;
        let (steps, n) = (total_steps(&p), p.flow.batch_size * w as usize);
        let what = match phase {
            Phase::ImageTower => {
                format!("image tower pre-training on the scene labels: {steps} steps of {n} images")
            }
            _ => format!("contrastive evaluator: {steps} steps of {n} pairs"),
        };
        let phase_out = out_of(phase, &p)?;
        run_phase(&format!("[{number}/{PHASES}] {what}"), &p, &phase_out, w)?;
    }

    let mut runs = Vec::new();
    for k in 0..args.seeds {
        let seed = args.seed + k;
        let seed_out = if args.seeds > 1 {
            out.join(format!("seed-{seed}"))
        } else {
            out.clone()
        };
        let tag = if args.seeds > 1 {
            format!("seed {seed}: ")
        } else {
            String::new()
        };
        let fill = Fill {
            seed_out: &seed_out,
            seed,
            ..shared.clone()
        };
        runs.push(run_seed(args, &fill, &tag, &betas, &spec)?);
    }

    let charts = crate::report::write_report(out).context("charting the metrics logs")?;
    // With several seeds every seed's curves are charted in its folder
    // (`seed-S/report/`); the report embeds the first seed's.
    let mut curves = charts;
    if args.seeds > 1 {
        for (i, run) in runs.iter().enumerate() {
            let charts = crate::report::write_report(&run.dir)
                .with_context(|| format!("charting the metrics logs of {}", run.dir.display()))?;
            if i == 0 {
                curves = charts;
            }
        }
    }
    let seeds: Vec<SeedScores> = runs
        .iter()
        .map(|r| SeedScores {
            seed: r.seed,
            models: r.results.iter().map(Evaluated::scores).collect(),
        })
        .collect();
    let series = fluency_series(&reward_fluency_points(&seeds, "XE"));
    let (scatter, _) = crate::report::write_scatter(
        &out.join(crate::report::REPORT_DIR),
        FLUENCY_CHART,
        "reward vs fluency, against XE",
        "grammaticality lost vs XE (percentage points)",
        &series,
    )
    .context("drawing the reward-vs-fluency chart")?;
    let verdict_dico = if betas.len() == 1 {
        Ok("DiCO".to_owned())
    } else if betas
        .iter()
        .any(|b| beta_label(*b) == beta_label(file_beta))
    {
        Ok(format!("DiCO β={}", beta_label(file_beta)))
    } else {
        Err(format!(
            "DiCO at dico.toml's β {} (the one the verdict judges) was not among --betas {}; add it to judge the claim",
            beta_label(file_beta),
            betas.iter().map(|b| beta_label(*b)).collect::<Vec<_>>().join(",")
        ))
    };
    let models = VerdictModels {
        baseline: "XE",
        dico: verdict_dico.as_deref().ok(),
        scst: "SCST",
        no_dico_reason: verdict_dico.as_ref().err().map_or("", String::as_str),
    };
    let verdict = verdict(&seeds, &models);
    let beta_note = if betas.len() == 1 {
        format!("DiCO is the model at β = {}.", beta_label(betas[0]))
    } else {
        format!(
            "With several β the verdict judges DiCO at dico.toml's β = {} (the paper's is 0.2).",
            beta_label(file_beta)
        )
    };
    let secs = total_start.elapsed().as_secs_f64();
    let report = render_report(
        &runs,
        out,
        &curves,
        secs,
        &scatter,
        &format!("{beta_note}\n\n{}", verdict.markdown()),
        validated_images(&dico_file, args.val),
    );
    std::fs::write(out.join("report.md"), &report)?;
    println!("\n{report}");
    println!("report: {}", out.join("report.md").display());
    println!(
        "charts ({}): {}",
        curves.png.len(),
        curves.summary.display()
    );
    Ok(())
}

/// The stem of the reward-vs-fluency chart in `OUT/report/`.
pub const FLUENCY_CHART: &str = "reward_vs_fluency";

/// The captioner phases of one seed (`fill.seed`, under `fill.seed_out`):
/// XE, DiCO at each β, SCST, the reward cache, offline DiCO, then captioning
/// of the test split by every model.
fn run_seed(
    args: &DemoArgs,
    fill: &Fill,
    tag: &str,
    betas: &[f64],
    spec: &WorldSpec,
) -> anyhow::Result<SeedRun> {
    let w = fill.workers;
    let dir = args.pipelines.as_deref();
    let phase = |phase: Phase| fill_phase(phase, load_phase(phase, dir)?, fill);
    let out_of = |phase: Phase, p: &Pipeline| {
        setting_path(p, "out")
            .with_context(|| format!("{}.toml: the stage has no `out` folder", phase.name()))
    };

    // 3. XE.
    let p = phase(Phase::Xe)?;
    let xe_dir = out_of(Phase::Xe, &p)?;
    run_phase(
        &format!(
            "[4/{PHASES}] {tag}XE pre-training: {} steps",
            total_steps(&p)
        ),
        &p,
        &xe_dir,
        w,
    )?;

    // 4. DiCO (at each β) and SCST on the same reward, from the XE checkpoint.
    let mut rl: Vec<(String, Pipeline)> = Vec::new();
    if betas.len() == 1 {
        // The filled file already has that β (`--beta`, or its own).
        rl.push(("DiCO".to_owned(), phase(Phase::Dico)?));
    } else {
        for &beta in betas {
            let p = dico_at_beta(phase(Phase::Dico)?, beta, fill.seed_out)?;
            rl.push((format!("DiCO β={}", beta_label(beta)), p));
        }
    }
    rl.push(("SCST".to_owned(), phase(Phase::Scst)?));
    let mut rl_dirs = Vec::new();
    for (i, (label, p)) in rl.iter().enumerate() {
        let dir = setting_path(p, "out")
            .with_context(|| format!("{label}: the stage has no `out` folder"))?;
        run_phase(
            &format!(
                "[{}/{PHASES}] {tag}{label} fine-tuning: {} steps of {} images × 5 candidates",
                5 + (i + 1 == rl.len()) as usize,
                total_steps(p),
                p.flow.batch_size * w as usize
            ),
            p,
            &dir,
            w,
        )?;
        rl_dirs.push((label.clone(), dir));
    }

    // 5. Offline DiCO: the XE model's beams, their rewards and reference
    //    log-probs cached once (what `dicoflow cache-rewards` does), then DiCO
    //    from the cache with no evaluator or reference model in memory.
    println!(
        "[7/{PHASES}] {tag}caching the XE model's 5 beams, rewards and reference log-probs per training image"
    );
    let started = std::time::Instant::now();
    let cached = cache_rewards::<RewardCacheSettings>(
        &phase(Phase::RewardCache)?,
        &registry(),
        &fill.seed_out.join("reward_cache_logs"),
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
    let p = phase(Phase::DicoOffline)?;
    let off_dir = out_of(Phase::DicoOffline, &p)?;
    run_phase(
        &format!(
            "[8/{PHASES}] {tag}offline DiCO fine-tuning from the cache: {} steps of {} images × 5 candidates",
            total_steps(&p),
            p.flow.batch_size * w as usize
        ),
        &p,
        &off_dir,
        w,
    )?;
    rl_dirs.push(("DiCO offline".to_owned(), off_dir));

    // 6. Evaluation on the test split.
    println!("[{PHASES}/{PHASES}] {tag}captioning the test split with every model");
    let caption = phase(Phase::Caption)?;
    let mut results = Vec::new();
    for (name, dir) in [("XE".to_owned(), xe_dir.clone())]
        .into_iter()
        .chain(rl_dirs.iter().cloned())
    {
        let p = caption_with(caption.clone(), &dir)?;
        let opts = RunOptions::threads(w as usize);
        flow::run(&p, &registry(), &opts).with_context(|| format!("captioning with {name}"))?;
        results.push(evaluate(&name, &dir.join(TEST_CAPTIONS), spec)?);
    }
    Ok(SeedRun {
        seed: fill.seed,
        dir: fill.seed_out.to_path_buf(),
        rl_dirs,
        results,
    })
}

/// Steps at the start and at the end of a phase whose mean reward the
/// report compares.
const TREND_STEPS: usize = 20;

/// The charts `report.md` shows: the reward, then fluency over training.
const EMBEDDED_CHARTS: [(&str, &str); 5] = [
    ("evaluator/mean", "mean evaluator reward of the candidates"),
    (
        "val/CIDEr",
        "validation CIDEr-D of greedy captions of val images",
    ),
    (
        "fluency/grammatical",
        "share of the batch's greedy captions that the oracle grammar accepts",
    ),
    ("train/candidate_length", "candidate length (tokens)"),
    ("train/eos_share", "share of candidates that end with EOS"),
];

const TABLE_HEAD: &str = "| model | evaluator CLIP-S | grammatical | precision | recall | repetition | words | CIDEr-D |\n|---|---:|---:|---:|---:|---:|---:|---:|\n";

/// A table row of one model's results (one seed).
fn table_row(label: &str, e: &Evaluated) -> String {
    let q = &e.quality;
    format!(
        "| {} | {:.4} | {:.1}% | {:.3} | {:.3} | {:.1}% | {:.1} | {:.3} |\n",
        label,
        e.score,
        100.0 * q.grammatical,
        q.precision,
        q.recall,
        100.0 * q.repetition,
        q.words,
        q.cider_d
    )
}

/// `mean{unit} ± sd` of `xs` to `decimals` places; the mean alone for one value.
fn mean_sd_cell(xs: &[f64], decimals: usize, unit: &str) -> String {
    let m = mean(xs);
    match sample_sd(xs) {
        Some(sd) => format!("{m:.decimals$}{unit} ± {sd:.decimals$}"),
        None => format!("{m:.decimals$}{unit}"),
    }
}

/// The table of mean ± sample standard deviation over the seeds, one row
/// per model of the first seed (every seed runs the same models).
fn mean_sd_table(runs: &[SeedRun]) -> String {
    let mut r = String::from(TABLE_HEAD);
    let Some(first) = runs.first() else {
        return r;
    };
    for (i, e) in first.results.iter().enumerate() {
        let cols: Vec<[f64; 7]> = runs
            .iter()
            .filter_map(|run| run.results.get(i).map(Evaluated::columns))
            .collect();
        let mut row = format!("| {} |", e.name);
        for (c, (decimals, unit)) in [
            (4, ""),
            (1, "%"),
            (3, ""),
            (3, ""),
            (1, "%"),
            (1, ""),
            (3, ""),
        ]
        .into_iter()
        .enumerate()
        {
            let xs: Vec<f64> = cols.iter().map(|v| v[c]).collect();
            row.push_str(&format!(" {} |", mean_sd_cell(&xs, decimals, unit)));
        }
        r.push_str(&row);
        r.push('\n');
    }
    r
}

/// Each model's precision per kind of claim (the oracle's matching), mean ±
/// sample standard deviation over the seeds that stated claims of that kind,
/// with how many those are when not all; "–" where none did.
fn claim_kind_table(runs: &[SeedRun]) -> String {
    let mut r = String::from("| model |");
    for kind in FactKind::ALL {
        r.push_str(&format!(" {} |", kind.name()));
    }
    r.push_str("\n|---|");
    r.push_str(&"---:|".repeat(FactKind::ALL.len()));
    r.push('\n');
    let Some(first) = runs.first() else {
        return r;
    };
    for (i, e) in first.results.iter().enumerate() {
        r.push_str(&format!("| {} |", e.name));
        for kind in FactKind::ALL {
            let xs: Vec<f64> = runs
                .iter()
                .filter_map(|run| run.results.get(i)?.quality.facts.precision(kind))
                .collect();
            if xs.is_empty() {
                r.push_str(" – |");
                continue;
            }
            r.push_str(&format!(" {}", mean_sd_cell(&xs, 3, "")));
            if xs.len() < runs.len() {
                r.push_str(&format!(" ({} of {} seeds)", xs.len(), runs.len()));
            }
            r.push_str(" |");
        }
        r.push('\n');
    }
    r
}

/// The reports's inputs besides the runs: `val_images`, the val images the
/// phases validate on.
#[allow(clippy::too_many_arguments)]
fn render_report(
    runs: &[SeedRun],
    out: &Path,
    charts: &crate::report::Report,
    secs: f64,
    scatter_png: &Path,
    verdict_md: &str,
    val_images: usize,
) -> String {
    let several = runs.len() > 1;
    let mut r = String::new();
    r.push_str("# dicoflow demo: XE vs DiCO vs SCST on the synthetic world\n\n");
    r.push_str(&format!(
        "Test split, greedy captions. Evaluator score = CLIP-S of the demo's own evaluator \
         (2.5 · max(cos, 0), no prefix: the evaluator was trained without one). Fluency and truth \
         come from the oracle judge. Whole run: {secs:.0} s.\n\n"
    ));
    if several {
        let seeds: Vec<String> = runs.iter().map(|r| r.seed.to_string()).collect();
        r.push_str(&format!(
            "Mean ± sample standard deviation (n − 1) over {} seeds ({}) of the captioners \
             (XE, the fine-tuning phases, the reward cache); the world and the evaluator are \
             the same for every seed.\n\n",
            runs.len(),
            seeds.join(", ")
        ));
        r.push_str(&mean_sd_table(runs));
        r.push_str("\n### Per seed\n\n");
        r.push_str(
            &TABLE_HEAD
                .replacen("| model |", "| seed | model |", 1)
                .replacen("|---|", "|---:|---|", 1),
        );
        for run in runs {
            for e in &run.results {
                r.push_str(&table_row(&format!("{} | {}", run.seed, e.name), e));
            }
        }
    } else {
        r.push_str(TABLE_HEAD);
        for e in runs.iter().flat_map(|r| &r.results) {
            r.push_str(&table_row(&e.name, e));
        }
    }
    r.push_str(
        "\n### Precision by kind of claim\n\nOf the claims each model's test captions state, \
         the share that is true, per kind (the oracle's matching of referents to objects; \
         `datasets/synthetic_world.md`, section 4): where precision is lost.",
    );
    if several {
        r.push_str(
            " Mean ± sample standard deviation over the seeds whose captions state claims of \
             that kind (all, unless the cell says how many); \"–\": none did.",
        );
    } else {
        r.push_str(" \"–\": the captions state no claim of that kind.");
    }
    r.push_str("\n\n");
    r.push_str(&claim_kind_table(runs));
    r.push_str(&format!(
        "\n## Reward during fine-tuning\n\nMean evaluator reward of the candidates (w = 2, no \
         prefix, no clipping) over the first and the last steps of each phase ({TREND_STEPS} \
         each, or half of a shorter phase):\n\n"
    ));
    for run in runs {
        for (name, dir) in &run.rl_dirs {
            if let Some((a, b, n)) = metric_trend(dir, "evaluator/mean", TREND_STEPS) {
                let steps = if n == 1 { "step" } else { "steps" };
                if several {
                    r.push_str(&format!(
                        "- seed {}, {name}: {a:.4} → {b:.4} (first vs last {n} {steps})\n",
                        run.seed
                    ));
                } else {
                    r.push_str(&format!(
                        "- {name}: {a:.4} → {b:.4} (first vs last {n} {steps})\n"
                    ));
                }
            }
        }
    }
    r.push_str(&format!(
        "\nPer step of training: the reward, validation CIDEr-D (greedy captions of {val_images} \
         val images, before training and every `validation.every` steps of each phase; `val/*` \
         in the logs), fluency (the \
         share of each batch's greedy captions that the oracle grammar accepts; the table above \
         judges the test split), candidate length and the share of candidates that end with \
         EOS. Offline DiCO's candidates and rewards are the cached ones of the XE model, so its \
         reward curve is flat by construction.\n\n",
    ));
    if several {
        r.push_str(&format!(
            "The curves of seed {} are shown; every seed's are in `seed-S/report/`.\n\n",
            runs[0].seed
        ));
    }
    for (metric, what) in EMBEDDED_CHARTS {
        if let Some(png) = charts.png.get(metric) {
            let rel = png.strip_prefix(out).unwrap_or(png);
            r.push_str(&format!("![{what}]({})\n\n", rel.display()));
        }
    }
    r.push_str(
        "## Reward vs fluency\n\nOne point per fine-tuned model and seed: x = grammaticality \
         lost against the same seed's XE model (percentage points of the test split; right is \
         less fluent), y = evaluator CLIP-S gained against it (up is more reward). Reward \
         hacking shows as points far right; the claim is points up and near x = 0.\n\n",
    );
    let rel = scatter_png.strip_prefix(out).unwrap_or(scatter_png);
    r.push_str(&format!(
        "![evaluator CLIP-S gained vs grammaticality lost]({}) ([SVG]({}))\n\n",
        rel.display(),
        rel.with_extension("svg").display()
    ));
    r.push_str("## Verdict\n\nThe paper's claim, judged from the numbers above (test split, means over seeds):\n\n");
    r.push_str(verdict_md);
    r.push('\n');
    r.push_str("## Example captions\n\n");
    if several {
        r.push_str(&format!("Seed {}.\n\n", runs[0].seed));
    }
    for e in runs.iter().take(1).flat_map(|r| &r.results) {
        r.push_str(&format!("**{}**\n\n", e.name));
        for (k, c) in &e.examples {
            r.push_str(&format!("- `{k}`: {c}\n"));
        }
        r.push('\n');
    }
    if several {
        r.push_str(&format!(
            "Per-step logs: `{0}/evaluator/metrics.jsonl`, `{0}/seed-S/*/metrics.jsonl`; charts \
             (PNG and SVG) of every logged metric (reward, loss, KL, margins, ...): \
             `{0}/seed-S/report/summary.md` (`dicoflow report {0}/seed-S`).\n",
            out.display()
        ));
    } else {
        r.push_str(&format!(
            "Per-step logs: `{0}/*/metrics.jsonl`; charts (PNG and SVG) of every logged metric \
             (reward, loss, KL, margins, ...): `{0}/report/summary.md` (`dicoflow report {0}`).\n",
            out.display()
        ));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(values: &[f64]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let lines: String = values
            .iter()
            .enumerate()
            .map(|(t, v)| format!("{{\"time\":{t},\"metrics\":{{\"evaluator/mean\":{v}}}}}\n"))
            .collect();
        std::fs::write(dir.path().join(crate::flow::sink::METRICS_FILE), lines).unwrap();
        dir
    }

    #[test]
    fn the_claim_table_averages_each_kind_over_the_seeds_that_state_it() {
        let run = |seed: u64, shape: (usize, usize), relation: (usize, usize)| {
            let mut quality = CaptionQuality::default();
            quality.facts.stated[FactKind::Shape as usize] = shape.0;
            quality.facts.true_facts[FactKind::Shape as usize] = shape.1;
            quality.facts.stated[FactKind::Relation as usize] = relation.0;
            quality.facts.true_facts[FactKind::Relation as usize] = relation.1;
            SeedRun {
                seed,
                dir: PathBuf::new(),
                rl_dirs: Vec::new(),
                results: vec![Evaluated {
                    name: "XE".into(),
                    quality,
                    score: 0.0,
                    examples: Vec::new(),
                }],
            }
        };
        // Shape precision 0.25 and 0.5; relations stated by seed 1 only.
        let table = claim_kind_table(&[run(0, (8, 2), (0, 0)), run(1, (4, 2), (3, 3))]);
        let row = table.lines().nth(2).unwrap();
        assert_eq!(
            row, "| XE | – | 0.375 ± 0.177 | – | – | – | 1.000 (1 of 2 seeds) | – |",
            "{table}"
        );
        assert!(table
            .starts_with("| model | colour | shape | size | row | column | relation | count |"));
    }

    #[test]
    fn the_reward_trend_compares_windows_that_do_not_overlap() {
        let long: Vec<f64> = (0..50).map(f64::from).collect();
        let (a, b, n) = metric_trend(log_of(&long).path(), "evaluator/mean", 20).unwrap();
        assert_eq!((a, b, n), (9.5, 39.5, 20));
        // A phase of 6 steps: 3 and 3, not the same 6 twice.
        let short = [1.0, 1.0, 1.0, 4.0, 4.0, 4.0];
        let (a, b, n) = metric_trend(log_of(&short).path(), "evaluator/mean", 20).unwrap();
        assert_eq!((a, b, n), (1.0, 4.0, 3));
        let one = metric_trend(log_of(&[2.0]).path(), "evaluator/mean", 20).unwrap();
        assert_eq!(one, (2.0, 2.0, 1));
        assert!(metric_trend(log_of(&[]).path(), "evaluator/mean", 20).is_none());
    }

    #[test]
    fn the_report_counts_the_val_images_a_phase_validates_on() {
        let dico = load_phase(Phase::Dico, None).unwrap();
        assert_eq!(validated_images(&dico, 500), 200, "the files' max_images");
        assert_eq!(validated_images(&dico, 8), 8, "a world with fewer");
    }

    #[test]
    fn seeds_are_a_count_of_one_or_more() {
        assert_eq!(parse_seeds("3"), Ok(3));
        assert!(parse_seeds("0").unwrap_err().contains("at least one seed"));
        assert!(parse_seeds("x")
            .unwrap_err()
            .contains("not a number of seeds"));
    }
}
