//! Which QEMU accelerator can really run a guest here: a probe that boots a kernel.
//!
//! `/dev/kvm` being present and openable proves nothing: on nested hosts QEMU may abort at
//! once (MSR errors) or run the firmware and then hang in the guest forever (serial-driver
//! notes §9). So the probe boots the fixture's Debian kernel with `console=ttyS0
//! earlyprintk=serial` and waits for its first line, `Linux version …`. A working KVM host
//! prints it in well under a second.
//!
//! Booting the compressed bzImage under TCG spends ~5 s in the decompressor before the first
//! line. The probe therefore boots the *uncompressed* kernel (extracted once from the bzImage
//! and cached) through its PVH entry point, which QEMU supports for ELF kernels: `Linux
//! version` then arrives after ~0.4 s under TCG. If extraction is impossible (unknown
//! compression, no decompressor) it falls back to the bzImage with a longer deadline.

use anyhow::{bail, Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use xshell::cmd;

use crate::process::{self, Drained, KillOnDrop};
use crate::project;

/// How long a kernel gets to print its first line under KVM. A working KVM prints it after
/// ~0.1-0.3 s; the hang seen on nested hosts never ends, so this bounds doctor's runtime.
const KVM_DEADLINE: Duration = Duration::from_millis(1200);
/// Under TCG the uncompressed kernel prints after ~0.4 s idle, ~1-3 s on a busy 2-core host:
/// generous, so load never reads as "TCG broken" (it only delays a failing verdict).
const TCG_DEADLINE: Duration = Duration::from_secs(10);
/// Booting the bzImage under TCG needs ~5 s of decompression first.
const TCG_BZIMAGE_DEADLINE: Duration = Duration::from_secs(20);

const FIRST_LINE: &[u8] = b"Linux version";

/// The accelerator QEMU runs a guest with (`-accel kvm|tcg`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

/// The `--accel` flag of vm-test and bench: an accelerator, or `auto` (probe KVM by booting a
/// kernel, fall back to TCG).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelChoice {
    #[default]
    Auto,
    Kvm,
    Tcg,
}

impl AccelChoice {
    /// The accelerator asked for; `None` for `auto`.
    pub fn fixed(self) -> Option<Accel> {
        match self {
            AccelChoice::Auto => None,
            AccelChoice::Kvm => Some(Accel::Kvm),
            AccelChoice::Tcg => Some(Accel::Tcg),
        }
    }
}

impl std::fmt::Display for AccelChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.fixed().map_or("auto", Accel::name))
    }
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Accel {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            _ => bail!("unknown accelerator {s:?} (expected kvm or tcg)"),
        }
    }
}

/// The outcome of booting a kernel under one accelerator.
#[derive(Clone, Debug)]
pub struct Probe {
    pub outcome: Outcome,
    /// Why usable or not, one line, e.g. "kernel printed `Linux version` after 0.38s".
    pub detail: String,
}

/// What a probe found; `doctor` picks its fix by this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The kernel printed its first line under this accelerator.
    Booted,
    /// `/dev/kvm` does not exist (no KVM module loaded, or virtualization is off / not nested).
    NoKvmDevice,
    /// `/dev/kvm` exists but this user may not open it read-write.
    KvmDenied,
    /// Anything else: no kernel to boot, QEMU failed, the guest hung (the detail says which).
    Failed,
}

impl Probe {
    pub fn usable(&self) -> bool {
        self.outcome == Outcome::Booted
    }
}

/// Probes KVM and falls back to TCG; the string says why, for logs and metadata.
pub fn choose_auto() -> (Accel, String) {
    let kvm = probe(Accel::Kvm);
    if kvm.usable() {
        (Accel::Kvm, format!("KVM probe booted a kernel: {}", kvm.detail))
    } else {
        (Accel::Tcg, format!("KVM unusable here: {}; TCG will be used, boots ~5-10x slower", kvm.detail))
    }
}

/// Boots the probe kernel under `accel` and waits (bounded) for its first console line.
/// Never leaves QEMU running: it is killed on every path, and on our death (PDEATHSIG).
pub fn probe(accel: Accel) -> Probe {
    if accel == Accel::Kvm {
        if let Err((outcome, detail)) = kvm_device_usable() {
            return Probe { outcome, detail };
        }
    }
    match run_probe(accel) {
        Ok((true, detail)) => Probe { outcome: Outcome::Booted, detail },
        Ok((false, detail)) => Probe { outcome: Outcome::Failed, detail },
        Err(err) => Probe { outcome: Outcome::Failed, detail: format!("{err:#}") },
    }
}

fn run_probe(accel: Accel) -> Result<(bool, String)> {
    let qemu = crate::vm::qemu::locate()?;
    let kernel = probe_kernel()?;
    let deadline = match (accel, kernel.uncompressed) {
        (Accel::Kvm, _) => KVM_DEADLINE,
        (Accel::Tcg, true) => TCG_DEADLINE,
        (Accel::Tcg, false) => TCG_BZIMAGE_DEADLINE,
    };
    let sh = process::shell()?;
    let (base, kernel_path) = (crate::vm::qemu::base_args(accel), &kernel.path);
    let cmd = cmd!(sh, "{qemu} {base...} -m 256 -kernel {kernel_path}").args([
        "-append",
        "console=ttyS0 earlyprintk=serial panic=-1",
        "-serial",
        "stdio",
    ]);
    let started = Instant::now();
    let child = process::spawn_piped_dying_with_us(cmd).with_context(|| format!("starting {qemu}"))?;
    let seen = watch(child, deadline)?;
    let took = started.elapsed().as_secs_f64();
    let what = if kernel.uncompressed { "kernel" } else { "kernel (bzImage)" };
    Ok(match seen {
        Seen::FirstLine => (true, format!("{what} printed `Linux version` after {took:.2}s")),
        Seen::Exited { status, stderr } => {
            (false, format!("QEMU exited ({status}) before the kernel printed a line{}", stderr_hint(&stderr)))
        }
        Seen::Silent { serial_bytes, stderr } => (
            false,
            if serial_bytes == 0 {
                format!(
                    "QEMU ran but the {what} printed nothing on the serial console in {:.1}s (the guest hangs){}",
                    deadline.as_secs_f64(),
                    stderr_hint(&stderr)
                )
            } else {
                format!(
                    "the {what} printed {serial_bytes} bytes but no `Linux version` line in {:.1}s{}",
                    deadline.as_secs_f64(),
                    stderr_hint(&stderr)
                )
            },
        ),
    })
}

/// `/dev/kvm` must exist and open read-write; otherwise QEMU cannot even try.
fn kvm_device_usable() -> Result<(), (Outcome, String)> {
    match std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err((
            Outcome::NoKvmDevice,
            "/dev/kvm does not exist (no KVM module loaded, or virtualization is off / not nested)".into(),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            use std::os::unix::fs::MetadataExt;
            let how = std::fs::metadata("/dev/kvm")
                .map(|m| format!("mode {:04o}, owner uid {} gid {}", m.mode() & 0o7777, m.uid(), m.gid()))
                .unwrap_or_default();
            Err((Outcome::KvmDenied, format!("no permission to open /dev/kvm ({how})")))
        }
        Err(e) => Err((Outcome::Failed, format!("cannot open /dev/kvm: {e}"))),
    }
}

/// The command that gives the current user access to `/dev/kvm`.
pub fn kvm_access_fix() -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata("/dev/kvm") else { return "sudo modprobe kvm_intel   # or kvm_amd".into() };
    // SAFETY: getgrgid returns a pointer to static storage or null; read at once.
    let group = unsafe {
        let g = libc::getgrgid(meta.gid());
        (!g.is_null()).then(|| std::ffi::CStr::from_ptr((*g).gr_name).to_string_lossy().into_owned())
    };
    match group {
        Some(g) if meta.mode() & 0o060 == 0o060 && g != "root" => {
            format!("sudo usermod -aG {g} \"$(id -un)\"   (then log in again)")
        }
        _ => "sudo groupadd -f kvm && sudo chgrp kvm /dev/kvm && sudo chmod 0660 /dev/kvm && sudo usermod -aG kvm \"$(id -un)\"   (then log in again; a udev rule makes it permanent)".into(),
    }
}

/// QEMU's stderr condensed to one line for the verdict ("" when it said nothing).
fn stderr_hint(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    // The last line is usually the fatal one; the first often names the host's missing feature.
    let mut picked = vec![lines[0]];
    if lines.len() > 1 {
        picked.push(lines[lines.len() - 1]);
    }
    let joined = picked.join(" … ").replace("qemu-system-x86_64: ", "");
    let short: String = joined.chars().take(200).collect();
    format!("; QEMU said: {short}")
}

enum Seen {
    FirstLine,
    Exited { status: String, stderr: Vec<u8> },
    Silent { serial_bytes: usize, stderr: Vec<u8> },
}

/// Waits with `poll()` (no busy loop) for the first kernel line, QEMU's exit, or the deadline.
fn watch(mut child: KillOnDrop, deadline: Duration) -> Result<Seen> {
    let mut stdout = child.0.stdout.take().context("qemu stdout")?;
    let mut stderr_pipe = child.0.stderr.take().context("qemu stderr")?;
    let (mut serial, mut stderr) = (Vec::new(), Vec::new());
    let drained = process::read_both(
        &mut stdout,
        &mut stderr_pipe,
        deadline,
        |bytes| {
            // Only the tail can complete a match split across reads.
            let from = serial.len().saturating_sub(FIRST_LINE.len());
            serial.extend_from_slice(bytes);
            serial[from..].windows(FIRST_LINE.len()).any(|w| w == FIRST_LINE)
        },
        |bytes| {
            if stderr.len() < 64 * 1024 {
                stderr.extend_from_slice(bytes);
            }
        },
    )
    .context("poll on qemu output")?;
    match drained {
        Drained::Stopped => Ok(Seen::FirstLine),
        Drained::TimedOut => Ok(Seen::Silent { serial_bytes: serial.len(), stderr }),
        Drained::Closed => {
            // Both pipes closed: QEMU is gone (or going); reap it for its status.
            let status = child.0.wait().context("waiting for qemu")?;
            Ok(Seen::Exited { status: describe_status(status), stderr })
        }
    }
}

fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}{}", if s == libc::SIGABRT { ", an abort" } else { "" }),
        _ => status.to_string(),
    }
}

/// The kernel the probes boot.
#[derive(Clone, Debug)]
pub struct ProbeKernel {
    pub path: Utf8PathBuf,
    /// An ELF vmlinux booted via PVH (fast) rather than the bzImage.
    pub uncompressed: bool,
}

/// The probe kernel, resolved once per process (both probes run concurrently in doctor).
pub fn probe_kernel() -> Result<ProbeKernel> {
    static KERNEL: OnceLock<Result<ProbeKernel, String>> = OnceLock::new();
    KERNEL
        .get_or_init(|| resolve_probe_kernel().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!("no kernel to probe with: {e}"))
}

fn resolve_probe_kernel() -> Result<ProbeKernel> {
    let bzimage = crate::debian::kernel::ensure(&process::shell()?)?.vmlinuz;
    match uncompressed_kernel(&bzimage) {
        Ok(path) => Ok(ProbeKernel { path, uncompressed: true }),
        Err(_) => Ok(ProbeKernel { path: bzimage, uncompressed: false }),
    }
}

/// The ELF kernel inside `bzimage`, extracted once into `target/accel/` and reused.
fn uncompressed_kernel(bzimage: &Utf8Path) -> Result<Utf8PathBuf> {
    let meta = fs_err::metadata(bzimage)?;
    let mtime = meta.modified()?.duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let name = bzimage.file_name().unwrap_or("vmlinuz");
    let dir = project::target_dir().join("accel");
    let out = dir.join(format!("{name}-{}-{mtime}.vmlinux", meta.len()));
    if out.is_file() {
        return Ok(out);
    }
    fs_err::create_dir_all(&dir)?;
    let image = fs_err::read(bzimage)?;
    let (payload, tool) = compressed_payload(&image)?;
    let tmp_out = dir.join(format!(".vmlinux-{}", std::process::id()));
    let result = (|| -> Result<()> {
        let sh = process::shell()?;
        let (program, args) = (tool[0], &tool[1..]);
        // gzip exits 2 for "trailing garbage ignored"; the ELF magic is the real test.
        let decompressed = cmd!(sh, "{program} {args...}")
            .stdin(payload)
            .ignore_stderr()
            .ignore_status()
            .output()
            .with_context(|| format!("running {program}"))?;
        if decompressed.stdout.get(..4) != Some(b"\x7fELF") {
            bail!("{program} did not produce an ELF kernel ({})", decompressed.status);
        }
        fs_err::write(&tmp_out, &decompressed.stdout)?;
        fs_err::rename(&tmp_out, &out)?;
        // One kernel at a time: drop extractions of earlier kernels (63 MiB each).
        for e in std::fs::read_dir(&dir)?.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "vmlinux") && p != out.as_std_path() {
                let _ = std::fs::remove_file(p);
            }
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&tmp_out);
    result.map(|()| out)
}

/// The compressed kernel inside a bzImage (boot protocol ≥ 2.08 header fields) and the
/// command that decompresses it to stdout.
fn compressed_payload(image: &[u8]) -> Result<(&[u8], &'static [&'static str])> {
    let u32_at = |off: usize| -> Result<usize> {
        let b = image.get(off..off + 4).context("bzImage header truncated")?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    if image.get(0x202..0x206) != Some(b"HdrS") {
        bail!("not a bzImage (no HdrS header)");
    }
    let version = u16::from_le_bytes([image[0x206], image[0x207]]);
    if version < 0x0208 {
        bail!("boot protocol {version:#x} has no payload fields");
    }
    let setup_sects = match image[0x1f1] {
        0 => 4,
        n => n as usize,
    };
    let start = (setup_sects + 1) * 512 + u32_at(0x248)?;
    let payload = image.get(start..start + u32_at(0x24c)?).context("payload outside the file")?;
    let tool: &'static [&'static str] = if payload.starts_with(b"\xfd7zXZ\x00") {
        // The payload ends with a 4-byte size after the xz stream; --single-stream ignores it.
        &["xz", "-dc", "--single-stream"]
    } else if payload.starts_with(b"\x1f\x8b") {
        &["gzip", "-dc"]
    } else if payload.starts_with(b"\x28\xb5\x2f\xfd") {
        &["zstd", "-dcq"]
    } else {
        bail!("unsupported kernel compression");
    };
    Ok((payload, tool))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accel_names_round_trip() {
        for a in [Accel::Kvm, Accel::Tcg] {
            assert_eq!(a.name().parse::<Accel>().unwrap(), a);
        }
        assert_eq!("KVM".parse::<Accel>().unwrap(), Accel::Kvm);
        assert!("hvf".parse::<Accel>().is_err());
        // The flag's words are vm-test's `--accel` values (bench passes them on).
        for (choice, word, fixed) in [
            (AccelChoice::Auto, "auto", None),
            (AccelChoice::Kvm, "kvm", Some(Accel::Kvm)),
            (AccelChoice::Tcg, "tcg", Some(Accel::Tcg)),
        ] {
            assert_eq!((choice.to_string().as_str(), choice.fixed()), (word, fixed));
            assert_eq!(<AccelChoice as clap::ValueEnum>::from_str(word, false), Ok(choice));
        }
        assert_eq!(serde_json::to_value(Accel::Kvm).unwrap(), "kvm");
    }

    #[test]
    fn stderr_hint_keeps_first_and_last_lines() {
        let s =
            b"qemu-system-x86_64: warning: host doesn't support pni\nx\nqemu-system-x86_64: error: failed to set MSR\n";
        assert_eq!(stderr_hint(s), "; QEMU said: warning: host doesn't support pni … error: failed to set MSR");
        assert_eq!(stderr_hint(b"\n"), "");
    }

    #[test]
    fn rejects_non_bzimage() {
        assert!(compressed_payload(&[0u8; 1024]).is_err());
    }
}
