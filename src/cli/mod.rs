//! The command line: one file per command, each parsing its arguments and
//! calling the library. This file dispatches, and is the one place that prints
//! the final error and picks the exit code.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::env::Env;
use crate::tokens::Tokens;

pub mod auth_config;
pub mod configure;
pub mod docker_credential;
pub mod get_login_password;
pub mod gitlab;
pub mod install;
pub mod swarm;

#[derive(Parser, Debug)]
#[command(
    name = "ecr-auth",
    version,
    about = "Amazon ECR credentials for Docker, GitLab CI and Docker Swarm: one static binary",
    long_about = None,
    propagate_version = true
)]
pub struct Cli {
    /// The ecr-auth config file (maps other host names to ECR, per-registry credentials).
    #[arg(long, global = true, env = "ECR_AUTH_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Act as a Docker credential helper: get, store, erase, list, version.
    #[command(name = "docker-credential")]
    DockerCredential(docker_credential::Args),
    /// Print an ECR password, like `aws ecr get-login-password`.
    #[command(name = "get-login-password")]
    GetLoginPassword(get_login_password::Args),
    /// Print a DOCKER_AUTH_CONFIG document or a GitLab dotenv file.
    #[command(name = "auth-config")]
    AuthConfig(auth_config::Args),
    /// Wire a gitlab-runner config.toml or a Docker config for ECR.
    Configure(configure::Args),
    /// GitLab CI: OIDC login in a job, keep a CI variable fresh.
    Gitlab(gitlab::Args),
    /// Docker Swarm: keep every service's registry auth fresh.
    Swarm(swarm::Args),
    /// Install the binary and its credential-helper names into a directory.
    Install(install::Args),
    /// Print the version.
    Version,
}

/// `--registry HOST` as the GitLab and configure commands take it.
#[derive(clap::Args, Debug, Clone)]
pub struct RegistryArgs {
    /// An ECR registry host (repeat, or comma-separate). Default: every
    /// registry in the ecr-auth config file.
    #[arg(
        long = "registry",
        value_name = "HOST",
        env = "ECR_AUTH_REGISTRIES",
        value_delimiter = ','
    )]
    pub hosts: Vec<String>,
}

/// What every command starts from: the environment and the config file choice.
pub struct Context {
    pub env: Env,
    pub config_path: Option<PathBuf>,
}

impl Context {
    pub fn load_config(&self) -> Result<Config, crate::config::ConfigError> {
        Config::load(self.config_path.as_deref(), &self.env)
    }

    /// The token service, with the config file read.
    pub fn tokens(&self) -> anyhow::Result<Tokens> {
        Ok(Tokens::new(self.env.clone(), self.load_config()?))
    }
}

/// Entry point for the binary: returns the process exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let env = Env::from_process();
    let argv0 = args
        .first()
        .map(|a| {
            Path::new(a)
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    if argv0.starts_with("docker-credential-") {
        // The helper's hot path: no argument parser, straight to the verb.
        crate::logging::init(&env, crate::logging::Format::Text);
        let verb = args.get(1).and_then(|a| a.to_str()).unwrap_or("");
        return docker_credential::run_verb(
            verb,
            &Context {
                env,
                config_path: None,
            },
        );
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    match &cli.command {
        Command::Swarm(a) => crate::logging::init(&a.log_env(&env), a.log_format()),
        _ => crate::logging::init(&env, crate::logging::Format::Text),
    }
    let ctx = Context {
        env,
        config_path: cli.config,
    };
    let result = match cli.command {
        Command::DockerCredential(a) => docker_credential::run(a, &ctx),
        Command::GetLoginPassword(a) => get_login_password::run(a, &ctx),
        Command::AuthConfig(a) => auth_config::run(a, &ctx),
        Command::Configure(a) => configure::run(a, &ctx),
        Command::Gitlab(a) => gitlab::run(a, &ctx),
        Command::Swarm(a) => swarm::run(a, &ctx),
        Command::Install(a) => install::run(a, &ctx),
        Command::Version => {
            // The commit and target triple come from build.rs: a bug report then names the
            // exact build (x86_64 or aarch64, musl or glibc).
            println!(
                "ecr-auth {} (commit {}, target {})",
                crate::VERSION,
                env!("ECR_AUTH_GIT_COMMIT"),
                env!("ECR_AUTH_TARGET")
            );
            Ok(0)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ecr-auth: error: {}", report(&e));
            1
        }
    }
}

/// The error and its causes on one line, without repeating a cause that the
/// message above it already quotes.
pub fn report(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}
