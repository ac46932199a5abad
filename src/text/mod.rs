//! Text processing: CLIP BPE tokenization and the cleaning it applies.

pub mod clean;
pub mod clip_tokenizer;
mod html_entities;

pub use clip_tokenizer::{ClipTokenizer, TokenizerError};
