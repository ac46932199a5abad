//! JPEG decoding as Pillow's wheels do it: libjpeg-turbo's decoder (the copy
//! vendored in mozjpeg, built from source by `mozjpeg-sys`) with libjpeg's
//! default settings (accurate integer IDCT, fancy chroma upsampling), the
//! output colour space Pillow asks for (grey, RGB, or CMYK which Pillow then
//! inverts as Adobe files store it, "CMYK;I").
//!
//! libjpeg reports fatal errors by unwinding out of the C code; they are
//! caught here and become skip reasons.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// Whether this build's libjpeg-turbo has its SIMD kernels (x86: built with
/// `nasm`, which `make` provides; see build.rs). Either way the pixels are
/// the same (libjpeg-turbo's SIMD and C paths are bit-exact); only speed differs.
pub const SIMD: bool = {
    let flag = env!("DICOFLOW_JPEG_SIMD").as_bytes();
    flag.len() == 1 && flag[0] == b'1'
};

use crate::data::sample::SkipReason;
use crate::image::mode::{check_size, DecodedImage, PilMode, Samples};

/// The position of the first FF byte at or after `from` (`bytes.len()` if
/// none). The whole entropy-coded data is scanned once per image, hence
/// `memchr`'s vectorised search.
fn next_ff(bytes: &[u8], from: usize) -> usize {
    bytes
        .get(from..)
        .and_then(|rest| memchr::memchr(0xFF, rest))
        .map_or(bytes.len(), |k| from + k)
}

/// Whether the file's marker structure reaches its end-of-image marker (EOI,
/// FF D9), read as libjpeg reads it (ITU-T T.81, Annex B): marker segments are
/// skipped by their length, so an FF D9 inside a comment or an APPn segment is
/// not taken for the end; after each start-of-scan the entropy-coded data runs
/// to the next marker that is neither a stuffed FF 00 nor a restart marker
/// RSTn. Bytes after EOI are ignored, as libjpeg and Pillow ignore them (phone
/// "motion photos" append a video there). Without a reachable EOI the file is
/// truncated: libjpeg would pad it with grey, Pillow refuses it. A file that
/// does not start with SOI is left to the decoder, which names the fault.
fn reaches_end_of_image(bytes: &[u8]) -> bool {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return true;
    }
    let mut i = 2;
    loop {
        // The next marker: libjpeg skips stray bytes and FF fill bytes.
        i = next_ff(bytes, i);
        while i < bytes.len() && bytes[i] == 0xFF {
            i += 1;
        }
        let Some(&code) = bytes.get(i) else {
            return false;
        };
        i += 1;
        match code {
            0xD9 => return true,
            // No length: stuffing, TEM, RSTn, SOI.
            0x00 | 0x01 | 0xD0..=0xD8 => continue,
            _ => {}
        }
        let Some(len) = bytes
            .get(i..i + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        else {
            return false;
        };
        i += len;
        if i > bytes.len() {
            return false;
        }
        if code == 0xDA {
            // Entropy-coded data: FF 00 and FF Dn are part of it.
            loop {
                i = next_ff(bytes, i);
                match bytes.get(i + 1) {
                    None => return false,
                    Some(0x00 | 0xD0..=0xD7) => i += 2,
                    Some(_) => break,
                }
            }
        }
    }
}

/// Read the header and check the size before any pixel is decoded.
fn open_checked(
    bytes: &[u8],
    max_pixels: u64,
) -> Result<(mozjpeg::Decompress<&[u8]>, u32, u32), SkipReason> {
    let d = mozjpeg::Decompress::new_mem(bytes).map_err(io_fail)?;
    let (w, h) = d.size();
    let (width, height) = (
        u32::try_from(w).unwrap_or(u32::MAX),
        u32::try_from(h).unwrap_or(u32::MAX),
    );
    check_size(width, height, max_pixels)?;
    Ok((d, width, height))
}

fn io_fail(e: std::io::Error) -> SkipReason {
    SkipReason::Decode(format!("JPEG: {e}"))
}

/// Decode a JPEG in Pillow's mode for it: "L" (1 component), "RGB" (3) or
/// "CMYK" (4). Errors: truncated files (libjpeg would pad them with grey,
/// Pillow refuses them), corrupt data, other component counts, and the size
/// checks of [`crate::image::decode::decode`].
pub(crate) fn decode_jpeg(bytes: &[u8], max_pixels: u64) -> Result<DecodedImage, SkipReason> {
    if !reaches_end_of_image(bytes) {
        return Err(SkipReason::Decode(
            "truncated JPEG (its data ends before the end-of-image marker)".into(),
        ));
    }
    let run = || -> Result<DecodedImage, SkipReason> {
        let (d, width, height) = open_checked(bytes, max_pixels)?;
        let (mode, mut started) = match d.components().len() {
            1 => (PilMode::L, d.grayscale().map_err(io_fail)?),
            3 => (PilMode::Rgb, d.rgb().map_err(io_fail)?),
            4 => (
                PilMode::Cmyk,
                d.to_colorspace(mozjpeg::ColorSpace::JCS_CMYK)
                    .map_err(io_fail)?,
            ),
            n => {
                return Err(SkipReason::Decode(format!(
                    "JPEG: {n} components (Pillow reads 1, 3 or 4)"
                )))
            }
        };
        let mut data: Vec<u8> = started.read_scanlines().map_err(io_fail)?;
        started.finish().map_err(io_fail)?;
        if mode == PilMode::Cmyk {
            // Pillow's "CMYK;I" raw mode: Adobe stores inverted CMYK.
            for v in &mut data {
                *v = 255 - *v;
            }
        }
        Ok(DecodedImage {
            width,
            height,
            mode,
            samples: Samples::U8(data),
            palette: None,
        })
    };
    caught(catch_unwind(AssertUnwindSafe(run)))
}

/// The result of a decode, or libjpeg's error (an unwind out of its C code) as a skip reason.
fn caught<T>(outcome: std::thread::Result<Result<T, SkipReason>>) -> Result<T, SkipReason> {
    match outcome {
        Ok(result) => result,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "libjpeg error".into());
            Err(SkipReason::Decode(format!("JPEG: {msg}")))
        }
    }
}

/// Rows [`stream_rgb_rows`] decodes before handing them on: the sink then
/// reads rows whose bytes libjpeg wrote a while ago (a row read right after
/// libjpeg's last small stores into it stalls the first wide loads).
const STREAM_ROWS: usize = 8;

/// Receives the rows of a JPEG decoded by [`stream_rgb_rows`].
pub(crate) trait RowSink {
    /// Called once with the image's size before any row; `false` stops
    /// decoding at once, and [`stream_rgb_rows`] returns `Ok(false)`.
    fn start(&mut self, width: u32, height: u32) -> bool;

    /// Row `y` (from 0, in order), `width * 3` interleaved RGB samples.
    fn row(&mut self, y: usize, rgb: &[u8]);
}

/// Decode a 3-component JPEG ("RGB") row by row into `sink`, through `line`
/// (a reusable buffer of [`STREAM_ROWS`] rows): the same decoder, settings, checks and
/// errors as [`decode_jpeg`], without holding the whole image.
///
/// Returns `Ok(false)` without calling [`RowSink::row`] when the file is not
/// a 3-component JPEG or `sink.start` declines; the caller then decodes
/// with [`decode_jpeg`], which gives that file's result or error.
///
/// Only libjpeg's errors become skip reasons: a panic in `sink` (a bug, not
/// a bad file) is resumed after the decoder is dropped.
pub(crate) fn stream_rgb_rows(
    bytes: &[u8],
    max_pixels: u64,
    line: &mut Vec<u8>,
    sink: &mut dyn RowSink,
) -> Result<bool, SkipReason> {
    if !reaches_end_of_image(bytes) {
        return Err(SkipReason::Decode(
            "truncated JPEG (its data ends before the end-of-image marker)".into(),
        ));
    }
    let mut sink_panic = None;
    let run = || -> Result<bool, SkipReason> {
        let (d, width, height) = open_checked(bytes, max_pixels)?;
        let (w, h) = (width as usize, height as usize);
        if d.components().len() != 3 {
            return Ok(false);
        }
        match catch_unwind(AssertUnwindSafe(|| sink.start(width, height))) {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(payload) => {
                sink_panic = Some(payload);
                return Ok(false);
            }
        }
        let mut started = d.rgb().map_err(io_fail)?;
        let n = w * 3;
        if line.len() < n * STREAM_ROWS {
            line.resize(n * STREAM_ROWS, 0);
        }
        for y0 in (0..h).step_by(STREAM_ROWS) {
            let rows = &mut line[..n * STREAM_ROWS.min(h - y0)];
            started.read_scanlines_into(&mut *rows).map_err(io_fail)?;
            for (i, row) in rows.chunks_exact(n).enumerate() {
                if let Err(payload) = catch_unwind(AssertUnwindSafe(|| sink.row(y0 + i, row))) {
                    sink_panic = Some(payload);
                    return Ok(false);
                }
            }
        }
        started.finish().map_err(io_fail)?;
        Ok(true)
    };
    let outcome = caught(catch_unwind(AssertUnwindSafe(run)));
    if let Some(payload) = sink_panic {
        std::panic::resume_unwind(payload);
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    struct PanickingSink;

    impl RowSink for PanickingSink {
        fn start(&mut self, _: u32, _: u32) -> bool {
            true
        }

        fn row(&mut self, y: usize, _: &[u8]) {
            assert!(y < 3, "a bug in the sink");
        }
    }

    #[test]
    fn a_panicking_sink_is_a_panic_not_a_decode_skip() {
        let img = image::RgbImage::from_fn(16, 8, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
            .encode_image(&img)
            .unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            stream_rgb_rows(&bytes, u64::MAX, &mut Vec::new(), &mut PanickingSink)
        }));
        assert!(outcome.is_err(), "got {:?}", outcome.ok());
    }

    fn small_jpeg() -> Vec<u8> {
        let img =
            image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 3, y as u8 * 5, 90]));
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95)
            .encode_image(&img)
            .unwrap();
        bytes
    }

    /// The same file with a comment segment holding FF D9 right after SOI.
    fn with_comment(bytes: &[u8], text: &[u8]) -> Vec<u8> {
        let len = u16::try_from(text.len() + 2).unwrap().to_be_bytes();
        let mut out = bytes[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xFE, len[0], len[1]]);
        out.extend_from_slice(text);
        out.extend_from_slice(&bytes[2..]);
        out
    }

    fn pixels(bytes: &[u8]) -> Result<Vec<u8>, SkipReason> {
        match decode_jpeg(bytes, u64::MAX)?.samples {
            Samples::U8(v) => Ok(v),
            other => panic!("unexpected samples {other:?}"),
        }
    }

    // What Pillow 13.0.0 does with these files (checked with `Image.open(..).load()`):
    // data after EOI is ignored, whatever its length; a file cut before EOI is
    // "image file is truncated", even when FF D9 occurs in a segment near its end.
    #[test]
    fn data_after_the_end_of_image_is_ignored_whatever_its_length() {
        let bytes = small_jpeg();
        let want = pixels(&bytes).unwrap();
        for trailer in [
            vec![0u8; 100],
            vec![0u8; 5000],
            (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect(),
        ] {
            let mut long = bytes.clone();
            long.extend_from_slice(&trailer);
            assert_eq!(
                pixels(&long).unwrap(),
                want,
                "trailer of {} bytes",
                trailer.len()
            );
        }
    }

    #[test]
    fn a_cut_file_is_truncated_even_with_ff_d9_in_a_segment() {
        let bytes = with_comment(&small_jpeg(), b"x\xff\xd9y");
        assert!(pixels(&bytes).is_ok());
        for keep in [bytes.len() * 2 / 3, bytes.len() - 2, 40] {
            let err = pixels(&bytes[..keep]).unwrap_err();
            assert!(
                format!("{err:?}").contains("truncated"),
                "cut at {keep}: {err:?}"
            );
            let mut sink_rows = 0usize;
            struct Count<'a>(&'a mut usize);
            impl RowSink for Count<'_> {
                fn start(&mut self, _: u32, _: u32) -> bool {
                    true
                }
                fn row(&mut self, _: usize, _: &[u8]) {
                    *self.0 += 1;
                }
            }
            let streamed = stream_rgb_rows(
                &bytes[..keep],
                u64::MAX,
                &mut Vec::new(),
                &mut Count(&mut sink_rows),
            );
            assert!(streamed.is_err(), "streamed, cut at {keep}");
        }
    }
}
