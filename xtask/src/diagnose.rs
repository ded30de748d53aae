//! Boot phases and the catalogue of known failure signatures, read from clean serial text.
//! One implementation, used live by `vm-test` and offline by `analyze`.
//! (Being built in its issue; the types below are the contract both verbs use.)

use serde::Serialize;

/// Boot phases in the order a healthy run passes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Qemu,
    Bootloader,
    Kernel,
    Init,
    Login,
    Shell,
    Root,
    Checks,
    Poweroff,
}

impl Phase {
    pub const ALL: [Phase; 9] = [
        Phase::Qemu,
        Phase::Bootloader,
        Phase::Kernel,
        Phase::Init,
        Phase::Login,
        Phase::Shell,
        Phase::Root,
        Phase::Checks,
        Phase::Poweroff,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Qemu => "qemu",
            Phase::Bootloader => "bootloader",
            Phase::Kernel => "kernel",
            Phase::Init => "init",
            Phase::Login => "login",
            Phase::Shell => "shell",
            Phase::Root => "root",
            Phase::Checks => "checks",
            Phase::Poweroff => "poweroff",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A known failure (or success) signature: what it means and what to do.
#[derive(Debug)]
pub struct Signature {
    /// Stable id, used in metadata.json, the ledger and `analyze --json`.
    pub id: &'static str,
    /// The phase this signature belongs to.
    pub phase: Phase,
    /// Likely cause, one sentence.
    pub cause: &'static str,
    /// The fix or next step, one sentence (commands in backticks).
    pub fix: &'static str,
}

/// A signature found at a line of clean serial text.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Finding {
    pub id: &'static str,
    /// 1-based line number in the clean text (`serial.txt`); 0 when not tied to a line.
    pub line: usize,
    /// The line (or evidence) that triggered it.
    pub text: String,
}

/// When the detector first saw a phase.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TimelineEntry {
    pub phase: Phase,
    pub line: usize,
    /// Seconds from the kernel timestamp (`[    2.828042]`) nearest to that line, if any.
    pub offset_secs: Option<f64>,
}

/// The catalogue of known signatures (being filled in its issue).
pub fn catalogue() -> &'static [Signature] {
    &[]
}

/// Looks up a signature by id.
pub fn signature(id: &str) -> Option<&'static Signature> {
    catalogue().iter().find(|s| s.id == id)
}

/// Follows the boot phases and finds signatures in clean serial text, line by line.
/// (Skeleton: the real detector is being written in its issue.)
#[derive(Default)]
pub struct Detector {
    timeline: Vec<TimelineEntry>,
    findings: Vec<Finding>,
}

impl Detector {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one complete clean line (without `\n`); `line_no` is 1-based.
    /// Returns the findings this line produced.
    pub fn feed_line(&mut self, _line_no: usize, _line: &str) -> Vec<Finding> {
        Vec::new()
    }

    /// The furthest phase the serial text shows.
    pub fn phase(&self) -> Phase {
        self.timeline.last().map_or(Phase::Qemu, |e| e.phase)
    }

    pub fn timeline(&self) -> &[TimelineEntry] {
        &self.timeline
    }

    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// Called at end of input or when the serial line stalls: findings inferred from silence
    /// (e.g. `serial-silent-after-bootloader`).
    pub fn silence(&mut self) -> Vec<Finding> {
        Vec::new()
    }
}
