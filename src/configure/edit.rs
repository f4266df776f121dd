//! Changing a user's file safely, shared by every `configure` command: show
//! the change as a unified diff, keep a backup, write atomically, keep the
//! file's mode and owner, and do nothing at all when nothing changes.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::dockercfg::{write_atomic, DockerConfig, DockerConfigError, Wiring};

/// A planned change to one file.
#[derive(Clone, Debug)]
pub struct Change {
    pub path: PathBuf,
    /// The file's text now; `None` if it does not exist yet.
    pub before: Option<String>,
    pub after: String,
    /// Mode for a new file (an existing file keeps its own unless `force_mode`).
    pub new_mode: u32,
    /// Set `new_mode` on an existing file too (a file that may hold credentials).
    pub force_mode: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("cannot back up {path} to {backup}: {source}; nothing was changed")]
    Backup {
        path: PathBuf,
        backup: PathBuf,
        source: io::Error,
    },
    #[error("{0}; nothing was changed")]
    Write(#[from] DockerConfigError),
    #[error("cannot create the directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
}

impl Change {
    pub fn is_noop(&self) -> bool {
        self.before.as_deref() == Some(self.after.as_str())
    }

    /// `diff -u` of the change (empty when nothing changes).
    pub fn diff(&self) -> String {
        if self.is_noop() {
            return String::new();
        }
        let name = self.path.display().to_string();
        let old_name = if self.before.is_some() {
            name.clone()
        } else {
            "/dev/null".into()
        };
        unified_diff(
            self.before.as_deref().unwrap_or(""),
            &self.after,
            &old_name,
            &name,
        )
    }

    /// Writes the change: backs up the existing file first (returning the
    /// backup's path), then replaces it atomically with the same mode and owner.
    pub fn apply(&self, now: i64) -> Result<Option<PathBuf>, EditError> {
        if self.is_noop() {
            return Ok(None);
        }
        let meta = fs::metadata(&self.path).ok();
        let backup = match (&self.before, &meta) {
            (Some(before), Some(meta)) => {
                let backup = backup_path(&self.path, now);
                let mode = meta.permissions().mode() & 0o7777;
                write_atomic(&backup, before.as_bytes(), mode).map_err(|e| EditError::Backup {
                    path: self.path.clone(),
                    backup: backup.clone(),
                    source: match e {
                        DockerConfigError::Write { source, .. } => source,
                        other => io::Error::other(other.to_string()),
                    },
                })?;
                Some(backup)
            }
            _ => {
                if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    fs::create_dir_all(dir).map_err(|source| EditError::CreateDir {
                        path: dir.to_path_buf(),
                        source,
                    })?;
                }
                None
            }
        };
        let mode = match &meta {
            Some(m) if !self.force_mode => m.permissions().mode() & 0o7777,
            _ => self.new_mode,
        };
        write_atomic(&self.path, self.after.as_bytes(), mode)?;
        if let Some(meta) = &meta {
            // Keep the owner (root editing a gitlab-runner user's file); only
            // root may give a file away, so a failure here changes nothing.
            let _ = std::os::unix::fs::chown(&self.path, Some(meta.uid()), Some(meta.gid()));
        }
        Ok(backup)
    }
}

/// `config.toml.bak-20250101T120000Z`, with `-2`, `-3`… if taken.
pub fn backup_path(path: &Path, now: i64) -> PathBuf {
    let stamp = crate::tokens::format_time(now).replace(['-', ':'], "");
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let first = path.with_file_name(format!("{name}.bak-{stamp}"));
    if !first.exists() {
        return first;
    }
    (2..)
        .map(|n| path.with_file_name(format!("{name}.bak-{stamp}-{n}")))
        .find(|p| !p.exists())
        .expect("some suffix is free")
}

/// Reads a file as text; `None` if it does not exist.
pub fn read_optional(path: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Plans wiring a Docker `config.json` or containers `auth.json`: the file's
/// other keys stay; a missing file is created with `new_mode`.
/// A written file gets `mode`, new or not (a file already wired is left alone).
pub fn plan_docker_config(
    path: &Path,
    wiring: &Wiring,
    mode: u32,
) -> Result<Change, DockerConfigError> {
    let before = read_optional(path).map_err(|source| DockerConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut doc =
        DockerConfig::parse(before.as_deref().unwrap_or(""), &path.display().to_string())?;
    let after = if before.is_some() && wiring.is_applied(&doc) {
        before.clone().unwrap_or_default()
    } else {
        wiring.apply(&mut doc);
        doc.to_pretty()
    };
    Ok(Change {
        path: path.to_path_buf(),
        before,
        after,
        new_mode: mode,
        force_mode: true,
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Same,
    Del,
    Add,
}

/// A unified diff (`diff -u`, three lines of context) of two texts.
pub fn unified_diff(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    let a: Vec<&str> = old.split_inclusive('\n').collect();
    let b: Vec<&str> = new.split_inclusive('\n').collect();
    let ops = line_ops(&a, &b);
    if ops.iter().all(|(op, _, _)| *op == Op::Same) {
        return String::new();
    }
    const CONTEXT: usize = 3;
    let mut out = format!("--- {old_name}\n+++ {new_name}\n");
    // Group changes closer than 2*CONTEXT lines into one hunk.
    let changed: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].0 != Op::Same).collect();
    let mut start = 0;
    while start < changed.len() {
        let mut end = start;
        while end + 1 < changed.len() && changed[end + 1] - changed[end] <= 2 * CONTEXT {
            end += 1;
        }
        let lo = changed[start].saturating_sub(CONTEXT);
        let hi = (changed[end] + CONTEXT + 1).min(ops.len());
        let hunk = &ops[lo..hi];
        let (a0, b0) = (ops[lo].1, ops[lo].2);
        let a_len = hunk.iter().filter(|o| o.0 != Op::Add).count();
        let b_len = hunk.iter().filter(|o| o.0 != Op::Del).count();
        let range = |start: usize, len: usize| match len {
            0 => format!("{start},0"),
            1 => format!("{}", start + 1),
            n => format!("{},{n}", start + 1),
        };
        out.push_str(&format!(
            "@@ -{} +{} @@\n",
            range(a0, a_len),
            range(b0, b_len)
        ));
        for (op, ai, bi) in hunk {
            let (sign, line) = match op {
                Op::Same => (' ', a[*ai]),
                Op::Del => ('-', a[*ai]),
                Op::Add => ('+', b[*bi]),
            };
            out.push(sign);
            out.push_str(line);
            if !line.ends_with('\n') {
                out.push_str("\n\\ No newline at end of file\n");
            }
        }
        start = end + 1;
    }
    out
}

/// The edit script between two line lists (longest common subsequence), each
/// step with its line indexes in `a` and `b`.
fn line_ops(a: &[&str], b: &[&str]) -> Vec<(Op, usize, usize)> {
    // Common prefix and suffix first: config edits touch a few lines.
    let pre = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suf = a[pre..]
        .iter()
        .rev()
        .zip(b[pre..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (am, bm) = (&a[pre..a.len() - suf], &b[pre..b.len() - suf]);
    let (n, m) = (am.len(), bm.len());
    let mut lcs = vec![0u32; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[at(i, j)] = if am[i] == bm[j] {
                lcs[at(i + 1, j + 1)] + 1
            } else {
                lcs[at(i + 1, j)].max(lcs[at(i, j + 1)])
            };
        }
    }
    let mut ops: Vec<(Op, usize, usize)> = (0..pre).map(|i| (Op::Same, i, i)).collect();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && am[i] == bm[j] {
            ops.push((Op::Same, pre + i, pre + j));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[at(i, j + 1)] >= lcs[at(i + 1, j)]) {
            ops.push((Op::Add, pre + i, pre + j));
            j += 1;
        } else {
            ops.push((Op::Del, pre + i, pre + j));
            i += 1;
        }
    }
    for k in 0..suf {
        ops.push((Op::Same, pre + n + k, pre + m + k));
    }
    // Deletions before additions inside each changed run, as diff prints them.
    let mut k = 0;
    while k < ops.len() {
        if ops[k].0 == Op::Same {
            k += 1;
            continue;
        }
        let end = (k..ops.len())
            .find(|&e| ops[e].0 == Op::Same)
            .unwrap_or(ops.len());
        ops[k..end].sort_by_key(|o| (o.0 == Op::Add, o.1, o.2));
        k = end;
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_like_diff_u() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\n";
        let new = "a\nb\nc\nD\ne\nf\ng\nh\ni\nj\nk\nl\n";
        assert_eq!(
            unified_diff(old, new, "x", "y"),
            "--- x\n+++ y\n@@ -1,7 +1,7 @@\n a\n b\n c\n-d\n+D\n e\n f\n g\n@@ -9,3 +9,4 @@\n i\n j\n k\n+l\n"
        );
        assert_eq!(unified_diff(old, old, "x", "y"), "");
        assert_eq!(
            unified_diff("", "a\n", "/dev/null", "y"),
            "--- /dev/null\n+++ y\n@@ -0,0 +1 @@\n+a\n"
        );
        assert_eq!(
            unified_diff("a\nb", "a\nc", "x", "y"),
            "--- x\n+++ y\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+c\n\\ No newline at end of file\n"
        );
    }

    #[test]
    fn apply_backs_up_and_keeps_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config.toml");
        fs::write(&path, "old\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let change = Change {
            path: path.clone(),
            before: Some("old\n".into()),
            after: "new\n".into(),
            new_mode: 0o600,
            force_mode: false,
        };
        let backup = change.apply(1_700_000_000).unwrap().unwrap();
        assert_eq!(
            backup.file_name().unwrap(),
            "config.toml.bak-20231114T221320Z"
        );
        assert_eq!(fs::read_to_string(&backup).unwrap(), "old\n");
        assert_eq!(fs::read_to_string(&path).unwrap(), "new\n");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(
            fs::metadata(&backup).unwrap().permissions().mode() & 0o777,
            0o640
        );
        // same second again: a second backup name
        assert!(backup_path(&path, 1_700_000_000)
            .to_string_lossy()
            .ends_with("Z-2"));
        // a no-op writes nothing
        let noop = Change {
            before: Some("new\n".into()),
            ..change.clone()
        };
        assert!(noop.apply(1).unwrap().is_none());
        // a new file in a new directory
        let fresh = Change {
            path: tmp.path().join("d/e/auth.json"),
            before: None,
            after: "{}\n".into(),
            new_mode: 0o600,
            force_mode: true,
        };
        assert!(fresh.diff().starts_with("--- /dev/null\n"));
        assert!(fresh.apply(1).unwrap().is_none());
        let mode = fs::metadata(tmp.path().join("d/e/auth.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
