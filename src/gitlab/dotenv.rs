//! GitLab dotenv reports: how ECR tokens reach later jobs of a pipeline.
//!
//! GitLab reads each line with `^(.*?)=(.*)$`; keys are `[A-Za-z0-9_]`; blank
//! lines, comments and multi-line values are rejected; the whole file must be
//! smaller than 5 KB (5120 bytes). One ECR `auth` is about 3.4 KB, so:
//!
//! - if it fits, one line `DOCKER_AUTH_CONFIG=<compact JSON>`, which the runner
//!   uses to pull later jobs' images;
//! - else each regional token once, `ECR_AUTH_TOKEN_<REGION>=<auth>`, and
//!   `.gitlab-ci.yml` builds DOCKER_AUTH_CONFIG from `$ECR_AUTH_TOKEN_…`
//!   references (gitlab-runner expands them) with the line [`Dotenv::ci_line`] gives;
//! - if even that does not fit, an error: never a file GitLab would reject.

use crate::dockercfg::DockerConfig;
use crate::tokens::AuthToken;

/// GitLab's `dotenv_size` limit; a file must be strictly smaller.
pub(crate) const MAX_BYTES: usize = 5 * 1024;
pub(crate) const VAR_PREFIX: &str = "ECR_AUTH_TOKEN_";
pub(crate) const DOCKER_AUTH_CONFIG: &str = "DOCKER_AUTH_CONFIG";

/// A dotenv file ready to write.
#[derive(Clone)]
pub(crate) struct Dotenv {
    /// The file, every line `KEY=VALUE\n`.
    pub text: String,
    /// In the split form: the `.gitlab-ci.yml` variables line that builds
    /// DOCKER_AUTH_CONFIG from the token variables (no secret in it).
    pub ci_line: Option<String>,
    /// The keys, in file order.
    pub keys: Vec<String>,
}

impl std::fmt::Debug for Dotenv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dotenv")
            .field("bytes", &self.text.len())
            .field("keys", &self.keys)
            .field("ci_line", &self.ci_line)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum DotenvError {
    #[error("the tokens for {regions} need {bytes} bytes in a dotenv file, and GitLab rejects dotenv files of {MAX_BYTES} bytes (5 KB) or more; nothing was written. Use one `ecr-auth gitlab login` job per region, each with its own dotenv report (every token gets its own ECR_AUTH_TOKEN_<REGION> variable), or keep a CI variable fresh with `ecr-auth gitlab sync-variable`")]
    TooBig { regions: String, bytes: usize },
    #[error("the merged document has its own `auths` entries ({hosts}), and with the ECR tokens it does not fit GitLab's 5 KB dotenv limit; they cannot go into the .gitlab-ci.yml line either (they are credentials). Merge fewer entries, or use `ecr-auth gitlab sync-variable`")]
    MergedSecrets { hosts: String },
    #[error("no registries given: name at least one ECR registry")]
    Empty,
}

/// How to shape the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum Form {
    /// DOCKER_AUTH_CONFIG if it fits, else the per-region token variables.
    #[default]
    Auto,
    /// Always the per-region token variables.
    TokenVars,
}

/// The variable for a token scope: `aws/eu-west-1` → `ECR_AUTH_TOKEN_EU_WEST_1`,
/// `…/fips` → `…_FIPS`, `public/us-east-1` → `ECR_AUTH_TOKEN_PUBLIC`.
pub(crate) fn var_name(scope: &str) -> String {
    let mut parts = scope.split('/');
    let partition = parts.next().unwrap_or("");
    let region = parts.next().unwrap_or("");
    let fips = parts.next() == Some("fips");
    if partition == "public" {
        return format!("{VAR_PREFIX}PUBLIC");
    }
    let mut name = format!(
        "{VAR_PREFIX}{}",
        region.to_ascii_uppercase().replace('-', "_")
    );
    if fips {
        name.push_str("_FIPS");
    }
    name.retain(|c| c.is_ascii_alphanumeric() || c == '_');
    name
}

/// Renders tokens (each with its scope, `Target::scope()`) over `base`, whose
/// other entries are kept.
pub(crate) fn render(
    base: &DockerConfig,
    tokens: &[(AuthToken, String)],
    form: Form,
) -> Result<Dotenv, DotenvError> {
    if tokens.is_empty() {
        return Err(DotenvError::Empty);
    }
    if form == Form::Auto {
        let all: Vec<AuthToken> = tokens.iter().map(|(t, _)| t.clone()).collect();
        let doc = crate::auth_document::auth_document(base, &all);
        let text = format!("{DOCKER_AUTH_CONFIG}={}\n", doc.to_compact());
        if text.len() < MAX_BYTES {
            return Ok(Dotenv {
                text,
                ci_line: None,
                keys: vec![DOCKER_AUTH_CONFIG.into()],
            });
        }
    }
    // The split form prints a `.gitlab-ci.yml` line for the user to commit: it
    // must never carry a credential, so merged `auths` of other hosts (which
    // have no token variable to stand in for them) are refused, whichever way
    // this form was chosen (issue: `--token-vars --merge` printed them).
    let ours: Vec<&str> = tokens.iter().map(|(t, _)| t.host.as_str()).collect();
    let theirs: Vec<&str> = base
        .auth_hosts()
        .into_iter()
        .filter(|h| !ours.contains(h))
        .collect();
    if !theirs.is_empty() {
        return Err(DotenvError::MergedSecrets {
            hosts: theirs.join(", "),
        });
    }
    // One variable per distinct token: per scope, and per credential identity
    // within a scope (two roles in one region get two tokens).
    let mut vars: Vec<(String, String, String)> = Vec::new(); // (name, scope, auth)
    let mut refs: Vec<(&str, String)> = Vec::new(); // (host, var)
    for (token, scope) in tokens {
        let auth = token.basic_auth().into_inner();
        let name = match vars.iter().find(|(_, s, a)| s == scope && *a == auth) {
            Some((n, _, _)) => n.clone(),
            None => {
                let base_name = var_name(scope);
                let taken = vars
                    .iter()
                    .filter(|(n, _, _)| n == &base_name || n.starts_with(&format!("{base_name}_")))
                    .count();
                let n = if taken == 0 {
                    base_name
                } else {
                    format!("{base_name}_{}", taken + 1)
                };
                vars.push((n.clone(), scope.clone(), auth));
                n
            }
        };
        refs.push((token.host.as_str(), name));
    }
    let text: String = vars.iter().map(|(n, _, a)| format!("{n}={a}\n")).collect();
    if text.len() >= MAX_BYTES {
        let mut scopes: Vec<&str> = vars.iter().map(|(_, s, _)| s.as_str()).collect();
        scopes.dedup();
        return Err(DotenvError::TooBig {
            regions: format!("{} ({})", plural(vars.len(), "token"), scopes.join(", ")),
            bytes: text.len(),
        });
    }
    let mut doc = base.clone();
    for (host, var) in &refs {
        doc.set_auth_value(host, &format!("${var}"));
    }
    Ok(Dotenv {
        text,
        ci_line: Some(format!(
            "{DOCKER_AUTH_CONFIG}: '{}'",
            doc.to_compact().replace('\'', "''")
        )),
        keys: vars.into_iter().map(|(n, _, _)| n).collect(),
    })
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// [`render`], then [`check`]: a file GitLab will accept, or an error.
pub(crate) fn report(
    base: &DockerConfig,
    tokens: &[(AuthToken, String)],
    form: Form,
) -> anyhow::Result<Dotenv> {
    let d = render(base, tokens, form)?;
    check(&d.text).map_err(|e| {
        anyhow::anyhow!("internal error: the dotenv file breaks GitLab's rules: {e}")
    })?;
    Ok(d)
}

/// Checks a file against GitLab's dotenv rules; the reason if it breaks one.
pub(crate) fn check(text: &str) -> Result<(), String> {
    if text.len() >= MAX_BYTES {
        return Err(format!(
            "{} bytes; GitLab accepts less than {MAX_BYTES}",
            text.len()
        ));
    }
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {n} is not KEY=VALUE"));
        };
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!(
                "line {n}: the key {key:?} is not made of A-Z, a-z, 0-9 and _"
            ));
        }
        if value.contains('\r') || value.trim() != value {
            return Err(format!(
                "line {n}: the value of {key} has surrounding white space"
            ));
        }
    }
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the last line has no newline".into());
    }
    Ok(())
}

/// What to tell the user when the tokens went into per-region variables: how
/// `.gitlab-ci.yml` rebuilds DOCKER_AUTH_CONFIG from them (no secret in it).
pub(crate) fn ci_line_advice(line: &str, keys: &[String]) -> String {
    format!(
        "ecr-auth: the tokens do not fit one DOCKER_AUTH_CONFIG line under GitLab's 5 KB dotenv limit, so the file carries {}.\n\
         ecr-auth: add this to `variables:` of the jobs that pull from ECR (gitlab-runner expands the references):\n\
         {line}",
        keys.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Host;
    use crate::secret::Secret;
    use crate::tokens::Origin;

    fn token(host: &str, password: &str) -> AuthToken {
        AuthToken {
            host: Host::parse(host).unwrap(),
            username: "AWS".into(),
            password: Secret::new(password.into()),
            issued_at: 0,
            expires_at: 43200,
            proxy_endpoint: None,
            origin: Origin::Aws,
        }
    }

    #[test]
    fn token_vars_never_print_merged_credentials() {
        let base = DockerConfig::parse(
            r#"{"auths":{"registry.example.org":{"auth":"dXNlcjpzM2NyM3Q="}},"credsStore":"x"}"#,
            "t",
        )
        .unwrap();
        let t = token("111111111111.dkr.ecr.eu-west-1.amazonaws.com", "pw");
        let e = render(
            &base,
            &[(t.clone(), "aws/eu-west-1".into())],
            Form::TokenVars,
        )
        .unwrap_err();
        assert!(matches!(e, DotenvError::MergedSecrets { .. }), "{e}");
        assert!(!e.to_string().contains("dXNlcjpzM2NyM3Q="), "{e}");
        // Without other hosts' credentials the line holds only references.
        let clean = DockerConfig::parse(r#"{"credsStore":"x"}"#, "t").unwrap();
        let d = render(&clean, &[(t, "aws/eu-west-1".into())], Form::TokenVars).unwrap();
        let line = d.ci_line.unwrap();
        // base64("AWS:pw") is QVdTOnB3: only the reference may appear.
        assert!(
            line.contains("$ECR_AUTH_TOKEN_EU_WEST_1") && !line.contains("QVdTOnB3"),
            "{line}"
        );
    }

    #[test]
    fn names_per_scope() {
        assert_eq!(var_name("aws/eu-west-1"), "ECR_AUTH_TOKEN_EU_WEST_1");
        assert_eq!(
            var_name("aws-us-gov/us-gov-west-1/fips"),
            "ECR_AUTH_TOKEN_US_GOV_WEST_1_FIPS"
        );
        assert_eq!(var_name("public/us-east-1"), "ECR_AUTH_TOKEN_PUBLIC");
    }

    #[test]
    fn small_tokens_make_one_document() {
        let base = DockerConfig::parse(r#"{"credHelpers":{"x":"y"}}"#, "t").unwrap();
        let d = render(
            &base,
            &[(token("1.example:5000", "pw"), "aws/eu-west-1".into())],
            Form::Auto,
        )
        .unwrap();
        assert_eq!(d.text, "DOCKER_AUTH_CONFIG={\"credHelpers\":{\"x\":\"y\"},\"auths\":{\"1.example:5000\":{\"auth\":\"QVdTOnB3\"}}}\n");
        assert!(d.ci_line.is_none());
        check(&d.text).unwrap();
    }

    #[test]
    fn big_tokens_go_once_per_region() {
        let pw = "p".repeat(2500);
        let tokens = vec![
            (
                token("111111111111.dkr.ecr.eu-west-1.amazonaws.com", &pw),
                "aws/eu-west-1".to_string(),
            ),
            (
                token("222222222222.dkr.ecr.eu-west-1.amazonaws.com", &pw),
                "aws/eu-west-1".to_string(),
            ),
        ];
        let d = render(&DockerConfig::new(), &tokens, Form::Auto).unwrap();
        assert_eq!(d.keys, vec!["ECR_AUTH_TOKEN_EU_WEST_1"]);
        assert_eq!(d.text.lines().count(), 1);
        check(&d.text).unwrap();
        assert_eq!(
            d.ci_line.as_deref(),
            Some("DOCKER_AUTH_CONFIG: '{\"auths\":{\"111111111111.dkr.ecr.eu-west-1.amazonaws.com\":{\"auth\":\"$ECR_AUTH_TOKEN_EU_WEST_1\"},\"222222222222.dkr.ecr.eu-west-1.amazonaws.com\":{\"auth\":\"$ECR_AUTH_TOKEN_EU_WEST_1\"}}}'")
        );
        // a second region does not fit: a clear error, no file
        let mut two = tokens.clone();
        two.push((
            token(
                "111111111111.dkr.ecr.us-east-1.amazonaws.com",
                &format!("{pw}x"),
            ),
            "aws/us-east-1".into(),
        ));
        let e = render(&DockerConfig::new(), &two, Form::Auto)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("2 tokens (aws/eu-west-1, aws/us-east-1)")
                && e.contains("one `ecr-auth gitlab login` job per region"),
            "{e}"
        );
        // forced token variables even when small
        let d = render(
            &DockerConfig::new(),
            &[(token("a.b", "pw"), "aws/eu-west-1".into())],
            Form::TokenVars,
        )
        .unwrap();
        assert_eq!(d.text, "ECR_AUTH_TOKEN_EU_WEST_1=QVdTOnB3\n");
        // two identities in one region: two variables
        let d = render(
            &DockerConfig::new(),
            &[
                (token("a.b", "one"), "aws/eu-west-1".into()),
                (token("c.d", "two"), "aws/eu-west-1".into()),
            ],
            Form::TokenVars,
        )
        .unwrap();
        assert_eq!(
            d.keys,
            vec!["ECR_AUTH_TOKEN_EU_WEST_1", "ECR_AUTH_TOKEN_EU_WEST_1_2"]
        );
    }

    #[test]
    fn merged_secrets_never_reach_the_ci_line() {
        let base =
            DockerConfig::parse(r#"{"auths":{"other.example":{"auth":"c2VjcmV0"}}}"#, "t").unwrap();
        let pw = "p".repeat(2500);
        let tokens = vec![
            (token("1.example", &pw), "aws/eu-west-1".to_string()),
            (token("2.example", &pw), "aws/eu-west-1".to_string()),
        ];
        let e = render(&base, &tokens, Form::Auto).unwrap_err().to_string();
        assert!(
            e.contains("other.example") && !e.contains("c2VjcmV0"),
            "{e}"
        );
    }

    #[test]
    fn gitlab_rules() {
        assert!(check("A=1\nB_2=x=y\n").is_ok());
        assert!(check("A=1\n\nB=2\n").unwrap_err().contains("line 2"));
        assert!(check("A-B=1\n").unwrap_err().contains("A-B"));
        assert!(check("# c\n").is_err());
        assert!(check(&format!("A={}\n", "x".repeat(MAX_BYTES))).is_err());
        assert!(check("A= 1\n").is_err());
    }
}
