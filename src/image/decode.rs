//! Decoding encoded images (JPEG, PNG, WebP) to RGB8, with a pixel limit
//! against decompression bombs. Failures are skip reasons, not errors: one bad
//! image must never stop a stream.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

use crate::data::sample::SkipReason;

/// Default limit on decoded pixels (width × height): 64 Mpx, far above real
/// photos, far below what a crafted header can ask for.
pub const DEFAULT_MAX_PIXELS: u64 = 64 * 1024 * 1024;

/// Decode `bytes` (format sniffed from the content) to RGB8. Alpha is dropped,
/// grey and 16-bit images are converted, as PIL's `convert("RGB")` does.
pub fn decode_rgb(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, SkipReason> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| SkipReason::Decode(e.to_string()))?;
    if reader.format().is_none() {
        return Err(SkipReason::Decode(
            "not a recognised image format (JPEG, PNG or WebP)".into(),
        ));
    }
    // JPEG decoders fill a truncated image with grey and report success; a
    // file cut short (a failed download) must be a skip, not a grey image.
    if reader.format() == Some(ImageFormat::Jpeg) && !has_jpeg_end_marker(bytes) {
        return Err(SkipReason::Decode(
            "truncated JPEG (no end-of-image marker)".into(),
        ));
    }
    let mut limits = Limits::default();
    // Room for the decoded image at up to 8 bytes per pixel plus decoder buffers.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(limits);
    let decoder = reader
        .into_decoder()
        .map_err(|e| SkipReason::Decode(e.to_string()))?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(SkipReason::ZeroSize);
    }
    if width as u64 * height as u64 > max_pixels {
        return Err(SkipReason::TooLarge {
            width,
            height,
            limit: max_pixels,
        });
    }
    let image =
        DynamicImage::from_decoder(decoder).map_err(|e| SkipReason::Decode(e.to_string()))?;
    Ok(match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    })
}

/// Whether an end-of-image marker (FF D9) is near the end. Entropy-coded data
/// never contains FF D9 (FF is byte-stuffed), so it marks a complete image;
/// some writers append a little data after it, hence the window.
fn has_jpeg_end_marker(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(4096)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}
