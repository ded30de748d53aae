//! `vm-test --disk` scenarios and `vm-test --matrix` against real QEMU (TCG) and the busybox
//! fixture, and the GitHub Actions workflow checked by actionlint. The VM tests run one at a
//! time; the matrix inside runs two guests with one CPU each.

mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ONE_MATRIX_AT_A_TIME: Mutex<()> = Mutex::new(());

const TOOLS: &[&str] = &["qemu-system-x86_64", "qemu-img", "xorriso", "cpio"];

fn vm_tools(test: &str) -> Option<std::sync::MutexGuard<'static, ()>> {
    if !common::require_tools(test, TOOLS) {
        return None;
    }
    Some(ONE_MATRIX_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner()))
}

/// A fresh matrix directory under target/vm-test-runs/ (kept for reading after a failure).
fn matrix_dir() -> PathBuf {
    let runs = common::repo_root().join("target/vm-test-runs");
    std::fs::create_dir_all(&runs).unwrap();
    tempfile::Builder::new().prefix("matrix-").tempdir_in(runs).unwrap().keep().join("m")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn check<'a>(meta: &'a Value, name: &str) -> &'a Value {
    meta["checks"].as_array().and_then(|c| c.iter().find(|c| c["name"] == name)).unwrap_or(&Value::Null)
}

/// The small timeouts of the suite's matrices: the busybox fixture boots in ~30 s under TCG.
const FAST: &[&str] =
    &["--image", "fixture", "--accel", "tcg", "--cpus", "1", "--boot-timeout", "240", "--storage-timeout", "60"];

fn matrix(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let started = Instant::now();
    let out = common::xtask()
        .args(["vm-test", "--matrix"])
        .args(FAST)
        .args(args)
        .arg("--run-dir")
        .arg(dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("xtask runs");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    eprintln!("--- matrix {args:?}: {:?} in {:.1}s\n{stdout}\n{stderr}", out.status, started.elapsed().as_secs_f64());
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

/// Every disk scenario as one cell of a 4-cell matrix at --jobs 2: each reaches the outcome
/// scripts/pre-nixos.sh documents; `existing` is a real second boot of the disk its first boot
/// provisioned, with the disk's bytes unchanged. One summary table, one junit.xml.
#[test]
fn four_disk_scenarios_pass_as_a_matrix_at_two_jobs() {
    let Some(_vm) = vm_tools("four_disk_scenarios_pass_as_a_matrix_at_two_jobs") else { return };
    let dir = matrix_dir();
    let (code, stdout, _) = matrix(&dir, &["--disk", "blank,none,existing,two", "--jobs", "2"]);
    assert_eq!(code, 0, "{stdout}");
    for cell in ["fixture-bios-blank", "fixture-bios-none", "fixture-bios-existing", "fixture-bios-two"] {
        assert!(stdout.lines().any(|l| l.starts_with(cell) && l.contains("pass")), "{cell} not in\n{stdout}");
    }
    assert!(stdout.contains("4/4 cells passed"), "{stdout}");

    let cell = |name: &str| read_json(&dir.join(format!("fixture-bios-{name}/metadata.json")));
    let status = |meta: &Value| check(meta, "storage-status")["detail"].as_str().unwrap_or("").to_string();
    let blank = cell("blank");
    assert_eq!(status(&blank), "STATE=applied DETAIL=auto-applied");
    let lvm = check(&blank, "lvm")["detail"].as_str().unwrap_or("");
    assert!(lvm.contains("swap|main") && lvm.contains("slash|main") && lvm.contains("/dev/vda|main"), "{lvm}");
    assert_eq!(status(&cell("none")), "STATE=skipped DETAIL=no-disk");
    assert!(check(&cell("none"), "lvm")["detail"].as_str().unwrap_or("").starts_with("no VG main"));
    let two = cell("two");
    assert_eq!(status(&two), "STATE=applied DETAIL=auto-applied");
    assert!(check(&two, "lvm")["detail"].as_str().unwrap_or("").contains("/dev/vdb blank"), "{two}");
    assert_eq!(two["qemu"]["command"].as_array().unwrap().iter().filter(|a| *a == "-drive").count(), 3);

    let existing = cell("existing");
    assert_eq!(status(&existing), "STATE=plan-only DETAIL=existing-storage");
    assert_eq!(check(&existing, "disk-unchanged")["status"], "pass", "{existing}");
    let first = read_json(&dir.join("fixture-bios-existing/first-boot/metadata.json"));
    assert_eq!(first["outcome"], "pass");
    assert_eq!(status(&first), "STATE=applied DETAIL=auto-applied");
    assert!(!dir.join("fixture-bios-existing/existing-disk.qcow2").exists(), "the disk is scratch");

    // Each cell its own run directory, sockets and port.
    let ports: std::collections::BTreeSet<u64> =
        ["blank", "none", "existing", "two"].iter().map(|c| cell(c)["qemu"]["ssh_port"].as_u64().unwrap()).collect();
    assert_eq!(ports.len(), 4);
    let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<testcase ").count(), 4, "{junit}");
    assert!(junit.contains("tests=\"4\" failures=\"0\""), "{junit}");
    let summary = read_json(&dir.join("matrix.json"));
    assert_eq!(summary["cells"].as_array().unwrap().len(), 4);
}

fn pid_alive(pid: i64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

/// QEMU pids the cells have recorded so far.
fn qemu_pids(dir: &Path) -> Vec<i64> {
    let Ok(entries) = std::fs::read_dir(dir) else { return vec![] };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("metadata.json")).ok())
        .filter_map(|t| serde_json::from_str::<Value>(&t).ok())
        .filter_map(|m| m["qemu"]["pid"].as_i64())
        .collect()
}

/// Ctrl-C while two cells boot: both QEMUs stop, every cell is on record (the running ones
/// interrupted, the third not run), junit.xml is written, exit 130.
#[test]
fn ctrl_c_stops_every_vm_and_records_every_cell() {
    let Some(_vm) = vm_tools("ctrl_c_stops_every_vm_and_records_every_cell") else { return };
    let dir = matrix_dir();
    let child = common::xtask()
        .args(["vm-test", "--matrix"])
        .args(FAST)
        .args(["--disk", "blank,none,two", "--jobs", "2", "--run-dir"])
        .arg(&dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(180);
    let mut pids = qemu_pids(&dir);
    while pids.len() < 2 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
        pids = qemu_pids(&dir);
    }
    assert_eq!(pids.len(), 2, "two QEMUs started");
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stdout));
    for pid in pids {
        assert!(!pid_alive(pid), "QEMU {pid} outlived the interrupted matrix");
    }
    let cells = read_json(&dir.join("matrix.json"))["cells"].as_array().unwrap().clone();
    let outcomes: Vec<&str> = cells.iter().map(|c| c["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["interrupted", "interrupted", "not-run"], "{cells:?}");
    for name in ["fixture-bios-blank", "fixture-bios-none"] {
        let meta = read_json(&dir.join(name).join("metadata.json"));
        assert_eq!(meta["outcome"], "interrupted", "{name}");
        assert!(dir.join(name).join("junit.xml").exists());
    }
    let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<testcase ").count(), 3, "{junit}");
    assert!(junit.contains("skipped=\"1\""), "{junit}");
}

#[test]
fn list_values_outside_a_matrix_are_usage_errors() {
    for (args, says) in [
        (&["--disk", "blank,none"][..], "--matrix"),
        (&["--firmware", "floppy"][..], "--firmware"),
        (&["--jobs", "2"][..], "--matrix"),
    ] {
        let out = common::xtask().arg("vm-test").args(["--image", "fixture"]).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let out = common::xtask().args(["vm-test", "--matrix", "--disk", "floppy"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// The CI workflow is valid GitHub Actions (actionlint, installed by scripts/install-deps.sh)
/// and runs the matrix the way this repository documents.
#[test]
fn the_workflow_passes_actionlint() {
    let workflow = common::repo_root().join(".github/workflows/vm-test.yml");
    let text = std::fs::read_to_string(&workflow).unwrap();
    for part in ["cargo xtask build-image", "cargo xtask vm-test --no-build", "/dev/kvm", "junit.xml", "--firmware"] {
        assert!(text.contains(part), "{part} not in the workflow");
    }
    if !common::require_tools("the_workflow_passes_actionlint", &["actionlint"]) {
        return;
    }
    let out = std::process::Command::new("actionlint").arg(&workflow).output().unwrap();
    assert!(
        out.status.success(),
        "actionlint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
