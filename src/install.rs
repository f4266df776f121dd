//! `ecr-auth install`: put the binary and its helper names where runners and
//! job containers find them.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The names the binary answers to as a Docker credential helper.
pub(crate) const HELPER_NAMES: &[&str] =
    &["docker-credential-ecr-login", "docker-credential-ecr-auth"];

#[derive(Debug, thiserror::Error)]
pub(crate) enum InstallError {
    #[error("cannot find this program's own file to copy: {0}")]
    SelfPath(io::Error),
    #[error("cannot create {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error(
        "cannot write {path}: {source} (run as a user who may write there, or pick another --dir)"
    )]
    Write { path: PathBuf, source: io::Error },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Independent copies: safe to bind-mount one file into a container.
    Copy,
    /// Helper names as symlinks to `ecr-auth` in the same directory.
    Symlink,
}

/// Installs `source` as `DIR/ecr-auth` plus the helper names. Each file is
/// written beside its target and renamed over it, so a runner calling the old
/// helper mid-install never sees half a binary. Returns the paths written.
pub(crate) fn install(source: &Path, dir: &Path, mode: Mode) -> Result<Vec<PathBuf>, InstallError> {
    fs::create_dir_all(dir).map_err(|source| InstallError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let main = dir.join("ecr-auth");
    let mut written = Vec::new();
    let same_file = fs::canonicalize(source).ok() == fs::canonicalize(&main).ok();
    if !same_file {
        copy_atomic(source, &main)?;
    }
    written.push(main);
    for name in HELPER_NAMES {
        let target = dir.join(name);
        match mode {
            Mode::Copy => copy_atomic(source, &target)?,
            Mode::Symlink => symlink_atomic(Path::new("ecr-auth"), &target)?,
        }
        written.push(target);
    }
    Ok(written)
}

fn write_err(path: &Path) -> impl FnOnce(io::Error) -> InstallError + '_ {
    move |source| InstallError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// A copy of `source`, mode 0755, through [`crate::files::replace`]: a new file
/// under an unpredictable name (`O_EXCL`, so a planted name or symlink is never
/// followed), renamed over `target`.
fn copy_atomic(source: &Path, target: &Path) -> Result<(), InstallError> {
    let mut from = fs::File::open(source).map_err(write_err(target))?;
    crate::files::replace(target, 0o755, crate::files::Owner::Me, |f| {
        io::copy(&mut from, f).map(drop)
    })
    .map_err(write_err(target))
}

/// A symlink to `link_to` created under an unpredictable name beside `target`
/// (retried if taken, never followed), then renamed over it.
fn symlink_atomic(link_to: &Path, target: &Path) -> Result<(), InstallError> {
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    tempfile::Builder::new()
        // Named like crate::files' temporary files (pid, then random), so its
        // sweep of dead writers' leftovers covers these too.
        .prefix(&format!(".{name}.{}.", std::process::id()))
        .suffix(".ecr-auth-tmp")
        .make_in(dir, |tmp| std::os::unix::fs::symlink(link_to, tmp))
        .and_then(|tmp| tmp.persist(target).map(drop).map_err(|e| e.error))
        .map_err(write_err(target))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn copies_and_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src-bin");
        fs::write(&src, b"#!binary").unwrap();
        let dir = tmp.path().join("bin");
        let paths = install(&src, &dir, Mode::Copy).unwrap();
        assert_eq!(paths.len(), 3);
        for p in &paths {
            let meta = fs::symlink_metadata(p).unwrap();
            assert!(meta.file_type().is_file(), "{p:?}");
            assert_eq!(meta.permissions().mode() & 0o777, 0o755);
            assert_eq!(fs::read(p).unwrap(), b"#!binary");
        }
        // again, as symlinks over the copies
        install(&src, &dir, Mode::Symlink).unwrap();
        let link = dir.join("docker-credential-ecr-login");
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("ecr-auth"));
        assert_eq!(fs::read(&link).unwrap(), b"#!binary");
        // no temporary files left
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 3);
    }

    #[test]
    fn a_planted_name_is_never_followed() {
        // The old temporary name was `.<name>.ecr-auth-tmp-<pid>`: predictable,
        // and a symlink planted there was followed (a root-only file became the binary).
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src-bin");
        fs::write(&src, b"#!binary").unwrap();
        let victim = tmp.path().join("victim");
        fs::write(&victim, b"root only").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
        let dir = tmp.path().join("bin");
        fs::create_dir(&dir).unwrap();
        for name in [
            "ecr-auth",
            "docker-credential-ecr-login",
            "docker-credential-ecr-auth",
        ] {
            let planted = dir.join(format!(".{name}.ecr-auth-tmp-{}", std::process::id()));
            std::os::unix::fs::symlink(&victim, planted).unwrap();
        }
        install(&src, &dir, Mode::Copy).unwrap();
        install(&src, &dir, Mode::Symlink).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"root only");
        assert_eq!(
            fs::metadata(&victim).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // What was installed is right, and only the planted links are left beside it.
        assert_eq!(fs::read(dir.join("ecr-auth")).unwrap(), b"#!binary");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 6);
    }
}
