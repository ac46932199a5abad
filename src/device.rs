//! The device a setting names: `cpu`, `cuda`, `cuda:K` or `auto`, parsed once (serde for
//! pipeline files, `FromStr` for clap) and resolved to a [`tch::Device`] where the models
//! are built.
//!
//! Why one type: a user who asks for the GPU must get the GPU or an error, never a silent
//! run on the CPU. Parsing and resolving are separate steps because a pipeline file is
//! checked on one machine and run on another, and because the device threads build their
//! models where the check must happen: [`DeviceName::resolve`] is the only way from a
//! setting to a [`tch::Device`], and it checks that the device exists.
//!
//! | setting | resolves to |
//! |---|---|
//! | `cpu` | the CPU |
//! | `cuda` | CUDA device 0; an error when no CUDA device is visible |
//! | `cuda:K` | CUDA device K; an error when fewer than K + 1 are visible |
//! | `auto` | CUDA device 0 when one is visible, else the CPU (logged) |

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A device named in settings. `cuda` is `Cuda(0)`; the default is the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceName {
    /// The CPU.
    #[default]
    Cpu,
    /// CUDA device K (`cuda` is K = 0).
    Cuda(usize),
    /// CUDA device 0 when one is visible, else the CPU.
    Auto,
}

/// Why a device setting cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// The text is no device name.
    #[error("unknown device `{given}`: use cpu, cuda, cuda:K (K a GPU index) or auto")]
    Unknown { given: String },
    /// CUDA was asked for and libtorch sees no CUDA device.
    #[error(
        "device `{asked}` asked for, but no CUDA device is visible; use `cpu`, or `auto` to \
         take the GPU when there is one"
    )]
    NoCuda { asked: DeviceName },
    /// `cuda:K` with K at least the number of visible devices.
    #[error(
        "device `cuda:{index}` asked for, but {count} CUDA device(s) are visible \
         (cuda:0 to cuda:{last})",
        last = count - 1
    )]
    NoSuchCuda { index: usize, count: usize },
}

impl DeviceName {
    /// The [`tch::Device`] this setting means on this machine.
    ///
    /// Errors: [`DeviceError::NoCuda`] for `cuda` / `cuda:K` without any visible CUDA
    /// device, [`DeviceError::NoSuchCuda`] for `cuda:K` with K ≥ the visible count.
    pub fn resolve(self) -> Result<tch::Device, DeviceError> {
        self.resolve_with(visible_cuda_devices())
    }

    /// [`Self::resolve`] on a machine with `count` visible CUDA devices.
    pub fn resolve_with(self, count: usize) -> Result<tch::Device, DeviceError> {
        match self {
            Self::Cpu => Ok(tch::Device::Cpu),
            Self::Auto if count == 0 => {
                tracing::info!("device `auto`: no CUDA device is visible, running on the CPU");
                Ok(tch::Device::Cpu)
            }
            Self::Auto => Ok(tch::Device::Cuda(0)),
            Self::Cuda(_) if count == 0 => Err(DeviceError::NoCuda { asked: self }),
            Self::Cuda(index) if index >= count => Err(DeviceError::NoSuchCuda { index, count }),
            Self::Cuda(index) => Ok(tch::Device::Cuda(index)),
        }
    }

    /// The label of replica `replica` of `replicas` in thread names and metrics: the
    /// name itself for one replica; `cpu:R`, `auto:R` or `cuda:(K + R)` for several.
    pub fn replica_label(self, replica: usize, replicas: usize) -> String {
        if replicas <= 1 {
            return self.to_string();
        }
        match self {
            Self::Cpu => format!("cpu:{replica}"),
            Self::Auto => format!("auto:{replica}"),
            Self::Cuda(k) => format!("cuda:{}", k + replica),
        }
    }
}

/// CUDA devices libtorch can use in this process.
pub fn visible_cuda_devices() -> usize {
    usize::try_from(tch::Cuda::device_count()).unwrap_or(0)
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(k) => write!(f, "cuda:{k}"),
            Self::Auto => f.write_str("auto"),
        }
    }
}

impl FromStr for DeviceName {
    type Err = DeviceError;

    /// `cpu`, `cuda`, `cuda:K` (K a decimal index) or `auto`; nothing else (no spaces, no
    /// upper case, no `gpu`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unknown = || DeviceError::Unknown {
            given: s.to_owned(),
        };
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            "auto" => Ok(Self::Auto),
            other => {
                let index = other.strip_prefix("cuda:").ok_or_else(unknown)?;
                if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(unknown());
                }
                index.parse().map(Self::Cuda).map_err(|_| unknown())
            }
        }
    }
}

impl TryFrom<String> for DeviceName {
    type Error = DeviceError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<DeviceName> for String {
    fn from(d: DeviceName) -> Self {
        d.to_string()
    }
}
