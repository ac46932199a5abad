//! Dynamic loss scaling for float16 training, as PyTorch's `GradScaler`: the
//! loss is multiplied by `scale` before backward; gradients are divided by it
//! before clipping and the optimizer step; a step whose gradients hold inf or
//! NaN is skipped and the scale halved; after `growth_interval` clean steps in
//! a row the scale doubles.

use serde::{Deserialize, Serialize};
use tch::{Kind, TchError, Tensor};

/// Loss-scaling settings; defaults are `torch.amp.GradScaler`'s.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossScaleConfig {
    /// Scale of the first step.
    pub init_scale: f64,
    /// Factor applied after `growth_interval` clean steps.
    pub growth_factor: f64,
    /// Factor applied when a step's gradients are not finite.
    pub backoff_factor: f64,
    /// Clean steps in a row before the scale grows.
    pub growth_interval: u64,
}

impl Default for LossScaleConfig {
    fn default() -> Self {
        Self {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }
}

/// What a resumed run needs to continue scaling where it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScaleState {
    pub scale: f64,
    /// Clean steps since the scale last changed.
    pub clean_steps: u64,
}

/// The scaler: its settings and current state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossScaler {
    cfg: LossScaleConfig,
    state: LossScaleState,
}

impl LossScaler {
    pub fn new(cfg: LossScaleConfig) -> Self {
        Self {
            cfg,
            state: LossScaleState {
                scale: cfg.init_scale,
                clean_steps: 0,
            },
        }
    }

    /// The factor losses are multiplied by now.
    pub fn scale(&self) -> f64 {
        self.state.scale
    }

    pub fn state(&self) -> LossScaleState {
        self.state
    }

    /// Continue from a saved state.
    pub fn restore(&mut self, state: LossScaleState) {
        self.state = state;
    }

    /// Divide every defined gradient in `grads` by the scale, in place, and
    /// report whether any of them holds inf or NaN.
    ///
    /// Errors: [`TchError`] from libtorch (e.g. a device error).
    pub fn unscale(&self, grads: &[Tensor]) -> Result<bool, TchError> {
        let inv = 1.0 / self.state.scale;
        tch::no_grad(|| {
            let mut non_finite: Option<Tensor> = None;
            for g in grads.iter().filter(|g| g.defined()) {
                let mut g = g.shallow_clone();
                let _ = g.f_mul_scalar_(inv)?;
                let bad = g.f_isfinite()?.f_logical_not()?.f_any()?;
                non_finite = Some(match non_finite {
                    None => bad,
                    Some(acc) => acc.f_logical_or(&bad)?,
                });
            }
            match non_finite {
                Some(t) => Ok(t.f_to_kind(Kind::Int64)?.f_int64_value(&[])? != 0),
                None => Ok(false),
            }
        })
    }

    /// After a step: back off if its gradients were not finite (the caller
    /// skips that step), else count it and grow after enough clean steps.
    pub fn update(&mut self, found_non_finite: bool) {
        let s = &mut self.state;
        if found_non_finite {
            s.scale *= self.cfg.backoff_factor;
            s.clean_steps = 0;
        } else {
            s.clean_steps += 1;
            if s.clean_steps >= self.cfg.growth_interval {
                s.scale *= self.cfg.growth_factor;
                s.clean_steps = 0;
            }
        }
    }
}
