//! The QEMU process: its command line, a spawn that cannot outlive the harness, a small QMP
//! client, and the shutdown ladder (guest poweroff → QMP system_powerdown → QMP quit → SIGKILL).

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};
use xshell::{cmd, Shell};

use crate::accel::Accel;
use crate::process::{self, OneShot, Tie};

pub const BINARY: &str = "qemu-system-x86_64";

/// The flags every QEMU we start begins with: no default devices, nothing from the host's
/// /etc/qemu, no display, exit instead of rebooting, and the accelerator.
pub fn base_args(accel: Accel) -> [&'static str; 7] {
    ["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-accel", accel.name()]
}

/// The guest's firmware (`vm-test --firmware`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Firmware {
    /// SeaBIOS on the default machine: the ISO boots through ISOLINUX.
    #[default]
    Bios,
    /// OVMF on q35: the ISO boots through its El Torito EFI image (GRUB on NixOS).
    Uefi,
}

impl Firmware {
    pub fn name(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
        }
    }
}

impl std::fmt::Display for Firmware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where distributions put OVMF (code, vars), most specific first (`doctor` checks the same).
pub const OVMF: &[(&str, &str)] = &[
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
    ("/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"),
    ("/usr/share/edk2/x64/OVMF_CODE.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd"),
    ("/usr/share/edk2-ovmf/x64/OVMF_CODE.fd", "/usr/share/edk2-ovmf/x64/OVMF_VARS.fd"),
    ("/usr/share/qemu/OVMF.fd", ""),
];

/// The first OVMF pair present with both files (a run needs its own copy of the variables).
pub fn locate_ovmf() -> Result<(Utf8PathBuf, Utf8PathBuf)> {
    OVMF.iter()
        .find(|(code, vars)| !vars.is_empty() && Utf8Path::new(code).is_file() && Utf8Path::new(vars).is_file())
        .map(|(code, vars)| (Utf8PathBuf::from(code), Utf8PathBuf::from(vars)))
        .ok_or_else(|| {
            crate::exit::infra(
                "--firmware uefi: no OVMF firmware (code + vars) found; install it with `sudo apt-get install ovmf` (or run `sudo scripts/install-deps.sh`)",
            )
        })
}

/// UEFI firmware for one run: OVMF's code read-only, and the run's own copy of its variables.
#[derive(Debug, Clone)]
pub struct Uefi {
    pub code: Utf8PathBuf,
    pub vars: Utf8PathBuf,
}

/// Everything that decides the QEMU command line.
#[derive(Debug, Clone)]
pub struct Spec {
    pub binary: Utf8PathBuf,
    pub iso: Utf8PathBuf,
    /// Virtio disks in order (`/dev/vda`, `/dev/vdb`, …); none is a machine without a disk.
    pub disks: Vec<Utf8PathBuf>,
    pub accel: Accel,
    pub memory_mib: u32,
    pub cpus: u32,
    /// The harness listens here; QEMU connects as a client (nothing printed before is lost).
    pub serial_sock: Utf8PathBuf,
    /// QEMU serves QMP here.
    pub qmp_sock: Utf8PathBuf,
    /// Host port forwarded to the guest's port 22 (picked by the OS).
    pub ssh_port: u16,
    /// With `--keep`, QEMU reconnects the serial line to whoever listens on `serial_sock` later.
    pub reconnect_serial: bool,
    /// `None`: SeaBIOS (QEMU's default).
    pub uefi: Option<Uefi>,
}

impl Spec {
    /// The arguments after the binary: `-nodefaults`, `-no-user-config` (no devices from the
    /// host's /etc/qemu) and every device spelled out. Paths go into option values with their
    /// commas doubled, QEMU's escape (a run directory or ISO path may contain one).
    pub fn args(&self) -> Vec<String> {
        let serial = if self.reconnect_serial {
            format!("socket,id=ser0,path={},reconnect=1", opt_value(&self.serial_sock))
        } else {
            format!("socket,id=ser0,path={}", opt_value(&self.serial_sock))
        };
        let mut a: Vec<String> = Vec::new();
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
        push(&base_args(self.accel));
        push(&["-m", &self.memory_mib.to_string(), "-smp", &self.cpus.to_string()]);
        if let Some(uefi) = &self.uefi {
            // OVMF wants q35 (its CD-ROM is then on AHCI, which `if=ide` below reaches).
            push(&["-machine", "q35"]);
            push(&["-drive", &format!("if=pflash,format=raw,readonly=on,file={}", opt_value(&uefi.code))]);
            push(&["-drive", &format!("if=pflash,format=raw,file={}", opt_value(&uefi.vars))]);
        }
        push(&["-chardev", &serial, "-serial", "chardev:ser0"]);
        push(&["-chardev", &format!("socket,id=qmp0,path={},server=on,wait=off", opt_value(&self.qmp_sock))]);
        push(&["-mon", "chardev=qmp0,mode=control"]);
        // A failed host read or write of the scratch disk (a full filesystem, say) pauses the
        // guest (status `io-error`, which the harness asks QMP about) instead of handing the
        // guest an I/O error it would report as its own failure.
        for disk in &self.disks {
            push(&[
                "-drive",
                &format!("file={},if=virtio,format=qcow2,cache=unsafe,werror=stop,rerror=stop", opt_value(disk)),
            ]);
        }
        push(&["-netdev", &format!("user,id=net0,hostfwd=tcp:127.0.0.1:{}-:22", self.ssh_port)]);
        push(&["-device", "virtio-net-pci,netdev=net0", "-device", "virtio-rng-pci"]);
        // A screen, never shown (`-display none`): when serial says nothing, QMP `screendump`
        // of it is the evidence (vm/screen.rs).
        push(&["-device", "VGA"]);
        // What `-cdrom` means (IDE secondary master), spelled as an option value so the
        // path's commas can be escaped like every other path's.
        push(&["-drive", &format!("file={},format=raw,media=cdrom,if=ide,index=2,readonly=on", opt_value(&self.iso))]);
        push(&["-boot", "d"]);
        a
    }

    /// The whole command, for metadata and for humans to re-run.
    pub fn command(&self) -> Vec<String> {
        std::iter::once(self.binary.to_string()).chain(self.args()).collect()
    }
}

/// A QEMU option value: `,` separates options, `,,` is a literal comma.
fn opt_value(path: &Utf8Path) -> String {
    path.as_str().replace(',', ",,")
}

/// Where the serial and QMP sockets go: the run directory, unless the paths would pass the
/// 107-byte limit of Unix socket paths; then a fresh directory in /tmp, created with mode
/// 0700 and never reused (an existing one is refused). `true`: that temporary directory,
/// which the caller removes at the end.
pub fn socket_dir(run_dir: &Utf8Path) -> Result<(Utf8PathBuf, bool)> {
    if run_dir.join("serial.sock").as_str().len() < 100 {
        return Ok((run_dir.to_path_buf(), false));
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let dir = Utf8PathBuf::from(format!("/tmp/xtask-vm-{}-{nanos:x}", std::process::id()));
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating the socket directory {dir} (it must not exist yet)"))?;
    Ok((dir, true))
}

/// Finds the QEMU binary or says how to install it (exit 3).
pub fn locate() -> Result<Utf8PathBuf> {
    let path = which::which(BINARY).map_err(|_| {
        crate::exit::infra(format!(
            "{BINARY} not found on PATH; install it with `sudo apt-get install qemu-system-x86` (or run `sudo scripts/install-deps.sh`)"
        ))
    })?;
    Utf8PathBuf::from_path_buf(path).map_err(|p| anyhow::anyhow!("non-UTF-8 path {}", p.display()))
}

/// `QEMU emulator version 7.2.22 (Debian ...)` → `7.2.22`.
pub fn version(sh: &Shell, binary: &Utf8Path) -> Result<String> {
    // A probe for the record: whatever it prints is the answer (a QEMU that cannot run fails
    // loudly when it is started).
    let out = cmd!(sh, "{binary} --version")
        .ignore_status()
        .output()
        .with_context(|| format!("running {binary} --version"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or("");
    Ok(first
        .strip_prefix("QEMU emulator version ")
        .unwrap_or(first)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string())
}

/// Creates the per-run scratch disk: a sparse qcow2 that costs nothing until written.
pub fn create_disk(sh: &Shell, path: &Utf8Path, size: &str) -> Result<()> {
    if which::which("qemu-img").is_err() {
        bail!(crate::exit::infra("qemu-img not found on PATH; install `qemu-utils`"));
    }
    cmd!(sh, "qemu-img create -q -f qcow2 {path} {size}")
        .run_captured()
        .map_err(|e| crate::exit::infra(format!("{e:#}")))
}

/// Asks the OS for a free TCP port on 127.0.0.1 (bind port 0, read it back, release it).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A running QEMU. Killed (and reaped) on drop unless `detach`ed for `--keep`.
pub struct Qemu {
    child: Option<Child>,
    pub pid: u32,
    pub started: Instant,
    qmp_sock: Utf8PathBuf,
}

impl Qemu {
    /// Spawns QEMU with stdout+stderr to `log`. Normally QEMU gets `PR_SET_PDEATHSIG(SIGKILL)`
    /// (a SIGKILLed harness takes QEMU with it) and its own process group (a terminal Ctrl-C
    /// reaches only the harness, which then shuts QEMU down in order). `keep` starts it in a
    /// new session instead, without the death signal, so it can outlive the harness.
    pub fn spawn(spec: &Spec, log: &Utf8Path, keep: bool) -> Result<Qemu> {
        let log_file = fs_err::File::create(log)?.into_parts().0;
        let sh = process::shell()?;
        let (binary, args) = (&spec.binary, spec.args());
        let tie = if keep { Tie::NewSession } else { Tie::OwnGroupDiesWithUs };
        let child = process::spawn_logged(cmd!(sh, "{binary} {args...}"), log_file, tie)
            .map_err(|e| crate::exit::infra(format!("cannot start {}: {e}; install `qemu-system-x86`", spec.binary)))?;
        Ok(Qemu { pid: child.id(), child: Some(child), started: Instant::now(), qmp_sock: spec.qmp_sock.clone() })
    }

    /// Exit status if QEMU has exited (reaps it).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits up to `timeout` for QEMU to exit (it exits within ~100 ms of a guest poweroff).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn qmp_sock(&self) -> &Utf8Path {
        &self.qmp_sock
    }

    pub fn qmp(&self) -> Result<Qmp> {
        Qmp::connect(&self.qmp_sock, Duration::from_secs(3))
    }

    /// The rest of the shutdown ladder once the guest's own poweroff did not end QEMU:
    /// QMP `system_powerdown` (ACPI; skipped when `powerdown_wait` is zero), then QMP `quit`,
    /// then SIGKILL. Returns the rung that worked.
    pub fn stop(&mut self, powerdown_wait: Duration) -> &'static str {
        if self.try_wait().is_some() {
            return "exited";
        }
        if let Ok(mut q) = self.qmp() {
            if !powerdown_wait.is_zero()
                && q.execute("system_powerdown", None).is_ok()
                && self.wait_timeout(powerdown_wait).is_some()
            {
                return "qmp-system_powerdown";
            }
            if q.execute("quit", None).is_ok() && self.wait_timeout(Duration::from_secs(3)).is_some() {
                return "qmp-quit";
            }
        }
        self.kill();
        "sigkill"
    }

    pub fn kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if c.try_wait().ok().flatten().is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// `--keep`: leave QEMU running after the harness exits.
    pub fn detach(mut self) -> u32 {
        self.child = None;
        self.pid
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.kill();
    }
}

/// QEMU paused the guest because a disk image could not be written or read on the host
/// (QMP `query-status` = `io-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paused {
    /// The host filesystem is full (the device's `io-status` is `nospace`).
    pub no_space: bool,
    /// The image file that failed (`query-block`), when QEMU names one.
    pub file: Option<String>,
}

impl Paused {
    /// The catalogue id: `host-disk-full` or `io-error`.
    pub fn finding(&self) -> &'static str {
        if self.no_space {
            "host-disk-full"
        } else {
            "io-error"
        }
    }

    /// One sentence naming the file, the error and the space left where it lives.
    pub fn describe(&self) -> String {
        let Some(file) = &self.file else {
            let error = if self.no_space { "No space left on device" } else { "a host I/O error" };
            return format!("QEMU paused the guest (QMP status io-error) on {error} with a disk image");
        };
        let free = Utf8Path::new(file)
            .parent()
            .and_then(free_bytes)
            .map_or(String::new(), |b| format!("; {} KiB free now on the filesystem holding {file}", b / 1024));
        let failed = if self.no_space {
            format!("writing {file} failed: No space left on device")
        } else {
            format!("reading or writing {file} failed on the host")
        };
        format!("QEMU paused the guest (QMP status io-error): {failed}{free}")
    }

    /// Reads `query-block`'s answer: the device whose `io-status` is not `ok`.
    fn from_blocks(blocks: &Value) -> Paused {
        let failed =
            blocks.as_array().into_iter().flatten().find(|b| b["io-status"].as_str().is_some_and(|s| s != "ok"));
        Paused {
            no_space: failed.is_some_and(|b| b["io-status"] == "nospace"),
            file: failed.and_then(|b| b["inserted"]["file"].as_str()).map(str::to_string),
        }
    }
}

/// Asks QEMU (QMP, one connection attempt) whether the guest is paused on a disk error.
/// `None` while it runs, or when QMP cannot tell (QEMU already gone).
pub fn io_error_pause(qmp_sock: &Utf8Path) -> Option<Paused> {
    let mut q = Qmp::connect(qmp_sock, Duration::ZERO).ok()?;
    let status = q.execute("query-status", None).ok()?;
    if status["status"] != "io-error" {
        return None;
    }
    Some(Paused::from_blocks(&q.execute("query-block", None).unwrap_or_default()))
}

/// Bytes available to unprivileged users on the filesystem holding `dir`.
fn free_bytes(dir: &Utf8Path) -> Option<u64> {
    let path = std::ffi::CString::new(dir.as_str()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a zeroed struct for the kernel to fill.
    (unsafe { libc::statvfs(path.as_ptr(), &mut st) } == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// A hand-rolled QMP client: line-delimited JSON, greeting, `qmp_capabilities`, then
/// `execute` lines; asynchronous `event` lines are skipped.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    pub fn connect(path: &Utf8Path, timeout: Duration) -> Result<Qmp> {
        let end = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= end => {
                    return Err(e).with_context(|| format!("connecting to QMP at {path}"))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut q = Qmp { reader: BufReader::new(stream.try_clone()?), writer: stream };
        let greeting = q.read_value()?;
        if greeting.get("QMP").is_none() {
            bail!("unexpected QMP greeting: {greeting}");
        }
        q.execute("qmp_capabilities", None)?;
        Ok(q)
    }

    /// Waits until QEMU closes the connection (it exits), reading and dropping its events;
    /// false when `timeout` passes first.
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        let closed = self.read_until_closed(Instant::now() + timeout);
        let _ = self.reader.get_ref().set_read_timeout(Some(Duration::from_secs(5))); // as `connect` set it
        closed
    }

    fn read_until_closed(&mut self, end: Instant) -> bool {
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() || self.reader.get_ref().set_read_timeout(Some(left)).is_err() {
                return false;
            }
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return false
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return true, // reset by a dying QEMU
            }
        }
    }

    fn read_value(&mut self) -> Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            bail!("QMP connection closed");
        }
        Ok(serde_json::from_str(&line)?)
    }

    /// Runs a command and returns its `return` value (or its `error` as Err).
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        writeln!(self.writer, "{msg}")?;
        loop {
            let v = self.read_value()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                bail!("QMP {command}: {e}");
            }
            // {"event": ...}: asynchronous, not our answer.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_is_explicit() {
        let spec = Spec {
            binary: "/usr/bin/qemu-system-x86_64".into(),
            iso: "/x.iso".into(),
            disks: vec!["/r/disk.qcow2".into()],
            accel: Accel::Tcg,
            memory_mib: 1024,
            cpus: 2,
            serial_sock: "/r/serial.sock".into(),
            qmp_sock: "/r/qmp.sock".into(),
            ssh_port: 40000,
            reconnect_serial: false,
            uefi: None,
        };
        let line = spec.command().join(" ");
        for part in [
            "-nodefaults",
            "-no-reboot",
            "-accel tcg",
            "-chardev socket,id=ser0,path=/r/serial.sock -serial chardev:ser0",
            "hostfwd=tcp:127.0.0.1:40000-:22",
            "-drive file=/x.iso,format=raw,media=cdrom,if=ide,index=2,readonly=on -boot d",
            "-no-user-config",
            "virtio-rng-pci",
            "-device VGA",
            "cache=unsafe,werror=stop,rerror=stop",
        ] {
            assert!(line.contains(part), "{part} missing in {line}");
        }
        assert!(!line.contains("server=on,wait=off -serial"), "the harness is the serial server");
    }

    #[test]
    fn commas_in_paths_are_doubled() {
        let spec = Spec {
            binary: "qemu".into(),
            iso: "/a,b/x.iso".into(),
            disks: vec!["/r,1/disk.qcow2".into()],
            accel: Accel::Tcg,
            memory_mib: 1024,
            cpus: 2,
            serial_sock: "/r,1/serial.sock".into(),
            qmp_sock: "/r,1/qmp.sock".into(),
            ssh_port: 40000,
            reconnect_serial: true,
            uefi: None,
        };
        let line = spec.command().join(" ");
        for part in ["file=/a,,b/x.iso,", "file=/r,,1/disk.qcow2,", "path=/r,,1/serial.sock,", "path=/r,,1/qmp.sock,"] {
            assert!(line.contains(part), "{part} missing in {line}");
        }
        assert!(!line.contains("pflash") && !line.contains("q35"), "{line}");
        // UEFI: q35, OVMF's code read-only, the run's own (writable) copy of the variables.
        let uefi = Spec { uefi: Some(Uefi { code: "/fw/CODE.fd".into(), vars: "/r,1/OVMF_VARS.fd".into() }), ..spec };
        let line = uefi.command().join(" ");
        for part in [
            "-machine q35",
            "-drive if=pflash,format=raw,readonly=on,file=/fw/CODE.fd",
            "-drive if=pflash,format=raw,file=/r,,1/OVMF_VARS.fd",
        ] {
            assert!(line.contains(part), "{part} missing in {line}");
        }
    }

    /// A stand-in QEMU monitor: greets, then answers each command line from `answers`.
    fn fake_qmp(answers: &'static [(&'static str, &'static str)]) -> (tempfile::TempDir, Utf8PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let sock = Utf8PathBuf::from_path_buf(dir.path().join("qmp.sock")).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut out = stream.try_clone().unwrap();
            writeln!(out, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            for line in BufReader::new(stream).lines() {
                let line = line.unwrap();
                let answer = answers.iter().find(|(cmd, _)| line.contains(cmd)).map_or(r#"{"return": {}}"#, |a| a.1);
                // An event first: the client must skip it.
                writeln!(out, r#"{{"event": "BLOCK_IO_ERROR", "data": {{}}}}"#).unwrap();
                writeln!(out, "{answer}").unwrap();
            }
        });
        (dir, sock)
    }

    #[test]
    fn a_guest_paused_on_a_full_disk_is_named_with_its_file() {
        let (dir, sock) = fake_qmp(&[
            ("query-status", r#"{"return": {"running": false, "status": "io-error"}}"#),
            (
                "query-block",
                concat!(
                    r#"{"return": [{"device": "ide2-cd0", "io-status": "ok", "inserted": {"file": "/x.iso"}}, "#,
                    r#"{"device": "virtio0", "io-status": "nospace", "inserted": {"file": "/tmp/run/disk.qcow2"}}]}"#
                ),
            ),
        ]);
        let paused = io_error_pause(&sock).unwrap();
        assert_eq!(paused, Paused { no_space: true, file: Some("/tmp/run/disk.qcow2".into()) });
        assert_eq!(paused.finding(), "host-disk-full");
        let text = paused.describe();
        assert!(text.contains("writing /tmp/run/disk.qcow2 failed: No space left on device"), "{text}");
        // Where the file's directory exists, the space left there is part of the evidence.
        let here = Paused { no_space: true, file: Some(format!("{}/disk.qcow2", dir.path().display())) };
        assert!(here.describe().contains("KiB free now on the filesystem holding"), "{}", here.describe());
        let other = Paused::from_blocks(&json!([{"io-status": "failed", "inserted": {"file": "/r/d.qcow2"}}]));
        assert_eq!((other.finding(), other.file.as_deref()), ("io-error", Some("/r/d.qcow2")));
    }

    #[test]
    fn a_running_guest_or_no_qemu_is_no_pause() {
        let (_dir, sock) = fake_qmp(&[("query-status", r#"{"return": {"running": true, "status": "running"}}"#)]);
        assert_eq!(io_error_pause(&sock), None);
        assert_eq!(io_error_pause(Utf8Path::new("/nonexistent/qmp.sock")), None);
    }

    #[test]
    fn socket_dir_in_tmp_is_private_and_fresh() {
        let short = Utf8Path::new("/r");
        assert_eq!(socket_dir(short).unwrap(), (short.to_path_buf(), false));
        let deep = Utf8PathBuf::from(format!("/{}", "d".repeat(120)));
        let (dir, temporary) = socket_dir(&deep).unwrap();
        assert!(temporary && dir.starts_with("/tmp"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        std::fs::remove_dir(&dir).unwrap();
    }
}
