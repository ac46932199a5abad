//! CLIP preprocessing against Pillow, pixel for pixel (fixture made by
//! tests/fixtures/preprocess/make_pillow_fixture.py with the Pillow version it
//! records), every image size accepted, and bad images as counted skips.
mod common;

use std::path::PathBuf;

use dicoflow::data::SkipReason;
use dicoflow::image::{
    decode, decode_rgb, PreprocessConfig, Preprocessor, ResizePlan, CLIP_MEAN, CLIP_STD,
};
use sha2::{Digest, Sha256};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/preprocess")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every fixture image (JPEG, PNG in all of Pillow's PNG modes, WebP; sizes from
/// 1×1 to 2100×20) gives exactly the `[size, size, 3]` crop Pillow gives.
#[test]
fn crops_equal_pillow_pixel_for_pixel() {
    let dir = fixture_dir();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let blob = std::fs::read(dir.join("expected.bin")).unwrap();
    let cases = manifest["cases"].as_array().unwrap();
    assert!(cases.len() >= 50, "fixture has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in cases {
        let file = case["file"].as_str().unwrap();
        let size = case["size"].as_u64().unwrap() as u32;
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let mode = decode(&bytes, u64::MAX).unwrap().mode;
        if mode.name() != case["mode"].as_str().unwrap() {
            failures.push(format!(
                "{file}: mode {} but Pillow opens {}",
                mode.name(),
                case["mode"]
            ));
            continue;
        }
        let mut pre = Preprocessor::new(PreprocessConfig {
            size,
            ..Default::default()
        });
        let got = pre.process_hwc(&bytes).unwrap();
        assert_eq!(got.len(), (size * size * 3) as usize, "{file}");
        if hex(&Sha256::digest(&got)) == case["sha256"].as_str().unwrap() {
            continue;
        }
        let detail = match case.get("offset").and_then(|o| o.as_u64()) {
            Some(off) => {
                let want = &blob[off as usize..off as usize + got.len()];
                let diff = got.iter().zip(want).filter(|(a, b)| a != b).count();
                let worst = got
                    .iter()
                    .zip(want)
                    .map(|(&a, &b)| (a as i32 - b as i32).abs())
                    .max()
                    .unwrap_or(0);
                format!("{diff} of {} samples differ, by up to {worst}", got.len())
            }
            None => "hash differs".into(),
        };
        failures.push(format!("{file} ({}) at {size}: {detail}", mode.name()));
    }
    assert!(
        failures.is_empty(),
        "not Pillow's pixels:\n{}",
        failures.join("\n")
    );
}

/// JPEG decoding alone (before any resize) gives the samples Pillow's
/// libjpeg-turbo gives, for the layouts whose decoding takes different SIMD
/// paths (chroma 4:4:4 / 4:2:2 / 4:2:0, progressive, grey, CMYK; sizes around
/// block and vector widths). Fixture: tests/fixtures/jpeg_decode/make_jpeg_fixture.py.
#[test]
fn jpeg_decoding_equals_pillow() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jpeg_decode");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let cases = manifest["cases"].as_array().unwrap();
    assert!(cases.len() >= 25, "fixture has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in cases {
        let file = case["file"].as_str().unwrap();
        let img = decode(&std::fs::read(dir.join(file)).unwrap(), u64::MAX).unwrap();
        let want_size = (
            case["width"].as_u64().unwrap() as u32,
            case["height"].as_u64().unwrap() as u32,
        );
        assert_eq!((img.width, img.height), want_size, "{file}");
        assert_eq!(img.mode.name(), case["mode"].as_str().unwrap(), "{file}");
        let dicoflow::image::Samples::U8(data) = &img.samples else {
            panic!("{file}: JPEG samples are 8-bit");
        };
        if hex(&Sha256::digest(data)) != case["sha256"].as_str().unwrap() {
            failures.push(file.to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "decoded samples differ from Pillow's (libjpeg-turbo SIMD: {}): {failures:?}",
        dicoflow::image::jpeg::SIMD
    );
}

/// The Makefile fetches nasm so that its builds have libjpeg-turbo's SIMD
/// kernels, and says so with `DICOFLOW_EXPECT_JPEG_SIMD=1`: fail if that build
/// fell back to the portable C code (same pixels, but the data-path benchmark
/// and training would silently run at half speed).
#[test]
fn makefile_builds_have_jpeg_simd() {
    if std::env::var("DICOFLOW_EXPECT_JPEG_SIMD").as_deref() == Ok("1") {
        // black_box: a build-time constant, asserted at run time on purpose.
        assert!(
            std::hint::black_box(dicoflow::image::jpeg::SIMD),
            "libjpeg-turbo was built without SIMD although nasm was expected: \
             `cargo clean -p mozjpeg-sys`, check `nasm -v`, build again"
        );
    }
}

/// The sizes the shipped pipelines use (demo 32 and 64, CLIP 224, 336, 384).
const SIZES: [u32; 5] = [32, 64, 224, 336, 384];

/// Every (w, h) up to 3000 has a plan whose crop lies inside the resized image
/// with the short side equal to the size.
#[test]
fn every_image_size_has_a_crop_inside_the_resized_image() {
    for size in SIZES {
        for w in 1..=3000u32 {
            for h in 1..=3000u32 {
                let plan = ResizePlan::new(w, h, size).unwrap();
                let (rw, rh) = plan.resized;
                assert_eq!(rw.min(rh), size, "{w}x{h} at {size}");
                assert!(
                    plan.offset.0 + size <= rw && plan.offset.1 + size <= rh,
                    "{w}x{h} at {size}: {plan:?}"
                );
            }
        }
    }
}

/// Raw preprocessing of synthetic images of many sizes, the among them
/// (495×457, 640×450, 450×640 were skipped before): never a skip, always
/// `size`×`size`.
#[test]
fn every_image_size_is_preprocessed() {
    let mut dims: Vec<(u32, u32)> = vec![
        (495, 457),
        (640, 450),
        (450, 640),
        (1, 1),
        (1, 3000),
        (3000, 1),
        (2, 2999),
    ];
    for w in (1..=40).chain([223, 224, 225, 335, 337, 383, 385]) {
        for h in [1, 2, 3, 17, 31, 32, 33, 63, 65, 224, 301] {
            dims.push((w, h));
            dims.push((h, w));
        }
    }
    // A deterministic spread up to 1200 px.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..60 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        dims.push(((x >> 33) as u32 % 1200 + 1, (x >> 13) as u32 % 1200 + 1));
    }
    for &(w, h) in &dims {
        let data: Vec<u8> = (0..w as usize * h as usize * 3)
            .map(|i| (i * 31 % 256) as u8)
            .collect();
        let img = image::RgbImage::from_raw(w, h, data).unwrap();
        for size in SIZES {
            let mut pre = Preprocessor::new(PreprocessConfig {
                size,
                ..Default::default()
            });
            let out = pre
                .resize_crop(&img)
                .unwrap_or_else(|e| panic!("{w}x{h} at {size}: {e}"));
            assert_eq!(out.len(), (size * size * 3) as usize);
        }
    }
}

#[test]
fn resize_failures_are_their_own_skip_reason() {
    let err = ResizePlan::new((1 << 24) + 1, 1, 224).unwrap_err();
    assert!(matches!(err, SkipReason::Resize(_)), "{err:?}");
    assert_eq!(err.label(), "image resize failed");
    assert_ne!(err.label(), SkipReason::Decode(String::new()).label());
    assert!(matches!(
        ResizePlan::new(0, 5, 224),
        Err(SkipReason::ZeroSize)
    ));
}

#[test]
fn u8_path_equals_f32_path_before_normalisation() {
    let bytes = common::jpeg(50, 30, 9);
    let mut pre = Preprocessor::new(PreprocessConfig {
        size: 24,
        ..Default::default()
    });
    let f = pre.process(&bytes).unwrap();
    let u = pre.process_u8(&bytes).unwrap();
    assert_eq!(f.len(), 3 * 24 * 24);
    assert_eq!(u.len(), f.len());
    for (i, (&uv, &fv)) in u.iter().zip(&f).enumerate() {
        let c = i / (24 * 24);
        let want = (uv as f32 / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c];
        assert!((want - fv).abs() < 1e-5);
    }
}

#[test]
fn truncated_and_non_image_bytes_are_decode_skips() {
    let jpeg = common::jpeg(64, 48, 1);
    let mut pre = Preprocessor::new(PreprocessConfig::default());
    for bad in [
        &jpeg[..jpeg.len() / 3],
        b"definitely not an image".as_slice(),
        &[],
    ] {
        match pre.process(bad) {
            Err(SkipReason::Decode(detail)) => assert!(!detail.is_empty()),
            other => panic!("expected a decode skip, got {other:?}"),
        }
    }
}

/// CRC-32 (IEEE) for patching PNG chunks.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A real PNG whose header is rewritten to claim `w`×`h` pixels.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut png = common::png(2, 2, 0);
    // Signature (8) + length (4) + "IHDR" (4) + width (4) + height (4) ...
    png[16..20].copy_from_slice(&w.to_be_bytes());
    png[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

#[test]
fn decompression_bombs_are_refused_before_decoding() {
    let bomb = png_claiming(100_000, 100_000);
    match decode_rgb(&bomb, dicoflow::image::DEFAULT_MAX_PIXELS) {
        Err(SkipReason::TooLarge { width, height, .. }) => {
            assert_eq!((width, height), (100_000, 100_000))
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // A modest limit refuses a normal image too.
    let normal = common::png(40, 40, 0);
    assert!(matches!(
        decode_rgb(&normal, 1_000),
        Err(SkipReason::TooLarge { .. })
    ));
    assert!(decode_rgb(&normal, 1_600).is_ok());
}

#[test]
fn zero_size_images_are_skips_not_panics() {
    let zero = png_claiming(0, 10);
    let err = decode_rgb(&zero, u64::MAX).unwrap_err();
    assert!(
        matches!(err, SkipReason::ZeroSize | SkipReason::Decode(_)),
        "{err:?}"
    );
}

#[test]
fn grey_and_rgba_images_become_rgb() {
    let grey = image::GrayImage::from_pixel(6, 4, image::Luma([200]));
    let mut bytes = Vec::new();
    grey.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .unwrap();
    let rgb = decode_rgb(&bytes, u64::MAX).unwrap();
    assert_eq!(rgb.dimensions(), (6, 4));
    assert_eq!(rgb.get_pixel(0, 0).0, [200, 200, 200]);

    let rgba = image::RgbaImage::from_pixel(3, 3, image::Rgba([10, 20, 30, 0]));
    let mut bytes = Vec::new();
    rgba.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::WebP,
    )
    .unwrap();
    let rgb = decode_rgb(&bytes, u64::MAX).unwrap();
    assert_eq!(rgb.get_pixel(1, 1).0, [10, 20, 30]);
}
