//! Logs: `tracing` to stderr, one line per event, without colours when stderr is not a
//! terminal (journald adds its own timestamps and levels). `--log-format json` writes one JSON
//! object per line instead (for log shippers). Events carry `channel`, `user` and `transport`
//! fields where they concern one; a shard's events are inside its `shard{index}` span.

use std::io::IsTerminal;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

pub fn init(filter: &str) {
    init_with(filter, LogFormat::Text);
}

pub fn init_with(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_ansi(false)
            .try_init(),
    };
}
