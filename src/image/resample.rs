//! Pillow's resampling, reproduced pixel for pixel.
//!
//! The reference is Pillow's `src/libImaging/Resample.c` (`precompute_coeffs`,
//! `normalize_coeffs_8bpc`, the 8- and 16-bit passes, `ImagingResampleInner`)
//! and `Image.resize` in `src/PIL/Image.py`, as of Pillow 13.0:
//!
//! - coefficients of the bicubic kernel (a = −0.5, support 2, widened by the
//!   scale when shrinking) are computed in `f64` exactly as Pillow computes
//!   them, including its rounding of the window bounds;
//! - 8-bit images use them as 22-bit fixed-point integers with Pillow's
//!   rounding (`PRECISION_BITS = 32 − 8 − 2`) and clamp each pass to 0..255;
//!   16-bit images accumulate in `f64` and round half away from zero;
//! - the horizontal pass runs first and is rounded to 8 (16) bits before the
//!   vertical pass, except where Pillow 13.0.0 runs them the other way round
//!   ([`vertical_first`]: the height shrinks by more than twice as many pixels
//!   as the width);
//! - a pass whose size does not change is skipped, as Pillow skips it.
//!
//! Only the output pixels that survive the center crop are computed: every
//! output pixel of a separable resize depends only on its own row and column
//! coefficients, and those are computed as for the full-size output, so the
//! kept pixels are the same as resizing the whole image and cropping it.
//! Crop positions are integers throughout; there is no floating-point box.

use std::ops::Range;

use dicoflow_kernels::{horizontal_row, vertical_row, FixedTaps, PRECISION_BITS};

/// Pillow's bicubic kernel (`bicubic_filter`, a = −0.5), evaluation order kept.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = if x < 0.0 { -x } else { x };
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Support of Pillow's bicubic filter.
const BICUBIC_SUPPORT: f64 = 2.0;

/// The filter taps along one axis for a range of kept output positions.
///
/// Output position `o` reads source samples `start(o) .. start(o) + len(o)`
/// with the weights `weights(o)`; positions are in full-output coordinates.
#[derive(Debug, Clone)]
pub struct AxisTaps {
    keep: Range<usize>,
    ksize: usize,
    starts: Vec<usize>,
    lens: Vec<usize>,
    /// `f64` weights, normalised to sum 1 (Pillow's `kk` before fixed point).
    weights: Vec<f64>,
    /// The same weights as Pillow's 8-bit fixed-point integers.
    fixed: Vec<i32>,
}

impl AxisTaps {
    /// Bicubic taps resizing `in_size` samples to `out_size`, for the output
    /// positions in `keep` (which must lie inside `0..out_size`).
    ///
    /// Reproduces `precompute_coeffs(inSize, 0, inSize, outSize, BICUBIC)`:
    /// the source extent goes through Pillow's `float` box, the window bounds
    /// are rounded by truncation after adding 0.5 and clamped to the source.
    pub fn bicubic(in_size: usize, out_size: usize, keep: Range<usize>) -> Self {
        debug_assert!(keep.end <= out_size && in_size > 0 && out_size > 0);
        // `float box[4]`: the extent is a float; `(double)(in1 - in0) / outSize`.
        let in0 = 0f32;
        let in1 = in_size as f32;
        let scale = (in1 - in0) as f64 / out_size as f64;
        let filterscale = if scale < 1.0 { 1.0 } else { scale };
        let support = BICUBIC_SUPPORT * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let inv_filterscale = 1.0 / filterscale;
        let n = keep.len();
        let mut starts = Vec::with_capacity(n);
        let mut lens = Vec::with_capacity(n);
        let mut weights = vec![0f64; n * ksize];
        for (i, xx) in keep.clone().enumerate() {
            let center = in0 as f64 + (xx as f64 + 0.5) * scale;
            // C's `(int)` truncates toward zero; negative values are clamped next.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let len = xmax.saturating_sub(xmin);
            let k = &mut weights[i * ksize..i * ksize + len];
            let mut ww = 0.0;
            for (x, w) in k.iter_mut().enumerate() {
                let v = bicubic((((x + xmin) as f64 - center) + 0.5) * inv_filterscale);
                *w = v;
                ww += v;
            }
            if ww != 0.0 {
                for w in k.iter_mut() {
                    *w /= ww;
                }
            }
            starts.push(xmin);
            lens.push(len);
        }
        let one = (1u32 << PRECISION_BITS) as f64;
        let fixed = weights
            .iter()
            .map(|&w| {
                if w < 0.0 {
                    (-0.5 + w * one) as i32
                } else {
                    (0.5 + w * one) as i32
                }
            })
            .collect();
        Self {
            keep,
            ksize,
            starts,
            lens,
            weights,
            fixed,
        }
    }

    /// Source positions read by the kept outputs (empty if none).
    pub fn span(&self) -> Range<usize> {
        let lo = self
            .starts
            .iter()
            .zip(&self.lens)
            .filter(|(_, &l)| l > 0)
            .map(|(&s, _)| s)
            .min();
        let hi = self
            .starts
            .iter()
            .zip(&self.lens)
            .map(|(&s, &l)| s + l)
            .max();
        match (lo, hi) {
            (Some(lo), Some(hi)) => lo..hi,
            _ => 0..0,
        }
    }

    fn taps(&self, i: usize) -> (usize, &[i32], &[f64]) {
        let len = self.lens[i];
        let k = i * self.ksize;
        (
            self.starts[i],
            &self.fixed[k..k + len],
            &self.weights[k..k + len],
        )
    }
}

/// Source positions of Pillow's nearest-neighbour resize (`ImagingScaleAffine`,
/// used for modes "1" and "P") for the kept outputs: `None` where Pillow leaves
/// the fill value 0. The position accumulates `in/out` in `f64` from 0.5·step,
/// as Pillow does, so it is replayed from the first output.
pub fn nearest_positions(
    in_size: usize,
    out_size: usize,
    keep: Range<usize>,
) -> Vec<Option<usize>> {
    let step = (in_size as f32 - 0f32) as f64 / out_size as f64;
    let mut pos = 0f64 + step * 0.5;
    let mut out = Vec::with_capacity(keep.len());
    for x in 0..keep.end {
        if x >= keep.start {
            // COORD(v): -1 below zero, else truncation.
            let p = if pos < 0.0 { None } else { Some(pos as usize) };
            out.push(p.filter(|&p| p < in_size));
        }
        pos += step;
    }
    out
}

/// A rectangle of an image held in memory: columns `x0 .. x0 + width` and rows
/// `y0 .. y0 + height` of a larger image, `bands` interleaved samples a pixel.
#[derive(Debug, Clone, PartialEq)]
pub struct Window<T> {
    pub data: Vec<T>,
    pub x0: usize,
    pub y0: usize,
    pub width: usize,
    pub height: usize,
    pub bands: usize,
}

impl<T: Copy> Window<T> {
    /// A whole image as a window at (0, 0).
    pub fn whole(data: Vec<T>, width: usize, height: usize, bands: usize) -> Self {
        debug_assert_eq!(data.len(), width * height * bands);
        Self {
            data,
            x0: 0,
            y0: 0,
            width,
            height,
            bands,
        }
    }

    /// Columns `cols` and rows `rows` (absolute coordinates, inside the window).
    pub fn crop(&self, cols: Range<usize>, rows: Range<usize>) -> Self {
        let b = self.bands;
        let mut data = Vec::with_capacity(cols.len() * rows.len() * b);
        for y in rows.clone() {
            let row = (y - self.y0) * self.width * b;
            data.extend_from_slice(
                &self.data[row + (cols.start - self.x0) * b..row + (cols.end - self.x0) * b],
            );
        }
        Self {
            data,
            x0: cols.start,
            y0: rows.start,
            width: cols.len(),
            height: rows.len(),
            bands: b,
        }
    }
}

/// Sample types Pillow resamples: 8-bit (fixed point) and 16-bit (`f64`).
pub trait Sample: Copy + Default {
    /// One output sample from source samples and the taps.
    fn convolve(values: impl Iterator<Item = Self>, fixed: &[i32], weights: &[f64]) -> Self;

    /// A faster horizontal pass giving the same samples, where there is one.
    fn horizontal_fast(_: &Window<Self>, _: &AxisTaps, _: Range<usize>) -> Option<Window<Self>> {
        None
    }

    /// A faster vertical pass giving the same samples, where there is one.
    fn vertical_fast(_: &Window<Self>, _: &AxisTaps, _: Range<usize>) -> Option<Window<Self>> {
        None
    }
}

impl Sample for u8 {
    #[inline]
    fn convolve(values: impl Iterator<Item = u8>, fixed: &[i32], _: &[f64]) -> u8 {
        let mut ss: i32 = 1 << (PRECISION_BITS - 1);
        for (v, &k) in values.zip(fixed) {
            ss += v as i32 * k;
        }
        (ss >> PRECISION_BITS).clamp(0, 255) as u8
    }

    fn horizontal_fast(src: &Window<u8>, ax: &AxisTaps, rows: Range<usize>) -> Option<Window<u8>> {
        Some(match src.bands {
            1 => horizontal_u8::<1>(src, ax, rows),
            2 => horizontal_u8::<2>(src, ax, rows),
            3 => horizontal_u8::<3>(src, ax, rows),
            4 => horizontal_u8::<4>(src, ax, rows),
            _ => return None,
        })
    }

    fn vertical_fast(src: &Window<u8>, ay: &AxisTaps, cols: Range<usize>) -> Option<Window<u8>> {
        Some(vertical_u8(src, ay, cols))
    }
}

impl Sample for u16 {
    #[inline]
    fn convolve(values: impl Iterator<Item = u16>, _: &[i32], weights: &[f64]) -> u16 {
        let mut ss = 0f64;
        for (v, &k) in values.zip(weights) {
            ss += v as f64 * k;
        }
        // ROUND_UP then CLIP16.
        let r = if ss >= 0.0 { ss + 0.5 } else { ss - 0.5 } as i64;
        r.clamp(0, 65535) as u16
    }
}

/// Horizontal pass over `rows` (absolute, inside `src`), kept output columns of `ax`.
fn horizontal<T: Sample>(src: &Window<T>, ax: &AxisTaps, rows: Range<usize>) -> Window<T> {
    if let Some(out) = T::horizontal_fast(src, ax, rows.clone()) {
        return out;
    }
    let b = src.bands;
    let out_w = ax.keep.len();
    let mut data = vec![T::default(); out_w * rows.len() * b];
    for (oy, y) in rows.clone().enumerate() {
        let line = &src.data[(y - src.y0) * src.width * b..(y - src.y0 + 1) * src.width * b];
        let out = &mut data[oy * out_w * b..(oy + 1) * out_w * b];
        for i in 0..out_w {
            let (start, fixed, weights) = ax.taps(i);
            let base = (start - src.x0) * b;
            for c in 0..b {
                let values = (0..fixed.len()).map(|t| line[base + t * b + c]);
                out[i * b + c] = T::convolve(values, fixed, weights);
            }
        }
    }
    Window {
        data,
        x0: ax.keep.start,
        y0: rows.start,
        width: out_w,
        height: rows.len(),
        bands: b,
    }
}

/// Vertical pass over columns `cols` (absolute, inside `src`), kept output rows of `ay`.
fn vertical<T: Sample>(src: &Window<T>, ay: &AxisTaps, cols: Range<usize>) -> Window<T> {
    if let Some(out) = T::vertical_fast(src, ay, cols.clone()) {
        return out;
    }
    let b = src.bands;
    let out_h = ay.keep.len();
    let row_len = src.width * b;
    let mut data = vec![T::default(); cols.len() * out_h * b];
    for i in 0..out_h {
        let (start, fixed, weights) = ay.taps(i);
        let out = &mut data[i * cols.len() * b..(i + 1) * cols.len() * b];
        for (ox, x) in cols.clone().enumerate() {
            let base = (start - src.y0) * row_len + (x - src.x0) * b;
            for c in 0..b {
                let values = (0..fixed.len()).map(|t| src.data[base + t * row_len + c]);
                out[ox * b + c] = T::convolve(values, fixed, weights);
            }
        }
    }
    Window {
        data,
        x0: cols.start,
        y0: ay.keep.start,
        width: cols.len(),
        height: out_h,
        bands: b,
    }
}

/// 8-bit horizontal pass with `B` bands: the same integer sums as
/// [`Sample::convolve`], computed by `dicoflow_kernels` (built at `-O3`; integer
/// sums, so the order of terms does not matter).
fn horizontal_u8<const B: usize>(
    src: &Window<u8>,
    ax: &AxisTaps,
    rows: Range<usize>,
) -> Window<u8> {
    let out_w = ax.keep.len();
    let row_len = src.width * B;
    // Starts relative to the window's first column (a tap of length 0 reads nothing).
    let starts: Vec<usize> = ax
        .starts
        .iter()
        .zip(&ax.lens)
        .map(|(&s, &l)| if l == 0 { 0 } else { s - src.x0 })
        .collect();
    let taps = FixedTaps::new(src.width, ax.ksize, &starts, &ax.lens, &ax.fixed);
    let mut data = vec![0u8; out_w * rows.len() * B];
    if out_w > 0 {
        for (out, y) in data.chunks_exact_mut(out_w * B).zip(rows.clone()) {
            let line = &src.data[(y - src.y0) * row_len..(y - src.y0 + 1) * row_len];
            horizontal_row::<B>(line, &taps, out);
        }
    }
    Window {
        data,
        x0: ax.keep.start,
        y0: rows.start,
        width: out_w,
        height: rows.len(),
        bands: B,
    }
}

/// 8-bit vertical pass: row-wise accumulation of the same integer sums, by
/// `dicoflow_kernels::vertical_row`.
fn vertical_u8(src: &Window<u8>, ay: &AxisTaps, cols: Range<usize>) -> Window<u8> {
    let b = src.bands;
    let out_h = ay.keep.len();
    let row_len = src.width * b;
    let n = cols.len() * b;
    let first = (cols.start - src.x0) * b;
    let mut data = vec![0u8; n * out_h];
    let mut acc = Vec::with_capacity(n);
    if n > 0 {
        for (i, out) in data.chunks_exact_mut(n).enumerate() {
            let len = ay.lens[i];
            let k = &ay.fixed[i * ay.ksize..i * ay.ksize + len];
            let top = if len == 0 { 0 } else { ay.starts[i] - src.y0 };
            vertical_row(&src.data, row_len, top * row_len + first, k, &mut acc, out);
        }
    }
    Window {
        data,
        x0: cols.start,
        y0: ay.keep.start,
        width: cols.len(),
        height: out_h,
        bands: b,
    }
}

/// Whether Pillow 13.0.0 resizes `in_w`×`in_h` to `out_w`×`out_h` vertically
/// first: when the height shrinks, by more than twice as many pixels as the
/// width does (`out_h < in_h` and `in_h − out_h > 2·(in_w − out_w)`; true for
/// any height reduction when the width grows or stays). Pillow 13.0.0 decides
/// this in `ImagingResampleInner` (pull request 9549, whose C source was not
/// at hand); the rule is read off the released wheel's pixels, and the test
/// `pass_order_is_pillows` checks it on 3,000 size pairs, random and within
/// one pixel of the boundary (`tests/fixtures/preprocess/pass_order_probe.py`).
pub fn vertical_first((in_w, in_h): (usize, usize), (out_w, out_h): (usize, usize)) -> bool {
    let shrink_w = in_w as i128 - out_w as i128;
    let shrink_h = in_h as i128 - out_h as i128;
    shrink_h > 0 && shrink_h > 2 * shrink_w
}

/// Pillow's bicubic `resize((out_w, out_h))` of the whole image `src` (a window
/// at (0, 0)), keeping only output columns `cols` and rows `rows`.
///
/// Pass order and skipped passes as `Image.resize` and `ImagingResampleInner`.
pub fn resize_bicubic<T: Sample>(
    src: &Window<T>,
    (out_w, out_h): (usize, usize),
    cols: Range<usize>,
    rows: Range<usize>,
) -> Window<T> {
    let (in_w, in_h) = (src.width, src.height);
    debug_assert!(src.x0 == 0 && src.y0 == 0);
    let need_h = out_w != in_w;
    let need_v = out_h != in_h;
    if vertical_first((in_w, in_h), (out_w, out_h)) {
        // Vertical first (only the source columns the kept columns read), then horizontal.
        let ax = AxisTaps::bicubic(in_w, out_w, cols.clone());
        let src_cols = if need_h { ax.span() } else { cols.clone() };
        let ay = AxisTaps::bicubic(in_h, out_h, rows.clone());
        let tmp = vertical(src, &ay, src_cols);
        return if need_h {
            horizontal(&tmp, &ax, rows)
        } else {
            tmp.crop(cols, rows)
        };
    }
    let ay = AxisTaps::bicubic(in_h, out_h, rows.clone());
    let src_rows = if need_v { ay.span() } else { rows.clone() };
    let tmp = if need_h {
        let ax = AxisTaps::bicubic(in_w, out_w, cols.clone());
        horizontal(src, &ax, src_rows)
    } else {
        src.crop(cols.clone(), src_rows)
    };
    if need_v {
        vertical(&tmp, &ay, cols)
    } else {
        tmp.crop(cols, rows)
    }
}

/// Pillow's bicubic resize of an 8-bit image with `B` interleaved bands fed one
/// source row at a time, for the common case where [`resize_bicubic`] runs
/// both passes, horizontal first: each source row in [`RowPlan::src_rows`]
/// goes through the horizontal pass as soon as it is decoded (while it is
/// still in cache, with no full-size decoded image), then the vertical pass
/// reads the horizontal pass's rows. Same taps, same kernels, same order of
/// passes as [`resize_bicubic`], so the same samples.
///
/// Built once per source size and reused (the taps depend only on the sizes).
#[derive(Debug, Clone)]
pub struct RowPlan<const B: usize> {
    ay: AxisTaps,
    fx: FixedTaps,
    src_rows: Range<usize>,
    cols: usize,
}

impl<const B: usize> RowPlan<B> {
    /// The plan for resizing `in_w`×`in_h` to `out` and keeping `cols` × `rows`,
    /// or `None` where [`resize_bicubic`] would not run both passes horizontal
    /// first (a pass skipped because its size does not change, or Pillow's
    /// vertical-first order, [`vertical_first`]); use [`resize_bicubic`] there.
    pub fn new(
        (in_w, in_h): (usize, usize),
        (out_w, out_h): (usize, usize),
        cols: Range<usize>,
        rows: Range<usize>,
    ) -> Option<Self> {
        let need_h = out_w != in_w;
        let need_v = out_h != in_h;
        if !need_h
            || !need_v
            || vertical_first((in_w, in_h), (out_w, out_h))
            || cols.is_empty()
            || rows.is_empty()
        {
            return None;
        }
        let ay = AxisTaps::bicubic(in_h, out_h, rows);
        let ax = AxisTaps::bicubic(in_w, out_w, cols.clone());
        // As `horizontal_u8` for a window at column 0 (a tap of length 0 reads nothing).
        let starts: Vec<usize> = ax
            .starts
            .iter()
            .zip(&ax.lens)
            .map(|(&s, &l)| if l == 0 { 0 } else { s })
            .collect();
        let fx = FixedTaps::new(in_w, ax.ksize, &starts, &ax.lens, &ax.fixed);
        let src_rows = ay.span();
        Some(Self {
            ay,
            fx,
            src_rows,
            cols: cols.len(),
        })
    }

    /// Source rows the vertical pass reads; only these need the horizontal pass.
    pub fn src_rows(&self) -> Range<usize> {
        self.src_rows.clone()
    }

    /// Samples of one horizontally resampled row (kept columns × `B`).
    pub fn row_len(&self) -> usize {
        self.cols * B
    }

    /// Samples of the horizontal pass's output: [`Self::src_rows`] rows of [`Self::row_len`].
    pub fn horizontal_len(&self) -> usize {
        self.src_rows.len() * self.row_len()
    }

    /// Samples of the output: kept rows × kept columns × `B`.
    pub fn output_len(&self) -> usize {
        self.ay.keep.len() * self.row_len()
    }

    /// Horizontal pass of one whole source row (`in_w * B` samples) into `out`
    /// ([`Self::row_len`] samples).
    ///
    /// Panics if the lengths are not those.
    pub fn horizontal(&self, line: &[u8], out: &mut [u8]) {
        horizontal_row::<B>(line, &self.fx, out);
    }

    /// Vertical pass over the horizontal pass's rows `hpass` (at least
    /// [`Self::horizontal_len`] samples, row `src_rows().start` first) into
    /// `out` ([`Self::output_len`] samples, `[rows, cols, B]`); `acc` is scratch.
    ///
    /// Panics if the lengths are shorter than those.
    pub fn vertical(&self, hpass: &[u8], acc: &mut Vec<i32>, out: &mut [u8]) {
        let n = self.row_len();
        let y0 = self.src_rows.start;
        for (i, out) in out[..self.output_len()].chunks_exact_mut(n).enumerate() {
            let len = self.ay.lens[i];
            let k = &self.ay.fixed[i * self.ay.ksize..i * self.ay.ksize + len];
            let top = if len == 0 { 0 } else { self.ay.starts[i] - y0 };
            vertical_row(hpass, n, top * n, k, acc, out);
        }
    }
}

/// Pillow's nearest-neighbour `resize((out_w, out_h))` (the filter Pillow
/// forces for modes "1" and "P"), keeping output columns `cols` and rows `rows`.
/// Pixels Pillow does not reach keep its fill value, 0.
pub fn resize_nearest(
    src: &Window<u8>,
    (out_w, out_h): (usize, usize),
    cols: Range<usize>,
    rows: Range<usize>,
) -> Window<u8> {
    let b = src.bands;
    let xs = nearest_positions(src.width, out_w, cols.clone());
    let ys = nearest_positions(src.height, out_h, rows.clone());
    let mut data = vec![0u8; xs.len() * ys.len() * b];
    for (oy, y) in ys.iter().enumerate() {
        let Some(y) = *y else { continue };
        for (ox, x) in xs.iter().enumerate() {
            let Some(x) = *x else { continue };
            let s = (y * src.width + x) * b;
            let d = (oy * xs.len() + ox) * b;
            data[d..d + b].copy_from_slice(&src.data[s..s + b]);
        }
    }
    Window {
        data,
        x0: cols.start,
        y0: rows.start,
        width: xs.len(),
        height: ys.len(),
        bands: b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pinned Pillow's pass order on 3,000 size pairs
    /// (tests/fixtures/preprocess/pass_order.json, made by
    /// `pass_order_probe.py` beside it from Pillow's own pixels).
    #[test]
    fn pass_order_is_pillows() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/preprocess/pass_order.json"
        );
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let (mut checked, mut wrong) = (0, Vec::new());
        for case in fixture["cases"].as_array().unwrap() {
            let n = |i: usize| case[i].as_u64().unwrap() as usize;
            let (input, output) = ((n(0), n(1)), (n(2), n(3)));
            let want = match case[4].as_str().unwrap() {
                "V" => true,
                "H" => false,
                _ => continue, // both orders give the same pixels
            };
            checked += 1;
            if vertical_first(input, output) != want {
                wrong.push(format!("{input:?} -> {output:?}"));
            }
        }
        assert!(checked >= 2900, "{checked} size pairs checked");
        assert!(
            wrong.is_empty(),
            "{} wrong: {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(10)]
        );
    }

    #[test]
    fn taps_sum_to_one_in_fixed_point_and_stay_inside_the_source() {
        for (i, o) in [(495usize, 242usize), (7, 224), (4000, 224), (1, 9), (3, 1)] {
            let t = AxisTaps::bicubic(i, o, 0..o);
            let span = t.span();
            assert!(span.end <= i, "{i}->{o}");
            for n in 0..o {
                let (s, fixed, _) = t.taps(n);
                assert!(s + fixed.len() <= i);
                let sum: i64 = fixed.iter().map(|&k| k as i64).sum();
                assert!((sum - (1 << PRECISION_BITS)).abs() <= fixed.len() as i64);
            }
        }
    }

    #[test]
    fn crop_of_full_resize_equals_resize_of_kept_outputs() {
        let (w, h) = (37usize, 23usize);
        let data: Vec<u8> = (0..w * h * 3).map(|i| (i * 97 % 251) as u8).collect();
        let src = Window::whole(data, w, h, 3);
        let full = resize_bicubic(&src, (50, 31), 0..50, 0..31);
        let part = resize_bicubic(&src, (50, 31), 9..40, 4..20);
        assert_eq!(full.crop(9..40, 4..20), part);
    }

    #[test]
    fn fast_u8_passes_equal_the_per_sample_sums() {
        let (w, h) = (29usize, 17usize);
        for b in 1..=4 {
            let data: Vec<u8> = (0..w * h * b).map(|i| (i * 131 % 256) as u8).collect();
            let src = Window::whole(data, w, h, b);
            let ax = AxisTaps::bicubic(w, 11, 2..9);
            let out = horizontal(&src, &ax, 3..12);
            let ay = AxisTaps::bicubic(h, 40, 5..30);
            let vout = vertical(&src, &ay, 4..20);
            for (oy, y) in (3..12).enumerate() {
                for i in 0..7 {
                    let (start, fixed, weights) = ax.taps(i);
                    for c in 0..b {
                        let values =
                            (0..fixed.len()).map(|t| src.data[(y * w + start + t) * b + c]);
                        let want = u8::convolve(values, fixed, weights);
                        assert_eq!(out.data[(oy * 7 + i) * b + c], want);
                    }
                }
            }
            for i in 0..25 {
                let (start, fixed, weights) = ay.taps(i);
                for (ox, x) in (4..20).enumerate() {
                    for c in 0..b {
                        let values =
                            (0..fixed.len()).map(|t| src.data[((start + t) * w + x) * b + c]);
                        let want = u8::convolve(values, fixed, weights);
                        assert_eq!(vout.data[(i * 16 + ox) * b + c], want);
                    }
                }
            }
        }
    }

    #[test]
    fn row_plan_equals_resize_bicubic() {
        let mut checked = 0;
        for (w, h) in [
            (37usize, 23usize),
            (23, 37),
            (640, 480),
            (9, 300),
            (300, 2),
            (5, 5),
        ] {
            let data: Vec<u8> = (0..w * h * 3).map(|i| (i * 89 % 253) as u8).collect();
            let src = Window::whole(data.clone(), w, h, 3);
            for (ow, oh, cols, rows) in [
                (50usize, 31usize, 9..40, 4..20),
                (298, 224, 37..261, 0..224),
                (224, 224, 0..224, 0..224),
                (7, 3, 0..7, 1..3),
            ] {
                let want = resize_bicubic(&src, (ow, oh), cols.clone(), rows.clone());
                let Some(plan) = RowPlan::<3>::new((w, h), (ow, oh), cols, rows) else {
                    assert!(
                        ow == w || oh == h || vertical_first((w, h), (ow, oh)),
                        "{w}x{h} -> {ow}x{oh}"
                    );
                    continue;
                };
                let mut hpass = vec![0u8; plan.horizontal_len()];
                for (y, out) in plan.src_rows().zip(hpass.chunks_exact_mut(plan.row_len())) {
                    plan.horizontal(&data[y * w * 3..(y + 1) * w * 3], out);
                }
                let mut got = vec![0u8; plan.output_len()];
                plan.vertical(&hpass, &mut Vec::new(), &mut got);
                assert_eq!(got, want.data, "{w}x{h} -> {ow}x{oh}");
                checked += 1;
            }
        }
        assert!(checked >= 15, "{checked}");
    }

    #[test]
    fn nearest_positions_follow_pillow_steps() {
        // 3 -> 7: step 3/7, positions floor((i + 0.5) * 3/7).
        let p = nearest_positions(3, 7, 0..7);
        assert_eq!(
            p,
            [0, 0, 1, 1, 1, 2, 2].map(Some).to_vec(),
            "upscaling repeats pixels"
        );
        assert_eq!(nearest_positions(3, 7, 2..4), vec![Some(1), Some(1)]);
    }
}
