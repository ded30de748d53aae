//! How a run ends when it does not pass: the phase, a catalogue finding id and the evidence.
//! Cause and fix text come from `crate::diagnose::signature(id)` when the record is written.

use crate::diagnose::{Finding, Phase};
use crate::vm::serial::{Serial, Stop};
use std::io::ErrorKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Fail,
    Infra,
    Interrupted,
}

impl Outcome {
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
    /// A wait that ran out with nothing recognised: an unresponsive guest once it had answered
    /// commands, an empty serial line, or a phase that did not end in time.
    fn quiet_finding(shell_phase: bool, serial: &Serial) -> &'static str {
        if shell_phase {
            "guest-unresponsive"
        } else if serial.bytes == 0 {
            "no-serial-output"
        } else {
            "phase-timeout"
        }
    }

    /// `detail` plus what the serial line had brought so far.
    fn so_far(detail: String, serial: &Serial) -> String {
        match serial.bytes {
            0 => format!("{detail}; not one byte arrived on the serial line since QEMU started"),
            n => format!("{detail}; {n} bytes arrived before, the last line: `{}`", serial.last_line()),
        }
    }

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

    /// Before stage 1's error prompt (`emergency-mode`), the finding that says why it stopped:
    /// the root device never appeared, or the root has no stage 2 init.
    fn stage1_cause(fatal: &Finding, serial: &Serial) -> Option<Finding> {
        const CAUSES: [&str; 2] = ["root-device-missing", "stage2-init-missing"];
        if fatal.id != "emergency-mode" {
            return None;
        }
        serial.findings().iter().rev().find(|f| CAUSES.contains(&f.id) && f.line <= fatal.line).cloned()
    }

    /// Turns a wait that ended without its match into a verdict, using what the detector saw.
    /// `shell_phase`: the guest had already answered commands, so silence means it hung.
    pub fn from_stop(phase: Phase, stop: Stop, serial: &mut Serial, what: &str) -> Failure {
        let shell_phase = phase >= Phase::Shell;
        match stop {
            Stop::Interrupted => Failure::interrupted(phase),
            Stop::Fatal(f) => match Self::stage1_cause(&f, serial) {
                // Stage 1's error prompt is the effect: its cause, found just before, is the verdict.
                Some(cause) => Failure::fail(
                    phase,
                    cause.id,
                    format!(
                        "{what}: line {}: {}; then line {}: {} (stage 1's error prompt)",
                        cause.line, cause.text, f.line, f.text
                    ),
                ),
                None => Failure::fail(phase, f.id, format!("{what}: line {}: {}", f.line, f.text)),
            },
            Stop::Paused(p) => Failure::infra(phase, p.finding(), format!("{what}: {}", p.describe())),
            Stop::Io(e) if matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded) => {
                Failure::infra(phase, "host-disk-full", format!("{what}: {e}"))
            }
            Stop::Io(e) => Failure::infra(phase, "harness-error", format!("{what}: serial I/O error: {e}")),
            Stop::Eof => {
                if let Some(f) = serial.findings().iter().find(|f| crate::vm::serial::FATAL.contains(&f.id)) {
                    return Failure::fail(phase, f.id, format!("{what}: line {}: {}", f.line, f.text));
                }
                Failure::fail(phase, "qemu-exited", format!("{what}: QEMU exited (serial line closed)"))
            }
            // Silence is named from what the log holds: the detector's reading of the text,
            // else nothing but the facts (no byte at all, or the last line there was).
            Stop::Stall(d) => {
                if let Some(f) = serial.silence().into_iter().next() {
                    return Failure::fail(
                        phase,
                        f.id,
                        format!("{what}: no serial output for {:.0} s; {}", d.as_secs_f64(), f.text),
                    );
                }
                let quiet = format!("{what}: no serial output for {:.0} s", d.as_secs_f64());
                Failure::fail(phase, Self::quiet_finding(shell_phase, serial), Self::so_far(quiet, serial))
            }
            Stop::Deadline => {
                let finding = Self::quiet_finding(shell_phase, serial);
                Failure::fail(phase, finding, Self::so_far(format!("{what}: deadline passed"), serial))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    fn serial() -> (Serial<'static>, std::os::unix::net::UnixStream, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let run_dir = camino::Utf8Path::from_path(dir.path()).unwrap();
        (Serial::new(ours, run_dir, Box::new(())).unwrap(), theirs, dir)
    }

    /// An ISO the firmware cannot boot leaves the serial line empty: the verdict says exactly
    /// that, never `bootloader-stuck` ("printed its banner") or `serial-silent-after-bootloader`.
    #[test]
    fn an_empty_serial_line_is_named_as_empty() {
        let (mut s, _guest, _dir) = serial();
        s.advance(Phase::Bootloader);
        let f = Failure::from_stop(Phase::Bootloader, Stop::Stall(Duration::from_secs(45)), &mut s, "waiting");
        assert_eq!(f.finding, "no-serial-output", "{f:?}");
        assert!(f.detail.contains("not one byte arrived"), "{}", f.detail);
        let f = Failure::from_stop(Phase::Kernel, Stop::Deadline, &mut s, "waiting");
        assert_eq!(f.finding, "no-serial-output", "{f:?}");
    }

    /// Bytes that show no known bootloader: a plain timeout that quotes the last line.
    #[test]
    fn unrecognised_output_is_quoted_not_interpreted() {
        let (mut s, mut guest, _dir) = serial();
        guest.write_all(b"Some firmware v1.0\r\n").unwrap();
        s.drain_for(Duration::from_millis(200));
        s.advance(Phase::Bootloader);
        let f = Failure::from_stop(Phase::Bootloader, Stop::Stall(Duration::from_secs(45)), &mut s, "waiting");
        assert_eq!(f.finding, "phase-timeout", "{f:?}");
        assert!(f.detail.contains("`Some firmware v1.0`"), "{}", f.detail);
    }
}
