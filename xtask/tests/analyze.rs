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
    /// Every one of these ids must be found.
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
    let out = run_xtask(&["analyze", path.to_str().unwrap(), "--json"]);
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {}", path.display(), String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), json)
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
        let (code, json) = analyze_json(&path);
        let ids: Vec<&str> = json["findings"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap()).collect();
        assert_eq!(json["phase"], case.phase, "{}: phase (findings {ids:?})", case.file);
        for id in case.ids {
            assert!(ids.contains(id), "{}: expected {id} in {ids:?}", case.file);
        }
        for id in case.not {
            assert!(!ids.contains(id), "{}: did not expect {id} in {ids:?}", case.file);
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
/// phase, ids that must be found, and the exit code.
const RECORDED: &[(&str, &str, &[&str], i32)] = &[
    // sudo -i, id -u, poweroff.
    ("fixture-healthy.log", "poweroff", &["autologin-not-root", "powered-off-cleanly"], 0),
    // APPEND without console=ttyS0: ISOLINUX, `Loading /boot/initrd...ok`, then nothing for 30 s.
    ("fixture-no-serial-console.log", "bootloader", &["serial-silent-after-bootloader"], 1),
    // `console=ttyS0,115200 console=tty0`: kernel lines, then the login on ttyS0.
    ("fixture-console-not-last.log", "shell", &["console-not-last"], 1),
    // No autologin: a bare `nixos login:` prompt (a console broadcast lands after it).
    ("fixture-login-prompt.log", "login", &["login-prompt"], 1),
    // sudo -i asks `[sudo] password for nixos:`; an empty answer is refused.
    ("fixture-sudo-password.log", "shell", &["autologin-not-root", "escalation-failed"], 1),
    ("fixture-storage-error.log", "shell", &["storage-detection-error"], 1),
    // No /init in the initramfs.
    ("fixture-kernel-panic.log", "kernel", &["kernel-panic"], 1),
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
        for id in *ids {
            assert!(found.contains(id), "{file}: expected {id} in {found:?}");
        }
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
        let (code, json) = analyze_json(&data(case.file));
        let found: Vec<&str> = json["findings"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap()).collect();
        assert_eq!(json["phase"], case.phase, "{}: phase (findings {found:?})", case.file);
        for id in case.ids {
            assert!(found.contains(id), "{}: expected {id} in {found:?}", case.file);
        }
        for id in case.not {
            assert!(!found.contains(id), "{}: did not expect {id} in {found:?}", case.file);
        }
        assert_eq!(code, case.exit, "{}: exit code", case.file);
    }
    // systemd's own lines mark the init phase.
    let (_, json) = analyze_json(&data("fixture-systemd-healthy.log"));
    let phases: Vec<&str> = json["timeline"].as_array().unwrap().iter().map(|t| t["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, ["bootloader", "kernel", "init", "login", "shell", "root", "poweroff"]);
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
