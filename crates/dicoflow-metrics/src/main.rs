//! `dicoflow-eval`: the caption metrics of `dicoflow eval` (BLEU, METEOR,
//! ROUGE-L, CIDEr-D: same flags, JSON, per-image file and errors), in a
//! binary without libtorch, so that it starts in milliseconds.

use clap::Parser;

/// Score a COCO results file against COCO caption annotations with the COCO
/// caption toolkit's metrics. CLIP-S and PAC-S: `dicoflow eval`.
#[derive(Parser, Debug)]
#[command(name = "dicoflow-eval", version)]
struct Cli {
    #[command(flatten)]
    args: dicoflow_metrics::cli::CaptionArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match dicoflow_metrics::cli::run(&cli.args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", dicoflow_metrics::cli::error_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap's own consistency checks (unique argument and group names).
    #[test]
    fn command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
