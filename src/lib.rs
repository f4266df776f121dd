//! ecr-auth: Amazon ECR credentials wherever GitLab CI and Docker Swarm pull.
//!
//! One core, many faces: every command turns a registry host into an ECR token
//! through [`tokens::Tokens`] and only formats the result its own way.

pub(crate) mod auth_document;
pub(crate) mod backoff;
pub(crate) mod broker;
pub mod cli;
pub mod clock;
pub mod config;
pub(crate) mod configure;
pub(crate) mod diff;
pub(crate) mod dockercfg;
pub(crate) mod doctor;
pub(crate) mod duration;
pub mod env;
pub(crate) mod files;
#[cfg(test)]
mod fuzzing;
pub(crate) mod gitlab;
pub mod hardening;
pub(crate) mod helper;
pub(crate) mod http;
pub(crate) mod install;
pub(crate) mod logging;
pub(crate) mod nss;
pub mod registry;
pub(crate) mod report;
pub mod secret;
pub mod swarm;
pub mod tokens;
pub(crate) mod url;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
