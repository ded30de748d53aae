//! Boot phases and the catalogue of known failure signatures, read from clean serial text.
//! One implementation, used live by `vm-test` and offline by `analyze`.
//!
//! The detector is fed CLEAN lines (from `strip_escapes.rs`), one at a time, and is cheap enough to see
//! every line of a tens-of-MB flood: one pre-compiled `RegexSet` pass decides whether a line
//! can matter at all, and the individual regexes run only on the rare lines that hit. Only
//! the first `MATCH_PREFIX` bytes of a line are examined, so one enormous line costs no more
//! than a normal one.
//!
//! Lines are first normalised (`normalise.rs`): journald and CI prefixes come off, OCR
//! confusions of systemd's status words are repaired, and each line says where it came
//! from (serial, journal or screen text), which every finding carries.
//!
//! Phases only move forward. Lines that look like earlier phases once a later phase was seen
//! (kernel-timestamped `dmesg` output typed at a shell, the broadcast `pre-nixos: ...` lines,
//! echoed commands) never move the phase back; text that follows a shell prompt on the same
//! line is an echoed command and is not matched, unless it looks like a console broadcast.
//!
//! Size: most of this file is data — the catalogue (each signature with its pattern, cause
//! and fix) and the phase markers — which reads best as one table; normalising foreign text
//! lives in `diagnose/normalise.rs`.

mod normalise;

pub use normalise::Normaliser;
use normalise::Voice;
use regex::{Regex, RegexSet};
use serde::{Deserialize, Serialize};
use std::sync::LazyLock;

/// Boot phases in the order a healthy run passes them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    #[default]
    Qemu,
    Bootloader,
    Kernel,
    Init,
    Login,
    Shell,
    Root,
    Checks,
    Poweroff,
}

impl Phase {
    pub const ALL: [Phase; 9] = [
        Phase::Qemu,
        Phase::Bootloader,
        Phase::Kernel,
        Phase::Init,
        Phase::Login,
        Phase::Shell,
        Phase::Root,
        Phase::Checks,
        Phase::Poweroff,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Qemu => "qemu",
            Phase::Bootloader => "bootloader",
            Phase::Kernel => "kernel",
            Phase::Init => "init",
            Phase::Login => "login",
            Phase::Shell => "shell",
            Phase::Root => "root",
            Phase::Checks => "checks",
            Phase::Poweroff => "poweroff",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a signature weighs on a verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The image (or the run) failed: `analyze` exits 1.
    Failure,
    /// Worth reading, not by itself a failure.
    Warning,
    /// Expected progress worth recording (autologin as a user, clean power-off).
    Info,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Failure => "failure",
            Kind::Warning => "warning",
            Kind::Info => "info",
        }
    }
}

/// A known failure (or success) signature: what it means and what to do.
#[derive(Debug)]
pub struct Signature {
    /// Stable id, used in metadata.json, the ledger and `analyze --json`.
    pub id: &'static str,
    /// The phase this signature belongs to.
    pub phase: Phase,
    /// Whether it means failure.
    pub kind: Kind,
    /// Likely cause, one sentence.
    pub cause: &'static str,
    /// The fix or next step, one sentence (commands in backticks).
    pub fix: &'static str,
    /// Where it comes from: the serial text (and which text), or the harness only.
    pub seen_by: &'static str,
}

/// Where the text of a finding came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Console text as the guest sent it (a serial log, a cloud provider's serial view).
    #[default]
    Serial,
    /// `journalctl` output (journald's `Mon DD HH:MM:SS host ident[pid]: ` prefixes).
    Journal,
    /// Text read off a screen: OCR of a screenshot or photo.
    Screen,
    /// Not from any text: the harness found it (vm-test's preflight, deadlines).
    Harness,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Serial => "serial",
            Source::Journal => "journal",
            Source::Screen => "screen",
            Source::Harness => "harness",
        }
    }
}

/// A signature found at a line of clean serial text.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Finding {
    pub id: &'static str,
    /// 1-based line number in the clean text (`serial.txt`), not in the raw `serial.log`: a lone
    /// CR (a redraw) starts a clean line but is no `\n` in the raw file. 0 when not tied to a line.
    pub line: usize,
    /// The line (or evidence) that triggered it, as it was written (before normalising).
    pub text: String,
    /// Whether that line was serial, journal or screen text.
    pub source: Source,
    /// What the line names: the unit, device, task, activation snippet, interface, image or
    /// signal the finding is about (`Pre-NixOS setup`, `/dev/disk/by-label/nixos`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

impl Finding {
    /// A finding from serial text, with `text` trimmed and capped at `MAX_FINDING_TEXT` bytes.
    pub fn new(id: &'static str, line: usize, text: &str) -> Finding {
        Finding {
            id,
            line,
            text: truncate(text.trim(), MAX_FINDING_TEXT).to_string(),
            source: Source::Serial,
            subject: None,
        }
    }

    /// The same finding, from `source`.
    pub fn with_source(mut self, source: Source) -> Finding {
        self.source = source;
        self
    }

    pub fn signature(&self) -> Option<&'static Signature> {
        signature(self.id)
    }

    pub fn is_failure(&self) -> bool {
        self.signature().is_some_and(|s| s.kind == Kind::Failure)
    }
}

/// When the detector first saw a phase.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TimelineEntry {
    pub phase: Phase,
    pub line: usize,
    /// Seconds from the kernel timestamp (`[    2.828042]`) nearest to that line, if any.
    pub offset_secs: Option<f64>,
}

/// Only this many bytes of a line are matched (a flood line can be megabytes long).
pub const MATCH_PREFIX: usize = 4096;
/// Finding texts are capped at this many bytes.
pub const MAX_FINDING_TEXT: usize = 400;

const SERIAL: &str = "serial text";
const HARNESS: &str = "harness only";

macro_rules! sig {
    ($id:literal, $phase:ident, $kind:ident, $seen:expr, $cause:literal, $fix:literal) => {
        Signature { id: $id, phase: Phase::$phase, kind: Kind::$kind, seen_by: $seen, cause: $cause, fix: $fix }
    };
}

static CATALOGUE: [Signature; 50] = [
    sig!("qemu-start-failed", Qemu, Failure, "QEMU's stderr (`qemu-system-x86_64: ...` before any guest output) or the harness",
        "QEMU refused to start: a bad option, a missing or locked disk image (`Failed to get \"write\" lock` = another QEMU uses it), a taken host-forwarding port, or an unusable accelerator.",
        "Read qemu.stderr.log; make sure no other QEMU uses the disk or port (`ps -ef | grep qemu`), give each VM its own disk and port, and try `--accel tcg`."),
    sig!("qemu-exited", Qemu, Failure, "the harness (QEMU's process exit status)",
        "QEMU exited (or was killed) before the run finished.",
        "Read qemu.stderr.log and the serial tail; a guest triple fault or panic with `-no-reboot` also ends QEMU."),
    sig!("not-bootable", Bootloader, Failure, "preflight: the ISO's El Torito boot record and catalogue, read before QEMU starts",
        "The ISO has no boot entry a BIOS can use (no El Torito boot record, a UEFI-only boot catalogue, or a boot image past the end of a truncated file): the firmware finds nothing to boot and the serial line stays empty.",
        "Build the ISO with a BIOS boot image (`xorriso -as mkisofs -b isolinux/isolinux.bin -c isolinux/boot.cat -no-emul-boot …`, as NixOS's isoImage does) or rebuild a truncated one; `xorriso -indev X.iso -report_el_torito plain` lists its boot entries."),
    sig!("no-serial-output", Bootloader, Failure, "harness: not one byte on the serial line",
        "Not one byte arrived on the serial line: the firmware found nothing to boot (SeaBIOS says so on a screen, not on the serial port), or the bootloader does not write to the serial port.",
        "Let preflight read the ISO (drop `--skip-preflight`; `xorriso -indev X.iso -report_el_torito plain` lists its boot entries) and give the bootloader a serial console (`SERIAL 0 115200` in isolinux.cfg; `serial --unit=0 --speed=115200` and `terminal_output serial console` in GRUB)."),
    sig!("bootloader-stuck", Bootloader, Failure, SERIAL,
        "The bootloader printed its banner or menu but never loaded a kernel: the menu waits for input (no TIMEOUT/DEFAULT) or the boot medium is unreadable.",
        "Check isolinux.cfg / grub.cfg for `TIMEOUT` and `DEFAULT`, and that the ISO's kernel path exists."),
    sig!("serial-silent-after-bootloader", Bootloader, Failure, SERIAL,
        "The bootloader loaded the kernel and initrd (`Loading /boot/initrd...ok`) and then the serial line went silent: the kernel console is not on the serial port (APPEND lacks `console=ttyS0,115200`), or a NixOS kernel with `loglevel=4` and `console=tty0` last is still booting (silent for 90-270 s under TCG).",
        "Put `console=ttyS0,115200n8` LAST in `boot.kernelParams` (it becomes /dev/console); meanwhile wait longer before concluding a hang, and take a VGA screendump (`screendump` via QMP) to see tty0."),
    sig!("serial-console-missing", Bootloader, Failure, "preflight (the default entry's kernel command line in isolinux.cfg / grub.cfg) after a serial rescue",
        "The image's default boot entry has no `console=ttyS0`: booted as built, the serial line goes silent after the bootloader. vm-test booted it anyway by appending `console=ttyS0,115200n8` at the menu (serial rescue), so the checks ran, but the image itself is not fixed.",
        "Set `boot.kernelParams = [ \"console=tty0\" \"console=ttyS0,115200n8\" ];` (ttyS0 last). `--allow-rescue` makes a rescued run a warning; `--no-rescue` stops before booting."),
    sig!("console-not-last", Kernel, Failure, "the kernel command line (`Kernel command line: ... console=ttyS0 console=tty0`)",
        "`console=ttyS0` is not the last `console=` argument, so /dev/console is not the serial port: stage 1/2, systemd status and console broadcasts go to tty0 and the serial line looks hung.",
        "Order the kernel parameters `console=tty0 console=ttyS0,115200n8` (ttyS0 last)."),
    sig!("kernel-stalled", Kernel, Failure, SERIAL,
        "Kernel messages stopped before init printed anything: the kernel is stuck probing hardware or waiting for its root device, TCG is very slow, or init runs but its output goes to another console (`console=ttyS0` not last, with `loglevel=4` hiding the command line).",
        "Read the last kernel lines; check the initrd has the CD-ROM/virtio drivers and that `console=ttyS0,115200n8` is the last console; retry with KVM or a longer deadline."),
    sig!("kernel-panic", Kernel, Failure, "`Kernel panic - not syncing`",
        "The kernel panicked (often `VFS: Unable to mount root fs`, a missing init, or an initrd without the needed drivers).",
        "Read the lines just before the panic for the reason; check the initrd contents and the `init=`/`root=` parameters."),
    sig!("oom-killer", Kernel, Failure, "`Out of memory: Killed process`",
        "The guest ran out of memory and the kernel killed a process.",
        "Give the VM more memory (`-m 2048`) or shrink what runs at boot."),
    sig!("emergency-mode", Init, Failure, "`You are in emergency mode`, `An error occurred in stage 1 of the boot process`",
        "The boot fell into an emergency or stage-1 failure shell: a required mount or unit failed.",
        "Read the `[FAILED]` lines before it; in the guest run `journalctl -xb` and `systemctl --failed`."),
    sig!("unit-failed", Init, Warning, "`[FAILED] Failed to start X.` (journal: `systemd[1]: Failed to start X.`, `X.service: Failed with result 'exit-code'.`), `Active: failed` in `systemctl status`; the unit is named",
        "A systemd unit failed to start (or to mount, listen, activate swap); the boot may go on without it, so what follows says whether the boot failed.",
        "In the guest run `systemctl status <unit>` and `journalctl -u <unit> -b`."),
    sig!("unit-not-found", Init, Failure, "`Unit X.service not found`",
        "Something started or restarted a unit the image does not have (e.g. `systemd-networkd.service` when networkd is not enabled).",
        "Enable the unit in the NixOS configuration (e.g. `systemd.network.enable = true`) or stop depending on it."),
    sig!("unit-stuck", Init, Failure, "`A start job is running for ... (3min 2s / no limit)` or `Job x/start running (...)` for 2 min or more, `[ TIME ] Timed out waiting for device X.` (or starting, mounting, stopping), `Active: activating (start) since ...; 8min ago`",
        "A unit has been starting (or stopping) for minutes, or its job timed out: a oneshot waiting on something that waits for it (e.g. a blocking `systemctl start sshd` inside a unit sshd is `After=`), a network wait with no timeout, or a device that never appeared (a wrong `/dev/disk/by-label/...` or `by-uuid` in `fileSystems`, a missing driver).",
        "In the guest run `systemctl list-jobs` and `systemctl status <unit>`; use `systemctl --no-block` inside units and give waits a timeout."),
    sig!("nix-download-failed", Init, Warning, "`unable to download 'https://cache.nixos.org/...'`",
        "Something in the guest tried to download from a binary cache without network access; it retries and stalls.",
        "Build everything the guest needs into the image; do not substitute at run time."),
    sig!("floppy-io-error", Kernel, Warning, "`I/O error, dev fd0`",
        "QEMU's default machine has a floppy drive that storage tools probe (and fail on), slowing the boot and confusing storage detection.",
        "Start QEMU with `-nodefaults` and explicit devices (vm-test does)."),
    sig!("login-prompt", Login, Failure, "a `login:` prompt not followed by `(automatic login)`",
        "The serial console asks for a user name: the image does not autologin on ttyS0.",
        "Set `services.getty.autologinUser` (the installer profile sets `nixos`), or log in explicitly."),
    sig!("autologin-not-root", Login, Info, "`nixos login: nixos (automatic login)`",
        "The console logged in automatically as a normal user (the NixOS installer uses `nixos`), not as root; typing `root` at that shell does nothing useful.",
        "Escalate with `sudo -i` (passwordless wheel) and verify `id -u` is 0 before privileged commands."),
    sig!("command-not-found", Shell, Warning, "`-bash: X: command not found`",
        "A command typed at the shell does not exist: a missing package, or text typed into the wrong place (e.g. `root` typed at an autologin shell, or characters eaten by typeahead).",
        "Add the package to the image, or send commands only after the previous one finished."),
    sig!("escalation-failed", Shell, Failure, "`[sudo] password for nixos:`, `Sorry, try again.`, `is not in the sudoers file`, `su: Authentication failure`",
        "`sudo -i` / `su -` did not give a root shell: sudo wants a password or the user is not allowed.",
        "Let wheel use sudo without a password (`security.sudo.wheelNeedsPassword = false`) and put the user in `wheel`."),
    sig!("not-root", Shell, Failure, "`Permission denied` at a user shell, `Interactive authentication required`, `WARNING: Running as a non-root user`",
        "A privileged command ran without root: the shell is still the autologin user (a root check was fooled, e.g. by an echoed marker).",
        "Escalate first and verify by parsing `id -u` output (never a prompt or an echoed marker), then re-run the command."),
    sig!("storage-detection-error", Init, Failure, "`Storage detection encountered an error`, `storage detection failed (exit N)`",
        "pre-nixos could not classify the disks (e.g. a probe of the floppy `fd0` failed), so provisioning fell back to plan-only.",
        "Read `journalctl -u pre-nixos`; run QEMU with `-nodefaults`; make the detector ignore unusable devices."),
    sig!("provisioning-failed", Init, Failure, "`pre-nixos: Provisioning failed`, `STATE=failed`, `pre-nixos: failed: ...`",
        "pre-nixos tried to provision the disk and failed (a missing tool or unit, a bad disko config, LVM errors).",
        "Read `journalctl -u pre-nixos -b` and /var/log/pre-nixos/actions.log for the failing command."),
    sig!("storage-plan-only", Init, Warning, "`provisioning ran in plan-only mode`, `STATE=plan-only`, `pre-nixos: not-blank: ...`",
        "pre-nixos found existing storage (or was told to plan only) and did not apply the disk layout.",
        "Boot with a blank disk (`qemu-img create -f raw disk.img 4G`), or use the force-cleanup option if that is intended."),
    sig!("no-disk", Init, Failure, "`pre-nixos: no-disk: ...`",
        "pre-nixos found no virtio disk to provision.",
        "Attach a blank disk: `-drive file=disk.img,if=virtio,format=raw`."),
    sig!("lan-ipv4-unavailable", Init, Failure, "`LAN IPv4 address unavailable`",
        "The `lan` interface did not get an IPv4 address (not renamed, no carrier, or DHCP not running).",
        "In the guest check `ip addr`, `networkctl status lan` and `journalctl -u systemd-networkd`; make sure the NIC is brought up."),
    sig!("serial-flood", Init, Warning, "the same line repeated thousands of times",
        "The guest floods the serial console with one repeated message, which slows everything reading it.",
        "Find the source of the repeated line (a crash loop, a chatty unit) and quiet it."),
    sig!("powered-off-cleanly", Poweroff, Info, "`reboot: Power down`, `System halted`",
        "The guest powered off by itself at the end of the run.",
        "Nothing to do."),
    sig!("guest-unresponsive", Shell, Failure, HARNESS,
        "The guest stopped answering: a command's end marker never came back within its deadline.",
        "Read the serial tail in the report; the guest may be hung or flooding the console. Retry with a longer deadline or KVM."),
    sig!("phase-timeout", Qemu, Failure, HARNESS,
        "A boot phase did not finish before its deadline (or produced no output for its stall window).",
        "See the phase and the last serial lines in the report; on TCG raise the deadline (`vm-test --boot-timeout`, `--stall`, `--command-timeout`), or use KVM."),
    sig!("check-failed", Checks, Failure, HARNESS,
        "A check run in the root shell did not give the expected result.",
        "See the check's detail and evidence in the report; the command output is in transcript.log."),
    sig!("interrupted", Qemu, Failure, HARNESS,
        "The run was interrupted (Ctrl-C or a signal) before it finished.",
        "Run it again; partial evidence is kept in the run directory."),
    sig!("image-missing", Qemu, Failure, HARNESS,
        "The ISO to boot does not exist or is not readable.",
        "Build it (`cargo xtask build-image` or `cargo xtask fixture`) or pass an existing `--iso` path."),
    sig!("preflight-no-boot-config", Qemu, Warning, HARNESS,
        "No ISOLINUX or GRUB boot entry was found in the ISO, so the kernel command line (and its serial console) could not be checked before booting.",
        "Make sure the image boots with `console=ttyS0,115200n8` as the last `console=` parameter."),
    sig!("poweroff-failed", Poweroff, Failure, HARNESS,
        "The guest did not power off after `poweroff` (or QEMU did not exit).",
        "Power off from a root shell; check that `-no-reboot` is set and the guest supports ACPI power-off."),
    sig!("serial-eof", Qemu, Failure, HARNESS,
        "The serial connection closed while the harness was still waiting (QEMU died or closed its chardev).",
        "Read qemu.stderr.log and the QEMU exit status in metadata.json."),
    sig!("host-disk-full", Qemu, Failure, "QMP `query-status` = `io-error` with the disk's `io-status` = `nospace`, or ENOSPC writing a log in the run directory",
        "The host filesystem holding the run directory is full: QEMU paused the guest when a write to its scratch disk failed (which looks exactly like a hung guest), or the harness could not write its logs.",
        "Free space on that filesystem (`df -h` on the run directory) or pass `--run-dir` on one with a few GiB free: the scratch disk grows while the guest provisions it."),
    sig!("io-error", Qemu, Failure, "QMP `query-status` = `io-error` (a host read or write of a disk image failed)",
        "QEMU paused the guest because reading or writing a disk image failed on the host (an I/O error, not a full disk).",
        "Check the host's kernel log (`dmesg`) and the filesystem holding the run directory and the ISO; rerun with `--run-dir` elsewhere."),
    sig!("harness-error", Qemu, Failure, HARNESS,
        "The harness itself failed (a bug or an unexpected condition), not the image.",
        "Read the error in the transcript and report it with the run directory."),
    sig!("root-device-missing", Init, Failure, "stage 1 `waiting for device X to appear...` then `Timed out waiting for device X, trying to mount anyway.`, `mount: mounting X on /mnt-root/ failed`, `VFS: Unable to mount root fs`, `VFS: Cannot open root device`, systemd initrd `Dependency failed for /sysroot`",
        "Stage 1 waited for the root file system's device (or another file system needed for boot) and it never appeared: a wrong `root=`/`fileSystems.\"/\".device` label or UUID, a disk the initrd has no driver for, or an ISO whose volume label does not match `root=LABEL=...`; from the kernel itself (`VFS: Unable to mount root fs on unknown-block(0,0)`), no initrd was loaded or it has no `/init`, so the kernel tried `root=` on its own.",
        "Compare the device stage 1 waited for with `ls /dev/disk/by-label /dev/disk/by-uuid` (boot with `boot.shell_on_fail` and press `i`); add the disk's driver to `boot.initrd.availableKernelModules`; for an ISO, check `isoImage.volumeID` against `root=LABEL=`."),
    sig!("stage2-init-missing", Init, Failure, "`stage 2 init script (/mnt-root/.../init) not found` before the stage-1 error prompt; systemd initrd `Specified switch root path '/sysroot' does not seem to be an OS tree`",
        "Stage 1 mounted a root file system but the system's init is not on it: `init=` points to a store path that is not in this root (an old generation garbage-collected, a root from another install), or the wrong file system was mounted as root; with systemd in stage 1, also an activation (`initrd-nixos-activation`) that failed before it wrote /etc, so the root has no os-release.",
        "Read the lines before it for an activation that failed; boot an older generation from the boot menu; check that the `init=` path on the kernel command line exists under the mounted root (`ls /mnt-root/nix/store/...-nixos-system-*/init` from the stage-1 shell); rebuild the boot entries with `nixos-rebuild boot`."),
    sig!("activation-failed", Init, Failure, "`Activation script snippet 'X' failed (N)` in stage 2 (`running activation script...`) or during a switch",
        "A snippet of the NixOS activation script (users, etc, specialfs, a module's own `system.activationScripts` entry) failed; the boot goes on, but what that snippet sets up (accounts, /etc, secrets, mounts) may be missing.",
        "Read the lines just before the snippet's failure line for the command that failed; fix the module that defines `system.activationScripts.<X>`; in the guest re-run it with `/run/current-system/activate`."),
    sig!("dependency-failed", Init, Warning, "`[DEPEND] Dependency failed for X.` (journal: `Dependency failed for X.`)",
        "A unit was not started because a unit it requires failed or timed out (the failed one is reported just before: a `[FAILED]` or `[ TIME ]` line).",
        "Fix the unit it depends on (the first failure above it); `systemctl list-dependencies <unit>` shows the chain."),
    sig!("hung-task", Kernel, Failure, "`INFO: task X:PID blocked for more than 120 seconds.`",
        "A task sat in uninterruptible sleep for minutes: the kernel waits on I/O that never completes (a dead or very slow disk, a hung NFS/virtiofs mount, a deadlocked driver), or the host starves the VM (TCG under heavy load).",
        "Read the stack trace that follows for the driver or file system involved; check the VM's disks and the host's load; retry with KVM."),
    sig!("bootloader-failed", Bootloader, Failure, "GRUB `error: file '/boot/...' not found.`, `error: you need to load the kernel first.`, `Failed to boot both default and fallback entries.`; SYSLINUX `Could not find kernel image: X`, `Failed to load ldlinux.c32`, `Boot failed: please change disks`; U-Boot `Bad Linux ARM64 Image magic!`, `Wrong Image Format for bootm command`, `Skipping X for failure retrieving kernel`; iPXE `Could not boot image: ...`",
        "The bootloader itself could not load or start the kernel or initrd: the path in its menu entry does not exist on the medium (a stale grub.cfg or extlinux.conf, a garbage-collected generation), the file is corrupt or of the wrong format (a compressed `Image.gz` where U-Boot wants `Image`), or it failed signature checks.",
        "Check that the files the boot entry names exist on the boot medium (`ls` at the GRUB prompt, `ext4ls`/`fatls` in U-Boot); regenerate the boot entries (`nixos-rebuild boot`) or rebuild the image; for U-Boot give `booti` an uncompressed kernel."),
    sig!("lan-interface-missing", Init, Failure, "`Interface \"lan\" not found.` (networkctl), `Device \"lan\" does not exist.` (ip), a NIC left DOWN (`2: ens4: <BROADCAST,MULTICAST> ... state DOWN`)",
        "The interface the image expects (`lan`) does not exist: the rename (a `.link` file or pre-nixos's LAN setup) never ran, and the NIC was left administratively down, so there is no carrier and no DHCP.",
        "In the guest run `ip link` and `networkctl`; make sure the NIC is brought up (`ip link set <if> up`) and renamed (`systemd.network.links`), and that the step doing it is not skipped (pre-nixos only configures `lan` when a root key is embedded)."),
    sig!("console-in-pager", Shell, Failure, "a pager on the console: `lines 1-23/57 42%`, `(END)`, `--More--`, `WARNING: terminal is not fully functional`, followed by another pager prompt or `... (press RETURN)`",
        "A command (`systemctl status`, `journalctl`, `git log`, `man`) opened `less` or `more` on the console, and the input meant for the shell went into the pager: commands typed after it were eaten as pager keys and never ran.",
        "Run such commands with `--no-pager` or set `PAGER=cat SYSTEMD_PAGER=cat` (and `TERM=dumb`) before typing commands; press `q` to leave the pager."),
    sig!("qemu-killed", Qemu, Warning, "`qemu-system-x86_64: terminating on signal 15 from pid N (...)`",
        "QEMU was ended by a signal from outside (a harness deadline, a `timeout`, Ctrl-C, the host's OOM killer): not a start failure and not the guest's own doing; the guest's last lines before it say how far it got.",
        "Look at the phase the log reached and the findings before this line; if the run was killed by a deadline, raise it (or use KVM) rather than suspect the image."),
    sig!("login-shell-errors", Login, Warning, "`-bash: /etc/profile: line N: ...`, `-bash: warning: setlocale: ...`, `bash: X: No such file or directory` between the (automatic) login and the first prompt",
        "The login shell's start-up files (`/etc/profile`, `/etc/bashrc`, `environment.interactiveShellInit`, a login notice script) printed errors: the shell works, but PATH, locale or what the start-up should set may be wrong.",
        "Read the file and line the error names; fix the NixOS option that generates it (`environment.shellInit`, `interactiveShellInit`, `loginShellInit`) or the script it sources."),
];

/// The catalogue of known signatures.
pub fn catalogue() -> &'static [Signature] {
    &CATALOGUE
}

/// Looks up a signature by id.
pub fn signature(id: &str) -> Option<&'static Signature> {
    catalogue().iter().find(|s| s.id == id)
}

/// Line-triggered rules: (id, pattern). Checked in one `RegexSet` pass; ids with special
/// conditions are refined in `Detector::match_rules`. ASCII classes (`[0-9]`, not `\d`) on
/// purpose: Unicode classes make the set's lazy DFA several times bigger and slower. Named
/// groups `s`, `s2`, ... capture what the line names (the finding's `subject`); the first
/// that took part is used. Lines are normalised first (`normalise.rs`): the journal's
/// wording of a job result arrives here with the console's status word, OCR'd words repaired.
const RULES: &[(&str, &str)] = &[
    // QEMU's own messages: qemu-system-x86_64: <option>: <error>; system/runstate.c:
    // "terminating on signal %d from pid " FMT_pid " (%s)".
    (
        "qemu-line",
        r"^qemu-system-[A-Za-z0-9_-]+: (?:terminating on signal (?P<s>[0-9]+(?: from pid [0-9]+(?: \([^)]*\))?)?))?",
    ),
    ("kernel-panic", r"Kernel panic - not syncing"),
    ("oom-killer", r"Out of memory: Kill(ed)? process"),
    (
        "emergency-mode",
        r"You are in emergency mode|Entering emergency mode|An error occurred in stage 1 of the boot process|Give root password for maintenance|Cannot open access to console, the root account is locked",
    ),
    // systemd job.c job_done_message_format: "Failed to start %s." (mount.c "Failed to mount
    // %s.", socket.c "Failed to listen on %s.", swap.c "Failed to activate swap %s.",
    // automount.c "Failed to set up automount %s."), status word "FAILED"; service.c logs
    // "Failed with result '%s'." with the unit's name as prefix.
    (
        "unit-failed",
        r"^\[ *FAILED *\] Failed to (?:start|mount|listen on|set up automount|activate swap) (?P<s>.+?)\.?$|^(?P<s2>[^ :]+\.(?:service|mount|socket|swap|automount|path|timer|scope)): Failed with result '",
    ),
    // `systemctl status`: "Active: failed (Result: exit-code) since ..." under "× unit - desc".
    ("unit-failed-status", r"^ *Active: failed \(Result: "),
    (
        "unit-status-head",
        r"^[*●×○↻] (?P<s>[^ ]+\.(?:service|mount|socket|swap|target|device|path|timer|scope))(?: - |$)",
    ),
    ("unit-not-found", r"Unit [^ \t]+ not found|Unit [^ \t]+ could not be found"),
    // manager.c manager_print_jobs_in_progress: "%sA %s job is running for %s (%s / %s)", or
    // with StatusUnitFormat=name/combined "%sJob %s/%s running (%s / %s)%s%s".
    (
        "unit-stuck-job",
        r"(?:A (?:start|stop) job is running for (?P<s>.*) |Job (?P<s2>[^ ]+)/(?:start|stop) running )\((?:(?P<h>[0-9]+)h )?(?P<m>[0-9]+)min(?: [0-9]+s)? / [^)]*\)",
    ),
    ("unit-stuck-status", r"Active: (?:activating|deactivating) \(.*; (?:(?P<h>[0-9]+)h )?(?P<m>[0-9]+)min"),
    // Status word " TIME " (job.c) before device.c "Timed out waiting for device %s.",
    // job.c "Timed out starting %s." / "Timed out stopping %s.", mount.c "Timed out mounting %s.".
    (
        "unit-stuck",
        r"^\[ TIME \] Timed out (?:waiting for device|starting|stopping|mounting|unmounting|activating swap|reloading) (?P<s>.+?)\.?$",
    ),
    ("nix-download-failed", r"unable to download 'https?://"),
    ("floppy-io-error", r"I/O error, dev fd[0-9]"),
    ("command-not-found", r"^-?(ba)?sh: [^:]+: (command )?not found"),
    (
        "escalation-failed",
        r"^\[sudo\] password for |^Sorry, try again\.|sudo: [0-9]+ incorrect password attempt|sudo: a password is required|is not in the sudoers file|^su: (Authentication failure|Permission denied)|sudo: a terminal is required",
    ),
    (
        "not-root",
        r"Interactive authentication required|WARNING: Running as a non-root user|open failed: Permission denied|must be run as root|must be root|[Oo]nly root can|need to be root|requires root privileges",
    ),
    ("not-root-denied", r"Permission denied|Operation not permitted"),
    (
        "storage-detection-error",
        r"Storage detection encountered an error|storage detection failed \(exit|pre-nixos-detect-storage: command .* exited with status|pre-nixos: detection-error",
    ),
    (
        "provisioning-failed",
        r"pre-nixos: Provisioning failed|STATE=failed|^pre-nixos: failed:|pre-nixos: auto-install failed:|Provisioning status is 'failed'|has insufficient free space \([0-9]+ extents\)|file 'nixpkgs' was not found in the Nix search path|subprocess\.CalledProcessError|CalledProcessError: Command",
    ),
    (
        "storage-plan-only",
        r"provisioning ran in plan-only mode|Provisioning ran in plan-only mode|STATE=plan-only|^pre-nixos: not-blank:",
    ),
    ("no-disk", r"^pre-nixos: no-disk:"),
    ("lan-ipv4-unavailable", r"LAN IPv4 address unavailable"),
    ("powered-off-cleanly", r"reboot: Power down|System halted"),
    ("console-cmdline", r"Kernel command line: |^\[[ \t]*[0-9]+\.[0-9]+\] Command line: "),
    // nixpkgs nixos/modules/system/boot/stage-1-init.sh: `echo "Timed out waiting for device
    // $device, trying to mount anyway."`; its mount is BusyBox's (util-linux/mount.c
    // `bb_perror_msg("mounting %s on %s failed", ...)`) or util-linux's (libmount
    // "special device %s does not exist", "can't find %s") for targets under /mnt-root.
    // The kernel: init/do_mounts.c "VFS: Cannot open root device \"%s\" or %s: error %d",
    // panic "VFS: Unable to mount root fs on %s". systemd initrd: /sysroot's mount failing
    // because its device timed out ("Dependency failed for /sysroot.").
    (
        "root-device-missing",
        r#"^Timed out waiting for device (?P<s>[^ ,]+), trying to mount anyway|^mount: mounting (?P<s2>[^ ]+) on /mnt-root[^ ]* failed|^mount: /mnt-root[^:]*: (?:special device (?P<s3>[^ ]+) does not exist|can't find (?P<s4>[^ ]+?)\.?$)|VFS: Unable to mount root fs on (?P<s5>[^ ]+)|VFS: Cannot open root device "?(?P<s6>[^" ]*)"?|^\[DEPEND\] Dependency failed for (?P<s7>/sysroot|Initrd Root File System|Initrd Root Device|sysroot\.mount)\.?$"#,
    ),
    // stage-1-init.sh: `echo "stage 2 init script ($targetRoot/$stage2Init) not found"`;
    // systemd src/core/dbus-manager.c: "Specified switch root path '%s' does not seem to be an
    // OS tree. os-release file is missing." (older: "Not switching root: %s does not seem to
    // be an OS tree. /etc/os-release is missing."); src/core/main.c when the new root has no
    // init: "Switch root target contains no usable init.".
    (
        "stage2-init-missing",
        r"^stage 2 init script \((?P<s>[^)]+)\) not found|Specified switch root path '(?P<s2>[^']+)' does not seem to be an OS tree|Not switching root: (?P<s3>[^ ]+) does not seem to be an OS tree|Switch root target contains no usable init",
    ),
    // nixpkgs nixos/modules/system/activation/activation-script.nix:
    // printf "Activation script snippet '%s' failed (%s)\n"; before that line existed (and
    // for errors outside a snippet) only bash's own "<script>: line N: <error>" from the
    // system's `activate` script.
    (
        "activation-failed",
        r"Activation script snippet '(?P<s>[^']+)' failed \([0-9]+\)|-nixos-system-[^/ ]*/activate: line [0-9]+: ",
    ),
    // job.c: status word "DEPEND", "Dependency failed for %s.".
    ("dependency-failed", r"^\[DEPEND\] Dependency failed for (?P<s>.+?)\.?$"),
    // kernel/hung_task.c: pr_err("INFO: task %s:%d blocked for more than %ld seconds.\n").
    ("hung-task", r"INFO: task (?P<s>.+:[0-9]+) blocked for more than [0-9]+ seconds"),
    // GRUB grub-core/normal/menu.c "Failed to boot both default and fallback entries.";
    // SYSLINUX "Could not find kernel image: %s", "Invalid or corrupt kernel image.",
    // "Failed to load ldlinux.c32", "Boot failed: please change disks and press a key to
    // continue."; U-Boot arch/arm/lib/image.c "Bad Linux ARM64 Image magic!", boot/bootm.c
    // "Wrong Image Format for %s command", "ERROR: can't get kernel image!", boot/pxe_utils.c
    // "Skipping %s for failure retrieving kernel"; iPXE src/usr/autoboot.c
    // "Could not boot image: %s".
    (
        "bootloader-failed",
        r"Failed to boot both default and fallback entries|^Could not find kernel image: (?P<s>.+)$|^Invalid or corrupt kernel image|^Failed to load (?P<s2>ldlinux\.c32|COM32 file .+)$|^Boot failed: please change disks|^Bad Linux (?:ARM64|RISCV) Image magic|^Wrong (?:Image|Ramdisk Image) Format|^ERROR: can't get kernel image|^Ramdisk image is corrupt or invalid|^Skipping (?P<s3>.+) for failure retrieving (?:kernel|initrd|fdt)|^Could not boot image: ",
    ),
    // GRUB prints every error as "error: %s." (grub_print_error): "file `%s' not found" (2.12:
    // "file '%s' not found"), "you need to load the kernel first", "no such device: %s". Only
    // while the bootloader runs: later, `error:` lines are anyone's (nix).
    ("bootloader-error", r"^error: (?:.*file [`'](?P<s>[^`']+)' not found)?"),
    // systemd src/network/networkctl.c: "Interface \"%s\" not found."; iproute2 and BusyBox ip:
    // "Device \"%s\" does not exist."; pre-nixos: "LAN IPv4 address unavailable (preferred
    // interface \"lan\" not found)".
    (
        "lan-interface-missing",
        r#"Interface "lan" not found|Device "lan" does not exist|preferred interface "lan" not found"#,
    ),
    // `ip link`: "2: ens4: <BROADCAST,MULTICAST> mtu 1500 qdisc noop state DOWN ..." (no UP flag).
    ("nic-down", r"^[0-9]+: (?P<s>[A-Za-z0-9_.-]+)(?:@[^:]+)?: <(?P<flags>[A-Z0-9_,-]*)> .* state DOWN"),
    // The interface exists after all: renamed by the kernel log, listed, or given an address.
    (
        "lan-present",
        r"lan: renamed from |^[0-9]+: lan(?:@[^:]+)?: <[A-Z0-9_,-]*UP|LAN IPv4 address: [0-9]|inet [0-9.]+/[0-9]+ .* lan(?: |\\|$)",
    ),
    // less: a prompt at the bottom (systemd runs it with LESS=FRSXMK, so `lines 1-23/57 42%`,
    // `(END)`); main.c error("WARNING: terminal is not fully functional"); util-linux more:
    // "--More--".
    (
        "pager-open",
        r"^lines [0-9]+-[0-9]+(?:/[0-9]+)?(?: [0-9]+%| \(END\))?$|^\(END\)$|^--More--|WARNING: terminal is not fully functional",
    ),
    // less output.c error(): every message ends in "  (press RETURN)"; keys less did not
    // expect give "Pattern not found", "No previous regular expression", its help screen
    // "HELP -- Press RETURN for more, or q when done".
    (
        "pager-input",
        r"\(press RETURN\)$|^Pattern not found|^No previous regular expression|^HELP -- Press RETURN for more|^Cannot edit standard input|^Nothing to search",
    ),
    // bash prefixes errors with its name (`-bash` for a login shell) and, inside a sourced
    // file, the file and line: "-bash: /etc/profile: line 3: x: command not found".
    ("shell-error", r"^-?(?:ba|z|k|da)?sh: |^/(?:etc|nix/store|home|root|run)/[^:]+:(?: line)? ?[0-9]+: "),
    // systemd's console hint after a failed start names the unit: job.c
    // "See 'systemctl status %s' for details.".
    ("unit-see-status", r"^See 'systemctl status (?P<s>[^']+)' for details"),
];

/// Phase markers: (phase, pattern), in phase order.
const PHASE_MARKERS: &[(Phase, &str)] = &[
    // Firmware and bootloaders: SeaBIOS, OVMF's BdsDxe, iPXE, SYSLINUX/ISOLINUX/PXELINUX/
    // EXTLINUX, GRUB (its banner, `Booting `X'`, and `echo` lines of NixOS's grub.cfg), U-Boot
    // (banner, autoboot prompt, extlinux `Retrieving file:`, `## Booting kernel from ...`,
    // boot/bootm_os.c "\nStarting kernel ...%s\n\n").
    (
        Phase::Bootloader,
        r"ISOLINUX [0-9]|SYSLINUX [0-9]|PXELINUX [0-9]|EXTLINUX [0-9]|GNU GRUB|Welcome to GRUB|SeaBIOS \(version|^BdsDxe: |^Booting from |^Booting `|Automatic boot in [0-9]+ second|^Loading /boot/|^iPXE|^U-Boot (?:SPL )?[0-9]{4}\.|^Hit any key to stop autoboot|^Starting kernel \.\.\.|^## (?:Booting kernel|Loading kernel|Flattened Device Tree)|^Retrieving file: |^Loading Linux |^Loading initial ramdisk",
    ),
    (
        Phase::Kernel,
        r"Linux version [0-9]|^Decompressing Linux|^Booting the kernel|^EFI stub: |^\[[ \t]*[0-9]+\.[0-9]+\] ",
    ),
    // systemd (`[  OK  ]` and the other status words, start jobs, its welcome), NixOS's stage
    // 1 and 2 scripts (nixpkgs stage-1-init.sh: "loading module $(basename $i)...",
    // "running udev...", "starting device mapper and LVM...", "waiting for device $dev to
    // appear...", "mounting $device on $mountPoint..."; stage-2-init.sh: "running activation
    // script...", "starting systemd..."), and what only runs once init has: activation
    // (activation-script.nix), systemd's switch-root errors (main.c, dbus-manager.c),
    // pre-nixos's console lines.
    (
        Phase::Init,
        r"<<< ?NixOS Stage [12] ?>>>|Run [^ \t]+ as init process|Welcome to NixOS|^Welcome to .*(?:Linux|Debian|Ubuntu|Fedora).*!$|^\[ *(?:OK|FAILED|DEPEND|TIME|INFO|ASSERT|UNSUPP|ONCE|!!!!!!) *\] |A (?:start|stop) job is running for |^stage-[12]-init: |systemd\[1\]: |^loading module [^ ]+\.\.\.$|^running udev\.\.\.$|^starting device mapper and LVM\.\.\.$|^waiting for device [^ ]+ to appear|^mounting [^ ]+ on [^ ]+\.\.\.$|^Timed out waiting for device [^ ]+, trying to mount anyway|^running activation script\.\.\.$|^setting up /etc\.\.\.$|^starting systemd\.\.\.$|^stage 2 init script |Activation script snippet '|-nixos-system-[^/ ]*/activate: line [0-9]+: |Switch root target contains no usable init|^Failed to switch root: |^pre-nixos: ",
    ),
    (
        Phase::Login,
        r"^[A-Za-z0-9][A-Za-z0-9_.-]* login: |^[A-Za-z0-9][A-Za-z0-9_.-]* login:$|\(automatic login\)|session opened for user |^ROOT LOGIN ON |^LOGIN ON [^ ]+ BY ",
    ),
    (
        Phase::Poweroff,
        r"reboot: Power down|System halted|Powering off\.?$|reboot: System halted|ACPI: PM: Preparing to enter system sleep state S5|^System is powering down",
    ),
];

/// Phase markers and rules in one set, so a line is scanned once: indices below
/// `PHASE_MARKERS.len()` are phase markers, the rest are `RULES`.
static LINE_SET: LazyLock<RegexSet> = LazyLock::new(|| {
    let patterns = PHASE_MARKERS.iter().map(|(_, p)| *p).chain(RULES.iter().map(|(_, p)| *p));
    RegexSet::new(patterns).expect("phase and rule patterns compile")
});
static RULE_RES: LazyLock<Vec<Regex>> =
    LazyLock::new(|| RULES.iter().map(|(_, p)| Regex::new(p).expect("rule pattern compiles")).collect());
/// A shell prompt at the start of a line: NixOS `[user@host:dir]$`, Debian `user@host:dir$`,
/// busybox `~ #`, bash's default `-bash-5.2#` (what `sudo -i` shows once PS1 was reset), or a
/// bare `$` (a harness's boring PS1; a bare `#` is too common in output to count).
/// Groups `u1`/`u2` = user, `s` = `$`/`#`; the rest of the line follows.
static PROMPT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(?:(?:\[(?P<u1>[\w.-]+)@[\w.-]+:[^\]\s]*\]|(?P<u2>[\w.-]+)@[\w.-]+:[^\s$#]*|[~/][^\s$#]*|-?(?:ba)?sh-[0-9.]+) ?(?P<s>[$#])|\$)(?: |$)",
    )
    .expect("prompt pattern compiles")
});
static AUTOLOGIN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(?:\S+ )?login: (?P<user>\S+) \(automatic login\)").expect("compiles"));
/// Commands that start a login shell (its start-up files run before the next prompt).
static LOGIN_SHELL_COMMAND: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\s*(?:sudo (?:-[a-zA-Z]*i|su -)|su (?:-|-l|--login))(?:\s|$)").expect("compiles"));
/// A getty's `host login:` prompt (the other login markers are journal lines).
static AGETTY_PROMPT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9][A-Za-z0-9_.-]* login:(?: |$)").expect("compiles"));
/// Bootloader lines that mean it loaded or started something (a kernel, an initrd); U-Boot's
/// extlinux prints `append: <command line>` once it has the kernel, just before booting it.
static BOOTLOADER_LOADED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^Loading /|^Booting `|^Starting kernel \.\.\.|^## Booting kernel|^Loading Linux |^Loading initial ramdisk|^append: |Booting using the fdt blob|^Moving Image from",
    )
    .expect("compiles")
});
/// Text after a prompt that is a console broadcast, not an echoed command.
static BROADCAST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:pre-nixos|LAN IPv4|\[\s*\d+\.\d+\] |\[ *(?:OK|FAILED) *\] |<<< |Broadcast message)")
        .expect("compiles")
});

/// Cuts `s` to at most `max` bytes on a char boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    &s[..s.floor_char_boundary(max)]
}

/// Parses a kernel timestamp `[   12.345678] ` at the start of a line (no regex: hot path).
pub fn kernel_time(line: &str) -> Option<f64> {
    let rest = line.strip_prefix('[')?;
    let end = rest.find(']')?;
    if end > 20 {
        return None;
    }
    let num = rest[..end].trim_start();
    let (whole, frac) = num.split_once('.')?;
    if whole.is_empty()
        || frac.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    num.parse().ok()
}

/// Repeats of one line after which `serial-flood` is reported.
const FLOOD_REPEATS: usize = 5000;
/// Minutes a start job may run before `unit-stuck` is reported.
const STUCK_MINUTES: u32 = 2;

/// Follows the boot phases and finds signatures in clean serial text, line by line.
#[derive(Default)]
pub struct Detector {
    timeline: Vec<TimelineEntry>,
    findings: Vec<Finding>,
    /// Latest accepted kernel timestamp (monotonic; `dmesg` replays are older and ignored).
    kernel_secs: Option<f64>,
    /// Last line with visible text, for silence verdicts.
    last_text: String,
    last_text_line: usize,
    /// Whether the bootloader loaded something (`Loading /boot/...`, `Booting ...`).
    bootloader_loaded: bool,
    /// The furthest phase the text itself showed (`advance` also takes the harness's word).
    text_phase: Phase,
    /// A `login:` prompt without autologin, waiting to see whether autologin follows.
    pending_login_prompt: Option<(usize, String)>,
    /// Consecutive repeats of the last line (flood detection).
    repeats: usize,
    /// Turns journal, CI and OCR'd text into console text and says where each line came from.
    normaliser: Normaliser,
    /// Where the current line (and so its findings) came from.
    source: Source,
    /// The `lan` interface was seen to exist: `lan-interface-missing` no longer holds.
    lan_present: bool,
    /// A pager's prompt on the console, not yet closed by a shell prompt: the finding to
    /// report if input goes into it.
    pager: Option<Finding>,
    /// Between a login (or an echoed `sudo -i`) and the next prompt: the login shell's
    /// start-up files are running.
    shell_starting: bool,
    /// The unit of the last `systemctl status` header (`× pre-nixos.service - ...`).
    status_unit: Option<String>,
    /// Stage 1 printed `waiting for device X to appear...` and nothing followed yet.
    waiting_for_device: Option<Finding>,
}

impl Detector {
    /// A detector that tells the source of each line itself (serial unless a journal prefix
    /// or an OCR confusion says otherwise).
    pub fn new() -> Self {
        Self::default()
    }

    /// A detector for text known to come from `source` (`analyze --source`); `None` = tell.
    pub fn with_source(source: Option<Source>) -> Self {
        Detector { normaliser: Normaliser::new(source), ..Self::default() }
    }

    /// Feeds one complete clean line (without `\n`); `line_no` is 1-based.
    /// Returns the findings this line produced (each id is reported once).
    pub fn feed_line(&mut self, line_no: usize, line: &str) -> Vec<Finding> {
        let mut new = Vec::new();
        let line = truncate(line.trim_end_matches(['\r', '\n']), MATCH_PREFIX);
        let trimmed = line.trim();
        if trimmed.is_empty() {
            return new;
        }
        self.count_repeats(line_no, line, &mut new);
        if let Some(secs) = kernel_time(line) {
            if self.kernel_secs.is_none_or(|k| secs >= k) {
                self.kernel_secs = Some(secs);
            }
        }
        self.last_text.clear();
        self.last_text.push_str(truncate(trimmed, MAX_FINDING_TEXT));
        self.last_text_line = line_no;

        let norm = self.normaliser.normalise(line);
        self.source = norm.source;
        // A finding quotes the line as written; the rules read it normalised.
        let quote = norm.changed(line).then_some(trimmed);
        let text: &str = &norm.text;
        if text.trim().is_empty() {
            return new; // a journal separator, another harness's own chatter
        }
        if norm.kernel_stamped {
            self.advance_by_text(Phase::Kernel, line_no);
        }
        match norm.voice {
            Voice::Kernel => self.advance_by_text(Phase::Kernel, line_no),
            Voice::Systemd | Voice::Stage1 | Voice::Stage2 | Voice::Userspace => {
                self.advance_by_text(Phase::Init, line_no)
            }
            Voice::Unknown => {}
        }

        // A login prompt seen earlier is only a problem if no autologin follows it.
        if let Some((at, text)) = self.pending_login_prompt.take() {
            if !norm.text.contains("(automatic login)") {
                let f = Finding::new("login-prompt", at, &text).with_source(self.source);
                self.add(&mut new, f);
            }
        }
        // Stage 1's device wait ended (its timeout line is a finding of its own).
        self.waiting_for_device = None;
        if let Some(dev) = text.strip_prefix("waiting for device ") {
            let dev = dev.split(' ').next().unwrap_or_default().to_string();
            let f = self.finding("root-device-missing", line_no, quote.unwrap_or(text), Some(dev));
            self.waiting_for_device = Some(f);
        }

        // Shell prompts: the phase comes from the prompt; the rest of the line is an echoed
        // command (not matched) unless it is a console broadcast landing after the prompt.
        let mut body = text;
        // Several prompts can share a line (`$ -bash-5.2# $ ` when commands run without echo).
        // After a bare `$` (vm-test's boring shell, echo off) the rest is output, not an echo.
        let mut echoed = false;
        while may_be_prompt(body) {
            let Some(c) = PROMPT.captures(body) else { break };
            let user = c.name("u1").or(c.name("u2")).map(|m| m.as_str());
            let root = match c.name("s") {
                Some(sig) => user.map_or(sig.as_str() == "#", |u| u == "root"),
                None => false,
            };
            self.advance_by_text(if root { Phase::Root } else { Phase::Shell }, line_no);
            body = &body[c.get(0).unwrap().end()..];
            echoed = c.name("s").is_some();
            // A prompt: the pager (if any) was left, the login shell finished starting.
            self.pager = None;
            self.shell_starting = false;
        }
        if echoed && !BROADCAST.is_match(body) {
            // A login shell's start-up runs after these (`sudo -i`, `su -`).
            self.shell_starting = LOGIN_SHELL_COMMAND.is_match(body);
            return new;
        }

        // While the bootloader runs, any of its lines may say it loaded the kernel (U-Boot's
        // `append:` is no phase marker).
        if self.phase() == Phase::Bootloader && BOOTLOADER_LOADED.is_match(body) {
            self.bootloader_loaded = true;
        }
        let hits = LINE_SET.matches(body);
        if !hits.matched_any() {
            return new;
        }
        let mut rules = Vec::new();
        for i in hits.iter() {
            if let Some(rule) = i.checked_sub(PHASE_MARKERS.len()) {
                rules.push(rule);
            } else {
                let phase = PHASE_MARKERS[i].0;
                self.advance_by_text(phase, line_no);
                if phase == Phase::Bootloader && BOOTLOADER_LOADED.is_match(body) {
                    self.bootloader_loaded = true;
                }
                if phase == Phase::Login {
                    self.login_line(line_no, body, &mut new);
                }
            }
        }
        if !rules.is_empty() {
            let evidence = if echoed { body } else { quote.unwrap_or(body) };
            self.match_rules(line_no, body, evidence, rules, &mut new);
        }
        new
    }

    fn login_line(&mut self, line_no: usize, body: &str, new: &mut Vec<Finding>) {
        if let Some(c) = AUTOLOGIN.captures(body) {
            self.shell_starting = true;
            if &c["user"] != "root" {
                let f = self.finding("autologin-not-root", line_no, body, None);
                self.add(new, f);
            }
        } else if body.starts_with("Last login") {
            self.shell_starting = true;
        } else if AGETTY_PROMPT.is_match(body) {
            // agetty prints the prompt and the autologin note on one line; a bare prompt at
            // the end of the input or followed by anything else means no autologin.
            self.pending_login_prompt = Some((line_no, body.to_string()));
        }
    }

    /// A finding at `line_no` from the current line's source.
    fn finding(&self, id: &'static str, line_no: usize, text: &str, subject: Option<String>) -> Finding {
        let mut f = Finding::new(id, line_no, text).with_source(self.source);
        f.subject = subject.map(|s| truncate(s.trim(), MAX_FINDING_TEXT).to_string()).filter(|s| !s.is_empty());
        f
    }

    fn match_rules(&mut self, line_no: usize, body: &str, evidence: &str, hits: Vec<usize>, new: &mut Vec<Finding>) {
        let detection_error = hits.iter().any(|&i| RULES[i].0 == "storage-detection-error");
        for i in hits {
            let mut subject = subject(i, body);
            let id = match RULES[i].0 {
                "qemu-line" => {
                    if body.contains("terminating on signal") {
                        subject = subject.map(|s| format!("signal {s}"));
                        "qemu-killed"
                    } else if self.phase() == Phase::Qemu && !body.contains("warning:") {
                        subject = None;
                        "qemu-start-failed"
                    } else {
                        continue;
                    }
                }
                "unit-stuck-job" | "unit-stuck-status" => {
                    let minutes = RULE_RES[i].captures(body).map(|c| {
                        let num = |g: &str| c.name(g).and_then(|m| m.as_str().parse::<u32>().ok()).unwrap_or(0);
                        num("h") * 60 + num("m")
                    });
                    if minutes.is_none_or(|m| m < STUCK_MINUTES) {
                        continue;
                    }
                    "unit-stuck"
                }
                "unit-failed-status" => {
                    subject = self.status_unit.clone();
                    "unit-failed"
                }
                "unit-status-head" => {
                    self.status_unit = subject;
                    continue;
                }
                "unit-see-status" => {
                    // `[FAILED] Failed to start X.` then `See 'systemctl status x.service'`:
                    // name the unit next to its description.
                    if let (Some(unit), Some(f)) =
                        (subject, self.findings.iter_mut().rev().find(|f| f.id == "unit-failed"))
                    {
                        if f.line + 2 >= line_no && !f.subject.as_deref().unwrap_or("").contains(&unit) {
                            f.subject = Some(match f.subject.take() {
                                Some(desc) => format!("{unit} ({desc})"),
                                None => unit,
                            });
                        }
                    }
                    continue;
                }
                "not-root-denied" => {
                    // Plain "Permission denied" means not-root only at a user shell.
                    if self.phase() != Phase::Shell {
                        continue;
                    }
                    "not-root"
                }
                // Plan-only because detection failed: the detection error is the news.
                "storage-plan-only" if detection_error => continue,
                "console-cmdline" => {
                    if !console_last_is_serial(body) {
                        "console-not-last"
                    } else {
                        continue;
                    }
                }
                "bootloader-error" => {
                    // `error: ...` is GRUB's only while nothing after the bootloader ran.
                    if self.phase() != Phase::Bootloader {
                        continue;
                    }
                    subject = subject.or_else(|| Some(body["error: ".len()..].trim_end_matches('.').to_string()));
                    "bootloader-failed"
                }
                "lan-interface-missing" => {
                    if self.lan_present {
                        continue;
                    }
                    subject = Some("lan".into());
                    "lan-interface-missing"
                }
                "nic-down" => {
                    let flags = RULE_RES[i].captures(body).map_or("", |c| c.name("flags").map_or("", |m| m.as_str()));
                    let nic = subject.clone().unwrap_or_default();
                    if self.lan_present || nic == "lo" || flags.split(',').any(|f| f == "UP") {
                        continue;
                    }
                    subject = Some(format!("{nic} is DOWN"));
                    "lan-interface-missing"
                }
                "lan-present" => {
                    self.lan_present = true;
                    self.findings.retain(|f| f.id != "lan-interface-missing");
                    continue;
                }
                "pager-open" => {
                    let pager = if body.starts_with("--More--") { "more" } else { "less" };
                    let f = self.finding("console-in-pager", line_no, evidence, Some(pager.into()));
                    // A second pager prompt is a redraw: keys went into the pager.
                    if let Some(open) = self.pager.take().filter(|_| !body.contains("not fully functional")) {
                        self.add(new, open);
                    } else {
                        self.pager = Some(f);
                    }
                    continue;
                }
                "pager-input" => {
                    // less's own start-up warning (`WARNING: terminal is not fully
                    // functional`, then `-  (press RETURN)`), not a key.
                    if body.contains("not fully functional") || body.trim_start_matches(['-', ' ']) == "(press RETURN)"
                    {
                        continue;
                    }
                    let f = self
                        .pager
                        .take()
                        .unwrap_or_else(|| self.finding("console-in-pager", line_no, evidence, Some("less".into())));
                    self.add(new, f);
                    continue;
                }
                "shell-error" => {
                    if !self.shell_starting {
                        continue;
                    }
                    "login-shell-errors"
                }
                // At a starting login shell a missing command is the start-up's error.
                "command-not-found" if self.shell_starting => continue,
                "powered-off-cleanly" => "powered-off-cleanly",
                id => signature(id).map(|s| s.id).expect("rule ids are catalogue ids"),
            };
            let f = self.finding(id, line_no, evidence, subject);
            self.add(new, f);
        }
    }

    fn count_repeats(&mut self, line_no: usize, line: &str, new: &mut Vec<Finding>) {
        // Compare with the previous line (kept truncated in `last_text`): a memcmp, no hashing.
        if truncate(line.trim(), MAX_FINDING_TEXT) == self.last_text {
            self.repeats += 1;
            if self.repeats == FLOOD_REPEATS {
                let f = Finding::new("serial-flood", line_no, line).with_source(self.source);
                self.add(new, f);
            }
        } else {
            self.repeats = 1;
        }
    }

    /// A phase shown by a line of text (a marker or a prompt).
    fn advance_by_text(&mut self, phase: Phase, line_no: usize) {
        self.text_phase = self.text_phase.max(phase);
        self.advance(phase, line_no);
    }

    fn add(&mut self, new: &mut Vec<Finding>, finding: Finding) {
        if self.findings.iter().any(|f| f.id == finding.id) {
            return;
        }
        self.findings.push(finding.clone());
        new.push(finding);
    }

    /// Moves the phase forward to `phase` (never backward); for the harness too, e.g. when
    /// it verified root by `id -u` or started the checks.
    pub fn advance(&mut self, phase: Phase, line_no: usize) {
        if phase <= self.phase() {
            return;
        }
        let offset_secs = self.kernel_secs;
        self.timeline.push(TimelineEntry { phase, line: line_no, offset_secs });
    }

    /// The furthest phase the serial text shows.
    pub fn phase(&self) -> Phase {
        self.timeline.last().map_or(Phase::Qemu, |e| e.phase)
    }

    pub fn timeline(&self) -> &[TimelineEntry] {
        &self.timeline
    }

    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// Called at end of input or when the serial line stalls: findings inferred from silence
    /// (e.g. `serial-silent-after-bootloader`). Safe to call more than once. Each claims what
    /// the text showed (a banner, a kernel line), so none is made when the phase came from
    /// the harness alone (an empty log is not a bootloader that printed its banner). The end
    /// of a journal says nothing about a stall, so journal text gets none of these. The
    /// fallbacks for a silent bootloader or kernel are left out when a failure already
    /// explains the silence.
    pub fn silence(&mut self) -> Vec<Finding> {
        let mut new = Vec::new();
        if let Some((at, text)) = self.pending_login_prompt.take() {
            let f = Finding::new("login-prompt", at, &text).with_source(self.source);
            self.add(&mut new, f);
        }
        if self.source == Source::Journal {
            return new;
        }
        // The console was left in a pager, or stage 1 still waits for its device.
        if let Some(f) = self.pager.take() {
            self.add(&mut new, f);
        }
        if let Some(f) = self.waiting_for_device.take() {
            self.add(&mut new, f);
        }
        if self.findings.iter().any(Finding::is_failure) {
            return new;
        }
        let (line, text) = (self.last_text_line, self.last_text.clone());
        if self.text_phase != self.phase() {
            return new;
        }
        let id = match self.text_phase {
            Phase::Bootloader if self.bootloader_loaded => "serial-silent-after-bootloader",
            Phase::Bootloader => "bootloader-stuck",
            Phase::Kernel => "kernel-stalled",
            _ => return new,
        };
        let f = Finding::new(id, line, &text).with_source(self.source);
        self.add(&mut new, f);
        new
    }
}

/// What a rule's line names: its first capture group called `s`, `s2`, ... that took part.
fn subject(rule: usize, body: &str) -> Option<String> {
    let re = &RULE_RES[rule];
    let c = re.captures(body)?;
    re.capture_names().flatten().filter(|n| n.starts_with('s')).find_map(|n| c.name(n)).map(|m| m.as_str().to_string())
}

/// Cheap pre-check before the prompt regex: a prompt has a `$` or `#` within its first bytes.
fn may_be_prompt(line: &str) -> bool {
    line.as_bytes().iter().take(200).any(|&b| b == b'$' || b == b'#')
}

/// Whether the last `console=` argument on a kernel command line is a serial port.
/// No `console=` at all counts as fine (the output we read reached the serial line anyway).
fn console_last_is_serial(cmdline: &str) -> bool {
    let last = cmdline.split_whitespace().rev().find_map(|a| a.strip_prefix("console="));
    last.is_none_or(|c| c.starts_with("ttyS") || c.starts_with("hvc") || c.starts_with("ttyAMA"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> Detector {
        let mut d = Detector::new();
        for (i, line) in text.split('\n').enumerate() {
            d.feed_line(i + 1, line);
        }
        d.silence();
        d
    }

    /// systemd redraws its start-job line with CR and no LF: after cleaning, each redraw is
    /// a line, so a job running for minutes is seen however long it redraws.
    #[test]
    fn truncate_backs_off_to_a_char_boundary() {
        let s = "ab\u{FFFD}cd"; // U+FFFD is 3 bytes: 2..5
        assert_eq!(truncate(s, 3), "ab");
        assert_eq!(truncate(s, 5), "ab\u{FFFD}");
        assert_eq!(truncate(s, 99), s);
        let f = Finding::new("x", 1, &"\u{FFFD}".repeat(MAX_FINDING_TEXT));
        assert!(f.text.len() <= MAX_FINDING_TEXT && f.text.chars().all(|c| c == '\u{FFFD}'));
    }

    #[test]
    fn start_job_redraws_reach_unit_stuck_through_the_cleaner() {
        let mut raw = b"[  OK  ] Reached target Basic System.\r\n".to_vec();
        for s in 0..200 {
            raw.extend_from_slice(
                format!(
                    "\r\x1b[K[ ***  ] A start job is running for Pre-NixOS setup ({}min {}s / no limit)",
                    s / 60,
                    s % 60
                )
                .as_bytes(),
            );
        }
        let d = run(&crate::strip_escapes::clean_all(&raw));
        assert!(ids(&d).contains(&"unit-stuck"), "{:?}", ids(&d));
    }

    fn ids(d: &Detector) -> Vec<&'static str> {
        d.findings().iter().map(|f| f.id).collect()
    }

    fn phases(d: &Detector) -> Vec<Phase> {
        d.timeline().iter().map(|e| e.phase).collect()
    }

    const HEALTHY: &str = "\
ISOLINUX 6.04 20200816  Copyright (C) 1994-2015 H. Peter Anvin et al
Automatic boot in 3 seconds...
Loading /boot/bzImage... ok
Loading /boot/initrd...ok
[    0.000000] Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org)
[    0.000000] Command line: init=/init console=tty0 console=ttyS0,115200
[    2.828042] Run /init as init process
<<< NixOS Stage 1 >>>
<<< NixOS Stage 2 >>>
Welcome to NixOS 24.11 (Vicuna)!
[  OK  ] Started pre-nixos.service.
<<< Welcome to NixOS 24.11.fixture (x86_64) - ttyS0 >>>

nixos login: nixos (automatic login)

[nixos@nixos:~]$ pre-nixos: applied: created VG main with LV slash on /dev/vda
[nixos@nixos:~]$ sudo -i
[root@nixos:~]# dmesg | head -3
[    0.000000] Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org)
[    0.000000] Command line: init=/init console=tty0 console=ttyS0,115200
[    2.828042] Run /init as init process
[root@nixos:~]# poweroff
[   42.100000] reboot: Power down";

    #[test]
    fn healthy_boot_walks_every_phase_once() {
        let d = run(HEALTHY);
        assert_eq!(
            phases(&d),
            [Phase::Bootloader, Phase::Kernel, Phase::Init, Phase::Login, Phase::Shell, Phase::Root, Phase::Poweroff]
        );
        // The dmesg replay at the root prompt (older kernel times, boot messages) changes
        // neither the phase nor the kernel clock.
        let lines: Vec<usize> = d.timeline().iter().map(|e| e.line).collect();
        assert_eq!(lines, [1, 5, 7, 14, 16, 18, 23]);
        assert_eq!(d.timeline()[2].offset_secs, Some(2.828042));
        assert_eq!(d.timeline()[6].offset_secs, Some(42.1));
        assert!(ids(&d).contains(&"autologin-not-root"));
        assert!(ids(&d).contains(&"powered-off-cleanly"));
        assert!(!ids(&d).contains(&"login-prompt"));
        assert!(!ids(&d).contains(&"kernel-panic"));
    }

    #[test]
    fn echoed_commands_do_not_match_but_broadcasts_after_a_prompt_do() {
        let d = run("[nixos@nixos:~]$ echo 'Kernel panic - not syncing' reboot: Power down\n\
                     [nixos@nixos:~]$ pre-nixos: failed: lvcreate exited 5\n");
        assert_eq!(ids(&d), ["provisioning-failed"]);
        assert_eq!(d.phase(), Phase::Shell);
    }

    #[test]
    fn output_after_a_bare_prompt_is_matched() {
        // vm-test's shell: PS1='$ ', echo off, so output follows the prompt on its line.
        let d = run("[nixos@nixos:~]$ stty -echo; PS1='$ '\n$ q1|  WARNING: Running as a non-root user.\n");
        assert_eq!(ids(&d), ["not-root"]);
        assert_eq!(d.phase(), Phase::Shell);
    }

    #[test]
    fn silent_after_initrd_is_named() {
        let d = run("ISOLINUX 6.04 20200816\nLoading /boot/bzImage... ok\nLoading /boot/initrd...ok\n");
        assert_eq!(d.phase(), Phase::Bootloader);
        assert_eq!(ids(&d), ["serial-silent-after-bootloader"]);
        assert_eq!(d.findings()[0].line, 3);
        assert_eq!(d.findings()[0].text, "Loading /boot/initrd...ok");
    }

    #[test]
    fn grub_and_efi_boots() {
        let d = run("BdsDxe: loading Boot0001 \"UEFI QEMU DVD-ROM QM00003 \" from PciRoot(0x0)\n\
                     GNU GRUB  version 2.12\nBooting `NixOS 25.05 Installer'\n");
        assert_eq!(d.phase(), Phase::Bootloader);
        assert_eq!(ids(&d), ["serial-silent-after-bootloader"]);
        assert_eq!(run("Welcome to GRUB!\n").phase(), Phase::Bootloader);
        assert_eq!(run("Welcome to Debian GNU/Linux 12 (bookworm)!\n").phase(), Phase::Init);
        let d = run("GNU GRUB  version 2.12\nEFI stub: Loaded initrd from LINUX_EFI_INITRD_MEDIA_GUID device path\n");
        assert_eq!(d.phase(), Phase::Kernel);
    }

    /// The harness moves the phase on by itself (QEMU started → bootloader); silence then
    /// must not be read as a banner or kernel lines nobody printed.
    #[test]
    fn silence_claims_only_what_the_text_shows() {
        for phase in [Phase::Bootloader, Phase::Kernel] {
            let mut d = Detector::new();
            d.advance(phase, 0);
            assert_eq!(d.silence(), [], "{phase}: nothing was printed");
        }
        let mut d = Detector::new();
        d.feed_line(1, "some firmware noise");
        d.advance(Phase::Bootloader, 1);
        assert_eq!(d.silence(), [], "text that is no bootloader banner");
        d.feed_line(2, "ISOLINUX 6.04 20200816");
        d.silence();
        assert_eq!(ids(&d), ["bootloader-stuck"]);
    }

    #[test]
    fn bootloader_without_loading_is_stuck() {
        let d = run("ISOLINUX 6.04 20200816\nAutomatic boot in 3 seconds...\n");
        assert_eq!(ids(&d), ["bootloader-stuck"]);
    }

    #[test]
    fn console_order_from_the_command_line() {
        let d = run("[    0.000000] Kernel command line: init=/init console=ttyS0,115200 console=tty0\n");
        assert_eq!(ids(&d), ["console-not-last"]);
        let d = run("[    0.000000] Kernel command line: console=tty0 console=ttyS0,115200n8\n[ 1.0] x\n");
        assert_eq!(ids(&d), ["kernel-stalled"]);
    }

    #[test]
    fn field_note_tells_map_to_ids() {
        let cases: &[(&str, &str)] = &[
            ("qemu-system-x86_64: -netdev user,id=net0,hostfwd=tcp:127.0.0.1:51997-:22: Could not set up host forwarding rule 'tcp:127.0.0.1:51997-:22'", "qemu-start-failed"),
            ("qemu-system-x86_64: -drive file=d.img,if=virtio,format=raw: Failed to get \"write\" lock", "qemu-start-failed"),
            ("[    3.100000] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)", "kernel-panic"),
            ("You are in emergency mode. After logging in, type \"journalctl -xb\" to view", "emergency-mode"),
            ("An error occurred in stage 1 of the boot process, which must mount a root filesystem on /mnt-root", "emergency-mode"),
            ("Call to PowerOff failed: Interactive authentication required.", "not-root"),
            ("  WARNING: Running as a non-root user. Functionality may be unavailable.", "not-root"),
            ("  /run/lock/lvm/P_global:aux: open failed: Permission denied", "not-root"),
            ("pre-nixos: Storage detection encountered an error; provisioning ran in plan-only mode.", "storage-detection-error"),
            ("pre-nixos: storage detection failed (exit 2), defaulting to plan-only", "storage-detection-error"),
            ("pre-nixos: Provisioning failed.", "provisioning-failed"),
            ("STATE=failed", "provisioning-failed"),
            ("  Volume group \"main\" has insufficient free space (0 extents): 1 required.", "provisioning-failed"),
            ("error: file 'nixpkgs' was not found in the Nix search path (add it using $NIX_PATH or -I)", "provisioning-failed"),
            ("Failed to restart systemd-networkd.service: Unit systemd-networkd.service not found.", "unit-not-found"),
            ("[  *** ] A start job is running for Pre-NixOS setup (3min 2s / no limit)", "unit-stuck"),
            ("     Active: activating (start) since Sat 2025-10-11 10:00:00 UTC; 8min ago", "unit-stuck"),
            ("     Active: activating (start) since Sat 2025-10-11 10:00:00 UTC; 1h 0min ago", "unit-stuck"),
            ("[ ***  ] A stop job is running for Session 1 of user nixos (1h 2min / no limit)", "unit-stuck"),
            ("[sudo] password for nixos: ", "escalation-failed"),
            ("nixos is not in the sudoers file.  This incident will be reported.", "escalation-failed"),
            ("su: Authentication failure", "escalation-failed"),
            ("-bash: root: command not found", "command-not-found"),
            ("warning: error: unable to download 'https://cache.nixos.org/nix-cache-info': Could not connect to server (7)", "nix-download-failed"),
            ("[   75.123456] I/O error, dev fd0, sector 0 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 2", "floppy-io-error"),
            ("pre-nixos: Existing storage detected; provisioning ran in plan-only mode.", "storage-plan-only"),
            ("LAN IPv4 address unavailable (preferred interface \"lan\" not found)", "lan-ipv4-unavailable"),
            ("[  OK  ] Finished systemd-poweroff.service.\n[   95.000000] reboot: Power down", "powered-off-cleanly"),
            ("[FAILED] Failed to start Pre-NixOS setup.", "unit-failed"),
            ("[  FAILED ] Failed to start Pre-NixOS setup.", "unit-failed"),
            ("[  123.000000] Out of memory: Killed process 886 (nix)", "oom-killer"),
        ];
        for (text, id) in cases {
            let mut d = Detector::new();
            for (i, line) in text.split('\n').enumerate() {
                d.feed_line(i + 1, line);
            }
            assert!(ids(&d).contains(id), "{text:?} should give {id}, got {:?}", ids(&d));
            assert!(signature(id).is_some());
        }
    }

    /// Each new catalogue id from the exact text of the program that prints it (file in the
    /// comment), with what the finding names.
    #[test]
    fn catalogue_tells_from_the_printing_sources() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            // nixpkgs nixos/modules/system/boot/stage-1-init.sh
            ("Timed out waiting for device /dev/disk/by-label/nixos, trying to mount anyway.", "root-device-missing", Some("/dev/disk/by-label/nixos")),
            // BusyBox util-linux/mount.c via stage 1, and util-linux's mount(8)
            ("mount: mounting /dev/disk/by-label/nixos on /mnt-root/ failed: No such file or directory", "root-device-missing", Some("/dev/disk/by-label/nixos")),
            ("mount: /mnt-root: special device /dev/vda1 does not exist.", "root-device-missing", Some("/dev/vda1")),
            // the kernel: init/do_mounts.c
            ("[    2.1] VFS: Cannot open root device \"vda1\" or unknown-block(0,0): error -6", "root-device-missing", Some("vda1")),
            ("[    2.2] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)", "root-device-missing", Some("unknown-block(0,0)")),
            // systemd initrd: /sysroot's mount depends on the device that timed out
            ("[DEPEND] Dependency failed for /sysroot.", "root-device-missing", Some("/sysroot")),
            ("stage 2 init script (/mnt-root//nix/store/x-nixos-system/init) not found", "stage2-init-missing", Some("/mnt-root//nix/store/x-nixos-system/init")),
            // systemd src/core/dbus-manager.c
            ("Failed to switch root: Specified switch root path '/sysroot' does not seem to be an OS tree. os-release file is missing.", "stage2-init-missing", Some("/sysroot")),
            // nixpkgs nixos/modules/system/activation/activation-script.nix
            ("Activation script snippet 'users' failed (1)", "activation-failed", Some("users")),
            // systemd src/core/job.c, service.c
            ("[FAILED] Failed to start pre-nixos.service - Pre-NixOS setup.", "unit-failed", Some("pre-nixos.service - Pre-NixOS setup")),
            ("[FAILED] Failed to mount /data.", "unit-failed", Some("/data")),
            ("pre-nixos.service: Failed with result 'exit-code'.", "unit-failed", Some("pre-nixos.service")),
            ("[DEPEND] Dependency failed for Local File Systems.", "dependency-failed", Some("Local File Systems")),
            // device.c, mount.c, manager.c
            ("[ TIME ] Timed out waiting for device /dev/disk/by-uuid/9e2b.", "unit-stuck", Some("/dev/disk/by-uuid/9e2b")),
            ("[ TIME ] Timed out mounting /data.", "unit-stuck", Some("/data")),
            ("[ ***  ] Job pre-nixos.service/start running (2min 3s / no limit)", "unit-stuck", Some("pre-nixos.service")),
            ("[  *** ] (1 of 2) A start job is running for Pre-NixOS setup (3min 2s / no limit)", "unit-stuck", Some("Pre-NixOS setup")),
            // kernel/hung_task.c
            ("[  243.5] INFO: task systemd-udevd:212 blocked for more than 122 seconds.", "hung-task", Some("systemd-udevd:212")),
            // networkctl, iproute2/BusyBox ip, `ip link` with a NIC nobody brought up
            ("Interface \"lan\" not found.", "lan-interface-missing", Some("lan")),
            ("Device \"lan\" does not exist.", "lan-interface-missing", Some("lan")),
            ("2: ens4: <BROADCAST,MULTICAST> mtu 1500 qdisc noop state DOWN mode DEFAULT group default qlen 1000", "lan-interface-missing", Some("ens4 is DOWN")),
            // QEMU system/runstate.c
            ("qemu-system-x86_64: terminating on signal 15 from pid 4321 (timeout)", "qemu-killed", Some("signal 15 from pid 4321 (timeout)")),
            // less: a prompt redrawn (keys went in), its error()
            ("lines 1-23/41 56%\nlines 2-24/41 58%", "console-in-pager", Some("less")),
            ("Pattern not found  (press RETURN)", "console-in-pager", Some("less")),
            // bash after autologin, before the first prompt
            ("nixos login: nixos (automatic login)\n-bash: /etc/profile: line 12: syntax error near unexpected token `fi'", "login-shell-errors", None),
        ];
        for (text, id, subject) in cases {
            let d = run(text);
            let f = d.findings().iter().find(|f| f.id == *id);
            assert!(f.is_some(), "{text:?} should give {id}, got {:?}", ids(&d));
            assert_eq!(f.unwrap().subject.as_deref(), *subject, "{text:?}");
        }
    }

    /// Bootloaders reporting that they cannot load or start an image; GRUB's `error:` counts
    /// only while the bootloader runs.
    #[test]
    fn bootloaders_that_fail_say_so() {
        for log in [
            "GNU GRUB  version 2.12\nerror: file `/kernels/x-bzImage' not found.\nerror: you need to load the kernel first.\n",
            "Welcome to GRUB!\nerror: ../../grub-core/kern/efi/sb.c:182:bad shim signature.\n  Failed to boot both default and fallback entries.\n",
            "ISOLINUX 6.04 20200816\nCould not find kernel image: /boot/bzImage\nboot: \n",
            "SYSLINUX 6.04 EDD 20200816\nFailed to load ldlinux.c32\nBoot failed: please change disks and press a key to continue.\n",
            "U-Boot 2024.01 (Jan 08 2024 - 00:00:00 +0000)\nBad Linux ARM64 Image magic!\n=> \n",
            "U-Boot 2024.01 (Jan 08 2024)\nSkipping NixOS - Default for failure retrieving kernel\n",
            "iPXE initialising devices...ok\nCould not boot image: Exec format error (https://ipxe.org/2e008081)\n",
        ] {
            let d = run(log);
            assert_eq!(d.phase(), Phase::Bootloader, "{log}");
            // The failure explains the silence: no bootloader-stuck on top.
            assert_eq!(ids(&d), ["bootloader-failed"], "{log}");
        }
        let d = run("[    0.0] Linux version 6\nerror: file 'nixpkgs' was not found in the Nix search path");
        assert!(!ids(&d).contains(&"bootloader-failed"), "{:?}", ids(&d));
        // U-Boot that started the kernel and then went quiet.
        let d = run("U-Boot 2024.01 (Jan 08 2024)\nHit any key to stop autoboot:  0\n\nStarting kernel ...\n");
        assert_eq!(ids(&d), ["serial-silent-after-bootloader"]);
    }

    /// The furthest phase comes from the evidence present, not from where a log starts.
    #[test]
    fn phase_from_the_evidence_in_an_excerpt() {
        let cases: &[(&str, Phase)] = &[
            ("[   12.345678] virtio_blk virtio1: [vda] 8388608 512-byte logical blocks", Phase::Kernel),
            ("running udev...", Phase::Init),
            ("loading module virtio_blk...", Phase::Init),
            ("[  OK  ] Reached target Local File Systems.", Phase::Init),
            ("[DEPEND] Dependency failed for /data.", Phase::Init),
            ("[   3.1] systemd[1]: Started Journal Service.", Phase::Init),
            ("[   3.9] stage-1-init: [Sat Oct 11 10:00:03 UTC 2025] running udev...", Phase::Init),
            ("Oct 11 10:00:00 nixos kernel: Linux version 6.12.54", Phase::Kernel),
            ("Oct 11 10:00:06 nixos systemd[1]: Started Journal Service.", Phase::Init),
            ("Oct 11 10:00:07 nixos login[1012]: pam_unix(login:session): session opened for user nixos(uid=1000) by LOGIN(uid=0)", Phase::Login),
            ("SeaBIOS (version 1.16.2-debian-1.16.2-1)", Phase::Bootloader),
            ("iPXE 1.21.1+ (g9e1b) -- Open Source Network Boot Firmware", Phase::Bootloader),
            ("BdsDxe: loading Boot0001 \"UEFI QEMU DVD-ROM QM00003 \" from PciRoot(0x0)", Phase::Bootloader),
            ("U-Boot 2024.01 (Jan 08 2024 - 00:00:00 +0000)", Phase::Bootloader),
            ("Starting kernel ...", Phase::Bootloader),
        ];
        for (text, phase) in cases {
            let d = run(text);
            assert_eq!(d.phase(), *phase, "{text}");
            assert_eq!(d.timeline().last().map(|e| e.line), Some(1), "{text}");
        }
        // A kernel-timestamped systemd line shows both the kernel and init.
        let d = run("[   3.1] systemd[1]: Started Journal Service.");
        assert_eq!(phases(&d), [Phase::Kernel, Phase::Init]);
    }

    /// Findings say where their text came from; journal and OCR'd lines are normalised.
    #[test]
    fn findings_name_their_source() {
        let d = run("Oct 11 10:00:31 nixos systemd[1]: Failed to start Pre-NixOS setup.\n\
                     [FAILED 1 Fai1ed t0 start Load Kernel Modules.\n[FAILED] Failed to mount /data.\n");
        let f = &d.findings()[0];
        assert_eq!((f.id, f.source), ("unit-failed", Source::Journal));
        // The finding quotes the line as written.
        assert!(f.text.starts_with("Oct 11 10:00:31 nixos systemd[1]:"), "{}", f.text);
        // The OCR'd bracket switched the rest of the input to screen text.
        let mut d = Detector::new();
        d.feed_line(1, "[ 0K J Reached target Network.");
        d.feed_line(2, "[FAILED] Fai1ed t0 start Pre-NixOS setup.");
        assert_eq!(
            (d.findings()[0].source, d.findings()[0].subject.as_deref()),
            (Source::Screen, Some("Pre-NixOS setup"))
        );
        // `analyze --source journal` reads `journalctl -o cat` (no prefixes).
        let mut d = Detector::with_source(Some(Source::Journal));
        d.feed_line(1, "Dependency failed for /data.");
        assert_eq!(ids(&d), ["dependency-failed"]);
        let mut d = Detector::new();
        d.feed_line(1, "Dependency failed for /data.");
        assert!(ids(&d).is_empty(), "bare text is no journal in auto mode");
    }

    /// The end of a journal is no stall: no silence verdicts. A serial log that ends while
    /// stage 1 waits for its device, or in a pager, is one.
    #[test]
    fn silence_verdicts_depend_on_the_source() {
        let d = run("Oct 11 10:00:00 nixos kernel: Linux version 6.12.54");
        assert_eq!(d.phase(), Phase::Kernel);
        assert!(ids(&d).is_empty(), "{:?}", ids(&d));
        let d = run("running udev...\nwaiting for device /dev/disk/by-label/nixos to appear.......");
        assert_eq!(ids(&d), ["root-device-missing"]);
        let d =
            run("waiting for device /dev/disk/by-label/nixos to appear..\nmounting /dev/disk/by-label/nixos on /...");
        assert!(ids(&d).is_empty(), "the device appeared: {:?}", ids(&d));
        let d = run("[root@nixos:~]# systemctl status x\nlines 1-23/41 56%");
        assert_eq!(ids(&d), ["console-in-pager"]);
        let d = run("[root@nixos:~]# systemctl status x\nlines 1-23/41 56%\n[root@nixos:~]# ");
        assert!(ids(&d).is_empty(), "the pager was left: {:?}", ids(&d));
        let d = run(
            "[root@nixos:~]# git log\nWARNING: terminal is not fully functional\n-  (press RETURN)\n[root@nixos:~]# ",
        );
        assert!(ids(&d).is_empty(), "less's start-up warning is no key: {:?}", ids(&d));
    }

    /// `lan` seen later (renamed, listed, addressed) withdraws `lan-interface-missing`.
    #[test]
    fn lan_that_appears_later_is_not_missing() {
        let d = run("[root@nixos:~]# ip -o -4 addr show dev lan\nDevice \"lan\" does not exist.\n\
                     [   41.9] virtio_net virtio0 lan: renamed from ens4\n");
        assert!(ids(&d).is_empty(), "{:?}", ids(&d));
        let d = run("2: lan: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 state UP\n\
                     3: ens5: <BROADCAST,MULTICAST> mtu 1500 qdisc noop state DOWN\n1: lo: <LOOPBACK> mtu 65536 state DOWN");
        assert!(ids(&d).is_empty(), "{:?}", ids(&d));
    }

    /// Start-up errors count only between the login and the first prompt (and after an
    /// echoed `sudo -i`); later the same text is a command's error.
    #[test]
    fn login_shell_errors_only_while_the_shell_starts() {
        let d = run("nixos login: nixos (automatic login)\n-bash: warning: setlocale: LC_ALL: cannot change locale (en_US.UTF-8)\n[nixos@nixos:~]$ ");
        assert_eq!(ids(&d), ["autologin-not-root", "login-shell-errors"]);
        let d = run("[nixos@nixos:~]$ root\n-bash: root: command not found\n");
        assert_eq!(ids(&d), ["command-not-found"]);
        let d = run("[nixos@nixos:~]$ sudo -i\n-bash: /root/.bashrc: line 3: x: command not found\n[root@nixos:~]# ");
        assert_eq!(ids(&d), ["login-shell-errors"]);
    }

    /// systemd names the unit after a failed start; the finding names both.
    #[test]
    fn failed_unit_is_named() {
        let d = run("[FAILED] Failed to start Pre-NixOS setup.\nSee 'systemctl status pre-nixos.service' for details.");
        assert_eq!(d.findings()[0].subject.as_deref(), Some("pre-nixos.service (Pre-NixOS setup)"));
        let d = run("× pre-nixos.service - Pre-NixOS setup\n     Loaded: loaded (/etc/systemd/system/pre-nixos.service; enabled)\n     Active: failed (Result: exit-code) since Sat 2025-10-11 10:00:31 UTC; 2min ago");
        assert_eq!(
            (d.findings()[0].id, d.findings()[0].subject.as_deref()),
            ("unit-failed", Some("pre-nixos.service"))
        );
    }

    #[test]
    fn short_start_jobs_and_warnings_are_not_findings() {
        let d = run("[    0.0] Linux version 6\n[  *** ] A start job is running for Firewall (58s / no limit)\n\
                     [  *** ] A start job is running for Firewall (1min 10s / no limit)\n\
                     qemu-system-x86_64: warning: host doesn't support requested feature\nWelcome to NixOS!");
        assert!(ids(&d).is_empty(), "{:?}", ids(&d));
    }

    #[test]
    fn qemu_error_before_any_output_is_a_start_failure_later_it_is_not() {
        let d = run("qemu-system-x86_64: -drive file=d.img: Could not open 'd.img': No such file or directory");
        assert_eq!(ids(&d), ["qemu-start-failed"]);
        let d = run("ISOLINUX 6.04\nLoading /boot/bzImage... ok\n[    0.0] Linux version 6\nqemu-system-x86_64: terminating on signal 15 from pid 1");
        assert!(ids(&d).contains(&"qemu-killed"), "{:?}", ids(&d));
        assert_eq!(d.findings()[0].subject.as_deref(), Some("signal 15 from pid 1"));
    }

    #[test]
    fn login_prompt_without_autologin() {
        let d = run("Welcome to NixOS!\nnixos login: ");
        assert_eq!(d.phase(), Phase::Login);
        assert_eq!(ids(&d), ["login-prompt"]);
        let d = run("Welcome to NixOS!\nnixos login: root\nPassword: \n[root@nixos:~]# ");
        assert_eq!(ids(&d), ["login-prompt"]);
        assert_eq!(d.phase(), Phase::Root);
    }

    #[test]
    fn permission_denied_counts_only_at_a_user_shell() {
        let d = run("[root@nixos:~]# \ncat: /x: Permission denied\n");
        assert!(ids(&d).is_empty());
        let d = run("[nixos@nixos:~]$ \nlvs: Permission denied\n");
        assert_eq!(ids(&d), ["not-root"]);
    }

    #[test]
    fn busybox_and_debian_prompts() {
        assert_eq!(run("~ # ").phase(), Phase::Root);
        assert_eq!(run("user@host:~$ ").phase(), Phase::Shell);
        assert_eq!(run("root@host:/tmp# ls").phase(), Phase::Root);
        assert_eq!(run("[nixos@nixos:~]$ \n$ -bash-5.2# $ q1|0").phase(), Phase::Root);
        assert_eq!(run("-bash-5.2$ ").phase(), Phase::Shell);
        // A bare `# ` is too common in command output (comments) to count as a prompt.
        assert_eq!(run("# comment").phase(), Phase::Qemu);
    }

    #[test]
    fn every_rule_and_harness_id_is_in_the_catalogue() {
        for id in [
            "qemu-start-failed",
            "qemu-exited",
            "serial-silent-after-bootloader",
            "serial-console-missing",
            "console-not-last",
            "kernel-panic",
            "emergency-mode",
            "autologin-not-root",
            "login-prompt",
            "escalation-failed",
            "not-root",
            "storage-detection-error",
            "provisioning-failed",
            "storage-plan-only",
            "unit-not-found",
            "unit-stuck",
            "guest-unresponsive",
            "phase-timeout",
            "check-failed",
            "powered-off-cleanly",
            "not-bootable",
            "no-serial-output",
            "host-disk-full",
            "io-error",
            "root-device-missing",
            "stage2-init-missing",
            "activation-failed",
            "unit-failed",
            "dependency-failed",
            "hung-task",
            "bootloader-failed",
            "lan-interface-missing",
            "console-in-pager",
            "qemu-killed",
            "login-shell-errors",
        ] {
            assert!(signature(id).is_some(), "{id} missing");
        }
        let mut seen = std::collections::HashSet::new();
        for s in catalogue() {
            assert!(seen.insert(s.id), "duplicate id {}", s.id);
            assert!(s.cause.ends_with('.') && s.fix.ends_with('.'), "{}", s.id);
        }
        for (id, _) in RULES {
            let special = [
                "qemu-line",
                "unit-stuck-job",
                "unit-stuck-status",
                "unit-failed-status",
                "unit-status-head",
                "unit-see-status",
                "not-root-denied",
                "console-cmdline",
                "bootloader-error",
                "nic-down",
                "lan-present",
                "pager-open",
                "pager-input",
                "shell-error",
            ];
            assert!(special.contains(id) || signature(id).is_some(), "rule {id}");
        }
    }

    #[test]
    fn flood_is_reported_once_and_huge_lines_are_cheap() {
        let mut d = Detector::new();
        for i in 0..12_000 {
            d.feed_line(i + 1, "[  OK  ] spam");
        }
        d.feed_line(12_001, &"x".repeat(5_000_000));
        assert_eq!(ids(&d), ["serial-flood"]);
        assert_eq!(d.last_text.len(), MAX_FINDING_TEXT);
    }

    /// Throughput on a generated 20 MB flood (run with `--nocapture` to see the figure).
    #[test]
    fn twenty_megabytes_in_linear_time() {
        let mut log = String::from(HEALTHY.split("[nixos@nixos").next().unwrap());
        let mut n = 0usize;
        while log.len() < 20_000_000 {
            n += 1;
            log.push_str(&format!(
                "[{:>5}.{:06}] virtio_net virtio0 ens4: flood line {n} with some payload text to be realistic\n",
                10 + n / 1000,
                n % 1000
            ));
            if n.is_multiple_of(7) {
                log.push_str("[  *** ] A start job is running for Pre-NixOS setup (0min 5s / no limit)\n");
            }
        }
        log.push_str("[nixos@nixos:~]$ \n");
        let start = std::time::Instant::now();
        let d = run(&log);
        let elapsed = start.elapsed();
        eprintln!(
            "detector: {:.1} MB, {} lines in {:.3} s ({:.0} MB/s)",
            log.len() as f64 / 1e6,
            log.lines().count(),
            elapsed.as_secs_f64(),
            log.len() as f64 / 1e6 / elapsed.as_secs_f64()
        );
        assert_eq!(d.phase(), Phase::Shell);
    }
}
