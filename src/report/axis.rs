//! A linear chart axis: the data range widened to round tick values
//! (1, 2 or 5 × 10^k apart), shared by the SVG and PNG renderers.

use super::NamedSeries;

/// Fraction of the value range kept free below and above a chart's lines.
pub const VALUE_MARGIN: f64 = 0.02;

/// The (step, value) axes of a chart of `series`: steps end to end, values
/// with [`VALUE_MARGIN`].
pub fn chart_axes(series: &[NamedSeries], target_ticks: usize) -> (Axis, Axis) {
    let points = || series.iter().flat_map(|(_, p)| p.iter());
    (
        Axis::fit(points().map(|p| p.0), target_ticks, 0.0),
        Axis::fit(points().map(|p| p.1), target_ticks, VALUE_MARGIN),
    )
}

/// Fraction of each range kept free around the points of a scatter chart,
/// so that a marker at an extreme is not cut by the frame.
pub const SCATTER_MARGIN: f64 = 0.08;

/// The (x, y) axes of a scatter chart of `series`: both with
/// [`SCATTER_MARGIN`].
pub fn scatter_axes(series: &[NamedSeries], target_ticks: usize) -> (Axis, Axis) {
    let points = || series.iter().flat_map(|(_, p)| p.iter());
    (
        Axis::fit(points().map(|p| p.0), target_ticks, SCATTER_MARGIN),
        Axis::fit(points().map(|p| p.1), target_ticks, SCATTER_MARGIN),
    )
}

/// A linear axis from `lo` to `hi` with ticks at round values.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// Value at the start of the axis (a tick).
    pub lo: f64,
    /// Value at the end of the axis (a tick).
    pub hi: f64,
    /// Distance between ticks.
    pub step: f64,
}

impl Axis {
    /// The axis covering every finite value with about `target_ticks` intervals,
    /// and at least `margin` (a fraction of the data range) beyond the extremes,
    /// so that a line at its extreme is not drawn on the frame. No values gives
    /// 0..1; a constant gives a band of ±10% around it.
    pub fn fit(values: impl IntoIterator<Item = f64>, target_ticks: usize, margin: f64) -> Axis {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.into_iter().filter(|v| v.is_finite()) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if lo > hi {
            (lo, hi) = (0.0, 1.0);
        }
        if hi - lo <= 1e-12 * lo.abs().max(1.0) {
            let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
            (lo, hi) = (lo - pad, hi + pad);
        }
        let pad = (hi - lo) * margin;
        (lo, hi) = (lo - pad, hi + pad);
        let raw = (hi - lo) / target_ticks.max(1) as f64;
        let magnitude = 10f64.powf(raw.log10().floor());
        let mantissa = match raw / magnitude {
            m if m <= 1.0 => 1.0,
            m if m <= 2.0 => 2.0,
            m if m <= 5.0 => 5.0,
            _ => 10.0,
        };
        let step = mantissa * magnitude;
        // The tolerance keeps float noise (4.0000001 steps) from adding a tick.
        Axis {
            lo: (lo / step + 1e-9).floor() * step,
            hi: (hi / step - 1e-9).ceil() * step,
            step,
        }
    }

    /// The tick values from `lo` to `hi`.
    pub fn ticks(&self) -> Vec<f64> {
        let first = (self.lo / self.step).round() as i64;
        let last = (self.hi / self.step).round() as i64;
        (first..=last).map(|k| k as f64 * self.step).collect()
    }

    /// Where `v` lies along the axis: 0 at `lo`, 1 at `hi`.
    pub fn fraction(&self, v: f64) -> f64 {
        (v - self.lo) / (self.hi - self.lo)
    }

    /// A tick label with as many decimals as the step needs.
    pub fn label(&self, v: f64) -> String {
        let v = if v.abs() < self.step * 1e-6 { 0.0 } else { v };
        let largest = self.lo.abs().max(self.hi.abs());
        if largest >= 1e6 || self.step < 1e-4 {
            return format!("{v:.2e}");
        }
        let decimals = (-(self.step.log10() + 1e-9).floor()).max(0.0) as usize;
        format!("{v:.decimals$}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_of_a_training_run_get_round_ticks() {
        let a = Axis::fit((0..250).map(f64::from), 5, 0.0);
        assert_eq!((a.lo, a.hi, a.step), (0.0, 250.0, 50.0));
        assert_eq!(a.ticks(), vec![0.0, 50.0, 100.0, 150.0, 200.0, 250.0]);
        assert_eq!(a.label(150.0), "150");
    }

    #[test]
    fn small_ranges_get_decimal_ticks_that_cover_the_data() {
        // Rewards between 1.549 and 1.612: range 0.063, raw step 0.0126 → 0.02.
        let a = Axis::fit([1.549, 1.612, 1.58], 5, 0.02);
        assert!((a.step - 0.02).abs() < 1e-12, "{a:?}");
        assert!(
            (a.lo - 1.54).abs() < 1e-9 && (a.hi - 1.62).abs() < 1e-9,
            "{a:?}"
        );
        assert_eq!(a.ticks().len(), 5);
        let labels: Vec<String> = a.ticks().iter().map(|&t| a.label(t)).collect();
        assert_eq!(labels, ["1.54", "1.56", "1.58", "1.60", "1.62"]);
        assert!(a.fraction(1.549) > 0.0 && a.fraction(1.612) < 1.0);
    }

    #[test]
    fn a_margin_keeps_extremes_off_the_ends() {
        // A share that reaches 1.0 exactly: without a margin 1.0 is the end.
        assert_eq!(Axis::fit([0.95, 1.0], 5, 0.0).hi, 1.0);
        let a = Axis::fit([0.95, 1.0], 5, 0.02);
        assert!(a.hi > 1.0 && a.lo < 0.95, "{a:?}");
        assert!(a.hi <= 1.02 + 1e-9, "{a:?}");
    }

    #[test]
    fn degenerate_inputs_still_give_a_usable_axis() {
        let empty = Axis::fit(std::iter::empty(), 5, 0.0);
        assert!(empty.lo <= 0.0 && empty.hi >= 1.0);
        // DiCO's loss while the policy still equals the reference.
        let ln2 = std::f64::consts::LN_2;
        let constant = Axis::fit([ln2; 30], 5, 0.0);
        assert!(constant.lo < ln2 && constant.hi > ln2, "{constant:?}");
        let zero = Axis::fit([0.0, 0.0], 5, 0.0);
        assert!(zero.lo < 0.0 && zero.hi > 0.0, "{zero:?}");
        let with_nan = Axis::fit([f64::NAN, 2.0, 3.0, f64::INFINITY], 5, 0.0);
        assert!(with_nan.lo <= 2.0 && with_nan.hi >= 3.0 && with_nan.hi < 10.0);
        assert_eq!(Axis::fit([0.0, 0.4], 4, 0.0).label(-1e-17), "0.0");
    }

    #[test]
    fn huge_and_tiny_values_use_scientific_labels() {
        let a = Axis::fit([0.0, 3e7], 5, 0.0);
        assert_eq!(a.label(1e7), "1.00e7");
        let b = Axis::fit([1e-6, 5e-6], 5, 0.0);
        assert!(b.label(2e-6).contains('e'), "{}", b.label(2e-6));
    }
}
