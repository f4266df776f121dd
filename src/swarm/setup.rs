//! From the command line's values to a running refresher: the env file, the
//! selection, the token service. `cli/swarm.rs` only parses arguments into a
//! [`Request`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use super::docker::{HostArgs, Target};
use super::envfile::EnvFile;
use super::refresh::Selection;
use super::schedule::Schedule;
use super::{Options, Settings};
use crate::config::Config;
use crate::env::Env;
use crate::registry::Host;
use crate::tokens::Tokens;

/// `swarm refresh` as the user asked for it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Request {
    pub once: bool,
    pub every: Option<Duration>,
    pub watch_events: bool,
    /// `KEY=VALUE` or `KEY`.
    pub label_selector: Vec<String>,
    pub registries: Vec<String>,
    pub include_jobs: bool,
    pub dry_run: bool,
    pub env_file: Option<PathBuf>,
    pub metrics_addr: Option<String>,
    /// The daemon as the command line names it (`--docker-host`, `--tls*`).
    pub docker_host: HostArgs,
    /// Default: [`super::docker::DEFAULT_TIMEOUT`].
    pub docker_timeout: Option<Duration>,
}

/// Runs `swarm refresh`; returns the exit code. `env` is the process environment
/// (the env file's variables are added to a copy of it, for the token service
/// only), `config_path` the global `--config`.
pub(crate) fn refresh_command(
    request: Request,
    env: &Env,
    config_path: Option<&Path>,
) -> anyhow::Result<i32> {
    let (options, tokens) = prepare(request, env, config_path)?;
    super::run(options, tokens)
}

/// The options and the token service (with its in-memory layer) for a request.
fn prepare(
    request: Request,
    env: &Env,
    config_path: Option<&Path>,
) -> anyhow::Result<(Options, Tokens)> {
    // Plain TCP to another machine is refused here, before anything is sent.
    let docker_host = Target::resolve(&request.docker_host, env)?;
    let mut env = env.clone();
    let mut registries = request.registries.clone();
    if let Some(path) = &request.env_file {
        let file = EnvFile::read(path)?;
        file.apply(&mut env);
        if !file.ignored.is_empty() {
            tracing::warn!(
                "{}: ignored {} (only AWS_* and ECR_AUTH_* variables are taken)",
                path.display(),
                file.ignored.join(", ")
            );
        }
        // Seed 004's secret names the registry to keep fresh.
        if registries.is_empty() {
            if let Some(repo) = file.get("AWS_ECR_REPO") {
                registries = repo
                    .split([',', ' '])
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
            }
        }
    }
    let selection = Selection {
        labels: request
            .label_selector
            .iter()
            .map(|s| parse_label(s))
            .collect::<anyhow::Result<_>>()?,
        registries: registries
            .iter()
            .map(|r| Host::parse(r).with_context(|| format!("--registry {r:?}")))
            .collect::<anyhow::Result<_>>()?,
        include_jobs: request.include_jobs,
    };
    let config = Config::load(config_path, &env)?;
    let tokens = Tokens::builder(env, config).in_memory().build();
    for host in &selection.registries {
        if let Err(e) = tokens.resolve(host.as_str()) {
            anyhow::bail!("--registry {host}: {e}");
        }
    }
    let schedule = match (request.once || request.dry_run, request.every) {
        (true, _) => Schedule::Once,
        (false, Some(every)) => Schedule::Every(every),
        (false, None) => Schedule::HalfLife,
    };
    let options = Options {
        docker_host,
        docker_timeout: request
            .docker_timeout
            .unwrap_or(super::docker::DEFAULT_TIMEOUT),
        settings: Settings {
            schedule,
            selection,
            dry_run: request.dry_run,
        },
        watch_events: request.watch_events,
        metrics_addr: request.metrics_addr,
    };
    Ok((options, tokens))
}

/// `KEY=VALUE`, or `KEY` for "present".
fn parse_label(s: &str) -> anyhow::Result<(String, Option<String>)> {
    let (k, v) = match s.split_once('=') {
        Some((k, v)) => (k.trim(), Some(v.trim().to_string())),
        None => (s.trim(), None),
    };
    if k.is_empty() {
        anyhow::bail!("--label-selector {s:?}: expected KEY=VALUE or KEY");
    }
    Ok((k.to_string(), v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        Request {
            docker_host: "unix:///nowhere/docker.sock".into(),
            ..Request::default()
        }
    }

    #[test]
    fn the_env_file_reaches_the_token_service_not_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ecr_auth_creds");
        std::fs::write(
            &file,
            "export AWS_ECR_REPO=123456789012.dkr.ecr.eu-west-1.amazonaws.com\n\
             export AWS_ACCESS_KEY_ID=AKIDSWARMSETUPTEST\n\
             export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG\n\
             export PATH=/evil\n",
        )
        .unwrap();
        let env = Env::from_pairs([("HOME", dir.path().to_str().unwrap()), ("PATH", "/bin")]);
        let (options, tokens) = prepare(
            Request {
                env_file: Some(file),
                every: Some(Duration::from_secs(7200)),
                ..request()
            },
            &env,
            None,
        )
        .unwrap();
        assert_eq!(
            tokens.env().get("AWS_ACCESS_KEY_ID"),
            Some("AKIDSWARMSETUPTEST")
        );
        assert_eq!(tokens.env().get("PATH"), Some("/bin"), "PATH is not taken");
        assert!(
            std::env::var_os("AWS_ACCESS_KEY_ID").is_none_or(|v| v != "AKIDSWARMSETUPTEST"),
            "the env file reached the process environment"
        );
        assert_eq!(
            options.settings.selection.registries,
            [Host::parse("123456789012.dkr.ecr.eu-west-1.amazonaws.com").unwrap()],
            "AWS_ECR_REPO selects the registry"
        );
        assert_eq!(
            options.settings.schedule,
            Schedule::Every(Duration::from_secs(7200))
        );
    }

    #[test]
    fn a_bad_env_file_line_is_named_without_its_value() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("creds");
        std::fs::write(
            &file,
            "AWS_REGION=x\nAWS_SECRET_ACCESS_KEY wJalrXUtnFEMI=\n",
        )
        .unwrap();
        let e = prepare(
            Request {
                env_file: Some(file),
                ..request()
            },
            &Env::default(),
            None,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("line 2: AWS_SECRET_ACCESS_KEY"), "{e}");
        assert!(!e.contains("wJalr"), "a secret leaked: {e}");
    }

    #[test]
    fn selection_and_schedule_from_flags() {
        let (options, _) = prepare(
            Request {
                label_selector: vec!["team=a".into(), "ecr".into()],
                dry_run: true,
                every: Some(Duration::from_secs(60)),
                ..request()
            },
            &Env::default(),
            None,
        )
        .unwrap();
        assert_eq!(
            options.settings.selection.labels,
            [
                ("team".to_string(), Some("a".to_string())),
                ("ecr".into(), None)
            ]
        );
        assert_eq!(
            options.settings.schedule,
            Schedule::Once,
            "a dry run is one pass"
        );
        let e = prepare(
            Request {
                label_selector: vec!["=x".into()],
                ..request()
            },
            &Env::default(),
            None,
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("expected KEY=VALUE or KEY"), "{e}");
        let e = prepare(
            Request {
                registries: vec!["registry.example.com".into()],
                ..request()
            },
            &Env::default(),
            None,
        )
        .err()
        .unwrap();
        assert!(
            e.to_string().contains("--registry registry.example.com: "),
            "{e}"
        );
    }
}
