//! Benchmark of the CPU data path (docs/benchmarks.md): Parquet shards of
//! photo-like 640×480 JPEGs → decoded, resized (224, bicubic), center-cropped,
//! normalised `[3, 224, 224]` tensors, in images/s on 1 and 2 threads, against
//! (a) decoding alone and (b) the Python path (pyarrow + PIL + torchvision in a
//! PyTorch DataLoader).
//!
//!     cargo run --release --example bench_data -- [--images N] [--python PYTHON]
//!
//! The shards are generated (not downloaded) into target/bench-data once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use dicoflow::data::writer::{ShardRow, ShardWriter, ShardWriterConfig};
use dicoflow::data::{LayoutOptions, ShardIndex, ShardSource, SourceConfig, SourceItem};
use dicoflow::image::parallel::preprocess_parallel;
use dicoflow::image::{decode_rgb, PreprocessConfig, DEFAULT_MAX_PIXELS};
use dicoflow::rng::Rng;
use image::codecs::jpeg::JpegEncoder;
use image::{Rgb, RgbImage};

/// A photo-like image: smooth lighting gradient, a few soft blobs, sensor noise.
fn photo_like(rng: &mut Rng, w: u32, h: u32) -> RgbImage {
    let base: [f64; 3] = [
        rng.range_f64(40.0, 200.0),
        rng.range_f64(40.0, 200.0),
        rng.range_f64(40.0, 200.0),
    ];
    let blobs: Vec<(f64, f64, f64, [f64; 3])> = (0..6)
        .map(|_| {
            (
                rng.range_f64(0.0, w as f64),
                rng.range_f64(0.0, h as f64),
                rng.range_f64(30.0, 160.0),
                [
                    rng.range_f64(-90.0, 90.0),
                    rng.range_f64(-90.0, 90.0),
                    rng.range_f64(-90.0, 90.0),
                ],
            )
        })
        .collect();
    let mut img = RgbImage::new(w, h);
    for (x, y, px) in img.enumerate_pixels_mut() {
        let (fx, fy) = (x as f64, y as f64);
        let light = 0.7 + 0.3 * (fx / w as f64) * (1.0 - fy / h as f64);
        let mut c = [base[0] * light, base[1] * light, base[2] * light];
        for (bx, by, r, col) in &blobs {
            let d2 = ((fx - bx).powi(2) + (fy - by).powi(2)) / (r * r);
            let wgt = (-d2).exp();
            for k in 0..3 {
                c[k] += col[k] * wgt;
            }
        }
        let noise = (rng.f64() - 0.5) * 24.0;
        *px = Rgb([
            (c[0] + noise).clamp(0.0, 255.0) as u8,
            (c[1] + noise).clamp(0.0, 255.0) as u8,
            (c[2] + noise).clamp(0.0, 255.0) as u8,
        ]);
    }
    img
}

fn ensure_shards(dir: &Path, n: usize) -> anyhow::Result<()> {
    let stamp = dir.join(format!(".complete-{n}"));
    if stamp.exists() {
        return Ok(());
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    eprintln!("generating {n} 640x480 JPEGs into {}", dir.display());
    let cfg = ShardWriterConfig {
        rows_per_shard: 500,
        rows_per_row_group: 50,
        ..Default::default()
    };
    let mut w = ShardWriter::try_new(dir, "photos", cfg)?;
    let mut rng = Rng::new(42);
    for i in 0..n {
        let img = photo_like(&mut rng, 640, 480);
        let mut jpeg = Vec::new();
        JpegEncoder::new_with_quality(&mut jpeg, 90).encode_image(&img)?;
        w.push(ShardRow {
            key: format!("photo-{i:06}"),
            image: jpeg,
            image_path: None,
            captions: vec![format!("a photo number {i}")],
            extra: vec![],
        })?;
    }
    w.finish()?;
    std::fs::write(stamp, b"")?;
    Ok(())
}

/// Decode-only rate: the same shard reading and JPEG decoding, no resize/normalise.
fn decode_only(index: &Arc<ShardIndex>, threads: u32) -> anyhow::Result<f64> {
    let start = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|w| {
                let index = index.clone();
                s.spawn(move || -> anyhow::Result<u64> {
                    let mut n = 0;
                    let mut src = ShardSource::new(index, SourceConfig::default(), w, threads)?;
                    while let Some(item) = src.next_item()? {
                        if let SourceItem::Sample(s) = item {
                            let img = decode_rgb(&s.image, DEFAULT_MAX_PIXELS)
                                .map_err(|e| anyhow::anyhow!("{e}"))?;
                            std::hint::black_box(img);
                            n += 1;
                        }
                    }
                    Ok(n)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum::<anyhow::Result<u64>>()
    })?;
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

fn full_path(index: &Arc<ShardIndex>, threads: u32) -> anyhow::Result<f64> {
    let mut n = 0u64;
    let stats = preprocess_parallel(
        index.clone(),
        &SourceConfig::default(),
        &PreprocessConfig::default(),
        threads,
        |p| {
            std::hint::black_box(&p.pixels);
            n += 1;
        },
        |_| {},
    )?;
    anyhow::ensure!(
        stats.skipped.total() == 0,
        "unexpected skips: {}",
        stats.skipped
    );
    Ok(n as f64 / stats.elapsed.as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    let mut images = 2000usize;
    let mut python: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--images" => images = args.next().unwrap_or_default().parse()?,
            "--python" => python = args.next(),
            other => anyhow::bail!("unknown argument {other}; use --images N --python PYTHON"),
        }
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    ensure_shards(&dir, images)?;
    let index = Arc::new(ShardIndex::open(&dir, &LayoutOptions::default())?);
    println!(
        "shards: {} files, {} images (640x480 JPEG q90)",
        index.shards.len(),
        index.num_rows()
    );
    // Warm the page cache so every run reads from memory.
    decode_only(&index, 2)?;
    for threads in [1, 2] {
        let dec = decode_only(&index, threads)?;
        let full = full_path(&index, threads)?;
        println!(
            "threads {threads}: decode-only {dec:.1} images/s, full path {full:.1} images/s ({:.0}% of decode-only)",
            100.0 * full / dec
        );
    }
    if let Some(py) = python {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/bench_data_python.py");
        let out = std::process::Command::new(py)
            .arg(&script)
            .arg(&dir)
            .args(["--workers", "2"])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "python benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "python DataLoader (2 workers): {}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(())
}
