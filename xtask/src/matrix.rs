//! `vm-test --matrix`: every combination of the comma lists given to `--image`, `--firmware`
//! and `--disk`, each cell a `vm-test` child process of its own (own run directory, sockets,
//! disks and forwarded port), `--jobs` at a time. The images are built and the accelerator
//! chosen once, before any cell starts. At the end: one summary table (cell, outcome,
//! seconds, finding), `matrix.json` and one `junit.xml` with a test case per cell.
//! Ctrl-C is forwarded to the running cells (each stops its QEMU and writes its record);
//! cells not started yet are recorded as such.

use crate::accel::Accel;
use crate::vm::disks::Scenario;
use crate::vm::record::{RunOutcome, RunRecord};
use crate::vm::report::xml_escape;
use crate::vm_test::Args;
use crate::{exit, process, project, ui};
use anyhow::{Context, Result};
use camino::Utf8Path;
use serde::Serialize;
use std::fmt::Write as _;
use std::process::Child;
use std::time::{Duration, Instant};
use xshell::cmd;

/// How long the running cells get to write their records after Ctrl-C before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(90);

/// One combination.
#[derive(Clone, Debug, PartialEq)]
struct Cell {
    image: Option<String>,
    firmware: crate::vm::qemu::Firmware,
    disk: Scenario,
}

impl Cell {
    /// `fixture-bios-blank`: the cell's name and its run directory's.
    fn name(&self) -> String {
        // Without --image the cells boot --iso or the flake image.
        let image = self.image.as_deref().unwrap_or("image").replace(':', "-");
        format!("{image}-{}-{}", self.firmware.name(), self.disk)
    }
}

/// What became of a cell.
#[derive(Clone, Debug, Serialize)]
struct CellResult {
    cell: String,
    /// pass, fail, infra, interrupted, or not-run (Ctrl-C came first)
    outcome: String,
    seconds: f64,
    finding: Option<String>,
    detail: Option<String>,
    exit_code: Option<i32>,
    run_dir: String,
}

/// The cartesian product, images outermost; a usage error for a value a single run refuses.
fn cells(args: &Args) -> Result<Vec<Cell>> {
    let images: Vec<Option<String>> = match &args.image {
        Some(list) => list.split(',').map(|s| Some(s.trim().to_string())).collect(),
        None => vec![None],
    };
    for image in images.iter().flatten() {
        crate::vm_test::parse_image(image)?;
    }
    let mut all = Vec::new();
    for image in &images {
        for firmware in &args.firmware {
            for &disk in &args.disk {
                let cell = Cell { image: image.clone(), firmware: *firmware, disk };
                if all.contains(&cell) {
                    return Err(exit::usage(format!("--matrix: cell {} is listed twice", cell.name())));
                }
                all.push(cell);
            }
        }
    }
    Ok(all)
}

/// Cells at once when `--jobs` is not given: under TCG every guest CPU is a busy host thread,
/// so cores / guest CPUs; under KVM guests mostly wait, one per core.
fn default_jobs(accel: Accel, cpus: u32) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match accel {
        Accel::Kvm => cores,
        Accel::Tcg => (cores / cpus.max(1) as usize).max(1),
    }
}

pub fn run(args: Args) -> Result<u8> {
    let cells = cells(&args)?;
    if args.keep {
        return Err(exit::usage("--keep with --matrix: keep one VM with a single run instead"));
    }
    if args.jobs == Some(0) {
        return Err(exit::usage("--jobs must be at least 1"));
    }
    if let Some(d) = &args.run_dir {
        crate::vm_test::refuse_used_run_dir(d)?;
    }
    let _interrupt = crate::interrupt::Guard::install();
    let dir = match &args.run_dir {
        Some(d) => project::private_run_dir(d)
            .and_then(|()| d.canonicalize_utf8())
            .map_err(|e| exit::infra(format!("cannot create the matrix directory {d}: {e}")))?,
        None => project::create_run_dir(&project::target_dir().join("vm-matrix"), jiff::Timestamp::now())
            .map_err(|e| exit::infra(format!("cannot create a matrix directory: {e:#}")))?,
    };
    eprintln!("vm-test --matrix: {} cells, results in {dir}", cells.len());
    let started = Instant::now();
    let results = match prepare(&args) {
        Ok((accel, no_build)) => {
            let jobs = args.jobs.unwrap_or_else(|| default_jobs(accel, args.cpus));
            eprintln!("vm-test --matrix: accel {accel}, {jobs} at a time");
            run_cells(&args, &cells, &dir, accel, no_build, jobs)?
        }
        // Ctrl-C while the images build: every cell on record as not run.
        Err(_) if crate::interrupt::interrupted() => cells.iter().map(|c| not_run(c, &dir)).collect(),
        Err(e) => return Err(e),
    };
    let wall = started.elapsed().as_secs_f64();
    write_results(&dir, &results, wall)?;
    let table = summary(&results, wall, &dir);
    let _ = ui::print(&table);
    Ok(exit_code(&results, crate::interrupt::interrupted()))
}

/// Before any cell: the fixture images built (the cells then find them cached instead of
/// building them side by side), the flake image built once (cells get `--no-build`), and
/// `--accel auto` probed once. Returns the accelerator and whether cells skip the build.
fn prepare(args: &Args) -> Result<(Accel, bool)> {
    let mut no_build = args.no_build;
    match &args.image {
        Some(list) => {
            for image in list.split(',') {
                let (flavor, fault) = crate::vm_test::parse_image(image.trim())?;
                eprintln!("vm-test --matrix: building {image} …");
                crate::fixture::build_variant(flavor, fault)?;
            }
        }
        None if args.iso.is_none() && !args.no_build => {
            eprintln!("vm-test --matrix: building the flake image (.#bootImage) …");
            crate::build_image::build_default(&Default::default())?;
            no_build = true;
        }
        None => {}
    }
    let accel = match args.accel.fixed() {
        Some(a) => a,
        None => {
            eprintln!("vm-test --matrix: accel auto: probing KVM by booting a kernel …");
            crate::accel::choose_auto().0
        }
    };
    if crate::interrupt::interrupted() {
        return Err(anyhow::Error::from(exit::Exit { code: exit::INTERRUPTED, message: "interrupted".into() }));
    }
    Ok((accel, no_build))
}

/// The `vm-test` command line of one cell: the cell's values and every other flag passed on.
fn cell_args(args: &Args, cell: &Cell, run_dir: &Utf8Path, accel: Accel, no_build: bool) -> Vec<String> {
    let mut a: Vec<String> = vec!["vm-test".into(), "--run-dir".into(), run_dir.to_string()];
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
    push(&["--disk", cell.disk.name(), "--firmware", cell.firmware.name(), "--accel", accel.name()]);
    match (&cell.image, &args.iso) {
        (Some(image), _) => push(&["--image", image]),
        (None, Some(iso)) => push(&["--iso", iso.as_str()]),
        (None, None) if no_build => push(&["--no-build"]),
        (None, None) => {}
    }
    if let Some(m) = args.memory {
        push(&["--memory", &m.to_string()]);
    }
    push(&["--cpus", &args.cpus.to_string()]);
    if let Some(c) = &args.login {
        let login = match &c.password {
            Some(p) => format!("{}:{p}", c.user),
            None => c.user.clone(),
        };
        push(&["--login", &login]);
    }
    for (flag, on) in [("--skip-preflight", args.skip_preflight), ("--archive", args.archive)] {
        if on {
            push(&[flag]);
        }
    }
    for (flag, secs) in [
        ("--boot-timeout", args.boot_timeout),
        ("--stall", args.stall),
        ("--command-timeout", args.command_timeout),
        ("--storage-timeout", args.storage_timeout),
        ("--network-timeout", args.network_timeout),
    ] {
        push(&[flag, &secs.to_string()]);
    }
    a
}

struct Running {
    index: usize,
    child: Child,
    started: Instant,
}

/// Runs the cells `jobs` at a time until all are done or Ctrl-C: then the running ones get
/// SIGINT (each stops its QEMU and writes its record; killed after `STOP_GRACE`), and the
/// others are not started.
fn run_cells(
    args: &Args,
    cells: &[Cell],
    dir: &Utf8Path,
    accel: Accel,
    no_build: bool,
    jobs: usize,
) -> Result<Vec<CellResult>> {
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let sh = process::shell()?;
    let mut results: Vec<Option<CellResult>> = vec![None; cells.len()];
    let mut next = 0;
    let mut running: Vec<Running> = Vec::new();
    let mut stopping: Option<Instant> = None;
    loop {
        let interrupted = crate::interrupt::interrupted();
        while !interrupted && running.len() < jobs && next < cells.len() {
            let cell = &cells[next];
            let run_dir = dir.join(cell.name());
            let log = fs_err::File::create(dir.join(format!("{}.log", cell.name())))?.into_parts().0;
            let cell_args = cell_args(args, cell, &run_dir, accel, no_build);
            let command = cmd!(sh, "{exe} {cell_args...}").env("NO_COLOR", "1");
            let child = process::spawn_logged(command, log, process::Tie::OwnGroupDiesWithUs)
                .map_err(|e| exit::infra(format!("cannot start {}: {e}", exe.display())))?;
            eprintln!("vm-test --matrix: {} started (pid {})", cell.name(), child.id());
            running.push(Running { index: next, child, started: Instant::now() });
            next += 1;
        }
        if running.is_empty() {
            break;
        }
        if interrupted && stopping.is_none() {
            eprintln!("vm-test --matrix: interrupted; stopping {} running cell(s) …", running.len());
            for r in &running {
                process::signal_group(&r.child, libc::SIGINT);
            }
            stopping = Some(Instant::now());
        }
        if stopping.is_some_and(|s| s.elapsed() > STOP_GRACE) {
            for r in &running {
                process::signal_group(&r.child, libc::SIGKILL);
            }
        }
        let mut children: Vec<&mut Child> = running.iter_mut().map(|r| &mut r.child).collect();
        // The timeout only bounds a Ctrl-C that lands just before the wait begins.
        if let Some((i, status)) = process::wait_any(&mut children, Duration::from_secs(1))? {
            let done = running.remove(i);
            let cell = &cells[done.index];
            let result = read_result(cell, &dir.join(cell.name()), status.code(), done.started.elapsed());
            eprintln!(
                "vm-test --matrix: {} {} in {:.1} s{}",
                result.cell,
                result.outcome,
                result.seconds,
                result.finding.as_deref().map_or(String::new(), |f| format!(" ({f})"))
            );
            results[done.index] = Some(result);
        }
    }
    Ok(cells.iter().zip(results).map(|(cell, r)| r.unwrap_or_else(|| not_run(cell, dir))).collect())
}

fn not_run(cell: &Cell, dir: &Utf8Path) -> CellResult {
    CellResult {
        cell: cell.name(),
        outcome: "not-run".into(),
        seconds: 0.0,
        finding: Some("interrupted".into()),
        detail: Some("interrupted before this cell started".into()),
        exit_code: None,
        run_dir: dir.join(cell.name()).to_string(),
    }
}

/// A finished cell from its `metadata.json`, or from its exit code when it left none.
fn read_result(cell: &Cell, run_dir: &Utf8Path, code: Option<i32>, took: Duration) -> CellResult {
    let record = fs_err::read(run_dir.join("metadata.json")).ok().and_then(|b| RunRecord::from_json(&b).ok());
    let from_code = match code.and_then(|c| u8::try_from(c).ok()) {
        Some(exit::OK) => RunOutcome::Pass,
        Some(exit::FAILED) => RunOutcome::Fail,
        Some(exit::INTERRUPTED) => RunOutcome::Interrupted,
        _ => RunOutcome::Infra,
    };
    let (outcome, seconds, finding, detail) = match &record {
        Some(r) => (
            r.outcome.unwrap_or(from_code),
            r.total_seconds.unwrap_or(took.as_secs_f64()),
            r.verdict.as_ref().map(|v| v.finding.clone()),
            r.verdict.as_ref().map(|v| v.detail.clone()),
        ),
        None => (
            from_code,
            took.as_secs_f64(),
            Some("no-record".to_string()),
            Some(format!("vm-test exited {code:?} without metadata.json; see {run_dir}.log")),
        ),
    };
    CellResult {
        cell: cell.name(),
        outcome: outcome.name().to_string(),
        seconds: (seconds * 10.0).round() / 10.0,
        finding,
        detail,
        exit_code: code,
        run_dir: run_dir.to_string(),
    }
}

/// `matrix.json` and `junit.xml` in the matrix directory.
fn write_results(dir: &Utf8Path, results: &[CellResult], wall: f64) -> Result<()> {
    let json = serde_json::json!({ "wall_seconds": (wall * 10.0).round() / 10.0, "cells": results });
    project::write_atomic(&dir.join("matrix.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
    project::write_atomic(&dir.join("junit.xml"), junit(results, wall).as_bytes())
}

/// One test case per cell: a failure with the finding and detail, `skipped` for a cell that
/// never ran.
fn junit(results: &[CellResult], wall: f64) -> String {
    let failures = results.iter().filter(|r| r.outcome != "pass" && r.outcome != "not-run").count();
    let skipped = results.iter().filter(|r| r.outcome == "not-run").count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites><testsuite name=\"vm-test-matrix\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{wall:.1}\">",
        results.len()
    );
    for r in results {
        let _ = write!(
            out,
            "  <testcase classname=\"vm-test.matrix\" name=\"{}\" time=\"{}\"",
            xml_escape(&r.cell),
            r.seconds
        );
        let finding = r.finding.as_deref().unwrap_or("");
        let detail = format!("{}\nrun directory: {}", r.detail.as_deref().unwrap_or(""), r.run_dir);
        match r.outcome.as_str() {
            "pass" => out.push_str("/>\n"),
            "not-run" => out.push_str("><skipped message=\"interrupted before this cell started\"/></testcase>\n"),
            outcome => {
                let _ = writeln!(
                    out,
                    "><failure message=\"{}: {}\">{}</failure></testcase>",
                    xml_escape(outcome),
                    xml_escape(finding),
                    xml_escape(&detail)
                );
            }
        }
    }
    out.push_str("</testsuite></testsuites>\n");
    out
}

fn summary(results: &[CellResult], wall: f64, dir: &Utf8Path) -> String {
    let fancy = ui::fancy_stdout();
    let width = results.iter().map(|r| r.cell.len()).max().unwrap_or(4).max(4);
    let mut out = format!("\n{:<width$}  {:<11} {:>8}  finding\n", "cell", "outcome", "seconds");
    for r in results {
        let tone = match r.outcome.as_str() {
            "pass" => ui::Tone::Good,
            "not-run" => ui::Tone::Dim,
            _ => ui::Tone::Bad,
        };
        let outcome = ui::paint(fancy, tone, &format!("{:<11}", r.outcome));
        let _ =
            writeln!(out, "{:<width$}  {outcome} {:>8.1}  {}", r.cell, r.seconds, r.finding.as_deref().unwrap_or("-"));
    }
    let passed = results.iter().filter(|r| r.outcome == "pass").count();
    let _ = writeln!(out, "\n{passed}/{} cells passed in {wall:.1} s wall; junit: {dir}/junit.xml", results.len());
    out
}

/// 130 after Ctrl-C, 1 if a cell failed, 3 if a cell could not run (infrastructure), else 0.
fn exit_code(results: &[CellResult], interrupted: bool) -> u8 {
    let any = |o: &str| results.iter().any(|r| r.outcome == o);
    if interrupted || any("interrupted") || any("not-run") {
        exit::INTERRUPTED
    } else if any("fail") {
        exit::FAILED
    } else if any("infra") || any("running") {
        exit::INFRA
    } else {
        exit::OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(line: &str) -> Args {
        Cli::try_parse_from(std::iter::once("vm-test").chain(line.split_whitespace())).unwrap().args
    }

    #[test]
    fn the_matrix_is_the_cartesian_product_of_the_lists() {
        let a = args("--matrix --image fixture,fixture-systemd --disk blank,none,two");
        let names: Vec<String> = cells(&a).unwrap().iter().map(Cell::name).collect();
        assert_eq!(names.len(), 6);
        assert_eq!(names[0], "fixture-bios-blank");
        assert_eq!(names[5], "fixture-systemd-bios-two");
        let both = cells(&args("--matrix --image fixture --firmware bios,uefi")).unwrap();
        assert_eq!(both.iter().map(Cell::name).collect::<Vec<_>>(), ["fixture-bios-blank", "fixture-uefi-blank"]);
        let e = cells(&args("--matrix --image fixture --disk none,none")).unwrap_err();
        assert!(e.to_string().contains("listed twice"), "{e}");
    }

    #[test]
    fn a_cell_gets_its_values_and_the_other_flags() {
        let a = args("--matrix --image fixture --disk blank,two --cpus 1 --boot-timeout 90 --login nixos:pw");
        let cell = &cells(&a).unwrap()[1];
        let line = cell_args(&a, cell, Utf8Path::new("/m/c"), Accel::Tcg, false).join(" ");
        for part in [
            "vm-test --run-dir /m/c --disk two --firmware bios --accel tcg --image fixture",
            "--cpus 1",
            "--boot-timeout 90",
            "--login nixos:pw",
        ] {
            assert!(line.contains(part), "{part} not in {line}");
        }
        assert!(!line.contains("--matrix") && !line.contains("--jobs"), "{line}");
    }

    #[test]
    fn junit_has_one_case_per_cell_and_the_exit_code_follows_the_worst() {
        let r = |cell: &str, outcome: &str| CellResult {
            cell: cell.into(),
            outcome: outcome.into(),
            seconds: 1.0,
            finding: (outcome != "pass").then(|| "kernel-panic".into()),
            detail: None,
            exit_code: None,
            run_dir: format!("/m/{cell}"),
        };
        let results = [r("a", "pass"), r("b<", "fail"), r("c", "not-run")];
        let xml = junit(&results, 3.0);
        assert_eq!(xml.matches("<testcase ").count(), 3);
        assert!(xml.contains("tests=\"3\" failures=\"1\" skipped=\"1\""), "{xml}");
        assert!(xml.contains("name=\"b&lt;\"") && xml.contains("fail: kernel-panic"), "{xml}");
        assert_eq!(exit_code(&results[..2], false), exit::FAILED);
        assert_eq!(exit_code(&results, true), exit::INTERRUPTED);
        assert_eq!(exit_code(&[r("a", "pass"), r("d", "infra")], false), exit::INFRA);
        assert_eq!(exit_code(&results[..1], false), exit::OK);
    }

    #[test]
    fn default_jobs_under_tcg_are_cores_per_guest_cpus() {
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(default_jobs(Accel::Tcg, 1), cores);
        assert_eq!(default_jobs(Accel::Tcg, 64), 1);
        assert_eq!(default_jobs(Accel::Kvm, 2), cores);
    }
}
