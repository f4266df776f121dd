//! A cheap fingerprint of "who would AWS think we are", computed without
//! resolving credentials: the cache key of the warm path.
//!
//! It mirrors the order of the AWS default credential chain (environment keys,
//! then the profile files, web identity, container and instance credentials) and
//! mixes in everything that changes the answer: the profile name and a hash of
//! the shared config files, a configured role, endpoint overrides. Key material
//! is never stored: only a SHA-256 of the access key id goes into the key.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::WebIdentity;
use crate::config::CredentialSource;
use crate::env::Env;
use crate::registry::Target;

/// Variables that redirect the AWS API: tokens from a different endpoint are
/// different tokens.
const ENDPOINT_VARS: &[&str] = &[
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_ECR",
    "AWS_ENDPOINT_URL_ECR_PUBLIC",
    "AWS_ENDPOINT_URL_STS",
    "AWS_USE_FIPS_ENDPOINT",
];

/// The cache key for a token: hex SHA-256 (first 128 bits) of identity and scope.
pub fn cache_key(
    env: &Env,
    base: Option<&WebIdentity>,
    creds: &CredentialSource,
    target: &Target,
) -> String {
    let mut h = Sha256::new();
    feed(&mut h, "scope", &target.scope());
    match base {
        // The web identity replaces the whole default chain.
        Some(w) => {
            feed(&mut h, "web-identity-role", &w.role_arn);
            feed(
                &mut h,
                "web-identity-token",
                &hex::encode(Sha256::digest(w.token.expose().as_bytes())),
            );
            if let Some(role) = &creds.role_arn {
                feed(&mut h, "role", role);
            }
            for var in ENDPOINT_VARS {
                if let Some(v) = env.get(var) {
                    feed(&mut h, var, v);
                }
            }
        }
        None => feed_identity(&mut h, env, creds),
    }
    hex::encode(&h.finalize()[..16])
}

fn feed_identity(h: &mut Sha256, env: &Env, creds: &CredentialSource) {
    if let Some(role) = &creds.role_arn {
        feed(h, "role", role);
    }
    for var in ENDPOINT_VARS {
        if let Some(v) = env.get(var) {
            feed(h, var, v);
        }
    }
    if let Some(profile) = &creds.profile {
        feed(h, "profile", profile);
        feed_profile_files(h, env);
        return;
    }
    if let Some(akid) = env.get("AWS_ACCESS_KEY_ID") {
        feed(h, "env-key", &hex::encode(Sha256::digest(akid.as_bytes())));
        return;
    }
    let profile = env
        .get("AWS_PROFILE")
        .or_else(|| env.get("AWS_DEFAULT_PROFILE"))
        .unwrap_or("default");
    feed(h, "profile", profile);
    feed_profile_files(h, env);
    for var in [
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_EC2_METADATA_DISABLED",
    ] {
        if let Some(v) = env.get(var) {
            feed(h, var, v);
        }
    }
}

/// The credential source a fetch will use, by name (never a secret): for
/// messages. Mirrors the order of the chain, as the cache key does.
pub fn describe_source(env: &Env, base: Option<&WebIdentity>, creds: &CredentialSource) -> String {
    let base_name = if let Some(w) = base {
        format!("GitLab OIDC web identity for {}", w.role_arn)
    } else if let Some(p) = &creds.profile {
        format!("profile {p:?} of the shared AWS config files")
    } else if let Some(akid) = env.get("AWS_ACCESS_KEY_ID") {
        let tail: String = akid
            .chars()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("environment variables (AWS_ACCESS_KEY_ID ending in {tail})")
    } else if let Some(p) = env
        .get("AWS_PROFILE")
        .or_else(|| env.get("AWS_DEFAULT_PROFILE"))
    {
        format!("profile {p:?} (AWS_PROFILE)")
    } else if env.get("AWS_WEB_IDENTITY_TOKEN_FILE").is_some() {
        "web identity (AWS_WEB_IDENTITY_TOKEN_FILE)".to_string()
    } else if env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some()
        || env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some()
    {
        "ECS/EKS container credentials".to_string()
    } else {
        "the AWS default chain (default profile, then instance metadata)".to_string()
    };
    match &creds.role_arn {
        Some(role) => format!("role {role} assumed with {base_name}"),
        None => base_name,
    }
}

/// The shared config and credentials files: editing either changes the key.
fn feed_profile_files(h: &mut Sha256, env: &Env) {
    for path in profile_files(env) {
        match std::fs::read(&path) {
            Ok(bytes) => feed(h, "file", &hex::encode(Sha256::digest(&bytes))),
            Err(_) => feed(h, "file", "-"),
        }
    }
}

pub fn profile_files(env: &Env) -> [PathBuf; 2] {
    let home = env.home().unwrap_or_default();
    [
        env.get("AWS_CONFIG_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".aws/config")),
        env.get("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".aws/credentials")),
    ]
}

fn feed(h: &mut Sha256, name: &str, value: &str) {
    h.update(name.as_bytes());
    h.update([0]);
    h.update(value.as_bytes());
    h.update([0]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(region: &str) -> Target {
        Target::private("123456789012", region, false).unwrap()
    }

    #[test]
    fn key_depends_on_identity_and_scope_only() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().to_str().unwrap();
        let a = Env::from_pairs([("HOME", home), ("AWS_ACCESS_KEY_ID", "AKIAAAAA")]);
        let b = Env::from_pairs([("HOME", home), ("AWS_ACCESS_KEY_ID", "AKIABBBB")]);
        let none = CredentialSource::default();
        let k = cache_key(&a, None, &none, &t("eu-west-1"));
        assert_eq!(k.len(), 32);
        assert_eq!(k, cache_key(&a, None, &none, &t("eu-west-1")));
        // another account in the same region shares the token
        let other = Target::private("210987654321", "eu-west-1", false).unwrap();
        assert_eq!(k, cache_key(&a, None, &none, &other));
        assert_ne!(k, cache_key(&b, None, &none, &t("eu-west-1")));
        assert_ne!(k, cache_key(&a, None, &none, &t("us-east-1")));
        let role = CredentialSource {
            role_arn: Some("arn:aws:iam::1:role/x".into()),
            profile: None,
        };
        assert_ne!(k, cache_key(&a, None, &role, &t("eu-west-1")));
        let mut moto = a.clone();
        moto.set("AWS_ENDPOINT_URL", "http://127.0.0.1:5000");
        assert_ne!(k, cache_key(&moto, None, &none, &t("eu-west-1")));
        // the access key id itself never appears in the key
        assert!(!k.contains("AKIA"));
    }

    #[test]
    fn editing_the_profile_files_changes_the_key() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join(".aws")).unwrap();
        let env = Env::from_pairs([
            ("HOME", tmp.path().to_str().unwrap()),
            ("AWS_PROFILE", "prod"),
        ]);
        let none = CredentialSource::default();
        let before = cache_key(&env, None, &none, &t("eu-west-1"));
        std::fs::write(
            tmp.path().join(".aws/config"),
            "[profile prod]\nrole_arn=x\n",
        )
        .unwrap();
        let after = cache_key(&env, None, &none, &t("eu-west-1"));
        assert_ne!(before, after);
        let mut dev = env.clone();
        dev.set("AWS_PROFILE", "dev");
        assert_ne!(after, cache_key(&dev, None, &none, &t("eu-west-1")));
    }
}
