//! The value of one metric over a corpus.

/// A metric value for the corpus and for each image.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// The corpus value.
    pub corpus: f64,
    /// Per image, in input order.
    pub per_image: Vec<f64>,
}
