//! Log output of the CLI and the daemon (tracing to stderr).

use crate::config::LogFormat;
use std::io::IsTerminal;

/// Logs to stderr in `format`; `RUST_LOG` overrides `default_filter`. Colour only on
/// a terminal: under systemd stderr is the journal, which would keep the escape codes.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Human => b.init(),
    }
}
