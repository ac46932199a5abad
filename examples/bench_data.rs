//! Benchmark of the CPU data path (docs/benchmarks.md): Parquet shards of
//! photo-like 640×480 JPEGs → decoded, resized (224, bicubic), center-cropped,
//! normalised `[3, 224, 224]` tensors, in images/s on 1 and 2 threads, against
//! (a) decoding alone and (b) the Python path (pyarrow + PIL + torchvision in a
//! PyTorch DataLoader).
//!
//!     cargo run --example bench_data -- [--images N] [--python PYTHON] [--profile]
//!
//! `--profile` stops after the per-stage profile (one thread).
//!
//! The shards are generated (not downloaded) into target/bench-data once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use dicoflow::data::writer::{ShardRow, ShardWriter, ShardWriterConfig};
use dicoflow::data::{LayoutOptions, ShardIndex, ShardSource, SourceConfig, SourceItem};
use dicoflow::image::{decode, decode_rgb, PreprocessConfig, Preprocessor, DEFAULT_MAX_PIXELS};
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

/// CPU seconds (user + system) of this process so far, all threads, finished
/// ones included (Linux `/proc/self/stat`, in clock ticks of 1/100 s); 0 elsewhere.
fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Full path: (images/s wall clock, images per CPU-second of the whole process).
/// `threads` workers each read their share of the shards (worker w of W, as
/// the flow's sources do), decode and preprocess, and send the pixels through
/// a bounded channel (16 images per worker) to one consumer on this thread.
fn full_path(index: &Arc<ShardIndex>, threads: u32) -> anyhow::Result<(f64, f64)> {
    let cpu0 = process_cpu_seconds();
    let start = Instant::now();
    let (tx, rx) = crossbeam_channel::bounded::<Vec<f32>>(16 * threads as usize);
    let (n, skipped) = std::thread::scope(|s| -> anyhow::Result<(u64, u64)> {
        let workers: Vec<_> = (0..threads)
            .map(|w| {
                let (index, tx) = (index.clone(), tx.clone());
                s.spawn(move || -> anyhow::Result<u64> {
                    let mut src = ShardSource::new(index, SourceConfig::default(), w, threads)?;
                    let mut pre = Preprocessor::new(PreprocessConfig::default());
                    let mut skipped = 0;
                    while let Some(item) = src.next_item()? {
                        match item {
                            SourceItem::Sample(s) => match pre.process(&s.image) {
                                Ok(pixels) => tx.send(pixels)?,
                                Err(_) => skipped += 1,
                            },
                            SourceItem::Skipped(_) => skipped += 1,
                        }
                    }
                    Ok(skipped)
                })
            })
            .collect();
        drop(tx);
        let mut n = 0u64;
        for pixels in rx.iter() {
            std::hint::black_box(&pixels);
            n += 1;
        }
        let mut skipped = 0;
        for w in workers {
            skipped += w.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        }
        Ok((n, skipped))
    })?;
    anyhow::ensure!(skipped == 0, "unexpected skips: {skipped}");
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds() - cpu0;
    Ok((n as f64 / elapsed, n as f64 / cpu))
}

/// This thread's CPU time in seconds (Linux `/proc/thread-self/schedstat`,
/// nanoseconds on the CPU), so that the profile does not count the time other
/// processes hold the cores; wall-clock seconds since `origin` where unavailable.
fn thread_cpu_seconds(origin: Instant) -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map(|ns| ns as f64 * 1e-9)
        .unwrap_or_else(|| origin.elapsed().as_secs_f64())
}

/// Where one thread's time goes, per image: reading the row (Parquet), and
/// the default path (decode, resize, crop, normalise: fused for RGB JPEGs,
/// whose rows go through the horizontal pass as they are decoded); and, not in
/// the total, decoding the whole image alone, for reference. CPU time of
/// the thread (not wall clock: other work on a shared machine does not count),
/// means over all images, in microseconds (the kernel updates this clock at
/// scheduler ticks, so single images are coarse but the means are not). The
/// default path and decoding alone take turns going first, image by image, so
/// that neither is always the one that finds the JPEG's bytes in cache.
fn profile(index: &Arc<ShardIndex>) -> anyhow::Result<()> {
    let cfg = PreprocessConfig::default();
    let mut pre = Preprocessor::new(cfg.clone());
    let mut src = ShardSource::new(index.clone(), SourceConfig::default(), 0, 1)?;
    let mut stages: [Vec<f64>; 3] = Default::default();
    let mut out = Vec::new();
    let origin = Instant::now();
    let now = || thread_cpu_seconds(origin);
    let mut t = now();
    while let Some(item) = src.next_item()? {
        let SourceItem::Sample(s) = item else {
            continue;
        };
        // The two timed calls alternate in order from image to image, so that
        // neither always finds the JPEG's bytes already in cache.
        let decode_first = stages[0].len() % 2 == 1;
        let t0 = now();
        let mut decode_alone = 0.0;
        if decode_first {
            let img = decode(&s.image, cfg.max_pixels).map_err(|e| anyhow::anyhow!("{e}"))?;
            std::hint::black_box(img);
            decode_alone = now() - t0;
        }
        let t1 = now();
        pre.process_into(&s.image, &mut out)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        std::hint::black_box(&out);
        let t2 = now();
        if !decode_first {
            let img = decode(&s.image, cfg.max_pixels).map_err(|e| anyhow::anyhow!("{e}"))?;
            std::hint::black_box(img);
            decode_alone = now() - t2;
        }
        for (v, d) in stages.iter_mut().zip([t0 - t, t2 - t1, decode_alone]) {
            v.push(d * 1e6);
        }
        t = now();
    }
    let mean = |v: &Vec<f64>| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (read, prep, decode_alone) = (mean(&stages[0]), mean(&stages[1]), mean(&stages[2]));
    println!(
        "profile (1 thread, CPU time): read row                       {read:6.0} us per image"
    );
    println!(
        "profile (1 thread, CPU time): decode+resize+crop+normalise   {prep:6.0} us per image"
    );
    println!(
        "profile (1 thread, CPU time): total                          {:6.0} us per image ({:.0} images per CPU-second)",
        read + prep,
        1e6 / (read + prep)
    );
    println!("profile (1 thread, CPU time): decode alone (not in total)    {decode_alone:6.0} us per image");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut images = 2000usize;
    let mut python: Option<String> = None;
    let mut only_profile = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--images" => images = args.next().unwrap_or_default().parse()?,
            "--python" => python = args.next(),
            "--profile" => only_profile = true,
            other => {
                anyhow::bail!("unknown argument {other}; use --images N --python PYTHON --profile")
            }
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
    println!(
        "libjpeg-turbo SIMD kernels: {}",
        if dicoflow::image::jpeg::SIMD {
            "yes"
        } else {
            "NO (built without nasm: decoding about 2x slower)"
        }
    );
    // Warm the page cache so every run reads from memory.
    decode_only(&index, 2)?;
    profile(&index)?;
    if only_profile {
        return Ok(());
    }
    for threads in [1, 2] {
        let dec = decode_only(&index, threads)?;
        let (full, per_cpu) = full_path(&index, threads)?;
        println!(
            "threads {threads}: decode-only {dec:.1} images/s, full path {full:.1} images/s ({:.0}% of decode-only; {per_cpu:.1} images per CPU-second)",
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
