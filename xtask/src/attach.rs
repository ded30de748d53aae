//! `cargo xtask attach [RUN_DIR]` — this terminal on the serial console of a VM that
//! `vm-test --keep` left running; `--stop` powers it off through QMP.
//!
//! A kept QEMU reconnects its serial chardev (`reconnect=1`) to whoever listens on the run's
//! serial socket, so attaching is: listen there, accept QEMU, put the terminal in raw mode and
//! copy both ways with `poll()` until Ctrl-] (the guest keeps running). No socat. The bytes the
//! guest sends while attached are also teed to `attach-<UTC>.serial.log` in the run directory.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde_json::Value;

use crate::exit::{self, Exit};
use crate::{project, vm};

/// Ctrl-]: the byte that ends an attach session, as in telnet and `virsh console`.
const DETACH: u8 = 0x1d;
/// A kept QEMU retries its serial connection every second.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);
/// `--stop`: time the guest gets to power off after the ACPI button before QMP `quit`.
const POWERDOWN_WAIT: Duration = Duration::from_secs(10);

/// Attach this terminal to the serial console of a VM kept with `vm-test --keep`
#[derive(clap::Args)]
pub struct Args {
    /// Run directory of the kept VM [default: the newest one whose QEMU still runs]
    #[arg(value_name = "RUN_DIR")]
    run_dir: Option<Utf8PathBuf>,
    /// Power the kept VM off instead (QMP system_powerdown, then quit), and remove its disk
    #[arg(long)]
    stop: bool,
}

/// What the run directory says about its kept QEMU.
struct Kept {
    dir: Utf8PathBuf,
    pid: i32,
    serial_sock: Utf8PathBuf,
    qmp_sock: Utf8PathBuf,
}

pub fn run(args: Args) -> Result<u8> {
    let kept = match &args.run_dir {
        Some(dir) => kept_vm(dir)?,
        None => newest_kept_vm()?,
    };
    if args.stop {
        return stop(&kept);
    }
    // SAFETY: isatty only inspects the descriptor.
    if unsafe { libc::isatty(libc::STDIN_FILENO) } != 1 {
        return Err(exit::usage(
            "attach needs a terminal on stdin (raw keystrokes go to the guest), and stdin is not one \
             (a pipe, a file, or CI); from a script, talk to the guest with `vm-test --run 'CMD'` or stop \
             the VM with `cargo xtask attach --stop RUN_DIR`",
        ));
    }
    attach(&kept)
}

/// `vm-test --interact-on-failure`: this terminal on the failed run's guest, then (`stop`) the
/// VM powered off.
pub fn interact(dir: &Utf8Path, stop_after: bool) -> Result<()> {
    let kept = kept_vm(dir)?;
    attach(&kept)?;
    if stop_after {
        stop(&kept)?;
    }
    Ok(())
}

fn kept_vm(dir: &Utf8Path) -> Result<Kept> {
    let meta_path = dir.join("metadata.json");
    let text = fs_err::read_to_string(&meta_path)
        .map_err(|e| exit::usage(format!("{dir} is not a vm-test run directory: {e}")))?;
    let meta: Value =
        serde_json::from_str(&text).map_err(|e| exit::infra(format!("{meta_path} is not valid JSON: {e}")))?;
    let qemu = &meta["qemu"];
    if qemu["stopped_by"] != "kept" {
        return Err(exit::usage(format!(
            "the VM of {dir} was not kept (QEMU ended: {}); start one with `cargo xtask vm-test --keep`",
            qemu["stopped_by"].as_str().unwrap_or("unknown")
        )));
    }
    let pid = qemu["pid"].as_i64().context("metadata.json has no qemu.pid")? as i32;
    if !alive(pid) {
        return Err(exit::infra(format!(
            "the kept VM of {dir} is gone (QEMU pid {pid} no longer runs); start one with `cargo xtask vm-test --keep`"
        )));
    }
    let socket = |key: &str, default: &str| -> Utf8PathBuf {
        qemu[key].as_str().map(Utf8PathBuf::from).unwrap_or_else(|| dir.join(default))
    };
    Ok(Kept {
        dir: dir.to_path_buf(),
        pid,
        serial_sock: socket("serial_socket", "serial.sock"),
        qmp_sock: socket("qmp_socket", "qmp.sock"),
    })
}

/// The newest run directory whose kept QEMU still runs.
fn newest_kept_vm() -> Result<Kept> {
    let runs = project::vm_runs_dir();
    let mut dirs: Vec<Utf8PathBuf> = match fs_err::read_dir(&runs) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter_map(|e| Utf8PathBuf::from_path_buf(e.path()).ok())
            .filter(|p| p.is_dir())
            .collect(),
        Err(_) => Vec::new(),
    };
    dirs.sort();
    dirs.iter()
        .rev()
        .find_map(|d| kept_vm(d).ok())
        .ok_or_else(|| exit::usage(format!("no running VM kept by `vm-test --keep` under {runs}; start one first")))
}

/// Running, not a zombie (an orphaned QEMU's parent may never reap it; kill(pid, 0) would
/// still answer for the corpse).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

fn attach(kept: &Kept) -> Result<u8> {
    let _ = std::fs::remove_file(&kept.serial_sock); // nobody listens there while the VM is kept
    let listener = UnixListener::bind(&kept.serial_sock)
        .map_err(|e| exit::infra(format!("cannot listen on {}: {e}", kept.serial_sock)))?;
    let _socket_file = RemoveOnDrop(kept.serial_sock.clone());
    let _interrupt = crate::interrupt::Guard::install();
    eprintln!("attach: waiting for QEMU (pid {}) to connect its serial line…", kept.pid);
    let connected = vm::serial::poll_fd(listener.as_raw_fd(), CONNECT_WITHIN).context("poll")?;
    if crate::interrupt::interrupted() {
        return Err(Exit { code: exit::INTERRUPTED, message: "attach: interrupted".into() }.into());
    }
    if !connected {
        return Err(exit::infra(format!(
            "QEMU (pid {}) did not connect to {} within {}s; is it the VM of {}?",
            kept.pid,
            kept.serial_sock,
            CONNECT_WITHIN.as_secs(),
            kept.dir
        )));
    }
    let (mut serial, _) = listener.accept().context("accepting QEMU's serial connection")?;
    let log_path = kept.dir.join(format!("attach-{}.serial.log", project::utc_stamp(jiff::Timestamp::now())));
    let mut log = fs_err::File::create(&log_path)?;
    eprintln!(
        "attach: on the serial console of {} — Ctrl-] detaches (the VM keeps running); \
         `cargo xtask attach --stop {}` powers it off\r",
        kept.dir, kept.dir
    );
    let raw = RawTerminal::enter(libc::STDIN_FILENO)?;
    serial.write_all(b"\r")?; // a fresh prompt, so the user sees where they are
    let ended = copy_until_detach(&mut serial, &mut log);
    drop(raw);
    eprintln!();
    match ended? {
        Ended::Detached => eprintln!("attach: detached; the VM keeps running (pid {})", kept.pid),
        Ended::GuestGone => eprintln!("attach: the serial line closed: QEMU ended"),
        Ended::Interrupted => {
            return Err(Exit { code: exit::INTERRUPTED, message: "attach: interrupted".into() }.into())
        }
    }
    eprintln!("attach: this session's serial bytes are in {log_path}");
    Ok(exit::OK)
}

enum Ended {
    Detached,
    GuestGone,
    Interrupted,
}

/// Terminal → guest and guest → terminal (and the log), waiting with poll().
fn copy_until_detach(serial: &mut std::os::unix::net::UnixStream, log: &mut fs_err::File) -> Result<Ended> {
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let mut buf = [0u8; 4096];
    loop {
        let mut fds = [
            libc::pollfd { fd: libc::STDIN_FILENO, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: serial.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: two valid pollfds; -1 waits until one is ready or a signal arrives.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if crate::interrupt::interrupted() {
            return Ok(Ended::Interrupted);
        }
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("poll");
        }
        if fds[1].revents != 0 {
            let n = serial.read(&mut buf)?;
            if n == 0 {
                return Ok(Ended::GuestGone);
            }
            log.write_all(&buf[..n])?;
            stdout.write_all(&buf[..n])?;
            stdout.flush()?;
        }
        if fds[0].revents != 0 {
            let n = stdin.read(&mut buf)?;
            if n == 0 {
                return Ok(Ended::Detached); // the terminal went away
            }
            match buf[..n].iter().position(|&b| b == DETACH) {
                Some(at) => {
                    serial.write_all(&buf[..at])?;
                    return Ok(Ended::Detached);
                }
                None => serial.write_all(&buf[..n])?,
            }
        }
    }
}

/// The terminal in raw mode (no echo, no line editing, no signals from keys: Ctrl-C goes to
/// the guest) until dropped.
struct RawTerminal {
    fd: RawFd,
    saved: libc::termios,
}

impl RawTerminal {
    fn enter(fd: RawFd) -> Result<Self> {
        // SAFETY: tcgetattr/tcsetattr on a descriptor that isatty() accepted; termios is plain data.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut saved) != 0 {
                return Err(std::io::Error::last_os_error()).context("reading the terminal's settings");
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(fd, libc::TCSANOW, &raw) != 0 {
                return Err(std::io::Error::last_os_error()).context("switching the terminal to raw mode");
            }
            Ok(RawTerminal { fd, saved })
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores exactly what tcgetattr returned.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

struct RemoveOnDrop(Utf8PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `--stop`: the ACPI power button, then `quit` if the guest does not power off in time.
fn stop(kept: &Kept) -> Result<u8> {
    let mut qmp = vm::qemu::Qmp::connect(&kept.qmp_sock, Duration::from_secs(3))
        .map_err(|e| exit::infra(format!("cannot reach QMP of the kept VM: {e:#}")))?;
    qmp.execute("system_powerdown", None).map_err(|e| exit::infra(format!("{e:#}")))?;
    let how = if qmp.wait_closed(POWERDOWN_WAIT) {
        "the guest powered off (ACPI power button)"
    } else {
        // The same connection: QEMU's QMP socket serves one client at a time.
        let _ = qmp.execute("quit", None); // QEMU may close the connection before it answers
        if !qmp.wait_closed(Duration::from_secs(10)) {
            // SAFETY: plain kill(2) of the pid the run recorded, checked alive above.
            unsafe { libc::kill(kept.pid, libc::SIGKILL) };
        }
        "the guest ignored the power button; QEMU was told to quit"
    };
    let disk = kept.dir.join("disk.qcow2");
    let _ = std::fs::remove_file(&disk);
    crate::ui::print(&format!("attach --stop: {how}; QEMU pid {} ended; {disk} removed\n", kept.pid))?;
    Ok(exit::OK)
}
