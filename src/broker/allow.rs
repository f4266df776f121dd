//! The broker's allow-list: registry hosts as clients write them (a host the
//! config file maps counts by its own name) or patterns where `*` stands for
//! exactly one DNS label; optionally narrowed to accounts and regions; ECR
//! Public on or off. An empty allow-list is refused at start: the broker never
//! serves everything by accident.

use crate::config::Resolved;
use crate::registry::{Host, Target};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    /// Lower case, split into labels.
    patterns: Vec<Vec<String>>,
    accounts: Vec<String>,
    regions: Vec<String>,
    public: bool,
}

impl AllowList {
    /// Checks every pattern; an error names the bad one and says what is expected.
    pub fn new(
        patterns: &[String],
        accounts: &[String],
        regions: &[String],
        public: bool,
    ) -> Result<AllowList, String> {
        let mut parsed = Vec::new();
        for p in patterns {
            parsed.push(parse_pattern(p)?);
        }
        if let Some(a) = accounts
            .iter()
            .find(|a| a.len() != 12 || !a.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(format!(
                "allowed account {a:?} is not an AWS account id (12 digits)"
            ));
        }
        let list = AllowList {
            patterns: parsed,
            accounts: accounts.to_vec(),
            regions: regions.iter().map(|r| r.to_ascii_lowercase()).collect(),
            public,
        };
        if list.is_empty() {
            return Err("no allow-list: name the registries the broker may hand out tokens for \
                 (--allow HOST or --allow '*.dkr.ecr.REGION.amazonaws.com', or `allow`, `accounts`, \
                 `regions`, `public` in the [broker] section of the config file)"
                .into());
        }
        Ok(list)
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
            && self.accounts.is_empty()
            && self.regions.is_empty()
            && !self.public
    }

    /// `Ok` if the broker may hand out a token for this registry; else the reason.
    pub fn check(&self, r: &Resolved) -> Result<(), String> {
        let host = r.host.as_str();
        let by_pattern = self.patterns.iter().any(|p| matches(p, host));
        match &r.target {
            Target::Public => {
                if self.public || by_pattern {
                    Ok(())
                } else {
                    Err(format!("{host} (ECR Public) is not allowed by this broker: ECR Public is off (`public = true` in [broker] turns it on)"))
                }
            }
            Target::Private {
                account, region, ..
            } => {
                if !self.patterns.is_empty() && !by_pattern {
                    return Err(format!(
                        "{host} is not in this broker's allow-list; ask its operator to add it (--allow, or `allow` in [broker])"
                    ));
                }
                if !self.accounts.is_empty() && !self.accounts.contains(account) {
                    return Err(format!(
                        "{host} is in AWS account {account}, which this broker does not serve (`accounts` in [broker])"
                    ));
                }
                if !self.regions.is_empty() && !self.regions.iter().any(|x| x == region) {
                    return Err(format!(
                        "{host} is in region {region}, which this broker does not serve (`regions` in [broker])"
                    ));
                }
                if self.patterns.is_empty() && self.accounts.is_empty() && self.regions.is_empty() {
                    return Err(format!(
                        "{host} is not in this broker's allow-list (only ECR Public is allowed)"
                    ));
                }
                Ok(())
            }
        }
    }

    /// The allowed hosts that are not patterns (the helper's `list`).
    pub fn listed_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self
            .patterns
            .iter()
            .filter(|p| !p.iter().any(|l| l == "*"))
            .map(|p| p.join("."))
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }
}

/// A host or a pattern, lower case, split into labels.
pub(super) fn parse_pattern(p: &str) -> Result<Vec<String>, String> {
    let bad = |why: &str| {
        format!(
            "allow pattern {p:?} {why}; expected a registry host (123456789012.dkr.ecr.eu-west-1.amazonaws.com, registry.internal:5000) \
             or a pattern where * is one whole DNS label (*.dkr.ecr.eu-west-1.amazonaws.com)"
        )
    };
    if !p.contains('*') {
        let host = Host::parse(p).map_err(|e| bad(&format!("is not a host ({e})")))?;
        return Ok(host.as_str().split('.').map(str::to_string).collect());
    }
    let lower = p.trim().to_ascii_lowercase();
    let labels: Vec<String> = lower.split('.').map(str::to_string).collect();
    for l in &labels {
        if l.is_empty() {
            return Err(bad("has an empty label"));
        }
        if l.contains('*') && l != "*" {
            return Err(bad("uses * inside a label"));
        }
        if !l
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*' || b == b':')
        {
            return Err(bad("has a character no host name has"));
        }
    }
    if labels.iter().all(|l| l == "*") {
        return Err(bad("would allow every host"));
    }
    Ok(labels)
}

/// `*` matches exactly one label (never a port, never a dot).
pub(super) fn matches(pattern: &[String], host: &str) -> bool {
    let labels: Vec<&str> = host.split('.').collect();
    labels.len() == pattern.len()
        && pattern
            .iter()
            .zip(&labels)
            .all(|(p, l)| p == l || (p == "*" && !l.is_empty() && !l.contains(':')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CredentialSource;

    fn resolved(host: &str, target: Target) -> Resolved {
        Resolved {
            host: Host::parse(host).unwrap(),
            target,
            creds: CredentialSource::default(),
        }
    }

    fn ecr(host: &str) -> Resolved {
        let h = Host::parse(host).unwrap();
        let t = h.ecr_target().unwrap();
        resolved(host, t)
    }

    fn list(p: &[&str]) -> AllowList {
        let p: Vec<String> = p.iter().map(|s| s.to_string()).collect();
        AllowList::new(&p, &[], &[], false).unwrap()
    }

    #[test]
    fn a_star_is_one_dns_label() {
        let l = list(&["*.dkr.ecr.eu-west-1.amazonaws.com"]);
        for (host, ok) in [
            ("123456789012.dkr.ecr.eu-west-1.amazonaws.com", true),
            (
                "https://210987654321.dkr.ecr.eu-west-1.amazonaws.com/v2/",
                true,
            ),
            ("123456789012.dkr.ecr.us-east-1.amazonaws.com", false),
            ("123456789012.dkr.ecr-fips.eu-west-1.amazonaws.com", false),
        ] {
            assert_eq!(l.check(&ecr(host)).is_ok(), ok, "{host}");
        }
        // a look-alike with more labels is no match, and not ECR anyway
        assert!(!matches(
            &parse_pattern("*.dkr.ecr.eu-west-1.amazonaws.com").unwrap(),
            "a.123456789012.dkr.ecr.eu-west-1.amazonaws.com"
        ));
        // a star never swallows a port
        assert!(!matches(
            &parse_pattern("registry.*").unwrap(),
            "registry.internal:5000"
        ));
        assert!(matches(
            &parse_pattern("*.internal:5000").unwrap(),
            "registry.internal:5000"
        ));
    }

    #[test]
    fn mapped_hosts_count_by_their_own_name() {
        let l = list(&["Registry.Internal:5000"]);
        let target = Target::private("123456789012", "eu-west-1", false).unwrap();
        assert!(l
            .check(&resolved("registry.internal:5000", target.clone()))
            .is_ok());
        let e = l
            .check(&resolved("other.internal:5000", target))
            .unwrap_err();
        assert!(
            e.contains("other.internal:5000 is not in this broker's allow-list"),
            "{e}"
        );
        assert_eq!(l.listed_hosts(), vec!["registry.internal:5000".to_string()]);
    }

    #[test]
    fn accounts_regions_and_public() {
        let l =
            AllowList::new(&[], &["123456789012".into()], &["eu-west-1".into()], false).unwrap();
        assert!(l
            .check(&ecr("123456789012.dkr.ecr.eu-west-1.amazonaws.com"))
            .is_ok());
        let e = l
            .check(&ecr("210987654321.dkr.ecr.eu-west-1.amazonaws.com"))
            .unwrap_err();
        assert!(e.contains("account 210987654321"), "{e}");
        let e = l
            .check(&ecr("123456789012.dkr.ecr.us-east-1.amazonaws.com"))
            .unwrap_err();
        assert!(e.contains("region us-east-1"), "{e}");
        let e = l.check(&ecr("public.ecr.aws")).unwrap_err();
        assert!(e.contains("ECR Public is off"), "{e}");
        let p = AllowList::new(&[], &[], &[], true).unwrap();
        assert!(p.check(&ecr("public.ecr.aws")).is_ok());
        assert!(p
            .check(&ecr("123456789012.dkr.ecr.eu-west-1.amazonaws.com"))
            .is_err());
    }

    #[test]
    fn bad_or_missing_allow_lists_are_refused() {
        let e = AllowList::new(&[], &[], &[], false).unwrap_err();
        assert!(e.starts_with("no allow-list"), "{e}");
        for p in ["*", "*.*", "a*.example.com", "a..b", "bad host"] {
            let e = AllowList::new(&[p.to_string()], &[], &[], false).unwrap_err();
            assert!(e.contains(&format!("{p:?}")), "{p}: {e}");
        }
        let e = AllowList::new(&[], &["123".into()], &[], false).unwrap_err();
        assert!(e.contains("12 digits"), "{e}");
    }
}
