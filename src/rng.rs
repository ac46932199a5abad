//! A small, fully specified PRNG whose whole state is one `u64`.
//!
//! Data order, shuffles and synthetic data must be reproducible across crate
//! upgrades and be checkpointable (the state is saved in cursors), so dicoflow
//! does not depend on an external RNG's stream stability.

use serde::{Deserialize, Serialize};

/// SplitMix64 (Steele, Lea, Flood 2014): passes BigCrush, one `u64` of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator for a named sub-stream, e.g. `Rng::derive(seed, &[epoch, worker])`.
    /// Different paths give independent-looking streams.
    pub fn derive(seed: u64, path: &[u64]) -> Self {
        let mut rng = Rng::new(seed ^ 0x6a09_e667_f3bc_c909);
        for &p in path {
            let mixed = rng.next_u64() ^ p.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            rng = Rng::new(mixed);
        }
        rng
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform integer in `0..n` (Lemire's multiply-shift; `n` must be > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform index into a slice of length `n` (> 0).
    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// Uniform float in `[0, 1)` with 53 bits of precision.
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform float in `[lo, hi)`.
    pub fn range_f64(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// A uniformly chosen element of a non-empty slice.
    pub fn choose<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }

    /// Fisher–Yates shuffle in place.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.index(i + 1);
            items.swap(i, j);
        }
    }
}

/// Run `build` while holding the lock on libtorch's global generator.
///
/// Model constructors ([`crate::model::captioner::Captioner::new`], the CLIP
/// towers) draw their random initial values from that one process-wide
/// generator, also when the weights are loaded from a file right after. Every
/// constructor takes this lock, and [`with_torch_seed`] holds it from the
/// seeding to the end of the initialisation, so no other thread draws in
/// between: a seeded model gets the same weights whatever is built at the same
/// time on other threads (replicas build their models at once). Reentrant on
/// one thread, so a constructor can call another.
pub fn with_torch_rng<T>(build: impl FnOnce() -> T) -> T {
    static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    thread_local! {
        static HOLDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if HOLDING.with(|h| h.get()) {
        return build();
    }
    /// Clears the flag before the lock is released, also on a panic.
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            HOLDING.with(|h| h.set(false));
        }
    }
    let _held = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    HOLDING.with(|h| h.set(true));
    let _release = Release;
    build()
}

/// Run `init` right after seeding libtorch's global generator with `seed`,
/// holding its lock throughout ([`with_torch_rng`]): the initial weights are
/// a function of `seed` alone.
pub fn with_torch_seed<T>(seed: u64, init: impl FnOnce() -> T) -> T {
    with_torch_rng(|| {
        tch::manual_seed(seed as i64);
        init()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_derive_separates_streams() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        let mut c = Rng::derive(7, &[0]);
        let mut d = Rng::derive(7, &[1]);
        assert_ne!(c.next_u64(), d.next_u64());
    }

    #[test]
    fn below_is_in_range_and_roughly_uniform() {
        let mut rng = Rng::new(1);
        let mut counts = [0usize; 5];
        for _ in 0..50_000 {
            counts[rng.index(5)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut rng = Rng::new(3);
        let mut v: Vec<u32> = (0..100).collect();
        rng.shuffle(&mut v);
        assert_ne!(v, (0..100).collect::<Vec<_>>());
        v.sort();
        assert_eq!(v, (0..100).collect::<Vec<_>>());
    }
}

#[cfg(test)]
mod torch_rng_tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use tch::{nn, Device};

    use super::with_torch_seed;
    use crate::model::captioner::{Backbone, Captioner, CaptionerConfig};
    use crate::model::clip::ClipConfig;

    fn seeded_captioner() -> Vec<tch::Tensor> {
        with_torch_seed(7, || {
            let vs = nn::VarStore::new(Device::Cpu);
            let _model = Captioner::new(vs.root(), &CaptionerConfig::tiny()).unwrap();
            let mut vars: Vec<_> = vs.variables().into_iter().collect();
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            vars.into_iter().map(|(_, t)| t.detach().copy()).collect()
        })
    }

    /// Replicas build their models at once on their own threads: a model
    /// built without a seed (its weights loaded right after) on one thread
    /// must not draw from libtorch's generator in the middle of a seeded
    /// initialisation on another, or two replicas start from different
    /// weights depending on timing.
    #[test]
    fn seeded_inits_do_not_depend_on_models_built_on_other_threads() {
        let expected = seeded_captioner();
        let stop = Arc::new(AtomicBool::new(false));
        let other = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut built = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    Backbone::new(&ClipConfig::tiny_test(), Device::Cpu).unwrap();
                    built += 1;
                }
                built
            })
        };
        let mut differing = 0;
        for _ in 0..40 {
            let got = seeded_captioner();
            if got.iter().zip(&expected).any(|(a, b)| !a.equal(b)) {
                differing += 1;
            }
        }
        stop.store(true, Ordering::SeqCst);
        let built = other.join().unwrap();
        assert!(built > 0, "the other thread built no model");
        assert_eq!(differing, 0, "{differing} of 40 seeded inits differed");
    }
}
