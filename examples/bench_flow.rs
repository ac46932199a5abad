//! Dataflow engine benchmarks on the synthetic world (see docs/benchmarks.md).
//!
//! ```text
//! cargo run --example bench_flow -- overlap  [IMAGES]   # CPU ‖ device overlap
//! cargo run --example bench_flow -- memory   [IMAGES]   # peak RSS, 1× vs 10× data, slow device
//! cargo run --example bench_flow -- scaling  [IMAGES]   # 1 vs 2 workers, decode-bound
//! ```
//! Each configuration of `memory` runs in a fresh process (`rss` mode) so its
//! VmHWM is its own.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use dicoflow::data::world::{write_world, WorldSpec};
use dicoflow::flow::builtin::{Delay, DelayConfig};
use dicoflow::flow::{
    run, DeviceBatch, DeviceStage, Pipeline, Registry, RunOptions, Sample, StageSpec,
};

fn world(images: usize) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dicoflow-bench-flow-{images}"));
    let spec = WorldSpec {
        train: images,
        val: 0,
        test: 0,
        ..Default::default()
    };
    write_world(&dir, &spec, false, |_| {}).expect("writing the world");
    dir.join("train")
}

fn table(text: &str) -> toml::Table {
    toml::from_str(text).expect("settings")
}

fn pipeline(data: &Path, size: u32, device: StageSpec, k: u64) -> Pipeline {
    let mut p = Pipeline::default();
    p.source.path = Some(data.to_path_buf());
    p.flow.batch_size = 32;
    p.flow.max_in_flight = k;
    p.cpu = vec![StageSpec::new("preprocess").with_settings(table(&format!("size = {size}")))];
    p.device = vec![device];
    p
}

fn timed(p: &Pipeline, workers: usize) -> (f64, u64) {
    let start = Instant::now();
    let s = run(p, &Registry::with_builtins(), &RunOptions::threads(workers)).expect("run");
    (start.elapsed().as_secs_f64(), s.telemetry.samples)
}

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn overlap(images: usize) {
    let data = world(images);
    let none = StageSpec::new("delay");
    let _ = timed(&pipeline(&data, 224, none.clone(), 4), 1); // warm the page cache
    let (cpu_s, n) = timed(&pipeline(&data, 224, none, 4), 1);
    let per_sample_ms = cpu_s * 1e3 / n as f64;
    let delay = DelayConfig {
        ms_per_sample: per_sample_ms,
        spin: true,
        ..Default::default()
    };
    // The device stage alone, on the same batches (32 samples).
    let mut stage = Delay(delay.clone());
    let start = Instant::now();
    let mut left = n as usize;
    while left > 0 {
        let take = left.min(32);
        let mut batch = DeviceBatch {
            samples: vec![dummy(); take],
            ..Default::default()
        };
        stage.process(&mut batch).expect("delay");
        left -= take;
    }
    let dev_s = start.elapsed().as_secs_f64();
    let spec = StageSpec::new("delay").with_settings(table(&format!(
        "ms_per_sample = {per_sample_ms}\nspin = true"
    )));
    let (e2e_s, _) = timed(&pipeline(&data, 224, spec, 8), 1);
    let slowest = cpu_s.max(dev_s);
    println!("overlap: {n} images, 1 worker, 224 px");
    println!("  CPU stages alone   {cpu_s:.3} s");
    println!("  device alone       {dev_s:.3} s ({per_sample_ms:.3} ms/sample, spinning)");
    println!("  end to end         {e2e_s:.3} s");
    println!(
        "  slowest alone / end to end = {:.2} (1.0 = perfect overlap, 0.5 = serial)",
        slowest / e2e_s
    );
}

fn dummy() -> Sample {
    Sample {
        key: String::new(),
        captions: Vec::new(),
        addr: dicoflow::data::RowAddr {
            shard: 0,
            row_group: 0,
            row: 0,
        },
        worker: 0,
        seq: 0,
        image: Vec::new(),
        pixels: Vec::new(),
        size: 0,
    }
}

fn rss(data: &str) {
    let spec = StageSpec::new("delay").with_settings(table("ms_per_batch = 4.0"));
    let p = pipeline(Path::new(data), 224, spec, 4);
    let s = run(&p, &Registry::with_builtins(), &RunOptions::threads(1)).expect("run");
    println!(
        "{} {} {} {}",
        s.telemetry.samples,
        vm_hwm_kib(),
        s.telemetry.max_in_flight,
        s.telemetry.max_device_held
    );
}

fn memory(images: usize) {
    let me = std::env::current_exe().expect("own path");
    println!("memory: slow device (4 ms/batch, sleeping), K = 4, batch 32, 1 worker, 224 px");
    let mut peaks = Vec::new();
    for n in [images, 10 * images] {
        let data = world(n);
        let out = Command::new(&me)
            .arg("rss")
            .arg(&data)
            .output()
            .expect("child run");
        let text = String::from_utf8_lossy(&out.stdout);
        let f: Vec<u64> = text
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        println!(
            "  {:>6} images: peak RSS {:>7.1} MiB, max batches in flight {}, max samples held by the device {}",
            f[0],
            f[1] as f64 / 1024.0,
            f[2],
            f[3]
        );
        peaks.push(f[1] as f64);
    }
    println!("  10× data / 1× data peak RSS = {:.3}", peaks[1] / peaks[0]);
}

fn scaling(images: usize) {
    let data = world(images);
    let none = StageSpec::new("delay");
    let _ = timed(&pipeline(&data, 224, none.clone(), 8), 1);
    println!("scaling: {images} images, decode-bound (224 px, no device cost), K = 8");
    let mut rates = Vec::new();
    for w in [1, 2] {
        let (s, n) = timed(&pipeline(&data, 224, none.clone(), 8), w);
        println!("  {w} worker(s): {s:.3} s, {:.0} images/s", n as f64 / s);
        rates.push(n as f64 / s);
    }
    println!("  speed-up 2 vs 1 = {:.2}", rates[1] / rates[0]);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("overlap");
    let n = |d: usize| args.get(2).and_then(|a| a.parse().ok()).unwrap_or(d);
    match mode {
        "overlap" => overlap(n(2000)),
        "memory" => memory(n(500)),
        "scaling" => scaling(n(2000)),
        "rss" => rss(&args[2]),
        other => eprintln!("unknown mode `{other}`: overlap, memory or scaling"),
    }
}
