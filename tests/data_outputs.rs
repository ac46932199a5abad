//! Commands that write a dataset into a folder refuse a non-empty one, or with
//! `overwrite` replace it whole: never a mix of two runs. Expected row and
//! file counts are direct counts of the inputs.
mod common;

use std::path::{Path, PathBuf};

use dicoflow::data::coco::{convert_karpathy, CocoConvertOptions, Restval};
use dicoflow::data::world::{write_world, WorldSpec};
use dicoflow::data::{list_shards, LayoutOptions, ShardIndex, ShardWriterConfig};

/// A Karpathy split file listing `ids` (all in `split`), with images on disk.
fn karpathy(root: &Path, name: &str, ids: &[u64], split: &str) -> PathBuf {
    let images = root.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let list: Vec<serde_json::Value> = ids
        .iter()
        .map(|&id| {
            let file = format!("COCO_{id:012}.png");
            std::fs::write(images.join(&file), common::png(4, 4, id as u32)).unwrap();
            serde_json::json!({"filename": file, "split": split, "cocoid": id,
                               "sentences": [{"raw": format!("caption {id}")}]})
        })
        .collect();
    let path = root.join(name);
    std::fs::write(&path, serde_json::json!({ "images": list }).to_string()).unwrap();
    path
}

fn opts(overwrite: bool) -> CocoConvertOptions {
    CocoConvertOptions {
        restval: Restval::Train,
        writer: ShardWriterConfig {
            rows_per_shard: 2,
            rows_per_row_group: 1,
            ..Default::default()
        },
        overwrite,
    }
}

/// Sorted keys of every row under `dir`.
fn keys(dir: &Path) -> Vec<String> {
    let idx = ShardIndex::open(dir, &LayoutOptions::default()).unwrap();
    let mut keys = Vec::new();
    for (s, rg) in idx.row_group_ids() {
        for (_, r) in idx.read_row_group(s, rg).unwrap() {
            keys.push(r.unwrap().key);
        }
    }
    keys.sort();
    keys
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn convert_coco_refuses_a_non_empty_folder_and_overwrite_replaces_it_whole() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    let first = karpathy(root.path(), "first.json", &[1, 2, 3, 4, 5], "train");
    let report = convert_karpathy(
        &first,
        &root.path().join("images"),
        &out,
        &opts(false),
        |_, _| {},
    )
    .unwrap();
    assert_eq!(report.rows["train"], 5);
    assert_eq!(list_shards(&out).unwrap().len(), 3);
    assert!(report
        .shards
        .iter()
        .all(|p| p.starts_with(&out) && p.is_file()));

    // A second conversion into the same folder: refused, nothing touched.
    let second = karpathy(root.path(), "second.json", &[7, 8], "train");
    let err = convert_karpathy(
        &second,
        &root.path().join("images"),
        &out,
        &opts(false),
        |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("--overwrite") && err.contains("out"), "{err}");
    assert_eq!(keys(&out.join("train")), ["1", "2", "3", "4", "5"]);

    // With overwrite: exactly the second conversion, no stale shard of the first.
    convert_karpathy(
        &second,
        &root.path().join("images"),
        &out,
        &opts(true),
        |_, _| {},
    )
    .unwrap();
    assert_eq!(keys(&out.join("train")), ["7", "8"]);
    assert_eq!(list_shards(&out).unwrap().len(), 1);
    assert_eq!(
        entries(root.path()),
        ["first.json", "images", "out", "second.json"]
    );

    // An output folder holding the inputs is refused even with overwrite.
    let err = convert_karpathy(
        &second,
        &root.path().join("images"),
        root.path(),
        &opts(true),
        |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("holds the input"), "{err}");
    assert!(root.path().join("images").is_dir());
}

#[test]
fn synth_keeps_the_same_world_refuses_another_and_overwrite_replaces_it_whole() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("world");
    let spec = WorldSpec {
        train: 7,
        val: 2,
        test: 1,
        rows_per_shard: 2,
        rows_per_row_group: 2,
        ..Default::default()
    };
    let files = write_world(&out, &spec, false, |_| {}).unwrap();
    // ceil(7/2) + 1 + 1 shard files.
    assert_eq!(files.len(), 6);
    assert!(files.iter().all(|f| f.is_file() && f.starts_with(&out)));
    let before: Vec<_> = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().modified().unwrap())
        .collect();

    // The same world again: kept, nothing written.
    assert!(write_world(&out, &spec, false, |_| {}).unwrap().is_empty());
    let after: Vec<_> = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().modified().unwrap())
        .collect();
    assert_eq!(before, after);

    // Another world (fewer training images): refused without overwrite.
    let other = WorldSpec {
        train: 3,
        seed: 5,
        ..spec.clone()
    };
    let err = write_world(&out, &other, false, |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("--overwrite"), "{err}");
    assert_eq!(keys(&out.join("train")).len(), 7);

    // With overwrite: only the new world's shards, counted directly.
    let files = write_world(&out, &other, true, |_| {}).unwrap();
    assert_eq!(files.len(), 4);
    assert_eq!(
        entries(&out.join("train")),
        ["synth-train-00000.parquet", "synth-train-00001.parquet"]
    );
    assert_eq!(keys(&out.join("train")).len(), 3);
    assert_eq!(entries(root.path()), ["world"]);

    // A stray file makes the folder "not this world": refused.
    std::fs::write(out.join("notes.txt"), "x").unwrap();
    assert!(write_world(&out, &other, false, |_| {}).is_err());
}
