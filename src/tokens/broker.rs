//! The broker as a token source: with `ECR_AUTH_BROKER=unix://PATH` (or
//! `broker = "unix://PATH"` in the config file) every face asks a running
//! `ecr-auth serve` instead of AWS. No AWS credentials, SDK, file cache, TLS or
//! async runtime on this path.
//!
//! Why a hand-written blocking HTTP/1.1 client instead of hyper: this runs in
//! the credential helper, which gitlab-runner starts for every image pull, so
//! its cost is process start-up. One request over a local unix socket to our
//! own server, with small known answers, needs a `UnixStream`, a request line
//! and a status line — not an async runtime and a client stack built for the
//! internet. `Connection: close` keeps the framing trivial (read to EOF).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{AuthToken, Origin, TokenError};
use crate::registry::Host;
use crate::secret::Secret;

/// The largest answer read from the broker (a token is ~2.5 KB).
const ANSWER_LIMIT: u64 = 256 * 1024;

/// A broker named by `unix://PATH`.
#[derive(Clone, Debug)]
pub struct BrokerClient {
    url: String,
    timeout: Duration,
}

#[derive(Deserialize)]
struct TokenAnswer {
    registry: String,
    username: String,
    password: String,
    expires_at: i64,
    #[serde(default)]
    issued_at: Option<i64>,
}

/// What the broker answered for one registry.
#[derive(Debug)]
pub enum Answer {
    Token(AuthToken),
    /// Not in its allow-list; the broker's reason.
    NotAllowed(String),
    /// Not ECR, not mapped, or no AWS credentials: the helper's "not found".
    NotFound(String),
    /// AWS (or the broker's credential chain) failed.
    Failed(String),
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
    message: String,
}

#[derive(Deserialize)]
struct Registries {
    registries: Vec<String>,
}

impl BrokerClient {
    /// `url` as the user wrote it; checked when used. `timeout` bounds every
    /// read and write (the broker's own cold deadline plus a margin).
    pub fn new(url: &str, timeout: Duration) -> BrokerClient {
        BrokerClient {
            url: url.trim().to_string(),
            timeout,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn socket(&self) -> Result<PathBuf, TokenError> {
        match self.url.strip_prefix("unix://") {
            Some(p) if p.starts_with('/') => Ok(PathBuf::from(p)),
            _ => Err(TokenError::Broker(format!(
                "the broker address {:?} (ECR_AUTH_BROKER or `broker` in the ecr-auth config file) is not unix:///ABSOLUTE/PATH; \
                 set it to the socket of `ecr-auth serve`, e.g. unix:///run/ecr-auth/broker.sock",
                self.url
            ))),
        }
    }

    /// The token for one registry host, as the broker answers it.
    pub fn token(&self, host: &Host, now: i64) -> Result<AuthToken, TokenError> {
        match self.ask(host, now)? {
            Answer::Token(t) => Ok(t),
            Answer::NotAllowed(message) | Answer::NotFound(message) => {
                Err(TokenError::BrokerNotFound(format!(
                    "the ecr-auth broker at {} says: {message}",
                    self.url
                )))
            }
            Answer::Failed(message) => Err(TokenError::Broker(format!(
                "the ecr-auth broker at {} could not get a token for {host}: {message}",
                self.url
            ))),
        }
    }

    /// The broker's answer for one registry host, each kind apart (doctor tells
    /// "not allowed" from "no credentials"); `Err` when there is no answer.
    pub fn ask(&self, host: &Host, now: i64) -> Result<Answer, TokenError> {
        let query: String = percent_encoding::utf8_percent_encode(
            host.as_str(),
            percent_encoding::NON_ALPHANUMERIC,
        )
        .to_string();
        let (status, body) = self.request(&format!("/v1/token?registry={query}"))?;
        if status == 200 {
            let t: TokenAnswer =
                serde_json::from_slice(&body).map_err(|_| self.unreadable(status))?;
            let _ = t.registry;
            return Ok(Answer::Token(AuthToken {
                host: host.clone(),
                username: t.username,
                password: Secret::new(t.password),
                issued_at: t.issued_at.unwrap_or(now),
                expires_at: t.expires_at,
                proxy_endpoint: None,
                origin: Origin::Broker,
            }));
        }
        let e: ErrorAnswer = serde_json::from_slice(&body).map_err(|_| self.unreadable(status))?;
        let message = crate::logging::escape_controls(e.message.as_bytes());
        let message = String::from_utf8_lossy(&message).into_owned();
        Ok(match e.error.as_str() {
            "not_allowed" => Answer::NotAllowed(message),
            "not_found" => Answer::NotFound(message),
            _ => Answer::Failed(message),
        })
    }

    /// The hosts the broker names (the helper's `list`).
    pub fn registries(&self) -> Result<Vec<String>, TokenError> {
        let (status, body) = self.request("/v1/registries")?;
        if status != 200 {
            return Err(self.unreadable(status));
        }
        let r: Registries = serde_json::from_slice(&body).map_err(|_| self.unreadable(status))?;
        Ok(r.registries)
    }

    fn unreadable(&self, status: u16) -> TokenError {
        TokenError::Broker(format!(
            "the ecr-auth broker at {} answered HTTP {status} with something that is not its API; \
             check that ECR_AUTH_BROKER names the socket of `ecr-auth serve`",
            self.url
        ))
    }

    /// One GET; the status and body.
    fn request(&self, path: &str) -> Result<(u16, Vec<u8>), TokenError> {
        let socket = self.socket()?;
        let fail = |what: &str, e: std::io::Error| {
            TokenError::Broker(format!(
                "cannot reach the ecr-auth broker at {}: {what}: {e}. Check that `ecr-auth serve` is running \
                 and that its socket is mounted here (ECR_AUTH_BROKER)",
                self.url
            ))
        };
        let mut stream = UnixStream::connect(&socket).map_err(|e| fail("cannot connect", e))?;
        stream
            .set_read_timeout(Some(self.timeout))
            .and_then(|()| stream.set_write_timeout(Some(self.timeout)))
            .map_err(|e| fail("cannot set a timeout", e))?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: ecr-auth-broker\r\nUser-Agent: ecr-auth/{}\r\nConnection: close\r\n\r\n",
            crate::VERSION
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| fail("cannot send the request", e))?;
        let mut raw = Vec::new();
        (&mut stream)
            .take(ANSWER_LIMIT)
            .read_to_end(&mut raw)
            .map_err(|e| fail("no complete answer", e))?;
        parse_response(&raw).ok_or_else(|| {
            TokenError::Broker(format!(
                "the ecr-auth broker at {} sent an answer that is not HTTP/1.1 (or it closed the connection early); \
                 check that ECR_AUTH_BROKER names the socket of `ecr-auth serve`",
                self.url
            ))
        })
    }
}

/// Status and body of a whole `Connection: close` answer (Content-Length or
/// read to EOF; the broker never sends chunked answers to HTTP/1.1 clients
/// that close).
fn parse_response(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status: u16 = parts.next()?.parse().ok()?;
    let mut body = raw[end + 4..].to_vec();
    for line in lines {
        let (k, v) = line.split_once(':')?;
        if k.trim().eq_ignore_ascii_case("content-length") {
            let n: usize = v.trim().parse().ok()?;
            if body.len() < n {
                return None;
            }
            body.truncate(n);
        }
        if k.trim().eq_ignore_ascii_case("transfer-encoding") {
            return None;
        }
    }
    Some((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_whole_answers_only() {
        let ok =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(ok), Some((200, b"{}".to_vec())));
        let short = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}";
        assert_eq!(parse_response(short), None);
        assert_eq!(parse_response(b"garbage"), None);
        assert_eq!(parse_response(b"SSH-2.0\r\n\r\n"), None);
    }

    #[test]
    fn an_unreachable_broker_is_named_with_advice() {
        let tmp = tempfile::tempdir().unwrap();
        let url = format!("unix://{}/none.sock", tmp.path().display());
        let c = BrokerClient::new(&url, Duration::from_secs(1));
        let e = c
            .token(
                &Host::parse("123456789012.dkr.ecr.eu-west-1.amazonaws.com").unwrap(),
                0,
            )
            .unwrap_err();
        assert!(!e.is_not_found());
        let e = e.to_string();
        assert!(
            e.contains(&url) && e.contains("`ecr-auth serve` is running"),
            "{e}"
        );
        let e = BrokerClient::new("tcp://1.2.3.4:5", Duration::from_secs(1))
            .registries()
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not unix:///ABSOLUTE/PATH"), "{e}");
    }
}
