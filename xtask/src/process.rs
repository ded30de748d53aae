//! Running other programs: the one place that knows `std::process`.
//!
//! One-shot commands (apt-get, depmod, xorriso, `--version` probes …) are written with
//! `xshell::cmd!` and run by [`OneShot`]: output captured, a non-zero exit an error that names
//! the command and carries its stderr. A command whose failure is an expected answer says so
//! at its call site (`.ignore_status()`).
//!
//! `std::process` is used only here, for what xshell cannot do: children that die with us
//! (PR_SET_PDEATHSIG) or are killed on drop, their own process group or session, reading stdout
//! and stderr together with `poll()` under a deadline, and a bounded tail of output. The call
//! sites still describe the command with `cmd!`; the helpers below start it.

use anyhow::Context as _;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The shell one piece of work runs its commands in (`cmd!(sh, …)`); made once where that work
/// starts and passed down.
pub fn shell() -> anyhow::Result<xshell::Shell> {
    xshell::Shell::new().context("the current directory is gone; run xtask from an existing directory")
}

/// How a one-shot command runs here: to completion, its stdout and stderr captured (nothing of
/// it reaches our terminal or our stdout), stdin from /dev/null unless given. A command whose
/// failure is an expected answer uses xshell's own `.ignore_status().output()` instead.
pub trait OneShot {
    /// Its output; a non-zero exit is an error naming the command, its exit status and its stderr.
    fn capture(self) -> anyhow::Result<Output>;

    /// Runs it; fails as [`OneShot::capture`] does.
    fn run_captured(self) -> anyhow::Result<()>
    where
        Self: Sized,
    {
        self.capture().map(drop)
    }

    /// Its stdout as text (invalid UTF-8 replaced); fails as [`OneShot::capture`] does.
    fn read_captured(self) -> anyhow::Result<String>
    where
        Self: Sized,
    {
        Ok(String::from_utf8_lossy(&self.capture()?.stdout).into_owned())
    }
}

impl OneShot for xshell::Cmd<'_> {
    fn capture(self) -> anyhow::Result<Output> {
        let shown = self.to_string();
        // xshell's own status check would drop stderr, the part that says why.
        let out = self.ignore_status().output().with_context(|| format!("running `{shown}`"))?;
        if !out.status.success() {
            anyhow::bail!("`{shown}` failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(out)
    }
}

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
    on_stdout: impl FnMut(&[u8]) -> bool,
    on_stderr: impl FnMut(&[u8]),
) -> std::io::Result<Drained> {
    pump(stdout, stderr, Until::Closed, Instant::now() + limit, on_stdout, on_stderr)
}

/// When [`pump`] is done (besides a stop or the deadline).
#[derive(Clone, Copy)]
enum Until {
    /// Both pipes reached end of file.
    Closed,
    /// The process behind this pidfd exited (the pipes may stay open: its children hold them).
    ExitOf(RawFd),
    /// Nothing more is ready to read right now.
    Idle,
}

/// The `poll()` loop behind [`read_both`] and [`run_in_own_group`]. `Drained::Closed` means
/// `until` was reached.
fn pump(
    stdout: &mut impl ReadFd,
    stderr: &mut impl ReadFd,
    until: Until,
    end: Instant,
    mut on_stdout: impl FnMut(&[u8]) -> bool,
    mut on_stderr: impl FnMut(&[u8]),
) -> std::io::Result<Drained> {
    let (mut out_open, mut err_open) = (true, true);
    let mut buf = [0u8; 8192];
    loop {
        let exit_fd = match until {
            Until::Closed | Until::Idle if !out_open && !err_open => return Ok(Drained::Closed),
            Until::ExitOf(fd) => fd,
            _ => -1,
        };
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Drained::TimedOut);
        }
        let mut fds = [
            libc::pollfd { fd: if out_open { stdout.as_raw_fd() } else { -1 }, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: if err_open { stderr.as_raw_fd() } else { -1 }, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: exit_fd, events: libc::POLLIN, revents: 0 },
        ];
        let ms = if matches!(until, Until::Idle) { 0 } else { left.as_millis().clamp(1, i32::MAX as u128) as i32 };
        // SAFETY: fds is a valid array of three pollfd structs for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 3, ms) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 && matches!(until, Until::Idle) {
            return Ok(Drained::Closed);
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
        if fds[2].revents != 0 {
            return Ok(Drained::Closed);
        }
    }
}

/// The last `cap` bytes of a stream: memory stays bounded whatever a child prints.
#[derive(Debug)]
pub struct Tail {
    buf: Vec<u8>,
    cap: usize,
}

impl Tail {
    pub fn new(cap: usize) -> Self {
        Tail { buf: Vec::new(), cap }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        // Trim only past twice the cap, so each byte is moved at most once on average.
        if self.buf.len() > 2 * self.cap {
            self.buf.drain(..self.buf.len() - self.cap);
        }
    }

    /// The stream's last `cap` bytes (all of it when shorter).
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.buf.len().saturating_sub(self.cap)..]
    }
}

/// What [`run_in_own_group`] saw.
#[derive(Debug)]
pub struct GroupOutput {
    /// The command's exit status; `None` when the deadline came first (it was killed).
    pub status: Option<ExitStatus>,
    pub stdout: Tail,
    pub stderr: Tail,
}

/// Runs `cmd` (stdin from /dev/null) as the leader of a new session: its own process group,
/// no controlling terminal (as in CI), killed when we die. Reads stdout and stderr with `poll()`,
/// keeping the last `cap` bytes of each, until the command exits or `limit` passes. Then
/// everything still in its group — background jobs it started, or the command itself at the
/// deadline — gets SIGKILL, and the output already written is read. Processes that started a
/// session of their own (daemons) are not in the group and are left alone.
///
/// The group is killed before the leader is reaped: until then the group id (the leader's pid)
/// cannot have been reused by an unrelated process. Without pidfd_open (Linux < 5.3) the end of
/// both outputs stands for the exit.
pub fn run_in_own_group(cmd: xshell::Cmd<'_>, limit: Duration, cap: usize) -> std::io::Result<GroupOutput> {
    run_command_in_own_group(&mut Command::from(cmd), limit, cap)
}

fn run_command_in_own_group(cmd: &mut Command, limit: Duration, cap: usize) -> std::io::Result<GroupOutput> {
    let end = Instant::now() + limit;
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    die_with_parent(cmd);
    // SAFETY: setsid is async-signal-safe; a just-forked child never leads a group, so it works.
    unsafe {
        cmd.pre_exec(|| if libc::setsid() < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) });
    }
    let mut leader = GroupLeader(Some(cmd.spawn()?));
    let child = leader.0.as_mut().expect("just spawned");
    let (mut out, mut err) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let exit = pidfd_open(child.id()).ok();
    let (mut stdout, mut stderr) = (Tail::new(cap), Tail::new(cap));
    let until = exit.as_ref().map_or(Until::Closed, |fd| Until::ExitOf(fd.as_raw_fd()));
    let ended = pump(
        &mut out,
        &mut err,
        until,
        end,
        |b| {
            stdout.push(b);
            false
        },
        |b| stderr.push(b),
    )?;
    leader.kill_group();
    // What the group wrote before it died is still in the pipes.
    pump(
        &mut out,
        &mut err,
        Until::Idle,
        end.max(Instant::now() + Duration::from_millis(100)),
        |b| {
            stdout.push(b);
            false
        },
        |b| stderr.push(b),
    )?;
    let status = leader.reap()?;
    Ok(GroupOutput { status: (ended == Drained::Closed).then_some(status), stdout, stderr })
}

/// Output kept per stream by [`output_within`]: far more than any version or config text, and a
/// bound on what a login profile that prints without end can cost.
const KEEP: usize = 1 << 20;

/// What [`output_within`] collected: the exit status and the last MiB of each output.
pub struct BoundedOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl BoundedOutput {
    pub fn ok(&self) -> bool {
        self.status.success()
    }
}

/// Runs `cmd` (stdin from /dev/null) in its own process group and collects the last MiB of
/// each output, waiting with `poll()`: for probes that must never hang their caller. It is done
/// when the command exits; whatever it left running in its group is then killed. On the
/// deadline the whole group is killed and an error names the command and the time.
pub fn output_within(cmd: xshell::Cmd<'_>, limit: Duration) -> anyhow::Result<BoundedOutput> {
    let mut cmd = Command::from(cmd);
    let shown = format!("{:?}", cmd.get_program());
    let got = run_command_in_own_group(&mut cmd, limit, KEEP).with_context(|| format!("running {shown}"))?;
    let Some(status) = got.status else {
        anyhow::bail!("{shown} did not finish within {:.1}s (killed, with everything it started)", limit.as_secs_f64());
    };
    Ok(BoundedOutput {
        status,
        stdout: String::from_utf8_lossy(got.stdout.bytes()).into_owned(),
        stderr: String::from_utf8_lossy(got.stderr.bytes()).into_owned(),
    })
}

/// Starts `cmd` with stdin from /dev/null and stdout and stderr piped, for a caller that reads
/// them as they come (nix's activity stream).
pub fn spawn_piped(cmd: xshell::Cmd<'_>) -> std::io::Result<Child> {
    Command::from(cmd).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()
}

/// Like [`spawn_piped`], and the child dies with us and is killed when the handle is dropped
/// (the accelerator probe's QEMU).
pub fn spawn_piped_dying_with_us(cmd: xshell::Cmd<'_>) -> std::io::Result<KillOnDrop> {
    let mut cmd = Command::from(cmd);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    die_with_parent(&mut cmd);
    Ok(KillOnDrop(cmd.spawn()?))
}

/// How a long-running child started by [`spawn_logged`] relates to us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tie {
    /// Its own process group (a terminal's Ctrl-C reaches only us, and we stop it in order),
    /// and killed when we die.
    OwnGroupDiesWithUs,
    /// A session of its own, no death signal: it may outlive us (`vm-test --keep`).
    NewSession,
}

/// Starts `cmd` with stdin from /dev/null and stdout and stderr appended to `log`.
pub fn spawn_logged(cmd: xshell::Cmd<'_>, log: std::fs::File, tie: Tie) -> std::io::Result<Child> {
    let mut cmd = Command::from(cmd);
    cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let ok = match tie {
                Tie::NewSession => libc::setsid() >= 0,
                Tie::OwnGroupDiesWithUs => libc::setpgid(0, 0) == 0,
            };
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    if tie == Tie::OwnGroupDiesWithUs {
        die_with_parent(&mut cmd);
    }
    cmd.spawn()
}

/// Sends `signal` to the process group `leader` started (a child spawned with
/// [`Tie::OwnGroupDiesWithUs`]): `vm-test --matrix` forwards its Ctrl-C to its cells.
pub fn signal_group(leader: &Child, signal: libc::c_int) {
    // SAFETY: kill(2) with a negative pid signals that process group; no memory involved.
    unsafe { libc::kill(-(leader.id() as libc::pid_t), signal) };
}

/// Waits up to `timeout` until one of `children` has exited, with `poll()` on their pidfds (a
/// signal ends the wait early, as every wait in the crate): the index of one that exited
/// and its status (reaped), or `None`.
pub fn wait_any(children: &mut [&mut Child], timeout: Duration) -> std::io::Result<Option<(usize, ExitStatus)>> {
    let mut fds = Vec::with_capacity(children.len());
    for child in children.iter() {
        // SAFETY: pidfd_open(2) on our own unreaped child; the new fd is owned below.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh fd nobody else owns.
        fds.push(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
    }
    let mut polled: Vec<libc::pollfd> =
        fds.iter().map(|fd| libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `polled` is a valid array of `polled.len()` pollfds.
    let n = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, ms) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return if e.kind() == std::io::ErrorKind::Interrupted { Ok(None) } else { Err(e) };
    }
    for (i, p) in polled.iter().enumerate() {
        if p.revents != 0 {
            if let Some(status) = children[i].try_wait()? {
                return Ok(Some((i, status)));
            }
        }
    }
    Ok(None)
}

/// Runs `cmd` to completion with stdout and stderr written to `log` as they come (the log stays
/// evidence if we are killed midway); its exit status.
pub fn status_logged(cmd: xshell::Cmd<'_>, log: std::fs::File) -> std::io::Result<ExitStatus> {
    Command::from(cmd).stdout(log.try_clone()?).stderr(log).status()
}

/// The leader of a process group we started. Dropped without [`GroupLeader::reap`] (an error
/// path), it kills the group and reaps the leader too.
struct GroupLeader(Option<Child>);

impl GroupLeader {
    /// SIGKILL to every process in the group. Only while the leader is unreaped (see above).
    fn kill_group(&self) {
        if let Some(child) = &self.0 {
            // SAFETY: kill(2) with a negative pid signals that process group; no memory involved.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
        }
    }

    fn reap(mut self) -> std::io::Result<ExitStatus> {
        self.kill_group();
        self.0.take().expect("reaped once").wait()
    }
}

impl Drop for GroupLeader {
    fn drop(&mut self) {
        self.kill_group();
        if let Some(mut child) = self.0.take() {
            let _ = child.wait();
        }
    }
}

/// A descriptor that `poll()` reports readable once our child `pid` has exited (Linux ≥ 5.3).
fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A readable file descriptor (a child's pipe).
pub trait ReadFd: Read + AsRawFd {}
impl<T: Read + AsRawFd> ReadFd for T {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;
    use xshell::cmd;

    #[test]
    fn a_failed_one_shot_names_the_command_its_status_and_its_stderr() {
        let sh = shell().unwrap();
        let script = "echo out; echo why it failed >&2; exit 3";
        let err = cmd!(sh, "sh -c {script}").run_captured().unwrap_err();
        let text = format!("{err:#}");
        assert!(text.starts_with("`sh -c \"echo out;"), "{text}");
        assert!(text.contains("(exit status: 3): why it failed"), "{text}");
        assert!(!text.contains("out\n"), "stdout is not the reason: {text}");
        let err = cmd!(sh, "/nonexistent/tool --version").run_captured().unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/tool"), "{err:#}");
        // An empty quoted word is an argument (nix's `--option substituters ''`).
        let count = cmd!(sh, "sh -c 'echo $#' zero '' two").read_captured().unwrap();
        assert_eq!(count, "2\n");
    }

    #[test]
    fn output_within_kills_at_the_deadline_and_names_the_command() {
        let sh = shell().unwrap();
        let got = output_within(cmd!(sh, "sh -c 'echo hi; exit 4'"), Duration::from_secs(10)).unwrap();
        assert_eq!((got.ok(), got.status.code(), got.stdout.as_str()), (false, Some(4), "hi\n"));
        let started = Instant::now();
        let err = output_within(cmd!(sh, "sleep 30"), Duration::from_millis(300)).err().expect("a deadline error");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(format!("{err:#}").contains("\"sleep\" did not finish within 0.3s"), "{err:#}");
    }

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

    /// Processes whose command line is exactly `args` and that do not exit within 5 s of the
    /// call (SIGKILL takes effect asynchronously; a zombie's cmdline is empty).
    fn running(args: &[&str]) -> Vec<i32> {
        let want: Vec<u8> = args.iter().flat_map(|a| a.bytes().chain([0])).collect();
        let end = Instant::now() + Duration::from_secs(5);
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
            .filter(|&pid| {
                let Ok(fd) = pidfd_open(pid as u32) else { return false };
                let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                let ms = end.saturating_duration_since(Instant::now()).as_millis() as i32;
                // SAFETY: one valid pollfd for the duration of the call.
                let ready = unsafe { libc::poll(&mut p, 1, ms) };
                ready == 0
            })
            .collect()
    }

    /// A `sleep` duration no other process uses, to find our own sleeps in /proc.
    fn unique_seconds(test: u32) -> String {
        format!("300.{}{test}", std::process::id())
    }

    #[test]
    fn group_ends_with_its_leader_and_leftovers_are_killed() {
        let secs = unique_seconds(1);
        // One job keeps stdout open (the old way waited for it until the deadline), one does not.
        let script = format!("sleep {secs} & (sleep {secs} >/dev/null 2>&1 &); echo done; echo oops >&2; exit 3");
        let started = Instant::now();
        let sh = shell().unwrap();
        let got = run_in_own_group(cmd!(sh, "sh -c {script}"), Duration::from_secs(20), 1024).unwrap();
        assert!(started.elapsed() < Duration::from_secs(10), "waited for the jobs: {:?}", started.elapsed());
        assert_eq!(got.status.and_then(|s| s.code()), Some(3));
        assert_eq!((got.stdout.bytes(), got.stderr.bytes()), (&b"done\n"[..], &b"oops\n"[..]));
        assert_eq!(running(&["sleep", &secs]), Vec::<i32>::new(), "background jobs survived");
    }

    #[test]
    fn deadline_kills_the_whole_group() {
        let secs = unique_seconds(2);
        let script = format!("sleep {secs} & echo started; sleep {secs}");
        let sh = shell().unwrap();
        let got = run_in_own_group(cmd!(sh, "sh -c {script}"), Duration::from_millis(500), 1024).unwrap();
        assert!(got.status.is_none(), "the deadline came first");
        assert_eq!(got.stdout.bytes(), b"started\n", "output before the deadline is kept");
        assert_eq!(running(&["sleep", &secs]), Vec::<i32>::new(), "the group survived its deadline");
    }

    #[test]
    fn output_is_capped_to_its_tail() {
        let script = "head -c 30000000 /dev/zero; echo; echo last line";
        let sh = shell().unwrap();
        let got = run_in_own_group(cmd!(sh, "sh -c {script}"), Duration::from_secs(30), 4096).unwrap();
        assert!(got.status.is_some_and(|s| s.success()));
        let kept = got.stdout.bytes();
        assert_eq!(kept.len(), 4096);
        assert!(kept.ends_with(b"\nlast line\n"));
        let mut tail = Tail::new(3);
        for chunk in [&b"ab"[..], b"cdefgh", b"", b"i"] {
            tail.push(chunk);
            assert!(tail.buf.len() <= 2 * 3 + chunk.len());
        }
        assert_eq!(tail.bytes(), b"ghi");
    }

    #[test]
    fn the_group_has_no_terminal_and_leads_its_session() {
        let (sh, script) = (shell().unwrap(), "ps -o pid=,pgid=,sid= -p $$; true </dev/tty || echo no tty");
        let got = run_in_own_group(cmd!(sh, "sh -c {script}"), Duration::from_secs(10), 1024).unwrap();
        let text = String::from_utf8_lossy(got.stdout.bytes()).into_owned();
        let ids: Vec<&str> = text.split_whitespace().take(3).collect();
        assert!(ids.len() == 3 && ids[0] == ids[1] && ids[1] == ids[2], "pid = pgid = sid expected: {text}");
        assert!(text.contains("no tty"), "{text}");
    }
}
