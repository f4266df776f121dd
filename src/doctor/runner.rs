//! The gitlab-runner checks (`--gitlab-runner-config`): for each runner, its
//! executor, the `DOCKER_AUTH_CONFIG` of its `environment` (valid JSON, covering
//! the registries), the `--jobs` volumes present on disk, and `privileged`.
//! Read-only: the file is parsed, never edited.

use std::path::Path;

use super::report::Check;
use crate::dockercfg::DockerConfig;
use crate::registry::Host;

/// Checks every runner (or only `only`) of the config.toml at `path` for `hosts`.
pub(crate) fn check(path: &Path, only: Option<&str>, hosts: &[Host]) -> Vec<Check> {
    let shown = path.display();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return vec![Check::fail(
                "runner",
                format!("cannot read {shown}: {e}"),
                "give the runner's config.toml (usually /etc/gitlab-runner/config.toml) and run as a user that may read it",
            )]
        }
    };
    let doc: toml::Table = match text.parse() {
        Ok(d) => d,
        Err(e) => {
            return vec![Check::fail(
                "runner",
                format!("{shown} is not valid TOML: {}", e.message()),
                "fix the file; gitlab-runner keeps its last good configuration meanwhile",
            )]
        }
    };
    let runners = doc
        .get("runners")
        .and_then(toml::Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    for r in runners.iter().filter_map(toml::Value::as_table) {
        let name = r
            .get("name")
            .and_then(toml::Value::as_str)
            .unwrap_or("(unnamed)");
        if only.is_some_and(|o| o != name) {
            continue;
        }
        out.push(one(r, name, hosts));
    }
    if out.is_empty() {
        out.push(Check::fail(
            "runner",
            match only {
                Some(o) => format!("{shown} has no runner named {o:?}"),
                None => format!("{shown} has no [[runners]]"),
            },
            "register a runner (gitlab-runner register), or name one that exists with --runner",
        ));
    }
    out
}

fn one(r: &toml::Table, name: &str, hosts: &[Host]) -> Check {
    let executor = r
        .get("executor")
        .and_then(toml::Value::as_str)
        .unwrap_or("");
    if executor != "docker" && executor != "docker+machine" && executor != "docker-autoscaler" {
        return Check::skip(
            "runner",
            format!("runner {name:?}: executor {executor:?} does not pull job images with Docker"),
        );
    }
    let env: Vec<&str> = r
        .get("environment")
        .and_then(toml::Value::as_array)
        .map(|a| a.iter().filter_map(toml::Value::as_str).collect())
        .unwrap_or_default();
    let Some(value) = env
        .iter()
        .find_map(|e| e.strip_prefix("DOCKER_AUTH_CONFIG="))
    else {
        return Check::fail(
            "runner",
            format!("runner {name:?}: no DOCKER_AUTH_CONFIG in its environment, so the executor has no credentials for ECR job images"),
            "ecr-auth configure gitlab-runner --config <config.toml> --registry HOST",
        );
    };
    let doc = match DockerConfig::parse(value, "DOCKER_AUTH_CONFIG") {
        Ok(d) => d,
        Err(e) => {
            return Check::fail(
                "runner",
                format!("runner {name:?}: DOCKER_AUTH_CONFIG in environment is not valid JSON ({e}); gitlab-runner ignores it"),
                "rewrite it: ecr-auth configure gitlab-runner --config <config.toml> --registry HOST",
            )
        }
    };
    let uncovered: Vec<String> = hosts
        .iter()
        .filter(|h| {
            doc.creds_store().is_none()
                && !doc
                    .cred_helpers()
                    .iter()
                    .any(|(k, _)| Host::parse(k).ok().as_ref() == Some(*h))
                && !doc
                    .auth_hosts()
                    .iter()
                    .any(|k| Host::parse(k).ok().as_ref() == Some(*h))
        })
        .map(|h| h.to_string())
        .collect();
    if !uncovered.is_empty() {
        return Check::fail(
            "runner",
            format!(
                "runner {name:?}: DOCKER_AUTH_CONFIG does not cover {}",
                uncovered.join(", ")
            ),
            format!(
                "ecr-auth configure gitlab-runner --config <config.toml> --registry {}",
                uncovered.join(" --registry ")
            ),
        );
    }
    let docker = r.get("docker").and_then(toml::Value::as_table);
    let missing: Vec<String> = docker
        .and_then(|d| d.get("volumes"))
        .and_then(toml::Value::as_array)
        .map(|vols| {
            vols.iter()
                .filter_map(toml::Value::as_str)
                // "SRC:DST[:MODE]" mounts a host path; a lone "/cache" is a
                // volume inside the container.
                .filter_map(|v| v.split_once(':').map(|(src, _)| src))
                .filter(|src| src.starts_with('/') && !Path::new(src).exists())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if !missing.is_empty() {
        return Check::fail(
            "runner",
            format!("runner {name:?}: volumes mount {} which does not exist on this host", missing.join(", ")),
            "create it (ecr-auth install --dir …, the config.json that --jobs writes), or remove the volume",
        );
    }
    let privileged = docker
        .and_then(|d| d.get("privileged"))
        .and_then(toml::Value::as_bool)
        .unwrap_or(false);
    Check::ok(
        "runner",
        format!(
            "runner {name:?}: executor {executor}, DOCKER_AUTH_CONFIG covers the registries, volumes present, privileged = {privileged} (Docker-in-Docker needs true); a DOCKER_AUTH_CONFIG CI variable of the project, group or job would replace this one entirely"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.toml");
        std::fs::write(&p, text).unwrap();
        (d, p)
    }

    #[test]
    fn each_runner_is_checked() {
        let host = Host::parse("123456789012.dkr.ecr.eu-west-1.amazonaws.com").unwrap();
        let (_d, p) = write(
            r#"
[[runners]]
  name = "good"
  executor = "docker"
  environment = ['DOCKER_AUTH_CONFIG={"credHelpers":{"123456789012.dkr.ecr.eu-west-1.amazonaws.com":"ecr-login"}}']
  [runners.docker]
    privileged = true
    volumes = ["/cache"]
[[runners]]
  name = "broken"
  executor = "docker"
  environment = ['DOCKER_AUTH_CONFIG={"credHelpers":']
[[runners]]
  name = "other"
  executor = "docker"
  environment = ['DOCKER_AUTH_CONFIG={"credHelpers":{"x.example":"y"}}']
[[runners]]
  name = "mounts"
  executor = "docker"
  environment = ['DOCKER_AUTH_CONFIG={"credsStore":"ecr-login"}']
  [runners.docker]
    volumes = ["/nonexistent/ecr-auth:/usr/local/bin/docker-credential-ecr-login:ro"]
[[runners]]
  name = "shell"
  executor = "shell"
"#,
        );
        let checks = check(&p, None, std::slice::from_ref(&host));
        let statuses: Vec<_> = checks.iter().map(|c| c.status).collect();
        use super::super::report::Status::*;
        assert_eq!(statuses, [Ok, Fail, Fail, Fail, Skip]);
        assert!(checks[0].evidence.contains("privileged = true"));
        assert!(
            checks[1].evidence.contains("is not valid JSON"),
            "{}",
            checks[1].evidence
        );
        assert!(
            checks[2].evidence.contains("does not cover 123456789012"),
            "{}",
            checks[2].evidence
        );
        assert!(
            checks[3].evidence.contains("/nonexistent/ecr-auth"),
            "{}",
            checks[3].evidence
        );
        let only = check(&p, Some("nope"), &[host]);
        assert!(only[0].evidence.contains("no runner named \"nope\""));
    }
}
