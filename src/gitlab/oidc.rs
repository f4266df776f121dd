//! S3: a job's GitLab OIDC token (`id_tokens:`) as the AWS identity of
//! [`Tokens`]: a [`WebIdentity`] source, which the token core exchanges with STS
//! AssumeRoleWithWebIdentity. No AWS CLI, no jq: the static binary alone.
//!
//! What is GitLab's lives here: the token is checked before any network call
//! (present, JWT-shaped, not expired), so the common mistakes get a message that
//! says which variable is wrong and how to fix the job; the session name comes
//! from the job; the role ARN and the session duration are checked.

use std::sync::Arc;

use base64::Engine;

use crate::clock::Clock;
use crate::config::Config;
use crate::env::Env;
use crate::secret::Secret;
use crate::tokens::{Tokens, WebIdentity};

pub(crate) const DEFAULT_TOKEN_VAR: &str = "GITLAB_OIDC_TOKEN";
/// STS accepts 900 s to the role's maximum session duration (≤ 12 h).
const MIN_DURATION: u64 = 900;
const MAX_DURATION: u64 = 43_200;

#[derive(Debug, thiserror::Error)]
pub(crate) enum OidcError {
    #[error("${var} is empty or unset: add `id_tokens: {{{var}: {{aud: <audience>}}}}` to this job in .gitlab-ci.yml (CI_JOB_JWT no longer exists), or name the variable with --id-token-env")]
    Missing { var: String },
    #[error("${var} is not a JWT (expected three base64url parts separated by dots): check that it is set by `id_tokens:` and not overwritten")]
    NotJwt { var: String },
    #[error("the OIDC token in ${var} expired at {expired}; GitLab issues it when the job starts, so run `ecr-auth gitlab login` in the job itself, not from a cached artifact")]
    Expired { var: String, expired: String },
    #[error("--role-arn {0:?} is not an IAM role ARN (arn:aws:iam::123456789012:role/NAME)")]
    RoleArn(String),
    #[error("--duration must be between 15m and 12h (STS limits), not {0}")]
    Duration(String),
}

/// Reads the job's OIDC token from `var` and checks it.
pub(crate) fn job_token(env: &Env, var: &str, now: i64) -> Result<Secret<String>, OidcError> {
    let token = env.get(var).map(str::trim).unwrap_or("");
    if token.is_empty() {
        return Err(OidcError::Missing { var: var.into() });
    }
    let claims = jwt_claims(token).ok_or_else(|| OidcError::NotJwt { var: var.into() })?;
    if let Some(exp) = claims.get("exp").and_then(serde_json::Value::as_i64) {
        if exp <= now {
            return Err(OidcError::Expired {
                var: var.into(),
                expired: crate::tokens::format_time(exp),
            });
        }
    }
    Ok(Secret::new(token.to_string()))
}

/// The claims of a JWT, without checking its signature (STS does that).
fn jwt_claims(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1].trim_end_matches('='))
        .ok()?;
    match serde_json::from_slice(&payload).ok()? {
        serde_json::Value::Object(m) => Some(m),
        _ => None,
    }
}

/// `gitlab-<project>-<pipeline>-<job>`, within STS's 64 characters of `[\w+=,.@-]`.
pub(crate) fn session_name(env: &Env) -> String {
    let mut name = String::from("gitlab");
    for var in ["CI_PROJECT_ID", "CI_PIPELINE_ID", "CI_JOB_ID"] {
        if let Some(v) = env.get(var) {
            name.push('-');
            name.push_str(v);
        }
    }
    name.retain(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
    name.truncate(64);
    name
}

/// Checks `--role-arn` before anything is sent.
pub(crate) fn check_role_arn(arn: &str) -> Result<(), OidcError> {
    if crate::config::is_role_arn(arn) {
        Ok(())
    } else {
        Err(OidcError::RoleArn(arn.to_string()))
    }
}

/// `--duration` (parsed by [`crate::duration`]) in seconds, within STS limits.
pub(crate) fn duration_secs(d: std::time::Duration) -> Result<u64, OidcError> {
    let s = d.as_secs();
    if !(MIN_DURATION..=MAX_DURATION).contains(&s) || d.subsec_nanos() != 0 {
        return Err(OidcError::Duration(
            humantime::format_duration(d).to_string(),
        ));
    }
    Ok(s)
}

/// How a job gets AWS credentials from its OIDC token.
#[derive(Clone, Debug)]
pub(crate) struct RoleLogin {
    pub role_arn: String,
    /// The variable holding the job's OIDC token (`id_tokens:`).
    pub id_token_env: String,
    pub sts_region: String,
    pub duration_secs: u64,
}

/// The web identity for [`Tokens`]: the role ARN and the job's token checked,
/// the session named after the job.
pub(crate) fn web_identity(
    env: &Env,
    login: &RoleLogin,
    now: i64,
) -> Result<WebIdentity, OidcError> {
    check_role_arn(&login.role_arn)?;
    Ok(WebIdentity {
        role_arn: login.role_arn.clone(),
        token: job_token(env, &login.id_token_env, now)?,
        session_name: session_name(env),
        duration_secs: login.duration_secs,
        sts_region: login.sts_region.clone(),
    })
}

/// A token service whose AWS identity is the job's OIDC token (the core
/// exchanges it with STS on the first fetch); nothing is cached on the runner's
/// disk. Returns it with the STS session name, for the log.
pub(crate) fn role_tokens(
    env: &Env,
    config: Config,
    login: &RoleLogin,
    clock: Arc<dyn Clock>,
) -> Result<(Tokens, String), OidcError> {
    let identity = web_identity(env, login, clock.now())?;
    let session = identity.session_name.clone();
    let tokens = Tokens::builder(env.clone(), config)
        .clock(clock)
        .cache(None)
        .web_identity(identity)
        .build();
    Ok((tokens, session))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!(
            "{}.{}.{}",
            b(r#"{"alg":"RS256","typ":"JWT"}"#),
            b(claims),
            b("sig")
        )
    }

    #[test]
    fn checks_the_token_before_calling_sts() {
        let now = 1_700_000_000;
        let good = jwt(&format!(
            r#"{{"sub":"project_path:g/p","exp":{}}}"#,
            now + 300
        ));
        let env = Env::from_pairs([("GITLAB_OIDC_TOKEN", good.as_str()), ("EMPTY", "")]);
        assert_eq!(
            job_token(&env, "GITLAB_OIDC_TOKEN", now).unwrap().expose(),
            &good
        );
        let e = job_token(&env, "EMPTY", now).unwrap_err().to_string();
        assert!(e.contains("$EMPTY") && e.contains("id_tokens"), "{e}");
        let e = job_token(&env, "UNSET", now).unwrap_err().to_string();
        assert!(e.contains("$UNSET is empty or unset"), "{e}");
        let old = jwt(&format!(r#"{{"exp":{}}}"#, now - 1));
        let env = Env::from_pairs([("T", old.as_str()), ("N", "not-a-jwt")]);
        let e = job_token(&env, "T", now).unwrap_err().to_string();
        assert!(e.contains("expired at 2023-11-14T22:13:19Z"), "{e}");
        let e = job_token(&env, "N", now).unwrap_err().to_string();
        assert!(e.contains("not a JWT"), "{e}");
        assert!(!e.contains("not-a-jwt"), "never echo the token: {e}");
    }

    #[test]
    fn the_web_identity_is_the_checked_job_token() {
        let now = 1_700_000_000;
        let token = jwt(&format!(r#"{{"exp":{}}}"#, now + 300));
        let env = Env::from_pairs([
            ("GITLAB_OIDC_TOKEN", token.as_str()),
            ("CI_PROJECT_ID", "42"),
            ("CI_JOB_ID", "7"),
        ]);
        let login = RoleLogin {
            role_arn: "arn:aws:iam::123456789012:role/ci".into(),
            id_token_env: DEFAULT_TOKEN_VAR.into(),
            sts_region: "eu-west-1".into(),
            duration_secs: 900,
        };
        let id = web_identity(&env, &login, now).unwrap();
        assert_eq!(id.token.expose(), &token);
        assert_eq!(
            (
                id.role_arn.as_str(),
                id.session_name.as_str(),
                id.duration_secs,
                id.sts_region.as_str()
            ),
            (
                "arn:aws:iam::123456789012:role/ci",
                "gitlab-42-7",
                900,
                "eu-west-1"
            )
        );
        assert!(!format!("{id:?}").contains(&token), "the token in Debug");
        // Checked before anything is built: a bad ARN, then an expired token.
        let bad = RoleLogin {
            role_arn: "role/ci".into(),
            ..login.clone()
        };
        assert!(matches!(
            web_identity(&env, &bad, now),
            Err(OidcError::RoleArn(_))
        ));
        assert!(matches!(
            web_identity(&env, &login, now + 301),
            Err(OidcError::Expired { .. })
        ));
        let clock = crate::clock::ManualClock::new(now + 301);
        let e = role_tokens(&env, Config::default(), &login, clock)
            .err()
            .unwrap();
        assert!(e.to_string().contains("expired at"), "{e}");
        let (_, session) = role_tokens(
            &env,
            Config::default(),
            &login,
            crate::clock::ManualClock::new(now),
        )
        .unwrap();
        assert_eq!(session, "gitlab-42-7");
    }

    #[test]
    fn session_names_and_durations() {
        let env = Env::from_pairs([
            ("CI_PROJECT_ID", "42"),
            ("CI_PIPELINE_ID", "1001"),
            ("CI_JOB_ID", "9 9"),
        ]);
        assert_eq!(session_name(&env), "gitlab-42-1001-99");
        assert_eq!(session_name(&Env::default()), "gitlab");
        let long = Env::from_pairs([("CI_PROJECT_ID", "9".repeat(80))]);
        assert_eq!(session_name(&long).len(), 64);
        let secs = |s: &str| duration_secs(crate::duration::parse(s).unwrap());
        assert_eq!(secs("1h").unwrap(), 3600);
        assert_eq!(secs("900").unwrap(), 900);
        assert_eq!(secs("12h").unwrap(), 43_200);
        assert!(secs("5m").is_err());
        assert_eq!(
            secs("13h").unwrap_err().to_string(),
            "--duration must be between 15m and 12h (STS limits), not 13h"
        );
        assert!(check_role_arn("arn:aws:iam::123456789012:role/ci/gitlab-pull").is_ok());
        assert!(check_role_arn("arn:aws-cn:iam::123456789012:role/x").is_ok());
        for bad in [
            "not-an-arn",
            "arn:aws:iam::123:role/x",
            "arn:aws:iam::123456789012:user/x",
            "arn:aws:iam::123456789012:role/",
        ] {
            assert!(check_role_arn(bad).is_err(), "{bad}");
        }
    }
}
