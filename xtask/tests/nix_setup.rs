//! Nix that can build on a fresh machine: the project's own set-up (scripts/nix-build-users.sh,
//! run by scripts/install-deps.sh) and doctor's build probe, which proves nix can build by
//! building, and says why not: a missing build group, a store a normal user cannot write with no
//! nix-daemon, and the daemon path that makes it work. Runs as root (as CI does): the normal user
//! is `nobody`, reached with setpriv.

mod common;

use common::{in_ci, require_tools, xtask};
use serde_json::Value;
use std::process::{Child, Command, Output};

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// doctor --json's `nix-build` result, with `env` set and, when `as_nobody`, run as uid 65534.
fn probe(env: &[(&str, &str)], as_nobody: bool) -> Value {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_xtask")]);
        std::fs::set_permissions(home.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        c
    } else {
        xtask()
    };
    cmd.args(["doctor", "--json"]).env("HOME", home.path()).env("TMPDIR", home.path()).env_remove("NIX_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let all: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    all.as_array().unwrap().iter().find(|c| c["name"] == "nix-build").cloned().expect("nix-build check")
}

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc_geteuid() } == 0;
    assert!(is_root || !in_ci(), "CI runs as root");
    if !is_root {
        eprintln!("SKIP: needs root (creates groups, switches to nobody)");
    }
    is_root
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

#[test]
fn build_users_script_is_idempotent_and_leaves_a_group_nix_accepts() {
    if !require_tools("build_users_script", &["nix", "getent", "shellcheck"]) || !root() {
        return;
    }
    let script = common::repo_root().join("scripts/nix-build-users.sh");
    let sc = Command::new("shellcheck").arg(&script).output().unwrap();
    assert!(sc.status.success(), "shellcheck: {}", text(&sc));
    for _ in 0..2 {
        let o = Command::new(&script).output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
    }
    let again = Command::new(&script).output().unwrap();
    assert_eq!(text(&again).trim(), "nix-build-users: nixbld group and 10 build users present");
    let members = Command::new("getent").args(["group", "nixbld"]).output().unwrap();
    let line = text(&members);
    for n in 1..=10 {
        assert!(line.trim_end().rsplit(':').next().unwrap().split(',').any(|m| m == format!("nixbld{n}")), "{line}");
    }
    assert_eq!(probe(&[], false)["status"], "ok");
}

#[test]
fn probe_names_a_missing_build_group_with_the_fix() {
    if !require_tools("probe_missing_group", &["nix"]) || !root() {
        return;
    }
    // What a fresh Debian machine has before the set-up: nix wants a group that is not there.
    let r = probe(&[("NIX_CONFIG", "build-users-group = xtask-no-such-group")], false);
    assert_eq!(r["status"], "fail", "{r}");
    assert!(
        r["detail"].as_str().unwrap().contains("group `xtask-no-such-group`, and that group does not exist"),
        "{r}"
    );
    assert!(r["fix"].as_str().unwrap().starts_with("sudo scripts/nix-setup.sh"), "{r}");
}

/// A nix-daemon for one test: killed on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_normal_user_builds_through_the_daemon_and_is_told_when_there_is_none() {
    if !require_tools("probe_normal_user", &["nix", "nix-daemon", "setpriv"]) || !root() {
        return;
    }
    let daemon_answers = || {
        Command::new("nix")
            .args(["--extra-experimental-features", "nix-command", "store", "ping", "--store", "daemon"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    // No daemon: the store belongs to root.
    let daemon_running = daemon_answers();
    if !daemon_running {
        let r = probe(&[], true);
        assert_eq!(r["status"], "fail", "{r}");
        let detail = r["detail"].as_str().unwrap();
        assert!(
            detail.contains("the nix store belongs to root and no nix-daemon")
                || detail.contains("no nix-daemon answers"),
            "{r}"
        );
        assert!(r["fix"].as_str().unwrap().contains("nix-daemon"), "{r}");
    }
    // With a daemon (what scripts/nix-setup.sh sets up for a normal user) the same user builds.
    let _daemon = (!daemon_running).then(|| {
        let quiet = || std::process::Stdio::null();
        Daemon(Command::new("nix-daemon").stdout(quiet()).stderr(quiet()).spawn().expect("nix-daemon starts"))
    });
    // A socket file may be left from an earlier daemon: wait until this one answers.
    let t = std::time::Instant::now();
    while !daemon_answers() {
        assert!(t.elapsed() < std::time::Duration::from_secs(10), "nix-daemon did not answer within 10 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let r = probe(&[], true);
    assert_eq!(r["status"], "ok", "{r}");
    assert!(r["detail"].as_str().unwrap().contains("through the nix-daemon"), "{r}");
}
