//! Changing a user's file safely, shared by every `configure` command: read it
//! without following a symlink that another user could have planted, show the
//! change as a unified diff (secrets redacted), keep a backup, write atomically
//! through [`crate::files`], keep the file's mode and owner, fail if someone
//! replaced a written file, and do nothing at all when nothing changes.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::dockercfg::{DockerConfig, DockerConfigError, Wiring};
use crate::files::{self, Owner, Replaced, Untrusted};

/// A file as [`read_optional`] found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Existing {
    pub(crate) text: String,
    /// Its mode (`0o7777` bits), which the new file keeps unless told otherwise.
    pub(crate) mode: u32,
}

/// A planned change to one file.
#[derive(Clone, Debug)]
pub(crate) struct Change {
    pub(crate) path: PathBuf,
    /// The file now; `None` if it does not exist yet.
    pub(crate) before: Option<Existing>,
    pub(crate) after: String,
    /// Mode for a new file (an existing file keeps its own unless `force_mode`).
    pub(crate) new_mode: u32,
    /// Set `new_mode` on an existing file too (a file that may hold credentials).
    pub(crate) force_mode: bool,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum EditError {
    #[error("cannot back up {path} to {backup}: {source}; nothing was changed")]
    Backup {
        path: PathBuf,
        backup: PathBuf,
        source: io::Error,
    },
    #[error("cannot write {path}: {source} (check that the directory exists and is writable); nothing was changed")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot create the directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("{0}; nothing was changed")]
    Read(#[source] Untrusted),
    /// A written file (or its backup: then `unchanged` is the file, as it was).
    #[error("{source}{}", unchanged.as_ref().map(|p| format!(" ({} was not changed)", p.display())).unwrap_or_default())]
    Replaced {
        source: Replaced,
        unchanged: Option<PathBuf>,
    },
    #[error(transparent)]
    Docker(#[from] DockerConfigError),
}

impl Change {
    pub(crate) fn is_noop(&self) -> bool {
        self.before.as_ref().map(|b| b.text.as_str()) == Some(self.after.as_str())
    }

    /// `diff -u` of the change (empty when nothing changes).
    pub(crate) fn diff(&self) -> String {
        if self.is_noop() {
            return String::new();
        }
        let name = self.path.display().to_string();
        let old_name = if self.before.is_some() {
            name.clone()
        } else {
            "/dev/null".into()
        };
        crate::diff::unified(
            self.before.as_ref().map_or("", |b| b.text.as_str()),
            &self.after,
            &old_name,
            &name,
        )
    }

    /// Writes the change: backs up the existing file first (returning the
    /// backup's path), then replaces it atomically with the same mode and owner.
    pub(crate) fn apply(&self, now: i64) -> Result<Option<PathBuf>, EditError> {
        if self.is_noop() {
            return Ok(None);
        }
        let backup = match &self.before {
            Some(before) => {
                let backup = backup_path(&self.path, now);
                files::replace(&backup, before.mode, Owner::KeepExisting, |f| {
                    f.write_all(before.text.as_bytes())
                })
                .map_err(|e| match Replaced::take(e) {
                    Ok(source) => EditError::Replaced {
                        source,
                        unchanged: Some(self.path.clone()),
                    },
                    Err(source) => EditError::Backup {
                        path: self.path.clone(),
                        backup: backup.clone(),
                        source,
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
        let mode = match &self.before {
            Some(b) if !self.force_mode => b.mode,
            _ => self.new_mode,
        };
        // The owner of an existing file (root editing a gitlab-runner user's
        // config.toml) is set on the new file's descriptor before the rename.
        files::replace(&self.path, mode, Owner::KeepExisting, |f| {
            f.write_all(self.after.as_bytes())
        })
        .map_err(|e| match Replaced::take(e) {
            Ok(source) => EditError::Replaced {
                source,
                unchanged: None,
            },
            Err(source) => EditError::Write {
                path: self.path.clone(),
                source,
            },
        })?;
        Ok(backup)
    }
}

/// `config.toml.bak-20250101T120000Z`, with `-2`, `-3`… if taken.
pub(crate) fn backup_path(path: &Path, now: i64) -> PathBuf {
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

/// Reads a file to edit, with its mode; `None` if it does not exist. Nothing of
/// it is parsed, shown or backed up unless it is the regular file at `path`, or
/// a symlink that only we or root could have made ([`files::read_to_replace`]).
pub(crate) fn read_optional(path: &Path) -> Result<Option<Existing>, EditError> {
    let found = files::read_to_replace(path).map_err(EditError::Read)?;
    Ok(found.map(|(text, meta)| Existing {
        text,
        mode: meta.permissions().mode() & 0o7777,
    }))
}

/// Plans wiring a Docker `config.json` or containers `auth.json`: the file's
/// other keys stay; a missing file is created with `new_mode`.
/// A written file gets `mode`, new or not (a file already wired is left alone).
pub(crate) fn plan_docker_config(
    path: &Path,
    wiring: &Wiring,
    mode: u32,
) -> Result<Change, EditError> {
    let before = read_optional(path)?;
    let text = before.as_ref().map_or("", |b| b.text.as_str());
    let mut doc = DockerConfig::parse(text, &path.display().to_string())?;
    let after = if before.is_some() && wiring.is_applied(&doc) {
        text.to_string()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_backs_up_and_keeps_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config.toml");
        fs::write(&path, "old\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let change = Change {
            path: path.clone(),
            before: read_optional(&path).unwrap(),
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
            before: read_optional(&path).unwrap(),
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

    #[test]
    fn apply_keeps_the_owner_of_an_existing_file() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config.toml");
        fs::write(&path, "old\n").unwrap();
        // A file of another user (gitlab-runner's, as root edits it); without
        // root, our own file stands in for it.
        let theirs = if running_as_root() {
            65534
        } else {
            fs::metadata(&path).unwrap().uid()
        };
        if running_as_root() {
            std::os::unix::fs::chown(&path, Some(theirs), Some(theirs)).unwrap();
        }
        let change = Change {
            path: path.clone(),
            before: read_optional(&path).unwrap(),
            after: "new\n".into(),
            new_mode: 0o600,
            force_mode: false,
        };
        change.apply(1_700_000_000).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(
            (meta.uid(), fs::read_to_string(&path).unwrap().as_str()),
            (theirs, "new\n")
        );
        // The file and its backup, nothing else.
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 2);
    }

    /// The owner of this process's /proc entry is its user.
    fn running_as_root() -> bool {
        use std::os::unix::fs::MetadataExt;
        fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false)
    }
}
