//! ecr-auth: Amazon ECR credentials wherever GitLab CI and Docker Swarm pull.
//!
//! One core, many faces: every command turns a registry host into an ECR token
//! through [`tokens::Tokens`] and only formats the result its own way.

pub(crate) mod auth_document;
pub mod backoff;
pub mod cli;
pub mod clock;
pub mod config;
pub(crate) mod configure;
pub(crate) mod diff;
pub mod dockercfg;
pub mod doctor;
pub mod duration;
pub mod env;
pub mod files;
#[cfg(test)]
mod fuzzing;
pub mod gitlab;
pub mod hardening;
pub mod helper;
pub(crate) mod http;
pub mod install;
pub mod logging;
pub mod registry;
pub(crate) mod report;
pub mod secret;
pub mod swarm;
pub mod tokens;
pub mod url;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
