//! Debian `docker-registry` (CNCF distribution 2.8) on 127.0.0.1, plain HTTP, htpasswd auth
//! (user `AWS`), filesystem storage in its own temp dir: the stand-in for an ECR registry.
//!
//! Facts verified with distribution 2.8.2 (Debian 2.8.2+ds1):
//! - it re-reads the htpasswd file whenever the file's mtime changes, so rotating the
//!   password (see `TokenServer`) needs no restart;
//! - bcrypt only looks at the first 72 bytes of a password: a password that differs from the
//!   right one only after byte 72 is accepted too. ECR passwords are ~2.5 KB, so tests of
//!   "wrong password" must change the start of it;
//! - Apache `htpasswd` refuses passwords over 255 bytes, so the hash is made from the 72-byte
//!   prefix (which bcrypt treats exactly like the full password).
//!
//! Clients: Docker and podman/skopeo (`--tls-verify=false`) talk plain HTTP to 127.0.0.0/8.

use super::{process::Proc, run_ok, tool, TempDir};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug)]
pub struct Registry {
    /// `127.0.0.1:PORT`, the registry host in image references.
    pub addr: String,
    pub port: u16,
    /// The htpasswd file the registry reads.
    pub htpasswd: PathBuf,
    proc: Proc,
    dir: TempDir,
}

impl Registry {
    /// A registry authenticating against `htpasswd` (e.g. `TokenServer::htpasswd`).
    pub fn start(htpasswd: &Path) -> Registry {
        Registry::start_in(TempDir::new("registry"), htpasswd.to_path_buf())
    }

    /// A registry with its own htpasswd file: user `AWS`, password `password`.
    pub fn start_with_password(password: &str) -> Registry {
        let dir = TempDir::new("registry");
        let htpasswd = dir.join("htpasswd");
        write_htpasswd(&htpasswd, "AWS", password);
        Registry::start_in(dir, htpasswd)
    }

    fn start_in(dir: TempDir, htpasswd: PathBuf) -> Registry {
        let program = tool("docker-registry");
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage).expect("registry storage dir");
        let config = dir.join("config.yml");
        let (proc, port) = Proc::spawn_on_free_port(
            "docker-registry",
            &dir.join("registry.log"),
            |port| {
                let yaml = format!(
                    "version: 0.1\n\
                     log:\n  level: info\n  accesslog:\n    disabled: true\n\
                     storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
                     http:\n  addr: 127.0.0.1:{port}\n  secret: ecr-auth-lab-{port}\n\
                     auth:\n  htpasswd:\n    realm: ecr-auth-lab\n    path: {htpasswd}\n",
                    storage = storage.display(),
                    htpasswd = htpasswd.display(),
                );
                std::fs::write(&config, yaml).expect("write registry config");
                let mut cmd = Command::new(&program);
                cmd.arg("serve").arg(&config);
                cmd
            },
            |port| super::http("GET", &format!("http://127.0.0.1:{port}/v2/"), &[], b"").is_ok(),
        );
        Registry {
            addr: format!("127.0.0.1:{port}"),
            port,
            htpasswd,
            proc,
            dir,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// An ecr-auth config `[[registry]]` entry that maps this registry to ECR `account` in
    /// `region` (the lab's registries stand in for ECR).
    pub fn ecr_mapping(&self, account: &str, region: &str) -> String {
        format!(
            "[[registry]]\nhost = \"{}\"\naccount = \"{account}\"\nregion = \"{region}\"\n",
            self.addr
        )
    }

    /// `127.0.0.1:PORT/<repo>:<tag>`
    pub fn image(&self, repo: &str, tag: &str) -> String {
        format!("{}/{repo}:{tag}", self.addr)
    }

    /// HTTP status of `GET /v2/` anonymously (`None`) or with basic auth: 401 or 200.
    pub fn v2_status(&self, creds: Option<(&str, &str)>) -> u16 {
        let auth = creds.map(|(u, p)| super::basic_auth(u, p));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        super::http("GET", &format!("{}/v2/", self.url()), &headers, b"")
            .unwrap_or_else(|e| panic!("registry {}: {e}", self.addr))
            .status
    }

    /// Pushes a small real image (static busybox, FROM scratch, `CMD ["/bin/sh"]`, label
    /// `lab.image=<repo>:<tag>` so every repo:tag has its own digest) as
    /// `<addr>/<repo>:<tag>` in Docker schema 2 format, with skopeo and a 0600 authfile.
    /// Returns the manifest digest (`sha256:...`).
    pub fn push_test_image(&self, repo: &str, tag: &str, user: &str, password: &str) -> String {
        let work = TempDir::new("push");
        let layout = busybox_oci_layout(work.path(), &format!("{repo}:{tag}"));
        let authfile = work.join("auth.json");
        write_authfile(&authfile, &[(&self.addr, user, password)]);
        let digestfile = work.join("digest");
        run_ok(
            super::skopeo(work.path())
                .args([
                    "copy",
                    "--quiet",
                    "--format",
                    "v2s2",
                    "--dest-tls-verify=false",
                    "--dest-authfile",
                ])
                .arg(&authfile)
                .arg("--digestfile")
                .arg(&digestfile)
                .arg(format!("oci:{}:latest", layout.display()))
                .arg(format!("docker://{}", self.image(repo, tag))),
        );
        std::fs::read_to_string(&digestfile)
            .expect("skopeo digest file")
            .trim()
            .to_string()
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.proc.log_tail(lines)
    }
}

/// Writes an htpasswd file with one bcrypt entry (from the password's 72-byte prefix, see
/// the module docs), atomically.
pub fn write_htpasswd(path: &Path, user: &str, password: &str) {
    let prefix: String = password.chars().take(72).collect();
    let mut child = Command::new(tool("htpasswd"))
        .args(["-niB", user])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start htpasswd");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(prefix.as_bytes())
        .expect("write htpasswd stdin");
    let out = child.wait_with_output().expect("htpasswd");
    assert!(
        out.status.success(),
        "htpasswd failed: {}",
        super::output_text(&out)
    );
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        String::from_utf8_lossy(&out.stdout).trim().to_string() + "\n",
    )
    .expect("write htpasswd");
    std::fs::rename(&tmp, path).expect("rename htpasswd");
}

/// Writes a Docker/containers auth file `{"auths":{host:{"auth":base64(user:pw)}}}` with mode
/// 0600 (for `--authfile`, `DOCKER_CONFIG`'s config.json, skopeo).
pub fn write_authfile(path: &Path, entries: &[(&str, &str, &str)]) {
    let mut auths = serde_json::Map::new();
    for (host, user, password) in entries {
        let auth = super::base64(format!("{user}:{password}").as_bytes());
        auths.insert(host.to_string(), serde_json::json!({ "auth": auth }));
    }
    let text = serde_json::to_string_pretty(&serde_json::json!({ "auths": auths })).expect("json");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    f.write_all(text.as_bytes()).expect("write authfile");
}

/// An OCI image layout at `<dir>/oci` holding the static busybox as one layer, tagged
/// `latest`. Deterministic except for the label.
fn busybox_oci_layout(dir: &Path, label: &str) -> PathBuf {
    let busybox = tool("busybox");
    let rootfs = dir.join("rootfs");
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin).expect("rootfs/bin");
    std::fs::copy(&busybox, bin.join("busybox")).expect("copy busybox");
    let applets = run_ok(Command::new(&busybox).arg("--list"));
    for applet in applets
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet link");
    }
    let layout = dir.join("oci");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("oci blobs dir");

    let tar = dir.join("layer.tar");
    run_ok(
        Command::new(tool("tar"))
            .args([
                "--sort=name",
                "--mtime=@0",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "-C",
            ])
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg("bin"),
    );
    let diff_id = sha256_file(&tar);
    let gz = std::fs::File::create(dir.join("layer.tar.gz")).expect("layer.tar.gz");
    let st = Command::new(tool("gzip"))
        .args(["-n", "-c"])
        .arg(&tar)
        .stdout(gz)
        .status()
        .expect("gzip");
    assert!(st.success(), "gzip failed");
    let layer = add_blob(
        &blobs,
        &std::fs::read(dir.join("layer.tar.gz")).expect("read layer"),
    );

    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "Labels": { "lab.image": label } },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{diff_id}")] },
        "history": [{ "created_by": "ecr-auth lab fixture: static busybox" }],
    });
    let config = add_blob(&blobs, config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1 },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer.0, "size": layer.1 }],
    });
    let manifest = add_blob(&blobs, manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest.0, "size": manifest.1,
            "annotations": { "org.opencontainers.image.ref.name": "latest" },
        }],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).expect("index.json");
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
    layout
}

/// Stores `data` as a blob; returns (`sha256:<hex>`, size).
fn add_blob(blobs: &Path, data: &[u8]) -> (String, usize) {
    let tmp = blobs.join("incoming");
    std::fs::write(&tmp, data).expect("write blob");
    let hex = sha256_file(&tmp);
    std::fs::rename(&tmp, blobs.join(&hex)).expect("store blob");
    (format!("sha256:{hex}"), data.len())
}

fn sha256_file(path: &Path) -> String {
    let out = run_ok(Command::new(tool("sha256sum")).arg(path));
    out.split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}
