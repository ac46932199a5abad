//! Reading PyTorch weight files that are not safetensors, for `dicoflow convert weights`:
//!
//! - OpenAI `clip.load` TorchScript archives, read with libtorch's TorchScript loader;
//! - `torch.save` zip checkpoints (PyTorch ≥ 1.6), read by [`crate::model::pth`] without
//!   executing their pickle: flat dicts, `OrderedDict`s and checkpoints that nest the
//!   weights under `state_dict` / `model` / `module` (PAC-S `.pth` files);
//! - older (pre-1.6, non-zip) `torch.save` files, handed to libtorch's loader, which reads
//!   flat dicts of tensors; the error otherwise names [`LEGACY_HINT`].
//!
//! Output names are the file's names with a DataParallel `module.` prefix dropped.

use std::path::Path;

use tch::Tensor;

use crate::model::pth::{self, TensorDictSource};
use crate::model::ModelError;

/// Kind of input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TorchFormat {
    /// A TorchScript archive (`torch.jit.save`, the `.pt` files `clip.load` downloads).
    TorchScript,
    /// A `torch.save`d checkpoint holding a dict of tensors (`.pth`, `.bin`).
    StateDict,
}

/// The Python one-liner that re-saves a pre-1.6 (non-zip) `torch.save` file in the zip
/// format, loading it with `weights_only=True` (no code executed), for the files libtorch's
/// loader cannot read (`OUT` a `.pth` file, then `convert weights` again).
pub const LEGACY_HINT: &str = "python -c \"import sys, torch; torch.save(torch.load(sys.argv[1], map_location='cpu', weights_only=True), sys.argv[2])\" IN.pth ZIP.pth";

/// Where converted tensors came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsSource {
    /// A TorchScript archive's named parameters.
    TorchScript,
    /// A zip checkpoint's dict of tensors.
    Checkpoint(TensorDictSource),
    /// A pre-1.6 `torch.save` file read by libtorch.
    Legacy,
}

impl std::fmt::Display for WeightsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TorchScript => f.write_str("TorchScript parameters"),
            Self::Checkpoint(src) => write!(f, "checkpoint, {src}"),
            Self::Legacy => f.write_str("pre-1.6 torch.save file"),
        }
    }
}

/// Tensors read from a PyTorch file.
#[derive(Debug)]
pub struct TorchWeights {
    /// `(name, tensor)` sorted by name, `module.` prefixes dropped; CPU tensors.
    pub tensors: Vec<(String, Tensor)>,
    /// Where they came from.
    pub source: WeightsSource,
}

/// Drops `module.` prefixes and sorts by name; two tensors ending up with one name
/// (`module.x` next to `x`) are refused.
fn strip(path: &Path, named: Vec<(String, Tensor)>) -> Result<Vec<(String, Tensor)>, ModelError> {
    let mut out: Vec<(String, Tensor)> = named
        .into_iter()
        .map(|(k, t)| (k.strip_prefix("module.").map(str::to_owned).unwrap_or(k), t))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = out.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(ModelError::BadCheckpoint {
            path: path.to_path_buf(),
            reason: format!(
                "two tensors are named `{}` once the `module.` prefix is dropped",
                w[0].0
            ),
        });
    }
    Ok(out)
}

fn exists(path: &Path) -> Result<(), ModelError> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// Named parameters of a TorchScript archive.
pub fn read_torchscript(path: &Path) -> Result<Vec<(String, Tensor)>, ModelError> {
    exists(path)?;
    let module = tch::CModule::load(path)?;
    strip(path, module.named_parameters()?)
}

/// Tensors of a `torch.save`d checkpoint (see the module docs for what is read).
///
/// Errors: those of [`pth::read_pth`] for zip checkpoints; [`ModelError::Unreadable`] with
/// [`LEGACY_HINT`] for a pre-1.6 file libtorch cannot read.
pub fn read_state_dict(path: &Path) -> Result<TorchWeights, ModelError> {
    exists(path)?;
    if pth::is_zip(path)? {
        let ckpt = pth::read_pth(path)?;
        return Ok(TorchWeights {
            tensors: strip(path, ckpt.tensors)?,
            source: WeightsSource::Checkpoint(ckpt.source),
        });
    }
    let unreadable = |reason: String| ModelError::Unreadable {
        path: path.to_path_buf(),
        reason,
        hint: LEGACY_HINT,
    };
    match Tensor::loadz_multi(path) {
        Ok(named) if !named.is_empty() => Ok(TorchWeights {
            tensors: strip(path, named)?,
            source: WeightsSource::Legacy,
        }),
        Ok(_) => Err(unreadable("no tensors found".to_owned())),
        Err(e) => Err(unreadable(
            e.to_string().lines().next().unwrap_or_default().to_owned(),
        )),
    }
}

/// Reads either format. `None` tells them apart by content: a zip archive with code
/// records is TorchScript, any other file a `torch.save` checkpoint.
pub fn read_torch_weights(
    path: &Path,
    format: Option<TorchFormat>,
) -> Result<TorchWeights, ModelError> {
    let script = || -> Result<TorchWeights, ModelError> {
        Ok(TorchWeights {
            tensors: read_torchscript(path)?,
            source: WeightsSource::TorchScript,
        })
    };
    match format {
        Some(TorchFormat::TorchScript) => script(),
        Some(TorchFormat::StateDict) => read_state_dict(path),
        None => {
            exists(path)?;
            if pth::is_zip(path)? && pth::is_torchscript(path)? {
                script()
            } else {
                read_state_dict(path)
            }
        }
    }
}
