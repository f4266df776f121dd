//! The wiring a client will use: which config file is in effect for a host and
//! what it does with it — sends it to a credential helper (`credHelpers`,
//! `credsStore`) or holds a static `auths` entry (an ECR token in it is decoded
//! for its expiry, never shown).

use base64::Engine;

use super::checks::Context;
use super::report::Check;
use crate::dockercfg::DockerConfig;
use crate::registry::Host;

/// How a client will get credentials for the host from the Docker config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Helper { name: String, how: &'static str },
    Static,
}

/// 2. The wiring: which Docker config is in effect and what it does with the host.
pub(crate) fn wiring(cx: &Context, host: &Host) -> (Check, Option<Route>) {
    let path = cx.docker_config.join("config.json");
    let where_ = format!("{} ({})", path.display(), cx.docker_config_why);
    let doc = match DockerConfig::read(&path) {
        Ok(Some(doc)) => doc,
        Ok(None) => {
            return (
                Check::fail(
                    "wiring",
                    format!("{where_} does not exist: nothing sends {host} to a credential helper"),
                    format!("ecr-auth configure docker --registry {host}"),
                ),
                None,
            )
        }
        Err(e) => {
            return (
                Check::fail(
                    "wiring",
                    e.to_string(),
                    format!("fix the JSON in {}", path.display()),
                ),
                None,
            )
        }
    };
    let name = host.as_str();
    if let Some((_, helper)) = doc
        .cred_helpers()
        .into_iter()
        .find(|(h, _)| Host::parse(h).ok().as_ref() == Some(host))
    {
        return (
            Check::ok(
                "wiring",
                format!("{where_} sends {name} to docker-credential-{helper} (credHelpers)"),
            ),
            Some(Route::Helper {
                name: helper.to_string(),
                how: "credHelpers",
            }),
        );
    }
    let static_entry = doc
        .auth_hosts()
        .into_iter()
        .find(|h| Host::parse(h).ok().as_ref() == Some(host))
        .and_then(|h| doc.auth(h).map(str::to_string));
    if let Some(store) = doc.creds_store() {
        return (
            Check::ok(
                "wiring",
                format!("{where_} sends every registry to docker-credential-{store} (credsStore)"),
            ),
            Some(Route::Helper {
                name: store.to_string(),
                how: "credsStore",
            }),
        );
    }
    if let Some(auth) = static_entry {
        return match static_expiry(&auth) {
            Some(exp) if exp <= cx.tokens.now() => (
                Check::fail(
                    "wiring",
                    format!(
                        "{where_} has a static auths entry for {name} holding an ECR token that expired at {} (they last 12 h); no helper is set for it",
                        crate::tokens::format_time(exp)
                    ),
                    format!("remove that auths entry and use the helper: ecr-auth configure docker --registry {name}"),
                ),
                Some(Route::Static),
            ),
            Some(exp) => (
                Check::warn(
                    "wiring",
                    format!(
                        "{where_} has a static auths entry for {name}: an ECR token valid until {}, then pulls fail",
                        crate::tokens::format_time(exp)
                    ),
                    format!("use the helper instead: ecr-auth configure docker --registry {name}"),
                ),
                Some(Route::Static),
            ),
            None => (
                Check::warn(
                    "wiring",
                    format!("{where_} has a static auths entry for {name} (not an ECR token ecr-auth can read)"),
                    format!("use the helper instead: ecr-auth configure docker --registry {name}"),
                ),
                Some(Route::Static),
            ),
        };
    }
    (
        Check::fail(
            "wiring",
            format!(
                "{where_} neither sends {name} to a credential helper nor holds credentials for it"
            ),
            format!("ecr-auth configure docker --registry {name} (adds credHelpers)"),
        ),
        None,
    )
}

/// The expiry of an ECR token inside an `auths` entry, without showing it:
/// `auth` is base64("AWS:<password>") and the password base64 of JSON with
/// `expiration`.
pub(crate) fn static_expiry(auth: &str) -> Option<i64> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let plain = String::from_utf8(b64.decode(auth.trim()).ok()?).ok()?;
    let (_, password) = plain.split_once(':')?;
    let inner: serde_json::Value =
        serde_json::from_slice(&b64.decode(password.trim()).ok()?).ok()?;
    inner.get("expiration")?.as_i64()
}
