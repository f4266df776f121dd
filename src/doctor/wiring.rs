//! The wiring a client will use: which config file is in effect for a host and
//! what it does with it — sends it to a credential helper (`credHelpers`,
//! `credsStore`) or holds a static `auths` entry (an ECR token in it is decoded
//! for its expiry, never shown).
//!
//! Two families of clients read two sets of files:
//! - the Docker CLI (and gitlab-runner's executor): `$DOCKER_CONFIG/config.json`,
//!   else `~/.docker/config.json`. For a host, `credHelpers` wins, then
//!   `credsStore` (which then answers for every host, `auths` unused), then `auths`.
//! - podman, skopeo and buildah (containers/image), per containers-auth.json(5):
//!   the override (`REGISTRY_AUTH_FILE`, their `--authfile`) or else the primary
//!   file `$XDG_RUNTIME_DIR/containers/auth.json` (`/run/containers/UID/auth.json`
//!   when XDG_RUNTIME_DIR is unset), then `$XDG_CONFIG_HOME/containers/auth.json`
//!   (`~/.config/containers/auth.json`), then the Docker config (containers/image
//!   honours `DOCKER_CONFIG` there), then the legacy `~/.dockercfg`. The first file
//!   with an entry for the host decides; `credHelpers` before `auths` (whose keys
//!   may carry a namespace, `host/team`). `credsStore` is not read at all.

use std::path::{Path, PathBuf};

use base64::Engine;

use super::checks::Context;
use super::report::Check;
use crate::dockercfg::DockerConfig;
use crate::env::Env;
use crate::registry::Host;

/// How a client will get credentials for the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Helper { name: String, how: &'static str },
    Static,
}

/// What one file says about a host, by one client family's rules.
enum Entry {
    Helper {
        name: String,
        how: &'static str,
    },
    /// An `auths` entry: its `auth` field, if any.
    Static(Option<String>),
    Nothing,
}

/// Whose rules a file is read by.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Client {
    Docker,
    Containers,
}

impl Client {
    fn label(self) -> &'static str {
        match self {
            Client::Docker => "docker",
            Client::Containers => "podman, skopeo, buildah",
        }
    }
}

fn entry(doc: &DockerConfig, host: &Host, client: Client) -> Entry {
    let same = |key: &str| Host::parse(key).ok().as_ref() == Some(host);
    if let Some((_, helper)) = doc.cred_helpers().into_iter().find(|(k, _)| same(k)) {
        return Entry::Helper {
            name: helper.to_string(),
            how: "credHelpers",
        };
    }
    if client == Client::Docker {
        if let Some(store) = doc.creds_store() {
            return Entry::Helper {
                name: store.to_string(),
                how: "credsStore",
            };
        }
    }
    // A key may name a namespace of the registry (`host/team`); Host::parse
    // keeps the host part.
    match doc.auth_hosts().into_iter().find(|k| same(k)) {
        Some(k) => Entry::Static(doc.auth(k).map(str::to_string)),
        None => Entry::Nothing,
    }
}

/// The verdict on what a file does with the host.
fn judge(
    cx: &Context,
    client: Client,
    where_: &str,
    host: &Host,
    e: Entry,
) -> (Check, Option<Route>) {
    let who = client.label();
    let name = host.as_str();
    let (auth, how) = match e {
        Entry::Helper { name: helper, how } => {
            let whom = if how == "credsStore" {
                "every registry".to_string()
            } else {
                name.to_string()
            };
            return (
                Check::ok(
                    "wiring",
                    format!("{who}: {where_} sends {whom} to docker-credential-{helper} ({how})"),
                ),
                Some(Route::Helper { name: helper, how }),
            );
        }
        Entry::Static(auth) => (auth, "static auths entry"),
        Entry::Nothing => unreachable!("judged only when the file has an entry"),
    };
    let fix = format!("use the helper instead: ecr-auth configure docker --registry {name}");
    match auth.as_deref().and_then(static_expiry) {
        Some(exp) if exp <= cx.tokens.now() => (
            Check::fail(
                "wiring",
                format!(
                    "{who}: {where_} has a {how} for {name} holding an ECR token that expired at {} (they last 12 h); no helper is set for it",
                    crate::tokens::format_time(exp)
                ),
                format!("remove that auths entry and use the helper: ecr-auth configure docker --registry {name}"),
            ),
            Some(Route::Static),
        ),
        Some(exp) => (
            Check::warn(
                "wiring",
                format!(
                    "{who}: {where_} has a {how} for {name}: an ECR token valid until {}, then pulls fail",
                    crate::tokens::format_time(exp)
                ),
                fix,
            ),
            Some(Route::Static),
        ),
        None => (
            Check::warn(
                "wiring",
                format!("{who}: {where_} has a {how} for {name} (not an ECR token ecr-auth can read)"),
                fix,
            ),
            Some(Route::Static),
        ),
    }
}

/// Step 2, the wiring: the Docker config in effect and what it does with the
/// host, then the file podman, skopeo and buildah take it from. The checks in
/// order, and the helpers they lead to (each once).
pub(crate) fn wiring(cx: &Context, host: &Host) -> (Vec<Check>, Vec<Route>) {
    let (mut docker, docker_route, unwired) = docker(cx, host);
    let (containers, containers_route) = containers(cx, host);
    if unwired && containers_route.is_some() {
        // Only podman & co. are wired: a Docker-only problem, not a broken pull.
        docker.status = super::report::Status::Warn;
        docker
            .evidence
            .push_str(" (podman, skopeo and buildah are wired: next line)");
    }
    let mut routes: Vec<Route> = Vec::new();
    for r in [docker_route, containers_route].into_iter().flatten() {
        let known = routes.iter().any(|k| match (k, &r) {
            (Route::Helper { name: a, .. }, Route::Helper { name: b, .. }) => a == b,
            (a, b) => a == b,
        });
        if !known {
            routes.push(r);
        }
    }
    (vec![docker, containers], routes)
}

/// The Docker config: its check, its route, and whether the failure is only
/// "nothing here for this host" (which podman's files may make up for).
fn docker(cx: &Context, host: &Host) -> (Check, Option<Route>, bool) {
    let path = cx.docker_config.join("config.json");
    let where_ = format!("{} ({})", path.display(), cx.docker_config_why);
    let doc = match DockerConfig::read(&path) {
        Ok(Some(doc)) => doc,
        Ok(None) => {
            return (
                Check::fail(
                    "wiring",
                    format!(
                    "docker: {where_} does not exist: nothing sends {host} to a credential helper"
                ),
                    format!("ecr-auth configure docker --registry {host}"),
                ),
                None,
                true,
            )
        }
        Err(e) => {
            return (
                Check::fail(
                    "wiring",
                    format!("docker: {e}"),
                    format!("fix the JSON in {}", path.display()),
                ),
                None,
                false,
            )
        }
    };
    match entry(&doc, host, Client::Docker) {
        Entry::Nothing => (
            Check::fail(
                "wiring",
                format!(
                    "docker: {where_} neither sends {host} to a credential helper nor holds credentials for it"
                ),
                format!("ecr-auth configure docker --registry {host} (adds credHelpers)"),
            ),
            None,
            true,
        ),
        e => {
            let (check, route) = judge(cx, Client::Docker, &where_, host, e);
            (check, route, false)
        }
    }
}

/// One file podman, skopeo and buildah may read, and why it is in the list.
#[derive(Clone, Debug)]
pub(crate) struct AuthFile {
    pub path: PathBuf,
    pub why: String,
    /// `~/.dockercfg`: the whole file is the `auths` object.
    pub legacy: bool,
}

impl AuthFile {
    fn new(path: PathBuf, why: impl Into<String>) -> AuthFile {
        AuthFile {
            path,
            why: why.into(),
            legacy: false,
        }
    }

    /// The document; `None` when the file does not exist.
    pub(crate) fn read(&self) -> Result<Option<DockerConfig>, String> {
        if !self.legacy {
            return DockerConfig::read(&self.path).map_err(|e| e.to_string());
        }
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", self.path.display())),
        };
        let shown = self.path.display().to_string();
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{shown} is not valid JSON ({e}); fix or remove it"))?;
        DockerConfig::from_value(serde_json::json!({ "auths": value }), &shown)
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

/// The files podman, skopeo and buildah search for credentials, in their
/// order (containers-auth.json(5)); `notes` says why a file is not in it.
pub(crate) fn containers_files(
    env: &Env,
    docker_config: &Path,
    docker_why: &str,
) -> (Vec<AuthFile>, Vec<String>) {
    let mut files = Vec::new();
    let mut notes = Vec::new();
    if let Some(p) = env.get("REGISTRY_AUTH_FILE").filter(|p| !p.is_empty()) {
        files.push(AuthFile::new(p.into(), "REGISTRY_AUTH_FILE"));
    } else if let Some(run) = env.get("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        if Path::new(run).is_dir() {
            files.push(AuthFile::new(
                Path::new(run).join("containers/auth.json"),
                "the primary file, in $XDG_RUNTIME_DIR",
            ));
        } else {
            notes.push(format!(
                "XDG_RUNTIME_DIR={run} does not exist, so they skip the primary file"
            ));
        }
    } else {
        files.push(AuthFile::new(
            PathBuf::from(format!(
                "/run/containers/{}/auth.json",
                crate::files::euid()
            )),
            "the primary file while XDG_RUNTIME_DIR is unset",
        ));
    }
    if let Some(dir) = env.config_home() {
        let why = if env.get("XDG_CONFIG_HOME").is_some() {
            "$XDG_CONFIG_HOME/containers"
        } else {
            "~/.config/containers"
        };
        files.push(AuthFile::new(dir.join("containers/auth.json"), why));
    }
    files.push(AuthFile::new(docker_config.join("config.json"), docker_why));
    if let Some(home) = env.home() {
        files.push(AuthFile {
            path: home.join(".dockercfg"),
            why: "the legacy Docker file".into(),
            legacy: true,
        });
    }
    (files, notes)
}

/// The file podman, skopeo and buildah take the host's credentials from.
fn containers(cx: &Context, host: &Host) -> (Check, Option<Route>) {
    let name = host.as_str();
    let (files, mut passed) = containers_files(cx.env, &cx.docker_config, &cx.docker_config_why);
    let mut creds_store = None;
    for f in &files {
        let where_ = format!("{} ({})", f.path.display(), f.why);
        let doc = match f.read() {
            Ok(Some(doc)) => doc,
            Ok(None) => continue,
            Err(e) => {
                return (
                    Check::fail(
                        "wiring",
                        format!("podman, skopeo, buildah: {e}; they stop there and find no credentials for any registry"),
                        format!("fix or remove {}", f.path.display()),
                    ),
                    None,
                )
            }
        };
        match entry(&doc, host, Client::Containers) {
            Entry::Nothing => {
                if creds_store.is_none() {
                    creds_store = doc.creds_store().map(|s| (s.to_string(), f.path.clone()));
                }
                passed.push(format!("{} has no entry for it", f.path.display()));
            }
            e => {
                let (mut check, route) = judge(cx, Client::Containers, &where_, host, e);
                if !passed.is_empty() {
                    check
                        .evidence
                        .push_str(&format!(" (read first: {})", passed.join("; ")));
                }
                return (check, route);
            }
        }
    }
    let searched = files
        .iter()
        .map(|f| f.path.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let evidence = match &creds_store {
        Some((store, path)) => format!(
            "podman, skopeo, buildah: no entry for {name} in {searched}; they ignore credsStore ({store} in {}), so they pull {name} without credentials",
            path.display()
        ),
        None => format!(
            "podman, skopeo, buildah: no entry for {name} in {searched}: they pull it without credentials"
        ),
    };
    let fix = format!(
        "ecr-auth configure docker --registry {name} (adds credHelpers to the Docker config and to the containers auth.json)"
    );
    let check = if creds_store.is_some() {
        // Docker is served by its credsStore; only podman & co. miss out.
        Check::warn("wiring", evidence, fix)
    } else {
        Check::fail("wiring", evidence, fix)
    };
    (check, None)
}

/// The expiry of an ECR token inside an `auths` entry, without showing it:
/// `auth` is base64("AWS:<password>") and the password base64 of JSON with
/// `expiration`.
pub(crate) fn static_expiry(auth: &str) -> Option<i64> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let plain = String::from_utf8(b64.decode(auth.trim()).ok()?).ok()?;
    let (_, password) = plain.split_once(':')?;
    let inner: serde_json::Value =
        serde_json::from_slice(&b64.decode(password.trim()).ok()?).ok()?;
    inner.get("expiration")?.as_i64()
}

#[cfg(test)]
mod tests {
    use super::super::report::Status;
    use super::*;
    use crate::config::Config;
    use crate::tokens::Tokens;

    const HOST: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";

    /// A home with `~/.docker`, a runtime dir, and the files `(relative path, JSON)`.
    struct Home {
        dir: tempfile::TempDir,
        env: Vec<(String, String)>,
    }

    impl Home {
        fn new() -> Home {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("run")).unwrap();
            let env = vec![
                ("HOME".into(), dir.path().display().to_string()),
                (
                    "XDG_RUNTIME_DIR".into(),
                    dir.path().join("run").display().to_string(),
                ),
            ];
            Home { dir, env }
        }

        fn file(&self, rel: &str, text: &str) -> &Home {
            let p = self.dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
            self
        }

        fn set(mut self, k: &str, v: &str) -> Home {
            self.env.retain(|(key, _)| key != k);
            self.env.push((k.into(), v.into()));
            self
        }

        fn path(&self, rel: &str) -> String {
            self.dir.path().join(rel).display().to_string()
        }

        /// The two wiring checks and the routes.
        fn wiring(&self) -> (Vec<Check>, Vec<Route>) {
            let env = Env::from_pairs(self.env.clone());
            let config = Config::default();
            let tokens = Tokens::new(env.clone(), config.clone());
            let cx = Context {
                env: &env,
                config: &config,
                config_path: None,
                docker_config: self.dir.path().join(".docker"),
                docker_config_why: "the default, ~/.docker".into(),
                tokens: &tokens,
                cache_dir: None,
                timeout: std::time::Duration::from_secs(1),
            };
            wiring(&cx, &Host::parse(HOST).unwrap())
        }
    }

    fn helpers(h: &str) -> String {
        format!(r#"{{"credHelpers":{{"{HOST}":"{h}"}}}}"#)
    }

    /// An `auths` entry holding an ECR-shaped token that expired in 2020.
    fn expired_auth() -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        let inner = b64.encode(r#"{"payload":"x","expiration":1600000000}"#);
        let auth = b64.encode(format!("AWS:{inner}"));
        format!(r#"{{"auths":{{"{HOST}/team":{{"auth":"{auth}"}}}}}}"#)
    }

    fn names(routes: &[Route]) -> Vec<String> {
        routes
            .iter()
            .map(|r| match r {
                Route::Helper { name, .. } => name.clone(),
                Route::Static => "static".into(),
            })
            .collect()
    }

    #[test]
    fn podman_reads_the_docker_config_when_no_auth_json_names_the_host() {
        let h = Home::new();
        h.file(".docker/config.json", &helpers("ecr-login"))
            .file(".config/containers/auth.json", r#"{"auths":{}}"#);
        let (checks, routes) = h.wiring();
        assert_eq!(checks[0].status, Status::Ok, "{checks:?}");
        assert!(checks[0].evidence.starts_with("docker: "));
        assert_eq!(checks[1].status, Status::Ok, "{checks:?}");
        assert!(
            checks[1].evidence.starts_with(&format!(
                "podman, skopeo, buildah: {} (the default, ~/.docker) sends {HOST} to docker-credential-ecr-login",
                h.path(".docker/config.json")
            )),
            "{}",
            checks[1].evidence
        );
        assert!(
            checks[1].evidence.contains(&format!(
                "read first: {} has no entry for it",
                h.path(".config/containers/auth.json")
            )),
            "{}",
            checks[1].evidence
        );
        assert_eq!(names(&routes), ["ecr-login"], "one helper, checked once");
    }

    #[test]
    fn the_files_are_searched_in_containers_auth_json_order() {
        // The primary file (XDG_RUNTIME_DIR) before ~/.config before the Docker config.
        let h = Home::new();
        h.file(".docker/config.json", &helpers("ecr-login"))
            .file(".config/containers/auth.json", &helpers("ecr-auth"))
            .file("run/containers/auth.json", &expired_auth());
        let (checks, routes) = h.wiring();
        assert_eq!(checks[1].status, Status::Fail, "{checks:?}");
        assert!(
            checks[1].evidence.contains(&format!(
                "{} (the primary file, in $XDG_RUNTIME_DIR) has a static auths entry for {HOST} holding an ECR token that expired at 2020-09-13T12:26:40Z",
                h.path("run/containers/auth.json")
            )),
            "{}",
            checks[1].evidence
        );
        assert_eq!(names(&routes), ["ecr-login", "static"]);

        // Without the primary file: ~/.config/containers/auth.json.
        std::fs::remove_file(h.path("run/containers/auth.json")).unwrap();
        let (checks, routes) = h.wiring();
        assert_eq!(checks[1].status, Status::Ok);
        assert!(
            checks[1].evidence.contains(&format!(
                "{} (~/.config/containers) sends {HOST} to docker-credential-ecr-auth (credHelpers)",
                h.path(".config/containers/auth.json")
            )),
            "{}",
            checks[1].evidence
        );
        assert_eq!(names(&routes), ["ecr-login", "ecr-auth"], "both helpers");

        // REGISTRY_AUTH_FILE replaces the primary file; the rest still follow.
        let over = h.path("elsewhere.json");
        let h = h.set("REGISTRY_AUTH_FILE", &over);
        h.file("elsewhere.json", &helpers("from-override"))
            .file("run/containers/auth.json", &helpers("primary"));
        let (checks, _) = h.wiring();
        assert!(
            checks[1]
                .evidence
                .contains("(REGISTRY_AUTH_FILE) sends 123456789012.dkr.ecr.eu-west-1.amazonaws.com to docker-credential-from-override"),
            "{}",
            checks[1].evidence
        );
    }

    #[test]
    fn credsstore_serves_docker_but_not_podman() {
        let h = Home::new();
        h.file(".docker/config.json", r#"{"credsStore":"ecr-login"}"#);
        let (checks, routes) = h.wiring();
        assert_eq!(checks[0].status, Status::Ok);
        assert_eq!(checks[1].status, Status::Warn, "{checks:?}");
        assert!(
            checks[1]
                .evidence
                .contains("they ignore credsStore (ecr-login in"),
            "{}",
            checks[1].evidence
        );
        assert!(checks[1]
            .fix
            .as_deref()
            .unwrap()
            .starts_with("ecr-auth configure docker --registry"));
        assert_eq!(names(&routes), ["ecr-login"]);
    }

    #[test]
    fn podman_alone_is_enough_wiring() {
        // No Docker config at all, but the containers auth.json sends the host on.
        let h = Home::new();
        h.file(".config/containers/auth.json", &helpers("ecr-login"));
        let (checks, routes) = h.wiring();
        assert_eq!(checks[0].status, Status::Warn, "{checks:?}");
        assert!(checks[0].evidence.contains("does not exist"));
        assert_eq!(checks[1].status, Status::Ok);
        assert_eq!(names(&routes), ["ecr-login"]);

        // Neither: Docker's failure comes first.
        let h = Home::new();
        let (checks, routes) = h.wiring();
        assert_eq!(checks[0].status, Status::Fail);
        assert_eq!(checks[1].status, Status::Fail);
        assert!(routes.is_empty());
    }

    #[test]
    fn a_broken_or_legacy_file_is_named() {
        let h = Home::new();
        h.file(".docker/config.json", &helpers("ecr-login"))
            .file("run/containers/auth.json", "{\"auths\":");
        let (checks, _) = h.wiring();
        assert_eq!(checks[1].status, Status::Fail);
        assert!(
            checks[1].evidence.contains("is not valid JSON")
                && checks[1].evidence.contains("they stop there"),
            "{}",
            checks[1].evidence
        );

        // ~/.dockercfg, the old format: the file is the auths object.
        let h = Home::new().set("XDG_RUNTIME_DIR", "/nonexistent/run");
        h.file(".docker/config.json", r#"{"auths":{}}"#).file(
            ".dockercfg",
            &format!(r#"{{"{HOST}":{{"auth":"dXNlcjpwYXNz"}}}}"#),
        );
        let (checks, _) = h.wiring();
        assert_eq!(checks[1].status, Status::Warn, "{checks:?}");
        assert!(
            checks[1]
                .evidence
                .contains("(the legacy Docker file) has a static auths entry")
                && checks[1]
                    .evidence
                    .contains("XDG_RUNTIME_DIR=/nonexistent/run does not exist"),
            "{}",
            checks[1].evidence
        );
    }
}
