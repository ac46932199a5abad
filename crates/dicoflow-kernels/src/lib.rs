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
//! On x86-64 CPUs with AVX2 (detected once at run time, [`Kernel::detected`]) the
//! resampling passes take the kernels of module `avx2`, whose 256-bit
//! `vpmulld` gives the 32-bit products that baseline x86-64 (SSE2) has no
//! vector instruction for: the vertical pass is the same loop compiled with
//! AVX2 enabled (LLVM vectorises it), the horizontal pass for 3 or 4 bands
//! computes 8 outputs at once with `std::arch` intrinsics. Same products, same
//! `i32` sums from the same ½, same clip: the same bytes as the baseline
//! loops, which run everywhere else (tested against each other on random
//! rows).
//!
//! On CPUs that also have AVX-512 VBMI and VNNI the horizontal pass takes the
//! kernel of module `avx512` (16 outputs at once; see there), where the taps
//! fit its layout.
//!
//! Everything is safe Rust over slices, except the calls into the SIMD
//! kernels, each after the run-time check that the CPU has their features
//! ([`Kernel::detected`]), and the AVX-512 kernel's vector loads and stores,
//! each over a slice of exactly its 64 bytes.

use std::sync::OnceLock;

/// Outputs computed together by the AVX2 horizontal pass for 3 or 4 bands
/// (one per 32-bit lane of a 256-bit vector).
const LANES: usize = 8;

/// Taps per 16-byte load of one lane in the AVX2 horizontal pass.
const BLOCK: usize = 4;

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
    /// `coeffs` by groups of [`LANES`] outputs, tap-major:
    /// `lane_coeffs[(g * lane_taps + t) * LANES + l]` is tap `t` of output
    /// `g * LANES + l`, where `lane_taps` is `window` rounded up to a multiple
    /// of [`BLOCK`] (the taps past `window` weigh 0); whole groups only.
    lane_coeffs: Vec<i32>,
    /// The layout of the AVX-512 kernel, where the taps fit it (see `avx512::WideTaps::new`).
    #[cfg(target_arch = "x86_64")]
    wide: Option<avx512::WideTaps>,
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
        let lane_taps = window.div_ceil(BLOCK) * BLOCK;
        let mut lane_coeffs = vec![0i32; starts.len() / LANES * LANES * lane_taps];
        for (g, group) in lane_coeffs
            .chunks_exact_mut(LANES * lane_taps.max(1))
            .enumerate()
        {
            for (t, lanes) in group.chunks_exact_mut(LANES).take(window).enumerate() {
                for (l, k) in lanes.iter_mut().enumerate() {
                    *k = coeffs[(g * LANES + l) * window + t];
                }
            }
        }
        Self {
            #[cfg(target_arch = "x86_64")]
            wide: avx512::WideTaps::new(window, &out_starts, &coeffs),
            window,
            starts: out_starts,
            coeffs,
            lane_coeffs,
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
/// Uses the fastest kernel this CPU has ([`Kernel::detected`]; the same integer sums).
///
/// Panics if `line` is shorter than the taps' windows or `out` has the wrong length.
pub fn horizontal_row<const B: usize>(line: &[u8], taps: &FixedTaps, out: &mut [u8]) {
    horizontal_row_with::<B>(line, taps, out, Kernel::detected());
}

/// The resampling loops' implementations, from the portable one up. Each
/// gives the same bytes; the SIMD ones run only where the CPU has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kernel {
    /// Plain Rust loops (any CPU).
    Baseline,
    /// x86-64 AVX2 (module `avx2`).
    Avx2,
    /// x86-64 AVX-512 with VBMI and VNNI for the horizontal pass (module
    /// `avx512`, where the taps fit its layout; AVX2 otherwise and for the
    /// vertical pass).
    Avx512,
}

impl Kernel {
    /// The fastest kernel this CPU has, detected on the first call and kept.
    pub fn detected() -> Kernel {
        static KERNEL: OnceLock<Kernel> = OnceLock::new();
        *KERNEL.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if avx512::detected() {
                    return Kernel::Avx512;
                }
                if std::is_x86_feature_detected!("avx2") {
                    return Kernel::Avx2;
                }
            }
            Kernel::Baseline
        })
    }
}

/// Runs the SIMD kernel call `$call` and returns from the enclosing function
/// if `$kernel` (the caller's choice) is at least `$need`; does nothing
/// otherwise, so the loops after it run. Panics if this CPU lacks `$need`
/// ([`Kernel::detected`]). The one place the kernels' `unsafe` calls are made.
macro_rules! simd_or_return {
    ($kernel:expr, $need:expr, $call:expr) => {
        #[cfg(target_arch = "x86_64")]
        if $kernel >= $need {
            assert!(
                Kernel::detected() >= $need,
                "the {:?} kernel asked for on a CPU without it",
                $need
            );
            #[allow(unsafe_code)]
            // SAFETY: the CPU has the features of `$need` (detected at run time, checked above).
            unsafe {
                $call
            };
            return;
        }
        let _ = $kernel;
    };
}

/// [`horizontal_row`] with the kernel chosen by the caller (at most [`Kernel::detected`]).
fn horizontal_row_with<const B: usize>(
    line: &[u8],
    taps: &FixedTaps,
    out: &mut [u8],
    kernel: Kernel,
) {
    assert_eq!(out.len(), taps.len() * B);
    if taps.window == 0 {
        // An empty source: every sum is the rounding half alone, as in Pillow.
        out.fill(clip8(HALF));
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if let (Some(wide), 1..=4) = (&taps.wide, B) {
        simd_or_return!(
            kernel,
            Kernel::Avx512,
            avx512::horizontal_row::<B>(line, taps, wide, out)
        );
    }
    simd_or_return!(
        kernel,
        Kernel::Avx2,
        avx2::horizontal_row::<B>(line, taps, out)
    );
    if B == 3 {
        return horizontal_row_rgb(line, taps, out);
    }
    horizontal_row_bands::<B>(line, taps, out);
}

/// The horizontal pass as Pillow writes it: per output, one `i32` sum per band.
#[inline(always)]
fn horizontal_row_bands<const B: usize>(line: &[u8], taps: &FixedTaps, out: &mut [u8]) {
    let w = taps.window;
    for ((o, &start), k) in out
        .chunks_exact_mut(B)
        .zip(&taps.starts)
        .zip(taps.coeffs.chunks_exact(w))
    {
        output_bands::<B>(&line[start * B..(start + w) * B], k, o);
    }
}

/// Outputs `range` of the horizontal pass by the baseline loop, into `out`
/// (the whole row's output): what the SIMD kernels leave to it (the last
/// outputs of a row, groups whose reads do not fit their layout).
#[inline(always)]
fn outputs_at<const B: usize>(
    line: &[u8],
    taps: &FixedTaps,
    range: std::ops::Range<usize>,
    out: &mut [u8],
) {
    let w = taps.window;
    for i in range {
        let s = taps.starts[i];
        let k = &taps.coeffs[i * w..(i + 1) * w];
        output_bands::<B>(&line[s * B..(s + w) * B], k, &mut out[i * B..(i + 1) * B]);
    }
}

/// One output of [`horizontal_row_bands`]: `px` holds the window's pixels.
#[inline(always)]
fn output_bands<const B: usize>(px: &[u8], k: &[i32], o: &mut [u8]) {
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
/// Uses the AVX2 kernel when the CPU has AVX2 (the same integer sums).
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
    vertical_row_with(src, stride, first, coeffs, acc, out, Kernel::detected());
}

/// [`vertical_row`] with the kernel chosen by the caller, as in [`horizontal_row_with`].
fn vertical_row_with(
    src: &[u8],
    stride: usize,
    first: usize,
    coeffs: &[i32],
    acc: &mut Vec<i32>,
    out: &mut [u8],
    kernel: Kernel,
) {
    simd_or_return!(
        kernel,
        Kernel::Avx2,
        avx2::vertical_row(src, stride, first, coeffs, acc, out)
    );
    vertical_row_body(src, stride, first, coeffs, acc, out);
}

#[inline(always)]
fn vertical_row_body(
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

/// The resampling passes compiled with AVX2 enabled. The vertical pass and
/// the horizontal one for 1 or 2 bands are the loops above, inlined here so
/// that LLVM vectorises their 32-bit multiplies (`vpmulld`); the horizontal
/// pass for 3 or 4 bands computes [`LANES`] outputs at once (`lanes`).
#[cfg(target_arch = "x86_64")]
mod avx512;

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{outputs_at, FixedTaps, BLOCK, HALF, LANES, PRECISION_BITS};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2")]
    pub(super) fn horizontal_row<const B: usize>(line: &[u8], taps: &FixedTaps, out: &mut [u8]) {
        if B == 3 || B == 4 {
            horizontal_row_lanes::<B>(line, taps, out);
        } else {
            super::horizontal_row_bands::<B>(line, taps, out);
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn vertical_row(
        src: &[u8],
        stride: usize,
        first: usize,
        coeffs: &[i32],
        acc: &mut Vec<i32>,
        out: &mut [u8],
    ) {
        super::vertical_row_body(src, stride, first, coeffs, acc, out);
    }

    /// The horizontal pass for 3 or 4 bands by groups of [`LANES`]
    /// consecutive outputs (see [`lanes`]). Groups that are not whole, or
    /// whose last 16-byte read would pass the end of `line`, take
    /// [`outputs_at`].
    #[target_feature(enable = "avx2")]
    fn horizontal_row_lanes<const B: usize>(line: &[u8], taps: &FixedTaps, out: &mut [u8]) {
        let w = taps.window;
        let n = taps.len();
        let lane_taps = w.div_ceil(BLOCK) * BLOCK;
        let groups = taps.lane_coeffs.chunks_exact(LANES * lane_taps);
        for (g, k8) in groups.enumerate() {
            let i0 = g * LANES;
            // The last 16-byte load of the group's last lane.
            if taps.starts[i0 + LANES - 1] * B + (lane_taps - BLOCK) * B + 16 > line.len() {
                outputs_at::<B>(line, taps, i0..i0 + LANES, out);
                continue;
            }
            let at = std::array::from_fn(|l| taps.starts[i0 + l] * B);
            lanes::<B>(line, at, k8, &mut out[i0 * B..(i0 + LANES) * B]);
        }
        outputs_at::<B>(line, taps, n / LANES * LANES..n, out);
    }

    /// [`LANES`] outputs of `B` (3 or 4) bands, output `l` in 32-bit lane `l`.
    /// Taps go by blocks of [`BLOCK`]: each lane loads the 16 bytes of
    /// `line` at `at[l] + b·BLOCK·B`, which hold the 4 bytes at each of the
    /// block's taps (for 3 bands the pixel and one byte no sum uses); a 4×4
    /// transpose makes one vector per tap, lane `l` holding output `l`'s
    /// pixel. Per tap, each band's byte goes to a vector of its own
    /// (`vpshufb`) and is added times the lane's weight `k8[t·LANES + l]` to
    /// that band's sum (`vpmulld`, `vpaddd`), from ½. Then Pillow's clip and
    /// the `B` bytes of each output into `out`.
    #[target_feature(enable = "avx2")]
    fn lanes<const B: usize>(line: &[u8], at: [usize; LANES], k8: &[i32], out: &mut [u8]) {
        let load = |a: usize| {
            let x = u128::from_le_bytes(line[a..a + 16].try_into().unwrap());
            _mm_set_epi64x((x >> 64) as i64, x as i64)
        };
        // Band `c`'s byte of each 32-bit lane moved to the lane's low byte, zeros above.
        let band: [__m256i; B] = std::array::from_fn(|c| {
            let m = |j: u32| ((4 * j + c as u32) | 0x8080_8000) as i32;
            _mm256_broadcastsi128_si256(_mm_setr_epi32(m(0), m(1), m(2), m(3)))
        });
        // The 4 bytes of each of a block's taps as one 32-bit lane each.
        let taps_ctrl = {
            let m = |j: u32| {
                (B as u32 * j)
                    | (B as u32 * j + 1) << 8
                    | (B as u32 * j + 2) << 16
                    | (B as u32 * j + 3) << 24
            };
            _mm256_broadcastsi128_si256(_mm_setr_epi32(
                m(0) as i32,
                m(1) as i32,
                m(2) as i32,
                m(3) as i32,
            ))
        };
        let mut acc = [_mm256_set1_epi32(HALF); B];
        for (b, k4) in k8.chunks_exact(LANES * BLOCK).enumerate() {
            let o = b * BLOCK * B;
            // y[l]: the block's taps of output l (low half) and of output l + 4 (high half).
            let y: [__m256i; 4] = std::array::from_fn(|l| {
                let pair = _mm256_set_m128i(load(at[l + 4] + o), load(at[l] + o));
                _mm256_shuffle_epi8(pair, taps_ctrl)
            });
            // 4×4 transpose in each half: v[t] holds tap t of all 8 outputs.
            let t0 = _mm256_unpacklo_epi32(y[0], y[1]);
            let t1 = _mm256_unpacklo_epi32(y[2], y[3]);
            let t2 = _mm256_unpackhi_epi32(y[0], y[1]);
            let t3 = _mm256_unpackhi_epi32(y[2], y[3]);
            let v = [
                _mm256_unpacklo_epi64(t0, t1),
                _mm256_unpackhi_epi64(t0, t1),
                _mm256_unpacklo_epi64(t2, t3),
                _mm256_unpackhi_epi64(t2, t3),
            ];
            for (v, k) in v.iter().zip(k4.chunks_exact(LANES)) {
                let k = _mm256_setr_epi32(k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7]);
                for (a, m) in acc.iter_mut().zip(&band) {
                    *a = _mm256_add_epi32(*a, _mm256_mullo_epi32(_mm256_shuffle_epi8(*v, *m), k));
                }
            }
        }
        // clip8 per band, then the bands of each lane packed into its 4 bytes.
        let mut px = _mm256_setzero_si256();
        for (c, a) in acc.iter().enumerate() {
            let v = _mm256_srai_epi32::<{ PRECISION_BITS as i32 }>(*a);
            let v = _mm256_min_epi32(
                _mm256_max_epi32(v, _mm256_setzero_si256()),
                _mm256_set1_epi32(255),
            );
            px = _mm256_or_si256(px, _mm256_sllv_epi32(v, _mm256_set1_epi32(8 * c as i32)));
        }
        if B == 3 {
            // Drop every 4th byte: 12 bytes at the front of each 128-bit half.
            let m = |j: u32| (j + j / 3) as i8;
            let keep = _mm256_broadcastsi128_si256(_mm_setr_epi8(
                m(0),
                m(1),
                m(2),
                m(3),
                m(4),
                m(5),
                m(6),
                m(7),
                m(8),
                m(9),
                m(10),
                m(11),
                -128,
                -128,
                -128,
                -128,
            ));
            px = _mm256_shuffle_epi8(px, keep);
        }
        // The two 128-bit halves' first 4·B bytes: outputs 0..4 and 4..8.
        let bytes =
            |lo: i64, hi: i64| ((hi as u64 as u128) << 64 | lo as u64 as u128).to_le_bytes();
        let low = bytes(_mm256_extract_epi64::<0>(px), _mm256_extract_epi64::<1>(px));
        let high = bytes(_mm256_extract_epi64::<2>(px), _mm256_extract_epi64::<3>(px));
        let (first, second) = out.split_at_mut(4 * B);
        first.copy_from_slice(&low[..4 * B]);
        second.copy_from_slice(&high[..4 * B]);
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

/// [`planar_lut`] into a vector, replacing its contents: `out` becomes planar
/// f32 `[3, n]`, written once (no zero fill first), growing only when
/// its capacity is too small.
///
/// Panics if `hwc.len()` is not a multiple of 3.
pub fn planar_lut_vec(hwc: &[u8], lut: &[[f32; 256]; 3], out: &mut Vec<f32>) {
    assert!(hwc.len().is_multiple_of(3));
    out.clear();
    out.reserve(hwc.len());
    for (c, table) in lut.iter().enumerate() {
        out.extend(hwc.chunks_exact(3).map(|px| table[px[c] as usize]));
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
        let mut v = vec![9.0; 3];
        planar_lut_vec(&hwc, &lut, &mut v);
        assert_eq!(v, f);
        assert_eq!(f, [1.0, 4.0, 1002.0, 1005.0, 2003.0, 2006.0]);
    }

    /// A small deterministic generator (SplitMix64) for the random cases.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        /// A weight from −0.25 to 0.5 (in units of 2^22, Pillow's one): sums
        /// in range and past both ends of 0..=255 (both clips).
        fn weight(&mut self) -> i32 {
            self.below(3 << 20) as i32 - (1 << 20)
        }
    }

    /// Pillow-shaped taps for `in_size → out_size` samples: windows of
    /// `ksize` centred on each output, cut at both edges (as Pillow's are).
    fn random_taps(rng: &mut Rng, in_size: usize, out_size: usize) -> (usize, FixedTaps) {
        let scale = in_size as f64 / out_size as f64;
        let ksize = (2.0 * scale.max(1.0)).ceil() as usize * 2 + 1;
        let (mut starts, mut lens) = (Vec::new(), Vec::new());
        let fixed: Vec<i32> = (0..out_size * ksize).map(|_| rng.weight()).collect();
        for i in 0..out_size {
            let centre = (i as f64 + 0.5) * scale;
            let lo = (centre - ksize as f64 / 2.0).max(0.0) as usize;
            let hi = ((centre + ksize as f64 / 2.0) as usize).min(in_size);
            let lo = lo.min(hi);
            starts.push(lo);
            lens.push((hi - lo).min(ksize));
        }
        (
            ksize,
            FixedTaps::new(in_size, ksize, &starts, &lens, &fixed),
        )
    }

    /// The SIMD kernels this CPU has, above the baseline.
    fn simd_kernels() -> Vec<Kernel> {
        [Kernel::Avx2, Kernel::Avx512]
            .into_iter()
            .filter(|&k| k <= Kernel::detected())
            .collect()
    }

    /// Random rows and Pillow-shaped taps through every SIMD kernel this
    /// CPU has, against the baseline loops; returns how many cases the
    /// AVX-512 layout covered (taps that fit it and at least one whole group).
    fn simd_horizontal_equals_baseline<const B: usize>(rng: &mut Rng, cases: usize) -> usize {
        let mut wide = 0;
        for case in 0..cases {
            let in_size = 1 + rng.below(700);
            // Half the cases downscale by at most 4, where the AVX-512 layout fits.
            let out_size = if case % 2 == 0 {
                (in_size / 4 + rng.below(700)).max(1)
            } else {
                1 + rng.below(700)
            };
            let (ksize, taps) = random_taps(rng, in_size, out_size);
            #[cfg(target_arch = "x86_64")]
            if taps.wide.is_some() && out_size >= avx512::WIDE {
                wide += 1;
            }
            let line: Vec<u8> = (0..in_size * B).map(|_| rng.next() as u8).collect();
            let mut want = vec![0u8; out_size * B];
            horizontal_row_with::<B>(&line, &taps, &mut want, Kernel::Baseline);
            for kernel in simd_kernels() {
                let mut got = vec![1u8; out_size * B];
                horizontal_row_with::<B>(&line, &taps, &mut got, kernel);
                let at = got.iter().zip(&want).position(|(g, w)| g != w);
                assert_eq!(
                    at, None,
                    "{kernel:?}, {B} bands, case {case}: {in_size} → {out_size}, ksize {ksize}"
                );
            }
        }
        wide
    }

    #[test]
    fn simd_kernels_equal_the_baseline_loops() {
        eprintln!(
            "SIMD kernels compared with the baseline loops: {:?}",
            simd_kernels()
        );
        let mut rng = Rng(14);
        let wide = simd_horizontal_equals_baseline::<1>(&mut rng, 150)
            + simd_horizontal_equals_baseline::<2>(&mut rng, 150)
            + simd_horizontal_equals_baseline::<3>(&mut rng, 300)
            + simd_horizontal_equals_baseline::<4>(&mut rng, 150);
        assert!(wide >= 200, "only {wide} cases in the AVX-512 layout");
        let mut acc = Vec::new();
        for case in 0..300 {
            let n = 1 + rng.below(700 * 4);
            let window = 1 + rng.below(25);
            let stride = n + rng.below(9);
            let first = rng.below(5);
            let src: Vec<u8> = (0..first + window * stride + n)
                .map(|_| rng.next() as u8)
                .collect();
            let coeffs: Vec<i32> = (0..window).map(|_| rng.weight()).collect();
            let mut want = vec![0u8; n];
            vertical_row_with(
                &src,
                stride,
                first,
                &coeffs,
                &mut acc,
                &mut want,
                Kernel::Baseline,
            );
            for kernel in simd_kernels() {
                let mut got = vec![1u8; n];
                vertical_row_with(&src, stride, first, &coeffs, &mut acc, &mut got, kernel);
                let at = got.iter().zip(&want).position(|(g, w)| g != w);
                assert_eq!(
                    at, None,
                    "{kernel:?}, vertical case {case}: {n} samples, window {window}"
                );
            }
        }
    }

    /// Weights whose high part needs more than 16 bits leave the AVX-512
    /// layout out (the AVX2 kernel runs), and sums that wrap still equal
    /// the baseline's.
    #[test]
    fn large_weights_keep_the_baseline_sums() {
        let in_size = 300;
        let starts: Vec<usize> = (0..100).map(|i| i * 3).collect();
        let lens = vec![3; 100];
        for (big, fits) in [((1 << 26) - 1, true), (1 << 26, false), (-(1 << 26), true)] {
            let fixed: Vec<i32> = (0..300).map(|i| if i % 3 == 1 { big } else { 5 }).collect();
            let taps = FixedTaps::new(in_size, 3, &starts, &lens, &fixed);
            #[cfg(target_arch = "x86_64")]
            assert_eq!(taps.wide.is_some(), fits, "weight {big}");
            let _ = fits;
            let line: Vec<u8> = (0..in_size * 3).map(|i| (i * 31 % 256) as u8).collect();
            let mut want = vec![0u8; 300];
            horizontal_row_with::<3>(&line, &taps, &mut want, Kernel::Baseline);
            for kernel in simd_kernels() {
                let mut got = vec![1u8; 300];
                horizontal_row_with::<3>(&line, &taps, &mut got, kernel);
                assert_eq!(got, want, "{kernel:?}, weight {big}");
            }
        }
    }
}
