//! Caption tokenization as pycocoevalcap's `PTBTokenizer` does it.
//!
//! The toolkit writes every caption on its own line (with `\n` inside a caption
//! replaced by a space), runs Stanford CoreNLP 3.4.1's `PTBTokenizer` with
//! `-preserveLines -lowerCase`, splits each output line on single spaces and
//! drops the tokens in [`PUNCTUATIONS`]. Note that the bracket tokens in that
//! list are upper case while the tokenizer's output is lower case, so
//! `-lrb-`/`-rrb-` survive: scores depend on that, so it is reproduced.

use super::coco::Sample;
use super::ptb_lexer::Lexer;

/// Tokens the toolkit removes after tokenization (compared case-sensitively).
pub const PUNCTUATIONS: [&str; 17] = [
    "''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
    "...", ";",
];

/// Reusable tokenizer; construction compiles the lexer rules once.
pub struct PtbTokenizer {
    lexer: Lexer,
}

impl std::fmt::Debug for PtbTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PtbTokenizer")
    }
}

impl Default for PtbTokenizer {
    fn default() -> Self {
        Self::new()
    }
}

impl PtbTokenizer {
    /// Builds the tokenizer.
    pub fn new() -> Self {
        PtbTokenizer {
            lexer: Lexer::new(),
        }
    }

    /// Tokenizes the candidates and references of `samples` as pycocoevalcap's
    /// `COCOEvalCap.evaluate` does: two separate tokenizer runs (all
    /// references in sample order, then all candidates; see
    /// [`Self::tokenize_batch`] for why the runs matter). Returns the
    /// candidates' tokens (`[samples]`) and each sample's references'
    /// tokens (`[samples][its references]`), joined by single spaces.
    pub fn tokenize_samples(&self, samples: &[Sample]) -> (Vec<String>, Vec<Vec<String>>) {
        let refs: Vec<&str> = samples
            .iter()
            .flat_map(|s| s.references.iter().map(String::as_str))
            .collect();
        let cands: Vec<&str> = samples.iter().map(|s| s.candidate.as_str()).collect();
        let mut tok_refs = self.tokenize_batch(&refs).into_iter();
        let tok_cands = self.tokenize_batch(&cands);
        let grouped = samples
            .iter()
            .map(|s| tok_refs.by_ref().take(s.references.len()).collect())
            .collect();
        (tok_cands, grouped)
    }

    /// Tokenizes captions exactly as one call of the toolkit's tokenizer on
    /// them, in this order, would: the toolkit writes them one per line into a
    /// single file, and an initialism ending a line (`"... letter I."`) loses
    /// its period when the next line starts with a capital letter. Returns
    /// each caption's tokens joined by single spaces.
    pub fn tokenize_batch<S: AsRef<str>>(&self, captions: &[S]) -> Vec<String> {
        let lines: Vec<String> = captions.iter().map(|c| to_line(c.as_ref())).collect();
        // Each line depends only on itself and the next line, so chunks of
        // lines can be tokenized on separate threads.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = if lines.len() < 2048 || threads < 2 {
            lines.len().max(1)
        } else {
            lines.len().div_ceil(threads)
        };
        let ranges: Vec<(usize, usize)> = (0..lines.len())
            .step_by(chunk)
            .map(|a| (a, (a + chunk).min(lines.len())))
            .collect();
        if ranges.len() <= 1 {
            return self.tokenize_range(&lines, 0, lines.len());
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = ranges
                .iter()
                .map(|&(a, b)| {
                    let lines = &lines;
                    scope.spawn(move || self.tokenize_range(lines, a, b))
                })
                .collect();
            let mut out = Vec::with_capacity(lines.len());
            for part in super::scoped::join_all(handles) {
                out.extend(part);
            }
            out
        })
    }

    fn tokenize_range(&self, lines: &[String], start: usize, end: usize) -> Vec<String> {
        let mut after = String::new();
        (start..end)
            .map(|i| {
                // The text after this line, as far as any rule can look: the
                // newline, the next line and, if there is one, its newline.
                after.clear();
                if let Some(next) = lines.get(i + 1) {
                    after.push('\n');
                    after.push_str(next);
                    if i + 2 < lines.len() {
                        after.push('\n');
                    }
                }
                self.line_tokens(&lines[i], &after).join(" ")
            })
            .collect()
    }

    /// One caption tokenized on its own (as the only line of the input).
    pub fn tokenize(&self, caption: &str) -> String {
        self.tokens(caption).join(" ")
    }

    /// The tokens of one caption tokenized on its own.
    pub fn tokens(&self, caption: &str) -> Vec<String> {
        self.line_tokens(&to_line(caption), "")
    }

    fn line_tokens(&self, line: &str, after: &str) -> Vec<String> {
        let mut raw = Vec::new();
        self.lexer.tokens(line, after, &mut raw);
        // The toolkit strips trailing whitespace from each output line before
        // splitting; only a last token ending in e.g. U+00A0 can notice.
        if let Some(last) = raw.last_mut() {
            let keep = last.trim_end_matches(is_python_whitespace).len();
            last.truncate(keep);
        }
        let mut out = Vec::with_capacity(raw.len());
        for t in raw {
            let t = java_lowercase(&t);
            if !PUNCTUATIONS.contains(&t.as_str()) {
                out.push(t);
            }
        }
        out
    }
}

/// Makes a caption one line. Every line-break character becomes a space. (The
/// toolkit only replaces `\n`; a `\r`, U+2028, U+2029, VT or FF inside a
/// caption makes the Java tokenizer emit an extra line, which shifts every
/// later caption onto the wrong image. That misalignment is not reproduced;
/// COCO files holding such captions are refused by `coco::match_results`.)
fn to_line(caption: &str) -> String {
    caption
        .chars()
        .map(|c| {
            if matches!(
                c,
                '\n' | '\r' | '\u{2028}' | '\u{2029}' | '\u{0B}' | '\u{0C}'
            ) {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// `String.toLowerCase(Locale.ENGLISH)`; Rust's full Unicode lower-casing
/// agrees with Java's on the cases that occur (including final sigma and
/// dotted capital I).
fn java_lowercase(s: &str) -> String {
    if s.is_ascii() {
        s.to_ascii_lowercase()
    } else {
        s.to_lowercase()
    }
}

/// Python's `str.isspace` (used by `str.split()` and `str.rstrip()`).
pub(crate) fn is_python_whitespace(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{1C}'..='\u{1F}')
}
