//! The Docker credential-helper protocol (docker/docker-credential-helpers):
//! wire types and the verb loop, with the token core behind one trait.
//!
//! - the verb is argv[1]; `get`/`erase` read a server URL on stdin, `store` the
//!   JSON that `get` writes, `list` reads (and ignores) stdin;
//! - `get` writes one JSON line `{"ServerURL","Username","Secret"}`;
//! - every error exits 1 with its message on **stdout**; the exact text
//!   [`NOT_FOUND`] means "not mine / none", and clients then go on without
//!   credentials. gitlab-runner drops the *whole* DOCKER_AUTH_CONFIG on any other
//!   error, so "not an ECR host" and "no AWS credentials" must be not-found, with
//!   the real reason on **stderr**.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::secret::Secret;
use crate::tokens::{TokenError, Tokens};

/// The message clients recognise as "no credentials here".
pub const NOT_FOUND: &str = "credentials not found in native keychain";

/// Limit on what we read from stdin: a server URL or a credentials JSON.
const STDIN_LIMIT: u64 = 64 * 1024;

/// What `get` prints and `store` reads.
#[derive(Serialize, Deserialize)]
pub struct Credentials {
    #[serde(rename = "ServerURL")]
    pub server_url: String,
    #[serde(rename = "Username")]
    pub username: String,
    #[serde(rename = "Secret")]
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("server_url", &self.server_url)
            .field("username", &self.username)
            .field("secret", &"REDACTED")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// Not ours, or nothing to give: stdout says [`NOT_FOUND`], stderr says why.
    #[error("{NOT_FOUND}")]
    NotFound { reason: String },
    /// Broken: the message goes to stdout (and is what docker shows).
    #[error("{0}")]
    Failed(String),
}

impl From<TokenError> for HelperError {
    fn from(e: TokenError) -> Self {
        if e.is_not_found() {
            HelperError::NotFound {
                reason: e.to_string(),
            }
        } else {
            HelperError::Failed(format!("ecr-auth: {e}"))
        }
    }
}

/// The token core as the helper sees it.
pub trait Provider {
    /// Credentials for a server URL as clients send it.
    fn get(&self, server_url: &str) -> Result<(String, Secret<String>), HelperError>;
    /// Whether a server URL is one this helper answers for (no network).
    fn is_mine(&self, server_url: &str) -> bool;
    /// Hosts and user names it can answer for, without the network.
    fn list(&self) -> BTreeMap<String, String>;
}

impl Provider for Tokens {
    fn get(&self, server_url: &str) -> Result<(String, Secret<String>), HelperError> {
        let token = Tokens::get(self, server_url)?;
        Ok((token.username, token.password))
    }

    fn is_mine(&self, server_url: &str) -> bool {
        // ECR or mapped here (through a broker any host resolves: not a reason to claim it).
        crate::registry::Host::parse(server_url).is_ok_and(|h| self.config().resolve(&h).is_some())
    }

    fn list(&self) -> BTreeMap<String, String> {
        self.known_hosts()
            .into_iter()
            .map(|h| (h, "AWS".to_string()))
            .collect()
    }
}

pub const USAGE: &str = "Usage: docker-credential-ecr-login <get|store|erase|list|version>

A Docker credential helper for Amazon ECR (ecr-auth).
  get      read a registry URL on stdin, print {\"ServerURL\",\"Username\",\"Secret\"}
  list     print the registries known without the network
  store    accepted and ignored for ECR hosts (tokens come from AWS)
  erase    accepted and ignored for ECR hosts
  version  print the version
";

/// Runs one verb. Returns the exit code; writes the protocol to `out` and
/// diagnostics to `err`.
pub fn run(
    verb: &str,
    provider: &dyn Provider,
    ignore_creds_storage: bool,
    stdin: &mut dyn Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let result =
        match verb {
            "get" => read_server_url(stdin).and_then(|url| get(provider, &url, out)),
            "list" => list(provider, out),
            "store" => read_stdin(stdin)
                .and_then(|input| store(provider, &input, ignore_creds_storage, err)),
            "erase" => read_server_url(stdin)
                .and_then(|url| erase(provider, &url, ignore_creds_storage, err)),
            "version" | "--version" | "-v" => {
                let _ = writeln!(
                    out,
                    "ecr-auth {} (docker-credential-ecr-login compatible)",
                    crate::VERSION
                );
                Ok(())
            }
            "help" | "--help" | "-h" => {
                let _ = out.write_all(USAGE.as_bytes());
                Ok(())
            }
            other => Err(HelperError::Failed(format!(
                "unknown credential helper verb {:?}; expected get, store, erase, list or version",
                other
            ))),
        };
    match result {
        Ok(()) => 0,
        // Messages may quote what came in on stdin: one line each, control
        // characters escaped, so no input can forge a line of the log.
        Err(HelperError::NotFound { reason }) => {
            let _ = writeln!(out, "{NOT_FOUND}");
            let _ = writeln!(err, "ecr-auth: {}", one_line(&reason));
            1
        }
        Err(HelperError::Failed(message)) => {
            let message = one_line(&message);
            let _ = writeln!(out, "{message}");
            let _ = writeln!(err, "{message}");
            1
        }
    }
}

fn one_line(text: &str) -> String {
    String::from_utf8_lossy(&crate::logging::escape_controls(text.as_bytes())).into_owned()
}

fn read_stdin(stdin: &mut dyn Read) -> Result<String, HelperError> {
    let mut buf = Vec::new();
    stdin
        .take(STDIN_LIMIT)
        .read_to_end(&mut buf)
        .map_err(|e| HelperError::Failed(format!("ecr-auth: cannot read stdin: {e}")))?;
    String::from_utf8(buf).map_err(|_| {
        HelperError::Failed("ecr-auth: stdin is not UTF-8 text; expected a registry URL".into())
    })
}

fn read_server_url(stdin: &mut dyn Read) -> Result<String, HelperError> {
    let text = read_stdin(stdin)?;
    let url = text.trim();
    if url.is_empty() {
        return Err(HelperError::Failed(
            "ecr-auth: no server URL on stdin; expected e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com".into(),
        ));
    }
    if url.contains('\n') {
        return Err(HelperError::Failed(
            "ecr-auth: expected one server URL on stdin, got several lines".into(),
        ));
    }
    Ok(url.to_string())
}

fn get(provider: &dyn Provider, url: &str, out: &mut dyn Write) -> Result<(), HelperError> {
    let (username, secret) = provider.get(url)?;
    let creds = Credentials {
        server_url: url.to_string(),
        username,
        secret: secret.into_inner(),
    };
    let line = serde_json::to_string(&creds).map_err(|e| HelperError::Failed(e.to_string()))?;
    writeln!(out, "{line}")
        .map_err(|e| HelperError::Failed(format!("ecr-auth: cannot write stdout: {e}")))
}

fn list(provider: &dyn Provider, out: &mut dyn Write) -> Result<(), HelperError> {
    let line =
        serde_json::to_string(&provider.list()).map_err(|e| HelperError::Failed(e.to_string()))?;
    writeln!(out, "{line}")
        .map_err(|e| HelperError::Failed(format!("ecr-auth: cannot write stdout: {e}")))
}

/// `docker login` to an ECR host calls `store`: tokens come from AWS, so there
/// is nothing to keep, but failing would break `docker login`.
fn store(
    provider: &dyn Provider,
    input: &str,
    ignore: bool,
    err: &mut dyn Write,
) -> Result<(), HelperError> {
    let creds: Credentials = serde_json::from_str(input.trim()).map_err(|e| {
        HelperError::Failed(format!(
            "ecr-auth: cannot parse the credentials on stdin ({e}); expected {{\"ServerURL\":…,\"Username\":…,\"Secret\":…}}"
        ))
    })?;
    if ignore {
        return Ok(());
    }
    if provider.is_mine(&creds.server_url) {
        let _ = writeln!(
            err,
            "ecr-auth: not storing credentials for {}: ECR tokens are fetched from AWS on demand",
            one_line(creds.server_url.trim())
        );
        return Ok(());
    }
    Err(HelperError::Failed(format!(
        "ecr-auth: cannot store credentials for {}: this helper only serves Amazon ECR; \
         use credHelpers for ECR hosts instead of credsStore, or set AWS_ECR_IGNORE_CREDS_STORAGE=true",
        creds.server_url.trim()
    )))
}

fn erase(
    provider: &dyn Provider,
    url: &str,
    ignore: bool,
    err: &mut dyn Write,
) -> Result<(), HelperError> {
    if ignore {
        return Ok(());
    }
    if provider.is_mine(url) {
        let _ = writeln!(
            err,
            "ecr-auth: nothing to erase for {url}: ECR tokens are not stored"
        );
        return Ok(());
    }
    Err(HelperError::NotFound {
        reason: format!("{url} is not an Amazon ECR registry; nothing to erase"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers for one host only.
    struct One;
    impl Provider for One {
        fn get(&self, url: &str) -> Result<(String, Secret<String>), HelperError> {
            match url {
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com" => {
                    Ok(("AWS".into(), Secret::new("pa\"ss".into())))
                }
                "nocreds.example" => Err(TokenError::NoCredentials {
                    tried: "env".into(),
                    explained: None,
                }
                .into()),
                "broken.example" => Err(TokenError::Aws {
                    what: "getting".into(),
                    cause: "AccessDenied".into(),
                    advice: "fix it".into(),
                }
                .into()),
                _ => Err(TokenError::NotEcr { host: url.into() }.into()),
            }
        }
        fn is_mine(&self, url: &str) -> bool {
            url.contains(".dkr.ecr.")
        }
        fn list(&self) -> BTreeMap<String, String> {
            [(
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com".to_string(),
                "AWS".to_string(),
            )]
            .into()
        }
    }

    fn call(verb: &str, stdin: &[u8], ignore: bool) -> (i32, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(verb, &One, ignore, &mut &stdin[..], &mut out, &mut err);
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn get_prints_exact_json() {
        let (code, out, err) = call(
            "get",
            b"123456789012.dkr.ecr.eu-west-1.amazonaws.com\n",
            false,
        );
        assert_eq!(code, 0);
        assert_eq!(
            out,
            "{\"ServerURL\":\"123456789012.dkr.ecr.eu-west-1.amazonaws.com\",\"Username\":\"AWS\",\"Secret\":\"pa\\\"ss\"}\n"
        );
        assert_eq!(err, "");
    }

    #[test]
    fn not_mine_and_no_credentials_are_not_found_with_reason_on_stderr() {
        for host in ["docker.io", "nocreds.example"] {
            let (code, out, err) = call("get", host.as_bytes(), false);
            assert_eq!(code, 1);
            assert_eq!(out, "credentials not found in native keychain\n");
            assert!(err.starts_with("ecr-auth: "), "{err}");
            assert!(!err.contains(NOT_FOUND), "{err}");
        }
    }

    #[test]
    fn real_failures_are_reported_on_stdout() {
        let (code, out, _) = call("get", b"broken.example", false);
        assert_eq!(code, 1);
        assert!(
            out.contains("AccessDenied") && !out.contains(NOT_FOUND),
            "{out}"
        );
    }

    #[test]
    fn garbled_stdin_is_a_clear_error() {
        let (code, out, _) = call("get", b"\xff\xfe\x00", false);
        assert_eq!(code, 1);
        assert!(out.contains("not UTF-8"), "{out}");
        let (code, out, _) = call("get", b"  \n", false);
        assert_eq!(code, 1);
        assert!(out.contains("no server URL"), "{out}");
        let (code, out, _) = call("store", b"{not json", false);
        assert_eq!(code, 1);
        assert!(out.contains("cannot parse the credentials"), "{out}");
    }

    #[test]
    fn a_newline_in_a_server_url_cannot_forge_a_log_line() {
        let json =
            br#"{"ServerURL":"evil.example\nWARN ecr-auth: forged","Username":"u","Secret":"s"}"#;
        let (code, out, err) = call("store", json, false);
        assert_eq!(code, 1);
        assert_eq!(out.lines().count(), 1, "{out}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("evil.example\\nWARN ecr-auth: forged"),
            "{err}"
        );
    }

    #[test]
    fn store_and_erase_never_break_login_to_ecr() {
        let json = br#"{"ServerURL":"https://123456789012.dkr.ecr.eu-west-1.amazonaws.com","Username":"AWS","Secret":"x","Extra":1}"#;
        let (code, out, err) = call("store", json, false);
        assert_eq!((code, out.as_str()), (0, ""));
        assert!(err.contains("not storing"), "{err}");
        let (code, _, _) = call(
            "erase",
            b"123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            false,
        );
        assert_eq!(code, 0);
        // other hosts: refused, unless storage is ignored
        let other = br#"{"ServerURL":"docker.io","Username":"u","Secret":"s"}"#;
        assert_eq!(call("store", other, false).0, 1);
        assert_eq!(
            call("store", other, true),
            (0, String::new(), String::new())
        );
        assert_eq!(
            call("erase", b"docker.io", false).1,
            "credentials not found in native keychain\n"
        );
    }

    #[test]
    fn list_and_version_and_unknown() {
        let (code, out, _) = call("list", b"unused", false);
        assert_eq!(code, 0);
        assert_eq!(
            out,
            "{\"123456789012.dkr.ecr.eu-west-1.amazonaws.com\":\"AWS\"}\n"
        );
        assert!(call("version", b"", false).1.starts_with("ecr-auth "));
        let (code, out, _) = call("frobnicate", b"", false);
        assert_eq!(code, 1);
        assert!(out.contains("unknown credential helper verb"), "{out}");
    }

    #[test]
    fn credentials_debug_hides_the_secret() {
        let c = Credentials {
            server_url: "h".into(),
            username: "AWS".into(),
            secret: "s3cr3t".into(),
        };
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}
