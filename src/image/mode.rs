//! A decoded image as Pillow holds it: its mode (the pixel layout), its
//! samples, and Pillow's conversion to RGB. What [`super::decode`] and the
//! JPEG decoder (`super::jpeg`) produce.

use image::RgbImage;

use crate::data::sample::SkipReason;

/// The pixel layouts Pillow opens JPEG, PNG and WebP files in (Pillow's modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PilMode {
    /// "1": bilevel, stored as 0 or 255.
    Bilevel,
    /// "L": 8-bit grey.
    L,
    /// "LA": 8-bit grey and alpha.
    LA,
    /// "RGB": 8-bit red, green, blue.
    Rgb,
    /// "RGBA": 8-bit red, green, blue, alpha.
    Rgba,
    /// "CMYK": 8-bit cyan, magenta, yellow, black (JPEG only).
    Cmyk,
    /// "P": 8-bit indices into a 256-colour RGB palette.
    P,
    /// "I;16": 16-bit grey.
    I16,
}

impl PilMode {
    /// Pillow's name for the mode.
    pub fn name(self) -> &'static str {
        match self {
            PilMode::Bilevel => "1",
            PilMode::L => "L",
            PilMode::LA => "LA",
            PilMode::Rgb => "RGB",
            PilMode::Rgba => "RGBA",
            PilMode::Cmyk => "CMYK",
            PilMode::P => "P",
            PilMode::I16 => "I;16",
        }
    }

    /// Samples per pixel.
    pub fn bands(self) -> usize {
        match self {
            PilMode::Bilevel | PilMode::L | PilMode::P | PilMode::I16 => 1,
            PilMode::LA => 2,
            PilMode::Rgb => 3,
            PilMode::Rgba | PilMode::Cmyk => 4,
        }
    }
}

/// Interleaved samples of a decoded image.
#[derive(Debug, Clone, PartialEq)]
pub enum Samples {
    /// 8-bit samples, `[height, width, bands]`.
    U8(Vec<u8>),
    /// 16-bit samples (mode "I;16"), `[height, width]`.
    U16(Vec<u16>),
}

/// An image as Pillow holds it after `Image.open(...).load()`.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedImage {
    pub width: u32,
    pub height: u32,
    pub mode: PilMode,
    pub samples: Samples,
    /// 256 RGB entries for mode "P" (entries the file does not define are black,
    /// as in Pillow); `None` for other modes.
    pub palette: Option<Vec<[u8; 3]>>,
}

impl DecodedImage {
    /// Pillow's `convert("RGB")` of the whole image, `[height, width, 3]`.
    pub fn to_rgb(&self) -> RgbImage {
        let rgb = to_rgb(self.mode, &self.samples, self.palette.as_deref());
        RgbImage::from_raw(self.width, self.height, rgb).expect("one RGB triple per pixel")
    }
}

/// Pillow's `convert("RGB")` of interleaved samples in `mode` (Convert.c):
/// grey is replicated, alpha dropped (not composited), CMYK through
/// `cmyk2rgb`, "I;16" clamped to 255 (not scaled), "1" to 0/255, "P" through the palette.
pub fn to_rgb(mode: PilMode, samples: &Samples, palette: Option<&[[u8; 3]]>) -> Vec<u8> {
    let grey = |v: u8| [v, v, v];
    let px: Vec<[u8; 3]> = match (mode, samples) {
        (PilMode::I16, Samples::U16(s)) => s.iter().map(|&v| grey(v.min(255) as u8)).collect(),
        (_, Samples::U16(_)) => unreachable!("only mode I;16 holds 16-bit samples"),
        (PilMode::Bilevel, Samples::U8(s)) => s
            .iter()
            .map(|&v| grey(if v != 0 { 255 } else { 0 }))
            .collect(),
        (PilMode::L, Samples::U8(s)) => s.iter().map(|&v| grey(v)).collect(),
        (PilMode::LA, Samples::U8(s)) => s.chunks_exact(2).map(|p| grey(p[0])).collect(),
        (PilMode::Rgb, Samples::U8(s)) => return s.clone(),
        (PilMode::Rgba, Samples::U8(s)) => s.chunks_exact(4).map(|p| [p[0], p[1], p[2]]).collect(),
        (PilMode::Cmyk, Samples::U8(s)) => s
            .chunks_exact(4)
            .map(|p| {
                let nk = 255 - p[3] as i32;
                let f = |c: u8| (nk - muldiv255(c as i32, nk)).clamp(0, 255) as u8;
                [f(p[0]), f(p[1]), f(p[2])]
            })
            .collect(),
        (PilMode::P, Samples::U8(s)) => {
            let pal = palette.unwrap_or(&[]);
            s.iter()
                .map(|&i| pal.get(i as usize).copied().unwrap_or([0, 0, 0]))
                .collect()
        }
        (PilMode::I16, Samples::U8(_)) => unreachable!("mode I;16 holds 16-bit samples"),
    };
    px.into_iter().flatten().collect()
}

/// Pillow's `MULDIV255(a, b)`: a·b/255 rounded, as `((t >> 8) + t) >> 8` with t = a·b + 128.
#[inline]
pub fn muldiv255(a: i32, b: i32) -> i32 {
    let t = a * b + 128;
    ((t >> 8) + t) >> 8
}

/// Refuses an empty image and one of more than `max_pixels` pixels, before
/// any pixel is decoded.
pub(crate) fn check_size(width: u32, height: u32, max_pixels: u64) -> Result<(), SkipReason> {
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn muldiv255_rounds_like_pillow() {
        for a in 0..=255 {
            for b in [0, 1, 7, 128, 254, 255] {
                let exact = (a * b) as f64 / 255.0;
                assert!((muldiv255(a, b) as f64 - exact).abs() <= 0.5 + 1e-9);
            }
        }
        assert_eq!(muldiv255(255, 255), 255);
    }

    #[test]
    fn cmyk_and_i16_convert_as_pillow() {
        // cmyk2rgb: nk - c*nk/255 with nk = 255 - k.
        let rgb = to_rgb(PilMode::Cmyk, &Samples::U8(vec![0, 128, 255, 55]), None);
        assert_eq!(rgb, vec![200, 200 - muldiv255(128, 200) as u8, 0]);
        // I;16 -> RGB clamps, it does not scale.
        let rgb = to_rgb(PilMode::I16, &Samples::U16(vec![200, 256, 65535]), None);
        assert_eq!(rgb, vec![200, 200, 200, 255, 255, 255, 255, 255, 255]);
    }
}
