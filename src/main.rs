use clap::Parser;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DICOFLOW_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = dicoflow::cli::Cli::parse();
    if let Err(e) = dicoflow::cli::run(cli) {
        eprintln!("error: {}", dicoflow_metrics::cli::error_line(&e));
        std::process::exit(1);
    }
}
