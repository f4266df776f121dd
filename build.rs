//! Build script: what `ecr-auth version` prints, and how the binary is linked.
//!
//! 1. `ECR_AUTH_GIT_COMMIT` (the commit the binary was built from: `$ECR_AUTH_GIT_COMMIT` if
//!    set, e.g. by a CI that builds from an export, else `git rev-parse`, else `unknown`) and
//!    `ECR_AUTH_TARGET` (the target triple) for `env!`.
//! 2. Linux glibc targets built without this checkout's `.cargo/config.toml` (which makes a
//!    static glibc build: see there), e.g. `cargo install --git`: link the dynamic
//!    executable non-PIE (`-no-pie`). The credential helper is started on every image pull,
//!    and a warm `get` is mostly start-up: as a PIE, the dynamic loader applies ~100 k
//!    relative relocations to the 13 MB image before `main`. callgrind, warm get: 1.03 M
//!    instructions as a PIE, ~0.5 M non-PIE, ~0.2 M static (issue 7 §3; `scripts/bench`
//!    measures the host build against the static musl one). What is left is the loader
//!    binding ~320 libc/libgcc_s symbols, which only a static build avoids. The price of
//!    non-PIE is no ASLR for the executable's own image (libraries, stack and heap stay
//!    randomized); `ECR_AUTH_PIE=1` keeps the default PIE. rustc passes `-pie` itself; our
//!    argument comes after it on the linker command line, and for the gcc/clang driver the
//!    last of `-pie`/`-no-pie` wins (`file` then says "LSB executable", not "pie
//!    executable").
//!
//! It must live here, not only in `.cargo/config.toml`: cargo reads that file only when run
//! from inside the checkout, and users build with their own flags.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=ECR_AUTH_GIT_COMMIT");
    println!("cargo:rerun-if-env-changed=ECR_AUTH_PIE");

    let target = env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=ECR_AUTH_TARGET={target}");
    println!("cargo:rustc-env=ECR_AUTH_GIT_COMMIT={}", git_commit());

    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let libc = env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let pie_wanted = env::var_os("ECR_AUTH_PIE").is_some_and(|v| v == "1");
    let is_static = env::var("CARGO_CFG_TARGET_FEATURE")
        .unwrap_or_default()
        .split(',')
        .any(|f| f == "crt-static");
    if os == "linux" && libc == "gnu" && !is_static && !pie_wanted {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}

/// The commit HEAD points at (12 hex digits), and which files to watch so that a new commit
/// re-runs this script (in a worktree `.git` is a file; refs may be loose or packed).
fn git_commit() -> String {
    if let Ok(c) = env::var("ECR_AUTH_GIT_COMMIT") {
        if !c.trim().is_empty() {
            return c.trim().to_string();
        }
    }
    let dir = env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_default();
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .current_dir(&dir)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".into();
    };
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        watch(&Path::new(&git_dir).join("HEAD"));
    }
    if let Some(common) = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"]) {
        let common = Path::new(&common);
        watch(&common.join("packed-refs"));
        if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watch(&common.join(head_ref));
        }
    }
    commit
}

fn watch(path: &Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
