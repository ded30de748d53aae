//! `cargo xtask vm-test` against real QEMU (TCG) and the fixture ISO and its fault variants.
//! VM tests run one at a time (2 shared cores); each asserts the verdict a user would get.

mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ONE_VM_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Run directories of the tests (kept for reading after a failure): target/vm-test-runs/.
fn runs_dir() -> PathBuf {
    let dir = common::repo_root().join("target/vm-test-runs");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const TOOLS: &[&str] = &["qemu-system-x86_64", "qemu-img", "xorriso", "cpio"];

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    meta: Value,
    dir: PathBuf,
    seconds: f64,
}

/// Runs `vm-test` with `args` in a fresh run directory and reads its metadata.json. The
/// directory's name has a comma: QEMU option values (disk, sockets) must escape it.
fn vm_test(args: &[&str]) -> Run {
    vm_test_in(tempfile::Builder::new().prefix("vmt,").tempdir_in(runs_dir()).unwrap().keep(), args)
}

/// Runs `vm-test` with `args` and `--run-dir dir`, and reads its metadata.json.
fn vm_test_in(dir: PathBuf, args: &[&str]) -> Run {
    let started = Instant::now();
    let out = common::xtask()
        .arg("vm-test")
        .args(args)
        .arg("--run-dir")
        .arg(&dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("xtask runs");
    let code = out.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let meta = std::fs::read_to_string(dir.join("metadata.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    eprintln!("--- vm-test {args:?}: exit {code} in {:.1}s\n{stdout}\n{stderr}", started.elapsed().as_secs_f64());
    Run { code, stdout, stderr, meta, dir, seconds: started.elapsed().as_secs_f64() }
}

fn finding(run: &Run) -> &str {
    run.meta["verdict"]["finding"].as_str().unwrap_or("")
}

fn phase(run: &Run) -> &str {
    run.meta["verdict"]["phase"].as_str().unwrap_or("")
}

fn check<'a>(run: &'a Run, name: &str) -> &'a Value {
    run.meta["checks"].as_array().and_then(|c| c.iter().find(|c| c["name"] == name)).unwrap_or(&Value::Null)
}

fn assert_record_complete(run: &Run) {
    for f in
        ["serial.log", "serial.txt", "transcript.log", "qemu.stderr.log", "metadata.json", "report.md", "junit.xml"]
    {
        assert!(run.dir.join(f).exists(), "{f} missing in {}", run.dir.display());
    }
    assert_eq!(run.meta["schema"], 1);
    assert!(run.meta["finished_at"].is_string());
    assert_eq!(run.meta["exit_code"], run.code);
    // serial.log is the byte-exact tee.
    let raw = std::fs::metadata(run.dir.join("serial.log")).unwrap().len();
    assert_eq!(Some(raw), run.meta["serial"]["bytes"].as_u64());
}

/// Time from the last serial byte (serial.log's mtime) to the final record (junit.xml's).
fn verdict_after_last_byte(run: &Run) -> Duration {
    let mtime = |f: &str| std::fs::metadata(run.dir.join(f)).unwrap().modified().unwrap();
    mtime("junit.xml").duration_since(mtime("serial.log")).unwrap_or_default()
}

fn pid_alive(pid: i32) -> bool {
    // A zombie still answers kill(0); look at its state instead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

fn tools(test: &str) -> Option<std::sync::MutexGuard<'static, ()>> {
    if !common::require_tools(test, TOOLS) {
        return None;
    }
    Some(ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner()))
}

#[test]
fn missing_iso_is_an_infrastructure_error() {
    let run = vm_test(&["--iso", "/nonexistent/x.iso", "--accel", "tcg"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stdout.contains("no such file") || run.stderr.contains("no such file"), "{}", run.stdout);
    assert_eq!(run.meta["outcome"], "infra");
}

#[test]
fn a_used_run_dir_is_a_usage_error_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("serial.log"), "an earlier run").unwrap();
    let out = common::xtask()
        .args(["vm-test", "--iso", "/nonexistent/x.iso", "--run-dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(dir.path().to_str().unwrap()) && stderr.contains("not empty"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["serial.log"]);
    assert_eq!(std::fs::read_to_string(dir.path().join("serial.log")).unwrap(), "an earlier run");
}

#[test]
fn an_uncreatable_run_dir_is_an_infrastructure_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let out = common::xtask()
        .args(["vm-test", "--iso", "/nonexistent/x.iso", "--run-dir"])
        .arg(file.join("run"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("cannot create the run directory") && stderr.contains("a-file/run"), "{stderr}");
}

#[test]
fn corrupt_iso_is_an_infrastructure_error_before_boot() {
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("truncated.iso");
    std::fs::write(&iso, vec![0u8; 40_000]).unwrap();
    let run = vm_test(&["--iso", iso.to_str().unwrap(), "--accel", "tcg"]);
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(said.contains("not a readable ISO 9660 image"), "{said}");
    assert!(said.contains("rebuild it"), "{said}");
    assert_eq!(run.meta["outcome"], "infra");
    assert!(run.meta["qemu"]["pid"].is_null(), "QEMU must not start for a corrupt ISO");
}

/// An ISO with a healthy ISOLINUX config (ttyS0 last) but no El Torito boot record.
fn iso_without_boot_record(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("isolinux")).unwrap();
    std::fs::write(
        tree.join("isolinux/isolinux.cfg"),
        "SERIAL 0 115200\nDEFAULT boot\nLABEL boot\nLINUX /boot/bzImage\nAPPEND console=tty0 console=ttyS0,115200\n",
    )
    .unwrap();
    let iso = dir.join("no-boot-record.iso");
    let out = std::process::Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-R", "-o"])
        .arg(&iso)
        .arg(&tree)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    iso
}

/// Such an ISO used to pass preflight with a warning and end 45 s later as `bootloader-stuck`
/// ("the bootloader printed its banner") over an empty serial log. Preflight now names it
/// (exit 3, `not-bootable`, QEMU never starts); booted anyway, the verdict says the serial
/// line stayed empty.
#[test]
fn an_iso_without_a_boot_record_is_not_bootable() {
    let Some(_vm) = tools("an_iso_without_a_boot_record_is_not_bootable") else { return };
    let dir = tempfile::tempdir().unwrap();
    let iso = iso_without_boot_record(dir.path());
    let run = vm_test(&["--iso", iso.to_str().unwrap(), "--accel", "tcg"]);
    assert_eq!(run.code, 3, "{}", run.stdout);
    assert_eq!((finding(&run), phase(&run)), ("not-bootable", "bootloader"));
    assert_eq!(run.meta["outcome"], "infra");
    assert!(
        run.stdout.contains("no El Torito boot record") && run.stdout.contains("-report_el_torito"),
        "{}",
        run.stdout
    );
    assert!(run.meta["qemu"]["pid"].is_null(), "QEMU must not start for an ISO that cannot boot");

    let run = vm_test(&["--iso", iso.to_str().unwrap(), "--accel", "tcg", "--skip-preflight", "--stall", "5"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(std::fs::metadata(run.dir.join("serial.log")).unwrap().len(), 0, "SeaBIOS prints nothing on serial");
    assert_eq!(finding(&run), "no-serial-output", "{}", run.stdout);
    let verdict = run.meta["verdict"].to_string();
    assert!(verdict.contains("not one byte arrived"), "{verdict}");
    assert!(!verdict.contains("printed its banner") && !verdict.contains("Loading /boot"), "{verdict}");
    assert_record_complete(&run);
}

#[test]
fn fixture_passes_end_to_end() {
    let Some(_vm) = tools("fixture_passes_end_to_end") else { return };
    let run = vm_test(&["--image", "fixture", "--accel", "auto"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(run.meta["outcome"], "pass");
    assert!(run.meta["verdict"].is_null());
    assert!(run.meta["qemu"]["accel_reason"].as_str().is_some_and(|r| !r.is_empty()));
    for p in run.meta["phases"].as_array().unwrap() {
        assert_eq!(p["status"], "ok", "{p}");
    }
    for c in run.meta["checks"].as_array().unwrap() {
        assert!(c["status"] == "pass" || c["status"] == "skip", "{c}");
    }
    assert_eq!(check(&run, "storage-status")["status"], "pass");
    assert_eq!(run.meta["qemu"]["stopped_by"], "guest-poweroff");
    let prompt = run.meta["milestones"]["prompt"].as_f64().unwrap();
    assert!(prompt > 0.0 && prompt < run.meta["milestones"]["root"].as_f64().unwrap());
    assert!(run.meta["harness"]["cpu_seconds"].as_f64().is_some());
    // Enter at the ISOLINUX menu: its 10 s countdown never ran out.
    assert!(sent(&run).iter().any(|s| s.starts_with("Enter at the ISOLINUX menu")), "{:?}", sent(&run));
    let serial = std::fs::read_to_string(run.dir.join("serial.txt")).unwrap();
    assert!(!serial.contains("Automatic boot in 1 second"), "the countdown ran out");
    assert_record_complete(&run);
}

#[test]
fn no_serial_console_is_named_before_boot() {
    let Some(_vm) = tools("no_serial_console_is_named_before_boot") else { return };
    let run = vm_test(&["--image", "fixture:no-serial-console", "--accel", "tcg", "--no-rescue"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(finding(&run), "serial-silent-after-bootloader");
    assert!(run.meta["qemu"]["pid"].is_null(), "QEMU must not start");
}

#[test]
fn no_serial_console_at_runtime_within_a_minute_of_the_last_byte() {
    let Some(_vm) = tools("no_serial_console_at_runtime") else { return };
    let run = vm_test(&["--image", "fixture:no-serial-console", "--accel", "tcg", "--skip-preflight"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(finding(&run), "serial-silent-after-bootloader", "{}", run.stdout);
    let gap = verdict_after_last_byte(&run);
    assert!(gap <= Duration::from_secs(60), "verdict {gap:?} after the last byte");
    assert_record_complete(&run);
    // Serial said nothing, the screen shows the boot: the verdict says so, from OCR'd text.
    let detail = run.meta["verdict"]["detail"].as_str().unwrap_or("");
    assert_screen_evidence(&run, "screen-bootloader.png");
    assert!(detail.contains("the screen shows the system booted to multi-user"), "{detail}");
    assert!(detail.contains("only the serial console is missing"), "{detail}");
}

/// The verdict's screenshot was taken and (tesseract being installed: install-deps does it)
/// read: the PNG, its text, and the record listing both.
fn assert_screen_evidence(run: &Run, file: &str) {
    assert!(run.dir.join(file).is_file(), "{file} missing in {}", run.dir.display());
    let screens = run.meta["screens"].as_array().cloned().unwrap_or_default();
    let shot = screens.iter().find(|s| s["file"] == file).unwrap_or_else(|| panic!("{file} not in {screens:?}"));
    assert_eq!(shot["reason"], "verdict");
    let text = shot["text_file"].as_str().expect("OCR ran (tesseract is installed by scripts/install-deps.sh)");
    assert!(run.dir.join(text).is_file());
    assert!(std::fs::read_to_string(run.dir.join("report.md")).unwrap().contains(&format!("[{file}]({file})")));
}

#[test]
fn kernel_panic_fails_at_once() {
    let Some(_vm) = tools("kernel_panic_fails_at_once") else { return };
    let run = vm_test(&["--image", "fixture:kernel-panic", "--accel", "tcg"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(finding(&run), "kernel-panic");
    // The guest sits in the panic forever; the verdict must follow the panic, not a timeout
    // (the bootloader's own time varies a lot with machine load, so measure from the last byte).
    let gap = verdict_after_last_byte(&run);
    assert!(gap <= Duration::from_secs(10), "verdict {gap:?} after the panic");
    assert_record_complete(&run);
}

#[test]
fn login_prompt_needs_and_accepts_login() {
    let Some(_vm) = tools("login_prompt_needs_and_accepts_login") else { return };
    let run = vm_test(&["--image", "fixture:login-prompt", "--accel", "tcg"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(finding(&run), "login-prompt");
    assert_eq!(phase(&run), "login");
    let run = vm_test(&["--image", "fixture:login-prompt", "--accel", "tcg", "--login", "nixos"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
}

#[test]
fn sudo_password_is_escalation_failed() {
    let Some(_vm) = tools("sudo_password_is_escalation_failed") else { return };
    let run = vm_test(&["--image", "fixture:sudo-password", "--accel", "tcg"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(finding(&run), "escalation-failed");
    assert_eq!(phase(&run), "root");
    assert_record_complete(&run);
}

#[test]
fn storage_error_fails_the_storage_check_with_evidence() {
    let Some(_vm) = tools("storage_error_fails_the_storage_check") else { return };
    let run = vm_test(&["--image", "fixture:storage-error", "--accel", "tcg"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(phase(&run), "checks");
    assert_eq!(finding(&run), "storage-detection-error");
    let c = check(&run, "storage-status");
    assert_eq!(c["status"], "fail");
    assert!(c["evidence"].as_str().unwrap_or("").contains("lsblk -f"), "{c}");
    assert!(run.dir.join("diagnostics").read_dir().unwrap().count() >= 2);
    assert_eq!(run.meta["qemu"]["stopped_by"], "guest-poweroff", "a failed check still powers off cleanly");
}

#[test]
fn hang_after_login_is_guest_unresponsive() {
    let Some(_vm) = tools("hang_after_login_is_guest_unresponsive") else { return };
    let run = vm_test(&["--image", "fixture:hang-after-login", "--accel", "tcg", "--command-timeout", "10"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(finding(&run), "guest-unresponsive");
    assert!(run.seconds < 90.0, "{:.0} s", run.seconds);
}

#[test]
fn flood_keeps_memory_bounded() {
    let Some(_vm) = tools("flood_keeps_memory_bounded") else { return };
    let run = vm_test(&["--image", "fixture:flood", "--accel", "tcg"]);
    let bytes = run.meta["serial"]["bytes"].as_u64().unwrap_or(0);
    // VmHWM of the harness itself (getrusage of the child would include QEMU, its child).
    let rss = run.meta["harness"]["peak_rss_kib"].as_u64().unwrap_or(u64::MAX);
    eprintln!("flood: {bytes} serial bytes, harness peak RSS {rss} KiB, exit {}", run.code);
    assert!(bytes > 1 << 20, "the flood (1 MiB) reached the harness ({bytes} bytes)");
    assert!(run.meta["serial"]["dropped_from_match_buffer"].as_u64().unwrap_or(0) > 0, "the match buffer was bounded");
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(rss < 64 * 1024, "harness peak RSS {rss} KiB for {bytes} bytes of serial");
    assert_record_complete(&run);
}

#[test]
fn broadcast_lines_do_not_corrupt_command_output() {
    let Some(_vm) = tools("broadcast_lines_do_not_corrupt_command_output") else { return };
    let run = vm_test(&["--image", "fixture:broadcast", "--accel", "tcg"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(check(&run, "storage-status")["detail"], "STATE=applied DETAIL=auto-applied");
    assert_eq!(check(&run, "tools")["status"], "pass");
}

/// A full filesystem under the run directory: QEMU pauses the guest when a write to its
/// scratch disk fails (status `io-error`), and the silent guest used to end as
/// `guest-unresponsive` after the command timeout. Now the harness asks QMP when the guest
/// goes quiet and names the full disk and the file (exit 3), QEMU is stopped, and the
/// record is complete (the scratch disk is gone before the final writes, so they fit).
#[test]
fn a_full_disk_under_the_run_dir_is_host_disk_full() {
    let Some(_vm) = tools("a_full_disk_under_the_run_dir_is_host_disk_full") else { return };
    // 2 MiB: the scratch qcow2 starts at ~0.2 MiB and the fixture's provisioning writes ~3.3 MiB.
    let Some(fs) = common::Tmpfs::mount("a_full_disk_under_the_run_dir", "2m") else { return };
    let dir = fs.path().join("run");
    let run = vm_test_in(dir.clone(), &["--image", "fixture", "--accel", "tcg"]);
    assert_eq!(run.code, 3, "{}", run.stdout);
    assert_eq!(finding(&run), "host-disk-full", "{}", run.stdout);
    assert_eq!(run.meta["outcome"], "infra");
    let detail = run.meta["verdict"]["detail"].as_str().unwrap_or("");
    let disk = dir.join("disk.qcow2");
    assert!(detail.contains("QMP status io-error"), "{detail}");
    assert!(detail.contains(&format!("writing {} failed: No space left on device", disk.display())), "{detail}");
    let pid = run.meta["qemu"]["pid"].as_i64().unwrap() as i32;
    assert!(!pid_alive(pid), "QEMU {pid} left running");
    assert!(!disk.exists(), "the scratch disk is removed");
    assert_record_complete(&run);
}

/// SIGKILL of the harness takes QEMU with it (PR_SET_PDEATHSIG); SIGINT stops it in order.
#[test]
fn killing_the_harness_leaves_no_qemu() {
    let Some(_vm) = tools("killing_the_harness_leaves_no_qemu") else { return };
    for (signal, name) in [(libc::SIGKILL, "SIGKILL"), (libc::SIGINT, "SIGINT")] {
        let dir = tempfile::Builder::new().prefix("vmt-kill-").tempdir_in(runs_dir()).unwrap().keep();
        let mut child = common::xtask()
            .args(["vm-test", "--image", "fixture", "--accel", "tcg", "--run-dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let qemu_pid = wait_for_qemu_pid(&dir, Duration::from_secs(120)).expect("QEMU started");
        std::thread::sleep(Duration::from_secs(2));
        assert!(pid_alive(qemu_pid));
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        while pid_alive(qemu_pid) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(!pid_alive(qemu_pid), "QEMU {qemu_pid} survived the harness's {name}");
        if signal == libc::SIGINT {
            assert_eq!(status.code(), Some(130));
            let meta: Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("metadata.json")).unwrap()).unwrap();
            assert_eq!(meta["outcome"], "interrupted");
            assert!(dir.join("report.md").exists());
        }
    }
}

/// Runs a small perl script as `nobody` (a second uid): exit 0 when `action` on `path`
/// succeeded, otherwise the OS error on stderr.
fn as_nobody(action: &str, path: &Path) -> std::process::Output {
    let script = match action {
        "connect" => "IO::Socket::UNIX->new(Peer => $ARGV[0]) or die qq(connect: $!\\n)",
        "listen" => "IO::Socket::UNIX->new(Local => $ARGV[0], Listen => 1) or die qq(listen: $!\\n)",
        other => panic!("unknown action {other}"),
    };
    std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--", "perl", "-MIO::Socket::UNIX", "-e", script])
        .arg(path)
        .current_dir("/")
        .output()
        .expect("setpriv runs")
}

/// Under umask 000 the run directory and QEMU's sockets used to be open to every local
/// user: `qmp.sock` is full control of the VM, and whoever creates `serial.sock` in the run
/// directory of a `--keep` run gets the guest's root shell. Now the run directory is 0700
/// whatever the umask, so a second uid can neither connect nor plant a socket.
#[test]
fn run_dir_and_sockets_are_private_under_umask_000() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let Some(_vm) = tools("run_dir_and_sockets_are_private") else { return };
    if !common::require_root("run_dir_and_sockets_are_private")
        || !common::require_tools("run_dir", &["setpriv", "perl"])
    {
        return;
    }
    // A parent everyone may enter; the run directory itself is created by vm-test.
    let parent = tempfile::Builder::new().prefix("vmt-umask-").tempdir_in(runs_dir()).unwrap().keep();
    std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = parent.join("run");
    let mut cmd = common::xtask();
    cmd.args(["vm-test", "--image", "fixture", "--accel", "tcg", "--run-dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: umask is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let qemu_pid = wait_for_qemu_pid(&dir, Duration::from_secs(120)).expect("QEMU started");
    let qmp = dir.join("qmp.sock");
    let end = Instant::now() + Duration::from_secs(10);
    while !qmp.exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    let connect = as_nobody("connect", &qmp);
    let plant = as_nobody("listen", &dir.join("planted.sock"));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while pid_alive(qemu_pid) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!pid_alive(qemu_pid), "QEMU {qemu_pid} outlived the interrupted harness");
    assert_eq!(status.code(), Some(130));
    let said = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!connect.status.success(), "nobody connected to {}", qmp.display());
    assert!(said(&connect).contains("Permission denied"), "{}", said(&connect));
    assert!(!plant.status.success(), "nobody created a socket in the run directory");
    assert!(said(&plant).contains("Permission denied"), "{}", said(&plant));
    assert_eq!(mode, 0o700, "run directory mode under umask 000");
}

fn wait_for_qemu_pid(dir: &Path, timeout: Duration) -> Option<i32> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if let Some(pid) = std::fs::read_to_string(dir.join("metadata.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|m| m["qemu"]["pid"].as_i64())
        {
            return Some(pid as i32);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// QEMU dying under the harness is named at once, with its exit status, and fully recorded.
#[test]
fn qemu_crash_is_named_and_recorded() {
    let Some(_vm) = tools("qemu_crash_is_named_and_recorded") else { return };
    let dir = tempfile::Builder::new().prefix("vmt-crash-").tempdir_in(runs_dir()).unwrap().keep();
    let mut child = common::xtask()
        .args(["vm-test", "--image", "fixture", "--accel", "tcg", "--run-dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let qemu_pid = wait_for_qemu_pid(&dir, Duration::from_secs(120)).expect("QEMU started");
    std::thread::sleep(Duration::from_secs(3));
    unsafe { libc::kill(qemu_pid, libc::SIGKILL) };
    let killed = Instant::now();
    let status = child.wait().unwrap();
    assert!(killed.elapsed() < Duration::from_secs(10), "the harness noticed within {:?}", killed.elapsed());
    assert_eq!(status.code(), Some(1));
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(meta["verdict"]["finding"], "qemu-exited", "{meta}");
    assert!(meta["verdict"]["detail"].as_str().unwrap_or("").contains("SIGKILL"), "{meta}");
    for f in ["report.md", "junit.xml", "serial.log", "transcript.log"] {
        assert!(dir.join(f).exists(), "{f}");
    }
}

/// `--keep` leaves QEMU running and the serial console can be taken over where the printed
/// hint says (QEMU reconnects to whoever listens on serial.sock); QMP `quit` ends it.
#[test]
fn keep_leaves_an_attachable_vm() {
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    let Some(_vm) = tools("keep_leaves_an_attachable_vm") else { return };
    let run = vm_test(&["--image", "fixture", "--accel", "tcg", "--keep"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(run.meta["qemu"]["stopped_by"], "kept");
    assert!(run.stdout.contains("cargo xtask attach "), "{}", run.stdout);
    let pid = run.meta["qemu"]["pid"].as_i64().unwrap() as i32;
    assert!(pid_alive(pid));
    let sock = run.dir.join("serial.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    listener.set_nonblocking(true).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let mut serial = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("QEMU did not reconnect its serial line: {e}"),
        }
    };
    serial.set_nonblocking(false).unwrap();
    serial.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    serial.write_all(b"echo kept-$((6*7))\n").unwrap();
    let mut seen = Vec::new();
    let end = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&seen).contains("kept-42") && Instant::now() < end {
        let mut buf = [0u8; 4096];
        if let Ok(n) = serial.read(&mut buf) {
            seen.extend_from_slice(&buf[..n]);
        }
    }
    let mut qmp = UnixStream::connect(run.dir.join("qmp.sock")).unwrap();
    qmp.write_all(b"{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"quit\"}\n").unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while pid_alive(pid) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    if pid_alive(pid) {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    assert!(String::from_utf8_lossy(&seen).contains("kept-42"), "{}", String::from_utf8_lossy(&seen));
    assert!(!pid_alive(pid), "QMP quit ended the kept QEMU");
    let _ = std::fs::remove_file(run.dir.join("disk.qcow2"));
}

// ---- The systemd fixture: real systemd, units, journal, networkd ----

fn systemd_tools(test: &str) -> Option<std::sync::MutexGuard<'static, ()>> {
    if !common::require_systemd_fixture(test) {
        return None;
    }
    tools(test)
}

#[test]
fn fixture_systemd_passes_end_to_end_on_real_systemd() {
    let Some(_vm) = systemd_tools("fixture_systemd_passes_end_to_end") else { return };
    let run = vm_test(&["--image", "fixture-systemd", "--accel", "tcg"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(run.meta["image"]["source"], "fixture-systemd");
    for p in run.meta["phases"].as_array().unwrap() {
        assert_eq!(p["status"], "ok", "{p}");
    }
    // Every check ran for real: systemctl exists, so the unit check is not skipped.
    for c in run.meta["checks"].as_array().unwrap() {
        assert_eq!(c["status"], "pass", "{c}");
    }
    let unit = check(&run, "pre-nixos-unit")["detail"].as_str().unwrap_or("");
    assert!(unit.contains("LoadState=loaded") && unit.contains("ActiveState=inactive"), "{unit}");
    assert_eq!(run.meta["qemu"]["stopped_by"], "guest-poweroff");
    let serial = std::fs::read_to_string(run.dir.join("serial.txt")).unwrap();
    for line in [
        "Welcome to NixOS 25.05.fixture (Warbler)!",
        "Reached target Multi-User System.",
        "Starting pre-nixos: detect and provision storage...",
        "pre-nixos: Storage provisioning completed automatically.",
    ] {
        assert!(serial.contains(line), "{line} missing from serial.txt");
    }
    assert_record_complete(&run);
}

#[test]
fn systemd_unit_deadlock_is_unit_stuck() {
    let Some(_vm) = systemd_tools("systemd_unit_deadlock") else { return };
    let run = vm_test(&["--image", "fixture-systemd:unit-deadlock", "--accel", "tcg", "--storage-timeout", "30"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!((finding(&run), phase(&run)), ("unit-stuck", "checks"), "{}", run.stdout);
    assert_eq!(check(&run, "storage-status")["finding"], "unit-stuck");
    let unit = check(&run, "pre-nixos-unit");
    assert_eq!(unit["finding"], "unit-stuck");
    assert!(unit["detail"].as_str().unwrap().contains("ActiveState=activating"), "{unit}");
    // The evidence names the waiting jobs.
    assert!(unit["evidence"].as_str().unwrap().contains("sshd.service"), "{unit}");
    assert_record_complete(&run);
}

#[test]
fn systemd_emergency_mode_is_named_at_once() {
    let Some(_vm) = systemd_tools("systemd_emergency_mode") else { return };
    let run = vm_test(&["--image", "fixture-systemd:emergency-mode", "--accel", "tcg"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(finding(&run), "emergency-mode", "{}", run.stdout);
    assert_eq!(phase(&run), "init", "{}", run.stdout);
    // Named from the console text, not after a boot timeout.
    assert!(run.seconds < 240.0, "took {:.0} s", run.seconds);
    assert_record_complete(&run);
}

#[test]
fn systemd_console_not_last_is_named() {
    let Some(_vm) = systemd_tools("systemd_console_not_last") else { return };
    let run = vm_test(&[
        "--image",
        "fixture-systemd:console-not-last",
        "--accel",
        "tcg",
        "--network-timeout",
        "20",
        "--no-rescue",
    ]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(finding(&run), "console-not-last", "{}", run.stdout);
    // The login still reached serial (a getty runs on every console); the checks ran.
    assert_eq!(check(&run, "storage-status")["status"], "pass");
    assert_eq!(check(&run, "serial-lan-line")["finding"], "console-not-last");
    let serial = std::fs::read_to_string(run.dir.join("serial.txt")).unwrap();
    for line in ["Welcome to NixOS 25.05.fixture (Warbler)!", "pre-nixos: Storage provisioning", "LAN IPv4 address:"] {
        assert!(!serial.contains(line), "{line} reached serial although tty0 is the last console");
    }
    assert_record_complete(&run);
    assert_screen_evidence(&run, "screen-checks.png");
    let detail = run.meta["verdict"]["detail"].as_str().unwrap_or("");
    assert!(detail.contains("the screen shows what serial missed"), "{detail}");
}

#[test]
fn image_spelling_is_checked_per_flavour() {
    for (image, said) in [
        ("fixture-systemd:flood", "fixture-systemd has no fault `flood`"),
        ("fixture:unit-deadlock", "fixture has no fault `unit-deadlock`"),
        ("fixture-nope", "expected `fixture`, `fixture-systemd`"),
    ] {
        let out = common::xtask().args(["vm-test", "--image", image]).stdin(Stdio::null()).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{image}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(said),
            "{image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn own_commands_run_as_root_and_are_recorded_as_testcases() {
    let Some(_vm) = tools("own_commands") else { return };
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "# from a file\nid -u\n").unwrap();
    let run = vm_test(&[
        "--image",
        "fixture",
        "--accel",
        "tcg",
        "--run",
        "echo own-$((6*7)); exit 0",
        "--run",
        "allow-fail: ls /nonexistent-dir",
        "--run",
        "echo failing; exit 4 # exit must not end the harness's shell",
        "--run-file",
        file.path().to_str().unwrap(),
        "--screens",
        "every:5",
    ]);
    assert_eq!(run.code, 1, "a failing command fails the run: {}", run.stdout);
    // --screens every:5 left a series, and the failed check its verdict screenshot.
    let screens = run.meta["screens"].as_array().cloned().unwrap_or_default();
    let series: Vec<_> = screens.iter().filter(|s| s["reason"] == "every").collect();
    assert!(!series.is_empty(), "{screens:?}");
    for s in &series {
        assert!(run.dir.join(s["file"].as_str().unwrap()).is_file(), "{s}");
    }
    assert!(screens.iter().any(|s| s["file"] == "screen-checks.png"), "{screens:?}");
    assert_eq!(finding(&run), "check-failed");
    let ran = |name: &str| check(&run, name).clone();
    assert_eq!(ran("run: echo own-$((6*7)); exit 0")["status"], "pass");
    assert!(ran("run: echo own-$((6*7)); exit 0")["evidence"].as_str().unwrap().contains("own-42"));
    assert_eq!(ran("run: ls /nonexistent-dir")["status"], "pass");
    assert!(ran("run: ls /nonexistent-dir")["detail"].as_str().unwrap().contains("(allowed to fail)"));
    assert_eq!(ran("run: echo failing; exit 4 # exit must not end the harness's shell")["detail"], "exit 4");
    // The file's command ran after the failing one: that `exit` did not end the root shell.
    assert_eq!(ran("run: id -u")["evidence"].as_str().unwrap().trim(), "0");
    let junit = std::fs::read_to_string(run.dir.join("junit.xml")).unwrap();
    assert_eq!(junit.matches("name=\"check run: ").count(), 4, "{junit}");
    assert!(junit.contains("<system-out>exit 0\nown-42"), "{junit}");
    let transcript = std::fs::read_to_string(run.dir.join("transcript.log")).unwrap();
    assert!(transcript.contains("own-42"), "output in the transcript");
    assert_record_complete(&run);
}

// ---- The bootloader driven: menu skip, serial rescue, UEFI ----

/// What the transcript says the harness sent.
fn sent(run: &Run) -> Vec<String> {
    let transcript = std::fs::read_to_string(run.dir.join("transcript.log")).unwrap_or_default();
    transcript.lines().filter_map(|l| l.split_once("] send: ").map(|(_, s)| s.to_string())).collect()
}

fn require_ovmf() {
    assert!(
        std::path::Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd").exists(),
        "OVMF missing: run scripts/install-deps.sh (package ovmf)"
    );
}

#[test]
fn busybox_fixture_passes_under_uefi_through_grub() {
    let Some(_vm) = tools("busybox_fixture_passes_under_uefi") else { return };
    require_ovmf();
    let run = vm_test(&["--image", "fixture", "--accel", "tcg", "--firmware", "uefi"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(run.meta["qemu"]["firmware"], "uefi");
    let command = run.meta["qemu"]["command"].as_array().unwrap();
    assert!(command.iter().any(|a| a.as_str().is_some_and(|a| a.contains("if=pflash,format=raw,readonly=on"))));
    // The firmware's own lines, then GRUB's menu skipped at once.
    let transcript = std::fs::read_to_string(run.dir.join("transcript.log")).unwrap();
    assert!(transcript.contains("firmware: BdsDxe: loading Boot"), "{transcript}");
    assert!(transcript.contains("firmware: Welcome to GRUB!"), "{transcript}");
    assert!(sent(&run).iter().any(|s| s.starts_with("Enter at the GRUB menu")), "{transcript}");
    // The run's copy of the UEFI variables is scratch, gone with the disk.
    assert!(!run.dir.join("OVMF_VARS.fd").exists());
    assert_record_complete(&run);
}

#[test]
fn systemd_fixture_passes_under_uefi() {
    let Some(_vm) = systemd_tools("systemd_fixture_passes_under_uefi") else { return };
    require_ovmf();
    let run = vm_test(&["--image", "fixture-systemd", "--accel", "tcg", "--firmware", "uefi"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    for c in run.meta["checks"].as_array().unwrap() {
        assert_eq!(c["status"], "pass", "{c}");
    }
    assert!(sent(&run).iter().any(|s| s.starts_with("Enter at the GRUB menu")), "{:?}", sent(&run));
    assert_record_complete(&run);
}

#[test]
fn no_serial_console_is_rescued_under_bios_and_still_fails_on_the_defect() {
    let Some(_vm) = tools("no_serial_console_is_rescued") else { return };
    let run = vm_test(&["--image", "fixture:no-serial-console", "--accel", "tcg"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(finding(&run), "serial-console-missing", "{}", run.stdout);
    // The checks ran and passed on the rescued boot.
    for c in run.meta["checks"].as_array().unwrap() {
        assert!(c["status"] == "pass" || c["status"] == "skip", "{c}");
    }
    assert_eq!(check(&run, "storage-status")["status"], "pass");
    let notes = run.meta["notes"].to_string();
    assert!(notes.contains("serial rescue: ISOLINUX default entry edited"), "{notes}");
    assert!(run.meta["verdict"]["detail"].as_str().unwrap().contains("boot.kernelParams"), "{}", run.meta["verdict"]);
    let serial = std::fs::read_to_string(run.dir.join("serial.txt")).unwrap();
    assert!(serial.contains("console=tty0 initrd=/boot/initrd console=ttyS0,115200n8"), "the kernel got no rescue");
    assert_record_complete(&run);
}

#[test]
fn console_not_last_is_rescued_under_uefi_and_allow_rescue_makes_it_a_warning() {
    let Some(_vm) = tools("console_not_last_is_rescued") else { return };
    require_ovmf();
    let run =
        vm_test(&["--image", "fixture:console-not-last", "--accel", "tcg", "--firmware", "uefi", "--allow-rescue"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(run.meta["verdict"].is_null());
    for c in run.meta["checks"].as_array().unwrap() {
        assert!(c["status"] == "pass" || c["status"] == "skip", "{c}");
    }
    // GRUB's editor was driven: the console appended to the linux line, last.
    let serial = std::fs::read_to_string(run.dir.join("serial.txt")).unwrap();
    assert!(serial.contains("console=ttyS0,115200n8 console=tty0 console=ttyS0,115200n8"), "the kernel got no rescue");
    // The defect is still on record.
    let findings = run.meta["findings"].to_string();
    assert!(findings.contains("console-not-last"), "{findings}");
    assert!(run.meta["notes"].to_string().contains("warning (--allow-rescue)"), "{}", run.meta["notes"]);
    assert_record_complete(&run);
}

#[test]
fn systemd_root_device_missing_is_named_in_stage_1() {
    let Some(_vm) = systemd_tools("systemd_root_device_missing") else { return };
    let run = vm_test(&["--image", "fixture-systemd:root-device-missing", "--accel", "tcg"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(phase(&run), "init", "{}", run.stdout);
    // The stage-1 prompt stops the wait at once; the verdict is its cause, found just before.
    assert_eq!(finding(&run), "root-device-missing", "{}", run.stdout);
    let detail = run.meta["verdict"]["detail"].as_str().unwrap_or("");
    assert!(detail.contains("(stage 1's error prompt)"), "{detail}");
    let findings: Vec<(&str, &str)> = run.meta["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["id"].as_str().unwrap(), f["subject"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        findings,
        [("root-device-missing", "/dev/disk/by-label/nixos-minimal-25.05-x86_64"), ("emergency-mode", "")],
        "{}",
        run.stdout
    );
    assert!(run.seconds < 240.0, "took {:.0} s", run.seconds);
    assert_record_complete(&run);
}
