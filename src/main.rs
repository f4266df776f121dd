//! The `ecr-auth` binary. It only dispatches: under a `docker-credential-*`
//! name it is the credential helper, otherwise the `ecr-auth` command line.
//! First it hardens the process (no core dumps, not dumpable, quiet on EPIPE).
//!
//! `main` is the C entry point itself (`#![no_main]`), not Rust's: the helper is
//! started on every image pull and a warm `get` is mostly start-up, and Rust's
//! start-up asks glibc for the main thread's stack bounds (to print "has
//! overflowed its stack"), which glibc answers by parsing `/proc/self/maps` with
//! `sscanf` — ~0.1 M instructions, a sixth of a warm `get` of the glibc build (issue
//! 7 §3).
//! What Rust's start-up did that matters here is done by `hardening::apply`:
//! standard descriptors that are closed are opened on `/dev/null`, and SIGPIPE
//! gets its default action. A stack overflow is then a plain SIGSEGV (no core:
//! see `hardening`). `std::process::exit` still flushes stdout. The arguments
//! come from `argv`, because on musl `std::env::args()` is filled only by Rust's
//! start-up.

// Under `cargo test` the test harness brings its own `main`.
#![cfg_attr(not(test), no_main)]

/// # Safety
/// Called once by the C runtime, with `argc` valid strings in `argv`.
#[cfg(not(test))]
#[no_mangle]
pub unsafe extern "C" fn main(
    argc: std::ffi::c_int,
    argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    use std::ffi::{CStr, OsString};
    use std::os::unix::ffi::OsStringExt;

    ecr_auth::hardening::apply();
    let args: Vec<OsString> = (0..usize::try_from(argc).unwrap_or(0))
        .filter_map(|i| {
            // SAFETY: the C runtime passes `argc` valid, NUL-terminated strings in `argv`.
            let arg = unsafe { *argv.add(i) };
            (!arg.is_null())
                .then(|| OsString::from_vec(unsafe { CStr::from_ptr(arg) }.to_bytes().to_vec()))
        })
        .collect();
    std::process::exit(ecr_auth::cli::main(args));
}
