//! File primitives: the one way ecr-auth replaces a file.
//!
//! A write goes to a new file beside the target, created with `O_CREAT|O_EXCL`
//! under an unpredictable name (the `tempfile` crate), its mode and owner set on
//! the open descriptor (`fchmod`/`fchown`) before a byte is written, synced, then
//! renamed over the target. A reader sees the old file or the new one, whole; a
//! secret is never readable by others for an instant; nothing is done by path to a
//! name that someone else could have swapped in between.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Who owns the new file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The process's user (a new file's default).
    Me,
    /// The owner and group of the file being replaced, if there is one (a root
    /// edit of a user's file leaves it that user's).
    KeepExisting,
}

/// Replaces `path` with `contents`, mode `mode`, atomically.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    replace(path, mode, Owner::Me, |f| f.write_all(contents))
}

/// Replaces `path` with what `fill` writes into the new file, atomically.
pub fn replace(
    path: &Path,
    mode: u32,
    owner: Owner,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".ecr-auth-tmp")
        .permissions(fs::Permissions::from_mode(mode & 0o7777))
        .tempfile_in(dir)?;
    let file = tmp.as_file_mut();
    // The umask may have narrowed the mode at creation: set it on the descriptor.
    file.set_permissions(fs::Permissions::from_mode(mode & 0o7777))?;
    if owner == Owner::KeepExisting {
        if let Ok(meta) = fs::symlink_metadata(path) {
            if meta.file_type().is_file() {
                std::os::unix::fs::fchown(&*file, Some(meta.uid()), Some(meta.gid()))?;
            }
        }
    }
    fill(file)?;
    file.flush()?;
    file.sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_with_the_mode_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        fs::write(&p, "old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&p, b"new", 0o600).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "new");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("config.json")]);
    }

    #[test]
    fn a_failed_fill_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, "old").unwrap();
        let e = replace(&p, 0o600, Owner::Me, |f| {
            f.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "disk full");
        assert_eq!(fs::read_to_string(&p).unwrap(), "old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_symlink_at_the_target_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "root only").unwrap();
        let p = dir.path().join("link");
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        write_atomic(&p, b"new", 0o600).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "root only");
        assert!(fs::symlink_metadata(&p).unwrap().file_type().is_file());
    }
}
