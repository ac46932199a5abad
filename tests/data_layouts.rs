//! Layouts the reader accepts, and bad input: each a clear error naming the
//! file and column, or a counted skip.
mod common;

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, Int64Array, LargeBinaryArray, LargeStringArray, ListBuilder,
    StringArray, StringBuilder, StructArray,
};
use arrow::datatypes::{DataType, Field, Fields};
use dicoflow::data::{
    LayoutKind, LayoutOptions, ShardIndex, ShardSource, SkipCounts, SkipReason, SourceConfig,
    SourceItem,
};
use dicoflow::Error;

/// Read every row; return (sample keys with captions, skip counts).
fn read_all(idx: ShardIndex) -> (Vec<(String, Vec<String>)>, SkipCounts) {
    let cfg = SourceConfig {
        shuffle: false,
        ..Default::default()
    };
    let mut samples = Vec::new();
    let mut skips = SkipCounts::default();
    for item in ShardSource::new(Arc::new(idx), cfg, 0, 1).unwrap() {
        match item.unwrap() {
            SourceItem::Sample(s) => samples.push((s.key, s.captions)),
            SourceItem::Skipped(s) => skips.add(&s.reason),
        }
    }
    (samples, skips)
}

#[test]
fn img2dataset_layout_skips_and_counts_failed_rows() {
    let dir = tempfile::tempdir().unwrap();
    let imgs: Vec<Option<Vec<u8>>> = vec![
        Some(common::jpeg(16, 12, 1)),
        None,
        Some(common::jpeg(16, 12, 3)),
        Some(common::jpeg(16, 12, 4)),
    ];
    common::write_columns(
        &dir.path().join("00000.parquet"),
        vec![
            (
                "key",
                Arc::new(StringArray::from(vec!["a", "b", "c", "d"])) as ArrayRef,
            ),
            (
                "jpg",
                Arc::new(BinaryArray::from_iter(imgs.iter().map(|b| b.as_deref()))),
            ),
            (
                "caption",
                Arc::new(StringArray::from(vec!["a cat", "x", "a dog", "   "])),
            ),
            (
                "status",
                Arc::new(StringArray::from(vec![
                    "success",
                    "failed_to_download",
                    "success",
                    "success",
                ])),
            ),
        ],
        3,
    );
    let idx = ShardIndex::open(dir.path(), &LayoutOptions::default()).unwrap();
    assert_eq!(idx.layout.kind, LayoutKind::Img2Dataset);
    assert_eq!(idx.layout.image_column, "jpg");
    let (samples, skips) = read_all(idx);
    assert_eq!(
        samples,
        vec![
            ("a".to_owned(), vec!["a cat".to_owned()]),
            ("c".to_owned(), vec!["a dog".to_owned()])
        ]
    );
    assert_eq!(skips.get(&SkipReason::StatusNotSuccess.label()), 1);
    assert_eq!(
        skips.get(&SkipReason::NoCaptions.label()),
        1,
        "blank caption"
    );
    assert_eq!(skips.total(), 2);
}

#[test]
fn large_binary_images_list_captions_integer_keys_and_a_named_caption_column() {
    let dir = tempfile::tempdir().unwrap();
    let mut sentences = ListBuilder::new(StringBuilder::new());
    sentences.values().append_value("one");
    sentences.values().append_value("two");
    sentences.append(true);
    sentences.append(true); // empty list
    common::write_columns(
        &dir.path().join("x.parquet"),
        vec![
            ("id", Arc::new(Int64Array::from(vec![7, 8])) as ArrayRef),
            (
                "pixels",
                Arc::new(LargeBinaryArray::from_iter_values([
                    common::png(4, 4, 0),
                    common::png(4, 4, 1),
                ])),
            ),
            ("sentences", Arc::new(sentences.finish())),
        ],
        10,
    );
    let opts = LayoutOptions {
        image_column: Some("pixels".into()),
        caption_column: Some("sentences".into()),
        key_column: Some("id".into()),
        ..Default::default()
    };
    let idx = ShardIndex::open(dir.path(), &opts).unwrap();
    assert_eq!(idx.layout.kind, LayoutKind::BinaryColumn);
    let (samples, skips) = read_all(idx);
    assert_eq!(
        samples,
        vec![("7".to_owned(), vec!["one".to_owned(), "two".to_owned()])]
    );
    assert_eq!(
        skips.get("no captions"),
        1,
        "empty caption list is a counted skip"
    );
}

#[test]
fn hugging_face_image_struct_with_large_string_caption_and_generated_keys() {
    let dir = tempfile::tempdir().unwrap();
    let fields = Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ]);
    let image = StructArray::new(
        fields,
        vec![
            Arc::new(BinaryArray::from_iter_values([common::png(5, 5, 2)])) as ArrayRef,
            Arc::new(StringArray::from(vec![Some("a.png")])),
        ],
        None,
    );
    common::write_columns(
        &dir.path().join("hf-00000.parquet"),
        vec![
            ("image", Arc::new(image) as ArrayRef),
            (
                "text",
                Arc::new(LargeStringArray::from(vec!["a red square"])),
            ),
        ],
        10,
    );
    let idx = ShardIndex::open(dir.path(), &LayoutOptions::default()).unwrap();
    assert_eq!(idx.layout.kind, LayoutKind::HuggingFaceImage);
    let (samples, _) = read_all(idx);
    assert_eq!(
        samples,
        vec![("hf-00000/0/0".to_owned(), vec!["a red square".to_owned()])]
    );
}

#[test]
fn non_utf8_binary_captions_and_empty_images_are_counted_skips() {
    let dir = tempfile::tempdir().unwrap();
    let captions = BinaryArray::from_iter_values([b"fine".as_slice(), b"\xff\xfe bad", b"ok"]);
    let images =
        BinaryArray::from_iter_values([common::png(3, 3, 0), common::png(3, 3, 1), vec![]]);
    common::write_columns(
        &dir.path().join("y.parquet"),
        vec![
            ("image", Arc::new(images) as ArrayRef),
            ("caption", Arc::new(captions)),
        ],
        10,
    );
    let (samples, skips) =
        read_all(ShardIndex::open(dir.path(), &LayoutOptions::default()).unwrap());
    assert_eq!(samples.len(), 1);
    assert_eq!(skips.get("caption not UTF-8"), 1);
    assert_eq!(skips.get("empty image bytes"), 1);
}

#[test]
fn missing_columns_name_the_file_and_what_was_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nocap.parquet");
    common::write_columns(
        &path,
        vec![(
            "image",
            Arc::new(BinaryArray::from_iter_values([b"x"])) as ArrayRef,
        )],
        10,
    );
    let err = ShardIndex::open(dir.path(), &LayoutOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            Error::MissingColumn {
                role: "caption",
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("nocap.parquet") && msg.contains("image: Binary"),
        "{msg}"
    );

    let opts = LayoutOptions {
        image_column: Some("photo".into()),
        ..Default::default()
    };
    let msg = ShardIndex::open(dir.path(), &opts).unwrap_err().to_string();
    assert!(
        msg.contains("`image_column`") && msg.contains("photo"),
        "{msg}"
    );
}

#[test]
fn wrong_column_types_name_the_column_and_types() {
    let dir = tempfile::tempdir().unwrap();
    common::write_columns(
        &dir.path().join("bad.parquet"),
        vec![
            (
                "image",
                Arc::new(StringArray::from(vec!["not bytes"])) as ArrayRef,
            ),
            ("caption", Arc::new(StringArray::from(vec!["c"]))),
        ],
        10,
    );
    let err = ShardIndex::open(dir.path(), &LayoutOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::ColumnType { .. }), "{msg}");
    assert!(
        msg.contains("bad.parquet") && msg.contains("`image`") && msg.contains("Utf8"),
        "{msg}"
    );
}

#[test]
fn truncated_parquet_files_and_empty_directories_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = ShardIndex::open(dir.path(), &LayoutOptions::default()).unwrap_err();
    assert!(matches!(err, Error::NoShards { .. }), "{err}");
    assert!(err.to_string().contains("no Parquet shards"), "{err}");

    common::write_dataset(dir.path(), 20, 20, 5);
    let shard = dir.path().join("part-00000.parquet");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() / 2]).unwrap();
    let err = ShardIndex::open(dir.path(), &LayoutOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Parquet { .. }), "{err}");
    assert!(err.to_string().contains("part-00000.parquet"), "{err}");

    let err = ShardIndex::open(&dir.path().join("nope"), &LayoutOptions::default()).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn unfinished_temporary_shards_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    common::write_dataset(dir.path(), 10, 10, 5);
    std::fs::write(dir.path().join("part-00001.parquet.tmp"), b"half written").unwrap();
    let idx = ShardIndex::open(dir.path(), &LayoutOptions::default()).unwrap();
    assert_eq!(idx.shards.len(), 1);
}
