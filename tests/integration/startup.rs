//! How the binary starts (issue 7 §3): the shipped build (musl) and the host build from
//! this checkout (glibc, `.cargo/config.toml`) are both static and not position-independent
//! (no dynamic loader, no relocation pass before `main`); the static glibc build still finds
//! users, groups and host names (through /etc/hosts and DNS) without loading the NSS modules
//! it would crash in (`src/nss.rs`); and the C entry point in `src/main.rs` still does what
//! Rust's start-up did for safety: standard descriptors left closed by the parent are opened
//! on /dev/null, so no file the process opens later can become its stdout or stderr.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{self, *};

const ET_EXEC: u16 = 2;
const PT_INTERP: u32 = 3;

/// (ELF type, whether it names a program interpreter): ET_EXEC without PT_INTERP is a
/// static executable loaded at its link address.
fn elf_kind(path: &Path) -> (u16, bool) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&b[..4], b"\x7fELF", "{} is not ELF", path.display());
    assert_eq!(b[4], 2, "{} is not a 64-bit ELF", path.display());
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = (u64_at(32) as usize, u16_at(54) as usize, u16_at(56));
    let interp = (0..phnum as usize).any(|i| u32_at(phoff + i * phentsize) == PT_INTERP);
    (u16_at(16), interp)
}

#[test]
fn the_shipped_build_and_the_host_build_are_static_and_not_position_independent() {
    for (what, bin) in both_builds() {
        let (kind, interp) = elf_kind(&bin);
        assert_eq!(
            (kind, interp),
            (ET_EXEC, false),
            "{what} must be a static, non-PIE executable (ELF type {kind}, program \
             interpreter {interp}): check .cargo/config.toml"
        );
    }
}

/// Both builds, as the helper and the broker run them: the static musl one, and what
/// `cargo build` / `cargo install --path .` make in this checkout for the host (glibc here).
fn both_builds() -> [(&'static str, std::path::PathBuf); 2] {
    [
        ("static musl", common::static_bin()),
        ("host (glibc)", common::bin()),
    ]
}

/// A group name /etc/group does not know: glibc would ask the next module of
/// `/etc/nsswitch.conf` (`group: files systemd` on Debian), which a static glibc cannot load
/// without crashing. It must be the broker's own error instead.
#[test]
fn a_group_no_file_knows_is_an_error_sentence_not_a_crash() {
    let dir = TempDir::new("startup-group");
    for (what, bin) in both_builds() {
        let out = run(Command::new(&bin)
            .env("HOME", dir.join("home"))
            .env_remove("ECR_AUTH_CONFIG")
            .args([
                "serve",
                "--allow",
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
                "--socket",
            ])
            .arg(dir.join("broker.sock"))
            .args(["--group", "no-such-group-ecr-auth"]));
        assert_eq!(
            out.status.code(),
            Some(1),
            "{what}: a missing group must end with exit status 1, not a signal ({:?}):\n{}",
            out.status,
            output_text(&out)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("no-such-group-ecr-auth"),
            "{what}: the error must name the group:\n{err}"
        );
    }
}

/// A DNS server on a loopback address of its own (dnsmasq, with no upstream: it answers
/// only for the name it is given, and never forwards a query anywhere).
struct Dns {
    addr: std::net::Ipv4Addr,
    proc: Proc,
    log: std::path::PathBuf,
}

impl Dns {
    fn start(dir: &Path, name: &str) -> Dns {
        let log = dir.join("dnsmasq.log");
        // 127.0.53.x, x from the test's pid: the DNS port is fixed, so the address varies.
        let addr = std::net::Ipv4Addr::new(127, 0, 53, 2 + (std::process::id() % 250) as u8);
        let mut cmd = Command::new(tool("dnsmasq"));
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--port=53",
            "--pid-file=",
            "--log-facility=-",
            "--log-queries",
        ])
        .arg(format!("--listen-address={addr}"))
        // The name has an A record and no AAAA (NODATA, not REFUSED: musl takes a refusal of
        // either query as a failure); every other name under .test does not exist.
        .arg(format!("--host-record={name},127.0.0.1"))
        .arg("--local=/test/");
        let mut proc = Proc::spawn("dnsmasq", cmd, &log);
        // Not `name`: the log of queries for `name` is the test's evidence.
        let query = dns_query("ready.test");
        proc.wait_until("dnsmasq", Duration::from_secs(20), || {
            let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
            sock.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut buf = [0u8; 512];
            sock.send_to(&query, (addr, 53)).is_ok() && sock.recv(&mut buf).is_ok()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        Dns { addr, proc, log }
    }

    /// How many queries for the A record of `name` it has answered.
    fn queries(&self, name: &str) -> usize {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.matches(&format!("query[A] {name} from")).count()
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.proc.stop(Duration::from_secs(5));
    }
}

/// A DNS query for the A record of `name` (RFC 1035 §4.1), to see that dnsmasq answers.
fn dns_query(name: &str) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Runs `bin ARGS` in a mount namespace of its own where /etc/hosts and /etc/resolv.conf are
/// the given files (the machine's stay as they are).
fn in_mount_namespace(bin: &Path, hosts: &Path, resolv: &Path) -> Command {
    let mut cmd = Command::new(tool("unshare"));
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount --bind \"$1\" /etc/hosts && mount --bind \"$2\" /etc/resolv.conf && \
         shift 2 && exec \"$@\"",
        "sh",
    ])
    .arg(hosts)
    .arg(resolv)
    .arg(bin);
    cmd
}

/// The endpoint AWS is reached at is a name, as on every real machine: found in /etc/hosts,
/// or asked of the DNS server /etc/resolv.conf names. Both builds resolve both (the static
/// glibc one with its built-in `files` and `dns` modules only).
#[test]
fn both_builds_resolve_the_aws_endpoint_through_etc_hosts_and_dns() {
    let moto = Moto::start();
    let dir = TempDir::new("startup-names");
    let dns = Dns::start(dir.path(), "ecr-by-dns.test");
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n127.0.0.1 ecr-by-hosts.test\n").unwrap();
    let resolv = dir.join("resolv.conf");
    std::fs::write(
        &resolv,
        format!("nameserver {}\noptions timeout:2 attempts:1\n", dns.addr),
    )
    .unwrap();
    for (what, bin) in both_builds() {
        for name in ["ecr-by-hosts.test", "ecr-by-dns.test"] {
            let cache = dir.join(format!("cache-{}-{name}", what.replace(' ', "-")));
            let asked = dns.queries(name);
            let mut cmd = in_mount_namespace(&bin, &hosts, &resolv);
            apply_aws_env(&mut cmd, &format!("http://{name}:{}", moto.port))
                .env("HOME", dir.join("home"))
                .env("ECR_AUTH_CACHE_DIR", &cache)
                .env_remove("ECR_AUTH_CONFIG")
                .env_remove("ECR_AUTH_BROKER")
                .args(["get-login-password", "--region", "eu-west-1"]);
            let out = run(&mut cmd);
            assert!(
                out.status.success(),
                "{what}, AWS at {name}: {}",
                output_text(&out)
            );
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                format!("{MOTO_PASSWORD}\n"),
                "{what}, AWS at {name}"
            );
            // The name came from where it should: /etc/hosts is read first and answers.
            let dns_answered = dns.queries(name) > asked;
            assert_eq!(
                dns_answered,
                name == "ecr-by-dns.test",
                "{what}, AWS at {name}: asked the DNS server: {dns_answered}"
            );
        }
    }
}

#[test]
fn a_daemon_started_with_closed_standard_descriptors_has_them_on_dev_null() {
    let tokens = TokenServer::start();
    let dir = TempDir::new("startup");
    let socket = dir.join("broker.sock");
    let mut cmd = Command::new("/bin/sh");
    apply_aws_env(&mut cmd, &tokens.endpoint)
        .env("HOME", dir.join("home"))
        .env_remove("ECR_AUTH_CONFIG")
        .env_remove("ECR_AUTH_BROKER")
        .args(["-c", "exec 0<&- 1>&- 2>&-; exec \"$@\"", "sh"])
        .arg(common::bin())
        .args([
            "serve",
            "--allow",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            "--socket",
        ])
        .arg(&socket);
    let mut broker = Proc::spawn("broker", cmd, &dir.join("broker.log"));
    broker
        .wait_until("broker", Duration::from_secs(30), || {
            http_unix(&socket, "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    for fd in 0..=2 {
        let target = std::fs::read_link(format!("/proc/{}/fd/{fd}", broker.pid()))
            .unwrap_or_else(|e| panic!("fd {fd} of the broker: {e}"));
        assert_eq!(
            target,
            Path::new("/dev/null"),
            "fd {fd} of a process started with it closed must be /dev/null, not {}",
            target.display()
        );
    }
    // And it serves: the descriptors it opened itself are not mixed up with them.
    let r = http_unix(
        &socket,
        "GET",
        "/v1/token?registry=123456789012.dkr.ecr.eu-west-1.amazonaws.com",
        &[],
        b"",
    )
    .expect("the broker answers");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    broker.stop(Duration::from_secs(10));
}
