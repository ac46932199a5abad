//! Random CLIP weights for tests: seeded under the process-wide libtorch
//! generator lock (`super::with_tch_seed`), so that a seed names the same
//! weights whatever else the test binary runs in parallel.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use dicoflow::model::clip::{Clip, ClipConfig};
use dicoflow::model::weights;
use tch::nn::VarStore;
use tch::Device;

/// Saves a random CLIP of `cfg` (libtorch seeded with `seed` first) as
/// safetensors at `path`.
pub fn save_random_clip(path: &Path, cfg: &ClipConfig, seed: u64) {
    let vs = super::with_tch_seed(seed, || {
        let vs = VarStore::new(Device::Cpu);
        let _clip = Clip::new(vs.root(), cfg).unwrap();
        vs
    });
    weights::save_safetensors(&vs, path).unwrap();
}

/// Saves a random tiny CLIP (`ClipConfig::tiny`, seeded with `seed`) as
/// safetensors at `path`.
pub fn save_tiny_clip(path: &Path, seed: u64) {
    save_random_clip(path, &ClipConfig::tiny(), seed);
}

/// A random tiny CLIP (seed 3) saved once per test binary, in a temp dir
/// kept until the binary exits: the backbone (and evaluator) of tests that
/// need any fixed tiny CLIP.
pub fn tiny_clip_file() -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        save_tiny_clip(&d.path().join("clip.safetensors"), 3);
        d
    });
    dir.path().join("clip.safetensors")
}
