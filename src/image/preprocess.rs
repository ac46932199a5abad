//! CLIP preprocessing: resize the shortest side to `size` (bicubic, antialiased,
//! as PIL), center-crop `size`×`size` (torchvision's rounding), and normalise
//! with CLIP's mean/std into a planar `[3, size, size]` f32 buffer. A u8 variant
//! leaves normalisation to the GPU.
//!
//! Resize and crop are one step: the crop box is mapped back to source
//! coordinates and only that region is resampled, which gives the same pixels as
//! resizing the whole image and cropping it, with less work.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::data::sample::SkipReason;
use crate::image::decode::{decode_rgb, DEFAULT_MAX_PIXELS};

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
    /// Output side length (default [`DEFAULT_SIZE`]).
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
/// torchvision's `Resize(size)`: the long side is truncated, not rounded.
pub fn resized_size(width: u32, height: u32, size: u32) -> (u32, u32) {
    if width <= height {
        let long = (size as u64 * height as u64 / width as u64) as u32;
        (size, long)
    } else {
        let long = (size as u64 * width as u64 / height as u64) as u32;
        (long, size)
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

/// Reusable preprocessing state (resizer buffers, normalisation tables); one per thread.
pub struct Preprocessor {
    cfg: PreprocessConfig,
    resizer: Resizer,
    /// `lut[c][v]` = (v / 255 − mean[c]) / std[c].
    lut: [[f32; 256]; 3],
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
            resizer: Resizer::new(),
            lut,
        }
    }

    /// The settings.
    pub fn config(&self) -> &PreprocessConfig {
        &self.cfg
    }

    /// Resize the shortest side to `size` and center-crop: interleaved RGB8, `[size, size, 3]`.
    ///
    /// The filter is PIL's bicubic (Catmull-Rom, a = -0.5, antialiased when
    /// shrinking) with 8-bit intermediate rounding; PIL may run the two passes
    /// in the other order, which can move strongly clipped pixels by a few
    /// levels (see tests/preprocess.rs for the measured agreement).
    pub fn resize_crop(&mut self, rgb: &RgbImage) -> Result<Vec<u8>, SkipReason> {
        let size = self.cfg.size;
        let (w, h) = rgb.dimensions();
        if w == 0 || h == 0 {
            return Err(SkipReason::ZeroSize);
        }
        let (rw, rh) = resized_size(w, h, size);
        let (left, top) = center_crop_box(rw, rh, size);
        let (sx, sy) = (w as f64 / rw as f64, h as f64 / rh as f64);
        let fail = |e: &dyn std::fmt::Display| SkipReason::Decode(format!("resize failed: {e}"));
        let src = ImageRef::new(w, h, rgb.as_raw(), PixelType::U8x3).map_err(|e| fail(&e))?;
        let mut out = Image::new(size, size, PixelType::U8x3);
        let options = ResizeOptions::new()
            .resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom))
            .crop(
                left as f64 * sx,
                top as f64 * sy,
                size as f64 * sx,
                size as f64 * sy,
            );
        self.resizer
            .resize(&src, &mut out, &options)
            .map_err(|e| fail(&e))?;
        Ok(out.into_vec())
    }

    /// Normalise an interleaved `[size, size, 3]` RGB8 image into planar `[3, size, size]` f32.
    pub fn normalize_into(&self, hwc: &[u8], out: &mut Vec<f32>) {
        let plane = hwc.len() / 3;
        out.clear();
        out.resize(plane * 3, 0.0);
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (i, px) in hwc.chunks_exact(3).enumerate() {
            r[i] = self.lut[0][px[0] as usize];
            g[i] = self.lut[1][px[1] as usize];
            b[i] = self.lut[2][px[2] as usize];
        }
    }

    /// Decode, resize, crop and normalise: planar `[3, size, size]` f32.
    pub fn process(&mut self, bytes: &[u8]) -> Result<Vec<f32>, SkipReason> {
        let rgb = decode_rgb(bytes, self.cfg.max_pixels)?;
        let hwc = self.resize_crop(&rgb)?;
        let mut out = Vec::new();
        self.normalize_into(&hwc, &mut out);
        Ok(out)
    }

    /// Decode, resize and crop without normalising: planar `[3, size, size]` u8,
    /// a quarter of the f32 bytes to move to a GPU that normalises there.
    pub fn process_u8(&mut self, bytes: &[u8]) -> Result<Vec<u8>, SkipReason> {
        let rgb = decode_rgb(bytes, self.cfg.max_pixels)?;
        let hwc = self.resize_crop(&rgb)?;
        let plane = hwc.len() / 3;
        let mut out = vec![0u8; hwc.len()];
        for (i, px) in hwc.chunks_exact(3).enumerate() {
            out[i] = px[0];
            out[plane + i] = px[1];
            out[2 * plane + i] = px[2];
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
