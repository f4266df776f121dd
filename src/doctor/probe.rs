//! The registry probe: `GET /v2/` and `HEAD` of a manifest with the token, over
//! HTTPS — and for loopback registries plain HTTP first, as Docker treats
//! 127.0.0.0/8 as insecure. Network errors are named (DNS, refused, TLS, timeout).
//! Through the crate's one HTTP client (`crate::http`).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;

use crate::http::{BlockingClient, HttpError};
use crate::registry::Host;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeError {
    #[error("cannot resolve {host}: {detail}")]
    Dns { host: String, detail: String },
    #[error("{url}: connection refused")]
    Refused { url: String },
    #[error("{url}: TLS failed: {detail}")]
    Tls { url: String, detail: String },
    #[error("{url}: no answer within {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("{url}: {detail}")]
    Other { url: String, detail: String },
}

impl ProbeError {
    pub(crate) fn fix(&self) -> &'static str {
        match self {
            ProbeError::Dns { .. } => "check the host name and this machine's DNS (a private VPC endpoint resolves only inside its VPC)",
            ProbeError::Refused { .. } => "nothing listens there: check the host and port",
            ProbeError::Tls { .. } => "check the CA bundle (/etc/ssl/certs) and any TLS-intercepting proxy",
            ProbeError::Timeout { .. } => "check firewalls, security groups and HTTPS_PROXY/NO_PROXY",
            ProbeError::Other { .. } => "check the network path to the registry",
        }
    }
}

pub(crate) struct Answer {
    /// `https://host` or `http://host`: where the registry answered.
    pub base: String,
    pub status: u16,
}

fn is_loopback(host: &Host) -> bool {
    let name = host.name();
    name == "localhost" || name.starts_with("127.") || name == "[::1]"
}

/// `GET /v2/` with basic auth.
pub(crate) fn v2(host: &Host, basic: &str, timeout: Duration) -> Result<Answer, ProbeError> {
    let bases: Vec<String> = if is_loopback(host) {
        vec![format!("http://{host}"), format!("https://{host}")]
    } else {
        vec![format!("https://{host}")]
    };
    let mut last = None;
    for base in bases {
        match request("GET", &format!("{base}/v2/"), basic, timeout, None) {
            Ok(status) => return Ok(Answer { base, status }),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("at least one base"))
}

/// `HEAD /v2/<repo>/manifests/<reference>` with basic auth: the status.
pub(crate) fn manifest(
    base: &str,
    repo: &str,
    reference: &str,
    basic: &str,
    timeout: Duration,
) -> Result<u16, ProbeError> {
    request(
        "HEAD",
        &format!("{base}/v2/{repo}/manifests/{reference}"),
        basic,
        timeout,
        Some("application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"),
    )
}

fn request(
    method: &str,
    url: &str,
    basic: &str,
    timeout: Duration,
    accept: Option<&str>,
) -> Result<u16, ProbeError> {
    let other = |detail: String| ProbeError::Other {
        url: url.to_string(),
        detail,
    };
    let client = BlockingClient::new(timeout).map_err(|e| other(e.to_string()))?;
    let mut req = Request::builder()
        .method(method)
        .uri(url)
        .header("Authorization", format!("Basic {basic}"))
        .header(
            "User-Agent",
            concat!("ecr-auth-doctor/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(a) = accept {
        req = req.header("Accept", a);
    }
    let req = req
        .body(Full::new(Bytes::new()))
        .map_err(|e| other(e.to_string()))?;
    match client.send(req) {
        Ok(resp) => Ok(resp.status.as_u16()),
        Err(HttpError::Timeout(_)) => Err(ProbeError::Timeout {
            url: url.to_string(),
            secs: timeout.as_secs(),
        }),
        Err(e) => {
            let chain = e.to_string();
            let lower = chain.to_ascii_lowercase();
            Err(
                if lower.contains("dns error") || lower.contains("failed to lookup") {
                    ProbeError::Dns {
                        host: url.split('/').nth(2).unwrap_or(url).to_string(),
                        detail: chain,
                    }
                } else if lower.contains("connection refused") {
                    ProbeError::Refused {
                        url: url.to_string(),
                    }
                } else if lower.contains("certificate")
                    || lower.contains("tls")
                    || lower.contains("handshake")
                {
                    ProbeError::Tls {
                        url: url.to_string(),
                        detail: chain,
                    }
                } else {
                    other(chain)
                },
            )
        }
    }
}
