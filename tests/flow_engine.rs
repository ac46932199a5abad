//! The dataflow engine: determinism across worker counts, flow control with a
//! slow device, faults, and pipeline-file errors.
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use dicoflow::data::writer::{ShardRow, ShardWriter, ShardWriterConfig};
use dicoflow::flow::{
    run, CpuStage, DeviceBatch, DeviceStage, FlowError, Pipeline, Registry, RunOptions, Sample,
    StageFailure, StageSpec,
};

/// `n` rows, 8×6 PNGs; rows whose index is in `bad` hold bytes that are no image.
fn dataset(dir: &Path, n: usize, group: usize, bad: &[usize]) -> Vec<String> {
    let cfg = ShardWriterConfig {
        rows_per_shard: 4 * group,
        rows_per_row_group: group,
        ..Default::default()
    };
    let mut w = ShardWriter::try_new(dir, "part", cfg).unwrap();
    let mut keys = Vec::new();
    for i in 0..n {
        let key = format!("k{i:05}");
        let image = if bad.contains(&i) {
            b"definitely not an image".to_vec()
        } else {
            common::png(8, 6, i as u32)
        };
        w.push(ShardRow {
            key: key.clone(),
            image,
            image_path: None,
            captions: vec![format!("caption {i}")],
            extra: vec![],
        })
        .unwrap();
        keys.push(key);
    }
    w.finish().unwrap();
    keys
}

fn settings(text: &str) -> toml::Table {
    toml::from_str(text).unwrap()
}

fn pipeline(dir: &Path, batch: usize, k: u64) -> Pipeline {
    let mut p = Pipeline::default();
    p.source.path = Some(dir.to_path_buf());
    p.source.seed = 7;
    p.source.shuffle_buffer = 8;
    p.flow.batch_size = batch;
    p.flow.max_in_flight = k;
    p.cpu = vec![StageSpec::new("preprocess").with_settings(settings("size = 4"))];
    p.device = vec![StageSpec::new("image_stats")];
    p
}

fn keep(workers: usize) -> RunOptions {
    RunOptions {
        keep_reports: true,
        ..RunOptions::threads(workers)
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn one_and_two_workers_process_the_same_samples_in_a_fixed_order() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dataset(dir.path(), 90, 5, &[]);
    let p = pipeline(dir.path(), 4, 3);
    let reg = Registry::with_builtins();
    let one = run(&p, &reg, &keep(1)).unwrap();
    let two = run(&p, &reg, &keep(2)).unwrap();
    assert_eq!(sorted(one.keys()), keys);
    assert_eq!(sorted(two.keys()), keys);
    assert_eq!(one.telemetry.samples, 90);
    // Same seed and workers: the device sees the same batches in the same order.
    let again = run(&p, &reg, &keep(2)).unwrap();
    let batches = |s: &dicoflow::flow::RunSummary| {
        s.reports
            .iter()
            .map(|r| (r.time, r.keys.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(batches(&two), batches(&again));
    // A device batch is both workers' share of batch t: up to 2 × 4 samples.
    assert!(two.reports.iter().all(|r| r.samples <= 8));
    assert!(two.reports.iter().any(|r| r.samples > 4));
    // The device stage did real work on every batch.
    for r in &one.reports {
        let m = r.metrics["pixel_mean_r"];
        assert!(m.is_finite() && m.abs() < 3.0, "{m}");
    }
}

#[test]
fn a_slow_device_bounds_batches_in_flight_and_held_samples() {
    let small = tempfile::tempdir().unwrap();
    let large = tempfile::tempdir().unwrap();
    dataset(small.path(), 40, 5, &[]);
    dataset(large.path(), 400, 5, &[]);
    let reg = Registry::with_builtins();
    let (batch, k, workers) = (4usize, 2u64, 2usize);
    let mut held = Vec::new();
    for dir in [small.path(), large.path()] {
        let mut p = pipeline(dir, batch, k);
        p.device = vec![StageSpec::new("delay").with_settings(settings("ms_per_batch = 2.0"))];
        let s = run(&p, &reg, &RunOptions::threads(workers)).unwrap();
        assert!(s.telemetry.max_in_flight >= 1);
        assert!(
            s.telemetry.max_in_flight <= k,
            "{} batches in flight, K = {k}",
            s.telemetry.max_in_flight
        );
        let bound = k * (batch * workers) as u64;
        assert!(
            s.telemetry.max_device_held <= bound,
            "device held {} samples, bound {bound}",
            s.telemetry.max_device_held
        );
        held.push(s.telemetry.max_device_held);
    }
    // Ten times the data, not ten times the samples held.
    assert!(held[1] <= held[0].max(1) * 2, "{held:?}");
}

#[test]
fn bad_samples_are_counted_and_the_graph_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dataset(dir.path(), 30, 5, &[3, 17, 29]);
    let mut reg = Registry::with_builtins();
    /// Rejects captions mentioning a 1.
    struct NoOnes;
    impl CpuStage for NoOnes {
        fn process(&mut self, s: &mut Sample) -> Result<(), StageFailure> {
            if s.captions[0].contains('1') {
                return Err(StageFailure::new("has a one"));
            }
            Ok(())
        }
    }
    reg.register_cpu("no_ones", |_: toml::Table| {
        Ok(Box::new(NoOnes) as Box<dyn CpuStage>)
    });
    let mut p = pipeline(dir.path(), 4, 2);
    p.cpu.push(StageSpec::new("no_ones"));
    let s = run(&p, &reg, &keep(2)).unwrap();
    let errors = &s.telemetry;
    assert_eq!(errors.errors_of("preprocess"), 3);
    assert!(errors
        .errors
        .iter()
        .any(|e| e.stage == "preprocess" && e.reason == "image decode failed" && e.count == 3));
    let ones = keys
        .iter()
        .enumerate()
        .filter(|(i, _)| ![3, 17, 29].contains(i) && i.to_string().contains('1'))
        .count();
    assert_eq!(errors.errors_of("no_ones"), ones as u64);
    assert_eq!(s.telemetry.samples as usize, 30 - 3 - ones);
}

/// Panics on its third batch.
struct Boom(u32);
impl DeviceStage for Boom {
    fn process(&mut self, _: &mut DeviceBatch) -> Result<(), StageFailure> {
        self.0 += 1;
        if self.0 == 3 {
            panic!("boom on batch {}", self.0);
        }
        Ok(())
    }
}

#[test]
fn a_panicking_device_stage_stops_the_run_naming_the_stage() {
    let dir = tempfile::tempdir().unwrap();
    dataset(dir.path(), 200, 5, &[]);
    let mut reg = Registry::with_builtins();
    reg.register_device("boom", |_: toml::Table| {
        Ok(Box::new(Boom(0)) as Box<dyn DeviceStage>)
    });
    let mut p = pipeline(dir.path(), 4, 2);
    let mut spec = StageSpec::new("boom");
    spec.name = Some("exploder".into());
    p.device.push(spec);
    let start = Instant::now();
    let err = run(&p, &reg, &RunOptions::threads(2)).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(20));
    match &err {
        FlowError::StagePanicked { stage, message } => {
            assert_eq!(stage, "exploder");
            assert!(message.contains("boom on batch 3"), "{message}");
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(err.to_string().contains("exploder"));
}

#[test]
fn a_panicking_cpu_stage_stops_the_run_naming_the_stage() {
    let dir = tempfile::tempdir().unwrap();
    dataset(dir.path(), 100, 5, &[]);
    let mut reg = Registry::with_builtins();
    struct Bad;
    impl CpuStage for Bad {
        fn process(&mut self, s: &mut Sample) -> Result<(), StageFailure> {
            if s.key == "k00042" {
                panic!("cannot handle {}", s.key);
            }
            Ok(())
        }
    }
    reg.register_cpu("bad", |_: toml::Table| {
        Ok(Box::new(Bad) as Box<dyn CpuStage>)
    });
    let mut p = pipeline(dir.path(), 4, 2);
    p.cpu.push(StageSpec::new("bad"));
    let err = run(&p, &reg, &RunOptions::threads(2)).unwrap_err();
    assert!(
        matches!(&err, FlowError::StagePanicked { stage, message } if stage == "bad" && message.contains("k00042")),
        "{err}"
    );
}

#[test]
fn a_key_shared_by_two_shards_refuses_the_run_naming_both_files() {
    // Two datasets written into one folder, both keyed from k00000 (as two
    // img2dataset outputs are): the second's images would be scored and
    // trained as the first's, so the run must not start.
    let tmp = tempfile::tempdir().unwrap();
    for (prefix, seed) in [("a", 0u32), ("b", 100)] {
        let cfg = ShardWriterConfig {
            rows_per_shard: 8,
            rows_per_row_group: 4,
            ..Default::default()
        };
        let mut w = ShardWriter::try_new(tmp.path(), prefix, cfg).unwrap();
        for i in 0..6u32 {
            w.push(ShardRow {
                key: format!("k{i:05}"),
                image: common::png(8, 6, seed + i),
                image_path: None,
                captions: vec![format!("caption {i}")],
                extra: vec![],
            })
            .unwrap();
        }
        w.finish().unwrap();
    }
    let reg = Registry::with_builtins();
    let err = run(&pipeline(tmp.path(), 4, 2), &reg, &keep(1)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, FlowError::Data(_)), "{msg}");
    assert!(msg.contains("k00000"), "{msg}");
    let files: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    for f in &files {
        assert!(msg.contains(f.as_str()), "{msg} does not name {f}");
    }
}

#[test]
fn pipeline_files_name_the_bad_key() {
    let path = Path::new("pipelines/x.toml");
    let err = Pipeline::from_toml("[flow]\nbatch_sise = 3\n", path).unwrap_err();
    assert!(err.to_string().contains("batch_sise"), "{err}");
    assert!(err.to_string().contains("pipelines/x.toml"), "{err}");
    let err = Pipeline::from_toml("[flow]\nmax_in_flight = 0\n", path).unwrap_err();
    assert!(err.to_string().contains("flow.max_in_flight"), "{err}");

    let reg = Registry::with_builtins();
    let p = Pipeline::from_toml(
        "[[cpu]]\ntype = \"preprocess\"\n[cpu.settings]\nsise = 3\n",
        path,
    )
    .unwrap();
    let err = reg.check(&p).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("sise") && msg.contains("preprocess"), "{msg}");
    let p = Pipeline::from_toml("[[device]]\ntype = \"gpt9\"\n", path).unwrap();
    let msg = reg.check(&p).unwrap_err().to_string();
    assert!(msg.contains("gpt9") && msg.contains("image_stats"), "{msg}");
}

#[test]
fn telemetry_counts_items_per_stage() {
    let dir = tempfile::tempdir().unwrap();
    dataset(dir.path(), 40, 5, &[]);
    let p = pipeline(dir.path(), 4, 2);
    let s = run(&p, &Registry::with_builtins(), &RunOptions::threads(2)).unwrap();
    let t = &s.telemetry;
    let by_name: BTreeMap<&str, u64> = t
        .stages
        .iter()
        .map(|s| (s.name.as_str(), s.items))
        .collect();
    assert_eq!(by_name["source"], 40);
    assert_eq!(by_name["preprocess"], 40);
    assert_eq!(by_name["image_stats"], 40);
    assert_eq!(by_name["device:cpu"], 40);
    let text = t.to_string();
    assert!(
        text.contains("image_stats") && text.contains("errors: none"),
        "{text}"
    );
}

/// `RUN_DIR/metrics.jsonl` is changed only by a run's first batch line: a
/// run that fails before it (here a device stage that cannot be built)
/// leaves the earlier log as it was, and no log where there was none; a
/// resumed run appends; another run replaces it.
#[test]
fn a_run_that_fails_at_start_leaves_the_metrics_log_and_a_resumed_one_appends() {
    use dicoflow::flow::sink::{MetricsSink, METRICS_FILE};
    let data = tempfile::tempdir().unwrap();
    dataset(data.path(), 24, 4, &[]);
    let runs = tempfile::tempdir().unwrap();
    let log = runs.path().join(METRICS_FILE);
    let opts = RunOptions {
        run_dir: Some(runs.path().to_path_buf()),
        ..RunOptions::threads(1)
    };
    let mut reg = Registry::with_builtins();
    run(&pipeline(data.path(), 4, 2), &reg, &opts).unwrap();
    let first = std::fs::read_to_string(&log).unwrap();
    // 6 batches and the summary.
    assert_eq!(first.lines().count(), 7, "{first}");

    reg.register_device("unbuildable", |_: toml::Table| {
        Err::<Box<dyn DeviceStage>, _>(FlowError::StageSetup {
            stage: "unbuildable".into(),
            message: "no such model".into(),
        })
    });
    let mut broken = pipeline(data.path(), 4, 2);
    broken.device.push(StageSpec::new("unbuildable"));
    assert!(run(&broken, &reg, &opts).is_err());
    assert_eq!(std::fs::read_to_string(&log).unwrap(), first);
    // Into a new run directory, the failed run leaves neither an empty log
    // nor the directory it made.
    let new_dir = runs.path().join("new").join("run");
    let into_new = RunOptions {
        run_dir: Some(new_dir.clone()),
        ..RunOptions::threads(1)
    };
    assert!(run(&broken, &reg, &into_new).is_err());
    assert!(!runs.path().join("new").exists());

    // A resumed run's lines follow the earlier ones up to its checkpoint's
    // batch: from the last batch, all of them.
    let resume_at = |after: u64, time: u64| {
        let telemetry = std::sync::Arc::new(dicoflow::flow::telemetry::Telemetry::default());
        let mut sink =
            MetricsSink::try_new(telemetry, Some(runs.path()), None, None, Some(after)).unwrap();
        sink.on_report(&dicoflow::flow::BatchReport {
            time,
            device: 0,
            keys: vec![],
            samples: 4,
            metrics: BTreeMap::new(),
            more_metrics: vec![],
            errors: vec![],
        });
        sink.finish();
        std::fs::read_to_string(&log).unwrap()
    };
    let times = |text: &str| -> Vec<u64> {
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["time"].as_u64())
            .collect()
    };
    assert_eq!(times(&first), [0, 1, 2, 3, 4, 5]);
    let appended = resume_at(5, 6);
    assert!(appended.starts_with(&first), "{appended}");
    assert_eq!(appended.lines().count(), 9);
    // From a checkpoint after batch 2: batches 3–6 and the summaries after
    // them were trained past it, and are logged again by the resumed run only.
    let rewound = resume_at(2, 3);
    assert_eq!(times(&rewound), [0, 1, 2, 3]);
    assert_eq!(rewound.lines().count(), 5, "{rewound}");
    assert!(rewound.lines().last().unwrap().starts_with("{\"summary\""));

    // Another run replaces the log.
    run(&pipeline(data.path(), 4, 2), &reg, &opts).unwrap();
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 7);
}
