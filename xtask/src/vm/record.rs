//! The run record: `metadata.json` (schema 1, see docs/vm-test.md), written early, rewritten at
//! every phase change and at the end — also on failure, QEMU crash and Ctrl-C — plus
//! `report.md` and `junit.xml` rendered from the same JSON value.

use crate::diagnose::{Finding, Phase};
use crate::vm::verdict::Failure;
use anyhow::Result;
use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;
use serde_json::{json, Value};
use std::time::Instant;

#[derive(Clone, Debug, Serialize, Default)]
pub struct Image {
    pub path: String,
    pub size_bytes: u64,
    /// `iso` | `fixture` | `flake`
    pub source: String,
    pub fault: Option<String>,
    pub store_path: Option<String>,
    pub nar_hash: Option<String>,
}

#[derive(Clone, Debug, Serialize, Default)]
pub struct QemuInfo {
    pub binary: String,
    pub version: String,
    pub command: Vec<String>,
    pub accel: String,
    pub accel_reason: String,
    pub memory_mib: u32,
    pub cpus: u32,
    pub pid: Option<u32>,
    pub ssh_port: Option<u16>,
    /// Where QEMU's serial line and QMP are (`attach` reads them for a kept VM).
    pub serial_socket: Option<String>,
    pub qmp_socket: Option<String>,
    /// How QEMU ended: `guest-poweroff`, `qmp-system_powerdown`, `qmp-quit`, `sigkill`, `kept`.
    pub stopped_by: Option<String>,
    pub exit_status: Option<String>,
    pub stderr_tail: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PhaseRecord {
    pub phase: Phase,
    pub seconds: f64,
    /// `ok` | `failed` | `not-reached`
    pub status: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    /// `pass` | `fail` | `skip`
    pub status: &'static str,
    pub detail: String,
    pub evidence: String,
    pub seconds: f64,
    /// Catalogue id when the failure matches a known signature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finding: Option<String>,
}

pub struct Record {
    pub dir: Utf8PathBuf,
    started_at: jiff::Timestamp,
    start: Instant,
    pub image: Image,
    pub qemu: QemuInfo,
    phases: Vec<PhaseRecord>,
    current: Option<(Phase, Instant)>,
    pub checks: Vec<Check>,
    pub findings: Vec<Finding>,
    pub failure: Option<Failure>,
    notes: Vec<String>,
    /// Seconds from QEMU's start to moments a user cares about (`prompt`, `root`).
    milestones: serde_json::Map<String, Value>,
    pub serial: Value,
    pub timeouts: Value,
    finished: bool,
}

impl Record {
    pub fn new(dir: Utf8PathBuf, started_at: jiff::Timestamp, start: Instant) -> Record {
        Record {
            dir,
            started_at,
            start,
            image: Image::default(),
            qemu: QemuInfo::default(),
            phases: Vec::new(),
            current: None,
            checks: Vec::new(),
            findings: Vec::new(),
            failure: None,
            notes: Vec::new(),
            milestones: serde_json::Map::new(),
            serial: Value::Null,
            timeouts: Value::Null,
            finished: false,
        }
    }

    /// The phase running now (or the last one begun).
    pub fn current(&self) -> Phase {
        self.current.map(|(p, _)| p).or_else(|| self.phases.last().map(|p| p.phase)).unwrap_or(Phase::Qemu)
    }

    /// Ends the running phase as `ok` and starts `phase`; phases jumped over count as `ok`
    /// with 0 s (the serial text showed a later phase without a trace of them).
    pub fn begin(&mut self, phase: Phase) {
        let now = Instant::now();
        if let Some((p, t)) = self.current.take() {
            self.phases.push(PhaseRecord { phase: p, seconds: (now - t).as_secs_f64(), status: "ok" });
        }
        let last = self.phases.last().map(|p| p.phase);
        for p in Phase::ALL {
            if last.is_some_and(|l| p > l) && p < phase {
                self.phases.push(PhaseRecord { phase: p, seconds: 0.0, status: "ok" });
            }
        }
        self.current = Some((phase, now));
        let _ = self.write();
    }

    /// Ends the running phase as `failed`.
    pub fn fail_current(&mut self) {
        if let Some((p, t)) = self.current.take() {
            self.phases.push(PhaseRecord { phase: p, seconds: t.elapsed().as_secs_f64(), status: "failed" });
        }
    }

    /// Ends the running phase as `ok` without starting another.
    pub fn end_current(&mut self) {
        if let Some((p, t)) = self.current.take() {
            self.phases.push(PhaseRecord { phase: p, seconds: t.elapsed().as_secs_f64(), status: "ok" });
        }
    }

    pub fn phases(&self) -> &[PhaseRecord] {
        &self.phases
    }

    pub fn milestone(&mut self, name: &str, seconds_since_qemu_start: f64) {
        self.milestones.insert(name.to_string(), json!((seconds_since_qemu_start * 1000.0).round() / 1000.0));
    }

    pub fn note(&mut self, note: &str) {
        self.notes.push(note.to_string());
    }

    pub fn total_seconds(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    pub fn outcome(&self) -> &'static str {
        match &self.failure {
            None if self.finished => "pass",
            None => "running",
            Some(f) => f.outcome.name(),
        }
    }

    pub fn exit_code(&self) -> u8 {
        self.failure.as_ref().map_or(crate::exit::OK, |f| f.outcome.exit_code())
    }

    /// Closes the record: unreached phases are listed as such.
    pub fn finish(&mut self) {
        let failed_phase = self.failure.as_ref().map(|f| f.phase);
        if failed_phase.is_some() && failed_phase == self.current.map(|(p, _)| p) {
            self.fail_current();
        } else {
            self.end_current();
        }
        // A failure found in an earlier phase (a check) while a later one ran (poweroff), or
        // in a phase never begun (preflight judges the bootloader before QEMU starts).
        if let Some(fp) = failed_phase {
            match self.phases.iter_mut().find(|r| r.phase == fp) {
                Some(r) => r.status = "failed",
                None => self.phases.push(PhaseRecord { phase: fp, seconds: 0.0, status: "failed" }),
            }
        }
        for p in Phase::ALL {
            if !self.phases.iter().any(|r| r.phase == p) {
                self.phases.push(PhaseRecord { phase: p, seconds: 0.0, status: "not-reached" });
            }
        }
        self.phases.sort_by_key(|r| r.phase);
        self.finished = true;
    }

    pub fn to_json(&self) -> Value {
        let verdict = self.failure.as_ref().map(|f| {
            let sig = crate::diagnose::signature(&f.finding);
            json!({
                "phase": f.phase,
                "finding": f.finding,
                "cause": sig.map_or_else(|| f.detail.clone(), |s| s.cause.to_string()),
                "fix": sig.map_or("see the run directory's transcript.log and serial.txt", |s| s.fix),
                "detail": f.detail,
            })
        });
        let mut phases = self.phases.clone();
        if let Some((p, t)) = self.current {
            phases.push(PhaseRecord { phase: p, seconds: t.elapsed().as_secs_f64(), status: "running" });
        }
        json!({
            "schema": 1,
            "tool": "cargo xtask vm-test",
            "started_at": self.started_at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "finished_at": self.finished.then(|| jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
            "run_dir": self.dir.as_str(),
            "image": self.image,
            "qemu": self.qemu,
            "phases": phases,
            "checks": self.checks,
            "outcome": self.outcome(),
            "verdict": verdict,
            "findings": self.findings,
            "exit_code": self.finished.then(|| self.exit_code()),
            "total_seconds": (self.total_seconds() * 100.0).round() / 100.0,
            "milestones": self.milestones,
            // The harness process alone (QEMU is a child and not counted).
            "harness": {
                "cpu_seconds": (harness_cpu_seconds() * 1000.0).round() / 1000.0,
                "peak_rss_kib": harness_peak_rss_kib(),
            },
            "notes": self.notes,
            "serial": self.serial,
            "timeouts": self.timeouts,
        })
    }

    /// Writes metadata.json atomically (and, once finished, report.md and junit.xml).
    pub fn write(&self) -> Result<()> {
        let value = self.to_json();
        crate::project::write_atomic(
            &self.dir.join("metadata.json"),
            serde_json::to_string_pretty(&value)?.as_bytes(),
        )?;
        if self.finished {
            write_reports(&self.dir, &value)?;
        }
        Ok(())
    }
}

fn write_reports(dir: &Utf8Path, value: &Value) -> Result<()> {
    crate::project::write_atomic(&dir.join("report.md"), crate::vm::report::markdown(value).as_bytes())?;
    crate::project::write_atomic(&dir.join("junit.xml"), crate::vm::report::junit(value).as_bytes())?;
    Ok(())
}

/// CPU seconds (user + system) this process has used so far; QEMU's are not included.
pub fn harness_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// This process's peak resident set (VmHWM) in KiB; QEMU's memory is not included.
pub fn harness_peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_in_a_phase_never_begun_shows_as_failed() {
        let dir = tempfile::tempdir().unwrap();
        let dir = Utf8PathBuf::from_path_buf(dir.path().to_path_buf()).unwrap();
        let mut rec = Record::new(dir, jiff::Timestamp::now(), Instant::now());
        rec.failure = Some(Failure::fail(Phase::Bootloader, "no-serial-console", "preflight"));
        rec.finish();
        let status = |p: Phase| rec.phases().iter().find(|r| r.phase == p).map(|r| r.status);
        assert_eq!(status(Phase::Bootloader), Some("failed"));
        assert_eq!(status(Phase::Qemu), Some("not-reached"));
        assert_eq!(rec.phases().len(), Phase::ALL.len());
    }
}
