//! Logs: `tracing` to stderr, one line per event, without colours when stderr is not a
//! terminal (journald adds its own timestamps and levels). `--log-format json` writes one JSON
//! object per line instead (for log shippers). Events carry `channel`, `user` and `transport`
//! fields where they concern one; a shard's events are inside its `shard{index}` span.
//!
//! A closed stderr (its reader went away: a pipe to a log shipper that died) must not stop
//! choir: a line that cannot be written is dropped. tracing-subscriber's default would report
//! the failure with `eprintln!`, which panics on that same stderr, inside the panic hook that
//! logs panics through tracing: the process aborted.

use std::io::{IsTerminal, Write};

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
        .with_writer(|| Stderr)
        .log_internal_errors(false)
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

/// stderr, where a write that fails (EPIPE: nobody reads it any more) drops the line.
struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(std::io::stderr().write(buf).unwrap_or(buf.len()))
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let _ = std::io::stderr().write_all(buf);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}
