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

/// Installs the global subscriber. Our own messages show at the chosen level;
/// the AWS SDK and HTTP crates only from `warn` up, or `info` when `trace` is
/// asked for — never their debug or trace output, which prints the access key
/// id and, at trace, whole response bodies with the tokens in them.
pub fn init(env: &Env, format: Format) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;

    let level = level(env);
    let others = if level == LevelFilter::TRACE {
        LevelFilter::INFO
    } else {
        std::cmp::min(level, LevelFilter::WARN)
    };
    let filter = Targets::new()
        .with_target("ecr_auth", level)
        .with_default(others);
    let file = env.get("ECR_AUTH_LOG_FILE").and_then(|path| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .ok()
    });
    let layer = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(false);
    let registry = tracing_subscriber::registry();
    let result = match (format, file) {
        (Format::Json, Some(f)) => registry
            .with(layer.json().with_writer(Mutex::new(f)).with_filter(filter))
            .try_init(),
        (Format::Json, None) => registry
            .with(
                layer
                    .json()
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
        (Format::Text, Some(f)) => registry
            .with(layer.with_writer(Mutex::new(f)).with_filter(filter))
            .try_init(),
        (Format::Text, None) => registry
            .with(
                layer
                    .without_time()
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
    };
    // A second init (tests, or a caller that set one up) keeps the first.
    let _ = result;
}

/// A `Write` for diagnostics written line by line (the credential helper's
/// stderr): each line becomes a `warn` event, so it follows `ECR_AUTH_LOG`
/// and lands in `ECR_AUTH_LOG_FILE` when that is set — where gitlab-runner,
/// which swallows a helper's stderr, cannot lose it.
#[derive(Default)]
pub struct Diagnostics {
    pending: Vec<u8>,
}

impl Diagnostics {
    fn emit(&mut self, upto: usize) {
        let line: Vec<u8> = self.pending.drain(..upto).collect();
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        if !text.is_empty() {
            tracing::warn!("{text}");
        }
    }
}

impl std::io::Write for Diagnostics {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        while let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
            self.emit(i + 1);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let n = self.pending.len();
        self.emit(n);
        Ok(())
    }
}

impl Drop for Diagnostics {
    fn drop(&mut self) {
        let n = self.pending.len();
        self.emit(n);
    }
}
