//! The captioner of the paper: frozen CLIP vision backbone → Linear → transformer
//! encoder → GPT-2-style decoder with cross-attention, plus its vocabularies.

pub(crate) mod attention;
pub(crate) mod backbone;
pub(crate) mod config;
pub(crate) mod decoder;
pub(crate) mod encoder;
pub(crate) mod model;
pub(crate) mod text;
pub(crate) mod vocab;

pub use attention::Attention;
pub use backbone::Backbone;
pub use config::{CaptionerConfig, TokenSpec, DEFAULT_MAX_LEN};
pub use decoder::{Decoder, DecoderCache, DecoderLayer};
pub use encoder::{Encoder, EncoderLayer};
pub use model::Captioner;
pub use text::{CaptionText, TextMismatch};
pub use vocab::Vocab;
