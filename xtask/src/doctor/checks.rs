//! The checks, in report order. Each is a plain function `&Ctx -> Verdict`.

use camino::{Utf8Path, Utf8PathBuf};
use std::time::Duration;
use xshell::cmd;

use super::{profile, profile_io, venv, Ctx, Spec, Verdict};
use crate::accel::{self, Accel, Outcome};
use crate::nix::INSTALL as INSTALL_NIX;
use crate::process::{self, output_within};

const NIX: &str = "Nix";
const PROFILE: &str = "Shell profile";
const VENV: &str = "Python venv";
const QEMU: &str = "QEMU/KVM";
const FIRMWARE: &str = "Firmware";
const DISK: &str = "Disk";
const FIXTURE: &str = "Fixture tools";
const SCREEN: &str = "Screen evidence";

/// Time boxes: generous against the checks' own deadlines, so they fire only on real hangs.
const QUICK: Duration = Duration::from_secs(4);
const PROBE: Duration = Duration::from_secs(90); // the first run may fetch the probe kernel with apt
const BUILD_PROBE: Duration = Duration::from_secs(15); // above the build probe's own 10 s deadline

pub fn all() -> Vec<Spec> {
    let s = |group, name, time_box, run| Spec { group, name, time_box, run };
    vec![
        s(NIX, "nix", QUICK, nix),
        s(NIX, "nix-features", QUICK, nix_features),
        s(NIX, "nix-build", BUILD_PROBE, super::build_probe::nix_build),
        s(PROFILE, "user-env", QUICK, user_env),
        s(PROFILE, "user-guard", QUICK, user_guard),
        s(VENV, "venv", QUICK, venv::exists),
        s(VENV, "venv-active", QUICK, venv::active),
        s(VENV, "venv-requirements", QUICK, venv::requirements),
        s(QEMU, "qemu", QUICK, qemu),
        s(QEMU, "qemu-img", QUICK, qemu_img),
        s(QEMU, "kvm", PROBE, kvm),
        s(QEMU, "tcg", PROBE, tcg),
        s(FIRMWARE, "ovmf", QUICK, ovmf),
        s(DISK, "disk-nix-store", QUICK, disk_nix_store),
        s(DISK, "disk-runs", QUICK, disk_runs),
        s(FIXTURE, "fixture-tools", QUICK, fixture_tools),
        s(SCREEN, "ocr", QUICK, ocr),
    ]
}

const ENABLE_FLAKES: &str =
    "scripts/nix-setup.sh   (or: mkdir -p ~/.config/nix && echo 'extra-experimental-features = nix-command flakes' >> ~/.config/nix/nix.conf)";

fn home() -> Option<Utf8PathBuf> {
    std::env::var("HOME").ok().filter(|h| !h.is_empty()).map(Utf8PathBuf::from)
}

fn nix(_: &Ctx) -> Verdict {
    let Some(found) = crate::nix::locate() else {
        let places: Vec<String> = crate::nix::known_locations().iter().map(|p| p.to_string()).collect();
        return Verdict::fail(format!("nix not on PATH and not at {}", places.join(", ")), INSTALL_NIX);
    };
    let version = match crate::nix::version(&found.path) {
        Ok(line) => crate::nix::version_number(&line).to_string(),
        Err(e) => return Verdict::fail(format!("{e:#}"), INSTALL_NIX),
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < (2, 4) {
        return Verdict::fail(format!("nix {version} at {} is older than 2.4 (no flakes)", found.path), INSTALL_NIX);
    }
    if found.on_path {
        return Verdict::ok(format!("nix {version} at {}", found.path));
    }
    let dir = found.path.parent().map(|d| d.to_string()).unwrap_or_default();
    let fix = if found.path.as_str().contains("/.nix-profile/") {
        profile::MANUAL_RECOVERY.to_string()
    } else {
        format!("export PATH=\"{dir}:$PATH\"")
    };
    Verdict::warn(format!("nix {version} is installed at {} but not on PATH", found.path), fix)
}

/// Reads `experimental-features` from the effective configuration (nix.conf, NIX_CONFIG).
fn nix_features(_: &Ctx) -> Verdict {
    let Some(found) = crate::nix::locate() else { return Verdict::skipped("no nix (see the nix check)") };
    let sh = match process::shell() {
        Ok(sh) => sh,
        Err(e) => return Verdict::fail(format!("{e:#}"), "cd to an existing directory"),
    };
    let nix = &found.path;
    let show = |extra: bool| {
        let extra = extra.then_some(["--extra-experimental-features", "nix-command"]).into_iter().flatten();
        output_within(cmd!(sh, "{nix} {extra...} show-config"), Duration::from_secs(3))
    };
    let first = match show(false) {
        Ok(o) => o,
        Err(e) => return Verdict::fail(format!("{e:#}"), INSTALL_NIX),
    };
    // `show-config` itself needs nix-command; its refusal is the answer for that feature.
    let (nix_command, config) = if first.ok() {
        (true, first.stdout)
    } else if first.stderr.contains("'nix-command' is disabled") {
        match show(true) {
            Ok(o) if o.ok() => (false, o.stdout),
            Ok(o) => return Verdict::fail(format!("nix show-config failed: {}", o.stderr.trim()), INSTALL_NIX),
            Err(e) => return Verdict::fail(format!("{e:#}"), INSTALL_NIX),
        }
    } else {
        return Verdict::fail(format!("nix show-config failed: {}", first.stderr.trim()), INSTALL_NIX);
    };
    let features: Vec<&str> = config
        .lines()
        .find_map(|l| l.strip_prefix("experimental-features = "))
        .map(|v| v.split_whitespace().collect())
        .unwrap_or_default();
    let flakes = features.contains(&"flakes");
    let missing: Vec<&str> =
        [("nix-command", nix_command), ("flakes", flakes)].iter().filter(|(_, on)| !on).map(|(n, _)| *n).collect();
    if missing.is_empty() {
        return Verdict::ok("nix-command and flakes are enabled");
    }
    Verdict::warn(
        format!(
            "not enabled in nix.conf: {} (xtask passes --extra-experimental-features itself; your own `nix build .#…` needs them)",
            missing.join(", ")
        ),
        ENABLE_FLAKES,
    )
}

fn user_env(_: &Ctx) -> Verdict {
    match std::env::var("USER") {
        Ok(u) if !u.is_empty() => Verdict::ok(format!("USER={u}")),
        _ => match home().map(|h| profile_io::nix_sh(&h)).filter(|p| p.exists()) {
            Some(nix_sh) => Verdict::warn(
                format!("USER is unset or empty here: {nix_sh} does nothing in this shell"),
                profile::MANUAL_RECOVERY,
            ),
            None => Verdict::ok("USER is unset or empty here; harmless: no single-user nix.sh to trip over"),
        },
    }
}

/// The profile must set USER before sourcing nix.sh; proved by a USER-less login shell.
fn user_guard(_: &Ctx) -> Verdict {
    let Some(home) = home() else { return Verdict::skipped("HOME is not set") };
    let nix_sh = profile_io::nix_sh(&home);
    if !nix_sh.exists() {
        return Verdict::skipped(format!("no {nix_sh} (no single-user Nix profile): nothing to guard"));
    }
    let file = profile_io::login_file(&home);
    let analysis = match std::fs::read(&file) {
        Ok(bytes) => profile::analyse(&bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => profile::Analysis::default(),
        Err(e) => return Verdict::fail(format!("cannot read {file}: {e}"), format!("ls -l {file}")),
    };
    let bin = home.join(".nix-profile/bin");
    let probe = match login_shell_without_user(&home) {
        Ok(p) => p,
        Err(e) => {
            return Verdict::fail(format!("USER-less login shell probe failed: {e:#}"), "cargo xtask doctor --fix")
        }
    };
    let on_path = probe.path.split(':').any(|d| Utf8Path::new(d) == bin);
    let fix = format!("cargo xtask doctor --fix   (in a broken shell now: {})", profile::MANUAL_RECOVERY);
    match (on_path, analysis.sources_nix_sh, analysis.guarded) {
        (true, Some(line), true) => Verdict::ok(format!("{file} sets USER before nix.sh (line {line}); `env -u USER bash --login` gets {bin}")),
        (true, _, _) => Verdict::ok(format!("`env -u USER bash --login` gets {bin} on PATH")),
        (false, Some(line), false) => Verdict::fail(
            format!(
                "{file} sources nix.sh (line {line}) without the USER guard before it: `env -u USER bash --login` lacks {bin} (nix → {})",
                probe.nix.as_deref().unwrap_or("not found")
            ),
            fix,
        ),
        (false, None, _) => Verdict::warn(
            format!("{file} (the file bash login shells read) does not source nix.sh: login shells lack {bin}"),
            fix,
        ),
        (false, Some(line), true) => Verdict::fail(
            format!("{file} sets USER before nix.sh (line {line}) but `env -u USER bash --login` still lacks {bin}"),
            format!("env -u USER bash --login -x -c true 2>&1 | less   (see what the profile does); then: {}", profile::MANUAL_RECOVERY),
        ),
    }
}

struct LoginProbe {
    path: String,
    nix: Option<String>,
}

/// Runs the user's real login profile with USER removed, as containers and CI do.
fn login_shell_without_user(home: &Utf8Path) -> anyhow::Result<LoginProbe> {
    let sh = process::shell()?;
    sh.change_dir(home);
    let script = r#"printf '%s\n' "$PATH"; command -v nix || true"#;
    let o = output_within(
        cmd!(sh, "bash --login -c {script}").env_remove("USER").env("HOME", home),
        Duration::from_secs(3),
    )?;
    let mut lines = o.stdout.lines().rev();
    // The profile may print; our two lines are the last ones.
    let last = lines.next().unwrap_or("").to_string();
    let (path, nix) = if last.contains('/') && !last.contains(':') && last.ends_with("/nix") {
        (lines.next().unwrap_or("").to_string(), Some(last))
    } else {
        (last, None)
    };
    Ok(LoginProbe { path, nix })
}

fn tool_version(tool: &str, package: &str) -> Verdict {
    let Ok(path) = which::which(tool) else {
        return Verdict::fail(format!("{tool} not found on PATH"), format!("sudo apt-get install {package}"));
    };
    let probe = process::shell().and_then(|sh| output_within(cmd!(sh, "{path} --version"), Duration::from_secs(3)));
    match probe {
        Ok(o) if o.ok() => {
            let first = o.stdout.lines().next().unwrap_or("").trim().to_string();
            Verdict::ok(format!("{first} ({})", path.display()))
        }
        Ok(o) => Verdict::fail(
            format!("{tool} --version failed: {}", o.stderr.trim()),
            format!("sudo apt-get install --reinstall {package}"),
        ),
        Err(e) => Verdict::fail(format!("{e:#}"), format!("sudo apt-get install --reinstall {package}")),
    }
}

fn qemu(_: &Ctx) -> Verdict {
    tool_version("qemu-system-x86_64", "qemu-system-x86")
}

fn qemu_img(_: &Ctx) -> Verdict {
    tool_version("qemu-img", "qemu-utils")
}

/// Common preconditions of the accelerator probes: QEMU and the probe kernel.
fn probe_ready() -> Result<(), Verdict> {
    if which::which("qemu-system-x86_64").is_err() {
        return Err(Verdict::skipped("qemu-system-x86_64 missing (see the qemu check)"));
    }
    accel::probe_kernel().map(|_| ()).map_err(|e| Verdict {
        status: super::Status::Skipped,
        detail: format!("{e:#}"),
        fix: Some("cargo xtask fixture   (fetches the Debian kernel the probe boots; needs apt)".into()),
    })
}

fn kvm(_: &Ctx) -> Verdict {
    if let Err(v) = probe_ready() {
        return v;
    }
    let p = accel::probe(Accel::Kvm);
    if p.usable() {
        return Verdict::ok(format!("KVM runs guests: {}", p.detail));
    }
    let fix = match p.outcome {
        Outcome::NoKvmDevice => {
            "enable VT-x/AMD-V (or nested virtualization for this VM), then: sudo modprobe kvm_intel   # or kvm_amd"
                .into()
        }
        Outcome::KvmDenied => accel::kvm_access_fix(),
        Outcome::Booted | Outcome::Failed => {
            "none on this host (its hypervisor cannot run KVM guests); vm-test --accel auto uses TCG by itself".into()
        }
    };
    Verdict::warn(format!("KVM unusable here: {}; TCG will be used, boots ~5-10x slower", p.detail), fix)
}

fn tcg(_: &Ctx) -> Verdict {
    if let Err(v) = probe_ready() {
        return v;
    }
    let p = accel::probe(Accel::Tcg);
    if p.usable() {
        Verdict::ok(format!("TCG runs guests: {}", p.detail))
    } else {
        Verdict::fail(
            format!("TCG could not boot a kernel: {}", p.detail),
            "sudo apt-get install --reinstall qemu-system-x86   (then: cargo xtask doctor)",
        )
    }
}

fn ovmf(_: &Ctx) -> Verdict {
    for (code, vars) in crate::vm::qemu::OVMF {
        if Utf8Path::new(code).is_file() {
            let vars =
                if !vars.is_empty() && Utf8Path::new(vars).is_file() { format!(" + {vars}") } else { String::new() };
            return Verdict::ok(format!("UEFI firmware {code}{vars}"));
        }
    }
    Verdict::warn("no OVMF firmware: UEFI boots unavailable (BIOS boots work)", "sudo apt-get install ovmf")
}

const GIB: u64 = 1 << 30;

/// Free bytes for unprivileged users on the filesystem holding `path` (or its nearest parent).
fn free_bytes(path: &Utf8Path) -> anyhow::Result<(u64, Utf8PathBuf)> {
    let mut at = path.to_path_buf();
    while !at.exists() {
        at = at.parent().map(Utf8Path::to_path_buf).unwrap_or_else(|| "/".into());
    }
    let c = std::ffi::CString::new(at.as_str())?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string and s a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok((s.f_bavail as u64 * s.f_frsize as u64, at))
}

fn disk_verdict(what: &str, path: &Utf8Path, warn_below: u64, fail_below: u64, fix: &str) -> Verdict {
    match free_bytes(path) {
        Err(e) => Verdict::fail(format!("statvfs {path}: {e}"), format!("df -h {path}")),
        Ok((free, at)) => {
            let detail = format!("{:.1} GiB free for {what} ({at})", free as f64 / GIB as f64);
            if free < fail_below {
                Verdict::fail(format!("{detail}; needs {:.1} GiB", fail_below as f64 / GIB as f64), fix)
            } else if free < warn_below {
                Verdict::warn(format!("{detail}; {:.1} GiB recommended", warn_below as f64 / GIB as f64), fix)
            } else {
                Verdict::ok(detail)
            }
        }
    }
}

fn disk_nix_store(_: &Ctx) -> Verdict {
    // An ISO build keeps its inputs, the squashfs and the ISO in the store: a few GiB.
    disk_verdict("the nix store", Utf8Path::new("/nix/store"), 8 * GIB, 2 * GIB, "nix-collect-garbage -d")
}

fn disk_runs(_: &Ctx) -> Verdict {
    let runs = crate::project::vm_runs_dir();
    let fix = format!("cargo xtask archive-logs --latest, then: rm -rf {runs}/20*");
    // A run holds logs and a sparse scratch disk; 1 GiB is plenty, 2 keeps headroom.
    disk_verdict("vm-test runs", &runs, 2 * GIB, GIB / 2, &fix)
}

/// vm-test always takes a screenshot of a failed run; reading it needs tesseract.
fn ocr(_: &Ctx) -> Verdict {
    match crate::vm::screen::tesseract() {
        Some(path) => Verdict::ok(format!("tesseract at {path}: vm-test reads the screen of a failed run")),
        None => Verdict::warn(
            "tesseract not installed: vm-test still takes screenshots of failed runs but cannot read them",
            "sudo apt-get install tesseract-ocr   (or: sudo scripts/install-deps.sh)",
        ),
    }
}

fn fixture_tools(_: &Ctx) -> Verdict {
    // The fixture's own list, so the two cannot drift apart.
    let needed = crate::fixture::host_files::all();
    let missing: Vec<_> = needed.iter().filter(|f| !Utf8Path::new(f.path).exists()).collect();
    if missing.is_empty() {
        return Verdict::ok(format!("all {} host files the fixture ISO needs are present", needed.len()));
    }
    let mut packages: Vec<&str> = missing.iter().map(|f| f.package).collect();
    packages.sort_unstable();
    packages.dedup();
    let files: Vec<&str> = missing.iter().map(|f| f.path).collect();
    Verdict::warn(
        format!("missing {} (only the fixture ISO for tests/bench needs them)", files.join(", ")),
        format!("sudo apt-get install {}   (or: sudo scripts/install-deps.sh)", packages.join(" ")),
    )
}
