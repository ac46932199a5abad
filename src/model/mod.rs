//! Neural network models.

pub mod captioner;
pub mod clip;
pub mod convert;
pub mod decode;
pub mod error;
pub(crate) mod preset;
pub mod weights;

pub use error::ModelError;
