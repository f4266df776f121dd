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
//! GitLab that applies the character rule to raw values too. Misbehaving the
//! way GitLab documents it may: `429 Too Many Requests` with a `Retry-After`
//! header (docs.gitlab.com/ee/security/rate_limits.html, user/admin_area/
//! settings/user_and_ip_rate_limits.html: "Retry-After" in seconds), 5xx
//! while an instance is degraded, 403 for a user without the Maintainer role,
//! and a variable deleted by someone else between our GET and our PUT (404
//! Variable Not Found on the PUT). Beyond GitLab's behaviour, the double is a
//! witness: it records when each request came and checks that every PUT/POST
//! body is a whole document (all documented fields, a value that is a complete
//! Docker config whose every `auth` decodes to `user:password`), so the tests can
//! prove that what we write is never partial. Everything else in these tests is
//! real: the binary, and ECR tokens from the lab token server.

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
    /// When it arrived.
    at: Instant,
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
    /// The next this many requests answer 429 with this `Retry-After`.
    rate_limited: Option<(u32, String)>,
    /// The token is valid, but its user lacks the Maintainer role: 403.
    forbidden: bool,
    /// Someone deletes the variable just before our next PUT.
    delete_before_put: bool,
    strict_masking: bool,
    /// Writes whose body was not a whole document, and why.
    partial_writes: Vec<String>,
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

    /// Every PUT/POST so far carried a whole document; returns how many there were.
    fn assert_writes_whole(&self) -> usize {
        let st = self.state.lock().unwrap();
        assert_eq!(st.partial_writes, Vec::<String>::new(), "partial writes");
        st.requests
            .iter()
            .filter(|r| r.method == "PUT" || r.method == "POST")
            .count()
    }
}

/// Why a PUT/POST body is not a whole variable document, if it is not.
fn partial(method: &str, body: &serde_json::Value) -> Option<String> {
    let o = body.as_object()?;
    for (field, ok) in [
        ("value", o.get("value").is_some_and(|v| v.is_string())),
        (
            "variable_type",
            o.get("variable_type").is_some_and(|v| v == "env_var"),
        ),
        (
            "protected",
            o.get("protected").is_some_and(|v| v.is_boolean()),
        ),
        ("masked", o.get("masked").is_some_and(|v| v.is_boolean())),
        ("raw", o.get("raw").is_some_and(|v| v.is_boolean())),
        (
            "environment_scope",
            o.get("environment_scope").is_some_and(|v| v.is_string()),
        ),
        (
            "key",
            method != "POST" || o.get("key").is_some_and(|v| v.is_string()),
        ),
    ] {
        if !ok {
            return Some(format!("{method} without a valid `{field}`: {body}"));
        }
    }
    let value = o["value"].as_str().unwrap_or("");
    let doc: serde_json::Value = match serde_json::from_str(value) {
        Ok(d) => d,
        Err(e) => return Some(format!("{method}: the value is not JSON ({e}): {value:?}")),
    };
    let Some(auths) = doc.get("auths").and_then(|a| a.as_object()) else {
        return Some(format!("{method}: the value has no `auths`: {value:?}"));
    };
    for (host, entry) in auths {
        let auth = entry.get("auth").and_then(|a| a.as_str()).unwrap_or("");
        let decoded = String::from_utf8(common::base64_decode(auth)).unwrap_or_default();
        match decoded.split_once(':') {
            Some((user, pw)) if !user.is_empty() && !pw.is_empty() => {}
            _ => {
                return Some(format!(
                    "{method}: `auths.{host}.auth` is not user:password"
                ))
            }
        }
    }
    None
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
        let (status, mut answer) = handle(
            state,
            &method,
            &target,
            headers.get("private-token").cloned(),
            &body,
        );
        // A 429 says when to come back in a header (GitLab's rate limiter does).
        let retry_after = match answer.as_object_mut().and_then(|o| o.remove("retry_after")) {
            Some(v) => format!("Retry-After: {}\r\n", v.as_str().unwrap_or("")),
            None => String::new(),
        };
        let text = answer.to_string();
        let reason = match status {
            200 => "OK",
            201 => "Created",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            429 => "Too Many Requests",
            _ => "Error",
        };
        let resp = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n{retry_after}Content-Length: {}\r\n\r\n{text}",
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
        at: Instant::now(),
    });
    if method == "PUT" || method == "POST" {
        if let Some(why) = partial(method, &body) {
            st.partial_writes.push(why);
        }
    }
    if let Some(status) = st.fail {
        return (status, json!({"message": format!("{status} Bad Gateway")}));
    }
    if st.fail_times > 0 {
        st.fail_times -= 1;
        return (503, json!({"message": "503 Service Unavailable"}));
    }
    if let Some((times, retry_after)) = st.rate_limited.clone() {
        st.rate_limited = (times > 1).then(|| (times - 1, retry_after.clone()));
        // `serve` moves `retry_after` out of the body into the header.
        return (
            429,
            json!({"message": "Retry later", "retry_after": retry_after}),
        );
    }
    if token.as_deref() != Some(TOKEN) {
        return (401, json!({"message": "401 Unauthorized"}));
    }
    if st.forbidden {
        return (403, json!({"message": "403 Forbidden"}));
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
            if std::mem::take(&mut st.delete_before_put) {
                st.vars.remove(&(owner.clone(), key.clone(), scope.clone()));
            }
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
    gitlab.assert_writes_whole();
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
    assert!(gitlab.assert_writes_whole() >= 3);
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
            && lines[0].contains("(failure 1 in a row"),
        "{stderr}"
    );
    assert!(
        lines[1].contains(
            "DOCKER_AUTH_CONFIG on project 42: created (after 1 failure in a row); next refresh at"
        ),
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

/// A running `sync-variable --every`, its stderr collected line by line.
struct Daemon {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    started: Instant,
}

impl Daemon {
    fn start(cmd: &mut Command) -> Daemon {
        let mut child = cmd
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start ecr-auth");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        Daemon {
            child,
            lines,
            started: Instant::now(),
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn wait_for(&self, what: &str, limit: Duration, cond: impl Fn() -> bool) {
        while !cond() {
            assert!(
                self.started.elapsed() < limit,
                "timed out waiting for {what}; stderr: {:#?}",
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, and a clean exit.
    fn stop(mut self) {
        common::run_ok(Command::new("kill").args(["-TERM", &self.child.id().to_string()]));
        let term = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                term.elapsed() < Duration::from_secs(5),
                "SIGTERM did not end it"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(0), "{:#?}", self.lines());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The unix time a log line's `retrying at <RFC 3339>` names.
fn retrying_at(line: &str) -> i64 {
    let at = line
        .split("retrying at ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no retry time in {line:?}"));
    humantime::parse_rfc3339(at)
        .unwrap_or_else(|e| panic!("{at:?}: {e}"))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn a_429_is_waited_out_as_gitlab_asks() {
    let ts = TokenServer::start();
    let gitlab = GitLabDouble::start();
    let tmp = TempDir::new("sync-429");
    // One-shot: GitLab asks for 2 s (our own first backoff would be 1 s).
    gitlab.state.lock().unwrap().rate_limited = Some((1, "2".into()));
    let out = common::run(sync(&ts, &tmp, &gitlab).args(["--project", "42"]));
    assert!(out.status.success(), "{}", common::output_text(&out));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("rate of requests (429)")
            && e.contains("(it asks to be called again in 2 s)")
            && e.contains("(attempt 2 of 3)"),
        "{e}"
    );
    assert_eq!(gitlab.methods(), vec!["GET", "GET", "POST"]);
    let reqs = gitlab.requests();
    let gap = reqs[1].at - reqs[0].at;
    assert!(gap >= Duration::from_millis(1900), "retried after {gap:?}");
    assert_eq!(gitlab.assert_writes_whole(), 1);

    // The daemon: GitLab asks for two minutes. Its retry is planned that far
    // out (not at the 1 s backoff), and nothing is sent meanwhile.
    gitlab.set_var(
        "projects/42",
        "DOCKER_AUTH_CONFIG",
        "*",
        Var {
            value: "{}".into(),
            protected: false,
            masked: false,
            raw: true,
        },
    );
    gitlab.clear_requests();
    gitlab.state.lock().unwrap().rate_limited = Some((1, "120".into()));
    let daemon = Daemon::start(sync(&ts, &tmp, &gitlab).args(["--project", "42", "--every", "1h"]));
    daemon.wait_for("the 429 to be told", Duration::from_secs(20), || {
        daemon.lines().iter().any(|l| l.contains("(429)"))
    });
    let told = daemon
        .lines()
        .into_iter()
        .find(|l| l.contains("(429)"))
        .unwrap();
    let asked_at = common::now_unix();
    let wait = retrying_at(&told) - asked_at;
    assert!(
        (118..=121).contains(&wait),
        "plans its retry {wait} s out: {told}"
    );
    // A backoff-only loop would have asked again after a second.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(gitlab.methods(), vec!["GET"], "{:#?}", daemon.lines());
    daemon.stop();
}

#[test]
fn five_hundreds_are_retried_with_backoff_and_every_write_is_whole() {
    let ts = TokenServer::start();
    let gitlab = GitLabDouble::start();
    let tmp = TempDir::new("sync-5xx");
    const ECR2: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
    gitlab.state.lock().unwrap().fail_times = 2;
    let out = common::run(sync(&ts, &tmp, &gitlab).args(["--project", "42", "--registry", ECR2]));
    assert!(out.status.success(), "{}", common::output_text(&out));
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        e.lines()
            .filter(|l| l.contains("GitLab failed (503)"))
            .count(),
        2,
        "{e}"
    );
    assert!(
        e.contains("(attempt 3 of 3)") && e.contains("created"),
        "{e}"
    );
    assert_eq!(gitlab.methods(), vec!["GET", "GET", "GET", "POST"]);
    // Backoff::DAEMON in whole seconds: 1 s, then 1 or 2 s; never at once.
    let reqs = gitlab.requests();
    for w in reqs[..3].windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(gap >= Duration::from_millis(900), "retried after {gap:?}");
    }
    // What was written is whole, with both registries.
    assert_eq!(gitlab.assert_writes_whole(), 1);
    let v = gitlab
        .var("projects/42", "DOCKER_AUTH_CONFIG", "*")
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&v.value).unwrap();
    assert_eq!(doc["auths"][ECR]["auth"], auth_of(&ts.password()));
    assert_eq!(doc["auths"][ECR2]["auth"], auth_of(&ts.password()));
}

#[test]
fn a_token_without_access_is_told_once_with_what_to_do() {
    let ts = TokenServer::start();
    let gitlab = GitLabDouble::start();
    let tmp = TempDir::new("sync-403");
    gitlab.state.lock().unwrap().forbidden = true;
    let daemon = Daemon::start(sync(&ts, &tmp, &gitlab).args(["--project", "42", "--every", "1h"]));
    // Three passes (1 s, 1 s, then 2 s of backoff), all refused.
    daemon.wait_for("three refused passes", Duration::from_secs(20), || {
        gitlab.methods().len() >= 3
    });
    std::thread::sleep(Duration::from_millis(200));
    let lines = daemon.lines();
    let told: Vec<&String> = lines.iter().filter(|l| l.contains("403")).collect();
    assert_eq!(told.len(), 1, "told once, not once per pass: {lines:#?}");
    assert!(
        told[0].contains("needs the Maintainer role")
            && told[0].contains("this needs a fix, not a wait"),
        "{}",
        told[0]
    );
    assert!(!lines.iter().any(|l| l.contains(TOKEN)), "{lines:#?}");
    assert!(gitlab
        .var("projects/42", "DOCKER_AUTH_CONFIG", "*")
        .is_none());
    daemon.stop();
}

#[test]
fn a_variable_deleted_behind_our_back_is_created_again() {
    let ts = TokenServer::start();
    let gitlab = GitLabDouble::start();
    let tmp = TempDir::new("sync-deleted");
    let theirs = format!(r#"{{"auths":{{"{ECR}":{{"auth":"{}"}}}}}}"#, auth_of("old"));
    gitlab.set_var(
        "projects/42",
        "DOCKER_AUTH_CONFIG",
        "*",
        Var {
            value: theirs,
            protected: true,
            masked: false,
            raw: true,
        },
    );
    // Someone deletes it between our GET and our PUT.
    gitlab.state.lock().unwrap().delete_before_put = true;
    let out = common::run(sync(&ts, &tmp, &gitlab).args(["--project", "42"]));
    assert!(out.status.success(), "{}", common::output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("DOCKER_AUTH_CONFIG on project 42: created"),
        "{}",
        common::output_text(&out)
    );
    // Read, update (404: gone), read again (404), create.
    assert_eq!(gitlab.methods(), vec!["GET", "PUT", "GET", "POST"]);
    let v = gitlab
        .var("projects/42", "DOCKER_AUTH_CONFIG", "*")
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&v.value).unwrap();
    assert_eq!(doc["auths"][ECR]["auth"], auth_of(&ts.password()));
    assert_eq!(gitlab.assert_writes_whole(), 2);
}
