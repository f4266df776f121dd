//! `ecr-auth doctor`: walks the path a pull takes — the name, the wiring of
//! Docker and of podman/skopeo/buildah, the helper binary, the AWS identity and
//! clock, the token, the cache, the broker, the registry — and names the first
//! broken link with evidence and a fix; beside the registries, a gitlab-runner
//! config.toml (`runner`) and this node's Swarm (`swarm`). Every check reads what
//! it is handed (environment, files, the token core, the Docker API); the AWS
//! calls go through [`Tokens`] like every other face's.

mod checks;
mod probe;
mod regions;
pub mod report;
mod runner;
mod swarm;
mod wiring;

use std::path::PathBuf;

use crate::config::Config;
use crate::env::Env;
use crate::registry::Host;
use crate::tokens::cache::Cache;
use crate::tokens::{Limits, Tokens};
use checks::{Context, Subject};
pub use report::{Check, RegistryReport, Report, Status};
use wiring::Route;

/// What to examine.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Registry hosts or image references; none: those of the config files.
    pub targets: Vec<String>,
    /// The Docker config directory a client uses (like `DOCKER_CONFIG`).
    pub docker_config: Option<PathBuf>,
    /// A broker socket (`unix://PATH` or a path) instead of `ECR_AUTH_BROKER`.
    pub broker: Option<String>,
    /// A gitlab-runner config.toml to check, and optionally one runner of it.
    pub runner_config: Option<PathBuf>,
    pub runner: Option<String>,
    /// Check this node's Swarm through the Docker daemon at `docker_host`
    /// (a DOCKER_HOST value; default the local socket).
    pub swarm: bool,
    pub docker_host: Option<String>,
}

/// Errors that stop `doctor` before any check: bad usage.
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error("no registry to check: name one (ecr-auth doctor 123456789012.dkr.ecr.eu-west-1.amazonaws.com), or list registries in the ecr-auth config file or in {0} (credHelpers)")]
    NothingToCheck(String),
}

/// Runs every check for every target.
pub fn run(
    env: &Env,
    config: &Config,
    config_path: Option<PathBuf>,
    opts: &Options,
) -> Result<Report, DoctorError> {
    let (docker_config, why) = docker_config_dir(env, opts);
    let mut targets = opts.targets.clone();
    // Swarm tasks pull with the auth stored in their service, not through this
    // machine's Docker config: `--swarm` alone checks only the Swarm.
    if targets.is_empty() && !opts.swarm {
        let (files, _) = wiring::containers_files(env, &docker_config, &why);
        targets = default_targets(config, &files);
    }
    if targets.is_empty() && !opts.swarm {
        return Err(DoctorError::NothingToCheck(
            docker_config.join("config.json").display().to_string(),
        ));
    }
    let limits = Limits::from_env(env);
    // A real fetch that neither reads nor writes the helper's cache.
    let mut tokens = Tokens::builder(env.clone(), config.clone())
        .cache(None)
        .limits(limits);
    if let Some(b) = &opts.broker {
        // A bare path is the socket itself.
        let url = if b.starts_with('/') {
            format!("unix://{b}")
        } else {
            b.clone()
        };
        tokens = tokens.broker(Some(url));
    }
    let tokens = tokens.build();
    let cx = Context {
        env,
        config,
        config_path,
        docker_config,
        docker_config_why: why,
        tokens: &tokens,
        cache_dir: Cache::from_env(env).map(|c| c.dir().to_path_buf()),
        timeout: limits.cold_deadline,
    };
    let registries = targets
        .iter()
        .map(|t| examine(&cx, &Subject::parse(t)))
        .collect();
    let runner = opts.runner_config.as_ref().map(|p| {
        let hosts: Vec<Host> = targets
            .iter()
            .filter_map(|t| Subject::parse(t).host)
            .collect();
        runner::check(p, opts.runner.as_deref(), &hosts)
    });
    let swarm = opts.swarm.then(|| {
        let host = opts
            .docker_host
            .as_deref()
            .unwrap_or(crate::swarm::docker::DEFAULT_HOST);
        swarm::check(host, env, config, limits.cold_deadline)
    });
    Ok(Report::new(registries, runner, swarm))
}

/// The checks of one registry, stopping at the first failure.
fn examine(cx: &Context, s: &Subject) -> RegistryReport {
    let mut walk = Walk::default();
    let (check, resolved) = checks::name(cx, s);
    walk.push(check);
    let Some(host) = s.host.clone().filter(|_| !walk.failed) else {
        return walk.report(s);
    };
    let (wired, routes) = wiring::wiring(cx, &host);
    for c in wired {
        walk.push(c);
    }
    for route in routes.iter().filter(|r| matches!(r, Route::Helper { .. })) {
        walk.step(|| (checks::helper(cx, route), ()));
    }
    let token = if cx.tokens.broker_client().is_some() {
        // Through a broker the helper holds no AWS identity and no cache: the
        // socket comes next on the path, and the token is the one it answers.
        let token = walk.step(|| checks::broker(cx, &host)).flatten();
        if let Some(t) = &token {
            walk.push(checks::broker_token(t));
        }
        token
    } else if let Some(resolved) = resolved {
        if let Some(Some(clock)) = walk.step(|| checks::identity_and_clock(cx, &resolved)) {
            walk.push(clock);
        }
        let token = walk.step(|| checks::token(cx, &host)).flatten();
        walk.step(|| (checks::cache(cx), ()));
        token
    } else {
        None
    };
    if let Some(token) = token {
        walk.step(|| (checks::registry(cx, s, &host, &token), ()));
    }
    walk.report(s)
}

/// The checks so far; once one fails, later steps are recorded as skipped.
#[derive(Default)]
struct Walk {
    checks: Vec<Check>,
    failed: bool,
}

impl Walk {
    fn push(&mut self, c: Check) {
        if self.failed {
            self.checks
                .push(Check::skip(c.id, "not checked: an earlier step failed"));
            return;
        }
        self.failed = c.status == Status::Fail;
        self.checks.push(c);
    }

    /// Runs a check unless an earlier one failed; its extra result if it ran.
    fn step<T>(&mut self, f: impl FnOnce() -> (Check, T)) -> Option<T> {
        if self.failed {
            return None;
        }
        let (c, extra) = f();
        self.push(c);
        Some(extra)
    }

    fn report(self, s: &Subject) -> RegistryReport {
        RegistryReport {
            registry: s.given.clone(),
            checks: self.checks,
        }
    }
}

/// The Docker config directory in effect, and why.
fn docker_config_dir(env: &Env, opts: &Options) -> (PathBuf, String) {
    if let Some(d) = &opts.docker_config {
        return (d.clone(), "--docker-config".into());
    }
    if let Some(d) = env.get("DOCKER_CONFIG") {
        return (PathBuf::from(d), "DOCKER_CONFIG".into());
    }
    (
        env.home().unwrap_or_default().join(".docker"),
        "the default, ~/.docker".into(),
    )
}

/// The registries of the ecr-auth config file and the ECR hosts that the Docker
/// config and the containers auth.json files name.
fn default_targets(config: &Config, files: &[wiring::AuthFile]) -> Vec<String> {
    let mut out: Vec<String> = config
        .registries
        .iter()
        .map(|r| r.host.to_string())
        .collect();
    for doc in files.iter().filter_map(|f| f.read().ok().flatten()) {
        let named = doc
            .cred_helpers()
            .into_iter()
            .map(|(h, _)| h.to_string())
            .chain(doc.auth_hosts().into_iter().map(str::to_string));
        for h in named {
            if let Ok(host) = Host::parse(&h) {
                if config.resolve(&host).is_some() && !out.contains(&host.to_string()) {
                    out.push(host.to_string());
                }
            }
        }
    }
    out
}
