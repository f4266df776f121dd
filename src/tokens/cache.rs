//! The on-disk token cache: one small JSON file per token scope and credential
//! identity, in a 0700 directory, each file 0600 and replaced atomically.
//!
//! A `.lock` file beside each entry serialises cold fetches, so N concurrent
//! helpers that all miss make one AWS call between them.
//!
//! Nothing here trusts what another user could have planted (the helper often
//! runs as root): the directory must be ours or root's and not writable by
//! others, entries and locks are opened without following symlinks and must be
//! regular files of ours (see `crate::files`). Otherwise the helper works without
//! the cache and says why, once.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::env::Env;
use crate::files::{self, Untrusted};

/// A cache entry is a few KB; anything larger is not ours.
const ENTRY_LIMIT: u64 = 64 * 1024;

/// Bumped when the format changes incompatibly; other versions are ignored.
pub const FORMAT_VERSION: u32 = 1;
const KIND: &str = "ecr-auth-token";

#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CachedToken {
    pub version: u32,
    pub kind: String,
    /// The cache key this entry was written under; a mismatch means a foreign file.
    pub key: String,
    /// `aws/eu-west-1`, `public/us-east-1`, …: what the token is good for.
    pub scope: String,
    pub username: String,
    pub password: String,
    /// Unix seconds.
    pub issued_at: i64,
    pub expires_at: i64,
    #[serde(default)]
    pub proxy_endpoint: Option<String>,
    /// Registry hosts this token was fetched for (what `list` reports).
    #[serde(default)]
    pub hosts: Vec<String>,
}

impl std::fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedToken")
            .field("scope", &self.scope)
            .field("expires_at", &self.expires_at)
            .field("password", &"REDACTED")
            .finish()
    }
}

impl CachedToken {
    /// Refreshed at half its life, like the Go helper.
    pub fn is_fresh(&self, now: i64) -> bool {
        now < super::refresh_at(self.issued_at, self.expires_at) && now < self.expires_at
    }

    pub fn is_valid(&self, now: i64) -> bool {
        now < self.expires_at
    }
}

#[derive(Clone, Debug)]
pub struct Cache {
    dir: PathBuf,
    /// The directory check, done once per process: `Err` holds why it is not used.
    usable: Arc<OnceLock<Result<(), String>>>,
}

/// Held while a cold fetch runs; dropping it releases the lock.
pub struct CacheLock {
    _file: File,
}

impl Cache {
    /// The cache for this environment, or `None` when `AWS_ECR_DISABLE_CACHE` is set
    /// or no directory can be named.
    pub fn from_env(env: &Env) -> Option<Cache> {
        if env.flag("AWS_ECR_DISABLE_CACHE") {
            return None;
        }
        let dir = env
            .get("ECR_AUTH_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| env.cache_home().map(|d| d.join("ecr-auth")))?;
        Some(Cache::at(dir))
    }

    pub fn at(dir: impl Into<PathBuf>) -> Cache {
        Cache {
            dir: dir.into(),
            usable: Arc::default(),
        }
    }

    /// Whether the directory may be used; says why not, once.
    fn usable(&self) -> Result<(), String> {
        self.usable
            .get_or_init(|| {
                files::trusted_dir(&self.dir, 0o700).map_err(|e| {
                    let reason = format!("not using the token cache: {e}");
                    tracing::warn!("{reason}");
                    reason
                })
            })
            .clone()
    }

    /// False when the directory is not ours to trust (already said, once).
    pub fn is_usable(&self) -> bool {
        self.usable().is_ok()
    }

    /// Reads one file of the cache, or says why it is ignored.
    fn read(&self, path: &Path) -> Option<Vec<u8>> {
        match files::read_trusted(path, ENTRY_LIMIT) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.is_missing() => None,
            Err(e) => {
                tracing::warn!("ignoring a token cache entry: {e}");
                None
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// The entry for `key`, if there is a readable one of our format. Garbage,
    /// another version or a file written under another key reads as "none".
    pub fn load(&self, key: &str) -> Option<CachedToken> {
        self.usable().ok()?;
        let bytes = self.read(&self.entry_path(key))?;
        let entry = parse_entry(&bytes)?;
        if entry.key != key {
            tracing::debug!(key, "ignoring a cache entry written under another key");
            return None;
        }
        Some(entry)
    }

    /// Every readable entry (for `list`); never touches the network.
    pub fn entries(&self) -> Vec<CachedToken> {
        if self.usable().is_err() {
            return Vec::new();
        }
        let Ok(dir) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<CachedToken> = dir
            .filter_map(Result::ok)
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.ends_with(".json") && !name.starts_with('.')
            })
            .filter_map(|e| parse_entry(&self.read(&e.path())?))
            .collect();
        out.sort_by(|a, b| a.scope.cmp(&b.scope).then(a.key.cmp(&b.key)));
        out
    }

    /// Writes the entry atomically (see `crate::files`): readers see the old or
    /// the new entry, whole, and it is never readable by others.
    pub fn store(&self, entry: &CachedToken) -> io::Result<()> {
        self.usable().map_err(io::Error::other)?;
        let json = serde_json::to_vec(entry).map_err(io::Error::other)?;
        files::write_atomic(&self.entry_path(&entry.key), &json, 0o600)
    }

    /// Takes the exclusive lock for `key`, waiting at most `wait` for another
    /// process holding it (then the caller fetches without it: a hung fetch of
    /// another helper must not hang this one).
    pub fn lock(&self, key: &str, wait: Duration) -> io::Result<CacheLock> {
        self.usable().map_err(io::Error::other)?;
        let path = self.dir.join(format!("{key}.lock"));
        let file = files::open_lock_file(&path).map_err(|e: Untrusted| io::Error::other(e))?;
        let until = Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(CacheLock { _file: file }),
                Err(fs::TryLockError::WouldBlock) if Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "another ecr-auth has held {} for more than {}",
                            path.display(),
                            humantime::format_duration(wait)
                        ),
                    ))
                }
                Err(fs::TryLockError::Error(e)) => return Err(e),
            }
        }
    }
}

fn parse_entry(bytes: &[u8]) -> Option<CachedToken> {
    let entry: CachedToken = serde_json::from_slice(bytes).ok()?;
    (entry.version == FORMAT_VERSION && entry.kind == KIND).then_some(entry)
}

pub fn new_entry(
    key: &str,
    scope: &str,
    username: &str,
    password: &str,
    issued_at: i64,
    expires_at: i64,
    proxy_endpoint: Option<String>,
    hosts: Vec<String>,
) -> CachedToken {
    CachedToken {
        version: FORMAT_VERSION,
        kind: KIND.to_string(),
        key: key.to_string(),
        scope: scope.to_string(),
        username: username.to_string(),
        password: password.to_string(),
        issued_at,
        expires_at,
        proxy_endpoint,
        hosts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn entry(key: &str) -> CachedToken {
        new_entry(
            key,
            "aws/eu-west-1",
            "AWS",
            "pw",
            1000,
            1000 + 43200,
            None,
            vec![],
        )
    }

    #[test]
    fn round_trip_with_private_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::at(tmp.path().join("c"));
        cache.store(&entry("k1")).unwrap();
        assert_eq!(cache.load("k1"), Some(entry("k1")));
        assert_eq!(fs::metadata(cache.dir()).unwrap().mode() & 0o777, 0o700);
        let f = fs::metadata(cache.dir().join("k1.json")).unwrap();
        assert_eq!(f.mode() & 0o777, 0o600);
        // no temporary files left behind
        let names: Vec<_> = fs::read_dir(cache.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn garbage_and_foreign_entries_read_as_none_and_are_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::at(tmp.path());
        for junk in [
            &b"{not json"[..],
            b"",
            b"\x00\xff\xfe",
            br#"{"version":99}"#,
        ] {
            fs::write(tmp.path().join("k.json"), junk).unwrap();
            assert_eq!(cache.load("k"), None);
        }
        let mut other = entry("other");
        other.key = "other".into();
        fs::write(
            tmp.path().join("k.json"),
            serde_json::to_vec(&other).unwrap(),
        )
        .unwrap();
        assert_eq!(cache.load("k"), None, "written under another key");
        cache.store(&entry("k")).unwrap();
        assert_eq!(cache.load("k"), Some(entry("k")));
    }

    #[test]
    fn unknown_fields_are_tolerated() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::at(tmp.path());
        let mut v = serde_json::to_value(entry("k")).unwrap();
        v["added_later"] = serde_json::json!(true);
        fs::write(tmp.path().join("k.json"), v.to_string()).unwrap();
        assert!(cache.load("k").is_some());
    }

    #[test]
    fn freshness_is_half_life() {
        let e = entry("k");
        assert!(e.is_fresh(1000));
        assert!(e.is_fresh(1000 + 21599));
        assert!(!e.is_fresh(1000 + 21600));
        assert!(e.is_valid(1000 + 43199));
        assert!(!e.is_valid(1000 + 43200));
    }

    #[test]
    fn debug_hides_the_password() {
        let s = format!("{:?}", entry("k"));
        assert!(!s.contains("\"pw\""), "{s}");
    }

    #[test]
    fn disabled_by_env() {
        let env = Env::from_pairs([("AWS_ECR_DISABLE_CACHE", "1"), ("HOME", "/h")]);
        assert!(Cache::from_env(&env).is_none());
        let env = Env::from_pairs([("HOME", "/h")]);
        assert_eq!(
            Cache::from_env(&env).unwrap().dir(),
            Path::new("/h/.cache/ecr-auth")
        );
        let env = Env::from_pairs([("HOME", "/h"), ("ECR_AUTH_CACHE_DIR", "/c")]);
        assert_eq!(Cache::from_env(&env).unwrap().dir(), Path::new("/c"));
    }
}
