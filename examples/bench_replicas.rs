//! Data-parallel training and resume benchmarks on the synthetic world (see
//! docs/benchmarks.md, "Data-parallel training and resume").
//!
//! ```text
//! cargo run --example bench_replicas -- train  [REPS] [XE_IMAGES] [DICO_IMAGES]
//! cargo run --example bench_replicas -- bytes
//! cargo run --example bench_replicas -- resume [REPS]
//! ```
//!
//! - `train`: XE and DiCO training images/s of the demo's captioner (random
//!   evaluator/backbone weights, XE from scratch, DiCO from that XE run) on 2
//!   worker threads with `flow.devices = 1` and with `flow.devices = 2`
//!   (replicas), and on 2 processes of 1 worker each on loopback
//!   (`flow.devices = 2`, timely's cluster mode, this example spawning itself
//!   as `process P HOSTFILE PIPELINE RUN_DIR`), the same global batch (the
//!   demo's: 32 images per worker for XE, 8 for DiCO). Also the CPU seconds of
//!   each run (this process and its children, `/proc/self/stat`). One epoch of a world of `XE_IMAGES` / `DICO_IMAGES`
//!   training images per run; images/s is read from the run's metrics log
//!   after the first [`WARM_UP`] batch times; `REPS` runs per configuration,
//!   alternating, median reported. Also the all-reduce wait per step
//!   (`train/allreduce_s`) and the step time.
//! - `bytes`: parameters P of the demo and `paper` captioners and the bytes a
//!   replica moves per step, from the formula and from the chunks the
//!   reduce-scatter cuts (`dicoflow::flow::allreduce::split`).
//! - `resume`: seconds from `flow::run` to the first trained batch when
//!   resuming the demo's XE phase (4,000 images, 2 workers) at 90 % of its
//!   epoch, from the checkpoint's data cursors ("after") and from the same
//!   checkpoint without them ("before": the sources read and decode every
//!   row before it again and the device stage skips those batches).
//!
//! Validation and the fluency captions are turned off, checkpoints too
//! (except the one the resume benchmark resumes from), so a step is only the
//! training step. Everything lives under the temp dir
//! (`dicoflow-bench-replicas`); the world is generated on first use.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use dicoflow::cli::demo::{fill_phase, load_phase, Fill, Phase};
use dicoflow::data::world::{write_world, WorldSpec};
use dicoflow::data::{LayoutOptions, ShardIndex, ShardSource, SourceConfig, SourceItem};
use dicoflow::flow::allreduce::{split, Combine, Contribution};
use dicoflow::flow::{run, Pipeline, RunOptions, Snapshot};
use dicoflow::model::captioner::{Captioner, CaptionerConfig, Vocab};
use dicoflow::model::clip::{Clip, ClipConfig};
use dicoflow::train::stages::registry;

/// Batch times excluded from images/s at the start of each run (model
/// building is before the first batch already; these cover the first
/// steps' allocations and the pipeline filling up).
const WARM_UP: usize = 3;
const WORKERS: u32 = 2;

fn root() -> PathBuf {
    std::env::temp_dir().join("dicoflow-bench-replicas")
}

/// The synthetic world with `images` training images (no val/test), under
/// `root()/world-N`; returns its train split.
fn world(images: usize) -> PathBuf {
    let dir = root().join(format!("world-{images}"));
    let spec = WorldSpec {
        train: images,
        val: 0,
        test: 0,
        ..Default::default()
    };
    write_world(&dir, &spec, false, |_| {}).expect("writing the world");
    dir.join("train")
}

/// The demo's word vocabulary, from the training captions of `train`.
fn vocab(train: &Path) -> Vocab {
    let index = Arc::new(ShardIndex::open(train, &LayoutOptions::default()).expect("index"));
    let cfg = SourceConfig {
        shuffle: false,
        ..Default::default()
    };
    let mut captions = Vec::new();
    for item in ShardSource::new(index, cfg, 0, 1).expect("source") {
        if let SourceItem::Sample(s) = item.expect("row") {
            captions.extend(s.captions);
        }
    }
    Vocab::build(&captions, 1, None)
}

/// The demo's evaluator config (`pipelines/demo/evaluator.toml`).
fn evaluator_config() -> ClipConfig {
    let p = load_phase(Phase::Evaluator, None).expect("evaluator.toml");
    let clip = p.device[0]
        .settings
        .get("train")
        .and_then(|t| t.get("clip"))
        .cloned()
        .expect("train.clip");
    clip.try_into().expect("CLIP config")
}

/// Writes what the demo's XE and DiCO phases read under `out` (the demo's
/// `runs/demo`): `vocab.json` and a random evaluator (`evaluator/`), the
/// frozen backbone of both and DiCO's reward. Returns the vocabulary size.
fn prepare(out: &Path, train: &Path) -> usize {
    let v = vocab(train);
    std::fs::create_dir_all(out.join("evaluator")).expect("mkdir");
    // `fill_phase` counts the steps of the demo's data, `runs/demo/data`.
    let data = out.join("data");
    if !data.exists() {
        let world = train.parent().expect("world dir");
        std::os::unix::fs::symlink(world, &data).expect("symlink to the world");
    }
    std::fs::write(
        out.join("vocab.json"),
        serde_json::to_string(&v).expect("json"),
    )
    .expect("vocab.json");
    let cfg = evaluator_config();
    tch::manual_seed(0);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _clip = Clip::new(vs.root(), &cfg).expect("CLIP");
    dicoflow::model::weights::save_safetensors(&vs, out.join("evaluator/model.safetensors"))
        .expect("weights");
    std::fs::write(
        out.join("evaluator/clip_config.json"),
        serde_json::to_string_pretty(&cfg).expect("json"),
    )
    .expect("clip_config.json");
    v.len()
}

fn set(table: &mut toml::Table, path: &[&str], value: toml::Value) {
    let (last, parents) = path.split_last().expect("path");
    let mut t = table;
    for key in parents {
        t = t
            .entry(key.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .expect("table");
    }
    t.insert(last.to_string(), value);
}

/// The demo's `phase` as `dicoflow demo` runs it with its paths under `out`,
/// on `data` (one epoch), with `devices` replicas, its outputs in `stage_out`,
/// no validation, fluency captions or checkpoints, steps from the data.
fn phase(phase: Phase, out: &Path, vocab_size: usize, data: &Path, devices: usize) -> Pipeline {
    let fill = Fill {
        out,
        seed_out: out,
        seed: 0,
        workers: WORKERS,
        vocab_size,
        evaluator_epochs: None,
        xe_epochs: Some(1),
        rl_epochs: Some(1),
        rl_lr: None,
        beta: None,
    };
    let mut p = fill_phase(phase, load_phase(phase, None).expect("phase"), &fill).expect("fill");
    p.source.path = Some(data.to_path_buf());
    p.source.epochs = 1;
    p.flow.devices = devices;
    let s = &mut p.device[0].settings;
    s.remove("validation");
    s.remove("fluency_judge");
    set(s, &["checkpoint_every"], toml::Value::Integer(0));
    set(s, &["resume"], toml::Value::Boolean(false));
    set(
        s,
        &["train", "schedule", "total_steps"],
        toml::Value::Integer(0),
    );
    p
}

fn with_out(mut p: Pipeline, stage_out: &Path) -> Pipeline {
    set(
        &mut p.device[0].settings,
        &["out"],
        toml::Value::String(stage_out.display().to_string()),
    );
    p
}

/// Runs `p` on [`WORKERS`] threads with its metrics log in `run_dir`
/// (emptied first); returns the wall-clock seconds of `flow::run` and its
/// telemetry.
fn run_in(p: &Pipeline, run_dir: &Path) -> (f64, Snapshot) {
    let _ = std::fs::remove_dir_all(run_dir);
    let opts = RunOptions {
        run_dir: Some(run_dir.to_path_buf()),
        ..RunOptions::threads(WORKERS as usize)
    };
    let start = Instant::now();
    let s = run(p, &registry(), &opts).expect("run");
    (start.elapsed().as_secs_f64(), s.telemetry)
}

/// CPU seconds (user + system) of this process and of its children that
/// have been waited for: fields 14–17 of `/proc/self/stat`, in clock ticks.
fn cpu_seconds() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks_per_s = *TICKS.get_or_init(|| {
        let out = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .expect("getconf CLK_TCK");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("CLK_TCK")
    });
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The fields after the command name, which is in parentheses and may
    // hold spaces: the first of them is field 3.
    let rest = &stat[stat.rfind(')').expect("stat") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11..15]
        .iter()
        .map(|f| f.parse::<f64>().expect("ticks"))
        .sum();
    ticks / ticks_per_s
}

/// Runs `p` on 2 processes of 1 worker each on loopback (this example as
/// `process P ...`, `flow.devices` as `p` has it), process 0 writing the
/// metrics log to `run_dir` (emptied first); returns the wall-clock seconds
/// from spawning to both exits.
fn run_processes(p: &Pipeline, run_dir: &Path) -> f64 {
    let _ = std::fs::remove_dir_all(run_dir);
    let dir = run_dir.with_extension("cluster");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let file = dir.join("pipeline.toml");
    std::fs::write(&file, toml::to_string(p).expect("toml")).expect("pipeline file");
    // Free ports below the ephemeral range (docs/distributed.md).
    let ports: Vec<u16> = (20_000..32_000u16)
        .step_by(97)
        .filter(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .take(2)
        .collect();
    let hosts = dir.join("hosts");
    let lines: String = ports.iter().map(|p| format!("127.0.0.1:{p}\n")).collect();
    std::fs::write(&hosts, lines).expect("hostfile");
    let exe = std::env::current_exe().expect("this example's path");
    let start = Instant::now();
    let children: Vec<std::process::Child> = (0..2)
        .map(|process| {
            std::process::Command::new(&exe)
                .arg("process")
                .arg(process.to_string())
                .arg(&hosts)
                .arg(&file)
                .arg(run_dir)
                .spawn()
                .expect("spawn a process")
        })
        .collect();
    for mut child in children {
        assert!(child.wait().expect("wait").success(), "a process failed");
    }
    start.elapsed().as_secs_f64()
}

/// Process `process` of [`run_processes`].
fn process(process: usize, hosts: &Path, file: &Path, run_dir: &Path) {
    let text = std::fs::read_to_string(file).expect("pipeline file");
    let p = Pipeline::from_toml(&text, file).expect("pipeline");
    let addresses: Vec<String> = std::fs::read_to_string(hosts)
        .expect("hostfile")
        .lines()
        .map(str::to_owned)
        .collect();
    // As `dicoflow train` does: the processes share the machine's cores.
    dicoflow::cli::cores::share_cores(&addresses, process);
    let opts = RunOptions {
        communication: timely::CommunicationConfig::Cluster {
            threads: 1,
            process,
            addresses,
            report: false,
            zerocopy: false,
        },
        run_dir: (process == 0).then(|| run_dir.to_path_buf()),
        ..RunOptions::threads(1)
    };
    run(&p, &registry(), &opts).expect("run");
}

/// One line of the metrics log.
struct Line {
    time: u64,
    samples: u64,
    elapsed_s: f64,
    metrics: BTreeMap<String, f64>,
}

fn log(run_dir: &Path) -> Vec<Line> {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).expect("metrics log");
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("time").is_some())
        .map(|v| Line {
            time: v["time"].as_u64().unwrap_or_default(),
            samples: v["samples"].as_u64().unwrap_or_default(),
            elapsed_s: v["elapsed_s"].as_f64().unwrap_or_default(),
            metrics: serde_json::from_value(v["metrics"].clone()).unwrap_or_default(),
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// What one training run measured.
struct Measured {
    images_per_s: f64,
    /// Median seconds between the ends of consecutive batch times.
    step_s: f64,
    /// Median over steps of the shortest `train/allreduce_s` of the
    /// replicas (the exchange and reduction alone).
    allreduce_min_s: f64,
    /// Median over steps of the longest (also waiting for the slower
    /// replica's step).
    allreduce_max_s: f64,
    steps: usize,
    /// CPU seconds of the whole run (model building included), every
    /// process's.
    cpu_s: f64,
}

/// Images/s over the batch times after the first [`WARM_UP`]: the images of
/// those batches (every replica's) over the time from the end of batch
/// `WARM_UP − 1` to the end of the last one (a batch time ends when its last
/// replica has logged it).
fn measure(lines: &[Line]) -> Measured {
    let mut by_time: BTreeMap<u64, (u64, f64)> = BTreeMap::new();
    for l in lines {
        let e = by_time.entry(l.time).or_insert((0, 0.0));
        e.0 += l.samples;
        e.1 = e.1.max(l.elapsed_s);
    }
    let times: Vec<(u64, f64)> = by_time.into_values().collect();
    assert!(times.len() > WARM_UP + 1, "too few batches to measure");
    let start = times[WARM_UP - 1].1;
    let (end, images) = times[WARM_UP..]
        .iter()
        .fold((start, 0), |(_, n), &(s, e)| (e, n + s));
    let steps: Vec<f64> = times
        .windows(2)
        .skip(WARM_UP)
        .map(|w| w[1].1 - w[0].1)
        .collect();
    // Per batch time, the replicas' waits: the last replica to hand its
    // gradient over waits least, for the exchange and the reduction alone;
    // the first waits also for the others to finish their step.
    let mut waits: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for l in lines.iter().filter(|l| l.time >= WARM_UP as u64) {
        if let Some(&w) = l.metrics.get("train/allreduce_s") {
            waits.entry(l.time).or_default().push(w);
        }
    }
    let least = waits
        .values()
        .map(|w| w.iter().copied().fold(f64::INFINITY, f64::min));
    let most = waits
        .values()
        .map(|w| w.iter().copied().fold(0.0, f64::max));
    Measured {
        images_per_s: images as f64 / (end - start),
        step_s: median(steps),
        allreduce_min_s: median(least.collect()),
        allreduce_max_s: median(most.collect()),
        steps: times.len(),
        cpu_s: f64::NAN,
    }
}

fn train(reps: usize, xe_images: usize, dico_images: usize) {
    let out = root().join("train");
    let demo_world = world(4_000); // the vocabulary of the demo's world
    let vocab_size = prepare(&out, &demo_world);
    let xe_data = world(xe_images);
    let dico_data = world(dico_images);
    println!(
        "torch threads {}, workers {WORKERS}, warm-up {WARM_UP} batch times excluded",
        tch::get_num_threads()
    );
    // DiCO's init and reference: one XE run on 1 device into out/xe (also
    // warms the page cache and the allocator).
    let xe = |devices| phase(Phase::Xe, &out, vocab_size, &xe_data, devices);
    let (s, _) = run_in(&with_out(xe(1), &out.join("xe")), &out.join("runs/xe-init"));
    println!("XE init run: {s:.1} s");
    let dico = |devices| phase(Phase::Dico, &out, vocab_size, &dico_data, devices);
    for (name, make) in [
        ("XE", &xe as &dyn Fn(usize) -> Pipeline),
        ("DiCO", &dico as &dyn Fn(usize) -> Pipeline),
    ] {
        let mut results: BTreeMap<&str, Vec<Measured>> = BTreeMap::new();
        let configurations = [
            ("1 device, 2 threads", 1, false),
            ("2 replicas, 2 threads", 2, false),
            ("2 replicas, 2 processes", 2, true),
        ];
        for rep in 0..reps {
            for (config, devices, processes) in configurations {
                let tag = format!(
                    "{}-d{devices}{}-r{rep}",
                    name.to_lowercase(),
                    if processes { "-p2" } else { "" }
                );
                let p = with_out(make(devices), &out.join("outs").join(&tag));
                let run_dir = out.join("runs").join(&tag);
                let cpu = cpu_seconds();
                let wall = if processes {
                    run_processes(&p, &run_dir)
                } else {
                    run_in(&p, &run_dir).0
                };
                let cpu = cpu_seconds() - cpu;
                let mut m = measure(&log(&run_dir));
                m.cpu_s = cpu;
                println!(
                    "{name}, {config}, rep {rep}: {:.1} images/s, step {:.3} s, \
                     all-reduce wait {:.4} s (shortest replica) {:.4} s (longest), \
                     {} batches, run {wall:.1} s, {cpu:.1} CPU-s",
                    m.images_per_s, m.step_s, m.allreduce_min_s, m.allreduce_max_s, m.steps
                );
                results.entry(config).or_default().push(m);
            }
        }
        for (devices, ms) in &results {
            let ips = median(ms.iter().map(|m| m.images_per_s).collect());
            let step = median(ms.iter().map(|m| m.step_s).collect());
            let least = median(ms.iter().map(|m| m.allreduce_min_s).collect());
            let most = median(ms.iter().map(|m| m.allreduce_max_s).collect());
            let all: Vec<String> = ms
                .iter()
                .map(|m| format!("{:.1}", m.images_per_s))
                .collect();
            let cpu = median(ms.iter().map(|m| m.cpu_s).collect());
            println!(
                "{name}, {devices}: median {ips:.1} images/s ({}), step {step:.3} s, \
                 all-reduce wait {least:.4} s shortest ({:.1} % of the step), \
                 {most:.4} s longest, {cpu:.1} CPU-s per run",
                all.join(", "),
                100.0 * least / step
            );
        }
    }
}

/// Trainable parameters of a captioner built from `cfg` (backbone excluded),
/// counted from its variables.
fn parameters(cfg: &CaptionerConfig) -> i64 {
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _m = Captioner::new(vs.root(), cfg).expect("captioner");
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}

/// Bytes replica `r` of `n` sends per step, from the chunks the
/// reduce-scatter cuts a gradient of `p` values into: the chunks owned by
/// another replica (scatter), and its own reduced chunks once to each other
/// replica (gather). Values only (4 bytes each), no message headers.
fn sent_bytes(p: usize, n: u32, r: u32) -> u64 {
    let chunks = split(
        Contribution {
            time: 0,
            combine: Combine::Mean,
            replicas: n,
            count: 1.0,
            grad: vec![0.0; p],
        },
        r,
    );
    let mut scatter = 0u64;
    let mut gather = 0u64;
    for c in chunks {
        let bytes = 4 * c.values.len() as u64;
        if c.chunk % n == r {
            gather += bytes * u64::from(n - 1);
        } else {
            scatter += bytes;
        }
    }
    scatter + gather
}

fn bytes() {
    let demo_vocab = {
        let demo_world = world(4_000);
        vocab(&demo_world).len()
    };
    let xe = load_phase(Phase::Xe, None).expect("xe.toml");
    let mut demo: CaptionerConfig = xe.device[0]
        .settings
        .get("captioner")
        .cloned()
        .expect("captioner")
        .try_into()
        .expect("captioner config");
    demo.tokens.vocab_size = demo_vocab as i64;
    for (name, cfg) in [("demo", demo), ("paper", CaptionerConfig::paper())] {
        let p = parameters(&cfg);
        assert_eq!(p, cfg.num_parameters(), "{name}: counted vs config");
        println!(
            "{name}: P = {p} trainable parameters ({:.1} MB of f32)",
            4.0 * p as f64 / 1e6
        );
        for n in [2u32, 8] {
            let formula = 2.0 * 4.0 * p as f64 * f64::from(n - 1) / f64::from(n);
            let sent: Vec<u64> = (0..n).map(|r| sent_bytes(p as usize, n, r)).collect();
            println!(
                "  N = {n}: formula 2·4P·(N−1)/N = {:.3} MB sent per replica per step; \
                 chunks: min {:.3} MB, max {:.3} MB (replica 0 {:.3} MB)",
                formula / 1e6,
                *sent.iter().min().expect("replicas") as f64 / 1e6,
                *sent.iter().max().expect("replicas") as f64 / 1e6,
                sent[0] as f64 / 1e6,
            );
        }
    }
}

/// The demo's XE phase on 4,000 images, one epoch; a checkpoint at the
/// batch `at` of the epoch's `batches`; then resumes from it with and
/// without cursors.
fn resume(reps: usize) {
    let out = root().join("resume");
    let data = world(4_000);
    let vocab_size = prepare(&out, &data);
    let base = phase(Phase::Xe, &out, vocab_size, &data, 1);
    let per_worker = 4_000usize.div_ceil(WORKERS as usize);
    let batches = per_worker.div_ceil(base.flow.batch_size) as u64;
    let at = batches * 9 / 10;
    println!("epoch of {batches} batch times; checkpoint after batch {at} (step {at})");
    let source = out.join("xe-source");
    let ckpt = source.join("checkpoints").join(format!("step-{at:08}"));
    if !ckpt.is_dir() {
        let mut p = with_out(base.clone(), &source);
        set(
            &mut p.device[0].settings,
            &["checkpoint_every"],
            toml::Value::Integer(at as i64),
        );
        set(
            &mut p.device[0].settings,
            &["keep_last"],
            toml::Value::Integer(1),
        );
        let (s, _) = run_in(&p, &out.join("runs/source"));
        println!("run that writes the checkpoint: {s:.1} s");
    }
    assert!(ckpt.is_dir(), "no checkpoint at {}", ckpt.display());
    let mut rows: BTreeMap<&str, Vec<(f64, f64, u64, u64)>> = BTreeMap::new();
    for rep in 0..reps {
        for (name, cursors) in [("before", false), ("after", true)] {
            let tag = format!("{name}-r{rep}");
            let dir = out.join("outs").join(&tag);
            let _ = std::fs::remove_dir_all(&dir);
            let into = dir
                .join("checkpoints")
                .join(ckpt.file_name().expect("name"));
            std::fs::create_dir_all(&into).expect("mkdir");
            for f in std::fs::read_dir(&ckpt).expect("checkpoint") {
                let f = f.expect("entry").path();
                std::fs::copy(&f, into.join(f.file_name().expect("name"))).expect("copy");
            }
            if !cursors {
                let path = into.join("state.json");
                let mut state: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&path).expect("state"))
                        .expect("state json");
                state["cursors"] = serde_json::Value::Array(Vec::new());
                std::fs::write(&path, state.to_string()).expect("state");
            }
            let mut p = with_out(base.clone(), &dir);
            set(
                &mut p.device[0].settings,
                &["resume"],
                toml::Value::Boolean(true),
            );
            let run_dir = out.join("runs").join(&tag);
            let (wall, telemetry) = run_in(&p, &run_dir);
            let lines = log(&run_dir);
            let first = lines
                .iter()
                .filter(|l| l.metrics.contains_key("train/loss"))
                .map(|l| l.elapsed_s)
                .fold(f64::INFINITY, f64::min);
            let items = |stage: &str| telemetry.stage(stage).map_or(0, |s| s.items);
            let trained: u64 = lines
                .iter()
                .filter(|l| l.metrics.contains_key("train/loss"))
                .map(|l| l.samples)
                .sum();
            println!(
                "{name} rep {rep}: first trained batch at {first:.2} s, run {wall:.2} s, \
                 rows read {} (source), images decoded {} (preprocess), trained {trained}",
                items("source"),
                items("preprocess"),
            );
            rows.entry(name)
                .or_default()
                .push((first, wall, items("source"), items("preprocess")));
        }
    }
    for (name, r) in rows {
        println!(
            "{name}: median first trained batch {:.2} s, median run {:.2} s, rows read {}, \
             images decoded {}",
            median(r.iter().map(|x| x.0).collect()),
            median(r.iter().map(|x| x.1).collect()),
            r[0].2,
            r[0].3
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: usize| {
        args.get(i)
            .map(|s| s.parse().expect("a number"))
            .unwrap_or(default)
    };
    match args.first().map(String::as_str) {
        Some("train") => train(arg(1, 3), arg(2, 1024), arg(3, 256)),
        Some("bytes") => bytes(),
        Some("resume") => resume(arg(1, 3)),
        Some("process") => process(
            arg(1, 0),
            Path::new(&args[2]),
            Path::new(&args[3]),
            Path::new(&args[4]),
        ),
        _ => eprintln!(
            "usage: bench_replicas train [REPS] [XE_IMAGES] [DICO_IMAGES] | bytes | resume [REPS]"
        ),
    }
}
