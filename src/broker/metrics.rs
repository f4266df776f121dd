//! Prometheus counters of the broker (text exposition format 0.0.4).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub tokens: AtomicU64,
    pub not_allowed: AtomicU64,
    pub not_found: AtomicU64,
    pub failed: AtomicU64,
    pub bad_requests: AtomicU64,
    pub connections: AtomicU64,
    pub connections_open: AtomicU64,
    pub connections_refused: AtomicU64,
    pub connections_timed_out: AtomicU64,
}

impl Metrics {
    pub fn count(&self, result: &str) {
        let c = match result {
            "token" => &self.tokens,
            "not_allowed" => &self.not_allowed,
            "not_found" => &self.not_found,
            "failed" => &self.failed,
            _ => &self.bad_requests,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        out.push_str("# HELP ecr_auth_broker_requests_total Token requests by result.\n# TYPE ecr_auth_broker_requests_total counter\n");
        for (result, c) in [
            ("token", &self.tokens),
            ("not_allowed", &self.not_allowed),
            ("not_found", &self.not_found),
            ("failed", &self.failed),
            ("bad_request", &self.bad_requests),
        ] {
            let _ = writeln!(
                out,
                "ecr_auth_broker_requests_total{{result=\"{result}\"}} {}",
                get(c)
            );
        }
        for (name, help, kind, c) in [
            (
                "ecr_auth_broker_connections_total",
                "Connections accepted.",
                "counter",
                &self.connections,
            ),
            (
                "ecr_auth_broker_connections_open",
                "Connections open now.",
                "gauge",
                &self.connections_open,
            ),
            (
                "ecr_auth_broker_connections_refused_total",
                "Connections closed at once: too many open.",
                "counter",
                &self.connections_refused,
            ),
            (
                "ecr_auth_broker_connections_timed_out_total",
                "Connections closed for taking too long.",
                "counter",
                &self.connections_timed_out,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                get(c)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_by_result() {
        let m = Metrics::default();
        m.count("token");
        m.count("token");
        m.count("not_allowed");
        let text = m.render();
        assert!(
            text.contains("ecr_auth_broker_requests_total{result=\"token\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("ecr_auth_broker_requests_total{result=\"not_allowed\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE ecr_auth_broker_connections_open gauge\n"),
            "{text}"
        );
    }
}
