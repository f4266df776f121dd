//! `configure gitlab-runner` and `configure docker`: wire a runner's
//! config.toml, a Docker config.json and a containers auth.json to the ECR
//! helper. The CLI parses flags into a [`RunnerRequest`] / [`DockerRequest`];
//! everything else happens here: the wiring is checked against the ecr-auth
//! config, each file's change is planned ([`edit`]), then shown as a diff
//! (`--dry-run`) or written with a backup.

pub(crate) mod edit;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::config::Config;
use crate::dockercfg::Wiring;
use crate::env::Env;
use crate::gitlab::runner_config::{self, JobMounts, Request};
use crate::registry::Host;
use edit::{plan_docker_config, Change};

/// Which registries go to the helper, and how.
#[derive(Clone, Debug)]
pub(crate) struct WiringRequest {
    /// Registry hosts; empty: every registry in the ecr-auth config file.
    pub registries: Vec<String>,
    /// `credsStore` (every registry) instead of `credHelpers` (the listed ones).
    pub creds_store: bool,
    /// The helper's name: Docker runs `docker-credential-<NAME>`.
    pub helper: String,
    /// Show the change as a diff; write nothing.
    pub dry_run: bool,
}

/// S2: what job containers get mounted.
#[derive(Clone, Debug)]
pub(crate) struct JobsRequest {
    pub helper_path: PathBuf,
    pub job_docker_config: PathBuf,
    pub aws_credentials: Option<PathBuf>,
    pub dind: bool,
    /// The token broker's socket on the host (`ecr-auth serve`): jobs get it
    /// instead of AWS credentials.
    pub broker_socket: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub(crate) struct RunnerRequest {
    /// The runner's config.toml.
    pub runner_config: PathBuf,
    /// Runners to wire by name; empty: every runner with a Docker executor.
    pub runners: Vec<String>,
    pub wiring: WiringRequest,
    pub jobs: Option<JobsRequest>,
}

#[derive(Clone, Debug)]
pub(crate) struct DockerRequest {
    /// The Docker config directory; default `$DOCKER_CONFIG`, else `~/.docker`.
    pub config_dir: Option<PathBuf>,
    /// The containers auth.json; default `$REGISTRY_AUTH_FILE`, else
    /// `$XDG_CONFIG_HOME/containers/auth.json`.
    pub auth_file: Option<PathBuf>,
    pub no_auth_file: bool,
    pub wiring: WiringRequest,
}

/// Where diffs (stdout) and notes (stderr) go.
pub(crate) struct Output<'a> {
    pub diffs: &'a mut dyn Write,
    pub notes: &'a mut dyn Write,
}

/// Wires a runner's config.toml (and, with jobs, the job containers' config.json).
pub(crate) fn gitlab_runner(
    req: &RunnerRequest,
    config: &Config,
    now: i64,
    out: &mut Output<'_>,
) -> anyhow::Result<()> {
    let path = &req.runner_config;
    let wiring = wiring(&req.wiring, config)?;
    let jobs = req.jobs.as_ref().map(|j| JobMounts {
        helper_binary: j.helper_path.display().to_string(),
        docker_config: j.job_docker_config.display().to_string(),
        aws_credentials: j
            .aws_credentials
            .as_ref()
            .map(|p| absolute(p).display().to_string()),
        // Through a broker, jobs need no mappings: the broker resolves hosts.
        ecr_auth_config: config
            .path
            .as_ref()
            .filter(|_| j.broker_socket.is_none())
            .map(|p| absolute(p).display().to_string()),
        dind: j.dind,
        broker_socket: j
            .broker_socket
            .as_ref()
            .map(|p| absolute(p).display().to_string()),
    });
    let before = edit::read_optional(path)?.with_context(|| {
        format!(
            "cannot read {}: no such file; give the runner's config.toml with --runner-config",
            path.display()
        )
    })?;
    let edited = runner_config::edit(
        &before.text,
        &path.display().to_string(),
        &Request {
            runners: req.runners.clone(),
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
        // Job containers may run as any user, so the file is 0644: it must hold
        // no secret (issue 12 item 5: an existing config.json with `auths`).
        let job_config = Path::new(&j.docker_config);
        let change = plan_docker_config(job_config, &wiring, 0o644)?;
        if let Some(before) = &change.before {
            let doc = crate::dockercfg::DockerConfig::parse(
                &before.text,
                &job_config.display().to_string(),
            )?;
            let hosts = doc.auth_hosts();
            anyhow::ensure!(
                hosts.is_empty(),
                "{} holds `auths` credentials ({}), and job containers get it mounted readable by every user (0644); nothing was changed. Give --job-docker-config a file of its own (the default is /etc/ecr-auth/job-docker-config.json)",
                job_config.display(),
                hosts.join(", ")
            );
        }
        changes.push(change);
        if let Some(creds) = req.jobs.as_ref().and_then(|j| j.aws_credentials.as_ref()) {
            anyhow::ensure!(
                creds.is_file(),
                "--aws-credentials {}: no such file; give the AWS credentials file to mount into job containers",
                creds.display()
            );
        }
    }
    for (runner, what) in &edited.runners {
        if what.is_empty() {
            writeln!(
                out.notes,
                "runner {runner:?}: already wired, nothing to change"
            )?;
        }
        for w in what {
            writeln!(out.notes, "runner {runner:?}: {w}")?;
        }
    }
    if jobs.as_ref().is_some_and(|j| j.broker_socket.is_none()) {
        writeln!(
            out.notes,
            "warning: without --broker every job on these runners can read the AWS credentials it gets; `ecr-auth serve` with --broker hands jobs ECR tokens for allowed registries only"
        )?;
    }
    apply(&changes, req.wiring.dry_run, now, out)?;
    if !req.wiring.dry_run {
        writeln!(
            out.notes,
            "next: gitlab-runner runs docker-credential-{} itself: put it on the runner's PATH (`ecr-auth install`), and give the runner's user AWS credentials that may call ecr:GetAuthorizationToken.",
            wiring.helper()
        )?;
        if let Some(j) = &jobs {
            if !Path::new(&j.helper_binary).is_file() {
                writeln!(
                    out.notes,
                    "note: {} does not exist yet; run `ecr-auth install --dir {}` so job containers can mount it",
                    j.helper_binary,
                    Path::new(&j.helper_binary).parent().unwrap_or(Path::new("/")).display()
                )?;
            }
        }
    }
    Ok(())
}

/// Wires a Docker config.json and, for `credHelpers`, the containers auth.json.
pub(crate) fn docker(
    req: &DockerRequest,
    config: &Config,
    env: &Env,
    now: i64,
    out: &mut Output<'_>,
) -> anyhow::Result<()> {
    let wiring = wiring(&req.wiring, config)?;
    let dir = req
        .config_dir
        .clone()
        .or_else(|| env.get("DOCKER_CONFIG").map(PathBuf::from))
        .or_else(|| env.home().map(|h| h.join(".docker")))
        .context("no Docker config directory: give --config-dir or set HOME")?;
    let mut changes = vec![plan_docker_config(
        &dir.join("config.json"),
        &wiring,
        0o600,
    )?];
    if !req.no_auth_file {
        let auth = req
            .auth_file
            .clone()
            .or_else(|| env.get("REGISTRY_AUTH_FILE").map(PathBuf::from))
            .or_else(|| env.config_home().map(|d| d.join("containers/auth.json")))
            .context("no containers auth.json location: give --auth-file or set HOME")?;
        match &wiring {
            Wiring::CredHelpers { .. } => changes.push(plan_docker_config(&auth, &wiring, 0o600)?),
            Wiring::CredsStore { .. } => writeln!(
                out.notes,
                "note: containers tools (podman, buildah, skopeo) have no credsStore; {} was left alone. List the registries with --registry to wire it too.",
                auth.display()
            )?,
        }
    }
    apply(&changes, req.wiring.dry_run, now, out)
}

/// Shows or writes the changes; every write keeps a backup.
fn apply(changes: &[Change], dry_run: bool, now: i64, out: &mut Output<'_>) -> anyhow::Result<()> {
    for c in changes {
        if c.is_noop() {
            writeln!(out.notes, "{}: up to date, not changed", c.path.display())?;
            continue;
        }
        if dry_run {
            write!(out.diffs, "{}", c.diff())?;
            continue;
        }
        match c.apply(now)? {
            Some(b) => writeln!(
                out.notes,
                "{}: updated (backup: {})",
                c.path.display(),
                b.display()
            )?,
            None => writeln!(out.notes, "{}: created", c.path.display())?,
        }
    }
    Ok(())
}

/// The wiring the flags ask for; registry names are checked and normalised.
fn wiring(a: &WiringRequest, config: &Config) -> anyhow::Result<Wiring> {
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
    let names = config.registries_or(a.registries.clone()).map_err(|_| {
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

/// The two files `configure gitlab-runner` reads, which both used to be
/// spelled `--config`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RunnerConfigFlags {
    /// `--runner-config PATH`: the runner's config.toml.
    pub runner_config: Option<PathBuf>,
    /// `--ecr-auth-config PATH` (the older spelling of the global `--config`).
    pub ecr_auth_config: Option<PathBuf>,
    /// The global `--config` given before the command: `ecr-auth --config X configure …`.
    pub global_before: Option<PathBuf>,
    /// The global `--config` given after the command name:
    /// `configure gitlab-runner --config X`.
    pub global_after: Option<PathBuf>,
}

/// Which file is which.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RunnerFiles {
    pub runner_config: PathBuf,
    /// `None`: `$ECR_AUTH_CONFIG`, then the default locations.
    pub ecr_auth_config: Option<PathBuf>,
}

/// Sorts out the flags: `--runner-config` is the runner's config.toml and
/// `--config` the ecr-auth config file, as in every other command. The older
/// `configure gitlab-runner --config PATH` still names the runner's file, but
/// only when nothing else claims `--config`: never is one file silently taken
/// for the other. The error is a usage message that says which is which.
pub(crate) fn runner_files(f: &RunnerConfigFlags) -> Result<RunnerFiles, String> {
    let show = |p: &PathBuf| p.display().to_string();
    let (runner, global) = match (&f.runner_config, &f.global_after) {
        (Some(r), after) => (r.clone(), after.clone().or(f.global_before.clone())),
        (None, Some(after)) => {
            // The older spelling: `--config` after the command is the runner's file.
            if let Some(before) = &f.global_before {
                return Err(format!(
                    "--config is given twice: `ecr-auth --config {}` names the ecr-auth config file, and `configure gitlab-runner --config {}` would name the runner's config.toml. Name the runner's file with --runner-config: ecr-auth --config {} configure gitlab-runner --runner-config {}",
                    show(before),
                    show(after),
                    show(before),
                    show(after)
                ));
            }
            (after.clone(), None)
        }
        (None, None) => {
            return Err(match &f.global_before {
                Some(before) => format!(
                    "the runner's config.toml is missing: `--config {}` before `configure` names the ecr-auth config file. Name the runner's file with --runner-config PATH (usually /etc/gitlab-runner/config.toml)",
                    show(before)
                ),
                None => "the runner's config.toml is missing: name it with --runner-config PATH (usually /etc/gitlab-runner/config.toml)".into(),
            })
        }
    };
    let ecr_auth_config = match (&f.ecr_auth_config, global) {
        (Some(a), Some(b)) if *a != b => {
            return Err(format!(
            "two ecr-auth config files: --ecr-auth-config {} and --config {}; give one (--config)",
            show(a),
            show(&b)
        ))
        }
        (Some(a), _) => Some(a.clone()),
        (None, g) => g,
    };
    if ecr_auth_config.as_ref() == Some(&runner) {
        return Err(format!(
            "{} is given as both the runner's config.toml (--runner-config) and the ecr-auth config file (--config); they are different files",
            show(&runner)
        ));
    }
    Ok(RunnerFiles {
        runner_config: runner,
        ecr_auth_config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_config_json_with_credentials_is_never_made_world_readable() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let runner = tmp.path().join("config.toml");
        let original = "[[runners]]\n  name = \"d\"\n  executor = \"docker\"\n  [runners.docker]\n    image = \"alpine\"\n";
        std::fs::write(&runner, original).unwrap();
        let job_config = tmp.path().join("config.json");
        let secret = r#"{"auths":{"registry.example":{"auth":"dXNlcjpwdw=="}}}"#;
        std::fs::write(&job_config, secret).unwrap();
        std::fs::set_permissions(&job_config, std::fs::Permissions::from_mode(0o600)).unwrap();
        let req = RunnerRequest {
            runner_config: runner.clone(),
            runners: vec![],
            wiring: WiringRequest {
                registries: vec!["123456789012.dkr.ecr.eu-west-1.amazonaws.com".into()],
                creds_store: false,
                helper: "ecr-login".into(),
                dry_run: false,
            },
            jobs: Some(JobsRequest {
                helper_path: tmp.path().join("helper"),
                job_docker_config: job_config.clone(),
                aws_credentials: None,
                dind: false,
                broker_socket: None,
            }),
        };
        let (mut diffs, mut notes) = (Vec::new(), Vec::new());
        let mut out = Output {
            diffs: &mut diffs,
            notes: &mut notes,
        };
        let e = gitlab_runner(&req, &Config::default(), 1, &mut out)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("holds `auths` credentials (registry.example)")
                && e.contains("a file of its own"),
            "{e}"
        );
        assert!(!e.contains("dXNlcjpwdw"), "{e}");
        assert_eq!(std::fs::read_to_string(&job_config).unwrap(), secret);
        assert_eq!(
            std::fs::metadata(&job_config).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(std::fs::read_to_string(&runner).unwrap(), original);
        // A file of its own is written, 0644, with only credHelpers.
        let own = tmp.path().join("job-docker-config.json");
        let req = RunnerRequest {
            jobs: Some(JobsRequest {
                job_docker_config: own.clone(),
                ..req.jobs.clone().unwrap()
            }),
            ..req
        };
        gitlab_runner(&req, &Config::default(), 1, &mut out).unwrap();
        assert_eq!(
            std::fs::metadata(&own).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert!(std::fs::read_to_string(&own)
            .unwrap()
            .contains("credHelpers"));
    }

    fn p(s: &str) -> Option<PathBuf> {
        Some(PathBuf::from(s))
    }

    #[test]
    fn the_runner_file_and_the_ecr_auth_config_are_never_confused() {
        let ok = |f: RunnerConfigFlags, runner: &str, ecr: Option<&str>| {
            assert_eq!(
                runner_files(&f),
                Ok(RunnerFiles {
                    runner_config: runner.into(),
                    ecr_auth_config: ecr.map(PathBuf::from),
                }),
                "{f:?}"
            );
        };
        let err = |f: RunnerConfigFlags, needles: &[&str]| {
            let e = runner_files(&f).unwrap_err();
            for n in needles {
                assert!(e.contains(n), "{n:?} not in: {e}");
            }
        };
        let flags = RunnerConfigFlags::default;
        // The unambiguous spelling, with the global --config on either side.
        ok(
            RunnerConfigFlags {
                runner_config: p("r.toml"),
                ..flags()
            },
            "r.toml",
            None,
        );
        ok(
            RunnerConfigFlags {
                runner_config: p("r.toml"),
                global_before: p("e.toml"),
                ..flags()
            },
            "r.toml",
            Some("e.toml"),
        );
        ok(
            RunnerConfigFlags {
                runner_config: p("r.toml"),
                global_after: p("e.toml"),
                ..flags()
            },
            "r.toml",
            Some("e.toml"),
        );
        // The older spelling, alone or with --ecr-auth-config.
        ok(
            RunnerConfigFlags {
                global_after: p("r.toml"),
                ..flags()
            },
            "r.toml",
            None,
        );
        ok(
            RunnerConfigFlags {
                global_after: p("r.toml"),
                ecr_auth_config: p("e.toml"),
                ..flags()
            },
            "r.toml",
            Some("e.toml"),
        );
        // `ecr-auth --config e.toml configure gitlab-runner --config r.toml`: refused, saying which is which.
        err(
            RunnerConfigFlags {
                global_before: p("e.toml"),
                global_after: p("r.toml"),
                ..flags()
            },
            &[
                "--config is given twice",
                "ecr-auth config file",
                "runner's config.toml",
                "--runner-config r.toml",
            ],
        );
        err(
            RunnerConfigFlags {
                global_before: p("e.toml"),
                ..flags()
            },
            &[
                "`--config e.toml` before `configure` names the ecr-auth config file",
                "--runner-config PATH",
            ],
        );
        err(flags(), &["--runner-config PATH"]);
        err(
            RunnerConfigFlags {
                runner_config: p("r.toml"),
                global_before: p("e.toml"),
                ecr_auth_config: p("f.toml"),
                ..flags()
            },
            &["two ecr-auth config files"],
        );
        err(
            RunnerConfigFlags {
                runner_config: p("r.toml"),
                global_before: p("r.toml"),
                ..flags()
            },
            &["both the runner's config.toml"],
        );
    }
}
