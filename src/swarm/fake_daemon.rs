//! Docker's answers, for the fake Swarms of the unit tests (`step::tests`, the 48-hour
//! `simulation`): a service as the daemon lists it, "not found", "update out of
//! sequence", and the `X-Registry-Auth` an update carried, read back. Each fake keeps
//! its own store; what a daemon says is written once, here.

use base64::Engine;
use serde_json::value::RawValue;

use super::docker::{DockerError, Service};
use crate::secret::Secret;

/// A service as `GET /services` gives it: `extra` is more top-level JSON members
/// (`,"UpdateStatus":{…}`) or empty.
pub(super) fn service(id: &str, version: u64, spec: &str, extra: &str) -> Service {
    let raw = format!(r#"{{"ID":"{id}","Version":{{"Index":{version}}},"Spec":{spec}{extra}}}"#);
    let value: Box<RawValue> = serde_json::from_str(&raw).expect("service JSON");
    Service::from_json(&value).expect("service")
}

/// The daemon's 404 for `what` (`GET /services/ID`, `POST /services/ID/update`).
pub(super) fn not_found(what: String, id: &str) -> DockerError {
    DockerError::Api {
        what,
        status: 404,
        message: format!("service {id} not found"),
    }
}

/// Swarm's answer to an update at a version that is no longer the current one.
pub(super) fn out_of_sequence(id: &str) -> DockerError {
    DockerError::Api {
        what: format!("POST /services/{id}/update"),
        status: 500,
        message: "rpc error: code = Unknown desc = update out of sequence".into(),
    }
}

/// The auth document an update's `X-Registry-Auth` carried (base64url JSON, as
/// `docker::registry_auth_header` writes it).
pub(super) fn sent_auth(registry_auth: &Secret<String>) -> serde_json::Value {
    let json = base64::engine::general_purpose::URL_SAFE
        .decode(registry_auth.expose())
        .expect("base64url auth");
    serde_json::from_slice(&json).expect("auth JSON")
}
