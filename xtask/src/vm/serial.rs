//! The serial line: QEMU connects to a socket the harness already listens on; bytes are read
//! with `poll()` then `read()`, teed raw to `serial.log`, cleaned once by `crate::strip_escapes::Cleaner`
//! (→ `serial.txt` and the match buffer), and fed line by line to `crate::diagnose::Detector`.
//! `expect` matches precompiled regexes on clean text only, with a deadline and a stall window.

use crate::diagnose::{Detector, Finding};
use crate::strip_escapes::Cleaner;
use crate::vm::events::{Event, Sink};
use crate::vm::qemu::Paused;
use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use regex::Regex;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

/// Unconsumed clean text kept for matching; beyond this the oldest half is dropped (a flood
/// must not grow memory). Matches never need more than the recent past.
const MAX_BUFFER: usize = 256 * 1024;
/// How far back a new search starts before the already-searched end (a match may straddle
/// reads). Every pattern we wait for is a marker, prompt or login line well under this.
const OVERLAP: usize = 1024;
/// QEMU hands over serial output a few bytes per `read()`. While bytes stream in (the last
/// read was small and recent), wait this long before the next `poll()` so one read takes a
/// whole burst: ~100× fewer syscalls and regex passes in a flood, at most this much latency.
const COALESCE: Duration = Duration::from_millis(1);
/// Of a line, only this prefix is kept for the detector, watches and tail: the same prefix
/// offline `analyze` examines, so live and offline findings agree; the rest of an endless
/// line (flood without newlines) is still logged but costs no memory.
const LINE_PREFIX: usize = crate::diagnose::MATCH_PREFIX;
/// Lines kept for verdicts ("the last lines").
const TAIL_LINES: usize = 40;
/// Watches search the current line's last this-many bytes plus what just arrived: a console
/// line glued to the end of a long unterminated line (a flood) is still seen.
const WATCH_WINDOW: usize = 1024;
/// Finding ids that end the run at once: waiting longer cannot change the outcome.
pub const FATAL: &[&str] = &["kernel-panic", "emergency-mode"];
/// After a fatal finding, keep reading this long so the evidence (panic trace) is logged.
const FATAL_GRACE: Duration = Duration::from_secs(2);
/// A line quiet this long gets the host asked why (QEMU may have paused the guest on a full
/// disk), and again every this long while it stays quiet; also once before a wait gives up.
const QUIET_PROBE: Duration = Duration::from_secs(5);

/// Asks the host whether the guest was stopped from outside (see `Serial::on_quiet`).
pub type QuietProbe = Box<dyn FnMut() -> Option<Paused>>;

/// When a wait gives up.
#[derive(Clone, Copy, Debug)]
pub struct Wait {
    pub deadline: Instant,
    /// No new bytes for this long → stop. `None`: silence is fine (a long quiet command).
    pub stall: Option<Duration>,
}

impl Wait {
    pub fn new(timeout: Duration, stall: Option<Duration>) -> Wait {
        Wait { deadline: Instant::now() + timeout, stall }
    }
}

/// A successful match.
#[derive(Debug, Clone)]
pub struct Hit {
    /// Which of the regexes matched.
    pub index: usize,
    /// Clean text between the previous consumption point and the match.
    pub before: String,
    /// Capture groups (0 = whole match).
    pub groups: Vec<Option<String>>,
}

impl Hit {
    pub fn group(&self, i: usize) -> &str {
        self.groups.get(i).and_then(|g| g.as_deref()).unwrap_or("")
    }
}

/// Why a wait ended without a match.
#[derive(Debug)]
pub enum Stop {
    /// QEMU closed the serial line (it exited).
    Eof,
    Deadline,
    /// No bytes for this long.
    Stall(Duration),
    /// The detector saw something that ends the run (kernel panic, emergency mode).
    Fatal(Finding),
    /// SIGINT/SIGTERM.
    Interrupted,
    /// QEMU paused the guest on a disk error (a full host filesystem): it cannot answer.
    Paused(Paused),
    /// Reading the serial socket or writing a log failed (the error names the log).
    Io(std::io::Error),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Eof => write!(f, "QEMU closed the serial line (it exited)"),
            Stop::Deadline => write!(f, "deadline passed"),
            Stop::Stall(d) => write!(f, "no serial output for {:.0} s", d.as_secs_f64()),
            Stop::Fatal(x) => write!(f, "{} at serial line {}: {}", x.id, x.line, x.text),
            Stop::Interrupted => write!(f, "interrupted"),
            Stop::Paused(p) => f.write_str(&p.describe()),
            Stop::Io(e) => write!(f, "serial I/O error: {e}"),
        }
    }
}

/// A line the harness wants to know about whenever it passes (e.g. `LAN IPv4 address:`).
struct Watch {
    name: &'static str,
    re: Regex,
    seen: Option<(usize, String)>,
}

pub struct Serial<'s> {
    stream: UnixStream,
    raw_log: std::fs::File,
    txt_log: std::fs::File,
    run_dir: Utf8PathBuf,
    quiet_probe: Option<QuietProbe>,
    probed_at: Option<Instant>,
    cleaner: Cleaner,
    /// Clean text not yet consumed by `expect`.
    buf: String,
    /// `buf[..scanned]` has been searched without a match (minus `OVERLAP`).
    scanned: usize,
    partial: String,
    /// The tail of the current line, for watches (see `WATCH_WINDOW`).
    watch_window: String,
    lines: usize,
    tail: VecDeque<String>,
    detector: Detector,
    fatal: Option<(Finding, Instant)>,
    watches: Vec<Watch>,
    pub last_rx: Instant,
    /// The last read was small: more bytes of the same burst are probably on their way.
    streaming: bool,
    pub bytes: u64,
    /// Clean bytes dropped from the match buffer because nothing consumed them (flood).
    pub dropped: u64,
    eof: bool,
    /// Where the driver's events go.
    sink: Box<dyn Sink + 's>,
}

/// Binds the listening socket QEMU will connect to. Bind BEFORE spawning QEMU.
pub fn listen(path: &Utf8Path) -> Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path).with_context(|| format!("binding serial socket {path}"))
}

/// Waits (by poll) for QEMU to connect. `alive` says whether QEMU still runs.
pub fn accept(listener: &UnixListener, timeout: Duration, alive: &mut dyn FnMut() -> bool) -> Result<UnixStream, Stop> {
    let end = Instant::now() + timeout;
    loop {
        if crate::interrupt::interrupted() {
            return Err(Stop::Interrupted);
        }
        match poll_fd(listener.as_raw_fd(), Duration::from_millis(100)) {
            Ok(true) => return listener.accept().map(|(s, _)| s).map_err(Stop::Io),
            Ok(false) => {}
            Err(e) => return Err(Stop::Io(e)),
        }
        if !alive() {
            return Err(Stop::Eof);
        }
        if Instant::now() >= end {
            return Err(Stop::Deadline);
        }
    }
}

/// `poll()` one fd for input; `Ok(false)` on timeout or EINTR (the caller re-checks flags).
pub(crate) fn poll_fd(fd: i32, timeout: Duration) -> std::io::Result<bool> {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return if e.kind() == std::io::ErrorKind::Interrupted { Ok(false) } else { Err(e) };
    }
    Ok(n > 0)
}

impl<'s> Serial<'s> {
    pub fn new(stream: UnixStream, run_dir: &Utf8Path, sink: Box<dyn Sink + 's>) -> Result<Serial<'s>> {
        let open = |name: &str| -> Result<std::fs::File> {
            Ok(fs_err::OpenOptions::new().create(true).append(true).open(run_dir.join(name))?.into_parts().0)
        };
        Ok(Serial {
            stream,
            raw_log: open("serial.log")?,
            txt_log: open("serial.txt")?,
            run_dir: run_dir.to_path_buf(),
            quiet_probe: None,
            probed_at: None,
            cleaner: Cleaner::new(),
            buf: String::new(),
            scanned: 0,
            partial: String::new(),
            watch_window: String::new(),
            lines: 0,
            tail: VecDeque::new(),
            detector: Detector::new(),
            fatal: None,
            watches: Vec::new(),
            last_rx: Instant::now(),
            streaming: false,
            bytes: 0,
            dropped: 0,
            eof: false,
            sink,
        })
    }

    /// Lets waits ask `probe` why the line is quiet (QMP: paused on a disk error?); a `Some`
    /// ends the wait with `Stop::Paused` instead of a stall or deadline blamed on the guest.
    pub fn on_quiet(&mut self, probe: QuietProbe) {
        self.quiet_probe = Some(probe);
    }

    /// Remembers the first complete line matching `re` under `name`.
    pub fn watch(&mut self, name: &'static str, re: Regex) {
        self.watches.push(Watch { name, re, seen: None });
    }

    /// `(line number, matched text)` of the first line that matched watch `name`.
    pub fn seen(&self, name: &str) -> Option<&(usize, String)> {
        self.watches.iter().find(|w| w.name == name).and_then(|w| w.seen.as_ref())
    }

    /// Everything the detector found so far.
    pub fn findings(&self) -> &[Finding] {
        self.detector.findings()
    }

    pub fn detector(&mut self) -> &mut Detector {
        &mut self.detector
    }

    /// Asks the detector what silence means at this point (e.g. serial silent after the bootloader).
    pub fn silence(&mut self) -> Vec<Finding> {
        self.detector.silence()
    }

    /// Tells the detector the harness moved on to `phase` (it cannot see login, root, checks).
    pub fn advance(&mut self, phase: crate::diagnose::Phase) {
        self.detector.advance(phase, self.lines);
    }

    /// Reports `event` to the run's sink.
    pub fn emit(&mut self, event: Event<'_>) {
        self.sink.event(event);
    }

    pub fn eof(&self) -> bool {
        self.eof
    }

    /// The last `n` lines of clean text (including an unfinished last line).
    pub fn tail(&self, n: usize) -> Vec<String> {
        let mut v: Vec<String> = self.tail.iter().rev().take(n).rev().cloned().collect();
        if !self.partial.trim().is_empty() {
            v.push(self.partial.clone());
            if v.len() > n {
                v.remove(0);
            }
        }
        v
    }

    /// The most recent non-empty line, for progress output.
    pub fn last_line(&self) -> String {
        if !self.partial.trim().is_empty() {
            return self.partial.trim().to_string();
        }
        self.tail.iter().rev().find(|l| !l.trim().is_empty()).map(|l| l.trim().to_string()).unwrap_or_default()
    }

    /// Sends text to the guest's serial input.
    pub fn send(&mut self, text: &str) -> std::io::Result<()> {
        self.stream.write_all(text.as_bytes())
    }

    /// Forgets unconsumed text (before sending a command whose answer must be fresh).
    pub fn discard(&mut self) {
        self.buf.clear();
        self.scanned = 0;
    }

    /// One `poll()` + `read()`; `Ok(true)` when bytes arrived.
    fn pump(&mut self, timeout: Duration) -> std::io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.streaming && self.last_rx.elapsed() < COALESCE && timeout >= COALESCE {
            std::thread::sleep(COALESCE);
        }
        if !poll_fd(self.stream.as_raw_fd(), timeout)? {
            self.streaming = false;
            self.emit_last_line();
            return Ok(false);
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = match self.stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => return Err(e),
        };
        if n == 0 {
            self.eof = true;
            self.flush_partial();
            return Ok(false);
        }
        self.streaming = n < 1024;
        let raw = &chunk[..n];
        // Tee first: a crash or timeout right after still leaves these bytes on disk.
        let log_error = |e: std::io::Error, name: &str| {
            std::io::Error::new(e.kind(), format!("writing {}: {e}", self.run_dir.join(name)))
        };
        self.raw_log.write_all(raw).map_err(|e| log_error(e, "serial.log"))?;
        self.bytes += n as u64;
        self.last_rx = Instant::now();
        let mut clean = String::new();
        self.cleaner.feed(raw, &mut clean);
        if !clean.is_empty() {
            self.txt_log.write_all(clean.as_bytes()).map_err(|e| log_error(e, "serial.txt"))?;
            self.buf.push_str(&clean);
            self.bound_buffer();
            self.feed_lines(&clean);
        }
        self.emit_last_line();
        Ok(true)
    }

    fn emit_last_line(&mut self) {
        let line = self.last_line();
        self.sink.event(Event::Line(&line));
    }

    fn bound_buffer(&mut self) {
        if self.buf.len() <= MAX_BUFFER {
            return;
        }
        let mut cut = self.buf.len() - MAX_BUFFER / 2;
        while !self.buf.is_char_boundary(cut) {
            cut += 1;
        }
        self.buf.drain(..cut);
        self.dropped += cut as u64;
        self.scanned = self.scanned.saturating_sub(cut);
    }

    /// One detector entry per real line (line numbers match serial.txt), each cut to its
    /// first `LINE_PREFIX` bytes.
    fn feed_lines(&mut self, clean: &str) {
        for piece in clean.split_inclusive('\n') {
            let (text, complete) = match piece.strip_suffix('\n') {
                Some(text) => (text, true),
                None => (piece, false),
            };
            self.watch_text(text, complete);
            push_prefix(&mut self.partial, text, LINE_PREFIX);
            if complete {
                let line = std::mem::take(&mut self.partial);
                self.complete_line(line);
            }
        }
    }

    /// Runs the unmatched watches over the current line's recent text. A match that ends where
    /// the text so far ends waits for the line to go on (`10.0.2.1` may become `10.0.2.15`).
    fn watch_text(&mut self, text: &str, complete: bool) {
        if self.watches.iter().all(|w| w.seen.is_some()) {
            return;
        }
        self.watch_window.push_str(text);
        let no = self.lines + 1;
        for w in &mut self.watches {
            if w.seen.is_none() {
                if let Some(m) = w.re.find(&self.watch_window) {
                    if complete || m.end() < self.watch_window.len() {
                        w.seen = Some((no, m.as_str().to_string()));
                    }
                }
            }
        }
        if complete {
            self.watch_window.clear();
        } else if self.watch_window.len() > WATCH_WINDOW {
            let cut = self.watch_window.ceil_char_boundary(self.watch_window.len() - WATCH_WINDOW);
            self.watch_window.drain(..cut);
        }
    }

    fn flush_partial(&mut self) {
        self.watch_text("", true);
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.complete_line(line);
        }
    }

    fn complete_line(&mut self, line: String) {
        self.lines += 1;
        let no = self.lines;
        for f in self.detector.feed_line(no, &line) {
            if self.fatal.is_none() && FATAL.contains(&f.id) {
                self.fatal = Some((f, Instant::now()));
            }
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        let mut kept = line;
        if kept.len() > 400 {
            let mut end = 400;
            while !kept.is_char_boundary(end) {
                end -= 1;
            }
            kept.truncate(end);
            kept.push('…');
        }
        self.tail.push_back(kept);
    }

    /// Searches the unconsumed text; on a match drains through its end.
    fn search(&mut self, res: &[&Regex]) -> Option<Hit> {
        let mut start = self.scanned.saturating_sub(OVERLAP);
        while !self.buf.is_char_boundary(start) {
            start -= 1;
        }
        let best = res
            .iter()
            .enumerate()
            .filter_map(|(i, re)| re.captures_at(&self.buf, start).map(|c| (i, c)))
            .min_by_key(|(_, c)| c.get(0).map_or(usize::MAX, |m| m.start()));
        match best {
            Some((index, caps)) => {
                let m = caps.get(0).expect("group 0");
                let groups = caps.iter().map(|g| g.map(|g| g.as_str().to_string())).collect();
                let hit = Hit { index, before: self.buf[..m.start()].to_string(), groups };
                let end = m.end();
                self.buf.drain(..end);
                self.scanned = 0;
                Some(hit)
            }
            None => {
                self.scanned = self.buf.len();
                None
            }
        }
    }

    /// Waits until one of `res` matches the clean text (earliest match wins), the deadline or
    /// stall window passes, QEMU exits, a fatal finding appears, or the user interrupts.
    /// Text already buffered is searched before blocking again.
    pub fn expect(&mut self, res: &[&Regex], wait: Wait) -> Result<Hit, Stop> {
        let started = Instant::now();
        loop {
            if let Some(hit) = self.search(res) {
                return Ok(hit);
            }
            if let Some(stop) = self.should_stop(wait, started) {
                return Err(stop);
            }
            let slice = self.slice(wait, started);
            self.pump(slice).map_err(Stop::Io)?;
        }
    }

    /// Reads (and tees, cleans, detects) until `done()` is true or the wait ends.
    pub fn wait_until(&mut self, wait: Wait, done: &mut dyn FnMut(&Serial<'s>) -> bool) -> Result<(), Stop> {
        let started = Instant::now();
        loop {
            if done(self) {
                return Ok(());
            }
            if let Some(stop) = self.should_stop(wait, started) {
                return Err(stop);
            }
            let slice = self.slice(wait, started);
            self.pump(slice).map_err(Stop::Io)?;
        }
    }

    /// Reads whatever arrives for `d` (used to collect evidence after a failure).
    pub fn drain_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while !self.eof && Instant::now() < end && !crate::interrupt::interrupted() {
            if self.pump(end.saturating_duration_since(Instant::now()).min(Duration::from_millis(200))).is_err() {
                break;
            }
        }
        self.flush_partial();
    }

    /// How long the next `pump` may block: up to 500 ms, the deadline, the stall window, or,
    /// with a fatal finding pending, the rest of its grace (the deadline may have passed).
    fn slice(&self, wait: Wait, started: Instant) -> Duration {
        let now = Instant::now();
        if let Some((_, at)) = &self.fatal {
            return FATAL_GRACE.saturating_sub(at.elapsed()).max(Duration::from_millis(1));
        }
        let mut slice = Duration::from_millis(500).min(wait.deadline.saturating_duration_since(now));
        if let Some(window) = wait.stall {
            let idle = now - self.last_rx.max(started);
            slice = slice.min(window.saturating_sub(idle));
        }
        slice.max(Duration::from_millis(1))
    }

    fn should_stop(&mut self, wait: Wait, started: Instant) -> Option<Stop> {
        if crate::interrupt::interrupted() {
            return Some(Stop::Interrupted);
        }
        if let Some((f, at)) = self.fatal.clone() {
            if self.eof || at.elapsed() >= FATAL_GRACE {
                self.flush_partial();
                return Some(Stop::Fatal(f));
            }
            return None; // keep reading the trace for a moment
        }
        if self.eof {
            return Some(Stop::Eof);
        }
        let now = Instant::now();
        let idle = now - self.last_rx.max(started);
        let ending = if now >= wait.deadline {
            Some(Stop::Deadline)
        } else {
            wait.stall.filter(|stall| idle >= *stall).map(|_| Stop::Stall(idle))
        };
        match self.ask_why_quiet(ending.is_some()) {
            Some(paused) => Some(Stop::Paused(paused)),
            None => ending,
        }
    }

    /// Runs the quiet probe once the line has been quiet for `QUIET_PROBE` (then every
    /// `QUIET_PROBE`), and whenever a wait is about to give up.
    fn ask_why_quiet(&mut self, giving_up: bool) -> Option<Paused> {
        let probe = self.quiet_probe.as_mut()?;
        let due = self.last_rx.elapsed() >= QUIET_PROBE && self.probed_at.is_none_or(|t| t.elapsed() >= QUIET_PROBE);
        if !due && !giving_up {
            return None;
        }
        self.probed_at = Some(Instant::now());
        probe()
    }
}

/// Appends to `line` as much of `text` as fits in `max` bytes (cut at a char boundary).
fn push_prefix(line: &mut String, text: &str, max: usize) {
    let room = max.saturating_sub(line.len());
    if room == 0 {
        return;
    }
    let mut end = room.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    line.push_str(&text[..end]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Serial<'static>, UnixStream, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = UnixStream::pair().unwrap();
        let run_dir = Utf8Path::from_path(dir.path()).unwrap();
        (Serial::new(ours, run_dir, Box::new(())).unwrap(), theirs, dir)
    }

    #[test]
    fn matches_across_reads_and_rechecks_the_buffer_before_polling() {
        let (mut s, mut guest, _dir) = pair();
        let writer = std::thread::spawn(move || {
            for chunk in [&b"boot \x1b[1;32mno"[..], b"ise\r\nq1x1|0\nq1x1|__E_", b"q1x1=0\n$ q2x2|__E_q2x2=7\n"] {
                guest.write_all(chunk).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
            guest // keep it open
        });
        let end = Regex::new(r"q1x1\|__E_q1x1=(\d+)\n").unwrap();
        let hit = s.expect(&[&end], Wait::new(Duration::from_secs(5), None)).unwrap();
        assert_eq!(hit.group(1), "0");
        assert!(hit.before.starts_with("boot noise\nq1x1|0\n"), "{:?}", hit.before);
        let _guest = writer.join().unwrap();
        // Already buffered: found without any new byte, long before the 1 s stall.
        let second = Regex::new(r"q2x2\|__E_q2x2=(\d+)\n").unwrap();
        let t = Instant::now();
        let hit = s.expect(&[&second], Wait::new(Duration::from_secs(5), Some(Duration::from_secs(1)))).unwrap();
        assert_eq!(hit.group(1), "7");
        assert!(t.elapsed() < Duration::from_millis(200));
    }

    #[test]
    fn stall_and_eof_end_a_wait() {
        let (mut s, guest, _dir) = pair();
        let never = Regex::new("never").unwrap();
        let t = Instant::now();
        match s.expect(&[&never], Wait::new(Duration::from_secs(10), Some(Duration::from_millis(300)))) {
            Err(Stop::Stall(_)) => {}
            other => panic!("{other:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(2));
        drop(guest);
        assert!(matches!(s.expect(&[&never], Wait::new(Duration::from_secs(10), None)), Err(Stop::Eof)));
    }

    #[test]
    fn a_watch_sees_a_line_glued_after_a_long_unterminated_line() {
        let (mut s, mut guest, _dir) = pair();
        s.watch("lan", Regex::new(r"LAN IPv4 address: \d+\.\d+\.\d+\.\d+").unwrap());
        let mut text = "x".repeat(3 * LINE_PREFIX).into_bytes();
        text.extend_from_slice(b"LAN IPv4 address: 10.0.2.1");
        guest.write_all(&text).unwrap();
        let never = Regex::new("never").unwrap();
        let _ = s.expect(&[&never], Wait::new(Duration::from_secs(5), Some(Duration::from_millis(300))));
        assert!(s.seen("lan").is_none(), "a match at the end of the text so far may still grow");
        guest.write_all(b"5\r\nnext\r\n").unwrap();
        let _ = s.expect(&[&Regex::new("next").unwrap()], Wait::new(Duration::from_secs(5), None));
        assert_eq!(s.seen("lan"), Some(&(1, "LAN IPv4 address: 10.0.2.15".to_string())));
    }

    #[test]
    fn a_flood_keeps_the_buffer_bounded_and_the_log_exact() {
        let (mut s, mut guest, dir) = pair();
        let total = 3 * MAX_BUFFER + 12345;
        let writer = std::thread::spawn(move || {
            let line = b"flood \xff\x1b[31m line without an end ";
            let mut sent = 0;
            while sent < total {
                let n = line.len().min(total - sent);
                guest.write_all(&line[..n]).unwrap();
                sent += n;
            }
        });
        let never = Regex::new("never").unwrap();
        let _ = s.expect(&[&never], Wait::new(Duration::from_secs(30), Some(Duration::from_millis(500))));
        writer.join().unwrap();
        assert!(s.buf.len() <= MAX_BUFFER, "{}", s.buf.len());
        assert!(s.dropped > 0);
        assert!(s.partial.len() <= LINE_PREFIX);
        assert!(s.lines <= 1, "one line without a newline (counted at EOF), not one per cut: {}", s.lines);
        assert_eq!(s.bytes as usize, total);
        assert_eq!(std::fs::metadata(dir.path().join("serial.log")).unwrap().len() as usize, total);
    }

    #[test]
    fn long_lines_count_once_and_are_cut_to_the_offline_prefix() {
        let (mut s, mut guest, _dir) = pair();
        // A 20 KiB line whose panic text lies beyond the prefix, a multi-byte char on the cut,
        // then a short line: two lines, as in serial.txt, and no finding from beyond the prefix.
        let mut long = "é".repeat(LINE_PREFIX); // 2 bytes each: the cut lands inside a char when odd
        long.insert(0, 'x');
        long.push_str("Kernel panic - not syncing: beyond the prefix");
        long.push_str(&"y".repeat(20 * 1024));
        long.push('\n');
        long.push_str("second line\n");
        let writer = std::thread::spawn(move || {
            guest.write_all(long.as_bytes()).unwrap();
            guest
        });
        let second = Regex::new(r"second line\n").unwrap();
        s.expect(&[&second], Wait::new(Duration::from_secs(5), None)).unwrap();
        let _guest = writer.join().unwrap();
        assert_eq!(s.lines, 2);
        assert!(s.findings().iter().all(|f| f.id != "kernel-panic"), "{:?}", s.findings());
        assert!(s.partial.is_empty());
    }

    /// A guest QEMU paused on a full disk sends nothing: the wait ends once the probe says
    /// so, a few seconds into the silence, not at the deadline as an unresponsive guest.
    #[test]
    fn a_quiet_line_asks_the_host_and_ends_when_the_guest_is_paused() {
        let (mut s, _guest, _dir) = pair();
        let asked = std::rc::Rc::new(std::cell::Cell::new(0));
        let count = asked.clone();
        let paused = Paused { no_space: true, file: Some("/run/disk.qcow2".into()) };
        let answer = paused.clone();
        s.on_quiet(Box::new(move || {
            count.set(count.get() + 1);
            Some(answer.clone())
        }));
        let never = Regex::new("never").unwrap();
        let t = Instant::now();
        match s.expect(&[&never], Wait::new(Duration::from_secs(60), None)) {
            Err(Stop::Paused(p)) => assert_eq!(p, paused),
            other => panic!("{other:?}"),
        }
        assert!(t.elapsed() >= QUIET_PROBE && t.elapsed() < QUIET_PROBE * 2, "{:?}", t.elapsed());
        assert_eq!(asked.get(), 1);
    }

    /// A running guest (the probe says nothing) keeps the ordinary verdicts; a wait that gives
    /// up asks once more first.
    #[test]
    fn a_running_guest_still_stalls() {
        let (mut s, _guest, _dir) = pair();
        let asked = std::rc::Rc::new(std::cell::Cell::new(0));
        let count = asked.clone();
        s.on_quiet(Box::new(move || {
            count.set(count.get() + 1);
            None
        }));
        let never = Regex::new("never").unwrap();
        assert!(matches!(
            s.expect(&[&never], Wait::new(Duration::from_secs(10), Some(Duration::from_millis(300)))),
            Err(Stop::Stall(_))
        ));
        assert_eq!(asked.get(), 1, "asked once, when the stall ended the wait");
    }

    /// A log that cannot be written (a full disk under the run directory) is named.
    #[test]
    fn a_failed_log_write_names_the_log() {
        let (mut s, mut guest, dir) = pair();
        s.raw_log = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        guest.write_all(b"boot\n").unwrap();
        let never = Regex::new("never").unwrap();
        match s.expect(&[&never], Wait::new(Duration::from_secs(5), None)) {
            Err(Stop::Io(e)) => {
                assert_eq!(e.kind(), std::io::ErrorKind::StorageFull);
                let log = dir.path().join("serial.log");
                assert!(e.to_string().contains(log.to_str().unwrap()), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_pending_fatal_finding_waits_out_its_grace_without_spinning() {
        let (mut s, mut guest, _dir) = pair();
        guest.write_all(b"Kernel panic - not syncing: VFS: Unable to mount root fs\n").unwrap();
        let never = Regex::new("never").unwrap();
        // The deadline passes at once; the grace (2 s) still runs, in few polls.
        let t = Instant::now();
        match s.expect(&[&never], Wait::new(Duration::from_millis(1), None)) {
            Err(Stop::Fatal(f)) => assert_eq!(f.id, "kernel-panic"),
            other => panic!("{other:?}"),
        }
        assert!(t.elapsed() >= FATAL_GRACE - Duration::from_millis(50));
        let started = Instant::now() - Duration::from_secs(10);
        s.fatal = Some((s.findings()[0].clone(), Instant::now()));
        let slice = s.slice(Wait { deadline: started, stall: Some(Duration::from_secs(1)) }, started);
        assert!(slice > Duration::from_secs(1), "{slice:?}");
        drop(guest);
    }
}
