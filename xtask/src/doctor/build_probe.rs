//! Can nix build here? Proved like the KVM probe: by doing it. A temporary local flake with one
//! input-less derivation (`builtin:buildenv`, run by nix itself, so nothing from the host's
//! /bin is needed and nix's sandbox may be on) is built with substituters off, under a deadline.
//! That exercises what a real build needs before its first compiler runs: the store lock and
//! database, the build users of `build-users-group` (as root) or the nix-daemon (as a user), the
//! sandbox, and registering an output. A nonce makes every probe a real build, never a cache hit.

use std::time::{Duration, Instant};

use camino::Utf8PathBuf;
use xshell::cmd;

use super::{Ctx, Verdict};
use crate::nix;
use crate::process::{self, output_within};

/// A trivial build takes ~0.1 s here; a deadline far above that fires only on a real hang
/// (a stuck daemon, a store lock held by another nix).
const DEADLINE: Duration = Duration::from_secs(10);

pub fn nix_build(_: &Ctx) -> Verdict {
    let Some(found) = nix::locate() else { return Verdict::skipped("no nix (see the nix check)") };
    let dir = match ProbeDir::create() {
        Ok(d) => d,
        Err(e) => return Verdict::fail(format!("cannot write the probe flake: {e:#}"), "check TMPDIR and /tmp"),
    };
    let sh = match process::shell() {
        Ok(sh) => sh,
        Err(e) => return Verdict::fail(format!("{e:#}"), "cd to an existing directory"),
    };
    let (nix, features, installable) = (&found.path, nix::FEATURE_FLAGS, format!("path:{}#probe", dir.0));
    let shown = format!("{} build path:{}#probe --no-link --option substituters ''", found.path, dir.0);
    let started = Instant::now();
    let build = cmd!(sh, "{nix} {features...} build {installable} --no-link --json --option substituters ''");
    let out = match output_within(build, DEADLINE) {
        Ok(o) => o,
        Err(e) => {
            return Verdict::fail(
                format!("a trivial nix build did not finish: {e:#}"),
                "another nix may hold the store lock, or the nix-daemon hangs: `ps aux | grep [n]ix`",
            )
        }
    };
    let took = started.elapsed().as_millis();
    if out.ok() {
        let how = if is_root() { "as root, through nix's build users" } else { "through the nix-daemon" };
        return Verdict::ok(format!("nix can build: a trivial derivation built {how} in {took} ms"));
    }
    match nix::recognise(out.stderr.lines()).into_iter().next() {
        Some(problem) => Verdict::fail(format!("nix cannot build: {}", problem.cause()), problem.fix()),
        None => {
            let last =
                out.stderr.lines().rev().find(|l| l.trim_start().starts_with("error:")).unwrap_or("no error line");
            Verdict::fail(
                format!("nix cannot build a trivial derivation: {}", last.trim()),
                format!("run it yourself to see everything: {shown}"),
            )
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The probe flake's directory, removed on drop.
struct ProbeDir(Utf8PathBuf);

impl ProbeDir {
    fn create() -> anyhow::Result<Self> {
        let nonce = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos()
        );
        let tmp = Utf8PathBuf::from_path_buf(std::env::temp_dir())
            .map_err(|p| anyhow::anyhow!("TMPDIR is not UTF-8: {}", p.display()))?;
        let dir = tmp.join(format!("xtask-doctor-build-probe-{nonce}"));
        fs_err::create_dir(&dir)?;
        let probe = ProbeDir(dir);
        fs_err::write(probe.0.join("flake.nix"), flake_text(&nonce))?;
        Ok(probe)
    }
}

impl Drop for ProbeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// builtin:buildenv with no packages makes an output holding one (dangling) symlink.
fn flake_text(nonce: &str) -> String {
    let system = format!("{}-linux", std::env::consts::ARCH);
    format!(
        r#"{{
  outputs = {{ self }}: {{
    probe = derivation {{
      name = "xtask-doctor-build-probe";
      system = "{system}";
      builder = "builtin:buildenv";
      derivations = [ ];
      manifest = "/dev/null";
      nonce = "{nonce}";
    }};
  }};
}}
"#
    )
}
