//! `cargo xtask doctor` — is this machine ready to build and boot-test the image, and if not,
//! what exactly to run. Also the shell-profile repair (`--fix`, `--dry-run`, `--revert`).
//!
//! Checks run concurrently, one thread each, each isolated: a panic becomes a `fail` with the
//! panic message, a check that overruns its time box becomes a `fail` naming the time box
//! (its thread is abandoned; child processes are killed by their own deadlines).

mod build_probe;
mod checks;
pub mod profile;
mod profile_io;
mod venv;

use anyhow::Result;
use camino::Utf8PathBuf;
use serde::Serialize;
use std::panic::AssertUnwindSafe;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::exit;
use crate::ui::{self, Tone};

/// Check the environment (nix, shell profile, venv, QEMU/KVM, firmware, disk, fixture tools)
#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("action").args(["fix", "revert"]).multiple(false))]
pub struct Args {
    /// Print the results as one JSON array of {name, group, status, detail, fix, duration_ms}
    #[arg(long, conflicts_with = "action")]
    json: bool,
    /// Repair the login profile: put the USER guard before the sourcing of ~/.nix-profile/etc/profile.d/nix.sh
    #[arg(long)]
    fix: bool,
    /// Remove the block `--fix` added from the login profiles (lines you added inside it stay)
    #[arg(long)]
    revert: bool,
    /// With --fix or --revert: print the diff and change nothing
    #[arg(long, requires = "action")]
    dry_run: bool,
    /// Repository whose Python venv to check (default: this repository)
    #[arg(long, value_name = "DIR")]
    repo: Option<Utf8PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Skipped,
    Warn,
    Fail,
}

/// What a check found: a one-line cause, and for anything not ok the command that fixes it.
#[derive(Clone, Debug)]
pub struct Verdict {
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

impl Verdict {
    pub fn ok(detail: impl Into<String>) -> Self {
        Verdict { status: Status::Ok, detail: detail.into(), fix: None }
    }
    pub fn skipped(detail: impl Into<String>) -> Self {
        Verdict { status: Status::Skipped, detail: detail.into(), fix: None }
    }
    pub fn warn(detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Verdict { status: Status::Warn, detail: detail.into(), fix: Some(fix.into()) }
    }
    pub fn fail(detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Verdict { status: Status::Fail, detail: detail.into(), fix: Some(fix.into()) }
    }
}

/// What every check may look at.
pub struct Ctx {
    pub repo: Utf8PathBuf,
}

/// One check: where it is shown, how long it may take, what it runs.
#[derive(Clone, Copy)]
pub struct Spec {
    pub group: &'static str,
    pub name: &'static str,
    pub time_box: Duration,
    pub run: fn(&Ctx) -> Verdict,
}

/// One line of the report (also the JSON object).
#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    pub name: &'static str,
    pub group: &'static str,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
    pub duration_ms: u64,
}

pub fn run(args: Args) -> Result<u8> {
    if args.fix || args.revert {
        return repair(&args);
    }
    let repo = match &args.repo {
        Some(dir) if !dir.is_dir() => return Err(exit::usage(format!("--repo {dir}: no such directory"))),
        Some(dir) => dir.clone(),
        None => crate::project::root(),
    };
    let started = Instant::now();
    let results = run_checks(checks::all(), Arc::new(Ctx { repo }));
    let elapsed = started.elapsed();
    if args.json {
        ui::print(&(serde_json::to_string_pretty(&results)? + "\n"))?;
    } else {
        ui::print(&render(&results, elapsed, ui::fancy_stdout()))?;
    }
    Ok(if results.iter().any(|r| r.status == Status::Fail) { exit::FAILED } else { exit::OK })
}

/// `--fix` / `--revert` (with `--dry-run`): edits the login profile, prints what it did.
fn repair(args: &Args) -> Result<u8> {
    let home = profile_io::home()?;
    let outcomes = if args.fix {
        vec![profile_io::apply_fix(&home, args.dry_run)?]
    } else {
        profile_io::apply_revert(&home, args.dry_run)?
    };
    let mut out = String::new();
    if outcomes.is_empty() {
        out += &format!("nothing to revert: no login profile in {home} holds the nixos-boot-iso block\n");
    }
    for o in &outcomes {
        if args.dry_run && !o.diff.is_empty() {
            out += &o.diff;
        }
        out += &format!("{}\n", o.message);
    }
    if args.fix && !args.dry_run && outcomes.iter().any(|o| o.changed) {
        out += &format!("new login shells pick it up; in this shell run: {}\n", profile::MANUAL_RECOVERY);
        out += "undo with: cargo xtask doctor --revert\n";
    }
    ui::print(&out)?;
    Ok(exit::OK)
}

/// Runs every check on its own thread; results come back in `specs` order.
pub fn run_checks(specs: Vec<Spec>, ctx: Arc<Ctx>) -> Vec<CheckResult> {
    quiet_panics_in_checks();
    let started = Instant::now();
    let (tx, rx) = mpsc::channel::<(usize, Result<Verdict, String>, Duration)>();
    for (i, spec) in specs.iter().enumerate() {
        let (thread_tx, ctx, run) = (tx.clone(), ctx.clone(), spec.run);
        let spawned = std::thread::Builder::new().name(format!("{CHECK_THREAD}{}", spec.name)).spawn(move || {
            let t = Instant::now();
            let verdict = std::panic::catch_unwind(AssertUnwindSafe(|| run(&ctx))).map_err(|p| panic_text(&*p));
            let _ = thread_tx.send((i, verdict, t.elapsed()));
        });
        if let Err(e) = spawned {
            let _ = tx.send((i, Err(format!("could not start the check's thread: {e}")), Duration::ZERO));
        }
    }
    drop(tx);
    let mut slots: Vec<Option<CheckResult>> = vec![None; specs.len()];
    loop {
        let pending: Vec<usize> = (0..specs.len()).filter(|&i| slots[i].is_none()).collect();
        let Some(next_deadline) = pending.iter().map(|&i| started + specs[i].time_box).min() else { break };
        let wait = next_deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok((i, verdict, took)) => {
                let verdict = verdict.unwrap_or_else(|panic| {
                    Verdict::fail(
                        format!("the check crashed: {panic}"),
                        "report this as a doctor bug (other checks are unaffected)",
                    )
                });
                slots[i] = Some(result(&specs[i], verdict, took));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                for i in pending.into_iter().filter(|&i| started + specs[i].time_box <= now) {
                    let v = Verdict::fail(
                        format!(
                            "did not finish within its {:.1}s time box (hung); abandoned",
                            specs[i].time_box.as_secs_f64()
                        ),
                        format!("investigate what `{}` waits for; the other checks are unaffected", specs[i].name),
                    );
                    slots[i] = Some(result(&specs[i], v, specs[i].time_box));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    slots.into_iter().map(|s| s.expect("every check has a result")).collect()
}

fn result(spec: &Spec, v: Verdict, took: Duration) -> CheckResult {
    CheckResult {
        name: spec.name,
        group: spec.group,
        status: v.status,
        detail: v.detail,
        fix: if v.status == Status::Ok { None } else { v.fix },
        duration_ms: took.as_millis() as u64,
    }
}

const CHECK_THREAD: &str = "doctor-check:";

/// A panicking check is reported as a result; keep the default hook from also printing it.
fn quiet_panics_in_checks() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !std::thread::current().name().is_some_and(|n| n.starts_with(CHECK_THREAD)) {
                default(info);
            }
        }));
    });
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-text payload".into())
}

/// The human report: groups in order, one line per check, the fix under anything not ok.
pub fn render(results: &[CheckResult], elapsed: Duration, fancy: bool) -> String {
    let width = results.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    let mut group = "";
    for r in results {
        if r.group != group {
            group = r.group;
            out.push_str(&format!("{}\n", if fancy { format!("\x1b[1m{group}\x1b[0m") } else { group.to_string() }));
        }
        let (glyph, plain, tone) = match r.status {
            Status::Ok => ("✓", "[ok]  ", Tone::Good),
            Status::Warn => ("!", "[warn]", Tone::Warn),
            Status::Fail => ("✗", "[FAIL]", Tone::Bad),
            Status::Skipped => ("-", "[skip]", Tone::Dim),
        };
        let mark = if fancy { ui::paint(true, tone, glyph) } else { plain.to_string() };
        let took = ui::paint(fancy, Tone::Dim, &format!("{}ms", r.duration_ms));
        out.push_str(&format!("  {mark} {:<width$}  {}  {took}\n", r.name, r.detail));
        if let Some(fix) = &r.fix {
            let pad = if fancy { 4 } else { 9 };
            let label = ui::paint(fancy, tone, "fix:");
            out.push_str(&format!("{:pad$}{label} {fix}\n", ""));
        }
    }
    let count = |s: Status| results.iter().filter(|r| r.status == s).count();
    let (ok, warn, fail, skipped) =
        (count(Status::Ok), count(Status::Warn), count(Status::Fail), count(Status::Skipped));
    let summary = format!("{ok} ok, {warn} warn, {fail} fail, {skipped} skipped in {:.2}s", elapsed.as_secs_f64());
    let verdict = if fail > 0 {
        ui::paint(
            fancy,
            Tone::Bad,
            &format!("doctor: {summary} — run the fix lines above, then `cargo xtask doctor` again"),
        )
    } else if warn > 0 {
        ui::paint(fancy, Tone::Warn, &format!("doctor: {summary} — usable; the warnings say what is slower or missing"))
    } else {
        ui::paint(fancy, Tone::Good, &format!("doctor: {summary} — ready"))
    };
    out.push_str(&verdict);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fine(_: &Ctx) -> Verdict {
        Verdict::ok("fine")
    }
    fn crashes(_: &Ctx) -> Verdict {
        panic!("boom in check")
    }
    fn hangs(_: &Ctx) -> Verdict {
        std::thread::sleep(Duration::from_secs(30));
        Verdict::ok("never")
    }
    fn spec(name: &'static str, run: fn(&Ctx) -> Verdict) -> Spec {
        Spec { group: "Test", name, time_box: Duration::from_millis(300), run }
    }

    #[test]
    fn panics_and_hangs_become_failures_and_others_finish() {
        let t = Instant::now();
        let specs = vec![spec("a", fine), spec("b", crashes), spec("c", hangs), spec("d", fine)];
        let r = run_checks(specs, Arc::new(Ctx { repo: ".".into() }));
        assert!(t.elapsed() < Duration::from_secs(2), "a hung check must not hold doctor: {:?}", t.elapsed());
        let names: Vec<_> = r.iter().map(|r| r.name).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
        assert_eq!((r[0].status, r[3].status), (Status::Ok, Status::Ok));
        assert_eq!(r[1].status, Status::Fail);
        assert!(r[1].detail.contains("boom in check"), "{}", r[1].detail);
        assert_eq!(r[2].status, Status::Fail);
        assert!(r[2].detail.contains("time box"), "{}", r[2].detail);
    }

    #[test]
    fn plain_render_has_no_escapes_and_shows_fixes() {
        let r = vec![
            CheckResult { name: "x", group: "G", status: Status::Ok, detail: "good".into(), fix: None, duration_ms: 1 },
            CheckResult {
                name: "yy",
                group: "G",
                status: Status::Fail,
                detail: "bad".into(),
                fix: Some("do it".into()),
                duration_ms: 2,
            },
        ];
        let text = render(&r, Duration::from_millis(1500), false);
        assert!(!text.contains('\x1b'));
        assert!(text.contains("  [FAIL] yy  bad  2ms\n         fix: do it\n"), "{text}");
        assert!(text.contains("1 ok, 0 warn, 1 fail, 0 skipped in 1.50s"), "{text}");
        assert!(render(&r, Duration::ZERO, true).contains("\x1b[31m✗\x1b[0m"));
    }
}
