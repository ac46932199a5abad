//! Numeric precision of the forward passes. Master weights, gradients and the
//! AdamW moments always stay float32; `fp16` runs the forward passes under
//! CUDA autocast, with dynamic loss scaling ([`crate::train::LossScaler`]) so
//! that small gradients do not underflow.

use serde::{Deserialize, Serialize};
use tch::Device;

use crate::train::error::TrainError;

/// `precision = "fp32" | "fp16" | "bf16"` in a trainer's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in float32 (any device).
    #[default]
    Fp32,
    /// Forward passes under CUDA autocast (float16), dynamic loss scaling.
    Fp16,
    /// bfloat16 autocast: refused, see [`Precision::check_device`].
    Bf16,
}

impl Precision {
    /// Whether this precision can run on `device`; a clear error otherwise.
    ///
    /// tch 0.26 switches CUDA autocast on and off but cannot choose its
    /// dtype, which stays libtorch's default, float16; so `bf16` is refused
    /// rather than silently run as float16.
    pub fn check_device(self, device: Device) -> Result<(), TrainError> {
        match self {
            Precision::Fp32 => Ok(()),
            Precision::Fp16 if device.is_cuda() => Ok(()),
            Precision::Fp16 => Err(TrainError::Setting {
                name: "precision",
                value: "\"fp16\"".into(),
                reason: "fp16 autocast needs CUDA; use precision = \"fp32\" on CPU",
            }),
            Precision::Bf16 => Err(TrainError::Setting {
                name: "precision",
                value: "\"bf16\"".into(),
                reason: "bf16 autocast is not available through the libtorch bindings \
                         (their autocast is float16 only); use precision = \"fp16\" on CUDA \
                         or \"fp32\"",
            }),
        }
    }

    /// Whether gradients need dynamic loss scaling.
    pub fn scales_loss(self) -> bool {
        self == Precision::Fp16
    }

    /// Run `f` (forward passes) under autocast when this precision asks for it.
    /// Autocast is thread-local, like the models that use it.
    pub fn autocast<T>(self, f: impl FnOnce() -> T) -> T {
        match self {
            Precision::Fp32 => f(),
            Precision::Fp16 | Precision::Bf16 => tch::autocast(true, f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduced_precision_is_refused_on_cpu_with_what_to_do() {
        assert!(Precision::Fp32.check_device(Device::Cpu).is_ok());
        let fp16 = Precision::Fp16.check_device(Device::Cpu).unwrap_err();
        assert!(fp16.to_string().contains("needs CUDA"), "{fp16}");
        assert!(fp16.to_string().contains("precision = \"fp32\""), "{fp16}");
        let bf16 = Precision::Bf16.check_device(Device::Cpu).unwrap_err();
        assert!(bf16.to_string().contains("\"fp16\""), "{bf16}");
    }

    #[test]
    fn parses_the_documented_names() {
        #[derive(Deserialize)]
        struct S {
            precision: Precision,
        }
        for (text, want) in [
            ("fp32", Precision::Fp32),
            ("fp16", Precision::Fp16),
            ("bf16", Precision::Bf16),
        ] {
            let s: S = toml::from_str(&format!("precision = \"{text}\"")).unwrap();
            assert_eq!(s.precision, want);
        }
    }
}
