//! `cargo xtask build-image` — `nix build <flake>#bootImage` with live progress, the resulting
//! ISO resolved and recorded.
//!
//! Runs `nix build --json --no-link --log-format internal-json` (works from nix 2.8 on) and reads
//! the JSON activity stream on stderr (`events`) for progress and failure reports. `-L` is never
//! passed to nix: in 2.8 it switches back to the plain logger and the stream disappears; we print
//! the build log lines from the stream instead. Every run gets a directory
//! `target/build-image/<UTC>/` with `build.log` (readable), `nix-events.jsonl` (raw stream),
//! `metadata.json`; a success is also recorded in `target/build-image/last.json`, which
//! `vm-test --no-build` reads through `last_build()`.

mod display;
mod events;
mod output;

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use xshell::{cmd, Cmd, Shell};

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use crate::exit::{self, Exit};
use crate::{nix, process, project, ui};
use events::{drv_name, Counts, Tracker};

/// The image a successful build produced.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BuiltImage {
    pub iso: Utf8PathBuf,
    pub store_path: String,
    pub nar_hash: Option<String>,
    pub size_bytes: u64,
    pub build_seconds: f64,
}

/// How to build; also the verb's flags. `Default` builds this repository's `bootImage`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct BuildOptions {
    /// Flake to build: a directory (plain or inside a git checkout) or a flake reference
    /// [default: this repository]
    #[arg(long, value_name = "DIR|REF")]
    pub flake: Option<String>,
    /// Flake attribute to build [default: bootImage]
    #[arg(long, value_name = "NAME")]
    pub attr: Option<String>,
    /// Print every build log line (like nix -L; taken from the JSON stream, which -L would disable)
    #[arg(short = 'L', long = "print-build-logs")]
    pub print_build_logs: bool,
    /// Remote builders, passed to nix (e.g. 'ssh://builder x86_64-linux')
    #[arg(long, value_name = "SPEC")]
    pub builders: Option<String>,
    /// Maximum parallel local build jobs, passed to nix ('0' builds only remotely)
    #[arg(short = 'j', long, value_name = "N")]
    pub max_jobs: Option<String>,
    /// Set a nix option, repeatable (e.g. --option substituters 'https://cache.example')
    #[arg(long, num_args = 2, value_names = ["NAME", "VALUE"])]
    pub option: Vec<String>,
    /// Directory for run directories and last.json [default: target/build-image]
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<Utf8PathBuf>,
    /// Further arguments for `nix build`, after `--`
    #[arg(last = true, value_name = "NIX ARGS")]
    pub nix_args: Vec<String>,
}

pub type Args = BuildOptions;

const DEFAULT_ATTR: &str = "bootImage";

pub fn run(args: Args) -> Result<u8> {
    let image = build(&args)?;
    let fancy = ui::fancy_stdout();
    ui::print(&format!(
        "{}\n  iso          {}\n  store path   {}\n  size         {} ({} bytes)\n  narHash      {}\n  build time   {:.1}s\n",
        ui::paint(fancy, ui::Tone::Good, "image built"),
        image.iso,
        image.store_path,
        ui::human_bytes(image.size_bytes),
        image.size_bytes,
        image.nar_hash.as_deref().unwrap_or("unknown"),
        image.build_seconds
    ))?;
    Ok(exit::OK)
}

/// Builds `.#bootImage` of this repository (or what `opts` says) and records it in
/// `target/build-image/last.json`.
pub fn build_default(opts: &BuildOptions) -> Result<BuiltImage> {
    build(opts)
}

/// The last successful build recorded in `target/build-image/last.json`; None when there is none.
/// An error when it is recorded but its ISO is gone (garbage-collected).
pub fn last_build() -> Result<Option<BuiltImage>> {
    last_build_in(&default_out_dir())
}

fn last_build_in(out_dir: &Utf8Path) -> Result<Option<BuiltImage>> {
    let path = out_dir.join("last.json");
    let text = match fs_err::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let image: BuiltImage = serde_json::from_str(&text).with_context(|| format!("reading {path}"))?;
    if !image.iso.is_file() {
        return Err(exit::infra(format!(
            "the last built ISO {} (recorded in {path}) no longer exists, probably garbage-collected; \
             next step: run `cargo xtask build-image`",
            image.iso
        )));
    }
    Ok(Some(image))
}

fn default_out_dir() -> Utf8PathBuf {
    project::target_dir().join("build-image")
}

/// Everything one run knows, written to `metadata.json` early and again at the end.
#[derive(Serialize)]
struct Metadata {
    schema: u32,
    tool: &'static str,
    started_at: String,
    finished_at: Option<String>,
    run_dir: Utf8PathBuf,
    flake: String,
    attr: String,
    nix: NixInfo,
    /// running | pass | fail | infra | interrupted
    outcome: &'static str,
    image: Option<BuiltImage>,
    drv_path: Option<String>,
    progress: Progress,
    failure: Option<Failure>,
    exit_code: Option<u8>,
    total_seconds: Option<f64>,
}

#[derive(Serialize)]
struct NixInfo {
    binary: Utf8PathBuf,
    on_path: bool,
    version: Option<String>,
    command: Vec<String>,
}

#[derive(Serialize, Default)]
struct Progress {
    builds: Counts,
    downloads: Counts,
    bytes_downloaded: u64,
    derivations_built: Vec<String>,
    phases: Vec<PhaseSeen>,
}

#[derive(Serialize)]
struct PhaseSeen {
    derivation: String,
    phase: String,
}

#[derive(Serialize, Clone)]
struct Failure {
    derivation: Option<String>,
    log_tail: Vec<String>,
    nix_log_command: Option<String>,
    nix_errors: Vec<String>,
}

impl Metadata {
    fn write(&self) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)?;
        project::write_atomic(&self.run_dir.join("metadata.json"), &json)
    }

    fn record_progress(&mut self, t: &Tracker) {
        self.progress = Progress {
            builds: t.builds,
            downloads: t.downloads,
            bytes_downloaded: t.bytes_downloaded,
            derivations_built: t.started.clone(),
            phases: t.phases.iter().map(|(d, p)| PhaseSeen { derivation: d.clone(), phase: p.clone() }).collect(),
        };
    }
}

fn build(opts: &BuildOptions) -> Result<BuiltImage> {
    let nix = nix::locate().ok_or_else(nix::not_found)?;
    let flake = flake_ref(opts.flake.as_deref())?;
    let attr = opts.attr.clone().unwrap_or_else(|| DEFAULT_ATTR.to_string());
    let out_dir = opts.out_dir.clone().unwrap_or_else(default_out_dir);
    let started_at = jiff::Timestamp::now();
    let run_dir = project::create_run_dir(&out_dir, started_at).map_err(|e| {
        exit::infra(format!("{e:#}; pass a writable --out-dir (or check the permissions of {out_dir})"))
    })?;
    let command = nix_build_command(&nix.path, &flake, &attr, opts);

    let mut meta = Metadata {
        schema: 1,
        tool: "cargo xtask build-image",
        started_at: started_at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        finished_at: None,
        run_dir: run_dir.clone(),
        flake: flake.clone(),
        attr: attr.clone(),
        nix: NixInfo { binary: nix.path.clone(), on_path: nix.on_path, version: nix::version(&nix.path).ok(), command },
        outcome: "running",
        image: None,
        drv_path: None,
        progress: Progress::default(),
        failure: None,
        exit_code: None,
        total_seconds: None,
    };
    meta.write()?;
    if !nix.on_path {
        eprintln!("build-image: nix is not on PATH; using {}", nix.path);
    }
    eprintln!("build-image: nix build {flake}#{attr} (run directory {run_dir})");

    let result = run_nix(&mut meta, opts);
    meta.finished_at = Some(jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    meta.total_seconds = Some(jiff::Timestamp::now().duration_since(started_at).as_secs_f64());
    match &result {
        Ok(image) => {
            meta.outcome = "pass";
            meta.exit_code = Some(exit::OK);
            meta.image = Some(image.clone());
            meta.write()?;
            let last = LastBuild { image: image.clone(), built_at: meta.finished_at.clone(), run_dir, flake, attr };
            project::write_atomic(&out_dir.join("last.json"), &serde_json::to_vec_pretty(&last)?)?;
        }
        Err(err) => {
            let code = err.downcast_ref::<Exit>().map_or(exit::FAILED, |e| e.code);
            meta.outcome = match code {
                exit::INTERRUPTED => "interrupted",
                exit::INFRA => "infra",
                _ => "fail",
            };
            meta.exit_code = Some(code);
            meta.write()?;
        }
    }
    result
}

/// `last.json`: the image plus where it came from (readers may deserialize just `BuiltImage`).
#[derive(Serialize)]
struct LastBuild {
    #[serde(flatten)]
    image: BuiltImage,
    built_at: Option<String>,
    run_dir: Utf8PathBuf,
    flake: String,
    attr: String,
}

fn run_nix(meta: &mut Metadata, opts: &BuildOptions) -> Result<BuiltImage> {
    let run_dir = meta.run_dir.clone();
    let sh = process::shell()?;
    let (program, args) = (&meta.nix.command[0], &meta.nix.command[1..]);
    let cmd = with_user_env(cmd!(sh, "{program} {args...}"));

    // SIGINT/SIGTERM while nix runs: the wait loop passes SIGINT on to nix (a terminal's
    // Ctrl-C reaches nix directly too), lets it stop, records the run, exits 130.
    let interrupt = crate::interrupt::Guard::install();
    let started = Instant::now();
    let outcome = drive(cmd, meta, opts, &run_dir);
    drop(interrupt);
    let (status, stdout, tracker) = outcome?;
    let build_seconds = started.elapsed().as_secs_f64();
    meta.record_progress(&tracker);
    eprintln!("build-image: nix ran {build_seconds:.1}s: {}", tracker.status());
    fs_err::write(run_dir.join("nix-stdout.json"), &stdout)?;

    if crate::interrupt::interrupted() {
        return Err(Exit { code: exit::INTERRUPTED, message: "interrupted; nix build stopped".into() }.into());
    }
    if !status.success() {
        return Err(failure_error(meta, &tracker, status, build_seconds));
    }

    let (store_path, drv_path) = output::parse_build_json(&stdout).map_err(|e| exit::infra(format!("{e:#}")))?;
    meta.drv_path = drv_path;
    let iso = output::find_iso(Utf8Path::new(&store_path))?;
    let size_bytes = fs_err::metadata(&iso)?.len();
    let nar_hash = nar_hash(&sh, &meta.nix.binary, &store_path);
    if nar_hash.is_none() {
        eprintln!("build-image: warning: `nix path-info --json {store_path}` gave no narHash");
    }
    Ok(BuiltImage { iso, store_path, nar_hash, size_bytes, build_seconds })
}

/// Runs nix, feeding its stderr through the tracker and display and into the log files.
/// Waits on a channel with a timeout (no spinning); returns exit status, stdout, tracker.
fn drive(
    cmd: Cmd<'_>,
    meta: &Metadata,
    opts: &BuildOptions,
    run_dir: &Utf8Path,
) -> Result<(std::process::ExitStatus, String, Tracker)> {
    let mut child =
        process::spawn_piped(cmd).map_err(|e| exit::infra(format!("cannot run {}: {e}", meta.nix.binary)))?;
    let stderr = child.stderr.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).split(b'\n') {
            let Ok(line) = line else { break };
            if tx.send(String::from_utf8_lossy(&line).into_owned()).is_err() {
                break;
            }
        }
    });
    let stdout_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });

    let mut raw = std::io::BufWriter::new(fs_err::File::create(run_dir.join("nix-events.jsonl"))?);
    let mut log = std::io::BufWriter::new(fs_err::File::create(run_dir.join("build.log"))?);
    let mut tracker = Tracker::new();
    let mut display = display::Display::new(ui::fancy_stderr(), opts.print_build_logs);
    writeln!(log, "$ {}", ui::shell_join(&meta.nix.command))?;
    let mut forwarded = false;
    loop {
        if !forwarded && crate::interrupt::interrupted() {
            forwarded = true;
            display.line("build-image: interrupted; stopping nix…");
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        }
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => {
                writeln!(raw, "{line}")?;
                for update in tracker.feed(&line) {
                    write_log_line(&mut log, &update)?;
                    display.update(&update, &tracker);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => display.tick(&tracker),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    display.finish();
    raw.flush()?;
    log.flush()?;
    let _ = reader.join();
    let stdout = stdout_reader.join().unwrap_or_default();
    let status = child.wait()?;
    Ok((status, stdout, tracker))
}

fn write_log_line(log: &mut impl Write, update: &events::Update) -> std::io::Result<()> {
    use events::Update::*;
    match update {
        BuildStarted { drv, machine } => {
            writeln!(log, "=== building {drv}{}", machine.as_deref().map(|m| format!(" on {m}")).unwrap_or_default())
        }
        BuildStopped { drv, failed } => writeln!(log, "=== {} {drv}", if *failed { "FAILED" } else { "finished" }),
        Phase { drv, phase } => writeln!(log, "=== {}: {phase}", drv_name(drv)),
        LogLine { drv, line } => writeln!(log, "{}> {line}", drv_name(drv)),
        Substituting { path, from } => writeln!(log, "=== fetching {path} from {from}"),
        Message { text, .. } => writeln!(log, "{text}"),
        Progress => Ok(()),
    }
}

/// The error for a failed `nix build`: failing derivation, its last log lines, how to see the
/// whole log; or, when nix stopped before or outside the builds, nix's own error lines and the
/// warnings that go with them. Known causes (`nix::recognise`) add a hint each. Exit 1, or 3
/// when the cause is the machine's set-up or network, not the flake.
fn failure_error(meta: &mut Metadata, t: &Tracker, status: std::process::ExitStatus, secs: f64) -> anyhow::Error {
    let drv = t.failed_drv();
    let features = format!("{} '{}'", nix::FEATURE_FLAGS[0], nix::FEATURE_FLAGS[1]);
    let log_cmd = drv.as_ref().map(|d| format!("{} {features} log {d}", meta.nix.binary));
    let tail = drv.as_ref().map(|d| t.tail(d)).unwrap_or_default();
    let said = nix_said(&t.messages);
    let mut msg = format!("nix build failed ({status}) after {secs:.1}s\n");
    match &drv {
        Some(d) => {
            msg += &format!("failing derivation: {d}\n");
            if tail.is_empty() {
                msg += "(it printed no log lines)\n";
            } else {
                msg += &format!("last {} log lines of {}:\n", tail.len(), drv_name(d));
                for l in &tail {
                    msg += &format!("  | {l}\n");
                }
            }
            msg += &format!("whole log: {}\n", log_cmd.as_deref().unwrap_or_default());
        }
        None => {
            msg += "no derivation failed: nix stopped before or outside the builds (evaluation, fetching, set-up)\n"
        }
    }
    if said.is_empty() {
        // Never an empty block: show what nix printed last instead.
        let last: Vec<&String> = t.plain_lines.iter().rev().take(NIX_SAID_MAX).collect();
        if last.is_empty() {
            msg += "nix printed no error line (see build.log)\n";
        } else {
            msg += "nix printed no error line; its last lines:\n";
            for l in last.into_iter().rev() {
                msg += &format!("  {l}\n");
            }
        }
    } else {
        msg += "nix said:\n";
        for l in &said {
            msg += &format!("  {l}\n");
        }
    }
    msg += &format!("run directory: {} (build.log has every line)", meta.run_dir);
    meta.failure =
        Some(Failure { derivation: drv.clone(), log_tail: tail, nix_log_command: log_cmd, nix_errors: said.clone() });
    let git_flake = !meta.flake.contains(':');
    let problems: Vec<nix::Problem> = nix::recognise(t.messages.iter().map(String::as_str))
        .into_iter()
        .filter(|p| git_flake || !matches!(p, nix::Problem::SourceFileMissing { .. }))
        .collect();
    for p in &problems {
        msg += &format!("\ncause: {}\nfix:   {}", p.cause(), p.fix());
    }
    let infrastructure = drv.is_none() && problems.iter().any(nix::Problem::is_infrastructure);
    let code = if infrastructure { exit::INFRA } else { exit::FAILED };
    Exit { code, message: msg }.into()
}

/// At most this many of nix's lines in a failure message (build.log has all of them).
const NIX_SAID_MAX: usize = 12;

/// nix's error lines and the warnings that go with them, each once: a warning that repeats an
/// error (nix 2.8 prints both) and the retry counter of a repeated warning are dropped.
fn nix_said(messages: &[String]) -> Vec<String> {
    let retry = regex::Regex::new(r"; retrying in \d+ ms$").expect("valid regex");
    let lines: Vec<String> = messages
        .iter()
        .flat_map(|m| m.lines())
        .map(|l| retry.replace(l.trim_end(), "").into_owned())
        .filter(|l| !l.trim().is_empty())
        .collect();
    let errors: Vec<&str> = lines.iter().filter_map(|l| l.trim_start().strip_prefix("error:")).map(str::trim).collect();
    let mut said: Vec<String> = Vec::new();
    for l in &lines {
        let repeats_an_error = l.trim_start().strip_prefix("warning:").map(|w| w.trim()).is_some_and(|w| {
            errors.contains(&w) || w.strip_prefix("error:").is_some_and(|w| errors.contains(&w.trim()))
        });
        if !repeats_an_error && !said.contains(l) {
            said.push(l.clone());
        }
    }
    // Keep the end (the error) when there are too many lines.
    let skip = said.len().saturating_sub(NIX_SAID_MAX);
    said.split_off(skip)
}

fn nix_build_command(nix: &Utf8Path, flake: &str, attr: &str, opts: &BuildOptions) -> Vec<String> {
    let mut c: Vec<String> = vec![nix.to_string()];
    c.extend(nix::FEATURE_FLAGS.iter().map(|s| s.to_string()));
    c.extend(["build".into(), format!("{flake}#{attr}"), "--json".into(), "--no-link".into()]);
    c.extend(["--log-format".into(), "internal-json".into()]);
    if let Some(b) = &opts.builders {
        c.extend(["--builders".into(), b.clone()]);
    }
    if let Some(j) = &opts.max_jobs {
        c.extend(["--max-jobs".into(), j.clone()]);
    }
    for pair in opts.option.chunks(2) {
        c.push("--option".into());
        c.extend(pair.iter().cloned());
    }
    // -L would switch nix 2.8 back to its plain logger; `print_build_logs` does its job.
    c.extend(opts.nix_args.iter().filter(|a| !matches!(a.as_str(), "-L" | "--print-build-logs")).cloned());
    c
}

/// A directory becomes `path:<abs>` unless it is inside a git checkout (then nix reads it as
/// `git+file`, which copies only tracked files — not `target/`). Anything with a `:` is
/// already a flake reference and passes through.
fn flake_ref(flake: Option<&str>) -> Result<String> {
    let dir = match flake {
        None => project::root(),
        Some(f) if f.contains(':') => return Ok(f.to_string()),
        Some(f) => {
            let p = Utf8Path::new(f);
            let abs = p.canonicalize_utf8().map_err(|e| exit::usage(format!("--flake {f}: {e}")))?;
            if !abs.join("flake.nix").is_file() {
                return Err(exit::usage(format!("--flake {f}: no flake.nix in {abs}")));
            }
            abs
        }
    };
    let in_git = dir.ancestors().any(|a| a.join(".git").exists());
    Ok(if in_git { dir.to_string() } else { format!("path:{dir}") })
}

/// nix's single-user profile and some nix code paths need USER and HOME; a bare `env -i` or a
/// container shell may not have them.
fn with_user_env(mut cmd: Cmd<'_>) -> Cmd<'_> {
    let missing = |k: &str| std::env::var_os(k).is_none_or(|v| v.is_empty());
    if !missing("USER") && !missing("HOME") {
        return cmd;
    }
    // SAFETY: getpwuid returns a pointer to static storage or null; we copy out at once.
    let (name, home) = unsafe {
        let pw = libc::getpwuid(libc::getuid());
        if pw.is_null() {
            return cmd;
        }
        let s = |p: *const libc::c_char| std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned();
        (s((*pw).pw_name), s((*pw).pw_dir))
    };
    if missing("USER") {
        cmd = cmd.env("USER", name);
    }
    if missing("HOME") {
        cmd = cmd.env("HOME", home);
    }
    cmd
}

/// The narHash `nix path-info` reports; `None` when it says nothing usable (a record, not a gate).
fn nar_hash(sh: &Shell, nix: &Utf8Path, store_path: &str) -> Option<String> {
    let features = nix::FEATURE_FLAGS;
    let out =
        with_user_env(cmd!(sh, "{nix} {features...} path-info --json {store_path}")).ignore_status().output().ok()?;
    output::parse_nar_hash(&String::from_utf8_lossy(&out.stdout), store_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_never_passes_dash_l_and_keeps_pass_through_order() {
        let opts = BuildOptions {
            builders: Some("ssh://b x86_64-linux".into()),
            max_jobs: Some("0".into()),
            option: vec!["substituters".into(), "".into(), "cores".into(), "2".into()],
            nix_args: vec!["-L".into(), "--keep-failed".into(), "--print-build-logs".into()],
            ..Default::default()
        };
        let c = nix_build_command(Utf8Path::new("/usr/bin/nix"), "path:/f", "bootImage", &opts);
        let line = ui::shell_join(&c);
        assert_eq!(
            line,
            "/usr/bin/nix --extra-experimental-features 'nix-command flakes' build path:/f#bootImage --json \
             --no-link --log-format internal-json --builders 'ssh://b x86_64-linux' --max-jobs 0 \
             --option substituters '' --option cores 2 --keep-failed"
        );
    }

    #[test]
    fn nix_said_keeps_errors_and_other_warnings_once() {
        let m: Vec<String> = [
            "warning: error: unable to download 'https://cache.nixos.org/nix-cache-info': Couldn't resolve host name (6); retrying in 283 ms",
            "warning: error: unable to download 'https://cache.nixos.org/nix-cache-info': Couldn't resolve host name (6); retrying in 647 ms",
            "warning: the group 'nixbld' specified in 'build-users-group' does not exist",
            "error: the group 'nixbld' specified in 'build-users-group' does not exist",
            "",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            nix_said(&m),
            [
                "warning: error: unable to download 'https://cache.nixos.org/nix-cache-info': Couldn't resolve host name (6)",
                "error: the group 'nixbld' specified in 'build-users-group' does not exist",
            ]
        );
        let many: Vec<String> = (0..30).map(|i| format!("warning: w{i}")).chain(["error: last".into()]).collect();
        let said = nix_said(&many);
        assert_eq!((said.len(), said.last().map(String::as_str)), (NIX_SAID_MAX, Some("error: last")));
    }

    #[test]
    fn flake_refs() {
        assert_eq!(flake_ref(Some("github:NixOS/nixpkgs")).unwrap(), "github:NixOS/nixpkgs");
        let dir = tempfile::tempdir().unwrap();
        let d = Utf8Path::from_path(dir.path()).unwrap().canonicalize_utf8().unwrap();
        let err = flake_ref(Some(d.as_str())).unwrap_err();
        assert_eq!(err.downcast_ref::<Exit>().unwrap().code, exit::USAGE);
        fs_err::write(d.join("flake.nix"), "{}").unwrap();
        assert_eq!(flake_ref(Some(d.as_str())).unwrap(), format!("path:{d}"));
        // This repository is a git checkout: nix reads it as git+file (tracked files only).
        assert_eq!(flake_ref(None).unwrap(), project::root().to_string());
    }

    #[test]
    fn last_build_none_then_recorded_then_gone() {
        let dir = tempfile::tempdir().unwrap();
        let d = Utf8Path::from_path(dir.path()).unwrap();
        assert_eq!(last_build_in(d).unwrap(), None);
        let iso = d.join("x.iso");
        fs_err::write(&iso, "iso").unwrap();
        let image = BuiltImage {
            iso: iso.clone(),
            store_path: "/nix/store/x".into(),
            nar_hash: None,
            size_bytes: 3,
            build_seconds: 1.0,
        };
        let last =
            LastBuild { image: image.clone(), built_at: None, run_dir: d.into(), flake: "f".into(), attr: "a".into() };
        fs_err::write(d.join("last.json"), serde_json::to_vec(&last).unwrap()).unwrap();
        assert_eq!(last_build_in(d).unwrap(), Some(image));
        fs_err::remove_file(&iso).unwrap();
        let err = last_build_in(d).unwrap_err();
        assert!(err.to_string().contains("no longer exists"), "{err}");
    }
}
