//! A private Docker daemon (Debian docker.io 20.10) beside any other: its own `--data-root`,
//! `--exec-root`, `--pidfile`, `--config-file` and `-H unix://<tmp>/docker.sock`, with
//! `--bridge=none --iptables=false --ip-masq=false` (containers that must reach lab servers
//! run with `--network host`). Optionally a one-node Swarm on 127.0.0.1, and optionally the
//! API on `tcp://127.0.0.1:<free port>` too ([`Tcp`]): plain, or `--tlsverify` with the
//! given CA and daemon certificate (make them with [`super::tls::Ca`]).
//!
//! Drop: leave the swarm, SIGTERM the daemon (it stops its containers and containerd), then
//! SIGKILL anything still running from this daemon's dirs, detach leftover mounts under the
//! temp dir (e.g. `<exec-root>/netns/default`) and remove it.
//!
//! Notes verified here: the docker CLI (28.x at /usr/local/bin or 20.10) negotiates API 1.41;
//! there is no buildx plugin, so builds use the classic builder (`DOCKER_BUILDKIT=0`), and
//! `RUN` works with `--network none`; 127.0.0.0/8 registries are plain HTTP without any
//! `insecure-registries` setting. Swarm's gossip port 7946 is fixed: a second lab swarm on the
//! same machine logs "address already in use" for it, yet services still work (one node).

use super::{process::sys, process::Proc, run_ok, tool, HttpResponse, TempDir};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The tag of the image built by [`Dockerd::busybox_image`].
pub const BUSYBOX_IMAGE: &str = "lab/busybox:latest";

/// What the daemon serves on TCP besides its unix socket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Tcp {
    #[default]
    None,
    /// Plain HTTP on 127.0.0.1.
    Plain,
    /// `--tlsverify` on 127.0.0.1: the daemon shows `cert` (with `key`) and accepts
    /// only clients whose certificate `ca` signed.
    Verify {
        ca: PathBuf,
        cert: PathBuf,
        key: PathBuf,
    },
}

#[derive(Debug)]
pub struct Dockerd {
    /// `unix:///tmp/.../docker.sock`, for DOCKER_HOST.
    pub host: String,
    pub socket: PathBuf,
    /// `tcp://127.0.0.1:PORT` when started with a [`Tcp`] listener.
    pub tcp_host: Option<String>,
    tcp: (Tcp, u16),
    config_dir: PathBuf,
    swarm_port: AtomicU16,
    busybox_built: Mutex<bool>,
    builds: AtomicU16,
    left: AtomicBool,
    proc: Option<Proc>,
    dir: TempDir,
}

impl Dockerd {
    pub fn start() -> Dockerd {
        Dockerd::start_with(Tcp::None)
    }

    /// A daemon that also serves the API on TCP (see [`Tcp`]); waits until both answer.
    pub fn start_with(tcp: Tcp) -> Dockerd {
        let port = if tcp == Tcp::None {
            0
        } else {
            super::free_port()
        };
        let tcp = (tcp, port);
        let dir = TempDir::new("dockerd");
        let socket = dir.join("docker.sock");
        let config_dir = dir.join("docker-config");
        std::fs::create_dir_all(&config_dir).expect("docker config dir");
        std::fs::write(dir.join("daemon.json"), "{}\n").expect("daemon.json");
        let cmd = dockerd_command(dir.path(), &socket, &tcp);
        let mut proc = Proc::spawn("dockerd", cmd, &dir.join("dockerd.log"));
        let ping = |s: &Path| {
            super::http_unix(s, "GET", "/_ping", &[], b"")
                .map(|r| r.status == 200)
                .unwrap_or(false)
        };
        let listening = || tcp.1 == 0 || std::net::TcpStream::connect(("127.0.0.1", tcp.1)).is_ok();
        if let Err(e) = proc.wait_until("dockerd", super::STARTUP_TIMEOUT, || {
            ping(&socket) && listening()
        }) {
            let mut d = Dockerd::from_parts(socket, config_dir, tcp, None, dir);
            d.teardown();
            panic!("{e}");
        }
        Dockerd::from_parts(socket, config_dir, tcp, Some(proc), dir)
    }

    /// Stops the daemon (SIGTERM, as `systemctl stop docker` does) and waits until
    /// it is gone. Its data root, and so its Swarm, stays: see [`Self::start_again`].
    pub fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.stop(Duration::from_secs(60));
        }
    }

    /// Sends the daemon SIGTERM and returns at once (as a host shutting down does);
    /// [`Self::stop`] then waits until it is gone.
    pub fn begin_stop(&self) {
        if let Some(proc) = &self.proc {
            sys::signal(proc.pid(), sys::SIGTERM);
        }
    }

    /// Starts the daemon again on the same directories and socket (after
    /// [`Self::stop`]) and waits until it answers, its Swarm too if it had one.
    pub fn start_again(&mut self) {
        assert!(self.proc.is_none(), "start_again: dockerd is still running");
        let n = self.builds.fetch_add(1, Ordering::SeqCst);
        let log = self.dir.join(format!("dockerd-again-{n}.log"));
        let mut proc = Proc::spawn(
            "dockerd",
            dockerd_command(self.dir.path(), &self.socket, &self.tcp),
            &log,
        );
        let in_swarm = self.swarm_port.load(Ordering::SeqCst) != 0;
        let socket = self.socket.clone();
        let ready = proc.wait_until("dockerd (again)", super::STARTUP_TIMEOUT, || {
            let path = if in_swarm {
                "/v1.41/services"
            } else {
                "/_ping"
            };
            super::http_unix(&socket, "GET", path, &[], b"")
                .map(|r| r.status == 200)
                .unwrap_or(false)
        });
        self.proc = Some(proc);
        if let Err(e) = ready {
            panic!("{e}");
        }
    }

    fn from_parts(
        socket: PathBuf,
        config_dir: PathBuf,
        tcp: (Tcp, u16),
        proc: Option<Proc>,
        dir: TempDir,
    ) -> Dockerd {
        Dockerd {
            host: format!("unix://{}", socket.display()),
            tcp_host: (tcp.0 != Tcp::None).then(|| format!("tcp://127.0.0.1:{}", tcp.1)),
            tcp,
            socket,
            config_dir,
            swarm_port: AtomicU16::new(0),
            busybox_built: Mutex::new(false),
            builds: AtomicU16::new(0),
            left: AtomicBool::new(false),
            proc,
            dir,
        }
    }

    /// The docker CLI for this daemon: DOCKER_HOST set, DOCKER_CONFIG = [`Self::config_dir`]
    /// (initially empty; override with `.env("DOCKER_CONFIG", ..)`), no ambient
    /// DOCKER_AUTH_CONFIG / context / TLS settings, no CLI hints.
    pub fn docker(&self) -> Command {
        let mut cmd = Command::new(tool("docker"));
        cmd.env("DOCKER_HOST", &self.host)
            .env("DOCKER_CONFIG", &self.config_dir)
            .env("DOCKER_CLI_HINTS", "false")
            .env_remove("DOCKER_AUTH_CONFIG")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH");
        cmd
    }

    /// The default client config dir used by [`Self::docker`] (write `config.json` here).
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// The daemon's private temp dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// One Docker Engine API request over the socket, e.g. `api("GET", "/info", None)`.
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
        let headers: &[(&str, &str)] = if body.is_some() {
            &[("Content-Type", "application/json")]
        } else {
            &[]
        };
        super::http_unix(
            &self.socket,
            method,
            path,
            headers,
            body.unwrap_or("").as_bytes(),
        )
        .unwrap_or_else(|e| panic!("docker API {method} {path}: {e}"))
    }

    /// Makes this daemon a one-node Swarm manager on 127.0.0.1:<free port>; returns the port.
    pub fn swarm_init(&self) -> u16 {
        for attempt in 1..=3 {
            let port = super::free_port();
            let addr = format!("127.0.0.1:{port}");
            let out = super::run(self.docker().args([
                "swarm",
                "init",
                "--advertise-addr",
                &addr,
                "--listen-addr",
                &addr,
            ]));
            if out.status.success() {
                self.swarm_port.store(port, Ordering::SeqCst);
                return port;
            }
            let text = super::output_text(&out);
            if attempt == 3 || !text.to_lowercase().contains("address already in use") {
                panic!("docker swarm init failed: {text}");
            }
        }
        unreachable!()
    }

    /// Makes this daemon the first manager of a new Swarm that listens and advertises
    /// on `addr` (`IP:PORT`, loopback), e.g. one of [`super::MANAGER_ADDRS`].
    pub fn swarm_init_at(&self, addr: &str) {
        run_ok(self.docker().args([
            "swarm",
            "init",
            "--advertise-addr",
            addr,
            "--listen-addr",
            addr,
        ]));
        self.swarm_port.store(port_of(addr), Ordering::SeqCst);
    }

    /// The token with which another daemon joins this one's Swarm as a manager.
    pub fn manager_join_token(&self) -> String {
        run_ok(self.docker().args(["swarm", "join-token", "-q", "manager"]))
            .trim()
            .to_string()
    }

    /// Joins the Swarm of the manager at `remote` with `token`, listening and
    /// advertising on `addr`.
    pub fn swarm_join(&self, addr: &str, token: &str, remote: &str) {
        run_ok(self.docker().args([
            "swarm",
            "join",
            "--token",
            token,
            "--advertise-addr",
            addr,
            "--listen-addr",
            addr,
            remote,
        ]));
        self.swarm_port.store(port_of(addr), Ordering::SeqCst);
    }

    /// This daemon's Swarm node ID (empty outside a Swarm).
    pub fn node_id(&self) -> String {
        let info = self.api("GET", "/v1.41/info", None).json();
        info["Swarm"]["NodeID"].as_str().unwrap_or("").to_string()
    }

    /// Whether the daemon process is running (not [`Self::stop`]ped).
    pub fn is_running(&self) -> bool {
        self.proc.is_some()
    }

    /// `docker image inspect`'s RepoDigests of a pulled image, as JSON text.
    pub fn repo_digests(&self, image: &str) -> String {
        super::run_ok(self.docker().args([
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}",
            image,
        ]))
    }

    /// Builds `tag` from `dockerfile` with a context holding `files` (name in context,
    /// source path); classic builder, `--network none`.
    pub fn build_image(&self, tag: &str, files: &[(&str, &Path)], dockerfile: &str) {
        let n = self.builds.fetch_add(1, Ordering::SeqCst);
        let ctx = self.dir.join(format!("build-{n}"));
        std::fs::create_dir_all(&ctx).expect("build context dir");
        for (name, src) in files {
            let dst = ctx.join(name);
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent).expect("context subdir");
            }
            std::fs::copy(src, &dst)
                .unwrap_or_else(|e| panic!("copy {} into the build context: {e}", src.display()));
        }
        std::fs::write(ctx.join("Dockerfile"), dockerfile).expect("write Dockerfile");
        run_ok(
            self.docker()
                .env("DOCKER_BUILDKIT", "0")
                .args(["build", "-q", "--network", "none", "-t", tag])
                .arg(&ctx),
        );
        let _ = std::fs::remove_dir_all(&ctx);
    }

    /// Builds (once per daemon) `lab/busybox:latest` from `lab/images/busybox/Dockerfile`:
    /// static busybox FROM scratch with its applets in /bin. Returns the tag.
    pub fn busybox_image(&self) -> String {
        let mut built = self.busybox_built.lock().unwrap_or_else(|e| e.into_inner());
        if !*built {
            let dockerfile =
                std::fs::read_to_string(super::repo_root().join("lab/images/busybox/Dockerfile"))
                    .expect("read lab/images/busybox/Dockerfile");
            let busybox = tool("busybox");
            self.build_image(BUSYBOX_IMAGE, &[("busybox", &busybox)], &dockerfile);
            *built = true;
        }
        BUSYBOX_IMAGE.to_string()
    }

    pub fn pid(&self) -> u32 {
        self.proc.as_ref().map(Proc::pid).unwrap_or(0)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.proc
            .as_ref()
            .map(|p| p.log_tail(lines))
            .unwrap_or_default()
    }

    fn teardown(&mut self) {
        if self.left.swap(true, Ordering::SeqCst) {
            return;
        }
        if self.swarm_port.load(Ordering::SeqCst) != 0 {
            let _ = super::run(self.docker().args(["swarm", "leave", "--force"]));
        }
        if let Some(mut proc) = self.proc.take() {
            if std::thread::panicking() {
                eprintln!(
                    "lab: log tail of dockerd ({}):\n{}",
                    proc.log_path().display(),
                    proc.log_tail(30)
                );
            }
            proc.stop(Duration::from_secs(40));
        }
        let dir = self.dir.path().to_path_buf();
        kill_processes_using(&dir);
        detach_mounts_under(&dir);
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// SIGKILLs every process (other than us) whose command line mentions `dir`: containerd and
/// shims that this daemon started under its own --exec-root / --data-root.
fn kill_processes_using(dir: &Path) {
    let needle = format!("{}/", dir.display()); // the slash: not a sibling dir's processes
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline)
            .replace('\0', " ")
            .contains(&needle)
        {
            eprintln!("lab: killing leftover pid {pid} of the lab dockerd in {needle}");
            sys::signal(pid, sys::SIGKILL);
        }
    }
}

/// Detaches (MNT_DETACH) every mount point at or below `dir`, deepest first.
fn detach_mounts_under(dir: &Path) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount_path(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for p in points {
        if !sys::detach_mount(&p) {
            eprintln!("lab: could not unmount {}", p.display());
        }
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(p: &str) -> String {
    let mut out = String::new();
    let mut rest = p;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(c as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr}: not IP:PORT"))
}

/// How the lab starts dockerd: its own data and exec roots, pid file, config
/// and unix socket in `dir`; no bridge, no iptables (loopback only); the API on
/// 127.0.0.1:PORT too when `tcp` asks for it.
fn dockerd_command(dir: &Path, socket: &Path, tcp: &(Tcp, u16)) -> Command {
    let mut cmd = Command::new(tool("dockerd"));
    cmd.arg("--data-root")
        .arg(dir.join("data"))
        .arg("--exec-root")
        .arg(dir.join("exec"))
        .arg("--pidfile")
        .arg(dir.join("docker.pid"))
        .arg("--config-file")
        .arg(dir.join("daemon.json"))
        .arg("-H")
        .arg(format!("unix://{}", socket.display()))
        .args(["--bridge=none", "--iptables=false", "--ip-masq=false"])
        .env_remove("DOCKER_HOST")
        .env_remove("NOTIFY_SOCKET");
    let (how, port) = tcp;
    if *how != Tcp::None {
        cmd.arg("-H").arg(format!("tcp://127.0.0.1:{port}"));
    }
    if let Tcp::Verify { ca, cert, key } = how {
        cmd.arg("--tlsverify")
            .arg("--tlscacert")
            .arg(ca)
            .arg("--tlscert")
            .arg(cert)
            .arg("--tlskey")
            .arg(key);
    }
    cmd
}
