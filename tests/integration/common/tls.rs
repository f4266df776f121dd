//! Certificates for TLS tests, made with the `openssl` CLI: a CA and certificates it
//! signs for a daemon (subject alternative names) or a client (clientAuth), as the
//! Docker docs' "Protect the Docker daemon socket" recipe makes them. EC P-256 keys,
//! valid for two days, in PEM files named as the docker CLI expects them.

use super::{run_ok, tool};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A certificate authority: `ca.pem` and its key.
#[derive(Debug)]
pub struct Ca {
    pub cert: PathBuf,
    key: PathBuf,
    dir: PathBuf,
}

/// A certificate and its key, signed by a [`Ca`].
#[derive(Debug, Clone)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    /// A new CA in `dir` (created), with common name `name`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        std::fs::create_dir_all(dir).expect("CA dir");
        let (cert, key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
        run_ok(
            openssl()
                .args(["req", "-x509", "-new", "-nodes", "-days", "2"])
                .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
                .args(["-subj", &format!("/CN={name}")])
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert),
        );
        Ca {
            cert,
            key,
            dir: dir.to_path_buf(),
        }
    }

    /// A daemon's certificate for `names` (`IP:127.0.0.1`, `DNS:localhost`).
    pub fn server(&self, label: &str, names: &[&str]) -> Pair {
        self.issue(
            label,
            &format!(
                "subjectAltName={}\nextendedKeyUsage=serverAuth\n",
                names.join(",")
            ),
        )
    }

    /// A client certificate (what `dockerd --tlsverify` asks for).
    pub fn client(&self, label: &str) -> Pair {
        self.issue(label, "extendedKeyUsage=clientAuth\n")
    }

    fn issue(&self, label: &str, extensions: &str) -> Pair {
        let key = self.dir.join(format!("{label}-key.pem"));
        let csr = self.dir.join(format!("{label}.csr"));
        let cert = self.dir.join(format!("{label}-cert.pem"));
        let ext = self.dir.join(format!("{label}.ext"));
        std::fs::write(
            &ext,
            format!("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n{extensions}"),
        )
        .expect("extensions file");
        run_ok(
            openssl()
                .args(["req", "-new", "-nodes"])
                .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
                .args(["-subj", &format!("/CN={label}")])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&csr),
        );
        run_ok(
            openssl()
                .args(["x509", "-req", "-days", "2", "-set_serial", "0x1f"])
                .arg("-in")
                .arg(&csr)
                .arg("-CA")
                .arg(&self.cert)
                .arg("-CAkey")
                .arg(&self.key)
                .arg("-extfile")
                .arg(&ext)
                .arg("-out")
                .arg(&cert),
        );
        Pair { cert, key }
    }
}

/// A `DOCKER_CERT_PATH` directory: `ca.pem`, and `cert.pem` + `key.pem` when given.
pub fn cert_path(dir: &Path, ca: Option<&Path>, client: Option<&Pair>) -> PathBuf {
    std::fs::create_dir_all(dir).expect("cert dir");
    if let Some(ca) = ca {
        std::fs::copy(ca, dir.join("ca.pem")).expect("copy ca.pem");
    }
    if let Some(pair) = client {
        std::fs::copy(&pair.cert, dir.join("cert.pem")).expect("copy cert.pem");
        std::fs::copy(&pair.key, dir.join("key.pem")).expect("copy key.pem");
    }
    dir.to_path_buf()
}

fn openssl() -> Command {
    let mut cmd = Command::new(tool("openssl"));
    cmd.env_remove("OPENSSL_CONF");
    cmd
}
