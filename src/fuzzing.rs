//! Fuzz targets for every parser that takes outside input, run on stable Rust:
//! a committed corpus (`tests/data/fuzz/<target>/`) plus generated mutations of it
//! (byte flips, inserted separators and control bytes, truncation, splicing), with
//! properties beyond "does not panic". `cargo test` runs a few thousand cases per
//! target; `scripts/fuzz` runs many more (`ECR_AUTH_FUZZ_CASES`) and prints
//! executions and failures per target.
//!
//! Written by hand because cargo-fuzz needs a nightly toolchain, which this
//! project's machines do not have; the mutations are the classic ones.

mod broker;
mod edits;
mod inputs;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A deterministic generator (splitmix64): failures reproduce from the seed.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Tokens worth inserting: separators and shapes the parsers branch on.
const TOKENS: &[&[u8]] = &[
    b":",
    b"/",
    b".",
    b"..",
    b"\n",
    b"\r\n",
    b"\0",
    b"\x1b[31m",
    b"\"",
    b"=",
    b"[",
    b"]",
    b"{",
    b"}",
    b",",
    b"@",
    b"#",
    b"?",
    b"%",
    b" ",
    b"\t",
    b"https://",
    b":443",
    b":65536",
    b":0",
    b"-fips",
    b"dkr.ecr",
    b"dkr-ecr",
    b"amazonaws.com",
    b"on.aws",
    b"\xc3\xa9",
    b"\xff",
    b"123456789012",
    b"[[registry]]",
    b"host = ",
    b"\"\"\"",
    b"'",
    b"\\",
    b"\\u0000",
    b"null",
    b"true",
    b"9999999999999999999999",
];

/// One mutation of `input`, sometimes spliced with `other`.
pub(crate) fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(7) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                v.splice(at..at, t.iter().copied());
            }
            2 if !v.is_empty() => {
                let end = (at + 1 + rng.below(8)).min(v.len());
                v.drain(at.min(end)..end);
            }
            3 => v.truncate(at),
            4 if !other.is_empty() => {
                let from = rng.below(other.len());
                v.splice(
                    at..at,
                    other[from..].iter().copied().take(1 + rng.below(32)),
                );
            }
            5 if !v.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(v.len());
                let chunk: Vec<u8> = v[at.min(end)..end].to_vec();
                v.splice(at..at, chunk);
            }
            _ => v.insert(at, rng.next() as u8),
        }
    }
    v
}

/// The committed corpus of a target.
pub(crate) fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fuzz")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("fuzz corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// Runs `check` on the corpus and `cases` mutations, every case even after a
/// failure (up to [`MAX_FAILURES`]), then prints one summary line —
/// `fuzz <target>: <executions> executions, <failures> failures` — which
/// `scripts/fuzz` reads, and fails with the first failing inputs shown.
/// `check` panics (with the input shown) when a property fails.
pub(crate) fn run(target: &str, cases: usize, seed: u64, check: impl Fn(&[u8])) {
    let seeds = corpus(target);
    assert!(!seeds.is_empty(), "empty corpus for {target}");
    let mut executions = 0usize;
    let mut failures: Vec<(Vec<u8>, String)> = Vec::new();
    let mut one = |input: &[u8], failures: &mut Vec<(Vec<u8>, String)>| {
        executions += 1;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(input)));
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic without a message".into());
            failures.push((input.to_vec(), message));
        }
    };
    for s in &seeds {
        one(s, &mut failures);
    }
    let mut rng = Rng::new(seed);
    for _ in 0..cases {
        if failures.len() >= MAX_FAILURES {
            break;
        }
        let a = &seeds[rng.below(seeds.len())];
        let b = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, a, b);
        one(&input, &mut failures);
    }
    eprintln!(
        "fuzz {target}: {executions} executions, {} failures (seed {seed})",
        failures.len()
    );
    if let Some((input, message)) = failures.first() {
        let shown: String = String::from_utf8_lossy(input).chars().take(2000).collect();
        panic!(
            "fuzz {target}: {} of {executions} cases failed; the first: {message}\ninput ({} bytes): {shown:?}",
            failures.len(),
            input.len()
        );
    }
}

/// A run stops generating cases after this many failures.
pub(crate) const MAX_FAILURES: usize = 20;

/// The number of generated cases per target: a few thousand in `cargo test`.
pub(crate) fn cases() -> usize {
    std::env::var("ECR_AUTH_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

pub(crate) fn seed() -> u64 {
    std::env::var("ECR_AUTH_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed)
}

// ---- targets ------------------------------------------------------------------

/// Registry host: never panics; a parsed host is normalised (lower case, no
/// scheme, no path) and parsing it again gives itself.
pub(crate) fn registry_host(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    if let Ok(h) = crate::registry::Host::parse(&text) {
        let s = h.as_str();
        assert!(!s.contains('/') && !s.contains("://"), "{text:?} → {s:?}");
        assert_eq!(s, s.to_ascii_lowercase(), "{text:?}");
        assert_eq!(
            crate::registry::Host::parse(s).as_ref(),
            Ok(&h),
            "{text:?} → {s:?} is not stable"
        );
        if let Some(t) = h.ecr_target() {
            assert!(!t.region().is_empty(), "{text:?}");
            assert!(!s.contains(':'), "an ECR host with a port: {s:?}");
        }
    }
}

/// A provider that answers for ECR hosts with a fixed token.
struct Fixed;

impl crate::helper::Provider for Fixed {
    fn get(
        &self,
        url: &str,
    ) -> Result<(String, crate::secret::Secret<String>), crate::helper::HelperError> {
        let host = crate::registry::Host::parse(url).map_err(|e| {
            crate::helper::HelperError::NotFound {
                reason: e.to_string(),
            }
        })?;
        if host.ecr_target().is_none() {
            return Err(crate::helper::HelperError::NotFound {
                reason: format!("{host} is not ECR"),
            });
        }
        Ok(("AWS".into(), crate::secret::Secret::new("pw".into())))
    }
    fn is_mine(&self, url: &str) -> bool {
        crate::registry::Host::parse(url).is_ok_and(|h| h.ecr_target().is_some())
    }
    fn list(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com".into(),
            "AWS".into(),
        )])
    }
}

/// Helper stdin, every verb (first line of the input): stdout is always exactly
/// one protocol answer — one line of JSON, the not-found text, or one error line
/// — or nothing for a successful store/erase; exit 0 or 1 to match.
pub(crate) fn helper_stdin(input: &[u8]) {
    let (verb, rest) = match input.iter().position(|&b| b == b'\n') {
        Some(i) => (
            String::from_utf8_lossy(&input[..i]).into_owned(),
            &input[i + 1..],
        ),
        None => ("get".to_string(), input),
    };
    for ignore in [false, true] {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let code = crate::helper::run(&verb, &Fixed, ignore, &mut &rest[..], &mut out, &mut err);
        let text = String::from_utf8(out).expect("stdout is UTF-8");
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{verb:?} {rest:?}: {text:?}"
        );
        match code {
            0 => {
                assert!(lines.len() <= 1, "{verb:?} {rest:?}: {text:?}");
                if let Some(l) = lines.first() {
                    if !l.starts_with("ecr-auth ") {
                        let v: serde_json::Value = serde_json::from_str(l)
                            .unwrap_or_else(|e| panic!("{verb:?} {rest:?}: not JSON ({e}): {l:?}"));
                        assert!(v.is_object(), "{l:?}");
                    }
                }
            }
            1 => assert_eq!(lines.len(), 1, "{verb:?} {rest:?}: {text:?}"),
            other => panic!("exit {other}"),
        }
        let err = String::from_utf8_lossy(&err);
        assert!(
            err.lines().count() <= 2,
            "{verb:?} {rest:?}: stderr {err:?}"
        );
    }
}

/// ecr-auth config TOML: never panics; an error names the file and a line.
pub(crate) fn config_toml(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let path = Path::new("/etc/ecr-auth/config.toml");
    if let Err(e) = crate::config::Config::parse(text, path) {
        let m = e.to_string();
        assert!(m.contains("/etc/ecr-auth/config.toml"), "{m}");
        assert!(!m.contains('\n'), "one line: {m:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_registry_host() {
        run("registry", cases(), seed(), registry_host);
    }

    #[test]
    fn fuzz_helper_stdin() {
        run("helper", cases(), seed(), helper_stdin);
    }

    #[test]
    fn fuzz_config_toml() {
        run("config", cases(), seed(), config_toml);
    }

    #[test]
    fn fuzz_runner_config() {
        run("runner_config", cases(), seed(), edits::runner_config);
    }

    #[test]
    fn fuzz_docker_config() {
        run("docker_config", cases(), seed(), edits::docker_config);
    }

    #[test]
    fn fuzz_swarm_envfile() {
        run("swarm_envfile", cases(), seed(), inputs::swarm_envfile);
    }

    #[test]
    fn fuzz_docker_events() {
        run("docker_events", cases(), seed(), inputs::docker_events);
    }

    #[test]
    fn fuzz_gitlab_answers() {
        run("gitlab_answers", cases(), seed(), inputs::gitlab_answers);
    }

    #[test]
    fn fuzz_broker_requests() {
        run("broker_requests", cases(), seed(), broker::broker_requests);
    }

    #[test]
    fn mutations_differ_and_reproduce() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let x: Vec<Vec<u8>> = (0..50).map(|_| mutate(&mut a, b"abcdef", b"xyz")).collect();
        let y: Vec<Vec<u8>> = (0..50).map(|_| mutate(&mut b, b"abcdef", b"xyz")).collect();
        assert_eq!(x, y, "same seed, same cases");
        let distinct: std::collections::BTreeSet<_> = x.iter().collect();
        assert!(distinct.len() > 40, "{distinct:?}");
    }
}
