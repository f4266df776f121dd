//! `ecr-auth doctor [REGISTRY|IMAGE ...]`: name the broken step of a pull.

use std::io::IsTerminal;
use std::path::PathBuf;

use super::Context;
use crate::doctor::{self, Options};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Registry hosts or images (HOST/REPO:TAG) to check. Default: the registries
    /// of the ecr-auth config file and those the Docker config sends to a helper.
    #[arg(value_name = "REGISTRY|IMAGE")]
    pub targets: Vec<String>,

    /// The Docker config directory a client uses (as DOCKER_CONFIG).
    #[arg(long, value_name = "DIR")]
    pub docker_config: Option<PathBuf>,

    /// Check this token broker socket (unix://PATH or PATH) instead of ECR_AUTH_BROKER.
    #[arg(long, value_name = "SOCKET")]
    pub broker: Option<String>,

    /// Also check a gitlab-runner config.toml: each Docker runner's DOCKER_AUTH_CONFIG,
    /// its job volumes, privileged.
    #[arg(long, value_name = "PATH")]
    pub gitlab_runner_config: Option<PathBuf>,

    /// Only this runner of --gitlab-runner-config.
    #[arg(long, value_name = "NAME", requires = "gitlab_runner_config")]
    pub runner: Option<String>,

    /// Also check this node's Swarm: its role and the leader, the services on ECR,
    /// the refresher (the example stack's service) and its /healthz, and the
    /// services a refresher leaves alone (update paused, job mode).
    #[arg(long)]
    pub swarm: bool,

    /// The Docker daemon for --swarm: unix:///path/to/docker.sock or tcp://HOST:PORT.
    #[arg(long, value_name = "URL", env = "DOCKER_HOST")]
    pub docker_host: Option<String>,

    /// `text` (a checklist) or `json` (one document).
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub format: String,
}

pub fn run(args: Args, ctx: &Context) -> anyhow::Result<i32> {
    let config = ctx.load_config()?;
    let opts = Options {
        targets: args.targets,
        docker_config: args.docker_config,
        broker: args.broker,
        runner_config: args.gitlab_runner_config,
        runner: args.runner,
        swarm: args.swarm,
        docker_host: args.docker_host,
    };
    let report = match doctor::run(&ctx.env, &config, config.path.clone(), &opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ecr-auth: {e}");
            return Ok(2);
        }
    };
    if args.format == "json" {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text(std::io::stdout().is_terminal()));
    }
    Ok(if report.ok { 0 } else { 1 })
}
