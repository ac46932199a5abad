//! Helpers shared by integration tests: small datasets written on the fly,
//! the `dicoflow` binary, fixture paths, seeded random CLIPs (in `clip`),
//! cluster processes on loopback (in `cluster`), and (in `train`) tiny
//! models and training set-ups.
#![allow(dead_code)]

pub mod clip;
pub mod cluster;
pub mod train;

use std::fs::File;
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::{Field, Schema};
use arrow::record_batch::RecordBatch;
use dicoflow::data::writer::{ShardRow, ShardWriter, ShardWriterConfig};
use image::{ImageFormat, Rgb, RgbImage};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

/// A `w`×`h` PNG whose pixels encode `seed` (so images differ).
pub fn png(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let img = RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            (x * 7 + seed * 13) as u8,
            (y * 11 + seed * 3) as u8,
            ((x + y) * 5 + seed) as u8,
        ])
    });
    encode(&img, ImageFormat::Png)
}

/// A `w`×`h` JPEG of photo-like content.
pub fn jpeg(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let img = RgbImage::from_fn(w, h, |x, y| {
        let v = ((x * 3 + y * 2 + seed * 17) % 256) as u8;
        Rgb([v, v.wrapping_mul(3), 255 - v])
    });
    encode(&img, ImageFormat::Jpeg)
}

pub fn encode(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), format).unwrap();
    out
}

/// Write `n` rows in dicoflow's layout into `dir` (keys `k00000`...), with the
/// given shard and row-group sizes. Returns the keys in file order.
pub fn write_dataset(
    dir: &Path,
    n: usize,
    rows_per_shard: usize,
    rows_per_group: usize,
) -> Vec<String> {
    let cfg = ShardWriterConfig {
        rows_per_shard,
        rows_per_row_group: rows_per_group,
        ..Default::default()
    };
    let mut w = ShardWriter::try_new(dir, "part", cfg).unwrap();
    let mut keys = Vec::new();
    for i in 0..n {
        let key = format!("k{i:05}");
        w.push(ShardRow {
            key: key.clone(),
            image: png(8, 6, i as u32),
            image_path: None,
            captions: vec![format!("caption {i}"), format!("another caption {i}")],
            extra: vec![],
        })
        .unwrap();
        keys.push(key);
    }
    w.finish().unwrap();
    keys
}

/// Write one Parquet file from named columns, `rows_per_group` rows per row group.
pub fn write_columns(path: &Path, columns: Vec<(&str, ArrayRef)>, rows_per_group: usize) {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, a)| Field::new(*name, a.data_type().clone(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(rows_per_group))
        .build();
    let mut w = ArrowWriter::try_new(File::create(path).unwrap(), schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// The reference readers' interpreter: the project's virtualenv, where
/// `make test` installs pyarrow, safetensors, pycocotools and pycocoevalcap.
pub fn reference_python() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
}

/// Runs the reference reader `tests/readers/SCRIPT` on `args` and returns
/// what it printed (one JSON value), or its stderr when the reader rejects
/// the files. Panics, saying to run `make test`, when the interpreter or a
/// reader package is missing: a missing reader is never a silent pass.
pub fn reference_reader(script: &str, args: &[&Path]) -> Result<serde_json::Value, String> {
    const HINT: &str = "run `make test` (installs the reference readers)";
    let python = reference_python();
    assert!(python.exists(), "no Python at {}: {HINT}", python.display());
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/readers")
        .join(script);
    let out = std::process::Command::new(&python)
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}; {HINT}", python.display()));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "a reference reader is not installed: {HINT}\n{stderr}"
    );
    if !out.status.success() {
        return Err(stderr);
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{} printed no JSON ({e}): {}",
            script.display(),
            String::from_utf8_lossy(&out.stdout)
        )
    }))
}

/// A JSON fixture file, parsed.
pub fn json_file(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A JSON array of strings.
pub fn json_strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// A float stored as its Python `repr` string, which `str::parse` reads back exactly.
pub fn json_float(v: &serde_json::Value) -> f64 {
    v.as_str().unwrap().parse().unwrap()
}

/// `tests/fixtures/{group}/{name}`: a committed fixture file (or folder).
pub fn fixture(group: &str, name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(group)
        .join(name)
}

/// The `dicoflow` binary built for these tests, as a command to add arguments to.
pub fn dicoflow_command() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_dicoflow"))
}

/// Runs the `dicoflow` binary built for these tests with `args`.
pub fn dicoflow(args: &[&str]) -> std::process::Output {
    dicoflow_command().args(args).output().unwrap()
}

/// Runs the `dicoflow` binary with `args`, asserts that it succeeded and
/// parses what it printed as JSON.
pub fn dicoflow_json<T: serde::de::DeserializeOwned>(args: &[&str]) -> T {
    json_output(dicoflow_command().args(args))
}

/// Runs `cmd`, asserts that it succeeded (showing its stderr otherwise) and
/// parses what it printed as JSON.
pub fn json_output<T: serde::de::DeserializeOwned>(cmd: &mut std::process::Command) -> T {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs `f` right after seeding libtorch's global generator with `seed`,
/// holding the process-wide lock that the library's own seeded model
/// initialisations take ([`dicoflow::rng::with_torch_seed`]), so that tests
/// of one binary running on parallel threads (and the trainers they start)
/// cannot reseed or draw from the generator in between: each seeded
/// construction then gives the same weights whatever the other tests do.
pub fn with_tch_seed<T>(seed: u64, f: impl FnOnce() -> T) -> T {
    dicoflow::rng::with_torch_seed(seed, f)
}
