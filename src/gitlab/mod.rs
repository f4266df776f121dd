//! GitLab CI: the three situations of the design brief.
//!
//! - S1/S2, a runner host the user controls: [`runner_config`] wires a runner's
//!   `config.toml` (DOCKER_AUTH_CONFIG in `environment`, helper and config.json
//!   mounted into job containers), through [`edit`] (diff, backup, atomic write).
//! - S3, shared runners: [`oidc`] exchanges the job's OIDC token for AWS
//!   credentials, [`dotenv`] hands the tokens to later jobs within GitLab's
//!   dotenv limits; or [`variables`] + [`sync`] keep a project/group CI variable
//!   fresh through the REST API.

pub mod dotenv;
pub mod edit;
pub mod oidc;
pub mod runner_config;
pub mod sync;
pub mod variables;

use crate::dockercfg::DockerConfig;
use crate::tokens::AuthToken;

/// `auths` entries for tokens, merged into `base` (whose other entries stay).
pub fn auth_document(base: &DockerConfig, tokens: &[AuthToken]) -> DockerConfig {
    let mut doc = base.clone();
    for t in tokens {
        doc.set_auth(t.host.as_str(), &t.basic_auth());
    }
    doc
}

/// A registry whose token could not be had.
#[derive(Debug, thiserror::Error)]
pub struct RegistryTokenError {
    pub host: String,
    #[source]
    pub source: crate::tokens::TokenError,
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
pub fn tokens_for(
    tokens: &crate::tokens::Tokens,
    registries: &[String],
) -> Result<Vec<(AuthToken, String)>, RegistryTokenError> {
    let mut resolved = Vec::new();
    for r in registries {
        let res = tokens.resolve(r).map_err(|source| RegistryTokenError {
            host: r.clone(),
            source,
        })?;
        if !resolved
            .iter()
            .any(|x: &crate::config::Resolved| x.host == res.host)
        {
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
