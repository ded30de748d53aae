//! `cargo xtask attach` against a real fixture VM kept by `vm-test --keep`: through a
//! pseudo-terminal (as a user's terminal would be), a command typed into attach runs in the
//! guest; Ctrl-] detaches and the VM keeps running; `--stop` powers it off; without a terminal
//! on stdin attach refuses with exit 2 instead of dying in a termios call.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

/// The kept QEMU is nobody's child: killed on drop, so a failed assertion leaves nothing running.
struct KeptVm(i32);

impl Drop for KeptVm {
    fn drop(&mut self) {
        if pid_alive(self.0) {
            // SAFETY: plain kill of the VM this test started.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
}

/// A pseudo-terminal pair: the master the test types into and reads, the slave a child gets
/// as its terminal.
fn pty() -> (File, OwnedFd) {
    let (mut master_fd, mut slave_fd) = (0, 0);
    // SAFETY: openpty fills two descriptors; the null arguments mean default settings.
    let rc = unsafe {
        libc::openpty(&mut master_fd, &mut slave_fd, std::ptr::null_mut(), std::ptr::null(), std::ptr::null())
    };
    assert_eq!(rc, 0, "openpty");
    // SAFETY: both descriptors are fresh and owned here.
    unsafe { (File::from_raw_fd(master_fd), OwnedFd::from_raw_fd(slave_fd)) }
}

/// Reads the pty master until `needle` shows up (or panics after `within` with what came).
fn read_until(master: &mut File, seen: &mut Vec<u8>, needle: &str, within: Duration) {
    let end = Instant::now() + within;
    while !String::from_utf8_lossy(seen).contains(needle) {
        let left = end.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {needle:?} within {within:?}; got:\n{}", String::from_utf8_lossy(seen));
        let mut fds = [libc::pollfd { fd: master.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(fds.as_mut_ptr(), 1, left.as_millis() as i32) } > 0 {
            let mut buf = [0u8; 4096];
            match master.read(&mut buf) {
                Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                _ => std::thread::sleep(Duration::from_millis(20)), // EIO once the child closed the slave
            }
        }
    }
}

#[test]
fn attach_through_a_pty_runs_a_command_detaches_and_stop_powers_off() {
    if !common::require_tools("attach", &["qemu-system-x86_64", "qemu-img", "xorriso", "cpio"]) {
        return;
    }
    let runs = common::repo_root().join("target/vm-test-runs");
    std::fs::create_dir_all(&runs).unwrap();
    let dir = tempfile::Builder::new().prefix("attach-").tempdir_in(&runs).unwrap().keep();
    let kept = common::xtask()
        .args(["vm-test", "--image", "fixture", "--accel", "tcg", "--keep", "--run-dir"])
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&kept.stdout).into_owned();
    assert_eq!(kept.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&kept.stderr));
    assert!(stdout.contains(&format!("cargo xtask attach {}", dir.display())), "{stdout}");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("metadata.json")).unwrap()).unwrap();
    let pid = meta["qemu"]["pid"].as_i64().unwrap() as i32;
    let _vm = KeptVm(pid);
    assert!(pid_alive(pid));

    // No terminal: a clear refusal, exit 2 (the predecessor died with `termios.error: (25, …)`).
    let no_tty = common::xtask().arg("attach").arg(&dir).stdin(Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&no_tty.stderr).into_owned();
    assert_eq!(no_tty.status.code(), Some(2), "{text}");
    assert!(text.contains("needs a terminal on stdin"), "{text}");

    // A terminal: a pty pair, attach on the slave side, the test types on the master side.
    let (mut master, slave) = pty();
    let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("attach")
        .arg(&dir)
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    read_until(&mut master, &mut seen, "Ctrl-] detaches", Duration::from_secs(20));
    master.write_all(b"echo attach-$((6*7))\r").unwrap();
    read_until(&mut master, &mut seen, "attach-42", Duration::from_secs(20));
    master.write_all(&[0x1d]).unwrap();
    read_until(&mut master, &mut seen, "detached; the VM keeps running", Duration::from_secs(10));
    let end = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > end {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let alive_after_detach = pid_alive(pid);
    let stopped = common::xtask().args(["attach", "--stop"]).arg(&dir).output().unwrap();
    let stop_text = String::from_utf8_lossy(&stopped.stdout).into_owned();
    let end = Instant::now() + Duration::from_secs(10);
    while pid_alive(pid) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    let gone = !pid_alive(pid);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "attach exits 0 after Ctrl-]");
    assert!(alive_after_detach, "the VM keeps running after a detach");
    assert_eq!(stopped.status.code(), Some(0), "{stop_text}{}", String::from_utf8_lossy(&stopped.stderr));
    assert!(stop_text.contains("ended"), "{stop_text}");
    assert!(gone, "attach --stop ended QEMU");
    assert!(!dir.join("disk.qcow2").exists(), "--stop removes the kept disk");
    let logs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("attach-"))
        .collect();
    assert_eq!(logs.len(), 1, "one attach-<UTC>.serial.log");
    let log = std::fs::read_to_string(logs[0].path()).unwrap();
    assert!(log.contains("attach-42"), "the session's guest bytes are teed: {log}");
}

#[test]
fn interact_on_failure_hands_the_failed_guest_to_the_terminal_then_stops_it() {
    if !common::require_tools("interact_on_failure", &["qemu-system-x86_64", "qemu-img", "xorriso", "cpio"]) {
        return;
    }
    // Without a terminal: refused at once, before anything boots.
    let no_tty = common::xtask()
        .args(["vm-test", "--image", "fixture", "--interact-on-failure"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(no_tty.status.code(), Some(2), "{}", String::from_utf8_lossy(&no_tty.stderr));
    assert!(String::from_utf8_lossy(&no_tty.stderr).contains("needs a terminal on stdin"));

    let runs = common::repo_root().join("target/vm-test-runs");
    std::fs::create_dir_all(&runs).unwrap();
    let dir = tempfile::Builder::new().prefix("interact-").tempdir_in(&runs).unwrap().keep();
    let (mut master, slave) = pty();
    // The sudo-password fault fails in the root phase: the user's shell is there to look at.
    let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["vm-test", "--image", "fixture:sudo-password", "--accel", "tcg", "--interact-on-failure", "--run-dir"])
        .arg(&dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    read_until(&mut master, &mut seen, "Ctrl-] detaches", Duration::from_secs(240));
    // The records were complete before the hand-over.
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("metadata.json")).unwrap()).unwrap();
    let _vm = KeptVm(meta["qemu"]["pid"].as_i64().unwrap() as i32);
    assert_eq!(meta["verdict"]["finding"], "escalation-failed", "{meta}");
    assert!(dir.join("report.md").is_file() && dir.join("junit.xml").is_file());
    master.write_all(b"echo interact-$((6*7))\r").unwrap();
    read_until(&mut master, &mut seen, "interact-42", Duration::from_secs(20));
    master.write_all(&[0x1d]).unwrap();
    let end = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "vm-test did not end after the detach");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(1), "the run's verdict stands");
    let pid = meta["qemu"]["pid"].as_i64().unwrap() as i32;
    assert!(!pid_alive(pid), "the VM is powered off after the interaction");
    let after: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(after["qemu"]["stopped_by"], "after-interaction");
}
