//! Column encodings, image files named by path, and unique keys: what the
//! reader takes from each, checked against the references kept in
//! tests/fixtures/columns/make_columns.py (Hugging Face `datasets`, pyarrow)
//! and against the plain encoding of the same data.
mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, DictionaryArray, Float64Array, Int32Array, Int64Array,
    LargeListArray, ListArray, StringArray, StructArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Fields, Int32Type};
use dicoflow::data::{
    LayoutOptions, ShardIndex, ShardSource, SkipCounts, SourceConfig, SourceItem,
};
use dicoflow::image::decode_rgb;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn fixture(name: &str) -> PathBuf {
    common::fixture("columns", name)
}

fn expected(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap()
}

/// One row as read: (key, image bytes, captions) or (key, skip label, skip text).
type Rows = Vec<(String, Result<(Vec<u8>, Vec<String>), (String, String)>)>;

fn read_rows(idx: ShardIndex) -> Rows {
    let cfg = SourceConfig {
        shuffle: false,
        ..Default::default()
    };
    let mut out = Vec::new();
    for item in ShardSource::new(Arc::new(idx), cfg, 0, 1).unwrap() {
        match item.unwrap() {
            SourceItem::Sample(s) => out.push((s.key, Ok((s.image, s.captions)))),
            SourceItem::Skipped(s) => out.push((
                s.key.unwrap(),
                Err((s.reason.label(), s.reason.to_string())),
            )),
        }
    }
    out
}

fn skip_counts(rows: &Rows) -> SkipCounts {
    let mut c = SkipCounts::default();
    for (_, r) in rows {
        if let Err((label, _)) = r {
            // Labels are counted as the reader counts them.
            let reason = match label.as_str() {
                "status not success" => dicoflow::data::SkipReason::StatusNotSuccess,
                "null image" => dicoflow::data::SkipReason::NullImage,
                "no captions" => dicoflow::data::SkipReason::NoCaptions,
                "empty image bytes" => dicoflow::data::SkipReason::EmptyImage,
                other => panic!("unexpected skip {other}"),
            };
            c.add(&reason);
        }
    }
    c
}

#[test]
fn hf_image_paths_are_read_from_the_shards_folder_as_datasets_decodes_them() {
    let idx = ShardIndex::open(&fixture("hf_paths"), &LayoutOptions::default()).unwrap();
    let rows = read_rows(idx);
    let want = expected("expected_hf_paths.json");
    let want = want.as_object().unwrap();
    assert_eq!(rows.len(), want.len());
    for (key, got) in &rows {
        let w = &want[key];
        match (w["outcome"].as_str().unwrap(), got) {
            ("image", Ok((bytes, captions))) => {
                let img = decode_rgb(bytes, 1 << 20).unwrap();
                let size = [img.width() as u64, img.height() as u64];
                assert_eq!(
                    size.as_slice(),
                    w["size"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_u64().unwrap())
                        .collect::<Vec<_>>(),
                    "{key}"
                );
                assert_eq!(captions, &[format!("caption of {key}")]);
            }
            (label, Err((got_label, text))) => {
                assert_eq!(label, got_label, "{key}: {text}");
                if label == "image file missing" {
                    assert!(text.contains("img/missing.png"), "{text}");
                }
                if label.starts_with("remote") {
                    assert!(text.contains("://"), "{text}");
                }
            }
            (label, got) => panic!("{key}: expected {label}, got {got:?}"),
        }
    }
    // The file named by a relative path is read byte for byte.
    let r0 = rows.iter().find(|(k, _)| k == "r0").unwrap();
    assert_eq!(
        r0.1.as_ref().unwrap().0,
        std::fs::read(fixture("hf_paths/img/a.png")).unwrap()
    );
}

#[test]
fn dictionary_encoded_status_skips_failed_rows_as_pyarrow_counts_them() {
    let shard = fixture("dict_status/00000.parquet");
    // The fixture really holds dictionary-encoded columns.
    let b = ParquetRecordBatchReaderBuilder::try_new(File::open(&shard).unwrap()).unwrap();
    for col in ["status", "caption"] {
        let t = b.schema().field_with_name(col).unwrap().data_type().clone();
        assert!(matches!(t, DataType::Dictionary(..)), "{col}: {t}");
    }
    let idx = ShardIndex::open(&shard, &LayoutOptions::default()).unwrap();
    assert_eq!(idx.layout.status_column.as_deref(), Some("status"));
    let rows = read_rows(idx);
    let want = expected("expected_dict_status.json");
    assert_eq!(rows.len() as u64, want["rows"].as_u64().unwrap());
    let usable: Vec<(String, Vec<String>)> = rows
        .iter()
        .filter_map(|(k, r)| r.as_ref().ok().map(|(_, c)| (k.clone(), c.clone())))
        .collect();
    let want_usable: Vec<(String, Vec<String>)> = want["usable_keys"]
        .as_array()
        .unwrap()
        .iter()
        .zip(want["usable_captions"].as_array().unwrap())
        .map(|(k, c)| {
            (
                k.as_str().unwrap().to_owned(),
                vec![c.as_str().unwrap().to_owned()],
            )
        })
        .collect();
    assert_eq!(usable, want_usable);
    let counts = skip_counts(&rows);
    for (label, n) in want["skipped"].as_object().unwrap() {
        assert_eq!(counts.get(label), n.as_u64().unwrap(), "{label}");
    }
    assert_eq!(counts.total(), 5);

    // `inspect` shows the status column and counts the same.
    let report =
        dicoflow::data::inspect::inspect(&shard, &LayoutOptions::default(), false, || {}).unwrap();
    assert!(report.to_string().contains("status  `status`"), "{report}");
    let split = report.splits.values().next().unwrap();
    assert_eq!(split.usable, 2);
    assert_eq!(split.skipped.get("status not success"), 3);
}

/// The plain encoding of a small img2dataset-like table with list captions.
struct Plain {
    keys: Vec<&'static str>,
    images: Vec<Option<Vec<u8>>>,
    captions: Vec<Vec<&'static str>>,
    status: Vec<Option<&'static str>>,
}

fn plain() -> Plain {
    let mut images: Vec<Option<Vec<u8>>> = (0..6).map(|i| Some(common::png(4, 3, i))).collect();
    images[2] = None;
    Plain {
        keys: vec!["a", "b", "c", "d", "e", "f"],
        images,
        captions: vec![
            vec!["a cat", "a small cat"],
            vec!["a dog"],
            vec!["a bird"],
            vec![],
            vec!["a cow", " "],
            vec!["a fish"],
        ],
        status: vec![
            Some("success"),
            Some("failed_to_download"),
            Some("success"),
            Some("success"),
            None,
            Some("success"),
        ],
    }
}

fn list_of(items: ArrayRef, lens: &[usize], large: bool) -> ArrayRef {
    let mut offsets = vec![0usize];
    for l in lens {
        offsets.push(offsets.last().unwrap() + l);
    }
    let field = Arc::new(Field::new("item", items.data_type().clone(), true));
    if large {
        let off = offsets.iter().map(|&o| o as i64).collect::<Vec<_>>();
        Arc::new(LargeListArray::new(
            field,
            arrow::buffer::OffsetBuffer::new(off.into()),
            items,
            None,
        ))
    } else {
        let off = offsets.iter().map(|&o| o as i32).collect::<Vec<_>>();
        Arc::new(ListArray::new(
            field,
            arrow::buffer::OffsetBuffer::new(off.into()),
            items,
            None,
        ))
    }
}

fn dict(values: &ArrayRef, key: &DataType) -> ArrayRef {
    cast(
        values.as_ref(),
        &DataType::Dictionary(Box::new(key.clone()), Box::new(values.data_type().clone())),
    )
    .unwrap()
}

/// The columns of `p` with one role re-encoded by `encode`.
fn columns(
    p: &Plain,
    role: &str,
    encode: &dyn Fn(ArrayRef) -> ArrayRef,
) -> Vec<(&'static str, ArrayRef)> {
    let keys: ArrayRef = Arc::new(StringArray::from(p.keys.clone()));
    let images: ArrayRef = Arc::new(BinaryArray::from_iter(
        p.images.iter().map(|b| b.as_deref()),
    ));
    let items: ArrayRef = Arc::new(StringArray::from(
        p.captions.iter().flatten().copied().collect::<Vec<_>>(),
    ));
    let lens: Vec<usize> = p.captions.iter().map(Vec::len).collect();
    let status: ArrayRef = Arc::new(StringArray::from(p.status.clone()));
    let pick = |name: &str, a: ArrayRef| if name == role { encode(a) } else { a };
    let captions = if role == "caption_item" {
        list_of(encode(items), &lens, false)
    } else {
        pick("caption", list_of(items, &lens, false))
    };
    vec![
        ("key", pick("key", keys)),
        ("jpg", pick("image", images)),
        ("caption", captions),
        ("status", pick("status", status)),
    ]
}

fn read_shard(dir: &Path, name: &str, cols: Vec<(&str, ArrayRef)>) -> (Rows, Vec<DataType>) {
    let path = dir.join(format!("{name}.parquet"));
    common::write_columns(&path, cols, 4);
    let b = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap();
    let types = b
        .schema()
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    let idx = ShardIndex::from_paths(vec![path], &LayoutOptions::default()).unwrap();
    (read_rows(idx), types)
}

/// A re-encoding of one column.
type Enc = Box<dyn Fn(ArrayRef) -> ArrayRef>;

fn enc(f: impl Fn(ArrayRef) -> ArrayRef + 'static) -> Enc {
    Box::new(f)
}

#[test]
fn every_encoding_of_each_role_reads_like_the_plain_one() {
    let dir = tempfile::tempdir().unwrap();
    let p = plain();
    let (want, _) = read_shard(dir.path(), "plain", columns(&p, "", &|a| a));
    // Sanity of the reference: 2 usable, failed status, null image, no caption, null status.
    let usable: Vec<&str> = want
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(usable, ["a", "f"]);
    assert_eq!(skip_counts(&want).total(), 4);

    let to = |t: DataType| move |a: ArrayRef| cast(a.as_ref(), &t).unwrap();
    let text_encodings: Vec<(&str, Enc)> = vec![
        ("large_utf8", enc(to(DataType::LargeUtf8))),
        ("utf8_view", enc(to(DataType::Utf8View))),
        (
            "dict<i32, utf8>",
            enc(|a: ArrayRef| dict(&a, &DataType::Int32)),
        ),
        (
            "dict<i8, large_utf8>",
            enc(|a: ArrayRef| {
                dict(
                    &cast(a.as_ref(), &DataType::LargeUtf8).unwrap(),
                    &DataType::Int8,
                )
            }),
        ),
    ];
    let binary_encodings: Vec<(&str, Enc)> = vec![
        ("large_binary", enc(to(DataType::LargeBinary))),
        ("binary_view", enc(to(DataType::BinaryView))),
        (
            "dict<i32, binary>",
            enc(|a: ArrayRef| dict(&a, &DataType::Int32)),
        ),
    ];
    let list_encodings: Vec<(&str, Enc)> = vec![(
        "large_list<utf8>",
        enc(to(DataType::LargeList(Arc::new(Field::new(
            "item",
            DataType::Utf8,
            true,
        ))))),
    )];
    // (role, encoding name, re-encoding)
    let mut cases: Vec<(&str, &str, &Enc)> = Vec::new();
    for role in ["key", "status", "caption_item"] {
        for (name, f) in &text_encodings {
            cases.push((role, *name, f));
        }
    }
    for (name, f) in &binary_encodings {
        cases.push(("image", *name, f));
        cases.push(("caption_item", *name, f));
    }
    for (name, f) in &list_encodings {
        cases.push(("caption", *name, f));
    }
    for (i, (role, name, f)) in cases.into_iter().enumerate() {
        let (got, types) = read_shard(dir.path(), &format!("case{i}"), columns(&p, role, f));
        // The file really holds the encoding under test.
        let col = ["key", "image", "caption", "status"]
            .iter()
            .position(|r| role.starts_with(r))
            .unwrap();
        let written = columns(&p, role, f)[col].1.data_type().clone();
        assert_eq!(types[col], written, "{role} as {name}");
        assert_eq!(got, want, "{role} as {name}");
    }
}

#[test]
fn hf_struct_fields_and_single_caption_columns_read_in_any_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let p = plain();
    let image_struct = |bytes: ArrayRef, path: ArrayRef| -> ArrayRef {
        let fields = Fields::from(vec![
            Field::new("bytes", bytes.data_type().clone(), true),
            Field::new("path", path.data_type().clone(), true),
        ]);
        Arc::new(StructArray::new(fields, vec![bytes, path], None))
    };
    let bytes: ArrayRef = Arc::new(BinaryArray::from_iter(
        p.images.iter().map(|b| b.as_deref()),
    ));
    let paths: ArrayRef = Arc::new(StringArray::from(vec![None::<&str>; 6]));
    let first_captions: ArrayRef = Arc::new(StringArray::from(
        p.captions
            .iter()
            .map(|c| c.first().copied())
            .collect::<Vec<_>>(),
    ));
    let cols = |image: ArrayRef, caption: ArrayRef| -> Vec<(&'static str, ArrayRef)> {
        vec![
            (
                "key",
                Arc::new(StringArray::from(p.keys.clone())) as ArrayRef,
            ),
            ("image", image),
            ("caption", caption),
        ]
    };
    let (want, _) = read_shard(
        dir.path(),
        "plain",
        cols(
            image_struct(bytes.clone(), paths.clone()),
            first_captions.clone(),
        ),
    );
    assert_eq!(want.iter().filter(|(_, r)| r.is_ok()).count(), 4);
    let variants: Vec<(&str, ArrayRef, ArrayRef)> = vec![
        (
            "bytes large_binary, path utf8_view, caption large_utf8",
            cast(&bytes, &DataType::LargeBinary).unwrap(),
            cast(&paths, &DataType::Utf8View).unwrap(),
        ),
        (
            "bytes binary_view, path dict, caption dict",
            cast(&bytes, &DataType::BinaryView).unwrap(),
            dict(&paths, &DataType::Int32),
        ),
    ];
    for (i, (name, b, pth)) in variants.into_iter().enumerate() {
        let caption = if i == 0 {
            cast(&first_captions, &DataType::LargeUtf8).unwrap()
        } else {
            dict(&first_captions, &DataType::Int16)
        };
        let (got, _) = read_shard(
            dir.path(),
            &format!("v{i}"),
            cols(image_struct(b, pth), caption),
        );
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn unsupported_types_are_errors_naming_the_file_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let img: ArrayRef = Arc::new(BinaryArray::from_iter_values([common::png(2, 2, 0)]));
    let text: ArrayRef = Arc::new(StringArray::from(vec!["a cat"]));
    let cases: Vec<(&str, Vec<(&str, ArrayRef)>)> = vec![
        (
            "caption",
            vec![
                ("jpg", img.clone()),
                ("caption", Arc::new(Int64Array::from(vec![3]))),
            ],
        ),
        (
            "key",
            vec![
                ("jpg", img.clone()),
                ("caption", text.clone()),
                ("key", Arc::new(Float64Array::from(vec![1.5]))),
            ],
        ),
        (
            "status",
            vec![
                ("jpg", img.clone()),
                ("caption", text.clone()),
                ("status", Arc::new(Int32Array::from(vec![0]))),
            ],
        ),
        (
            "status",
            vec![
                ("jpg", img.clone()),
                ("caption", text.clone()),
                (
                    "status",
                    Arc::new(DictionaryArray::<Int32Type>::from_iter([Some("7")])) as ArrayRef,
                ),
            ],
        ),
        (
            "jpg",
            vec![("jpg", text.clone()), ("caption", text.clone())],
        ),
    ];
    for (i, (column, cols)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.parquet"));
        common::write_columns(&path, cols, 4);
        let result = ShardIndex::from_paths(vec![path.clone()], &LayoutOptions::default())
            .and_then(|idx| {
                let rows = idx.read_row_group(0, 0)?;
                Ok(rows.len())
            });
        match result {
            // A dictionary of text values is a text status: accepted.
            Ok(n) if i == 3 => assert_eq!(n, 1),
            Ok(_) => panic!("case {i}: `{column}` accepted"),
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(&format!("bad{i}.parquet"))
                        && msg.contains(&format!("`{column}`")),
                    "{msg}"
                );
            }
        }
    }
}

#[test]
fn duplicate_keys_are_refused_naming_both_files() {
    let dir = tempfile::tempdir().unwrap();
    // Two img2dataset outputs: both number their keys from 000000000.
    let shard = |sub: &str, name: &str, n: usize| -> PathBuf {
        let d = dir.path().join(sub);
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join(name);
        let keys: Vec<String> = (0..n).map(|i| format!("{i:09}")).collect();
        common::write_columns(
            &path,
            vec![
                ("key", Arc::new(StringArray::from(keys)) as ArrayRef),
                (
                    "jpg",
                    Arc::new(BinaryArray::from_iter_values(
                        (0..n).map(|i| common::png(2, 2, i as u32)),
                    )),
                ),
                ("caption", Arc::new(StringArray::from(vec!["a cat"; n]))),
            ],
            2,
        );
        path
    };
    let a = shard("laion", "00000.parquet", 5);
    let b = shard("cc3m", "00001.parquet", 3);
    let idx = ShardIndex::open(dir.path(), &LayoutOptions::default()).unwrap();
    let err = idx.check_unique_keys().unwrap_err().to_string();
    // Sorted order: cc3m/00001 comes first, laion/00000 holds the duplicate.
    assert!(err.contains("`000000000`"), "{err}");
    assert!(
        err.contains(&b.display().to_string()) && err.contains(&a.display().to_string()),
        "{err}"
    );
    // Each alone is fine: a direct count of its rows.
    for (p, n) in [(&a, 5), (&b, 3)] {
        let idx = ShardIndex::from_paths(vec![p.clone()], &LayoutOptions::default()).unwrap();
        assert_eq!(idx.check_unique_keys().unwrap(), n);
    }

    // Within one shard, across row groups.
    let keys: ArrayRef = Arc::new(StringArray::from(vec!["x", "y", "z", "x"]));
    let one = dir.path().join("one.parquet");
    common::write_columns(
        &one,
        vec![
            ("key", keys),
            (
                "jpg",
                Arc::new(BinaryArray::from_iter_values(
                    (0..4).map(|i| common::png(2, 2, i)),
                )),
            ),
            ("caption", Arc::new(StringArray::from(vec!["a"; 4]))),
        ],
        2,
    );
    let idx = ShardIndex::from_paths(vec![one], &LayoutOptions::default()).unwrap();
    let err = idx.check_unique_keys().unwrap_err().to_string();
    assert!(
        err.contains("`x`")
            && err.contains("row group 0, row 0")
            && err.contains("row group 1, row 1"),
        "{err}"
    );

    // Without a key column, keys are STEM/ROW_GROUP/ROW: two shards named alike collide.
    let nokey = |sub: &str| {
        let d = dir.path().join("nokey").join(sub);
        std::fs::create_dir_all(&d).unwrap();
        common::write_columns(
            &d.join("00000.parquet"),
            vec![
                (
                    "jpg",
                    Arc::new(BinaryArray::from_iter_values([common::png(2, 2, 0)])) as ArrayRef,
                ),
                ("caption", Arc::new(StringArray::from(vec!["a"]))),
            ],
            2,
        );
    };
    nokey("a");
    nokey("b");
    let idx = ShardIndex::open(&dir.path().join("nokey"), &LayoutOptions::default()).unwrap();
    let err = idx.check_unique_keys().unwrap_err().to_string();
    assert!(
        err.contains("a/00000.parquet") && err.contains("b/00000.parquet"),
        "{err}"
    );
}
