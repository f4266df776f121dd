//! How the binary starts (issue 7 §3): every build a user can make from this checkout is
//! static and not position-independent (no dynamic loader, no relocation pass before
//! `main`), and the C entry point in `src/main.rs` still does what Rust's start-up did for
//! safety: standard descriptors left closed by the parent are opened on /dev/null, so no
//! file the process opens later can become its stdout or stderr.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{self, *};

const ET_EXEC: u16 = 2;
const PT_INTERP: u32 = 3;

/// (ELF type, whether it names a program interpreter): ET_EXEC without PT_INTERP is a
/// static executable loaded at its link address.
fn elf_kind(path: &Path) -> (u16, bool) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&b[..4], b"\x7fELF", "{} is not ELF", path.display());
    assert_eq!(b[4], 2, "{} is not a 64-bit ELF", path.display());
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = (u64_at(32) as usize, u16_at(54) as usize, u16_at(56));
    let interp = (0..phnum as usize).any(|i| u32_at(phoff + i * phentsize) == PT_INTERP);
    (u16_at(16), interp)
}

#[test]
fn the_host_build_and_the_shipped_build_are_static_and_not_position_independent() {
    // `common::bin()` is what `cargo build` makes for this host from this checkout (the
    // same flags as `cargo build --release` / `cargo install --path .`: .cargo/config.toml).
    for bin in [common::bin(), common::static_bin()] {
        let (kind, interp) = elf_kind(&bin);
        assert_eq!(
            (kind, interp),
            (ET_EXEC, false),
            "{} must be a static, non-PIE executable (ELF type {kind}, interpreter {interp}); \
             check .cargo/config.toml",
            bin.display()
        );
    }
}

#[test]
fn a_daemon_started_with_closed_standard_descriptors_has_them_on_dev_null() {
    let tokens = TokenServer::start();
    let dir = TempDir::new("startup");
    let socket = dir.join("broker.sock");
    let mut cmd = Command::new("/bin/sh");
    apply_aws_env(&mut cmd, &tokens.endpoint)
        .env("HOME", dir.join("home"))
        .env_remove("ECR_AUTH_CONFIG")
        .env_remove("ECR_AUTH_BROKER")
        .args(["-c", "exec 0<&- 1>&- 2>&-; exec \"$@\"", "sh"])
        .arg(common::bin())
        .args(["serve", "--allow", "123456789012.dkr.ecr.eu-west-1.amazonaws.com", "--socket"])
        .arg(&socket);
    let mut broker = Proc::spawn("broker", cmd, &dir.join("broker.log"));
    broker
        .wait_until("broker", Duration::from_secs(30), || {
            http_unix(&socket, "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    for fd in 0..=2 {
        let target = std::fs::read_link(format!("/proc/{}/fd/{fd}", broker.pid()))
            .unwrap_or_else(|e| panic!("fd {fd} of the broker: {e}"));
        assert_eq!(
            target,
            Path::new("/dev/null"),
            "fd {fd} of a process started with it closed must be /dev/null, not {}",
            target.display()
        );
    }
    // And it serves: the descriptors it opened itself are not mixed up with them.
    let r = http_unix(
        &socket,
        "GET",
        "/v1/token?registry=123456789012.dkr.ecr.eu-west-1.amazonaws.com",
        &[],
        b"",
    )
    .expect("the broker answers");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    broker.stop(Duration::from_secs(10));
}
