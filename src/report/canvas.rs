//! An RGB pixel canvas with the few primitives a line chart needs:
//! rectangles, anti-aliased polylines and text in an embedded 8×8 bitmap
//! font (so rendering needs no system fonts or native libraries).

use image::{Rgb, RgbImage};

/// An RGB colour.
pub type Colour = [u8; 3];

/// Side of one glyph cell of the bitmap font, in pixels at scale 1.
pub const GLYPH: u32 = 8;

/// A rectangle of pixels: columns `left..right`, rows `top..bottom`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelRect {
    pub left: u32,
    pub top: u32,
    pub right: u32,
    pub bottom: u32,
}

impl PixelRect {
    pub fn width(&self) -> u32 {
        self.right - self.left
    }
    pub fn height(&self) -> u32 {
        self.bottom - self.top
    }
}

/// Horizontal placement of text relative to its anchor x.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Centre,
    Right,
}

/// A canvas that owns its image.
#[derive(Debug)]
pub struct Canvas {
    image: RgbImage,
}

impl Canvas {
    /// A `width` × `height` canvas filled with `background`.
    pub fn new(width: u32, height: u32, background: Colour) -> Canvas {
        Canvas {
            image: RgbImage::from_pixel(width, height, Rgb(background)),
        }
    }

    pub fn into_image(self) -> RgbImage {
        self.image
    }

    /// Mix `colour` into the pixel at (x, y) with opacity `alpha` (0..1);
    /// points off the canvas are ignored.
    fn blend(&mut self, x: i64, y: i64, colour: Colour, alpha: f32) {
        if x < 0 || y < 0 || x >= self.image.width() as i64 || y >= self.image.height() as i64 {
            return;
        }
        let p = self.image.get_pixel_mut(x as u32, y as u32);
        for (c, &target) in p.0.iter_mut().zip(&colour) {
            *c = (*c as f32 * (1.0 - alpha) + target as f32 * alpha).round() as u8;
        }
    }

    /// Fill the rectangle (clipped to the canvas).
    pub fn fill(&mut self, r: PixelRect, colour: Colour) {
        for y in r.top..r.bottom.min(self.image.height()) {
            for x in r.left..r.right.min(self.image.width()) {
                self.image.put_pixel(x, y, Rgb(colour));
            }
        }
    }

    /// Draw the outline of `r`, one pixel wide, on its edge pixels.
    pub fn outline(&mut self, r: PixelRect, colour: Colour) {
        let (l, t, rr, b) = (r.left, r.top, r.right, r.bottom);
        self.fill(
            PixelRect {
                left: l,
                top: t,
                right: rr,
                bottom: t + 1,
            },
            colour,
        );
        self.fill(
            PixelRect {
                left: l,
                top: b - 1,
                right: rr,
                bottom: b,
            },
            colour,
        );
        self.fill(
            PixelRect {
                left: l,
                top: t,
                right: l + 1,
                bottom: b,
            },
            colour,
        );
        self.fill(
            PixelRect {
                left: rr - 1,
                top: t,
                right: rr,
                bottom: b,
            },
            colour,
        );
    }

    /// An anti-aliased polyline through `points` (pixel coordinates), `width`
    /// pixels wide, drawn only inside `clip`. Each pixel takes the coverage of
    /// its nearest segment, so joints are not darker than the line.
    pub fn polyline(&mut self, points: &[(f64, f64)], width: f64, colour: Colour, clip: PixelRect) {
        let (cw, ch) = (clip.width() as usize, clip.height() as usize);
        let mut coverage = vec![0f32; cw * ch];
        let half = width / 2.0;
        let segments: Vec<((f64, f64), (f64, f64))> = match points {
            [] => Vec::new(),
            [p] => vec![(*p, *p)],
            _ => points.windows(2).map(|w| (w[0], w[1])).collect(),
        };
        for (a, b) in segments {
            let reach = half + 1.0;
            let x0 = (a.0.min(b.0) - reach).floor().max(clip.left as f64) as u32;
            let x1 = (a.0.max(b.0) + reach).ceil().min(clip.right as f64) as u32;
            let y0 = (a.1.min(b.1) - reach).floor().max(clip.top as f64) as u32;
            let y1 = (a.1.max(b.1) + reach).ceil().min(clip.bottom as f64) as u32;
            for y in y0..y1 {
                for x in x0..x1 {
                    let d = distance_to_segment((x as f64 + 0.5, y as f64 + 0.5), a, b);
                    let c = (half + 0.5 - d).clamp(0.0, 1.0) as f32;
                    let i = (y - clip.top) as usize * cw + (x - clip.left) as usize;
                    coverage[i] = coverage[i].max(c);
                }
            }
        }
        for (i, &c) in coverage.iter().enumerate() {
            if c > 0.0 {
                let (x, y) = (clip.left as usize + i % cw, clip.top as usize + i / cw);
                self.blend(x as i64, y as i64, colour, c);
            }
        }
    }

    /// Draw `text` with its top at `y`, each font pixel a `scale` × `scale`
    /// square; characters outside ASCII and Greek (U+0390..=U+03C9, for
    /// names like "DiCO β=0.2") print as `?`.
    pub fn text(&mut self, x: i64, y: i64, text: &str, scale: u32, colour: Colour, align: Align) {
        let w = text_width(text, scale) as i64;
        let mut left = match align {
            Align::Left => x,
            Align::Centre => x - w / 2,
            Align::Right => x - w,
        };
        let s = scale as i64;
        for ch in text.chars() {
            let glyph = glyph_of(ch);
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..GLYPH as i64 {
                    // Bit 0 is the leftmost pixel of the row.
                    if bits >> col & 1 == 1 {
                        for dy in 0..s {
                            for dx in 0..s {
                                let (px, py) = (left + col * s + dx, y + row as i64 * s + dy);
                                self.blend(px, py, colour, 1.0);
                            }
                        }
                    }
                }
            }
            left += GLYPH as i64 * s;
        }
    }
}

/// The 8×8 bitmap of `ch`: ASCII and Greek from font8x8, `?` for the rest.
fn glyph_of(ch: char) -> [u8; 8] {
    let code = ch as usize;
    match code {
        0..=0x7f => font8x8::legacy::BASIC_LEGACY[code],
        0x390..=0x3c9 => font8x8::legacy::GREEK_LEGACY[code - 0x390],
        _ => font8x8::legacy::BASIC_LEGACY['?' as usize],
    }
}

/// Width in pixels of `text` at `scale`.
pub fn text_width(text: &str, scale: u32) -> u32 {
    text.chars().count() as u32 * GLYPH * scale
}

fn distance_to_segment(p: (f64, f64), a: (f64, f64), b: (f64, f64)) -> f64 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 == 0.0 {
        0.0
    } else {
        (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0)
    };
    let (cx, cy) = (a.0 + t * dx, a.1 + t * dy);
    ((p.0 - cx).powi(2) + (p.1 - cy).powi(2)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHITE: Colour = [255, 255, 255];
    const BLACK: Colour = [0, 0, 0];

    fn dark(img: &RgbImage, x: u32, y: u32) -> bool {
        img.get_pixel(x, y).0[0] < 128
    }

    #[test]
    fn text_is_drawn_upright_and_not_mirrored() {
        // 'L': a stem on the left, a foot at the bottom, nothing top right.
        let mut c = Canvas::new(16, 16, WHITE);
        c.text(0, 0, "L", 2, BLACK, Align::Left);
        let img = c.into_image();
        let stem: Vec<u32> = (0..16).filter(|&x| dark(&img, x, 2)).collect();
        assert!(
            !stem.is_empty() && stem[stem.len() - 1] < 8,
            "stem at {stem:?}"
        );
        let foot = (0..16).filter(|&x| dark(&img, x, 12)).count();
        assert!(foot > stem.len(), "the foot is wider than the stem");
        assert!(
            !(8..16).any(|x| dark(&img, x, 1)),
            "nothing in the top right"
        );
        assert_eq!(text_width("L", 2), 16);
    }

    #[test]
    fn greek_letters_have_their_own_glyphs() {
        let beta = glyph_of('β');
        assert_ne!(beta, glyph_of('?'));
        assert_ne!(beta, [0; 8]);
        assert_eq!(glyph_of('A'), font8x8::legacy::BASIC_LEGACY[65]);
        assert_eq!(glyph_of('→'), glyph_of('?'));
    }

    #[test]
    fn text_alignment_places_the_text_around_the_anchor() {
        let mut c = Canvas::new(64, 8, WHITE);
        c.text(32, 0, "II", 1, BLACK, Align::Right);
        let img = c.into_image();
        let cols: Vec<u32> = (0..64)
            .filter(|&x| (0..8).any(|y| dark(&img, x, y)))
            .collect();
        assert!(
            *cols.first().unwrap() >= 16 && *cols.last().unwrap() < 32,
            "{cols:?}"
        );
    }

    #[test]
    fn polyline_covers_the_segment_and_nothing_far_from_it() {
        let mut c = Canvas::new(40, 40, WHITE);
        let clip = PixelRect {
            left: 0,
            top: 0,
            right: 40,
            bottom: 40,
        };
        c.polyline(&[(5.0, 20.0), (35.0, 20.0)], 2.0, BLACK, clip);
        let img = c.into_image();
        for x in 6..34 {
            assert!(dark(&img, x, 19) && dark(&img, x, 20), "gap at column {x}");
            assert_eq!(img.get_pixel(x, 16).0, WHITE, "spill at column {x}");
            assert_eq!(img.get_pixel(x, 23).0, WHITE, "spill at column {x}");
        }
        assert_eq!(img.get_pixel(38, 20).0, WHITE, "past the end");
    }

    #[test]
    fn polyline_stays_inside_its_clip_rectangle() {
        let mut c = Canvas::new(40, 40, WHITE);
        let clip = PixelRect {
            left: 10,
            top: 10,
            right: 30,
            bottom: 30,
        };
        c.polyline(&[(0.0, 0.0), (40.0, 40.0)], 3.0, BLACK, clip);
        let img = c.into_image();
        assert!(dark(&img, 20, 20));
        assert_eq!(img.get_pixel(5, 5).0, WHITE);
        assert_eq!(img.get_pixel(35, 35).0, WHITE);
    }

    #[test]
    fn distance_to_segment_matches_geometry() {
        assert_eq!(
            distance_to_segment((0.0, 3.0), (-1.0, 0.0), (1.0, 0.0)),
            3.0
        );
        assert_eq!(distance_to_segment((4.0, 4.0), (0.0, 0.0), (1.0, 0.0)), 5.0);
        assert_eq!(distance_to_segment((3.0, 4.0), (0.0, 0.0), (0.0, 0.0)), 5.0);
    }
}
