//! `podman` and `skopeo` commands isolated in a caller-owned temp dir: their own storage,
//! config files, auth file default and HOME, so nothing on the machine (or another test)
//! is read or changed.
//!
//! podman (4.3, rootful) needs: `--root`, `--runroot`, `--tmpdir`, `--storage-driver vfs`
//! (no overlay mounts to clean up), `--cgroup-manager cgroupfs` and `--events-backend file`
//! (no systemd/journald here), plus CONTAINERS_CONF / CONTAINERS_STORAGE_CONF /
//! CONTAINERS_REGISTRIES_CONF pointing at small files of ours and REGISTRY_AUTH_FILE at an
//! empty auth file of ours (so only `--authfile` supplies credentials). Pull from the lab
//! registry with `podman pull --tls-verify=false --authfile F 127.0.0.1:PORT/repo:tag`.

use std::path::Path;
use std::process::Command;

/// Writes the config files once per dir and returns the common environment.
fn containers_env(tmp: &Path) -> Vec<(String, String)> {
    let conf = tmp.join("containers-conf");
    let home = tmp.join("home");
    for d in [&conf, &home] {
        std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("cannot create {}: {e}", d.display()));
    }
    let storage = format!(
        "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
        tmp.join("podman-root").display(),
        // podman refuses a runroot longer than 50 characters: keep it short.
        tmp.join("rr").display()
    );
    let files = [
        ("storage.conf", storage.as_str()),
        ("registries.conf", "unqualified-search-registries = []\n"),
        (
            "containers.conf",
            "[engine]\nevents_logger = \"file\"\ncgroup_manager = \"cgroupfs\"\n",
        ),
        (
            "policy.json",
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        ),
    ];
    for (name, text) in files {
        let path = conf.join(name);
        if !path.exists() {
            std::fs::write(&path, text)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        }
    }
    let no_default_auth = tmp.join("no-default-auth.json");
    if !no_default_auth.exists() {
        std::fs::write(&no_default_auth, "{\"auths\":{}}\n").expect("write empty auth file");
    }
    let p = |name: &str| conf.join(name).display().to_string();
    vec![
        ("CONTAINERS_CONF".into(), p("containers.conf")),
        ("CONTAINERS_STORAGE_CONF".into(), p("storage.conf")),
        ("CONTAINERS_REGISTRIES_CONF".into(), p("registries.conf")),
        (
            "REGISTRY_AUTH_FILE".into(),
            no_default_auth.display().to_string(),
        ),
        ("HOME".into(), home.display().to_string()),
        (
            "XDG_CONFIG_HOME".into(),
            home.join(".config").display().to_string(),
        ),
    ]
}

/// Rootful podman with private storage under `tmp` (see the module docs).
pub fn podman(tmp: &Path) -> Command {
    let env = containers_env(tmp);
    let mut cmd = Command::new(super::tool("podman"));
    cmd.envs(env)
        .env_remove("XDG_RUNTIME_DIR")
        .arg("--root")
        .arg(tmp.join("podman-root"))
        .arg("--runroot")
        .arg(tmp.join("rr"))
        .arg("--tmpdir")
        .arg(tmp.join("podman-tmp"))
        .args([
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ]);
    cmd
}

/// skopeo with our own signature policy and no ambient credentials (see the module docs).
pub fn skopeo(tmp: &Path) -> Command {
    let env = containers_env(tmp);
    let mut cmd = Command::new(super::tool("skopeo"));
    cmd.envs(env)
        .env_remove("XDG_RUNTIME_DIR")
        .arg("--policy")
        .arg(tmp.join("containers-conf/policy.json"));
    cmd
}
