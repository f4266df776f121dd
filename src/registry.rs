//! Registry host names: which ones are Amazon ECR, and where their token comes from.
//!
//! Parsed by hand rather than with a regex: this runs on the credential helper's
//! warm path, where compiling a regex would cost more than the whole lookup.

use std::fmt;

/// The ECR host suffixes, with the AWS partition each belongs to.
/// `dual` marks the suffixes of the dual-stack (`dkr-ecr`) endpoints.
const SUFFIXES: &[(&str, &str, bool)] = &[
    ("amazonaws.com", "aws", false),
    ("amazonaws.com.cn", "aws-cn", false),
    ("amazonaws.eu", "aws-eusc", false),
    ("on.aws", "aws", true),
    ("on.amazonwebservices.com.cn", "aws-cn", true),
    ("c2s.ic.gov", "aws-iso", false),
    ("sc2s.sgov.gov", "aws-iso-b", false),
    ("cloud.adc-e.uk", "aws-iso-e", false),
    ("csp.hci.ic.gov", "aws-iso-f", false),
];

/// ECR Public's registry hosts. Its API lives in us-east-1 only.
pub const PUBLIC_HOSTS: &[&str] = &["public.ecr.aws", "ecr-public.aws.com"];
pub const PUBLIC_REGION: &str = "us-east-1";

/// Where a token for a registry comes from: one token serves every registry of a
/// (credential identity, partition, region, fips) — other accounts included.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Private {
        account: String,
        region: String,
        partition: String,
        fips: bool,
    },
    Public,
}

impl Target {
    pub fn region(&self) -> &str {
        match self {
            Target::Private { region, .. } => region,
            Target::Public => PUBLIC_REGION,
        }
    }

    pub fn fips(&self) -> bool {
        matches!(self, Target::Private { fips: true, .. })
    }

    pub fn partition(&self) -> &str {
        match self {
            Target::Private { partition, .. } => partition,
            Target::Public => "aws",
        }
    }

    /// The token scope, which names the cache entry: everything but the account.
    pub fn scope(&self) -> String {
        match self {
            Target::Private {
                region,
                partition,
                fips,
                ..
            } => format!("{partition}/{region}{}", if *fips { "/fips" } else { "" }),
            Target::Public => format!("public/{PUBLIC_REGION}"),
        }
    }

    /// A private target for a whole region (`get-login-password --region`):
    /// the token serves every account's registry there.
    pub fn region_only(region: &str, fips: bool) -> Result<Target, RegistryError> {
        Target::private("000000000000", region, fips).map(|t| match t {
            Target::Private {
                region,
                partition,
                fips,
                ..
            } => Target::Private {
                account: String::new(),
                region,
                partition,
                fips,
            },
            public => public,
        })
    }

    /// Builds a private target from an account and region given by the user
    /// (the config file): checks both, derives the partition from the region.
    pub fn private(account: &str, region: &str, fips: bool) -> Result<Target, RegistryError> {
        if !is_account(account) {
            return Err(RegistryError::BadAccount(account.to_string()));
        }
        if !is_region(region) {
            return Err(RegistryError::BadRegion(region.to_string()));
        }
        Ok(Target::Private {
            account: account.to_string(),
            region: region.to_string(),
            partition: partition_of_region(region).to_string(),
            fips,
        })
    }
}

/// A host name that clients use, normalised: lower case, no scheme, no path,
/// the port kept (`registry.internal:5000`), `:443` dropped.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Host(String);

impl Host {
    /// Accepts what docker, gitlab-runner and users pass: surrounding white space,
    /// `https://`/`http://`, upper case, a port, a path (`/v2/`, `/repo:tag`).
    pub fn parse(input: &str) -> Result<Host, RegistryError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(RegistryError::Empty);
        }
        let lower = s.to_ascii_lowercase();
        let rest = lower
            .strip_prefix("https://")
            .or_else(|| lower.strip_prefix("http://"))
            .unwrap_or(&lower);
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let (name, port) = match authority.rsplit_once(':') {
            Some((n, p)) => {
                if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(RegistryError::Malformed(input.trim().to_string()));
                }
                if p.parse::<u32>().map_or(true, |n| n == 0 || n > 65535) {
                    return Err(RegistryError::Malformed(input.trim().to_string()));
                }
                (n, Some(p))
            }
            None => (authority, None),
        };
        let valid = !name.is_empty()
            && name.len() <= 253
            && !name.starts_with('.')
            && !name.ends_with('.')
            && !name.contains("..")
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if !valid {
            return Err(RegistryError::Malformed(input.trim().to_string()));
        }
        Ok(match port {
            Some("443") | None => Host(name.to_string()),
            Some(p) => Host(format!("{name}:{p}")),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host name without the port.
    pub fn name(&self) -> &str {
        self.0.split(':').next().unwrap_or(&self.0)
    }

    /// If this is an Amazon ECR host name, the token it needs.
    pub fn ecr_target(&self) -> Option<Target> {
        if self.0.contains(':') {
            // Real ECR endpoints are served on 443 only; `host:5000` is something else.
            return None;
        }
        parse_ecr(&self.0)
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("no registry host given")]
    Empty,
    #[error("{0:?} is not a registry host name (expected e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com)")]
    Malformed(String),
    #[error("{0:?} is not an AWS account id (12 digits)")]
    BadAccount(String),
    #[error("{0:?} is not an AWS region name (e.g. eu-west-1)")]
    BadRegion(String),
}

fn parse_ecr(name: &str) -> Option<Target> {
    if PUBLIC_HOSTS.contains(&name) {
        return Some(Target::Public);
    }
    // <account>.<dkr.ecr|dkr-ecr>[-fips].<region>.<suffix>
    let (account, rest) = name.split_once('.')?;
    if !is_account(account) {
        return None;
    }
    let (dual, rest) = if let Some(r) = rest.strip_prefix("dkr.ecr") {
        (false, r)
    } else if let Some(r) = rest.strip_prefix("dkr-ecr") {
        (true, r)
    } else {
        return None;
    };
    let (fips, rest) = match rest.strip_prefix("-fips") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let rest = rest.strip_prefix('.')?;
    let (region, suffix) = rest.split_once('.')?;
    if !is_region(region) {
        return None;
    }
    let &(_, partition, dual_suffix) = SUFFIXES.iter().find(|(s, _, _)| *s == suffix)?;
    // dkr-ecr names exist only under the dual-stack suffixes, dkr.ecr only
    // under the others.
    if dual != dual_suffix {
        return None;
    }
    let partition = if partition == "aws" && region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        partition
    };
    Some(Target::Private {
        account: account.to_string(),
        region: region.to_string(),
        partition: partition.to_string(),
        fips,
    })
}

fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// `eu-west-1`, `us-gov-west-1`, `cn-north-1`, `us-isob-east-1`, `eusc-de-east-1`.
fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts[0].len() >= 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].len() <= 2
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
}

fn partition_of_region(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else if region.starts_with("us-isob-") {
        "aws-iso-b"
    } else if region.starts_with("us-isof-") {
        "aws-iso-f"
    } else if region.starts_with("us-iso-") {
        "aws-iso"
    } else if region.starts_with("eu-isoe-") {
        "aws-iso-e"
    } else if region.starts_with("eusc-") {
        "aws-eusc"
    } else {
        "aws"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private(account: &str, region: &str, partition: &str, fips: bool) -> Option<Target> {
        Some(Target::Private {
            account: account.into(),
            region: region.into(),
            partition: partition.into(),
            fips,
        })
    }

    #[test]
    fn ecr_hosts_table() {
        let a = "123456789012";
        #[rustfmt::skip]
        let cases: Vec<(&str, Option<Target>)> = vec![
            // commercial
            ("123456789012.dkr.ecr.eu-west-1.amazonaws.com", private(a, "eu-west-1", "aws", false)),
            ("123456789012.dkr.ecr.us-east-1.amazonaws.com", private(a, "us-east-1", "aws", false)),
            ("123456789012.dkr.ecr.ap-southeast-2.amazonaws.com", private(a, "ap-southeast-2", "aws", false)),
            ("123456789012.dkr.ecr.il-central-1.amazonaws.com", private(a, "il-central-1", "aws", false)),
            // scheme, case, port 443, path, white space
            ("https://123456789012.dkr.ecr.eu-west-1.amazonaws.com", private(a, "eu-west-1", "aws", false)),
            ("http://123456789012.dkr.ecr.eu-west-1.amazonaws.com/", private(a, "eu-west-1", "aws", false)),
            ("HTTPS://123456789012.DKR.ECR.EU-WEST-1.AMAZONAWS.COM", private(a, "eu-west-1", "aws", false)),
            ("123456789012.dkr.ecr.eu-west-1.amazonaws.com:443", private(a, "eu-west-1", "aws", false)),
            ("  123456789012.dkr.ecr.eu-west-1.amazonaws.com\n", private(a, "eu-west-1", "aws", false)),
            ("https://123456789012.dkr.ecr.eu-west-1.amazonaws.com/v2/", private(a, "eu-west-1", "aws", false)),
            ("123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app:1.2", private(a, "eu-west-1", "aws", false)),
            // FIPS
            ("123456789012.dkr.ecr-fips.us-east-1.amazonaws.com", private(a, "us-east-1", "aws", true)),
            ("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com", private(a, "us-gov-west-1", "aws-us-gov", true)),
            // GovCloud
            ("123456789012.dkr.ecr.us-gov-east-1.amazonaws.com", private(a, "us-gov-east-1", "aws-us-gov", false)),
            // dual-stack
            ("123456789012.dkr-ecr.eu-west-1.on.aws", private(a, "eu-west-1", "aws", false)),
            ("123456789012.dkr-ecr-fips.us-east-1.on.aws", private(a, "us-east-1", "aws", true)),
            ("123456789012.dkr-ecr.us-gov-west-1.on.aws", private(a, "us-gov-west-1", "aws-us-gov", false)),
            ("123456789012.dkr-ecr.cn-north-1.on.amazonwebservices.com.cn", private(a, "cn-north-1", "aws-cn", false)),
            // China
            ("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn", private(a, "cn-north-1", "aws-cn", false)),
            ("123456789012.dkr.ecr.cn-northwest-1.amazonaws.com.cn", private(a, "cn-northwest-1", "aws-cn", false)),
            // European Sovereign Cloud
            ("123456789012.dkr.ecr.eusc-de-east-1.amazonaws.eu", private(a, "eusc-de-east-1", "aws-eusc", false)),
            // ISO partitions
            ("123456789012.dkr.ecr.us-iso-east-1.c2s.ic.gov", private(a, "us-iso-east-1", "aws-iso", false)),
            ("123456789012.dkr.ecr.us-isob-east-1.sc2s.sgov.gov", private(a, "us-isob-east-1", "aws-iso-b", false)),
            ("123456789012.dkr.ecr.eu-isoe-west-1.cloud.adc-e.uk", private(a, "eu-isoe-west-1", "aws-iso-e", false)),
            ("123456789012.dkr.ecr.us-isof-south-1.csp.hci.ic.gov", private(a, "us-isof-south-1", "aws-iso-f", false)),
            // ECR Public
            ("public.ecr.aws", Some(Target::Public)),
            ("https://public.ecr.aws/", Some(Target::Public)),
            ("PUBLIC.ECR.AWS", Some(Target::Public)),
            ("ecr-public.aws.com", Some(Target::Public)),
            ("public.ecr.aws/docker/library/alpine:3", Some(Target::Public)),
            // look-alikes and other registries
            ("123456789012.dkr.ecr.eu-west-1.amazonaws.com.evil.example", None),
            ("evil.example/123456789012.dkr.ecr.eu-west-1.amazonaws.com", None),
            ("123456789012.dkr.ecr.eu-west-1.amazonaws.co", None),
            ("123456789012.dkr.ecr.eu-west-1.amazonaws.com.cn.evil", None),
            ("x123456789012.dkr.ecr.eu-west-1.amazonaws.com", None),
            ("12345678901.dkr.ecr.eu-west-1.amazonaws.com", None),
            ("1234567890123.dkr.ecr.eu-west-1.amazonaws.com", None),
            ("abcdefghijkl.dkr.ecr.eu-west-1.amazonaws.com", None),
            ("123456789012.dkr.ecr.amazonaws.com", None),
            ("123456789012.dkr.ecr..amazonaws.com", None),
            ("123456789012.ecr.eu-west-1.amazonaws.com", None),
            ("123456789012.dkr.ecr.eu_west_1.amazonaws.com", None),
            ("123456789012.dkr.ecr.eu-west-x.amazonaws.com", None),
            ("123456789012.dkr.ecr.eu-west-1.on.aws", None),
            ("123456789012.dkr-ecr.eu-west-1.amazonaws.com", None),
            ("123456789012.dkr.ecr.cn-north-1.on.amazonwebservices.com.cn", None),
            ("123456789012.dkr.ecr-fipsx.us-east-1.amazonaws.com", None),
            ("123456789012.dkr.ecr.eu-west-1.amazonaws.com:5000", None),
            ("public.ecr.aws.evil.example", None),
            ("notpublic.ecr.aws", None),
            ("ecr.aws", None),
            ("docker.io", None),
            ("registry-1.docker.io", None),
            ("index.docker.io/v1/", None),
            ("ghcr.io", None),
            ("registry.gitlab.com", None),
            ("localhost:5000", None),
            ("127.0.0.1:5000", None),
        ];
        for (input, want) in &cases {
            let got = Host::parse(input).ok().and_then(|h| h.ecr_target());
            assert_eq!(&got, want, "input {input:?}");
        }
        // The table accepts a host under every suffix and every public host the parser
        // knows (plain, FIPS and dual-stack forms), so none can be added untested.
        let accepted: Vec<(Host, &Target)> = cases
            .iter()
            .filter_map(|(input, want)| Some((Host::parse(input).ok()?, want.as_ref()?)))
            .collect();
        for (suffix, partition, dual) in SUFFIXES {
            let covered = accepted.iter().any(|(h, t)| {
                h.name().ends_with(&format!(".{suffix}"))
                    && h.name()
                        .contains(if *dual { ".dkr-ecr" } else { ".dkr.ecr" })
                    && !t.fips()
                    && t.partition() == *partition
            });
            assert!(covered, "no accepted row for the suffix {suffix}");
        }
        for fips_form in ["dkr.ecr-fips.", "dkr-ecr-fips."] {
            assert!(
                accepted
                    .iter()
                    .any(|(h, t)| h.name().contains(fips_form) && t.fips()),
                "no accepted row for {fips_form}"
            );
        }
        for public in PUBLIC_HOSTS {
            assert!(
                accepted
                    .iter()
                    .any(|(h, t)| h.name() == *public && **t == Target::Public),
                "no accepted row for {public}"
            );
        }
    }

    #[test]
    fn host_normalisation_table() {
        let cases = [
            ("registry.internal:5000", Ok("registry.internal:5000")),
            (
                "HTTPS://Registry.Internal:5000/v2/",
                Ok("registry.internal:5000"),
            ),
            ("registry.internal:443", Ok("registry.internal")),
            ("localhost", Ok("localhost")),
            ("127.0.0.1:5000/repo/image:tag", Ok("127.0.0.1:5000")),
            ("", Err(RegistryError::Empty)),
            ("   \n", Err(RegistryError::Empty)),
            ("host:", Err(RegistryError::Malformed("host:".into()))),
            (
                "host:99999",
                Err(RegistryError::Malformed("host:99999".into())),
            ),
            ("host:0", Err(RegistryError::Malformed("host:0".into()))),
            ("host:abc", Err(RegistryError::Malformed("host:abc".into()))),
            ("bad host", Err(RegistryError::Malformed("bad host".into()))),
            ("a..b", Err(RegistryError::Malformed("a..b".into()))),
            (
                "\u{0}\u{1}garbage",
                Err(RegistryError::Malformed("\u{0}\u{1}garbage".into())),
            ),
            ("https://", Err(RegistryError::Malformed("https://".into()))),
            (
                "user@host",
                Err(RegistryError::Malformed("user@host".into())),
            ),
        ];
        for (input, want) in cases {
            let got = Host::parse(input);
            assert_eq!(
                got.as_ref().map(Host::as_str).map_err(Clone::clone),
                want.map_err(|e: RegistryError| e),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn explicit_targets_check_account_and_region() {
        assert_eq!(
            Target::private("123456789012", "cn-north-1", false)
                .unwrap()
                .partition(),
            "aws-cn"
        );
        assert_eq!(
            Target::private("12345", "eu-west-1", false),
            Err(RegistryError::BadAccount("12345".into()))
        );
        assert_eq!(
            Target::private("123456789012", "Europe", false),
            Err(RegistryError::BadRegion("Europe".into()))
        );
    }

    #[test]
    fn scopes_share_a_token_across_accounts() {
        let a = Host::parse("111111111111.dkr.ecr.eu-west-1.amazonaws.com").unwrap();
        let b = Host::parse("222222222222.dkr.ecr.eu-west-1.amazonaws.com").unwrap();
        let c = Host::parse("222222222222.dkr.ecr-fips.us-east-1.amazonaws.com").unwrap();
        assert_eq!(
            a.ecr_target().unwrap().scope(),
            b.ecr_target().unwrap().scope()
        );
        assert_eq!(c.ecr_target().unwrap().scope(), "aws/us-east-1/fips");
        assert_eq!(Target::Public.scope(), "public/us-east-1");
    }
}
