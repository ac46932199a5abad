//! Every device sees every batch: each source worker sends every device owner
//! a mark per batch it emits, so a device forms a batch for every time some
//! source emitted (its share possibly empty), carrying every worker's data
//! cursor after that batch. Checked against the shard source itself: a
//! source resumed from a batch's cursors yields exactly the rows of the
//! later batches.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use dicoflow::data::{Cursor, ShardIndex, ShardSource, SourceItem};
use dicoflow::flow::{
    run, DeviceBatch, DeviceStage, Pipeline, Registry, RunOptions, StageFailure, StageSpec,
};

/// What one device saw of one batch.
#[derive(Debug, Clone)]
struct Seen {
    device: String,
    time: u64,
    /// (key, source worker) of each sample.
    samples: Vec<(String, u32)>,
    cursors: Vec<Cursor>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

struct Record(Log);

impl DeviceStage for Record {
    fn process(&mut self, batch: &mut DeviceBatch) -> Result<(), StageFailure> {
        let device = std::thread::current().name().unwrap_or("").to_owned();
        self.0.lock().unwrap().push(Seen {
            device,
            time: batch.time,
            samples: batch
                .samples
                .iter()
                .map(|s| (s.key.clone(), s.worker))
                .collect(),
            cursors: batch.cursors.clone(),
        });
        Ok(())
    }
}

fn registry(log: &Log) -> Registry {
    let mut reg = Registry::with_builtins();
    let log = log.clone();
    reg.register_device("record", move |_: toml::Table| {
        Ok(Box::new(Record(log.clone())) as Box<dyn DeviceStage>)
    });
    reg
}

fn pipeline(dir: &Path, batch: usize, devices: usize) -> Pipeline {
    let mut p = Pipeline::default();
    p.source.path = Some(dir.to_path_buf());
    p.source.seed = 3;
    p.source.shuffle_buffer = 6;
    p.flow.batch_size = batch;
    p.flow.max_in_flight = 3;
    p.flow.devices = devices;
    p.device = vec![StageSpec::new("record")];
    p
}

/// Keys a source resumed at `cursor` yields to the end of its data.
fn rest_of(p: &Pipeline, cursor: &Cursor) -> Vec<String> {
    let index =
        Arc::new(ShardIndex::open(p.source.path.as_ref().unwrap(), &p.source.layout).unwrap());
    ShardSource::resume(index, p.source.source_config(), cursor)
        .unwrap()
        .map(|item| match item.unwrap() {
            SourceItem::Sample(s) => s.key,
            SourceItem::Skipped(s) => panic!("unexpected skip {s:?}"),
        })
        .collect()
}

/// Rows worker `w` of `workers` reads per epoch.
fn rows_of(p: &Pipeline, w: u32, workers: u32) -> u64 {
    let index =
        Arc::new(ShardIndex::open(p.source.path.as_ref().unwrap(), &p.source.layout).unwrap());
    ShardSource::new(index, p.source.source_config(), w, workers)
        .unwrap()
        .rows_per_epoch()
}

fn run_and_log(p: &Pipeline, workers: usize) -> Vec<Seen> {
    let log = Log::default();
    run(p, &registry(&log), &RunOptions::threads(workers)).unwrap();
    let mut seen = log.lock().unwrap().clone();
    seen.sort_by(|a, b| (a.time, &a.device).cmp(&(b.time, &b.device)));
    seen
}

#[test]
fn every_device_sees_every_batch_with_the_cursors_after_it() {
    let dir = tempfile::tempdir().unwrap();
    // 8 row groups of 5, 5, ..., 2 rows: the workers' shares differ in size,
    // so one worker's data ends batches before the other's.
    let keys = common::write_dataset(dir.path(), 37, 10, 5);
    let p = pipeline(dir.path(), 3, 2);
    assert_ne!(rows_of(&p, 0, 2), rows_of(&p, 1, 2));
    let seen = run_and_log(&p, 2);
    let devices: BTreeSet<&str> = seen.iter().map(|s| s.device.as_str()).collect();
    assert_eq!(devices.len(), 2, "{devices:?}");
    let last = seen.iter().map(|s| s.time).max().unwrap();
    // Each device formed exactly one batch per time, for every time.
    for d in &devices {
        let times: Vec<u64> = seen
            .iter()
            .filter(|s| s.device == *d)
            .map(|s| s.time)
            .collect();
        assert_eq!(times, (0..=last).collect::<Vec<_>>(), "device {d}");
    }
    // Some batches reached a device with no sample of its own.
    assert!(seen.iter().any(|s| s.samples.is_empty()));
    // The devices' shares are disjoint and cover every row once.
    let mut all: Vec<String> = seen
        .iter()
        .flat_map(|s| s.samples.iter().map(|(k, _)| k.clone()))
        .collect();
    all.sort();
    assert_eq!(all, keys);
    // At each time both devices carry the same cursors, one per worker; a
    // source resumed from them yields exactly the rows of the later batches.
    let mut by_time: BTreeMap<u64, Vec<&Seen>> = BTreeMap::new();
    for s in &seen {
        by_time.entry(s.time).or_default().push(s);
    }
    for (t, at) in &by_time {
        assert_eq!(at[0].cursors, at[1].cursors, "batch {t}");
        assert_eq!(at[0].cursors.len(), 2, "batch {t}");
        for cursor in &at[0].cursors {
            let mut later: Vec<String> = seen
                .iter()
                .filter(|s| s.time > *t)
                .flat_map(|s| s.samples.iter())
                .filter(|(_, w)| *w == cursor.worker)
                .map(|(k, _)| k.clone())
                .collect();
            let mut rest = rest_of(&p, cursor);
            later.sort();
            rest.sort();
            assert_eq!(rest, later, "batch {t}, worker {}", cursor.worker);
        }
    }
    // After the last batch every worker's cursor is at its end.
    for cursor in &by_time[&last][0].cursors {
        assert!(rest_of(&p, cursor).is_empty());
    }
}

#[test]
fn batches_of_one_sample_reach_both_devices() {
    let dir = tempfile::tempdir().unwrap();
    common::write_dataset(dir.path(), 20, 10, 4);
    // Batches of one row per worker: at most two samples per batch time, so
    // most batch times leave one device without a sample of its own.
    let p = pipeline(dir.path(), 1, 2);
    let seen = run_and_log(&p, 2);
    let last = seen.iter().map(|s| s.time).max().unwrap();
    let rows: Vec<u64> = (0..2).map(|w| rows_of(&p, w, 2)).collect();
    assert_eq!(last + 1, rows[0].max(rows[1]));
    let devices: BTreeSet<String> = seen.iter().map(|s| s.device.clone()).collect();
    assert_eq!(devices.len(), 2);
    for d in &devices {
        let times: Vec<u64> = seen
            .iter()
            .filter(|s| &s.device == d)
            .map(|s| s.time)
            .collect();
        assert_eq!(times, (0..=last).collect::<Vec<_>>(), "device {d}");
    }
    assert_eq!(seen.iter().map(|s| s.samples.len()).sum::<usize>(), 20);
    // Once the smaller share ends, only one worker has rows; the other's
    // cursor stays at its end.
    for s in seen.iter().filter(|s| s.time >= rows[0].min(rows[1])) {
        assert_eq!(s.cursors.len(), 2);
        assert!(s.samples.len() <= 1);
    }
}

#[test]
fn a_batch_whose_rows_were_all_rejected_still_reaches_the_device() {
    let dir = tempfile::tempdir().unwrap();
    common::write_dataset(dir.path(), 12, 12, 4);
    // A CPU stage that rejects every sample: the device sees 12 / 4 = 3
    // empty batches, each with the cursor after it.
    let mut p = pipeline(dir.path(), 4, 1);
    p.source.shuffle = false;
    p.cpu = vec![StageSpec::new("preprocess")
        .with_settings(toml::from_str("size = 4\nmax_pixels = 1").unwrap())];
    let seen = run_and_log(&p, 1);
    assert_eq!(seen.iter().map(|s| s.time).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(seen.iter().all(|s| s.samples.is_empty()));
    let emitted: Vec<u64> = seen.iter().map(|s| s.cursors[0].emitted).collect();
    assert_eq!(emitted, [4, 8, 12]);
}
