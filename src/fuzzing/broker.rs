//! Fuzz target for the token broker's requests: raw bytes on its socket, served
//! by the real HTTP server code ([`crate::broker::server::serve_bytes`]) over a
//! broker whose AWS is a fixed fetcher.

use std::sync::{Arc, OnceLock};

use serde_json::Value as Json;

use crate::broker::allow::AllowList;
use crate::broker::server::serve_bytes;
use crate::broker::{Broker, Scopes};
use crate::clock::ManualClock;
use crate::config::Config;
use crate::env::Env;
use crate::tokens::{Fetch, FetchRequest, Fetched, TokenError, Tokens};

/// AWS as a function: a token for every region, except `eu-central-1`, which fails.
struct Aws;

impl Fetch for Aws {
    fn fetch(&self, requests: &[FetchRequest]) -> Vec<Result<Fetched, TokenError>> {
        requests
            .iter()
            .map(|r| {
                if r.target.region() == "eu-central-1" {
                    return Err(TokenError::Aws {
                        what: "ECR GetAuthorizationToken in eu-central-1".into(),
                        cause: "throttled".into(),
                        advice: "Try again later.".into(),
                    });
                }
                Ok(Fetched {
                    username: "AWS".into(),
                    password: format!("broker-fuzz-password-{}", r.target.region()),
                    expires_at: Some(1_000_000 + 43_200),
                    proxy_endpoint: None,
                })
            })
            .collect()
    }
}

fn broker() -> &'static (tokio::runtime::Runtime, Arc<Broker>) {
    static B: OnceLock<(tokio::runtime::Runtime, Arc<Broker>)> = OnceLock::new();
    B.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime");
        let tokens = Tokens::builder(
            Env::from_pairs([("HOME", "/nonexistent"), ("AWS_ACCESS_KEY_ID", "AKIDFUZZ")]),
            Config::default(),
        )
        .cache(None)
        .in_memory()
        .broker(None)
        .clock(ManualClock::new(1_000_000))
        .fetcher(Box::new(Aws))
        .build();
        let allow = AllowList::new(
            &[
                "*.dkr.ecr.eu-west-1.amazonaws.com".into(),
                "*.dkr.ecr.eu-central-1.amazonaws.com".into(),
            ],
            &[],
            &[],
            false,
        )
        .expect("an allow-list");
        (rt, Broker::new(tokens, allow, Scopes::default()))
    })
}

/// One answer read back: status, headers (lower-case names), body.
struct Answer {
    version: u8,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    /// The server closes the connection after this answer.
    fn closes(&self) -> bool {
        self.version == 0
            || self
                .header("connection")
                .is_some_and(|c| c.eq_ignore_ascii_case("close"))
    }
}

/// Splits what the broker wrote into answers; panics on anything that is not
/// a sequence of whole HTTP/1.x answers with a Content-Length.
fn answers(mut out: &[u8]) -> Vec<Answer> {
    let mut all = Vec::new();
    while !out.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut headers);
        let n = match r.parse(out) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!(
                "not an HTTP answer ({other:?}): {:?}",
                String::from_utf8_lossy(out)
            ),
        };
        let headers: Vec<(String, String)> = r
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("an answer without a Content-Length: {headers:?}"));
        assert!(out.len() >= n + len, "a cut answer");
        all.push(Answer {
            version: r.version.unwrap_or(1),
            status: r.code.unwrap_or(0),
            headers,
            body: out[n..n + len].to_vec(),
        });
        out = &out[n + len..];
    }
    all
}

/// The requests in `input`, read the way an HTTP/1.1 server reads them: for
/// each whole request, whether it carried a body; they end at one that closes,
/// is malformed (it gets a refusal) or is chunked; `partial`: the input then
/// ends inside another request.
fn requests(mut input: &[u8]) -> (Vec<bool>, bool) {
    let mut all = Vec::new();
    loop {
        // Empty lines before a request are ignored (RFC 9112 §2.2).
        while let Some(rest) = input
            .strip_prefix(b"\r\n")
            .or_else(|| input.strip_prefix(b"\n"))
        {
            input = rest;
        }
        if input.is_empty() {
            return (all, false);
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Request::new(&mut headers);
        match r.parse(input) {
            Ok(httparse::Status::Complete(n)) => {
                let named = |name: &str| {
                    r.headers
                        .iter()
                        .filter(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
                        .collect::<Vec<_>>()
                };
                let lengths = named("content-length");
                let chunked = !named("transfer-encoding").is_empty();
                // `Connection` is a comma-separated list of tokens (RFC 9110 §7.6.1).
                let closes = r.version == Some(0)
                    || named("connection")
                        .iter()
                        .any(|c| c.split(',').any(|t| t.trim() == "close"));
                let length = match lengths.as_slice() {
                    [] => Some(0),
                    [l] => l.trim().parse::<usize>().ok(),
                    _ => None,
                };
                let Some(length) = length else {
                    // A length it cannot read: refused.
                    all.push(true);
                    return (all, false);
                };
                all.push(length > 0 || chunked);
                if closes {
                    return (all, false);
                }
                input = &input[n..];
                // A server may read a body it refused, then go on.
                let body = if chunked {
                    chunked_length(input)
                } else {
                    (input.len() >= length).then_some(length)
                };
                let Some(body) = body else {
                    return (all, false);
                };
                input = &input[body..];
            }
            Ok(httparse::Status::Partial) => return (all, true),
            Err(_) => {
                all.push(false);
                return (all, false);
            }
        }
    }
}

/// The length of a whole chunked body at the start of `input` (chunks, the
/// last one empty, trailers), or `None` if it is cut or malformed.
fn chunked_length(input: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let (n, size) = match httparse::parse_chunk_size(&input[at..]) {
            Ok(httparse::Status::Complete(c)) => c,
            _ => return None,
        };
        at += n;
        if size == 0 {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            return match httparse::parse_headers(&input[at..], &mut headers) {
                Ok(httparse::Status::Complete((n, _))) => Some(at + n),
                _ => None,
            };
        }
        let size = usize::try_from(size).ok()?;
        if input.len() < at + size + 2 || &input[at + size..at + size + 2] != b"\r\n" {
            return None;
        }
        at += size + 2;
    }
}

/// The broker's requests: never panics, never holds a connection past its
/// timeout; what it writes back is a
/// sequence of whole HTTP answers, one per request it read (it may stop early
/// only after an answer that closes the connection or refuses a request it
/// could not read); each answer is one the API documents — JSON errors
/// `{"error","message"}`, a token, the registry list, `ok`, or metrics.
pub(crate) fn broker_requests(input: &[u8]) {
    let (rt, b) = broker();
    // On the paused clock: the server must close within its connection
    // timeout, whatever the client sent.
    let limit = crate::broker::server::Limits::default().connection_timeout
        + std::time::Duration::from_secs(1);
    let out = rt.block_on(async {
        tokio::time::timeout(limit, serve_bytes(b.clone(), input))
            .await
            .unwrap_or_else(|_| panic!("the connection stayed open past {limit:?}"))
    });
    let got = answers(&out);
    let (reqs, partial) = requests(input);
    let whole = reqs.len();
    let shown = || String::from_utf8_lossy(input).into_owned();
    assert!(
        got.len() <= whole + usize::from(partial),
        "{} answers to {whole} requests: {:?}",
        got.len(),
        shown()
    );
    if whole > 0 {
        assert!(
            !got.is_empty(),
            "no answer to {whole} requests: {:?}",
            shown()
        );
    }
    for (i, a) in got.iter().enumerate() {
        if i + 1 < got.len() {
            assert!(
                !a.closes(),
                "an answer after one that closed: {:?}",
                shown()
            );
        }
        check_answer(a, &shown);
    }
    if let Some(last) = got.last() {
        if got.len() < whole {
            // A server may close instead of reading a body it refused.
            let had_body = reqs[got.len() - 1];
            assert!(
                last.closes() || had_body || matches!(last.status, 400 | 413 | 431 | 505),
                "stopped after {} of {whole} requests with a {}: {:?}",
                got.len(),
                last.status,
                shown()
            );
        }
    }
}

fn check_answer(a: &Answer, shown: &dyn Fn() -> String) {
    let ctype = a.header("content-type").unwrap_or("");
    match a.status {
        200 if ctype == "application/json" => {
            let v: Json = serde_json::from_slice(&a.body).expect("JSON");
            let token = v.get("password").is_some()
                && v["registry"].is_string()
                && v["username"] == "AWS"
                && v["expires_at"].is_i64();
            assert!(
                token || v["registries"].is_array(),
                "an unknown 200: {v} for {:?}",
                shown()
            );
        }
        200 => assert!(
            ctype.starts_with("text/plain") && !a.body.is_empty(),
            "{ctype:?} for {:?}",
            shown()
        ),
        400 | 403 | 404 | 405 | 413 | 502 if ctype == "application/json" => {
            let v: Json = serde_json::from_slice(&a.body).expect("a JSON error");
            let kind = v["error"].as_str().unwrap_or("");
            assert!(
                [
                    "bad_request",
                    "not_allowed",
                    "not_found",
                    "failed",
                    "no_such_path"
                ]
                .contains(&kind)
                    && v["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{v} for {:?}",
                shown()
            );
        }
        // hyper's own refusals of what it cannot read: no body of ours.
        400 | 413 | 431 | 505 => assert!(a.body.is_empty(), "{:?}", shown()),
        s => panic!("status {s} for {:?}", shown()),
    }
}
