//! A real three-manager Swarm: three lab [`Dockerd`]s, each with its own data root, exec
//! root, pid file and socket, listening and advertising on [`MANAGER_ADDRS`] (loopback
//! addresses other than 127.0.0.1, so one-node lab Swarms run beside it). The first runs
//! `swarm init`, the others `swarm join` with the manager token.
//!
//! The addresses are fixed, so one cluster at a time on this machine: [`Cluster::start`]
//! takes an exclusive `flock` on `<tmp>/ecr-auth-lab-swarm-managers.lock` (tests in other
//! threads and other test processes wait for it) and holds it until the cluster is gone.
//! Drop: every node leaves the Swarm and its daemon stops ([`Dockerd`]'s own teardown:
//! containers, mounts and temp dirs go too), also when the test panicked.

use super::{process::sys, Dockerd};
use std::time::{Duration, Instant};

/// Where the three managers listen (Swarm's default port, one loopback address each).
pub const MANAGER_ADDRS: [&str; 3] = ["127.0.0.2:2377", "127.0.0.3:2377", "127.0.0.4:2377"];

/// How long to wait for another test's cluster to go away.
const LOCK_WAIT: Duration = Duration::from_secs(20 * 60);

pub struct Cluster {
    /// `nodes[i]` listens on `MANAGER_ADDRS[i]`. Declared first: dropped before the lock.
    pub nodes: Vec<Dockerd>,
    _lock: std::fs::File,
}

impl Cluster {
    /// Three daemons, one Swarm of three managers, every manager reachable.
    pub fn start() -> Cluster {
        let lock = take_lock();
        for addr in MANAGER_ADDRS {
            if let Err(e) = std::net::TcpListener::bind(addr) {
                panic!(
                    "{addr} is taken ({e}) though no lab cluster holds the lock: a dockerd left \
                     over from a killed test run? See `ss -ltnp 'sport = :2377'`, then stop it"
                );
            }
        }
        let mut nodes: Vec<Dockerd> = Vec::new();
        for _ in MANAGER_ADDRS {
            nodes.push(Dockerd::start());
        }
        nodes[0].swarm_init_at(MANAGER_ADDRS[0]);
        let token = nodes[0].manager_join_token();
        for (node, addr) in nodes.iter().zip(MANAGER_ADDRS).skip(1) {
            node.swarm_join(addr, &token, MANAGER_ADDRS[0]);
        }
        let cluster = Cluster { nodes, _lock: lock };
        let ready = wait(super::STARTUP_TIMEOUT, || {
            cluster
                .managers(0)
                .is_some_and(|m| m.len() == 3 && m.iter().all(|(_, reachable, _)| *reachable))
        });
        assert!(
            ready,
            "the managers did not all become reachable: {:?}",
            cluster.managers(0)
        );
        cluster
    }

    /// As node `i` sees them: each manager's (index, reachable, leader). `None` if node
    /// `i` is stopped or cannot answer (no quorum).
    pub fn managers(&self, i: usize) -> Option<Vec<(usize, bool, bool)>> {
        if !self.nodes[i].is_running() {
            return None;
        }
        let r = super::http_unix(&self.nodes[i].socket, "GET", "/v1.41/nodes", &[], b"").ok()?;
        if r.status != 200 {
            return None;
        }
        let nodes = r.json();
        let mut out = Vec::new();
        for n in nodes.as_array()? {
            let m = &n["ManagerStatus"];
            let Some(index) = MANAGER_ADDRS.iter().position(|a| m["Addr"] == *a) else {
                continue;
            };
            out.push((index, m["Reachability"] == "reachable", m["Leader"] == true));
        }
        out.sort();
        Some(out)
    }

    /// The leader, as the running nodes see it (they agree, or `None`).
    pub fn leader(&self) -> Option<usize> {
        self.leader_seen_by(&[0, 1, 2])
    }

    /// The leader, as these nodes see it (those that answer agree, or `None`).
    pub fn leader_seen_by(&self, nodes: &[usize]) -> Option<usize> {
        let mut seen = None;
        for &i in nodes {
            let Some(managers) = self.managers(i) else {
                continue;
            };
            let leader = managers.iter().find(|m| m.2).map(|m| m.0)?;
            if seen.is_some_and(|s| s != leader) {
                return None;
            }
            seen = Some(leader);
        }
        seen
    }
}

fn take_lock() -> std::fs::File {
    let path = std::env::temp_dir().join("ecr-auth-lab-swarm-managers.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let start = Instant::now();
    while !sys::try_lock(&file) {
        if start.elapsed() > LOCK_WAIT {
            panic!(
                "another three-manager lab Swarm held {} for {LOCK_WAIT:?}",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    file
}

fn wait(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    f()
}
