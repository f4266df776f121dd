//! The in-memory layer over the file cache, for daemons (Swarm refresher,
//! variable sync, broker): tokens kept between calls, and single-flight — while
//! one thread fetches a (identity, region) token, others asking for the same one
//! wait for it instead of calling AWS again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::cache::CachedToken;

#[derive(Default)]
pub(crate) struct Memory {
    entries: Mutex<HashMap<String, CachedToken>>,
    flights: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl Memory {
    pub(crate) fn get(&self, key: &str) -> Option<CachedToken> {
        lock(&self.entries).get(key).cloned()
    }

    pub(crate) fn put(&self, entry: &CachedToken) {
        lock(&self.entries).insert(entry.key.clone(), entry.clone());
    }

    /// The flight lock of `key`: hold it (`lock()`) while fetching that token.
    pub(crate) fn flight(&self, key: &str) -> Arc<Mutex<()>> {
        lock(&self.flights)
            .entry(key.to_string())
            .or_default()
            .clone()
    }
}

/// A poisoned lock only means another thread panicked while holding it; the
/// maps are still consistent (every write is one insert).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
