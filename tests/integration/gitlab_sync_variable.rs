//! `ecr-auth gitlab sync-variable` against a GitLab variables API.
//!
//! TEST DOUBLE: no GitLab can run here, so [`GitLabDouble`] is a small HTTP
//! server (std TcpListener, one thread per connection) that implements the
//! documented project- and group-level CI/CD variables endpoints
//! (docs.gitlab.com/ee/api/project_level_variables.html, group_level_variables.html):
//! `GET /api/v4/{projects|groups}/:id/variables/:key[?filter[environment_scope]=S]`,
//! `PUT` on the same path, `POST /api/v4/{projects|groups}/:id/variables`;
//! `:id` a numeric id or a URL-encoded path; `PRIVATE-TOKEN` header (401
//! `{"message":"401 Unauthorized"}` otherwise); `404 Variable Not Found` vs
//! `404 Project Not Found`; POST of an existing key is 400; a masked value must
//! be one line without white space, 8+ characters, and (unless `raw`) only
//! Base64-alphabet characters plus `@:.~-_` — otherwise 400
//! `{"message":{"value":["is invalid"]}}`. `strict_masking` plays an older
//! GitLab that applies the character rule to raw values too. Everything else
//! in these tests is real: the binary, and ECR tokens from the lab token server.

use crate::common;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{TempDir, TokenServer};

const ECR: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
const TOKEN: &str = "glpat-lab-0123456789abcdef";

#[derive(Clone, Debug, PartialEq)]
struct Var {
    value: String,
    protected: bool,
    masked: bool,
    raw: bool,
}

#[derive(Clone, Debug)]
struct Request {
    method: String,
    path: String,
    token: Option<String>,
    body: serde_json::Value,
}

#[derive(Default)]
struct State {
    /// (owner, key, environment scope) → variable; owner is "projects/42" or "groups/7".
    vars: BTreeMap<(String, String, String), Var>,
    requests: Vec<Request>,
    /// Every request answers with this status (a GitLab outage).
    fail: Option<u16>,
    /// The next this many requests answer 503, then GitLab is back.
    fail_times: u32,
    strict_masking: bool,
}

struct GitLabDouble {
    url: String,
    state: Arc<Mutex<State>>,
}

impl GitLabDouble {
    fn start() -> GitLabDouble {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let s = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || serve(stream, &s));
            }
        });
        GitLabDouble { url, state }
    }

    fn var(&self, owner: &str, key: &str, scope: &str) -> Option<Var> {
        self.state
            .lock()
            .unwrap()
            .vars
            .get(&(owner.into(), key.into(), scope.into()))
            .cloned()
    }

    fn set_var(&self, owner: &str, key: &str, scope: &str, v: Var) {
        self.state
            .lock()
            .unwrap()
            .vars
            .insert((owner.into(), key.into(), scope.into()), v);
    }

    fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    fn methods(&self) -> Vec<String> {
        self.requests().iter().map(|r| r.method.clone()).collect()
    }

    fn clear_requests(&self) {
        self.state.lock().unwrap().requests.clear();
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        let (status, answer) = handle(
            state,
            &method,
            &target,
            headers.get("private-token").cloned(),
            &body,
        );
        let text = answer.to_string();
        let reason = match status {
            200 => "OK",
            201 => "Created",
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            _ => "Error",
        };
        let resp = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if stream.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

fn decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn maskable(v: &str, raw: bool, strict: bool) -> bool {
    let basic = v.len() >= 8 && !v.chars().any(char::is_whitespace);
    let charset = v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "+/=@:.~-_".contains(c));
    basic && ((raw && !strict) || charset)
}

fn handle(
    state: &Mutex<State>,
    method: &str,
    target: &str,
    token: Option<String>,
    body: &[u8],
) -> (u16, serde_json::Value) {
    use serde_json::json;
    let mut st = state.lock().unwrap();
    let body: serde_json::Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body).unwrap_or(json!({}))
    };
    st.requests.push(Request {
        method: method.into(),
        path: target.into(),
        token: token.clone(),
        body: body.clone(),
    });
    if let Some(status) = st.fail {
        return (status, json!({"message": format!("{status} Bad Gateway")}));
    }
    if st.fail_times > 0 {
        st.fail_times -= 1;
        return (503, json!({"message": "503 Service Unavailable"}));
    }
    if token.as_deref() != Some(TOKEN) {
        return (401, json!({"message": "401 Unauthorized"}));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let filter = query
        .split('&')
        .find_map(|q| {
            q.strip_prefix("filter%5Benvironment_scope%5D=")
                .or_else(|| q.strip_prefix("filter[environment_scope]="))
        })
        .map(decode);
    let segs: Vec<&str> = path.trim_start_matches("/api/v4/").split('/').collect();
    let owner = match segs.as_slice() {
        ["projects", id, ..] => match decode(id).as_str() {
            "42" | "team/app" => "projects/42".to_string(),
            _ => return (404, json!({"message": "404 Project Not Found"})),
        },
        ["groups", id, ..] => match decode(id).as_str() {
            "7" | "team" => "groups/7".to_string(),
            _ => return (404, json!({"message": "404 Group Not Found"})),
        },
        _ => return (404, json!({"error": "404 Not Found"})),
    };
    let show = |k: &str, scope: &str, v: &Var| {
        json!({"variable_type": "env_var", "key": k, "value": v.value, "protected": v.protected, "masked": v.masked,
               "raw": v.raw, "environment_scope": scope, "description": null})
    };
    let field =
        |name: &str, default: bool| body.get(name).and_then(|v| v.as_bool()).unwrap_or(default);
    match (method, segs.len()) {
        ("GET", 4) => {
            let key = segs[3].to_string();
            let scope = filter.unwrap_or("*".into());
            match st.vars.get(&(owner, key.clone(), scope.clone())) {
                Some(v) => (200, show(&key, &scope, v)),
                None => (404, json!({"message": "404 Variable Not Found"})),
            }
        }
        ("PUT", 4) => {
            let key = segs[3].to_string();
            let scope = filter.unwrap_or("*".into());
            let Some(old) = st
                .vars
                .get(&(owner.clone(), key.clone(), scope.clone()))
                .cloned()
            else {
                return (404, json!({"message": "404 Variable Not Found"}));
            };
            let v = Var {
                value: body
                    .get("value")
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
                    .unwrap_or(old.value),
                protected: field("protected", old.protected),
                masked: field("masked", old.masked),
                raw: field("raw", old.raw),
            };
            if v.masked && !maskable(&v.value, v.raw, st.strict_masking) {
                return (400, json!({"message": {"value": ["is invalid"]}}));
            }
            st.vars
                .insert((owner, key.clone(), scope.clone()), v.clone());
            (200, show(&key, &scope, &v))
        }
        ("POST", 3) => {
            let key = body["key"].as_str().unwrap_or("").to_string();
            let scope = body
                .get("environment_scope")
                .and_then(|s| s.as_str())
                .unwrap_or("*")
                .to_string();
            if st
                .vars
                .contains_key(&(owner.clone(), key.clone(), scope.clone()))
            {
                return (
                    400,
                    json!({"message": {"key": [format!("({key}) has already been taken")]}}),
                );
            }
            let v = Var {
                value: body["value"].as_str().unwrap_or("").to_string(),
                protected: field("protected", false),
                masked: field("masked", false),
                raw: field("raw", false),
            };
            if v.masked && !maskable(&v.value, v.raw, st.strict_masking) {
                return (400, json!({"message": {"value": ["is invalid"]}}));
            }
            st.vars
                .insert((owner, key.clone(), scope.clone()), v.clone());
            (201, show(&key, &scope, &v))
        }
        _ => (405, json!({"error": "405 Method Not Allowed"})),
    }
}

fn sync(ts: &TokenServer, tmp: &TempDir, gitlab: &GitLabDouble) -> Command {
    let mut cmd = Command::new(common::bin());
    common::apply_aws_env(&mut cmd, &ts.endpoint);
    cmd.env("ECR_AUTH_CACHE_DIR", tmp.join("cache"))
        .env("HOME", tmp.join("home"))
        .env_remove("ECR_AUTH_CONFIG")
        .env_remove("CI_API_V4_URL")
        .env("GITLAB_TOKEN", TOKEN)
        .args([
            "gitlab",
            "sync-variable",
            "--gitlab-url",
            &gitlab.url,
            "--registry",
            ECR,
        ]);
    cmd
}

fn auth_of(password: &str) -> String {
    common::base64(format!("AWS:{password}").as_bytes())
}

#[test]
fn creates_merges_and_leaves_an_up_to_date_variable_alone() {
    let ts = TokenServer::start();
    let gitlab = GitLabDouble::start();
    let tmp = TempDir::new("sync");
    let out = common::run(sync(&ts, &tmp, &gitlab).args(["--project", "team/app"]));
    assert!(out.status.success(), "{}", common::output_text(&out));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("DOCKER_AUTH_CONFIG on project team/app: created"));
    // 404 Variable Not Found → POST, with the token in the header.
    assert_eq!(gitlab.methods(), vec!["GET", "POST"]);
    let reqs = gitlab.requests();
    assert_eq!(
        reqs[0].path,
        "/api/v4/projects/team%2Fapp/variables/DOCKER_AUTH_CONFIG"
    );
    assert!(reqs.iter().all(|r| r.token.as_deref() == Some(TOKEN)));
    assert_eq!(reqs[1].body["raw"], true);
    assert_eq!(reqs[1].body["environment_scope"], "*");
    let v = gitlab
        .var("projects/42", "DOCKER_AUTH_CONFIG", "*")
        .unwrap();
    let expected = serde_json::json!({"auths": {ECR: {"auth": auth_of(&ts.password())}}});
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&v.value).unwrap(),
        expected
    );
    assert!(!v.value.contains(char::is_whitespace));
    assert!(!v.protected && !v.masked);

    // Someone keeps another registry in the variable; the token rotates.
    let mut edited = v.clone();
    edited.value = format!(
        r#"{{"auths":{{"registry.gitlab.com":{{"auth":"Z2w6dG9rZW4="}},"{ECR}":{{"auth":"b2xk"}}}},"credHelpers":{{"gcr.io":"gcloud"}}}}"#
    );
    edited.protected = true;
    gitlab.set_var("projects/42", "DOCKER_AUTH_CONFIG", "*", edited);
    let fresh = ts.rotate();
    gitlab.clear_requests();
    common::run_ok(
        sync(&ts, &tmp, &gitlab)
            .env("ECR_AUTH_CACHE_DIR", tmp.join("cache2"))
            .args(["--project", "42"]),
    );
    assert_eq!(gitlab.methods(), vec!["GET", "PUT"]);
    let v = gitlab
        .var("projects/42", "DOCKER_AUTH_CONFIG", "*")
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&v.value).unwrap();
    assert_eq!(doc["auths"]["registry.gitlab.com"]["auth"], "Z2w6dG9rZW4=");
    assert_eq!(doc["auths"][ECR]["auth"], auth_of(&fresh));
    assert_eq!(doc["credHelpers"]["gcr.io"], "gcloud");
    assert!(v.protected, "settings not asked for are kept");

    // Nothing changed: read, no write.
    gitlab.clear_requests();
    let out = common::run(
        sync(&ts, &tmp, &gitlab)
            .env("ECR_AUTH_CACHE_DIR", tmp.join("cache2"))
            .args(["--project", "42"]),
    );
    assert!(
        out.status.success()
            && String::from_utf8_lossy(&out.stderr)
                .contains("DOCKER_AUTH_CONFIG on project 42: already up to date"),
        "{}",
        common::output_text(&out)
    );
    assert_eq!(gitlab.methods(), vec!["GET"]);
}

#[test]
fn scopes_groups_and_masking() {
    let ts = TokenServer::start();
    let gitlab = GitLabDouble::start();
    let tmp = TempDir::new("sync-mask");
    // A group variable for one environment scope, masked and protected.
    common::run_ok(sync(&ts, &tmp, &gitlab).args([
        "--group",
        "team",
        "--environment-scope",
        "production",
        "--masked",
        "--protected",
    ]));
    let reqs = gitlab.requests();
    assert_eq!(
        reqs[0].path,
        "/api/v4/groups/team/variables/DOCKER_AUTH_CONFIG?filter%5Benvironment_scope%5D=production"
    );
    assert_eq!(reqs[1].path, "/api/v4/groups/team/variables");
    let v = gitlab
        .var("groups/7", "DOCKER_AUTH_CONFIG", "production")
        .unwrap();
    assert!(v.masked && v.raw && v.protected);
    assert!(gitlab.var("groups/7", "DOCKER_AUTH_CONFIG", "*").is_none());
    // --key names another variable.
    common::run_ok(sync(&ts, &tmp, &gitlab).args(["--project", "42", "--key", "ECR_DOCKER_AUTH"]));
    assert!(gitlab.var("projects/42", "ECR_DOCKER_AUTH", "*").is_some());

    // An older GitLab that cannot mask JSON: a clear 400 message, nothing written.
    gitlab.state.lock().unwrap().strict_masking = true;
    let out = common::run(sync(&ts, &tmp, &gitlab).args(["--project", "42", "--masked"]));
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("GitLab cannot mask the value of DOCKER_AUTH_CONFIG")
            && e.contains(r#"{"value":["is invalid"]}"#)
            && e.contains("drop --masked"),
        "{e}"
    );
    assert!(gitlab
        .var("projects/42", "DOCKER_AUTH_CONFIG", "*")
        .is_none());
}

#[test]
fn gitlab_failures_are_clear_and_change_nothing() {
    let ts = TokenServer::start();
    let gitlab = GitLabDouble::start();
    let tmp = TempDir::new("sync-bad");
    let keep = Var {
        value: "not json at all".into(),
        protected: false,
        masked: false,
        raw: false,
    };
    gitlab.set_var("projects/42", "DOCKER_AUTH_CONFIG", "*", keep.clone());

    let fail = |cmd: &mut Command, needles: &[&str]| {
        let out = common::run(cmd);
        assert_eq!(out.status.code(), Some(1), "{}", common::output_text(&out));
        let e = String::from_utf8_lossy(&out.stderr);
        for n in needles {
            assert!(e.contains(n), "expected {n:?} in: {e}");
        }
        assert!(!e.contains(TOKEN), "the GitLab token was printed: {e}");
        assert_eq!(
            gitlab
                .var("projects/42", "DOCKER_AUTH_CONFIG", "*")
                .unwrap(),
            keep,
            "the variable changed"
        );
    };
    fail(
        sync(&ts, &tmp, &gitlab).args(["--project", "42"]),
        &[
            "the current value of DOCKER_AUTH_CONFIG on project 42 is not a Docker config",
            "fix or delete the variable",
        ],
    );
    fail(
        sync(&ts, &tmp, &gitlab)
            .env("GITLAB_TOKEN", "wrong")
            .args(["--project", "42"]),
        &[
            "GitLab rejected the token in GITLAB_TOKEN (401)",
            "`api` scope",
        ],
    );
    fail(
        sync(&ts, &tmp, &gitlab)
            .env_remove("GITLAB_TOKEN")
            .args(["--project", "42"]),
        &["$GITLAB_TOKEN is empty"],
    );
    fail(
        sync(&ts, &tmp, &gitlab).args(["--project", "nope/nope"]),
        &["GitLab has no project nope/nope", "404 Project Not Found"],
    );
    gitlab.state.lock().unwrap().fail = Some(502);
    fail(
        sync(&ts, &tmp, &gitlab).args(["--project", "42"]),
        &["GitLab failed (502) on GET", "try again later"],
    );
    gitlab.state.lock().unwrap().fail = None;
    // The token is never an argument.
    let out = common::run(sync(&ts, &tmp, &gitlab).args(["--project", "42", "--token", TOKEN]));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn every_retries_after_a_failure_and_stops_on_sigterm() {
    // The backoff rule itself is proved on an injected clock in gitlab/sync.rs;
    // here, once, the real daemon: GitLab fails once, the retry comes after the
    // first backoff (about a second), and SIGTERM ends the wait at once.
    let ts = TokenServer::start();
    let gitlab = GitLabDouble::start();
    let tmp = TempDir::new("sync-every");
    gitlab.state.lock().unwrap().fail_times = 1;
    let started = Instant::now();
    let mut child = sync(&ts, &tmp, &gitlab)
        .args(["--project", "42", "--every", "1h"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let wait_for = |what: &str, limit: Duration, cond: &dyn Fn() -> bool| {
        while !cond() {
            assert!(started.elapsed() < limit, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for(
        "the retry to create the variable",
        Duration::from_secs(20),
        &|| {
            gitlab
                .var("projects/42", "DOCKER_AUTH_CONFIG", "*")
                .is_some()
        },
    );
    // GET (503), then GET (404) and POST: one retry, not a busy loop.
    assert_eq!(gitlab.methods(), vec!["GET", "GET", "POST"]);
    let reqs = gitlab.requests();
    assert!(reqs
        .iter()
        .all(|r| r.path.starts_with("/api/v4/projects/42/variables")));
    // It now waits for the next refresh (an hour): still running.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the daemon exited on its own"
    );
    let term = Instant::now();
    common::run_ok(Command::new("kill").args(["-TERM", &child.id().to_string()]));
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            term.elapsed() < Duration::from_secs(5),
            "SIGTERM did not end the wait"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        status.code(),
        Some(0),
        "a clean exit on SIGTERM, not death by signal"
    );
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[0].contains("GitLab failed (503)")
            && lines[0].contains("retrying at")
            && lines[0].contains("(failure 1 in a row)"),
        "{stderr}"
    );
    assert!(
        lines[1].contains("DOCKER_AUTH_CONFIG on project 42: created; next refresh at"),
        "{stderr}"
    );
    assert_eq!(lines[2], "ecr-auth: stopping: SIGTERM or SIGINT received");
}

#[test]
fn a_scheduled_job_syncs_with_its_oidc_token() {
    // As in examples/gitlab/gitlab-ci/refresh-variable.gitlab-ci.yml: no AWS
    // credentials in the job, only its OIDC token and ECR_AUTH_ROLE_ARN.
    let moto = common::Moto::start();
    let ts = TokenServer::start();
    let gitlab = GitLabDouble::start();
    let tmp = TempDir::new("sync-oidc");
    let job = || {
        let mut cmd = Command::new(common::bin());
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", tmp.join("home"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_ENDPOINT_URL_STS", &moto.endpoint)
            .env("AWS_ENDPOINT_URL_ECR", &ts.endpoint)
            .env("CI_PROJECT_ID", "42")
            .env("CI_API_V4_URL", format!("{}/api/v4", gitlab.url))
            .env("GITLAB_TOKEN", TOKEN)
            .env(
                "GITLAB_OIDC_TOKEN",
                common::gitlab_jwt(common::now_unix() + 600),
            )
            .env(
                "ECR_AUTH_ROLE_ARN",
                "arn:aws:iam::123456789012:role/gitlab-ecr-pull",
            )
            .args([
                "gitlab",
                "sync-variable",
                "--project",
                "42",
                "--registry",
                ECR,
            ]);
        cmd
    };
    let out = common::run(&mut job());
    assert!(out.status.success(), "{}", common::output_text(&out));
    let v = gitlab
        .var("projects/42", "DOCKER_AUTH_CONFIG", "*")
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&v.value).unwrap();
    assert_eq!(doc["auths"][ECR]["auth"], auth_of(&ts.password()));
    assert_eq!(
        moto.assumed_roles()[0]["role_arn"],
        "arn:aws:iam::123456789012:role/gitlab-ecr-pull"
    );
    // A job's OIDC token dies with the job: no daemon on it.
    let out = common::run(job().args(["--every", "1h"]));
    assert_eq!(out.status.code(), Some(2), "{}", common::output_text(&out));
}
