//! The horizontal pass with AVX-512 VBMI and VNNI (x86-64 CPUs that have
//! `avx512f`, `avx512bw`, `avx512vbmi` and `avx512vnni`, detected at run time):
//! 16 outputs at once, one per 32-bit lane, each band from a planar copy of
//! the row.
//!
//! Per group of 16 consecutive outputs the samples all of them read lie in
//! [`SPAN`] bytes of each band's plane (two 512-bit registers), so one byte
//! permute (`vpermi2b`) gives every lane the two samples of a pair of its
//! taps as two 16-bit values. Pillow's coefficients (up to 23 bits with the
//! sign) do not fit 16 bits, so each is split as `k = hi·2¹¹ + lo` with
//! `0 ≤ lo < 2¹¹`, and `vpdpwssd` adds both products of a pair to a lane's
//! sum, one sum for the high parts and one for the low: `Σ p·k = (Σ p·hi)·2¹¹
//! + Σ p·lo`. All of it is exact in wrapping 32-bit integers, as the baseline
//! loops' sums are, so the bytes are the same.

use std::arch::x86_64::*;

use super::{outputs_at, FixedTaps, HALF, PRECISION_BITS};

/// Outputs per group (32-bit lanes of a 512-bit vector).
pub(crate) const WIDE: usize = 16;

/// Bytes of a plane that one group's samples may span (two 512-bit registers).
pub(crate) const SPAN: usize = 128;

/// Bits of a coefficient's low part.
const LO_BITS: u32 = 11;

/// [`FixedTaps`] in the layout of [`horizontal_row`]: per group of [`WIDE`]
/// outputs, the plane offset its samples start at and, per pair of taps, the
/// byte permute that gathers each lane's two samples and the lanes' high and
/// low coefficient parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WideTaps {
    pairs: usize,
    base: Vec<usize>,
    /// `[group][pair]`: lane `l`'s bytes `4l` and `4l + 2` index its two samples in the span.
    index: Vec<[u8; 64]>,
    /// `[group][pair]`: lane `l`'s high parts of its two taps as two `i16`.
    hi: Vec<[i16; 32]>,
    /// `[group][pair]`: the low parts.
    lo: Vec<[i16; 32]>,
}

impl WideTaps {
    /// The layout for `taps` (fixed windows of `window` samples starting at
    /// `starts`, weights `coeffs`), or `None` where there is no whole group, a
    /// group's samples span more than [`SPAN`] bytes (downscales by more than
    /// about 6) or a weight's high part does not fit 16 bits; the AVX2 kernel
    /// then runs instead.
    pub(crate) fn new(window: usize, starts: &[usize], coeffs: &[i32]) -> Option<Self> {
        let pairs = window.div_ceil(2);
        let groups = starts.len() / WIDE;
        if groups == 0 {
            return None; // nothing for this kernel: the row's split would be wasted
        }
        let mut t = Self {
            pairs,
            base: Vec::with_capacity(groups),
            index: Vec::with_capacity(groups * pairs),
            hi: Vec::with_capacity(groups * pairs),
            lo: Vec::with_capacity(groups * pairs),
        };
        for g in 0..groups {
            let s = &starts[g * WIDE..(g + 1) * WIDE];
            let base = *s.iter().min()?;
            if s.iter().max()? - base + 2 * pairs > SPAN {
                return None;
            }
            t.base.push(base);
            for j in 0..pairs {
                let mut index = [0u8; 64];
                let (mut hi, mut lo) = ([0i16; 32], [0i16; 32]);
                for (l, &start) in s.iter().enumerate() {
                    for h in 0..2 {
                        let tap = 2 * j + h;
                        index[4 * l + 2 * h] = (start - base + tap) as u8;
                        let k = if tap < window {
                            coeffs[(g * WIDE + l) * window + tap]
                        } else {
                            0
                        };
                        hi[2 * l + h] = i16::try_from(k >> LO_BITS).ok()?;
                        lo[2 * l + h] = (k & ((1 << LO_BITS) - 1)) as i16;
                    }
                }
                t.index.push(index);
                t.hi.push(hi);
                t.lo.push(lo);
            }
        }
        Some(t)
    }
}

/// Whether this CPU has the AVX-512 parts [`horizontal_row`] uses.
pub(crate) fn detected() -> bool {
    std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vbmi")
        && std::is_x86_feature_detected!("avx512vnni")
}

std::thread_local! {
    /// The row's planes, reused from row to row (see [`horizontal_row`]).
    static PLANES: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The 64 bytes of `v` (bytes, or 32 `i16`) as a vector.
#[inline]
#[target_feature(enable = "avx512f")]
fn load<T: Copy, const N: usize>(v: &[T; N]) -> __m512i {
    const { assert!(std::mem::size_of::<[T; N]>() == 64) };
    #[allow(unsafe_code)]
    // SAFETY: reads the 64 bytes of `v` (unaligned loads are allowed).
    unsafe {
        _mm512_loadu_si512(v.as_ptr().cast())
    }
}

/// Writes the first `out.len()` (at most 64) bytes of `v` into `out`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn store(out: &mut [u8], v: __m512i) {
    assert!(out.len() <= 64);
    let mask = u64::MAX >> (64 - out.len());
    #[allow(unsafe_code)]
    // SAFETY: the mask writes only the first `out.len()` bytes, all inside `out`.
    unsafe {
        _mm512_mask_storeu_epi8(out.as_mut_ptr().cast(), mask, v)
    }
}

/// For band `c` of `b` interleaved bands, the `vpermi2b` indices that take
/// byte `j` of the band from byte `b·j + c` of a 64-pixel chunk: `[c][0]` from
/// the chunk's first two vectors, `[c][1]` from its last two; `mask[c]` has bit
/// `j` set where the byte is in the last two (`b·j + c ≥ 128`).
const fn deinterleave_indices(b: usize) -> ([[[u8; 64]; 2]; 4], [u64; 4]) {
    let mut index = [[[0u8; 64]; 2]; 4];
    let mut mask = [0u64; 4];
    let mut c = 0;
    while c < b {
        let mut j = 0;
        while j < 64 {
            let at = b * j + c;
            if at < 128 {
                index[c][0][j] = at as u8;
            } else {
                index[c][1][j] = (at - 128) as u8;
                mask[c] |= 1 << j;
            }
            j += 1;
        }
        c += 1;
    }
    (index, mask)
}

/// The `vpermb` indices that interleave `b` bands of 16 bytes each (band `c`
/// at bytes `16c..16c + 16`) into 16 pixels of `b` bytes.
const fn interleave_index(b: usize) -> [u8; 64] {
    let mut index = [0u8; 64];
    let mut i = 0;
    while i < 16 * b {
        index[i] = (16 * (i % b) + i / b) as u8;
        i += 1;
    }
    index
}

/// `B` interleaved bands of `line` into `B` planes of `stride` bytes each,
/// plane `c` at `planes[c * stride..]` (the bytes after a plane's `n` samples are left as they are).
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
fn deinterleave<const B: usize>(line: &[u8], n: usize, planes: &mut [u8], stride: usize) {
    if B == 1 {
        planes[..n].copy_from_slice(&line[..n]);
        return;
    }
    let chunks = n / 64;
    let (index, mask) = const { deinterleave_indices(B) };
    let mut first = [_mm512_setzero_si512(); B];
    let mut second = [_mm512_setzero_si512(); B];
    for c in 0..B {
        first[c] = load(&index[c][0]);
        second[c] = load(&index[c][1]);
    }
    for k in 0..chunks {
        let src = &line[k * 64 * B..(k + 1) * 64 * B];
        let mut v = [_mm512_setzero_si512(); 4];
        for (r, v) in v.iter_mut().enumerate().take(B) {
            *v = load::<u8, 64>(src[r * 64..(r + 1) * 64].try_into().unwrap());
        }
        for c in 0..B {
            let a = _mm512_permutex2var_epi8(v[0], first[c], v[1]);
            let b = _mm512_permutex2var_epi8(v[2], second[c], v[3]);
            let plane = &mut planes[c * stride + k * 64..c * stride + (k + 1) * 64];
            store(plane, _mm512_mask_blend_epi8(mask[c], a, b));
        }
    }
    for c in 0..B {
        for j in chunks * 64..n {
            planes[c * stride + j] = line[j * B + c];
        }
    }
}

/// The horizontal pass over one row of `B` (1 to 4) interleaved bands, as
/// [`super::horizontal_row`] (same bytes): whole groups of [`WIDE`] outputs
/// here, the others by the baseline loop ([`outputs_at`]).
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vnni")]
pub(super) fn horizontal_row<const B: usize>(
    line: &[u8],
    taps: &FixedTaps,
    wide: &WideTaps,
    out: &mut [u8],
) {
    let n = line.len() / B;
    let stride = n.div_ceil(64) * 64 + SPAN;
    // The taps' windows lie inside the row (FixedTaps); spans may pass its
    // end by less than SPAN, into the planes' padding, with zero weights.
    let interleave = load(&const { interleave_index(B) });
    let pairs_lo = 0x5555_5555_5555_5555u64;
    // Taken out and put back rather than borrowed in a closure: closures
    // do not inherit this function's target features (no inlined intrinsics).
    let mut planes = PLANES.take();
    if planes.len() < B * stride {
        planes.resize(B * stride, 0);
    }
    deinterleave::<B>(line, n, &mut planes, stride);
    for (g, &base) in wide.base.iter().enumerate() {
        // Each band's span as two vectors; per pair of taps the permute and
        // the weights are loaded once for all bands.
        let mut first = [_mm512_setzero_si512(); B];
        let mut second = [_mm512_setzero_si512(); B];
        for c in 0..B {
            let span = &planes[c * stride + base..c * stride + base + SPAN];
            first[c] = load::<u8, 64>(span[..64].try_into().unwrap());
            second[c] = load::<u8, 64>(span[64..].try_into().unwrap());
        }
        let mut sum_hi = [_mm512_setzero_si512(); B];
        let mut sum_lo = [_mm512_setzero_si512(); B];
        for j in g * wide.pairs..(g + 1) * wide.pairs {
            let (index, hi, lo) = (load(&wide.index[j]), load(&wide.hi[j]), load(&wide.lo[j]));
            for c in 0..B {
                let x = _mm512_maskz_permutex2var_epi8(pairs_lo, first[c], index, second[c]);
                sum_hi[c] = _mm512_dpwssd_epi32(sum_hi[c], x, hi);
                sum_lo[c] = _mm512_dpwssd_epi32(sum_lo[c], x, lo);
            }
        }
        let mut px = _mm512_setzero_si512();
        for c in 0..B {
            let ss = _mm512_add_epi32(
                _mm512_add_epi32(_mm512_set1_epi32(HALF), sum_lo[c]),
                _mm512_slli_epi32::<LO_BITS>(sum_hi[c]),
            );
            let v = _mm512_srai_epi32::<{ PRECISION_BITS }>(ss);
            let v = _mm512_min_epi32(
                _mm512_max_epi32(v, _mm512_setzero_si512()),
                _mm512_set1_epi32(255),
            );
            // Band c's 16 bytes into bytes 16c..16c + 16.
            let v = _mm512_cvtepi32_epi8(v);
            px = match c {
                0 => _mm512_zextsi128_si512(v),
                1 => _mm512_inserti32x4::<1>(px, v),
                2 => _mm512_inserti32x4::<2>(px, v),
                _ => _mm512_inserti32x4::<3>(px, v),
            };
        }
        if B > 1 {
            px = _mm512_permutexvar_epi8(interleave, px);
        }
        store(&mut out[g * WIDE * B..(g + 1) * WIDE * B], px);
    }
    PLANES.set(planes);
    outputs_at::<B>(line, taps, wide.base.len() * WIDE..taps.len(), out);
}
