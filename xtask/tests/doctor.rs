//! `cargo xtask doctor` end to end: the USER-guard repair on a temporary HOME with the real
//! upstream nix.sh and a real nix, the KVM/TCG probes on this machine, `--json`, exit codes.
//! Every doctor run gets HOME pointing into a temporary directory: the real ~/.profile is
//! never read or written.

mod common;

use common::{require_tools, xtask};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

const UPSTREAM_NIX_SH: &str = "/usr/share/doc/nix-bin/examples/nix-profile.sh";

struct Home {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Home {
    fn profile(&self) -> PathBuf {
        self.path.join(".profile")
    }
    fn bin(&self) -> PathBuf {
        self.path.join(".nix-profile/bin")
    }
}

/// A home like a single-user Nix install leaves it: the upstream nix.sh, a nix binary in the
/// profile, and `~/.profile` sourcing nix.sh the way the Nix installer writes it.
fn nix_home(test: &str) -> Option<Home> {
    if !require_tools(test, &["nix", "bash", "qemu-system-x86_64"]) {
        return None;
    }
    assert!(
        Path::new(UPSTREAM_NIX_SH).exists() || !common::in_ci(),
        "{UPSTREAM_NIX_SH} missing: install nix-bin (scripts/install-deps.sh)"
    );
    if !Path::new(UPSTREAM_NIX_SH).exists() {
        eprintln!("SKIP {test}: {UPSTREAM_NIX_SH} missing (apt-get install nix-bin)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let profile_d = path.join(".nix-profile/etc/profile.d");
    std::fs::create_dir_all(&profile_d).unwrap();
    std::fs::copy(UPSTREAM_NIX_SH, profile_d.join("nix.sh")).unwrap();
    std::fs::create_dir_all(path.join(".nix-profile/bin")).unwrap();
    let real_nix = which::which("nix").unwrap().canonicalize().unwrap();
    std::os::unix::fs::symlink(real_nix, path.join(".nix-profile/bin/nix")).unwrap();
    let nix_sh = profile_d.join("nix.sh");
    let line = format!(
        "# ~/.profile: executed by login shells\nexport EDITOR=vi\nif [ -e {0} ]; then . {0}; fi # added by Nix installer\n",
        nix_sh.display()
    );
    std::fs::write(path.join(".profile"), line).unwrap();
    Some(Home { _dir: dir, path })
}

/// What a USER-less login shell sees: its PATH and where `nix` resolves.
fn login_without_user(home: &Home) -> (Vec<PathBuf>, String) {
    let out = Command::new("env")
        .args(["-u", "USER"])
        .arg(format!("HOME={}", home.path.display()))
        .args(["bash", "--login", "-c", r#"printf '%s\n' "$PATH"; command -v nix || echo none"#])
        .current_dir(&home.path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines().rev();
    let nix = lines.next().unwrap_or("").to_string();
    let path = lines.next().unwrap_or("").split(':').map(PathBuf::from).collect();
    (path, nix)
}

fn doctor(home: &Home, args: &[&str]) -> Output {
    let t = Instant::now();
    let out = xtask()
        .arg("doctor")
        .args(args)
        .env("HOME", &home.path)
        .env_remove("USER")
        .env_remove("VIRTUAL_ENV")
        .output()
        .unwrap();
    eprintln!(
        "cargo xtask doctor {} took {:.2}s (exit {:?})",
        args.join(" "),
        t.elapsed().as_secs_f64(),
        out.status.code()
    );
    out
}

fn checks(out: &Output) -> Vec<serde_json::Value> {
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("--json must parse: {e}\n{text}"));
    v.as_array().expect("--json prints one array").clone()
}

fn check<'a>(all: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    all.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no check {name} in {all:?}"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn user_guard_fix_end_to_end() {
    let Some(home) = nix_home("user_guard_fix_end_to_end") else { return };
    let original = std::fs::read(home.profile()).unwrap();
    let profile_nix = home.bin().join("nix");

    // Broken: with USER unset, nix.sh does nothing; the login shell lacks the profile's bin.
    // (/usr/bin/nix from Debian's nix-bin may still be found: the profile's bin dir is the proof.)
    let (path, nix) = login_without_user(&home);
    assert!(!path.contains(&home.bin()), "before --fix the USER-less login shell must lack {:?}: {path:?}", home.bin());
    assert_ne!(PathBuf::from(&nix), profile_nix);

    let before = doctor(&home, &["--json"]);
    assert_eq!(before.status.code(), Some(1), "doctor must fail the USER guard: {}", stdout(&before));
    let all = checks(&before);
    let guard = check(&all, "user-guard");
    assert_eq!(guard["status"], "fail", "{guard}");
    assert!(guard["detail"].as_str().unwrap().contains("without the USER guard"), "{guard}");
    assert!(guard["fix"].as_str().unwrap().contains("cargo xtask doctor --fix"), "{guard}");
    assert!(guard["fix"]
        .as_str()
        .unwrap()
        .contains(r#"export USER=$(id -un); . "$HOME/.nix-profile/etc/profile.d/nix.sh""#));
    assert_eq!(check(&all, "user-env")["status"], "warn");

    // Dry run: shows the diff, writes nothing.
    let dry = doctor(&home, &["--fix", "--dry-run"]);
    assert_eq!(dry.status.code(), Some(0));
    assert!(stdout(&dry).contains(r#"+export USER="${USER:-$(id -un)}""#), "{}", stdout(&dry));
    assert_eq!(std::fs::read(home.profile()).unwrap(), original);

    let fix = doctor(&home, &["--fix"]);
    assert_eq!(fix.status.code(), Some(0), "{}{}", stdout(&fix), String::from_utf8_lossy(&fix.stderr));
    assert!(stdout(&fix).contains("added the USER guard before the existing nix.sh line 3"), "{}", stdout(&fix));
    let fixed = std::fs::read(home.profile()).unwrap();
    let text = String::from_utf8_lossy(&fixed);
    assert_eq!(
        text.matches("profile.d/nix.sh").count(),
        2,
        "guard goes before the installer line, no second sourcing:\n{text}"
    );
    assert!(home.path.join(".profile.nixos-boot-iso.bak").exists(), "one backup before the first change");

    // Fixed: the same USER-less login shell now gets the profile's nix.
    let (path, nix) = login_without_user(&home);
    assert!(path.contains(&home.bin()), "after --fix the login shell must have {:?}: {path:?}", home.bin());
    assert_eq!(PathBuf::from(&nix), profile_nix);
    let after = doctor(&home, &["--json"]);
    let all = checks(&after);
    assert_eq!(check(&all, "user-guard")["status"], "ok", "{}", check(&all, "user-guard"));
    let failing: Vec<_> = all.iter().filter(|c| c["status"] == "fail").collect();
    assert!(failing.is_empty(), "nothing else may fail on this machine: {failing:?}");
    assert_eq!(after.status.code(), Some(0));

    // Idempotent: a second --fix changes nothing and says so.
    let again = doctor(&home, &["--fix"]);
    assert_eq!(again.status.code(), Some(0));
    assert!(stdout(&again).contains("nothing changed"), "{}", stdout(&again));
    assert_eq!(std::fs::read(home.profile()).unwrap(), fixed, "second --fix must leave the file byte-identical");

    // Revert restores the original bytes.
    let revert = doctor(&home, &["--revert"]);
    assert_eq!(revert.status.code(), Some(0), "{}", stdout(&revert));
    assert_eq!(std::fs::read(home.profile()).unwrap(), original);
    let nothing = doctor(&home, &["--revert"]);
    assert!(stdout(&nothing).contains("nothing to revert"), "{}", stdout(&nothing));
}

#[test]
fn fix_preserves_odd_files_byte_for_byte() {
    let Some(home) = nix_home("fix_preserves_odd_files_byte_for_byte") else { return };
    use std::os::unix::fs::PermissionsExt;
    let cases: [(&str, &[u8], u32); 5] = [
        ("no trailing newline", b"export A=1", 0o644),
        ("crlf", b"export A=1\r\nexport B=2\r\n", 0o644),
        ("unicode", "# grüße ✓ 日本\nexport N=\"Zoë\"\n".as_bytes(), 0o600),
        ("read-only", b"export A=1\n", 0o444),
        ("empty", b"", 0o644),
    ];
    for (what, bytes, mode) in cases {
        let _ = std::fs::remove_file(home.path.join(".profile.nixos-boot-iso.bak"));
        let _ = std::fs::remove_file(home.profile());
        std::fs::write(home.profile(), bytes).unwrap();
        std::fs::set_permissions(home.profile(), std::fs::Permissions::from_mode(mode)).unwrap();
        assert_eq!(doctor(&home, &["--fix"]).status.code(), Some(0), "{what}");
        let fixed = std::fs::read(home.profile()).unwrap();
        assert!(fixed.starts_with(bytes), "{what}: the original bytes come first");
        assert_eq!(std::fs::metadata(home.profile()).unwrap().permissions().mode() & 0o777, mode, "{what}: mode kept");
        let (path, _) = login_without_user(&home);
        assert!(path.contains(&home.bin()), "{what}: fixed profile works: {path:?}");
        assert_eq!(doctor(&home, &["--fix"]).status.code(), Some(0));
        assert_eq!(std::fs::read(home.profile()).unwrap(), fixed, "{what}: idempotent");
        assert_eq!(doctor(&home, &["--revert"]).status.code(), Some(0));
        assert_eq!(std::fs::read(home.profile()).unwrap(), bytes, "{what}: revert restores every byte");
        assert_eq!(std::fs::metadata(home.profile()).unwrap().permissions().mode() & 0o777, mode, "{what}: mode kept");
    }
}

#[test]
fn symlink_to_a_file_we_do_not_own_is_refused() {
    let Some(home) = nix_home("symlink_to_a_file_we_do_not_own_is_refused") else { return };
    let theirs = home.path.join("theirs.profile");
    std::fs::write(&theirs, b"export A=1\n").unwrap();
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    } else {
        eprintln!("SKIP symlink test: needs root to create a file owned by someone else");
        return;
    }
    std::fs::remove_file(home.profile()).unwrap();
    std::os::unix::fs::symlink(&theirs, home.profile()).unwrap();
    let out = doctor(&home, &["--fix"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("symlink") && err.contains("do not own"), "{err}");
    assert_eq!(std::fs::read(&theirs).unwrap(), b"export A=1\n");
}

#[test]
fn accelerators_json_and_plain_output_on_this_machine() {
    let Some(home) = nix_home("accelerators_json_and_plain_output_on_this_machine") else { return };
    let out = doctor(&home, &["--json"]);
    let all = checks(&out);
    let mut names = std::collections::BTreeSet::new();
    for c in &all {
        for key in ["name", "status", "detail", "fix"] {
            assert!(c.get(key).is_some(), "{key} missing in {c}");
        }
        assert!(names.insert(c["name"].as_str().unwrap().to_string()), "duplicate {c}");
        let status = c["status"].as_str().unwrap();
        assert!(["ok", "warn", "fail", "skipped"].contains(&status), "{c}");
        if status == "warn" || status == "fail" {
            assert!(c["fix"].as_str().is_some_and(|f| !f.is_empty()), "not ok needs a fix: {c}");
        }
        if status == "ok" {
            assert!(c["fix"].is_null(), "{c}");
        }
    }
    for name in [
        "nix",
        "nix-features",
        "user-env",
        "user-guard",
        "venv",
        "qemu",
        "qemu-img",
        "kvm",
        "tcg",
        "ovmf",
        "disk-nix-store",
        "disk-runs",
        "fixture-tools",
    ] {
        assert!(names.contains(name), "check {name} missing");
    }

    // TCG boots the probe kernel; KVM is judged by the same boot, never by /dev/kvm alone.
    let tcg = check(&all, "tcg");
    assert_eq!(tcg["status"], "ok", "{tcg}");
    assert!(tcg["detail"].as_str().unwrap().contains("Linux version"), "{tcg}");
    // The fast path: the ELF kernel extracted from Debian's xz bzImage, booted via PVH.
    assert!(tcg["detail"].as_str().unwrap().starts_with("TCG runs guests: kernel printed"), "{tcg}");
    let kvm = check(&all, "kvm");
    let detail = kvm["detail"].as_str().unwrap();
    match kvm["status"].as_str().unwrap() {
        "ok" => assert!(detail.contains("Linux version"), "{kvm}"),
        "warn" => {
            assert!(
                detail.starts_with("KVM unusable here: ") && detail.ends_with("TCG will be used, boots ~5-10x slower"),
                "{kvm}"
            );
            eprintln!("kvm on this machine: {detail}");
        }
        other => panic!("kvm must be ok or warn, got {other}: {kvm}"),
    }

    // Not a TTY: plain text, no escapes, a group header and the summary line.
    let plain = doctor(&home, &[]);
    let text = stdout(&plain);
    assert!(!text.contains('\x1b'), "{text}");
    assert!(text.contains("QEMU/KVM\n") && text.contains("[ok]   tcg"), "{text}");
    assert!(text.lines().last().unwrap().starts_with("doctor: "), "{text}");
}

#[test]
fn venv_checks_follow_repo() {
    let Some(home) = nix_home("venv_checks_follow_repo") else { return };
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(repo.path().join("requirements-dev.txt"), "pytest\n").unwrap();
    let out = doctor(&home, &["--json", "--repo", repo.path().to_str().unwrap()]);
    let all = checks(&out);
    assert_eq!(check(&all, "venv")["status"], "warn");
    assert!(check(&all, "venv")["fix"].as_str().unwrap().contains("python3 -m venv"));
    assert_eq!(check(&all, "venv-requirements")["status"], "skipped");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["doctor", "--bogus"][..],
        &["doctor", "--dry-run"],
        &["doctor", "--fix", "--revert"],
        &["doctor", "--json", "--fix"],
        &["doctor", "--repo", "/nonexistent/dir"],
    ] {
        let out = xtask().args(args).env("HOME", "/nonexistent-home").output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let help = xtask().args(["doctor", "--help"]).output().unwrap();
    assert_eq!(help.status.code(), Some(0));
    for flag in ["--json", "--fix", "--revert", "--dry-run", "--repo"] {
        assert!(stdout(&help).contains(flag), "--help lists {flag}");
    }
}

#[test]
fn nix_setup_script_is_idempotent_and_enables_flakes() {
    let Some(home) = nix_home("nix_setup_script_is_idempotent_and_enables_flakes") else { return };
    let script = common::repo_root().join("scripts/nix-setup.sh");
    if require_tools("nix_setup_script shellcheck", &["shellcheck"]) {
        let sc = Command::new("shellcheck").arg(&script).output().unwrap();
        assert!(sc.status.success(), "shellcheck: {}", String::from_utf8_lossy(&sc.stdout));
    }
    let run = || {
        let out = Command::new(&script)
            .env("HOME", &home.path)
            .env_remove("USER")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("NIX_CONFIG")
            .env("XTASK", env!("CARGO_BIN_EXE_xtask"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
        stdout(&out)
    };
    let first = run();
    assert!(first.contains("nix-command and flakes"), "{first}");
    let profile = std::fs::read(home.profile()).unwrap();
    let second = run();
    assert!(second.contains("already enabled") && second.contains("nothing changed"), "{second}");
    assert_eq!(std::fs::read(home.profile()).unwrap(), profile);
    let conf = std::fs::read_to_string(home.path.join(".config/nix/nix.conf")).unwrap();
    assert_eq!(conf.matches("experimental-features").count(), 1, "{conf}");
    let after = checks(&doctor(&home, &["--json"]));
    assert_eq!(check(&after, "nix-features")["status"], "ok");
    assert_eq!(check(&after, "user-guard")["status"], "ok");
    assert!(second.contains("nixbld group and 10 build users present"), "{second}");
    assert_eq!(check(&after, "nix-build")["status"], "ok", "{:?}", check(&after, "nix-build"));
}

/// Processes whose command line is exactly `args` (NUL-separated in /proc/PID/cmdline) and
/// that do not exit within 5 s (a SIGKILL takes effect asynchronously; zombies have no cmdline).
fn processes_running(args: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = args.iter().flat_map(|a| a.bytes().chain([0])).collect();
    let end = Instant::now() + std::time::Duration::from_secs(5);
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .filter(|&pid| {
            // SAFETY: pidfd_open(2) returns a new descriptor (closed below) or -1.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
            if fd < 0 {
                return false; // gone already
            }
            let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            let ms = end.saturating_duration_since(Instant::now()).as_millis() as i32;
            // SAFETY: one valid pollfd during the call; fd is ours to close.
            let ready = unsafe { libc::poll(&mut p, 1, ms) };
            unsafe { libc::close(fd) };
            ready == 0
        })
        .collect()
}

/// Runs doctor --json and returns its output and the peak RSS (KiB) of it and everything it
/// waited for. PATH holds only bash and id: the QEMU probes are skipped (their RSS would hide
/// doctor's own), the login probe still runs.
#[allow(clippy::zombie_processes)] // reaped by wait4 below, which also reports the peak RSS
fn doctor_peak_rss(home: &Home) -> (Output, i64) {
    let bin = home.path.join("only-bash");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["bash", "id"] {
        let _ = std::os::unix::fs::symlink(which::which(tool).unwrap(), bin.join(tool));
    }
    let mut child = xtask()
        .args(["doctor", "--json"])
        .env("HOME", &home.path)
        .env("PATH", &bin)
        .env_remove("USER")
        .env_remove("VIRTUAL_ENV")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    use std::io::Read;
    child.stdout.take().unwrap().read_to_end(&mut stdout).unwrap();
    child.stderr.take().unwrap().read_to_end(&mut stderr).unwrap();
    let mut status = 0;
    // SAFETY: plain out-parameters; the child is ours and not yet reaped.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32, "wait4: {}", std::io::Error::last_os_error());
    use std::os::unix::process::ExitStatusExt;
    (Output { status: std::process::ExitStatus::from_raw(status), stdout, stderr }, usage.ru_maxrss)
}

#[test]
fn login_probe_leaves_nothing_running_and_keeps_little_output() {
    let Some(home) = nix_home("login_probe_leaves_nothing_running_and_keeps_little_output") else { return };
    assert_eq!(doctor(&home, &["--fix"]).status.code(), Some(0));
    // A profile that starts background jobs (one keeps the probe's stdout open, one does not)
    // and prints 100 MB before the probe's own lines.
    let seconds = format!("300.{}", std::process::id());
    let mut profile = std::fs::read(home.profile()).unwrap();
    profile.extend_from_slice(
        format!("sleep {seconds} &\n(sleep {seconds} >/dev/null 2>&1 &)\nhead -c 100000000 /dev/zero; echo\n")
            .as_bytes(),
    );
    std::fs::write(home.profile(), profile).unwrap();
    let t = Instant::now();
    let (out, peak_kib) = doctor_peak_rss(&home);
    let took = t.elapsed();
    let left = processes_running(&["sleep", &seconds]);
    for pid in &left {
        // SAFETY: kill(2) on processes this test started (their command line carries its tag).
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    eprintln!("doctor took {:.2}s, peak RSS {} KiB, left running: {left:?}", took.as_secs_f64(), peak_kib);
    let all = checks(&out);
    let guard = check(&all, "user-guard");
    assert!(left.is_empty(), "the probe left the profile's background jobs running: {left:?}");
    assert_eq!(guard["status"], "ok", "the probe ends with bash, not with the jobs it left: {guard}");
    assert!(peak_kib < 64 * 1024, "doctor kept the profile's 100 MB of output: peak RSS {peak_kib} KiB");
}

#[test]
fn lines_added_inside_the_block_survive_fix_and_revert() {
    let Some(home) = nix_home("lines_added_inside_the_block_survive_fix_and_revert") else { return };
    let original = String::from_utf8(std::fs::read(home.profile()).unwrap()).unwrap();
    assert_eq!(doctor(&home, &["--fix"]).status.code(), Some(0));
    let guard = r#"export USER="${USER:-$(id -un)}""#;
    let fixed = String::from_utf8(std::fs::read(home.profile()).unwrap()).unwrap();
    let with_mine = fixed.replace(&format!("{guard}\n"), &format!("{guard}\nexport MINE=1\n"));
    assert_ne!(with_mine, fixed);
    let mine_line = with_mine.lines().position(|l| l == "export MINE=1").unwrap() + 1;

    // --revert keeps the line where the block was and names it.
    std::fs::write(home.profile(), &with_mine).unwrap();
    let out = doctor(&home, &["--revert"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains(&format!(
            "kept 1 line you had added inside it, where the block was: line {mine_line} `export MINE=1`"
        )),
        "{}",
        stdout(&out)
    );
    let installer = original.lines().position(|l| l.ends_with("# added by Nix installer")).unwrap();
    let mut expect: Vec<&str> = original.lines().collect();
    expect.insert(installer, "export MINE=1");
    assert_eq!(std::fs::read_to_string(home.profile()).unwrap(), format!("{}\n", expect.join("\n")));

    // --fix moves it below the block, says so, and the profile still works.
    std::fs::write(home.profile(), &with_mine).unwrap();
    let out = doctor(&home, &["--fix"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains(&format!(
            "moved 1 line you had added inside the block to right below it: line {mine_line} `export MINE=1`"
        )),
        "{}",
        stdout(&out)
    );
    let moved = std::fs::read_to_string(home.profile()).unwrap();
    assert!(moved.contains("<<< nixos-boot-iso: nix USER guard <<<\nexport MINE=1\nif [ -e "), "{moved}");
    let (path, _) = login_without_user(&home);
    assert!(path.contains(&home.bin()), "{path:?}");
    assert!(stdout(&doctor(&home, &["--fix"])).contains("nothing changed"));
}
