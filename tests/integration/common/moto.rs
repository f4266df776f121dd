//! `moto_server` (PyPI `moto[server]`, from `.lab/venv`): the AWS API in the lab (STS incl.
//! AssumeRoleWithWebIdentity, ECR GetAuthorizationToken). Point clients at
//! [`Moto::endpoint`] with [`Moto::env`] / [`super::aws_cli`].
//!
//! Verified with moto 5.2: ECR GetAuthorizationToken always returns
//! `base64("AWS:<account>-auth-token")` with `expiresAt` 1420070400 (2015-01-01, long
//! expired); the account is 123456789012. ECR Public is not implemented (HTTP 500).

use super::{process::Proc, tool, TempDir};
use std::process::Command;

pub const MOTO_ACCOUNT: &str = "123456789012";
/// The password in moto's ECR token for [`MOTO_ACCOUNT`] (any region, every call).
pub const MOTO_PASSWORD: &str = "123456789012-auth-token";
/// moto's ECR `expiresAt`, epoch seconds (2015-01-01T00:00:00Z).
pub const MOTO_EXPIRES_AT: u64 = 1_420_070_400;

#[derive(Debug)]
pub struct Moto {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub port: u16,
    proc: Proc,
    dir: TempDir,
}

impl Moto {
    pub fn start() -> Moto {
        let program = tool("moto_server");
        let dir = TempDir::new("moto");
        let (proc, port) = Proc::spawn_on_free_port(
            "moto_server",
            &dir.join("moto.log"),
            |port| {
                let mut cmd = Command::new(&program);
                cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
                cmd
            },
            |port| {
                super::http(
                    "GET",
                    &format!("http://127.0.0.1:{port}/moto-api/"),
                    &[],
                    b"",
                )
                .is_ok()
            },
        );
        Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            proc,
            dir,
        }
    }

    /// AWS client environment for this endpoint (see [`super::aws_env`]).
    pub fn env(&self) -> Vec<(String, String)> {
        super::aws_env(&self.endpoint)
    }

    /// The AWS CLI pointed at this moto.
    pub fn aws(&self) -> Command {
        super::aws_cli(&self.endpoint)
    }

    /// Forgets every resource moto holds (roles, repositories, ...).
    /// The STS AssumeRole(WithWebIdentity) calls moto recorded, oldest first
    /// (`role_arn`, `session_name`, ...), from its `/moto-api/data.json`.
    pub fn assumed_roles(&self) -> Vec<serde_json::Value> {
        let data = super::http(
            "GET",
            &format!("{}/moto-api/data.json", self.endpoint),
            &[],
            b"",
        )
        .unwrap_or_else(|e| panic!("moto data.json: {e}"))
        .json();
        data["sts"]["AssumedRole"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn reset(&self) {
        let r = super::http(
            "POST",
            &format!("{}/moto-api/reset", self.endpoint),
            &[],
            b"",
        )
        .expect("moto reset");
        assert_eq!(r.status, 200, "moto reset: {}", r.text());
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.proc.log_tail(lines)
    }
}
