//! The credentials file of seed 004, usually a Swarm secret
//! (`/run/secrets/ecr_auth_creds`):
//!
//! ```text
//! export AWS_ECR_REPO=123456789012.dkr.ecr.us-east-1.amazonaws.com
//! export AWS_DEFAULT_REGION=us-east-1
//! export AWS_ACCESS_KEY_ID=AKIA...
//! export AWS_SECRET_ACCESS_KEY=...
//! ```
//!
//! Blank lines and `#` comments are allowed, `export ` is optional, values may be
//! quoted with `"` or `'`. Only `AWS_*` and `ECR_AUTH_*` variables are taken: the file
//! is a credentials file, not a way to change `PATH`. Values are never shown in
//! errors (they are secrets): an error names the line number and the variable.
//!
//! The variables go into the [`Env`] handed to the token service, never into the
//! process environment.

use std::path::{Path, PathBuf};

use crate::env::Env;
use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub(crate) enum EnvFileError {
    #[error("cannot read the credentials file {path}: {source}. Mount the Swarm secret there, or fix --env-file")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("credentials file {path}, line {line}: {message} (expected `export NAME=value`)")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// The variables of an env file, in file order; later lines win when applied.
#[derive(Debug, Default)]
pub(crate) struct EnvFile {
    pub(crate) vars: Vec<(String, Secret<String>)>,
    /// Names that were present but not taken (not `AWS_*`/`ECR_AUTH_*`).
    pub(crate) ignored: Vec<String>,
}

impl EnvFile {
    pub(crate) fn read(path: &Path) -> Result<EnvFile, EnvFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| EnvFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        EnvFile::parse(&text).map_err(|(line, message)| EnvFileError::Syntax {
            path: path.to_path_buf(),
            line,
            message,
        })
    }

    /// Errors are (line number, message); a message names the variable, never
    /// shows a value.
    pub(crate) fn parse(text: &str) -> Result<EnvFile, (usize, String)> {
        let mut out = EnvFile::default();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line
                .strip_prefix("export")
                .filter(|rest| rest.starts_with([' ', '\t']))
                .map(str::trim_start)
                .unwrap_or(line);
            let Some((name, value)) = line.split_once('=') else {
                return Err((n, not_an_assignment(line)));
            };
            let name = name.trim_end();
            if !is_name(name) {
                return Err((n, not_an_assignment(name)));
            }
            let value = unquote(value).map_err(|m| (n, format!("the value of {name}: {m}")))?;
            if name.starts_with("AWS_") || name.starts_with("ECR_AUTH_") {
                out.vars.push((name.to_string(), Secret::new(value)));
            } else {
                out.ignored.push(name.to_string());
            }
        }
        Ok(out)
    }

    /// Sets the file's variables in `env` (a later line wins over an earlier one
    /// and over the process environment).
    pub(crate) fn apply(&self, env: &mut Env) {
        for (name, value) in &self.vars {
            env.set(name.clone(), value.expose().clone());
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.expose().as_str())
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Why `text` (a line without `=`, or what stands before its `=`) is not
/// `NAME=value`, naming the variable it starts with when that is one the file is
/// for (`AWS_*`, `ECR_AUTH_*`). Anything else on the line may be a secret (a
/// pasted key, a value after a missing `=`) and is never shown.
fn not_an_assignment(text: &str) -> String {
    let text = text.trim();
    let lead = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(text, |end| &text[..end]);
    let named = is_name(lead) && (lead.starts_with("AWS_") || lead.starts_with("ECR_AUTH_"));
    match (named, lead.len() == text.len()) {
        (true, true) => format!("{lead} has no `=` and no value"),
        (true, false) => format!("{lead} is followed by something other than `=`"),
        (false, _) => "no AWS_* or ECR_AUTH_* variable name before an `=`".to_string(),
    }
}

fn unquote(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    let unclosed = |q: char| format!("the {q} quote is not closed");
    if let Some(rest) = raw.strip_prefix('\'') {
        let end = rest.find('\'').ok_or_else(|| unclosed('\''))?;
        return trailing(&rest[end + 1..]).map(|_| rest[..end].to_string());
    }
    if let Some(rest) = raw.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return trailing(&rest[i + 1..]).map(|_| value),
                '\\' => match chars.next() {
                    Some((_, e @ ('"' | '\\' | '$' | '`'))) => value.push(e),
                    Some((_, e)) => {
                        value.push('\\');
                        value.push(e);
                    }
                    None => break,
                },
                c => value.push(c),
            }
        }
        return Err(unclosed('"'));
    }
    // Unquoted: up to a ` #` comment.
    let value = match raw.find(" #").or_else(|| raw.find("\t#")) {
        Some(i) => raw[..i].trim_end(),
        None => raw,
    };
    if value.contains(char::is_whitespace) {
        return Err("contains white space; quote it".into());
    }
    Ok(value.to_string())
}

fn trailing(rest: &str) -> Result<(), String> {
    let rest = rest.trim();
    if rest.is_empty() || rest.starts_with('#') {
        Ok(())
    } else {
        Err("unexpected text after the closing quote".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_004_format() {
        let text = "export AWS_ECR_REPO=XXX.dkr.ecr.us-east-1.amazonaws.com\n\
                    export AWS_DEFAULT_REGION=us-east-1\n\
                    export AWS_ACCESS_KEY_ID=AKIAEXAMPLE\n\
                    export AWS_SECRET_ACCESS_KEY=abc/def+ghi=\n";
        let f = EnvFile::parse(text).unwrap();
        let names: Vec<&str> = f.vars.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "AWS_ECR_REPO",
                "AWS_DEFAULT_REGION",
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY"
            ]
        );
        assert_eq!(f.get("AWS_SECRET_ACCESS_KEY"), Some("abc/def+ghi="));
        assert_eq!(
            f.get("AWS_ECR_REPO"),
            Some("XXX.dkr.ecr.us-east-1.amazonaws.com")
        );
    }

    #[test]
    fn comments_quotes_and_plain_assignments() {
        let text = "# ECR creds\n\n  AWS_REGION = eu-west-1  # trailing comment\n\
                    export AWS_SESSION_TOKEN=\"a b\\\"c\"\n\
                    export\tAWS_PROFILE='prod #1'\n\
                    export PATH=/evil\n\
                    export exported_elsewhere=1\n";
        let f = EnvFile::parse(text).unwrap();
        assert_eq!(f.get("AWS_REGION"), Some("eu-west-1"));
        assert_eq!(f.get("AWS_SESSION_TOKEN"), Some("a b\"c"));
        assert_eq!(f.get("AWS_PROFILE"), Some("prod #1"));
        assert_eq!(f.get("PATH"), None);
        assert_eq!(f.ignored, ["PATH", "exported_elsewhere"]);
    }

    #[test]
    fn errors_name_the_line_and_the_variable_not_the_value() {
        let cases = [
            (
                "export AWS_ACCESS_KEY_ID\n",
                1,
                "AWS_ACCESS_KEY_ID has no `=`",
            ),
            (
                "\nexport 1AWS=s3cr3t\n",
                2,
                "no AWS_* or ECR_AUTH_* variable name before an `=`",
            ),
            // A space where the `=` belongs, and a base64 secret with its own `=`.
            (
                "AWS_REGION=eu-west-1\nAWS_SECRET_ACCESS_KEY s3cr3t+K7MDENG/bPxRfiCY=\n",
                2,
                "AWS_SECRET_ACCESS_KEY is followed by something other than `=`",
            ),
            // A secret pasted on a line of its own.
            (
                "# creds\nexport AWS_ACCESS_KEY_ID=AKIA\ns3cr3tK7MDENGbPxRfiCY\n",
                3,
                "no AWS_* or ECR_AUTH_* variable name",
            ),
            (
                "/s3cr3t/K7MDENG\n",
                1,
                "no AWS_* or ECR_AUTH_* variable name",
            ),
            (
                "AWS_SECRET_ACCESS_KEY=\"s3cr3t\n",
                1,
                "the value of AWS_SECRET_ACCESS_KEY: the \" quote is not closed",
            ),
            (
                "AWS_SECRET_ACCESS_KEY=s3 cr3t\n",
                1,
                "the value of AWS_SECRET_ACCESS_KEY: contains white space",
            ),
            (
                "AWS_SECRET_ACCESS_KEY='s3cr3t' x\n",
                1,
                "the value of AWS_SECRET_ACCESS_KEY: unexpected text after the closing quote",
            ),
        ];
        for (text, line, what) in cases {
            let (n, message) = EnvFile::parse(text).unwrap_err();
            assert_eq!(n, line, "{text:?}: {message}");
            assert!(message.contains(what), "{text:?}: {message}");
            assert!(!message.contains("s3"), "a value leaked: {message}");
        }
        let e = EnvFileError::Syntax {
            path: "/run/secrets/ecr_auth_creds".into(),
            line: 2,
            message: EnvFile::parse("AWS_REGION=x\nAWS_SECRET_ACCESS_KEY wJalr=\n")
                .unwrap_err()
                .1,
        };
        assert_eq!(
            e.to_string(),
            "credentials file /run/secrets/ecr_auth_creds, line 2: AWS_SECRET_ACCESS_KEY is followed by something other than `=` (expected `export NAME=value`)"
        );
    }

    #[test]
    fn applies_to_an_env_not_the_process() {
        let f =
            EnvFile::parse("AWS_REGION=eu-west-1\nAWS_REGION=us-east-1\nAWS_PROFILE=p\n").unwrap();
        let mut env = Env::from_pairs([("AWS_PROFILE", "outer"), ("HOME", "/h")]);
        f.apply(&mut env);
        assert_eq!(
            env.get("AWS_REGION"),
            Some("us-east-1"),
            "the later line wins"
        );
        assert_eq!(env.get("AWS_PROFILE"), Some("p"), "the file wins");
        assert_eq!(env.get("HOME"), Some("/h"));
    }

    #[test]
    fn debug_hides_values() {
        let f = EnvFile::parse("AWS_SECRET_ACCESS_KEY=hunter2\n").unwrap();
        assert!(!format!("{f:?}").contains("hunter2"));
    }
}
