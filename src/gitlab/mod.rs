//! GitLab CI: the three situations of the design brief.
//!
//! - S1/S2, a runner host the user controls: [`runner_config`] wires a runner's
//!   `config.toml` (DOCKER_AUTH_CONFIG in `environment`, helper and config.json
//!   mounted into job containers); [`crate::configure`] shows, backs up and
//!   writes the change.
//! - S3, shared runners: [`oidc`] checks the job's OIDC token and turns it into
//!   a web-identity source for [`crate::tokens`]; [`dotenv`] hands the tokens to
//!   later jobs within GitLab's dotenv limits; or [`variables`] + [`sync`] keep a
//!   project/group CI variable fresh through the REST API.

pub(crate) mod dotenv;
pub(crate) mod login;
pub(crate) mod oidc;
pub(crate) mod runner_config;
pub(crate) mod sync;
pub(crate) mod variables;
