//! vm-test's flags, and every deadline and stall window derived from them in one place.

use super::*;
use crate::accel::AccelChoice;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Boot this ISO file
    #[arg(long, value_name = "PATH", conflicts_with = "image")]
    pub iso: Option<Utf8PathBuf>,
    /// Boot a fixture ISO: `fixture` (busybox) or `fixture-systemd` (real systemd), optionally a
    /// fault variant (`fixture:kernel-panic`, `fixture-systemd:unit-deadlock`); built if needed.
    /// A comma list with --matrix
    #[arg(long, value_name = "fixture[-systemd][:FAULT]")]
    pub image: Option<String>,
    /// With neither --iso nor --image: boot the last `build-image` result instead of building
    #[arg(long)]
    pub no_build: bool,
    /// Accelerator: auto probes KVM by booting a kernel and falls back to TCG
    #[arg(long, value_name = "auto|kvm|tcg", value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// Guest memory in MiB [default: 1024 for the fixture, 2048 otherwise]
    #[arg(long, value_name = "MIB")]
    pub memory: Option<u32>,
    /// Guest CPUs
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub cpus: u32,
    /// Log in at a plain `login:` prompt (images without autologin); the password also
    /// answers sudo/su prompts
    #[arg(long, value_name = "USER[:PASSWORD]")]
    pub login: Option<Credentials>,
    /// Disks to attach, and the outcome of the provisioning service (scripts/pre-nixos.sh) the
    /// checks require for them. A comma list with --matrix
    #[arg(long, value_name = "blank|none|existing|two", value_enum, value_delimiter = ',', default_value = "blank")]
    pub disk: Vec<Scenario>,
    /// Firmware: bios (SeaBIOS → ISOLINUX) or uefi (OVMF on q35 → GRUB; OVMF from the `ovmf`
    /// package). A comma list with --matrix
    #[arg(long, value_name = "bios|uefi", value_enum, value_delimiter = ',', default_value = "bios")]
    pub firmware: Vec<Firmware>,
    /// Run every combination of the comma lists given to --image, --firmware and --disk, each
    /// cell a vm-test of its own (own run directory, sockets, disks, port), --jobs at a time;
    /// one summary table and one junit.xml
    #[arg(long)]
    pub matrix: bool,
    /// Cells run at once with --matrix [default: the host's cores per guest's CPUs under TCG,
    /// the host's cores under KVM]
    #[arg(long, value_name = "N", requires = "matrix")]
    pub jobs: Option<usize>,
    /// Leave QEMU running at the end and print how to attach to its serial console and QMP
    #[arg(long)]
    pub keep: bool,
    /// Do not check the ISO's El Torito boot entry and boot configuration before booting
    #[arg(long)]
    pub skip_preflight: bool,
    /// File serial log and report under docs/ afterwards (`cargo xtask archive-logs`)
    #[arg(long)]
    pub archive: bool,
    /// Run directory [default: target/vm-runs/<UTC timestamp>]
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<Utf8PathBuf>,
    /// Seconds from QEMU start until the login line must appear
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub boot_timeout: u64,
    /// Seconds without serial output that end the bootloader and kernel phases (init gets at
    /// least 120 s: systemd units can be silent that long under TCG; login and the shell use
    /// fixed step waits and --command-timeout)
    #[arg(long, value_name = "SECS", default_value_t = 45)]
    pub stall: u64,
    /// Seconds one guest command may take before the guest counts as unresponsive
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub command_timeout: u64,
    /// Seconds to wait for /run/pre-nixos/storage-status (and for the unit to finish)
    #[arg(long, value_name = "SECS", default_value_t = 420)]
    pub storage_timeout: u64,
    /// Seconds to wait for IPv4 on `lan`; the `LAN IPv4 address:` console line then gets up to min(this, 60) s more
    #[arg(long, value_name = "SECS", default_value_t = 240)]
    pub network_timeout: u64,
    /// Screenshots of the guest's screen (a VGA device nobody sees): `verdict` takes one when a
    /// run fails, before QEMU stops, and reads it with OCR when tesseract is installed;
    /// `every:SECS` also takes one every SECS seconds into screens/; `off` takes none
    #[arg(long, value_name = "verdict|every:SECS|off", default_value = "verdict")]
    pub screens: screen::Policy,
    /// Run CMD as root after the built-in checks (repeatable), framed like every command: its
    /// output and exit code go to the transcript, report and JUnit (a testcase each); a non-zero
    /// exit fails the run unless written `allow-fail: CMD`
    #[arg(long = "run", value_name = "CMD")]
    pub run: Vec<checks::OwnCommand>,
    /// Commands to run like --run, one per line (blank lines and `#` comments skipped)
    #[arg(long, value_name = "FILE")]
    pub run_file: Option<Utf8PathBuf>,
    /// When the run fails, hand this terminal to the guest's serial console (as `attach` does:
    /// Ctrl-] ends it) once the run's records are written; then power the VM off (unless
    /// --keep). Needs a terminal on stdin
    #[arg(long)]
    pub interact_on_failure: bool,
    /// Let the bootloader's menu count down (10 s on NixOS) instead of pressing Enter as soon as it shows
    #[arg(long)]
    pub bootloader_wait: bool,
    /// When preflight finds the default entry without console=ttyS0 last, do not edit the entry at
    /// the menu to boot with it anyway: predict the silence and stop before booting
    #[arg(long)]
    pub no_rescue: bool,
    /// A run the serial rescue saved passes with a warning (exit 0) instead of failing on the image's
    /// console defect (exit 1)
    #[arg(long, conflicts_with = "no_rescue")]
    pub allow_rescue: bool,
}

/// Every deadline and stall window of a run, derived from the flags in one place.
pub(super) struct Timeouts {
    pub(super) boot: boot::Timeouts,
    pub(super) login: login::Timeouts,
    pub(super) checks: checks::Timeouts,
}

impl From<&Args> for Timeouts {
    fn from(args: &Args) -> Timeouts {
        let secs = Duration::from_secs;
        Timeouts {
            boot: boot::Timeouts {
                boot: secs(args.boot_timeout),
                stall: secs(args.stall),
                init_stall: secs(args.stall.max(120)),
            },
            login: login::Timeouts { step: secs(30), command: secs(args.command_timeout) },
            checks: checks::Timeouts {
                command: secs(args.command_timeout),
                storage: secs(args.storage_timeout),
                network: secs(args.network_timeout),
                unit: secs(args.storage_timeout),
                // Last check: pre-nixos announces the address as soon as `lan` has one, which
                // the checks before have already waited for.
                serial_line: secs(args.network_timeout.min(60)),
            },
        }
    }
}
