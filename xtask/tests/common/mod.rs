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

/// Returns true when running as root. Otherwise panics in CI (which runs as root) and
/// elsewhere prints a loud SKIP line and returns false.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let msg = format!("{test}: needs root (mounts a small tmpfs or switches to a second uid); run the tests as root");
    if in_ci() {
        panic!("{msg}");
    }
    eprintln!("SKIP {msg}");
    false
}

/// A small tmpfs mounted on a fresh temporary directory: a filesystem that fills up on cue.
/// Root only; unmounted (lazily, so an open file cannot keep it) on drop.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `size` as `mount -o size=` takes it (`4m`). `None` (after a SKIP line) without root.
    pub fn mount(test: &str, size: &str) -> Option<Tmpfs> {
        if !require_root(test) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(status.success(), "mount -t tmpfs on {} failed", dir.path().display());
        Some(Tmpfs { dir })
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
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
