//! The run record: `metadata.json` (schema 1, see docs/vm-test.md), written early, rewritten at
//! every phase change and at the end — also on failure, QEMU crash and Ctrl-C — plus
//! `report.md` and `junit.xml` rendered from the same `RunRecord`.
//!
//! `RunRecord` is the file's one typed shape: `Record` (the live run) writes it, and
//! `report.rs`, `archive-logs` and `bench` read it back. Reading is lenient, because a run
//! directory is input: a missing key reads as its default (a partial run from a crash, an older
//! record), and a top-level value of the wrong type reads as if it were missing.

use crate::diagnose::{Finding, Phase, TimelineEntry};
use crate::vm::verdict::{Failure, Outcome};
use anyhow::Result;
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::time::Instant;

#[derive(Clone, Debug, Serialize, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct Image {
    pub path: String,
    pub size_bytes: u64,
    /// `iso` | `fixture` | `fixture-systemd` | `flake`
    pub source: String,
    pub fault: Option<String>,
    pub store_path: Option<String>,
    pub nar_hash: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct QemuInfo {
    pub binary: String,
    pub version: String,
    pub command: Vec<String>,
    pub accel: String,
    pub accel_reason: String,
    /// `bios` or `uefi` (`--firmware`); empty in records from before the flag.
    pub firmware: String,
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

/// How a phase ended (`running`: the phase is under way as the record is written).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PhaseStatus {
    Ok,
    Failed,
    NotReached,
    Running,
}

impl PhaseStatus {
    pub fn name(self) -> &'static str {
        match self {
            PhaseStatus::Ok => "ok",
            PhaseStatus::Failed => "failed",
            PhaseStatus::NotReached => "not-reached",
            PhaseStatus::Running => "running",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PhaseRecord {
    pub phase: Phase,
    #[serde(default)]
    pub seconds: f64,
    pub status: PhaseStatus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Pass,
    Fail,
    Skip,
}

impl CheckStatus {
    pub fn name(self) -> &'static str {
        match self {
            CheckStatus::Pass => "pass",
            CheckStatus::Fail => "fail",
            CheckStatus::Skip => "skip",
        }
    }
}

impl std::fmt::Display for CheckStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Check {
    #[serde(default)]
    pub name: String,
    pub status: CheckStatus,
    #[serde(default)]
    pub detail: String,
    #[serde(default)]
    pub evidence: String,
    #[serde(default)]
    pub seconds: f64,
    /// Catalogue id when the failure matches a known signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding: Option<String>,
}

/// The run's outcome: a verdict's (`fail`, `infra`, `interrupted`), `pass`, or `running`
/// while the record is written mid-run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunOutcome {
    Pass,
    Fail,
    Infra,
    Interrupted,
    Running,
}

impl RunOutcome {
    pub fn name(self) -> &'static str {
        match self {
            RunOutcome::Pass => "pass",
            RunOutcome::Fail => "fail",
            RunOutcome::Infra => "infra",
            RunOutcome::Interrupted => "interrupted",
            RunOutcome::Running => "running",
        }
    }
}

impl From<Outcome> for RunOutcome {
    fn from(o: Outcome) -> RunOutcome {
        match o {
            Outcome::Fail => RunOutcome::Fail,
            Outcome::Infra => RunOutcome::Infra,
            Outcome::Interrupted => RunOutcome::Interrupted,
        }
    }
}

/// Why a run did not pass, with the catalogue's cause and fix.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Verdict {
    pub phase: Phase,
    #[serde(default)]
    pub finding: String,
    #[serde(default)]
    pub cause: String,
    #[serde(default)]
    pub fix: String,
    #[serde(default)]
    pub detail: String,
}

/// A `diagnose::Finding` as recorded (owned: it is read back too).
#[derive(Clone, Debug, Serialize, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct RecordedFinding {
    pub id: String,
    pub line: usize,
    pub text: String,
    /// serial, journal, screen or harness: where the text came from.
    pub source: crate::diagnose::Source,
    /// The unit, device, task… the finding names, when it names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

impl From<&Finding> for RecordedFinding {
    fn from(f: &Finding) -> RecordedFinding {
        RecordedFinding {
            id: f.id.to_string(),
            line: f.line,
            text: f.text.clone(),
            source: f.source,
            subject: f.subject.clone(),
        }
    }
}

/// A screenshot of the guest's screen in the run directory (docs/vm-test.md, "Screens").
#[derive(Clone, Debug, Serialize, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct Screen {
    /// Path relative to the run directory: `screen-<phase>.png`, `screens/<seconds>s.png`.
    pub file: String,
    /// `verdict` (taken when the run failed, before QEMU stopped) or `every` (`--screens every:N`).
    pub reason: String,
    /// The phase the harness was in.
    pub phase: Option<Phase>,
    /// Seconds since QEMU started.
    pub seconds: f64,
    /// What OCR read (relative path of a `.txt` next to the PNG), when tesseract ran on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_file: Option<String>,
    /// The furthest boot phase that text shows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_phase: Option<Phase>,
}

/// Seconds from QEMU's start to moments a user cares about (read by `bench`).
#[derive(Clone, Debug, Serialize, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct Milestones {
    /// The first shell prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<f64>,
    /// Root proven by `id -u`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<f64>,
}

/// The harness process alone (QEMU is a child and not counted).
#[derive(Clone, Debug, Serialize, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct Harness {
    pub cpu_seconds: f64,
    pub peak_rss_kib: Option<u64>,
}

/// What the serial line brought, summed up once the session ends.
#[derive(Clone, Debug, Serialize, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct SerialSummary {
    pub bytes: u64,
    /// Clean bytes dropped from the match buffer because nothing consumed them (flood).
    pub dropped_from_match_buffer: u64,
    pub last_lines: Vec<String>,
    pub timeline: Vec<TimelineEntry>,
    /// The first `LAN IPv4 address:` console line.
    pub lan_line: Option<SeenLine>,
}

#[derive(Clone, Debug, Serialize, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct SeenLine {
    /// Line number in `serial.txt`.
    pub line: usize,
    pub text: String,
}

/// Every deadline and stall window of the run, in seconds.
#[derive(Clone, Debug, Serialize, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct TimeoutSecs {
    pub boot: u64,
    pub stall: u64,
    pub init_stall: u64,
    pub login_step: u64,
    pub command: u64,
    pub storage: u64,
    pub unit: u64,
    pub network: u64,
    pub serial_line: u64,
}

/// `metadata.json`. Options are `null` until known (and when a partial record lacks them).
#[derive(Clone, Debug, Serialize, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct RunRecord {
    #[serde(deserialize_with = "lenient")]
    pub schema: u32,
    #[serde(deserialize_with = "lenient")]
    pub tool: String,
    #[serde(deserialize_with = "lenient")]
    pub started_at: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub finished_at: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub run_dir: String,
    #[serde(deserialize_with = "lenient")]
    pub image: Image,
    #[serde(deserialize_with = "lenient")]
    pub qemu: QemuInfo,
    #[serde(deserialize_with = "lenient")]
    pub phases: Vec<PhaseRecord>,
    #[serde(deserialize_with = "lenient")]
    pub checks: Vec<Check>,
    #[serde(deserialize_with = "lenient")]
    pub outcome: Option<RunOutcome>,
    /// `null` on a pass.
    #[serde(deserialize_with = "lenient")]
    pub verdict: Option<Verdict>,
    /// Always written; `None` only when read from a record without the key.
    #[serde(deserialize_with = "lenient")]
    pub findings: Option<Vec<RecordedFinding>>,
    #[serde(deserialize_with = "lenient")]
    pub exit_code: Option<u8>,
    #[serde(deserialize_with = "lenient")]
    pub total_seconds: Option<f64>,
    #[serde(deserialize_with = "lenient")]
    pub milestones: Milestones,
    #[serde(deserialize_with = "lenient")]
    pub harness: Harness,
    #[serde(deserialize_with = "lenient")]
    pub notes: Vec<String>,
    #[serde(deserialize_with = "lenient")]
    pub serial: Option<SerialSummary>,
    #[serde(deserialize_with = "lenient")]
    pub timeouts: Option<TimeoutSecs>,
    #[serde(deserialize_with = "lenient")]
    pub screens: Vec<Screen>,
}

/// A value of the wrong type reads as the default, as if the key were missing.
fn lenient<'de, D: Deserializer<'de>, T: serde::de::DeserializeOwned + Default>(d: D) -> Result<T, D::Error> {
    let value = Value::deserialize(d)?;
    Ok(T::deserialize(value).unwrap_or_default())
}

impl RunRecord {
    /// Reads `metadata.json` text. Only text that is not JSON is an error; JSON that is not an
    /// object reads as an empty record.
    pub fn from_json(bytes: &[u8]) -> serde_json::Result<RunRecord> {
        Ok(RunRecord::from_value(serde_json::from_slice(bytes)?))
    }

    pub fn from_value(value: Value) -> RunRecord {
        if value.is_object() {
            RunRecord::deserialize(value).unwrap_or_default()
        } else {
            RunRecord::default()
        }
    }
}

/// The live record of one run: what `vm-test` learns as it goes, written out as a `RunRecord`.
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
    milestones: Milestones,
    pub serial: Option<SerialSummary>,
    pub timeouts: Option<TimeoutSecs>,
    pub screens: Vec<Screen>,
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
            milestones: Milestones::default(),
            serial: None,
            timeouts: None,
            screens: Vec::new(),
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
            self.phases.push(PhaseRecord { phase: p, seconds: (now - t).as_secs_f64(), status: PhaseStatus::Ok });
        }
        let last = self.phases.last().map(|p| p.phase);
        for p in Phase::ALL {
            if last.is_some_and(|l| p > l) && p < phase {
                self.phases.push(PhaseRecord { phase: p, seconds: 0.0, status: PhaseStatus::Ok });
            }
        }
        self.current = Some((phase, now));
        let _ = self.write();
    }

    /// Ends the running phase as `status`.
    fn end_current_as(&mut self, status: PhaseStatus) {
        if let Some((p, t)) = self.current.take() {
            self.phases.push(PhaseRecord { phase: p, seconds: t.elapsed().as_secs_f64(), status });
        }
    }

    /// Ends the running phase as `ok` without starting another.
    pub fn end_current(&mut self) {
        self.end_current_as(PhaseStatus::Ok);
    }

    pub fn phases(&self) -> &[PhaseRecord] {
        &self.phases
    }

    pub fn milestone(&mut self, name: Milestone, seconds_since_qemu_start: f64) {
        let seconds = Some((seconds_since_qemu_start * 1000.0).round() / 1000.0);
        match name {
            Milestone::Prompt => self.milestones.prompt = seconds,
            Milestone::Root => self.milestones.root = seconds,
        }
    }

    pub fn note(&mut self, note: &str) {
        self.notes.push(note.to_string());
    }

    pub fn total_seconds(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    pub fn outcome(&self) -> RunOutcome {
        match &self.failure {
            None if self.finished => RunOutcome::Pass,
            None => RunOutcome::Running,
            Some(f) => f.outcome.into(),
        }
    }

    pub fn exit_code(&self) -> u8 {
        self.failure.as_ref().map_or(crate::exit::OK, |f| f.outcome.exit_code())
    }

    /// Closes the record: unreached phases are listed as such.
    pub fn finish(&mut self) {
        let failed_phase = self.failure.as_ref().map(|f| f.phase);
        if failed_phase.is_some() && failed_phase == self.current.map(|(p, _)| p) {
            self.end_current_as(PhaseStatus::Failed);
        } else {
            self.end_current();
        }
        // A failure found in an earlier phase (a check) while a later one ran (poweroff), or
        // in a phase never begun (preflight judges the bootloader before QEMU starts).
        if let Some(fp) = failed_phase {
            match self.phases.iter_mut().find(|r| r.phase == fp) {
                Some(r) => r.status = PhaseStatus::Failed,
                None => self.phases.push(PhaseRecord { phase: fp, seconds: 0.0, status: PhaseStatus::Failed }),
            }
        }
        for p in Phase::ALL {
            if !self.phases.iter().any(|r| r.phase == p) {
                self.phases.push(PhaseRecord { phase: p, seconds: 0.0, status: PhaseStatus::NotReached });
            }
        }
        self.phases.sort_by_key(|r| r.phase);
        self.finished = true;
    }

    /// The record as `metadata.json` holds it right now.
    pub fn to_record(&self) -> RunRecord {
        let verdict = self.failure.as_ref().map(|f| {
            let sig = crate::diagnose::signature(&f.finding);
            Verdict {
                phase: f.phase,
                finding: f.finding.clone(),
                cause: sig.map_or_else(|| f.detail.clone(), |s| s.cause.to_string()),
                fix: sig.map_or("see the run directory's transcript.log and serial.txt", |s| s.fix).to_string(),
                detail: f.detail.clone(),
            }
        });
        let mut phases = self.phases.clone();
        if let Some((p, t)) = self.current {
            phases.push(PhaseRecord { phase: p, seconds: t.elapsed().as_secs_f64(), status: PhaseStatus::Running });
        }
        let stamp = |t: jiff::Timestamp| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        RunRecord {
            schema: 1,
            tool: "cargo xtask vm-test".to_string(),
            started_at: Some(stamp(self.started_at)),
            finished_at: self.finished.then(|| stamp(jiff::Timestamp::now())),
            run_dir: self.dir.to_string(),
            image: self.image.clone(),
            qemu: self.qemu.clone(),
            phases,
            checks: self.checks.clone(),
            outcome: Some(self.outcome()),
            verdict,
            findings: Some(self.findings.iter().map(RecordedFinding::from).collect()),
            exit_code: self.finished.then(|| self.exit_code()),
            total_seconds: Some((self.total_seconds() * 100.0).round() / 100.0),
            milestones: self.milestones.clone(),
            harness: Harness {
                cpu_seconds: (harness_cpu_seconds() * 1000.0).round() / 1000.0,
                peak_rss_kib: harness_peak_rss_kib(),
            },
            notes: self.notes.clone(),
            serial: self.serial.clone(),
            timeouts: self.timeouts.clone(),
            screens: self.screens.clone(),
        }
    }

    /// Writes metadata.json atomically (and, once finished, report.md and junit.xml).
    pub fn write(&self) -> Result<()> {
        let record = self.to_record();
        crate::project::write_atomic(
            &self.dir.join("metadata.json"),
            serde_json::to_string_pretty(&record)?.as_bytes(),
        )?;
        if self.finished {
            write_reports(&self.dir, &record)?;
        }
        Ok(())
    }
}

/// Moments of a run that `bench` compares.
#[derive(Clone, Copy, Debug)]
pub enum Milestone {
    Prompt,
    Root,
}

fn write_reports(dir: &Utf8Path, record: &RunRecord) -> Result<()> {
    crate::project::write_atomic(&dir.join("report.md"), crate::vm::report::markdown(record).as_bytes())?;
    crate::project::write_atomic(&dir.join("junit.xml"), crate::vm::report::junit(record).as_bytes())?;
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
    use serde_json::json;

    fn temp_record() -> (Record, tempfile::TempDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Utf8PathBuf::from_path_buf(tmp.path().to_path_buf()).unwrap();
        (Record::new(dir, jiff::Timestamp::now(), Instant::now()), tmp)
    }

    #[test]
    fn a_verdict_in_a_phase_never_begun_shows_as_failed() {
        let (mut rec, _tmp) = temp_record();
        rec.failure = Some(Failure::fail(Phase::Bootloader, "no-serial-console", "preflight"));
        rec.finish();
        let status = |p: Phase| rec.phases().iter().find(|r| r.phase == p).map(|r| r.status);
        assert_eq!(status(Phase::Bootloader), Some(PhaseStatus::Failed));
        assert_eq!(status(Phase::Qemu), Some(PhaseStatus::NotReached));
        assert_eq!(rec.phases().len(), Phase::ALL.len());
    }

    /// What the writer wrote reads back whole, with the keys docs/vm-test.md documents.
    #[test]
    fn a_written_record_reads_back() {
        let (mut rec, _tmp) = temp_record();
        rec.image = Image { path: "/x.iso".into(), size_bytes: 7, source: "fixture".into(), ..Default::default() };
        rec.qemu.accel = "tcg".into();
        rec.timeouts = Some(TimeoutSecs { boot: 600, ..Default::default() });
        rec.begin(Phase::Qemu);
        rec.begin(Phase::Kernel);
        rec.milestone(Milestone::Prompt, 1.5);
        rec.note("logged in as nixos");
        rec.findings.push(Finding::new("kernel-panic", 3, "Kernel panic - not syncing"));
        rec.checks.push(Check {
            name: "tools".into(),
            status: CheckStatus::Fail,
            detail: "missing: lvm".into(),
            evidence: "lvm=MISSING".into(),
            seconds: 0.5,
            finding: Some("check-failed".into()),
        });
        rec.serial = Some(SerialSummary {
            bytes: 10,
            lan_line: Some(SeenLine { line: 4, text: "LAN IPv4 address: 10.0.2.15".into() }),
            ..Default::default()
        });
        rec.failure = Some(Failure::fail(Phase::Kernel, "kernel-panic", "line 3"));
        rec.finish();
        rec.write().unwrap();

        let text = std::fs::read_to_string(rec.dir.join("metadata.json")).unwrap();
        let written: Value = serde_json::from_str(&text).unwrap();
        let keys: std::collections::BTreeSet<&str> = written.as_object().unwrap().keys().map(String::as_str).collect();
        let documented = [
            "schema",
            "tool",
            "started_at",
            "finished_at",
            "run_dir",
            "image",
            "qemu",
            "phases",
            "checks",
            "outcome",
            "verdict",
            "findings",
            "exit_code",
            "total_seconds",
            "milestones",
            "harness",
            "notes",
            "serial",
            "timeouts",
            "screens",
        ];
        assert_eq!(keys, documented.into_iter().collect());
        assert_eq!(written["outcome"], "fail");
        assert_eq!(written["phases"][1], json!({"phase": "bootloader", "seconds": 0.0, "status": "ok"}));
        assert_eq!(written["phases"][2]["status"], "failed");
        assert_eq!(written["phases"][8]["status"], "not-reached");
        assert_eq!(written["verdict"]["finding"], "kernel-panic");
        assert_eq!(written["milestones"], json!({"prompt": 1.5}));
        assert_eq!(written["serial"]["lan_line"], json!({"line": 4, "text": "LAN IPv4 address: 10.0.2.15"}));

        let read = RunRecord::from_json(text.as_bytes()).unwrap();
        assert_eq!(serde_json::to_value(&read).unwrap(), written, "nothing lost or added on the way back");
        assert_eq!(read.outcome, Some(RunOutcome::Fail));
        assert_eq!(read.checks[0].status, CheckStatus::Fail);
        assert_eq!(read.findings.unwrap()[0].id, "kernel-panic");
        assert!(rec.dir.join("report.md").is_file() && rec.dir.join("junit.xml").is_file());
    }

    /// A running record (written mid-run) marks the phase under way.
    #[test]
    fn a_record_written_mid_run_says_running() {
        let (mut rec, _tmp) = temp_record();
        rec.begin(Phase::Qemu);
        let r = rec.to_record();
        assert_eq!(r.outcome, Some(RunOutcome::Running));
        assert_eq!(r.phases.last().map(|p| p.status), Some(PhaseStatus::Running));
        assert_eq!((r.finished_at, r.exit_code), (None, None));
    }

    /// Older and partial records (a crash, a hand-made file, the documented core) still read,
    /// with defaults for what they lack; a value of the wrong type reads as missing.
    #[test]
    fn partial_and_odd_records_read_with_defaults() {
        let empty = RunRecord::from_json(b"{}").unwrap();
        assert_eq!(empty, RunRecord::default());
        assert_eq!((empty.outcome, empty.findings, empty.total_seconds), (None, None, None));

        let core = json!({
            "schema": 1, "tool": "cargo xtask vm-test", "started_at": "2026-11-25T18:18:17Z",
            "finished_at": "2026-11-25T18:18:40Z", "run_dir": "/abs/run",
            "image": {"path": "/abs/x.iso", "size_bytes": 17825792, "source": "fixture"},
            "qemu": {"binary": "/usr/bin/qemu-system-x86_64", "version": "7.2.22", "accel": "tcg"},
            "phases": [{"phase": "bootloader", "seconds": 1.23, "status": "ok"}],
            "checks": [{"name": "storage-status", "status": "pass", "detail": "STATE=applied"}],
            "outcome": "pass", "verdict": null,
            "findings": [{"id": "autologin-not-root", "line": 12, "text": "x"}],
            "exit_code": 0, "total_seconds": 23.4
        });
        let r = RunRecord::from_value(core);
        assert_eq!(r.outcome, Some(RunOutcome::Pass));
        assert_eq!(r.image.fault, None);
        assert_eq!(r.qemu.memory_mib, 0);
        assert_eq!(r.checks[0].evidence, "");
        assert_eq!(r.phases[0].status, PhaseStatus::Ok);
        assert_eq!(r.milestones, Milestones::default());
        assert_eq!((r.serial, r.timeouts), (None, None));

        let odd = json!({"outcome": "exploded", "finished_at": {"nested": [1]}, "total_seconds": "soon",
                         "exit_code": 1, "notes": ["kept"]});
        let r = RunRecord::from_value(odd);
        assert_eq!((r.outcome, r.finished_at, r.total_seconds), (None, None, None));
        assert_eq!((r.exit_code, r.notes), (Some(1), vec!["kept".to_string()]));

        assert_eq!(RunRecord::from_json(b"[1, 2]").unwrap(), RunRecord::default());
        assert!(RunRecord::from_json(b"{not json").is_err());
    }
}
