//! The human report (`report.md`) and the CI report (`junit.xml`) of a vm-test run.
//!
//! Both are rendered from the run's `RunRecord` (what `metadata.json` holds), so they can
//! never disagree with it and can be re-rendered from an old run directory. What a partial
//! run (QEMU crash, Ctrl-C) lacks renders as its default or "?" rather than failing.

use crate::diagnose::Phase;
use crate::vm::record::{CheckStatus, RunRecord, Verdict};
use std::fmt::Write;

/// An optional value, "?" when unknown.
fn known<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "?".into(), |v| v.to_string())
}

/// Markdown-safe table cell: one line, pipes escaped.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// `report.md`: outcome and verdict first, then phases, checks, findings, image and QEMU.
pub fn markdown(run: &RunRecord) -> String {
    let mut out = String::new();
    let outcome = run.outcome.map_or("?", |o| o.name());
    let _ = writeln!(out, "# vm-test {} — {}\n", known(run.started_at.as_deref()), outcome.to_uppercase());
    let (image, qemu) = (&run.image, &run.qemu);
    let _ = writeln!(
        out,
        "- Outcome: **{outcome}** (exit {}), {} s in total",
        known(run.exit_code),
        known(run.total_seconds.map(|x| format!("{x:.1}")))
    );
    let _ = writeln!(out, "- Image: `{}` ({})", image.path, image.source);
    let _ = writeln!(out, "- Accel: {} — {}", qemu.accel, qemu.accel_reason);
    if let Some(verdict) = &run.verdict {
        let _ = writeln!(out, "\n## Verdict\n");
        let _ = writeln!(out, "- Phase: **{}**", verdict.phase);
        let _ = writeln!(out, "- Finding: `{}`", verdict.finding);
        if !verdict.detail.is_empty() {
            let _ = writeln!(out, "- What happened: {}", verdict.detail);
        }
        let _ = writeln!(out, "- Likely cause: {}", verdict.cause);
        let _ = writeln!(out, "- Fix: {}", verdict.fix);
        let last = run.serial.as_ref().map_or(&[][..], |s| &s.last_lines);
        if !last.is_empty() {
            let _ = writeln!(out, "\nLast serial lines (clean):\n\n```text\n{}\n```", last.join("\n"));
        }
    }

    let _ = writeln!(out, "\n## Phases\n\n| phase | seconds | status |\n|---|---:|---|");
    for p in &run.phases {
        let _ = writeln!(out, "| {} | {:.1} | {} |", p.phase, p.seconds, p.status.name());
    }

    if !run.checks.is_empty() {
        let _ = writeln!(out, "\n## Checks\n\n| check | status | detail |\n|---|---|---|");
        for c in &run.checks {
            let _ = writeln!(out, "| {} | {} | {} |", c.name, c.status, cell(&c.detail));
        }
        for c in run.checks.iter().filter(|c| c.status == CheckStatus::Fail && !c.evidence.is_empty()) {
            let _ = writeln!(out, "\n### Evidence: {}\n\n```text\n{}\n```", c.name, c.evidence.trim_end());
        }
    }

    let findings = run.findings.as_deref().unwrap_or_default();
    if !findings.is_empty() {
        let _ = writeln!(out, "\n## Findings\n\n| id | source | line | text |\n|---|---|---:|---|");
        for f in findings {
            let _ = writeln!(out, "| `{}` | {} | {} | {} |", f.id, f.source.name(), f.line, cell(&f.text));
        }
    }

    if !run.screens.is_empty() {
        let _ = writeln!(out, "\n## Screens\n\n| screen | taken | at | OCR text | shows |\n|---|---|---:|---|---|");
        for s in &run.screens {
            let text = s.text_file.as_deref().map(|t| format!("[{t}]({t})")).unwrap_or_else(|| "-".into());
            let shows = s.text_phase.map(|p| p.name()).unwrap_or("-");
            let _ = writeln!(out, "| [{0}]({0}) | {1} | {2:.1} s | {text} | {shows} |", s.file, s.reason, s.seconds);
        }
    }

    let _ = writeln!(out, "\n## Image and QEMU\n");
    let _ = writeln!(
        out,
        "- ISO: `{}`, {} bytes{}",
        image.path,
        image.size_bytes,
        image.fault.as_ref().map_or(String::new(), |f| format!(", fault variant `{f}`"))
    );
    if let Some(store) = &image.store_path {
        let _ = writeln!(out, "- Store path: `{store}`, narHash `{}`", known(image.nar_hash.as_deref()));
    }
    let _ = writeln!(out, "- QEMU {} ({}), {} MiB, {} CPUs", qemu.version, qemu.binary, qemu.memory_mib, qemu.cpus);
    if !qemu.command.is_empty() {
        let _ = writeln!(out, "\n```sh\n{}\n```", crate::ui::shell_join(&qemu.command));
    }
    let _ = writeln!(
        out,
        "\nFiles in this run directory: `serial.log` (raw), `serial.txt` (clean), `transcript.log`, `qemu.stderr.log`, `metadata.json`, `junit.xml`."
    );
    out
}

pub(crate) fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            // XML 1.0 forbids most control characters, even escaped.
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// `junit.xml`: one test case for the boot (all phases up to a root shell) and one per check.
pub fn junit(run: &RunRecord) -> String {
    struct Case {
        name: String,
        seconds: String,
        failure: Option<(String, String)>,
        skipped: bool,
        /// What a passing case printed (a `--run` command's output).
        output: Option<String>,
    }
    let in_boot = |p: Phase| p <= Phase::Root;
    let boot_seconds: f64 = run.phases.iter().filter(|p| in_boot(p.phase)).map(|p| p.seconds).fold(0.0, |a, b| a + b);
    let cause_and_fix = |v: &Verdict| format!("Likely cause: {}\nFix: {}", v.cause, v.fix);
    let verdict = run.verdict.as_ref();
    let mut cases = vec![Case {
        name: "boot to a verified root shell".into(),
        seconds: format!("{boot_seconds:.3}"),
        failure: verdict
            .filter(|v| in_boot(v.phase))
            .map(|v| (format!("{}: {}", v.phase, v.finding), cause_and_fix(v))),
        skipped: false,
        output: None,
    }];
    for c in &run.checks {
        cases.push(Case {
            name: format!("check {}", c.name),
            seconds: "0".into(),
            failure: (c.status == CheckStatus::Fail).then(|| (c.detail.clone(), c.evidence.clone())),
            skipped: c.status == CheckStatus::Skip,
            output: (c.status == CheckStatus::Pass && !c.evidence.is_empty())
                .then(|| format!("{}\n{}", c.detail, c.evidence)),
        });
    }
    // A verdict after the boot (the guest stopped answering during the checks, QEMU died at
    // poweroff, ...) gets its own failing case unless a failed check already carries it.
    let a_check_failed = cases.iter().any(|c| c.failure.is_some());
    if let Some(v) = verdict.filter(|v| !in_boot(v.phase) && !a_check_failed) {
        cases.push(Case {
            name: format!("phase {}", v.phase),
            seconds: "0".into(),
            failure: Some((v.finding.clone(), cause_and_fix(v))),
            skipped: false,
            output: None,
        });
    }
    let failures = cases.iter().filter(|c| c.failure.is_some()).count();
    let skipped = cases.iter().filter(|c| c.skipped).count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites><testsuite name=\"vm-test\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{}\" timestamp=\"{}\">",
        cases.len(),
        run.total_seconds.unwrap_or(0.0),
        xml_escape(run.started_at.as_deref().unwrap_or("?"))
    );
    for c in cases {
        let _ =
            write!(out, "  <testcase classname=\"vm-test\" name=\"{}\" time=\"{}\"", xml_escape(&c.name), c.seconds);
        match (c.failure, c.skipped) {
            (None, false) if c.output.is_some() => {
                let out_text = xml_escape(c.output.as_deref().unwrap_or_default());
                let _ = writeln!(out, "><system-out>{out_text}</system-out></testcase>");
            }
            (Some((message, body)), _) => {
                let _ = writeln!(
                    out,
                    "><failure message=\"{}\">{}</failure></testcase>",
                    xml_escape(&message),
                    xml_escape(&body)
                );
            }
            (None, true) => out.push_str("><skipped/></testcase>\n"),
            (None, false) => out.push_str("/>\n"),
        }
    }
    out.push_str("</testsuite></testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn failed_run() -> RunRecord {
        RunRecord::from_value(json!({
            "schema": 1, "started_at": "2026-11-25T18:18:17Z", "outcome": "fail", "exit_code": 1,
            "total_seconds": 42.5,
            "image": {"path": "/x/nixos-fixture.iso", "size_bytes": 1000, "source": "fixture", "fault": "sudo-password"},
            "qemu": {"binary": "/usr/bin/qemu-system-x86_64", "version": "7.2.22", "accel": "tcg",
                     "accel_reason": "KVM unusable here", "memory_mib": 1024, "cpus": 2,
                     "command": ["qemu-system-x86_64", "-append", "a b"]},
            "phases": [{"phase": "qemu", "seconds": 0.1, "status": "ok"}, {"phase": "root", "seconds": 3.0, "status": "failed"}],
            "checks": [],
            "verdict": {"phase": "root", "finding": "escalation-failed", "cause": "sudo asked for a password", "fix": "wheelNeedsPassword = false",
                        "detail": "sudo -i and su - both asked for a password"},
            "serial": {"last_lines": ["[sudo] password for nixos:", "su: Authentication failure"]},
            "findings": [{"id": "escalation-failed", "line": 40, "text": "[sudo] password for nixos: <x|y>"}]
        }))
    }

    fn render(f: fn(&RunRecord) -> String, v: Value) -> String {
        f(&RunRecord::from_value(v))
    }

    #[test]
    fn markdown_names_the_verdict_and_escapes_cells() {
        let md = markdown(&failed_run());
        assert!(md.contains("# vm-test 2026-11-25T18:18:17Z — FAIL"));
        assert!(md.contains("- Finding: `escalation-failed`"));
        assert!(md.contains("- What happened: sudo -i and su - both asked"));
        assert!(md.contains("```text\n[sudo] password for nixos:\nsu: Authentication failure\n```"));
        assert!(md.contains("| root | 3.0 | failed |"));
        assert!(md.contains("<x\\|y>"));
        assert!(md.contains("qemu-system-x86_64 -append 'a b'"));
        assert!(md.contains("fault variant `sudo-password`"));
    }

    #[test]
    fn junit_fails_the_boot_case_and_escapes_xml() {
        let xml = junit(&failed_run());
        assert!(xml.contains("tests=\"1\" failures=\"1\""));
        assert!(xml.contains("<failure message=\"root: escalation-failed\">"));
        let pass = json!({"outcome": "pass", "verdict": null, "phases": [],
            "checks": [{"name": "tools", "status": "pass"}, {"name": "lan", "status": "fail", "detail": "no <inet>", "evidence": "\u{1b}x"}]});
        let xml = render(junit, pass);
        assert!(xml.contains("tests=\"3\" failures=\"1\""));
        assert!(xml.contains("message=\"no &lt;inet&gt;\""));
        assert!(!xml.contains('\u{1b}'));
    }

    #[test]
    fn a_verdict_during_the_checks_without_a_failed_check_fails_the_suite() {
        let run = json!({"outcome": "fail", "phases": [],
            "checks": [{"name": "tools", "status": "pass"}],
            "verdict": {"phase": "checks", "finding": "guest-unresponsive", "cause": "c", "fix": "f"}});
        let xml = render(junit, run);
        assert!(xml.contains("tests=\"3\" failures=\"1\""), "{xml}");
        assert!(xml.contains("name=\"phase checks\" time=\"0\"><failure message=\"guest-unresponsive\">"), "{xml}");
        // A failed check already carries the verdict: no extra case.
        let run = json!({"outcome": "fail", "phases": [],
            "checks": [{"name": "lvm", "status": "fail", "detail": "no VG main"}],
            "verdict": {"phase": "checks", "finding": "check-failed", "cause": "c", "fix": "f"}});
        assert!(render(junit, run).contains("tests=\"2\" failures=\"1\""));
    }

    #[test]
    fn partial_metadata_still_renders() {
        let md = render(markdown, json!({"outcome": "interrupted"}));
        assert!(md.contains("INTERRUPTED"));
        assert!(render(junit, json!({})).contains("<testsuite name=\"vm-test\""));
    }
}
