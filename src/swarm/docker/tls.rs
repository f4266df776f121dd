//! TLS to a `tcp://` Docker daemon, as the docker CLI does it, with rustls
//! (aws-lc-rs, the crate's one TLS stack): with `--tlsverify` the daemon's
//! certificate must chain to the given CA — that CA only, never the system's
//! roots — and name the host dialled; with `--tls` alone nothing is checked
//! (the docker CLI's meaning; it still encrypts). A client certificate and key
//! are presented when given (the daemon's `--tlsverify` demands one).
//!
//! Failures are explained in the daemon's and the user's terms: which file,
//! which check, what to change.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::DockerError;

/// The certificate files, after the command line and environment had their say.
pub(super) struct Files {
    /// Check the daemon against `ca`.
    pub verify: bool,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// `DOCKER_CERT_PATH` or its default, for advice.
    pub dir: Option<PathBuf>,
    /// The host as dialled: the name the daemon's certificate must carry.
    pub host: String,
}

/// A client configuration for one daemon.
pub struct TlsSettings {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    host: String,
    /// The CA the daemon is checked against (`None`: not checked).
    ca: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    dir: Option<PathBuf>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("server_name", &self.server_name)
            .field("ca", &self.ca)
            .field("client_cert", &self.client_cert)
            .finish_non_exhaustive()
    }
}

impl TlsSettings {
    /// Reads the files; every problem names the file and what to do.
    pub(super) fn load(f: &Files) -> Result<TlsSettings, DockerError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| DockerError::TlsSetup(format!("cannot set up TLS: {e}")))?;
        let dir_hint = match &f.dir {
            Some(d) => d.display().to_string(),
            None => "DOCKER_CERT_PATH".to_string(),
        };
        let builder = if f.verify {
            let ca = f.ca.as_deref().ok_or_else(|| {
                DockerError::TlsSetup(
                    "--tlsverify (DOCKER_TLS_VERIFY) needs the CA that signed the Docker daemon's certificate, and there is no HOME to find ~/.docker/ca.pem: give --tlscacert FILE or set DOCKER_CERT_PATH".into(),
                )
            })?;
            let advice = format!(
                "With --tlsverify (DOCKER_TLS_VERIFY) the daemon is checked against this CA only: put the CA that signed the daemon's certificate (dockerd --tlscert) there, or give --tlscacert FILE (DOCKER_CERT_PATH names the directory, now {dir_hint})"
            );
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca, "the CA certificate", &advice)? {
                roots
                    .add(cert)
                    .map_err(|e| file_error("the CA certificate", ca, e, &advice))?;
            }
            builder.with_root_certificates(roots)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
        };
        let config = match (&f.cert, &f.key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let pair = "The client certificate and its key go together (dockerd --tlsverify accepts a certificate signed by its --tlscacert): give both, --tlscert FILE and --tlskey FILE, or put cert.pem and key.pem in DOCKER_CERT_PATH";
                let bytes = read(key, "the client key", pair)?;
                let chain = read_certs(cert, "the client certificate", pair)?;
                let private = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
                    file_error(
                        "the client key",
                        key,
                        format!("it holds no PEM private key ({e})"),
                        pair,
                    )
                })?;
                builder.with_client_auth_cert(chain, private).map_err(|e| {
                    file_error(
                        "the client certificate",
                        cert,
                        format!("it does not go with the key {} ({e})", key.display()),
                        pair,
                    )
                })?
            }
            (Some(_), None) => {
                return Err(missing(
                    "the client key",
                    f.dir.as_deref(),
                    "key.pem",
                    "--tlskey",
                ))
            }
            (None, Some(_)) => {
                return Err(missing(
                    "the client certificate",
                    f.dir.as_deref(),
                    "cert.pem",
                    "--tlscert",
                ))
            }
        };
        let server_name = ServerName::try_from(f.host.clone()).map_err(|e| {
            DockerError::TlsSetup(format!(
                "the Docker host name {:?} cannot be checked against a certificate ({e}): use the name or address the daemon's certificate carries",
                f.host
            ))
        })?;
        Ok(TlsSettings {
            config: Arc::new(config),
            server_name,
            host: f.host.clone(),
            ca: f.ca.clone().filter(|_| f.verify),
            client_cert: f.cert.clone(),
            dir: f.dir.clone(),
        })
    }

    /// The TLS handshake over `tcp`.
    pub(super) async fn connect(&self, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        TlsConnector::from(self.config.clone())
            .connect(self.server_name.clone(), tcp)
            .await
    }

    /// What a TLS failure means for the user.
    pub(super) fn explain(&self, endpoint: &str, e: &rustls::Error) -> DockerError {
        use rustls::Error as E;
        use AlertDescription as A;
        let dir = match &self.dir {
            Some(d) => d.display().to_string(),
            None => "DOCKER_CERT_PATH".to_string(),
        };
        let message = match (e, &self.client_cert) {
            (E::InvalidCertificate(_), _) => match &self.ca {
                Some(ca) => format!(
                    "the daemon's certificate is not one the CA {} vouches for ({e}), so nothing was sent: check that this is the CA that signed the daemon's certificate (dockerd --tlscert) and that the certificate names {} (as DNS or IP subject alternative name)",
                    ca.display(),
                    self.host
                ),
                None => format!("the daemon's certificate is unusable ({e})"),
            },
            (
                E::AlertReceived(
                    A::CertificateRequired | A::BadCertificate | A::HandshakeFailure | A::CertificateUnknown,
                ),
                None,
            ) => format!(
                "the daemon requires a client certificate and none was given ({e}): put cert.pem and key.pem (signed by the CA of dockerd --tlscacert) in {dir} (DOCKER_CERT_PATH), or give --tlscert FILE and --tlskey FILE"
            ),
            (
                E::AlertReceived(
                    A::BadCertificate
                    | A::UnknownCA
                    | A::CertificateUnknown
                    | A::CertificateExpired
                    | A::CertificateRevoked
                    | A::UnsupportedCertificate
                    | A::AccessDenied
                    | A::HandshakeFailure,
                ),
                Some(cert),
            ) => format!(
                "the daemon refused the client certificate {} ({e}): it accepts only certificates signed by its own CA (dockerd --tlscacert) that have not expired",
                cert.display()
            ),
            (E::InvalidMessage(_), _) => format!(
                "the daemon's answer is not TLS ({e}): is it serving TLS on this port (dockerd --tlsverify --tlscert ...)? A daemon without TLS is reached with plain tcp:// (no --tls/--tlsverify, DOCKER_TLS_VERIFY unset)"
            ),
            _ => e.to_string(),
        };
        DockerError::Tls {
            endpoint: endpoint.to_string(),
            message,
        }
    }
}

/// The rustls error somewhere in `e`'s chain (hyper and tokio-rustls wrap it in
/// an `io::Error`, whose own `source` skips it).
pub(super) fn rustls_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(r) = c.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(r) = c
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(r);
        }
        cause = c.source();
    }
    None
}

fn read(path: &Path, what: &'static str, advice: &str) -> Result<Vec<u8>, DockerError> {
    std::fs::read(path).map_err(|e| file_error(what, path, e, advice))
}

fn read_certs(
    path: &Path,
    what: &'static str,
    advice: &str,
) -> Result<Vec<CertificateDer<'static>>, DockerError> {
    let bytes = read(path, what, advice)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(what, path, format!("it is not PEM ({e})"), advice))?;
    if certs.is_empty() {
        return Err(file_error(
            what,
            path,
            "it holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            advice,
        ));
    }
    Ok(certs)
}

fn file_error(
    what: &'static str,
    path: &Path,
    problem: impl fmt::Display,
    advice: &str,
) -> DockerError {
    DockerError::TlsFile {
        what,
        path: path.to_path_buf(),
        problem: problem.to_string(),
        advice: advice.to_string(),
    }
}

/// Half a pair: the other half was given, this one is not in the directory.
fn missing(what: &'static str, dir: Option<&Path>, name: &str, flag: &str) -> DockerError {
    let path = dir.map_or_else(|| PathBuf::from(name), |d| d.join(name));
    file_error(
        what,
        &path,
        "it does not exist",
        &format!("A client certificate needs its key and a key its certificate: put {name} there (DOCKER_CERT_PATH names the directory) or give {flag} FILE"),
    )
}

/// `--tls` without `--tlsverify`: any certificate is taken (the docker CLI's
/// meaning). The handshake signatures are still checked, so the peer holds the
/// key of the certificate it shows.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
