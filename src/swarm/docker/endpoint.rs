//! Where the Docker daemon is and how to talk to it, the way the docker CLI
//! decides it: a DOCKER_HOST value (`--docker-host`), `--tls`/`--tlsverify`
//! (`DOCKER_TLS`, `DOCKER_TLS_VERIFY`: any non-empty value turns them on) and the
//! certificate files `--tlscacert`/`--tlscert`/`--tlskey`, by default `ca.pem`,
//! `cert.pem` and `key.pem` in `DOCKER_CERT_PATH` (else `$DOCKER_CONFIG`, else
//! `~/.docker`). A `tcp://` host without a port gets 2376 with TLS, 2375 without.
//!
//! One rule of our own: every service update carries registry credentials
//! (`X-Registry-Auth`), so plain `tcp://` is refused to a host that is not this
//! machine unless `--allow-plain-http` says the network is the user's (the same
//! flag and words as `gitlab sync-variable`). The check looks at the name as
//! written — nothing is resolved or contacted before it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::tls::{self, TlsSettings};
use super::DockerError;
use crate::env::Env;

/// The Docker daemon's ports, as the docker CLI defaults them.
const PLAIN_PORT: u16 = 2375;
const TLS_PORT: u16 = 2376;

/// How to reach the daemon, as the command line gave it (the environment fills
/// in the rest in [`Target::resolve`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostArgs {
    /// A DOCKER_HOST value: `unix:///path`, `/path`, `tcp://HOST[:PORT]`.
    pub host: String,
    /// `--tls`: TLS without checking the daemon's certificate (as the docker CLI).
    pub tls: bool,
    /// `--tlsverify`: TLS, the daemon checked against the CA.
    pub tls_verify: bool,
    pub tls_ca_cert: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Plain `tcp://` to a host that is not loopback, on purpose.
    pub allow_plain_http: bool,
}

impl From<&str> for HostArgs {
    fn from(host: &str) -> HostArgs {
        HostArgs {
            host: host.to_string(),
            ..HostArgs::default()
        }
    }
}

/// A daemon ready to be dialled: where, and with what TLS settings. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Target {
    pub(super) endpoint: Endpoint,
    pub(super) tls: Option<Arc<TlsSettings>>,
}

impl Target {
    /// Applies the docker CLI's environment to `args`, refuses plain TCP to
    /// another machine, and reads the certificate files. Nothing is sent, and no
    /// name is resolved.
    pub fn resolve(args: &HostArgs, env: &Env) -> Result<Target, DockerError> {
        // As the docker CLI: set to anything (even "0") turns them on.
        let tls_verify = args.tls_verify || env.get("DOCKER_TLS_VERIFY").is_some();
        let use_tls = args.tls || tls_verify || env.get("DOCKER_TLS").is_some();
        let endpoint = Endpoint::parse(&args.host, use_tls)?;
        let Endpoint::Tcp { host, .. } = &endpoint else {
            // A unix socket is as private as its file mode: TLS has no part there.
            return Ok(Target {
                endpoint,
                tls: None,
            });
        };
        if !use_tls {
            if !args.allow_plain_http && !is_loopback(host) {
                return Err(DockerError::PlainHttp(endpoint.describe()));
            }
            return Ok(Target {
                endpoint,
                tls: None,
            });
        }
        let dir = cert_dir(env);
        let settings = TlsSettings::load(&tls::Files {
            verify: tls_verify,
            ca: args.tls_ca_cert.clone().or_else(|| in_dir(&dir, "ca.pem")),
            cert: explicit_or_present(&args.tls_cert, &dir, "cert.pem"),
            key: explicit_or_present(&args.tls_key, &dir, "key.pem"),
            dir,
            host: host.clone(),
        })?;
        if !tls_verify && !is_loopback(host) {
            tracing::warn!(
                "--tls without --tlsverify: the certificate of the Docker daemon at {} is not checked, so whoever answers there gets the registry credentials; add --tlsverify (DOCKER_TLS_VERIFY=1) and the daemon's CA",
                endpoint.describe()
            );
        }
        Ok(Target {
            endpoint,
            tls: Some(Arc::new(settings)),
        })
    }

    pub fn describe(&self) -> String {
        self.endpoint.describe()
    }
}

/// `DOCKER_CERT_PATH`, else the docker CLI's config directory
/// (`$DOCKER_CONFIG`, else `~/.docker`); `None` without a HOME.
fn cert_dir(env: &Env) -> Option<PathBuf> {
    env.get("DOCKER_CERT_PATH")
        .or_else(|| env.get("DOCKER_CONFIG"))
        .map(PathBuf::from)
        .or_else(|| env.home().map(|h| h.join(".docker")))
}

fn in_dir(dir: &Option<PathBuf>, name: &str) -> Option<PathBuf> {
    dir.as_ref().map(|d| d.join(name))
}

/// A flag's file, or the default one if it exists (as the docker CLI, which
/// connects without a client certificate when none is in the directory).
fn explicit_or_present(
    flag: &Option<PathBuf>,
    dir: &Option<PathBuf>,
    name: &str,
) -> Option<PathBuf> {
    flag.clone()
        .or_else(|| in_dir(dir, name).filter(|p| Path::exists(p)))
}

/// This machine: `localhost` or a loopback address, as written (never resolved).
pub(super) fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Endpoint {
    Unix(PathBuf),
    /// `host` without brackets (`::1`), as written.
    Tcp {
        host: String,
        port: u16,
    },
}

impl Endpoint {
    /// A DOCKER_HOST value; a `tcp://` host without a port gets the daemon's
    /// TLS or plain port.
    pub(super) fn parse(host: &str, tls: bool) -> Result<Endpoint, DockerError> {
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
            if addr.contains('/') {
                return Err(bad());
            }
            let (name, port) = match addr.strip_prefix('[') {
                // [v6] or [v6]:port
                Some(rest) => {
                    let (name, after) = rest.split_once(']').ok_or_else(bad)?;
                    if name.parse::<std::net::Ipv6Addr>().is_err() {
                        return Err(bad());
                    }
                    let port = match after {
                        "" => None,
                        a => Some(a.strip_prefix(':').ok_or_else(bad)?),
                    };
                    (name, port)
                }
                None => {
                    let (name, port) = match addr.split_once(':') {
                        Some((name, port)) => (name, Some(port)),
                        None => (addr, None),
                    };
                    // An IPv6 address needs its brackets.
                    if name.is_empty() || port.is_some_and(|p| p.contains(':')) {
                        return Err(bad());
                    }
                    (name, port)
                }
            };
            let port = match port {
                None => {
                    if tls {
                        TLS_PORT
                    } else {
                        PLAIN_PORT
                    }
                }
                Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?,
            };
            return Ok(Endpoint::Tcp {
                host: name.to_string(),
                port,
            });
        }
        if host.starts_with('/') {
            return Ok(Endpoint::Unix(PathBuf::from(host)));
        }
        Err(bad())
    }

    pub(super) fn describe(&self) -> String {
        match self {
            Endpoint::Unix(p) => format!("unix://{}", p.display()),
            Endpoint::Tcp { .. } => format!("tcp://{}", self.authority()),
        }
    }

    /// The `Host` header: `docker` for a socket, `HOST:PORT` for TCP.
    pub(super) fn authority(&self) -> String {
        match self {
            Endpoint::Unix(_) => "docker".into(),
            Endpoint::Tcp { host, port } if host.contains(':') => format!("[{host}]:{port}"),
            Endpoint::Tcp { host, port } => format!("{host}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> Endpoint {
        Endpoint::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn docker_host_forms() {
        // (DOCKER_HOST, with TLS, endpoint)
        let ok = [
            (
                "unix:///var/run/docker.sock",
                false,
                Endpoint::Unix("/var/run/docker.sock".into()),
            ),
            (
                "/run/docker.sock",
                true,
                Endpoint::Unix("/run/docker.sock".into()),
            ),
            ("tcp://127.0.0.1:2375", false, tcp("127.0.0.1", 2375)),
            ("tcp://127.0.0.1:2375", true, tcp("127.0.0.1", 2375)),
            ("tcp://manager", false, tcp("manager", 2375)),
            ("tcp://manager", true, tcp("manager", 2376)),
            ("tcp://manager/", true, tcp("manager", 2376)),
            ("http://127.0.0.1:2375/", false, tcp("127.0.0.1", 2375)),
            ("tcp://[::1]:2376", true, tcp("::1", 2376)),
            ("tcp://[::1]", false, tcp("::1", 2375)),
            ("tcp://[::1]", true, tcp("::1", 2376)),
        ];
        for (input, tls, want) in ok {
            assert_eq!(Endpoint::parse(input, tls).unwrap(), want, "{input}");
        }
        for bad in [
            "unix://",
            "npipe:////./pipe/docker_engine",
            "ssh://me@host",
            "tcp://:2375",
            "tcp://host:0",
            "tcp://host:http",
            "tcp://host:65536",
            "tcp://::1:2375",
            "tcp://[::1",
            "tcp://[::1]2375",
            "tcp://[manager]:2375",
            "tcp://host:2375/path",
            "",
        ] {
            assert!(
                matches!(Endpoint::parse(bad, false), Err(DockerError::BadHost(_))),
                "{bad}"
            );
        }
        assert_eq!(tcp("::1", 2376).describe(), "tcp://[::1]:2376");
        assert_eq!(tcp("manager", 2376).authority(), "manager:2376");
    }

    fn resolve(args: HostArgs, env: &[(&str, &str)]) -> Result<Target, DockerError> {
        Target::resolve(&args, &Env::from_pairs(env.iter().copied()))
    }

    #[test]
    fn plain_tcp_only_to_this_machine_unless_allowed() {
        // (host, allowed without the flag)
        let cases = [
            ("tcp://127.0.0.1:2375", true),
            ("tcp://127.8.9.10", true),
            ("tcp://localhost:2375", true),
            ("tcp://LOCALHOST", true),
            ("tcp://[::1]:2375", true),
            ("unix:///var/run/docker.sock", true),
            ("tcp://docker.example:2375", false),
            ("tcp://localhost.example", false),
            ("tcp://10.0.0.7:2375", false),
            ("tcp://[fd00::1]:2375", false),
            ("http://docker.example", false),
        ];
        for (host, allowed) in cases {
            match resolve(HostArgs::from(host), &[]) {
                Ok(t) => {
                    assert!(allowed, "{host} was let through");
                    assert!(t.tls.is_none());
                }
                Err(DockerError::PlainHttp(shown)) => {
                    assert!(!allowed, "{host} was refused");
                    let e = DockerError::PlainHttp(shown).to_string();
                    assert!(
                        e.contains("is plain HTTP to a host that is not this machine"),
                        "{e}"
                    );
                    assert!(
                        e.contains("pass --allow-plain-http if the network is yours"),
                        "{e}"
                    );
                    assert!(e.contains("DOCKER_TLS_VERIFY=1"), "{e}");
                }
                Err(e) => panic!("{host}: {e}"),
            }
            let with_flag = HostArgs {
                allow_plain_http: true,
                ..HostArgs::from(host)
            };
            let t = resolve(with_flag, &[]).unwrap_or_else(|e| panic!("{host}: {e}"));
            assert!(t.tls.is_none());
        }
        assert_eq!(
            resolve(HostArgs::from("tcp://docker.example"), &[])
                .unwrap_err()
                .to_string()
                .split(" is plain")
                .next(),
            Some("--docker-host (DOCKER_HOST) tcp://docker.example:2375")
        );
    }

    #[test]
    fn tls_comes_from_the_docker_cli_variables_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs).unwrap();
        let certs_s = certs.to_str().unwrap();
        let home = dir.path().to_str().unwrap();
        let no_ca = |e: DockerError, path: &Path| {
            let text = e.to_string();
            assert!(
                text.starts_with(&format!(
                    "cannot use the CA certificate {} for TLS to the Docker daemon: ",
                    path.display()
                )),
                "{text}"
            );
            assert!(text.contains("give --tlscacert FILE"), "{text}");
        };
        // DOCKER_TLS_VERIFY set to anything (even 0, as the docker CLI) checks the
        // daemon against ca.pem in DOCKER_CERT_PATH: missing here.
        for value in ["1", "0", "yes"] {
            let e = resolve(
                HostArgs::from("tcp://docker.example"),
                &[("DOCKER_TLS_VERIFY", value), ("DOCKER_CERT_PATH", certs_s)],
            )
            .unwrap_err();
            no_ca(e, &certs.join("ca.pem"));
        }
        // Without DOCKER_CERT_PATH: $DOCKER_CONFIG, else ~/.docker.
        let e = resolve(
            HostArgs::from("tcp://docker.example"),
            &[
                ("DOCKER_TLS_VERIFY", "1"),
                ("DOCKER_CONFIG", certs_s),
                ("HOME", home),
            ],
        )
        .unwrap_err();
        no_ca(e, &certs.join("ca.pem"));
        let verify = HostArgs {
            tls_verify: true,
            ..HostArgs::from("tcp://docker.example")
        };
        no_ca(
            resolve(verify.clone(), &[("HOME", home)]).unwrap_err(),
            &dir.path().join(".docker/ca.pem"),
        );
        // --tlscacert wins; a file without a certificate is named as such.
        let junk = certs.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let e = resolve(
            HostArgs {
                tls_ca_cert: Some(junk.clone()),
                ..verify.clone()
            },
            &[("DOCKER_CERT_PATH", certs_s)],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(&format!(
                "{} for TLS to the Docker daemon: it holds no PEM certificate",
                junk.display()
            )),
            "{e}"
        );
        // No HOME, no DOCKER_CERT_PATH, no flag: say where to give the CA.
        let e = resolve(verify, &[]).unwrap_err().to_string();
        assert!(
            e.contains("give --tlscacert FILE or set DOCKER_CERT_PATH"),
            "{e}"
        );

        // --tls (or DOCKER_TLS) alone needs no CA, uses port 2376, and takes a
        // client certificate only when one is in the directory.
        for (args, env) in [
            (
                HostArgs {
                    tls: true,
                    ..HostArgs::from("tcp://docker.example")
                },
                vec![("DOCKER_CERT_PATH", certs_s)],
            ),
            (
                HostArgs::from("tcp://docker.example"),
                vec![("DOCKER_TLS", "1"), ("DOCKER_CERT_PATH", certs_s)],
            ),
        ] {
            let t = resolve(args, &env).unwrap();
            assert_eq!(t.describe(), "tcp://docker.example:2376");
            assert!(t.tls.is_some(), "plain TCP despite --tls");
        }
        // Half a client pair: the missing half is named.
        std::fs::write(certs.join("cert.pem"), "x").unwrap();
        let e = resolve(
            HostArgs::from("tcp://docker.example"),
            &[("DOCKER_TLS", "1"), ("DOCKER_CERT_PATH", certs_s)],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(&format!(
                "cannot use the client key {} for TLS to the Docker daemon: it does not exist",
                certs.join("key.pem").display()
            )),
            "{e}"
        );
        // An explicit --tlskey that is not there is named too.
        let e = resolve(
            HostArgs {
                tls: true,
                tls_key: Some(certs.join("mine.key")),
                ..HostArgs::from("tcp://docker.example")
            },
            &[("DOCKER_CERT_PATH", certs_s)],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(&format!(
                "cannot use the client key {}",
                certs.join("mine.key").display()
            )),
            "{e}"
        );
        // A unix socket takes no TLS.
        let t = resolve(
            HostArgs::from("unix:///run/docker.sock"),
            &[("DOCKER_TLS_VERIFY", "1"), ("DOCKER_CERT_PATH", certs_s)],
        )
        .unwrap();
        assert!(t.tls.is_none());
    }

    #[test]
    fn tls_failures_say_which_side_and_what_to_do() {
        use rustls::AlertDescription as A;
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().to_str().unwrap();
        let t = resolve(
            HostArgs {
                tls: true,
                ..HostArgs::from("tcp://127.0.0.1:2376")
            },
            &[("DOCKER_CERT_PATH", certs)],
        )
        .unwrap();
        let tls = t.tls.as_ref().unwrap();
        // As hyper hands it over: an io::Error around rustls's, below hyper's own.
        let wrapped = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(A::BadCertificate),
        );
        let found = super::tls::rustls_error(&wrapped).expect("found in the chain");
        let e = tls.explain(&t.describe(), found).to_string();
        assert!(
            e.starts_with("TLS with the Docker daemon at tcp://127.0.0.1:2376 failed: the daemon requires a client certificate and none was given"),
            "{e}"
        );
        assert!(e.contains(&format!("in {certs} (DOCKER_CERT_PATH)")), "{e}");
        let e = tls
            .explain(
                &t.describe(),
                &rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
            )
            .to_string();
        assert!(e.contains("is it serving TLS on this port"), "{e}");
        assert!(super::tls::rustls_error(&std::io::Error::other("refused")).is_none());
    }
}
