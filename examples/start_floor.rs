//! The floor under a warm `get`, for `scripts/bench` (issue 7 §3): a process that starts
//! the way `ecr-auth` does (the C `main` itself, no Rust start-up: see `src/main.rs`) and
//! exits at once. Built with the same link settings as each `ecr-auth` build, it shows
//! what starting a process costs with that libc before any of our code runs.
//!
//! `start_floor --cpuid-ns` instead prints the cost of one `cpuid` instruction in
//! nanoseconds (x86_64). glibc's start-up probes the CPU with it dozens of times
//! (`init_cpu_features`, the cache sizes), musl's not at all; under a hypervisor each one
//! is a VM exit, so on a VM this cost, not our code, decides how far apart the two are.

// `cargo test --all-targets` builds this with the test harness, which brings its own `main`.
#![cfg_attr(not(test), no_main)]

#[cfg(not(test))]
use std::ffi::{c_char, c_int, CStr};

/// # Safety
/// Called once by the C runtime, with `argc` valid strings in `argv`.
#[cfg(not(test))]
#[no_mangle]
pub unsafe extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    // SAFETY: the C runtime passes `argc` valid, NUL-terminated strings in `argv`.
    let wants_cpuid =
        argc > 1 && unsafe { CStr::from_ptr(*argv.add(1)) }.to_bytes() == b"--cpuid-ns";
    if wants_cpuid {
        match cpuid_ns() {
            Some(ns) => println!("{ns:.0}"),
            None => {
                eprintln!("start_floor: --cpuid-ns is measured on x86_64 only");
                return 2;
            }
        }
    }
    0
}

#[cfg(target_arch = "x86_64")]
fn cpuid_ns() -> Option<f64> {
    const N: u32 = 2_000;
    let start = std::time::Instant::now();
    for _ in 0..N {
        // Leaf 0x80000005 (AMD L1 cache information) is one glibc asks at every start; any
        // leaf traps the same way under a hypervisor.
        std::hint::black_box(std::arch::x86_64::__cpuid(std::hint::black_box(
            0x8000_0005,
        )));
    }
    Some(start.elapsed().as_nanos() as f64 / f64::from(N))
}

#[cfg(not(target_arch = "x86_64"))]
fn cpuid_ns() -> Option<f64> {
    None
}
