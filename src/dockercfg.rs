//! The Docker `config.json` / `DOCKER_AUTH_CONFIG` document, and the containers
//! `auth.json` (podman, buildah, skopeo), which shares its `auths` and
//! `credHelpers` shape.
//!
//! The document is kept as the JSON object it was read from, in its own key
//! order: edits touch only `auths`, `credHelpers` and `credsStore`, and every
//! other key (`proxies`, `HttpHeaders`, `currentContext`, unknown ones) stays as
//! it was. Output is compact JSON (what GitLab variables and dotenv lines need) or
//! indented (a file users read).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::secret::Secret;

pub const AUTHS: &str = "auths";
pub const CRED_HELPERS: &str = "credHelpers";
pub const CREDS_STORE: &str = "credsStore";

/// The helper name this binary answers to (`docker-credential-ecr-login`).
pub const DEFAULT_HELPER: &str = "ecr-login";

#[derive(Debug, thiserror::Error)]
pub enum DockerConfigError {
    #[error("{what} is not valid JSON ({source}); fix or remove it")]
    Json {
        what: String,
        source: serde_json::Error,
    },
    #[error("{what} is not a Docker config: {problem}; fix or remove it")]
    Shape { what: String, problem: String },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source} (check that the directory exists and is writable)")]
    Write { path: PathBuf, source: io::Error },
}

/// A Docker config document. Only ever valid: `auths` is an object of objects,
/// `credHelpers` an object of strings, `credsStore` a string.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct DockerConfig {
    doc: Map<String, Value>,
}

/// `auth` values are credentials: never print a document by accident.
impl std::fmt::Debug for DockerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerConfig")
            .field("keys", &self.doc.keys().collect::<Vec<_>>())
            .field("auths", &self.auth_hosts())
            .field("credHelpers", &self.cred_helpers())
            .field("credsStore", &self.creds_store())
            .finish()
    }
}

impl DockerConfig {
    pub fn new() -> DockerConfig {
        DockerConfig::default()
    }

    /// Parses a document; `what` names it in errors ("the DOCKER_AUTH_CONFIG of
    /// runner \"x\"", "/root/.docker/config.json"). Empty text is an empty document.
    pub fn parse(text: &str, what: &str) -> Result<DockerConfig, DockerConfigError> {
        if text.trim().is_empty() {
            return Ok(DockerConfig::new());
        }
        let value: Value =
            serde_json::from_str(text).map_err(|source| DockerConfigError::Json {
                what: what.to_string(),
                source,
            })?;
        DockerConfig::from_value(value, what)
    }

    pub fn from_value(value: Value, what: &str) -> Result<DockerConfig, DockerConfigError> {
        let shape = |problem: String| DockerConfigError::Shape {
            what: what.to_string(),
            problem,
        };
        let Value::Object(doc) = value else {
            return Err(shape("the document must be a JSON object".into()));
        };
        match doc.get(AUTHS) {
            None | Some(Value::Null) => {}
            Some(Value::Object(auths)) => {
                if let Some((host, _)) = auths.iter().find(|(_, v)| !v.is_object()) {
                    return Err(shape(format!(
                        "`auths.{host}` must be an object like {{\"auth\":\"...\"}}"
                    )));
                }
            }
            Some(_) => return Err(shape("`auths` must be an object".into())),
        }
        match doc.get(CRED_HELPERS) {
            None | Some(Value::Null) => {}
            Some(Value::Object(helpers)) => {
                if let Some((host, _)) = helpers.iter().find(|(_, v)| !v.is_string()) {
                    return Err(shape(format!(
                        "`credHelpers.{host}` must be a helper name (a string)"
                    )));
                }
            }
            Some(_) => return Err(shape("`credHelpers` must be an object".into())),
        }
        match doc.get(CREDS_STORE) {
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(_) => {
                return Err(shape(
                    "`credsStore` must be a helper name (a string)".into(),
                ))
            }
        }
        Ok(DockerConfig { doc })
    }

    /// Reads a file; a missing file is `None`.
    pub fn read(path: &Path) -> Result<Option<DockerConfig>, DockerConfigError> {
        match fs::read_to_string(path) {
            Ok(text) => DockerConfig::parse(&text, &path.display().to_string()).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(DockerConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.doc.is_empty()
    }

    /// Hosts with an `auths` entry, in document order.
    pub fn auth_hosts(&self) -> Vec<&str> {
        match self.doc.get(AUTHS) {
            Some(Value::Object(a)) => a.keys().map(String::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// The `auth` field of a host's `auths` entry.
    pub fn auth(&self, host: &str) -> Option<&str> {
        self.doc.get(AUTHS)?.get(host)?.get("auth")?.as_str()
    }

    /// `credHelpers`, host → helper name, in document order.
    pub fn cred_helpers(&self) -> Vec<(&str, &str)> {
        match self.doc.get(CRED_HELPERS) {
            Some(Value::Object(h)) => h
                .iter()
                .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
                .collect(),
            _ => Vec::new(),
        }
    }

    pub fn creds_store(&self) -> Option<&str> {
        self.doc.get(CREDS_STORE)?.as_str()
    }

    /// Sets a host's `auths` entry to `{"auth": <auth>}` (replacing any other
    /// fields of that entry: a stale `username`/`password` would fight it).
    pub fn set_auth(&mut self, host: &str, auth: &Secret<String>) {
        self.set_auth_value(host, auth.expose());
    }

    /// Like [`set_auth`](Self::set_auth) for a value that is not a secret, such as
    /// a `$VARIABLE` reference GitLab expands.
    pub fn set_auth_value(&mut self, host: &str, auth: &str) {
        let mut entry = Map::new();
        entry.insert("auth".into(), Value::String(auth.to_string()));
        self.section(AUTHS)
            .insert(host.to_string(), Value::Object(entry));
    }

    pub fn set_cred_helper(&mut self, host: &str, helper: &str) {
        self.section(CRED_HELPERS)
            .insert(host.to_string(), Value::String(helper.to_string()));
    }

    pub fn set_creds_store(&mut self, helper: &str) {
        self.doc
            .insert(CREDS_STORE.to_string(), Value::String(helper.to_string()));
    }

    /// Copies `other`'s `auths`, `credHelpers` and `credsStore` into this one
    /// (other's entries win) and adds its other keys this one lacks.
    pub fn merge_from(&mut self, other: &DockerConfig) {
        for (key, value) in &other.doc {
            match (key.as_str(), value) {
                (AUTHS | CRED_HELPERS, Value::Object(entries)) => {
                    let section = self.section(key);
                    for (host, v) in entries {
                        section.insert(host.clone(), v.clone());
                    }
                }
                (CREDS_STORE, _) => {
                    self.doc.insert(key.clone(), value.clone());
                }
                _ => {
                    if !self.doc.contains_key(key) {
                        self.doc.insert(key.clone(), value.clone());
                    }
                }
            }
        }
    }

    /// The `auths`/`credHelpers` object, created (at the end) if absent or null.
    fn section(&mut self, key: &str) -> &mut Map<String, Value> {
        let slot = self
            .doc
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        slot.as_object_mut().expect("made an object above")
    }

    /// One line, no white space: for DOCKER_AUTH_CONFIG values and dotenv lines.
    pub fn to_compact(&self) -> String {
        serde_json::to_string(&self.doc).expect("a JSON map always serialises")
    }

    /// Indented with a tab like `docker login` writes it, with a final newline.
    pub fn to_pretty(&self) -> String {
        let mut out = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        serde::Serialize::serialize(&self.doc, &mut ser).expect("a JSON map always serialises");
        let mut text = String::from_utf8(out).expect("serde_json writes UTF-8");
        text.push('\n');
        text
    }

    pub fn as_value(&self) -> Value {
        Value::Object(self.doc.clone())
    }
}

/// How Docker is told to ask our helper.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wiring {
    /// `credHelpers`: only these registry hosts go to the helper.
    CredHelpers { hosts: Vec<String>, helper: String },
    /// `credsStore`: every registry goes to the helper (non-ECR ones get "not found").
    CredsStore { helper: String },
}

impl Wiring {
    pub fn helper(&self) -> &str {
        match self {
            Wiring::CredHelpers { helper, .. } | Wiring::CredsStore { helper } => helper,
        }
    }

    /// Adds this wiring to a Docker config, keeping everything else in it.
    pub fn apply(&self, doc: &mut DockerConfig) {
        match self {
            Wiring::CredHelpers { hosts, helper } => {
                for h in hosts {
                    doc.set_cred_helper(h, helper);
                }
            }
            Wiring::CredsStore { helper } => doc.set_creds_store(helper),
        }
    }

    /// Whether a Docker config already sends everything to the helper.
    pub fn is_applied(&self, doc: &DockerConfig) -> bool {
        match self {
            Wiring::CredHelpers { hosts, helper } => hosts
                .iter()
                .all(|h| doc.cred_helpers().contains(&(h.as_str(), helper.as_str()))),
            Wiring::CredsStore { helper } => doc.creds_store() == Some(helper),
        }
    }
}

/// Writes `contents` to `path` atomically with `mode` ([`crate::files::write_atomic`]),
/// naming the path in the error.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), DockerConfigError> {
    crate::files::write_atomic(path, contents, mode).map_err(|source| DockerConfigError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keeps_every_other_key_in_order() {
        let text = r#"{"proxies":{"default":{"httpProxy":"http://p:3128"}},"auths":{"docker.io":{"auth":"eA==","email":"a@b"}},"credHelpers":{"gcr.io":"gcloud"},"credsStore":"desktop","x-unknown":[1,2]}"#;
        let mut c = DockerConfig::parse(text, "test").unwrap();
        c.set_cred_helper(
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            DEFAULT_HELPER,
        );
        c.set_auth("1.dkr.ecr", &Secret::new("QVdTOnB3".into()));
        assert_eq!(
            c.to_compact(),
            r#"{"proxies":{"default":{"httpProxy":"http://p:3128"}},"auths":{"docker.io":{"auth":"eA==","email":"a@b"},"1.dkr.ecr":{"auth":"QVdTOnB3"}},"credHelpers":{"gcr.io":"gcloud","123456789012.dkr.ecr.eu-west-1.amazonaws.com":"ecr-login"},"credsStore":"desktop","x-unknown":[1,2]}"#
        );
        assert_eq!(c.creds_store(), Some("desktop"));
        assert_eq!(c.auth("1.dkr.ecr"), Some("QVdTOnB3"));
        // round trip through both forms
        assert_eq!(DockerConfig::parse(&c.to_pretty(), "t").unwrap(), c);
        assert!(c.to_pretty().starts_with("{\n\t\"proxies\""));
        assert!(!format!("{c:?}").contains("QVdTOnB3"));
    }

    #[test]
    fn creates_sections_and_replaces_entries() {
        let mut c = DockerConfig::parse("  \n", "empty").unwrap();
        assert!(c.is_empty());
        c.set_auth_value("h", "$ECR_AUTH_TOKEN_EU_WEST_1");
        c.set_auth_value("h", "$X");
        c.set_creds_store("ecr-login");
        assert_eq!(
            c.to_compact(),
            r#"{"auths":{"h":{"auth":"$X"}},"credsStore":"ecr-login"}"#
        );
        let null = DockerConfig::parse(r#"{"auths":null}"#, "t").unwrap();
        let mut n = null.clone();
        n.set_cred_helper("a", "b");
        n.set_auth_value("c", "d");
        assert_eq!(
            n.to_compact(),
            r#"{"auths":{"c":{"auth":"d"}},"credHelpers":{"a":"b"}}"#
        );
    }

    #[test]
    fn merge_keeps_both_sides() {
        let mut ours = DockerConfig::parse(r#"{"auths":{"a":{"auth":"new"}}}"#, "t").unwrap();
        let theirs = DockerConfig::parse(
            r#"{"auths":{"a":{"auth":"old"},"b":{"auth":"keep"}},"credHelpers":{"c":"x"},"credsStore":"s","HttpHeaders":{"U":"v"}}"#,
            "t",
        )
        .unwrap();
        let mut base = theirs.clone();
        base.merge_from(&ours);
        assert_eq!(
            base.to_compact(),
            r#"{"auths":{"a":{"auth":"new"},"b":{"auth":"keep"}},"credHelpers":{"c":"x"},"credsStore":"s","HttpHeaders":{"U":"v"}}"#
        );
        ours.merge_from(&theirs);
        assert_eq!(ours.auth("a"), Some("old"));
        assert_eq!(ours.cred_helpers(), vec![("c", "x")]);
    }

    #[test]
    fn rejects_what_docker_would_misread() {
        for (text, needle) in [
            ("[1]", "must be a JSON object"),
            (r#"{"auths":[]}"#, "`auths` must be an object"),
            (r#"{"auths":{"h":"x"}}"#, "`auths.h`"),
            (r#"{"credHelpers":{"h":1}}"#, "`credHelpers.h`"),
            (r#"{"credHelpers":"x"}"#, "`credHelpers` must be an object"),
            (r#"{"credsStore":true}"#, "`credsStore`"),
            ("{\"auths\":", "not valid JSON"),
        ] {
            let e = DockerConfig::parse(text, "the DOCKER_AUTH_CONFIG")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(needle) && e.contains("the DOCKER_AUTH_CONFIG"),
                "{text}: {e}"
            );
            assert!(e.contains("fix or remove it"), "{e}");
        }
    }

    #[test]
    fn writes_atomically_with_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config.json");
        write_atomic(&path, b"{}\n", 0o600).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        write_atomic(&path, b"{\"a\":1}\n", 0o644).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "{\"a\":1}\n");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
        assert!(DockerConfig::read(&tmp.path().join("missing"))
            .unwrap()
            .is_none());
        let e = write_atomic(&tmp.path().join("no/such/dir/f"), b"", 0o600).unwrap_err();
        assert!(e.to_string().contains("no/such/dir/f"), "{e}");
    }
}
