//! Running a helper command with a deadline (checks must never hang doctor).

use anyhow::{Context, Result};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{die_with_parent, read_both, Drained, KillOnDrop};

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
    let (mut ob, mut eb) = (Vec::new(), Vec::new());
    let drained = read_both(
        &mut out,
        &mut err,
        limit,
        |bytes| {
            ob.extend_from_slice(bytes);
            false
        },
        |bytes| eb.extend_from_slice(bytes),
    )
    .context("poll")?;
    if drained != Drained::Closed {
        anyhow::bail!("{shown} did not finish within {:.1}s (killed)", limit.as_secs_f64());
    }
    let status = child.0.wait()?;
    Ok(Output {
        status,
        stdout: String::from_utf8_lossy(&ob).into_owned(),
        stderr: String::from_utf8_lossy(&eb).into_owned(),
    })
}
