//! AdamW over a VarStore's trainable variables, with state that can be saved
//! and restored (tch's built-in optimizers do not expose theirs), so a resumed
//! run continues bit-identically. The update is PyTorch's `torch.optim.AdamW`
//! (decoupled weight decay, bias-corrected moments).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Kind, Tensor};

use crate::train::error::TrainError;

/// AdamW settings; defaults are PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

struct Slot {
    name: String,
    param: Tensor,
    m: Tensor,
    v: Tensor,
}

/// AdamW whose moments and step count live in plain tensors.
pub struct AdamW {
    cfg: AdamWConfig,
    step: i64,
    slots: Vec<Slot>,
}

impl std::fmt::Debug for AdamW {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdamW")
            .field("cfg", &self.cfg)
            .field("step", &self.step)
            .field("params", &self.slots.len())
            .finish()
    }
}

/// Sets `requires_grad = false` on every variable of `vs` whose name
/// `frozen` accepts. Before [`AdamW::new`], which takes only the variables
/// that require grad: a frozen variable then gets no update, no weight decay
/// and no optimizer state.
pub(crate) fn freeze_where(vs: &VarStore, frozen: impl Fn(&str) -> bool) {
    for (name, var) in vs.variables() {
        if frozen(&name) {
            let _ = var.set_requires_grad(false);
        }
    }
}

impl AdamW {
    /// An optimizer for every trainable variable of `vs`, in name order.
    pub fn new(vs: &VarStore, cfg: AdamWConfig) -> Self {
        let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
        let slots = vars
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(name, param)| Slot {
                m: Tensor::zeros_like(&param),
                v: Tensor::zeros_like(&param),
                name,
                param,
            })
            .collect();
        Self {
            cfg,
            step: 0,
            slots,
        }
    }

    /// Steps taken so far.
    pub fn step_count(&self) -> i64 {
        self.step
    }

    /// Current settings.
    pub fn config(&self) -> &AdamWConfig {
        &self.cfg
    }

    /// Set the learning rate (schedules call this before each step).
    pub fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    /// Clear all gradients.
    pub fn zero_grad(&mut self) -> Result<(), TrainError> {
        for s in &mut self.slots {
            let mut g = s.param.grad();
            if g.defined() {
                let _ = g.f_zero_()?;
            }
        }
        Ok(())
    }

    /// The gradients of the optimised parameters (shallow handles; undefined
    /// for a parameter no backward has reached).
    pub fn grads(&self) -> Vec<Tensor> {
        self.slots.iter().map(|s| s.param.grad()).collect()
    }

    /// Multiply every defined gradient by `factor` (accumulation's 1/N).
    pub fn scale_grads(&mut self, factor: f64) -> Result<(), TrainError> {
        tch::no_grad(|| {
            for s in &self.slots {
                let mut g = s.param.grad();
                if g.defined() {
                    let _ = g.f_mul_scalar_(factor)?;
                }
            }
            Ok(())
        })
    }

    /// Give every optimised parameter a gradient (zeros where no backward
    /// reached it), so that replicas exchange gradients of the same layout
    /// and every replica updates the same parameters.
    pub fn define_grads(&mut self) -> Result<(), TrainError> {
        let missing: Vec<&Tensor> = self
            .slots
            .iter()
            .map(|s| &s.param)
            .filter(|p| !p.grad().defined())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        // d(0 · Σ p)/dp = 0: a zero gradient of the parameter's shape, kind
        // and device, made by autograd itself.
        let mut zero = Tensor::f_zeros([], (Kind::Float, missing[0].device()))?;
        for p in missing {
            zero = zero.f_add(&p.f_sum(Kind::Float)?.f_mul_scalar(0.0)?)?;
        }
        zero.f_backward()?;
        Ok(())
    }

    /// Every gradient in slot order, flattened into one f32 vector (an
    /// undefined gradient is zeros), on the CPU. Length: the parameter count.
    pub fn flat_grads(&self) -> Result<Vec<f32>, TrainError> {
        let mut out = Vec::with_capacity(self.num_params());
        for s in &self.slots {
            let g = s.param.grad();
            if !g.defined() {
                out.resize(out.len() + s.param.numel(), 0.0);
                continue;
            }
            let flat = g
                .f_flatten(0, -1)?
                .f_to_kind(Kind::Float)?
                .f_to_device(tch::Device::Cpu)?;
            out.extend(Vec::<f32>::try_from(&flat)?);
        }
        Ok(out)
    }

    /// Overwrite every gradient with `flat` (the layout of
    /// [`AdamW::flat_grads`]); every gradient must be defined
    /// ([`AdamW::define_grads`]). Errors when the length is not the
    /// parameter count.
    pub fn set_flat_grads(&mut self, flat: &[f32]) -> Result<(), TrainError> {
        if flat.len() != self.num_params() {
            return Err(TrainError::Shape {
                what: "flat gradient",
                detail: format!("{} values for {} parameters", flat.len(), self.num_params()),
            });
        }
        tch::no_grad(|| -> Result<(), TrainError> {
            let mut offset = 0;
            for s in &self.slots {
                let n = s.param.numel();
                let mut g = s.param.grad();
                let src = Tensor::f_from_slice(&flat[offset..offset + n])?
                    .f_view(g.size().as_slice())?
                    .f_to_device(g.device())?
                    .f_to_kind(g.kind())?;
                g.f_copy_(&src)?;
                offset += n;
            }
            Ok(())
        })
    }

    /// Number of optimised scalars (the length of [`AdamW::flat_grads`]).
    pub fn num_params(&self) -> usize {
        self.slots.iter().map(|s| s.param.numel()).sum()
    }

    /// Global L2 norm of all gradients, before clipping; scales them down to
    /// `max_norm` when larger (as `torch.nn.utils.clip_grad_norm_`).
    pub fn clip_grad_norm(&mut self, max_norm: Option<f64>) -> Result<f64, TrainError> {
        tch::no_grad(|| {
            let mut total = 0f64;
            for s in &self.slots {
                let g = s.param.grad();
                if g.defined() {
                    total += g
                        .f_to_kind(Kind::Double)?
                        .f_square()?
                        .f_sum(Kind::Double)?
                        .f_double_value(&[])?;
                }
            }
            let norm = total.sqrt();
            if let Some(max) = max_norm {
                let coef = max / (norm + 1e-6);
                if coef < 1.0 {
                    for s in &self.slots {
                        let mut g = s.param.grad();
                        if g.defined() {
                            let _ = g.f_mul_scalar_(coef)?;
                        }
                    }
                }
            }
            Ok(norm)
        })
    }

    /// One AdamW update of every parameter that has a gradient.
    pub fn step(&mut self) -> Result<(), TrainError> {
        self.step += 1;
        let c = self.cfg;
        let t = self.step as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        tch::no_grad(|| {
            for s in &mut self.slots {
                let g = s.param.grad();
                if !g.defined() {
                    continue;
                }
                if c.weight_decay != 0.0 {
                    let _ = s.param.f_mul_scalar_(1.0 - c.lr * c.weight_decay)?;
                }
                let _ = s.m.f_mul_scalar_(c.beta1)?;
                let _ = s.m.f_add_(&g.f_mul_scalar(1.0 - c.beta1)?)?;
                let _ = s.v.f_mul_scalar_(c.beta2)?;
                let _ = s.v.f_add_(&g.f_square()?.f_mul_scalar(1.0 - c.beta2)?)?;
                let denom =
                    s.v.f_sqrt()?
                        .f_div_scalar(bc2.sqrt())?
                        .f_add_scalar(c.eps)?;
                let update = s.m.f_div(&denom)?.f_mul_scalar(c.lr / bc1)?;
                let _ = s.param.f_sub_(&update)?;
            }
            Ok(())
        })
    }

    /// Save moments and step count to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        let mut named: Vec<(String, Tensor)> = Vec::with_capacity(2 * self.slots.len() + 1);
        named.push(("step".into(), Tensor::f_from_slice(&[self.step])?));
        for s in &self.slots {
            named.push((format!("m.{}", s.name), s.m.shallow_clone()));
            named.push((format!("v.{}", s.name), s.v.shallow_clone()));
        }
        Tensor::write_safetensors(&named, path)?;
        Ok(())
    }

    /// Restore state saved by [`AdamW::save`] for the same set of parameters.
    pub fn load(&mut self, path: &Path) -> Result<(), TrainError> {
        let bad = |what: String| TrainError::State {
            path: path.to_path_buf(),
            what,
        };
        let tensors: BTreeMap<String, Tensor> =
            Tensor::read_safetensors(path)?.into_iter().collect();
        let step = tensors
            .get("step")
            .ok_or_else(|| bad("no `step` entry".into()))?
            .f_int64_value(&[0])
            .map_err(|e| bad(format!("`step`: {e}")))?;
        let expected = 1 + 2 * self.slots.len();
        if tensors.len() != expected {
            return Err(bad(format!(
                "holds {} tensors, this model's optimizer has {expected}: the checkpoint was \
                 written with other trained variables (another model config, or another \
                 `lock_image`); resume with the settings it was written with",
                tensors.len()
            )));
        }
        tch::no_grad(|| -> Result<(), TrainError> {
            for s in &mut self.slots {
                for (prefix, dst) in [("m", &mut s.m), ("v", &mut s.v)] {
                    let key = format!("{prefix}.{}", s.name);
                    let src = tensors
                        .get(&key)
                        .ok_or_else(|| bad(format!("missing `{key}`")))?;
                    if src.size() != dst.size() {
                        return Err(bad(format!(
                            "`{key}` has shape {:?}, the parameter has {:?}",
                            src.size(),
                            dst.size()
                        )));
                    }
                    dst.f_copy_(src)?;
                }
            }
            Ok(())
        })?;
        self.step = step;
        Ok(())
    }
}
