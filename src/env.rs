//! The process environment, captured once and passed in.
//!
//! Library code never calls `std::env::var` itself: it reads an [`Env`], so tests
//! can hand it a fake home directory and variables without touching the real ones.

use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Clone, Debug, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    /// The real environment of this process (non-UTF-8 values are ignored).
    pub fn from_process() -> Self {
        Env {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// A variable's value; an empty value counts as unset, as the AWS SDKs do.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// True when the variable is set to anything but empty, `0` or `false`.
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some(v) if v != "0" && !v.eq_ignore_ascii_case("false"))
    }

    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.vars.insert(key.into(), value.into());
    }

    /// The variables that are set; as for [`Env::get`], an empty value counts as
    /// unset (what is handed on, to the AWS SDK say, agrees with what we read: the
    /// SDK takes an empty `AWS_ENDPOINT_URL` as a value, and panics on it).
    pub fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn home(&self) -> Option<PathBuf> {
        self.get("HOME").map(PathBuf::from)
    }

    /// `$XDG_CONFIG_HOME`, else `~/.config`.
    pub fn config_home(&self) -> Option<PathBuf> {
        self.get("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| self.home().map(|h| h.join(".config")))
    }

    /// `$XDG_CACHE_HOME`, else `~/.cache`.
    pub fn cache_home(&self) -> Option<PathBuf> {
        self.get("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| self.home().map(|h| h.join(".cache")))
    }
}
