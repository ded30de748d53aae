//! How a run ends when it does not pass: the phase, a catalogue finding id and the evidence.
//! Cause and fix text come from `crate::diagnose::signature(id)` when the record is written.

use crate::diagnose::Phase;
use crate::vm::serial::{Serial, Stop};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Fail,
    Infra,
    Interrupted,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Fail => "fail",
            Outcome::Infra => "infra",
            Outcome::Interrupted => "interrupted",
        }
    }

    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Fail => crate::exit::FAILED,
            Outcome::Infra => crate::exit::INFRA,
            Outcome::Interrupted => crate::exit::INTERRUPTED,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Failure {
    pub outcome: Outcome,
    pub phase: Phase,
    /// Catalogue id (`kernel-panic`, `guest-unresponsive`, ...).
    pub finding: String,
    /// What exactly happened, in one or two sentences.
    pub detail: String,
}

impl Failure {
    pub fn fail(phase: Phase, finding: &str, detail: impl Into<String>) -> Failure {
        Failure { outcome: Outcome::Fail, phase, finding: finding.to_string(), detail: detail.into() }
    }

    pub fn infra(phase: Phase, finding: &str, detail: impl Into<String>) -> Failure {
        Failure { outcome: Outcome::Infra, phase, finding: finding.to_string(), detail: detail.into() }
    }

    pub fn interrupted(phase: Phase) -> Failure {
        Failure {
            outcome: Outcome::Interrupted,
            phase,
            finding: "interrupted".to_string(),
            detail: "interrupted by SIGINT/SIGTERM; QEMU was stopped".to_string(),
        }
    }

    /// Turns a wait that ended without its match into a verdict, using what the detector saw.
    /// `shell_phase`: the guest had already answered commands, so silence means it hung.
    pub fn from_stop(phase: Phase, stop: Stop, serial: &mut Serial, what: &str) -> Failure {
        let shell_phase = phase >= Phase::Shell;
        match stop {
            Stop::Interrupted => Failure::interrupted(phase),
            Stop::Fatal(f) => Failure::fail(phase, f.id, format!("{what}: line {}: {}", f.line, f.text)),
            Stop::Io(e) => Failure::infra(phase, "harness-error", format!("{what}: serial socket error: {e}")),
            Stop::Eof => {
                if let Some(f) = serial.findings().iter().find(|f| crate::vm::serial::FATAL.contains(&f.id)) {
                    return Failure::fail(phase, f.id, format!("{what}: line {}: {}", f.line, f.text));
                }
                Failure::fail(phase, "qemu-exited", format!("{what}: QEMU exited (serial line closed)"))
            }
            Stop::Stall(d) => {
                if let Some(f) = serial.silence().into_iter().next() {
                    return Failure::fail(
                        phase,
                        f.id,
                        format!("{what}: no serial output for {:.0} s; {}", d.as_secs_f64(), f.text),
                    );
                }
                let finding = if shell_phase {
                    "guest-unresponsive"
                } else if serial.bytes > 0 && phase <= Phase::Kernel {
                    "serial-silent-after-bootloader"
                } else {
                    "phase-timeout"
                };
                Failure::fail(phase, finding, format!("{what}: no serial output for {:.0} s", d.as_secs_f64()))
            }
            Stop::Deadline => {
                let finding = if shell_phase { "guest-unresponsive" } else { "phase-timeout" };
                Failure::fail(phase, finding, format!("{what}: deadline passed"))
            }
        }
    }
}
