//! Caption metrics with the numbers of the COCO caption toolkit
//! (pycocoevalcap): PTB tokenization, BLEU-1..4, ROUGE-L and CIDEr-D.
//!
//! METEOR and SPICE are not provided: the toolkit computes them with Java
//! programs and data (paraphrase tables, a parser) whose results cannot be
//! reproduced exactly here.
pub mod bleu;
pub mod cider;
pub mod coco;
pub mod error;
pub mod evaluate;
mod numeric;
mod ptb_lexer;
pub mod ptb_tokenizer;
pub mod quality;
pub mod rouge;
pub mod scores;

pub use coco::{Annotations, CaptionResult, ImageId, Sample};
pub use error::MetricsError;
pub use evaluate::{Evaluation, Evaluator, Metric, MetricScores};
pub use ptb_tokenizer::PtbTokenizer;
