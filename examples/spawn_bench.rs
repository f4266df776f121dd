//! Benchmark driver for `scripts/bench` (not a test): starts a command N times
//! in a row, feeding it the same stdin, and reports wall time per run and the
//! peak resident set size of the child.
//!
//! Written in Rust rather than driven from a shell or Python because their own
//! process start-up (1 ms or more) would swamp a sub-millisecond helper call.
//! hyperfine would do, but Debian 12's version cannot feed stdin without a shell.
//!
//! Usage: spawn_bench --runs N [--warmup W] [--stdin TEXT] [--expect TEXT] -- CMD ARGS...
//! Prints one JSON line: {"runs":N,"median_us":..,"mean_us":..,"p90_us":..,"min_us":..,"max_rss_kb":..}

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut runs = 100usize;
    let mut warmup = 5usize;
    let mut stdin = String::new();
    let mut expect: Option<String> = None;
    let mut i = 0;
    while i < args.len() && args[i] != "--" {
        match args[i].as_str() {
            "--runs" => runs = args[i + 1].parse().expect("--runs N"),
            "--warmup" => warmup = args[i + 1].parse().expect("--warmup N"),
            "--stdin" => stdin = args[i + 1].clone(),
            "--expect" => expect = Some(args[i + 1].clone()),
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    let cmd = &args[i + 1..];
    assert!(
        !cmd.is_empty(),
        "usage: spawn_bench [options] -- CMD ARGS..."
    );

    let mut times = Vec::with_capacity(runs);
    let mut max_rss_kb = 0i64;
    for n in 0..warmup + runs {
        let check = n == 0 && expect.is_some();
        let start = Instant::now();
        // Reaped below with wait4 (for its rusage), which clippy cannot see.
        #[allow(clippy::zombie_processes)]
        let mut child = Command::new(&cmd[0])
            .args(&cmd[1..])
            .stdin(Stdio::piped())
            .stdout(if check { Stdio::piped() } else { Stdio::null() })
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", cmd[0]));
        if !stdin.is_empty() {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(stdin.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        let mut out = String::new();
        if check {
            use std::io::Read;
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
        }
        // wait4 rather than Child::wait: it also returns the child's rusage.
        let mut status = 0;
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let pid = child.id() as libc::pid_t;
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        let elapsed = start.elapsed();
        assert_eq!(r, pid, "wait4 failed");
        if check {
            let want = expect.as_deref().unwrap();
            assert!(
                out.contains(want),
                "{}: output {:?} lacks the expected text",
                cmd[0],
                out.chars().take(120).collect::<String>()
            );
        }
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{} failed (status {status})",
            cmd[0]
        );
        if n >= warmup {
            times.push(elapsed.as_secs_f64() * 1e6);
            max_rss_kb = max_rss_kb.max(usage.ru_maxrss);
        }
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = times[times.len() / 2];
    let p90 = times[(times.len() * 9 / 10).min(times.len() - 1)];
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    println!(
        "{{\"runs\":{},\"median_us\":{:.1},\"mean_us\":{:.1},\"p90_us\":{:.1},\"min_us\":{:.1},\"max_rss_kb\":{}}}",
        times.len(), median, mean, p90, times[0], max_rss_kb
    );
}
