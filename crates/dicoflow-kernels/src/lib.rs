//! The per-pixel loops of dicoflow's image preprocessing, in a crate of their
//! own so that the workspace's dev profile can build them at `-O3` without
//! overflow checks (dicoflow itself is built at `-O1` in dev builds, which
//! neither vectorises nor removes bounds checks; see the root Cargo.toml).
//!
//! The arithmetic is Pillow's 8-bit fixed-point resampling
//! (`src/libImaging/Resample.c`, `ImagingResampleHorizontal_8bpc` /
//! `ImagingResampleVertical_8bpc`, Pillow 13.0): integer coefficients with
//! [`PRECISION_BITS`] fractional bits, an accumulator starting at one half,
//! an arithmetic shift and a clip to 0..=255. Integer sums do not depend on the
//! order of their terms, so the loops here may be shaped for the optimiser and
//! still give Pillow's samples exactly; zero coefficients added to pad every
//! output to the same window length change no sum either. Accumulation wraps
//! (`wrapping_*`): Pillow's own `int` sums never overflow for 8-bit data (that
//! is what its `PRECISION_BITS = 32 - 8 - 2` is chosen for), so wrapping gives
//! the same value and keeps the loops free of checks.
//!
//! Everything is safe Rust over slices.

/// Fractional bits of Pillow's 8-bit fixed-point coefficients (`PRECISION_BITS`).
pub const PRECISION_BITS: u32 = 32 - 8 - 2;

/// The accumulator's start value, one half in fixed point (Pillow's rounding).
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Pillow's `clip8`: shift out the fraction, clamp to 0..=255.
#[inline(always)]
fn clip8(ss: i32) -> u8 {
    (ss >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One axis of a resize in a fixed-window layout: output `i` reads the
/// `window` samples starting at source position `starts[i]`, weighted by
/// `coeffs[i * window .. (i + 1) * window]` (fixed-point, [`PRECISION_BITS`]).
///
/// Built by [`FixedTaps::new`] from Pillow's variable-length taps by shifting
/// each window to stay inside the source and padding with zero weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedTaps {
    window: usize,
    starts: Vec<usize>,
    coeffs: Vec<i32>,
}

impl FixedTaps {
    /// From Pillow's taps: output `i` reads `lens[i]` source samples from
    /// `starts[i]` with weights `fixed[i * ksize ..][.. lens[i]]`, over a source
    /// of `in_size` samples. The window is `min(ksize, in_size)`.
    ///
    /// Panics if the taps do not fit the source or `ksize` (a caller bug).
    pub fn new(
        in_size: usize,
        ksize: usize,
        starts: &[usize],
        lens: &[usize],
        fixed: &[i32],
    ) -> Self {
        assert_eq!(starts.len(), lens.len());
        let window = ksize.min(in_size);
        let mut out_starts = Vec::with_capacity(starts.len());
        let mut coeffs = vec![0i32; starts.len() * window];
        for (i, (&start, &len)) in starts.iter().zip(lens).enumerate() {
            assert!(
                len <= window && start + len <= in_size,
                "taps outside the source"
            );
            // Shift left only as far as needed to keep the window inside the source.
            let s = start.min(in_size - window);
            let shift = start - s;
            coeffs[i * window + shift..i * window + shift + len]
                .copy_from_slice(&fixed[i * ksize..i * ksize + len]);
            out_starts.push(s);
        }
        Self {
            window,
            starts: out_starts,
            coeffs,
        }
    }

    /// Samples read per output.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Number of outputs.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether there are no outputs.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Source start of each output's window.
    pub fn starts(&self) -> &[usize] {
        &self.starts
    }
}

/// Horizontal pass over one row of `B` interleaved 8-bit bands: `out` (`taps.len() * B`
/// samples) from `line`, whose pixel 0 is source position 0 of `taps`.
///
/// Panics if `line` is shorter than the taps' windows or `out` has the wrong length.
pub fn horizontal_row<const B: usize>(line: &[u8], taps: &FixedTaps, out: &mut [u8]) {
    let w = taps.window;
    assert_eq!(out.len(), taps.len() * B);
    if w == 0 {
        // An empty source: every sum is the rounding half alone, as in Pillow.
        out.fill(clip8(HALF));
        return;
    }
    if B == 3 {
        return horizontal_row_rgb(line, taps, out);
    }
    for ((o, &start), k) in out
        .chunks_exact_mut(B)
        .zip(&taps.starts)
        .zip(taps.coeffs.chunks_exact(w))
    {
        let px = &line[start * B..(start + w) * B];
        let mut ss = [HALF; B];
        for (p, &kk) in px.chunks_exact(B).zip(k) {
            for c in 0..B {
                ss[c] = ss[c].wrapping_add((p[c] as i32).wrapping_mul(kk));
            }
        }
        for c in 0..B {
            o[c] = clip8(ss[c]);
        }
    }
}

/// [`horizontal_row`] for 3 bands with red and green in one 64-bit multiply:
/// `(r + g·2³²)·k` summed over the taps is `R + G·2³²`, where `R` and `G` are
/// the two channels' sums (each within `i32`, as Pillow's are, so the `i64`
/// cannot overflow); `R` is the low 32 bits, `G` what remains shifted down.
/// Two multiplies per tap instead of three, the same sums.
fn horizontal_row_rgb(line: &[u8], taps: &FixedTaps, out: &mut [u8]) {
    let w = taps.window;
    for ((o, &start), k) in out
        .chunks_exact_mut(3)
        .zip(&taps.starts)
        .zip(taps.coeffs.chunks_exact(w))
    {
        let px = &line[start * 3..(start + w) * 3];
        let mut rg = 0i64;
        let mut b = HALF;
        for (p, &kk) in px.chunks_exact(3).zip(k) {
            let v = p[0] as i64 | (p[1] as i64) << 32;
            rg = rg.wrapping_add(v.wrapping_mul(kk as i64));
            b = b.wrapping_add((p[2] as i32).wrapping_mul(kk));
        }
        let r = rg as i32;
        let g = (rg.wrapping_sub(r as i64) >> 32) as i32;
        o[0] = clip8(r.wrapping_add(HALF));
        o[1] = clip8(g.wrapping_add(HALF));
        o[2] = clip8(b);
    }
}

/// Vertical pass for one output row: `out[x] = clip8(½ + Σ_t coeffs[t] · src[first + t·stride + x])`
/// for `x < out.len()`. `acc` is scratch of any length (resized here).
///
/// Panics if a row read lies outside `src`.
pub fn vertical_row(
    src: &[u8],
    stride: usize,
    first: usize,
    coeffs: &[i32],
    acc: &mut Vec<i32>,
    out: &mut [u8],
) {
    let n = out.len();
    acc.clear();
    acc.resize(n, HALF);
    for (t, &k) in coeffs.iter().enumerate() {
        let row = &src[first + t * stride..first + t * stride + n];
        for (a, &v) in acc.iter_mut().zip(row) {
            *a = a.wrapping_add((v as i32).wrapping_mul(k));
        }
    }
    for (o, &a) in out.iter_mut().zip(acc.iter()) {
        *o = clip8(a);
    }
}

/// Interleaved RGB8 `[n, 3]` to planar f32 `[3, n]` through a per-channel
/// table (`lut[c][v]`), e.g. CLIP's normalisation precomputed for every byte.
///
/// Panics if `out.len() != hwc.len()` or `hwc.len()` is not a multiple of 3.
pub fn planar_lut(hwc: &[u8], lut: &[[f32; 256]; 3], out: &mut [f32]) {
    assert!(hwc.len().is_multiple_of(3) && out.len() == hwc.len());
    let plane = hwc.len() / 3;
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (((px, r), g), b) in hwc.chunks_exact(3).zip(r).zip(g).zip(b) {
        *r = lut[0][px[0] as usize];
        *g = lut[1][px[1] as usize];
        *b = lut[2][px[2] as usize];
    }
}

/// Interleaved RGB8 `[n, 3]` to planar u8 `[3, n]`.
///
/// Panics if `out.len() != hwc.len()` or `hwc.len()` is not a multiple of 3.
pub fn planar_u8(hwc: &[u8], out: &mut [u8]) {
    assert!(hwc.len().is_multiple_of(3) && out.len() == hwc.len());
    let plane = hwc.len() / 3;
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (((px, r), g), b) in hwc.chunks_exact(3).zip(r).zip(g).zip(b) {
        *r = px[0];
        *g = px[1];
        *b = px[2];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pillow's loop as written in Resample.c: variable-length taps, `int` sum.
    fn pillow_pass(
        src: &[u8],
        starts: &[usize],
        lens: &[usize],
        fixed: &[i32],
        ksize: usize,
    ) -> Vec<u8> {
        starts
            .iter()
            .zip(lens)
            .enumerate()
            .map(|(i, (&s, &l))| {
                let mut ss = HALF;
                for t in 0..l {
                    ss += src[s + t] as i32 * fixed[i * ksize + t];
                }
                clip8(ss)
            })
            .collect()
    }

    #[test]
    fn fixed_windows_give_the_variable_length_sums() {
        // Taps near both edges (shortened windows) and a source shorter than ksize.
        let src: Vec<u8> = (0..13).map(|i| (i * 89 % 256) as u8).collect();
        let ksize = 5;
        let starts = [0, 0, 2, 6, 9, 10];
        let lens = [2, 5, 5, 5, 4, 3];
        let fixed: Vec<i32> = (0..starts.len() * ksize)
            .map(|i| (i as i32 * 7919 % 1_700_000) - 200_000)
            .collect();
        let want = pillow_pass(&src, &starts, &lens, &fixed, ksize);
        let taps = FixedTaps::new(13, ksize, &starts, &lens, &fixed);
        let mut got = vec![0u8; starts.len()];
        horizontal_row::<1>(&src, &taps, &mut got);
        assert_eq!(got, want);
        // ksize larger than the source: one window covering it all.
        let taps = FixedTaps::new(3, 7, &[0, 1], &[3, 2], &[1 << 21; 14]);
        assert_eq!(taps.window(), 3);
        let mut got = [0u8; 2];
        horizontal_row::<1>(&[10, 20, 30], &taps, &mut got);
        // (10 + 20 + 30) / 2 + ½ and (20 + 30) / 2 + ½, truncated.
        assert_eq!(got, [30, 25]);
        // An empty source reads nothing.
        let taps = FixedTaps::new(0, 5, &[0, 0], &[0, 0], &[0; 10]);
        let mut got = [9u8; 6];
        horizontal_row::<3>(&[], &taps, &mut got);
        assert_eq!(got, [0; 6]);
    }

    #[test]
    fn rgb_rows_give_each_channels_variable_length_sums() {
        // Weights with negative lobes and sums beyond 0..255 (both clips), as
        // Pillow's bicubic taps have; red and green sums of both signs.
        let width = 23;
        let src: Vec<u8> = (0..width * 3).map(|i| (i * 151 % 256) as u8).collect();
        let ksize = 6;
        let starts = [0, 0, 3, 9, 15, 17, 19];
        let lens = [1, 6, 6, 5, 6, 6, 4];
        let fixed: Vec<i32> = (0..starts.len() * ksize)
            .map(|i| ((i as i32 * 104_729) % 3_000_000) - 700_000)
            .collect();
        let taps = FixedTaps::new(width, ksize, &starts, &lens, &fixed);
        let mut got = vec![0u8; starts.len() * 3];
        horizontal_row::<3>(&src, &taps, &mut got);
        for c in 0..3 {
            let plane: Vec<u8> = src.iter().skip(c).step_by(3).copied().collect();
            let want = pillow_pass(&plane, &starts, &lens, &fixed, ksize);
            let got_c: Vec<u8> = got.iter().skip(c).step_by(3).copied().collect();
            assert_eq!(got_c, want, "band {c}");
        }
        assert!(
            got.contains(&0) && got.contains(&255) && got.iter().any(|&v| v > 0 && v < 255),
            "{got:?}"
        );
        // A negative red sum borrows from green in the packed 64-bit sum; green's
        // exact sum 1.5 (plus ½) sits on a rounding boundary, so a borrow not
        // undone would show: red 10·(−0.5) → 0, green 1·1.5 + ½ → 2, blue 0.
        let taps = FixedTaps::new(2, 2, &[0], &[2], &[3 << 21, -(1 << 21)]);
        let mut got = [9u8; 3];
        horizontal_row::<3>(&[0, 1, 0, 10, 0, 0], &taps, &mut got);
        assert_eq!(got, [0, 2, 0]);
    }

    #[test]
    fn vertical_row_sums_each_column() {
        let src: Vec<u8> = (0..4 * 6).map(|i| (i * 37 % 256) as u8).collect();
        let coeffs = [3 << 20, -(1 << 20), 2 << 20];
        let mut acc = Vec::new();
        let mut out = [0u8; 4];
        vertical_row(&src, 6, 7, &coeffs, &mut acc, &mut out);
        for (x, &o) in out.iter().enumerate() {
            let want = HALF
                + (0..3)
                    .map(|t| src[7 + t * 6 + x] as i32 * coeffs[t])
                    .sum::<i32>();
            assert_eq!(o, clip8(want));
        }
    }

    #[test]
    fn planar_layouts() {
        let hwc = [1u8, 2, 3, 4, 5, 6];
        let mut u = [0u8; 6];
        planar_u8(&hwc, &mut u);
        assert_eq!(u, [1, 4, 2, 5, 3, 6]);
        let mut lut = [[0f32; 256]; 3];
        for (c, t) in lut.iter_mut().enumerate() {
            for (v, x) in t.iter_mut().enumerate() {
                *x = (c * 1000 + v) as f32;
            }
        }
        let mut f = [0f32; 6];
        planar_lut(&hwc, &lut, &mut f);
        assert_eq!(f, [1.0, 4.0, 1002.0, 1005.0, 2003.0, 2006.0]);
    }
}
