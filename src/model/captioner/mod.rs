//! The captioner of the paper: frozen CLIP vision backbone → Linear → transformer
//! encoder → GPT-2-style decoder with cross-attention, plus its vocabularies.

pub mod attention;
pub mod backbone;
pub mod config;
pub mod decoder;
pub mod encoder;
pub mod model;
pub mod text;
pub mod vocab;

pub use backbone::Backbone;
pub use config::{CaptionerConfig, TokenSpec, DEFAULT_MAX_LEN};
pub use decoder::{Decoder, DecoderCache};
pub use encoder::Encoder;
pub use model::Captioner;
pub use text::{CaptionText, TextMismatch};
pub use vocab::Vocab;
