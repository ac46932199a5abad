//! Neural network models.

pub mod captioner;
pub mod clip;
pub mod convert;
pub mod decode;
pub(crate) mod error;
pub mod pickle;
pub(crate) mod preset;
pub mod pth;
pub mod weights;

pub use error::ModelError;
