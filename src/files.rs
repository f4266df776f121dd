//! File primitives: the one way ecr-auth replaces a file.
//!
//! A write goes to a new file beside the target, created with `O_CREAT|O_EXCL`
//! under an unpredictable name (the `tempfile` crate), its mode and owner set on
//! the open descriptor (`fchmod`/`fchown`) before a byte is written, synced, then
//! renamed over the target. A reader sees the old file or the new one, whole; a
//! secret is never readable by others for an instant; nothing is done by path to a
//! name that someone else could have swapped in between.
//!
//! Reads of state that steers a root process (the token cache, its lock files, the
//! log file) go through [`open_trusted`]: `O_NOFOLLOW|O_NONBLOCK`, then `fstat` on
//! the descriptor — a regular file, owned by us or root, not writable by group or
//! others — else it is not used and the caller says why (as ssh's StrictModes).
//! Directories are checked the same way by [`trusted_dir`], which narrows the mode
//! only of a directory that is ours.
//!
//! A file that ecr-auth edits for a user (a runner's config.toml in a directory
//! that the runner's user owns) may sit where another user can swap names. So
//! [`read_to_replace`] reads it through a symlink only in a directory that just
//! we or root can write, and [`replace`], after its rename, checks that the name
//! still holds the file it wrote: a rename is by name, and the owner of the
//! directory may have turned the temporary file into a symlink just before it.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

const TMP_SUFFIX: &str = ".ecr-auth-tmp";

/// Removes temporary files that a writer of `name` — or of a name that starts
/// with it, such as its backup `NAME.bak-STAMP` — killed mid-write left in `dir`
/// (`.NAME….PID.RANDOM.ecr-auth-tmp` of a process that no longer exists). A
/// backup's name changes every second, so its own writes would never sweep
/// them. Readers never read them: they only open real names.
fn sweep_leftovers(dir: &Path, name: &str) {
    let prefix = format!(".{name}.");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let file = e.file_name();
        let Some(rest) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|f| f.strip_suffix(TMP_SUFFIX))
        else {
            continue;
        };
        // `[NAME-SUFFIX.]PID.RANDOM`: the random part has no dot.
        let Some(pid) = rest.rsplit('.').nth(1).and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks that the process exists.
        let gone = pid != std::process::id() as i32
            && unsafe { libc::kill(pid, 0) } == -1
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        let ours = e
            .metadata()
            .is_ok_and(|m| m.uid() == euid() && m.file_type().is_file());
        if gone && ours {
            let _ = fs::remove_file(e.path());
        }
    }
}

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
    sweep_leftovers(dir, &name);
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.{}.", std::process::id()))
        .suffix(TMP_SUFFIX)
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
    let file = tmp.persist(path).map_err(|e| e.error)?;
    check_landed(path, dir, &file)
}

/// `path` no longer names the file [`replace`] wrote: someone who can write its
/// directory replaced it between the temporary file's creation and the check
/// after the rename (with a symlink, the rename moved theirs into place).
#[derive(Debug, thiserror::Error)]
#[error("{path} is not the file ecr-auth just wrote there: it is now {now}, so someone who can write {dir} replaced it during the write ({why}). Check what {path} is now, make {dir} writable only by its owner (chmod go-w) and owned by root or a user you trust, then run the command again")]
pub struct Replaced {
    pub path: String,
    pub dir: String,
    now: &'static str,
    why: String,
}

impl Replaced {
    /// The [`Replaced`] that an error of [`replace`] carries, if it is one.
    pub fn take(e: io::Error) -> Result<Replaced, io::Error> {
        if e.get_ref().is_some_and(|inner| inner.is::<Replaced>()) {
            let inner = e.into_inner().expect("checked above");
            return Ok(*inner.downcast::<Replaced>().expect("checked above"));
        }
        Err(e)
    }
}

/// After the rename: `path` must name `file` (same device and inode, a regular
/// file). In a directory only we or root can write, another name there is a
/// concurrent writer of ours (two helpers storing one cache entry): the last
/// rename wins, as it would a moment later. Anywhere else it is refused.
fn check_landed(path: &Path, dir: &Path, file: &File) -> io::Result<()> {
    let ours = file.metadata()?;
    let now = match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() && (m.dev(), m.ino()) == (ours.dev(), ours.ino()) => {
            return Ok(())
        }
        Ok(m) if m.file_type().is_symlink() => "a symbolic link",
        Ok(m) if m.file_type().is_file() => "another file",
        Ok(_) => "something other than a regular file",
        Err(_) => "gone",
    };
    let Some(why) = others_can_write(dir) else {
        return Ok(());
    };
    Err(io::Error::other(Replaced {
        path: path.display().to_string(),
        dir: dir.display().to_string(),
        now,
        why,
    }))
}

/// Who besides us and root can change the names in `dir` (following a symlink
/// to it, as opening a path in it does): `None` if no one, else why not.
pub fn others_can_write(dir: &Path) -> Option<String> {
    let meta = match fs::metadata(dir) {
        Ok(m) => m,
        Err(e) => return Some(format!("cannot check who can write it: {e}")),
    };
    if meta.uid() != euid() && meta.uid() != 0 {
        return Some(format!("it is owned by uid {}", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Some(format!(
            "it is writable by group or others, mode {:o}",
            meta.mode() & 0o7777
        ));
    }
    None
}

/// Reads the text of a file that is about to be replaced (a user's config.toml
/// or config.json) with its metadata; `None` if there is none. Never blocks on a
/// FIFO, and reads only a regular file. In a directory that another user can
/// write ([`others_can_write`]), the name itself must be that file: a symlink
/// there is refused (it could point at a root-only file that an error or a diff
/// would then quote), and so is a file with other hard links. In a directory only
/// we or root can write, a symlink is the admin's choice and is followed.
pub fn read_to_replace(path: &Path) -> Result<Option<(String, fs::Metadata)>, Untrusted> {
    use std::io::Read;
    let shown = || path.display().to_string();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let open_to_others = others_can_write(dir);
    let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC;
    if open_to_others.is_some() {
        flags |= libc::O_NOFOLLOW;
    }
    let opened = fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path);
    let mut file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) && open_to_others.is_some() => {
            return Err(Untrusted::SymlinkInOpenDir {
                path: shown(),
                dir: dir.display().to_string(),
                why: open_to_others.unwrap_or_default(),
            })
        }
        Err(source) => {
            return Err(Untrusted::Io {
                path: shown(),
                source,
            })
        }
    };
    let io_err = |source| Untrusted::Io {
        path: shown(),
        source,
    };
    let meta = file.metadata().map_err(io_err)?;
    if !meta.file_type().is_file() {
        return Err(Untrusted::Kind {
            path: shown(),
            want: "regular file",
        });
    }
    if let Some(why) = open_to_others {
        if meta.nlink() > 1 {
            return Err(Untrusted::HardLinked {
                path: shown(),
                dir: dir.display().to_string(),
                why,
                links: meta.nlink(),
            });
        }
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io_err)?;
    Ok(Some((text, meta)))
}

/// Why a file or directory is not used.
#[derive(Debug, thiserror::Error)]
pub enum Untrusted {
    #[error("{path} is a symbolic link")]
    Symlink { path: String },
    #[error("{path} is not a {want}")]
    Kind { path: String, want: &'static str },
    #[error("{path} is owned by uid {uid}, not by this user ({me}) or root")]
    Owner { path: String, uid: u32, me: u32 },
    #[error("{path} is writable by group or others (mode {mode:o})")]
    Writable { path: String, mode: u32 },
    #[error("{path} is a symbolic link in {dir}, a directory that another user can write ({why}): it is not read, since it may point at a file that user may not read. Put the file itself there, or make {dir} writable only by its owner and owned by root or a user you trust")]
    SymlinkInOpenDir {
        path: String,
        dir: String,
        why: String,
    },
    #[error("{path} has {links} hard links and is in {dir}, a directory that another user can write ({why}): it is not read, since another name of it may be a file that user may not read. Put a copy of its own there")]
    HardLinked {
        path: String,
        dir: String,
        why: String,
        links: u64,
    },
    #[error("cannot open {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl Untrusted {
    /// True when the file simply isn't there.
    pub fn is_missing(&self) -> bool {
        matches!(self, Untrusted::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn check_owner(path: &Path, meta: &fs::Metadata) -> Result<(), Untrusted> {
    let shown = path.display().to_string();
    let me = euid();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(Untrusted::Owner {
            path: shown,
            uid: meta.uid(),
            me,
        });
    }
    Ok(())
}

/// Opens a state file for reading, refusing what another user could have
/// planted: a symlink, a FIFO or device (which would hang or mislead), a file
/// owned by someone else or writable by group/others.
pub fn open_trusted(path: &Path) -> Result<(File, fs::Metadata), Untrusted> {
    let (file, meta) = open_regular_of_ours(path, fs::OpenOptions::new().read(true))?;
    if meta.mode() & 0o022 != 0 {
        return Err(Untrusted::Writable {
            path: path.display().to_string(),
            mode: meta.mode() & 0o7777,
        });
    }
    Ok((file, meta))
}

/// Opens `path` with `options` plus `O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC` and checks,
/// on the descriptor, that it is a regular file owned by us or root. The one
/// open of state that another user could have planted: [`open_trusted`],
/// [`open_lock_file`] and the log file go through it.
pub fn open_regular_of_ours(
    path: &Path,
    options: &mut fs::OpenOptions,
) -> Result<(File, fs::Metadata), Untrusted> {
    let shown = || path.display().to_string();
    let file = options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| match source.raw_os_error() {
            Some(libc::ELOOP) => Untrusted::Symlink { path: shown() },
            _ => Untrusted::Io {
                path: shown(),
                source,
            },
        })?;
    let meta = file.metadata().map_err(|source| Untrusted::Io {
        path: shown(),
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(Untrusted::Kind {
            path: shown(),
            want: "regular file",
        });
    }
    check_owner(path, &meta)?;
    Ok((file, meta))
}

/// Reads a whole state file through [`open_trusted`], at most `limit` bytes.
pub fn read_trusted(path: &Path, limit: u64) -> Result<Vec<u8>, Untrusted> {
    use std::io::Read;
    let (file, meta) = open_trusted(path)?;
    // Sized from the fstat the open already made: `Take` hides the file's size from
    // `read_to_end`, which would otherwise grow from 32 bytes, one read(2) per doubling
    // (9 for a cached token, on every warm `get`).
    let mut buf = Vec::with_capacity(meta.len().min(limit) as usize + 1);
    file.take(limit)
        .read_to_end(&mut buf)
        .map_err(|source| Untrusted::Io {
            path: path.display().to_string(),
            source,
        })?;
    Ok(buf)
}

/// Makes sure `dir` is a directory that only we (or root) can change: created
/// with `mode` if missing (parents too), refused if it is a symlink, not a
/// directory, another user's, or — when not ours to narrow — writable by group
/// or others. A directory of ours with a wider mode is narrowed to `mode`, on its
/// descriptor.
pub fn trusted_dir(dir: &Path, mode: u32) -> Result<(), Untrusted> {
    let shown = || dir.display().to_string();
    match fs::DirBuilder::new().recursive(true).mode(mode).create(dir) {
        Ok(()) => {}
        Err(source) => {
            // `create` follows a symlink at the last component; report it as such.
            if fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(Untrusted::Symlink { path: shown() });
            }
            return Err(Untrusted::Io {
                path: shown(),
                source,
            });
        }
    }
    let handle = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|source| match source.raw_os_error() {
            Some(libc::ELOOP) => Untrusted::Symlink { path: shown() },
            // O_NOFOLLOW|O_DIRECTORY on a symlink answers ENOTDIR.
            Some(libc::ENOTDIR)
                if fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) =>
            {
                Untrusted::Symlink { path: shown() }
            }
            Some(libc::ENOTDIR) => Untrusted::Kind {
                path: shown(),
                want: "directory",
            },
            _ => Untrusted::Io {
                path: shown(),
                source,
            },
        })?;
    let meta = handle.metadata().map_err(|source| Untrusted::Io {
        path: shown(),
        source,
    })?;
    check_owner(dir, &meta)?;
    if meta.mode() & 0o022 != 0 {
        if meta.uid() != euid() {
            return Err(Untrusted::Writable {
                path: shown(),
                mode: meta.mode() & 0o7777,
            });
        }
        handle
            .set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|source| Untrusted::Io {
                path: shown(),
                source,
            })?;
    }
    Ok(())
}

/// Opens (creating, mode 0600) a lock file for writing without following a
/// symlink, and checks it is a regular file of ours.
pub fn open_lock_file(path: &Path) -> Result<File, Untrusted> {
    let mut options = fs::OpenOptions::new();
    options.create(true).truncate(false).write(true).mode(0o600);
    open_regular_of_ours(path, &mut options).map(|(file, _)| file)
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
    fn leftovers_of_a_dead_writer_are_swept_by_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        // pid 0x7ffffffe does not exist; our own pid's leftovers are in flight.
        let dead = dir
            .path()
            .join(".config.toml.2147483646.Ab3dE.ecr-auth-tmp");
        let live = dir.path().join(format!(
            ".config.toml.{}.Zz9.ecr-auth-tmp",
            std::process::id()
        ));
        let other = dir.path().join(".other.2147483646.x.ecr-auth-tmp");
        // A backup (`configure` keeps one) written by a writer killed mid-way:
        // its name has a timestamp, so no later backup has the same name.
        let dead_backup = dir
            .path()
            .join(".config.toml.bak-20261201T035249Z.2147483646.qpek1g.ecr-auth-tmp");
        for f in [&dead, &live, &other, &dead_backup] {
            fs::write(f, "half").unwrap();
        }
        write_atomic(&p, b"new", 0o600).unwrap();
        assert!(!dead.exists(), "a dead writer's leftover is removed");
        assert!(!dead_backup.exists(), "so is a dead backup writer's");
        assert!(
            live.exists() && other.exists(),
            "in-flight and other files stay"
        );
    }

    #[test]
    fn a_name_that_no_longer_holds_the_written_file_is_refused_where_others_can_write() {
        let dir = tempfile::tempdir().unwrap();
        let written = dir.path().join(".written");
        let file = File::create(&written).unwrap();
        let p = dir.path().join("config.toml");
        std::os::unix::fs::symlink("/etc/shadow", &p).unwrap();
        // Only we can write the directory: another name there is ours too.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        check_landed(&p, dir.path(), &file).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let e = Replaced::take(check_landed(&p, dir.path(), &file).unwrap_err()).unwrap();
        let shown = dir.path().display();
        assert_eq!(
            e.to_string(),
            format!("{shown}/config.toml is not the file ecr-auth just wrote there: it is now a symbolic link, so someone who can write {shown} replaced it during the write (it is writable by group or others, mode 777). Check what {shown}/config.toml is now, make {shown} writable only by its owner (chmod go-w) and owned by root or a user you trust, then run the command again")
        );
        fs::remove_file(&p).unwrap();
        fs::write(&p, "theirs").unwrap();
        let e = check_landed(&p, dir.path(), &file).unwrap_err();
        assert!(e.to_string().contains("it is now another file"), "{e}");
        fs::remove_file(&p).unwrap();
        fs::rename(&written, &p).unwrap();
        check_landed(&p, dir.path(), &file).unwrap();
        // Other io errors are not taken for a replacement.
        assert!(Replaced::take(io::Error::other("disk full")).is_err());
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

#[cfg(test)]
mod trust_tests {
    use super::*;

    #[test]
    fn planted_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::write(&real, "x").unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_trusted(&real, 10).is_ok());

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = read_trusted(&link, 10).unwrap_err();
        assert!(matches!(e, Untrusted::Symlink { .. }), "{e}");

        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_trusted(&fifo, 10).unwrap_err();
        assert!(e.to_string().ends_with("is not a regular file"), "{e}");

        let wide = dir.path().join("wide");
        fs::write(&wide, "x").unwrap();
        fs::set_permissions(&wide, fs::Permissions::from_mode(0o666)).unwrap();
        let e = read_trusted(&wide, 10).unwrap_err();
        assert!(
            e.to_string()
                .contains("writable by group or others (mode 666)"),
            "{e}"
        );

        assert!(read_trusted(&dir.path().join("none"), 10)
            .unwrap_err()
            .is_missing());
    }

    #[test]
    fn a_file_to_replace_is_read_through_a_symlink_only_where_no_one_else_can_write() {
        let top = tempfile::tempdir().unwrap();
        let victim = top.path().join("victim");
        fs::write(&victim, "root only").unwrap();
        let dir = top.path().join("d");
        fs::create_dir(&dir).unwrap();
        let p = dir.join("config.toml");
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let linked = dir.join("linked");
        fs::hard_link(&victim, &linked).unwrap();

        // Only we can write d: the symlink and the hard link are ours.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let (text, meta) = read_to_replace(&p).unwrap().unwrap();
        assert_eq!((text.as_str(), meta.nlink()), ("root only", 2));
        assert!(read_to_replace(&linked).unwrap().is_some());
        assert!(read_to_replace(&dir.join("none")).unwrap().is_none());
        let e = read_to_replace(&fifo).unwrap_err();
        assert!(e.to_string().ends_with("is not a regular file"), "{e}");

        // Others can write d: neither is read, a FIFO never blocks.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let e = read_to_replace(&p).unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "{} is a symbolic link in {}, a directory that another user can write (it is writable by group or others, mode 777)",
                p.display(),
                dir.display()
            )),
            "{e}"
        );
        let e = read_to_replace(&linked).unwrap_err();
        assert!(matches!(e, Untrusted::HardLinked { links: 2, .. }), "{e}");
        let e = read_to_replace(&fifo).unwrap_err();
        assert!(e.to_string().ends_with("is not a regular file"), "{e}");
        fs::write(dir.join("own"), "mine").unwrap();
        assert_eq!(
            read_to_replace(&dir.join("own")).unwrap().unwrap().0,
            "mine"
        );
        assert!(read_to_replace(&dir.join("none")).unwrap().is_none());
    }

    #[test]
    fn directories_of_ours_are_narrowed_symlinks_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/b");
        trusted_dir(&d, 0o700).unwrap();
        assert_eq!(fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).unwrap();
        trusted_dir(&d, 0o700).unwrap();
        assert_eq!(fs::metadata(&d).unwrap().mode() & 0o777, 0o700);

        let target = dir.path().join("target");
        fs::create_dir(&target).unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
        let link = dir.path().join("cache");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = trusted_dir(&link, 0o700).unwrap_err();
        assert!(matches!(e, Untrusted::Symlink { .. }), "{e}");
        assert_eq!(
            fs::metadata(&target).unwrap().mode() & 0o777,
            0o755,
            "target untouched"
        );

        let lock_link = dir.path().join("k.lock");
        std::os::unix::fs::symlink(dir.path().join("created-by-follow"), &lock_link).unwrap();
        assert!(matches!(
            open_lock_file(&lock_link),
            Err(Untrusted::Symlink { .. })
        ));
        assert!(!dir.path().join("created-by-follow").exists());
    }
}
