//! Running a helper command with a deadline (checks must never hang doctor).

use anyhow::{Context, Result};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::accel::{die_with_parent, KillOnDrop};

pub struct Output {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn ok(&self) -> bool {
        self.status.success()
    }
}

/// Runs `cmd` (stdin from /dev/null) and collects its output, waiting with `poll()`; on the
/// deadline the process is killed and an error names the command and the time.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Result<Output> {
    let shown = format!("{:?}", cmd.get_program());
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    die_with_parent(cmd);
    let mut child = KillOnDrop(cmd.spawn().with_context(|| format!("running {shown}"))?);
    let mut out = child.0.stdout.take().context("stdout")?;
    let mut err = child.0.stderr.take().context("stderr")?;
    let end = Instant::now() + limit;
    let (mut ob, mut eb) = (Vec::new(), Vec::new());
    let (mut out_open, mut err_open) = (true, true);
    let mut buf = [0u8; 8192];
    while out_open || err_open {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            anyhow::bail!("{shown} did not finish within {:.1}s (killed)", limit.as_secs_f64());
        }
        let mut fds = [
            libc::pollfd { fd: if out_open { out.as_raw_fd() } else { -1 }, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: if err_open { err.as_raw_fd() } else { -1 }, events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: two valid pollfd structs for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, left.as_millis().clamp(1, i32::MAX as u128) as i32) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("poll");
        }
        if fds[0].revents != 0 {
            match out.read(&mut buf)? {
                0 => out_open = false,
                k => ob.extend_from_slice(&buf[..k]),
            }
        }
        if fds[1].revents != 0 {
            match err.read(&mut buf)? {
                0 => err_open = false,
                k => eb.extend_from_slice(&buf[..k]),
            }
        }
    }
    let status = child.0.wait()?;
    Ok(Output {
        status,
        stdout: String::from_utf8_lossy(&ob).into_owned(),
        stderr: String::from_utf8_lossy(&eb).into_owned(),
    })
}
