//! A credential source that failed, in words that say where (issue 7 §2). The SDK's
//! errors say what went wrong but not where: "could not parse profile file" without the
//! file or line, a bare "No such file or directory" for a web identity token file, "exit
//! status: 1. Stderr: …" for a `credential_process` with its newlines inside our one-line
//! error. On the failure path only, the shared config files are parsed again (aws-config's
//! own parser, over the same [`Env`]) and the error names the file and line, the profile,
//! the program or the variable, and what to do.
//!
//! Nothing found stays "not found" ([`TokenError::NoCredentials`], now with the
//! explanation): the helper answers the protocol's not-found and the client pulls
//! anonymously.

use aws_credential_types::provider::error::CredentialsError;

use super::{error_chain, identity, sdk_env, CHAIN_SOURCES};
use crate::env::Env;
use crate::tokens::TokenError;

/// The error for a credential source of the chain that failed with `e`. `source` names it
/// ([`identity::describe_source`]); `registry_profile` is the profile the registry's
/// config chose, if any (else the environment chooses).
pub(super) async fn source_error(
    env: &Env,
    registry_profile: Option<&str>,
    source: &str,
    e: CredentialsError,
) -> TokenError {
    let profiles = aws_config::profile::load(
        &aws_types::os_shim_internal::Fs::real(),
        &sdk_env(env),
        &aws_runtime::env_config::file::EnvConfigFiles::default(),
        registry_profile.map(|p| std::borrow::Cow::Owned(p.to_string())),
    )
    .await;
    let named = registry_profile.is_some()
        || env.get("AWS_PROFILE").is_some()
        || env.get("AWS_DEFAULT_PROFILE").is_some();
    let explained = match &profiles {
        Ok(set) => explain_source_failure(env, Ok(set), named, &e),
        Err(broken) => explain_source_failure(env, Err(one_line(&error_chain(broken))), named, &e),
    };
    match (&e, explained) {
        // Nothing found is "not found" for the faces (the helper answers so, and the
        // client pulls anonymously), however well it is explained.
        (CredentialsError::CredentialsNotLoaded(_), explained) => TokenError::NoCredentials {
            tried: if source.starts_with("profile") {
                source.to_string()
            } else {
                CHAIN_SOURCES.to_string()
            },
            explained,
        },
        (_, Some((cause, advice))) => TokenError::Aws {
            what: format!("loading AWS credentials ({source})"),
            cause,
            advice,
        },
        (_, None) => TokenError::Aws {
            what: format!("loading AWS credentials ({source})"),
            cause: sdk_words(&e),
            advice: "Fix that credential source (for SSO: `aws sso login`), or name another with AWS_PROFILE or the ecr-auth config file".into(),
        },
    }
}

/// The shared config files as [`explain_source_failure`] reads them: aws-config's
/// parse of them, or a table in the unit tests.
trait Profiles {
    /// The profile the chain used (AWS_PROFILE's, the registry's, else `default`).
    fn selected(&self) -> &str;
    fn exists(&self, profile: &str) -> bool;
    /// `key` of `profile`, if it exists and sets it.
    fn setting(&self, profile: &str, key: &str) -> Option<&str>;
}

impl Profiles for aws_config::profile::ProfileSet {
    fn selected(&self) -> &str {
        self.selected_profile()
    }
    fn exists(&self, profile: &str) -> bool {
        self.get_profile(profile).is_some()
    }
    fn setting(&self, profile: &str, key: &str) -> Option<&str> {
        self.get_profile(profile)?.get(key)
    }
}

/// The words of [`source_error`]: cause and advice, or `None` where the SDK's
/// error is all there is to say. `profiles` is the parsed files, or why they could not
/// be parsed; `named` says the profile was chosen (AWS_PROFILE, the registry's
/// config), not the default one.
fn explain_source_failure(
    env: &Env,
    profiles: Result<&dyn Profiles, String>,
    named: bool,
    e: &CredentialsError,
) -> Option<(String, String)> {
    let [config, credentials] = identity::profile_files(env);
    let (config, credentials) = (config.display(), credentials.display());
    let not_loaded = matches!(e, CredentialsError::CredentialsNotLoaded(_));
    let profiles = match profiles {
        Ok(p) => p,
        Err(broken) => {
            return Some((
                format!("cannot use the shared AWS config files: {broken}"),
                "Fix that line (the files use the AWS CLI's INI format), or point AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE at other files".into(),
            ))
        }
    };
    let unreadable = |file: &str, named: &str| {
        io_error_in(e).map(|io| {
            (
                format!("cannot read the web identity token file {file} ({named}): {io}"),
                "Check that the file exists and that the user running ecr-auth may read it (EKS and ECS write it for the pod or task; in a GitLab job use `ecr-auth gitlab login`)".to_string(),
            )
        })
    };
    let name = profiles.selected();
    if profiles.exists(name) {
        // The chain tries the selected profile before the web identity and container
        // variables, and stops at the first source that fails (rather than finds
        // nothing): a profile that holds a source of its own is the one that failed.
        let get = |key: &str| profiles.setting(name, key);
        if let Some(command) = get("credential_process") {
            // Only the program: its arguments may hold a secret.
            let program = command.split_whitespace().next().unwrap_or(command);
            let said = sdk_words(e);
            let said = said
                .trim_start_matches("Error retrieving credentials: ")
                .replace(
                    "external process exited with code exit status: ",
                    "it exited with status ",
                )
                .replace(". Stderr: ", " and wrote: ");
            return Some((
                format!("the credential_process of profile {name:?} (`{program}`) failed: {said}"),
                "Run that command yourself to see why (it must print credential_process JSON on stdout); fix it, or name another source with AWS_PROFILE or the ecr-auth config file".into(),
            ));
        }
        if get("sso_session").is_some() || get("sso_start_url").is_some() {
            return Some((
                sdk_words(e),
                "Log in again with `aws sso login` for that profile, or name another source with AWS_PROFILE or the ecr-auth config file".into(),
            ));
        }
        if let Some(file) = get("web_identity_token_file") {
            return unreadable(
                file,
                &format!("web_identity_token_file of profile {name:?}"),
            );
        }
        if let Some(source) = get("source_profile").filter(|s| !profiles.exists(s)) {
            return Some((
                format!("profile {name:?} takes its credentials from source_profile {source:?}, which is in neither {config} nor {credentials}"),
                "Add that profile, or fix source_profile".into(),
            ));
        }
        if matches!(e, CredentialsError::InvalidConfiguration(_)) {
            return Some((
                sdk_words(e),
                format!("Fix profile {name:?} in {config} (or {credentials})"),
            ));
        }
    } else if named && not_loaded {
        return Some((
            format!("profile {name:?} is in neither {config} nor {credentials}"),
            "Check its name (`aws configure list-profiles` lists them), or point AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE at the files that have it".into(),
        ));
    }
    if let Some(explained) = env
        .get("AWS_WEB_IDENTITY_TOKEN_FILE")
        .and_then(|file| unreadable(file, "AWS_WEB_IDENTITY_TOKEN_FILE"))
    {
        return Some(explained);
    }
    let container = [
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", ""),
        // ECS's own address, which the SDK puts in front of the relative path.
        (
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "http://169.254.170.2",
        ),
    ]
    .into_iter()
    .find_map(|(var, base)| env.get(var).map(|v| (var, format!("{base}{v}"))));
    if let (Some((var, uri)), false) = (container, not_loaded) {
        return Some((
            format!(
                "cannot get credentials from the container credentials endpoint {uri} ({var}): {}",
                innermost_cause(e).unwrap_or_else(|| sdk_words(e))
            ),
            "ECS and EKS set that variable for a task or pod, and their agent answers it; outside one, unset it".into(),
        ));
    }
    let key = env.get("AWS_ACCESS_KEY_ID").is_some();
    let secret = env.get("AWS_SECRET_ACCESS_KEY").is_some();
    if not_loaded && key != secret {
        let (set, unset) = if key {
            ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        } else {
            ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID")
        };
        return Some((
            format!("{set} is set but {unset} is not (or is empty), and no other source has credentials"),
            format!("Set {unset} too (and AWS_SESSION_TOKEN for temporary keys), or unset {set} to use another source"),
        ));
    }
    None
}

/// The `io::Error` under a credentials error, if one caused it.
fn io_error_in<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e std::io::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        next = err.source();
    }
    None
}

/// The innermost error of `e`'s chain (`e` itself included) that says something: it
/// names the cause best ("Connection refused (os error 111)"); the layers above it are
/// the SDK's plumbing. On one line; `None` when nothing in the chain has words.
pub(super) fn innermost_cause(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut last = None;
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !text.is_empty() {
            last = Some(text);
        }
        next = err.source();
    }
    last.map(|t| one_line(&t))
}

/// A credentials error's chain ([`error_chain`]) on one line, without the SDK's
/// wrappers ("an error occurred while loading credentials", "the credentials provider
/// was not properly configured", …: the sentence around it already says so), and
/// without a trailing full stop.
fn sdk_words(e: &CredentialsError) -> String {
    let mut words = one_line(&error_chain(e));
    for wrapper in [
        "an error occurred while loading credentials: ",
        "the credentials provider was not properly configured: ",
        "ProfileFile provider could not be built: ",
    ] {
        if let Some(rest) = words.strip_prefix(wrapper) {
            words = rest.to_string();
        }
    }
    words
}

/// `text` on one line (runs of white space, newlines included, become one space),
/// without a trailing full stop: it goes inside a sentence of ours.
fn one_line(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    line.trim_end_matches([' ', '.']).to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Profile files as a table: the selected profile and each profile's settings.
    struct Table {
        selected: &'static str,
        profiles: HashMap<&'static str, HashMap<&'static str, &'static str>>,
    }

    impl Profiles for Table {
        fn selected(&self) -> &str {
            self.selected
        }
        fn exists(&self, profile: &str) -> bool {
            self.profiles.contains_key(profile)
        }
        fn setting(&self, profile: &str, key: &str) -> Option<&str> {
            self.profiles.get(profile)?.get(key).copied()
        }
    }

    fn table(
        selected: &'static str,
        profiles: &[(&'static str, &[(&'static str, &'static str)])],
    ) -> Table {
        Table {
            selected,
            profiles: profiles
                .iter()
                .map(|(name, settings)| (*name, settings.iter().copied().collect()))
                .collect(),
        }
    }

    fn explain(
        env: &[(&str, &str)],
        profiles: &Table,
        named: bool,
        e: &CredentialsError,
    ) -> Option<(String, String)> {
        let mut env = Env::from_pairs(env.iter().map(|(k, v)| (*k, *v)));
        env.set("HOME", "/home/u");
        explain_source_failure(&env, Ok(profiles), named, e)
    }

    fn not_found() -> CredentialsError {
        CredentialsError::provider_error(std::io::Error::from(std::io::ErrorKind::NotFound))
    }

    fn not_loaded() -> CredentialsError {
        CredentialsError::not_loaded("nothing here")
    }

    #[test]
    fn a_failing_credential_process_is_named_by_its_program_never_its_arguments() {
        // The SDK's words for a process that exits 3, its stderr ending in a newline.
        let e = CredentialsError::provider_error(
            "Error retrieving credentials: external process exited with code exit status: 3. Stderr: token expired\nrun login again\n.",
        );
        let profiles = table(
            "ci",
            &[(
                "ci",
                &[("credential_process", "/opt/bin/vault-creds --token s3cr3t")],
            )],
        );
        let (cause, advice) = explain(&[], &profiles, true, &e).unwrap();
        assert_eq!(
            cause,
            "the credential_process of profile \"ci\" (`/opt/bin/vault-creds`) failed: it exited with status 3 and wrote: token expired run login again"
        );
        assert!(advice.contains("Run that command yourself"), "{advice}");
    }

    #[test]
    fn an_unreadable_web_identity_token_file_is_named_by_its_path_and_setting() {
        let profiles = table(
            "eks",
            &[(
                "eks",
                &[
                    ("web_identity_token_file", "/var/run/secrets/token"),
                    ("role_arn", "arn:aws:iam::1:role/r"),
                ],
            )],
        );
        let (cause, _) = explain(&[], &profiles, true, &not_found()).unwrap();
        assert!(
            cause.starts_with("cannot read the web identity token file /var/run/secrets/token (web_identity_token_file of profile \"eks\"): "),
            "{cause}"
        );
        let none = table("default", &[]);
        let env = [("AWS_WEB_IDENTITY_TOKEN_FILE", "/tmp/tok")];
        let (cause, _) = explain(&env, &none, false, &not_found()).unwrap();
        assert!(
            cause.starts_with(
                "cannot read the web identity token file /tmp/tok (AWS_WEB_IDENTITY_TOKEN_FILE): "
            ),
            "{cause}"
        );
    }

    #[test]
    fn a_profile_with_its_own_source_is_the_one_that_failed_not_the_token_variable() {
        // An SSO profile whose cache file is missing, with AWS_WEB_IDENTITY_TOKEN_FILE set too:
        // the chain stopped at the profile.
        let profiles = table("dev", &[("dev", &[("sso_session", "corp")])]);
        let env = [("AWS_WEB_IDENTITY_TOKEN_FILE", "/tmp/tok")];
        let (cause, advice) = explain(&env, &profiles, true, &not_found()).unwrap();
        assert!(!cause.contains("/tmp/tok"), "{cause}");
        assert!(advice.contains("aws sso login"), "{advice}");
    }

    #[test]
    fn a_named_profile_that_is_nowhere_says_which_files_were_read() {
        let env = [("AWS_CONFIG_FILE", "/etc/aws/config")];
        let profiles = table("prod", &[("dev", &[])]);
        let (cause, advice) = explain(&env, &profiles, true, &not_loaded()).unwrap();
        assert_eq!(
            cause,
            "profile \"prod\" is in neither /etc/aws/config nor /home/u/.aws/credentials"
        );
        assert!(advice.contains("list-profiles"), "{advice}");
        // The default profile, missing, is just one source of the chain that had nothing.
        let profiles = table("default", &[]);
        assert_eq!(explain(&env, &profiles, false, &not_loaded()), None);

        let profiles = table(
            "app",
            &[(
                "app",
                &[
                    ("role_arn", "arn:aws:iam::1:role/r"),
                    ("source_profile", "base"),
                ],
            )],
        );
        let (cause, _) = explain(&[], &profiles, true, &not_loaded()).unwrap();
        assert_eq!(
            cause,
            "profile \"app\" takes its credentials from source_profile \"base\", which is in neither /home/u/.aws/config nor /home/u/.aws/credentials"
        );
    }

    #[test]
    fn unparsable_files_container_endpoints_and_half_keys_are_said_plainly() {
        let env = Env::from_pairs([("HOME", "/home/u")]);
        let (cause, _) = explain_source_failure(
            &env,
            Err("could not parse profile file: error parsing /home/u/.aws/config on line 3: Profile definition must end with ']'".into()),
            false,
            &not_loaded(),
        )
        .unwrap();
        assert!(cause.contains("/home/u/.aws/config on line 3"), "{cause}");

        let none = table("default", &[]);
        let e = CredentialsError::provider_error(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        ));
        let env = [(
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "/v2/credentials/x",
        )];
        let (cause, _) = explain(&env, &none, false, &e).unwrap();
        assert_eq!(
            cause,
            "cannot get credentials from the container credentials endpoint http://169.254.170.2/v2/credentials/x (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI): Connection refused (os error 111)"
        );

        let env = [("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")];
        let (cause, advice) = explain(&env, &none, false, &not_loaded()).unwrap();
        assert!(
            cause.starts_with("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"),
            "{cause}"
        );
        assert!(!cause.contains("AKIAEXAMPLE") && !advice.contains("AKIAEXAMPLE"));
    }

    #[test]
    fn what_nothing_explains_is_left_to_the_sdk_words() {
        let keys = table("keys", &[("keys", &[("aws_access_key_id", "AKIA")])]);
        assert_eq!(explain(&[], &keys, true, &not_found()), None);
        // A token variable, but the failure is not about reading a file.
        let none = table("default", &[]);
        let e = CredentialsError::provider_error("STS said no");
        let env = [("AWS_WEB_IDENTITY_TOKEN_FILE", "/tmp/tok")];
        assert_eq!(explain(&env, &none, false, &e), None);
        assert_eq!(
            sdk_words(&CredentialsError::invalid_configuration(
                "ProfileFile provider could not be built: two\nlines."
            )),
            "two lines"
        );
    }
}
