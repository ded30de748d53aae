//! `cargo xtask archive-logs [RUN_DIR | --latest] [--dry-run]` — files a vm-test run into the
//! repository so its evidence is kept, findable and readable:
//!
//! - `docs/boot-logs/<UTC>-serial.log`: the serial log cleaned for humans by `clean.rs` (every
//!   escape family incl. charset switches and SO/SI removed, CRLF → LF, invalid UTF-8 → U+FFFD);
//! - `docs/test-reports/<UTC>-boot-image-vm-test.log` (transcript) and `.md` (report);
//! - one JSON line per run in `docs/test-reports/ledger.jsonl`;
//! - `docs/test-reports/README.md`, regenerated from the ledger (newest first, median phase
//!   times of the last passing runs).
//!
//! `<UTC>` is the run's start (`started_at` in metadata.json, else the directory name).
//! Idempotent: archiving a run again changes nothing. An existing file with different content
//! is never overwritten (refused before anything is written). Writes are atomic. Logs above
//! `CAP_BYTES` keep their head and tail around a marker line. Secrets (private key blocks,
//! token-looking lines) are redacted, and the summary says so.

use crate::diagnose::Phase;
use crate::ui::human_bytes;
use crate::{clean, exit, project, stats};
use anyhow::Result;
use camino::{Utf8Path, Utf8PathBuf};
use regex::Regex;
use serde_json::{json, Value};
use std::sync::LazyLock;

#[derive(clap::Args)]
#[command(
    after_help = "Writes docs/boot-logs/<UTC>-serial.log (escapes removed), docs/test-reports/<UTC>-boot-image-vm-test.{log,md},\n\
appends docs/test-reports/ledger.jsonl and regenerates docs/test-reports/README.md. Idempotent; refuses to overwrite a\n\
different file; logs over 1 MiB keep head and tail; private keys and token-looking lines are redacted.\n\
Exit codes: 0 archived or already archived, 2 usage, 3 refused (a differing file), no or unreadable run, invalid\n\
metadata.json, or an archive file that cannot be read or written."
)]
pub struct Args {
    /// Run directory to archive (target/vm-runs/<UTC>); without it, the newest run
    #[arg(conflicts_with = "latest")]
    pub run_dir: Option<Utf8PathBuf>,
    /// Archive the newest finished run under target/vm-runs (the default)
    #[arg(long)]
    pub latest: bool,
    /// Show what would be written; write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Directory holding boot-logs/ and test-reports/ (default: the repository's docs/)
    #[arg(long, value_name = "DIR")]
    pub docs_dir: Option<Utf8PathBuf>,
}

/// Archived logs above this size keep `CAP_BYTES / 2` of head and of tail (cut at lines).
pub const CAP_BYTES: usize = 1024 * 1024;
/// Passing runs whose phase times make the medians in the index.
pub const MEDIAN_RUNS: usize = 10;

/// What happens to one target file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Create,
    Unchanged,
    /// Generated files (ledger append, index) that are rewritten by design.
    Update,
}

#[derive(Debug)]
pub struct Target {
    pub path: Utf8PathBuf,
    pub action: Action,
    pub bytes: usize,
    contents: Vec<u8>,
}

/// The outcome of archiving one run.
#[derive(Debug)]
pub struct Archived {
    pub stamp: String,
    pub run_dir: Utf8PathBuf,
    pub targets: Vec<Target>,
    /// Human-readable notes on what was redacted, capped or missing.
    pub notes: Vec<String>,
    pub dry_run: bool,
}

impl Archived {
    /// Whether anything was (or, in a dry run, would be) written.
    pub fn changed(&self) -> bool {
        self.targets.iter().any(|t| t.action != Action::Unchanged)
    }

    /// The lines `archive-logs` prints; vm-test `--archive` prints them too.
    pub fn summary(&self) -> String {
        let mut out = format!("archive-logs: run {} ({})\n", self.stamp, self.run_dir);
        let root = project::root();
        for t in &self.targets {
            let verb = match (t.action, self.dry_run) {
                (Action::Create, false) => "created",
                (Action::Create, true) => "would create",
                (Action::Update, false) => "updated",
                (Action::Update, true) => "would update",
                (Action::Unchanged, _) => "unchanged",
            };
            let shown = t.path.strip_prefix(&root).unwrap_or(&t.path);
            out += &format!("  {verb:<13} {shown} ({})\n", human_bytes(t.bytes as u64));
        }
        for n in &self.notes {
            out += &format!("  note: {n}\n");
        }
        if !self.changed() {
            out += "Nothing changed: this run was already archived.\n";
        } else if self.dry_run {
            out += "Dry run: nothing written.\n";
        }
        out
    }
}

pub fn run(args: Args) -> Result<u8> {
    let run_dir = match args.run_dir {
        Some(dir) => dir,
        None => latest_run()?,
    };
    let docs = args.docs_dir.unwrap_or_else(|| project::root().join("docs"));
    let archived = archive_into(&run_dir, &docs, args.dry_run)?;
    crate::analyze::print_out(&archived.summary())?;
    Ok(exit::OK)
}

/// Archives `run_dir` into the repository's `docs/`.
pub fn archive(run_dir: &Utf8Path, dry_run: bool) -> Result<Archived> {
    archive_into(run_dir, &project::root().join("docs"), dry_run)
}

/// The newest run directory under `target/vm-runs` (names are UTC stamps: they sort by time).
pub fn latest_run() -> Result<Utf8PathBuf> {
    let parent = project::vm_runs_dir();
    let mut runs: Vec<Utf8PathBuf> = match parent.read_dir_utf8() {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.into_path())
            .filter(|p| p.join("metadata.json").is_file() || p.join("serial.log").is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    runs.sort();
    // A run still in progress would be archived half-done (and its finished files later
    // refused as different): skip it, and say so.
    while let Some(run) = runs.pop() {
        let running = read_metadata(&run).ok().flatten().is_some_and(|m| m["outcome"] == "running");
        if !running {
            return Ok(run);
        }
        eprintln!("archive-logs: skipping {run}: its metadata says it is still running (pass it as RUN_DIR to archive it anyway)");
    }
    Err(exit::infra(format!(
        "no finished vm-test run under {parent}; run `cargo xtask vm-test` first, or pass a RUN_DIR"
    )))
}

/// Archives `run_dir` into `docs` (holding `boot-logs/` and `test-reports/`).
pub fn archive_into(run_dir: &Utf8Path, docs: &Utf8Path, dry_run: bool) -> Result<Archived> {
    if !run_dir.is_dir() {
        return Err(exit::infra(format!(
            "{run_dir} is not a directory; pass a vm-test run directory (target/vm-runs/<UTC>) or --latest"
        )));
    }
    let metadata = read_metadata(run_dir)?;
    let stamp = run_stamp(run_dir, metadata.as_ref())?;
    let mut notes = Vec::new();
    let mut redactions = Redactions::default();

    // The three archived copies.
    let serial_src = ["serial.log", "serial.txt"].map(|n| run_dir.join(n)).into_iter().find(|p| p.is_file());
    let serial_bytes = match &serial_src {
        Some(p) => Some(std::fs::read(p).map_err(|e| unreadable(p, e))?),
        None => {
            notes.push("the run has no serial.log: no boot log archived".into());
            None
        }
    };
    let mut files: Vec<(Utf8PathBuf, String)> = Vec::new();
    if let (Some(src), Some(bytes)) = (&serial_src, &serial_bytes) {
        if bytes.is_empty() {
            notes.push(format!("{src} is empty: the guest printed nothing (QEMU's own errors are in qemu.stderr.log)"));
        }
        let text = prepare(&clean::clean_all(bytes), src, &mut redactions, &mut notes);
        files.push((docs.join("boot-logs").join(format!("{stamp}-serial.log")), text));
    }
    let transcript = run_dir.join("transcript.log");
    if transcript.is_file() {
        let bytes = std::fs::read(&transcript).map_err(|e| unreadable(&transcript, e))?;
        let text = prepare(&clean::clean_all(&bytes), &transcript, &mut redactions, &mut notes);
        files.push((docs.join("test-reports").join(format!("{stamp}-boot-image-vm-test.log")), text));
    } else {
        notes.push("the run has no transcript.log".into());
    }
    let report_src = run_dir.join("report.md");
    let report = if report_src.is_file() {
        Some(clean::clean_all(&std::fs::read(&report_src).map_err(|e| unreadable(&report_src, e))?))
    } else {
        metadata.as_ref().map(crate::vm::report::markdown)
    };
    match report {
        Some(text) => {
            let text = prepare(&text, &report_src, &mut redactions, &mut notes);
            files.push((docs.join("test-reports").join(format!("{stamp}-boot-image-vm-test.md")), text));
        }
        None => notes.push("the run has neither report.md nor metadata.json: no report archived".into()),
    }

    // Decide every target before writing anything: a differing file refuses the whole run.
    let mut targets = Vec::new();
    for (path, text) in files {
        let action = match std::fs::read(&path) {
            Ok(existing) if existing == text.as_bytes() => Action::Unchanged,
            Ok(_) => {
                return Err(exit::infra(format!(
                    "refusing to overwrite {path}: it exists with different content (another run with the same start time, \
                     or this run changed since it was archived). Nothing was written; move that file away or compare it with {run_dir} first."
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Action::Create,
            Err(e) => return Err(unreadable(&path, e)),
        };
        targets.push(Target { path, action, bytes: text.len(), contents: text.into_bytes() });
    }

    // The ledger line and the index generated from the whole ledger.
    let reports = docs.join("test-reports");
    let ledger_path = reports.join("ledger.jsonl");
    let existing = match std::fs::read_to_string(&ledger_path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(unreadable(&ledger_path, e)),
    };
    let serial_clean = serial_bytes.as_deref().map(clean::clean_all);
    let line = ledger_line(&stamp, metadata.as_ref(), serial_clean.as_deref(), &targets, docs, redactions.total());
    let mut entries = parse_ledger(&existing, &ledger_path, &mut notes);
    // A run already in the ledger keeps its line: the ledger is append-only history (a
    // newer detector may read the same log differently; the archived copies were compared above).
    match entries.iter().find(|e| e["run"] == line["run"]) {
        Some(old) => {
            if *old != line {
                notes.push(format!("{ledger_path} already has run {stamp}; its line is kept as first written"));
            }
            targets.push(Target {
                path: ledger_path.clone(),
                action: Action::Unchanged,
                bytes: existing.len(),
                contents: Vec::new(),
            });
        }
        None => {
            let mut text = existing.clone();
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text += &serde_json::to_string(&line)?;
            text.push('\n');
            entries.push(line);
            let action = if existing.is_empty() { Action::Create } else { Action::Update };
            targets.push(Target { path: ledger_path.clone(), action, bytes: text.len(), contents: text.into_bytes() });
        }
    }
    let index_path = reports.join("README.md");
    let index = render_index(&entries);
    let action = match std::fs::read(&index_path) {
        Ok(old) if old == index.as_bytes() => Action::Unchanged,
        Ok(_) => Action::Update,
        Err(_) => Action::Create,
    };
    targets.push(Target { path: index_path, action, bytes: index.len(), contents: index.into_bytes() });

    if redactions.total() > 0 {
        notes.push(format!("redacted {}", redactions.describe()));
    }
    if !dry_run {
        for t in &targets {
            if t.action != Action::Unchanged {
                fs_err::create_dir_all(t.path.parent().expect("targets live in a directory"))
                    .map_err(anyhow::Error::from)
                    .and_then(|()| project::write_atomic(&t.path, &t.contents))
                    .map_err(|e| {
                        exit::infra(format!(
                            "cannot write {}: {e:#}; files listed before it were written, archiving again completes the rest",
                            t.path
                        ))
                    })?;
            }
        }
    }
    Ok(Archived { stamp, run_dir: run_dir.to_path_buf(), targets, notes, dry_run })
}

/// An input or target that cannot be read is an infrastructure error (exit 3), as `--help` says.
fn unreadable(path: &Utf8Path, e: std::io::Error) -> anyhow::Error {
    exit::infra(format!("cannot read {path}: {e}; check its permissions, then archive again"))
}

fn read_metadata(run_dir: &Utf8Path) -> Result<Option<Value>> {
    let path = run_dir.join("metadata.json");
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| exit::infra(format!("{path} is not valid JSON ({e}); fix or remove it, then archive again"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(unreadable(&path, e)),
    }
}

static STAMP: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z(-\d+)?$").expect("compiles"));

/// `<UTC>` of the archive names: the run's start from metadata.json, else the directory name.
/// A directory suffixed `-N` (two runs started in the same second) keeps its suffix.
fn run_stamp(run_dir: &Utf8Path, metadata: Option<&Value>) -> Result<String> {
    let dir_name = run_dir.file_name().unwrap_or_default();
    let started = metadata
        .and_then(|m| m["started_at"].as_str())
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        .map(project::utc_stamp);
    match started {
        Some(stamp) if STAMP.is_match(dir_name) && dir_name.starts_with(&format!("{stamp}-")) => {
            Ok(dir_name.to_string())
        }
        Some(stamp) => Ok(stamp),
        None if STAMP.is_match(dir_name) => Ok(dir_name.to_string()),
        None => Err(exit::infra(format!(
            "cannot tell when the run in {run_dir} started: metadata.json has no `started_at` and the directory \
             is not named like 2026-11-25T18-18-17Z; rename the directory to its start time"
        ))),
    }
}

/// Redacts secrets, then caps the size.
fn prepare(text: &str, src: &Utf8Path, redactions: &mut Redactions, notes: &mut Vec<String>) -> String {
    let text = redact(text, redactions);
    let (text, omitted) = cap(&text, CAP_BYTES, src);
    if omitted > 0 {
        notes.push(format!(
            "{src}: {omitted} lines over the {} cap left out (head and tail kept)",
            human_bytes(CAP_BYTES as u64)
        ));
    }
    text
}

#[derive(Default)]
struct Redactions {
    key_blocks: usize,
    token_lines: usize,
}

impl Redactions {
    fn total(&self) -> usize {
        self.key_blocks + self.token_lines
    }

    fn describe(&self) -> String {
        format!("{} private key block(s) and {} token-looking line(s)", self.key_blocks, self.token_lines)
    }
}

/// Lines that look like credentials.
static TOKEN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r#"(?i)\b(api[_-]?key|access[_-]?key|secret[_-]?key|client[_-]?secret|auth[_-]?token|access[_-]?tokens?|token|secret|password|passwd)\b["']?\s*[:=]\s*["']?[^\s"']{8,}"#,
        r"|(?i)authorization:\s*(bearer|basic|token)\s+\S{8,}",
        r"|\b(ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{20,}|\bglpat-[A-Za-z0-9_-]{20,}",
        r"|\bxox[abprs]-[A-Za-z0-9-]{10,}|\bAKIA[0-9A-Z]{16}\b|\bsk-[A-Za-z0-9]{20,}",
    ))
    .expect("compiles")
});
/// Base64 body or header lines of a PEM/OpenSSH key block.
static KEY_BODY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\s*([A-Za-z0-9+/=]+|[A-Za-z-]+: .*)?\s*$").expect("compiles"));

/// Replaces private key blocks and token-looking lines with a marker line each.
fn redact(text: &str, r: &mut Redactions) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_key = false;
    for line in text.split_inclusive('\n') {
        let newline = if line.ends_with('\n') { "\n" } else { "" };
        if in_key {
            if line.contains("-----END ") {
                in_key = false;
                continue;
            }
            if KEY_BODY.is_match(line.trim_end_matches('\n')) {
                continue;
            }
            in_key = false; // A truncated block: stop at the first line that is not key material.
        }
        if line.contains("-----BEGIN ") && line.contains("PRIVATE KEY") {
            r.key_blocks += 1;
            out += "[archive-logs: private key block redacted]";
            out += newline;
            in_key = !line.contains("-----END ");
            continue;
        }
        if TOKEN.is_match(line) {
            r.token_lines += 1;
            out += "[archive-logs: line redacted, it looked like a secret token]";
            out += newline;
            continue;
        }
        out += line;
    }
    out
}

/// Keeps the head and tail (about `cap / 2` bytes each, whole lines) of a text over `cap`,
/// with a marker line in between. Returns the text and the number of lines left out.
fn cap(text: &str, cap: usize, src: &Utf8Path) -> (String, usize) {
    if text.len() <= cap {
        return (text.to_string(), 0);
    }
    let half = cap / 2;
    // Guest text: either cut point may fall inside a multibyte character.
    let head_end = text[..text.floor_char_boundary(half)].rfind('\n').map_or(0, |p| p + 1);
    let tail_start = text.ceil_char_boundary(text.len() - half);
    let tail_start = text[tail_start..].find('\n').map_or(text.len(), |p| tail_start + p + 1);
    let middle = &text[head_end..tail_start];
    let lines = middle.matches('\n').count();
    let marker = format!(
        "[archive-logs: {lines} lines ({}) left out here to keep the archive under {}; the full log is {src}]\n",
        human_bytes(middle.len() as u64),
        human_bytes(CAP_BYTES as u64)
    );
    (format!("{}{marker}{}", &text[..head_end], &text[tail_start..]), lines)
}

/// One ledger line: what is needed to compare runs over time.
fn ledger_line(
    stamp: &str,
    meta: Option<&Value>,
    serial: Option<&str>,
    targets: &[Target],
    docs: &Utf8Path,
    redactions: usize,
) -> Value {
    let null = Value::Null;
    let m = meta.unwrap_or(&null);
    let analysis = serial.map(crate::analyze::analyze_clean);
    // Finding ids: vm-test's (they include harness-only ones), else what the serial log shows.
    let mut findings: Vec<String> = Vec::new();
    let from_meta = m["findings"].as_array().is_some();
    if let Some(list) = m["findings"].as_array() {
        for id in list.iter().filter_map(|f| f["id"].as_str()) {
            if !findings.iter().any(|f| f == id) {
                findings.push(id.to_string());
            }
        }
    } else if let Some(a) = &analysis {
        findings.extend(a.findings.iter().map(|f| f.id.to_string()));
    }
    if let Some(id) = m["verdict"]["finding"].as_str() {
        if !findings.iter().any(|f| f == id) {
            findings.insert(0, id.to_string());
        }
    }
    let mut phases = serde_json::Map::new();
    for p in m["phases"].as_array().into_iter().flatten() {
        let status = p["status"].as_str().unwrap_or("ok");
        if let (Some(name), Some(secs), true) = (p["phase"].as_str(), p["seconds"].as_f64(), status != "not-reached") {
            phases.insert(name.to_string(), json!({"seconds": secs, "status": status}));
        }
    }
    let outcome = match m["outcome"].as_str() {
        Some("running") => "unfinished",
        Some(o) => o,
        None => "unknown",
    };
    let rel = |suffix: &str| {
        targets
            .iter()
            .find(|t| t.path.as_str().ends_with(suffix))
            .and_then(|t| t.path.strip_prefix(docs).ok())
            .map(|p| p.as_str().to_string())
    };
    let image = &m["image"];
    json!({
        "schema": 1,
        "run": stamp,
        "timestamp": m["started_at"].as_str().map(String::from).unwrap_or_else(|| stamp_to_rfc3339(stamp)),
        "finished_at": m["finished_at"],
        "outcome": outcome,
        "exit_code": m["exit_code"],
        "verdict": m["verdict"]["finding"],
        "verdict_phase": m["verdict"]["phase"],
        "findings": findings,
        "findings_source": if from_meta { "metadata" } else { "serial" },
        "furthest_phase": analysis.as_ref().map(|a| a.phase.name()),
        "phases": phases,
        "total_seconds": m["total_seconds"],
        "iso": {
            "path": image["path"], "size_bytes": image["size_bytes"], "source": image["source"],
            "fault": image["fault"], "store_path": image["store_path"], "nar_hash": image["nar_hash"],
        },
        "accel": m["qemu"]["accel"],
        "qemu_version": m["qemu"]["version"],
        "checks": {
            "pass": count_checks(m, "pass"), "fail": count_checks(m, "fail"), "skip": count_checks(m, "skip"),
        },
        "files": {
            "serial": rel("-serial.log"),
            "transcript": rel("-boot-image-vm-test.log"),
            "report": rel("-boot-image-vm-test.md"),
        },
        "redactions": redactions,
    })
}

fn count_checks(m: &Value, status: &str) -> usize {
    m["checks"].as_array().map_or(0, |c| c.iter().filter(|c| c["status"] == status).count())
}

/// `2026-11-25T18-18-17Z[-N]` → `2026-11-25T18:18:17Z`.
fn stamp_to_rfc3339(stamp: &str) -> String {
    let base = &stamp[..stamp.len().min(20)];
    match base.split_once('T') {
        Some((date, time)) => format!("{date}T{}", time.replace('-', ":")),
        None => stamp.to_string(),
    }
}

fn parse_ledger(text: &str, path: &Utf8Path, notes: &mut Vec<String>) -> Vec<Value> {
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(v) if v["run"].is_string() => entries.push(v),
            _ => notes.push(format!("{path}:{}: not a ledger line, left as is and not indexed", i + 1)),
        }
    }
    entries
}

/// `docs/test-reports/README.md`: medians of the last passing runs, then every run, newest first.
fn render_index(entries: &[Value]) -> String {
    let mut runs: Vec<&Value> = entries.iter().collect();
    runs.sort_by(|a, b| b["run"].as_str().cmp(&a["run"].as_str()));
    let mut out = String::from(
        "# vm-test runs\n\n\
         Generated by `cargo xtask archive-logs` from [`ledger.jsonl`](ledger.jsonl); do not edit by hand.\n\
         Serial logs are in [`../boot-logs/`](../boot-logs/), cleaned of terminal escapes.\n\n",
    );
    let passing: Vec<&Value> = runs.iter().copied().filter(|r| r["outcome"] == "pass").take(MEDIAN_RUNS).collect();
    out += &format!("## Median phase times (last {} passing runs)\n\n", passing.len());
    if passing.is_empty() {
        out += "No passing run archived yet.\n\n";
    } else {
        out += "| Phase | Median s | Runs |\n|---|---:|---:|\n";
        for phase in Phase::ALL {
            let secs: Vec<f64> = passing.iter().filter_map(|r| r["phases"][phase.name()]["seconds"].as_f64()).collect();
            let n = secs.len();
            if let Some(median) = stats::median(secs) {
                out += &format!("| {} | {median:.1} | {n} |\n", phase.name());
            }
        }
        let totals: Vec<f64> = passing.iter().filter_map(|r| r["total_seconds"].as_f64()).collect();
        let n = totals.len();
        if let Some(median) = stats::median(totals) {
            out += &format!("| **total** | {median:.1} | {n} |\n");
        }
        out += "\n";
    }
    out += "## Runs (newest first)\n\n";
    out += "| Run (UTC) | Outcome | Verdict | Findings | Image | Accel | QEMU | Total s | Evidence |\n";
    out += "|---|---|---|---|---|---|---|---:|---|\n";
    for r in runs {
        let text = |v: &Value| v.as_str().map_or("—".to_string(), |s| s.replace('|', "\\|"));
        let findings: Vec<&str> = r["findings"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let image = match (r["iso"]["source"].as_str(), r["iso"]["fault"].as_str(), r["iso"]["path"].as_str()) {
            (Some(src), Some(fault), _) => format!("{src} ({fault})"),
            (Some(src), None, Some(path)) => format!("{src} `{}`", Utf8Path::new(path).file_name().unwrap_or(path)),
            (Some(src), None, None) => src.to_string(),
            _ => "—".to_string(),
        };
        let mut links = Vec::new();
        for (key, label) in [("serial", "serial"), ("transcript", "transcript"), ("report", "report")] {
            if let Some(p) = r["files"][key].as_str() {
                let href = p.strip_prefix("test-reports/").map_or(format!("../{p}"), String::from);
                links.push(format!("[{label}]({href})"));
            }
        }
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            text(&r["run"]),
            text(&r["outcome"]),
            text(&r["verdict"]),
            if findings.is_empty() { "—".to_string() } else { findings.join(", ") },
            image,
            text(&r["accel"]),
            text(&r["qemu_version"]),
            r["total_seconds"].as_f64().map_or("—".to_string(), |s| format!("{s:.1}")),
            if links.is_empty() { "—".to_string() } else { links.join(" · ") },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_key_blocks_and_tokens_but_not_ordinary_lines() {
        let text = "a\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nAAAA==\n-----END OPENSSH PRIVATE KEY-----\n\
                    GITHUB_TOKEN=ghp_abcdefghijklmnopqrstuvwxyz0123456789\n[sudo] password for nixos: \n\
                    PasswordAuthentication no\naccess-tokens = github.com=abcdefgh12345\nz";
        let mut r = Redactions::default();
        let out = redact(text, &mut r);
        assert_eq!(r.key_blocks, 1);
        assert_eq!(r.token_lines, 2);
        assert!(!out.contains("b3Blbn") && !out.contains("ghp_") && !out.contains("abcdefgh12345"));
        assert!(out.starts_with("a\n[archive-logs: private key block redacted]\n"));
        assert!(out.contains("[sudo] password for nixos: \nPasswordAuthentication no\n"));
        assert!(out.ends_with("\nz"));
    }

    #[test]
    fn truncated_key_block_stops_at_the_first_ordinary_line() {
        let mut r = Redactions::default();
        let out = redact("-----BEGIN RSA PRIVATE KEY-----\nMIIEow==\n[root@nixos:~]# ls\n", &mut r);
        assert_eq!(out, "[archive-logs: private key block redacted]\n[root@nixos:~]# ls\n");
    }

    #[test]
    fn cap_keeps_head_and_tail_at_line_boundaries() {
        let text: String = (0..100_000).map(|i| format!("line {i}\n")).collect();
        let (out, omitted) = cap(&text, 64 * 1024, Utf8Path::new("x/serial.log"));
        assert!(out.len() < 64 * 1024 + 200);
        assert!(out.starts_with("line 0\nline 1\n") && out.ends_with("line 99999\n"));
        assert!(omitted > 90_000);
        let marker = out.lines().find(|l| l.starts_with("[archive-logs:")).unwrap();
        assert!(marker.contains(&format!("{omitted} lines")) && marker.contains("x/serial.log"));
        assert_eq!(out.lines().count(), 100_000 - omitted + 1);
    }

    #[test]
    fn cap_cuts_inside_multibyte_characters_without_panicking() {
        // Guest text with U+FFFD (3 bytes) everywhere: find a prefix that puts both cut points
        // (CAP_BYTES / 2 from each end) inside a character.
        let body: String = (0..12_000).map(|i| format!("{}{i}\n", "\u{FFFD}".repeat(30))).collect();
        let half = CAP_BYTES / 2;
        let text = (0..6)
            .map(|n| format!("{}\n{body}", "x".repeat(n)))
            .find(|t| !t.is_char_boundary(half) && !t.is_char_boundary(t.len() - half))
            .expect("some prefix puts both cuts inside a character");
        assert!(text.len() > CAP_BYTES);
        let (out, omitted) = cap(&text, CAP_BYTES, Utf8Path::new("x/serial.log"));
        assert!(omitted > 0 && out.len() < text.len());
        assert!(text.starts_with(out.split("[archive-logs:").next().unwrap()));
        assert!(text.ends_with(&format!("{}\n", out.lines().last().unwrap())));
        assert!(out.lines().filter(|l| !l.starts_with("[archive-logs:")).all(|l| text.contains(l)));
    }

    #[test]
    fn stamps_from_metadata_or_directory() {
        let m = json!({"started_at": "2026-11-25T18:18:17Z"});
        assert_eq!(run_stamp(Utf8Path::new("/x/whatever"), Some(&m)).unwrap(), "2026-11-25T18-18-17Z");
        assert_eq!(run_stamp(Utf8Path::new("/x/2026-11-25T18-18-17Z-1"), Some(&m)).unwrap(), "2026-11-25T18-18-17Z-1");
        assert_eq!(run_stamp(Utf8Path::new("/x/2026-11-25T18-18-17Z"), None).unwrap(), "2026-11-25T18-18-17Z");
        assert!(run_stamp(Utf8Path::new("/x/run"), None).is_err());
        assert_eq!(stamp_to_rfc3339("2026-11-25T18-18-17Z-1"), "2026-11-25T18:18:17Z");
    }
}
