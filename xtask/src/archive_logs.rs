//! `cargo xtask archive-logs [RUN_DIR | --latest] [--dry-run]` — files a vm-test run into the
//! repository so its evidence is kept, findable and readable:
//!
//! - `docs/boot-logs/<UTC>-serial.log`: the serial log cleaned for humans by `strip_escapes.rs` (every
//!   escape family incl. charset switches and SO/SI removed, CRLF → LF, invalid UTF-8 → U+FFFD);
//! - `docs/test-reports/<UTC>-boot-image-vm-test.log` (transcript) and `.md` (report);
//! - one JSON line per run in `docs/test-reports/ledger.jsonl`;
//! - `docs/test-reports/README.md`, regenerated from the ledger (newest first, median phase
//!   times of the last passing runs).
//!
//! `<UTC>` is the run's start (`started_at` in metadata.json, else the directory name).
//! Idempotent: archiving a run again changes nothing. An existing file with different content
//! is never overwritten (refused before anything is written). Writes are atomic, and two
//! archivers at once take turns (an advisory lock on the docs directory), so no ledger line is
//! lost. Logs above `CAP_BYTES` keep their head and tail around a marker line. Secrets (private
//! key blocks, credential-looking lines) are redacted, and the summary says how many spans.
//! The run directory is not trusted: only regular files are read from it (a symlinked
//! `serial.log` is refused), and its metadata.json values are bounded in the ledger and
//! escaped in the index.

mod redact;

use crate::diagnose::{truncate, Phase};
use crate::project::Symlinks;
use crate::ui::human_bytes;
use crate::vm::record::{CheckStatus, PhaseStatus, RunOutcome, RunRecord};
use crate::{exit, project, stats, strip_escapes};
use anyhow::Result;
use camino::{Utf8Path, Utf8PathBuf};
use redact::{redact, Redactions};
use regex::Regex;
use serde_json::{json, Value};
use std::sync::LazyLock;

#[derive(clap::Args)]
#[command(
    after_help = "Writes docs/boot-logs/<UTC>-serial.log (escapes removed), docs/test-reports/<UTC>-boot-image-vm-test.{log,md},\n\
appends docs/test-reports/ledger.jsonl and regenerates docs/test-reports/README.md. Idempotent; refuses to overwrite a\n\
different file; waits for another archive-logs writing the same docs; logs over 1 MiB keep head and tail; private key\n\
blocks and credential-looking lines are redacted (docs/analyze.md lists the shapes).\n\
Exit codes: 0 archived or already archived, 2 usage, 3 refused (a differing file, a symlink or special file in the run\n\
directory), no or unreadable run, invalid metadata.json, or an archive file that cannot be read or written."
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
    crate::ui::print(&archived.summary())?;
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
        let running = read_metadata(&run).ok().flatten().is_some_and(|m| m.outcome == Some(RunOutcome::Running));
        if !running {
            return Ok(run);
        }
        eprintln!("archive-logs: skipping {run}: its metadata says it is still running (pass it as RUN_DIR to archive it anyway)");
    }
    Err(exit::infra(format!(
        "no finished vm-test run under {parent}; run `cargo xtask vm-test` first, or pass a RUN_DIR"
    )))
}

/// Archives `run_dir` into `docs` (holding `boot-logs/` and `test-reports/`): collect the
/// run's files, plan every target, add the ledger line and the index, then write.
pub fn archive_into(run_dir: &Utf8Path, docs: &Utf8Path, dry_run: bool) -> Result<Archived> {
    if !run_dir.is_dir() {
        return Err(exit::infra(format!(
            "{run_dir} is not a directory; pass a vm-test run directory (target/vm-runs/<UTC>) or --latest"
        )));
    }
    let metadata = read_metadata(run_dir)?;
    let stamp = run_stamp(run_dir, metadata.as_ref())?;
    let Collected { files, serial, redactions, mut notes } = collect(run_dir, docs, &stamp, metadata.as_ref())?;

    // From here to the last write, one archiver at a time: each reads the ledger, adds its
    // line and writes the ledger back, so two at once would lose a line.
    let _lock = if dry_run { None } else { Some(lock_docs(docs)?) };

    let mut targets = plan(files, run_dir)?;
    let line = ledger_line(&stamp, metadata.as_ref(), serial.as_deref(), &targets, docs, redactions.total());
    targets.extend(ledger_and_index(docs, line, &mut notes)?);
    if redactions.total() > 0 {
        notes.push(format!("redacted {}", redactions.describe()));
    }
    if !dry_run {
        write(&targets)?;
    }
    Ok(Archived { stamp, run_dir: run_dir.to_path_buf(), targets, notes, dry_run })
}

/// The run's files as they will be archived (escapes stripped, secrets redacted, capped),
/// each with its path under `docs`.
struct Collected {
    /// Destination and contents: text (cleaned, redacted, capped) and the last screenshot as is.
    files: Vec<(Utf8PathBuf, Vec<u8>)>,
    /// The serial log's clean text, uncapped (the ledger reads its findings).
    serial: Option<String>,
    redactions: Redactions,
    notes: Vec<String>,
}

fn collect(run_dir: &Utf8Path, docs: &Utf8Path, stamp: &str, metadata: Option<&RunRecord>) -> Result<Collected> {
    let mut c = Collected { files: Vec::new(), serial: None, redactions: Redactions::default(), notes: Vec::new() };
    let mut serial_src = None;
    for name in ["serial.log", "serial.txt"] {
        let path = run_dir.join(name);
        if let Some(bytes) = read_run_file(&path)? {
            serial_src = Some((path, bytes));
            break;
        }
    }
    match serial_src {
        Some((src, bytes)) => {
            if bytes.is_empty() {
                c.notes.push(format!(
                    "{src} is empty: the guest printed nothing (QEMU's own errors are in qemu.stderr.log)"
                ));
            }
            let clean = strip_escapes::clean_all(&bytes);
            let text = prepare(&clean, &src, &mut c.redactions, &mut c.notes);
            c.files.push((docs.join("boot-logs").join(format!("{stamp}-serial.log")), text.into_bytes()));
            c.serial = Some(clean);
        }
        None => c.notes.push("the run has no serial.log: no boot log archived".into()),
    }
    let transcript = run_dir.join("transcript.log");
    if let Some(bytes) = read_run_file(&transcript)? {
        let text = prepare(&strip_escapes::clean_all(&bytes), &transcript, &mut c.redactions, &mut c.notes);
        c.files.push((docs.join("test-reports").join(format!("{stamp}-boot-image-vm-test.log")), text.into_bytes()));
    } else {
        c.notes.push("the run has no transcript.log".into());
    }
    let report_src = run_dir.join("report.md");
    let report = match read_run_file(&report_src)? {
        Some(bytes) => Some(strip_escapes::clean_all(&bytes)),
        None => metadata.map(crate::vm::report::markdown),
    };
    match report {
        Some(text) => {
            let text = prepare(&text, &report_src, &mut c.redactions, &mut c.notes);
            c.files.push((docs.join("test-reports").join(format!("{stamp}-boot-image-vm-test.md")), text.into_bytes()));
        }
        None => c.notes.push("the run has neither report.md nor metadata.json: no report archived".into()),
    }
    // The last screenshot (the verdict's, when the run failed): what the screen showed.
    if let Some(shot) = metadata.and_then(|m| m.screens.last()) {
        let src = run_dir.join(&shot.file);
        let name_ok = !shot.file.contains("..") && shot.file.ends_with(".png");
        match (name_ok, if name_ok { read_run_file(&src)? } else { None }) {
            (true, Some(png)) => c.files.push((docs.join("boot-logs").join(format!("{stamp}-screen.png")), png)),
            _ => c.notes.push(format!("the screenshot {} the record lists is not in the run directory", shot.file)),
        }
    }
    Ok(c)
}

/// What happens to each archived copy, decided before anything is written: an existing file
/// with different content refuses the whole run.
fn plan(files: Vec<(Utf8PathBuf, Vec<u8>)>, run_dir: &Utf8Path) -> Result<Vec<Target>> {
    let mut targets = Vec::new();
    for (path, contents) in files {
        let action = match std::fs::read(&path) {
            Ok(existing) if existing == contents => Action::Unchanged,
            Ok(_) => {
                return Err(exit::infra(format!(
                    "refusing to overwrite {path}: it exists with different content (another run with the same start time, \
                     or this run changed since it was archived). Nothing was written; move that file away or compare it with {run_dir} first."
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Action::Create,
            Err(e) => return Err(unreadable(&path, e)),
        };
        targets.push(Target { path, action, bytes: contents.len(), contents });
    }
    Ok(targets)
}

/// The ledger with this run's `line` appended (a run already there keeps its first line: the
/// ledger is append-only history), and the index generated from the whole ledger.
fn ledger_and_index(docs: &Utf8Path, line: Value, notes: &mut Vec<String>) -> Result<[Target; 2]> {
    let reports = docs.join("test-reports");
    let ledger_path = reports.join("ledger.jsonl");
    let existing = match std::fs::read_to_string(&ledger_path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(unreadable(&ledger_path, e)),
    };
    let mut entries = parse_ledger(&existing, &ledger_path, notes);
    // A newer detector may read the same log differently; the archived copies were compared
    // before, so the first line stays.
    let ledger = match entries.iter().find(|e| e["run"] == line["run"]) {
        Some(old) => {
            if *old != line {
                let run = line["run"].as_str().unwrap_or_default();
                notes.push(format!("{ledger_path} already has run {run}; its line is kept as first written"));
            }
            Target { path: ledger_path, action: Action::Unchanged, bytes: existing.len(), contents: Vec::new() }
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
            Target { path: ledger_path, action, bytes: text.len(), contents: text.into_bytes() }
        }
    };
    let index_path = reports.join("README.md");
    let index = render_index(&entries);
    let action = match std::fs::read(&index_path) {
        Ok(old) if old == index.as_bytes() => Action::Unchanged,
        Ok(_) => Action::Update,
        Err(_) => Action::Create,
    };
    Ok([ledger, Target { path: index_path, action, bytes: index.len(), contents: index.into_bytes() }])
}

/// Writes every target that changes, atomically, creating directories as needed.
fn write(targets: &[Target]) -> Result<()> {
    for t in targets.iter().filter(|t| t.action != Action::Unchanged) {
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
    Ok(())
}

/// An input or target that cannot be read is an infrastructure error (exit 3), as `--help` says.
fn unreadable(path: &Utf8Path, e: std::io::Error) -> anyhow::Error {
    exit::infra(format!("cannot read {path}: {e}; check its permissions, then archive again"))
}

/// Reads a file of the run directory; None when it does not exist. What is archived goes into
/// the repository, so a symbolic link (`serial.log` -> `/etc/shadow`) or a special file (a FIFO
/// would block forever) is refused: a run directory holds only the regular files vm-test wrote.
fn read_run_file(path: &Utf8Path) -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    let mut file = match project::open_regular(path, Symlinks::Refuse) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            return Err(exit::infra(format!(
                "refusing to archive {path}: {e}. A vm-test run directory holds only the regular files vm-test \
                 wrote; replace it with a regular file or archive another run. Nothing was written."
            )))
        }
        Err(e) => return Err(unreadable(path, e)),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| unreadable(path, e))?;
    Ok(Some(bytes))
}

fn read_metadata(run_dir: &Utf8Path) -> Result<Option<RunRecord>> {
    let path = run_dir.join("metadata.json");
    match read_run_file(&path)? {
        Some(bytes) => RunRecord::from_json(&bytes)
            .map(Some)
            .map_err(|e| exit::infra(format!("{path} is not valid JSON ({e}); fix or remove it, then archive again"))),
        None => Ok(None),
    }
}

/// Takes the advisory lock (`flock`, through `std::fs::File::lock`) on `docs`, waiting for
/// another archiver (an `archive-logs` or a `vm-test --archive`) to finish. The lock is on the
/// directory itself, not a lock file, so nothing extra lands in the repository; the kernel
/// drops it when the process ends, however it ends.
fn lock_docs(docs: &Utf8Path) -> Result<std::fs::File> {
    let cannot = |e: std::io::Error| {
        exit::infra(format!("cannot lock {docs} for archiving: {e}; check that it is a writable directory"))
    };
    fs_err::create_dir_all(docs).map_err(cannot)?;
    let dir = std::fs::File::open(docs).map_err(cannot)?;
    match dir.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            eprintln!("archive-logs: waiting for another archive-logs writing into {docs}");
            dir.lock().map_err(cannot)?;
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(cannot(e)),
    }
    Ok(dir)
}

static STAMP: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z(-\d+)?$").expect("compiles"));

/// `<UTC>` of the archive names: the run's start from metadata.json, else the directory name.
/// A directory suffixed `-N` (two runs started in the same second) keeps its suffix.
fn run_stamp(run_dir: &Utf8Path, metadata: Option<&RunRecord>) -> Result<String> {
    let dir_name = run_dir.file_name().unwrap_or_default();
    let started = metadata
        .and_then(|m| m.started_at.as_deref())
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

/// Longest string kept from metadata.json in a ledger line (and so in the index).
const MAX_FIELD: usize = 200;
/// Most finding ids kept in a ledger line (the catalogue has about 40).
const MAX_FINDINGS: usize = 64;

fn bounded(s: &str) -> String {
    match truncate(s, MAX_FIELD) {
        cut if cut.len() < s.len() => format!("{cut}…"),
        whole => whole.to_string(),
    }
}

/// One ledger line: what is needed to compare runs over time. Values from metadata.json are
/// bounded: the run directory is input, the ledger is committed.
fn ledger_line(
    stamp: &str,
    meta: Option<&RunRecord>,
    serial: Option<&str>,
    targets: &[Target],
    docs: &Utf8Path,
    redactions: usize,
) -> Value {
    let default = RunRecord::default();
    let m = meta.unwrap_or(&default);
    let analysis = serial.map(crate::analyze::analyze_clean);
    // Finding ids: vm-test's (they include harness-only ones), else what the serial log shows.
    let mut findings: Vec<String> = Vec::new();
    if let Some(v) = &m.verdict {
        findings.push(bounded(&v.finding));
    }
    if let Some(list) = &m.findings {
        for id in list.iter().map(|f| bounded(&f.id)) {
            if findings.len() == MAX_FINDINGS {
                break;
            }
            if !findings.contains(&id) {
                findings.push(id);
            }
        }
    } else if let Some(a) = &analysis {
        for f in &a.findings {
            if !findings.iter().any(|id| id == f.id) {
                findings.push(f.id.to_string());
            }
        }
    }
    let mut phases = serde_json::Map::new();
    for p in m.phases.iter().filter(|p| p.status != PhaseStatus::NotReached) {
        phases.insert(p.phase.name().to_string(), json!({"seconds": p.seconds, "status": p.status.name()}));
    }
    let outcome = match m.outcome {
        Some(RunOutcome::Running) => "unfinished",
        Some(o) => o.name(),
        None => "unknown",
    };
    let rel = |suffix: &str| {
        targets
            .iter()
            .find(|t| t.path.as_str().ends_with(suffix))
            .and_then(|t| t.path.strip_prefix(docs).ok())
            .map(|p| p.as_str().to_string())
    };
    // Without metadata.json nothing is known of the image or QEMU: nulls, not empty strings.
    let known = |f: &dyn Fn(&RunRecord) -> &str| meta.map(|m| bounded(f(m)));
    let image = &m.image;
    let bounded_opt = |v: &Option<String>| v.as_deref().map(bounded);
    json!({
        "schema": 1,
        "run": stamp,
        "timestamp": m.started_at.as_deref().map(bounded).unwrap_or_else(|| stamp_to_rfc3339(stamp)),
        "finished_at": bounded_opt(&m.finished_at),
        "outcome": outcome,
        "exit_code": m.exit_code,
        "verdict": m.verdict.as_ref().map(|v| bounded(&v.finding)),
        "verdict_phase": m.verdict.as_ref().map(|v| v.phase.name()),
        "findings": findings,
        "findings_source": if m.findings.is_some() { "metadata" } else { "serial" },
        "furthest_phase": analysis.as_ref().map(|a| a.phase.name()),
        "phases": phases,
        "total_seconds": m.total_seconds,
        "iso": {
            "path": known(&|m| &m.image.path), "size_bytes": meta.map(|_| image.size_bytes),
            "source": known(&|m| &m.image.source), "fault": bounded_opt(&image.fault),
            "store_path": bounded_opt(&image.store_path), "nar_hash": bounded_opt(&image.nar_hash),
        },
        "accel": known(&|m| &m.qemu.accel),
        "qemu_version": known(&|m| &m.qemu.version),
        "checks": {
            "pass": count_checks(m, CheckStatus::Pass), "fail": count_checks(m, CheckStatus::Fail),
            "skip": count_checks(m, CheckStatus::Skip),
        },
        "files": {
            "serial": rel("-serial.log"),
            "transcript": rel("-boot-image-vm-test.log"),
            "report": rel("-boot-image-vm-test.md"),
        },
        "redactions": redactions,
    })
}

fn count_checks(m: &RunRecord, status: CheckStatus) -> usize {
    m.checks.iter().filter(|c| c.status == status).count()
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

/// Longest text shown in a cell of the index.
const MAX_CELL: usize = 80;

/// A file name that can go in a code span as it is.
static PLAIN_NAME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[A-Za-z0-9._+-]{1,80}$").expect("compiles"));
/// A link target archive-logs writes: `boot-logs/<UTC>-serial.log`, `test-reports/<UTC>-….md`.
static SAFE_HREF: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(boot-logs|test-reports)/[A-Za-z0-9][A-Za-z0-9._-]*$").expect("compiles"));

/// A value as the text of one Markdown table cell, whatever it holds: one line (control
/// characters become spaces), no cell border (`|`), no HTML (`<`, `>`, `&` as entities), no
/// emphasis, code or link syntax (backslash-escaped), and at most `MAX_CELL` bytes.
fn cell(value: &str) -> String {
    let cut = truncate(value, MAX_CELL);
    let mut out = String::with_capacity(cut.len() + 8);
    for c in cut.chars() {
        match c {
            c if c.is_control() => out.push(' '),
            '<' => out += "&lt;",
            '>' => out += "&gt;",
            '&' => out += "&amp;",
            '|' | '\\' | '`' | '*' | '_' | '[' | ']' | '~' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    if cut.len() < value.len() {
        out.push('…');
    }
    out
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
        let text = |v: &Value| v.as_str().map_or("—".to_string(), cell);
        let findings: Vec<String> =
            r["findings"].as_array().into_iter().flatten().filter_map(Value::as_str).map(cell).collect();
        let image = match (r["iso"]["source"].as_str(), r["iso"]["fault"].as_str(), r["iso"]["path"].as_str()) {
            (Some(src), Some(fault), _) => format!("{} ({})", cell(src), cell(fault)),
            (Some(src), None, Some(path)) => match Utf8Path::new(path).file_name().unwrap_or(path) {
                name if PLAIN_NAME.is_match(name) => format!("{} `{name}`", cell(src)),
                name => format!("{} {}", cell(src), cell(name)),
            },
            (Some(src), None, None) => cell(src),
            _ => "—".to_string(),
        };
        let mut links = Vec::new();
        for (key, label) in [("serial", "serial"), ("transcript", "transcript"), ("report", "report")] {
            // Only the names archive-logs gives (a hand-edited ledger could hold anything).
            let Some(p) = r["files"][key].as_str().filter(|p| SAFE_HREF.is_match(p)) else { continue };
            let href = p.strip_prefix("test-reports/").map_or(format!("../{p}"), String::from);
            links.push(format!("[{label}]({href})"));
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
    use redact::KEY_BLOCK_MAX_LINES;

    const BLOCK: &str = "[archive-logs: private key block redacted: ";
    const TOKEN_LINE: &str = "[archive-logs: line redacted, it looked like a secret token]";

    #[test]
    fn redacts_key_blocks_and_tokens_but_not_ordinary_lines() {
        let text = "a\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nAAAA==\n-----END OPENSSH PRIVATE KEY-----\n\
                    GITHUB_TOKEN=ghp_abcdefghijklmnopqrstuvwxyz0123456789\n[sudo] password for nixos: \n\
                    PasswordAuthentication no\naccess-tokens = github.com=abcdefgh12345\nz";
        let mut r = Redactions::default();
        let out = redact(text, &mut r);
        assert_eq!((r.key_blocks, r.key_lines, r.token_lines), (1, 4, 2));
        assert!(!out.contains("b3Blbn") && !out.contains("ghp_") && !out.contains("abcdefgh12345"));
        assert!(out.starts_with("a\n[archive-logs: private key block redacted: 4 line(s), BEGIN to END]\n"), "{out}");
        assert!(out.contains("[sudo] password for nixos: \nPasswordAuthentication no\n"));
        assert!(out.ends_with("\nz"));
        assert_eq!(r.describe(), "3 span(s): 1 private key block(s) (4 lines) and 2 token-looking line(s)");
    }

    #[test]
    fn console_lines_inside_a_key_block_do_not_end_it() {
        let text = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAsecretAAAAAAAAAAAAAAAAAAA\n\
                    [   12.345678] random: crng init done\n\n[  OK  ] Started Journal Service.\n\
                    SECRETTWOBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB\n-----END RSA PRIVATE KEY-----\nafter\n";
        let mut r = Redactions::default();
        let out = redact(text, &mut r);
        assert_eq!(out, "[archive-logs: private key block redacted: 7 line(s), BEGIN to END]\nafter\n");
    }

    #[test]
    fn prefixed_key_blocks_are_redacted() {
        // A heredoc typed at the shell, vm-test's sed-framed output, a transcript's indent.
        for prefix in ["> ", "q1x1|", "    ", "[root@nixos:~]# echo '"] {
            let text = format!(
                "before\n{prefix}-----BEGIN OPENSSH PRIVATE KEY-----\n{prefix}b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE\n\
                 {prefix}SECRETSECRETSECRETSECRET\n{prefix}-----END OPENSSH PRIVATE KEY-----\nafter\n"
            );
            let out = redact(&text, &mut Redactions::default());
            assert_eq!(out, format!("before\n{BLOCK}4 line(s), BEGIN to END]\nafter\n"), "{prefix:?}");
        }
    }

    #[test]
    fn a_key_block_without_end_is_redacted_through_its_last_key_line_within_the_bound() {
        // The output was cut: the key material (prefixed, with a console line inside and a
        // short last line) goes, the shell session after it stays.
        let text = "> -----BEGIN EC PRIVATE KEY-----\n> MHcCAQEEIBsecretsecretsecretsecretAAAA\n\
                    [    5.000000] a kernel line\n> MoreSecretMaterialMoreSecretMaterial\n> Zw==\n\
                    [root@nixos:~]# id -u\n0\n[root@nixos:~]# \n";
        let mut r = Redactions::default();
        let out = redact(text, &mut r);
        assert!(out.starts_with(BLOCK) && out.contains("5 line(s); no END within 512 lines"), "{out}");
        assert!(out.ends_with("]\n[root@nixos:~]# id -u\n0\n[root@nixos:~]# \n"), "{out}");
        assert_eq!(r.key_lines, 5);

        // A BEGIN whose END never comes: key material far past the bound is not followed.
        let mut text = "-----BEGIN PRIVATE KEY-----\n".to_string();
        text += &"MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n".repeat(2 * KEY_BLOCK_MAX_LINES);
        let mut r = Redactions::default();
        redact(&text, &mut r);
        assert_eq!(r.key_lines, KEY_BLOCK_MAX_LINES);
    }

    #[test]
    fn putty_and_single_line_keys() {
        let ppk = "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nPublic-Lines: 2\nAAAAC3NzaC1lZDI1NTE5AAAAIPublicPart\n\
                   Private-Lines: 1\nAAAAIFprivateprivateprivateprivateprivate\nPrivate-MAC: 0123456789abcdef\nafter\n";
        let out = redact(ppk, &mut Redactions::default());
        assert!(
            !out.contains("privateprivate") && out.contains("Public-Lines: 2\n") && out.ends_with("END]\nafter\n"),
            "{out}"
        );
        let json = r#"{"key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANsecret\n-----END PRIVATE KEY-----\n"}"#;
        assert_eq!(redact(json, &mut Redactions::default()), format!("{BLOCK}1 line(s), BEGIN to END]"));
    }

    /// Credential-looking lines: each is redacted whole.
    const SECRETS: &[&str] = &[
        "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "export AWS_SECRET_ACCESS_KEY=\"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\"",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "DB_PASSWORD=hunter22",
        "NPM_TOKEN=npm_0123456789abcdefghijklmnopqrstuvwxyz",
        "CI_JOB_TOKEN=glcbt-64_abcdefghijklmnopqrst",
        "GITHUB_TOKEN=ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "//registry.npmjs.org/:_authToken=npm_0123456789abcdefghijklmnopqrstuvwxyz",
        "access-tokens = github.com=ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "password: s3cr3t-passw0rd",
        "  db_password: \"s3cr3t-passw0rd\"",
        r#"{"client_secret": "abcdef0123456789"}"#,
        "api_key: AIzaSyA-abcdefghijklmnopqrstuvwxyz12345",
        "PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=",
        "mysql --password=Sup3rS3cret -u app",
        "vault login --token s.abcdefghijklmnop",
        "curl -H 'Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc'",
        "Authorization: token ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "git clone https://oauth2:glpat-abcdefghijklmnopqrst@gitlab.com/x/y.git",
        "DATABASE_URL=postgres://app:Sup3rS3cret@db:5432/app",
        "postgres://app:Sup3rS3cret@db:5432/app",
        "machine github.com login bot password abcdef123456",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "key id AKIAIOSFODNN7EXAMPLE",
        "OPENAI_API_KEY is sk-proj-abcdefghijklmnopqrstuvwx",
        "xoxb-123456789012-abcdefghij",
        "stripe: sk_live_abcdefghijklmnop1234",
        "hf_abcdefghijklmnopqrstuvwxyzABCDEFGH",
        "AGE-SECRET-KEY-1QQPQQPQQPQQPQQPQQPQQPQQPQQPQQPQQPQQPQQPQQPQQPQQPQQPQQPQQPQQ",
        "pypi-AgEIcHlwaS5vcmcCJGFiY2RlZmdoLWlqa2wtbW5vcC1xcnN0LXV2d3h5ejAxMjM0NQ",
    ];

    /// Ordinary boot, shell and harness lines that mention passwords, keys or tokens: kept.
    const NOT_SECRETS: &[&str] = &[
        "[sudo] password for nixos: ",
        "PasswordAuthentication no",
        "passwd: password updated successfully",
        "Sorry, try again.",
        "su: Authentication failure",
        "Enter passphrase for key '/root/.ssh/id_ed25519':",
        "[  OK  ] Started Dispatch Password Requests to Console Directory Watch.",
        "[  OK  ] Started systemd-ask-password-console.path.",
        "systemd-ask-password-console.service: Deactivated successfully.",
        "Failed to set up credentials: Protocol error",
        "[    0.000000] Command line: init=/init console=tty0 console=ttyS0,115200",
        "[    1.234567] Key type id_resolver registered",
        "[    2.100000] integrity: Loaded X.509 cert 'Debian Secure Boot CA: 6ccece7e4c6c0d1f6149f3dd27dfcc5cbb419ea1'",
        "PWD=/home/nixos",
        "OLDPWD=/root",
        "tokens: 42",
        "pre-nixos: applied: created VG main with LV slash on /dev/vda",
        "/nix/store/0c0kbz4r2xh5ylw6phq5cmwma0ccp5rz-nixos-system-nixos-24.11",
        "\"nar_hash\": \"sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\"",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGhvc3RrZXlob3N0a2V5aG9zdGtleWhvc3Q root@nixos",
        "-----BEGIN PUBLIC KEY-----",
        "-----BEGIN CERTIFICATE-----",
        "LAN IPv4 address: 10.0.2.15",
        "[root@nixos:~]# id -u",
        "http://[::1]:8080/",
        "ssh://git@github.com/x/y.git",
        "docker login --password-stdin < token.txt",
        "STATE=applied",
        "[    3.000000] /dev/disk-by-uuid task-0123456789abcdefghijklmnop",
    ];

    #[test]
    fn credential_corpus() {
        for line in SECRETS {
            let mut r = Redactions::default();
            let out = redact(&format!("{line}\n"), &mut r);
            assert_eq!(out, format!("{TOKEN_LINE}\n"), "not redacted: {line}");
        }
        for line in NOT_SECRETS {
            let text = format!("{line}\n");
            assert_eq!(redact(&text, &mut Redactions::default()), text, "redacted but harmless: {line}");
        }
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
        let m = RunRecord { started_at: Some("2026-11-25T18:18:17Z".into()), ..Default::default() };
        assert_eq!(run_stamp(Utf8Path::new("/x/whatever"), Some(&m)).unwrap(), "2026-11-25T18-18-17Z");
        assert_eq!(run_stamp(Utf8Path::new("/x/2026-11-25T18-18-17Z-1"), Some(&m)).unwrap(), "2026-11-25T18-18-17Z-1");
        assert_eq!(run_stamp(Utf8Path::new("/x/2026-11-25T18-18-17Z"), None).unwrap(), "2026-11-25T18-18-17Z");
        assert!(run_stamp(Utf8Path::new("/x/run"), None).is_err());
        assert_eq!(stamp_to_rfc3339("2026-11-25T18-18-17Z-1"), "2026-11-25T18:18:17Z");
    }
}
