//! What the refresher needs from Docker, and nothing more: the narrow seam between
//! the refresh rules ([`super::step`]) and the daemon, so the rules are tested with
//! a fake Swarm (no dockerd) and the real client stays a thin wire layer.

use serde_json::value::RawValue;

use super::docker::{Docker, DockerError, Role, Service};
use crate::secret::Secret;

/// The Docker Engine API calls of a refresh.
#[allow(async_fn_in_trait)] // used by value (generics) on one thread, never as `dyn`
pub trait SwarmApi {
    /// This node's part in the Swarm; only the leader acts.
    async fn role(&self) -> Result<Role, DockerError>;
    /// Every service, each with its spec as raw JSON.
    async fn services(&self) -> Result<Vec<Service>, DockerError>;
    /// One service, read again (after "update out of sequence", or an event).
    async fn service(&self, id: &str) -> Result<Service, DockerError>;
    /// `POST /services/{id}/update?version=N` with `spec` unchanged and
    /// `X-Registry-Auth`; the daemon's warnings.
    async fn update_service(
        &self,
        id: &str,
        version: u64,
        spec: &RawValue,
        registry_auth: &Secret<String>,
    ) -> Result<Vec<String>, DockerError>;
    /// Docker API requests made so far (for the summary line and `/metrics`).
    fn calls(&self) -> u64;
}

impl SwarmApi for Docker {
    async fn role(&self) -> Result<Role, DockerError> {
        Docker::role(self).await
    }

    async fn services(&self) -> Result<Vec<Service>, DockerError> {
        Docker::services(self).await
    }

    async fn service(&self, id: &str) -> Result<Service, DockerError> {
        Docker::service(self, id).await
    }

    async fn update_service(
        &self,
        id: &str,
        version: u64,
        spec: &RawValue,
        registry_auth: &Secret<String>,
    ) -> Result<Vec<String>, DockerError> {
        Docker::update_service(self, id, version, spec, registry_auth).await
    }

    fn calls(&self) -> u64 {
        Docker::calls(self)
    }
}
