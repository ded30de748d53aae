//! What xtask takes from Debian: files on the build host, each with the package that installs
//! it (a missing one is an infrastructure error carrying the `apt-get install` line), and the
//! distribution kernel (`kernel`), which the fixture boots and the accelerator probe too.

pub mod kernel;

use anyhow::Result;
use camino::Utf8Path;
use std::collections::BTreeSet;

/// A file on the build host and the Debian package that installs it.
#[derive(Clone, Copy, Debug)]
pub struct HostFile {
    pub path: &'static str,
    pub package: &'static str,
}

impl HostFile {
    pub const fn new(path: &'static str, package: &'static str) -> HostFile {
        HostFile { path, package }
    }
}

/// Fails with an infrastructure error (exit 3) naming every missing file, its package and
/// the apt-get line that installs them.
pub fn require(files: &[HostFile]) -> Result<()> {
    let missing: Vec<&HostFile> = files.iter().filter(|f| !Utf8Path::new(f.path).exists()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages: BTreeSet<&str> = missing.iter().map(|f| f.package).collect();
    let list: Vec<String> = missing.iter().map(|f| format!("{} (Debian package {})", f.path, f.package)).collect();
    Err(crate::exit::infra(format!(
        "the fixture needs files that are not installed: {}; install them with \
         `apt-get install -y {}` (or run scripts/install-deps.sh)",
        list.join(", "),
        packages.into_iter().collect::<Vec<_>>().join(" ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_host_files_name_package_and_apt_line_and_exit_3() {
        let err = require(&[
            HostFile::new("/nonexistent/xorriso", "xorriso"),
            HostFile::new("/nonexistent/ldlinux.c32", "syslinux-common"),
        ])
        .unwrap_err();
        let exit = err.downcast_ref::<crate::exit::Exit>().expect("an Exit error");
        assert_eq!(exit.code, crate::exit::INFRA);
        assert!(exit.message.contains("/nonexistent/xorriso (Debian package xorriso)"), "{}", exit.message);
        assert!(exit.message.contains("apt-get install -y syslinux-common xorriso"), "{}", exit.message);
    }
}
