//! `ecr-auth swarm refresh`: keep every Swarm service that pulls from ECR able to
//! pull (see `crate::swarm`).

use std::path::PathBuf;
use std::time::Duration;

use super::Context;
use crate::env::Env;
use crate::swarm::{docker, Request};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: SwarmCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum SwarmCommand {
    /// Send fresh ECR auth to every Swarm service whose image is on ECR, without
    /// restarting tasks. Acts on the leader manager only.
    Refresh(RefreshArgs),
}

#[derive(clap::Args, Debug)]
pub struct RefreshArgs {
    /// One pass, then exit (exit 1 if a service could not be refreshed).
    #[arg(long)]
    pub once: bool,

    /// A pass every DURATION (e.g. 4h, 30m). Default: when a token in use has
    /// passed half its life, at least hourly, with jitter.
    #[arg(long, value_name = "DURATION", env = "ECR_AUTH_SWARM_EVERY", value_parser = parse_every)]
    pub every: Option<Duration>,

    /// Also follow Docker's service events: a service created or updated by
    /// someone else gets fresh auth within seconds.
    #[arg(long)]
    pub watch_events: bool,

    /// Only services with this label (KEY=VALUE, or KEY for "present"); repeat or
    /// comma-separate for several (all must match).
    #[arg(
        long = "label-selector",
        value_name = "KEY[=VALUE]",
        env = "ECR_AUTH_SWARM_LABEL_SELECTOR",
        value_delimiter = ','
    )]
    pub label_selector: Vec<String>,

    /// Only images on this registry host; repeat or comma-separate for several.
    /// Default: every ECR host and every host the config file maps to ECR
    /// (or AWS_ECR_REPO from --env-file).
    #[arg(
        long = "registry",
        value_name = "HOST",
        env = "ECR_AUTH_SWARM_REGISTRY",
        value_delimiter = ','
    )]
    pub registry: Vec<String>,

    /// Refresh job-mode services too (an update runs a job again).
    #[arg(long)]
    pub include_jobs: bool,

    /// List what would be updated and why; update nothing (one pass).
    #[arg(long)]
    pub dry_run: bool,

    /// AWS credentials in `export NAME=value` lines (a Swarm secret such as
    /// /run/secrets/ecr_auth_creds). Only AWS_* and ECR_AUTH_* names are taken.
    #[arg(long, value_name = "FILE", env = "ECR_AUTH_SWARM_ENV_FILE")]
    pub env_file: Option<PathBuf>,

    /// Serve Prometheus /metrics and /healthz on this address (e.g. 0.0.0.0:9464).
    #[arg(long, value_name = "ADDR", env = "ECR_AUTH_SWARM_METRICS_ADDR")]
    pub metrics_addr: Option<String>,

    /// The Docker daemon: unix:///path/to/docker.sock or tcp://HOST[:PORT]
    /// (port 2376 with TLS, 2375 without).
    #[arg(long, value_name = "URL", env = "DOCKER_HOST", default_value = docker::DEFAULT_HOST)]
    pub docker_host: String,

    #[command(flatten)]
    pub docker_tls: DockerTlsArgs,

    /// Give up on a Docker API request after DURATION (the event stream: on its
    /// opening); the refresher then backs off and asks again.
    #[arg(long, value_name = "DURATION", env = "ECR_AUTH_DOCKER_TIMEOUT", value_parser = parse_every)]
    pub docker_timeout: Option<Duration>,

    /// Log lines as text or as JSON objects (on stderr).
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        env = "ECR_AUTH_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

/// TLS to a `tcp://` daemon, with the docker CLI's flags and variables.
#[derive(clap::Args, Debug)]
pub struct DockerTlsArgs {
    /// Use TLS without checking the daemon's certificate; implied by --tlsverify
    /// (or DOCKER_TLS set to anything).
    #[arg(long = "tls")]
    pub tls: bool,

    /// Use TLS and check the daemon against --tlscacert (or DOCKER_TLS_VERIFY set
    /// to anything); the client certificate is presented.
    #[arg(long = "tlsverify")]
    pub tls_verify: bool,

    /// The CA that signed the daemon's certificate (default: ca.pem in
    /// DOCKER_CERT_PATH, else in $DOCKER_CONFIG or ~/.docker).
    #[arg(long = "tlscacert", value_name = "FILE")]
    pub tls_ca_cert: Option<PathBuf>,

    /// The client certificate (default: cert.pem there, if it exists).
    #[arg(long = "tlscert", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The client certificate's key (default: key.pem there, if it exists).
    #[arg(long = "tlskey", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Allow a plain tcp:// --docker-host that is not this machine (the registry
    /// credentials cross the network unencrypted).
    #[arg(long)]
    pub allow_plain_http: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl Args {
    pub fn log_format(&self) -> crate::logging::Format {
        match &self.command {
            SwarmCommand::Refresh(a) if a.log_format == LogFormat::Json => {
                crate::logging::Format::Json
            }
            SwarmCommand::Refresh(_) => crate::logging::Format::Text,
        }
    }

    /// The environment for logging: a daemon logs one line per action, so its
    /// level defaults to `info` (ECR_AUTH_LOG still decides when set).
    pub fn log_env(&self, env: &Env) -> Env {
        let mut env = env.clone();
        if env.get("ECR_AUTH_LOG").is_none() {
            env.set("ECR_AUTH_LOG", "info");
        }
        env
    }
}

pub fn run(args: Args, ctx: &Context) -> anyhow::Result<i32> {
    match args.command {
        SwarmCommand::Refresh(a) => refresh(a, ctx),
    }
}

fn refresh(args: RefreshArgs, ctx: &Context) -> anyhow::Result<i32> {
    let request = Request {
        once: args.once,
        every: args.every,
        watch_events: args.watch_events,
        label_selector: args.label_selector,
        registries: args.registry,
        include_jobs: args.include_jobs,
        dry_run: args.dry_run,
        env_file: args.env_file,
        metrics_addr: args.metrics_addr,
        docker_host: docker::HostArgs {
            host: args.docker_host,
            tls: args.docker_tls.tls,
            tls_verify: args.docker_tls.tls_verify,
            tls_ca_cert: args.docker_tls.tls_ca_cert,
            tls_cert: args.docker_tls.tls_cert,
            tls_key: args.docker_tls.tls_key,
            allow_plain_http: args.docker_tls.allow_plain_http,
        },
        docker_timeout: args.docker_timeout,
    };
    crate::swarm::refresh_command(request, &ctx.env, ctx.config_path.as_deref())
}

/// `--every`, `--docker-timeout`: the one duration syntax, at least a second.
fn parse_every(s: &str) -> Result<Duration, String> {
    let d = crate::duration::parse_arg(s)?;
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    Ok(d)
}
