//! `ecr-auth configure docker`: a user's Docker `config.json` and containers
//! `auth.json` wired to the helper, every other key kept, mode 0600, a backup,
//! idempotent; then real clients use them: skopeo and podman read the
//! `credHelpers` of auth.json and pull from the lab registry through the helper
//! (tokens from moto; the lab host is mapped to ECR by the ecr-auth config).

use crate::common;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{Moto, Registry, TempDir, MOTO_ACCOUNT, MOTO_PASSWORD};

const EXISTING: &str = r#"{
	"auths": {
		"registry.example.com": {
			"auth": "dXNlcjpwYXNz"
		}
	},
	"credsStore": "desktop",
	"currentContext": "lab",
	"proxies": {
		"default": {
			"noProxy": "127.0.0.1"
		}
	}
}
"#;

struct Home {
    tmp: TempDir,
    config: PathBuf,
}

impl Home {
    fn new(registry: &str) -> Home {
        let tmp = TempDir::new("cfgdocker");
        let config = tmp.join("ecr-auth.toml");
        std::fs::write(&config, format!("[[registry]]\nhost = \"{registry}\"\naccount = \"{MOTO_ACCOUNT}\"\nregion = \"eu-west-1\"\n")).unwrap();
        std::fs::create_dir_all(tmp.join("home/.docker")).unwrap();
        Home { tmp, config }
    }

    fn docker_json(&self) -> PathBuf {
        self.tmp.join("home/.docker/config.json")
    }

    fn auth_json(&self) -> PathBuf {
        self.tmp.join("xdg/containers/auth.json")
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::new(common::bin());
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.tmp.join("home"))
            .env("XDG_CONFIG_HOME", self.tmp.join("xdg"))
            .env("ECR_AUTH_CONFIG", &self.config)
            .args(["configure", "docker"]);
        cmd
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn backups(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".bak-"))
        .count()
}

#[test]
fn wires_both_files_keeping_everything_else() {
    let registry = "127.0.0.1:5999";
    let home = Home::new(registry);
    std::fs::write(home.docker_json(), EXISTING).unwrap();
    std::fs::set_permissions(home.docker_json(), std::fs::Permissions::from_mode(0o644)).unwrap();

    // --dry-run: two diffs, nothing written.
    let out = common::run_ok(home.cmd().arg("--dry-run"));
    assert!(
        out.contains(&format!("+++ {}", home.docker_json().display())),
        "{out}"
    );
    assert!(out.contains("--- /dev/null"), "{out}");
    assert_eq!(
        std::fs::read_to_string(home.docker_json()).unwrap(),
        EXISTING
    );
    assert!(!home.auth_json().exists());

    common::run_ok(&mut home.cmd());
    let doc = json(&home.docker_json());
    assert_eq!(doc["auths"]["registry.example.com"]["auth"], "dXNlcjpwYXNz");
    assert_eq!(doc["credsStore"], "desktop");
    assert_eq!(doc["currentContext"], "lab");
    assert_eq!(doc["proxies"]["default"]["noProxy"], "127.0.0.1");
    assert_eq!(
        doc["credHelpers"],
        serde_json::json!({registry: "ecr-login"})
    );
    assert_eq!(
        mode(&home.docker_json()),
        0o600,
        "a file with credentials in it"
    );
    assert_eq!(backups(&home.tmp.join("home/.docker")), 1);
    let auth = json(&home.auth_json());
    assert_eq!(
        auth,
        serde_json::json!({"credHelpers": {registry: "ecr-login"}})
    );
    assert_eq!(mode(&home.auth_json()), 0o600);

    // Again: nothing to do.
    let before = (
        std::fs::read_to_string(home.docker_json()).unwrap(),
        std::fs::read_to_string(home.auth_json()).unwrap(),
    );
    let out = common::run(&mut home.cmd());
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("up to date, not changed").count(),
        2,
        "{stderr}"
    );
    assert_eq!(
        before,
        (
            std::fs::read_to_string(home.docker_json()).unwrap(),
            std::fs::read_to_string(home.auth_json()).unwrap()
        )
    );
    assert_eq!(backups(&home.tmp.join("home/.docker")), 1);

    // --creds-store: Docker only (containers tools have no credsStore), said so.
    let out = common::run(
        home.cmd()
            .args(["--creds-store", "--config-dir"])
            .arg(home.tmp.join("other")),
    );
    assert!(out.status.success(), "{}", common::output_text(&out));
    assert_eq!(
        json(&home.tmp.join("other/config.json")),
        serde_json::json!({"credsStore": "ecr-login"})
    );
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("containers tools (podman, buildah, skopeo) have no credsStore"));
}

#[test]
fn a_broken_config_json_is_refused_untouched() {
    let home = Home::new("127.0.0.1:5999");
    std::fs::write(home.docker_json(), "{\"auths\": {\"x\": 1}}").unwrap();
    let e = common::run_fails(&mut home.cmd());
    assert!(
        e.contains("config.json is not a Docker config: `auths.x` must be an object")
            && e.contains("fix or remove it"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(home.docker_json()).unwrap(),
        "{\"auths\": {\"x\": 1}}"
    );
    assert!(
        !home.auth_json().exists(),
        "nothing written when one file is bad"
    );
    let e = common::run_fails(home.cmd().args(["--registry", "quay.io"]));
    assert!(e.contains("quay.io is not an Amazon ECR registry"), "{e}");
}

#[test]
fn skopeo_and_podman_pull_through_the_wired_auth_json() {
    let moto = Moto::start();
    let registry = Registry::start_with_password(MOTO_PASSWORD);
    let digest = registry.push_test_image("team/tool", "3", "AWS", MOTO_PASSWORD);
    let home = Home::new(&registry.addr);
    // Docker's config.json elsewhere: containers tools also read ~/.docker/config.json,
    // and this test is about auth.json alone.
    common::run_ok(
        home.cmd()
            .arg("--config-dir")
            .arg(home.tmp.join("docker-elsewhere")),
    );
    assert!(!home.docker_json().exists());
    let helpers = common::helper_path_dir(home.tmp.path());
    let image = format!("docker://{}", registry.image("team/tool", "3"));
    let with_lab = |cmd: &mut Command| {
        common::apply_aws_env(cmd, &moto.endpoint);
        cmd.env("PATH", common::path_with(&helpers))
            .env("ECR_AUTH_CONFIG", &home.config)
            .env("ECR_AUTH_CACHE_DIR", home.tmp.join("cache"));
    };

    let mut skopeo = common::skopeo(home.tmp.path());
    with_lab(&mut skopeo);
    let out = common::run_ok(
        skopeo
            .args([
                "inspect",
                "--tls-verify=false",
                "--format",
                "{{.Digest}}",
                "--authfile",
            ])
            .arg(home.auth_json())
            .arg(&image),
    );
    assert_eq!(out.trim(), digest);

    let mut podman = common::podman(home.tmp.path());
    with_lab(&mut podman);
    common::run_ok(
        podman
            .args(["pull", "-q", "--tls-verify=false", "--authfile"])
            .arg(home.auth_json())
            .arg(registry.image("team/tool", "3")),
    );

    // Control: the same auth file without its credHelpers entry gets nothing.
    let plain = home.tmp.join("plain-auth.json");
    std::fs::write(&plain, "{\"auths\":{}}").unwrap();
    let mut skopeo = common::skopeo(home.tmp.path());
    with_lab(&mut skopeo);
    let denied = common::run_fails(
        skopeo
            .args(["inspect", "--tls-verify=false", "--authfile"])
            .arg(&plain)
            .arg(&image),
    );
    assert!(
        denied.to_lowercase().contains("unauthorized")
            || denied.contains("authentication required"),
        "{denied}"
    );
}
