//! Rasterising a scene into an RGB image.
//!
//! Shapes are drawn from signed distance functions: one evaluation per pixel
//! gives both the inside test and an analytic anti-aliasing coverage, which is
//! cheap enough to render tens of thousands of images a second.

use ::image::RgbImage;

use super::config::WorldConfig;
use super::scene::{Background, GradientDirection, Object, Scene, Shape};
use crate::rng::Rng;

/// Half-side of a square relative to the object's half-extent: the square's
/// area then roughly matches the circle's, so shape, not area, tells them apart.
const SQUARE_HALF: f64 = 0.85;
/// Half-width of a cross arm relative to the half-extent.
const CROSS_ARM: f64 = 0.34;
/// Triangle base height below the centre, relative to the half-extent (the
/// apex is at the top of the box).
const TRIANGLE_BASE: f64 = 0.8;

/// Renders `scene` at `cfg.image_size` pixels square. Deterministic: the same
/// scene and configuration give byte-identical images.
pub fn render(scene: &Scene, cfg: &WorldConfig) -> RgbImage {
    let side = cfg.image_size.max(1);
    let mut buf = background_pixels(&scene.background, side);
    for object in &scene.objects {
        draw_object(&mut buf, side, object, cfg.anti_alias);
    }
    RgbImage::from_raw(side, side, buf).expect("buffer has side * side * 3 bytes")
}

/// The gradient plus grey noise, as a row-major RGB buffer.
fn background_pixels(bg: &Background, side: u32) -> Vec<u8> {
    let n = side as usize;
    let last = n.saturating_sub(1).max(1);
    let den = match bg.direction {
        GradientDirection::Horizontal | GradientDirection::Vertical => last,
        GradientDirection::Diagonal | GradientDirection::AntiDiagonal => 2 * last,
    };
    // The gradient is linear in a projection t in 0..=den; tabulate it as RGB
    // bytes so that every image row is one contiguous copy out of the ramp.
    let ramp: Vec<u8> = (0..=den as i32)
        .flat_map(|t| {
            [0, 1, 2].map(|c| {
                let (a, b) = (i32::from(bg.from[c]), i32::from(bg.to[c]));
                (a + (b - a) * t / den as i32) as u8
            })
        })
        .collect();
    let mut buf = vec![0u8; n * n * 3];
    let row_len = n * 3;
    for (y, row) in buf.chunks_exact_mut(row_len).enumerate() {
        match bg.direction {
            GradientDirection::Horizontal => row.copy_from_slice(&ramp[..row_len]),
            GradientDirection::Vertical => {
                let t = y.min(den) * 3;
                for px in row.chunks_exact_mut(3) {
                    px.copy_from_slice(&ramp[t..t + 3]);
                }
            }
            // t = x + y.
            GradientDirection::Diagonal => row.copy_from_slice(&ramp[y * 3..y * 3 + row_len]),
            // t = (last - x) + y: the row is the ramp read backwards.
            GradientDirection::AntiDiagonal => {
                let start = last + y;
                for (x, px) in row.chunks_exact_mut(3).enumerate() {
                    let t = (start - x.min(start)).min(den) * 3;
                    px.copy_from_slice(&ramp[t..t + 3]);
                }
            }
        }
    }
    if bg.noise > 0 {
        // One noise byte per pixel (eight per draw), mapped to -amp..=amp and
        // added to all three channels alike, so the noise stays grey.
        let amp = i16::from(bg.noise.min(127));
        let jitter: [i8; 256] = std::array::from_fn(|b| (b as i16 % (2 * amp + 1) - amp) as i8);
        let mut rng = Rng::new(u64::from(bg.noise_seed));
        let mut bits = 0u64;
        for i in 0..n * n {
            if i % 8 == 0 {
                bits = rng.next_u64();
            }
            let j = jitter[(bits & 0xff) as usize];
            bits >>= 8;
            let px = &mut buf[3 * i..3 * i + 3];
            px[0] = px[0].saturating_add_signed(j);
            px[1] = px[1].saturating_add_signed(j);
            px[2] = px[2].saturating_add_signed(j);
        }
    }
    buf
}

/// Signed distance (in pixels, negative inside) from a pixel at offset
/// `(dx, dy)` from the centre to the outline of `shape` of half-extent `r`.
fn signed_distance(shape: Shape, dx: f64, dy: f64, r: f64) -> f64 {
    let (ax, ay) = (dx.abs(), dy.abs());
    match shape {
        Shape::Circle => (dx * dx + dy * dy).sqrt() - r,
        Shape::Square => (ax - SQUARE_HALF * r).max(ay - SQUARE_HALF * r),
        Shape::Diamond => (ax + ay - r) * std::f64::consts::FRAC_1_SQRT_2,
        Shape::Cross => {
            let t = CROSS_ARM * r;
            let vertical = (ax - t).max(ay - r);
            let horizontal = (ax - r).max(ay - t);
            vertical.min(horizontal)
        }
        Shape::Triangle => {
            // Apex (0, -r), base corners (±r, base). Distance to the two slanted
            // edges via their unit normals, and to the base line.
            let base = TRIANGLE_BASE * r;
            let h = base + r;
            let len = (h * h + r * r).sqrt();
            // The right edge runs from the apex along (r, h); its outward unit
            // normal is (h, -r) / len. Folding x makes the left edge the same.
            let slanted = (h * ax - r * (dy + r)) / len;
            let bottom = dy - base;
            slanted.max(bottom)
        }
    }
}

fn draw_object(buf: &mut [u8], side: u32, object: &Object, anti_alias: bool) {
    let s = f64::from(side);
    let (cx, cy, r) = (object.x * s, object.y * s, object.radius() * s);
    let clamp = |v: f64| v.max(0.0).min(s) as usize;
    let (x0, x1) = (clamp((cx - r - 1.0).floor()), clamp((cx + r + 1.0).ceil()));
    let (y0, y1) = (clamp((cy - r - 1.0).floor()), clamp((cy + r + 1.0).ceil()));
    let colour = object.colour.rgb();
    let n = side as usize;
    for py in y0..y1 {
        for px in x0..x1 {
            let d = signed_distance(object.shape, px as f64 + 0.5 - cx, py as f64 + 0.5 - cy, r);
            let coverage = if anti_alias {
                (0.5 - d).clamp(0.0, 1.0)
            } else if d <= 0.0 {
                1.0
            } else {
                0.0
            };
            if coverage <= 0.0 {
                continue;
            }
            let i = (py * n + px) * 3;
            for c in 0..3 {
                let under = f64::from(buf[i + c]);
                let over = f64::from(colour[c]);
                buf[i + c] = (under + (over - under) * coverage).round() as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triangle_distance_is_zero_on_its_corners_and_negative_inside() {
        let r = 10.0;
        let base = TRIANGLE_BASE * r;
        for (x, y) in [(0.0, -r), (r, base), (-r, base)] {
            assert!(
                signed_distance(Shape::Triangle, x, y, r).abs() < 1e-9,
                "{x},{y}"
            );
        }
        assert!(signed_distance(Shape::Triangle, 0.0, 0.0, r) < -2.0);
        assert!(signed_distance(Shape::Triangle, r * 0.9, -r * 0.9, r) > 0.0);
    }

    #[test]
    fn shapes_differ_in_their_footprint() {
        // Count inside samples on a fine grid: each shape has a distinct mask.
        let r = 10.0;
        let masks: Vec<Vec<bool>> = Shape::ALL
            .iter()
            .map(|&shape| {
                (0..21 * 21)
                    .map(|k| {
                        let (x, y) = ((k % 21) as f64 - 10.0, (k / 21) as f64 - 10.0);
                        signed_distance(shape, x, y, r) <= 0.0
                    })
                    .collect()
            })
            .collect();
        for a in 0..masks.len() {
            for b in 0..a {
                let diff = masks[a]
                    .iter()
                    .zip(&masks[b])
                    .filter(|(p, q)| p != q)
                    .count();
                assert!(
                    diff > 40,
                    "{:?} vs {:?}: {diff}",
                    Shape::ALL[a],
                    Shape::ALL[b]
                );
            }
        }
    }
}
