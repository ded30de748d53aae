//! `cargo xtask archive-logs` on hand-built run directories (the layout in docs/vm-test.md),
//! archived into a temporary docs directory (`--docs-dir`).

mod common;

use common::{repo_root, run_xtask};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

const STAMP: &str = "2026-11-25T18-18-17Z";

/// A run directory like vm-test writes, with a raw (escape-laden, CRLF) serial log.
fn make_run(parent: &Path, stamp: &str, outcome: &str) -> PathBuf {
    let dir = parent.join(stamp);
    fs::create_dir_all(&dir).unwrap();
    let raw = fs::read(repo_root().join("xtask/tests/data/serial/handcrafted-healthy.log")).unwrap();
    fs::write(dir.join("serial.log"), &raw).unwrap();
    fs::write(
        dir.join("transcript.log"),
        "[2026-11-25T18:18:17Z +0.00] qemu started\n[2026-11-25T18:18:30Z +13.10] $ id -u\n0\n\
         -----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----\n\
         export GITHUB_TOKEN=ghp_0123456789abcdefghijklmnopqrstuvwxyzAB\n[2026-11-25T18:18:40Z +23.40] poweroff\n",
    )
    .unwrap();
    fs::write(dir.join("report.md"), format!("# vm-test {stamp}\n\nOutcome: {outcome}\n")).unwrap();
    let started = format!("{}:{}:{}", &stamp[..13], &stamp[14..16], &stamp[17..]);
    let meta = serde_json::json!({
        "schema": 1, "tool": "cargo xtask vm-test",
        "started_at": started, "finished_at": "2026-11-25T18:18:40Z",
        "run_dir": dir.to_str().unwrap(),
        "image": {"path": "/abs/target/fixture/nixos-fixture.iso", "size_bytes": 16000000, "source": "fixture",
                  "fault": null, "store_path": null, "nar_hash": null},
        "qemu": {"binary": "/usr/bin/qemu-system-x86_64", "version": "7.2.22", "command": ["qemu-system-x86_64"],
                 "accel": "tcg", "accel_reason": "no usable KVM", "memory_mib": 1024, "cpus": 2},
        "phases": [
            {"phase": "bootloader", "seconds": 4.5, "status": "ok"},
            {"phase": "kernel", "seconds": 5.5, "status": "ok"},
            {"phase": "init", "seconds": 1.0, "status": "ok"},
            {"phase": "checks", "seconds": 0.0, "status": "not-reached"}
        ],
        "checks": [{"name": "storage-status", "status": "pass", "detail": "STATE=applied", "evidence": ""}],
        "outcome": outcome,
        "verdict": if outcome == "pass" { Value::Null } else {
            serde_json::json!({"phase": "login", "finding": "escalation-failed", "cause": "c", "fix": "f"}) },
        "findings": [{"id": "autologin-not-root", "line": 16, "text": "nixos login: nixos (automatic login)"}],
        "exit_code": if outcome == "pass" { 0 } else { 1 },
        "total_seconds": 23.4
    });
    fs::write(dir.join("metadata.json"), serde_json::to_string_pretty(&meta).unwrap()).unwrap();
    dir
}

fn archive(run: &Path, docs: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["archive-logs", run.to_str().unwrap(), "--docs-dir", docs.to_str().unwrap()];
    args.extend_from_slice(extra);
    run_xtask(&args)
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().file_name().into_string().unwrap()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// Every archived file's name and bytes.
fn contents(docs: &Path) -> Vec<(String, Vec<u8>)> {
    let mut all = Vec::new();
    for d in ["boot-logs", "test-reports"] {
        for f in listing(&docs.join(d)) {
            all.push((format!("{d}/{f}"), fs::read(docs.join(d).join(&f)).unwrap()));
        }
    }
    all
}

#[test]
fn archive_twice_keeps_one_copy_and_says_nothing_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, docs) = (tmp.path().join("runs"), tmp.path().join("docs"));
    let run = make_run(&runs, STAMP, "pass");

    let first = archive(&run, &docs, &[]);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&first.stderr));
    assert!(stdout.contains("created"), "{stdout}");
    assert!(
        stdout.contains("redacted 2 span(s): 1 private key block(s) (3 lines) and 1 token-looking line(s)"),
        "{stdout}"
    );
    assert_eq!(listing(&docs.join("boot-logs")), [format!("{STAMP}-serial.log")]);
    assert_eq!(
        listing(&docs.join("test-reports")),
        [
            format!("{STAMP}-boot-image-vm-test.log"),
            format!("{STAMP}-boot-image-vm-test.md"),
            "README.md".into(),
            "ledger.jsonl".into()
        ]
    );
    let snapshot = contents(&docs);

    let second = archive(&run, &docs, &[]);
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success());
    assert!(stdout.contains("Nothing changed: this run was already archived."), "{stdout}");
    assert!(!stdout.contains("created") && !stdout.contains("updated"), "{stdout}");
    assert_eq!(snapshot, contents(&docs));
    let ledger = fs::read_to_string(docs.join("test-reports/ledger.jsonl")).unwrap();
    assert_eq!(ledger.lines().count(), 1);
}

#[test]
fn a_differing_file_at_the_target_is_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, docs) = (tmp.path().join("runs"), tmp.path().join("docs"));
    let run = make_run(&runs, STAMP, "pass");
    let target = docs.join("boot-logs").join(format!("{STAMP}-serial.log"));
    fs::create_dir_all(target.parent().unwrap()).unwrap();
    fs::write(&target, "someone else's log\n").unwrap();

    let out = archive(&run, &docs, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("refusing to overwrite") && err.contains(&format!("{STAMP}-serial.log")), "{err}");
    assert!(err.contains("Nothing was written"), "{err}");
    assert_eq!(fs::read_to_string(&target).unwrap(), "someone else's log\n");
    assert!(listing(&docs.join("test-reports")).is_empty());
}

#[test]
fn cleaned_logs_have_no_escapes_and_keep_all_text() {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, docs) = (tmp.path().join("runs"), tmp.path().join("docs"));
    let run = make_run(&runs, STAMP, "pass");
    assert!(archive(&run, &docs, &[]).status.success());
    let log = fs::read(docs.join("boot-logs").join(format!("{STAMP}-serial.log"))).unwrap();
    for bad in [0x1bu8, 0x0e, 0x0f, b'\r', 0x07] {
        assert!(!log.contains(&bad), "byte {bad:#04x} survived");
    }
    let text = String::from_utf8(log).expect("valid UTF-8 (invalid bytes replaced)");
    for kept in [
        "ISOLINUX 6.04 20200816  Copyright (C) 1994-2015 H. Peter Anvin et al\n",
        "lqqqqqqqqqqqqqqqqk",
        "Automatic boot in 1 second...",
        "Loading /boot/initrd...ok\n",
        "[    2.828042] Run /init as init process\n",
        "[  OK  ] Started pre-nixos.service.\n",
        "nixos login: nixos (automatic login)\n",
        "[nixos@nixos:~]$ pre-nixos: applied: created VG main with LV slash on /dev/vda\n",
        "[root@nixos:~]# id -u\n0\n",
        "café \u{fffd}\u{fffd} invalid utf-8\n",
        "[   42.100000] reboot: Power down\n",
    ] {
        assert!(text.contains(kept), "missing {kept:?} in\n{text}");
    }
    // The transcript is redacted, and the rest of it kept.
    let transcript =
        fs::read_to_string(docs.join("test-reports").join(format!("{STAMP}-boot-image-vm-test.log"))).unwrap();
    assert!(!transcript.contains("b3BlbnNzaC1rZXkt") && !transcript.contains("ghp_"), "{transcript}");
    assert!(transcript.contains("[archive-logs: private key block redacted: 3 line(s), BEGIN to END]\n"));
    assert!(transcript.contains("$ id -u\n0\n") && transcript.ends_with("poweroff\n"));
}

#[test]
fn ledger_line_parses_and_the_index_lists_runs_newest_first() {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, docs) = (tmp.path().join("runs"), tmp.path().join("docs"));
    let older = make_run(&runs, "2026-11-25T17-00-00Z", "pass");
    let newer = make_run(&runs, STAMP, "fail");
    assert!(archive(&older, &docs, &[]).status.success());
    assert!(archive(&newer, &docs, &[]).status.success());

    let ledger = fs::read_to_string(docs.join("test-reports/ledger.jsonl")).unwrap();
    let lines: Vec<Value> = ledger.lines().map(|l| serde_json::from_str(l).expect("ledger line is JSON")).collect();
    assert_eq!(lines.len(), 2);
    let l = &lines[1];
    assert_eq!(l["run"], STAMP);
    assert_eq!(l["timestamp"], "2026-11-25T18:18:17Z");
    assert_eq!(l["outcome"], "fail");
    assert_eq!(l["verdict"], "escalation-failed");
    assert_eq!(l["findings"], serde_json::json!(["escalation-failed", "autologin-not-root"]));
    assert_eq!(l["phases"]["kernel"]["seconds"], 5.5);
    assert!(l["phases"].get("checks").is_none(), "not-reached phases are left out");
    assert_eq!(l["iso"]["source"], "fixture");
    assert_eq!(l["accel"], "tcg");
    assert_eq!(l["qemu_version"], "7.2.22");
    assert_eq!(l["furthest_phase"], "poweroff");
    assert_eq!(l["files"]["serial"], format!("boot-logs/{STAMP}-serial.log"));

    let index = fs::read_to_string(docs.join("test-reports/README.md")).unwrap();
    let newer_at = index.find(STAMP).expect("index lists the newer run");
    let older_at = index.find("2026-11-25T17-00-00Z").expect("index lists the older run");
    assert!(newer_at < older_at, "newest first:\n{index}");
    assert!(index.contains(&format!("[serial](../boot-logs/{STAMP}-serial.log)")), "{index}");
    assert!(index.contains(&format!("[report]({STAMP}-boot-image-vm-test.md)")), "{index}");
    assert!(
        index.contains("Median phase times (last 1 passing runs)") && index.contains("| kernel | 5.5 | 1 |"),
        "{index}"
    );
    // Every linked file exists.
    for href in index.split("](").skip(1).filter_map(|s| s.split(')').next()) {
        assert!(docs.join("test-reports").join(href).exists(), "dangling link {href}");
    }
}

#[test]
fn dry_run_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, docs) = (tmp.path().join("runs"), tmp.path().join("docs"));
    let run = make_run(&runs, STAMP, "pass");
    let out = archive(&run, &docs, &["--dry-run"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.contains("would create") && stdout.contains("Dry run: nothing written."), "{stdout}");
    assert!(!docs.exists());
}

#[test]
fn huge_logs_are_capped_with_a_marker() {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, docs) = (tmp.path().join("runs"), tmp.path().join("docs"));
    let run = make_run(&runs, STAMP, "pass");
    let mut raw = b"ISOLINUX 6.04 FIRST LINE\r\n".to_vec();
    for i in 0..200_000 {
        raw.extend_from_slice(format!("[{i:>6}.000000] \x1b[1mflood\x1b[0m {i}\r\n").as_bytes());
    }
    raw.extend_from_slice(b"reboot: Power down LAST LINE\r\n");
    fs::write(run.join("serial.log"), &raw).unwrap();
    let out = archive(&run, &docs, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("cap left out (head and tail kept)"), "{stdout}");
    let log = fs::read_to_string(docs.join("boot-logs").join(format!("{STAMP}-serial.log"))).unwrap();
    assert!(log.len() <= 1024 * 1024 + 300, "{}", log.len());
    assert!(log.starts_with("ISOLINUX 6.04 FIRST LINE\n") && log.ends_with("reboot: Power down LAST LINE\n"));
    assert_eq!(log.lines().filter(|l| l.starts_with("[archive-logs:") && l.contains("lines (")).count(), 1);
}

#[test]
fn huge_logs_of_invalid_utf8_are_capped_inside_multibyte_characters() {
    // Every invalid byte becomes U+FFFD (3 bytes): the cut points fall inside characters.
    let tmp = tempfile::tempdir().unwrap();
    let (runs, docs) = (tmp.path().join("runs"), tmp.path().join("docs"));
    let run = make_run(&runs, STAMP, "pass");
    let mut raw = b"x\r\n".to_vec();
    while raw.len() < 1024 * 1024 {
        raw.extend_from_slice(&[0xff; 100]);
        raw.extend_from_slice(b"\r\n");
    }
    fs::write(run.join("serial.log"), &raw).unwrap();
    let out = archive(&run, &docs, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("cap left out (head and tail kept)"), "{stdout}");
    let log = fs::read_to_string(docs.join("boot-logs").join(format!("{STAMP}-serial.log"))).unwrap();
    assert!(log.starts_with("x\n\u{FFFD}") && log.ends_with("\u{FFFD}\n"));
}

#[test]
fn an_unreadable_target_is_an_infrastructure_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, docs) = (tmp.path().join("runs"), tmp.path().join("docs"));
    let run = make_run(&runs, STAMP, "pass");
    // A directory where the archived serial log goes: reading it fails (also as root).
    let target = docs.join("boot-logs").join(format!("{STAMP}-serial.log"));
    fs::create_dir_all(&target).unwrap();
    let out = archive(&run, &docs, &[]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read") && err.contains(&format!("{STAMP}-serial.log")), "{err}");
    assert!(!docs.join("test-reports").exists(), "nothing written");
}

#[test]
fn a_run_dir_without_metadata_uses_its_name_and_the_serial_findings() {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, docs) = (tmp.path().join("runs"), tmp.path().join("docs"));
    let run = make_run(&runs, STAMP, "pass");
    fs::remove_file(run.join("metadata.json")).unwrap();
    assert!(archive(&run, &docs, &[]).status.success());
    let ledger = fs::read_to_string(docs.join("test-reports/ledger.jsonl")).unwrap();
    let l: Value = serde_json::from_str(ledger.lines().next().unwrap()).unwrap();
    assert_eq!(l["run"], STAMP);
    assert_eq!(l["outcome"], "unknown");
    assert_eq!(l["findings_source"], "serial");
    assert_eq!(l["findings"], serde_json::json!(["autologin-not-root", "powered-off-cleanly"]));
}

#[test]
fn a_missing_run_dir_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = archive(&tmp.path().join("nope"), &tmp.path().join("docs"), &[]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a directory") && err.contains("--latest"), "{err}");
}

#[test]
fn the_ledger_keeps_the_first_line_of_a_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, docs) = (tmp.path().join("runs"), tmp.path().join("docs"));
    let run = make_run(&runs, STAMP, "pass");
    assert!(archive(&run, &docs, &[]).status.success());
    let ledger = docs.join("test-reports/ledger.jsonl");
    // Someone edits the ledger line (or a newer tool would compute it differently).
    let edited = fs::read_to_string(&ledger).unwrap().replace("\"redactions\":2", "\"redactions\":9");
    fs::write(&ledger, &edited).unwrap();
    let out = archive(&run, &docs, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("its line is kept as first written"), "{stdout}");
    assert_eq!(fs::read_to_string(&ledger).unwrap(), edited);
}

/// Every file archive-logs wrote, as text.
fn all_text(docs: &Path) -> String {
    contents(docs).into_iter().map(|(name, bytes)| format!("== {name}\n{}", String::from_utf8_lossy(&bytes))).collect()
}

#[test]
fn secrets_in_every_shape_stay_out_of_docs() {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, docs) = (tmp.path().join("runs"), tmp.path().join("docs"));
    let run = make_run(&runs, STAMP, "pass");
    // Each secret carries a `LEAK` word so the test can look for any of it in docs/.
    let serial = "\
[root@nixos:~]# cat /root/.ssh/id_rsa\r
-----BEGIN RSA PRIVATE KEY-----\r
MIIEowIBAAKCAQEAxLEAK1xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r
[   12.345678] random: crng init done\r
LEAK2yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\r
-----END RSA PRIVATE KEY-----\r
[root@nixos:~]# cat > /root/key <<EOF\r
> -----BEGIN OPENSSH PRIVATE KEY-----\r
> b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQLEAK3zzzzzzzzzzzzzzzzzzzzzzzzzz\r
> AAAAC3NzaC1lZDI1NTE5AAAAIFLEAK4wwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwww\r
> -----END OPENSSH PRIVATE KEY-----\r
> EOF\r
q1x1|-----BEGIN EC PRIVATE KEY-----\r
q1x1|MHcCAQEEIBLEAK5vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv\r
q1x1|-----END EC PRIVATE KEY-----\r
AWS_SECRET_ACCESS_KEY=LEAK6wJalrXUtnFEMIK7MDENGbPxRfiCY\r
aws_secret_access_key = LEAK7wJalrXUtnFEMIK7MDENGbPxRfiCY\r
DB_PASSWORD=LEAK8hunter2\r
NPM_TOKEN=LEAK9npm0123456789abcdef\r
CI_JOB_TOKEN=LEAK10glcbt0123456789abcdef\r
[root@nixos:~]# id -u\r
0\r
[   42.100000] reboot: Power down\r
";
    fs::write(run.join("serial.log"), serial).unwrap();
    let out = archive(&run, &docs, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let all = all_text(&docs);
    assert!(!all.contains("LEAK"), "a secret reached docs/:\n{all}");
    // What is not secret is kept, and the summary counts the spans (3 key blocks and 5
    // token lines in the serial log, 1 and 1 in the transcript).
    let log = fs::read_to_string(docs.join("boot-logs").join(format!("{STAMP}-serial.log"))).unwrap();
    assert!(log.contains("[root@nixos:~]# cat /root/.ssh/id_rsa\n"), "{log}");
    assert!(log.contains("\n> EOF\n") && log.contains("\n[root@nixos:~]# id -u\n0\n"), "{log}");
    assert_eq!(log.matches("[archive-logs: private key block redacted: ").count(), 3, "{log}");
    assert!(stdout.contains("redacted 10 span(s): 4 private key block(s)"), "{stdout}");
    assert!(stdout.contains("and 6 token-looking line(s)"), "{stdout}");
}

#[test]
fn concurrent_archivers_lose_no_ledger_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, docs) = (tmp.path().join("runs"), tmp.path().join("docs"));
    const ROUNDS: usize = 5;
    const AT_ONCE: usize = 4;
    let mut stamps = Vec::new();
    for round in 0..ROUNDS {
        // AT_ONCE runs archived at the same moment into the same docs/.
        let batch: Vec<String> = (0..AT_ONCE).map(|i| format!("2026-11-25T18-{round:02}-{i:02}Z")).collect();
        let children: Vec<_> = batch
            .iter()
            .map(|stamp| {
                let run = make_run(&runs, stamp, "pass");
                common::xtask()
                    .args(["archive-logs", run.to_str().unwrap(), "--docs-dir", docs.to_str().unwrap()])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        stamps.extend(batch);
    }
    let ledger = fs::read_to_string(docs.join("test-reports/ledger.jsonl")).unwrap();
    let mut runs_in_ledger: Vec<String> = ledger
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["run"].as_str().unwrap().to_string())
        .collect();
    runs_in_ledger.sort();
    assert_eq!(runs_in_ledger, stamps, "every archived run has exactly one ledger line");
    let index = fs::read_to_string(docs.join("test-reports/README.md")).unwrap();
    for stamp in &stamps {
        assert!(index.contains(&format!("| {stamp} |")), "{stamp} missing from the index:\n{index}");
    }
}

#[test]
fn hostile_metadata_cannot_inject_into_the_index_or_bloat_the_ledger() {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, docs) = (tmp.path().join("runs"), tmp.path().join("docs"));
    let run = make_run(&runs, STAMP, "fail");
    let mut meta: Value = serde_json::from_str(&fs::read_to_string(run.join("metadata.json")).unwrap()).unwrap();
    meta["outcome"] = "fail\n\n## Injected heading\n<img src=x onerror=alert(1)>".into();
    meta["verdict"]["finding"] = "a|b\r\n| forged | row |".into();
    meta["qemu"]["accel"] = "x".repeat(5 * 1024 * 1024).into();
    meta["qemu"]["version"] = "<script>alert(1)</script>".into();
    meta["image"]["fault"] = "`](javascript:alert(1))".into();
    meta["finished_at"] = serde_json::json!({"nested": ["y".repeat(100_000)]});
    meta["findings"] = (0..10_000).map(|i| serde_json::json!({"id": format!("id-{i}")})).collect();
    fs::write(run.join("metadata.json"), serde_json::to_string(&meta).unwrap()).unwrap();

    let out = archive(&run, &docs, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ledger = fs::read_to_string(docs.join("test-reports/ledger.jsonl")).unwrap();
    assert_eq!(ledger.lines().count(), 1);
    assert!(ledger.len() < 16 * 1024, "ledger line is {} bytes", ledger.len());
    let index = fs::read_to_string(docs.join("test-reports/README.md")).unwrap();
    assert!(index.len() < 16 * 1024, "index is {} bytes", index.len());
    assert!(!index.contains("<img") && !index.contains("<script"), "{index}");
    assert!(!index.lines().any(|l| l.starts_with("## Injected") || l.starts_with("| forged")), "{index}");
    // The runs table: a header, a separator and one row, each with the same 10 cell borders.
    let table: Vec<&str> = index.lines().skip_while(|l| !l.starts_with("| Run (UTC)")).collect();
    assert_eq!(table.len(), 3, "{index}");
    for row in table {
        let borders = row.char_indices().filter(|&(i, c)| c == '|' && !row[..i].ends_with('\\')).count();
        assert_eq!(borders, 10, "{row}");
    }
}

#[test]
fn symlinks_and_special_files_in_a_run_dir_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (runs, docs) = (tmp.path().join("runs"), tmp.path().join("docs"));
    let outside = tmp.path().join("shadow");
    fs::write(&outside, "root:$y$j9T$OUTSIDE-SECRET:19000:0:99999:7:::\n").unwrap();
    for name in ["serial.log", "transcript.log", "report.md", "metadata.json"] {
        let run = make_run(&runs, STAMP, "pass");
        fs::remove_file(run.join(name)).unwrap();
        std::os::unix::fs::symlink(&outside, run.join(name)).unwrap();
        let out = archive(&run, &docs, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{name}: {err}");
        assert!(err.contains(name) && err.contains("symbolic link"), "{name}: {err}");
        assert!(!docs.exists(), "{name}: nothing written:\n{}", all_text(&docs));
        fs::remove_dir_all(&run).unwrap();
    }
    // A FIFO would block the archiver forever.
    let run = make_run(&runs, STAMP, "pass");
    fs::remove_file(run.join("serial.log")).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(run.join("serial.log")).status().unwrap().success());
    let out = archive(&run, &docs, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("serial.log") && err.contains("not a regular file"), "{err}");
    assert!(!docs.exists());
}

#[test]
fn the_last_screenshot_is_filed_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let run = make_run(tmp.path(), STAMP, "fail");
    let png = fs::read(repo_root().join("xtask/tests/data/screens/no-serial-console.png")).unwrap();
    fs::create_dir(run.join("screens")).unwrap();
    fs::write(run.join("screens/0010s.png"), b"an earlier one").unwrap();
    fs::write(run.join("screen-bootloader.png"), &png).unwrap();
    let mut meta: Value = serde_json::from_slice(&fs::read(run.join("metadata.json")).unwrap()).unwrap();
    meta["screens"] = serde_json::json!([
        {"file": "screens/0010s.png", "reason": "every", "seconds": 10.0},
        {"file": "screen-bootloader.png", "reason": "verdict", "phase": "bootloader", "seconds": 50.2}
    ]);
    fs::write(run.join("metadata.json"), serde_json::to_vec(&meta).unwrap()).unwrap();
    let docs = tmp.path().join("docs");
    let o = archive(&run, &docs, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(fs::read(docs.join(format!("boot-logs/{STAMP}-screen.png"))).unwrap(), png);
    // A record naming a file outside the run directory files nothing.
    meta["screens"] = serde_json::json!([{"file": "../../etc/passwd.png", "reason": "verdict"}]);
    let other_docs = tmp.path().join("other-docs");
    fs::write(run.join("metadata.json"), serde_json::to_vec(&meta).unwrap()).unwrap();
    let o = archive(&run, &other_docs, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!other_docs.join(format!("boot-logs/{STAMP}-screen.png")).exists());
}
