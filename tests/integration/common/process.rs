//! A lab daemon as a child process: output to a log file, readiness polling with a clear
//! panic (exit status and log tail), and SIGTERM-then-SIGKILL on drop.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub(crate) mod sys {
    //! The libc calls std does not wrap (std links libc anyway).
    use std::ffi::CString;
    use std::os::raw::{c_char, c_int};
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    extern "C" {
        fn kill(pid: c_int, sig: c_int) -> c_int;
        fn umount2(target: *const c_char, flags: c_int) -> c_int;
        fn flock(fd: c_int, operation: c_int) -> c_int;
    }

    pub const SIGTERM: i32 = 15;
    pub const SIGKILL: i32 = 9;

    pub fn signal(pid: u32, sig: i32) -> bool {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { kill(pid as c_int, sig) == 0 }
    }

    /// flock(fd, LOCK_EX | LOCK_NB): true when this open file now holds the lock.
    pub fn try_lock(file: &std::fs::File) -> bool {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid descriptor, owned by `file` for the duration of the call.
        unsafe { flock(file.as_raw_fd(), 2 | 4) == 0 }
    }

    /// umount2(path, MNT_DETACH)
    pub fn detach_mount(path: &Path) -> bool {
        let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
        unsafe { umount2(c.as_ptr(), 2) == 0 }
    }
}

/// A started lab program.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    stopped: bool,
}

impl Proc {
    /// Starts `cmd` with stdin closed and stdout+stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
        let out =
            File::create(log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = out.try_clone().expect("clone log handle");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {name} ({}): {e}",
                cmd.get_program().to_string_lossy()
            )
        });
        Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            stopped: false,
        }
    }

    /// Starts a program that must listen on a port chosen by [`super::free_port`]; retries
    /// with another port (at most 3 times) when the program dies with "address already in
    /// use", and waits until `ready(port)`.
    pub fn spawn_on_free_port(
        name: &str,
        log: &Path,
        mut make: impl FnMut(u16) -> Command,
        mut ready: impl FnMut(u16) -> bool,
    ) -> (Proc, u16) {
        for attempt in 1..=3 {
            let port = super::free_port();
            let mut proc = Proc::spawn(name, make(port), log);
            match proc.wait_until(
                &format!("{name} on port {port}"),
                super::STARTUP_TIMEOUT,
                || ready(port),
            ) {
                Ok(()) => return (proc, port),
                Err(e) if attempt < 3 && e.to_lowercase().contains("address already in use") => {
                    continue
                }
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `n` lines of the log (each cut at 400 characters).
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(n)..];
        tail.iter()
            .map(|l| match l.char_indices().nth(400) {
                Some((i, _)) => format!("{}…", &l[..i]),
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `Some(status)` once the program has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Polls `ready` until it holds (Ok), the program exits or `timeout` passes (Err with the
    /// exit status and log tail; the program is then stopped).
    pub fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), String> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            if let Some(status) = self.exited() {
                self.stopped = true;
                return Err(format!(
                    "lab: {what} exited ({status}) before it was ready; log {}:\n{}",
                    self.log.display(),
                    self.log_tail(40)
                ));
            }
            if ready() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                self.stop(Duration::from_secs(5));
                return Err(format!(
                    "lab: {what} was not ready after {timeout:?}; log {}:\n{}",
                    self.log.display(),
                    self.log_tail(40)
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; always reaps the child.
    pub fn stop(&mut self, grace: Duration) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if self.exited().is_some() {
            return;
        }
        sys::signal(self.pid(), sys::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < grace {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "lab: {} (pid {}) ignored SIGTERM for {grace:?}; killing it",
            self.name,
            self.pid()
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.stopped {
            eprintln!(
                "lab: log tail of {} ({}):\n{}",
                self.name,
                self.log.display(),
                self.log_tail(30)
            );
        }
        self.stop(Duration::from_secs(15));
    }
}
