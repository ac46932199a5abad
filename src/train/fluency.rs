//! Fluency during training: a judge that says whether a caption is fluent,
//! applied each step to the policy's greedy captions of the batch's images
//! (`fluency/grammatical`), so a report can show fluency over training next
//! to the reward. Greedy captions, not the step's candidates: DiCO's beams
//! and SCST's samples differ in kind, the greedy caption is what both
//! methods are evaluated on.

use serde::{Deserialize, Serialize};

/// Which judge scores fluency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FluencyJudge {
    /// The synthetic world's grammar (`data::synth::is_grammatical`): only
    /// meaningful when training on the synthetic world.
    SyntheticWorld,
}

impl FluencyJudge {
    /// Whether `caption` is fluent.
    pub fn is_fluent(self, caption: &str) -> bool {
        match self {
            FluencyJudge::SyntheticWorld => crate::data::synth::is_grammatical(caption),
        }
    }

    /// Share of `captions` judged fluent (0 for none).
    pub fn share(self, captions: &[String]) -> f64 {
        if captions.is_empty() {
            return 0.0;
        }
        let fluent = captions.iter().filter(|c| self.is_fluent(c)).count();
        fluent as f64 / captions.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_world_judge_counts_grammatical_captions() {
        let caps = [
            "a red circle.".to_string(),
            "circle circle red a".to_string(),
        ];
        assert!(FluencyJudge::SyntheticWorld.is_fluent(&caps[0]));
        assert_eq!(FluencyJudge::SyntheticWorld.share(&caps), 0.5);
        assert_eq!(FluencyJudge::SyntheticWorld.share(&[]), 0.0);
    }
}
