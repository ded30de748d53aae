//! `cargo xtask fixture` and `scripts/pre-nixos.sh`: shellcheck, builds of every variant (from
//! the cache after the first), the provisioning script's decisions on a fake sysfs, and real
//! QEMU (TCG) boots whose raw serial bytes must show each variant's symptom. These assertions
//! read the serial bytes with a tiny runner of their own, independent of `vm-test`.
//! VMs run one at a time (2 shared cores).

mod common;

use regex::bytes::Regex;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ONE_VM_AT_A_TIME: Mutex<()> = Mutex::new(());

const BUILD_TOOLS: &[&str] = &["xorriso", "cpio", "gzip", "depmod", "dpkg-deb", "apt-get", "busybox"];
const VM_TOOLS: &[&str] = &["qemu-system-x86_64", "qemu-img", "xorriso", "cpio", "depmod"];
const FAULTS: &[&str] = &[
    "no-serial-console",
    "console-not-last",
    "login-prompt",
    "sudo-password",
    "storage-error",
    "kernel-panic",
    "hang-after-login",
    "flood",
    "broadcast",
];

/// Builds (or reuses) a variant through the CLI and returns the ISO path.
fn build(fault: Option<&str>) -> PathBuf {
    let mut args = vec!["fixture"];
    if let Some(f) = fault {
        args.extend(["--fault", f]);
    }
    let out = common::run_xtask(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "fixture {fault:?} failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    let name = fault.map_or("nixos-fixture.iso".to_string(), |f| format!("nixos-fixture-{f}.iso"));
    let iso = common::repo_root().join("target/fixture").join(name);
    assert!(iso.exists() && stdout.contains(iso.to_str().unwrap()), "{stdout}");
    iso
}

#[test]
fn shell_scripts_pass_shellcheck() {
    if !common::require_tools("shell_scripts_pass_shellcheck", &["shellcheck"]) {
        return;
    }
    let root = common::repo_root();
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in ["scripts", "scripts/fixture", "scripts/fixture/systemd", "scripts/fixture/systemd/faults"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let is_shell = path.extension().is_some_and(|e| e == "sh")
                || std::fs::read_to_string(&path)
                    .is_ok_and(|t| t.starts_with("#!") && t.lines().next().unwrap().contains("sh"));
            if path.is_file() && is_shell {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 10, "found only {files:?}");
    let out = Command::new("shellcheck").arg("-x").args(&files).current_dir(&root).output().unwrap();
    assert!(out.status.success(), "shellcheck:\n{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn every_variant_builds_and_rebuilds_from_cache() {
    if !common::require_tools("every_variant_builds", BUILD_TOOLS) {
        return;
    }
    let _vm = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    build(None);
    for fault in FAULTS {
        build(Some(fault));
    }
    // Unchanged inputs: a cache hit, fast.
    let started = Instant::now();
    let out = common::run_xtask(&["fixture"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("cache hit"), "{stdout}");
    assert!(started.elapsed() < Duration::from_secs(5), "cache hit took {:?}", started.elapsed());
    // --out copies the ISO.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("x/fixture.iso");
    let out = common::run_xtask(&["fixture", "--out", copy.to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(std::fs::metadata(&copy).unwrap().len(), std::fs::metadata(build(None)).unwrap().len());
}

#[test]
fn unknown_fault_is_a_usage_error() {
    let out = common::run_xtask(&["fixture", "--fault", "no-such-fault"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("kernel-panic"), "the message lists the known faults: {stderr}");
}

/// `--out` naming the cached ISO used to truncate it to 0 bytes (a copy onto itself), and the
/// cache check, which looked at the inputs only, then called it up to date forever.
#[test]
fn out_into_the_cache_is_refused_and_a_damaged_cache_is_rebuilt() {
    if !common::require_tools("out_into_the_cache_is_refused", BUILD_TOOLS) {
        return;
    }
    let _vm = vm_lock();
    let iso = build(None);
    let good = std::fs::read(&iso).unwrap();
    let root = common::repo_root();
    let spellings = [
        iso.clone(),
        root.join("target/fixture/cache/../nixos-fixture.iso"),
        PathBuf::from("target/fixture/nixos-fixture.iso"),
        PathBuf::from("target/fixture/nixos-fixture-kernel-panic.iso"),
    ];
    for out in spellings {
        let run = common::xtask().current_dir(&root).arg("fixture").arg("--out").arg(&out).output().unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "--out {}: {stderr}", out.display());
        assert!(stderr.contains("fixture cache") && stderr.contains("--out"), "{stderr}");
        assert!(std::fs::read(&iso).unwrap() == good, "--out {} changed the cached ISO", out.display());
    }

    // The cached ISO no longer matches the size and hash its manifest recorded: not a hit.
    let truncate = |bytes: &mut Vec<u8>| bytes.clear();
    let flip_one_byte = |bytes: &mut Vec<u8>| {
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
    };
    for damage in [&truncate as &dyn Fn(&mut Vec<u8>), &flip_one_byte] {
        let mut bytes = good.clone();
        damage(&mut bytes);
        std::fs::write(&iso, &bytes).unwrap();
        let out = common::run_xtask(&["fixture"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("fixture: built:") && !stdout.contains("cache hit"), "{stdout}");
        assert_eq!(std::fs::metadata(&iso).unwrap().len(), good.len() as u64);
        let again = String::from_utf8_lossy(&common::run_xtask(&["fixture"]).stdout).into_owned();
        assert!(again.contains("cache hit"), "{again}");
    }
}

/// A full filesystem under `--out`: exit 3 naming the path and the cause; an older file of
/// that name is left as it was and no partial copy or temporary file stays behind.
#[test]
fn out_on_a_full_filesystem_leaves_the_old_file_and_nothing_partial() {
    if !common::require_tools("out_on_a_full_filesystem", BUILD_TOOLS) {
        return;
    }
    let Some(fs) = common::Tmpfs::mount("out_on_a_full_filesystem", "4m") else { return };
    let _vm = vm_lock();
    build(None);
    let old = fs.path().join("fixture.iso");
    std::fs::write(&old, "an older copy").unwrap();
    for out in [old.clone(), fs.path().join("new.iso")] {
        let run = common::run_xtask(&["fixture", "--out", out.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(3), "{stderr}");
        assert!(stderr.contains(out.to_str().unwrap()) && stderr.contains("No space left on device"), "{stderr}");
    }
    assert_eq!(std::fs::read_to_string(&old).unwrap(), "an older copy");
    let left: Vec<_> = std::fs::read_dir(fs.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["fixture.iso"], "a partial copy or temporary file was left behind");
}

/// Missing parent directories of `--out` are created, and the output says so.
#[test]
fn out_into_missing_directories_says_it_created_them() {
    if !common::require_tools("out_into_missing_directories", BUILD_TOOLS) {
        return;
    }
    let _vm = vm_lock();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a/b/fixture.iso");
    let run = common::run_xtask(&["fixture", "--out", out.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}{}", String::from_utf8_lossy(&run.stderr));
    let created = format!("created the missing directory {}", dir.path().join("a/b").display());
    assert!(stdout.contains(&created), "{stdout}");
    assert_eq!(std::fs::metadata(&out).unwrap().len(), std::fs::metadata(build(None)).unwrap().len());
}

// ---------------------------------------------------------------------------------------
// scripts/pre-nixos.sh on a fake sysfs (no root, no devices touched).

struct FakeMachine {
    dir: tempfile::TempDir,
}

impl FakeMachine {
    fn new() -> FakeMachine {
        let dir = tempfile::tempdir().unwrap();
        for d in ["sys/block", "dev", "state"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("mounts"), "").unwrap();
        FakeMachine { dir }
    }

    /// A block device in sysfs; `data` (if any) becomes its /dev node, a regular file.
    fn disk(&self, name: &str, ro: u8, removable: u8, data: Option<&[u8]>) -> &Self {
        let sys = self.dir.path().join("sys/block").join(name);
        std::fs::create_dir_all(&sys).unwrap();
        std::fs::write(sys.join("ro"), format!("{ro}\n")).unwrap();
        std::fs::write(sys.join("removable"), format!("{removable}\n")).unwrap();
        std::fs::write(sys.join("size"), "4194304\n").unwrap();
        if let Some(data) = data {
            std::fs::write(self.dir.path().join("dev").join(name), data).unwrap();
        }
        self
    }

    /// Runs the script; returns (exit code, storage-status, console text).
    fn run(&self, env: &[(&str, &str)]) -> (i32, String, String) {
        let p = self.dir.path();
        let out = Command::new("sh")
            .arg(common::repo_root().join("scripts/pre-nixos.sh"))
            .env("PRE_NIXOS_STATE_DIR", p.join("state"))
            .env("PRE_NIXOS_CONSOLE", p.join("console"))
            .env("PRE_NIXOS_SYS_BLOCK", p.join("sys/block"))
            .env("PRE_NIXOS_DEV", p.join("dev"))
            .env("PRE_NIXOS_MOUNTS", p.join("mounts"))
            .envs(env.iter().copied())
            .output()
            .unwrap();
        std::fs::write(p.join("console"), "").ok(); // keep writable for the next run
        let status = std::fs::read_to_string(p.join("state/storage-status")).unwrap_or_default();
        let console = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code().unwrap_or(-1), status, console)
    }
}

#[test]
fn pre_nixos_skips_without_candidate_disks() {
    if !common::require_tools("pre_nixos_skips", &["wipefs"]) {
        return;
    }
    let m = FakeMachine::new();
    std::fs::write(m.dir.path().join("console"), "").unwrap();
    let (code, status, console) = m.run(&[]);
    assert_eq!((code, status.as_str()), (0, "STATE=skipped\nDETAIL=no-disk\n"), "{console}");
    assert!(console.contains("pre-nixos: Provisioning status is 'skipped' (no-disk)."), "{console}");
    // Floppy, optical, loop, ram, read-only and removable devices are never candidates.
    m.disk("fd0", 0, 1, None).disk("sr0", 1, 1, None).disk("loop0", 0, 0, None).disk("ram0", 0, 0, None);
    m.disk("vdb", 1, 0, Some(&[0; 4096])).disk("sdb", 0, 1, Some(&[0; 4096]));
    let (_, status, _) = m.run(&[]);
    assert_eq!(status, "STATE=skipped\nDETAIL=no-disk\n");
    let plan = std::fs::read_to_string(m.dir.path().join("state/plan")).unwrap();
    assert!(plan.contains("REASON=no-disk"), "{plan}");
}

#[test]
fn pre_nixos_never_touches_a_disk_with_data() {
    if !common::require_tools("pre_nixos_existing", &["wipefs"]) {
        return;
    }
    let m = FakeMachine::new();
    let mut data = vec![0u8; 1 << 20];
    data[4000] = 7;
    m.disk("vda", 0, 0, Some(&data));
    let (code, status, console) = m.run(&[]);
    assert_eq!((code, status.as_str()), (0, "STATE=plan-only\nDETAIL=existing-storage\n"), "{console}");
    assert!(console.contains("pre-nixos: Existing storage detected; provisioning ran in plan-only mode."));
    assert_eq!(std::fs::read(m.dir.path().join("dev/vda")).unwrap(), data, "the disk was modified");
}

#[test]
fn pre_nixos_reports_detection_errors_as_plan_only() {
    if !common::require_tools("pre_nixos_detection_error", &["wipefs"]) {
        return;
    }
    let line = "pre-nixos: Storage detection encountered an error; provisioning ran in plan-only mode.";
    // A listed disk whose device cannot be probed.
    let m = FakeMachine::new();
    m.disk("vda", 0, 0, None);
    let (code, status, console) = m.run(&[]);
    assert_eq!((code, status.as_str()), (0, "STATE=plan-only\nDETAIL=detection-error\n"), "{console}");
    assert!(console.contains(line), "{console}");
    // The fault hook the fixture's storage-error variant uses.
    let m = FakeMachine::new();
    let (_, status, console) = m.run(&[("PRE_NIXOS_FAULT", "detection-error")]);
    assert_eq!(status, "STATE=plan-only\nDETAIL=detection-error\n");
    assert!(console.contains(line), "{console}");
}

// ---------------------------------------------------------------------------------------
// Real boots.

/// One QEMU guest with its serial line on a Unix socket; killed on drop and on our death.
struct Vm {
    child: Child,
    serial: UnixStream,
    /// Everything received so far (raw bytes), also teed to `log_path`.
    seen: Vec<u8>,
    /// Matches start after this offset (the end of the previous match).
    cursor: usize,
    log: std::fs::File,
    log_path: PathBuf,
    started: Instant,
    _dir: tempfile::TempDir,
}

impl Vm {
    /// `disk`: a raw image to attach as virtio disk, or None.
    fn boot(iso: &Path, disk: Option<&Path>, name: &str) -> Vm {
        Vm::boot_with(iso, disk, name, &[])
    }

    /// `boot` with extra QEMU arguments (firmware, machine type).
    fn boot_with(iso: &Path, disk: Option<&Path>, name: &str, extra: &[String]) -> Vm {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("serial.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let logs = common::repo_root().join("target/fixture-test-logs");
        std::fs::create_dir_all(&logs).unwrap();
        let log_path = logs.join(format!("{name}.serial.log"));
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-accel", "tcg", "-nodefaults", "-no-reboot", "-display", "none", "-m", "1024", "-smp", "1"])
            .arg("-cdrom")
            .arg(iso)
            .args(["-boot", "d", "-chardev"])
            .arg(format!("socket,id=ser0,path={}", sock.display()))
            .args(["-serial", "chardev:ser0", "-device", "virtio-rng-pci"])
            .args(["-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0"])
            .args(extra);
        if let Some(disk) = disk {
            cmd.arg("-drive").arg(format!("file={},if=virtio,format=raw", disk.display()));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("qemu.stderr")).unwrap());
        // SAFETY: prctl is async-signal-safe; QEMU dies with the test process.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("qemu starts");
        // Wait for QEMU to connect, without spinning.
        listener.set_nonblocking(true).unwrap();
        let started = Instant::now();
        let serial = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Some(status) = child.try_wait().unwrap() {
                        panic!(
                            "qemu exited ({status}) before connecting: {}",
                            read_lossy(&dir.path().join("qemu.stderr"))
                        );
                    }
                    assert!(started.elapsed() < Duration::from_secs(20), "qemu did not connect its serial line");
                    poll_fd(std::os::fd::AsRawFd::as_raw_fd(&listener), Duration::from_millis(200));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        serial.set_nonblocking(true).unwrap();
        let log = std::fs::File::create(&log_path).unwrap();
        Vm { child, serial, seen: Vec::new(), cursor: 0, log, log_path, started, _dir: dir }
    }

    /// Reads what is available within `wait` (poll, then read). Returns false at EOF.
    fn pump(&mut self, wait: Duration) -> bool {
        poll_fd(std::os::fd::AsRawFd::as_raw_fd(&self.serial), wait);
        let mut buf = [0u8; 65536];
        loop {
            match self.serial.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => {
                    self.seen.extend_from_slice(&buf[..n]);
                    self.log.write_all(&buf[..n]).unwrap();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
    }

    /// Waits until `pattern` matches after the cursor; moves the cursor past it.
    fn expect(&mut self, pattern: &str, within: Duration) -> Vec<u8> {
        self.try_expect(pattern, within).unwrap_or_else(|| {
            let tail = String::from_utf8_lossy(&self.seen[self.seen.len().saturating_sub(1500)..]).into_owned();
            panic!(
                "no {pattern:?} within {within:?} ({:.1}s after start); serial log {}; last bytes:\n{tail}",
                self.started.elapsed().as_secs_f64(),
                self.log_path.display()
            )
        })
    }

    fn try_expect(&mut self, pattern: &str, within: Duration) -> Option<Vec<u8>> {
        let re = Regex::new(pattern).unwrap();
        let deadline = Instant::now() + within;
        loop {
            if let Some(m) = re.find(&self.seen[self.cursor..]) {
                let found = m.as_bytes().to_vec();
                self.cursor += m.end();
                return Some(found);
            }
            let now = Instant::now();
            if now >= deadline || !self.pump(deadline - now) {
                // One last look at what the final read brought.
                let m = re.find(&self.seen[self.cursor..])?;
                let found = m.as_bytes().to_vec();
                self.cursor += m.end();
                return Some(found);
            }
        }
    }

    /// Collects everything that arrives for `d`.
    fn drain(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if left.is_zero() || !self.pump(left) {
                break;
            }
        }
    }

    fn send(&mut self, text: &str) {
        self.serial.set_nonblocking(false).unwrap();
        self.serial.write_all(text.as_bytes()).unwrap();
        self.serial.set_nonblocking(true).unwrap();
    }

    /// Runs a shell command and returns its output, framed by markers the shell computes
    /// (so the echoed command line never matches).
    fn shell(&mut self, command: &str) -> String {
        self.send(&format!("printf '%s-BEGIN\\n' cmd; {command}; printf '%s-END\\n' cmd\r"));
        self.expect(r"cmd-BEGIN\r?\n", Duration::from_secs(30));
        let out = self.expect(r"(?s).*?cmd-END", Duration::from_secs(60));
        let text = String::from_utf8_lossy(&out[..out.len() - "cmd-END".len()]).replace('\r', "");
        // The console is also /dev/console: a kernel message may land between the markers
        // (`[    3.92] IPv6: ADDRCONF(NETDEV_CHANGE): lan: link becomes ready`). Not output.
        let printk = regex::Regex::new(r"^\[\s*\d+\.\d+\] ").unwrap();
        text.split_inclusive('\n').filter(|l| !printk.is_match(l)).collect()
    }

    fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            self.pump(Duration::from_millis(200));
            if self.child.try_wait().unwrap().is_some() {
                return true;
            }
        }
        false
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn poll_fd(fd: i32, wait: Duration) {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let ms = wait.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

fn read_lossy(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

fn blank_disk(dir: &Path) -> PathBuf {
    let disk = dir.join("disk.img");
    let out = Command::new("qemu-img").args(["create", "-q", "-f", "raw"]).arg(&disk).arg("2G").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    disk
}

/// The NixOS prompt bytes: colour, OSC title inside the brackets.
const USER_PROMPT: &str = r"\x1b\[1;32m\[\x1b\]0;nixos@nixos: ~\x07nixos@nixos:~\]\$\x1b\[0m ";
const ROOT_PROMPT: &str = r"\x1b\[1;31m\[\x1b\]0;root@nixos: ~\x07root@nixos:~\]#\x1b\[0m ";
/// From QEMU's start (the ISOLINUX countdown alone is 10 s, as on the NixOS ISO).
const PROMPT_WITHIN: Duration = Duration::from_secs(90);

fn vm_lock() -> std::sync::MutexGuard<'static, ()> {
    ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn default_fixture_boots_provisions_and_powers_off() {
    if !common::require_tools("default_fixture_boots", VM_TOOLS) {
        return;
    }
    let _vm = vm_lock();
    let iso = build(None);
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path());

    // First boot, blank disk: everything a NixOS installer shows, then LVM applied.
    let mut vm = Vm::boot(&iso, Some(&disk), "default-first");
    vm.expect(r"ISOLINUX 6\.\d+", Duration::from_secs(20));
    // TIMEOUT 100, as on the NixOS ISO: a 10 s countdown.
    vm.expect(r"Automatic boot in \x1b\[0;1;37;40m10\x1b\[0;37;40m seconds", Duration::from_secs(20));
    vm.expect(r"Loading /boot/bzImage\.\.\. ok\r\nLoading /boot/initrd\.\.\.ok", Duration::from_secs(40));
    vm.expect(r"Linux version \S+ .*Debian", PROMPT_WITHIN);
    vm.expect(r"Kernel command line: .*console=tty0 console=ttyS0,115200", PROMPT_WITHIN);
    vm.expect(r"<<< NixOS Stage 1 >>>", PROMPT_WITHIN);
    vm.expect(r"<<< NixOS Stage 2 >>>", PROMPT_WITHIN);
    vm.expect(r"\[\x1b\[0;32m  OK  \x1b\[0m\] ", PROMPT_WITHIN);
    vm.expect(r"<<< Welcome to NixOS 25\.05\.fixture \(x86_64\) - ttyS0 >>>", PROMPT_WITHIN);
    vm.expect(r"nixos login: nixos \(automatic login\)", PROMPT_WITHIN);
    vm.expect(r"\x1b\[\?2004h", PROMPT_WITHIN); // bracketed paste on
    vm.expect(USER_PROMPT, PROMPT_WITHIN);
    eprintln!("autologin prompt after {:.1}s", vm.started.elapsed().as_secs_f64());
    // The pre-nixos line, too, within 60 s of QEMU's start (it may come before the prompt).
    vm.cursor = 0;
    let left = PROMPT_WITHIN.saturating_sub(vm.started.elapsed());
    vm.expect(r"pre-nixos: Storage provisioning completed automatically\.", left);
    vm.cursor = 0;
    vm.expect(r"LAN IPv4 address: 10\.0\.2\.15", Duration::from_secs(30));

    vm.send("sudo -i\r");
    vm.expect(ROOT_PROMPT, Duration::from_secs(20));
    assert_eq!(vm.shell("id -u").trim(), "0");
    let status = vm.shell("cat /run/pre-nixos/storage-status");
    assert_eq!(status.trim(), "STATE=applied\nDETAIL=auto-applied");
    let lvs = vm.shell("lvs --noheadings --separator '|' -o lv_name,vg_name");
    assert!(lvs.contains("slash|main") && lvs.contains("swap|main"), "{lvs}");
    let fs = vm.shell("blkid -o value -s TYPE /dev/main/slash");
    assert_eq!(fs.trim(), "ext4");
    let lan = vm.shell("ip -o -4 addr show dev lan");
    assert!(lan.contains("inet 10.0.2.15/24"), "{lan}");
    assert_eq!(vm.shell("nixos-version").trim(), "25.05.fixture (Warbler)");
    // The systemctl/journalctl shims answer for the oneshot like systemd would.
    let unit = vm.shell("systemctl show -p LoadState -p ActiveState pre-nixos.service");
    assert!(unit.contains("LoadState=loaded") && unit.contains("ActiveState=inactive"), "{unit}");
    assert!(vm.shell("journalctl -b -u pre-nixos --no-pager").contains("pvcreate"));
    assert!(vm.shell("cat /etc/os-release").contains("fixture"));
    vm.send("poweroff\r");
    vm.expect(r"reboot: Power down", Duration::from_secs(30));
    assert!(vm.wait_exit(Duration::from_secs(15)), "QEMU did not exit after poweroff");
    drop(vm);

    // Second boot on the same disk: existing storage, nothing touched.
    let mut vm = Vm::boot(&iso, Some(&disk), "default-second");
    vm.expect(USER_PROMPT, PROMPT_WITHIN);
    vm.cursor = 0;
    vm.expect(r"pre-nixos: Existing storage detected; provisioning ran in plan-only mode\.", Duration::from_secs(60));
    vm.send("sudo -i\r");
    vm.expect(ROOT_PROMPT, Duration::from_secs(20));
    assert_eq!(vm.shell("cat /run/pre-nixos/storage-status").trim(), "STATE=plan-only\nDETAIL=existing-storage");
}

#[test]
fn fault_no_serial_console_goes_silent_after_initrd() {
    if !common::require_tools("fault_no_serial_console", VM_TOOLS) {
        return;
    }
    let _vm = vm_lock();
    let mut vm = Vm::boot(&build(Some("no-serial-console")), None, "no-serial-console");
    vm.expect(r"Loading /boot/initrd\.\.\.ok\r\n", Duration::from_secs(40));
    let at = vm.seen.len();
    vm.drain(Duration::from_secs(25));
    assert_eq!(vm.seen.len(), at, "serial was not silent: {:?}", String::from_utf8_lossy(&vm.seen[at..]));
}

#[test]
fn fault_console_not_last_hides_init_output_from_serial() {
    if !common::require_tools("fault_console_not_last", VM_TOOLS) {
        return;
    }
    let _vm = vm_lock();
    let mut vm = Vm::boot(&build(Some("console-not-last")), None, "console-not-last");
    vm.expect(r"Kernel command line: .*console=ttyS0,115200n8 console=tty0", PROMPT_WITHIN);
    vm.expect(r"Run /init as init process", PROMPT_WITHIN);
    // systemd (and the fixture) still start a getty on every active console, ttyS0 included.
    vm.expect(r"nixos login: nixos \(automatic login\)", PROMPT_WITHIN);
    vm.expect(USER_PROMPT, PROMPT_WITHIN);
    vm.drain(Duration::from_secs(5));
    let text = String::from_utf8_lossy(&vm.seen);
    for absent in ["<<< NixOS Stage 1 >>>", "  OK  ", "pre-nixos: ", "LAN IPv4 address"] {
        assert!(!text.contains(absent), "{absent:?} reached serial although /dev/console is tty0");
    }
}

#[test]
fn fault_login_prompt_waits_for_a_user_and_pre_nixos_skips_without_disk() {
    if !common::require_tools("fault_login_prompt", VM_TOOLS) {
        return;
    }
    let _vm = vm_lock();
    let mut vm = Vm::boot(&build(Some("login-prompt")), None, "login-prompt");
    vm.expect(r"nixos login: ", PROMPT_WITHIN);
    vm.drain(Duration::from_secs(2));
    assert!(!String::from_utf8_lossy(&vm.seen).contains("automatic login"));
    vm.send("nixos\r");
    vm.expect(USER_PROMPT, Duration::from_secs(20));
    let status = vm.shell("cat /run/pre-nixos/storage-status");
    assert_eq!(status.trim(), "STATE=skipped\nDETAIL=no-disk");
    assert!(String::from_utf8_lossy(&vm.seen).contains("pre-nixos: Provisioning status is 'skipped' (no-disk)."));
}

#[test]
fn fault_sudo_password_asks_and_su_refuses() {
    if !common::require_tools("fault_sudo_password", VM_TOOLS) {
        return;
    }
    let _vm = vm_lock();
    let mut vm = Vm::boot(&build(Some("sudo-password")), None, "sudo-password");
    vm.expect(USER_PROMPT, PROMPT_WITHIN);
    vm.send("sudo -i\r");
    vm.expect(r"\[sudo\] password for nixos: ", Duration::from_secs(20));
    // sudo flushes pending input when it turns echo off; give it that moment.
    vm.drain(Duration::from_secs(1));
    vm.send("\x03");
    vm.expect(USER_PROMPT, Duration::from_secs(20));
    vm.send("su -\r");
    vm.expect(r"Password: ", Duration::from_secs(20));
    vm.drain(Duration::from_secs(1));
    vm.send("\r");
    vm.expect(r"su: Authentication failure", Duration::from_secs(20));
    assert_eq!(vm.shell("id -u").trim(), "1000");
}

#[test]
fn fault_storage_error_runs_plan_only() {
    if !common::require_tools("fault_storage_error", VM_TOOLS) {
        return;
    }
    let _vm = vm_lock();
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path());
    let mut vm = Vm::boot(&build(Some("storage-error")), Some(&disk), "storage-error");
    vm.expect(
        r"pre-nixos: Storage detection encountered an error; provisioning ran in plan-only mode\.",
        PROMPT_WITHIN,
    );
    vm.cursor = 0;
    vm.expect(USER_PROMPT, PROMPT_WITHIN);
    vm.send("sudo -i\r");
    vm.expect(ROOT_PROMPT, Duration::from_secs(20));
    assert_eq!(vm.shell("cat /run/pre-nixos/storage-status").trim(), "STATE=plan-only\nDETAIL=detection-error");
    assert_eq!(vm.shell("wipefs -n /dev/vda | wc -l").trim(), "0", "the blank disk was touched");
}

#[test]
fn fault_kernel_panic_panics() {
    if !common::require_tools("fault_kernel_panic", VM_TOOLS) {
        return;
    }
    let _vm = vm_lock();
    let mut vm = Vm::boot(&build(Some("kernel-panic")), None, "kernel-panic");
    vm.expect(r"Kernel panic - not syncing: VFS: Unable to mount root fs", PROMPT_WITHIN);
}

#[test]
fn fault_hang_after_login_answers_once() {
    if !common::require_tools("fault_hang_after_login", VM_TOOLS) {
        return;
    }
    let _vm = vm_lock();
    let mut vm = Vm::boot(&build(Some("hang-after-login")), None, "hang-after-login");
    vm.expect(USER_PROMPT, PROMPT_WITHIN);
    // A harness's first command typically unsets PROMPT_COMMAND; the hang must survive that.
    vm.send("unset PROMPT_COMMAND; echo $((6*7))\r");
    vm.expect(r"[\r\n]42\r?\n", Duration::from_secs(20));
    vm.send("echo $((7*8))\r");
    assert!(vm.try_expect(r"56", Duration::from_secs(10)).is_none(), "the shell answered a second command");
    assert!(vm.try_expect(r"nixos@nixos:~\]\$", Duration::from_secs(1)).is_none(), "a prompt came back");
}

#[test]
fn fault_flood_floods_before_login() {
    if !common::require_tools("fault_flood", VM_TOOLS) {
        return;
    }
    let _vm = vm_lock();
    let mut vm = Vm::boot(&build(Some("flood")), None, "flood");
    vm.expect(r"flood: done \(1024 KiB\)", Duration::from_secs(240));
    vm.expect(r"nixos login: nixos \(automatic login\)", PROMPT_WITHIN);
    assert!(vm.seen.len() > 1 << 20, "only {} bytes", vm.seen.len());
    assert!(std::str::from_utf8(&vm.seen).is_err(), "the flood carries invalid UTF-8");
    assert!(vm.seen.windows(9).any(|w| w == b"\x1b]0;no te"), "an unterminated OSC");
    assert!(vm.seen.windows(4096).any(|w| w.iter().all(|&b| b == b'x')), "a very long line");
}

#[test]
fn fault_broadcast_interrupts_the_shell() {
    if !common::require_tools("fault_broadcast", VM_TOOLS) {
        return;
    }
    let _vm = vm_lock();
    let mut vm = Vm::boot(&build(Some("broadcast")), None, "broadcast");
    vm.expect(USER_PROMPT, PROMPT_WITHIN);
    let at = vm.seen.len();
    let out = vm.shell("for i in 1 2 3 4 5 6; do echo tick$i; sleep 1; done");
    assert!(out.contains("tick6"), "{out}");
    let during = String::from_utf8_lossy(&vm.seen[at..]).into_owned();
    let unsolicited = during.matches("Broadcast message from root@nixos").count()
        + during.matches("LAN IPv4 address").count()
        + during.matches("fixture: unsolicited kernel message").count();
    assert!(unsolicited >= 2, "only {unsolicited} unsolicited lines in 6 s:\n{during}");
}

// ---- The systemd flavour and UEFI ----

const SYSTEMD_FAULTS: &[&str] = &[
    "console-not-last",
    "unit-deadlock",
    "networkd-missing",
    "emergency-mode",
    "failed-unit",
    "slow-start-job",
    "no-serial-console",
    "kernel-panic",
    "sudo-password",
    "storage-error",
];
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// Builds (or reuses) a systemd variant through the CLI; returns the ISO path and stdout.
fn build_systemd(fault: Option<&str>) -> (PathBuf, String) {
    let mut args = vec!["fixture", "--flavor", "systemd"];
    if let Some(f) = fault {
        args.extend(["--fault", f]);
    }
    let out = common::run_xtask(&args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "fixture {args:?} failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    let name = fault.map_or("nixos-fixture-systemd.iso".to_string(), |f| format!("nixos-fixture-systemd-{f}.iso"));
    let iso = common::repo_root().join("target/fixture").join(name);
    assert!(iso.exists() && stdout.contains(iso.to_str().unwrap()), "{stdout}");
    (iso, stdout)
}

#[test]
fn systemd_flavour_builds_every_variant_and_verifies_its_cache() {
    if !common::require_systemd_fixture("systemd_flavour_builds") {
        return;
    }
    let _vm = vm_lock();
    let (iso, _) = build_systemd(None);
    for fault in SYSTEMD_FAULTS {
        build_systemd(Some(fault));
    }
    let (_, again) = build_systemd(None);
    assert!(again.contains("cache hit"), "{again}");
    // The record of what was resolved sits next to the cached root file system.
    let cache = common::repo_root().join("target/fixture/cache");
    let rootfs = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("systemd-rootfs-"))
        .expect("a cached systemd root file system");
    let resolved = std::fs::read_to_string(rootfs.join("resolved.txt")).unwrap();
    assert!(resolved.lines().any(|l| l.starts_with("systemd 252")), "{resolved}");
    assert!(resolved.contains("# snapshot ") && resolved.contains("Date:"), "{resolved}");
    // A damaged ISO fails the hash check and is rebuilt, not reused.
    let good = std::fs::read(&iso).unwrap();
    std::fs::OpenOptions::new().append(true).open(&iso).unwrap().write_all(b"damage").unwrap();
    let (_, rebuilt) = build_systemd(None);
    assert!(rebuilt.contains("built:") && !rebuilt.contains("cache hit"), "{rebuilt}");
    assert_eq!(std::fs::read(&iso).unwrap().len(), good.len());
}

#[test]
fn faults_belong_to_their_flavour() {
    let out = common::run_xtask(&["fixture", "--fault", "unit-deadlock"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--flavor systemd"));
    let out = common::run_xtask(&["fixture", "--flavor", "systemd", "--fault", "flood"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unit-deadlock") && stderr.contains("emergency-mode"), "{stderr}");
}

/// OVMF with a fresh copy of its variable store, on q35 (AHCI CD-ROM).
fn uefi_args(dir: &Path) -> Vec<String> {
    let vars = dir.join("OVMF_VARS.fd");
    std::fs::copy(OVMF_VARS, &vars).unwrap();
    vec![
        "-machine".into(),
        "q35".into(),
        "-drive".into(),
        format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
        "-drive".into(),
        format!("if=pflash,format=raw,file={}", vars.display()),
    ]
}

#[test]
fn systemd_fixture_boots_under_uefi_through_grub_and_refuses_a_users_poweroff() {
    if !common::require_systemd_fixture("systemd_uefi") || !common::require_tools("systemd_uefi", VM_TOOLS) {
        return;
    }
    assert!(Path::new(OVMF_CODE).exists(), "{OVMF_CODE} missing: run scripts/install-deps.sh (package ovmf)");
    let _vm = vm_lock();
    let (iso, _) = build_systemd(None);
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path());
    let mut vm = Vm::boot_with(&iso, Some(&disk), "systemd-uefi", &uefi_args(dir.path()));
    let within = PROMPT_WITHIN + Duration::from_secs(60);
    vm.expect(r"BdsDxe: starting Boot\d+ .*DVD-ROM", within);
    vm.expect(r"GNU GRUB  version 2\.", within);
    vm.expect(r"NixOS 25\.05\.fixture Installer", within);
    vm.expect(r"<<< NixOS Stage 1 >>>", within);
    vm.expect(r"Welcome to \x1b\[1mNixOS 25\.05\.fixture \(Warbler\)\x1b\[0m!", within);
    vm.expect(r"\[\x1b\[0;32m  OK  \x1b\[0m\] Reached target .*Multi-User System", within);
    vm.expect(r"<<< Welcome to NixOS 25\.05\.fixture \(x86_64\) - ttyS0 >>>", within);
    vm.expect(r"nixos login: nixos \(automatic login\)", within);
    vm.expect(r"\x1b\[\?2004h", within); // bracketed paste on
    vm.expect(USER_PROMPT, within);
    // As on NixOS: a user on the serial console may not power the machine off.
    vm.send("poweroff\r");
    vm.expect(r"Call to PowerOff failed: Interactive authentication required\.", Duration::from_secs(30));
    vm.expect(USER_PROMPT, Duration::from_secs(10));
    let uid = vm.shell("sudo id -u");
    assert_eq!(uid.trim(), "0", "{uid}");
    vm.send("sudo poweroff\r");
    vm.expect(r"reboot: Power down", Duration::from_secs(60));
    assert!(vm.wait_exit(Duration::from_secs(15)), "QEMU did not exit after poweroff");
}

#[test]
fn busybox_fixture_boots_under_uefi_through_grub() {
    if !common::require_tools("busybox_uefi", VM_TOOLS) || !common::require_tools("busybox_uefi", &["grub-mkimage"]) {
        return;
    }
    assert!(Path::new(OVMF_CODE).exists(), "{OVMF_CODE} missing: run scripts/install-deps.sh (package ovmf)");
    let _vm = vm_lock();
    let iso = build(None);
    let dir = tempfile::tempdir().unwrap();
    let mut vm = Vm::boot_with(&iso, None, "busybox-uefi", &uefi_args(dir.path()));
    let within = PROMPT_WITHIN + Duration::from_secs(30);
    vm.expect(r"GNU GRUB  version 2\.", within);
    vm.expect(r"Linux version \S+ .*Debian", within);
    vm.expect(r"Kernel command line: .*console=tty0 console=ttyS0,115200n8", within);
    vm.expect(r"nixos login: nixos \(automatic login\)", within);
    vm.expect(USER_PROMPT, within);
}
