//! What every ecr-auth process does first: it may hold an ECR token, AWS keys or
//! a GitLab token at any moment, so no core file may be written and no other
//! process of the same user may read its memory (`/proc/PID/mem`, ptrace); and a
//! reader that goes away (`ecr-auth get-login-password | head -c1`) ends it
//! quietly, as it ends `cat`, instead of a panic on `EPIPE` that aborts and dumps.

/// Applies the above to this process. Two or three system calls: nothing the
/// helper's warm path would notice.
pub fn apply() {
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

/// Whether this process is dumpable (for tests and `doctor`).
pub fn is_dumpable() -> bool {
    // SAFETY: PR_GET_DUMPABLE takes no further arguments.
    unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) == 1 }
}
