//! `cargo xtask analyze FILE|- [--json]` — read a serial log offline: the boot timeline and the
//! known failure signatures, with the same detector `vm-test` uses live (`diagnose`).
//!
//! Accepts raw logs (escapes, CRLF, invalid UTF-8: cleaned by `strip_escapes.rs`) and clean ones, a
//! vm-test run directory (its `serial.log`), or `-` for standard input; serial text,
//! `journalctl` output or OCR'd screen text (`--source`, else told line by line). The log is streamed
//! in 64 KiB pieces and only the first `MATCH_PREFIX` bytes of a line are kept (all the
//! detector looks at), so memory stays bounded whatever the size of the input. Anything but a
//! regular file (a FIFO, `/dev/zero`) is refused unless it comes through `-`. Exit 0 when no
//! failure was found, 1 when a failure signature was found, 3 when the file cannot be read.

use crate::diagnose::{self, truncate, Detector, Finding, Kind, Source, TimelineEntry, MATCH_PREFIX};
use crate::project::{self, Symlinks};
use crate::strip_escapes::Cleaner;
use crate::{exit, ui};
use anyhow::Result;
use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;
use std::io::Read;

#[derive(clap::Args)]
#[command(after_help = "Reads the log as a stream: memory stays bounded (about 10 MiB) whatever its size.\n\
Exit codes: 0 no failure found, 1 a failure signature was found, 3 the file cannot be read or is not a regular\n\
file (a FIFO or device may never end: pipe it in with `-`). Finding ids, causes and fixes: docs/analyze.md.")]
pub struct Args {
    /// Boot log to read (serial console, `journalctl` output or screen text; raw or clean), a
    /// vm-test run directory (reads its serial.log), or - for standard input
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

/// Raw bytes read at a time.
const CHUNK: usize = 64 * 1024;

/// Streams a log through the cleaner and the detector. Memory is bounded: one chunk, its
/// clean text, and the current line's first `MATCH_PREFIX` bytes.
pub struct Analyzer {
    cleaner: Cleaner,
    detector: Detector,
    /// Clean text of the chunk being fed (kept to reuse its allocation).
    clean: String,
    /// The current line, cut at `MATCH_PREFIX` bytes: the detector reads no further.
    line: String,
    /// The current line was cut: nothing more of it is kept.
    line_cut: bool,
    /// Text came after the last newline (a last line without a newline is still a line).
    line_open: bool,
    lines: usize,
    /// A raw byte other than ASCII whitespace was fed.
    saw_text: bool,
}

impl Default for Analyzer {
    fn default() -> Self {
        Self::new()
    }
}

impl Analyzer {
    pub fn new() -> Self {
        Self::with_source(None)
    }

    /// An analyzer for text from `source` (`analyze --source`); `None` tells each line's.
    pub fn with_source(source: Option<Source>) -> Self {
        Analyzer {
            cleaner: Cleaner::new(),
            detector: Detector::with_source(source),
            clean: String::new(),
            line: String::with_capacity(MATCH_PREFIX),
            line_cut: false,
            line_open: false,
            lines: 0,
            saw_text: false,
        }
    }

    /// Feeds raw bytes (escapes, CRLF, invalid UTF-8 are cleaned here).
    pub fn feed_raw(&mut self, bytes: &[u8]) {
        if !self.saw_text {
            self.saw_text = bytes.iter().any(|b| !b.is_ascii_whitespace());
        }
        let mut clean = std::mem::take(&mut self.clean);
        self.cleaner.feed(bytes, &mut clean);
        self.feed_clean(&clean);
        clean.clear();
        self.clean = clean;
    }

    /// Feeds text that is already clean.
    pub fn feed_clean(&mut self, text: &str) {
        let mut rest = text;
        while let Some(end) = rest.find('\n') {
            self.keep(&rest[..end]);
            self.lines += 1;
            self.detector.feed_line(self.lines, &self.line);
            self.line.clear();
            (self.line_cut, self.line_open) = (false, false);
            rest = &rest[end + 1..];
        }
        if !rest.is_empty() {
            self.keep(rest);
            self.line_open = true;
        }
    }

    /// Appends to the current line what the detector will read of it.
    fn keep(&mut self, piece: &str) {
        if self.line_cut {
            return;
        }
        let kept = truncate(piece, MATCH_PREFIX - self.line.len());
        self.line.push_str(kept);
        self.line_cut = kept.len() < piece.len();
    }

    /// Feeds everything `input` gives until its end.
    pub fn read_from(&mut self, mut input: impl Read) -> std::io::Result<()> {
        let mut buf = vec![0; CHUNK];
        loop {
            match input.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => self.feed_raw(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Ends the input: feeds the last line, then asks the detector what the silence at the
    /// end means.
    pub fn finish(mut self) -> Analysis {
        if self.line_open {
            self.lines += 1;
            self.detector.feed_line(self.lines, &self.line);
        }
        self.detector.silence();
        Analysis {
            phase: self.detector.phase(),
            timeline: self.detector.timeline().to_vec(),
            findings: self.detector.findings().to_vec(),
            lines: self.lines,
        }
    }
}

/// Runs the detector over clean text held in memory.
pub fn analyze_clean(text: &str) -> Analysis {
    let mut a = Analyzer::new();
    a.feed_clean(text);
    a.finish()
}

/// The log file to read: FILE itself, or `FILE/serial.log` for a run directory.
fn resolve(file: &Utf8Path) -> Result<Utf8PathBuf> {
    if file.is_dir() {
        for name in ["serial.log", "serial.txt"] {
            let candidate = file.join(name);
            // Whatever it is: a FIFO there is refused with a reason, not passed over.
            if candidate.symlink_metadata().is_ok() {
                return Ok(candidate);
            }
        }
        return Err(exit::infra(format!(
            "{file} is a directory without serial.log or serial.txt; pass a serial log file or a vm-test run directory"
        )));
    }
    Ok(file.to_path_buf())
}

/// Streams the regular file at `path` through a new analyzer for text from `source`.
fn read_file(path: &Utf8Path, source: Option<Source>) -> Result<Analyzer> {
    let cannot_read = |e: std::io::Error| {
        let next = if e.kind() == std::io::ErrorKind::InvalidInput {
            format!(
                "analyze reads regular files only (a FIFO or device may never end); to read a stream, pipe it in: \
                 `cargo xtask analyze - < {path}`"
            )
        } else {
            "pass the path of a serial log (e.g. target/vm-runs/<UTC>/serial.log)".to_string()
        };
        exit::infra(format!("cannot read {path}: {e}; {next}"))
    };
    let file = project::open_regular(path, Symlinks::Follow).map_err(cannot_read)?;
    let mut analyzer = Analyzer::with_source(source);
    analyzer.read_from(file).map_err(cannot_read)?;
    Ok(analyzer)
}

pub fn run(args: Args) -> Result<u8> {
    let source = args.source.forced();
    let (path, analysis) = if args.file == "-" {
        let mut analyzer = Analyzer::with_source(source);
        analyzer
            .read_from(std::io::stdin().lock())
            .map_err(|e| exit::infra(format!("cannot read standard input: {e}")))?;
        (args.file.clone(), analyzer.finish())
    } else {
        let mut path = resolve(&args.file)?;
        let mut analyzer = read_file(&path, source)?;
        // A run whose guest never printed anything: QEMU's own stderr says why.
        if args.file.is_dir() && !analyzer.saw_text {
            let stderr_log = args.file.join("qemu.stderr.log");
            if let Ok(stderr) = read_file(&stderr_log, None) {
                if stderr.saw_text {
                    eprintln!("analyze: {path} is empty; reading {stderr_log} instead");
                    (path, analyzer) = (stderr_log, stderr);
                }
            }
        }
        (path, analyzer.finish())
    };
    let out = if args.json {
        serde_json::to_string_pretty(&json(&path, &analysis))? + "\n"
    } else {
        render_text(&path, &analysis)
    };
    ui::print(&out)?;
    Ok(if analysis.failed() { exit::FAILED } else { exit::OK })
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

    fn analyze_bytes(bytes: &[u8]) -> Analysis {
        let mut a = Analyzer::new();
        a.feed_raw(bytes);
        a.finish()
    }

    #[test]
    fn raw_crlf_and_clean_give_the_same_lines() {
        let raw =
            b"\x1b[0mLoading /boot/initrd...ok\r\n\x1b[?2004h\r\r\n\x1b[1;32m[\x1b]0;t\x07nixos@nixos:~]$\x1b[0m ";
        let a = analyze_bytes(raw);
        assert_eq!(a.lines, 3);
        assert_eq!(a.phase, diagnose::Phase::Shell);
        assert_eq!(a.timeline[1].line, 3);
        let clean = analyze_clean("Loading /boot/initrd...ok\n\n[nixos@nixos:~]$ \n");
        assert_eq!(clean.lines, 3);
        assert_eq!(clean.timeline, a.timeline);
    }

    /// The whole text at once, the old way: split at newlines, every line fed in full.
    fn whole(text: &str) -> (usize, Vec<TimelineEntry>, Vec<Finding>) {
        let mut d = Detector::new();
        let body = text.strip_suffix('\n').unwrap_or(text);
        let mut lines = 0;
        if !text.is_empty() {
            for (i, line) in body.split('\n').enumerate() {
                d.feed_line(i + 1, line);
                lines = i + 1;
            }
        }
        d.silence();
        (lines, d.timeline().to_vec(), d.findings().to_vec())
    }

    #[test]
    fn streaming_in_any_pieces_reads_like_the_whole_text() {
        // Long lines (cut at MATCH_PREFIX inside a multibyte character), empty lines, a last
        // line without a newline.
        let long = format!("[    9.000000] Kernel panic - not syncing: x{}\n", "\u{FFFD}".repeat(2000));
        assert!(!long.is_char_boundary(MATCH_PREFIX));
        let text = format!(
            "ISOLINUX 6.04\nLoading /boot/initrd...ok\n\n[    0.000000] Linux version 6.1\n{long}{}\n\n[nixos@nixos:~]$ ",
            "y".repeat(3 * MATCH_PREFIX)
        );
        let expected = whole(&text);
        assert_eq!(expected.0, 8);
        assert!(expected.2.iter().any(|f| f.id == "kernel-panic"), "a long line is read to its 4096th byte");
        for piece in [1, 2, 3, 7, 4095, 4096, 4097, text.len()] {
            let mut a = Analyzer::new();
            let mut rest = text.as_str();
            while !rest.is_empty() {
                let (head, tail) = rest.split_at(rest.ceil_char_boundary(piece.min(rest.len())));
                a.feed_clean(head);
                rest = tail;
            }
            let got = a.finish();
            assert_eq!((got.lines, got.timeline, got.findings), expected, "pieces of {piece}");
        }
        for text in ["", "\n", "a", "a\n", "a\n\n"] {
            assert_eq!(analyze_clean(text).lines, whole(text).0, "{text:?}");
        }
    }
}
