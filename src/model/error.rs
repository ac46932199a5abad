//! Errors of model construction, weight loading and forward passes.

use std::path::PathBuf;

/// Errors of the model code.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A configuration value is unusable (zero sizes, width not divisible by heads, ...).
    #[error("invalid config: {field} = {value}: {reason}")]
    InvalidConfig {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    /// An input tensor has the wrong shape or type for the model.
    #[error("bad input to {what}: expected {expected}, got shape {found:?} ({kind})")]
    BadInput {
        what: &'static str,
        expected: String,
        found: Vec<i64>,
        kind: String,
    },
    /// Keys the model needs are absent from the weights file.
    #[error("weights file {path}: {} missing key(s): {}", keys.len(), list(keys))]
    MissingKeys { path: PathBuf, keys: Vec<String> },
    /// Keys of the weights file that the model does not have.
    #[error("weights file {path}: {} unexpected key(s): {}", keys.len(), list(keys))]
    UnexpectedKeys { path: PathBuf, keys: Vec<String> },
    /// A tensor of the weights file has another shape than the model's parameter.
    #[error(
        "weights file {path}: key {key}: model expects shape {expected:?}, file has {found:?}"
    )]
    ShapeMismatch {
        path: PathBuf,
        key: String,
        expected: Vec<i64>,
        found: Vec<i64>,
    },
    /// A weights file in Hugging Face naming is inconsistent (e.g. `q_proj` without `k_proj`).
    #[error("weights file {path}: key {key}: {reason}")]
    BadKey {
        path: PathBuf,
        key: String,
        reason: &'static str,
    },
    /// Reading or writing a weights or config file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A config file is not valid JSON for the config type.
    #[error("{path}: {source}")]
    ConfigJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A weights file that cannot be read as safetensors (`reason`: libtorch's
    /// message).
    #[error("{path}: cannot read as a safetensors file: {reason}")]
    NotSafetensors { path: PathBuf, reason: String },
    /// A PyTorch weights file libtorch cannot read; `hint` says how to convert it.
    #[error("{path}: cannot read as PyTorch weights ({reason}); convert it with: {hint}")]
    Unreadable {
        path: PathBuf,
        reason: String,
        hint: &'static str,
    },
    /// A PyTorch zip checkpoint that cannot be read as one (malformed pickle or archive,
    /// storage out of bounds, unsupported element type or byte order); `reason` says which.
    #[error("{path}: cannot read as a PyTorch checkpoint: {reason}")]
    BadCheckpoint { path: PathBuf, reason: String },
    /// A PyTorch checkpoint without a dict of tensors where the weights are looked for;
    /// `found` lists what the file holds.
    #[error(
        "{path}: no dict of tensors found at the top level or under `state_dict`, `model` \
         or `module` ({found}); save the model's state_dict() with torch.save"
    )]
    NoTensorDict { path: PathBuf, found: String },
    /// A PyTorch checkpoint with a dict of tensors under several of the keys searched.
    #[error(
        "{path}: dicts of tensors under several keys ({}); load the checkpoint in Python \
         and torch.save the one to convert",
        keys.join(", ")
    )]
    AmbiguousTensorDict { path: PathBuf, keys: Vec<String> },
    /// libtorch reported an error (unreadable safetensors, device or dtype problems, ...).
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Reads a JSON config file of type `T` (errors name the file); the caller validates.
pub(crate) fn read_json_config<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
) -> Result<T, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| ModelError::ConfigJson {
        path: path.to_path_buf(),
        source,
    })
}

fn list(keys: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut s = keys
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > SHOWN {
        s.push_str(&format!(", ... ({} more)", keys.len() - SHOWN));
    }
    s
}

/// `Ok` if the config field `field` is `v > 0`, else [`ModelError::InvalidConfig`].
pub(crate) fn positive(field: &'static str, v: i64) -> Result<(), ModelError> {
    if v > 0 {
        Ok(())
    } else {
        Err(ModelError::InvalidConfig {
            field,
            value: v.to_string(),
            reason: "must be positive",
        })
    }
}

/// `Ok` if the config field `field` is `v >= 0`, else [`ModelError::InvalidConfig`].
pub(crate) fn non_negative(field: &'static str, v: i64) -> Result<(), ModelError> {
    if v >= 0 {
        Ok(())
    } else {
        Err(ModelError::InvalidConfig {
            field,
            value: v.to_string(),
            reason: "must not be negative",
        })
    }
}
