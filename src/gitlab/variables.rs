//! GitLab's CI/CD variables REST API (project and group level), over the
//! crate's HTTP client ([`crate::http`]): `GET`/`PUT /…/variables/:key` (404 →
//! `POST /…/variables`), `PRIVATE-TOKEN` header, fields `value`, `protected`,
//! `masked`, `raw`, `environment_scope`. Blocking.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request};
use serde::Deserialize;

use crate::http::{BlockingClient, HttpError};
use crate::secret::Secret;

pub(crate) const DEFAULT_URL: &str = "https://gitlab.com/api/v4";
const TIMEOUT: Duration = Duration::from_secs(30);

/// Whose variable: a project or a group, by numeric id or full path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    Project(String),
    Group(String),
}

impl Owner {
    fn api_path(&self) -> String {
        match self {
            Owner::Project(id) => format!("projects/{}", encode(id)),
            Owner::Group(id) => format!("groups/{}", encode(id)),
        }
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Project(id) => write!(f, "project {id}"),
            Owner::Group(id) => write!(f, "group {id}"),
        }
    }
}

/// A variable as GitLab returns it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub(crate) struct Variable {
    pub(crate) key: String,
    #[serde(deserialize_with = "secret")]
    pub(crate) value: Secret<String>,
    #[serde(default)]
    pub(crate) protected: bool,
    #[serde(default)]
    pub(crate) masked: bool,
    #[serde(default)]
    pub(crate) raw: bool,
    #[serde(default = "all_environments")]
    pub(crate) environment_scope: String,
}

fn all_environments() -> String {
    "*".into()
}

fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Secret<String>, D::Error> {
    String::deserialize(d).map(Secret::new)
}

/// What to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) value: Secret<String>,
    pub(crate) protected: bool,
    pub(crate) masked: bool,
    pub(crate) raw: bool,
    pub(crate) environment_scope: String,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("GitLab rejected the token in GITLAB_TOKEN ({status}) at {url}: use a personal, group or project access token with the `api` scope, and check it has not expired")]
    Unauthorized { url: String, status: u16 },
    #[error("GitLab refused access to the variables of {owner} (403 Forbidden): the token's user or bot needs the Maintainer role there (Owner for group variables)")]
    Forbidden { owner: String },
    #[error("GitLab has no {owner}, or the token cannot see it (404: {message}): check --project/--group and the token's access")]
    OwnerNotFound { owner: String, message: String },
    #[error("GitLab cannot mask the value of {key} (400: {message}): a masked value must be a single line of 8+ characters that your GitLab version accepts for masking, and older versions accept only Base64-alphabet characters, which a JSON document is not; drop --masked (and make the variable protected) or upgrade GitLab")]
    Unmaskable { key: String, message: String },
    #[error("GitLab refused to {action} {key} on {owner} ({status}: {message})")]
    Rejected {
        action: &'static str,
        key: String,
        owner: String,
        status: u16,
        message: String,
    },
    #[error(
        "GitLab failed ({status}) on {method} {url}; it is GitLab's side: try again later{}",
        asked(retry_after)
    )]
    Server {
        method: String,
        url: String,
        status: u16,
        retry_after: Option<RetryAfter>,
    },
    #[error("GitLab is limiting the rate of requests (429) on {method} {url}{}; wait, or ask its admin about the rate limits of the token's user", asked(retry_after))]
    RateLimited {
        method: String,
        url: String,
        retry_after: Option<RetryAfter>,
    },
    #[error("{key} on {owner} was deleted while ecr-auth was updating it")]
    VariableGone { key: String, owner: String },
    #[error("{key} on {owner} was created by someone else while ecr-auth was creating it")]
    Taken { key: String, owner: String },
    #[error("cannot reach GitLab at {url}: {message}; check --gitlab-url and the network")]
    Transport { url: String, message: String },
    #[error("GitLab's answer to {method} {url} is not what its API documents: {message}")]
    BadAnswer {
        method: String,
        url: String,
        message: String,
    },
    #[error("--gitlab-url {0:?} is not an http(s) URL (e.g. https://gitlab.example.com/api/v4)")]
    BadUrl(String),
    #[error("cannot set up the HTTPS client: {0}")]
    Setup(String),
    #[error("--gitlab-url {0} is plain HTTP to a host that is not this machine: the GitLab token would cross the network readable by anyone on the way. Use https://, or pass --allow-plain-http if the network is yours")]
    PlainHttp(String),
}

impl ApiError {
    /// Worth trying again later (GitLab or the network hiccupped, or GitLab
    /// asked us to slow down).
    pub(crate) fn is_transient(&self) -> bool {
        matches!(
            self,
            ApiError::Server { .. } | ApiError::Transport { .. } | ApiError::RateLimited { .. }
        )
    }

    /// When GitLab asked to be called again (`Retry-After` of a 429 or 503).
    pub(crate) fn retry_after(&self) -> Option<RetryAfter> {
        match self {
            ApiError::Server { retry_after, .. } | ApiError::RateLimited { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// Someone else deleted or created the variable between our read and our
    /// write: read again and redo the change.
    pub(crate) fn is_race(&self) -> bool {
        matches!(self, ApiError::VariableGone { .. } | ApiError::Taken { .. })
    }
}

/// When GitLab asks to be called again: `Retry-After` in seconds, or an HTTP
/// date (RFC 9110 §10.2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RetryAfter {
    Seconds(u64),
    /// Unix seconds.
    At(i64),
}

impl RetryAfter {
    pub(crate) fn parse(value: &str) -> Option<RetryAfter> {
        let v = value.trim();
        if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
            return Some(RetryAfter::Seconds(v.parse().unwrap_or(u64::MAX)));
        }
        let at = httpdate::parse_http_date(v).ok()?;
        let secs = match at.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(_) => 0,
        };
        Some(RetryAfter::At(secs))
    }

    /// Seconds from `now` until then (never negative).
    pub(crate) fn seconds_from(&self, now: i64) -> i64 {
        match *self {
            RetryAfter::Seconds(s) => i64::try_from(s).unwrap_or(i64::MAX),
            RetryAfter::At(at) => at.saturating_sub(now).max(0),
        }
    }
}

impl std::fmt::Display for RetryAfter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            RetryAfter::Seconds(s) => write!(f, "in {s} s"),
            RetryAfter::At(at) => write!(f, "at {}", crate::tokens::format_time(at)),
        }
    }
}

/// ` (it asks to be called again in 30 s)`, or nothing.
fn asked(retry_after: &Option<RetryAfter>) -> String {
    retry_after
        .map(|r| format!(" (it asks to be called again {r})"))
        .unwrap_or_default()
}

/// The variables API as the sync loop sees it.
pub(crate) trait VariablesApi {
    /// The variable for an environment scope, or `None` if it does not exist.
    fn get(&self, owner: &Owner, key: &str, scope: &str) -> Result<Option<Variable>, ApiError>;
    fn create(&self, owner: &Owner, key: &str, s: &Settings) -> Result<(), ApiError>;
    fn update(&self, owner: &Owner, key: &str, s: &Settings) -> Result<(), ApiError>;
}

/// The real client.
pub(crate) struct GitLab {
    base: String,
    token: Secret<String>,
    http: BlockingClient,
}

impl GitLab {
    /// `base_url` is the API root (`https://gitlab.com/api/v4`); a bare
    /// instance URL gets `/api/v4` added.
    /// Plain `http://` is refused unless the host is loopback or `allow_plain_http`.
    pub(crate) fn new(
        base_url: &str,
        token: Secret<String>,
        allow_plain_http: bool,
    ) -> Result<GitLab, ApiError> {
        let base = api_root(base_url)?;
        if !allow_plain_http && !transport_is_private(&base) {
            return Err(ApiError::PlainHttp(base));
        }
        let http = BlockingClient::new(TIMEOUT).map_err(|e| match e {
            HttpError::Setup(m) => ApiError::Setup(m),
            other => ApiError::Setup(other.to_string()),
        })?;
        Ok(GitLab { base, token, http })
    }

    /// One request; any answer.
    fn call(&self, method: Method, path: &str, body: Option<String>) -> Result<Reply, ApiError> {
        let url = format!("{}/{path}", self.base);
        let transport = |message: String| ApiError::Transport {
            url: url.clone(),
            message,
        };
        let mut req = Request::builder()
            .method(method)
            .uri(&url)
            .header("PRIVATE-TOKEN", self.token.expose())
            .header("Accept", "application/json")
            .header(
                "User-Agent",
                concat!("ecr-auth/", env!("CARGO_PKG_VERSION")),
            );
        if body.is_some() {
            req = req.header("Content-Type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| transport(e.to_string()))?;
        match self.http.send(req) {
            Ok(r) => Ok(Reply {
                status: r.status.as_u16(),
                retry_after: r
                    .headers
                    .get(hyper::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                body: r.body,
            }),
            Err(HttpError::Setup(e)) => Err(ApiError::Setup(e)),
            Err(e) => Err(transport(e.to_string())),
        }
    }

    fn write(
        &self,
        method: Method,
        owner: &Owner,
        key: &str,
        s: &Settings,
    ) -> Result<(), ApiError> {
        let path = if method == Method::POST {
            format!("{}/variables", owner.api_path())
        } else {
            format!(
                "{}/variables/{}{}",
                owner.api_path(),
                encode(key),
                scope_filter(&s.environment_scope)
            )
        };
        let mut body = serde_json::json!({
            "value": s.value.expose(),
            "variable_type": "env_var",
            "protected": s.protected,
            "masked": s.masked,
            "raw": s.raw,
            "environment_scope": s.environment_scope,
        });
        if method == Method::POST {
            body["key"] = key.into();
        }
        let call = Call {
            method: method.clone(),
            url: format!("{}/{path}", self.base),
            owner,
            key,
            secrets: vec![self.token.expose(), s.value.expose()],
        };
        let reply = self.call(method, &path, Some(body.to_string()))?;
        write_answer(&call, &reply)
    }
}

impl VariablesApi for GitLab {
    fn get(&self, owner: &Owner, key: &str, scope: &str) -> Result<Option<Variable>, ApiError> {
        let path = format!(
            "{}/variables/{}{}",
            owner.api_path(),
            encode(key),
            scope_filter(scope)
        );
        let call = Call {
            method: Method::GET,
            url: format!("{}/{path}", self.base),
            owner,
            key,
            secrets: vec![self.token.expose()],
        };
        let reply = self.call(Method::GET, &path, None)?;
        read_answer(&call, &reply)
    }

    fn create(&self, owner: &Owner, key: &str, s: &Settings) -> Result<(), ApiError> {
        self.write(Method::POST, owner, key, s)
    }

    fn update(&self, owner: &Owner, key: &str, s: &Settings) -> Result<(), ApiError> {
        self.write(Method::PUT, owner, key, s)
    }
}

/// An answer of GitLab's, as its readers need it.
pub(crate) struct Reply {
    pub(crate) status: u16,
    /// The `Retry-After` header, as sent.
    pub(crate) retry_after: Option<String>,
    pub(crate) body: Bytes,
}

/// The request an answer is to, for naming it in errors.
pub(crate) struct Call<'a> {
    pub(crate) method: Method,
    pub(crate) url: String,
    pub(crate) owner: &'a Owner,
    pub(crate) key: &'a str,
    /// What no error may show: the GitLab token, the value sent.
    pub(crate) secrets: Vec<&'a str>,
}

impl Call<'_> {
    fn action(&self) -> &'static str {
        match self.method {
            Method::GET => "read",
            Method::POST => "create",
            _ => "update",
        }
    }
}

/// GitLab's answer to a GET of a variable: the variable, `None` for "404
/// Variable Not Found", or an error. Pure, so hostile answers can be fuzzed.
pub(crate) fn read_answer(call: &Call<'_>, reply: &Reply) -> Result<Option<Variable>, ApiError> {
    let body = &reply.body[..];
    match reply.status {
        200 => serde_json::from_slice(body)
            .map(Some)
            .map_err(|e| ApiError::BadAnswer {
                method: call.method.to_string(),
                url: call.url.clone(),
                // serde_json quotes the string it could not take.
                message: shown(e.to_string(), &credentials(body, call)),
            }),
        404 => {
            let message = api_message(body, call);
            // "404 Variable Not Found" means create it; "404 Project Not Found" is an error.
            if message.to_ascii_lowercase().contains("variable") {
                Ok(None)
            } else {
                Err(ApiError::OwnerNotFound {
                    owner: call.owner.to_string(),
                    message,
                })
            }
        }
        _ => Err(error(call, reply)),
    }
}

/// GitLab's answer to a PUT or POST of a variable.
pub(crate) fn write_answer(call: &Call<'_>, reply: &Reply) -> Result<(), ApiError> {
    if (200..300).contains(&reply.status) {
        return Ok(());
    }
    Err(error(call, reply))
}

fn error(call: &Call<'_>, reply: &Reply) -> ApiError {
    let url = call.url.clone();
    let message = api_message(&reply.body, call);
    let retry_after = reply.retry_after.as_deref().and_then(RetryAfter::parse);
    let gone = || ApiError::VariableGone {
        key: call.key.to_string(),
        owner: call.owner.to_string(),
    };
    match reply.status {
        401 => ApiError::Unauthorized { url, status: 401 },
        429 => ApiError::RateLimited {
            method: call.method.to_string(),
            url,
            retry_after,
        },
        // "404 Variable Not Found" on an update: deleted since we read it.
        404 if call.method == Method::PUT && message.to_ascii_lowercase().contains("variable") => {
            gone()
        }
        404 => ApiError::OwnerNotFound {
            owner: call.owner.to_string(),
            message,
        },
        // `{"message":{"key":["(K) has already been taken"]}}`: created since we read.
        400 if call.method == Method::POST && message.contains("has already been taken") => {
            ApiError::Taken {
                key: call.key.to_string(),
                owner: call.owner.to_string(),
            }
        }
        403 => ApiError::Forbidden {
            owner: call.owner.to_string(),
        },
        400 if message.contains("value") && message.contains("invalid") => ApiError::Unmaskable {
            key: call.key.to_string(),
            message,
        },
        s if s >= 500 => ApiError::Server {
            method: call.method.to_string(),
            url,
            status: s,
            retry_after,
        },
        s => ApiError::Rejected {
            action: call.action(),
            key: call.key.to_string(),
            owner: call.owner.to_string(),
            status: s,
            message,
        },
    }
}

/// `https://host` → `https://host/api/v4`; `…/api/v4/` → `…/api/v4`.
pub(crate) fn api_root(url: &str) -> Result<String, ApiError> {
    let u = url.trim().trim_end_matches('/');
    let valid = (u.starts_with("https://") || u.starts_with("http://"))
        && u.split("://").nth(1).is_some_and(|rest| !rest.is_empty())
        && u.parse::<hyper::Uri>().is_ok();
    if !valid {
        return Err(ApiError::BadUrl(url.to_string()));
    }
    Ok(if u.ends_with("/api/v4") {
        u.to_string()
    } else {
        format!("{u}/api/v4")
    })
}

/// `https://…`, or `http://` to this machine (127.0.0.0/8, ::1, localhost).
fn transport_is_private(api_root: &str) -> bool {
    let Some(rest) = api_root.strip_prefix("http://") else {
        return true;
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn scope_filter(scope: &str) -> String {
    if scope == "*" {
        String::new()
    } else {
        format!("?filter%5Benvironment_scope%5D={}", encode(scope))
    }
}

/// GitLab's `{"message": ...}` (a string or an object of field errors) — or
/// the start of an answer that is not JSON (a proxy's error page) — as one line
/// without control characters. A message that repeats a credential (the token,
/// the value sent, a `value`/`auth`/`password`/`token` of the answer: a proxy
/// that echoes the request, an answer that echoes the variable) is not shown,
/// and an answer without a message is described by its field names only.
fn api_message(body: &[u8], call: &Call<'_>) -> String {
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => match v.get("message").or_else(|| v.get("error")) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => match v.as_object() {
                Some(m) if !m.is_empty() => format!(
                    "an answer without a message, with the fields {}",
                    m.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
                ),
                _ => "an answer without a message".into(),
            },
        },
        Err(_) => String::from_utf8_lossy(body).chars().take(200).collect(),
    };
    shown(text, &credentials(body, call))
}

/// What an error about this answer must not show: the call's secrets and the
/// credential-like strings of the answer.
fn credentials(body: &[u8], call: &Call<'_>) -> Vec<String> {
    let mut out: Vec<String> = call.secrets.iter().map(|s| s.to_string()).collect();
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        credential_strings(&v, &mut out);
    }
    out
}

/// The strings under credential-like keys (not inside `message`/`error`, which
/// are GitLab's own words).
fn credential_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("message" | "error", _) => {}
                    ("value" | "auth" | "password" | "token", Value::String(s)) => {
                        out.push(s.clone())
                    }
                    _ => credential_strings(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| credential_strings(x, out)),
        _ => {}
    }
}

/// `text` as one line of printable characters, or a note saying it is not
/// shown when it repeats a piece of a credential.
fn shown(text: String, credentials: &[String]) -> String {
    if credentials.iter().any(|c| repeats(&text, c)) {
        return "not shown: it repeats a credential".into();
    }
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    line.trim().to_string()
}

/// Whether `text` shows a piece of `secret`: the whole of a short one (6 to 11
/// characters), or any 12 characters in a row of a longer one.
fn repeats(text: &str, secret: &str) -> bool {
    let chars: Vec<char> = secret.chars().collect();
    match chars.len() {
        0..6 => false,
        6..12 => text.contains(secret),
        _ => chars
            .windows(12)
            .any(|w| text.contains(w.iter().collect::<String>().as_str())),
    }
}

/// Percent-encodes a path segment or query value (project paths carry `/`).
pub(crate) fn encode(s: &str) -> String {
    crate::url::encode_component(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            api_root("https://gitlab.com").unwrap(),
            "https://gitlab.com/api/v4"
        );
        assert_eq!(
            api_root("https://gitlab.com/api/v4/").unwrap(),
            "https://gitlab.com/api/v4"
        );
        assert_eq!(
            api_root("http://127.0.0.1:8080/api/v4").unwrap(),
            "http://127.0.0.1:8080/api/v4"
        );
        assert!(api_root("gitlab.com").is_err());
        assert!(api_root("https://").is_err());
        assert_eq!(
            Owner::Project("group/sub/proj".into()).api_path(),
            "projects/group%2Fsub%2Fproj"
        );
        for (url, private) in [
            ("https://gitlab.example.com/api/v4", true),
            ("http://127.0.0.1:8080/api/v4", true),
            ("http://127.9.9.9/api/v4", true),
            ("http://[::1]:80/api/v4", true),
            ("http://localhost/api/v4", true),
            ("http://gitlab.example.com/api/v4", false),
            ("http://127.0.0.1.evil.example/api/v4", false),
            ("http://10.0.0.5:8080/api/v4", false),
        ] {
            assert_eq!(transport_is_private(url), private, "{url}");
        }
        let token = || Secret::new("glpat-x".to_string());
        let e = GitLab::new("http://gitlab.example.com", token(), false)
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("plain HTTP") && !e.to_string().contains("glpat"),
            "{e}"
        );
        assert!(GitLab::new("http://gitlab.example.com", token(), true).is_ok());
        assert_eq!(scope_filter("*"), "");
        assert_eq!(
            scope_filter("review/*"),
            "?filter%5Benvironment_scope%5D=review%2F%2A"
        );
    }

    #[test]
    fn messages() {
        let owner = Owner::Project("42".into());
        let call = Call {
            method: Method::PUT,
            url: "https://gitlab.example.com/api/v4/projects/42/variables/K".into(),
            owner: &owner,
            key: "K",
            secrets: vec![
                "glpat-0123456789abcdef",
                r#"{"auths":{"h":{"auth":"QVdTOnNlY3JldC1wdw=="}}}"#,
            ],
        };
        let m = |body: &[u8]| api_message(body, &call);
        assert_eq!(
            m(br#"{"message":"404 Variable Not Found"}"#),
            "404 Variable Not Found"
        );
        assert_eq!(
            m(br#"{"message":{"value":["is invalid"]}}"#),
            r#"{"value":["is invalid"]}"#
        );
        assert_eq!(
            m(b"<html>\r\n<title>bad gateway</title>\x1b[31m</html>"),
            "<html>  <title>bad gateway</title> [31m</html>"
        );
        // A proxy that echoes the request: neither the token nor the value.
        assert_eq!(
            m(b"blocked: PRIVATE-TOKEN: glpat-0123456789abcdef"),
            "not shown: it repeats a credential"
        );
        assert_eq!(
            m(br#"request {"auth":"QVdTOnNlY3JldC1w (truncated)"#),
            "not shown: it repeats a credential"
        );
        // An answer that echoes the variable, without a message: field names only.
        assert_eq!(
            m(br#"{"key":"K","value":"{\"auths\":{}} s3cr3t-value","protected":false}"#),
            "an answer without a message, with the fields key, value, protected"
        );
        assert_eq!(
            m(br#"{"message":"K=s3cr3t-value is rejected","value":"s3cr3t-value"}"#),
            "not shown: it repeats a credential"
        );
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(RetryAfter::parse("120"), Some(RetryAfter::Seconds(120)));
        assert_eq!(RetryAfter::parse(" 7 "), Some(RetryAfter::Seconds(7)));
        assert_eq!(
            RetryAfter::parse("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(RetryAfter::At(1_445_412_480))
        );
        assert_eq!(
            RetryAfter::At(1_445_412_480).seconds_from(1_445_412_400),
            80
        );
        assert_eq!(RetryAfter::At(1_445_412_480).seconds_from(1_445_412_500), 0);
        assert_eq!(
            RetryAfter::parse("99999999999999999999999"),
            Some(RetryAfter::Seconds(u64::MAX))
        );
        assert_eq!(RetryAfter::Seconds(u64::MAX).seconds_from(0), i64::MAX);
        for junk in ["", "soon", "-5", "1.5", "Wed, 32 Oct 2015 07:28:00 GMT"] {
            assert_eq!(RetryAfter::parse(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn answers_that_ask_for_a_wait_or_report_a_race() {
        let owner = Owner::Project("42".into());
        let call = |method: Method| Call {
            method,
            url: "https://gitlab.example.com/api/v4/projects/42/variables/K".into(),
            owner: &owner,
            key: "K",
            secrets: vec!["glpat-0123456789abcdef"],
        };
        let reply = |status: u16, retry_after: Option<&str>, body: &str| Reply {
            status,
            retry_after: retry_after.map(str::to_string),
            body: Bytes::from(body.to_string()),
        };
        let e = read_answer(
            &call(Method::GET),
            &reply(429, Some("30"), r#"{"message":"Retry later"}"#),
        )
        .unwrap_err();
        assert!(e.is_transient() && !e.is_race());
        assert_eq!(e.retry_after(), Some(RetryAfter::Seconds(30)));
        assert_eq!(
            e.to_string(),
            "GitLab is limiting the rate of requests (429) on GET https://gitlab.example.com/api/v4/projects/42/variables/K (it asks to be called again in 30 s); wait, or ask its admin about the rate limits of the token's user"
        );
        let e = write_answer(
            &call(Method::PUT),
            &reply(
                503,
                Some("Wed, 21 Oct 2015 07:28:00 GMT"),
                "<html>down</html>",
            ),
        )
        .unwrap_err();
        assert_eq!(e.retry_after(), Some(RetryAfter::At(1_445_412_480)));
        assert!(
            e.to_string()
                .ends_with("try again later (it asks to be called again at 2015-10-21T07:28:00Z)"),
            "{e}"
        );
        // An update of a variable deleted since it was read; a create of one
        // created since.
        let e = write_answer(
            &call(Method::PUT),
            &reply(404, None, r#"{"message":"404 Variable Not Found"}"#),
        )
        .unwrap_err();
        assert!(
            e.is_race() && matches!(e, ApiError::VariableGone { .. }),
            "{e}"
        );
        let e = write_answer(
            &call(Method::POST),
            &reply(
                400,
                None,
                r#"{"message":{"key":["(K) has already been taken"]}}"#,
            ),
        )
        .unwrap_err();
        assert!(e.is_race() && matches!(e, ApiError::Taken { .. }), "{e}");
        // A project that is gone is not a race.
        let e = write_answer(
            &call(Method::PUT),
            &reply(404, None, r#"{"message":"404 Project Not Found"}"#),
        )
        .unwrap_err();
        assert!(
            !e.is_race() && e.to_string().contains("GitLab has no project 42"),
            "{e}"
        );
        assert!(write_answer(&call(Method::POST), &reply(201, None, "{}")).is_ok());
    }
}
