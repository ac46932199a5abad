//! Caption metrics with the numbers of the COCO caption toolkit
//! (pycocoevalcap): PTB tokenization, BLEU-1..4, METEOR 1.5, ROUGE-L and
//! CIDEr-D. METEOR needs the toolkit's data files ([`meteor::Meteor::load`]).
//!
//! SPICE is not provided: the toolkit runs a Java scene-graph parser with
//! Stanford CoreNLP models it downloads at first use.
//!
//! A crate of its own, without libtorch: the `dicoflow-eval` command
//! ([`cli`]) starts in milliseconds, and dev builds compile it optimised.
//! The main crate re-exports it as `dicoflow::metrics` and extends its
//! command line into `dicoflow eval` (CLIP-S, PAC-S).
pub mod bleu;
pub mod cider;
pub mod cli;
pub mod coco;
pub mod error;
pub mod evaluate;
pub mod meteor;
mod numeric;
mod ptb_lexer;
pub mod ptb_tokenizer;
pub mod rouge;
mod scoped;
pub mod scores;

pub use coco::{Annotations, CaptionResult, ImageId, Sample};
pub use error::MetricsError;
pub use evaluate::{Evaluation, Evaluator, Metric, MetricScores};
pub use meteor::{Meteor, MeteorError};
pub use ptb_tokenizer::PtbTokenizer;
