//! Text processing: CLIP BPE tokenization and the cleaning it applies.

pub(crate) mod clean;
pub mod clip_tokenizer;
mod html_entities;

pub use clip_tokenizer::{ClipTokenizer, TokenizerError};
