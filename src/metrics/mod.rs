//! Caption metrics with the numbers of the COCO caption toolkit
//! (pycocoevalcap): the crate `dicoflow-metrics` (crates/dicoflow-metrics,
//! no libtorch), re-exported under its old paths, plus [`quality`], which
//! scores metrics against the synthetic world's oracle.
//!
//! SPICE is not provided: the toolkit runs a Java scene-graph parser with
//! Stanford CoreNLP models it downloads at first use.
pub use dicoflow_metrics::{
    bleu, cider, coco, error, evaluate, meteor, ptb_tokenizer, rouge, scores,
};
pub mod quality;

pub use dicoflow_metrics::{
    Annotations, CaptionResult, Evaluation, Evaluator, ImageId, Meteor, MeteorError, Metric,
    MetricScores, MetricsError, PtbTokenizer, Sample,
};
