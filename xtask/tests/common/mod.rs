//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The xtask binary under test.
pub fn xtask() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
}

/// Runs xtask with `args`, returning its output (stdout/stderr captured).
pub fn run_xtask(args: &[&str]) -> Output {
    xtask().args(args).output().expect("xtask runs")
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Whether the tests run in CI, where a missing tool is a failure, never a skip.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Returns true when every tool is present. When one is missing: panics in CI; elsewhere
/// prints a loud SKIP line naming the tool and the install command, and returns false.
pub fn require_tools(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| which::which(t).is_err()).collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "{test}: missing tool(s) {missing:?}; run `sudo scripts/install-deps.sh` (CI fails here, it never skips)"
    );
    if in_ci() {
        panic!("{msg}");
    }
    eprintln!("SKIP {msg}");
    false
}

/// Tools that build the systemd fixture (mmdebstrap, squashfs, GRUB EFI, FAT image).
pub const SYSTEMD_FIXTURE_TOOLS: &[&str] =
    &["mmdebstrap", "mksquashfs", "grub-mkimage", "mcopy", "mkfs.vfat", "xorriso"];

/// Whether the systemd fixture can be built here: its tools, and root (mmdebstrap and chroot
/// make its root file system). Like `require_tools`: a failure in CI, a SKIP elsewhere.
pub fn require_systemd_fixture(test: &str) -> bool {
    if !require_tools(test, SYSTEMD_FIXTURE_TOOLS) {
        return false;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let msg = format!("{test}: the systemd fixture is built with mmdebstrap and chroot, which need root");
        assert!(!in_ci(), "{msg}");
        eprintln!("SKIP {msg}");
        return false;
    }
    true
}
