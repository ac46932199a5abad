//! Progress bars with one look across commands. Bars draw to stderr and hide
//! themselves when stderr is not a terminal (CI logs stay clean); commands print
//! a summary line at the end either way.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar counting `len` items of `unit` (e.g. "images").
pub fn bar(len: u64, what: &str, unit: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    let template = format!(
        "{{spinner}} {what:<14} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}})"
    );
    if let Ok(style) = ProgressStyle::with_template(&template) {
        pb.set_style(style);
    }
    pb
}
