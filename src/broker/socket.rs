//! The broker's listening socket, created so that only its owner and one group
//! can talk to it:
//!
//! - the directory is created (0755) if missing, and refused if it is
//!   world-writable or another user's (anyone could swap the socket there);
//! - an existing path is refused if it is a symlink, not a socket, another
//!   user's, or a socket a live broker listens on; a stale socket of ours is
//!   replaced;
//! - the socket is bound under umask 0177 (never briefly open to others), then
//!   given the group and mode 0660.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// The socket's mode: owner and group read-write, nobody else.
pub const SOCKET_MODE: u32 = 0o660;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("cannot use {path} for the broker socket: it is a symlink; remove it or choose another --socket (a symlink could point the socket anywhere)")]
    Symlink { path: PathBuf },
    #[error("cannot use {path} for the broker socket: it exists and is not a socket; remove it or choose another --socket")]
    NotSocket { path: PathBuf },
    #[error("cannot use {path} for the broker socket: it belongs to uid {uid}, not to this user ({me}); remove it or choose another --socket")]
    Foreign { path: PathBuf, uid: u32, me: u32 },
    #[error("cannot use {path} for the broker socket: another broker is listening on it; stop that one first")]
    InUse { path: PathBuf },
    #[error("cannot put the broker socket in {dir}: the directory is writable by everyone (mode {mode:o}), so anyone could replace the socket; use a directory like /run/ecr-auth")]
    WorldWritable { dir: PathBuf, mode: u32 },
    #[error("cannot put the broker socket in {dir}: the directory belongs to uid {uid}, neither this user ({me}) nor root; use a directory of this user's")]
    ForeignDir { dir: PathBuf, uid: u32, me: u32 },
    #[error("unknown group {0:?}: give --group an existing group name or number")]
    NoGroup(String),
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SocketError + 'a {
    move |source| SocketError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// A group name or number to a gid.
pub fn group_id(group: &str) -> Result<u32, SocketError> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let name = std::ffi::CString::new(group).map_err(|_| SocketError::NoGroup(group.into()))?;
    crate::nss::builtin_modules_only();
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives the result,
    // which is only read (gr_gid) before `buf` is dropped.
    let rc = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        )
    };
    if rc != 0 || out.is_null() {
        return Err(SocketError::NoGroup(group.into()));
    }
    Ok(grp.gr_gid)
}

/// Creates the listening socket at `path` following the rules above.
pub fn bind(path: &Path, gid: Option<u32>) -> Result<UnixListener, SocketError> {
    let me = crate::files::euid();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(io_err("create the directory", &dir))?;
    }
    let meta = fs::metadata(&dir).map_err(io_err("inspect the directory", &dir))?;
    if meta.mode() & 0o002 != 0 {
        return Err(SocketError::WorldWritable {
            dir,
            mode: meta.mode() & 0o7777,
        });
    }
    if meta.uid() != me && meta.uid() != 0 {
        return Err(SocketError::ForeignDir {
            dir,
            uid: meta.uid(),
            me,
        });
    }
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(SocketError::Symlink { path: path.into() })
        }
        Ok(m) if !m.file_type().is_socket() => {
            return Err(SocketError::NotSocket { path: path.into() })
        }
        Ok(m) if m.uid() != me => {
            return Err(SocketError::Foreign {
                path: path.into(),
                uid: m.uid(),
                me,
            })
        }
        Ok(_) => {
            if UnixStream::connect(path).is_ok() {
                return Err(SocketError::InUse { path: path.into() });
            }
            fs::remove_file(path).map_err(io_err("remove the stale socket", path))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("inspect", path)(e)),
    }
    // SAFETY: umask has no preconditions; the old mask is put back right after.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    unsafe { libc::umask(old) };
    let listener = bound.map_err(io_err("listen on", path))?;
    if let Some(gid) = gid {
        std::os::unix::fs::lchown(path, None, Some(gid))
            .map_err(io_err("give the group to", path))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(io_err("set the mode of", path))?;
    Ok(listener)
}

/// The socket file's identity, to remove at shutdown only what we created.
pub fn identity(path: &Path) -> Option<(u64, u64)> {
    fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Removes the socket if it is still the one we created.
pub fn remove(path: &Path, ours: Option<(u64, u64)>) {
    if ours.is_some() && identity(path) == ours {
        if let Err(e) = fs::remove_file(path) {
            tracing::warn!("cannot remove the broker socket {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_rules() {
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let path = tmp.path().join("run/broker.sock");
        let l = bind(&path, None).unwrap();
        let m = fs::symlink_metadata(&path).unwrap();
        assert!(m.file_type().is_socket());
        assert_eq!(m.mode() & 0o777, 0o660);
        // a live broker is not replaced
        let e = bind(&path, None).unwrap_err().to_string();
        assert!(e.contains("another broker is listening"), "{e}");
        drop(l);
        // a stale socket of ours is
        bind(&path, None).unwrap();

        let link = tmp.path().join("run/link.sock");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let e = bind(&link, None).unwrap_err().to_string();
        assert!(e.contains("is a symlink"), "{e}");

        let file = tmp.path().join("run/file");
        fs::write(&file, "x").unwrap();
        let e = bind(&file, None).unwrap_err().to_string();
        assert!(e.contains("not a socket"), "{e}");
        assert!(file.exists(), "never removed");

        let open = tmp.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let e = bind(&open.join("b.sock"), None).unwrap_err().to_string();
        assert!(e.contains("writable by everyone"), "{e}");
    }

    #[test]
    fn groups_by_name_or_number() {
        assert_eq!(group_id("0").unwrap(), 0);
        assert_eq!(group_id("root").unwrap(), 0);
        let e = group_id("no-such-group-ecr-auth").unwrap_err().to_string();
        assert!(e.contains("unknown group"), "{e}");
    }
}
