//! The optional ecr-auth config file: other host names mapped to ECR, and
//! per-registry credentials.
//!
//! ```toml
//! [[registry]]
//! host = "registry.internal:5000"   # the name clients use
//! account = "123456789012"
//! region = "eu-west-1"
//! role_arn = "arn:aws:iam::123456789012:role/ecr-pull"   # optional
//! profile = "prod"                                         # optional
//! ```
//!
//! Looked up at `--config`, else `$ECR_AUTH_CONFIG`, else
//! `$XDG_CONFIG_HOME/ecr-auth/config.toml`, else `/etc/ecr-auth/config.toml`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::env::Env;
use crate::registry::{Host, RegistryError, Target};

pub const SYSTEM_CONFIG: &str = "/etc/ecr-auth/config.toml";

/// Where a registry's AWS credentials come from, beyond the default chain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CredentialSource {
    /// A profile of the shared AWS config files (instead of the default chain).
    pub profile: Option<String>,
    /// A role assumed with those credentials (cross-account pulls).
    pub role_arn: Option<String>,
    /// An inline session policy for that AssumeRole (the broker's `pull_only`).
    pub session_policy: Option<String>,
}

/// A registry host resolved to the ECR token it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub host: Host,
    pub target: Target,
    pub creds: CredentialSource,
}

#[derive(Clone, Debug, Default)]
pub struct Config {
    /// The file this was read from, if any.
    pub path: Option<PathBuf>,
    pub registries: Vec<RegistryEntry>,
    /// `broker = "unix://PATH"`: tokens come from that `ecr-auth serve`.
    pub broker_url: Option<String>,
    /// `[broker]`: the settings of `ecr-auth serve`.
    pub broker: Option<crate::broker::Settings>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryEntry {
    pub host: Host,
    pub target: Target,
    pub creds: CredentialSource,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("no registries given: name them (e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com), set ECR_AUTH_REGISTRIES, or list them in the ecr-auth config file")]
    NoRegistries,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    #[serde(default)]
    #[allow(dead_code)]
    version: Option<u32>,
    #[serde(default)]
    registry: Vec<EntryFormat>,
    /// `broker = "unix://PATH"` (a client's) or a `[broker]` table (the server's).
    broker: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFormat {
    host: Spanned<String>,
    account: Option<Spanned<String>>,
    region: Option<Spanned<String>>,
    #[serde(default)]
    fips: bool,
    #[serde(default)]
    public: bool,
    role_arn: Option<Spanned<String>>,
    profile: Option<Spanned<String>>,
}

impl Config {
    /// Finds and reads the config file. An explicitly named file must exist;
    /// the default locations may be absent (then the config is empty).
    pub fn load(explicit: Option<&Path>, env: &Env) -> Result<Config, ConfigError> {
        if let Some(path) = explicit {
            return Config::read(path);
        }
        if let Some(path) = env.get("ECR_AUTH_CONFIG") {
            return Config::read(Path::new(path));
        }
        let mut candidates = Vec::new();
        if let Some(dir) = env.config_home() {
            candidates.push(dir.join("ecr-auth").join("config.toml"));
        }
        candidates.push(PathBuf::from(SYSTEM_CONFIG));
        for path in candidates {
            match std::fs::read_to_string(&path) {
                Ok(text) => return Config::parse(&text, &path),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(ConfigError::Read { path, source }),
            }
        }
        Ok(Config::default())
    }

    pub fn read(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let at = |span: std::ops::Range<usize>, field: &str, what: String| {
            invalid(format!(
                "line {}, field `{field}`: {what}",
                line_of(text, span.start)
            ))
        };
        let file: FileFormat =
            toml::from_str(text).map_err(|e| invalid(one_line_toml_error(&e, text)))?;
        let mut registries = Vec::new();
        for entry in file.registry {
            let host = Host::parse(entry.host.get_ref())
                .map_err(|e| at(entry.host.span(), "host", e.to_string()))?;
            let target = match (&entry.account, &entry.region, entry.public) {
                (_, _, true) => Target::Public,
                (Some(account), Some(region), false) => Target::private(
                    account.get_ref(),
                    region.get_ref(),
                    entry.fips,
                )
                .map_err(|e| match e {
                    RegistryError::BadAccount(_) => at(account.span(), "account", e.to_string()),
                    _ => at(region.span(), "region", e.to_string()),
                })?,
                (None, None, false) => host.ecr_target().ok_or_else(|| {
                    at(
                        entry.host.span(),
                        "host",
                        format!(
                            "{host} is not an ECR host name, so `account` and `region` are required"
                        ),
                    )
                })?,
                (Some(_), None, false) | (None, Some(_), false) => {
                    return Err(at(
                        entry.host.span(),
                        "account",
                        "set both `account` and `region`, or neither".into(),
                    ))
                }
            };
            if let Some(arn) = &entry.role_arn {
                if !is_role_arn(arn.get_ref()) {
                    return Err(at(
                        arn.span(),
                        "role_arn",
                        format!(
                            "{:?} is not an IAM role ARN (arn:aws:iam::123456789012:role/NAME)",
                            arn.get_ref()
                        ),
                    ));
                }
            }
            if let Some(p) = &entry.profile {
                if p.get_ref().trim().is_empty() {
                    return Err(at(p.span(), "profile", "must not be empty".into()));
                }
            }
            if registries.iter().any(|r: &RegistryEntry| r.host == host) {
                return Err(at(
                    entry.host.span(),
                    "host",
                    format!("{host} is configured twice"),
                ));
            }
            registries.push(RegistryEntry {
                host,
                target,
                creds: CredentialSource {
                    profile: entry.profile.map(Spanned::into_inner),
                    role_arn: entry.role_arn.map(Spanned::into_inner),
                    session_policy: None,
                },
            });
        }
        let (broker_url, broker) = match file.broker {
            None => (None, None),
            Some(toml::Value::String(url)) => (Some(url), None),
            Some(v @ toml::Value::Table(_)) => (
                None,
                Some(
                    v.try_into::<crate::broker::Settings>()
                        .map_err(|e| invalid(format!("[broker]: {}", e.message().trim())))?,
                ),
            ),
            Some(_) => return Err(invalid(
                "`broker` is either \"unix://PATH\" (the socket of a broker to ask) or a [broker] section (settings of `ecr-auth serve`)".into(),
            )),
        };
        Ok(Config {
            path: Some(path.to_path_buf()),
            registries,
            broker_url,
            broker,
        })
    }

    /// The registries a command works on: those `given` (blank ones ignored),
    /// else every host of the config file.
    pub fn registries_or(&self, given: Vec<String>) -> Result<Vec<String>, ConfigError> {
        let given: Vec<String> = given.into_iter().filter(|r| !r.trim().is_empty()).collect();
        if !given.is_empty() {
            return Ok(given);
        }
        let configured: Vec<String> = self.registries.iter().map(|r| r.host.to_string()).collect();
        if configured.is_empty() {
            return Err(ConfigError::NoRegistries);
        }
        Ok(configured)
    }

    /// The ECR token a host needs: a configured entry first, else the host's own
    /// ECR name. `None` means "not an ECR registry".
    pub fn resolve(&self, host: &Host) -> Option<Resolved> {
        if let Some(e) = self.registries.iter().find(|e| &e.host == host) {
            return Some(Resolved {
                host: e.host.clone(),
                target: e.target.clone(),
                creds: e.creds.clone(),
            });
        }
        host.ecr_target().map(|target| Resolved {
            host: host.clone(),
            target,
            creds: CredentialSource::default(),
        })
    }
}

/// `arn:aws:iam::123456789012:role/NAME` (any partition, any role path).
pub fn is_role_arn(s: &str) -> bool {
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "iam"
        && parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && parts[5].starts_with("role/")
        && parts[5].len() > "role/".len()
}

/// toml's own message is multi-line with a source excerpt; keep the line number
/// and the message on one line.
fn one_line_toml_error(e: &toml::de::Error, text: &str) -> String {
    toml_error_line(e.message(), e.span(), text)
}

/// `line N: message` for a TOML parse error at byte `span` of `text`
/// (shared with the config.toml editor, which parses with toml_edit).
pub fn toml_error_line(message: &str, span: Option<std::ops::Range<usize>>, text: &str) -> String {
    let message = message.trim().replace('\n', " ");
    match span {
        Some(span) => format!("line {}: {message}", line_of(text, span.start)),
        None => message,
    }
}

/// The 1-based line of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/ecr-auth/config.toml"))
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn maps_other_names_to_ecr() {
        let c = parse(
            r#"
# a local mirror
[[registry]]
host = "Registry.Internal:5000"
account = "123456789012"
region = "eu-west-1"
role_arn = "arn:aws:iam::123456789012:role/ecr-pull"
profile = "prod"

[[registry]]
host = "210987654321.dkr.ecr.us-east-1.amazonaws.com"
role_arn = "arn:aws:iam::210987654321:role/pull"
"#,
        )
        .unwrap();
        let r = c
            .resolve(&Host::parse("registry.internal:5000").unwrap())
            .unwrap();
        assert_eq!(
            r.target,
            Target::private("123456789012", "eu-west-1", false).unwrap()
        );
        assert_eq!(r.creds.profile.as_deref(), Some("prod"));
        let r = c
            .resolve(
                &Host::parse("https://210987654321.dkr.ecr.us-east-1.amazonaws.com/v2/").unwrap(),
            )
            .unwrap();
        assert_eq!(
            r.creds.role_arn.as_deref(),
            Some("arn:aws:iam::210987654321:role/pull")
        );
        // not configured, but an ECR name: default credentials
        let r = c
            .resolve(&Host::parse("111111111111.dkr.ecr.eu-west-1.amazonaws.com").unwrap())
            .unwrap();
        assert_eq!(r.creds, CredentialSource::default());
        assert!(c.resolve(&Host::parse("docker.io").unwrap()).is_none());
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = err("[[registry]]\nhost = \"x:5000\"\naccount = \"123\"\nregion = \"eu-west-1\"\n");
        assert!(e.contains("/etc/ecr-auth/config.toml"), "{e}");
        assert!(e.contains("line 3, field `account`"), "{e}");

        let e =
            err("[[registry]]\nhost = \"x:5000\"\naccount = \"123456789012\"\nregion = \"mars\"\n");
        assert!(e.contains("line 4, field `region`"), "{e}");

        let e = err("[[registry]]\nhost = \"x:5000\"\n\nrolearn = \"a\"\n");
        assert!(e.contains("line 4") && e.contains("rolearn"), "{e}");

        let e = err("[[registry]]\nhost = \"docker.io\"\n");
        assert!(
            e.contains("line 2, field `host`") && e.contains("account"),
            "{e}"
        );

        let e = err("[[registry]]\nhost = \"bad host\"\n");
        assert!(e.contains("field `host`"), "{e}");

        let e = err("[[registry]]\nhost = \"123456789012.dkr.ecr.eu-west-1.amazonaws.com\"\nrole_arn = \"arn:aws:iam::1:user/x\"\n");
        assert!(e.contains("line 3, field `role_arn`"), "{e}");

        let e = err("[[registry]\nhost = 1");
        assert!(e.contains("line 1"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");

        let e = err("[[registry]]\nhost = \"a:1\"\naccount=\"123456789012\"\nregion=\"eu-west-1\"\n[[registry]]\nhost = \"A:1\"\naccount=\"123456789012\"\nregion=\"eu-west-1\"\n");
        assert!(e.contains("line 6") && e.contains("twice"), "{e}");
    }

    #[test]
    fn lookup_order() {
        let dir = tempfile::tempdir().unwrap();
        let xdg = dir.path().join("xdg");
        std::fs::create_dir_all(xdg.join("ecr-auth")).unwrap();
        std::fs::write(
            xdg.join("ecr-auth/config.toml"),
            "[[registry]]\nhost = \"mirror:5000\"\naccount = \"123456789012\"\nregion = \"eu-west-1\"\n",
        )
        .unwrap();
        let env = Env::from_pairs([("XDG_CONFIG_HOME", xdg.to_str().unwrap())]);
        let c = Config::load(None, &env).unwrap();
        assert_eq!(c.registries.len(), 1);

        let explicit = dir.path().join("other.toml");
        std::fs::write(&explicit, "").unwrap();
        let env2 = Env::from_pairs([
            ("XDG_CONFIG_HOME", xdg.to_str().unwrap()),
            ("ECR_AUTH_CONFIG", explicit.to_str().unwrap()),
        ]);
        assert!(Config::load(None, &env2).unwrap().registries.is_empty());
        let missing = dir.path().join("missing.toml");
        let e = Config::load(Some(&missing), &env).unwrap_err().to_string();
        assert!(e.contains("missing.toml"), "{e}");
    }
}
