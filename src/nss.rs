//! Name-service lookups (users, groups, host names) in the static glibc build.
//!
//! The host build from this checkout links glibc statically (`.cargo/config.toml`: a warm
//! `get` costs no dynamic loader). glibc answers `getgrnam`, `getpwuid` and `getaddrinfo`
//! through the modules `/etc/nsswitch.conf` names, and a static glibc loads those that are
//! not built into `libc.a` (systemd, sss, mdns, resolve) with `dlopen`: they are linked
//! against the host's shared libc, not the one inside us, and crash (`group: files systemd`
//! and a group name missing from /etc/group: SIGSEGV in `libnss_systemd.so.2`).
//!
//! So a static glibc build asks only the modules built into it: `files` for users and
//! groups, `files dns` for host names — what the static musl build does too. A group that
//! only LDAP or systemd knows is not found (give its number instead); a host name that only
//! mDNS or systemd-resolved's NSS module knows is not resolved (DNS through the resolver in
//! /etc/resolv.conf still is, 127.0.0.53 included). The dynamic build (and musl) are left
//! as they are.

/// Restricts the static glibc build to its built-in NSS modules; once per process, before
/// the first lookup. Elsewhere nothing.
pub(crate) fn builtin_modules_only() {
    #[cfg(all(target_os = "linux", target_env = "gnu", target_feature = "crt-static"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            extern "C" {
                // glibc <nss.h>: int __nss_configure_lookup(const char *db, const char *service_line);
                fn __nss_configure_lookup(
                    db: *const std::ffi::c_char,
                    service_line: *const std::ffi::c_char,
                ) -> std::ffi::c_int;
            }
            for (db, line) in [
                (c"passwd", c"files"),
                (c"group", c"files"),
                (c"hosts", c"files dns"),
            ] {
                // SAFETY: both arguments are NUL-terminated static strings; glibc copies
                // what it keeps. A failure leaves nsswitch.conf in charge, as before.
                unsafe {
                    __nss_configure_lookup(db.as_ptr(), line.as_ptr());
                }
            }
        });
    }
}
