//! The integration tests: one binary (one link of the crate and the AWS SDK), a module per
//! area, all on the shared lab fixture in `common` (real programs on loopback only).

mod common;
mod swarm_support;

mod arm64;
mod broker;
mod broker_deploy;
mod configure_docker;
mod configure_gitlab_runner;
mod crash;
mod doctor;
mod gitlab_auth_config;
mod gitlab_examples;
mod gitlab_login;
mod gitlab_readme;
mod gitlab_runner_pull;
mod gitlab_sync_variable;
mod helper_e2e;
mod lab_smoke;
mod release;
mod security;
mod sick_aws;
mod startup;
mod static_e2e;
mod swarm_bench;
mod swarm_daemon;
mod swarm_deploy;
mod swarm_faults;
mod swarm_managers;
mod swarm_refresh;
