//! Where things live: the repository root, `target/`, run directories; atomic writes, lock files.

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

/// The repository root (the workspace that contains `xtask/`).
pub fn root() -> Utf8PathBuf {
    let manifest = Utf8Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().expect("xtask/ has a parent").to_path_buf()
}

/// `target/` of the repository, where caches and run directories go.
/// (Not `CARGO_TARGET_DIR`: run directories must be findable by `archive-logs --latest`.)
pub fn target_dir() -> Utf8PathBuf {
    root().join("target")
}

/// Parent of all vm-test run directories.
pub fn vm_runs_dir() -> Utf8PathBuf {
    target_dir().join("vm-runs")
}

/// UTC timestamp used in run directory and archive names, e.g. `2026-11-25T18-18-17Z`.
pub fn utc_stamp(ts: jiff::Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H-%M-%SZ").to_string()
}

/// Creates a fresh run directory under `parent` named after `now` (suffixed when taken),
/// private to the user whatever the umask (see `private_run_dir`).
pub fn create_run_dir(parent: &Utf8Path, now: jiff::Timestamp) -> Result<Utf8PathBuf> {
    fs_err::create_dir_all(parent)?;
    let stamp = utc_stamp(now);
    for n in 0..100 {
        let name = if n == 0 { stamp.clone() } else { format!("{stamp}-{n}") };
        let dir = parent.join(name);
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating run directory {dir}")),
        }
    }
    anyhow::bail!("could not create a run directory under {parent}")
}

/// Makes `dir` (created with its parents if missing) a run directory only its owner can
/// enter: it holds QEMU's QMP socket (full control of the VM) and the serial socket (a root
/// shell once logged in; with `--keep`, whoever can create `serial.sock` there gets the
/// console). Mode 0700 is set explicitly, so neither the umask nor an existing directory's
/// mode can widen it.
pub fn private_run_dir(dir: &Utf8Path) -> std::io::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// An exclusive advisory lock on `path` (created if missing), held until the returned file is
/// dropped: one process at a time fills a cache.
pub fn lock(path: &Utf8Path) -> Result<fs_err::File> {
    let file = fs_err::OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor we own; released when the file is closed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("locking {path}"));
    }
    Ok(file)
}

/// Writes `bytes` to `path` via a temporary file in the same directory and an atomic rename,
/// so readers never see a half-written file.
pub fn write_atomic(path: &Utf8Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_str().is_empty()).unwrap_or(Utf8Path::new("."));
    let name = path.file_name().context("path has no file name")?;
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> Result<()> {
        let mut f = fs_err::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs_err::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {path}"))
}

/// Whether `open_regular` follows a symbolic link at the end of the path.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Symlinks {
    Follow,
    Refuse,
}

/// Opens `path` for reading if it is a regular file. A FIFO would block forever and a device
/// may never end (`/dev/zero`), so anything else is refused with an error saying what it is;
/// with `Symlinks::Refuse` a symbolic link is refused too (a run directory's `serial.log`
/// pointing at `/etc/shadow` must not be archived); both refusals are `InvalidInput`. Open and check are one step (`O_NOFOLLOW`,
/// `O_NONBLOCK`, then `fstat` on the open file): the path cannot be swapped in between.
/// (`O_NONBLOCK` keeps opening a FIFO from blocking; it changes nothing for a regular file.)
pub fn open_regular(path: &Utf8Path, symlinks: Symlinks) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let mut flags = libc::O_NONBLOCK;
    if symlinks == Symlinks::Refuse {
        flags |= libc::O_NOFOLLOW;
    }
    let file = std::fs::OpenOptions::new().read(true).custom_flags(flags).open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) && symlinks == Symlinks::Refuse {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "it is a symbolic link, which is not followed here")
        } else {
            e
        }
    })?;
    let kind = file.metadata()?.file_type();
    let what = if kind.is_file() {
        return Ok(file);
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a special file"
    };
    Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("not a regular file: it is {what}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Utf8Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// Run directories hold the QMP and serial sockets: 0700 under any umask (the tests'
    /// umask is 022, which used to leave them 0755; vm_test.rs checks umask 000 end to end).
    #[test]
    fn run_directories_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let parent = Utf8Path::from_path(tmp.path()).unwrap().join("runs");
        let dir = create_run_dir(&parent, jiff::Timestamp::UNIX_EPOCH).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let given = parent.join("deeper/given");
        private_run_dir(&given).unwrap();
        assert_eq!(mode(&given), 0o700);
        // An existing, empty, world-open directory is narrowed too.
        let open = parent.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        private_run_dir(&open).unwrap();
        assert_eq!(mode(&open), 0o700);
    }
}
