//! The command line: one file per command, each parsing its arguments and
//! calling the library. This file dispatches, and is the one place that prints
//! the final error and picks the exit code.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::clock::SharedClock;
use crate::config::Config;
use crate::env::Env;
use crate::tokens::Tokens;

pub(crate) mod auth_config;
pub(crate) mod configure;
pub(crate) mod docker_credential;
pub(crate) mod doctor;
pub(crate) mod get_login_password;
pub(crate) mod gitlab;
pub(crate) mod install;
pub(crate) mod serve;
pub(crate) mod swarm;

#[derive(Parser, Debug)]
#[command(
    name = "ecr-auth",
    version,
    about = "Amazon ECR credentials for Docker, GitLab CI and Docker Swarm: one static binary",
    long_about = None,
    propagate_version = true
)]
pub(crate) struct Cli {
    /// The ecr-auth config file (maps other host names to ECR, per-registry credentials).
    #[arg(long, global = true, env = "ECR_AUTH_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
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
    /// Walk the path a pull takes and name the first broken step, with a fix.
    Doctor(doctor::Args),
    /// Install the binary and its credential-helper names into a directory.
    Install(install::Args),
    /// The token broker: ECR tokens for allowed registries over a unix socket.
    Serve(serve::Args),
    /// Print the version.
    Version,
}

/// `--registry HOST` as the GitLab and configure commands take it.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct RegistryArgs {
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

/// What every command starts from: the environment, the clock and the config file choice.
pub(crate) struct Context {
    pub env: Env,
    /// The ecr-auth config file named by `--config` or `$ECR_AUTH_CONFIG`.
    pub config_path: Option<PathBuf>,
    /// Where on the command line `--config` was given (clap merges the two).
    pub global_config: GlobalConfigFlag,
    pub clock: SharedClock,
}

/// The global `--config` as typed: before the command name, after it, or both
/// (clap keeps only one value; `configure gitlab-runner` needs to know).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct GlobalConfigFlag {
    pub before: Option<PathBuf>,
    pub after: Option<PathBuf>,
}

/// A mistake in the arguments that clap cannot see: printed like any error,
/// exit code 2 as for clap's own usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub String);

/// The value of `--config` given before the command name: the only flag the
/// top level takes with a value, so the words up to the first non-flag are
/// read exactly.
fn config_before_command(args: &[OsString]) -> Option<PathBuf> {
    let mut found = None;
    let mut words = args.iter().skip(1);
    while let Some(w) = words.next() {
        let w = w.to_string_lossy();
        if w == "--config" {
            found = words.next().map(PathBuf::from);
        } else if let Some(v) = w.strip_prefix("--config=") {
            found = Some(PathBuf::from(v));
        } else if !w.starts_with('-') || w == "--" {
            break;
        }
    }
    found
}

impl Context {
    pub fn load_config(&self) -> Result<Config, crate::config::ConfigError> {
        Config::load(self.config_path.as_deref(), &self.env)
    }

    /// The token service, with the config file read.
    pub fn tokens(&self) -> anyhow::Result<Tokens> {
        Ok(Tokens::builder(self.env.clone(), self.load_config()?)
            .clock(self.clock.clone())
            .build())
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
                global_config: GlobalConfigFlag::default(),
                clock: crate::clock::system(),
            },
        );
    }
    let before = config_before_command(&args);
    let parsed = Cli::command()
        .try_get_matches_from(args)
        .and_then(|m| Ok((Cli::from_arg_matches(&m)?, m)));
    let (cli, matches) = match parsed {
        Ok(p) => p,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    // clap keeps one value of a global flag given on both sides of the command
    // name; the one typed after it is told apart here, never silently dropped.
    let typed = matches.value_source("config") == Some(clap::parser::ValueSource::CommandLine);
    let after = cli
        .config
        .clone()
        .filter(|c| typed && before.as_ref() != Some(c));
    let global_config = GlobalConfigFlag { before, after };
    let configures_runner = matches!(
        &cli.command,
        Command::Configure(configure::Args {
            target: configure::Target::GitlabRunner(_)
        })
    );
    if let (Some(b), Some(a), false) = (
        &global_config.before,
        &global_config.after,
        configures_runner,
    ) {
        eprintln!(
            "ecr-auth: error: --config is given twice ({} before the command, {} after it); it names the one ecr-auth config file: give it once",
            b.display(),
            a.display()
        );
        return 2;
    }
    match &cli.command {
        Command::Swarm(a) => crate::logging::init(&a.log_env(&env), a.log_format()),
        Command::Serve(_) => crate::logging::init(&serve::log_env(&env), Default::default()),
        _ => crate::logging::init(&env, crate::logging::Format::Text),
    }
    let ctx = Context {
        env,
        config_path: cli.config,
        global_config,
        clock: crate::clock::system(),
    };
    let result = match cli.command {
        Command::DockerCredential(a) => docker_credential::run(a, &ctx),
        Command::GetLoginPassword(a) => get_login_password::run(a, &ctx),
        Command::AuthConfig(a) => auth_config::run(a, &ctx),
        Command::Configure(a) => configure::run(a, &ctx),
        Command::Gitlab(a) => gitlab::run(a, &ctx),
        Command::Swarm(a) => swarm::run(a, &ctx),
        Command::Install(a) => install::run(a, &ctx),
        Command::Doctor(a) => doctor::run(a, &ctx),
        Command::Serve(a) => serve::run(a, &ctx),
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
            eprintln!("ecr-auth: error: {}", crate::report::report(e.as_ref()));
            if e.is::<UsageError>() {
                2
            } else {
                1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn config_before_the_command_is_read_exactly() {
        for (words, want) in [
            (
                &[
                    "ecr-auth",
                    "--config",
                    "e.toml",
                    "configure",
                    "gitlab-runner",
                    "--config",
                    "r.toml",
                ][..],
                Some("e.toml"),
            ),
            (
                &["ecr-auth", "--config=e.toml", "configure"][..],
                Some("e.toml"),
            ),
            (
                &[
                    "ecr-auth",
                    "configure",
                    "gitlab-runner",
                    "--config",
                    "r.toml",
                ][..],
                None,
            ),
            (&["ecr-auth", "--help"][..], None),
            (&["ecr-auth", "--", "--config", "x"][..], None),
        ] {
            assert_eq!(
                config_before_command(&args(words)),
                want.map(PathBuf::from),
                "{words:?}"
            );
        }
    }

    #[test]
    fn the_command_line_parses() {
        Cli::command().debug_assert();
    }
}
