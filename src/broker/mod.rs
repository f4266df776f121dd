//! The token broker (`ecr-auth serve`): holds the AWS identity on the runner
//! host and hands out only ECR tokens, only for allowed registries, over a unix
//! socket. No AWS key ever enters a job container.
//!
//! - [`Settings`]: the `[broker]` section of the config file (flags override it);
//! - [`allow::AllowList`]: which registries may be asked for;
//! - [`Broker`]: the answer to one request, as a plain function of (tokens,
//!   allow-list, clock), and the background refresh as a [`Broker::refresh_step`]
//!   over the same — unit-tested with a [`crate::clock::ManualClock`];
//! - [`socket`]: the listening socket and its safety rules;
//! - [`server`]: HTTP/1.1 (hyper) on that socket, with bounds, audit and metrics.

pub mod allow;
pub mod metrics;
pub mod server;
pub mod socket;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use crate::config::Resolved;
use crate::registry::Target;
use crate::tokens::{AuthToken, Tokens};
use allow::AllowList;

/// Where `ecr-auth serve` listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/ecr-auth/broker.sock";

/// A token is handed out only while it stays valid this much longer, so a
/// client never receives one that expires during its pull.
pub const MIN_VALIDITY_SECS: i64 = 60;

/// After a failed background refresh, try again this much later (the token in
/// hand stays served while it is valid).
pub const RETRY_SECS: i64 = 30;

/// The `[broker]` section of the config file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub socket: Option<PathBuf>,
    /// Registry hosts as clients write them, or patterns where `*` is one DNS
    /// label; an entry may also say how its tokens are obtained ([`AllowEntry`]).
    #[serde(default)]
    pub allow: Vec<AllowEntry>,
    /// Only these AWS accounts (private registries).
    #[serde(default)]
    pub accounts: Vec<String>,
    /// Only these regions (private registries).
    #[serde(default)]
    pub regions: Vec<String>,
    /// ECR Public (`public.ecr.aws`) allowed.
    #[serde(default)]
    pub public: bool,
    /// The group that may use the socket (name or number).
    pub group: Option<String>,
    /// Also serve `/metrics` on this loopback TCP address.
    pub metrics_addr: Option<String>,
    /// Tokens through an AssumeRole whose session policy allows only pulls
    /// (broker-wide; an `allow` entry's own `pull_only` wins).
    #[serde(default)]
    pub pull_only: bool,
    /// The role assumed for `pull_only` (a registry's own `role_arn` wins).
    pub role_arn: Option<String>,
    /// Repository ARN patterns the pull-only session may pull from.
    #[serde(default)]
    pub repositories: Vec<String>,
}

impl Settings {
    /// The hosts and patterns of `allow`, without their treatments.
    pub fn allow_hosts(&self) -> Vec<String> {
        self.allow.iter().map(|e| e.host.clone()).collect()
    }
}

/// One entry of `allow`: `"HOST or PATTERN"`, or a table that also says how
/// that registry's tokens are obtained, so one registry can be pull-only and
/// another allow push:
///
/// ```toml
/// [[broker.allow]]
/// host = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
/// pull_only = true
/// role_arn = "arn:aws:iam::123456789012:role/ecr-broker-pull"   # else [broker] role_arn
/// repositories = ["arn:aws:ecr:eu-west-1:123456789012:repository/team/*"]
///
/// [[broker.allow]]
/// host = "210987654321.dkr.ecr.eu-west-1.amazonaws.com"
/// pull_only = false                                              # push stays possible
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowEntry {
    pub host: String,
    /// `None`: the broker-wide `pull_only`.
    pub pull_only: Option<bool>,
    /// The role a pull-only token of this entry is assumed through; it wins
    /// over the registry's own (`[[registry]] role_arn`) and the broker-wide one.
    pub role_arn: Option<String>,
    /// Empty: the broker-wide `repositories`.
    pub repositories: Vec<String>,
}

impl AllowEntry {
    /// An entry with the broker-wide treatment (`--allow HOST`, `allow = ["HOST"]`).
    pub fn host(host: impl Into<String>) -> AllowEntry {
        AllowEntry {
            host: host.into(),
            ..Default::default()
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowTable {
    host: String,
    pull_only: Option<bool>,
    role_arn: Option<String>,
    #[serde(default)]
    repositories: Vec<String>,
}

/// A string or a table; written by hand so a wrong entry gets a sentence, not
/// serde's "did not match any variant".
impl<'de> Deserialize<'de> for AllowEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        match toml::Value::deserialize(d)? {
            toml::Value::String(host) => Ok(AllowEntry::host(host)),
            v @ toml::Value::Table(_) => {
                let t: AllowTable = v.try_into().map_err(|e: toml::de::Error| {
                    D::Error::custom(format!(
                        "an `allow` entry: {} (a table takes `host`, `pull_only`, `role_arn`, `repositories`)",
                        e.message().trim()
                    ))
                })?;
                Ok(AllowEntry {
                    host: t.host,
                    pull_only: t.pull_only,
                    role_arn: t.role_arn,
                    repositories: t.repositories,
                })
            }
            other => Err(D::Error::custom(format!(
                "an `allow` entry is a registry host or pattern (\"*.dkr.ecr.eu-west-1.amazonaws.com\") \
                 or a table with `host` and optionally `pull_only`, `role_arn`, `repositories`; not `{other}`"
            ))),
        }
    }
}

/// The actions a pull-only session may take.
pub const PULL_ACTIONS: [&str; 3] = [
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
    "ecr:BatchCheckLayerAvailability",
];

/// The inline session policy of a pull-only token: GetAuthorizationToken (which
/// IAM only grants on `*`) and the three pull actions on `repositories`.
pub fn pull_only_policy(repositories: &[String]) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "EcrAuthToken",
                "Effect": "Allow",
                "Action": "ecr:GetAuthorizationToken",
                "Resource": "*"
            },
            {
                "Sid": "PullOnly",
                "Effect": "Allow",
                "Action": PULL_ACTIONS,
                "Resource": repositories
            }
        ]
    })
    .to_string()
}

/// `arn:<partition>:ecr:<region>:<account>:repository/<name>`; `*` allowed in
/// region, account and name.
pub fn is_repository_arn(s: &str) -> bool {
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "ecr"
        && parts[5].starts_with("repository/")
        && parts[5].len() > "repository/".len()
}

/// How one registry's `pull_only` tokens are obtained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub role_arn: String,
    /// `role_arn` is the allow entry's own: it wins over the registry's
    /// `[[registry]] role_arn` (the broker-wide one does not).
    pub own_role: bool,
    pub policy: String,
}

impl Scope {
    /// `None` unless `pull_only`; else checks there is a role to assume and
    /// repository ARNs to allow.
    fn new(
        pull_only: bool,
        own_role: Option<&String>,
        wide_role: Option<&String>,
        repositories: &[String],
    ) -> Result<Option<Scope>, String> {
        if !pull_only {
            return Ok(None);
        }
        let role_arn = own_role.or(wide_role).cloned().ok_or(
            "pull_only needs `role_arn` (in the entry or in [broker], or --role-arn): the role the broker assumes with the pull-only session policy",
        )?;
        if !crate::config::is_role_arn(&role_arn) {
            return Err(format!(
                "role_arn {role_arn:?} is not an IAM role ARN (arn:aws:iam::123456789012:role/NAME)"
            ));
        }
        if repositories.is_empty() {
            return Err("pull_only needs `repositories` (in the entry or in [broker], or --repository): the repository ARNs jobs may pull, e.g. arn:aws:ecr:eu-west-1:123456789012:repository/team/*".into());
        }
        if let Some(bad) = repositories.iter().find(|r| !is_repository_arn(r)) {
            return Err(format!(
                "{bad:?} is not an ECR repository ARN (arn:aws:ecr:REGION:ACCOUNT:repository/NAME, `*` allowed)"
            ));
        }
        Ok(Some(Scope {
            role_arn,
            own_role: own_role.is_some(),
            policy: pull_only_policy(repositories),
        }))
    }
}

/// How each allowed registry's tokens are obtained: through a pull-only
/// [`Scope`], or (`None`) with the broker's own identity, where push stays
/// possible.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scopes {
    /// One per `allow` entry, in order.
    rules: Vec<(Vec<String>, Option<Scope>)>,
    /// For registries no `allow` entry names (allowed by `accounts`/`regions`).
    default: Option<Scope>,
}

impl Scopes {
    /// Every entry's treatment: its own `pull_only`, `role_arn` and
    /// `repositories`, else the broker-wide ones. An error names the entry.
    pub fn from_settings(s: &Settings) -> Result<Scopes, String> {
        let mut rules = Vec::new();
        for e in &s.allow {
            let pattern = allow::parse_pattern(&e.host)?;
            let repositories = if e.repositories.is_empty() {
                &s.repositories
            } else {
                &e.repositories
            };
            let scope = Scope::new(
                e.pull_only.unwrap_or(s.pull_only),
                e.role_arn.as_ref(),
                s.role_arn.as_ref(),
                repositories,
            )
            .map_err(|m| format!("allow entry {:?}: {m}", e.host))?;
            // A role or repositories that would be ignored: say so rather than
            // hand out tokens wider than the file seems to say.
            if scope.is_none() && (e.role_arn.is_some() || !e.repositories.is_empty()) {
                return Err(format!(
                    "allow entry {:?}: `role_arn` and `repositories` only apply with `pull_only = true`; \
                     set it, or remove them (a role for every token of a registry is `role_arn` of its [[registry]] entry)",
                    e.host
                ));
            }
            rules.push((pattern, scope));
        }
        // Without `allow` entries every private registry is allowed by
        // accounts/regions and gets the broker-wide treatment; with them, every
        // allowed private registry matches one.
        let default = if s.allow.is_empty() {
            Scope::new(s.pull_only, None, s.role_arn.as_ref(), &s.repositories)?
        } else {
            None
        };
        Ok(Scopes { rules, default })
    }

    /// The treatment of a registry host (as [`crate::registry::Host`] writes
    /// it): the first entry naming exactly that host, else the first pattern
    /// that matches, else the broker-wide one.
    pub fn for_host(&self, host: &str) -> Option<&Scope> {
        let exact = |p: &Vec<String>| !p.iter().any(|l| l == "*");
        self.rules
            .iter()
            .filter(|(p, _)| exact(p))
            .chain(self.rules.iter().filter(|(p, _)| !exact(p)))
            .find(|(p, _)| allow::matches(p, host))
            .map_or(self.default.as_ref(), |(_, scope)| scope.as_ref())
    }
}

/// The answer to one token request.
#[derive(Debug)]
pub enum Answer {
    Token(AuthToken),
    /// Not in the allow-list.
    NotAllowed(String),
    /// Not ECR, not a host, no credentials: the helper's not-found.
    NotFound(String),
    /// AWS (or the credential chain) failed.
    Failed(String),
}

impl Answer {
    /// The word the audit line and the metrics use.
    pub fn result(&self) -> &'static str {
        match self {
            Answer::Token(_) => "token",
            Answer::NotAllowed(_) => "not_allowed",
            Answer::NotFound(_) => "not_found",
            Answer::Failed(_) => "failed",
        }
    }
}

/// What a request needs when no token is in hand: a fetch (blocking).
pub struct Pending(Box<Resolved>);

struct Served {
    resolved: Resolved,
    token: AuthToken,
    /// When the refresher should next look at it.
    due: i64,
}

/// The broker's state: the token service, the allow-list, the tokens served.
pub struct Broker {
    tokens: Tokens,
    allow: AllowList,
    scopes: Scopes,
    served: Mutex<HashMap<String, Served>>,
}

impl Broker {
    /// `tokens` should be built with `.in_memory()` (single-flight per identity
    /// and region).
    pub fn new(tokens: Tokens, allow: AllowList, scopes: Scopes) -> Arc<Broker> {
        Arc::new(Broker {
            tokens,
            allow,
            scopes,
            served: Mutex::new(HashMap::new()),
        })
    }

    /// The fast part of a request: checks, then the token in hand if it is
    /// valid for a while yet (also past its refresh time: the refresher replaces
    /// it in the background). `Err(Pending)` when AWS has to be asked.
    pub fn answer_now(&self, registry: &str) -> Result<Answer, Pending> {
        let mut resolved = match self.tokens.resolve(registry) {
            Ok(r) => r,
            Err(e) => return Ok(Answer::NotFound(e.to_string())),
        };
        if let Err(reason) = self.allow.check(&resolved) {
            return Ok(Answer::NotAllowed(reason));
        }
        let scope = self.scopes.for_host(resolved.host.as_str());
        if let (Some(scope), Target::Private { .. }) = (scope, &resolved.target) {
            if scope.own_role || resolved.creds.role_arn.is_none() {
                resolved.creds.role_arn = Some(scope.role_arn.clone());
            }
            resolved.creds.session_policy = Some(scope.policy.clone());
        }
        let now = self.tokens.now();
        let served = lock(&self.served);
        match served.get(resolved.host.as_str()) {
            Some(s) if s.token.expires_at > now + MIN_VALIDITY_SECS => {
                Ok(Answer::Token(s.token.clone()))
            }
            _ => Err(Pending(Box::new(resolved))),
        }
    }

    /// The slow part: ask the token service (one AWS call per identity and
    /// region, whoever else is waiting for it). Blocking.
    pub fn fetch(&self, pending: Pending) -> Answer {
        let resolved = *pending.0;
        match self.tokens.get_many(std::slice::from_ref(&resolved)).pop() {
            Some(Ok(token)) => {
                if token.expires_at > self.tokens.now() {
                    lock(&self.served).insert(
                        resolved.host.to_string(),
                        Served {
                            due: token.refresh_at(),
                            resolved,
                            token: token.clone(),
                        },
                    );
                }
                Answer::Token(token)
            }
            Some(Err(e)) if e.is_not_found() => Answer::NotFound(e.to_string()),
            Some(Err(e)) => Answer::Failed(e.to_string()),
            None => Answer::Failed("internal error: no answer from the token service".into()),
        }
    }

    /// Both parts, blocking (the server runs them apart; the tests together).
    #[cfg(test)]
    pub fn answer(&self, registry: &str) -> Answer {
        match self.answer_now(registry) {
            Ok(a) => a,
            Err(p) => self.fetch(p),
        }
    }

    /// Registry hosts the broker names without a pattern: for the helper's `list`.
    pub fn listed_hosts(&self) -> Vec<String> {
        self.allow.listed_hosts()
    }

    /// One turn of the background refresh at the service clock's now: every
    /// served token past its refresh time (the one half-life rule,
    /// [`AuthToken::refresh_at`]) is fetched again; a failure keeps the token in
    /// hand and retries in [`RETRY_SECS`]. Returns when the next turn is due
    /// (`None`: nothing to watch). Blocking.
    pub fn refresh_step(&self) -> Option<i64> {
        let now = self.tokens.now();
        let due: Vec<Resolved> = lock(&self.served)
            .values()
            .filter(|s| s.due <= now)
            .map(|s| s.resolved.clone())
            .collect();
        if !due.is_empty() {
            let results = self.tokens.get_many(&due);
            let now = self.tokens.now();
            let mut served = lock(&self.served);
            for (r, result) in due.iter().zip(results) {
                let host = r.host.to_string();
                match result {
                    Ok(token) if token.refresh_at() > now => {
                        tracing::debug!(
                            "refreshed the ECR token for {host}, valid until {}",
                            crate::tokens::format_time(token.expires_at)
                        );
                        served.insert(
                            host,
                            Served {
                                due: token.refresh_at(),
                                resolved: r.clone(),
                                token,
                            },
                        );
                    }
                    Ok(_) | Err(_) => {
                        if let Err(e) = &result {
                            tracing::warn!("cannot refresh the ECR token for {host}: {e}; retrying in {RETRY_SECS} s");
                        }
                        match served.get_mut(&host) {
                            Some(s) if s.token.expires_at > now => s.due = now + RETRY_SECS,
                            _ => {
                                served.remove(&host);
                            }
                        }
                    }
                }
            }
        }
        lock(&self.served).values().map(|s| s.due).min()
    }

    pub fn now(&self) -> i64 {
        self.tokens.now()
    }
}

/// A poisoned lock only means a thread panicked holding it; the map is whole.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
