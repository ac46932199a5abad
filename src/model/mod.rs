//! Neural network models.

pub mod clip;
pub mod error;
pub mod weights;

pub use error::ModelError;
