//! `cargo xtask` — build a NixOS boot ISO and prove in QEMU that it boots and works.
//!
//! One binary, one module per verb; `main` only parses flags and dispatches.
//! Exit codes are shared by every verb (see `exit`).

mod accel;
mod analyze;
mod archive_logs;
mod attach;
mod bench;
mod build_image;
mod debian;
mod diagnose;
mod doctor;
mod exit;
mod fixture;
mod interrupt;
mod matrix;
mod nix;
mod process;
mod project;
mod stats;
mod strip_escapes;
mod ui;
mod vm;
mod vm_test;

use clap::{Parser, Subcommand};

/// Build a NixOS boot ISO and prove in QEMU that it boots and works.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version)]
struct Cli {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Check the environment (nix, shell profile, venv, QEMU/KVM, firmware, disk)
    Doctor(doctor::Args),
    /// Build the boot image with `nix build .#bootImage`, showing progress
    BuildImage(build_image::Args),
    /// Build the fixture ISO (a NixOS-installer look-alike from Debian packages)
    Fixture(fixture::Args),
    /// Boot an ISO in QEMU over serial, reach a root shell, run the checks, power off
    VmTest(vm_test::Args),
    /// Read a serial log offline: boot timeline and known failure signatures
    Analyze(analyze::Args),
    /// File a run's serial log and report under docs/boot-logs and docs/test-reports
    ArchiveLogs(archive_logs::Args),
    /// Measure fixture boots: per-phase medians, harness overhead and CPU
    Bench(bench::Args),
    /// Attach this terminal to the serial console of a VM kept with `vm-test --keep`
    Attach(attach::Args),
}

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            // clap uses 0 for --help/--version and 2 for usage errors.
            return std::process::ExitCode::from(err.exit_code() as u8);
        }
    };
    let result = match cli.verb {
        Verb::Doctor(args) => doctor::run(args),
        Verb::BuildImage(args) => build_image::run(args),
        Verb::Fixture(args) => fixture::run(args),
        Verb::VmTest(args) => vm_test::run(args),
        Verb::Analyze(args) => analyze::run(args),
        Verb::ArchiveLogs(args) => archive_logs::run(args),
        Verb::Bench(args) => bench::run(args),
        Verb::Attach(args) => attach::run(args),
    };
    exit::report(result)
}
