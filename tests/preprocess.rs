//! CLIP preprocessing against torchvision (fixture made by
//! tests/fixtures/preprocess/make_fixture.py), and bad images as counted skips.
mod common;

use std::path::PathBuf;

use dicoflow::data::SkipReason;
use dicoflow::image::{decode_rgb, PreprocessConfig, Preprocessor, CLIP_MEAN, CLIP_STD};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/preprocess")
}

#[test]
fn matches_torchvision_resize_crop_normalize() {
    let text = std::fs::read_to_string(fixture_dir().join("expected.json")).unwrap();
    let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
    for case in fixture["cases"].as_array().unwrap() {
        let file = case["file"].as_str().unwrap();
        let size = case["size"].as_u64().unwrap() as u32;
        let expected: Vec<f32> = case["expected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let bytes = std::fs::read(fixture_dir().join(file)).unwrap();
        let mut pre = Preprocessor::new(PreprocessConfig {
            size,
            ..Default::default()
        });
        let got = pre.process(&bytes).unwrap();
        assert_eq!(got.len(), expected.len(), "{file}");
        // Compare in 0..255 pixel levels: PIL and our resampler both round to
        // u8; allow one level of rounding difference.
        let plane = (size * size) as usize;
        let mut worst = 0f32;
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            let c = i / plane;
            let levels = (g - e).abs() * CLIP_STD[c] * 255.0;
            worst = worst.max(levels);
        }
        assert!(worst <= 1.01, "{file}: worst difference {worst} levels");
    }
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
