//! What every ecr-auth process does first: it may hold an ECR token, AWS keys or
//! a GitLab token at any moment, so no core file may be written and no other
//! process of the same user may read its memory (`/proc/PID/mem`, ptrace); and a
//! reader that goes away (`ecr-auth get-login-password | head -c1`) ends it
//! quietly, as it ends `cat`, instead of a panic on `EPIPE` that aborts and dumps.

/// Applies the above to this process. A few system calls: nothing the helper's
/// warm path would notice.
///
/// The binary's `main` is the C entry point (see `src/main.rs`), so this also does
/// what Rust's own start-up would: a standard descriptor (0, 1, 2) that the parent
/// left closed is opened on `/dev/null`. Otherwise the next file opened — a cache
/// file, a config file — would get that number, and a token written to stdout
/// would land in it. And a static glibc build asks only the name-service modules built
/// into it (`crate::nss`).
pub fn apply() {
    open_closed_standard_fds();
    crate::nss::builtin_modules_only();
    // SAFETY: plain system calls on this process with valid arguments; their
    // failure leaves the process as it was, which is no worse than before.
    unsafe {
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &none);
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        // Rust ignores SIGPIPE, so a write to a closed pipe returns EPIPE and
        // `println!` panics; the default action ends the process silently.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn open_closed_standard_fds() {
    for fd in 0..=2 {
        // SAFETY: F_GETFD only inspects the descriptor table; open/close/abort have
        // valid arguments.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) == -1
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::EBADF)
            {
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if null != fd {
                    // Lower numbers are open, so `open` must return `fd`; if it
                    // cannot, running on would risk writing secrets to a file.
                    libc::abort();
                }
            }
        }
    }
}

/// Whether this process is dumpable (for tests and `doctor`).
pub fn is_dumpable() -> bool {
    // SAFETY: PR_GET_DUMPABLE takes no further arguments.
    unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) == 1 }
}
