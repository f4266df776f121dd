//! Our own ECR token endpoint (`lab/token_server.py`): real expiries (`now + ttl`), ~2.5 KB
//! passwords that change on rotation, call counters, injected failures and delays, and the
//! sick-AWS modes: throttling N calls ([`TokenServer::set_throttle`]), a black hole that
//! accepts and never answers ([`TokenServer::set_black_hole`]), FIPS proxy endpoints. Speaks
//! the AWS JSON 1.1 protocol of ECR and ECR Public GetAuthorizationToken, so the real SDK
//! and CLI work against [`TokenServer::endpoint`]. Its htpasswd file (user `AWS`, current
//! password) is rewritten on every rotation; a [`super::Registry`] started on it accepts
//! only the current password (distribution 2.8 reloads the file when its mtime changes).

use super::{process::Proc, tool, TempDir};
use std::path::PathBuf;
use std::process::Command;

/// The account in the token server's `proxyEndpoint`.
pub const TOKEN_SERVER_ACCOUNT: &str = "123456789012";

#[derive(Debug)]
pub struct TokenServer {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub port: u16,
    /// htpasswd file kept in sync with the current password.
    pub htpasswd: PathBuf,
    proc: Proc,
    dir: TempDir,
}

impl TokenServer {
    /// Tokens live 12 h, like ECR's.
    pub fn start() -> TokenServer {
        TokenServer::start_with_args(&[])
    }

    /// Extra arguments for `lab/token_server.py`, e.g. `["--account", "111122223333"]`.
    pub fn start_with_args(args: &[&str]) -> TokenServer {
        let dir = TempDir::new("tokens");
        let htpasswd = dir.join("htpasswd");
        let log = dir.join("token_server.log");
        let mut cmd = Command::new(tool("python3"));
        cmd.arg(super::repo_root().join("lab/token_server.py"))
            .args(["--port", "0", "--htpasswd"])
            .arg(&htpasswd)
            .args(args)
            .env(
                "PATH",
                super::path_with(tool("htpasswd").parent().expect("htpasswd dir")),
            );
        let mut proc = Proc::spawn("token_server", cmd, &log);
        let mut port = 0u16;
        let ready = proc.wait_until("token_server", super::STARTUP_TIMEOUT, || {
            if port == 0 {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                port = text
                    .lines()
                    .find_map(|l| l.strip_prefix("PORT "))
                    .and_then(|p| p.trim().parse().ok())
                    .unwrap_or(0);
            }
            port != 0
                && super::http(
                    "GET",
                    &format!("http://127.0.0.1:{port}/_lab/health"),
                    &[],
                    b"",
                )
                .map(|r| r.status == 200)
                .unwrap_or(false)
        });
        if let Err(e) = ready {
            panic!("{e}");
        }
        TokenServer {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            htpasswd,
            proc,
            dir,
        }
    }

    /// AWS client environment for this endpoint (see [`super::aws_env`]).
    pub fn env(&self) -> Vec<(String, String)> {
        super::aws_env(&self.endpoint)
    }

    /// The AWS CLI pointed at this endpoint.
    pub fn aws(&self) -> Command {
        super::aws_cli(&self.endpoint)
    }

    pub fn control(&self, method: &str, path: &str, body: &str) -> serde_json::Value {
        let url = format!("{}{path}", self.endpoint);
        let r = super::http(
            method,
            &url,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
        .unwrap_or_else(|e| panic!("token server {method} {path}: {e}"));
        assert_eq!(r.status, 200, "token server {method} {path}: {}", r.text());
        r.json()
    }

    fn counters(&self) -> serde_json::Value {
        self.control("GET", "/_lab/calls", "")
    }

    /// The access key id that signed each GetAuthorizationToken request, in order.
    pub fn callers(&self) -> Vec<String> {
        let v = self.counters();
        v["callers"]
            .as_array()
            .expect("callers")
            .iter()
            .map(|c| c.as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The role ARN of each STS AssumeRole request, in order.
    pub fn assumed_roles(&self) -> Vec<String> {
        let v = self.counters();
        v["assumed_roles"]
            .as_array()
            .expect("assumed_roles")
            .iter()
            .map(|c| c.as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The access key id the lab's AssumeRole hands out for `role_arn`.
    pub fn role_access_key(role_arn: &str) -> String {
        // Mirrors lab/token_server.py: "ASIA" + the first 16 hex digits of SHA-1(role ARN).
        let out = super::run_ok(std::process::Command::new(tool("python3")).args([
            "-c",
            "import hashlib,sys; print('ASIA' + hashlib.sha1(sys.argv[1].encode()).hexdigest()[:16].upper())",
            role_arn,
        ]));
        out.trim().to_string()
    }

    /// GetAuthorizationToken requests received (ECR and ECR Public, failed ones included).
    pub fn calls(&self) -> u64 {
        self.counters()["calls"].as_u64().expect("calls")
    }

    /// GetAuthorizationToken requests received for one region (from the SigV4 scope).
    pub fn calls_in(&self, region: &str) -> u64 {
        self.counters()["by_region"][region].as_u64().unwrap_or(0)
    }

    /// Tokens actually issued (successful calls).
    pub fn issued(&self) -> u64 {
        self.counters()["issued"].as_u64().expect("issued")
    }

    /// Zeroes the counters.
    pub fn reset_calls(&self) {
        self.control("POST", "/_lab/reset", "");
    }

    /// Lifetime of tokens issued from now on.
    pub fn set_ttl(&self, secs: u64) {
        self.control(
            "POST",
            "/_lab/config",
            &format!(r#"{{"ttl_seconds":{secs}}}"#),
        );
    }

    /// `None`, `Some("unavailable")` (HTTP 503) or `Some("denied")` (400 AccessDeniedException).
    pub fn set_fail(&self, fail: Option<&str>) {
        let value = serde_json::to_string(&fail).expect("json");
        self.control("POST", "/_lab/config", &format!(r#"{{"fail":{value}}}"#));
    }

    /// Delay before every GetAuthorizationToken answer.
    pub fn set_delay_ms(&self, ms: u64) {
        self.control("POST", "/_lab/config", &format!(r#"{{"delay_ms":{ms}}}"#));
    }

    /// The next `n` GetAuthorizationToken calls answer HTTP 400 `ThrottlingException`
    /// (the JSON protocol's `__type`), later ones succeed; see [`TokenServer::throttled`].
    pub fn set_throttle(&self, n: u64) {
        self.control("POST", "/_lab/config", &format!(r#"{{"throttle":{n}}}"#));
    }

    /// Calls answered with `ThrottlingException`.
    pub fn throttled(&self) -> u64 {
        self.counters()["throttled"].as_u64().expect("throttled")
    }

    /// A black-holed AWS at this same endpoint (so cache keys, which include the
    /// endpoint, stay the same): GetAuthorizationToken requests are accepted, read,
    /// counted and never answered; the connections are held until the server stops.
    /// The control endpoints keep answering.
    pub fn set_black_hole(&self, on: bool) {
        self.control("POST", "/_lab/config", &format!(r#"{{"black_hole":{on}}}"#));
    }

    /// Requests the black hole has swallowed.
    pub fn held(&self) -> u64 {
        self.counters()["held"].as_u64().expect("held")
    }

    /// `proxyEndpoint` names the FIPS registry host (`<account>.dkr.ecr-fips.<region>...`).
    pub fn set_fips(&self, on: bool) {
        self.control("POST", "/_lab/config", &format!(r#"{{"fips":{on}}}"#));
    }

    /// The `host:port` of [`TokenServer::endpoint`], as a message naming it would show it.
    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Rotate the password before every issued token (each call gets a new password).
    pub fn set_rotate_on_issue(&self, on: bool) {
        self.control(
            "POST",
            "/_lab/config",
            &format!(r#"{{"rotate_on_issue":{on}}}"#),
        );
    }

    /// A new password (and htpasswd file); returns it.
    pub fn rotate(&self) -> String {
        self.control("POST", "/_lab/rotate", "")["password"]
            .as_str()
            .expect("password")
            .to_string()
    }

    /// The current password.
    pub fn password(&self) -> String {
        self.control("GET", "/_lab/password", "")["password"]
            .as_str()
            .expect("password")
            .to_string()
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.proc.log_tail(lines)
    }
}
