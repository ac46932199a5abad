//! CLIP byte-level BPE tokenizer (OpenAI CLIP / open_clip `SimpleTokenizer`).
//!
//! Vocabulary: 256 byte symbols, the same 256 with an end-of-word marker `</w>`, the first
//! 48 894 merges of `bpe_simple_vocab_16e6.txt.gz`, then `<start_of_text>` (49406) and
//! `<end_of_text>` (49407): 49 408 ids. The merges file ships in `datasets/clip/` and is
//! compiled into the library ([`ClipTokenizer::openai`]).
//!
//! Encoding follows the reference exactly: text cleaning (`text::clean::clean_lower`),
//! the reference word-split pattern, byte-to-unicode mapping, and greedy lowest-rank
//! merges. Batches are `[n, context_length]` i64 rows `SOT tokens.. EOT 0 0 ..`; rows
//! that are too long are cut to `context_length` and their last id is set to EOT.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use regex::Regex;
use tch::{Device, Kind, Tensor};

use super::clean::clean_lower;

/// The merges file of OpenAI CLIP, gzip-compressed, as shipped with `clip` / `open_clip`.
static OPENAI_BPE_GZ: &[u8] = include_bytes!("../../datasets/clip/bpe_simple_vocab_16e6.txt.gz");

/// Number of merges CLIP uses from the merges file (`49152 - 256 - 2`).
pub const NUM_MERGES: usize = 49152 - 256 - 2;
/// Vocabulary size of CLIP: 512 byte symbols + merges + 2 special tokens.
pub const VOCAB_SIZE: usize = 512 + NUM_MERGES + 2;
/// `<start_of_text>` id.
pub const SOT_TOKEN: i64 = 49406;
/// `<end_of_text>` id.
pub const EOT_TOKEN: i64 = 49407;
/// Text context length of every released CLIP model.
pub const CONTEXT_LENGTH: usize = 77;
/// Padding id of CLIP token tensors.
pub const PAD_TOKEN: i64 = 0;

const SOT_STR: &str = "<start_of_text>";
const EOT_STR: &str = "<end_of_text>";

/// Errors of the CLIP tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("reading BPE merges from {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("BPE merges line {line}: expected two symbols, found {content:?}")]
    BadMergeLine { line: usize, content: String },
    #[error("BPE merges file has {found} merges, CLIP needs {needed}")]
    TooFewMerges { found: usize, needed: usize },
    #[error("token id {id} is outside the vocabulary (size {vocab_size})")]
    UnknownId { id: i64, vocab_size: usize },
    #[error("context length must be at least 1")]
    ZeroContextLength,
    #[error(transparent)]
    Pattern(#[from] regex::Error),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// CLIP BPE tokenizer. Cheap to share (`Send + Sync`), expensive to build (~50k merges).
#[derive(Clone)]
pub struct ClipTokenizer {
    /// BPE symbol string → id.
    encoder: HashMap<String, i64>,
    /// id → byte sequence (special tokens decode to their marker strings).
    decoder: Vec<Vec<u8>>,
    /// (left, right) → merge rank.
    bpe_ranks: HashMap<(String, String), usize>,
    /// byte → printable unicode stand-in.
    byte_encoder: [char; 256],
    pattern: Regex,
}

/// Bytes that stand for themselves in the byte → unicode table.
fn printable_bytes() -> impl Iterator<Item = u8> {
    (b'!'..=b'~').chain(0xA1..=0xAC).chain(0xAE..=0xFF)
}

fn is_printable_byte(b: u8) -> bool {
    (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE
}

/// GPT-2 / CLIP reversible byte → unicode table.
fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for (b, slot) in (0..=255u8).zip(table.iter_mut()) {
        *slot = if is_printable_byte(b) {
            char::from(b)
        } else {
            n += 1;
            // 256 + n - 1 < 0x200 is always a valid scalar value.
            char::from_u32(255 + n).unwrap_or('\u{fffd}')
        };
    }
    table
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("merges", &self.bpe_ranks.len())
            .finish()
    }
}

impl ClipTokenizer {
    /// The OpenAI CLIP tokenizer with the bundled merges file.
    pub fn openai() -> Result<Self, TokenizerError> {
        Self::from_gz_reader(
            OPENAI_BPE_GZ,
            Path::new("<bundled bpe_simple_vocab_16e6.txt.gz>"),
        )
    }

    /// Loads a merges file: gzip-compressed if the name ends in `.gz`, plain text otherwise.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|source| TokenizerError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if path.extension().is_some_and(|e| e == "gz") {
            Self::from_gz_reader(file, path)
        } else {
            Self::from_merges_reader(BufReader::new(file), path)
        }
    }

    fn from_gz_reader(reader: impl Read, path: &Path) -> Result<Self, TokenizerError> {
        Self::from_merges_reader(BufReader::new(GzDecoder::new(reader)), path)
    }

    /// Builds the tokenizer from the text of a merges file (first line is a header).
    pub fn from_merges_reader(reader: impl BufRead, path: &Path) -> Result<Self, TokenizerError> {
        let byte_encoder = bytes_to_unicode();
        let byte_decoder: HashMap<char, u8> = byte_encoder
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();

        let mut merges: Vec<(String, String)> = Vec::with_capacity(NUM_MERGES);
        for (line_no, line) in reader.lines().enumerate().skip(1).take(NUM_MERGES) {
            let line = line.map_err(|source| TokenizerError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) => merges.push((a.to_owned(), b.to_owned())),
                _ => {
                    return Err(TokenizerError::BadMergeLine {
                        line: line_no + 1,
                        content: line,
                    })
                }
            }
        }
        if merges.len() < NUM_MERGES {
            return Err(TokenizerError::TooFewMerges {
                found: merges.len(),
                needed: NUM_MERGES,
            });
        }

        // Vocabulary order: byte symbols in the reference table's order (printable bytes
        // first, then the remapped ones), the same + "</w>", merges, specials.
        let byte_symbols: Vec<char> = printable_bytes()
            .chain((0..=255u8).filter(|b| !is_printable_byte(*b)))
            .map(|b| byte_encoder[b as usize])
            .collect();
        let mut vocab: Vec<String> = Vec::with_capacity(VOCAB_SIZE);
        vocab.extend(byte_symbols.iter().map(|c| c.to_string()));
        vocab.extend(byte_symbols.iter().map(|c| format!("{c}</w>")));
        vocab.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
        vocab.push(SOT_STR.to_owned());
        vocab.push(EOT_STR.to_owned());

        let encoder: HashMap<String, i64> = vocab
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as i64))
            .collect();
        let mut decoder = Vec::with_capacity(vocab.len());
        for (i, symbol) in vocab.iter().enumerate() {
            if i >= vocab.len() - 2 {
                decoder.push(symbol.as_bytes().to_vec());
                continue;
            }
            let mut bytes = Vec::with_capacity(symbol.len());
            let (body, eow) = match symbol.strip_suffix("</w>") {
                Some(body) => (body, true),
                None => (symbol.as_str(), false),
            };
            for c in body.chars() {
                // Merges are built from byte symbols, so every char has a byte; a
                // merges file with foreign symbols keeps them verbatim.
                match byte_decoder.get(&c) {
                    Some(&b) => bytes.push(b),
                    None => bytes.extend(c.to_string().as_bytes()),
                }
            }
            if eow {
                bytes.extend(b"</w>");
            }
            decoder.push(bytes);
        }
        let bpe_ranks = merges
            .into_iter()
            .enumerate()
            .map(|(rank, pair)| (pair, rank))
            .collect();

        // The reference pattern (`re.IGNORECASE` is moot on lower-cased text).
        let pattern = Regex::new(
            r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
        )?;

        Ok(Self {
            encoder,
            decoder,
            bpe_ranks,
            byte_encoder,
            pattern,
        })
    }

    /// Vocabulary size (49 408 for CLIP).
    pub fn vocab_size(&self) -> usize {
        self.decoder.len()
    }

    /// `<start_of_text>` id.
    pub fn sot_token(&self) -> i64 {
        self.decoder.len() as i64 - 2
    }

    /// `<end_of_text>` id.
    pub fn eot_token(&self) -> i64 {
        self.decoder.len() as i64 - 1
    }

    /// Token ids of `text` without SOT/EOT (reference `SimpleTokenizer.encode`).
    pub fn encode(&self, text: &str) -> Vec<i64> {
        let cleaned = clean_lower(text);
        let mut ids = Vec::new();
        for word in self.pattern.find_iter(&cleaned).map(|m| m.as_str()) {
            match word {
                SOT_STR => ids.push(self.sot_token()),
                EOT_STR => ids.push(self.eot_token()),
                _ => self.bpe_word(word, &mut ids),
            }
        }
        ids
    }

    /// `SOT + encode(text) + EOT`, cut to `context_length` with EOT kept last.
    pub fn encode_with_special(
        &self,
        text: &str,
        context_length: usize,
    ) -> Result<Vec<i64>, TokenizerError> {
        if context_length == 0 {
            return Err(TokenizerError::ZeroContextLength);
        }
        let mut ids = Vec::with_capacity(context_length);
        ids.push(self.sot_token());
        ids.extend(self.encode(text));
        ids.push(self.eot_token());
        if ids.len() > context_length {
            ids.truncate(context_length);
            ids[context_length - 1] = self.eot_token();
        }
        Ok(ids)
    }

    /// Batch encoding to a `[texts.len(), context_length]` i64 tensor on the CPU,
    /// zero-padded (what CLIP's text tower takes).
    pub fn encode_batch<S: AsRef<str>>(
        &self,
        texts: &[S],
        context_length: usize,
    ) -> Result<Tensor, TokenizerError> {
        if context_length == 0 {
            return Err(TokenizerError::ZeroContextLength);
        }
        let mut flat = vec![PAD_TOKEN; texts.len() * context_length];
        for (row, text) in flat.chunks_mut(context_length).zip(texts) {
            let ids = self.encode_with_special(text.as_ref(), context_length)?;
            row[..ids.len()].copy_from_slice(&ids);
        }
        let shape = [texts.len() as i64, context_length as i64];
        Ok(Tensor::f_from_slice(&flat)?
            .f_reshape(shape)?
            .f_to_kind(Kind::Int64)?
            .f_to_device(Device::Cpu)?)
    }

    /// Reference `SimpleTokenizer.decode`: symbols joined, bytes decoded as UTF-8 with
    /// replacement, `</w>` turned into a space. SOT/EOT decode to their marker strings and
    /// padding (id 0) to `"!"`, as in the reference.
    pub fn decode(&self, ids: &[i64]) -> Result<String, TokenizerError> {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            let symbol = usize::try_from(id)
                .ok()
                .and_then(|i| self.decoder.get(i))
                .ok_or(TokenizerError::UnknownId {
                    id,
                    vocab_size: self.decoder.len(),
                })?;
            bytes.extend_from_slice(symbol);
        }
        Ok(String::from_utf8_lossy(&bytes).replace("</w>", " "))
    }

    /// Caption text of a generated sequence: skips a leading SOT, stops at the first EOT,
    /// ignores ids outside the vocabulary (e.g. a captioner's extra pad id), and trims.
    pub fn decode_caption(&self, ids: &[i64]) -> String {
        let body: Vec<i64> = ids
            .iter()
            .copied()
            .skip_while(|&id| id == self.sot_token())
            .take_while(|&id| id != self.eot_token())
            .filter(|&id| id >= 0 && (id as usize) < self.decoder.len() - 2)
            .collect();
        // Every id is in range, so decoding cannot fail.
        self.decode(&body)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    }

    /// Applies BPE to one pre-split word and appends its ids.
    fn bpe_word(&self, word: &str, out: &mut Vec<i64>) {
        let mapped: Vec<char> = word
            .bytes()
            .map(|b| self.byte_encoder[b as usize])
            .collect();
        if mapped.is_empty() {
            return;
        }
        // Symbols: each mapped byte, the last one with the end-of-word marker.
        let last = mapped.len() - 1;
        let mut symbols: Vec<String> = mapped
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    format!("{c}</w>")
                } else {
                    c.to_string()
                }
            })
            .collect();
        while symbols.len() > 1 {
            let best = symbols
                .windows(2)
                .filter_map(|w| {
                    self.bpe_ranks
                        .get(&(w[0].clone(), w[1].clone()))
                        .map(|&r| (r, w[0].clone(), w[1].clone()))
                })
                .min_by_key(|(r, _, _)| *r);
            let Some((_, first, second)) = best else {
                break;
            };
            let mut merged = Vec::with_capacity(symbols.len());
            let mut i = 0;
            while i < symbols.len() {
                if i + 1 < symbols.len() && symbols[i] == first && symbols[i + 1] == second {
                    merged.push(format!("{first}{second}"));
                    i += 2;
                } else {
                    merged.push(std::mem::take(&mut symbols[i]));
                    i += 1;
                }
            }
            symbols = merged;
        }
        // Every symbol is a byte symbol (with or without `</w>`) or the concatenation of a
        // merge rule, and all of those are vocabulary entries.
        out.extend(symbols.iter().filter_map(|s| self.encoder.get(s).copied()));
    }
}
