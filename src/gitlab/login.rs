//! `ecr-auth gitlab login`: in a job, the job's OIDC token becomes ECR tokens
//! (through [`Tokens`] with a web-identity source) and a dotenv report that
//! hands them to later jobs.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;

use super::dotenv::{self, Form};
use super::oidc::{self, RoleLogin};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::dockercfg::{write_atomic, DockerConfig};
use crate::env::Env;

#[derive(Clone, Debug)]
pub(crate) struct LoginRequest {
    pub login: RoleLogin,
    /// Registry hosts; empty: every registry in the ecr-auth config file.
    pub registries: Vec<String>,
    /// The dotenv file to write (mode 0600).
    pub output: PathBuf,
    pub form: Form,
}

/// Gets the tokens and writes the dotenv report; says what it did on `notes`.
pub(crate) fn login(
    req: &LoginRequest,
    env: &Env,
    config: Config,
    clock: SharedClock,
    notes: &mut dyn Write,
) -> anyhow::Result<()> {
    let registries = config.registries_or(req.registries.clone())?;
    let (tokens, session) = oidc::role_tokens(env, config, &req.login, clock.clone())?;
    let role = &req.login.role_arn;
    let got = crate::auth_document::tokens_for(&tokens, &registries)
        .with_context(|| format!("cannot get ECR tokens with the credentials of {role}"))?;
    writeln!(notes, "ecr-auth: assumed {role} as session {session}")?;
    let d = dotenv::report(&DockerConfig::new(), &got, req.form)?;
    write_atomic(&req.output, d.text.as_bytes(), 0o600)?;
    let expires = got
        .iter()
        .map(|(t, _)| t.expires_at)
        .min()
        .unwrap_or(clock.now());
    writeln!(
        notes,
        "ecr-auth: wrote {} ({} bytes: {}) for {}; the tokens expire at {}",
        req.output.display(),
        d.text.len(),
        d.keys.join(", "),
        registries.join(", "),
        crate::tokens::format_time(expires)
    )?;
    if let Some(line) = &d.ci_line {
        writeln!(notes, "{}", dotenv::ci_line_advice(line, &d.keys))?;
    }
    Ok(())
}
