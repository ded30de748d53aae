//! `cargo xtask bench` — what does the harness cost?
//!
//! Boots the fixture N times through the real `vm-test` (a child process, exactly as a user
//! runs it) and N times with QEMU alone (same command line, a bare reader on the serial socket
//! that only looks for the prompt bytes), alternating the two so machine load hits both alike.
//! Prints per-phase medians, boot-to-prompt for both and their ratio (harness overhead), and
//! the harness's own CPU time per wall second. With `--matrix`: the wall time of the 4-cell
//! matrix `--disk blank,none,existing,two` at `--jobs 1` and at `--jobs 2` (guests with one
//! CPU). Figures, not assertions: nothing here fails because a number is high.

use crate::accel::{Accel, AccelChoice};
use crate::process;
use crate::stats::median;
use crate::vm::machine;
use crate::vm::qemu::Firmware;
use crate::vm::record::{PhaseStatus, RunOutcome, RunRecord};
use crate::{exit, project, ui};
use anyhow::{bail, Context, Result};
use camino::Utf8Path;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::Duration;
use xshell::cmd;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Number of harness runs (and as many bare-QEMU baseline runs)
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Accelerator passed to vm-test and used for the baseline
    #[arg(long, value_name = "auto|kvm|tcg", value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// Which fixture to boot: `fixture` (busybox) or `fixture-systemd`, as for `vm-test --image`
    #[arg(long, value_name = "fixture[-systemd]", default_value = "fixture")]
    pub image: String,
    /// Measure `vm-test --matrix` instead: a 4-cell matrix (disks blank, none, existing, two;
    /// one-CPU guests) at --jobs 1 and at --jobs 2, wall time of each
    #[arg(long)]
    pub matrix: bool,
    /// Firmware passed to vm-test and used for the baseline
    #[arg(long, value_name = "bios|uefi", value_enum, default_value_t = Firmware::Bios)]
    pub firmware: Firmware,
    /// Pass --bootloader-wait to vm-test (the menu counts down instead of being skipped)
    #[arg(long)]
    pub bootloader_wait: bool,
    /// Print the figures as JSON (also written to bench.json in the bench directory)
    #[arg(long)]
    pub json: bool,
}

/// Raw bytes that end the NixOS prompt (`…nixos@nixos:~]$`): contiguous in the raw stream
/// even with the colour and title escapes around them.
const PROMPT_BYTES: &[u8] = b":~]$";
const BASELINE_DEADLINE: Duration = Duration::from_secs(180);
/// Raw bytes of the ISOLINUX and GRUB menus (contiguous in the raw stream): the baseline
/// presses Enter there too, as vm-test does unless `--bootloader-wait`.
const MENU_BYTES: [&[u8]; 2] = [b"Press [Tab] to edit options", b"keys to select which entry"];

pub fn run(args: Args) -> Result<u8> {
    if args.runs == 0 {
        return Err(exit::usage("--runs must be at least 1"));
    }
    let (flavor, fault) = crate::vm_test::parse_image(&args.image)?;
    if fault.is_some() {
        return Err(exit::usage(format!("--image {}: bench boots healthy images only", args.image)));
    }
    let iso = crate::fixture::build_variant(flavor, None)?;
    let dir = project::create_run_dir(&project::target_dir().join("bench"), jiff::Timestamp::now())?;
    if args.matrix {
        return matrix_bench(&args, &dir);
    }
    eprintln!("bench: {} harness + {} baseline boots of {iso}; results in {dir}", args.runs, args.runs);
    let mut harness = Vec::new();
    let mut baseline = Vec::new();
    for i in 1..=args.runs {
        let run_dir = dir.join(format!("harness-{i}"));
        let meta = harness_run(&run_dir, &args)?;
        eprintln!(
            "bench: harness run {i}: {} in {:.1}s, prompt at {}",
            meta.outcome.map_or("?", RunOutcome::name),
            meta.total_seconds.unwrap_or(0.0),
            meta.milestones.prompt.map_or("?".into(), |p| format!("{p:.2}s"))
        );
        let b = baseline_run(&meta, &dir.join(format!("baseline-{i}")), !args.bootloader_wait)?;
        harness.push(meta);
        eprintln!("bench: baseline run {i}: prompt at {b:.2}s");
        baseline.push(b);
    }
    let figures = summarize(&harness, &baseline);
    project::write_atomic(&dir.join("bench.json"), serde_json::to_string_pretty(&figures)?.as_bytes())?;
    if args.json {
        ui::print(&(serde_json::to_string_pretty(&figures)? + "\n"))?;
    } else {
        ui::print(&render_figures(&figures))?;
    }
    let all_passed = harness.iter().all(passed);
    Ok(if all_passed { exit::OK } else { exit::FAILED })
}

/// The 4 cells of the matrix bench: every disk scenario (`existing` boots twice).
const MATRIX_DISKS: &str = "blank,none,existing,two";

/// The same 4-cell matrix at --jobs 1 and --jobs 2 (alternating, `--runs` times each): wall
/// seconds from matrix.json, medians, and the speed-up.
fn matrix_bench(args: &Args, dir: &Utf8Path) -> Result<u8> {
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let sh = process::shell()?;
    let accel = args.accel.to_string();
    let mut walls: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut all_passed = true;
    for i in 1..=args.runs {
        for (slot, jobs) in ["1", "2"].into_iter().enumerate() {
            let run_dir = dir.join(format!("matrix-jobs{jobs}-{i}"));
            let log_path = run_dir.with_extension("log");
            let log = fs_err::File::create(&log_path)?.into_parts().0;
            let image = &args.image;
            let command = cmd!(
                sh,
                "{exe} vm-test --matrix --image {image} --disk {MATRIX_DISKS} --cpus 1 --accel {accel} --jobs {jobs} --run-dir {run_dir}"
            )
            .env("NO_COLOR", "1");
            let status = process::status_logged(command, log).context("running vm-test --matrix")?;
            all_passed &= status.success();
            let summary: Value = serde_json::from_slice(&fs_err::read(run_dir.join("matrix.json")).map_err(|e| {
                exit::infra(format!("vm-test --matrix ({status}) left no matrix.json: {e}; see {log_path}"))
            })?)?;
            let wall = summary["wall_seconds"].as_f64().unwrap_or(0.0);
            eprintln!("bench: matrix run {i} at --jobs {jobs}: {wall:.1} s wall ({status})");
            walls[slot].push(wall);
        }
    }
    let (one, two) = (median(walls[0].clone()), median(walls[1].clone()));
    let figures = json!({
        "matrix": {"cells": 4, "disks": MATRIX_DISKS, "image": args.image, "guest_cpus": 1,
                   "host_cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
                   "jobs1_wall_seconds": walls[0], "jobs2_wall_seconds": walls[1],
                   "jobs1_median_seconds": one, "jobs2_median_seconds": two,
                   "speedup": one.zip(two).map(|(a, b)| a / b)},
    });
    project::write_atomic(&dir.join("bench.json"), serde_json::to_string_pretty(&figures)?.as_bytes())?;
    if args.json {
        ui::print(&(serde_json::to_string_pretty(&figures)? + "\n"))?;
    } else {
        let m = &figures["matrix"];
        let secs = |v: Option<f64>| v.map_or("?".to_string(), |x| format!("{x:.1} s"));
        ui::print(&format!(
            "4-cell matrix ({MATRIX_DISKS}, {}, 1-CPU guests, {} host cores), median of {} runs:\n  --jobs 1: {}\n  --jobs 2: {}\n  speed-up: {}\n",
            args.image,
            m["host_cores"],
            args.runs,
            secs(one),
            secs(two),
            m["speedup"].as_f64().map_or("?".to_string(), |x| format!("{x:.2}×"))
        ))?;
    }
    Ok(if all_passed { exit::OK } else { exit::FAILED })
}

fn passed(run: &RunRecord) -> bool {
    run.outcome == Some(RunOutcome::Pass)
}

/// One `vm-test --image IMAGE` run in a child process (exactly what a user runs); returns
/// its metadata.json.
fn harness_run(run_dir: &Utf8Path, args: &Args) -> Result<RunRecord> {
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let log_path = run_dir.with_extension("log");
    let log = fs_err::File::create(&log_path)?.into_parts().0;
    let (sh, image, accel, firmware) =
        (process::shell()?, &args.image, args.accel.to_string(), args.firmware.to_string());
    let wait = args.bootloader_wait.then_some("--bootloader-wait");
    let vm_test =
        cmd!(sh, "{exe} vm-test --image {image} --accel {accel} --firmware {firmware} {wait...} --run-dir {run_dir}")
            .env("NO_COLOR", "1");
    let status = process::status_logged(vm_test, log).context("running vm-test")?;
    let code = status.code().unwrap_or(-1);
    if code == exit::INFRA as i32 || code == exit::USAGE as i32 || code == exit::INTERRUPTED as i32 {
        bail!(exit::infra(format!("vm-test could not run (exit {code}); see {log_path}")));
    }
    let meta = fs_err::read(run_dir.join("metadata.json"))
        .map_err(|e| exit::infra(format!("vm-test (exit {code}) left no metadata.json: {e}; see {log_path}")))?;
    Ok(RunRecord::from_json(&meta)?)
}

/// QEMU alone, with the harness run's own command line (accel, memory, CPUs, devices) and a
/// bare reader: seconds from spawn until the prompt bytes arrive. QEMU is started and cleaned
/// up as vm-test's is (`vm::machine`).
fn baseline_run(meta: &RunRecord, dir: &Utf8Path, skip_menu: bool) -> Result<f64> {
    // Its QMP and serial sockets go here: private, like vm-test's run directories.
    project::private_run_dir(dir).with_context(|| format!("creating {dir}"))?;
    let q = &meta.qemu;
    if q.binary.is_empty() || meta.image.path.is_empty() {
        bail!("the harness run's metadata.json names no QEMU binary or ISO (QEMU never started)");
    }
    let options = machine::Options {
        binary: q.binary.as_str().into(),
        iso: meta.image.path.as_str().into(),
        accel: q.accel.parse().unwrap_or(Accel::Tcg),
        memory_mib: q.memory_mib,
        cpus: q.cpus,
        disks: vec![machine::DiskFile::fresh(dir.join("disk.qcow2"), "4G")],
        keep: false,
        firmware: if q.firmware == "uefi" { Firmware::Uefi } else { Firmware::Bios },
    };
    // Dropping the machine kills QEMU and removes the disk and sockets.
    let mut machine = machine::prepare(dir, options)?.start(&dir.join("qemu.stderr.log"))?;
    let started = machine.vm.started;
    let result = (|| -> Result<f64> {
        let mut stream = machine
            .accept(Duration::from_secs(10))
            .map_err(|e| anyhow::anyhow!("QEMU did not connect to the serial socket: {e:?}"))?;
        // Blocking reads with a timeout: the thread sleeps in the kernel, like the harness.
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        let mut seen = Vec::new();
        let mut buf = [0u8; 16384];
        let mut menu_pending = skip_menu;
        let keep_bytes = MENU_BYTES.iter().map(|m| m.len()).max().unwrap_or(0).max(PROMPT_BYTES.len());
        while started.elapsed() < BASELINE_DEADLINE {
            match stream.read(&mut buf) {
                Ok(0) => bail!("QEMU closed the serial line before the prompt"),
                Ok(n) => {
                    seen.extend_from_slice(&buf[..n]);
                    if seen.windows(PROMPT_BYTES.len()).any(|w| w == PROMPT_BYTES) {
                        return Ok(started.elapsed().as_secs_f64());
                    }
                    if menu_pending && MENU_BYTES.iter().any(|m| seen.windows(m.len()).any(|w| w == *m)) {
                        stream.write_all(b"\r")?;
                        menu_pending = false;
                    }
                    let keep = seen.len().saturating_sub(keep_bytes);
                    seen.drain(..keep);
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(e.into()),
            }
        }
        bail!("no prompt within {}s", BASELINE_DEADLINE.as_secs())
    })();
    drop(machine);
    result.with_context(|| format!("baseline boot (see {dir}/qemu.stderr.log)"))
}

fn summarize(harness: &[RunRecord], baseline: &[f64]) -> Value {
    let phase_medians: Vec<Value> = crate::diagnose::Phase::ALL
        .iter()
        .map(|p| {
            let xs: Vec<f64> = harness
                .iter()
                .flat_map(|m| &m.phases)
                .filter(|e| e.phase == *p && e.status == PhaseStatus::Ok)
                .map(|e| e.seconds)
                .collect();
            json!({"phase": p.name(), "median_seconds": median(xs.clone()), "runs": xs.len()})
        })
        .collect();
    let prompt = median(harness.iter().filter_map(|m| m.milestones.prompt).collect());
    let root = median(harness.iter().filter_map(|m| m.milestones.root).collect());
    let bare = median(baseline.to_vec());
    let cpu = median(harness.iter().map(|m| m.harness.cpu_seconds).collect());
    let wall = median(harness.iter().filter_map(|m| m.total_seconds).collect());
    let rss = harness.iter().filter_map(|m| m.harness.peak_rss_kib).max();
    let overhead = prompt.zip(bare).map(|(h, b)| (h - b) / b);
    let cpu_share = cpu.zip(wall).map(|(c, w)| c / w);
    json!({
        "runs": harness.len(),
        "passed": harness.iter().filter(|m| passed(m)).count(),
        "accel": harness.first().map(|m| &m.qemu.accel),
        "phases": phase_medians,
        "image": harness.first().map(|m| &m.image.source),
        "boot_to_root": {"harness_median_seconds": root},
        "boot_to_prompt": {"harness_median_seconds": prompt, "baseline_median_seconds": bare,
                            "baseline_runs": baseline, "overhead_ratio": overhead, "target_ratio": 0.10},
        "harness_cpu": {"median_cpu_seconds": cpu, "median_wall_seconds": wall, "share_of_one_core": cpu_share,
                         "target_share": 0.02, "peak_rss_kib": rss},
    })
}

fn render_figures(f: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let fancy = ui::fancy_stdout();
    let num = |v: &Value| v.as_f64().map_or("?".to_string(), |x| format!("{x:.2}"));
    let image = f["image"].as_str().unwrap_or("?");
    let _ = writeln!(
        out,
        "Phase medians over {} runs of {image} ({} passed, accel {}):",
        f["runs"], f["passed"], f["accel"]
    );
    for p in f["phases"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  {:<11} {:>7} s", p["phase"].as_str().unwrap_or("?"), num(&p["median_seconds"]));
    }
    let b = &f["boot_to_prompt"];
    let c = &f["harness_cpu"];
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => ui::paint(fancy, ui::Tone::Good, "within target"),
        Some(false) => ui::paint(fancy, ui::Tone::Bad, "over target"),
        None => "not measured".to_string(),
    };
    let ratio = b["overhead_ratio"].as_f64();
    let _ = writeln!(
        out,
        "Boot to prompt: harness {} s, bare QEMU {} s → overhead {} ({}; target ≤ 10 %)",
        num(&b["harness_median_seconds"]),
        num(&b["baseline_median_seconds"]),
        ratio.map_or("?".into(), |r| format!("{:+.1} %", r * 100.0)),
        verdict(ratio.map(|r| r <= 0.10))
    );
    let _ =
        writeln!(out, "Boot to verified root (`id -u` = 0): {} s", num(&f["boot_to_root"]["harness_median_seconds"]));
    let share = c["share_of_one_core"].as_f64();
    let _ = writeln!(
        out,
        "Harness CPU: {} s over {} s wall = {} of one core ({}; target ≤ 2 %), peak RSS {} KiB",
        num(&c["median_cpu_seconds"]),
        num(&c["median_wall_seconds"]),
        share.map_or("?".into(), |s| format!("{:.2} %", s * 100.0)),
        verdict(share.map(|s| s <= 0.02)),
        c["peak_rss_kib"]
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_ratio_and_cpu_share() {
        let run = json!({"outcome": "pass", "total_seconds": 20.0, "qemu": {"accel": "tcg"},
            "milestones": {"prompt": 11.0}, "harness": {"cpu_seconds": 0.2, "peak_rss_kib": 9000},
            "phases": [{"phase": "kernel", "seconds": 4.0, "status": "ok"}]});
        let run = RunRecord::from_value(run);
        let f = summarize(&[run.clone(), run], &[10.0, 10.0]);
        assert!((f["boot_to_prompt"]["overhead_ratio"].as_f64().unwrap() - 0.1).abs() < 1e-9);
        assert!((f["harness_cpu"]["share_of_one_core"].as_f64().unwrap() - 0.01).abs() < 1e-9);
        assert_eq!(f["phases"][2]["median_seconds"], 4.0);
    }
}
