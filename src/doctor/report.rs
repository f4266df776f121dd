//! What `doctor` found: checks with a stable id, a status, one line of evidence
//! and, when something is wrong, one line saying what to do. Printed as a short
//! checklist for people or as one JSON document for machines.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
    Skip,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `name`, `wiring`, `helper`, `identity`, `clock`, `token`, `cache`,
    /// `broker`, `registry`, `runner`, `swarm`.
    pub id: &'static str,
    pub status: Status,
    pub evidence: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(id: &'static str, evidence: impl Into<String>) -> Check {
        Check {
            id,
            status: Status::Ok,
            evidence: evidence.into(),
            fix: None,
        }
    }
    pub fn warn(id: &'static str, evidence: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            id,
            status: Status::Warn,
            evidence: evidence.into(),
            fix: Some(fix.into()),
        }
    }
    pub fn fail(id: &'static str, evidence: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            id,
            status: Status::Fail,
            evidence: evidence.into(),
            fix: Some(fix.into()),
        }
    }
    pub fn skip(id: &'static str, evidence: impl Into<String>) -> Check {
        Check {
            id,
            status: Status::Skip,
            evidence: evidence.into(),
            fix: None,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct RegistryReport {
    pub registry: String,
    pub checks: Vec<Check>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub ok: bool,
    pub registries: Vec<RegistryReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runner: Option<Vec<Check>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swarm: Option<Vec<Check>>,
}

impl Report {
    pub fn new(
        registries: Vec<RegistryReport>,
        runner: Option<Vec<Check>>,
        swarm: Option<Vec<Check>>,
    ) -> Report {
        let failed = |cs: &[Check]| cs.iter().any(|c| c.status == Status::Fail);
        let ok = !registries.iter().any(|r| failed(&r.checks))
            && !runner.as_deref().is_some_and(failed)
            && !swarm.as_deref().is_some_and(failed);
        Report {
            ok,
            registries,
            runner,
            swarm,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serialises")
    }

    /// The checklist for people; `colour` only on a terminal.
    pub fn to_text(&self, colour: bool) -> String {
        let mut out = String::new();
        let mut section = |title: &str, checks: &[Check]| {
            out.push_str(title);
            out.push('\n');
            for c in checks {
                let (mark, code) = match c.status {
                    Status::Ok => ("✓", "32"),
                    Status::Warn => ("!", "33"),
                    Status::Fail => ("✗", "31"),
                    Status::Skip => ("-", "2"),
                };
                let mark = if colour {
                    format!("\x1b[{code}m{mark}\x1b[0m")
                } else {
                    mark.to_string()
                };
                out.push_str(&format!("  {mark} {:<9} {}\n", c.id, c.evidence));
                if let Some(fix) = &c.fix {
                    out.push_str(&format!("    {:<9} fix: {fix}\n", ""));
                }
            }
        };
        for r in &self.registries {
            section(&r.registry, &r.checks);
        }
        if let Some(runner) = &self.runner {
            section("gitlab-runner", runner);
        }
        if let Some(swarm) = &self.swarm {
            section("swarm", swarm);
        }
        out.push_str(if self.ok {
            "All checks passed.\n"
        } else {
            "A check failed: the first ✗ above is where a pull breaks.\n"
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_documented_shape() {
        let r = Report::new(
            vec![RegistryReport {
                registry: "h".into(),
                checks: vec![
                    Check::ok("name", "ECR"),
                    Check::fail("wiring", "none", "configure it"),
                ],
            }],
            None,
            None,
        );
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ok": false, "registries": [{"registry": "h", "checks": [
                {"id": "name", "status": "ok", "evidence": "ECR"},
                {"id": "wiring", "status": "fail", "evidence": "none", "fix": "configure it"}
            ]}]})
        );
        let text = r.to_text(false);
        assert_eq!(
            text,
            "h\n  ✓ name      ECR\n  ✗ wiring    none\n              fix: configure it\n\
             A check failed: the first ✗ above is where a pull breaks.\n"
        );
    }

    #[test]
    fn runner_and_swarm_sit_beside_the_registries() {
        let r = Report::new(
            vec![RegistryReport {
                registry: "h".into(),
                checks: vec![Check::ok("name", "ECR")],
            }],
            Some(vec![Check::ok("runner", "covered")]),
            Some(vec![
                Check::ok("swarm", "leader"),
                Check::warn("swarm", "paused", "roll back"),
            ]),
        );
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ok": true,
            "registries": [{"registry": "h", "checks": [{"id": "name", "status": "ok", "evidence": "ECR"}]}],
            "runner": [{"id": "runner", "status": "ok", "evidence": "covered"}],
            "swarm": [
                {"id": "swarm", "status": "ok", "evidence": "leader"},
                {"id": "swarm", "status": "warn", "evidence": "paused", "fix": "roll back"}
            ]})
        );
        assert_eq!(
            r.to_text(false),
            "h\n  ✓ name      ECR\ngitlab-runner\n  ✓ runner    covered\n\
             swarm\n  ✓ swarm     leader\n  ! swarm     paused\n              fix: roll back\n\
             All checks passed.\n"
        );
        // A failing Swarm check fails the report.
        let r = Report::new(vec![], None, Some(vec![Check::fail("swarm", "x", "y")]));
        assert!(!r.ok);
    }
}
