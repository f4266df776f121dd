//! Diagnostics on stderr (or a file when asked), never on stdout: stdout
//! carries protocol output (helper JSON, passwords, documents).
//!
//! `ECR_AUTH_LOG=error|warn|info|debug` picks the level (default `warn`: one line
//! per failure); `ECR_AUTH_LOG_FILE=PATH` appends to a 0600 file instead, which
//! helps where the caller swallows stderr (gitlab-runner calling the helper).

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;

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

/// Installs the global subscriber. Our own messages show at the chosen level.
/// The AWS SDK and HTTP crates show nothing below `debug`: their warnings are
/// `Debug` dumps of SDK types ("provider failed to provide credentials …
/// (ProviderError(ProviderError { source: … }))"), and what they say reaches the
/// user anyway as our own sentence. At `debug` they show from `warn` up, at
/// `trace` from `info` — never their debug or trace output, which prints the
/// access key id and, at trace, whole response bodies with the tokens in them.
pub fn init(env: &Env, format: Format) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;

    let level = level(env);
    let others = match level {
        LevelFilter::TRACE => LevelFilter::INFO,
        LevelFilter::DEBUG => LevelFilter::WARN,
        _ => LevelFilter::OFF,
    };
    let filter = Targets::new()
        .with_target("ecr_auth", level)
        .with_default(others);
    let file = env
        .get("ECR_AUTH_LOG_FILE")
        .and_then(|path| match open_log_file(path) {
            Ok(f) => Some(std::sync::Arc::new(f)),
            Err(e) => {
                eprintln!("ecr-auth: not writing diagnostics to ECR_AUTH_LOG_FILE: {e}");
                None
            }
        });
    let layer = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(false);
    let registry = tracing_subscriber::registry();
    let result = match (format, file) {
        (Format::Json, Some(f)) => registry
            .with(
                layer
                    .json()
                    .with_writer(move || SharedFile(f.clone()))
                    .with_filter(filter),
            )
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
            .with(
                layer
                    .with_writer(move || Escaped(SharedFile(f.clone())))
                    .with_filter(filter),
            )
            .try_init(),
        (Format::Text, None) => registry
            .with(
                layer
                    .without_time()
                    .with_writer(|| Escaped(std::io::stderr()))
                    .with_filter(filter),
            )
            .try_init(),
    };
    // A second init (tests, or a caller that set one up) keeps the first.
    let _ = result;
}

/// Opens the log file to append to it: never through a symlink, only a regular
/// file of ours (or root's), narrowed to 0600 if it was wider.
fn open_log_file(path: &str) -> Result<std::fs::File, String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut options = OpenOptions::new();
    options.create(true).append(true).mode(0o600);
    let (file, meta) = crate::files::open_regular_of_ours(std::path::Path::new(path), &mut options)
        .map_err(|e| e.to_string())?;
    if meta.mode() & 0o077 != 0 && meta.uid() == crate::files::euid() {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("cannot narrow the mode of {path}: {e}"))?;
    }
    Ok(file)
}

/// The log file, shared by the writer handles the subscriber makes.
struct SharedFile(std::sync::Arc<std::fs::File>);

impl std::io::Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        (&*self.0).flush()
    }
}

/// Escapes control characters in a formatted log line (all but its final
/// newline), so text that came from outside — a `ServerURL` on stdin, a host
/// name, an error from a server — cannot forge a log line or a terminal
/// sequence. The formatter writes each event with one `write_all`.
struct Escaped<W>(W);

impl<W: std::io::Write> std::io::Write for Escaped<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(&escape_controls(buf))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

pub(crate) fn escape_controls(buf: &[u8]) -> Vec<u8> {
    let (body, end) = match buf.split_last() {
        Some((b'\n', body)) => (body, &b"\n"[..]),
        _ => (buf, &b""[..]),
    };
    let mut out = Vec::with_capacity(buf.len());
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.push(b'\t'),
            0..=0x1f | 0x7f => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out.extend_from_slice(end);
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_forge_lines() {
        assert_eq!(
            escape_controls(b"store for evil\nWARN forged\x1b[31m\n"),
            b"store for evil\\nWARN forged\\x1b[31m\n".to_vec()
        );
        assert_eq!(escape_controls(b"plain"), b"plain".to_vec());
        assert_eq!(escape_controls(b"tab\tok\r\n"), b"tab\tok\\r\n".to_vec());
    }

    #[test]
    fn the_log_file_is_never_followed_and_narrowed_to_0600() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "root only\n").unwrap();
        let link = dir.path().join("log");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let e = open_log_file(link.to_str().unwrap()).unwrap_err();
        assert!(e.ends_with("is a symbolic link"), "{e}");
        let wide = dir.path().join("wide.log");
        std::fs::write(&wide, "").unwrap();
        std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o644)).unwrap();
        open_log_file(wide.to_str().unwrap()).unwrap();
        assert_eq!(std::fs::metadata(&wide).unwrap().mode() & 0o777, 0o600);
    }
}
