//! What a captioner's token ids mean: a word-level [`Vocab`] (tiny CPU captioners on
//! the synthetic world) or CLIP BPE plus one pad id (the paper's captioner on COCO).
//! Training turns captions into target ids with it, and generation turns ids back
//! into captions.

use super::config::TokenSpec;
use super::vocab::Vocab;
use crate::text::{ClipTokenizer, TokenizerError};

/// The text side of a captioner.
#[derive(Debug, Clone)]
pub enum CaptionText {
    /// Word ids of a vocabulary built from training captions.
    Words(Vocab),
    /// CLIP BPE (49 408 ids) + pad 49 408; BOS `<start_of_text>`, EOS `<end_of_text>`.
    /// Boxed: the tokenizer's tables are large next to a vocabulary handle.
    ClipBpe(Box<ClipTokenizer>),
}

impl From<Vocab> for CaptionText {
    fn from(vocab: Vocab) -> Self {
        Self::Words(vocab)
    }
}

impl CaptionText {
    /// CLIP BPE with the bundled OpenAI merges.
    pub fn clip_bpe() -> Result<Self, TokenizerError> {
        Ok(Self::ClipBpe(Box::new(ClipTokenizer::openai()?)))
    }

    /// Vocabulary size and special ids a captioner needs for this text.
    pub fn tokens(&self) -> TokenSpec {
        match self {
            Self::Words(vocab) => vocab.tokens(),
            Self::ClipBpe(tok) => {
                let clip_vocab = tok.vocab_size() as i64;
                TokenSpec {
                    vocab_size: clip_vocab + 1,
                    pad: clip_vocab,
                    bos: tok.sot_token(),
                    eos: tok.eot_token(),
                }
            }
        }
    }

    /// Short description for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Words(vocab) => format!("word vocabulary of {} ids", vocab.len()),
            Self::ClipBpe(_) => "CLIP BPE".to_owned(),
        }
    }

    /// Target ids of `caption` for teacher forcing: the tokens after BOS, EOS
    /// included, cut to `max_len` with EOS kept last.
    pub fn encode_target(&self, caption: &str, max_len: usize) -> Vec<i64> {
        match self {
            Self::Words(vocab) => vocab.encode_target(caption, max_len),
            Self::ClipBpe(tok) => {
                let mut ids = tok.encode(caption);
                ids.push(tok.eot_token());
                if max_len > 0 && ids.len() > max_len {
                    ids.truncate(max_len);
                    ids[max_len - 1] = tok.eot_token();
                }
                ids
            }
        }
    }

    /// Caption of generated ids: BOS and pad skipped, stops at the first EOS.
    pub fn decode(&self, ids: &[i64]) -> String {
        match self {
            Self::Words(vocab) => vocab.decode(ids),
            Self::ClipBpe(tok) => tok.decode_caption(ids),
        }
    }

    /// Checks that a captioner with token ids `tokens` can be trained on this text;
    /// the error names both sides and what to change.
    pub fn check(&self, tokens: &TokenSpec) -> Result<(), TextMismatch> {
        let expected = self.tokens();
        if *tokens == expected {
            Ok(())
        } else {
            Err(TextMismatch {
                text: self.describe(),
                expected,
                captioner: *tokens,
            })
        }
    }
}

/// A captioner's token ids do not fit its caption text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the captioner config's tokens (vocab_size {}, pad {}, bos {}, eos {}) do not match the \
     caption text, {} (vocab_size {}, pad {}, bos {}, eos {}): set the captioner's `tokens` \
     to the text's values, or give the vocabulary the captioner was built for",
    captioner.vocab_size, captioner.pad, captioner.bos, captioner.eos,
    text, expected.vocab_size, expected.pad, expected.bos, expected.eos
)]
pub struct TextMismatch {
    pub text: String,
    pub expected: TokenSpec,
    pub captioner: TokenSpec,
}
