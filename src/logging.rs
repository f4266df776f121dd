//! Diagnostics on stderr (or a file when asked), never on stdout: stdout
//! carries protocol output (helper JSON, passwords, documents).
//!
//! `ECR_AUTH_LOG=error|warn|info|debug` picks the level (default `warn`: one line
//! per failure); `ECR_AUTH_LOG_FILE=PATH` appends to a 0600 file instead, which
//! helps where the caller swallows stderr (gitlab-runner calling the helper).

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

use tracing::level_filters::LevelFilter;

use crate::env::Env;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

pub fn level(env: &Env) -> LevelFilter {
    match env
        .get("ECR_AUTH_LOG")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("error") => LevelFilter::ERROR,
        Some("info") => LevelFilter::INFO,
        Some("debug") => LevelFilter::DEBUG,
        Some("trace") => LevelFilter::TRACE,
        Some("off") | Some("none") => LevelFilter::OFF,
        _ => LevelFilter::WARN,
    }
}

/// Installs the global subscriber. Only our own crate logs above `warn`
/// unless `debug` is asked for (the AWS SDK is chatty at `info`).
pub fn init(env: &Env, format: Format) {
    let level = level(env);
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .with_ansi(false);
    let file = env.get("ECR_AUTH_LOG_FILE").and_then(|path| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .ok()
    });
    let result = match (format, file) {
        (Format::Json, Some(f)) => builder.json().with_writer(Mutex::new(f)).try_init(),
        (Format::Json, None) => builder.json().with_writer(std::io::stderr).try_init(),
        (Format::Text, Some(f)) => builder.with_writer(Mutex::new(f)).try_init(),
        (Format::Text, None) => builder
            .without_time()
            .with_writer(std::io::stderr)
            .try_init(),
    };
    let _ = result;
}
