//! The shard source: coverage, worker split, determinism, and exact resume.
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use dicoflow::data::{Cursor, LayoutOptions, ShardIndex, ShardSource, SourceConfig, SourceItem};
use dicoflow::Error;

fn keys_of(src: &mut ShardSource, limit: Option<usize>) -> Vec<String> {
    let mut out = Vec::new();
    while limit.is_none_or(|l| out.len() < l) {
        match src.next_item().unwrap() {
            Some(SourceItem::Sample(s)) => out.push(s.key),
            Some(SourceItem::Skipped(s)) => panic!("unexpected skip {s:?}"),
            None => break,
        }
    }
    out
}

fn index(dir: &std::path::Path) -> Arc<ShardIndex> {
    Arc::new(ShardIndex::open(dir, &LayoutOptions::default()).unwrap())
}

#[test]
fn unshuffled_single_worker_reads_everything_in_file_order() {
    let dir = tempfile::tempdir().unwrap();
    let keys = common::write_dataset(dir.path(), 53, 20, 7);
    let idx = index(dir.path());
    assert_eq!(idx.shards.len(), 3);
    assert_eq!(idx.num_rows(), 53);
    let cfg = SourceConfig {
        shuffle: false,
        ..Default::default()
    };
    let mut src = ShardSource::new(idx, cfg, 0, 1).unwrap();
    assert_eq!(keys_of(&mut src, None), keys);
}

#[test]
fn shuffled_workers_partition_the_data_and_are_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let mut keys = common::write_dataset(dir.path(), 120, 50, 9);
    let idx = index(dir.path());
    let cfg = SourceConfig {
        seed: 11,
        shuffle_buffer: 16,
        ..Default::default()
    };
    let mut all = Vec::new();
    let mut first_order = Vec::new();
    for w in 0..3 {
        let got = keys_of(
            &mut ShardSource::new(idx.clone(), cfg.clone(), w, 3).unwrap(),
            None,
        );
        let again = keys_of(
            &mut ShardSource::new(idx.clone(), cfg.clone(), w, 3).unwrap(),
            None,
        );
        assert_eq!(got, again, "same seed, same order");
        if w == 0 {
            first_order = got.clone();
        }
        all.extend(got);
    }
    all.sort();
    keys.sort();
    assert_eq!(all, keys, "every row exactly once across workers");
    let other = SourceConfig { seed: 12, ..cfg };
    let reordered = keys_of(&mut ShardSource::new(idx, other, 0, 3).unwrap(), None);
    assert_ne!(reordered, first_order, "another seed gives another order");
}

#[test]
fn shuffle_mixes_rows_across_row_groups() {
    let dir = tempfile::tempdir().unwrap();
    common::write_dataset(dir.path(), 100, 100, 10);
    let cfg = SourceConfig {
        shuffle_buffer: 30,
        ..Default::default()
    };
    let got = keys_of(
        &mut ShardSource::new(index(dir.path()), cfg, 0, 1).unwrap(),
        None,
    );
    // Row groups are 10 consecutive keys; a shuffled stream must not keep them together.
    let first_ten_groups: std::collections::BTreeSet<u32> = got[..10]
        .iter()
        .map(|k| k[1..].parse::<u32>().unwrap() / 10)
        .collect();
    assert!(first_ten_groups.len() >= 2, "{:?}", &got[..10]);
}

#[test]
fn epochs_repeat_the_data_in_a_new_order() {
    let dir = tempfile::tempdir().unwrap();
    common::write_dataset(dir.path(), 40, 40, 5);
    let cfg = SourceConfig {
        epochs: Some(2),
        shuffle_buffer: 8,
        ..Default::default()
    };
    let got = keys_of(
        &mut ShardSource::new(index(dir.path()), cfg, 0, 1).unwrap(),
        None,
    );
    assert_eq!(got.len(), 80);
    let (a, b) = got.split_at(40);
    assert_ne!(a, b);
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort();
    b.sort();
    assert_eq!(a, b);
}

/// Stop a shuffled 2-worker stream mid-epoch, save the cursors (as JSON, as a
/// checkpoint would), restore them in fresh sources: the concatenated output
/// equals the uninterrupted stream, for many stop points, across epochs.
#[test]
fn resume_from_cursor_continues_exactly() {
    let dir = tempfile::tempdir().unwrap();
    common::write_dataset(dir.path(), 90, 35, 8);
    let idx = index(dir.path());
    let cfg = SourceConfig {
        seed: 5,
        shuffle_buffer: 12,
        epochs: Some(2),
        ..Default::default()
    };
    for worker in 0..2 {
        let full = keys_of(
            &mut ShardSource::new(idx.clone(), cfg.clone(), worker, 2).unwrap(),
            None,
        );
        assert!(full.len() > 60, "two epochs of about half the data");
        for stop in [
            0,
            1,
            7,
            13,
            full.len() / 2 - 1,
            full.len() / 2,
            full.len() / 2 + 3,
            full.len() - 1,
            full.len(),
        ] {
            let mut first = ShardSource::new(idx.clone(), cfg.clone(), worker, 2).unwrap();
            let mut got = keys_of(&mut first, Some(stop));
            let saved = serde_json::to_string(&first.cursor()).unwrap();
            drop(first);
            let cursor: Cursor = serde_json::from_str(&saved).unwrap();
            let mut resumed = ShardSource::resume(idx.clone(), cfg.clone(), &cursor).unwrap();
            got.extend(keys_of(&mut resumed, None));
            assert_eq!(got, full, "worker {worker}, stopped after {stop}");
        }
    }
}

#[test]
fn a_cursor_from_another_configuration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    common::write_dataset(dir.path(), 30, 30, 5);
    let idx = index(dir.path());
    let cfg = SourceConfig::default();
    let mut src = ShardSource::new(idx.clone(), cfg.clone(), 0, 1).unwrap();
    keys_of(&mut src, Some(3));
    let cursor = src.cursor();
    let other = SourceConfig {
        seed: 99,
        ..cfg.clone()
    };
    let err = ShardSource::resume(idx, other, &cursor).unwrap_err();
    assert!(matches!(err, Error::CursorMismatch { .. }), "{err}");
    assert!(err.to_string().contains("seed"), "{err}");

    let dir2 = tempfile::tempdir().unwrap();
    common::write_dataset(dir2.path(), 31, 30, 5);
    let err = ShardSource::resume(index(dir2.path()), cfg, &cursor).unwrap_err();
    assert!(err.to_string().contains("shards"), "{err}");
}

#[test]
fn more_workers_than_row_groups_leaves_some_workers_empty_not_spinning() {
    let dir = tempfile::tempdir().unwrap();
    common::write_dataset(dir.path(), 10, 10, 10);
    let idx = index(dir.path());
    let cfg = SourceConfig {
        epochs: None, // endless
        ..Default::default()
    };
    let mut counts = BTreeMap::new();
    for w in 0..2 {
        let mut src = ShardSource::new(idx.clone(), cfg.clone(), w, 2).unwrap();
        counts.insert(w, keys_of(&mut src, Some(25)).len());
    }
    assert_eq!(counts[&0], 25, "the worker with data streams endlessly");
    assert_eq!(counts[&1], 0, "the worker without row groups ends");
}
