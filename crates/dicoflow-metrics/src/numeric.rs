//! Python and NumPy arithmetic details that the toolkit's numbers depend on.

use super::ptb_tokenizer::is_python_whitespace;

/// Python's `str.split()` without arguments: split on runs of Unicode
/// white space (which includes U+00A0, kept inside some PTB tokens), no
/// empty pieces.
pub(crate) fn python_split(s: &str) -> Vec<&str> {
    s.split(is_python_whitespace)
        .filter(|t| !t.is_empty())
        .collect()
}

/// `numpy.sum` of a contiguous `float64` array: pairwise summation with
/// eight accumulators for blocks of up to 128 elements. The rounding differs
/// from a left-to-right sum, so means over images reproduce the toolkit's
/// last bits only this way.
pub(crate) fn numpy_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut res = 0.0;
        for &x in a {
            res += x;
        }
        res
    } else if n <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - n % 8 {
            for (j, acc) in r.iter_mut().enumerate() {
                *acc += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        while i < n {
            res += a[i];
            i += 1;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        numpy_sum(&a[..n2]) + numpy_sum(&a[n2..])
    }
}

/// `numpy.mean` of a `float64` array (NaN for an empty one, as NumPy).
pub(crate) fn numpy_mean(a: &[f64]) -> f64 {
    numpy_sum(a) / a.len() as f64
}

/// A fast, deterministic hasher for n-gram tables (the FxHash mixing step).
/// The keys are caption words, so resistance to crafted collisions is not
/// needed, and SipHash dominated the run time.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl std::hash::Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            self.add(u64::from_le_bytes(b));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b) ^ ((rest.len() as u64) << 56));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    /// The product's high bits are its well-mixed ones, and hashbrown picks
    /// buckets with the low bits: rotating brings the high bits down (as
    /// rustc-hash 2 does). Without it, a `u64` key's low bits alone chose the
    /// bucket, and CIDEr-D's n-gram keys (prefix id in the high half, last
    /// word in the low half) that share a last word all collided.
    #[inline]
    fn finish(&self) -> u64 {
        self.hash.rotate_left(26)
    }
}

/// Hash map with [`FxHasher`].
pub(crate) type FxMap<K, V> =
    std::collections::HashMap<K, V, std::hash::BuildHasherDefault<FxHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairwise_sum_differs_from_naive_but_is_close() {
        let a: Vec<f64> = (0..1000).map(|i| 1.0 / (i as f64 + 1.0)).collect();
        let naive: f64 = a.iter().sum();
        assert!((numpy_sum(&a) - naive).abs() < 1e-12);
        assert_eq!(numpy_sum(&[]), 0.0);
        assert_eq!(numpy_sum(&[1.5]), 1.5);
    }

    #[test]
    fn split_like_python() {
        assert_eq!(python_split(" a\u{a0}b  c\t"), vec!["a", "b", "c"]);
        assert!(python_split("").is_empty());
    }
}
