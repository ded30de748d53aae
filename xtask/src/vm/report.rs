//! The human report (`report.md`) and the CI report (`junit.xml`) of a vm-test run.
//!
//! Both are rendered from the run's `metadata.json` value, so they can never disagree with it
//! and can be re-rendered from an old run directory. Missing keys render as "?" rather than
//! failing: a partial run (QEMU crash, Ctrl-C) still gets a report.

use serde_json::Value;
use std::fmt::Write;

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("?")
}

fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn seconds(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_f64).map_or_else(|| "?".into(), |x| format!("{x:.1}"))
}

/// Markdown-safe table cell: one line, pipes escaped.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// `report.md`: outcome and verdict first, then phases, checks, findings, image and QEMU.
pub fn markdown(meta: &Value) -> String {
    let mut out = String::new();
    let outcome = s(meta, "outcome");
    let _ = writeln!(out, "# vm-test {} — {}\n", s(meta, "started_at"), outcome.to_uppercase());
    let image = meta.get("image").unwrap_or(&Value::Null);
    let qemu = meta.get("qemu").unwrap_or(&Value::Null);
    let _ = writeln!(
        out,
        "- Outcome: **{outcome}** (exit {}), {} s in total",
        meta.get("exit_code").and_then(Value::as_i64).map_or("?".into(), |c| c.to_string()),
        seconds(meta, "total_seconds")
    );
    let _ = writeln!(out, "- Image: `{}` ({})", s(image, "path"), s(image, "source"));
    let _ = writeln!(out, "- Accel: {} — {}", s(qemu, "accel"), s(qemu, "accel_reason"));
    if let Some(verdict) = meta.get("verdict").filter(|v| !v.is_null()) {
        let _ = writeln!(out, "\n## Verdict\n");
        let _ = writeln!(out, "- Phase: **{}**", s(verdict, "phase"));
        let _ = writeln!(out, "- Finding: `{}`", s(verdict, "finding"));
        if let Some(detail) = verdict.get("detail").and_then(Value::as_str).filter(|d| !d.is_empty()) {
            let _ = writeln!(out, "- What happened: {detail}");
        }
        let _ = writeln!(out, "- Likely cause: {}", s(verdict, "cause"));
        let _ = writeln!(out, "- Fix: {}", s(verdict, "fix"));
        let last: Vec<&str> = meta
            .pointer("/serial/last_lines")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !last.is_empty() {
            let _ = writeln!(out, "\nLast serial lines (clean):\n\n```text\n{}\n```", last.join("\n"));
        }
    }

    let _ = writeln!(out, "\n## Phases\n\n| phase | seconds | status |\n|---|---:|---|");
    for p in arr(meta, "phases") {
        let _ = writeln!(out, "| {} | {} | {} |", s(p, "phase"), seconds(p, "seconds"), s(p, "status"));
    }

    let checks = arr(meta, "checks");
    if !checks.is_empty() {
        let _ = writeln!(out, "\n## Checks\n\n| check | status | detail |\n|---|---|---|");
        for c in checks {
            let _ = writeln!(out, "| {} | {} | {} |", s(c, "name"), s(c, "status"), cell(s(c, "detail")));
        }
        for c in checks.iter().filter(|c| s(c, "status") == "fail") {
            if let Some(evidence) = c.get("evidence").and_then(Value::as_str).filter(|e| !e.is_empty()) {
                let _ = writeln!(out, "\n### Evidence: {}\n\n```text\n{}\n```", s(c, "name"), evidence.trim_end());
            }
        }
    }

    let findings = arr(meta, "findings");
    if !findings.is_empty() {
        let _ = writeln!(out, "\n## Findings\n\n| id | serial.txt line | text |\n|---|---:|---|");
        for f in findings {
            let line = f.get("line").and_then(Value::as_u64).unwrap_or(0);
            let _ = writeln!(out, "| `{}` | {} | {} |", s(f, "id"), line, cell(s(f, "text")));
        }
    }

    let _ = writeln!(out, "\n## Image and QEMU\n");
    let _ = writeln!(
        out,
        "- ISO: `{}`, {} bytes{}",
        s(image, "path"),
        image.get("size_bytes").and_then(Value::as_u64).map_or("?".into(), |b| b.to_string()),
        image.get("fault").and_then(Value::as_str).map_or(String::new(), |f| format!(", fault variant `{f}`"))
    );
    if let Some(store) = image.get("store_path").and_then(Value::as_str) {
        let _ = writeln!(out, "- Store path: `{store}`, narHash `{}`", s(image, "nar_hash"));
    }
    let _ = writeln!(
        out,
        "- QEMU {} ({}), {} MiB, {} CPUs",
        s(qemu, "version"),
        s(qemu, "binary"),
        qemu.get("memory_mib").map_or("?".into(), Value::to_string),
        qemu.get("cpus").map_or("?".into(), Value::to_string)
    );
    let command: Vec<&str> = arr(qemu, "command").iter().filter_map(Value::as_str).collect();
    if !command.is_empty() {
        let _ = writeln!(out, "\n```sh\n{}\n```", crate::ui::shell_join(&command));
    }
    let _ = writeln!(
        out,
        "\nFiles in this run directory: `serial.log` (raw), `serial.txt` (clean), `transcript.log`, `qemu.stderr.log`, `metadata.json`, `junit.xml`."
    );
    out
}

fn xml_escape(text: &str) -> String {
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
pub fn junit(meta: &Value) -> String {
    struct Case {
        name: String,
        seconds: String,
        failure: Option<(String, String)>,
        skipped: bool,
    }
    let verdict = meta.get("verdict").filter(|v| !v.is_null());
    let boot_phases = ["qemu", "bootloader", "kernel", "init", "login", "shell", "root"];
    let boot_seconds: f64 = arr(meta, "phases")
        .iter()
        .filter(|p| boot_phases.contains(&s(p, "phase")))
        .filter_map(|p| p.get("seconds").and_then(Value::as_f64))
        .fold(0.0, |a, b| a + b);
    let boot_failed = verdict.filter(|v| boot_phases.contains(&s(v, "phase")));
    let mut cases = vec![Case {
        name: "boot to a verified root shell".into(),
        seconds: format!("{boot_seconds:.3}"),
        failure: boot_failed.map(|v| {
            (
                format!("{}: {}", s(v, "phase"), s(v, "finding")),
                format!("Likely cause: {}\nFix: {}", s(v, "cause"), s(v, "fix")),
            )
        }),
        skipped: false,
    }];
    for c in arr(meta, "checks") {
        let status = s(c, "status");
        cases.push(Case {
            name: format!("check {}", s(c, "name")),
            seconds: "0".into(),
            failure: (status == "fail").then(|| {
                (s(c, "detail").to_string(), c.get("evidence").and_then(Value::as_str).unwrap_or("").to_string())
            }),
            skipped: status == "skip",
        });
    }
    // A verdict after the boot (the guest stopped answering during the checks, QEMU died at
    // poweroff, ...) gets its own failing case unless a failed check already carries it.
    let a_check_failed = cases.iter().any(|c| c.failure.is_some());
    if let Some(v) = verdict.filter(|v| !boot_phases.contains(&s(v, "phase")) && !a_check_failed) {
        cases.push(Case {
            name: format!("phase {}", s(v, "phase")),
            seconds: "0".into(),
            failure: Some((
                s(v, "finding").to_string(),
                format!("Likely cause: {}\nFix: {}", s(v, "cause"), s(v, "fix")),
            )),
            skipped: false,
        });
    }
    let failures = cases.iter().filter(|c| c.failure.is_some()).count();
    let skipped = cases.iter().filter(|c| c.skipped).count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites><testsuite name=\"vm-test\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{}\" timestamp=\"{}\">",
        cases.len(),
        meta.get("total_seconds").and_then(Value::as_f64).unwrap_or(0.0),
        xml_escape(s(meta, "started_at"))
    );
    for c in cases {
        let _ =
            write!(out, "  <testcase classname=\"vm-test\" name=\"{}\" time=\"{}\"", xml_escape(&c.name), c.seconds);
        match (c.failure, c.skipped) {
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
    use serde_json::json;

    fn failed_run() -> Value {
        json!({
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
        })
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
        let xml = junit(&pass);
        assert!(xml.contains("tests=\"3\" failures=\"1\""));
        assert!(xml.contains("message=\"no &lt;inet&gt;\""));
        assert!(!xml.contains('\u{1b}'));
    }

    #[test]
    fn a_verdict_during_the_checks_without_a_failed_check_fails_the_suite() {
        let run = json!({"outcome": "fail", "phases": [],
            "checks": [{"name": "tools", "status": "pass"}],
            "verdict": {"phase": "checks", "finding": "guest-unresponsive", "cause": "c", "fix": "f"}});
        let xml = junit(&run);
        assert!(xml.contains("tests=\"3\" failures=\"1\""), "{xml}");
        assert!(xml.contains("name=\"phase checks\" time=\"0\"><failure message=\"guest-unresponsive\">"), "{xml}");
        // A failed check already carries the verdict: no extra case.
        let run = json!({"outcome": "fail", "phases": [],
            "checks": [{"name": "lvm", "status": "fail", "detail": "no VG main"}],
            "verdict": {"phase": "checks", "finding": "check-failed", "cause": "c", "fix": "f"}});
        assert!(junit(&run).contains("tests=\"2\" failures=\"1\""));
    }

    #[test]
    fn partial_metadata_still_renders() {
        let md = markdown(&json!({"outcome": "interrupted"}));
        assert!(md.contains("INTERRUPTED"));
        assert!(junit(&json!({})).contains("<testsuite name=\"vm-test\""));
    }
}
