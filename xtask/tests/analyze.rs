//! `cargo xtask analyze` on recorded and handcrafted serial logs (xtask/tests/data/serial/):
//! each gives the expected furthest phase, timeline and finding ids, and the exit code says
//! whether a failure was found.
//!
//! `fixture-*.log` were recorded by booting the fixture ISO (and its fault variants) in QEMU
//! with `-serial file:` (raw bytes, escapes and CRLF kept; floods trimmed). `handcrafted-*.log`
//! quote the field notes' tell-tale texts (docs: /work/shared/docs/field-notes.md §2).

mod common;

use common::{repo_root, run_xtask};
use serde_json::Value;

struct Case {
    file: &'static str,
    phase: &'static str,
    /// Exactly these ids must be found.
    ids: &'static [&'static str],
    /// None of these may be found.
    not: &'static [&'static str],
    exit: i32,
}

const CASES: &[Case] = &[
    Case {
        file: "handcrafted-healthy.log",
        phase: "poweroff",
        ids: &["autologin-not-root", "powered-off-cleanly"],
        not: &["kernel-panic", "console-not-last", "login-prompt"],
        exit: 0,
    },
    Case {
        file: "handcrafted-no-serial-console.log",
        phase: "bootloader",
        ids: &["serial-silent-after-bootloader"],
        not: &["bootloader-stuck"],
        exit: 1,
    },
    Case { file: "handcrafted-qemu-hostfwd.log", phase: "qemu", ids: &["qemu-start-failed"], not: &[], exit: 1 },
    Case {
        file: "handcrafted-kernel-panic.log",
        phase: "kernel",
        ids: &["kernel-panic"],
        not: &["kernel-stalled"],
        exit: 1,
    },
    Case {
        file: "handcrafted-emergency.log",
        phase: "init",
        ids: &["emergency-mode", "unit-stuck", "unit-failed"],
        not: &[],
        exit: 1,
    },
    Case {
        file: "handcrafted-upstream-2405-failures.log",
        phase: "shell",
        ids: &[
            "console-not-last",
            "floppy-io-error",
            "autologin-not-root",
            "storage-detection-error",
            "command-not-found",
            "not-root",
            "unit-not-found",
            "provisioning-failed",
            "unit-stuck",
        ],
        not: &["root", "storage-plan-only"],
        exit: 1,
    },
];

fn analyze_json(path: &std::path::Path) -> (i32, Value) {
    analyze_json_as(path, None)
}

/// `analyze PATH --json [--source SOURCE]`: exit code and the JSON.
fn analyze_json_as(path: &std::path::Path, source: Option<&str>) -> (i32, Value) {
    let mut args = vec!["analyze", path.to_str().unwrap(), "--json"];
    if let Some(s) = source {
        args.extend(["--source", s]);
    }
    let out = run_xtask(&args);
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {}", path.display(), String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), json)
}

/// Analyzes a case's log and asserts its phase, the ids it must have and those it must not;
/// returns the exit code, the JSON and the ids found.
fn phase_and_ids(case: &Case) -> (i32, Value, Vec<String>) {
    let (code, json) = analyze_json(&data(case.file));
    let ids: Vec<String> =
        json["findings"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(json["phase"], case.phase, "{}: phase (findings {ids:?})", case.file);
    for id in case.ids {
        assert!(ids.iter().any(|i| i == id), "{}: expected {id} in {ids:?}", case.file);
    }
    for id in case.not {
        assert!(!ids.iter().any(|i| i == id), "{}: did not expect {id} in {ids:?}", case.file);
    }
    (code, json, ids)
}

fn data(file: &str) -> std::path::PathBuf {
    repo_root().join("xtask/tests/data/serial").join(file)
}

#[test]
fn each_log_gives_its_phase_and_findings() {
    let mut checked = 0;
    for case in CASES {
        let path = data(case.file);
        if !path.exists() {
            panic!("test data {} is missing", path.display());
        }
        let (code, json, ids) = phase_and_ids(case);
        for id in &ids {
            assert!(case.ids.contains(&id.as_str()), "{}: unexpected {id} in {ids:?}", case.file);
        }
        assert_eq!(code, case.exit, "{}: exit code", case.file);
        // The contract keys.
        for f in json["findings"].as_array().unwrap() {
            assert!(f["line"].as_u64().is_some() && f["text"].is_string() && f["cause"].is_string());
        }
        let timeline = json["timeline"].as_array().unwrap();
        let lines: Vec<u64> = timeline.iter().map(|t| t["line"].as_u64().unwrap()).collect();
        assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{}: timeline goes forward", case.file);
        assert_eq!(timeline.last().map_or("qemu", |t| t["phase"].as_str().unwrap()), case.phase);
        checked += 1;
    }
    assert_eq!(checked, CASES.len());
}

/// Logs recorded from the fixture (`cargo xtask fixture [--fault NAME]`, booted with
/// `qemu-system-x86_64 -accel tcg -nodefaults -m 1024 -no-reboot -cdrom ISO -drive
/// file=blank.img,if=virtio,format=raw -netdev user -device virtio-net-pci -device virtio-rng-pci`
/// and the serial port on a socket; commands typed where noted): file → expected furthest
/// phase, the ids found (exactly these), and the exit code.
const RECORDED: &[(&str, &str, &[&str], i32)] = &[
    // sudo -i, id -u, poweroff.
    ("fixture-healthy.log", "poweroff", &["autologin-not-root", "powered-off-cleanly"], 0),
    // APPEND without console=ttyS0: ISOLINUX, `Loading /boot/initrd...ok`, then nothing for 30 s.
    ("fixture-no-serial-console.log", "bootloader", &["serial-silent-after-bootloader"], 1),
    // `console=ttyS0,115200 console=tty0`: kernel lines, then the login on ttyS0.
    ("fixture-console-not-last.log", "shell", &["console-not-last", "autologin-not-root"], 1),
    // No autologin: a bare `nixos login:` prompt (a console broadcast lands after it).
    ("fixture-login-prompt.log", "login", &["login-prompt"], 1),
    // sudo -i asks `[sudo] password for nixos:`; an empty answer is refused.
    ("fixture-sudo-password.log", "shell", &["autologin-not-root", "escalation-failed"], 1),
    ("fixture-storage-error.log", "shell", &["storage-detection-error", "autologin-not-root"], 1),
    // No /init in the initramfs: the kernel tries `root=` itself, `VFS: Unable to mount root fs`.
    ("fixture-kernel-panic.log", "kernel", &["kernel-panic", "root-device-missing"], 1),
    // The shell answers once, then hangs: only the harness can tell (guest-unresponsive).
    ("fixture-hang-after-login.log", "shell", &["autologin-not-root"], 0),
    // Broadcasts, kernel messages and LAN lines interleave with sudo -i, id -u and poweroff.
    ("fixture-broadcast.log", "poweroff", &["autologin-not-root", "powered-off-cleanly"], 0),
    // ~16 MiB of flood (invalid UTF-8, stray escapes) before the login, trimmed to its head
    // and tail (~100 KB each) for the repository.
    ("fixture-flood.log", "shell", &["autologin-not-root"], 0),
    // A passing `cargo xtask vm-test` run's serial.log: its boring shell (`PS1='$ '`, echo
    // off, `-bash-5.2#` after `sudo -i`) and framed command output.
    ("vmtest-healthy.log", "poweroff", &["autologin-not-root", "powered-off-cleanly"], 0),
];

#[test]
fn recorded_fixture_logs() {
    for (file, phase, ids, exit) in RECORDED {
        let (code, json) = analyze_json(&data(file));
        let found: Vec<&str> = json["findings"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap()).collect();
        assert_eq!(json["phase"], *phase, "{file}: phase (findings {found:?})");
        let mut want = ids.to_vec();
        let mut got = found.clone();
        want.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, want, "{file}: findings");
        assert_eq!(code, *exit, "{file}: exit code");
    }
}

/// `serial.log` of `cargo xtask vm-test --image fixture-systemd[:FAULT]` runs (real systemd 252
/// from Debian packages, TCG; see data/serial/README.md).
const RECORDED_SYSTEMD: &[Case] = &[
    // Passing run: ISOLINUX, kernel, stage 1/2, ~150 `[  OK  ]` lines, autologin, checks, poweroff.
    Case {
        file: "fixture-systemd-healthy.log",
        phase: "poweroff",
        ids: &["autologin-not-root", "powered-off-cleanly"],
        not: &["unit-failed", "unit-stuck", "emergency-mode", "console-not-last"],
        exit: 0,
    },
    // tty0 last: the kernel log and the getty reach serial, systemd's status lines do not.
    Case {
        file: "fixture-systemd-console-not-last.log",
        phase: "poweroff",
        ids: &["console-not-last"],
        not: &["emergency-mode"],
        exit: 1,
    },
    // A required mount fails: `You are in emergency mode`, no getty.
    Case {
        file: "fixture-systemd-emergency-mode.log",
        phase: "init",
        ids: &["emergency-mode"],
        not: &["autologin-not-root"],
        exit: 1,
    },
    // The deadlock is silent on serial once the getty owns the console (systemd then stops
    // showing job status): only vm-test's checks can name it (`unit-stuck`); the log reads healthy.
    Case {
        file: "fixture-systemd-unit-deadlock.log",
        phase: "poweroff",
        ids: &["autologin-not-root"],
        not: &["unit-stuck"],
        exit: 0,
    },
    // pre-nixos restarts networkd, which is not there: the console names it.
    Case {
        file: "fixture-systemd-networkd-missing.log",
        phase: "poweroff",
        ids: &["unit-not-found", "unit-failed"],
        not: &["unit-stuck"],
        exit: 1,
    },
    // No /init in the initramfs.
    Case {
        file: "fixture-systemd-kernel-panic.log",
        phase: "kernel",
        ids: &["kernel-panic"],
        not: &["kernel-stalled"],
        exit: 1,
    },
    // console=tty0 only: ISOLINUX, its 10 s countdown, `Loading /boot/initrd...ok`, silence.
    Case {
        file: "fixture-systemd-no-serial-console.log",
        phase: "bootloader",
        ids: &["serial-silent-after-bootloader"],
        not: &["bootloader-stuck"],
        exit: 1,
    },
    // sudo asks for a password and refuses the empty one; `su -` fails too.
    Case {
        file: "fixture-systemd-sudo-password.log",
        phase: "shell",
        ids: &["autologin-not-root", "escalation-failed"],
        not: &[],
        exit: 1,
    },
    // `[FAILED] Failed to start Fixture Health Probe.`: a warning for analyze (vm-test's
    // failed-units check turns it into the verdict `unit-failed`).
    Case {
        file: "fixture-systemd-failed-unit.log",
        phase: "poweroff",
        ids: &["unit-failed"],
        not: &["unit-stuck", "emergency-mode"],
        exit: 0,
    },
    Case {
        file: "fixture-systemd-storage-error.log",
        phase: "poweroff",
        ids: &["storage-detection-error"],
        not: &["provisioning-failed"],
        exit: 1,
    },
    // `A start job is running for Wait for Storage Devices (2min 35s / no limit)`, redrawn with
    // CR and no LF for 150 s before the login.
    Case {
        file: "fixture-systemd-slow-start-job.log",
        phase: "poweroff",
        ids: &["unit-stuck", "autologin-not-root"],
        not: &["unit-failed"],
        exit: 1,
    },
];

#[test]
fn recorded_systemd_fixture_logs() {
    for case in RECORDED_SYSTEMD {
        let (code, _, _) = phase_and_ids(case);
        assert_eq!(code, case.exit, "{}: exit code", case.file);
    }
    // systemd's own lines mark the init phase.
    let (_, json) = analyze_json(&data("fixture-systemd-healthy.log"));
    let phases: Vec<&str> = json["timeline"].as_array().unwrap().iter().map(|t| t["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, ["bootloader", "kernel", "init", "login", "shell", "root", "poweroff"]);
}

/// Stage-1 and stage-2 failures recorded for real from the systemd fixture's fault variants
/// (`cargo xtask vm-test --image fixture-systemd:FAULT --accel tcg`): the serial log
/// (`data/serial/fixture-systemd-FAULT.log`) and the OCR text of the screen vm-test grabbed
/// when the run failed (`data/screens/fixture-systemd-FAULT.txt`, read with `--source screen`).
struct Recorded {
    file: &'static str,
    /// `--source` to pass (`None`: auto).
    source: Option<&'static str>,
    phase: &'static str,
    /// Exactly these ids, no more.
    ids: &'static [&'static str],
    exit: i32,
}

const fn serial(file: &'static str, phase: &'static str, ids: &'static [&'static str], exit: i32) -> Recorded {
    Recorded { file, source: None, phase, ids, exit }
}

const fn screen(file: &'static str, phase: &'static str, ids: &'static [&'static str], exit: i32) -> Recorded {
    Recorded { file, source: Some("screen"), phase, ids, exit }
}

const RECORDED_SYSTEMD_FAILURES: &[Recorded] = &[
    // Stage 1 waits 20 s for root=LABEL=nixos-minimal-25.05-x86_64, mounts anyway, fails, prompts.
    serial("fixture-systemd-root-device-missing.log", "init", &["root-device-missing", "emergency-mode"], 1),
    // Stage 1 writes to /dev/console, the last console (ttyS0): the screen shows only the kernel.
    screen("fixture-systemd-root-device-missing.txt", "init", &[], 0),
    // The root mounts, but init= names a NixOS system path it lacks: stage 1's check and prompt.
    serial("fixture-systemd-stage2-init-missing.log", "init", &["stage2-init-missing", "emergency-mode"], 1),
    screen("fixture-systemd-stage2-init-missing.txt", "init", &[], 0),
    // A stage-2 activation snippet fails before systemd; the boot goes on to the poweroff.
    serial(
        "fixture-systemd-activation-failed.log",
        "poweroff",
        &["activation-failed", "autologin-not-root", "powered-off-cleanly"],
        1,
    ),
    // The screen (tty1) at the end: the fixture's tty1 getty has no autologin (only serial's
    // has), so its plain `nixos login:` reads as `login-prompt`; the activation lines went to ttyS0.
    screen("fixture-systemd-activation-failed.txt", "login", &["login-prompt"], 1),
    // `[FAILED] Failed to start Fixture Data Fetch.`, `[DEPEND] Dependency failed for Fixture
    // Data Import.`: warnings for analyze (vm-test's failed-units check gives the verdict).
    serial(
        "fixture-systemd-dependency-failed.log",
        "poweroff",
        &["unit-failed", "dependency-failed", "autologin-not-root", "powered-off-cleanly"],
        0,
    ),
    screen("fixture-systemd-dependency-failed.txt", "login", &["login-prompt"], 1),
    // `[ TIME ] Timed out waiting for device …ev/disk/by-label/fixture-data.` (systemd cut its
    // own colour escape to fit 80 columns) and `[DEPEND] Dependency failed for /mnt/data.`;
    // the `nofail` mount lets the boot go on, the checks pass (no screen: the run passed).
    serial(
        "fixture-systemd-device-timeout.log",
        "poweroff",
        &["unit-stuck", "dependency-failed", "autologin-not-root", "powered-off-cleanly"],
        1,
    ),
    // `INFO: task dd:196 blocked for more than 5 seconds.` (then 10, 15 s) before the login; the
    // checks pass, so vm-test passes with the finding in metadata.json (no screen).
    serial("fixture-systemd-hung-task.log", "poweroff", &["hung-task", "autologin-not-root", "powered-off-cleanly"], 1),
];

#[test]
fn recorded_systemd_failures_name_their_phase_and_exact_ids() {
    for case in RECORDED_SYSTEMD_FAILURES {
        let dir = if case.source == Some("screen") { "screens" } else { "serial" };
        let path = repo_root().join("xtask/tests/data").join(dir).join(case.file);
        let (code, json) = analyze_json_as(&path, case.source);
        let found: Vec<&str> = json["findings"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap()).collect();
        assert_eq!(json["phase"], case.phase, "{}: phase (findings {found:?})", case.file);
        assert_eq!(found, case.ids, "{}: ids", case.file);
        assert_eq!(code, case.exit, "{}: exit code", case.file);
    }
}

#[test]
fn vm_test_logs_show_the_root_phase() {
    let (_, json) = analyze_json(&data("vmtest-healthy.log"));
    let phases: Vec<&str> = json["timeline"].as_array().unwrap().iter().map(|t| t["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, ["bootloader", "kernel", "init", "login", "shell", "root", "poweroff"]);
}

#[test]
fn healthy_timeline_in_text_and_json() {
    let path = data("handcrafted-healthy.log");
    let (_, json) = analyze_json(&path);
    let phases: Vec<&str> = json["timeline"].as_array().unwrap().iter().map(|t| t["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, ["bootloader", "kernel", "init", "login", "shell", "root", "poweroff"]);
    // The kernel time offset of init is the `Run /init` timestamp, not the dmesg replay's.
    assert_eq!(json["timeline"][2]["offset_secs"], 2.828042);
    assert_eq!(json["timeline"][6]["offset_secs"], 42.1);

    let out = run_xtask(&["analyze", path.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("furthest phase: poweroff"), "{text}");
    assert!(text.contains("kernel +2.828s"), "{text}");
    assert!(text.contains("autologin-not-root (info)") && text.contains("fix:"), "{text}");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_run_directory_and_a_clean_log_read_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let raw = std::fs::read(data("handcrafted-healthy.log")).unwrap();
    std::fs::write(dir.path().join("serial.log"), &raw).unwrap();
    let (_, from_dir) = analyze_json(dir.path());
    // A log cleaned elsewhere (here: escapes and CR removed by hand) gives the same answer.
    let clean = dir.path().join("clean.txt");
    let out = run_xtask(&["analyze", dir.path().join("serial.log").to_str().unwrap(), "--json"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&raw).replace('\r', "");
    let stripped = regex_lite_strip(&text);
    std::fs::write(&clean, stripped).unwrap();
    let (_, from_clean) = analyze_json(&clean);
    assert_eq!(from_dir["phase"], from_clean["phase"]);
    assert_eq!(from_dir["timeline"], from_clean["timeline"]);
    assert_eq!(from_dir["findings"].as_array().unwrap().len(), from_clean["findings"].as_array().unwrap().len());
}

/// A crude independent stripper for the test (CSI, OSC to BEL, 2-byte ESC, SO/SI).
fn regex_lite_strip(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    for c in chars.by_ref() {
                        if c == '\x07' {
                            break;
                        }
                    }
                }
                Some('%') | Some('(') | Some(')') => {
                    chars.next();
                }
                _ => {}
            },
            '\x0e' | '\x0f' => {}
            c => out.push(c),
        }
    }
    out
}

#[test]
fn unreadable_file_exits_3_with_a_reason() {
    let out = run_xtask(&["analyze", "/nonexistent/serial.log"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read /nonexistent/serial.log"), "{err}");
}

#[test]
fn a_generated_flood_is_read_in_one_pass() {
    // 20 MB of kernel-timestamped noise with escapes between a boot and a prompt.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flood.log");
    let mut log = std::fs::read(data("handcrafted-no-serial-console.log")).unwrap();
    let mut n = 0u64;
    while log.len() < 20_000_000 {
        n += 1;
        log.extend_from_slice(
            format!(
                "[{:>5}.{:06}] \x1b[1mflood\x1b[0m line {n} \x0e lqqk \x0f payload payload payload\r\n",
                n / 1000,
                n % 1000
            )
            .as_bytes(),
        );
    }
    log.extend_from_slice(b"\x1b[1;32m[nixos@nixos:~]$\x1b[0m ");
    std::fs::write(&path, &log).unwrap();
    let start = std::time::Instant::now();
    let (code, json) = analyze_json(&path);
    eprintln!("analyze: {:.1} MB in {:.2} s", log.len() as f64 / 1e6, start.elapsed().as_secs_f64());
    assert_eq!(json["phase"], "shell");
    assert_eq!(code, 0, "{json}");
}

#[test]
fn a_run_that_never_booted_is_read_from_qemu_stderr() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("serial.log"), b"").unwrap();
    std::fs::write(
        dir.path().join("qemu.stderr.log"),
        b"qemu-system-x86_64: -drive file=d.img,if=virtio,format=raw: Failed to get \"write\" lock\nIs another process using the image [d.img]?\n",
    )
    .unwrap();
    let (code, json) = analyze_json(dir.path());
    assert_eq!(json["phase"], "qemu");
    assert_eq!(json["findings"][0]["id"], "qemu-start-failed", "{json}");
    assert_eq!(code, 1);
}

/// One log of the foreign corpus (`xtask/tests/data/foreign/`, see its README): text no
/// one here recorded, written from the exact messages of the programs that print them
/// (NixOS's stage-1/2 scripts, systemd, the kernel, GRUB, SYSLINUX, U-Boot, iPXE, less,
/// QEMU, bash) in the shapes users paste: journald-prefixed, CI-prefixed, cut mid-log,
/// OCR'd from a screen, another harness's transcript.
struct Foreign {
    file: &'static str,
    /// `--source` to pass (`None`: auto).
    source: Option<&'static str>,
    /// The furthest phase the log shows.
    phase: &'static str,
    /// Every finding id the log should give, no more: `id` or `id@source` (then the finding
    /// must say it came from that source).
    ids: &'static [&'static str],
    /// What a finding must name: (id, subject).
    subjects: &'static [(&'static str, &'static str)],
    exit: i32,
    /// Why the detector is known to get this one wrong (docs/analyze.md lists these).
    known: Option<&'static str>,
}

const fn case(file: &'static str, phase: &'static str, ids: &'static [&'static str], exit: i32) -> Foreign {
    Foreign { file, source: None, phase, ids, subjects: &[], exit, known: None }
}

impl Foreign {
    const fn source(mut self, source: &'static str) -> Self {
        self.source = Some(source);
        self
    }
    const fn subjects(mut self, subjects: &'static [(&'static str, &'static str)]) -> Self {
        self.subjects = subjects;
        self
    }
    const fn known(mut self, why: &'static str) -> Self {
        self.known = Some(why);
        self
    }
}

const FOREIGN: &[Foreign] = &[
    // NixOS's scripted stage 1 (nixpkgs stage-1-init.sh).
    case("stage1-root-missing.log", "init", &["root-device-missing@serial", "emergency-mode"], 1)
        .subjects(&[("root-device-missing", "/dev/disk/by-label/nixos")]),
    case("stage1-root-missing-excerpt.log", "init", &["root-device-missing"], 1)
        .subjects(&[("root-device-missing", "/dev/disk/by-uuid/6b1f3a4e-8c1e-4a59-9d63-2f8a1b0c7e55")]),
    case("stage1-root-missing-util-linux.log", "init", &["root-device-missing", "emergency-mode"], 1),
    case("stage1-root-missing-photo.txt", "init", &["root-device-missing@screen", "emergency-mode@screen"], 1)
        .source("screen"),
    case("stage1-waiting-photo.txt", "init", &["root-device-missing@screen"], 1).source("screen"),
    case("stage1-stage2-missing.log", "init", &["stage2-init-missing", "emergency-mode"], 1),
    case("stage1-shell-dmesg.log", "root", &["root-device-missing", "emergency-mode"], 1),
    // Stage 2 and activation.
    case("stage2-activation-failed.log", "shell", &["activation-failed", "autologin-not-root"], 1)
        .subjects(&[("activation-failed", "setupSecrets")]),
    case("stage2-activation-journal.log", "login", &["activation-failed@journal"], 1),
    case("journal-iso-activation.log", "init", &["activation-failed@journal"], 1)
        .subjects(&[("activation-failed", "createPersistentStorageDirs")]),
    // systemd: failed units, dependencies, device waits, start jobs.
    case("systemd-unit-failed.log", "shell", &["unit-failed@serial", "autologin-not-root"], 0)
        .subjects(&[("unit-failed", "pre-nixos.service (Pre-NixOS setup)")]),
    case("systemd-unit-failed-journal.log", "init", &["unit-failed@journal", "unit-not-found@journal"], 1)
        .subjects(&[("unit-failed", "pre-nixos.service")]),
    case("journal-cat-dependency.log", "init", &["unit-stuck", "dependency-failed"], 1).known(
        "`journalctl -o cat` drops the prefix that says the text is systemd's journal, and its bare wording \
         (`Dependency failed for /data.`) is ordinary text elsewhere, so auto mode does not claim it; \
         `--source journal` reads it (next case)",
    ),
    case("journal-cat-dependency.log", "init", &["unit-stuck@journal", "dependency-failed@journal"], 1)
        .source("journal")
        .subjects(&[("dependency-failed", "/data")]),
    case(
        "systemd-initrd-root-timeout.log",
        "init",
        &["unit-stuck", "root-device-missing", "dependency-failed", "emergency-mode"],
        1,
    )
    .subjects(&[("unit-stuck", "/dev/disk/by-label/nixos"), ("root-device-missing", "/sysroot")]),
    case(
        "systemd-initrd-switch-root.log",
        "init",
        &["stage2-init-missing@journal", "unit-failed", "emergency-mode"],
        1,
    )
    .subjects(&[("stage2-init-missing", "/sysroot"), ("unit-failed", "initrd-switch-root.service (Switch Root)")]),
    case("data-disk-timeout.log", "init", &["unit-stuck", "dependency-failed", "emergency-mode"], 1).subjects(&[
        ("unit-stuck", "/dev/disk/by-uuid/9e2b6c1d-0f4a-4e7b-8a3c-5d6e7f8a9b0c"),
        ("dependency-failed", "File System Check on /dev/disk/by-uuid/9e2b6c1d-0f4a-4e7b-8a3c-5d6e7f8a9b0c"),
    ]),
    case("data-disk-timeout-ci.log", "init", &["unit-stuck", "dependency-failed", "emergency-mode"], 1),
    case("start-job-combined.log", "init", &["unit-stuck"], 1).subjects(&[("unit-stuck", "pre-nixos.service")]),
    case("journal-monotonic-swap.log", "init", &["unit-stuck@journal", "dependency-failed@journal"], 1),
    case("nixos-test-driver.log", "init", &["unit-failed"], 0).subjects(&[("unit-failed", "pre-nixos.service")]),
    case("cloud-console-excerpt.log", "login", &["unit-failed", "login-prompt"], 1)
        .subjects(&[("unit-failed", "amazon-init.service (Reconfigure the system from EC2 userdata on startup)")]),
    // The kernel.
    case("hung-task-excerpt.log", "kernel", &["hung-task"], 1).subjects(&[("hung-task", "systemd-udevd:212")]),
    case("hung-task-journal.log", "init", &["hung-task@journal"], 1),
    case("hung-task-photo-wrapped.txt", "kernel", &["hung-task@screen"], 1).source("screen").known(
        "an 80-column screen wrapped the line inside the kernel's fixed words (`... kworker/u4:2:57 bl` / \
         `ocked for m0re than 122 seconds.`); lines are matched one at a time, so the split words are not seen",
    ),
    case("dmesg-T-oom.log", "kernel", &["oom-killer"], 1),
    // Bootloaders and firmware.
    case("grub-kernel-not-found.log", "bootloader", &["bootloader-failed"], 1)
        .subjects(&[("bootloader-failed", "/kernels/0ql8f5mr6vwq0ym3i8ifsxfy9bkhsrln-linux-6.12.54-bzImage")]),
    case("grub-shim-signature.log", "bootloader", &["bootloader-failed"], 1),
    case("isolinux-kernel-missing.log", "bootloader", &["bootloader-failed"], 1)
        .subjects(&[("bootloader-failed", "/boot/bzImage")]),
    case("syslinux-ldlinux-missing.log", "bootloader", &["bootloader-failed"], 1),
    case("uboot-healthy.log", "shell", &["autologin-not-root"], 0),
    case("uboot-bad-image-magic.log", "bootloader", &["bootloader-failed"], 1),
    case("uboot-kernel-not-retrieved.log", "bootloader", &["bootloader-failed"], 1)
        .subjects(&[("bootloader-failed", "NixOS - Default")]),
    case("uboot-silent-after-start.log", "bootloader", &["serial-silent-after-bootloader"], 1),
    case("ipxe-exec-format.log", "bootloader", &["bootloader-failed"], 1),
    // The network, the pager, QEMU, the login shell.
    case("lan-missing-session.log", "root", &["lan-interface-missing", "autologin-not-root"], 1),
    case("lan-renamed-late.log", "poweroff", &["autologin-not-root", "powered-off-cleanly"], 0),
    case(
        "pager-ate-input.log",
        "root",
        &["console-in-pager", "unit-failed", "unit-not-found@journal", "autologin-not-root"],
        1,
    )
    .subjects(&[("console-in-pager", "less"), ("unit-failed", "pre-nixos.service")]),
    case("pager-more-photo.txt", "init", &["provisioning-failed", "unit-failed", "console-in-pager@screen"], 1)
        .source("screen")
        .subjects(&[("console-in-pager", "more")]),
    case("qemu-killed-in-kernel.log", "kernel", &["qemu-killed", "kernel-stalled"], 1)
        .subjects(&[("qemu-killed", "signal 15 from pid 90210 (timeout)")]),
    case("qemu-killed-at-shell.log", "shell", &["qemu-killed", "autologin-not-root"], 0),
    case("login-shell-errors.log", "shell", &["login-shell-errors", "autologin-not-root"], 0),
    case(
        "shell-reads-journal.log",
        "shell",
        &[
            "autologin-not-root@serial",
            "storage-detection-error@journal",
            "provisioning-failed@journal",
            "unit-failed@journal",
        ],
        1,
    ),
    // Other shapes of the same text.
    case(
        "upstream-harness-transcript.log",
        "shell",
        &["console-not-last", "floppy-io-error", "autologin-not-root", "storage-detection-error"],
        1,
    ),
    // The unit's description is free text: OCR's `Nix0S` in it stays as read.
    case("failed-unit-screen-photo.txt", "init", &["unit-failed@screen", "dependency-failed@screen"], 0)
        .subjects(&[("unit-failed", "pre-nixos.service (Pre-Nix0S setup)")]),
    case(
        "systemd-initrd-photo-transcribed.txt",
        "init",
        &["unit-stuck@screen", "root-device-missing@screen", "dependency-failed@screen", "emergency-mode@screen"],
        1,
    ),
    case("journal-localized.log", "init", &["provisioning-failed@journal", "unit-failed@journal"], 1),
    // Healthy logs: no failure finding.
    case("healthy-distractors.log", "shell", &["autologin-not-root"], 0),
    case("healthy-ci-prefixed.log", "poweroff", &["autologin-not-root", "powered-off-cleanly"], 0),
    case("healthy-crlf-doubled.log", "poweroff", &["autologin-not-root", "powered-off-cleanly"], 0),
    case("healthy-journal.log", "login", &[], 0),
    case("healthy-screen-photo.txt", "shell", &["autologin-not-root@screen"], 0),
];

fn foreign(file: &str) -> std::path::PathBuf {
    repo_root().join("xtask/tests/data/foreign").join(file)
}

/// What `analyze` made of one corpus log, and what is wrong with it (empty when right).
fn judge(case: &Foreign) -> (Vec<String>, i32) {
    let path = foreign(case.file);
    assert!(path.exists(), "test data {} is missing", path.display());
    let (code, json) = analyze_json_as(&path, case.source);
    let findings = json["findings"].as_array().unwrap();
    let found: std::collections::BTreeSet<&str> = findings.iter().map(|f| f["id"].as_str().unwrap()).collect();
    let want: std::collections::BTreeSet<&str> = case.ids.iter().map(|i| i.split('@').next().unwrap()).collect();
    let mut wrong = Vec::new();
    if json["phase"] != case.phase {
        wrong.push(format!("phase {} (want {})", json["phase"], case.phase));
    }
    if found != want {
        wrong.push(format!("ids {found:?} (want {want:?})"));
    }
    let by_id = |id: &str| findings.iter().find(|f| f["id"] == id);
    for spec in case.ids {
        if let Some((id, source)) = spec.split_once('@') {
            if let Some(f) = by_id(id).filter(|f| f["source"] != source) {
                wrong.push(format!("{id} from {} (want {source})", f["source"]));
            }
        }
    }
    for (id, subject) in case.subjects {
        if let Some(f) = by_id(id).filter(|f| f["subject"] != *subject) {
            wrong.push(format!("{id} about {} (want {subject:?})", f["subject"]));
        }
    }
    if code != case.exit {
        wrong.push(format!("exit {code} (want {})", case.exit));
    }
    // The exit code follows the findings' kinds: a healthy log has no failure finding.
    let failed = findings.iter().any(|f| f["kind"] == "failure");
    assert_eq!(code, i32::from(failed), "{}: exit code and finding kinds disagree", case.file);
    (wrong, code)
}

/// Runs the whole corpus: every case must be right except those documented as known
/// misses (which must still be wrong, so docs/analyze.md stays true). Prints the tally.
#[test]
fn foreign_corpus_phases_and_findings() {
    let mut right = 0;
    let mut failures = Vec::new();
    for case in FOREIGN {
        let (wrong, _) = judge(case);
        match (wrong.is_empty(), case.known) {
            (true, None) => right += 1,
            (false, Some(_)) => eprintln!("known miss: {}: {}", case.file, wrong.join("; ")),
            (true, Some(_)) => {
                failures.push(format!("{}: now right; remove `known` and update docs/analyze.md", case.file))
            }
            (false, None) => failures.push(format!("{}: {}", case.file, wrong.join("; "))),
        }
    }
    let files: std::collections::BTreeSet<&str> = FOREIGN.iter().map(|c| c.file).collect();
    eprintln!("foreign corpus: {} cases ({} logs), {right} right", FOREIGN.len(), files.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every log in the directory is in the table.
    for entry in std::fs::read_dir(foreign("")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(name == "README.md" || files.contains(name.as_str()), "{name} is not in FOREIGN");
    }
}

/// The text output says where a finding's line came from and what it names; a bad
/// `--source` is a usage error.
#[test]
fn text_output_names_source_and_subject() {
    let out = run_xtask(&["analyze", foreign("systemd-unit-failed-journal.log").to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("unit-failed (warning)  line 5, journal text"), "{text}");
    assert!(text.contains("about: pre-nixos.service"), "{text}");
    assert!(text.contains("text:  Oct 11 10:00:31.901702 nixos systemd[1]:"), "{text}");
    assert_eq!(out.status.code(), Some(1));
    let out = run_xtask(&["analyze", foreign("healthy-journal.log").to_str().unwrap(), "--source", "photo"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values: auto, serial, journal, screen"));
}

/// How a bounded `xtask` run ended.
struct Bounded {
    /// None when it had to be killed at the deadline.
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Address space that is a mere safety net: an unbounded analyze reads /dev/zero until the
/// machine runs out of memory.
const SAFETY_NET: u64 = 1 << 30;

/// Runs `xtask ARGS` with `input` on its stdin, its address space capped at `address_space`
/// bytes (RLIMIT_AS: a hard bound on all the memory it can map, unlike a peak RSS, which after
/// fork() + exec() also counts the test process's own pages), and killed after 60 s (a FIFO
/// used to block analyze forever).
fn run_bounded(args: &[&str], input: Option<Vec<u8>>, address_space: u64) -> Bounded {
    use std::io::{Read, Write};
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    let mut cmd = common::xtask();
    cmd.args(args).stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit { rlim_cur: address_space, rlim_max: address_space };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("xtask starts");
    let pid = child.id() as libc::pid_t;
    // A closed pipe (analyze refused the input) just ends the writer.
    let writer =
        child.stdin.take().zip(input).map(|(mut stdin, bytes)| std::thread::spawn(move || stdin.write_all(&bytes)));
    let read_all = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            r.read_to_string(&mut text).unwrap();
            text
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait().unwrap()).unwrap());
    let status = rx.recv_timeout(std::time::Duration::from_secs(60)).unwrap_or_else(|_| {
        // SAFETY: a plain kill(2) of our child, not reaped yet (wait() has not returned).
        unsafe { libc::kill(pid, libc::SIGKILL) };
        rx.recv().unwrap()
    });
    if let Some(w) = writer {
        let _ = w.join();
    }
    Bounded { code: status.code(), stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

#[test]
fn devices_and_fifos_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("serial.log");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    // /dev/zero never ends, a FIFO blocks until a writer comes; a run directory's serial.log too.
    for target in [std::path::Path::new("/dev/zero"), &fifo, dir.path()] {
        let out = run_bounded(&["analyze", target.to_str().unwrap()], None, SAFETY_NET);
        assert_eq!(out.code, Some(3), "{}: {}", target.display(), out.stderr);
        assert!(out.stderr.contains("not a regular file"), "{}", out.stderr);
        assert!(out.stderr.contains("analyze - <"), "names the way to read a stream: {}", out.stderr);
    }
}

#[test]
fn dash_reads_stdin_like_a_file() {
    let path = data("fixture-healthy.log");
    let (code, from_file) = analyze_json(&path);
    let raw = std::fs::read(&path).unwrap();
    let out = run_bounded(&["analyze", "-", "--json"], Some(raw), SAFETY_NET);
    assert_eq!(out.code, Some(code), "{}", out.stderr);
    let from_stdin: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(from_stdin["file"], "-");
    for key in ["phase", "lines", "timeline", "findings", "failed"] {
        assert_eq!(from_stdin[key], from_file[key], "{key}");
    }
}

/// Memory the analyzer may map, whatever the input: the debug binary runs in 16 MiB.
const BOUND: u64 = 64 << 20;

#[test]
fn memory_is_bounded_whatever_the_input_size() {
    // 128 MiB of (sparse) zero bytes: a regular file twice the bound, nothing written to disk.
    let dir = tempfile::tempdir().unwrap();
    let sparse = dir.path().join("sparse.log");
    std::fs::File::create(&sparse).unwrap().set_len(2 * BOUND).unwrap();
    let out = run_bounded(&["analyze", sparse.to_str().unwrap(), "--json"], None, BOUND);
    assert_eq!(out.code, Some(0), "a 128 MiB file within 64 MiB of memory: {}", out.stderr);

    // Through stdin: recorded boots, then a 16 MB line without a newline, then a prompt.
    let boot = std::fs::read(data("fixture-healthy.log")).unwrap();
    let mut stream = boot.repeat(100);
    stream.extend(std::iter::repeat_n(b'x', 16 << 20));
    stream.extend_from_slice(b"\r\n[root@nixos:~]# ");
    let out = run_bounded(&["analyze", "-", "--json"], Some(stream), BOUND);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let json: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["phase"], "poweroff", "{json}");
}
