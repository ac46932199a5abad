//! CLIP preprocessing as the official code does it (OpenAI CLIP's `_transform`,
//! used by clipscore and pacscore): `Resize(size, BICUBIC)` on the PIL image in
//! its own mode, `CenterCrop(size)`, `convert("RGB")`, `ToTensor`, `Normalize`
//! with CLIP's mean/std, into a planar `[3, size, size]` f32 buffer. A u8
//! variant leaves normalisation to the GPU.
//!
//! Pixels equal Pillow's (see [`crate::image::resample`] for the resize and
//! [`crate::image::decode`] for decoding and the modes):
//! - torchvision's size: the short side becomes `size`, the long side
//!   `int(size * long / short)`; `CenterCrop` offsets `int(round((n - size) / 2))`;
//! - modes "1" and "P" are resized nearest-neighbour (Pillow forces it), "LA"
//!   and "RGBA" through premultiplied "La"/"RGBa" and back, "I;16" with
//!   16-bit arithmetic; every mode is converted to RGB only after the crop.
//!
//! Only the kept `size`×`size` window is computed, with integer crop bounds.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::data::sample::SkipReason;
use crate::image::decode::{decode, is_jpeg, DEFAULT_MAX_PIXELS};
use crate::image::jpeg::{stream_rgb_rows, RowSink};
use crate::image::mode::{muldiv255, to_rgb, DecodedImage, PilMode, Samples};
use crate::image::resample::{resize_bicubic, resize_nearest, RowPlan, Window};

/// CLIP's per-channel mean (RGB, on 0..1 values), as published.
#[allow(clippy::excessive_precision)]
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// CLIP's per-channel standard deviation, as published.
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];
/// CLIP's input resolution for ViT-B/32, B/16 and L/14.
pub const DEFAULT_SIZE: u32 = 224;

/// Preprocessing settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PreprocessConfig {
    /// Output side length (default `DEFAULT_SIZE`).
    pub size: u32,
    /// Normalisation mean (default [`CLIP_MEAN`]).
    pub mean: [f32; 3],
    /// Normalisation std (default [`CLIP_STD`]).
    pub std: [f32; 3],
    /// Largest accepted decoded image in pixels (default [`DEFAULT_MAX_PIXELS`]).
    pub max_pixels: u64,
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        Self {
            size: DEFAULT_SIZE,
            mean: CLIP_MEAN,
            std: CLIP_STD,
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

/// Size after resizing the shortest side of `(width, height)` to `size`, as
/// torchvision's `Resize(size)`: the long side is `int(size * long / short)`,
/// truncated, not rounded (exact in integers; Python's float division gives the
/// same integer part for every size that fits in memory).
pub fn resized_size(width: u32, height: u32, size: u32) -> (u32, u32) {
    let long_of = |long: u32, short: u32| {
        (size as u64 * long as u64 / short as u64).min(u32::MAX as u64) as u32
    };
    if width <= height {
        (size, long_of(height, width))
    } else {
        (long_of(width, height), size)
    }
}

/// `(left, top)` of torchvision's `CenterCrop(size)` in an image of `(width, height)`:
/// `round((extent - size) / 2)` with Python's round-half-to-even.
pub fn center_crop_box(width: u32, height: u32, size: u32) -> (u32, u32) {
    let offset = |extent: u32| {
        let twice = extent.saturating_sub(size); // (extent - size) / 2 == twice / 2
        let (q, r) = (twice / 2, twice % 2);
        // r == 1 means an exact .5: round half to even.
        if r == 1 && q % 2 == 1 {
            q + 1
        } else {
            q
        }
    };
    (offset(width), offset(height))
}

/// Largest side Pillow's resize takes exactly: its source box is a C `float`,
/// which holds integers only up to 2^24.
pub const MAX_RESIZE_SIDE: u32 = 1 << 24;

/// What preprocessing does to an image of a given size: torchvision's resized
/// size and the center crop's integer offsets in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResizePlan {
    /// Output side length.
    pub size: u32,
    /// `(width, height)` after `Resize(size)`.
    pub resized: (u32, u32),
    /// `(left, top)` of the `size`×`size` crop in the resized image.
    pub offset: (u32, u32),
}

impl ResizePlan {
    /// The plan for a `width`×`height` image.
    ///
    /// Errors: [`SkipReason::ZeroSize`] for an empty image;
    /// [`SkipReason::Resize`] for `size == 0`, a side longer than
    /// `MAX_RESIZE_SIDE` or a resized side that does not fit Pillow's `int`
    /// (no reference pixels exist for those).
    pub fn new(width: u32, height: u32, size: u32) -> Result<Self, SkipReason> {
        if width == 0 || height == 0 {
            return Err(SkipReason::ZeroSize);
        }
        if size == 0 {
            return Err(SkipReason::Resize("output size 0".into()));
        }
        if width.max(height) > MAX_RESIZE_SIDE {
            return Err(SkipReason::Resize(format!(
                "{width}x{height} has a side longer than {MAX_RESIZE_SIDE} px, which Pillow's resize cannot address exactly"
            )));
        }
        let resized = resized_size(width, height, size);
        if resized.0.max(resized.1) > i32::MAX as u32 {
            return Err(SkipReason::Resize(format!(
                "{width}x{height} resized to short side {size} is larger than Pillow can allocate"
            )));
        }
        let offset = center_crop_box(resized.0, resized.1, size);
        debug_assert!(offset.0 + size <= resized.0 && offset.1 + size <= resized.1);
        Ok(Self {
            size,
            resized,
            offset,
        })
    }

    /// Kept columns of the resized image.
    pub fn cols(&self) -> std::ops::Range<usize> {
        self.offset.0 as usize..(self.offset.0 + self.size) as usize
    }

    /// Kept rows of the resized image.
    pub fn rows(&self) -> std::ops::Range<usize> {
        self.offset.1 as usize..(self.offset.1 + self.size) as usize
    }
}

/// Premultiply alpha as Pillow's "LA"→"La" / "RGBA"→"RGBa" conversions
/// (`MULDIV255`); the last of `bands` samples is alpha.
fn premultiply(data: &[u8], bands: usize) -> Vec<u8> {
    let mut out = data.to_vec();
    for px in out.chunks_exact_mut(bands) {
        let a = px[bands - 1] as i32;
        for v in &mut px[..bands - 1] {
            *v = muldiv255(*v as i32, a) as u8;
        }
    }
    out
}

/// Undo premultiplication as Pillow's "La"→"LA" / "RGBa"→"RGBA" conversions:
/// unchanged where alpha is 0 or 255, else `min(255 * v / alpha, 255)` (integer division).
fn unpremultiply(data: &mut [u8], bands: usize) {
    for px in data.chunks_exact_mut(bands) {
        let a = px[bands - 1] as u32;
        if a == 0 || a == 255 {
            continue;
        }
        for v in &mut px[..bands - 1] {
            *v = (255 * *v as u32 / a).min(255) as u8;
        }
    }
}

/// Resize (Pillow, in the image's mode) and center-crop `img` as `plan` says,
/// then convert the crop to RGB: interleaved `[size, size, 3]` u8.
pub fn resize_crop_decoded(img: &DecodedImage, plan: &ResizePlan) -> Vec<u8> {
    resize_crop_owned(img.clone(), plan)
}

/// [`resize_crop_decoded`] taking the image by value (no copy of its samples).
pub fn resize_crop_owned(img: DecodedImage, plan: &ResizePlan) -> Vec<u8> {
    let (w, h) = (img.width as usize, img.height as usize);
    let out = (plan.resized.0 as usize, plan.resized.1 as usize);
    let (cols, rows) = (plan.cols(), plan.rows());
    let same = out == (w, h);
    let bands = img.mode.bands();
    let samples = match img.samples {
        Samples::U16(data) => {
            let src = Window::whole(data, w, h, 1);
            let win = if same {
                src.crop(cols, rows)
            } else {
                resize_bicubic(&src, out, cols, rows)
            };
            Samples::U16(win.data)
        }
        Samples::U8(data) => {
            let win = match img.mode {
                _ if same => Window::whole(data, w, h, bands).crop(cols, rows),
                PilMode::Bilevel | PilMode::P => {
                    resize_nearest(&Window::whole(data, w, h, bands), out, cols, rows)
                }
                PilMode::LA | PilMode::Rgba => {
                    let src = Window::whole(premultiply(&data, bands), w, h, bands);
                    let mut win = resize_bicubic(&src, out, cols, rows);
                    unpremultiply(&mut win.data, bands);
                    win
                }
                _ => resize_bicubic(&Window::whole(data, w, h, bands), out, cols, rows),
            };
            if img.mode == PilMode::Rgb {
                return win.data; // already RGB
            }
            Samples::U8(win.data)
        }
    };
    to_rgb(img.mode, &samples, img.palette.as_deref())
}

/// Reusable preprocessing state (normalisation tables, buffers); one per thread.
///
/// RGB JPEGs, the common case, take a streamed path that gives the same
/// pixels as decoding the whole image and resizing it: each decoded row goes
/// through Pillow's horizontal pass at once (`RowPlan`), into buffers kept
/// from image to image, so no full-size image is allocated, written or read
/// back per image; the taps are kept while the image size stays the same.
/// Every other image (PNG, WebP, grey or CMYK JPEG, a size where Pillow skips
/// a pass or runs the vertical pass first) is decoded whole and resized by
/// `resize_crop_owned`.
pub struct Preprocessor {
    cfg: PreprocessConfig,
    /// `lut[c][v]` = (v / 255 − mean[c]) / std[c].
    lut: [[f32; 256]; 3],
    scratch: Scratch,
}

/// Buffers and taps reused between images by [`Preprocessor`].
#[derive(Default)]
struct Scratch {
    /// One decoded JPEG row.
    line: Vec<u8>,
    /// The horizontal pass's rows (at least the current plan's `horizontal_len`).
    hpass: Vec<u8>,
    /// The vertical pass's scratch sums.
    acc: Vec<i32>,
    /// The last image's RGB crop, `[size, size, 3]`.
    crop: Vec<u8>,
    /// The last image size seen and its streamed plan (`None`: general path).
    plan: Option<((u32, u32), Option<RowPlan<3>>)>,
}

/// The streamed path's [`RowSink`]: horizontal pass of the rows the vertical pass reads.
struct HorizontalSink<'a> {
    size: u32,
    plan: &'a mut Option<((u32, u32), Option<RowPlan<3>>)>,
    hpass: &'a mut Vec<u8>,
}

impl RowSink for HorizontalSink<'_> {
    fn start(&mut self, width: u32, height: u32) -> bool {
        if !matches!(self.plan, Some((key, _)) if *key == (width, height)) {
            // A plan that cannot be made takes the general path, which reports why.
            let row_plan = ResizePlan::new(width, height, self.size)
                .ok()
                .and_then(|p| {
                    let resized = (p.resized.0 as usize, p.resized.1 as usize);
                    RowPlan::new(
                        (width as usize, height as usize),
                        resized,
                        p.cols(),
                        p.rows(),
                    )
                });
            *self.plan = Some(((width, height), row_plan));
        }
        match self.plan {
            Some((_, Some(p))) => {
                let n = p.horizontal_len();
                if self.hpass.len() < n {
                    self.hpass.resize(n, 0);
                }
                true
            }
            _ => false,
        }
    }

    fn row(&mut self, y: usize, rgb: &[u8]) {
        if let Some((_, Some(p))) = self.plan {
            let rows = p.src_rows();
            if rows.contains(&y) {
                let n = p.row_len();
                let i = y - rows.start;
                p.horizontal(rgb, &mut self.hpass[i * n..(i + 1) * n]);
            }
        }
    }
}

impl std::fmt::Debug for Preprocessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preprocessor")
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl Preprocessor {
    /// A preprocessor for `cfg`.
    pub fn new(cfg: PreprocessConfig) -> Self {
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, out) in table.iter_mut().enumerate() {
                *out = (v as f32 / 255.0 - cfg.mean[c]) / cfg.std[c];
            }
        }
        Self {
            cfg,
            lut,
            scratch: Scratch::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &PreprocessConfig {
        &self.cfg
    }

    /// Resize the shortest side to `size` and center-crop an RGB image:
    /// interleaved RGB8, `[size, size, 3]`. Same pixels as Pillow on an "RGB" image.
    pub fn resize_crop(&mut self, rgb: &RgbImage) -> Result<Vec<u8>, SkipReason> {
        let (width, height) = rgb.dimensions();
        let img = DecodedImage {
            width,
            height,
            mode: PilMode::Rgb,
            samples: Samples::U8(rgb.as_raw().clone()),
            palette: None,
        };
        self.resize_crop_image(&img)
    }

    /// Resize and center-crop a decoded image in its own mode, then convert to
    /// RGB: interleaved `[size, size, 3]` u8. Errors as [`ResizePlan::new`].
    pub fn resize_crop_image(&mut self, img: &DecodedImage) -> Result<Vec<u8>, SkipReason> {
        let plan = ResizePlan::new(img.width, img.height, self.cfg.size)?;
        Ok(resize_crop_decoded(img, &plan))
    }

    /// Normalise an interleaved `[size, size, 3]` RGB8 image into planar `[3, size, size]` f32.
    pub fn normalize_into(&self, hwc: &[u8], out: &mut Vec<f32>) {
        dicoflow_kernels::planar_lut_vec(hwc, &self.lut, out);
    }

    /// Decode, resize and crop into `self.scratch.crop` (`[size, size, 3]`, RGB8).
    fn crop_rgb(&mut self, bytes: &[u8]) -> Result<(), SkipReason> {
        if is_jpeg(bytes) {
            let sc = &mut self.scratch;
            let mut sink = HorizontalSink {
                size: self.cfg.size,
                plan: &mut sc.plan,
                hpass: &mut sc.hpass,
            };
            if stream_rgb_rows(bytes, self.cfg.max_pixels, &mut sc.line, &mut sink)? {
                let Some((_, Some(plan))) = &sc.plan else {
                    unreachable!("a streamed image has its plan")
                };
                sc.crop.resize(plan.output_len(), 0);
                plan.vertical(&sc.hpass, &mut sc.acc, &mut sc.crop);
                return Ok(());
            }
        }
        let img = decode(bytes, self.cfg.max_pixels)?;
        let plan = ResizePlan::new(img.width, img.height, self.cfg.size)?;
        self.scratch.crop = resize_crop_owned(img, &plan);
        Ok(())
    }

    /// Decode, resize and crop: interleaved `[size, size, 3]` u8, the pixels
    /// the reference's `ToTensor` sees (times 255).
    ///
    /// Errors: the skip reasons of [`decode`] and [`ResizePlan::new`].
    pub fn process_hwc(&mut self, bytes: &[u8]) -> Result<Vec<u8>, SkipReason> {
        self.crop_rgb(bytes)?;
        Ok(self.scratch.crop.clone())
    }

    /// Decode, resize, crop and normalise: planar `[3, size, size]` f32.
    ///
    /// Errors as [`Self::process_hwc`].
    pub fn process(&mut self, bytes: &[u8]) -> Result<Vec<f32>, SkipReason> {
        let mut out = Vec::new();
        self.process_into(bytes, &mut out)?;
        Ok(out)
    }

    /// [`Self::process`] into `out` (resized to `3 * size * size`), for callers
    /// that reuse one output buffer. On an error `out` is left as it was.
    pub fn process_into(&mut self, bytes: &[u8], out: &mut Vec<f32>) -> Result<(), SkipReason> {
        self.crop_rgb(bytes)?;
        self.normalize_into(&self.scratch.crop, out);
        Ok(())
    }

    /// Decode, resize and crop without normalising: planar `[3, size, size]` u8,
    /// a quarter of the f32 bytes to move to a GPU that normalises there.
    ///
    /// Errors as [`Self::process_hwc`].
    pub fn process_u8(&mut self, bytes: &[u8]) -> Result<Vec<u8>, SkipReason> {
        self.crop_rgb(bytes)?;
        let mut out = vec![0u8; self.scratch.crop.len()];
        dicoflow_kernels::planar_u8(&self.scratch.crop, &mut out);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32, seed: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| {
            let v = (x * 7 + y * 13 + seed * 31) ^ (x * y + seed);
            image::Rgb([
                v as u8,
                (v >> 3) as u8 ^ (y as u8),
                (x as u8).wrapping_mul(3),
            ])
        });
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
            .encode_image(&img)
            .unwrap();
        out
    }

    /// The general path: the whole image decoded, then resized and cropped.
    fn whole_image_crop(bytes: &[u8], size: u32) -> Result<Vec<u8>, SkipReason> {
        let img = decode(bytes, DEFAULT_MAX_PIXELS)?;
        let plan = ResizePlan::new(img.width, img.height, size)?;
        Ok(resize_crop_owned(img, &plan))
    }

    #[test]
    fn streamed_jpeg_path_equals_the_whole_image_path() {
        let sizes = [
            (640, 480),
            (480, 640),
            (495, 457),
            (224, 300), // no horizontal pass: general path
            (300, 224), // no vertical pass: general path
            (33, 17),
            (17, 2000), // vertical pass first in Pillow: general path
            (1, 1),
            (640, 480), // the kept plan again after other sizes
            (1023, 769),
        ];
        let mut streamed = 0;
        for size in [224u32, 64] {
            // One preprocessor for all images: buffers and taps carried between sizes.
            let mut pre = Preprocessor::new(PreprocessConfig {
                size,
                ..Default::default()
            });
            for (i, &(w, h)) in sizes.iter().enumerate() {
                let bytes = jpeg(w, h, i as u32);
                let want = whole_image_crop(&bytes, size).unwrap();
                let got = pre.process_hwc(&bytes).unwrap();
                assert_eq!(got, want, "{w}x{h} to {size}");
                if matches!(pre.scratch.plan, Some((_, Some(_)))) {
                    streamed += 1;
                }
                let mut f = vec![1.0; 5];
                pre.process_into(&bytes, &mut f).unwrap();
                let mut g = Vec::new();
                pre.normalize_into(&want, &mut g);
                assert_eq!(f, g, "{w}x{h} to {size}");
            }
        }
        assert!(streamed >= 10, "{streamed} images took the streamed path");
    }

    #[test]
    fn streamed_jpeg_path_fails_as_the_whole_image_path() {
        let good = jpeg(320, 240, 1);
        let mut corrupt = good.clone();
        // Entropy-coded data replaced by garbage, end marker kept.
        let n = corrupt.len();
        for (i, v) in corrupt[n / 2..n - 2].iter_mut().enumerate() {
            *v = (i * 37 % 255) as u8;
        }
        let truncated = good[..good.len() / 2].to_vec();
        let mut pre = Preprocessor::new(PreprocessConfig::default());
        for bad in [corrupt, truncated] {
            let want = whole_image_crop(&bad, 224);
            let got = pre.process_hwc(&bad);
            assert_eq!(got, want);
        }
        // A failed image leaves nothing behind for the next one.
        assert_eq!(
            pre.process_hwc(&good).unwrap(),
            whole_image_crop(&good, 224).unwrap()
        );
    }

    #[test]
    fn resized_size_truncates_the_long_side_like_torchvision() {
        assert_eq!(resized_size(640, 480, 224), (298, 224)); // 224*640/480 = 298.67
        assert_eq!(resized_size(480, 640, 224), (224, 298));
        assert_eq!(resized_size(100, 100, 224), (224, 224));
    }

    #[test]
    fn center_crop_rounds_half_to_even_like_python() {
        // (298 - 224) / 2 = 37 exactly.
        assert_eq!(center_crop_box(298, 224, 224), (37, 0));
        // (225 - 224) / 2 = 0.5 -> round() = 0; (227 - 224) / 2 = 1.5 -> 2.
        assert_eq!(center_crop_box(225, 224, 224), (0, 0));
        assert_eq!(center_crop_box(227, 224, 224), (2, 0));
        assert_eq!(center_crop_box(229, 224, 224), (2, 0)); // 2.5 -> 2
    }
}
