//! `cargo xtask analyze FILE [--json]` — read a serial log offline: the boot timeline and the
//! known failure signatures, with the same detector `vm-test` uses live (`diagnose`).
//!
//! Accepts raw logs (escapes, CRLF, invalid UTF-8: cleaned by `clean.rs`) and clean ones, or a
//! vm-test run directory (its `serial.log`); serial text, `journalctl` output or OCR'd screen
//! text (`--source`, else told line by line). Exit 0 when no failure was found, 1 when a
//! failure signature was found, 3 when the file cannot be read.

use crate::diagnose::{self, Detector, Finding, Kind, Source, TimelineEntry};
use crate::{clean, exit, ui};
use anyhow::Result;
use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;

#[derive(clap::Args)]
#[command(after_help = "Exit codes: 0 no failure found, 1 a failure signature was found, 3 the file cannot be read.\n\
Finding ids, causes and fixes: docs/analyze.md.")]
pub struct Args {
    /// Boot log to read: serial console, `journalctl` output or screen text, raw or clean; or a
    /// vm-test run directory (reads its serial.log)
    pub file: Utf8PathBuf,
    /// Print JSON: {"phase", "timeline": [{"phase", "line", ...}], "findings": [{"id", "line", "text", ...}]}
    #[arg(long)]
    pub json: bool,
    /// Where the text comes from: serial console, `journalctl` output, or screen text (OCR);
    /// `auto` tells each line (journald prefixes, OCR'd status brackets)
    #[arg(long, value_enum, default_value_t = SourceArg::Auto)]
    pub source: SourceArg,
}

/// `--source`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceArg {
    Auto,
    Serial,
    Journal,
    Screen,
}

impl SourceArg {
    fn forced(self) -> Option<Source> {
        match self {
            SourceArg::Auto => None,
            SourceArg::Serial => Some(Source::Serial),
            SourceArg::Journal => Some(Source::Journal),
            SourceArg::Screen => Some(Source::Screen),
        }
    }
}

/// The result of reading one log.
#[derive(Serialize)]
pub struct Analysis {
    /// The furthest phase reached.
    pub phase: diagnose::Phase,
    pub timeline: Vec<TimelineEntry>,
    pub findings: Vec<Finding>,
    /// Lines of clean text read.
    pub lines: usize,
}

impl Analysis {
    pub fn failed(&self) -> bool {
        self.findings.iter().any(Finding::is_failure)
    }
}

/// Runs the detector over a whole (raw or clean) log, then asks it what the silence at the
/// end means.
pub fn analyze_bytes(bytes: &[u8], source: Option<Source>) -> Analysis {
    let text = clean::clean_all(bytes);
    analyze_clean_as(&text, source)
}

/// Same as `analyze_bytes` for serial text that is already clean.
pub fn analyze_clean(text: &str) -> Analysis {
    analyze_clean_as(text, None)
}

/// `analyze_clean` for text from `source` (`None`: told line by line).
pub fn analyze_clean_as(text: &str, source: Option<Source>) -> Analysis {
    let mut detector = Detector::with_source(source);
    // A final newline ends the last line; it does not start another one.
    let body = text.strip_suffix('\n').unwrap_or(text);
    let mut lines = 0;
    if !text.is_empty() {
        for (i, line) in body.split('\n').enumerate() {
            detector.feed_line(i + 1, line);
            lines = i + 1;
        }
    }
    detector.silence();
    Analysis {
        phase: detector.phase(),
        timeline: detector.timeline().to_vec(),
        findings: detector.findings().to_vec(),
        lines,
    }
}

/// The log file to read: FILE itself, or `FILE/serial.log` for a run directory.
fn resolve(file: &Utf8Path) -> Result<Utf8PathBuf> {
    if file.is_dir() {
        for name in ["serial.log", "serial.txt"] {
            let candidate = file.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
        return Err(exit::infra(format!(
            "{file} is a directory without serial.log or serial.txt; pass a serial log file or a vm-test run directory"
        )));
    }
    Ok(file.to_path_buf())
}

pub fn run(args: Args) -> Result<u8> {
    let mut path = resolve(&args.file)?;
    let mut bytes = std::fs::read(&path).map_err(|e| {
        exit::infra(format!(
            "cannot read {path}: {e}; pass the path of a serial log (e.g. target/vm-runs/<UTC>/serial.log)"
        ))
    })?;
    // A run whose guest never printed anything: QEMU's own stderr says why.
    let stderr_log = args.file.join("qemu.stderr.log");
    if args.file.is_dir() && bytes.iter().all(u8::is_ascii_whitespace) {
        if let Ok(stderr) = std::fs::read(&stderr_log) {
            if !stderr.iter().all(u8::is_ascii_whitespace) {
                eprintln!("analyze: {path} is empty; reading {stderr_log} instead");
                (path, bytes) = (stderr_log, stderr);
            }
        }
    }
    let analysis = analyze_bytes(&bytes, args.source.forced());
    let out = if args.json {
        serde_json::to_string_pretty(&json(&path, &analysis))? + "\n"
    } else {
        render_text(&path, &analysis)
    };
    print_out(&out)?;
    Ok(if analysis.failed() { exit::FAILED } else { exit::OK })
}

/// Prints to stdout; a closed pipe (`analyze … | head`) is not an error.
pub fn print_out(text: &str) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// The JSON document: the contract keys plus kind/cause/fix and the kernel time offsets.
fn json(path: &Utf8Path, a: &Analysis) -> serde_json::Value {
    let findings: Vec<serde_json::Value> = a
        .findings
        .iter()
        .map(|f| {
            let sig = f.signature();
            serde_json::json!({
                "id": f.id,
                "line": f.line,
                "text": f.text,
                "kind": sig.map(|s| s.kind.name()),
                "phase": sig.map(|s| s.phase.name()),
                "cause": sig.map(|s| s.cause),
                "fix": sig.map(|s| s.fix),
                "seen_by": sig.map(|s| s.seen_by),
                "source": f.source,
                "subject": f.subject,
            })
        })
        .collect();
    serde_json::json!({
        "file": path.as_str(),
        "lines": a.lines,
        "phase": a.phase,
        "failed": a.failed(),
        "timeline": a.timeline,
        "findings": findings,
    })
}

fn render_text(path: &Utf8Path, a: &Analysis) -> String {
    use std::fmt::Write;
    let fancy = ui::fancy_stdout();
    let mut o = String::new();
    let _ = writeln!(o, "{path}: {} lines, furthest phase: {}", a.lines, a.phase);
    o.push('\n');
    let _ = writeln!(o, "Timeline");
    if a.timeline.is_empty() {
        let _ = writeln!(o, "  (no boot progress recognised)");
    }
    for e in &a.timeline {
        let offset = e.offset_secs.map_or(String::new(), |s| format!("  kernel +{s:.3}s"));
        let _ = writeln!(o, "  {:<11} line {:>6}{offset}", e.phase.name(), e.line);
    }
    o.push('\n');
    if a.findings.is_empty() {
        let _ = writeln!(o, "Findings: none");
        return o;
    }
    let _ = writeln!(o, "Findings");
    for f in &a.findings {
        let Some(sig) = f.signature() else { continue };
        let tone = match sig.kind {
            Kind::Failure => ui::Tone::Bad,
            Kind::Warning => ui::Tone::Warn,
            Kind::Info => ui::Tone::Good,
        };
        let head = format!("{} ({})", f.id, sig.kind.name());
        let _ = writeln!(o, "  {}  line {}, {} text", ui::paint(fancy, tone, &head), f.line, f.source.name());
        if let Some(subject) = &f.subject {
            let _ = writeln!(o, "    about: {subject}");
        }
        if !f.text.is_empty() {
            let _ = writeln!(o, "    text:  {}", f.text);
        }
        let _ = writeln!(o, "    cause: {}", sig.cause);
        let _ = writeln!(o, "    fix:   {}", sig.fix);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_crlf_and_clean_give_the_same_lines() {
        let raw =
            b"\x1b[0mLoading /boot/initrd...ok\r\n\x1b[?2004h\r\r\n\x1b[1;32m[\x1b]0;t\x07nixos@nixos:~]$\x1b[0m ";
        let a = analyze_bytes(raw, None);
        assert_eq!(a.lines, 3);
        assert_eq!(a.phase, diagnose::Phase::Shell);
        assert_eq!(a.timeline[1].line, 3);
        let clean = analyze_clean("Loading /boot/initrd...ok\n\n[nixos@nixos:~]$ \n");
        assert_eq!(clean.lines, 3);
        assert_eq!(clean.timeline, a.timeline);
    }
}
