//! METEOR's paraphrase table (`ParaphraseTransducer`): entries of three lines
//! (a probability METEOR ignores, a reference phrase, its paraphrase), words
//! mapped to integer ids.
//!
//! METEOR keeps the reference phrases in a trie and, at a position of a
//! sentence, reports every phrase that starts there, shortest first and, for
//! one phrase, in table order. Here the distinct reference phrases are kept
//! sorted (as id sequences) with their paraphrases in table order, and the
//! walk down the trie becomes one binary search per length, stopping where no
//! phrase has the prefix: the same phrases in the same order.
//!
//! Parsing the 62 MB gzip table takes seconds, so the parsed table is also
//! written as a flat binary cache next to it (`paraphrase-en.gz.cache`, keyed
//! by the gz file's size and modification time) and read back in a fraction
//! of that.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::java;
use super::MeteorError;
use crate::numeric::FxMap;

/// Version of the cache layout; bump on any change.
const CACHE_MAGIC: &[u8; 8] = b"DFMTPP01";

/// The loaded table.
#[derive(Debug, Default)]
pub(crate) struct ParaphraseTable {
    /// Words sorted by bytes, with their ids.
    vocab_words: Vec<u8>,
    vocab_offsets: Vec<u32>,
    vocab_ids: Vec<u32>,
    /// Distinct reference phrases sorted as id sequences.
    ref_offsets: Vec<u32>,
    ref_words: Vec<u32>,
    /// For reference phrase r, its paraphrases `emits[emit_offsets[r]..emit_offsets[r+1]]`
    /// (paraphrase indices, table order).
    emit_offsets: Vec<u32>,
    emits: Vec<u32>,
    /// Paraphrase p is `para_words[para_offsets[p]..para_offsets[p+1]]`.
    para_offsets: Vec<u32>,
    para_words: Vec<u32>,
    /// Reference phrases starting with word id w are `first[w]..first[w+1]`
    /// (derived at load, not cached).
    first: Vec<u32>,
}

/// Ranges of reference phrases by two-word prefix, for
/// [`ParaphraseTable::reference_paths`].
pub(crate) type PairRanges = FxMap<u64, (u32, u32)>;

/// Id of a word absent from the table (`translate` returns −1 in Java).
pub(crate) const UNKNOWN: u32 = u32::MAX;

impl ParaphraseTable {
    /// `translate`: the id of a word, or [`UNKNOWN`].
    pub(crate) fn word_id(&self, word: &str) -> u32 {
        let n = self.vocab_ids.len();
        let (mut lo, mut hi) = (0usize, n);
        let key = word.as_bytes();
        while lo < hi {
            let mid = (lo + hi) / 2;
            let w = &self.vocab_words
                [self.vocab_offsets[mid] as usize..self.vocab_offsets[mid + 1] as usize];
            match w.cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return self.vocab_ids[mid],
            }
        }
        UNKNOWN
    }

    fn ref_phrase(&self, r: usize) -> &[u32] {
        &self.ref_words[self.ref_offsets[r] as usize..self.ref_offsets[r + 1] as usize]
    }

    /// The paraphrase (word ids) with index `p`.
    pub(crate) fn paraphrase(&self, p: u32) -> &[u32] {
        let p = p as usize;
        &self.para_words[self.para_offsets[p] as usize..self.para_offsets[p + 1] as usize]
    }

    /// `getReferencePaths(words, start)`: appends to `out` `(phrase length,
    /// paraphrase index)` for every reference phrase equal to
    /// `words[start..start + length]`, by increasing length, then in table
    /// order.
    ///
    /// The phrases sharing a prefix are contiguous in the sorted list, the
    /// one equal to the prefix (if any) first, the longer ones ordered by
    /// their next word: each length narrows the previous length's range by
    /// a binary search on that one word (METEOR's walk down its trie).
    /// `memo` keeps the range of each two-word prefix met (keyed by the two
    /// ids), the widest searches: captions repeat their word pairs.
    pub(crate) fn reference_paths(
        &self,
        words: &[u32],
        start: usize,
        out: &mut Vec<(usize, u32)>,
        memo: &mut PairRanges,
    ) {
        let Some(&w0) = words.get(start) else {
            return;
        };
        if w0 == UNKNOWN || w0 as usize + 1 >= self.first.len() {
            return;
        }
        // The phrases with prefix `words[start..start + len]`.
        let (mut lo, mut hi) = (
            self.first[w0 as usize] as usize,
            self.first[w0 as usize + 1] as usize,
        );
        for len in 1..=words.len() - start {
            if len > 1 {
                let w = words[start + len - 1];
                if w == UNKNOWN {
                    break;
                }
                (lo, hi) = if len == 2 {
                    let key = u64::from(w0) << 32 | u64::from(w);
                    let (a, c) = *memo.entry(key).or_insert_with(|| {
                        let (a, c) = self.narrow(lo, hi, len, w);
                        (a as u32, c as u32)
                    });
                    (a as usize, c as usize)
                } else {
                    self.narrow(lo, hi, len, w)
                };
            }
            if lo == hi {
                // No trie node for this prefix: no longer phrase either.
                break;
            }
            if self.ref_phrase_len(lo) == len {
                let (a, b) = (
                    self.emit_offsets[lo] as usize,
                    self.emit_offsets[lo + 1] as usize,
                );
                out.extend(self.emits[a..b].iter().map(|&p| (len, p)));
                lo += 1;
            }
        }
    }

    /// Within `lo..hi`, phrases longer than `len − 1` words sharing their
    /// first `len − 1`, the range whose word `len − 1` is `w`.
    fn narrow(&self, lo: usize, hi: usize, len: usize, w: u32) -> (usize, usize) {
        let at = |r: usize| self.ref_words[self.ref_offsets[r] as usize + len - 1];
        let (mut a, mut b) = (lo, hi);
        while a < b {
            let mid = (a + b) / 2;
            if at(mid) < w {
                a = mid + 1;
            } else {
                b = mid;
            }
        }
        let (mut c, mut b) = (a, hi);
        while c < b {
            let mid = (c + b) / 2;
            if at(mid) <= w {
                c = mid + 1;
            } else {
                b = mid;
            }
        }
        (a, c)
    }

    fn ref_phrase_len(&self, r: usize) -> usize {
        (self.ref_offsets[r + 1] - self.ref_offsets[r]) as usize
    }

    /// Builds [`Self::first`] from the sorted reference phrases.
    fn index_first_words(mut self) -> Self {
        let n_words = self.vocab_ids.len();
        let n_refs = self.ref_offsets.len().saturating_sub(1);
        let mut first = vec![0u32; n_words + 1];
        // Count phrases per first word, then prefix sums (phrases are sorted,
        // so each word's phrases are contiguous and in this order).
        for r in 0..n_refs {
            if let Some(&w) = self.ref_phrase(r).first() {
                first[w as usize + 1] += 1;
            }
        }
        // Empty phrases sort first; skip them.
        let empty = (0..n_refs)
            .take_while(|&r| self.ref_phrase(r).is_empty())
            .count() as u32;
        first[0] = empty;
        for w in 0..n_words {
            first[w + 1] += first[w];
        }
        self.first = first;
        self
    }

    /// Loads `path` (gzip), through the cache beside it when valid; writes
    /// the cache when it is missing or stale (silently skipped if the
    /// directory is not writable: the cache only saves time).
    pub(crate) fn load(path: &Path) -> Result<Self, MeteorError> {
        let meta = std::fs::metadata(path).map_err(|e| MeteorError::io(path, e))?;
        let stamp = source_stamp(&meta);
        let cache = cache_path(path);
        // Read straight into the arrays: the cache is about 115 MB, and a
        // copy of the whole file first would double the memory touched.
        if let Ok(file) = std::fs::File::open(&cache) {
            if let Ok(len) = file.metadata().map(|m| m.len()) {
                let reader = std::io::BufReader::with_capacity(1 << 16, file);
                if let Some(t) = Self::from_cache_reader(reader, len, stamp) {
                    return Ok(t);
                }
            }
        }
        let table = Self::parse_gz(path)?;
        let _ = table.write_cache(&cache, stamp);
        Ok(table)
    }

    /// Parses the gzip table as `ParaphraseTransducer`'s constructor does.
    pub(crate) fn parse_gz(path: &Path) -> Result<Self, MeteorError> {
        let file = std::fs::File::open(path).map_err(|e| MeteorError::io(path, e))?;
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(std::io::BufReader::with_capacity(1 << 20, file))
            .read_to_string(&mut text)
            .map_err(|e| MeteorError::io(path, e))?;
        Self::parse_text(&text).map_err(|(line, message)| MeteorError::Malformed {
            path: path.to_path_buf(),
            line,
            message,
        })
    }

    fn parse_text(text: &str) -> Result<Self, (usize, String)> {
        let mut vocab: HashMap<&str, u32> = HashMap::new();
        let mut id_of = |w| {
            let next = vocab.len() as u32;
            *vocab.entry(w).or_insert(next)
        };
        // (reference words, paraphrase index) and the paraphrases, table order.
        let mut refs: Vec<(Vec<u32>, u32)> = Vec::new();
        let mut para_offsets = vec![0u32];
        let mut para_words = Vec::new();
        let mut lines = text.lines();
        let mut line_no = 0usize;
        while lines.next().is_some() {
            line_no += 3;
            let (Some(r), Some(p)) = (lines.next(), lines.next()) else {
                return Err((
                    line_no,
                    "entry without reference and paraphrase lines".into(),
                ));
            };
            let rw: Vec<u32> = java::tokens(r).map(&mut id_of).collect();
            para_words.extend(java::tokens(p).map(&mut id_of));
            para_offsets.push(para_words.len() as u32);
            refs.push((rw, refs.len() as u32));
        }
        // Stable sort: one phrase's paraphrases stay in table order.
        refs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut ref_offsets = vec![0u32];
        let mut ref_words = Vec::new();
        let mut emit_offsets = vec![0u32];
        let mut emits = Vec::with_capacity(refs.len());
        for (k, (words, p)) in refs.iter().enumerate() {
            if k > 0 && refs[k - 1].0 != *words {
                emit_offsets.push(emits.len() as u32);
            }
            if k == 0 || refs[k - 1].0 != *words {
                ref_words.extend_from_slice(words);
                ref_offsets.push(ref_words.len() as u32);
            }
            emits.push(*p);
        }
        if !refs.is_empty() {
            emit_offsets.push(emits.len() as u32);
        }
        let mut vocab: Vec<(&str, u32)> = vocab.into_iter().collect();
        vocab.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut vocab_words = Vec::new();
        let mut vocab_offsets = vec![0u32];
        let mut vocab_ids = Vec::with_capacity(vocab.len());
        for (w, id) in vocab {
            vocab_words.extend_from_slice(w.as_bytes());
            vocab_offsets.push(vocab_words.len() as u32);
            vocab_ids.push(id);
        }
        Ok(ParaphraseTable {
            vocab_words,
            vocab_offsets,
            vocab_ids,
            ref_offsets,
            ref_words,
            emit_offsets,
            emits,
            para_offsets,
            para_words,
            first: Vec::new(),
        }
        .index_first_words())
    }

    fn write_cache(&self, path: &Path, stamp: [u64; 2]) -> std::io::Result<()> {
        // One temp name per writer (process and call), so two processes or
        // threads building the cache at once never write into one file.
        static WRITERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("cache.{}.{n}.tmp", std::process::id()));
        {
            let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            f.write_all(CACHE_MAGIC)?;
            f.write_all(&stamp[0].to_le_bytes())?;
            f.write_all(&stamp[1].to_le_bytes())?;
            write_bytes(&mut f, &self.vocab_words)?;
            for v in [
                &self.vocab_offsets,
                &self.vocab_ids,
                &self.ref_offsets,
                &self.ref_words,
                &self.emit_offsets,
                &self.emits,
                &self.para_offsets,
                &self.para_words,
            ] {
                write_u32s(&mut f, v)?;
            }
            f.flush()?;
        }
        std::fs::rename(&tmp, path)
    }

    #[cfg(test)]
    fn from_cache(bytes: &[u8], stamp: [u64; 2]) -> Option<Self> {
        Self::from_cache_reader(bytes, bytes.len() as u64, stamp)
    }

    /// Reads a cache of `len` bytes; `None` when it is stale, damaged or
    /// unreadable (then the table is parsed again).
    fn from_cache_reader(read: impl Read, len: u64, stamp: [u64; 2]) -> Option<Self> {
        let mut r = Reader {
            read,
            left: len,
            buf: vec![0u8; 1 << 16],
        };
        if r.take::<8>()? != *CACHE_MAGIC {
            return None;
        }
        let s0 = u64::from_le_bytes(r.take()?);
        let s1 = u64::from_le_bytes(r.take()?);
        if [s0, s1] != stamp {
            return None;
        }
        let vocab_words = r.bytes()?;
        let t = ParaphraseTable {
            vocab_words,
            vocab_offsets: r.u32s()?,
            vocab_ids: r.u32s()?,
            ref_offsets: r.u32s()?,
            ref_words: r.u32s()?,
            emit_offsets: r.u32s()?,
            emits: r.u32s()?,
            para_offsets: r.u32s()?,
            para_words: r.u32s()?,
            first: Vec::new(),
        };
        (r.left == 0 && t.is_consistent()).then(|| t.index_first_words())
    }

    /// Offsets are monotone and in range, so lookups cannot index out of
    /// bounds on a damaged cache.
    fn is_consistent(&self) -> bool {
        fn offsets_ok(off: &[u32], len: usize) -> bool {
            off.first() == Some(&0)
                && off.windows(2).all(|w| w[0] <= w[1])
                && off.last().is_some_and(|&l| l as usize == len)
        }
        let n_para = self.para_offsets.len().saturating_sub(1) as u32;
        offsets_ok(&self.vocab_offsets, self.vocab_words.len())
            && self.vocab_ids.len() + 1 == self.vocab_offsets.len()
            && offsets_ok(&self.ref_offsets, self.ref_words.len())
            && offsets_ok(&self.emit_offsets, self.emits.len())
            && self.emit_offsets.len() == self.ref_offsets.len()
            && offsets_ok(&self.para_offsets, self.para_words.len())
            && self.emits.iter().all(|&p| p < n_para)
            && self
                .ref_words
                .iter()
                .all(|&w| (w as usize) < self.vocab_ids.len())
            && self
                .para_words
                .iter()
                .all(|&w| (w as usize) < self.vocab_ids.len())
            && std::str::from_utf8(&self.vocab_words).is_ok()
    }
}

/// The cache file for a table at `path`.
pub(crate) fn cache_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".cache");
    path.with_file_name(name)
}

fn source_stamp(meta: &std::fs::Metadata) -> [u64; 2] {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64);
    [meta.len(), mtime]
}

fn write_bytes(f: &mut impl Write, b: &[u8]) -> std::io::Result<()> {
    f.write_all(&(b.len() as u64).to_le_bytes())?;
    f.write_all(b)
}

fn write_u32s(f: &mut impl Write, v: &[u32]) -> std::io::Result<()> {
    f.write_all(&(v.len() as u64).to_le_bytes())?;
    let mut buf = Vec::with_capacity(v.len() * 4);
    for x in v {
        buf.extend_from_slice(&x.to_le_bytes());
    }
    f.write_all(&buf)
}

/// Reads the cache's sections from a stream of `left` more bytes; a length
/// beyond what is left is a damaged cache (`None`), never an allocation.
struct Reader<R> {
    read: R,
    left: u64,
    buf: Vec<u8>,
}

impl<R: Read> Reader<R> {
    fn fill(&mut self, out: &mut [u8]) -> Option<()> {
        self.left = self.left.checked_sub(out.len() as u64)?;
        self.read.read_exact(out).ok()
    }
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut b = [0u8; N];
        self.fill(&mut b)?;
        Some(b)
    }
    /// A section's length in items of `size` bytes, if that many are left.
    fn len(&mut self, size: u64) -> Option<usize> {
        let n = u64::from_le_bytes(self.take()?);
        (n.checked_mul(size)? <= self.left).then_some(())?;
        usize::try_from(n).ok()
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = self.len(1)?;
        let mut v = vec![0u8; n];
        self.fill(&mut v)?;
        Some(v)
    }
    fn u32s(&mut self) -> Option<Vec<u32>> {
        let n = self.len(4)?;
        let mut v = Vec::with_capacity(n);
        let mut buf = std::mem::take(&mut self.buf);
        while v.len() < n {
            let k = (n - v.len()).min(buf.len() / 4);
            self.fill(&mut buf[..k * 4])?;
            v.extend(
                buf[..k * 4]
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
        }
        self.buf = buf;
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str =
        "0.1\nnext to\nnear\n0.2\nnext\nafter\n0.3\nnext to\nalongside\n0.4\na lot of\nmuch\n";

    fn ids(t: &ParaphraseTable, s: &str) -> Vec<u32> {
        s.split(' ').map(|w| t.word_id(w)).collect()
    }

    #[test]
    fn paths_shortest_first_then_table_order() {
        let t = ParaphraseTable::parse_text(TABLE).unwrap();
        let line = ids(&t, "next to the");
        let mut out = Vec::new();
        let mut memo = PairRanges::default();
        t.reference_paths(&line, 0, &mut out, &mut memo);
        let got: Vec<(usize, Vec<u32>)> = out
            .iter()
            .map(|&(l, p)| (l, t.paraphrase(p).to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, ids(&t, "after")),
                (2, ids(&t, "near")),
                (2, ids(&t, "alongside")),
            ]
        );
        out.clear();
        t.reference_paths(&line, 1, &mut out, &mut memo);
        assert!(out.is_empty());
        assert_eq!(t.word_id("zebra"), UNKNOWN);
    }

    #[test]
    fn cache_round_trips_and_rejects_stale_or_damaged() {
        let t = ParaphraseTable::parse_text(TABLE).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.cache");
        t.write_cache(&p, [1, 2]).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let back = ParaphraseTable::from_cache(&bytes, [1, 2]).unwrap();
        assert_eq!(back.ref_words, t.ref_words);
        assert_eq!(back.emits, t.emits);
        assert_eq!(back.word_id("much"), t.word_id("much"));
        assert!(ParaphraseTable::from_cache(&bytes, [1, 3]).is_none());
        assert!(ParaphraseTable::from_cache(&bytes[..bytes.len() - 1], [1, 2]).is_none());
    }
}
