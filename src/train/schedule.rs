//! Learning-rate schedules: linear warmup, then constant, linear or cosine decay.

use serde::{Deserialize, Serialize};

/// Shape after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    /// Constant (DiCO fine-tuning: lr 1e-6 constant).
    #[default]
    Constant,
    /// Linear to zero at `total_steps`.
    Linear,
    /// Half-cosine to zero at `total_steps`.
    Cosine,
}

/// A schedule: `lr(step)` for 0-based steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Schedule {
    pub lr: f64,
    /// Share of `total_steps` spent warming up linearly from 0 (XE in the paper: 5%).
    pub warmup_fraction: f64,
    /// Optimizer steps of the whole run. 0 (the default) in a training
    /// stage: the steps that `source.epochs` epochs give, computed when the
    /// stage is built (`crate::train::stages::setup::resolve_total_steps`).
    pub total_steps: u64,
    pub decay: Decay,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            warmup_fraction: 0.0,
            total_steps: 0,
            decay: Decay::Constant,
        }
    }
}

impl Schedule {
    /// Learning rate for 0-based `step`.
    pub fn lr_at(&self, step: u64) -> f64 {
        let total = self.total_steps.max(1) as f64;
        let warmup = (self.warmup_fraction.clamp(0.0, 1.0) * total).round();
        let s = step as f64;
        if s < warmup {
            return self.lr * (s + 1.0) / warmup;
        }
        let progress = ((s - warmup) / (total - warmup).max(1.0)).clamp(0.0, 1.0);
        match self.decay {
            Decay::Constant => self.lr,
            Decay::Linear => self.lr * (1.0 - progress),
            Decay::Cosine => self.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay() {
        let s = Schedule {
            lr: 1.0,
            warmup_fraction: 0.1,
            total_steps: 100,
            decay: Decay::Cosine,
        };
        assert!((s.lr_at(0) - 0.1).abs() < 1e-12);
        assert!((s.lr_at(9) - 1.0).abs() < 1e-12);
        assert!((s.lr_at(10) - 1.0).abs() < 1e-12);
        assert!(s.lr_at(55) < 0.6 && s.lr_at(55) > 0.4);
        assert!(s.lr_at(100) < 1e-12);
        let c = Schedule {
            decay: Decay::Constant,
            ..s
        };
        assert_eq!(c.lr_at(99), 1.0);
    }
}
