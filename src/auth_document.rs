//! Tokens for a list of registries, and the Docker config `auths` document
//! they make: what `auth-config`, `gitlab login` and `gitlab sync-variable`
//! hand on (DOCKER_AUTH_CONFIG, a dotenv report, a CI variable).

use crate::config::Resolved;
use crate::dockercfg::DockerConfig;
use crate::tokens::{AuthToken, TokenError, Tokens};

/// `auths` entries for tokens, merged into `base` (whose other entries stay).
pub(crate) fn auth_document(base: &DockerConfig, tokens: &[AuthToken]) -> DockerConfig {
    let mut doc = base.clone();
    for t in tokens {
        doc.set_auth(t.host.as_str(), &t.basic_auth());
    }
    doc
}

/// A registry whose token could not be had.
#[derive(Debug, thiserror::Error)]
pub(crate) struct RegistryTokenError {
    pub host: String,
    #[source]
    pub source: TokenError,
}

impl std::fmt::Display for RegistryTokenError {
    /// The cause names the host already when it is about the host itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cause = self.source.to_string();
        if cause.contains(&self.host) {
            f.write_str(&cause)
        } else {
            write!(f, "{}: {cause}", self.host)
        }
    }
}

/// One token per registry (with its scope, e.g. `aws/eu-west-1`), through
/// [`Tokens::get_many`]: one AWS call per (identity, region), never per registry.
/// Blocking.
pub(crate) fn tokens_for(
    tokens: &Tokens,
    registries: &[String],
) -> Result<Vec<(AuthToken, String)>, RegistryTokenError> {
    let mut resolved: Vec<Resolved> = Vec::new();
    for r in registries {
        let res = tokens.resolve(r).map_err(|source| RegistryTokenError {
            host: r.clone(),
            source,
        })?;
        if !resolved.iter().any(|x| x.host == res.host) {
            resolved.push(res);
        }
    }
    let results = tokens.get_many(&resolved);
    resolved
        .iter()
        .zip(results)
        .map(|(r, t)| {
            t.map(|t| (t, r.target.scope()))
                .map_err(|source| RegistryTokenError {
                    host: r.host.to_string(),
                    source,
                })
        })
        .collect()
}

/// The shape of `auth-config`'s output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// The document, compact JSON (DOCKER_AUTH_CONFIG, a config.json).
    Json,
    /// A GitLab dotenv report.
    Dotenv(crate::gitlab::dotenv::Form),
}

/// `auth-config`'s output for `registries`, over `base`: the text, and advice
/// for the user (the `.gitlab-ci.yml` line of the split dotenv form, no secret in it).
pub(crate) fn render(
    tokens: &Tokens,
    registries: &[String],
    base: &DockerConfig,
    shape: Shape,
) -> anyhow::Result<(String, Option<String>)> {
    use anyhow::Context as _;
    let got = tokens_for(tokens, registries).context("cannot get ECR tokens")?;
    Ok(match shape {
        Shape::Json => {
            let all: Vec<AuthToken> = got.into_iter().map(|(t, _)| t).collect();
            (
                format!("{}\n", auth_document(base, &all).to_compact()),
                None,
            )
        }
        Shape::Dotenv(form) => {
            let d = crate::gitlab::dotenv::report(base, &got, form)?;
            let advice = d
                .ci_line
                .as_ref()
                .map(|line| crate::gitlab::dotenv::ci_line_advice(line, &d.keys));
            (d.text, advice)
        }
    })
}
