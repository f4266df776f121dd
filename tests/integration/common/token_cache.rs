//! ecr-auth's on-disk token cache (`ECR_AUTH_CACHE_DIR`, versioned JSON, `src/tokens/cache.rs`)
//! as tests see it: list the entries, and move an entry through its life without sleeping.
//!
//! A test fetches a real token (a cold `get` through the lab's token endpoint), then
//! [`age_entry`] rewrites that entry's `issued_at`/`expires_at` so that *now* is past its
//! half-life (ecr-auth refreshes then) or past its expiry. The password, key and hosts stay
//! as written, so the next `get` finds the entry under the same cache key.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The cache format these helpers understand; another version fails loudly here rather
/// than silently testing nothing.
const FORMAT_VERSION: u64 = 1;
const KIND: &str = "ecr-auth-token";

/// Where in its life an entry should be, relative to now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenAge {
    /// Issued 7 h ago, expires in 5 h: past half-life (6 h), still valid.
    PastHalfLife,
    /// Issued 13 h ago, expired an hour ago.
    Expired,
}

/// The token entries (`*.json`) in a cache dir, sorted; none if the dir is absent.
pub fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.expect("read cache dir entry").path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The one entry of a cache dir (panics unless there is exactly one).
pub fn only_entry(dir: &Path) -> PathBuf {
    let files = entries(dir);
    assert_eq!(
        files.len(),
        1,
        "one cache entry expected in {}: {files:?}",
        dir.display()
    );
    files.into_iter().next().unwrap()
}

/// An entry as JSON, checked to be of the format these helpers know.
pub fn read_entry(path: &Path) -> serde_json::Value {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("read cache entry {}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("cache entry {} is not JSON: {e}", path.display()));
    assert_eq!(
        v["version"],
        FORMAT_VERSION,
        "cache format changed: {}",
        path.display()
    );
    assert_eq!(v["kind"], KIND, "not a token entry: {}", path.display());
    v
}

/// Rewrites the entry's `issued_at`/`expires_at` (unix seconds) so that now is at `age`;
/// returns the new `(issued_at, expires_at)`.
pub fn age_entry(path: &Path, age: TokenAge) -> (i64, i64) {
    let now = super::now_unix();
    let hour = 3600;
    let (issued_at, expires_at) = match age {
        TokenAge::PastHalfLife => (now - 7 * hour, now + 5 * hour),
        TokenAge::Expired => (now - 13 * hour, now - hour),
    };
    let mut v = read_entry(path);
    v["issued_at"] = issued_at.into();
    v["expires_at"] = expires_at.into();
    // As ecr-auth itself writes it: a 0600 file in the same dir, renamed over the entry,
    // so readers never see half a file and the cache's ownership checks still pass.
    let tmp = path.with_extension("json.rewrite");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .unwrap_or_else(|e| panic!("create {}: {e}", tmp.display()));
    f.write_all(v.to_string().as_bytes())
        .and_then(|()| f.sync_all())
        .expect("write rewritten cache entry");
    std::fs::rename(&tmp, path).expect("replace cache entry");
    (issued_at, expires_at)
}
