//! Reading PyTorch weight files that are not safetensors, for `dicoflow convert weights`:
//! OpenAI `clip.load` TorchScript archives (read with libtorch's TorchScript loader) and
//! `torch.save`d state dicts (read with libtorch's zip/pickle parameter loader, which
//! accepts a flat `{name: tensor}` dict). Output names are the OpenAI state-dict names;
//! a `module.` prefix (DataParallel) is dropped.

use std::path::Path;

use tch::Tensor;

use crate::model::ModelError;

/// Kind of input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TorchFormat {
    /// A TorchScript archive (`torch.jit.save`, the `.pt` files `clip.load` downloads).
    TorchScript,
    /// A `torch.save`d dict of tensors (`.pth`, `.bin`).
    StateDict,
}

/// The Python one-liner that turns a pickled checkpoint with a nested `state_dict` into a
/// flat dict libtorch can read (`OUT` a `.pth` file, then `convert weights` again).
pub const FLATTEN_HINT: &str = "python -c \"import sys, torch; c = torch.load(sys.argv[1], map_location='cpu', weights_only=False); sd = c.get('state_dict', c) if isinstance(c, dict) else c.state_dict(); torch.save({k.removeprefix('module.'): v.float().contiguous() for k, v in sd.items() if torch.is_tensor(v)}, sys.argv[2])\" IN.pth FLAT.pth";

fn strip(named: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    let mut out: Vec<(String, Tensor)> = named
        .into_iter()
        .map(|(k, t)| (k.strip_prefix("module.").map(str::to_owned).unwrap_or(k), t))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Named parameters of a TorchScript archive.
pub fn read_torchscript(path: &Path) -> Result<Vec<(String, Tensor)>, ModelError> {
    std::fs::metadata(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let module = tch::CModule::load(path)?;
    Ok(strip(module.named_parameters()?))
}

/// Tensors of a pickled flat state dict. Nested checkpoints (PAC-S `.pth` files keep the
/// weights under `state_dict`) cannot be read by libtorch's loader: the error then names
/// [`FLATTEN_HINT`].
pub fn read_state_dict(path: &Path) -> Result<Vec<(String, Tensor)>, ModelError> {
    std::fs::metadata(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    match Tensor::loadz_multi(path) {
        Ok(named) if !named.is_empty() => Ok(strip(named)),
        Ok(_) => Err(ModelError::Unreadable {
            path: path.to_path_buf(),
            reason: "no tensors found".to_owned(),
            hint: FLATTEN_HINT,
        }),
        Err(e) => Err(ModelError::Unreadable {
            path: path.to_path_buf(),
            reason: e.to_string().lines().next().unwrap_or_default().to_owned(),
            hint: FLATTEN_HINT,
        }),
    }
}

/// Reads either format; `None` tries TorchScript first, then a state dict.
pub fn read_torch_weights(
    path: &Path,
    format: Option<TorchFormat>,
) -> Result<Vec<(String, Tensor)>, ModelError> {
    match format {
        Some(TorchFormat::TorchScript) => read_torchscript(path),
        Some(TorchFormat::StateDict) => read_state_dict(path),
        None => read_torchscript(path).or_else(|_| read_state_dict(path)),
    }
}
