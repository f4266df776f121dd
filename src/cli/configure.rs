//! `ecr-auth configure gitlab-runner --config PATH ...` and
//! `ecr-auth configure docker ...`: wire a runner's config.toml, a Docker
//! config.json and a containers auth.json to the ECR helper.
//!
//! Note: inside `configure gitlab-runner`, `--config` is the runner's
//! config.toml (the name the runner docs use); the ecr-auth config file is named
//! with `--ecr-auth-config` or `$ECR_AUTH_CONFIG`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;

use super::Context;
use crate::config::Config;
use crate::dockercfg::{Wiring, DEFAULT_HELPER};
use crate::gitlab::edit::{plan_docker_config, Change};
use crate::gitlab::runner_config::{self, JobMounts, Request};
use crate::registry::Host;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub target: Target,
}

#[derive(Subcommand, Debug)]
pub enum Target {
    /// Wire a gitlab-runner config.toml: DOCKER_AUTH_CONFIG for the executor (S1),
    /// and with --jobs the helper and a config.json inside job containers (S2).
    #[command(name = "gitlab-runner")]
    GitlabRunner(RunnerArgs),
    /// Wire a Docker config.json and a containers auth.json (podman, buildah, skopeo).
    Docker(DockerArgs),
}

/// What both targets share: which registries, and how.
#[derive(clap::Args, Debug)]
pub struct WiringArgs {
    #[command(flatten)]
    pub registries: super::RegistryArgs,
    /// Send every registry to the helper (`credsStore`) instead of listing them (`credHelpers`).
    #[arg(long)]
    pub creds_store: bool,
    /// The helper's name: Docker runs `docker-credential-<NAME>`.
    #[arg(long, default_value = DEFAULT_HELPER, value_name = "NAME")]
    pub helper: String,
    /// Print the change as a unified diff and write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(clap::Args, Debug)]
pub struct RunnerArgs {
    /// The runner's config.toml (usually /etc/gitlab-runner/config.toml).
    #[arg(long = "config", id = "config", value_name = "PATH", required = true)]
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
    /// The ecr-auth config file (else $ECR_AUTH_CONFIG, then the default locations).
    /// When one is found, --jobs mounts it into job containers too.
    #[arg(long, value_name = "PATH")]
    pub ecr_auth_config: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct DockerArgs {
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

pub fn run(args: Args, ctx: &Context) -> anyhow::Result<i32> {
    match args.target {
        Target::GitlabRunner(a) => gitlab_runner(a, ctx),
        Target::Docker(a) => docker(a, ctx),
    }
}

fn gitlab_runner(a: RunnerArgs, ctx: &Context) -> anyhow::Result<i32> {
    let path = a
        .runner_config
        .clone()
        .context("--config PATH (the runner's config.toml) is required")?;
    // `--config` here names config.toml, and clap hands a global flag's value to
    // the top level too: read the ecr-auth config from its own flag.
    let config = Config::load(a.ecr_auth_config.as_deref(), &ctx.env)?;
    let wiring = wiring(&a.wiring, &config)?;
    let jobs = (a.jobs || a.dind).then(|| JobMounts {
        helper_binary: a.helper_path.display().to_string(),
        docker_config: a.job_docker_config.display().to_string(),
        aws_credentials: a
            .aws_credentials
            .as_ref()
            .map(|p| absolute(p).display().to_string()),
        ecr_auth_config: config
            .path
            .as_ref()
            .map(|p| absolute(p).display().to_string()),
        dind: a.dind,
    });
    let before = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {}; give the runner's config.toml with --config",
            path.display()
        )
    })?;
    let edited = runner_config::edit(
        &before,
        &path.display().to_string(),
        &Request {
            runners: a.runners.clone(),
            wiring: wiring.clone(),
            jobs: jobs.clone(),
        },
    )?;
    let mut changes = vec![Change {
        path: path.clone(),
        before: Some(before),
        after: edited.text.clone(),
        new_mode: 0o600,
        force_mode: false,
    }];
    if let Some(j) = &jobs {
        // No secret in it, and job containers may run as any user: 0644.
        changes.push(plan_docker_config(
            Path::new(&j.docker_config),
            &wiring,
            0o644,
        )?);
        if let Some(creds) = &a.aws_credentials {
            anyhow::ensure!(
                creds.is_file(),
                "--aws-credentials {}: no such file; give the AWS credentials file to mount into job containers",
                creds.display()
            );
        }
    }
    for (runner, what) in &edited.runners {
        if what.is_empty() {
            eprintln!("runner {runner:?}: already wired, nothing to change");
        }
        for w in what {
            eprintln!("runner {runner:?}: {w}");
        }
    }
    let code = apply(&changes, a.wiring.dry_run)?;
    if !a.wiring.dry_run {
        eprintln!(
            "next: gitlab-runner runs docker-credential-{} itself: put it on the runner's PATH (`ecr-auth install`), and give the runner's user AWS credentials that may call ecr:GetAuthorizationToken.",
            wiring.helper()
        );
        if let Some(j) = &jobs {
            if !Path::new(&j.helper_binary).is_file() {
                eprintln!(
                    "note: {} does not exist yet; run `ecr-auth install --dir {}` so job containers can mount it",
                    j.helper_binary,
                    Path::new(&j.helper_binary).parent().unwrap_or(Path::new("/")).display()
                );
            }
        }
    }
    Ok(code)
}

fn docker(a: DockerArgs, ctx: &Context) -> anyhow::Result<i32> {
    let config = ctx.load_config()?;
    let wiring = wiring(&a.wiring, &config)?;
    let dir = a
        .config_dir
        .clone()
        .or_else(|| ctx.env.get("DOCKER_CONFIG").map(PathBuf::from))
        .or_else(|| ctx.env.home().map(|h| h.join(".docker")))
        .context("no Docker config directory: give --config-dir or set HOME")?;
    let mut changes = vec![plan_docker_config(
        &dir.join("config.json"),
        &wiring,
        0o600,
    )?];
    if !a.no_auth_file {
        let auth = a
            .auth_file
            .clone()
            .or_else(|| ctx.env.get("REGISTRY_AUTH_FILE").map(PathBuf::from))
            .or_else(|| {
                ctx.env
                    .config_home()
                    .map(|d| d.join("containers/auth.json"))
            })
            .context("no containers auth.json location: give --auth-file or set HOME")?;
        match &wiring {
            Wiring::CredHelpers { .. } => changes.push(plan_docker_config(&auth, &wiring, 0o600)?),
            Wiring::CredsStore { .. } => eprintln!(
                "note: containers tools (podman, buildah, skopeo) have no credsStore; {} was left alone. List the registries with --registry to wire it too.",
                auth.display()
            ),
        }
    }
    apply(&changes, a.wiring.dry_run)
}

/// Shows or writes the changes; every write keeps a backup.
fn apply(changes: &[Change], dry_run: bool) -> anyhow::Result<i32> {
    for c in changes {
        if c.is_noop() {
            eprintln!("{}: up to date, not changed", c.path.display());
            continue;
        }
        if dry_run {
            print!("{}", c.diff());
            continue;
        }
        let backup = c.apply(crate::tokens::system_now())?;
        match backup {
            Some(b) => eprintln!("{}: updated (backup: {})", c.path.display(), b.display()),
            None => eprintln!("{}: created", c.path.display()),
        }
    }
    Ok(0)
}

/// The wiring the flags ask for; registry names are checked and normalised.
fn wiring(a: &WiringArgs, config: &Config) -> anyhow::Result<Wiring> {
    anyhow::ensure!(
        !a.helper.is_empty()
            && a.helper
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
        "--helper {:?}: a helper name is the part after docker-credential- (e.g. ecr-login)",
        a.helper
    );
    if a.creds_store {
        return Ok(Wiring::CredsStore {
            helper: a.helper.clone(),
        });
    }
    let names = config.registries_or(a.registries.hosts.clone()).map_err(|_| {
        anyhow::anyhow!(
            "no registries: name them with --registry HOST (e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com), list them in the ecr-auth config file, or use --creds-store to send every registry to the helper"
        )
    })?;
    let mut hosts: Vec<String> = Vec::new();
    for n in names {
        let host = Host::parse(&n)?;
        anyhow::ensure!(
            config.resolve(&host).is_some(),
            "{host} is not an Amazon ECR registry and is not mapped to one in the ecr-auth config file{}; the helper would answer \"not found\" for it",
            config.path.as_ref().map(|p| format!(" ({})", p.display())).unwrap_or_default()
        );
        if !hosts.contains(&host.to_string()) {
            hosts.push(host.to_string());
        }
    }
    Ok(Wiring::CredHelpers {
        hosts,
        helper: a.helper.clone(),
    })
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}
