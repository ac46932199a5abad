//! A device batch as tensors: the marshalling every stage shares.

use tch::Tensor;

use crate::flow::{DeviceBatch, Sample, StageFailure};

/// A device batch as tensors: pixels `[n, 3, s, s]`, keys, reference captions.
type BatchTensors = (Tensor, Vec<String>, Vec<Vec<String>>);

/// The batch's preprocessed pixels, keys and captions.
pub(crate) fn batch_tensors(batch: &DeviceBatch) -> Result<BatchTensors, StageFailure> {
    sample_tensors(&batch.samples.iter().collect::<Vec<_>>())
}

/// Pixels, keys and captions of some samples of a batch.
pub(crate) fn sample_tensors(samples: &[&Sample]) -> Result<BatchTensors, StageFailure> {
    let n = samples.len();
    let size = samples.first().map_or(0, |s| s.size) as i64;
    let mut flat = Vec::with_capacity(n * (3 * size * size) as usize);
    for s in samples {
        if s.pixels.len() as i64 != 3 * size * size {
            return Err(StageFailure::new("samples not preprocessed to one size"));
        }
        flat.extend_from_slice(&s.pixels);
    }
    let pixels = Tensor::f_from_slice(&flat)
        .and_then(|t| t.f_view([n as i64, 3, size, size]))
        .map_err(|e| StageFailure::new("batch tensors not made").with_detail(e))?;
    let keys = samples.iter().map(|s| s.key.clone()).collect();
    let caps = samples.iter().map(|s| s.captions.clone()).collect();
    Ok((pixels, keys, caps))
}
