//! Running a helper command with a deadline (checks must never hang doctor).

use anyhow::{Context, Result};
use std::process::Command;
use std::time::Duration;

use crate::process::run_in_own_group;

/// Output kept per stream: far more than any version or config text, and a bound on what a
/// login profile that prints without end can cost.
const KEEP: usize = 1 << 20;

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

/// Runs `cmd` (stdin from /dev/null) in its own process group and collects the last MiB of
/// each output, waiting with `poll()`. It is done when the command exits; whatever it left
/// running in its group is then killed. On the deadline the whole group is killed and an error
/// names the command and the time.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Result<Output> {
    let shown = format!("{:?}", cmd.get_program());
    let got = run_in_own_group(cmd, limit, KEEP).with_context(|| format!("running {shown}"))?;
    let Some(status) = got.status else {
        anyhow::bail!("{shown} did not finish within {:.1}s (killed, with everything it started)", limit.as_secs_f64());
    };
    Ok(Output {
        status,
        stdout: String::from_utf8_lossy(got.stdout.bytes()).into_owned(),
        stderr: String::from_utf8_lossy(got.stderr.bytes()).into_owned(),
    })
}
