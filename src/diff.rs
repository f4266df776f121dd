//! Unified diffs (`diff -u`) for `--dry-run`, with secret values redacted.
//!
//! The line diff is `similar`'s (Myers, with a deadline): linear in the size of
//! the files when the edit is small, as a config edit is. Every line shown —
//! context, removed or added — has its secret values replaced by
//! [`REDACTED`]: a runner's `token`, `auths` `auth`/`password`/`identitytoken`,
//! S3 cache keys, `…SECRET…=`/`…TOKEN…=`/`…PASSWORD…=` environment entries.
//! A changed secret still shows as a changed line.

use std::time::Duration;

use similar::{ChangeTag, TextDiff};

/// What a secret value is replaced with.
pub(crate) const REDACTED: &str = "<redacted>";

/// After this long the diff settles for a correct but less minimal result.
const DEADLINE: Duration = Duration::from_secs(2);

/// Keys whose values are secrets, in TOML (`token = "…"`) and JSON
/// (`"auth":"…"`, also inside a TOML string as `\"auth\":\"…\"`); lower case.
const SECRET_KEYS: &[&str] = &[
    "token",
    "auth",
    "password",
    "identitytoken",
    "registrytoken",
    "secretkey",
    "secret_key",
    "accesskey",
    "access_key",
    "secret_access_key",
    "aws_secret_access_key",
    "session_token",
    "sessiontoken",
    "aws_session_token",
];

/// Words in an environment variable's name that make its value secret.
const SECRET_ENV_WORDS: &[&str] = &["SECRET", "TOKEN", "PASSWORD", "PASSWD"];

/// `diff -u` of two texts (three lines of context), secrets redacted; empty
/// when they are equal.
pub(crate) fn unified(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    if old == new {
        return String::new();
    }
    let diff = TextDiff::configure().timeout(DEADLINE).diff_lines(old, new);
    let mut out = format!("--- {old_name}\n+++ {new_name}\n");
    for group in diff.grouped_ops(3) {
        out.push_str(&format!(
            "{}\n",
            similar::udiff::UnifiedHunkHeader::new(&group)
        ));
        for op in &group {
            for change in diff.iter_changes(op) {
                out.push(match change.tag() {
                    ChangeTag::Equal => ' ',
                    ChangeTag::Delete => '-',
                    ChangeTag::Insert => '+',
                });
                let line = change.value();
                out.push_str(&redact_line(line.strip_suffix('\n').unwrap_or(line)));
                out.push('\n');
                if change.missing_newline() {
                    out.push_str("\\ No newline at end of file\n");
                }
            }
        }
    }
    out
}

/// One line with every secret value replaced by [`REDACTED`].
pub(crate) fn redact_line(line: &str) -> String {
    let b = line.as_bytes();
    let mut out = String::with_capacity(line.len());
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        if let Some((start, end)) = secret_value_at(b, i) {
            out.push_str(&line[copied..start]);
            out.push_str(REDACTED);
            copied = end;
            i = end;
        } else {
            i += 1;
        }
    }
    out.push_str(&line[copied..]);
    out
}

/// If a secret key starts at `i` (a whole word, followed by an assignment and a
/// quoted value), the byte range of the value between its quotes.
fn secret_value_at(b: &[u8], i: usize) -> Option<(usize, usize)> {
    let word_byte = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'-';
    if i > 0 && word_byte(b[i - 1]) {
        return None;
    }
    let word_end = (i..b.len()).find(|&k| !word_byte(b[k])).unwrap_or(b.len());
    let word = std::str::from_utf8(&b[i..word_end]).ok()?;
    if word.is_empty() {
        return None;
    }
    // `NAME=value` inside a string (an `environment` entry).
    if b.get(word_end) == Some(&b'=')
        && i > 0
        && matches!(b[i - 1], b'"' | b'\'')
        && SECRET_ENV_WORDS.iter().any(|w| word.contains(w))
    {
        let quote = b[i - 1];
        let start = word_end + 1;
        let end = closing(b, start, &[quote], i >= 2 && b[i - 2] == b'\\')?;
        return (end > start).then_some((start, end));
    }
    if !SECRET_KEYS.contains(&word.to_ascii_lowercase().as_str()) {
        return None;
    }
    // The key's own closing quote, plain or escaped inside a TOML string.
    let mut k = word_end;
    if b[k..].starts_with(b"\\\"") {
        k += 2;
    } else if matches!(b.get(k), Some(b'"' | b'\'')) {
        k += 1;
    }
    while b.get(k) == Some(&b' ') {
        k += 1;
    }
    if !matches!(b.get(k), Some(b'=' | b':')) {
        return None;
    }
    k += 1;
    while b.get(k) == Some(&b' ') {
        k += 1;
    }
    // The value's opening quote: `\"` (JSON in a TOML basic string), `"` or `'`.
    let (start, escaped, quote) = if b[k..].starts_with(b"\\\"") {
        (k + 2, true, b'"')
    } else {
        match b.get(k) {
            Some(&q @ (b'"' | b'\'')) => (k + 1, false, q),
            _ => return None,
        }
    };
    let end = closing(b, start, &[quote], escaped)?;
    (end > start).then_some((start, end))
}

/// Where the value that starts at `start` ends: the next `quote` (preceded by a
/// backslash when `escaped`, and not preceded by one otherwise).
fn closing(b: &[u8], start: usize, quote: &[u8], escaped: bool) -> Option<usize> {
    let mut k = start;
    while k < b.len() {
        if b[k] == b'\\' && !escaped {
            k += 2;
            continue;
        }
        if escaped && b[k] == b'\\' && quote.contains(b.get(k + 1)?) {
            return Some(k);
        }
        if !escaped && quote.contains(&b[k]) {
            return Some(k);
        }
        k += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_diff_u() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\n";
        let new = "a\nb\nc\nD\ne\nf\ng\nh\ni\nj\nk\nl\n";
        assert_eq!(
            unified(old, new, "x", "y"),
            "--- x\n+++ y\n@@ -1,7 +1,7 @@\n a\n b\n c\n-d\n+D\n e\n f\n g\n@@ -9,3 +9,4 @@\n i\n j\n k\n+l\n"
        );
        assert_eq!(unified(old, old, "x", "y"), "");
        assert_eq!(
            unified("", "a\n", "/dev/null", "y"),
            "--- /dev/null\n+++ y\n@@ -0,0 +1 @@\n+a\n"
        );
        assert_eq!(
            unified("a\nb", "a\nc", "x", "y"),
            "--- x\n+++ y\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+c\n\\ No newline at end of file\n"
        );
    }

    #[test]
    fn secrets_are_redacted_in_every_line_shown() {
        for (line, want) in [
            (r#"  token = "glrt-abc123""#, r#"  token = "<redacted>""#),
            (r#"  token = 'glrt-abc123'"#, r#"  token = '<redacted>'"#),
            (
                r#"  token_obtained_at = 2024-05-02T09:12:44Z"#,
                r#"  token_obtained_at = 2024-05-02T09:12:44Z"#,
            ),
            (
                r#"  environment = ["DOCKER_AUTH_CONFIG={\"auths\":{\"r.example\":{\"auth\":\"dXNlcjpwdw==\"}}}", "TZ=UTC"]"#,
                r#"  environment = ["DOCKER_AUTH_CONFIG={\"auths\":{\"r.example\":{\"auth\":\"<redacted>\"}}}", "TZ=UTC"]"#,
            ),
            (
                r#"  environment = ['DOCKER_AUTH_CONFIG={"auths":{"r.example":{"auth":"dXNlcjpwdw==","password":"pw","identitytoken":"it"}}}']"#,
                r#"  environment = ['DOCKER_AUTH_CONFIG={"auths":{"r.example":{"auth":"<redacted>","password":"<redacted>","identitytoken":"<redacted>"}}}']"#,
            ),
            (
                r#"      "auth": "dXNlcjpwdw==","#,
                r#"      "auth": "<redacted>","#,
            ),
            (
                r#"  environment = ["AWS_SECRET_ACCESS_KEY=wJalr/K7", "GITLAB_TOKEN=glpat-x", "TZ=UTC"]"#,
                r#"  environment = ["AWS_SECRET_ACCESS_KEY=<redacted>", "GITLAB_TOKEN=<redacted>", "TZ=UTC"]"#,
            ),
            (
                r#"    SecretKey = "s3cr3t""#,
                r#"    SecretKey = "<redacted>""#,
            ),
            (
                r#"  "credHelpers": {"x": "ecr-login"},"#,
                r#"  "credHelpers": {"x": "ecr-login"},"#,
            ),
            (
                r#"  url = "https://gitlab.com/""#,
                r#"  url = "https://gitlab.com/""#,
            ),
            (
                r#"  auth = "with \" quote" # c"#,
                r#"  auth = "<redacted>" # c"#,
            ),
        ] {
            assert_eq!(redact_line(line), want, "{line}");
        }
        let old = "[[runners]]\n  token = \"glrt-secret-1\"\n  executor = \"docker\"\n";
        let new = "[[runners]]\n  token = \"glrt-secret-2\"\n  executor = \"docker\"\n  environment = [\"A=1\"]\n";
        let d = unified(old, new, "c", "c");
        assert!(!d.contains("glrt-secret"), "{d}");
        assert!(
            d.contains("-  token = \"<redacted>\"\n+  token = \"<redacted>\"\n"),
            "{d}"
        );
    }

    #[test]
    fn a_one_megabyte_config_diffs_in_linear_time_and_memory() {
        // The hand-written LCS took O(n·m) memory: 18.9 GB for a 1 MB file.
        let mut old = String::new();
        let mut i = 0;
        while old.len() < 1 << 20 {
            old.push_str(&format!(
                "[[runners]]\n  name = \"r{i}\"\n  token = \"glrt-{i:08}\"\n  executor = \"docker\"\n"
            ));
            i += 1;
        }
        let at = old.len() / 2;
        let at = at + old[at..].find('\n').unwrap() + 1;
        let new = format!(
            "{}  environment = [\"DOCKER_AUTH_CONFIG={{}}\"]\n{}",
            &old[..at],
            &old[at..]
        );
        let d = unified(&old, &new, "a", "b");
        let added: Vec<&str> = d
            .lines()
            .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
            .collect();
        assert_eq!(
            added,
            ["+  environment = [\"DOCKER_AUTH_CONFIG={}\"]"],
            "{d}"
        );
        assert_eq!(
            d.lines()
                .filter(|l| l.starts_with('-') && !l.starts_with("---"))
                .count(),
            0
        );
        assert_eq!(
            d.lines().count(),
            2 + 1 + 7,
            "one hunk, three lines of context each side: {d}"
        );
        assert!(!d.contains("glrt-"), "{d}");
    }
}
