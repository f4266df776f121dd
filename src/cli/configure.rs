//! `ecr-auth configure gitlab-runner --runner-config PATH ...` and
//! `ecr-auth configure docker ...`: flags in, [`crate::configure`] does the work.
//!
//! Two files, two names: `--runner-config` is the runner's config.toml, and
//! `--config` the ecr-auth config file, as everywhere else. The older
//! `configure gitlab-runner --config PATH` (the runner's file) still works when
//! no other `--config` is given; see [`crate::configure::runner_files`].

use std::path::PathBuf;

use clap::Subcommand;

use super::{Context, UsageError};
use crate::config::Config;
use crate::configure::{
    self, DockerRequest, JobsRequest, Output, RunnerConfigFlags, RunnerRequest, WiringRequest,
};
use crate::dockercfg::DEFAULT_HELPER;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(subcommand)]
    pub target: Target,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Target {
    /// Wire a gitlab-runner config.toml: DOCKER_AUTH_CONFIG for the executor (S1),
    /// and with --jobs the helper and a config.json inside job containers (S2).
    #[command(name = "gitlab-runner")]
    GitlabRunner(RunnerArgs),
    /// Wire a Docker config.json and a containers auth.json (podman, buildah, skopeo).
    Docker(DockerArgs),
}

/// What both targets share: which registries, and how.
#[derive(clap::Args, Debug)]
pub(crate) struct WiringArgs {
    #[command(flatten)]
    pub registries: super::RegistryArgs,
    /// Send every registry to the helper (`credsStore`) instead of listing them (`credHelpers`).
    #[arg(long)]
    pub creds_store: bool,
    /// The helper's name: Docker runs `docker-credential-<NAME>`.
    #[arg(long, default_value = DEFAULT_HELPER, value_name = "NAME")]
    pub helper: String,
    /// Print the change as a unified diff (secrets redacted) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl WiringArgs {
    fn request(&self) -> WiringRequest {
        WiringRequest {
            registries: self.registries.hosts.clone(),
            creds_store: self.creds_store,
            helper: self.helper.clone(),
            dry_run: self.dry_run,
        }
    }
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "The runner's file is --runner-config; --config is the ecr-auth config file, as in every command. `configure gitlab-runner --config PATH` alone still names the runner's file."
)]
pub(crate) struct RunnerArgs {
    /// The runner's config.toml (usually /etc/gitlab-runner/config.toml).
    #[arg(long, value_name = "PATH")]
    pub runner_config: Option<PathBuf>,
    /// A runner to wire, by name (repeat). Default: every runner with a Docker executor.
    #[arg(long = "runner", value_name = "NAME")]
    pub runners: Vec<String>,
    #[command(flatten)]
    pub wiring: WiringArgs,
    /// S2: also mount the helper, a config.json and AWS credentials into job
    /// containers, for docker (DinD), Kaniko and buildah inside jobs.
    #[arg(long)]
    pub jobs: bool,
    /// Docker-in-Docker jobs: implies --jobs and sets `privileged = true`.
    #[arg(long)]
    pub dind: bool,
    /// An AWS credentials file to mount read-only into job containers (at /root/.aws/credentials).
    #[arg(long, value_name = "FILE")]
    pub aws_credentials: Option<PathBuf>,
    /// The helper binary on the Docker host, mounted into jobs (`ecr-auth install` puts a copy there).
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/usr/local/bin/docker-credential-ecr-login"
    )]
    pub helper_path: PathBuf,
    /// The config.json for job containers on the Docker host: written by this
    /// command, mounted at /root/.docker/config.json.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/etc/ecr-auth/job-docker-config.json"
    )]
    pub job_docker_config: PathBuf,
    /// The older name of the global --config (the ecr-auth config file). When one
    /// is found, --jobs mounts it into job containers too.
    #[arg(long, value_name = "PATH", hide = true)]
    pub ecr_auth_config: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub(crate) struct DockerArgs {
    /// The Docker config directory (default: $DOCKER_CONFIG, else ~/.docker).
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// The containers auth.json (default: $REGISTRY_AUTH_FILE, else
    /// $XDG_CONFIG_HOME/containers/auth.json, i.e. ~/.config/containers/auth.json).
    #[arg(long, value_name = "PATH")]
    pub auth_file: Option<PathBuf>,
    /// Leave the containers auth.json alone.
    #[arg(long, conflicts_with = "auth_file")]
    pub no_auth_file: bool,
    #[command(flatten)]
    pub wiring: WiringArgs,
}

pub(crate) fn run(args: Args, ctx: &Context) -> anyhow::Result<i32> {
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    let mut out = Output {
        diffs: &mut stdout,
        notes: &mut stderr,
    };
    let now = ctx.clock.now();
    match args.target {
        Target::GitlabRunner(a) => {
            let files = configure::runner_files(&RunnerConfigFlags {
                runner_config: a.runner_config.clone(),
                ecr_auth_config: a.ecr_auth_config.clone(),
                global_before: ctx.global_config.before.clone(),
                global_after: ctx.global_config.after.clone(),
            })
            .map_err(UsageError)?;
            let config = Config::load(files.ecr_auth_config.as_deref(), &ctx.env)?;
            let req = RunnerRequest {
                runner_config: files.runner_config,
                runners: a.runners,
                wiring: a.wiring.request(),
                jobs: (a.jobs || a.dind).then_some(JobsRequest {
                    helper_path: a.helper_path,
                    job_docker_config: a.job_docker_config,
                    aws_credentials: a.aws_credentials,
                    dind: a.dind,
                }),
            };
            configure::gitlab_runner(&req, &config, now, &mut out)?;
        }
        Target::Docker(a) => {
            let req = DockerRequest {
                config_dir: a.config_dir,
                auth_file: a.auth_file,
                no_auth_file: a.no_auth_file,
                wiring: a.wiring.request(),
            };
            configure::docker(&req, &ctx.load_config()?, &ctx.env, now, &mut out)?;
        }
    }
    Ok(0)
}
