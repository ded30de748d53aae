//! One QEMU for one run, started and cleaned up the same way by `vm-test` and by `bench`'s
//! bare-QEMU baseline: a fresh scratch disk, the sockets (moved to a private /tmp directory
//! when the run directory's path is too long for a Unix socket), the serial socket bound
//! before QEMU starts (nothing it prints is lost), QEMU itself, and the scratch files removed
//! however the run ends unless the VM is kept.

use crate::vm::qemu::{self, Qemu, Spec};
use crate::vm::serial::{self, Stop};
use anyhow::Result;
use camino::{Utf8Path, Utf8PathBuf};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

/// What a caller chooses about the VM; the rest of the command line is fixed (`qemu::Spec`).
pub struct Options {
    pub binary: Utf8PathBuf,
    pub iso: Utf8PathBuf,
    pub accel: crate::accel::Accel,
    pub memory_mib: u32,
    pub cpus: u32,
    /// The disks, in the order the guest sees them.
    pub disks: Vec<DiskFile>,
    /// QEMU may outlive the harness (`vm-test --keep`): its serial line reconnects.
    pub keep: bool,
    pub firmware: qemu::Firmware,
}

/// A disk for the VM: a fresh sparse qcow2 of `size` (scratch: removed at the end), or, with
/// no size, a file that exists already and outlives the run (`vm-test --disk existing`).
pub struct DiskFile {
    pub path: Utf8PathBuf,
    pub size: Option<&'static str>,
}

impl DiskFile {
    pub fn fresh(path: Utf8PathBuf, size: &'static str) -> DiskFile {
        DiskFile { path, size: Some(size) }
    }

    pub fn existing(path: Utf8PathBuf) -> DiskFile {
        DiskFile { path, size: None }
    }
}

/// The scratch disk and the socket paths, before QEMU starts: `spec` is final, so the caller
/// can record the command line first (a QEMU that fails to start is then on record).
pub struct Prepared {
    pub spec: Spec,
    keep: bool,
    scratch: Scratch,
}

/// Creates the fresh disks and picks the socket paths and a free port for the forwarded ssh.
pub fn prepare(dir: &Utf8Path, options: Options) -> Result<Prepared> {
    let mut scratch = Scratch::default();
    let sh = crate::process::shell()?;
    for disk in &options.disks {
        if let Some(size) = disk.size {
            scratch.files.push(disk.path.clone());
            qemu::create_disk(&sh, &disk.path, size)?;
        }
    }
    let uefi = match options.firmware {
        qemu::Firmware::Bios => None,
        qemu::Firmware::Uefi => {
            // OVMF writes its variables (boot entries) back: each run starts from a fresh copy.
            let (code, template) = qemu::locate_ovmf()?;
            let vars = dir.join("OVMF_VARS.fd");
            fs_err::copy(&template, &vars)?;
            scratch.files.push(vars.clone());
            Some(qemu::Uefi { code, vars })
        }
    };
    let (sock_dir, temporary) = qemu::socket_dir(dir)?;
    scratch.temp_dir = temporary.then(|| sock_dir.clone());
    scratch.files.extend([sock_dir.join("serial.sock"), sock_dir.join("qmp.sock")]);
    let spec = Spec {
        binary: options.binary,
        iso: options.iso,
        disks: options.disks.into_iter().map(|d| d.path).collect(),
        accel: options.accel,
        memory_mib: options.memory_mib,
        cpus: options.cpus,
        serial_sock: sock_dir.join("serial.sock"),
        qmp_sock: sock_dir.join("qmp.sock"),
        ssh_port: qemu::free_port()?,
        reconnect_serial: options.keep,
        uefi,
    };
    Ok(Prepared { spec, keep: options.keep, scratch })
}

impl Prepared {
    /// Binds the serial socket, then spawns QEMU with its output to `stderr_log`.
    pub fn start(self, stderr_log: &Utf8Path) -> Result<Machine> {
        let listener = serial::listen(&self.spec.serial_sock)?;
        let vm = Qemu::spawn(&self.spec, stderr_log, self.keep)?;
        Ok(Machine { vm, spec: self.spec, listener: Some(listener), stopped_by: None, scratch: self.scratch })
    }
}

/// A started QEMU. Dropping it kills QEMU, then removes the scratch files (fields drop in
/// order: QEMU is gone before its disk and sockets are).
pub struct Machine {
    pub vm: Qemu,
    pub spec: Spec,
    listener: Option<UnixListener>,
    /// How QEMU ended, once known: `guest-poweroff` or the rung of the shutdown ladder.
    pub stopped_by: Option<&'static str>,
    scratch: Scratch,
}

impl Machine {
    /// Waits (by poll) for QEMU to connect its serial line; `Stop::Eof` if QEMU exits first.
    pub fn accept(&mut self, timeout: Duration) -> Result<UnixStream, Stop> {
        let listener = self.listener.as_ref().expect("the serial socket is open until close_serial");
        let vm = &mut self.vm;
        serial::accept(listener, timeout, &mut || vm.try_wait().is_none())
    }

    /// Stops listening and removes the serial socket: a kept VM's `attach` binds it anew.
    pub fn close_serial(&mut self) {
        self.listener = None;
        let _ = std::fs::remove_file(&self.spec.serial_sock);
    }

    /// The shutdown ladder from QMP on (see `Qemu::stop`); the first way QEMU ended is kept.
    pub fn stop(&mut self, powerdown_wait: Duration) -> &'static str {
        let rung = self.vm.stop(powerdown_wait);
        self.stopped_by.get_or_insert(rung);
        rung
    }

    /// Leaves QEMU running after the harness exits, with its disk and QMP socket (`--keep`).
    pub fn keep(self) -> u32 {
        let Machine { vm, mut scratch, .. } = self;
        scratch.kept = true;
        vm.detach()
    }
}

/// The run's scratch files: the disk, the sockets and a /tmp socket directory.
#[derive(Default)]
struct Scratch {
    files: Vec<Utf8PathBuf>,
    temp_dir: Option<Utf8PathBuf>,
    kept: bool,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        if let Some(d) = &self.temp_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
