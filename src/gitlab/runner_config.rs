//! Wiring a gitlab-runner `config.toml` for ECR, edited in place with
//! `toml_edit`: comments, order, formatting and every unrelated key and runner
//! stay as they were.
//!
//! For each selected `[[runners]]`:
//! - S1: `environment` gets a `DOCKER_AUTH_CONFIG` whose `credHelpers` (or
//!   `credsStore`) send the configured ECR registries to our helper. An existing
//!   DOCKER_AUTH_CONFIG is merged into, never replaced: its `auths`,
//!   `credHelpers` and `credsStore` stay.
//! - S2 (`jobs`): `[runners.docker] volumes` mount the helper binary, a
//!   `config.json` with the same wiring and, if given, the AWS credentials file
//!   (read-only) into every job container; Docker-in-Docker also needs
//!   `privileged = true`.
//!
//! [`edit`] refuses to hand back a text that does not parse, loses a key, or is
//! not a fixed point (a second run must change nothing).

use std::collections::BTreeSet;

use toml_edit::{Array, DocumentMut, Item, Key, Table, TableLike, Value};

pub use crate::dockercfg::Wiring;
use crate::dockercfg::{DockerConfig, DockerConfigError};

/// Executors whose jobs run in Docker containers with Linux images.
pub(crate) const DOCKER_EXECUTORS: &[&str] = &["docker", "docker+machine", "docker-autoscaler"];

pub(crate) const ENV_KEY: &str = "DOCKER_AUTH_CONFIG";

/// Where the mounts land inside job containers.
pub(crate) const JOB_HELPER_DIR: &str = "/usr/local/bin";
pub(crate) const JOB_DOCKER_CONFIG: &str = "/root/.docker/config.json";
pub(crate) const JOB_AWS_CREDENTIALS: &str = "/root/.aws/credentials";
pub(crate) const JOB_ECR_AUTH_CONFIG: &str = crate::config::SYSTEM_CONFIG;
/// Where the broker's socket lands in job containers, and the variable naming it.
pub(crate) const JOB_BROKER_SOCKET: &str = crate::broker::DEFAULT_SOCKET;
pub(crate) const BROKER_ENV: &str = "ECR_AUTH_BROKER";

/// S2: what to mount into job containers (host paths, as the Docker daemon sees them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct JobMounts {
    /// The helper binary (`ecr-auth install` puts a copy at /usr/local/bin/docker-credential-ecr-login).
    pub helper_binary: String,
    /// The config.json for `docker`/Kaniko/buildah inside jobs.
    pub docker_config: String,
    /// An AWS credentials file, mounted read-only.
    pub aws_credentials: Option<String>,
    /// The ecr-auth config file (host name mappings), when one is used.
    pub ecr_auth_config: Option<String>,
    /// Docker-in-Docker: set `privileged = true`.
    pub dind: bool,
    /// The token broker's socket on the host: mounted read-write (a socket must
    /// be), and ECR_AUTH_BROKER set in the job environment.
    pub broker_socket: Option<String>,
}

impl JobMounts {
    /// `(host path, container path)` for every mount, in the order they are added.
    pub(crate) fn volumes(&self, helper: &str) -> Vec<(String, String)> {
        let mut v = vec![
            (
                self.helper_binary.clone(),
                format!("{JOB_HELPER_DIR}/docker-credential-{helper}"),
            ),
            (self.docker_config.clone(), JOB_DOCKER_CONFIG.to_string()),
        ];
        if let Some(c) = &self.aws_credentials {
            v.push((c.clone(), JOB_AWS_CREDENTIALS.to_string()));
        }
        if let Some(c) = &self.ecr_auth_config {
            v.push((c.clone(), JOB_ECR_AUTH_CONFIG.to_string()));
        }
        if let Some(s) = &self.broker_socket {
            v.push((s.clone(), JOB_BROKER_SOCKET.to_string()));
        }
        v
    }

    /// The `volumes` entries: read-only bind mounts.
    pub(crate) fn volume_entries(&self, helper: &str) -> Vec<String> {
        self.volumes(helper)
            .into_iter()
            .map(|(host, dest)| match dest.as_str() {
                JOB_BROKER_SOCKET => format!("{host}:{dest}"),
                _ => format!("{host}:{dest}:ro"),
            })
            .collect()
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Request {
    /// Runner names; empty means every runner with a Docker executor.
    pub runners: Vec<String>,
    pub wiring: Wiring,
    pub jobs: Option<JobMounts>,
}

/// The edited text and what changed, runner by runner.
#[derive(Clone, Debug)]
pub(crate) struct Edited {
    pub text: String,
    /// `(runner name, changes)` for every selected runner.
    pub runners: Vec<(String, Vec<String>)>,
    /// Where the selected runners are in `[[runners]]` (names need not be unique:
    /// `gitlab-runner register` names every runner after the host).
    pub selected: Vec<usize>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum RunnerConfigError {
    #[error("{path} is not valid TOML ({message}); fix it and run again")]
    Parse { path: String, message: String },
    #[error("{path} has no [[runners]]; register a runner first (gitlab-runner register), then run again")]
    NoRunners { path: String },
    #[error("{path} has no runner named {name:?}; its runners are: {names}")]
    UnknownRunner {
        path: String,
        name: String,
        names: String,
    },
    #[error("{path} has no runner with a Docker executor (its runners: {names}); name the runners to wire with --runner")]
    NoDockerRunner { path: String, names: String },
    #[error("runner {runner:?} in {path}: {source}")]
    AuthConfig {
        path: String,
        runner: String,
        source: DockerConfigError,
    },
    #[error("runner {runner:?} in {path}: `{key}` must be {expected}; fix it and run again")]
    Shape {
        path: String,
        runner: String,
        key: String,
        expected: String,
    },
    #[error("refusing to write {path}: the edited file would {problem} (nothing was written; please report this)")]
    Verify { path: String, problem: String },
}

/// Edits the text of a config.toml; `path` only names it in messages.
pub(crate) fn edit(text: &str, path: &str, req: &Request) -> Result<Edited, RunnerConfigError> {
    let edited = edit_unchecked(text, path, req)?;
    verify(text, &edited, path, req)?;
    Ok(edited)
}

fn edit_unchecked(text: &str, path: &str, req: &Request) -> Result<Edited, RunnerConfigError> {
    let mut doc: DocumentMut =
        text.parse()
            .map_err(|e: toml_edit::TomlError| RunnerConfigError::Parse {
                path: path.to_string(),
                message: one_line(&e, text),
            })?;
    let runners = match doc.get_mut("runners") {
        Some(Item::ArrayOfTables(a)) if !a.is_empty() => a,
        None => {
            return Err(RunnerConfigError::NoRunners {
                path: path.to_string(),
            })
        }
        Some(Item::ArrayOfTables(_)) => {
            return Err(RunnerConfigError::NoRunners {
                path: path.to_string(),
            })
        }
        Some(_) => {
            return Err(RunnerConfigError::Parse {
                path: path.to_string(),
                message: "`runners` must be an array of tables ([[runners]])".into(),
            })
        }
    };
    let names: Vec<String> = runners
        .iter()
        .enumerate()
        .map(|(i, t)| runner_name(t, i))
        .collect();
    let all_names = || {
        names
            .iter()
            .zip(runners_executors(text))
            // Both come from the file: escaped, so the error stays one line.
            .map(|(n, e)| format!("{n:?} ({})", e.escape_debug()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let selected: Vec<usize> = if req.runners.is_empty() {
        let picked: Vec<usize> = runners
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                t.get("executor")
                    .and_then(Item::as_str)
                    .is_some_and(|e| DOCKER_EXECUTORS.contains(&e))
            })
            .map(|(i, _)| i)
            .collect();
        if picked.is_empty() {
            return Err(RunnerConfigError::NoDockerRunner {
                path: path.to_string(),
                names: all_names(),
            });
        }
        picked
    } else {
        let mut picked = Vec::new();
        for name in &req.runners {
            let found: Vec<usize> = (0..names.len()).filter(|&i| &names[i] == name).collect();
            if found.is_empty() {
                return Err(RunnerConfigError::UnknownRunner {
                    path: path.to_string(),
                    name: name.clone(),
                    names: all_names(),
                });
            }
            for i in found {
                if !picked.contains(&i) {
                    picked.push(i);
                }
            }
        }
        picked.sort_unstable();
        picked
    };
    let mut report = Vec::new();
    for &i in &selected {
        let table = runners.get_mut(i).expect("index from this array");
        let mut changes = Vec::new();
        edit_runner(table, path, &names[i], req, &mut changes)?;
        report.push((names[i].clone(), changes));
    }
    Ok(Edited {
        text: doc.to_string(),
        runners: report,
        selected,
    })
}

/// A runner's `name`, or `#N` (1-based) for a runner without one.
fn runner_name(t: &Table, i: usize) -> String {
    t.get("name")
        .and_then(Item::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("#{}", i + 1))
}

fn runners_executors(text: &str) -> Vec<String> {
    let Ok(doc) = text.parse::<DocumentMut>() else {
        return Vec::new();
    };
    doc.get("runners")
        .and_then(Item::as_array_of_tables)
        .map(|a| {
            a.iter()
                .map(|t| {
                    t.get("executor")
                        .and_then(Item::as_str)
                        .unwrap_or("no executor")
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn edit_runner(
    runner: &mut Table,
    path: &str,
    name: &str,
    req: &Request,
    changes: &mut Vec<String>,
) -> Result<(), RunnerConfigError> {
    let shape = |key: &str, expected: &str| RunnerConfigError::Shape {
        path: path.to_string(),
        runner: name.to_string(),
        key: key.to_string(),
        expected: expected.to_string(),
    };
    let indent = key_indent(runner);

    // S1: DOCKER_AUTH_CONFIG in `environment`.
    if runner.get("environment").is_none() {
        let key =
            Key::new("environment").with_leaf_decor(toml_edit::Decor::new(indent.clone(), " "));
        runner.insert_formatted(&key, Item::Value(Value::Array(Array::new())));
    }
    let env = runner
        .get_mut("environment")
        .and_then(Item::as_array_mut)
        .ok_or_else(|| shape("environment", "an array of \"KEY=VALUE\" strings"))?;
    let prefix = format!("{ENV_KEY}=");
    let found: Vec<usize> = env
        .iter()
        .enumerate()
        .filter(|(_, v)| v.as_str().is_some_and(|s| s.starts_with(&prefix)))
        .map(|(i, _)| i)
        .collect();
    // gitlab-runner uses the last of several; so do we, and say so.
    let current = found
        .last()
        .map(|&i| env.get(i).and_then(Value::as_str).unwrap_or("")[prefix.len()..].to_string());
    let mut auth = DockerConfig::parse(
        current.as_deref().unwrap_or(""),
        &format!("the {ENV_KEY} in `environment`"),
    )
    .map_err(|source| RunnerConfigError::AuthConfig {
        path: path.to_string(),
        runner: name.to_string(),
        source,
    })?;
    let already = current.is_some() && req.wiring.is_applied(&auth);
    req.wiring.apply(&mut auth);
    let entry = format!("{prefix}{}", auth.to_compact());
    match found.last() {
        Some(&i) if already => {
            // Wired already: leave the entry exactly as written.
            let _ = i;
        }
        Some(&i) => {
            env.replace(i, string_value(&entry));
            changes.push(format!(
                "{ENV_KEY} in environment: merged {}",
                describe(&req.wiring)
            ));
            if found.len() > 1 {
                changes.push(format!(
                    "note: environment has {} {ENV_KEY} entries; gitlab-runner uses the last, which is the one edited",
                    found.len()
                ));
            }
        }
        None => {
            push_like_siblings(env, string_value(&entry));
            changes.push(format!(
                "{ENV_KEY} in environment: added {}",
                describe(&req.wiring)
            ));
        }
    }

    // S2 with a broker: the helper in jobs finds it through ECR_AUTH_BROKER.
    if req.jobs.as_ref().is_some_and(|j| j.broker_socket.is_some()) {
        let wanted = format!("{BROKER_ENV}=unix://{JOB_BROKER_SOCKET}");
        let prefix = format!("{BROKER_ENV}=");
        let at = env
            .iter()
            .position(|v| v.as_str().is_some_and(|s| s.starts_with(&prefix)));
        match at {
            Some(i) if env.get(i).and_then(Value::as_str) == Some(wanted.as_str()) => {}
            Some(i) => {
                env.replace(i, string_value(&wanted));
                changes.push(format!("{wanted} in environment (replaced)"));
            }
            None => {
                push_like_siblings(env, string_value(&wanted));
                changes.push(format!("{wanted} added to environment"));
            }
        }
    }

    // S2: mounts into job containers.
    let Some(jobs) = &req.jobs else {
        return Ok(());
    };
    if runner.get("docker").is_none() {
        let mut t = Table::new();
        let sibling = runner
            .iter()
            .filter_map(|(_, item)| item.as_table())
            .find(|t| !t.is_implicit())
            .map(|t| {
                t.decor()
                    .prefix()
                    .and_then(|p| p.as_str())
                    .unwrap_or("")
                    .to_string()
            });
        t.decor_mut()
            .set_prefix(sibling.unwrap_or_else(|| indent.clone()));
        runner.insert("docker", Item::Table(t));
        changes.push("added a [runners.docker] table".into());
    }
    let docker = runner
        .get_mut("docker")
        .and_then(Item::as_table_like_mut)
        .ok_or_else(|| shape("docker", "a table ([runners.docker])"))?;
    let inner_indent = match docker.iter().next() {
        Some((k, _)) => docker
            .key(k)
            .and_then(|k| k.leaf_decor().prefix())
            .and_then(|p| p.as_str())
            .unwrap_or("")
            .to_string(),
        None => format!("{indent}  "),
    };
    if docker.get("volumes").is_none() {
        let key =
            Key::new("volumes").with_leaf_decor(toml_edit::Decor::new(inner_indent.clone(), " "));
        docker.insert_formatted_like(&key, Item::Value(Value::Array(Array::new())));
    }
    let volumes = docker
        .get_mut("volumes")
        .and_then(Item::as_array_mut)
        .ok_or_else(|| shape("docker.volumes", "an array of strings"))?;
    for (entry, (_, dest)) in jobs
        .volume_entries(req.wiring.helper())
        .into_iter()
        .zip(jobs.volumes(req.wiring.helper()))
    {
        let same_dest = volumes.iter().position(|v| {
            v.as_str().and_then(volume_destination).as_deref() == Some(dest.as_str())
        });
        match same_dest {
            Some(i) if volumes.get(i).and_then(Value::as_str) == Some(entry.as_str()) => {}
            Some(i) => {
                let old = volumes
                    .get(i)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                volumes.replace(i, string_value(&entry));
                changes.push(format!("volume {old:?} replaced by {entry:?}"));
            }
            None => {
                push_like_siblings(volumes, string_value(&entry));
                changes.push(format!("volume {entry:?} added"));
            }
        }
    }
    if jobs.dind {
        match docker.get_mut("privileged") {
            Some(Item::Value(v)) if v.as_bool() == Some(true) => {}
            Some(Item::Value(v)) => {
                let decor = v.decor().clone();
                *v = Value::from(true);
                *v.decor_mut() = decor;
                changes.push(PRIVILEGED_NOTE.into());
            }
            Some(_) => return Err(shape("docker.privileged", "true or false")),
            None => {
                let key = Key::new("privileged")
                    .with_leaf_decor(toml_edit::Decor::new(inner_indent.clone(), " "));
                docker.insert_formatted_like(&key, Item::Value(Value::from(true)));
                changes.push(PRIVILEGED_NOTE.into());
            }
        }
    }
    Ok(())
}

pub(crate) const PRIVILEGED_NOTE: &str = "privileged = true: Docker-in-Docker needs it, and every job on this runner can now take over the host";

/// `insert_formatted` for any table-like (a `[table]` or an inline table).
trait InsertFormatted {
    fn insert_formatted_like(&mut self, key: &Key, item: Item);
}

impl InsertFormatted for dyn TableLike + '_ {
    fn insert_formatted_like(&mut self, key: &Key, item: Item) {
        match self.entry_format(key) {
            toml_edit::Entry::Vacant(v) => {
                v.insert(item);
            }
            toml_edit::Entry::Occupied(mut o) => {
                o.insert(item);
            }
        }
    }
}

fn describe(w: &Wiring) -> String {
    match w {
        Wiring::CredHelpers { hosts, helper } => {
            format!("credHelpers {} → {helper}", hosts.join(", "))
        }
        Wiring::CredsStore { helper } => format!("credsStore {helper}"),
    }
}

/// The indentation of a table's keys (gitlab-runner writes two spaces).
fn key_indent(t: &Table) -> String {
    t.iter()
        .filter(|(_, item)| item.is_value())
        .find_map(|(k, _)| {
            t.key(k)
                .and_then(|k| k.leaf_decor().prefix())
                .and_then(|p| p.as_str())
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// The container path of a `volumes` entry: `host:dest[:mode]`, or `dest` alone.
pub(crate) fn volume_destination(v: &str) -> Option<String> {
    let parts: Vec<&str> = v.split(':').collect();
    match parts.as_slice() {
        [dest] => Some(dest.to_string()),
        [_, dest] | [_, dest, _] => Some(dest.to_string()),
        _ => None,
    }
}

/// A TOML string, written as a literal ('...') when that avoids escaping quotes.
fn string_value(s: &str) -> Value {
    if s.contains('"') && !s.contains('\'') && !s.chars().any(|c| c.is_control()) {
        if let Ok(v) = format!("'{s}'").parse::<Value>() {
            return v;
        }
    }
    Value::from(s)
}

/// Appends to an array in the array's own layout: one per line stays one per
/// line (with the same indentation), and a comment after the old last element
/// stays on that element's line.
fn push_like_siblings(array: &mut Array, mut value: Value) {
    let last_prefix = array.iter().last().map(|v| {
        v.decor()
            .prefix()
            .and_then(|p| p.as_str())
            .unwrap_or("")
            .to_string()
    });
    match last_prefix {
        Some(p) if p.contains('\n') => {
            let indent = &p[p.rfind('\n').map_or(0, |i| i + 1)..];
            let trailing = array.trailing().as_str().unwrap_or("").to_string();
            let (comment, closing) = match trailing.rfind('\n') {
                Some(i) => (trailing[..i].to_string(), trailing[i..].to_string()),
                None => (String::new(), format!("\n{trailing}")),
            };
            *value.decor_mut() = toml_edit::Decor::new(format!("{comment}\n{indent}"), "");
            array.set_trailing(closing);
            array.set_trailing_comma(true);
        }
        Some(_) if array.len() >= 2 => {
            let d = array
                .iter()
                .last()
                .map(|v| v.decor().clone())
                .unwrap_or_default();
            *value.decor_mut() = d;
        }
        _ => {}
    }
    array.push_formatted(value);
}

/// Checks the edited text before anyone writes it: it parses, keeps every key
/// of the original, leaves unselected runners alone, wires what was asked, and
/// a second edit changes nothing.
fn verify(
    before: &str,
    edited: &Edited,
    path: &str,
    req: &Request,
) -> Result<(), RunnerConfigError> {
    let fail = |problem: String| RunnerConfigError::Verify {
        path: path.to_string(),
        problem,
    };
    let old: toml::Table = toml::from_str(before).map_err(|e| RunnerConfigError::Parse {
        path: path.to_string(),
        message: e.message().to_string(),
    })?;
    let new: toml::Table = toml::from_str(&edited.text)
        .map_err(|e| fail(format!("not parse back ({})", e.message())))?;
    let (mut old_keys, mut new_keys) = (BTreeSet::new(), BTreeSet::new());
    flatten(
        &toml::Value::Table(old.clone()),
        String::new(),
        &mut old_keys,
    );
    flatten(
        &toml::Value::Table(new.clone()),
        String::new(),
        &mut new_keys,
    );
    if let Some(lost) = old_keys.difference(&new_keys).next() {
        return Err(fail(format!("lose `{lost}`")));
    }
    let (Some(old_r), Some(new_r)) = (
        old.get("runners").and_then(|r| r.as_array()),
        new.get("runners").and_then(|r| r.as_array()),
    ) else {
        return Err(fail("lose its [[runners]]".into()));
    };
    if old_r.len() != new_r.len() {
        return Err(fail("change the number of runners".into()));
    }
    for (i, (o, n)) in old_r.iter().zip(new_r).enumerate() {
        let name = o
            .get("name")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| format!("#{}", i + 1));
        if !edited.selected.contains(&i) {
            if !same(o, n) {
                return Err(fail(format!(
                    "change runner {name:?}, which was not selected"
                )));
            }
            continue;
        }
        let value = n
            .get("environment")
            .and_then(|e| e.as_array())
            .and_then(|e| {
                e.iter()
                    .filter_map(|v| v.as_str())
                    .filter_map(|s| s.strip_prefix(ENV_KEY).and_then(|s| s.strip_prefix('=')))
                    .next_back()
            })
            .ok_or_else(|| fail(format!("have no {ENV_KEY} for runner {name:?}")))?;
        let doc = DockerConfig::parse(value, ENV_KEY).map_err(|e| {
            fail(format!(
                "carry an unreadable {ENV_KEY} for runner {name:?}: {e}"
            ))
        })?;
        if !req.wiring.is_applied(&doc) {
            return Err(fail(format!("not wire runner {name:?}")));
        }
    }
    let again = edit_unchecked(&edited.text, path, req)?;
    if again.text != edited.text {
        return Err(fail("change again on a second run".into()));
    }
    Ok(())
}

/// Equal values, where a float `nan` equals `nan` (TOML allows one, and `==`
/// would call an untouched runner changed).
fn same(a: &toml::Value, b: &toml::Value) -> bool {
    use toml::Value::{Array, Float, Table};
    match (a, b) {
        (Float(x), Float(y)) => x == y || (x.is_nan() && y.is_nan()),
        (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
        (Table(x), Table(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Every key path of a TOML value (`runners[0].docker.volumes[2]`).
fn flatten(v: &toml::Value, at: String, out: &mut BTreeSet<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let p = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                out.insert(p.clone());
                flatten(v, p, out);
            }
        }
        toml::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                let p = format!("{at}[{i}]");
                out.insert(p.clone());
                flatten(v, p, out);
            }
        }
        _ => {}
    }
}

/// toml_edit's message is several lines with a source excerpt: keep the line
/// number and the message.
fn one_line(e: &toml_edit::TomlError, text: &str) -> String {
    crate::config::toml_error_line(e.message(), e.span(), text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";

    fn helpers(hosts: &[&str]) -> Request {
        Request {
            runners: vec![],
            wiring: Wiring::CredHelpers {
                hosts: hosts.iter().map(|h| h.to_string()).collect(),
                helper: "ecr-login".into(),
            },
            jobs: None,
        }
    }

    #[test]
    fn adds_environment_and_keeps_the_rest() {
        let text = "concurrent = 4 # busy\n\n[[runners]]\n  name = \"a\"\n  executor = \"docker\"\n  [runners.docker]\n    image = \"alpine\" # default\n\n[[runners]]\n  name = \"shell\"\n  executor = \"shell\"\n";
        let e = edit(text, "config.toml", &helpers(&[HOST])).unwrap();
        assert_eq!(
            e.text,
            format!("concurrent = 4 # busy\n\n[[runners]]\n  name = \"a\"\n  executor = \"docker\"\n  environment = ['DOCKER_AUTH_CONFIG={{\"credHelpers\":{{\"{HOST}\":\"ecr-login\"}}}}']\n  [runners.docker]\n    image = \"alpine\" # default\n\n[[runners]]\n  name = \"shell\"\n  executor = \"shell\"\n")
        );
        assert_eq!(e.runners.len(), 1);
        let again = edit(&e.text, "config.toml", &helpers(&[HOST])).unwrap();
        assert_eq!(again.text, e.text);
        assert!(again.runners[0].1.is_empty());
    }

    #[test]
    fn merges_an_existing_docker_auth_config() {
        let text = "[[runners]]\n  name = \"a\"\n  executor = \"docker\"\n  environment = [\"FOO=bar\", \"DOCKER_AUTH_CONFIG={ \\\"credsStore\\\": \\\"desktop\\\", \\\"auths\\\": {\\\"r.example\\\": {\\\"auth\\\": \\\"eDp5\\\"}} }\", \"BAZ=1\"]\n";
        let e = edit(text, "c", &helpers(&[HOST])).unwrap();
        let doc: toml::Table = toml::from_str(&e.text).unwrap();
        let env = doc["runners"][0]["environment"].as_array().unwrap();
        assert_eq!(env[0].as_str(), Some("FOO=bar"));
        assert_eq!(env[2].as_str(), Some("BAZ=1"));
        assert_eq!(
            env[1].as_str().unwrap(),
            format!("DOCKER_AUTH_CONFIG={{\"credsStore\":\"desktop\",\"auths\":{{\"r.example\":{{\"auth\":\"eDp5\"}}}},\"credHelpers\":{{\"{HOST}\":\"ecr-login\"}}}}")
        );
    }

    #[test]
    fn job_mounts_and_dind() {
        let text = "[[runners]]\n  name = \"a\"\n  executor = \"docker\"\n  [runners.cache]\n    Type = \"s3\"\n";
        let mut req = helpers(&[HOST]);
        req.jobs = Some(JobMounts {
            helper_binary: "/usr/local/bin/docker-credential-ecr-login".into(),
            docker_config: "/etc/ecr-auth/job-config.json".into(),
            aws_credentials: Some("/etc/ecr-auth/aws-credentials".into()),
            ecr_auth_config: None,
            dind: true,
            broker_socket: None,
        });
        let e = edit(text, "c", &req).unwrap();
        assert!(e.text.ends_with("  [runners.cache]\n    Type = \"s3\"\n  [runners.docker]\n    volumes = [\"/usr/local/bin/docker-credential-ecr-login:/usr/local/bin/docker-credential-ecr-login:ro\", \"/etc/ecr-auth/job-config.json:/root/.docker/config.json:ro\", \"/etc/ecr-auth/aws-credentials:/root/.aws/credentials:ro\"]\n    privileged = true\n"), "{}", e.text);
        assert!(e.runners[0].1.iter().any(|c| c == PRIVILEGED_NOTE));
        assert_eq!(edit(&e.text, "c", &req).unwrap().text, e.text);
    }

    #[test]
    fn broker_jobs_get_the_socket_read_write_and_ecr_auth_broker_but_no_aws_file() {
        let text = "[[runners]]\n  name = \"a\"\n  executor = \"docker\"\n";
        let mut req = helpers(&[HOST]);
        req.jobs = Some(JobMounts {
            helper_binary: "/usr/local/bin/docker-credential-ecr-login".into(),
            docker_config: "/etc/ecr-auth/job-config.json".into(),
            aws_credentials: None,
            ecr_auth_config: None,
            dind: false,
            broker_socket: Some("/run/ecr-auth/broker.sock".into()),
        });
        let e = edit(text, "c", &req).unwrap();
        assert!(
            e.text
                .contains("\"ECR_AUTH_BROKER=unix:///run/ecr-auth/broker.sock\""),
            "{}",
            e.text
        );
        assert!(
            e.text
                .contains("\"/run/ecr-auth/broker.sock:/run/ecr-auth/broker.sock\"]"),
            "{}",
            e.text
        );
        assert!(!e.text.contains(".aws"), "{}", e.text);
        assert_eq!(
            edit(&e.text, "c", &req).unwrap().text,
            e.text,
            "a second run changes nothing"
        );
    }

    #[test]
    fn errors_say_what_to_do() {
        let two = "[[runners]]\n  name = \"a\"\n  executor = \"shell\"\n[[runners]]\n  executor = \"kubernetes\"\n";
        let e = edit(two, "c.toml", &helpers(&[HOST]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no runner with a Docker executor")
                && e.contains("\"a\" (shell), \"#2\" (kubernetes)")
                && e.contains("--runner"),
            "{e}"
        );
        let mut req = helpers(&[HOST]);
        req.runners = vec!["b".into()];
        let e = edit(two, "c.toml", &req).unwrap_err().to_string();
        assert!(e.contains("no runner named \"b\""), "{e}");
        req.runners = vec!["a".into()];
        assert!(edit(two, "c.toml", &req).is_ok());
        let e = edit("concurrent = 1\n", "c.toml", &req)
            .unwrap_err()
            .to_string();
        assert!(e.contains("gitlab-runner register"), "{e}");
        let e = edit("[[runners]\nname=1", "c.toml", &req)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && !e.contains('\n'), "{e}");
        let bad = "[[runners]]\n  name = \"a\"\n  environment = [\"DOCKER_AUTH_CONFIG={oops\"]\n";
        let e = edit(bad, "c.toml", &req).unwrap_err().to_string();
        assert!(
            e.contains("runner \"a\"")
                && e.contains("not valid JSON")
                && e.contains("fix or remove"),
            "{e}"
        );
        let env_str = "[[runners]]\n  name = \"a\"\n  environment = \"X=1\"\n";
        let e = edit(env_str, "c.toml", &req).unwrap_err().to_string();
        assert!(e.contains("`environment` must be an array"), "{e}");
    }

    #[test]
    fn runners_of_the_same_name_are_told_apart() {
        // Found by the runner_config fuzz target: the final check went by name,
        // so a shell runner named like the docker one (both named after the
        // host) had to be wired too, and the edit was refused.
        let text = "[[runners]]\n  name = \"ip-10-0-1-23\"\n  executor = \"shell\"\n\n[[runners]]\n  name = \"ip-10-0-1-23\"\n  executor = \"docker\"\n";
        let e = edit(text, "config.toml", &helpers(&[HOST])).unwrap();
        assert_eq!(e.selected, [1]);
        let (shell, docker) = e.text.split_at(e.text.rfind("[[runners]]").unwrap());
        assert!(
            !shell.contains(ENV_KEY) && docker.contains(ENV_KEY),
            "{}",
            e.text
        );
    }

    #[test]
    fn a_nan_in_a_runner_left_alone_is_not_a_change() {
        // Found by the runner_config fuzz target: `nan != nan` made the final
        // check refuse the edit ("please report this").
        let text = "[[runners]]\n  name = \"d\"\n  executor = \"docker\"\n\n[[runners]]\n  name = \"s\"\n  executor = \"shell\"\n  x = nan\n  y = [-nan, 1.5]\n";
        let e = edit(text, "config.toml", &helpers(&[HOST])).unwrap();
        assert!(
            e.text.ends_with("  x = nan\n  y = [-nan, 1.5]\n"),
            "{}",
            e.text
        );
    }

    #[test]
    fn volume_destinations() {
        assert_eq!(volume_destination("/cache").as_deref(), Some("/cache"));
        assert_eq!(volume_destination("/a:/b").as_deref(), Some("/b"));
        assert_eq!(volume_destination("/a:/b:ro").as_deref(), Some("/b"));
        assert_eq!(volume_destination("a:b:c:d"), None);
    }
}
