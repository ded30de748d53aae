//! `cargo xtask vm-test` — boot an ISO in QEMU, follow the boot on the serial console, reach a
//! verified root shell, run the boot-image checks, power off, and leave a complete record in
//! `target/vm-runs/<UTC>/`. Every failure names its phase, the likely cause and the fix.
//!
//! The layers live in `crate::vm` (QEMU → serial → boot → login → shell → checks → record);
//! this module holds the flags, the order of the phases and the terminal output.

mod args;
mod image;
mod summary;

pub use args::Args;
pub use image::parse_image;

use crate::accel::Accel;
use crate::diagnose::{Finding, Phase, Source};
use crate::vm::boot;
use crate::vm::bootmenu::{self, Drive};
use crate::vm::checks;
use crate::vm::disks::{self, Expect, Scenario};
use crate::vm::events::{Event, Sink};
use crate::vm::guest::Guest;
use crate::vm::login::{self, Credentials};
use crate::vm::machine::{self, DiskFile, Machine};
use crate::vm::preflight::Level;
use crate::vm::progress::Progress;
use crate::vm::qemu::{self, Firmware, Qemu, Spec};
use crate::vm::record::{
    CheckStatus, Image, Milestone, PhaseStatus, QemuInfo, Record, SeenLine, SerialSummary, TimeoutSecs,
};
use crate::vm::screen;
use crate::vm::serial::{Serial, Stop, Wait};
use crate::vm::transcript::Transcript;
use crate::vm::verdict::{Failure, Outcome};
use crate::{exit, project, ui};
use anyhow::Result;
use args::Timeouts;
use camino::{Utf8Path, Utf8PathBuf};
use image::record_image;
use regex::Regex;
use std::fmt::Write as _;
use std::time::{Duration, Instant};
use summary::{archive, print_attach, print_summary};

pub fn run(mut args: Args) -> Result<u8> {
    if args.matrix {
        return crate::matrix::run(args);
    }
    // Flag mistakes are usage errors (exit 2), found before anything is created.
    if let Some(image) = &args.image {
        parse_image(image)?;
    }
    // SAFETY: isatty only inspects the descriptor.
    if args.interact_on_failure && unsafe { libc::isatty(libc::STDIN_FILENO) } != 1 {
        return Err(exit::usage(
            "--interact-on-failure needs a terminal on stdin to hand over, and stdin is not one \
             (a pipe, a file, or CI); leave the flag out there — the run directory has the evidence",
        ));
    }
    if let Some(file) = &args.run_file {
        let text = fs_err::read_to_string(file).map_err(|e| exit::usage(format!("--run-file: {e}")))?;
        let commands = checks::parse_run_file(&text).map_err(|e| exit::usage(format!("--run-file {file}: {e}")))?;
        args.run.extend(commands);
    }
    let disk = *single(&args.disk, "--disk")?;
    single(&args.firmware, "--firmware")?;
    if args.keep && disk == Scenario::Existing {
        return Err(exit::usage("--keep with --disk existing: keep the second boot's VM by hand; drop --keep"));
    }
    if let Some(d) = &args.run_dir {
        refuse_used_run_dir(d)?;
    }
    let _interrupt = crate::interrupt::Guard::install();
    let start = Instant::now();
    let started_at = jiff::Timestamp::now();
    // Not being able to record is the host's problem (exit 3), named with path and OS error.
    let dir = match &args.run_dir {
        Some(d) => project::private_run_dir(d)
            .and_then(|()| d.canonicalize_utf8())
            .map_err(|e| exit::infra(format!("cannot create the run directory {d}: {e}")))?,
        None => {
            let runs = project::vm_runs_dir();
            project::create_run_dir(&runs, started_at)
                .map_err(|e| exit::infra(format!("cannot create a run directory under {runs}: {e:#}")))?
        }
    };
    let fancy = ui::fancy_stderr();
    let mut rec = Record::new(dir.clone(), started_at, start);
    let t = Timeouts::from(&args);
    rec.timeouts = Some(TimeoutSecs {
        boot: t.boot.boot.as_secs(),
        stall: t.boot.stall.as_secs(),
        init_stall: t.boot.init_stall.as_secs(),
        login_step: t.login.step.as_secs(),
        command: t.checks.command.as_secs(),
        storage: t.checks.storage.as_secs(),
        unit: t.checks.unit.as_secs(),
        network: t.checks.network.as_secs(),
        serial_line: t.checks.serial_line.as_secs(),
    });
    eprintln!("vm-test: run directory {dir}");
    let _ = rec.write();

    let mut progress = Progress::new(fancy, start);
    // A panic is our bug, not the image's: it still gets a verdict (harness-error, exit 3)
    // and a complete record. Unwinding drops QEMU (killed) and the scratch files.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drive(&args, &mut rec, &mut progress)))
        .unwrap_or_else(|panic| Err(panic_failure(rec.current(), panic.as_ref())));
    progress.finish();
    if let Err(f) = result {
        rec.failure = Some(f);
    }
    rec.finish();
    if let Err(e) = rec.write() {
        eprintln!("vm-test: could not write the run record: {e:#}");
    }
    print_summary(&rec);
    if args.archive {
        archive(&dir);
    }
    if args.interact_on_failure && rec.failure.is_some() && rec.qemu.stopped_by.as_deref() == Some("kept") {
        // The records are complete; the guest is the user's now.
        match crate::attach::interact(&dir, !args.keep) {
            Ok(()) if !args.keep => {
                rec.qemu.stopped_by = Some("after-interaction".into());
                let _ = rec.write();
            }
            Ok(()) => {}
            Err(e) => eprintln!("vm-test: --interact-on-failure: {e:#}"),
        }
    }
    Ok(rec.exit_code())
}

/// The one value of a list flag outside --matrix (a usage error otherwise).
fn single<'a, T: std::fmt::Debug>(values: &'a [T], flag: &str) -> Result<&'a T> {
    match values {
        [one] => Ok(one),
        _ => Err(exit::usage(format!("{flag}: one value per run (got {values:?}); give a comma list with --matrix"))),
    }
}

/// `--run-dir` must be new or empty: the logs are opened for appending, and two runs in one
/// directory would be one unreadable record.
pub fn refuse_used_run_dir(dir: &Utf8Path) -> Result<()> {
    if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(exit::usage(format!(
            "--run-dir {dir}: the directory is not empty (it holds an earlier run?); \
             pass a new or empty directory, or leave --run-dir out for target/vm-runs/<UTC>"
        )));
    }
    Ok(())
}

/// A panic caught around `drive`: recorded as `harness-error` (exit 3, infrastructure: the
/// harness failed, not the image) in the phase that was running.
fn panic_failure(phase: Phase, panic: &(dyn std::any::Any + Send)) -> Failure {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string());
    Failure::infra(phase, "harness-error", format!("the harness panicked (a bug in xtask): {message}"))
}

/// Why no image could be chosen. Ctrl-C during a build is the interruption, not a broken
/// image (`interrupted`: the one interrupt flag, which the build's own wait loop obeys too).
fn image_failure(e: anyhow::Error, interrupted: bool) -> Failure {
    if interrupted {
        Failure::interrupted(Phase::Qemu)
    } else {
        Failure::infra(Phase::Qemu, "image-missing", format!("{e:#}"))
    }
}

/// Everything between the run directory and the summary. `Err` is the verdict.
fn drive(args: &Args, rec: &mut Record, progress: &mut Progress) -> Result<(), Failure> {
    let iso = record_image(args, rec, progress)?;
    let mut menu = Drive { skip_countdown: !args.bootloader_wait, rescue: None };
    let mut defect = None;
    if args.skip_preflight {
        rec.note("preflight skipped (--skip-preflight)");
    } else {
        defect = preflight(args, &iso, rec, progress, &mut menu)?;
    }
    let (accel, reason) = accelerator(args, progress)?;
    let scenario = args.disk[0];
    rec.note(&format!("disk scenario {scenario}: pre-nixos must reach {}", describe(scenario.expect())));
    if scenario != Scenario::Existing {
        let boot = Boot { disks: scenario.files(&rec.dir, None), expect: scenario.expect(), keep: args.keep };
        let rescued = boot_once(args, &boot, &menu, &iso, accel, reason, rec, progress)?;
        return rescued_verdict(args, defect, rescued, rec);
    }
    // existing: a first boot provisions a disk, the run proper boots it again.
    let disk = disks::existing_disk(&rec.dir);
    let result = first_boot(args, &menu, &disk, &iso, accel, &reason, rec, progress).and_then(|before| {
        let boot =
            Boot { disks: Scenario::Existing.files(&rec.dir, Some(&disk)), expect: scenario.expect(), keep: false };
        let rescued = boot_once(args, &boot, &menu, &iso, accel, reason, rec, progress)?;
        disk_unchanged(&disk, &before, rec)?;
        Ok(rescued)
    });
    let _ = std::fs::remove_file(&disk);
    rescued_verdict(args, defect, result?, rec)
}

/// What one boot attaches and expects.
struct Boot {
    disks: Vec<DiskFile>,
    expect: Expect,
    keep: bool,
}

fn describe(e: Expect) -> String {
    let vg = e.vg_on.map_or("no VG main".to_string(), |pv| format!("VG main (swap, slash) on {pv}"));
    format!("STATE={} DETAIL={}, {vg}", e.state, e.detail)
}

/// QEMU started, the session, QEMU stopped: one boot of the image. `Ok`: the menu whose
/// entry the serial rescue edited, if any.
#[allow(clippy::too_many_arguments)]
fn boot_once(
    args: &Args,
    boot: &Boot,
    menu: &Drive,
    iso: &Utf8Path,
    accel: Accel,
    reason: String,
    rec: &mut Record,
    progress: &mut Progress,
) -> Result<Option<bootmenu::Menu>, Failure> {
    let (mut machine, transcript) = start_qemu(args, boot, iso, accel, reason, rec, progress)?;
    let result = session(args, boot, menu, rec, &mut machine, transcript, progress);
    // A failed run handed to the user (--interact-on-failure) stays up like a kept one.
    let hand_over = args.interact_on_failure && result.is_err();
    stop_qemu(boot.keep || hand_over, boot.keep, machine, &result, rec);
    // OCR after QEMU stopped: the guest no longer needs the CPU.
    result.map_err(|f| read_screen(f, rec)).map_err(|f| explain_failure(f, &rec.qemu))
}

/// `--disk existing`, first boot: the same image on a fresh disk, recorded as a run of its own
/// in `first-boot/`, must provision it (applied); the disk's SHA-256 afterwards.
#[allow(clippy::too_many_arguments)]
fn first_boot(
    args: &Args,
    menu: &Drive,
    disk: &Utf8Path,
    iso: &Utf8Path,
    accel: Accel,
    reason: &str,
    rec: &mut Record,
    progress: &mut Progress,
) -> Result<String, Failure> {
    let dir = rec.dir.join("first-boot");
    let infra = |e: String| Failure::infra(Phase::Qemu, "harness-error", e);
    project::private_run_dir(&dir).map_err(|e| infra(format!("cannot create {dir}: {e}")))?;
    crate::process::shell().and_then(|sh| qemu::create_disk(&sh, disk, "4G")).map_err(|e| infra(format!("{e:#}")))?;
    progress.note(&format!("first boot (provisions {disk}), recorded in {dir}"));
    let mut first = Record::new(dir.clone(), jiff::Timestamp::now(), Instant::now());
    first.timeouts = rec.timeouts.clone();
    first.image = rec.image.clone();
    let boot =
        Boot { disks: vec![DiskFile::existing(disk.to_path_buf())], expect: Scenario::Blank.expect(), keep: false };
    let result = boot_once(args, &boot, menu, iso, accel, reason.to_string(), &mut first, progress).map(|_| ());
    if let Err(f) = &result {
        first.failure = Some(f.clone());
    }
    first.finish();
    let _ = first.write();
    if let Err(f) = result {
        return Err(Failure {
            detail: format!("the first boot (which provisions the disk) failed: {}; see {dir}", f.detail),
            ..f
        });
    }
    let hash = disks::sha256(disk).map_err(|e| infra(format!("hashing {disk}: {e}")))?;
    rec.note(&format!("first boot provisioned {disk} ({dir}); sha256 {hash}"));
    Ok(hash)
}

/// The check that the second boot left the existing disk's bytes as the first boot left them.
fn disk_unchanged(disk: &Utf8Path, before: &str, rec: &mut Record) -> Result<(), Failure> {
    let after = disks::sha256(disk)
        .map_err(|e| Failure::infra(Phase::Checks, "harness-error", format!("hashing {disk}: {e}")))?;
    let unchanged = after == before;
    let check = crate::vm::record::Check {
        name: "disk-unchanged".into(),
        status: if unchanged { CheckStatus::Pass } else { CheckStatus::Fail },
        detail: if unchanged {
            format!("sha256 {after} before and after the second boot")
        } else {
            format!("sha256 {before} before, {after} after the second boot: pre-nixos wrote to existing storage")
        },
        evidence: String::new(),
        seconds: 0.0,
        finding: (!unchanged).then(|| "existing-storage-modified".into()),
    };
    rec.checks.push(check);
    if unchanged {
        Ok(())
    } else {
        Err(Failure::fail(Phase::Checks, "existing-storage-modified", "the existing disk's bytes changed"))
    }
}

/// The console defect preflight found, which the serial rescue worked around.
struct ConsoleDefect {
    finding: &'static str,
    message: String,
    fix: String,
}

/// A run the serial rescue saved still names the image's defect: the image as built leaves
/// the serial line silent (or half silent), so the run fails (exit 1) unless `--allow-rescue`
/// makes it a warning.
fn rescued_verdict(
    args: &Args,
    defect: Option<ConsoleDefect>,
    rescued: Option<bootmenu::Menu>,
    rec: &mut Record,
) -> Result<(), Failure> {
    let (Some(defect), Some(_)) = (defect, rescued) else { return Ok(()) };
    let detail = format!(
        "the checks passed only because vm-test edited the boot entry at the menu (serial rescue): {} — fix: {}",
        defect.message, defect.fix
    );
    rec.findings.push(Finding::new(defect.finding, 0, &detail).with_source(Source::Harness));
    if args.allow_rescue {
        rec.note(&format!("warning (--allow-rescue): {detail}"));
        return Ok(());
    }
    Err(Failure::fail(Phase::Bootloader, defect.finding, format!("{detail} (--allow-rescue makes this a warning)")))
}

/// A failure to set up QEMU: the host's problem (exit 3), before the guest ran.
fn qemu_infra(finding: &str, e: anyhow::Error) -> Failure {
    Failure::infra(Phase::Qemu, finding, format!("{e:#}"))
}

/// The boot configuration inside the ISO, read before spending a boot on it: warnings are
/// noted, the first problem that is not a warning is the verdict. A default entry without
/// `console=ttyS0` last is rescued at the menu (`drive.rescue`) unless `--no-rescue`: the
/// defect is returned, for the verdict after the checks.
fn preflight(
    args: &Args,
    iso: &Utf8Path,
    rec: &mut Record,
    progress: &mut Progress,
    drive: &mut Drive,
) -> Result<Option<ConsoleDefect>, Failure> {
    let pf = crate::vm::preflight::check_iso(iso, args.firmware[0]).map_err(|e| qemu_infra("image-missing", e))?;
    let mut defect = None;
    let mut blocking = None;
    for p in &pf.problems {
        let console = matches!(p.finding, "serial-silent-after-bootloader" | "console-not-last");
        if console && !args.no_rescue {
            let finding = if p.finding == "console-not-last" { "console-not-last" } else { "serial-console-missing" };
            let note = format!(
                "preflight [{finding}]: {} — booting anyway with `{}` appended at the menu (serial rescue; --no-rescue turns it off)",
                p.message,
                bootmenu::SERIAL_CONSOLE
            );
            progress.note(&note);
            rec.note(&note);
            drive.rescue = Some(bootmenu::Rescue {
                append: bootmenu::SERIAL_CONSOLE.to_string(),
                grub_lines_before_linux: pf.grub_lines_before_linux,
            });
            defect = Some(ConsoleDefect { finding, message: p.message.clone(), fix: p.fix.clone() });
            continue;
        }
        let level = if p.level == Level::Warning { "warning" } else { "FAIL" };
        progress.note(&format!("preflight {level}: {} — fix: {}", p.message, p.fix));
        rec.note(&format!("preflight {level} [{}]: {} — fix: {}", p.finding, p.message, p.fix));
        rec.findings.push(Finding::new(p.finding, 0, &p.message).with_source(Source::Harness));
        if p.level != Level::Warning {
            blocking = blocking.or(Some(p));
        }
    }
    if let Some(p) = blocking {
        let detail =
            format!("preflight (before boot): {} — fix: {} (use --skip-preflight to boot anyway)", p.message, p.fix);
        return Err(match p.level {
            Level::Infra => Failure::infra(Phase::Bootloader, p.finding, detail),
            _ => Failure::fail(Phase::Bootloader, p.finding, detail),
        });
    }
    progress.note(&format!(
        "preflight ok: {}; {} default entry: {}",
        pf.boot.as_deref().unwrap_or("?"),
        pf.config.as_deref().unwrap_or("?"),
        pf.cmdline.as_deref().unwrap_or("?")
    ));
    Ok(defect)
}

/// `--accel`, or for `auto` the doctor's probe (boots a kernel under KVM, else TCG): the
/// choice and its reason.
fn accelerator(args: &Args, progress: &mut Progress) -> Result<(Accel, String), Failure> {
    let (accel, reason) = match args.accel.fixed() {
        Some(accel) => (accel, "chosen with --accel".to_string()),
        None => {
            progress.note("accel auto: probing KVM by booting a kernel …");
            crate::accel::choose_auto()
        }
    };
    progress.note(&format!("accel {accel}: {reason}"));
    if crate::interrupt::interrupted() {
        return Err(Failure::interrupted(Phase::Qemu));
    }
    Ok((accel, reason))
}

/// Scratch disk and sockets, the command line on record, then QEMU started (the `qemu`
/// phase begins) with the transcript open.
fn start_qemu(
    args: &Args,
    boot: &Boot,
    iso: &Utf8Path,
    accel: Accel,
    accel_reason: String,
    rec: &mut Record,
    progress: &mut Progress,
) -> Result<(Machine, Transcript), Failure> {
    let binary = qemu::locate().map_err(|e| qemu_infra("qemu-start-failed", e))?;
    let memory_mib = args.memory.unwrap_or(if rec.image.source.starts_with("fixture") { 1024 } else { 2048 });
    let options = machine::Options {
        binary: binary.clone(),
        iso: iso.to_path_buf(),
        accel,
        memory_mib,
        cpus: args.cpus,
        disks: boot.disks.iter().map(|d| DiskFile { path: d.path.clone(), size: d.size }).collect(),
        // A failed run may be handed to the user (--interact-on-failure): QEMU must be able to
        // outlive this wait and reconnect its serial line, as with --keep.
        keep: boot.keep || args.interact_on_failure,
        firmware: args.firmware[0],
    };
    let prepared = machine::prepare(&rec.dir, options).map_err(|e| qemu_infra("qemu-start-failed", e))?;
    let spec = &prepared.spec;
    rec.qemu = QemuInfo {
        binary: binary.to_string(),
        version: crate::process::shell().and_then(|sh| qemu::version(&sh, &binary)).unwrap_or_default(),
        command: spec.command(),
        accel: accel.to_string(),
        accel_reason,
        firmware: args.firmware[0].to_string(),
        memory_mib,
        cpus: args.cpus,
        ssh_port: Some(spec.ssh_port),
        serial_socket: Some(spec.serial_sock.to_string()),
        qmp_socket: Some(spec.qmp_sock.to_string()),
        ..Default::default()
    };
    let transcript = Transcript::create(&rec.dir.join("transcript.log"), Instant::now())
        .map_err(|e| qemu_infra("harness-error", e))?;
    rec.begin(Phase::Qemu);
    progress.phase("qemu");
    let machine = prepared.start(&rec.dir.join("qemu.stderr.log")).map_err(|e| qemu_infra("qemu-start-failed", e))?;
    rec.qemu.pid = Some(machine.vm.pid);
    let _ = rec.write();
    Ok((machine, transcript))
}

/// QEMU's end, recorded: already gone (poweroff), left running (`--keep`, unless
/// interrupted), or stopped by the ladder — without waiting for the guest's consent: the run
/// is over and the scratch disk is thrown away.
/// `keep`: leave QEMU running (`--keep`, or a failed run to hand over); `announce`: print how
/// to attach (only `--keep`: a hand-over attaches by itself).
fn stop_qemu<T>(keep: bool, announce: bool, mut machine: Machine, result: &Result<T, Failure>, rec: &mut Record) {
    machine.close_serial();
    let interrupted = matches!(result, Err(f) if f.outcome == Outcome::Interrupted);
    if keep && !interrupted && machine.vm.try_wait().is_none() {
        rec.qemu.stopped_by = Some("kept".into());
        if announce {
            print_attach(&machine.spec, &machine.vm, &rec.dir);
        }
        machine.keep();
    } else {
        if machine.vm.try_wait().is_none() {
            machine.stop(Duration::ZERO);
        }
        rec.qemu.stopped_by = machine.stopped_by.map(str::to_string);
        rec.qemu.exit_status = machine.vm.try_wait().map(|s| s.to_string());
    }
    rec.qemu.stderr_tail = tail_of_file(&rec.dir.join("qemu.stderr.log"), 20);
}

/// What QEMU's side adds to a verdict: a KVM that cannot run a kernel, and QEMU's own exit
/// status and stderr when QEMU is what failed.
fn explain_failure(mut f: Failure, qemu: &QemuInfo) -> Failure {
    // A KVM that runs firmware but never a kernel (nested/paravirtual hosts) looks exactly
    // like a silent boot; the doctor's probe tells them apart.
    if qemu.accel == "kvm" && f.outcome == Outcome::Fail && f.phase <= Phase::Kernel {
        f.detail.push_str(
            "; QEMU ran with KVM, and a KVM that cannot run a kernel fails exactly like this: \
             check with `cargo xtask doctor`, or rerun with `--accel tcg`",
        );
    }
    if f.finding == "qemu-exited" || f.finding == "qemu-start-failed" {
        if let Some(status) = &qemu.exit_status {
            f.detail = format!("{} (QEMU {status})", f.detail);
        }
        if let Some(t) = &qemu.stderr_tail {
            f.detail = format!("{}; QEMU stderr: {}", f.detail, t.trim());
        }
    }
    f
}

/// Connects the driver's events to this run's progress line, transcript and record.
struct RunSink<'r> {
    progress: &'r mut Progress,
    transcript: Transcript,
    rec: &'r mut Record,
}

impl Sink for RunSink<'_> {
    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Phase(phase) => {
                self.rec.begin(phase);
                self.progress.phase(phase.name());
                self.transcript.log(&format!("phase {phase}"));
            }
            Event::PhaseEnded => self.rec.end_current(),
            Event::Line(line) => self.progress.tick(line),
            Event::Step(text) => self.transcript.log(text),
            Event::Note(text) => self.rec.note(text),
            Event::Milestone(m, seconds) => self.rec.milestone(m, seconds),
            Event::CheckStarted(name) => self.progress.note(&format!("check {name} …")),
            Event::CheckFinished(check) => {
                let line = format!("check {}: {} — {}", check.name, check.status, check.detail);
                self.transcript.log(&line);
                self.progress.note(&line);
                self.rec.checks.push(check.clone());
                let _ = self.rec.write();
            }
        }
    }
}

/// From QEMU start to the end of the poweroff phase, the driver's events going to the
/// progress line, the transcript and the record.
fn session(
    args: &Args,
    boot: &Boot,
    menu: &Drive,
    rec: &mut Record,
    machine: &mut Machine,
    transcript: Transcript,
    progress: &mut Progress,
) -> Result<Option<bootmenu::Menu>, Failure> {
    let stream = machine.accept(Duration::from_secs(20)).map_err(|stop| match stop {
        Stop::Interrupted => Failure::interrupted(Phase::Qemu),
        Stop::Eof => Failure::infra(Phase::Qemu, "qemu-start-failed", "QEMU exited before connecting its serial port"),
        other => {
            Failure::infra(Phase::Qemu, "qemu-start-failed", format!("QEMU did not connect its serial port: {other}"))
        }
    })?;
    let dir = rec.dir.clone();
    let started = format!("QEMU pid {} started: {}", machine.vm.pid, rec.qemu.command.join(" "));
    let sink = RunSink { progress, transcript, rec: &mut *rec };
    let mut serial = Serial::new(stream, &dir, Box::new(sink))
        .map_err(|e| Failure::infra(Phase::Qemu, "harness-error", format!("{e:#}")))?;
    // A quiet guest may be one QEMU paused on a full disk: ask before calling it hung.
    let qmp_sock = machine.vm.qmp_sock().to_path_buf();
    serial.on_quiet(Box::new(move || qemu::io_error_pause(&qmp_sock)));
    let mut guest = Guest::new(serial);
    guest.serial.watch(checks::LAN_LINE, Regex::new(r"LAN IPv4 address: \d+\.\d+\.\d+\.\d+").expect("regex"));
    guest.step(&started);

    let series = match args.screens {
        screen::Policy::Every(every) => {
            screen::Series::start(machine.vm.qmp_sock().to_path_buf(), dir.clone(), every, machine.vm.started).ok()
        }
        _ => None,
    };
    let mut shots = Vec::new();
    let result = phases(args, boot, menu, &dir, machine, &mut guest, &mut shots);
    // On failure keep reading briefly: the lines right after are often the evidence.
    if let Err(f) = &result {
        if f.outcome == Outcome::Fail && !guest.serial.eof() {
            guest.serial.drain_for(Duration::from_millis(500));
        }
        guest.step(&format!("verdict: {} in phase {}: {}", f.finding, f.phase, f.detail));
    }
    let findings = guest.serial.findings().to_vec();
    let serial = SerialSummary {
        bytes: guest.serial.bytes,
        dropped_from_match_buffer: guest.serial.dropped,
        last_lines: guest.serial.tail(15),
        timeline: guest.serial.detector().timeline().to_vec(),
        lan_line: guest.serial.seen(checks::LAN_LINE).map(|(line, text)| SeenLine { line: *line, text: text.clone() }),
    };
    drop(guest);
    rec.findings.extend(findings);
    rec.serial = Some(serial);
    if let Some(series) = series {
        rec.screens.extend(series.finish());
    }
    rec.screens.extend(shots);
    let shot_taken = rec.screens.iter().any(|s| s.reason == "verdict");
    if let (Err(f), false) = (&result, shot_taken) {
        // What the screen shows when the run failed, taken before QEMU stops.
        // Not when the host's disk is what failed: the run directory may be on it.
        let disk_failed = matches!(f.finding.as_str(), "host-disk-full" | "io-error");
        if args.screens != screen::Policy::Off
            && f.outcome != Outcome::Interrupted
            && !disk_failed
            && machine.vm.try_wait().is_none()
        {
            let seconds = machine.vm.started.elapsed().as_secs_f64();
            match screen::take_verdict_shot(machine.vm.qmp_sock(), &dir, f.phase, seconds) {
                Ok(shot) => rec.screens.push(shot),
                Err(e) => rec.note(&format!("no screenshot: {e:#}")),
            }
        }
    }
    result
}

/// Reads the failed run's screenshot with OCR (when tesseract is installed) through the same
/// detector as the serial lines: its findings join the record marked as screen text, and when
/// the screen got further than serial did, the verdict says what it shows.
fn read_screen(mut f: Failure, rec: &mut Record) -> Failure {
    let Some(at) = rec.screens.iter().rposition(|s| s.reason == "verdict") else { return f };
    let mut shot = rec.screens[at].clone();
    match screen::read_shot(&rec.dir, &mut shot) {
        Ok(Some((reading, seconds))) => {
            let serial_phase = rec.serial.as_ref().and_then(|s| s.timeline.last()).map_or(Phase::Qemu, |t| t.phase);
            rec.note(&format!("OCR read {} in {seconds:.1} s: the screen shows phase {}", shot.file, reading.phase));
            if let Some(said) = reading.beyond_serial(serial_phase, &f.finding) {
                f.detail = format!("{}; {said} (screen: {})", f.detail, shot.file);
            }
            rec.findings.extend(reading.findings.into_iter().filter(|x| x.is_failure()));
        }
        Ok(None) => rec.note(&format!(
            "{} taken; not read: tesseract is not installed (apt-get install tesseract-ocr)",
            shot.file
        )),
        Err(e) => rec.note(&format!("OCR of {} failed: {e:#}", shot.file)),
    }
    rec.screens[at] = shot;
    f
}

/// The guest's phases from QEMU up to poweroff. A failed check does not stop them, so its
/// screenshot goes into `shots` before the guest powers off.
/// `Ok`: the menu whose entry the serial rescue edited, if any.
fn phases(
    args: &Args,
    boot: &Boot,
    drive: &Drive,
    dir: &Utf8Path,
    machine: &mut Machine,
    guest: &mut Guest,
    shots: &mut Vec<crate::vm::record::Screen>,
) -> Result<Option<bootmenu::Menu>, Failure> {
    // qemu: running and answering QMP.
    let mut qmp =
        machine.vm.qmp().map_err(|e| Failure::infra(Phase::Qemu, "qemu-start-failed", format!("QMP: {e:#}")))?;
    let status = qmp
        .execute("query-status", None)
        .map_err(|e| Failure::infra(Phase::Qemu, "qemu-start-failed", format!("{e:#}")))?;
    guest.step(&format!("QMP query-status: {status}"));
    drop(qmp);

    let t = Timeouts::from(args);
    let started = machine.vm.started;
    let followed = boot::follow(guest, &t.boot, drive, started)?;
    let user = login::login(guest, followed.greeting, args.login.as_ref(), &t.login)?;
    guest.emit(Event::Milestone(Milestone::Prompt, started.elapsed().as_secs_f64()));
    guest.emit(Event::Note(&format!("logged in as {user}")));

    guest.enter(Phase::Shell);
    let uid = login::settle_shell(guest, &t.login)?;

    guest.enter(Phase::Root);
    let how = login::escalate(guest, uid, args.login.as_ref(), &t.login)?;
    guest.emit(Event::Note(&format!("root proven by `id -u` = 0 ({how})")));
    guest.emit(Event::Milestone(Milestone::Root, started.elapsed().as_secs_f64()));

    guest.enter(Phase::Checks);
    let checks = checks::run_all(guest, dir, &t.checks, boot.expect)?;
    let own = checks::run_own(guest, &args.run, t.checks.command)?;
    let failed_check = checks.into_iter().chain(own).find(|c| c.status == CheckStatus::Fail);
    if failed_check.is_some() && args.screens != screen::Policy::Off {
        let seconds = machine.vm.started.elapsed().as_secs_f64();
        match screen::take_verdict_shot(machine.vm.qmp_sock(), dir, Phase::Checks, seconds) {
            Ok(shot) => shots.push(shot),
            Err(e) => guest.emit(Event::Note(&format!("no screenshot: {e:#}"))),
        }
    }

    if boot.keep {
        guest.emit(Event::PhaseEnded);
    } else {
        guest.enter(Phase::Poweroff);
        power_off(guest, machine)?;
    }
    match failed_check {
        Some(c) => Err(Failure::fail(
            Phase::Checks,
            c.finding.as_deref().unwrap_or("check-failed"),
            format!("check {} failed: {}", c.name, c.detail),
        )),
        None => Ok(followed.rescued_at),
    }
}

/// Guest `poweroff` as root; QEMU exits by itself (`-no-reboot`). If not within 60 s, the
/// ladder takes over and the phase fails (the image does not power off).
fn power_off(guest: &mut Guest, machine: &mut Machine) -> Result<(), Failure> {
    guest
        .type_line("poweroff", "poweroff\n")
        .map_err(|s| Failure::from_stop(Phase::Poweroff, s, &mut guest.serial, "poweroff"))?;
    match guest.serial.wait_until(Wait::new(Duration::from_secs(60), None), &mut |s| s.eof()) {
        Ok(()) | Err(Stop::Eof) => {
            if machine.vm.wait_timeout(Duration::from_secs(10)).is_some() {
                machine.stopped_by = Some("guest-poweroff");
                return Ok(());
            }
            Err(Failure::fail(
                Phase::Poweroff,
                "poweroff-failed",
                "the serial line closed but QEMU did not exit within 10 s",
            ))
        }
        Err(Stop::Deadline) => {
            let rung = machine.stop(Duration::from_secs(10));
            Err(Failure::fail(
                Phase::Poweroff,
                "poweroff-failed",
                format!("`poweroff` did not stop the guest within 60 s; QEMU stopped by {rung}"),
            ))
        }
        Err(s) => Err(Failure::from_stop(Phase::Poweroff, s, &mut guest.serial, "waiting for the guest to power off")),
    }
}

fn tail_of_file(path: &Utf8Path, lines: usize) -> Option<String> {
    let text = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&text);
    let v: Vec<&str> = text.lines().collect();
    let t = v[v.len().saturating_sub(lines)..].join("\n");
    (!t.trim().is_empty()).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_c_during_the_image_build_is_an_interruption() {
        let build =
            anyhow::Error::from(exit::Exit { code: exit::INTERRUPTED, message: "nix build interrupted".into() });
        assert_eq!(image_failure(build, true).outcome, Outcome::Interrupted);
        // A fixture build whose tool died of the terminal's Ctrl-C fails with its own error.
        assert_eq!(image_failure(exit::infra("xorriso: killed"), true).outcome, Outcome::Interrupted);
        let missing = image_failure(exit::infra("no such file"), false);
        assert_eq!((missing.outcome, missing.finding.as_str()), (Outcome::Infra, "image-missing"));
    }

    #[test]
    fn a_panic_becomes_a_harness_error_in_the_running_phase() {
        let caught = std::panic::catch_unwind(|| panic!("index {} out of range", 7)).unwrap_err();
        let f = panic_failure(Phase::Checks, caught.as_ref());
        assert_eq!((f.outcome, f.phase, f.finding.as_str()), (Outcome::Infra, Phase::Checks, "harness-error"));
        assert!(f.detail.contains("index 7 out of range"), "{}", f.detail);
        assert_eq!(f.outcome.exit_code(), exit::INFRA);
    }

    #[test]
    fn a_used_run_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = Utf8Path::from_path(dir.path()).unwrap();
        refuse_used_run_dir(path).unwrap();
        refuse_used_run_dir(&path.join("new")).unwrap();
        std::fs::write(path.join("serial.log"), "old run").unwrap();
        let e = refuse_used_run_dir(path).unwrap_err();
        assert_eq!(e.downcast_ref::<exit::Exit>().map(|x| x.code), Some(exit::USAGE));
        assert!(e.to_string().contains(path.as_str()), "{e}");
    }
}
