//! Fuzz targets for the edits ecr-auth makes to other programs' files: a
//! runner's `config.toml` and a Docker `config.json` / `DOCKER_AUTH_CONFIG`
//! (and the dotenv report built over one). The properties are checked here,
//! independently of the checks the edits make on themselves: the output parses
//! back, every key the edit did not mean to change keeps its value, the wiring
//! asked for is there, and a second edit changes nothing.

use serde_json::Value as Json;

use crate::dockercfg::{DockerConfig, Wiring};
use crate::gitlab::runner_config::{self, JobMounts, Request, RunnerConfigError, ENV_KEY};
use crate::registry::Host;
use crate::secret::Secret;
use crate::tokens::{AuthToken, Origin};

const A: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
const B: &str = "210987654321.dkr.ecr.us-east-1.amazonaws.com";
const PATH: &str = "/etc/gitlab-runner/config.toml";

fn helpers() -> Wiring {
    Wiring::CredHelpers {
        hosts: vec![A.into(), B.into()],
        helper: "ecr-login".into(),
    }
}

fn store() -> Wiring {
    Wiring::CredsStore {
        helper: "ecr-login".into(),
    }
}

/// The three shapes `configure gitlab-runner` edits: S1 with credHelpers, S2
/// with Docker-in-Docker and AWS credentials, S2 through the broker for the
/// runner named "a".
fn runner_requests() -> Vec<Request> {
    let jobs = JobMounts {
        helper_binary: "/usr/local/bin/docker-credential-ecr-login".into(),
        docker_config: "/etc/ecr-auth/job-docker-config.json".into(),
        aws_credentials: Some("/root/.aws/credentials".into()),
        ecr_auth_config: None,
        dind: true,
        broker_socket: None,
    };
    vec![
        Request {
            runners: vec![],
            wiring: helpers(),
            jobs: None,
        },
        Request {
            runners: vec![],
            wiring: store(),
            jobs: Some(jobs.clone()),
        },
        Request {
            runners: vec!["a".into()],
            wiring: helpers(),
            jobs: Some(JobMounts {
                aws_credentials: None,
                dind: false,
                broker_socket: Some("/run/ecr-auth/broker.sock".into()),
                ..jobs
            }),
        },
    ]
}

/// Runner `config.toml` edit: never panics; never fails its own final check
/// (that error says "please report this"); other errors are one line naming
/// the file; an edited file parses back, keeps every key of every runner it was
/// not asked to touch and every key of the selected runners it does not own,
/// merges into an existing DOCKER_AUTH_CONFIG without losing a key of it, wires
/// what was asked, and is a fixed point.
pub(crate) fn runner_config(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    // One request per case (the length picks it), so mutations cover all three
    // at a third of the cost.
    let all = runner_requests();
    for req in [&all[input.len() % all.len()]] {
        let edited = match runner_config::edit(text, PATH, req) {
            Ok(e) => e,
            Err(e @ RunnerConfigError::Verify { .. }) => {
                panic!("the edit failed its own check: {e}")
            }
            Err(e) => {
                let m = e.to_string();
                assert!(m.contains(PATH), "the error does not name the file: {m}");
                assert!(!m.contains('\n'), "not one line: {m:?}");
                continue;
            }
        };
        let old: toml::Table = toml::from_str(text)
            .unwrap_or_else(|e| panic!("the edit accepted what toml rejects ({e})"));
        let new: toml::Table = toml::from_str(&edited.text)
            .unwrap_or_else(|e| panic!("the edit does not parse back: {e}\n{}", edited.text));
        check_runner_edit(&old, &new, req);
        let again = runner_config::edit(&edited.text, PATH, req)
            .unwrap_or_else(|e| panic!("a second edit failed: {e}"));
        assert_eq!(again.text, edited.text, "a second edit changed the file");
    }
}

fn check_runner_edit(old: &toml::Table, new: &toml::Table, req: &Request) {
    for (k, v) in old {
        if k != "runners" {
            assert!(same(Some(v), new.get(k)), "top-level `{k}` changed");
        }
    }
    let runners = |t: &toml::Table| -> Vec<toml::Value> {
        t.get("runners")
            .and_then(|r| r.as_array())
            .cloned()
            .unwrap_or_default()
    };
    let (old_r, new_r) = (runners(old), runners(new));
    assert_eq!(old_r.len(), new_r.len(), "the number of runners changed");
    for (i, (o, n)) in old_r.iter().zip(&new_r).enumerate() {
        let o = o.as_table().expect("a [[runners]] entry is a table");
        let n = n
            .as_table()
            .unwrap_or_else(|| panic!("runner {i} is no longer a table"));
        let selected = if req.runners.is_empty() {
            o.get("executor")
                .and_then(|e| e.as_str())
                .is_some_and(|e| runner_config::DOCKER_EXECUTORS.contains(&e))
        } else {
            o.get("name")
                .and_then(|v| v.as_str())
                .is_some_and(|name| req.runners.iter().any(|r| r == name))
        };
        if !selected {
            assert!(
                same(
                    Some(&toml::Value::Table(o.clone())),
                    Some(&toml::Value::Table(n.clone()))
                ),
                "runner {i} was not selected, and changed"
            );
            continue;
        }
        for (k, v) in o {
            if k != "environment" && k != "docker" {
                assert!(same(Some(v), n.get(k)), "runner {i}: `{k}` changed");
            }
        }
        check_environment(i, o, n, req);
        check_docker(i, o, n, req);
    }
}

fn strings(v: Option<&toml::Value>) -> Vec<String> {
    v.and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn check_environment(i: usize, o: &toml::Table, n: &toml::Table, req: &Request) {
    let prefix = format!("{ENV_KEY}=");
    let (old_env, new_env) = (strings(o.get("environment")), strings(n.get("environment")));
    // Entries the edit does not own stay, in order.
    let owned = |s: &str| {
        s.starts_with(&prefix)
            || (req.jobs.as_ref().is_some_and(|j| j.broker_socket.is_some())
                && s.starts_with("ECR_AUTH_BROKER="))
    };
    let kept_old: Vec<&String> = old_env.iter().filter(|s| !owned(s)).collect();
    let kept_new: Vec<&String> = new_env.iter().filter(|s| !owned(s)).collect();
    assert_eq!(
        kept_old, kept_new,
        "runner {i}: environment entries changed"
    );
    let value = |env: &[String]| {
        env.iter()
            .rev()
            .find_map(|s| s.strip_prefix(&prefix).map(str::to_string))
    };
    let now = value(&new_env).unwrap_or_else(|| panic!("runner {i}: no {ENV_KEY}"));
    let doc = DockerConfig::parse(&now, "new")
        .unwrap_or_else(|e| panic!("runner {i}: the new {ENV_KEY} does not parse: {e}"));
    assert!(req.wiring.is_applied(&doc), "runner {i}: not wired");
    if let Some(before) = value(&old_env) {
        let before: Json = if before.trim().is_empty() {
            Json::Object(Default::default())
        } else {
            serde_json::from_str(&before).expect("the edit accepted it")
        };
        let after: Json = serde_json::from_str(&now).unwrap();
        kept(
            &before,
            &after,
            &wiring_paths(&req.wiring),
            "DOCKER_AUTH_CONFIG",
        );
    }
    if req.jobs.as_ref().is_some_and(|j| j.broker_socket.is_some()) {
        assert!(
            new_env.iter().any(|s| s
                == &format!(
                    "ECR_AUTH_BROKER=unix://{}",
                    runner_config::JOB_BROKER_SOCKET
                )),
            "runner {i}: no ECR_AUTH_BROKER"
        );
    }
}

fn check_docker(i: usize, o: &toml::Table, n: &toml::Table, req: &Request) {
    let empty = toml::Table::new();
    let od = o.get("docker").and_then(|d| d.as_table()).unwrap_or(&empty);
    let Some(jobs) = &req.jobs else {
        assert!(
            same(o.get("docker"), n.get("docker")),
            "runner {i}: [runners.docker] changed without --jobs"
        );
        return;
    };
    let nd = n
        .get("docker")
        .and_then(|d| d.as_table())
        .unwrap_or_else(|| panic!("runner {i}: no [runners.docker]"));
    for (k, v) in od {
        let owned = k == "volumes" || (k == "privileged" && jobs.dind);
        if !owned {
            assert!(same(Some(v), nd.get(k)), "runner {i}: docker.{k} changed");
        }
    }
    if jobs.dind {
        assert_eq!(
            nd.get("privileged").and_then(|p| p.as_bool()),
            Some(true),
            "runner {i}: not privileged"
        );
    }
    let ours: Vec<(String, String)> = jobs.volumes(req.wiring.helper());
    let (old_v, new_v) = (strings(od.get("volumes")), strings(nd.get("volumes")));
    for v in &old_v {
        let dest = runner_config::volume_destination(v);
        let replaced = ours
            .iter()
            .any(|(_, d)| dest.as_deref() == Some(d.as_str()));
        assert!(
            replaced || new_v.contains(v),
            "runner {i}: volume {v:?} lost"
        );
    }
    for entry in jobs.volume_entries(req.wiring.helper()) {
        assert!(
            new_v.contains(&entry),
            "runner {i}: volume {entry:?} missing"
        );
    }
}

/// Equal, NaN included (a `nan` in a TOML file the edit never touched).
fn same(a: Option<&toml::Value>, b: Option<&toml::Value>) -> bool {
    a == b || format!("{a:?}") == format!("{b:?}")
}

/// The JSON paths a wiring changes.
fn wiring_paths(w: &Wiring) -> Vec<Vec<String>> {
    match w {
        Wiring::CredHelpers { hosts, .. } => hosts
            .iter()
            .map(|h| vec!["credHelpers".to_string(), h.clone()])
            .collect(),
        Wiring::CredsStore { .. } => vec![vec!["credsStore".to_string()]],
    }
}

/// Every leaf of `before` (a scalar, null, or an empty array or object) has the
/// same value in `after`, unless it lies on or under a path the edit owns (or
/// is a container on the way to one), and the top-level keys keep their order.
fn kept(before: &Json, after: &Json, owned: &[Vec<String>], what: &str) {
    fn walk(v: &Json, at: &mut Vec<String>, out: &mut Vec<(Vec<String>, Json)>) {
        match v {
            Json::Object(m) if !m.is_empty() => {
                for (k, x) in m {
                    at.push(k.clone());
                    walk(x, at, out);
                    at.pop();
                }
            }
            Json::Array(a) if !a.is_empty() => {
                for (i, x) in a.iter().enumerate() {
                    at.push(format!("[{i}]"));
                    walk(x, at, out);
                    at.pop();
                }
            }
            leaf => out.push((at.clone(), leaf.clone())),
        }
    }
    fn get<'a>(v: &'a Json, path: &[String]) -> Option<&'a Json> {
        path.iter().try_fold(v, |v, k| match k.strip_prefix('[') {
            Some(i) if v.is_array() => v.get(i.trim_end_matches(']').parse::<usize>().ok()?),
            _ => v.get(k),
        })
    }
    let mut leaves = Vec::new();
    walk(before, &mut Vec::new(), &mut leaves);
    for (path, value) in leaves {
        let touched = owned
            .iter()
            .any(|o| path.starts_with(o) || o.starts_with(&path));
        if !touched {
            assert_eq!(
                get(after, &path),
                Some(&value),
                "{what}: {path:?} lost or changed"
            );
        }
    }
    if let (Some(b), Some(a)) = (before.as_object(), after.as_object()) {
        let order: Vec<&String> = a.keys().filter(|k| b.contains_key(*k)).collect();
        assert_eq!(
            order,
            b.keys().collect::<Vec<_>>(),
            "{what}: key order changed"
        );
    }
}

fn token(host: &str, password: &str) -> AuthToken {
    AuthToken {
        host: Host::parse(host).expect("a fixed host"),
        username: "AWS".into(),
        password: Secret::new(password.into()),
        issued_at: 1_700_000_000,
        expires_at: 1_700_043_200,
        proxy_endpoint: None,
        origin: Origin::Aws,
    }
}

/// Docker `config.json` / `DOCKER_AUTH_CONFIG` merge (`configure docker`,
/// `auth-config --merge`, the variable sync, the dotenv report): never panics;
/// an error names the document; wiring or adding tokens keeps every key it does
/// not own (and the key order), both output forms parse back to the same
/// document, a second merge changes nothing; a dotenv report is lines GitLab
/// accepts and never puts another host's credentials in the `.gitlab-ci.yml` line.
pub(crate) fn docker_config(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let base = match DockerConfig::parse(text, "the fuzzed config.json") {
        Ok(b) => b,
        Err(e) => {
            let m = e.to_string();
            assert!(m.contains("the fuzzed config.json"), "{m}");
            return;
        }
    };
    let before: Json = if text.trim().is_empty() {
        Json::Object(Default::default())
    } else {
        serde_json::from_str(text).expect("DockerConfig parsed it")
    };
    let round_trip = |doc: &DockerConfig| -> Json {
        let compact = doc.to_compact();
        assert!(!compact.contains('\n'), "compact JSON on several lines");
        let a = DockerConfig::parse(&compact, "compact").expect("compact parses back");
        let b = DockerConfig::parse(&doc.to_pretty(), "pretty").expect("pretty parses back");
        assert!(a == *doc && b == *doc, "a form parses back differently");
        serde_json::from_str(&compact).unwrap()
    };
    for wiring in [helpers(), store()] {
        let mut doc = base.clone();
        wiring.apply(&mut doc);
        assert!(wiring.is_applied(&doc), "{wiring:?} not applied");
        kept(&before, &round_trip(&doc), &wiring_paths(&wiring), "wiring");
        let mut again = doc.clone();
        wiring.apply(&mut again);
        assert_eq!(again.to_compact(), doc.to_compact(), "a second wiring");
    }
    let tokens = [token(A, "pw-a"), token(B, "pw-b")];
    let doc = crate::auth_document::auth_document(&base, &tokens);
    let owned = vec![
        vec!["auths".to_string(), A.to_string()],
        vec!["auths".to_string(), B.to_string()],
    ];
    kept(&before, &round_trip(&doc), &owned, "auths");
    assert_eq!(doc.auth(A), Some(tokens[0].basic_auth().expose().as_str()));
    assert_eq!(
        crate::auth_document::auth_document(&doc, &tokens).to_compact(),
        doc.to_compact(),
        "a second merge"
    );
    dotenv(&base, &before, &tokens);
}

fn dotenv(base: &DockerConfig, before: &Json, tokens: &[AuthToken]) {
    use crate::gitlab::dotenv::{render, Form, MAX_BYTES};
    let scoped: Vec<(AuthToken, String)> = tokens
        .iter()
        .map(|t| {
            let scope = t.host.ecr_target().expect("an ECR host").scope();
            (t.clone(), scope)
        })
        .collect();
    // Credentials of other hosts in the merged document.
    let theirs: Vec<String> = base
        .auth_hosts()
        .into_iter()
        .filter(|h| *h != A && *h != B)
        .filter_map(|h| before.get("auths")?.get(h)?.get("auth")?.as_str())
        .filter(|a| a.len() >= 4)
        .map(str::to_string)
        .collect();
    for form in [Form::Auto, Form::TokenVars] {
        let Ok(d) = render(base, &scoped, form) else {
            continue;
        };
        assert!(d.text.len() < MAX_BYTES, "{} bytes", d.text.len());
        assert!(d.text.ends_with('\n'), "no final newline");
        for line in d.text.lines() {
            let (k, v) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not KEY=VALUE: {line:?}"));
            assert!(
                !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "key {k:?}"
            );
            assert!(!v.contains('\r'), "a carriage return in {k}");
            if k == "DOCKER_AUTH_CONFIG" {
                let after: Json = serde_json::from_str(v).expect("the value parses");
                let owned = vec![
                    vec!["auths".to_string(), A.to_string()],
                    vec!["auths".to_string(), B.to_string()],
                ];
                kept(before, &after, &owned, "dotenv DOCKER_AUTH_CONFIG");
            }
        }
        if let Some(ci) = &d.ci_line {
            for secret in &theirs {
                assert!(!ci.contains(secret.as_str()), "a credential in {ci:?}");
            }
        }
    }
}
