//! Finding nix, also when it is not on PATH, asking its version, and what to do when it is
//! missing (shared by `doctor` and `build-image`).

use camino::{Utf8Path, Utf8PathBuf};
use std::time::Duration;

/// A nix binary and how it was found.
#[derive(Clone, Debug)]
pub struct NixBinary {
    pub path: Utf8PathBuf,
    /// False when found only at a well-known install location, not via PATH.
    pub on_path: bool,
}

/// Well-known install locations, in the order a user would expect them to win.
pub fn known_locations() -> Vec<Utf8PathBuf> {
    let mut v = Vec::new();
    if let Some(home) = std::env::var_os("HOME").and_then(|h| Utf8PathBuf::from_path_buf(h.into()).ok()) {
        v.push(home.join(".nix-profile/bin/nix"));
    }
    v.push("/nix/var/nix/profiles/default/bin/nix".into());
    v.push("/run/current-system/sw/bin/nix".into());
    v.push("/usr/bin/nix".into());
    v.push("/usr/local/bin/nix".into());
    v
}

/// Finds nix on PATH, else at a known location.
pub fn locate() -> Option<NixBinary> {
    if let Ok(p) = which::which("nix") {
        if let Ok(path) = Utf8PathBuf::from_path_buf(p) {
            return Some(NixBinary { path, on_path: true });
        }
    }
    known_locations().into_iter().find(|p| is_executable(p)).map(|path| NixBinary { path, on_path: false })
}

fn is_executable(p: &Utf8Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// How to install nix: doctor's fix line, and part of build-image's advice.
pub const INSTALL: &str = "scripts/nix-setup.sh   (or: sudo apt-get install nix-bin)";

/// nix is nowhere (exit 3): where we looked, how to install it, and the USER trap that hides
/// an installed single-user nix.
pub fn not_found() -> anyhow::Error {
    let looked: Vec<String> = known_locations().iter().map(|p| format!("  {p}")).collect();
    crate::exit::infra(format!(
        "nix not found: not on PATH and not at any known location:\n{}\n\
         fix: install it with {INSTALL}, or `sudo scripts/install-deps.sh`; \
         elsewhere https://nixos.org/download. If nix is installed in ~/.nix-profile but your shell \
         does not find it, your profile script was skipped because USER is unset: put \
         `export USER=\"${{USER:-$(id -un)}}\"` before the line that sources nix.sh. \
         `cargo xtask doctor` checks all of this.",
        looked.join("\n")
    ))
}

/// `nix --version`'s line, e.g. `nix (Nix) 2.8.0`, asked within 3 s (a broken nix must not
/// hang anyone). The error names the command and what it said.
pub fn version(nix: &Utf8Path) -> anyhow::Result<String> {
    let sh = crate::process::shell()?;
    let out = crate::process::output_within(xshell::cmd!(sh, "{nix} --version"), Duration::from_secs(3))?;
    if !out.ok() {
        anyhow::bail!("{nix} --version failed: {}", out.stderr.trim());
    }
    Ok(out.stdout.trim().to_string())
}

/// The version number at the end of `nix --version`'s line: `2.8.0`.
pub fn version_number(line: &str) -> &str {
    line.split_whitespace().last().unwrap_or("?")
}

/// The flags that make flakes work on any nix from 2.4 on, whatever nix.conf says.
pub const FEATURE_FLAGS: [&str; 2] = ["--extra-experimental-features", "nix-command flakes"];

/// Something in nix's own `error:` lines that has a known cause and fix. Matched against the
/// error lines only (never against warnings: nix warns about an unreachable binary cache on
/// every offline build) and each against the wording it is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// `the group 'nixbld' specified in 'build-users-group' does not exist`
    BuildGroupMissing { group: String },
    /// Not root, the store belongs to root, and no nix-daemon was asked.
    StoreNotWritable { detail: String },
    /// `cannot connect to socket at '…/daemon-socket/socket'`
    DaemonUnreachable { detail: String },
    /// The builder could not be sandboxed (namespaces refused, e.g. in a container).
    SandboxUnavailable { detail: String },
    /// `experimental Nix feature 'flakes' is disabled`
    FeatureDisabled { feature: String },
    /// A download that the build needs failed (GitHub for nixpkgs, a binary cache).
    HostUnreachable { detail: String },
    /// A file of a flake's source is missing from the store copy (untracked in git).
    SourceFileMissing { path: String },
}

impl Problem {
    /// Problems of this machine's set-up or network, not of the flake: exit 3.
    pub fn is_infrastructure(&self) -> bool {
        !matches!(self, Problem::SourceFileMissing { .. })
    }

    /// One line: what is wrong.
    pub fn cause(&self) -> String {
        match self {
            Problem::BuildGroupMissing { group } => format!(
                "nix builds as root through the build users of group `{group}`, and that group does not exist \
                 (Debian's nix-bin does not create it)"
            ),
            Problem::StoreNotWritable { detail } => {
                format!("the nix store belongs to root and no nix-daemon builds for this user ({detail})")
            }
            Problem::DaemonUnreachable { detail } => format!("no nix-daemon answers ({detail})"),
            Problem::SandboxUnavailable { detail } => format!("nix cannot sandbox the builder here ({detail})"),
            Problem::FeatureDisabled { feature } => format!("nix's experimental feature `{feature}` is off"),
            Problem::HostUnreachable { detail } => format!("nix could not download something it needs ({detail})"),
            Problem::SourceFileMissing { path } => {
                format!("{path} is missing from the flake's source: a flake in git shows nix only tracked files")
            }
        }
    }

    /// The command (or edit) that fixes it.
    pub fn fix(&self) -> String {
        match self {
            Problem::BuildGroupMissing { .. } => {
                "sudo scripts/nix-setup.sh   (creates the nixbld group and build users, as Nix's installer does; \
                 or: sudo scripts/install-deps.sh)"
                    .into()
            }
            Problem::StoreNotWritable { .. } | Problem::DaemonUnreachable { .. } => {
                "scripts/nix-setup.sh   (with systemd: installs Debian's nix-setup-systemd daemon and adds you to \
                 nix-users; without: start one as root, `sudo nix-daemon &`), or build as root"
                    .into()
            }
            Problem::SandboxUnavailable { .. } => {
                "echo 'sandbox = false' | sudo tee -a /etc/nix/nix.conf   (or pass --option sandbox false)".into()
            }
            Problem::FeatureDisabled { .. } => format!("pass {} '{}'", FEATURE_FLAGS[0], FEATURE_FLAGS[1]),
            Problem::HostUnreachable { .. } => {
                "check the network or proxy; or build on a machine that reaches it (--builders, docs/build-image.md)"
                    .into()
            }
            Problem::SourceFileMissing { .. } => "`git add` the new file(s), then build again".into(),
        }
    }
}

/// The known problems in nix's messages, in order, each once. Lines that are not errors
/// (`warning: …`, progress) are ignored.
pub fn recognise<'a>(messages: impl IntoIterator<Item = &'a str>) -> Vec<Problem> {
    let mut found: Vec<Problem> = Vec::new();
    for m in messages {
        let Some(error) = m.trim_start().strip_prefix("error:") else { continue };
        if let Some(p) = recognise_error(error.trim()) {
            if !found.contains(&p) {
                found.push(p);
            }
        }
    }
    found
}

fn recognise_error(e: &str) -> Option<Problem> {
    use regex::Regex;
    use std::sync::LazyLock;
    static GROUP: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"the group '([^']+)' specified in 'build-users-group' does not exist").expect("valid")
    });
    static SOURCE: LazyLock<Regex> = LazyLock::new(|| {
        // newer nix: path '/nix/store/…-source/x' does not exist; 2.8: getting status of '…': No such file
        Regex::new(r"(?:path|getting status of) '(/nix/store/[0-9a-z]{32}-source/[^']*)'(?: does not exist|: No such file or directory)")
            .expect("valid")
    });
    static FEATURE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"experimental Nix feature '([^']+)' is disabled").expect("valid"));
    let detail = || e.lines().next().unwrap_or(e).trim().to_string();
    if let Some(c) = GROUP.captures(e) {
        return Some(Problem::BuildGroupMissing { group: c[1].to_string() });
    }
    if let Some(c) = SOURCE.captures(e) {
        return Some(Problem::SourceFileMissing { path: c[1].to_string() });
    }
    if let Some(c) = FEATURE.captures(e) {
        return Some(Problem::FeatureDisabled { feature: c[1].to_string() });
    }
    if e.contains("daemon-socket/socket") && e.contains("cannot connect to socket") {
        return Some(Problem::DaemonUnreachable { detail: detail() });
    }
    let under_nix = e.contains("'/nix/");
    if under_nix && (e.contains("Permission denied") || e.contains("Operation not permitted")) {
        return Some(Problem::StoreNotWritable { detail: detail() });
    }
    if ["cloning builder process", "sandbox", "mount namespace", "user namespace"].iter().any(|s| e.contains(s))
        && (e.contains("Operation not permitted") || e.contains("not supported") || e.contains("Invalid argument"))
    {
        return Some(Problem::SandboxUnavailable { detail: detail() });
    }
    let fetch = ["unable to download", "Couldn't resolve host", "Could not resolve host", "Failed to connect"];
    if fetch.iter().any(|s| e.contains(s)) || (e.contains("Connection refused") && !under_nix) {
        return Some(Problem::HostUnreachable { detail: detail() });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Option<Problem> {
        let mut all = recognise([line]);
        assert!(all.len() <= 1, "{all:?}");
        all.pop()
    }

    // Every rule, with the exact text nix 2.8 prints (recorded here), and the lines it must not claim.
    #[test]
    fn version_number_is_the_last_word() {
        assert_eq!(version_number("nix (Nix) 2.8.0"), "2.8.0");
        assert_eq!(version_number(""), "?");
    }

    #[test]
    fn build_group_missing_is_recognised_and_not_taken_for_a_missing_source_file() {
        let line = "error: the group 'nixbld' specified in 'build-users-group' does not exist";
        assert_eq!(one(line), Some(Problem::BuildGroupMissing { group: "nixbld".into() }));
        // The same words as a warning (nix prints both) are not a second finding.
        assert_eq!(recognise([&line.replace("error:", "warning:") as &str, line]).len(), 1);
    }

    #[test]
    fn store_and_daemon_problems() {
        let l = "error: could not set permissions on '/nix/var/nix/profiles/per-user' to 755: Operation not permitted";
        assert!(matches!(one(l), Some(Problem::StoreNotWritable { .. })));
        let l = "error: opening lock file '/nix/var/nix/db/big-lock': Permission denied";
        assert!(matches!(one(l), Some(Problem::StoreNotWritable { .. })));
        let l = "error: cannot connect to socket at '/nix/var/nix/daemon-socket/socket': Connection refused";
        assert!(matches!(one(l), Some(Problem::DaemonUnreachable { .. })));
    }

    #[test]
    fn sandbox_and_features() {
        let l = "error: cloning builder process: Operation not permitted";
        assert!(matches!(one(l), Some(Problem::SandboxUnavailable { .. })));
        let l = "error: experimental Nix feature 'flakes' is disabled; use '--extra-experimental-features flakes' to override";
        assert_eq!(one(l), Some(Problem::FeatureDisabled { feature: "flakes".into() }));
    }

    #[test]
    fn fetch_failures_only_from_error_lines() {
        let l = "error: unable to download 'https://github.com/NixOS/nixpkgs/archive/c8aa.tar.gz': Couldn't resolve host name (6)";
        assert!(matches!(one(l), Some(Problem::HostUnreachable { .. })));
        // Every offline build warns about the binary cache; that alone is no finding.
        let w = "warning: unable to download 'https://cache.nixos.org/nix-cache-info': Couldn't resolve host name (6)";
        assert_eq!(one(w), None);
    }

    #[test]
    fn missing_source_files_in_both_wordings() {
        let new =
            "error: path '/nix/store/0123456789abcdfghijklmnpqrsvwxyz-source/scripts/pre-nixos.sh' does not exist";
        let old = "error: getting status of '/nix/store/0123456789abcdfghijklmnpqrsvwxyz-source/x.nix': No such file or directory";
        for l in [new, old] {
            assert!(matches!(one(l), Some(Problem::SourceFileMissing { .. })), "{l}");
        }
        // Other "does not exist" errors are not about source files.
        assert_eq!(one("error: attribute 'bootImage' does not exist"), None);
        assert_eq!(one("error: flake 'path:/x' does not provide attribute 'packages.x86_64-linux.y'"), None);
    }
}
