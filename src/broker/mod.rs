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
    /// Registry hosts as clients write them, or patterns where `*` is one DNS label.
    #[serde(default)]
    pub allow: Vec<String>,
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
    /// Tokens through an AssumeRole whose session policy allows only pulls.
    #[serde(default)]
    pub pull_only: bool,
    /// The role assumed for `pull_only` (a registry's own `role_arn` wins).
    pub role_arn: Option<String>,
    /// Repository ARN patterns the pull-only session may pull from.
    #[serde(default)]
    pub repositories: Vec<String>,
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

/// How `pull_only` tokens are obtained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub role_arn: String,
    pub policy: String,
}

impl Scope {
    /// Checks the pull-only settings: a role to assume and repository ARNs.
    pub fn from_settings(s: &Settings) -> Result<Option<Scope>, String> {
        if !s.pull_only {
            return Ok(None);
        }
        let role_arn = s.role_arn.clone().ok_or(
            "pull_only needs `role_arn` in [broker] (or --role-arn): the role the broker assumes with the pull-only session policy",
        )?;
        if !crate::config::is_role_arn(&role_arn) {
            return Err(format!(
                "[broker] role_arn {role_arn:?} is not an IAM role ARN (arn:aws:iam::123456789012:role/NAME)"
            ));
        }
        if s.repositories.is_empty() {
            return Err("pull_only needs `repositories` in [broker] (or --repository): the repository ARNs jobs may pull, e.g. arn:aws:ecr:eu-west-1:123456789012:repository/team/*".into());
        }
        if let Some(bad) = s.repositories.iter().find(|r| !is_repository_arn(r)) {
            return Err(format!(
                "{bad:?} is not an ECR repository ARN (arn:aws:ecr:REGION:ACCOUNT:repository/NAME, `*` allowed)"
            ));
        }
        Ok(Some(Scope {
            role_arn,
            policy: pull_only_policy(&s.repositories),
        }))
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
    scope: Option<Scope>,
    served: Mutex<HashMap<String, Served>>,
}

impl Broker {
    /// `tokens` should be built with `.in_memory()` (single-flight per identity
    /// and region).
    pub fn new(tokens: Tokens, allow: AllowList, scope: Option<Scope>) -> Arc<Broker> {
        Arc::new(Broker {
            tokens,
            allow,
            scope,
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
        if let (Some(scope), Target::Private { .. }) = (&self.scope, &resolved.target) {
            if resolved.creds.role_arn.is_none() {
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
