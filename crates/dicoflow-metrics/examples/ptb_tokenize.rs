//! Tokenizes captions as one call of the toolkit's PTB tokenizer would.
//!
//! Input: one JSON string per line on stdin. Output: the tokenized caption
//! as a JSON string per line. Used by
//! `tests/fixtures/metrics/ptb_differential.py` to compare with the Java
//! tokenizer on large generated inputs.
use std::io::{BufRead, Write};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut captions: Vec<String> = Vec::new();
    for line in std::io::stdin().lock().lines() {
        captions.push(serde_json::from_str(&line?)?);
    }
    let tokens = dicoflow_metrics::PtbTokenizer::new().tokenize_batch(&captions);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for t in tokens {
        writeln!(out, "{}", serde_json::to_string(&t)?)?;
    }
    Ok(())
}
