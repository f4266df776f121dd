//! The one way an error reaches a user: its message and its causes on one line.

use std::error::Error;

/// The error and its causes on one line, joined by `: `, without repeating a
/// cause that the message above it already quotes.
pub fn report(e: &(dyn Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct E(&'static str, #[source] Option<Box<E>>);

    #[test]
    fn one_line_without_repeats() {
        let inner = E("connection refused", None);
        let quoted = E(
            "cannot reach 127.0.0.1:9: connection refused",
            Some(Box::new(inner)),
        );
        assert_eq!(
            report(&quoted),
            "cannot reach 127.0.0.1:9: connection refused"
        );
        let outer = E(
            "cannot get ECR tokens",
            Some(Box::new(E("timed out", None))),
        );
        assert_eq!(report(&outer), "cannot get ECR tokens: timed out");
        let any = anyhow::Error::new(E("disk full", None)).context("cannot write x");
        assert_eq!(report(any.as_ref()), "cannot write x: disk full");
    }
}
