//! Finding nix, also when it is not on PATH (shared by `doctor` and `build-image`).

use camino::Utf8PathBuf;

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

fn is_executable(p: &camino::Utf8Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// The flags that make flakes work on any nix from 2.4 on, whatever nix.conf says.
pub const FEATURE_FLAGS: [&str; 2] = ["--extra-experimental-features", "nix-command flakes"];
