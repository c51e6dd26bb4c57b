//! Structured logs: one `tracing` subscriber for the `weir` binary, writing to stderr as text
//! (for people) or JSON lines (for log shippers), filtered with `RUST_LOG`-style directives
//! (`--log-filter`, else `WEIR_LOG`, else `RUST_LOG`, else `info`).
//!
//! The engine logs through `tracing` macros with the target `weir::<module>`; the fields every
//! line about a job carries are `job` (name) and, in the daemon, `job_id`.
//!
//! Invariants: logging never runs on the per-record path (only at lifecycle events: start,
//! restore, checkpoint problems, savepoints, progress every few seconds); initialising twice
//! is harmless (the second call is ignored), so library users and tests may install their own
//! subscriber.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `2024-05-01T10:00:00.123Z  INFO weir::daemon: message key=value` (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with `message`).
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format `{other}`: use text or json")),
        }
    }
}

/// The filter directives in force: `explicit`, else `WEIR_LOG`, else `RUST_LOG`, else `info`.
pub fn filter_directives(explicit: Option<&str>) -> String {
    explicit
        .map(str::to_string)
        .or_else(|| std::env::var("WEIR_LOG").ok().filter(|v| !v.is_empty()))
        .or_else(|| std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "info".to_string())
}

/// Install the process-wide subscriber writing to stderr. Errors name the bad directive.
pub fn init(format: LogFormat, explicit_filter: Option<&str>) -> Result<(), String> {
    let directives = filter_directives(explicit_filter);
    let filter = EnvFilter::builder().parse(&directives).map_err(|e| format!("log filter `{directives}`: {e}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
    // Already installed (a second call, or a test harness's own subscriber): keep that one.
    let _ = result;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_filters_parse() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert!("xml".parse::<LogFormat>().unwrap_err().contains("text or json"));
        assert_eq!(filter_directives(Some("weir=debug")), "weir=debug");
        assert!(EnvFilter::builder().parse("weir=debug,info").is_ok());
    }
}
