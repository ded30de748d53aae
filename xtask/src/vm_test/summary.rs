//! What vm-test prints on stdout at the end (the phase table, the checks, the verdict), how
//! to attach to a kept VM, and `--archive`.

use super::*;

pub(super) fn archive(dir: &Utf8Path) {
    match crate::archive_logs::archive(dir, false) {
        Ok(_) => eprintln!("vm-test: archived {dir} under docs/ (boot-logs, test-reports)"),
        Err(e) => eprintln!("vm-test: --archive failed: {e:#}"),
    }
}

/// A line into the text the harness prints on stdout (writing to a String cannot fail).
macro_rules! say {
    ($out:ident) => {
        $out.push('\n')
    };
    ($out:ident, $($arg:tt)*) => {
        writeln!($out, $($arg)*).expect("writing to a String")
    };
}

pub(super) fn print_attach(spec: &Spec, vm: &Qemu, dir: &Utf8Path) {
    let mut out = String::new();
    say!(out, "QEMU left running (--keep), pid {}.", vm.pid);
    say!(out, "  serial console: cargo xtask attach {dir}   (Ctrl-] detaches, the VM keeps running)");
    say!(out, "  power it off:   cargo xtask attach --stop {dir}");
    say!(out, "  QMP socket:     {}", spec.qmp_sock);
    say!(out, "  ssh (if the image runs sshd and knows your key): ssh -p {} root@127.0.0.1", spec.ssh_port);
    let _ = ui::print(&out);
}

pub(super) fn print_summary(rec: &Record) {
    let mut out = String::new();
    let fancy = ui::fancy_stdout();
    let reached = rec.phases().iter().any(|p| p.status != PhaseStatus::NotReached);
    if reached {
        say!(out);
        say!(out, "{:<12} {:>9}  status", "phase", "seconds");
        for p in rec.phases() {
            let tone = match p.status {
                PhaseStatus::Ok => ui::Tone::Good,
                PhaseStatus::Failed => ui::Tone::Bad,
                _ => ui::Tone::Dim,
            };
            say!(out, "{:<12} {:>9.2}  {}", p.phase.name(), p.seconds, ui::paint(fancy, tone, p.status.name()));
        }
    }
    if !rec.checks.is_empty() {
        say!(out);
        for c in &rec.checks {
            let tone = match c.status {
                CheckStatus::Pass => ui::Tone::Good,
                CheckStatus::Fail => ui::Tone::Bad,
                CheckStatus::Skip => ui::Tone::Dim,
            };
            say!(out, "check {:<16} {:<5} {}", c.name, ui::paint(fancy, tone, c.status.name()), c.detail);
        }
    }
    say!(out);
    match &rec.failure {
        None => say!(out, "{} in {:.1} s", ui::paint(fancy, ui::Tone::Good, "PASS"), rec.total_seconds()),
        Some(f) => {
            let label = match f.outcome {
                Outcome::Fail => "FAIL",
                Outcome::Infra => "INFRASTRUCTURE",
                Outcome::Interrupted => "INTERRUPTED",
            };
            say!(out, "{} in phase {}: {}", ui::paint(fancy, ui::Tone::Bad, label), f.phase, f.finding);
            say!(out, "  what:  {}", f.detail);
            if let Some(sig) = crate::diagnose::signature(&f.finding) {
                say!(out, "  cause: {}", sig.cause);
                say!(out, "  fix:   {}", sig.fix);
            }
            if let Some(lines) = rec.serial.as_ref().map(|s| &s.last_lines).filter(|l| !l.is_empty()) {
                say!(out, "  last serial lines:");
                for l in &lines[lines.len().saturating_sub(8)..] {
                    say!(out, "    | {l}");
                }
            }
        }
    }
    say!(out, "run directory: {}  (exit {})", rec.dir, rec.exit_code());
    let _ = ui::print(&out);
}
