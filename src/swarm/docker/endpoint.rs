//! Where the Docker daemon is: a DOCKER_HOST value, parsed.

use std::path::PathBuf;

use super::DockerError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

impl Endpoint {
    pub(super) fn parse(host: &str) -> Result<Endpoint, DockerError> {
        let bad = || DockerError::BadHost(host.to_string());
        if let Some(path) = host.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(bad());
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))
        {
            let addr = addr.trim_end_matches('/');
            let addr = if addr.contains(':') {
                addr.to_string()
            } else {
                format!("{addr}:2375")
            };
            if addr.starts_with(':') || addr.contains('/') {
                return Err(bad());
            }
            return Ok(Endpoint::Tcp(addr));
        }
        if host.starts_with('/') {
            return Ok(Endpoint::Unix(PathBuf::from(host)));
        }
        Err(bad())
    }

    pub(super) fn describe(&self) -> String {
        match self {
            Endpoint::Unix(p) => format!("unix://{}", p.display()),
            Endpoint::Tcp(a) => format!("tcp://{a}"),
        }
    }

    pub(super) fn authority(&self) -> &str {
        match self {
            Endpoint::Unix(_) => "docker",
            Endpoint::Tcp(a) => a,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_forms() {
        let ok = [
            (
                "unix:///var/run/docker.sock",
                Endpoint::Unix("/var/run/docker.sock".into()),
            ),
            (
                "/run/docker.sock",
                Endpoint::Unix("/run/docker.sock".into()),
            ),
            (
                "tcp://127.0.0.1:2375",
                Endpoint::Tcp("127.0.0.1:2375".into()),
            ),
            ("tcp://manager", Endpoint::Tcp("manager:2375".into())),
            (
                "http://127.0.0.1:2375/",
                Endpoint::Tcp("127.0.0.1:2375".into()),
            ),
        ];
        for (input, want) in ok {
            assert_eq!(Endpoint::parse(input).unwrap(), want, "{input}");
        }
        for bad in [
            "unix://",
            "npipe:////./pipe/docker_engine",
            "ssh://me@host",
            "tcp://:2375",
            "",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
