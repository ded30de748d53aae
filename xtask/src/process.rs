//! Child-process helpers shared by the verbs: dying with the parent, killing on drop, and
//! reading a child's stdout and stderr together with `poll()` under a deadline.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Makes the kernel kill `cmd`'s process when we die, however we die. (Linux ties this to the
/// spawning *thread*: spawn from a thread that outlives the child, as the probes do.)
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec here.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then no signal will come.
            if libc::getppid() == 1 {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// A child process that is killed and reaped when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How [`read_both`] ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Drained {
    /// Both pipes reached end of file.
    Closed,
    /// `on_stdout` asked to stop.
    Stopped,
    /// The time limit passed first.
    TimedOut,
}

/// Reads `stdout` and `stderr` as data arrives, waiting with `poll()` (no busy loop), until both
/// are closed, `on_stdout` returns `true` (stop), or `limit` has passed.
pub fn read_both(
    stdout: &mut impl ReadFd,
    stderr: &mut impl ReadFd,
    limit: Duration,
    mut on_stdout: impl FnMut(&[u8]) -> bool,
    mut on_stderr: impl FnMut(&[u8]),
) -> std::io::Result<Drained> {
    let end = Instant::now() + limit;
    let (mut out_open, mut err_open) = (true, true);
    let mut buf = [0u8; 8192];
    while out_open || err_open {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Drained::TimedOut);
        }
        let mut fds = [
            libc::pollfd { fd: if out_open { stdout.as_raw_fd() } else { -1 }, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: if err_open { stderr.as_raw_fd() } else { -1 }, events: libc::POLLIN, revents: 0 },
        ];
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: fds is a valid array of two pollfd structs for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if fds[0].revents != 0 {
            match stdout.read(&mut buf)? {
                0 => out_open = false,
                k => {
                    if on_stdout(&buf[..k]) {
                        return Ok(Drained::Stopped);
                    }
                }
            }
        }
        if fds[1].revents != 0 {
            match stderr.read(&mut buf)? {
                0 => err_open = false,
                k => on_stderr(&buf[..k]),
            }
        }
    }
    Ok(Drained::Closed)
}

/// A readable file descriptor (a child's pipe).
pub trait ReadFd: Read + AsRawFd {}
impl<T: Read + AsRawFd> ReadFd for T {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    fn sh(script: &str) -> KillOnDrop {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        KillOnDrop(cmd.spawn().unwrap())
    }

    #[test]
    fn reads_both_pipes_to_the_end() {
        let mut child = sh("echo out; echo err >&2");
        let (mut out, mut err) = (child.0.stdout.take().unwrap(), child.0.stderr.take().unwrap());
        let (mut ob, mut eb) = (Vec::new(), Vec::new());
        let how = read_both(
            &mut out,
            &mut err,
            Duration::from_secs(10),
            |b| {
                ob.extend_from_slice(b);
                false
            },
            |b| eb.extend_from_slice(b),
        )
        .unwrap();
        assert_eq!(how, Drained::Closed);
        assert_eq!((ob.as_slice(), eb.as_slice()), (&b"out\n"[..], &b"err\n"[..]));
    }

    #[test]
    fn stops_when_asked_and_times_out_on_silence() {
        let mut child = sh("echo ready; exec sleep 30");
        let (mut out, mut err) = (child.0.stdout.take().unwrap(), child.0.stderr.take().unwrap());
        let how = read_both(&mut out, &mut err, Duration::from_secs(10), |b| b.starts_with(b"ready"), |_| {}).unwrap();
        assert_eq!(how, Drained::Stopped);
        let started = Instant::now();
        let how = read_both(&mut out, &mut err, Duration::from_millis(200), |_| false, |_| {}).unwrap();
        assert_eq!(how, Drained::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
