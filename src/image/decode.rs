//! Decoding encoded images (JPEG, PNG, WebP) into the pixel layout Pillow opens
//! them in (its *mode*), with a pixel limit against decompression bombs.
//! Failures are skip reasons, not errors: one bad image must never stop a stream.
//!
//! What `PIL.Image.open` (Pillow 13.0) gives, and what we give:
//!
//! | file | Pillow mode | here |
//! |---|---|---|
//! | JPEG, 1 / 3 / 4 components | "L" / "RGB" / "CMYK" (Adobe-inverted) | libjpeg-turbo's decoder (vendored in mozjpeg): default settings, accurate integer IDCT, fancy upsampling, as Pillow's wheels |
//! | PNG grey 1 bit | "1" | [`PilMode::Bilevel`] |
//! | PNG grey 2 / 4 / 8 bit | "L" (2 and 4 bit scaled by 85 / 17) | [`PilMode::L`] |
//! | PNG grey 16 bit | "I;16" | [`PilMode::I16`] |
//! | PNG palette 1–8 bit | "P" (transparency kept aside, unused for RGB) | [`PilMode::P`] |
//! | PNG grey + alpha 8 bit | "LA" | [`PilMode::LA`] |
//! | PNG grey + alpha 16 bit | "RGBA" (high bytes) | [`PilMode::RGBA`] |
//! | PNG RGB 8 / 16 bit | "RGB" (16 bit: high bytes) | [`PilMode::RGB`] |
//! | PNG RGBA 8 / 16 bit | "RGBA" (16 bit: high bytes) | [`PilMode::RGBA`] |
//! | WebP without / with alpha | "RGB" / "RGBA" | [`PilMode::RGB`] / [`PilMode::RGBA`] |
//!
//! Like `Image.open`, nothing is rotated by EXIF orientation, no ICC profile or
//! PNG gamma is applied, and an animated PNG gives its default image.

use std::io::Cursor;

use image::{ImageDecoder, RgbImage};

use crate::data::sample::SkipReason;
use crate::image::mode::{check_size, DecodedImage, PilMode, Samples};

/// Default limit on decoded pixels (width × height): 64 Mpx, far above real
/// photos, far below what a crafted header can ask for.
pub const DEFAULT_MAX_PIXELS: u64 = 64 * 1024 * 1024;

/// Container formats recognised from the first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Jpeg,
    Png,
    WebP,
}

fn sniff(bytes: &[u8]) -> Option<Format> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Format::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Format::Png)
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(Format::WebP)
    } else {
        None
    }
}

/// Whether `bytes` start as a JPEG file (what [`decode`] decodes as JPEG).
pub(crate) fn is_jpeg(bytes: &[u8]) -> bool {
    sniff(bytes) == Some(Format::Jpeg)
}

/// Decode `bytes` (format sniffed from the content) in the mode Pillow opens it in.
///
/// Errors: [`SkipReason::Decode`] for unknown formats, corrupt or truncated
/// files (a JPEG without its end-of-image marker too: Pillow refuses those),
/// [`SkipReason::ZeroSize`], and [`SkipReason::TooLarge`] before any pixel is
/// decoded when width × height exceeds `max_pixels`.
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<DecodedImage, SkipReason> {
    match sniff(bytes) {
        Some(Format::Jpeg) => crate::image::jpeg::decode_jpeg(bytes, max_pixels),
        Some(Format::Png) => decode_png(bytes, max_pixels),
        Some(Format::WebP) => decode_webp(bytes, max_pixels),
        None => Err(SkipReason::Decode(
            "not a recognised image format (JPEG, PNG or WebP)".into(),
        )),
    }
}

/// Decode to RGB8 as `Image.open(...).convert("RGB")` does (no resize).
pub fn decode_rgb(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, SkipReason> {
    Ok(decode(bytes, max_pixels)?.to_rgb())
}

fn decode_png(bytes: &[u8], max_pixels: u64) -> Result<DecodedImage, SkipReason> {
    use png::{BitDepth, ColorType, Transformations};
    let fail = |e: png::DecodingError| SkipReason::Decode(format!("PNG: {e}"));
    let mut decoder = png::Decoder::new_with_limits(
        Cursor::new(bytes),
        png::Limits {
            bytes: usize::try_from(max_pixels.saturating_mul(8).saturating_add(64 << 20))
                .unwrap_or(usize::MAX),
        },
    );
    decoder.set_transformations(Transformations::IDENTITY);
    let header = decoder.read_header_info().map_err(fail)?;
    check_size(header.width, header.height, max_pixels)?;
    let mut reader = decoder.read_info().map_err(fail)?;
    let mut buf = vec![
        0u8;
        reader.output_buffer_size().ok_or_else(|| {
            SkipReason::Decode("PNG: image buffer size overflows".into())
        })?
    ];
    let frame = reader.next_frame(&mut buf).map_err(fail)?;
    let info = reader.info();
    let (w, h) = (info.width as usize, info.height as usize);
    let line = frame.line_size;
    let depth = info.bit_depth;
    let rows = |f: &mut dyn FnMut(&[u8])| {
        for y in 0..h {
            f(&buf[y * line..(y + 1) * line]);
        }
    };
    // Sub-byte samples, unpacked MSB first; `scale` as Pillow's L;2 / L;4 unpackers.
    let unpack_bits = |bits: usize, scale: u8| {
        let mut out = Vec::with_capacity(w * h);
        let mask = ((1u16 << bits) - 1) as u8;
        rows(&mut |row: &[u8]| {
            for x in 0..w {
                let bit = x * bits;
                let v = (row[bit / 8] >> (8 - bits - bit % 8)) & mask;
                out.push(v * scale);
            }
        });
        out
    };
    let hi_bytes = |samples_per_px: usize| {
        let mut out = Vec::with_capacity(w * h * samples_per_px);
        rows(&mut |row: &[u8]| out.extend(row[..w * samples_per_px * 2].iter().step_by(2)));
        out
    };
    let bytes8 = |samples_per_px: usize| {
        let mut out = Vec::with_capacity(w * h * samples_per_px);
        rows(&mut |row: &[u8]| out.extend_from_slice(&row[..w * samples_per_px]));
        out
    };
    let (mode, samples) = match (info.color_type, depth) {
        (ColorType::Grayscale, BitDepth::One) => {
            (PilMode::Bilevel, Samples::U8(unpack_bits(1, 255)))
        }
        (ColorType::Grayscale, BitDepth::Two) => (PilMode::L, Samples::U8(unpack_bits(2, 85))),
        (ColorType::Grayscale, BitDepth::Four) => (PilMode::L, Samples::U8(unpack_bits(4, 17))),
        (ColorType::Grayscale, BitDepth::Eight) => (PilMode::L, Samples::U8(bytes8(1))),
        (ColorType::Grayscale, BitDepth::Sixteen) => {
            let mut out = Vec::with_capacity(w * h);
            rows(&mut |row: &[u8]| {
                out.extend(
                    row[..w * 2]
                        .chunks_exact(2)
                        .map(|p| u16::from_be_bytes([p[0], p[1]])),
                )
            });
            (PilMode::I16, Samples::U16(out))
        }
        (ColorType::Rgb, BitDepth::Eight) => (PilMode::Rgb, Samples::U8(bytes8(3))),
        (ColorType::Rgb, BitDepth::Sixteen) => (PilMode::Rgb, Samples::U8(hi_bytes(3))),
        (ColorType::Indexed, d) => {
            let bits = match d {
                BitDepth::One => 1,
                BitDepth::Two => 2,
                BitDepth::Four => 4,
                BitDepth::Eight => 8,
                BitDepth::Sixteen => {
                    return Err(SkipReason::Decode("PNG: 16-bit palette".into()));
                }
            };
            let idx = if bits == 8 {
                bytes8(1)
            } else {
                unpack_bits(bits, 1)
            };
            (PilMode::P, Samples::U8(idx))
        }
        (ColorType::GrayscaleAlpha, BitDepth::Eight) => (PilMode::LA, Samples::U8(bytes8(2))),
        (ColorType::GrayscaleAlpha, BitDepth::Sixteen) => {
            // Pillow opens it as RGBA through the "LA;16B" unpacker: high bytes.
            let la = hi_bytes(2);
            let rgba = la
                .chunks_exact(2)
                .flat_map(|p| [p[0], p[0], p[0], p[1]])
                .collect();
            (PilMode::Rgba, Samples::U8(rgba))
        }
        (ColorType::Rgba, BitDepth::Eight) => (PilMode::Rgba, Samples::U8(bytes8(4))),
        (ColorType::Rgba, BitDepth::Sixteen) => (PilMode::Rgba, Samples::U8(hi_bytes(4))),
        (c, d) => {
            return Err(SkipReason::Decode(format!(
                "PNG: invalid colour type {c:?} at bit depth {d:?}"
            )))
        }
    };
    let palette = (mode == PilMode::P).then(|| {
        let mut pal = vec![[0u8; 3]; 256];
        if let Some(p) = info.palette.as_deref() {
            for (dst, src) in pal.iter_mut().zip(p.chunks_exact(3)) {
                dst.copy_from_slice(src);
            }
        }
        pal
    });
    Ok(DecodedImage {
        width: info.width,
        height: info.height,
        mode,
        samples,
        palette,
    })
}

fn decode_webp(bytes: &[u8], max_pixels: u64) -> Result<DecodedImage, SkipReason> {
    let fail = |e: image::ImageError| SkipReason::Decode(format!("WebP: {e}"));
    let decoder = image::codecs::webp::WebPDecoder::new(Cursor::new(bytes)).map_err(fail)?;
    let (width, height) = decoder.dimensions();
    check_size(width, height, max_pixels)?;
    let (mode, bands) = match decoder.color_type() {
        image::ColorType::Rgb8 => (PilMode::Rgb, 3),
        image::ColorType::Rgba8 => (PilMode::Rgba, 4),
        other => {
            return Err(SkipReason::Decode(format!(
                "WebP: unexpected colour type {other:?}"
            )))
        }
    };
    let mut buf = vec![0u8; width as usize * height as usize * bands];
    decoder.read_image(&mut buf).map_err(fail)?;
    Ok(DecodedImage {
        width,
        height,
        mode,
        samples: Samples::U8(buf),
        palette: None,
    })
}
