//! `Guest`: the serial line driven as a boring, framed shell.
//!
//! Boring: no echo, no bracketed paste, plain PS1, no PROMPT_COMMAND, TERM=dumb, no pager.
//! Framed: every output line of a command is prefixed by sed with a per-command nonce, and
//! the exit status follows in an end marker line. Both markers are assembled by the shell
//! (`'N''|'`, `'__E_''N'`), so the echo of the typed command never matches them, and lines
//! the guest broadcasts to the console meanwhile (no prefix) are ignored. One command at a
//! time: the next is sent only after the previous end marker arrived; the boring setup line
//! has its own end marker too.

use crate::diagnose::Phase;
use crate::vm::events::Event;
use crate::vm::serial::{Serial, Stop, Wait};
use regex::Regex;
use std::time::{Duration, Instant};

/// The serial line as login, shell and checks drive it; every step is reported as an event.
pub struct Guest<'s> {
    pub serial: Serial<'s>,
    counter: u32,
    tag: String,
}

/// A finished command.
#[derive(Debug, Clone)]
pub struct Output {
    pub code: i32,
    /// The command's stdout+stderr lines, without the framing.
    pub text: String,
    pub seconds: f64,
}

/// A command that did not finish.
#[derive(Debug)]
pub struct Failed {
    pub command: String,
    pub stop: Stop,
    /// Bytes received from the guest while waiting (0: the guest said nothing at all).
    pub bytes_during: u64,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` did not finish: {} ({} bytes arrived meanwhile)", self.command, self.stop, self.bytes_during)
    }
}

/// One line (sent with an end marker appended) that makes an interactive bash (or busybox ash) predictable for a program.
pub const BORING: &str = "stty -echo 2>/dev/null; bind 'set enable-bracketed-paste off' 2>/dev/null; \
unset PROMPT_COMMAND; PS1='$ '; PS2=''; export TERM=dumb PAGER=cat SYSTEMD_PAGER=cat SYSTEMD_COLORS=0 NO_COLOR=1 HISTFILE=/dev/null";

impl<'s> Guest<'s> {
    pub fn new(serial: Serial<'s>) -> Guest<'s> {
        let tag = format!("{:x}", std::process::id() ^ (jiff::Timestamp::now().as_millisecond() as u32));
        Guest { serial, counter: 0, tag }
    }

    /// Starts `phase`: the detector learns it, the sink hears of it.
    pub fn enter(&mut self, phase: Phase) {
        self.serial.advance(phase);
        self.serial.emit(Event::Phase(phase));
    }

    /// Reports an event to the run's sink.
    pub fn emit(&mut self, event: Event<'_>) {
        self.serial.emit(event);
    }

    /// Reports a step of the dialogue (the transcript's lines).
    pub fn step(&mut self, text: &str) {
        self.serial.emit(Event::Step(text));
    }

    fn nonce(&mut self) -> String {
        self.counter += 1;
        format!("q{}x{}", self.tag, self.counter)
    }

    /// Sends raw text (login names, passwords, `sudo -i`), logging it (passwords masked by the caller).
    pub fn type_line(&mut self, shown: &str, text: &str) -> Result<(), Stop> {
        self.step(&format!("send: {shown}"));
        self.serial.send(text).map_err(Stop::Io)
    }

    /// Makes the current shell boring, in the shell itself (not a subshell: the settings must
    /// stay), and waits for the end marker the same line prints, so nothing is typed ahead.
    /// The marker is assembled by the shell (`'__B_''N'`), so the echo never matches it.
    pub fn make_boring(&mut self, timeout: Duration) -> Result<(), Failed> {
        let n = self.nonce();
        let command = "(make the shell boring) stty -echo; bracketed paste off; PS1='$ '; TERM=dumb; pagers off";
        self.step(&format!("send: {command}"));
        self.serial.discard();
        let bytes_before = self.serial.bytes;
        let line = boring_line(&n);
        if let Err(e) = self.serial.send(&line) {
            return Err(Failed { command: command.to_string(), stop: Stop::Io(e), bytes_during: 0 });
        }
        let end = Regex::new(&format!(r"__B_{n}\n")).expect("setup marker regex");
        match self.serial.expect(&[&end], Wait::new(timeout, None)) {
            Ok(_) => Ok(()),
            Err(stop) => {
                let f = Failed { command: command.to_string(), stop, bytes_during: self.serial.bytes - bytes_before };
                self.step(&format!("FAILED: {f}"));
                Err(f)
            }
        }
    }

    /// Runs `command` (one line, stdin from /dev/null) and returns its output and exit status.
    /// `timeout` bounds the whole command; the guest may stay silent meanwhile.
    pub fn run(&mut self, command: &str, timeout: Duration) -> Result<Output, Failed> {
        let n = self.nonce();
        let (head, tail) = n.split_at(n.len() / 2);
        // The status is printed inside the group (after the pipe `$?` would be sed's); the
        // leading `\n` puts the end marker on a line of its own even after unterminated output.
        let line = format!(
            "{{ {command}\nprintf '\\n%s=%s\\n' '__E_''{n}' \"$?\"; }} </dev/null 2>&1 | sed 's/^/{head}''{tail}|/'\n"
        );
        self.step(&format!("$ {command}"));
        self.serial.discard();
        let bytes_before = self.serial.bytes;
        let started = Instant::now();
        if let Err(e) = self.serial.send(&line) {
            return Err(Failed { command: command.to_string(), stop: Stop::Io(e), bytes_during: 0 });
        }
        let end = Regex::new(&format!(r"{n}\|__E_{n}=(\d+)\n")).expect("end marker regex");
        match self.serial.expect(&[&end], Wait::new(timeout, None)) {
            Ok(hit) => {
                let text = unframe(&hit.before, &n);
                let code: i32 = hit.group(1).parse().unwrap_or(-1);
                let out = Output { code, text, seconds: started.elapsed().as_secs_f64() };
                self.step(&format!("exit {code} after {:.3}s\n{}", out.seconds, out.text));
                Ok(out)
            }
            Err(stop) => {
                let f = Failed { command: command.to_string(), stop, bytes_during: self.serial.bytes - bytes_before };
                self.step(&format!("FAILED: {f}"));
                Err(f)
            }
        }
    }

    /// Proves the shell answers: a framed `id -u`, whose output must be digits only.
    pub fn uid(&mut self, timeout: Duration) -> Result<Option<u32>, Failed> {
        let out = self.run("id -u", timeout)?;
        Ok(parse_uid(&out.text))
    }
}

/// The setup line plus its end marker, printed by the same shell once the settings are made.
fn boring_line(nonce: &str) -> String {
    format!("{BORING}; printf '\\n%s\\n' '__B_''{nonce}'\n")
}

/// Keeps only the lines carrying this command's prefix, without it; drops the empty line the
/// end marker's leading `\n` creates after output that already ended with a newline.
fn unframe(raw: &str, nonce: &str) -> String {
    let prefix = format!("{nonce}|");
    let mut lines: Vec<&str> = raw.lines().filter_map(|l| l.find(&prefix).map(|i| &l[i + prefix.len()..])).collect();
    if lines.last() == Some(&"") {
        lines.pop();
    }
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    text
}

/// `id -u` output → uid, only when the output is exactly one number.
pub fn parse_uid(text: &str) -> Option<u32> {
    let t = text.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layers below vm-test report to their sink and write nothing but the serial logs:
    /// no transcript, no record, no terminal output of their own.
    #[test]
    fn the_guest_reports_to_its_sink_only() {
        use crate::vm::events::Sink;
        use std::io::Write;
        struct Recorder(std::rc::Rc<std::cell::RefCell<Vec<String>>>);
        impl Sink for Recorder {
            fn event(&mut self, event: Event<'_>) {
                self.0.borrow_mut().push(format!("{event:?}"));
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let run_dir = camino::Utf8Path::from_path(dir.path()).unwrap();
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let serial = Serial::new(ours, run_dir, Box::new(Recorder(seen.clone()))).unwrap();
        let mut guest = Guest::new(serial);
        guest.enter(Phase::Shell);
        theirs.write_all(b"\x1b[1mboot line\x1b[0m\r\n").unwrap();
        guest.serial.drain_for(Duration::from_millis(200));
        guest.type_line("poweroff", "poweroff\n").unwrap();
        drop(guest);
        let seen = seen.borrow();
        assert_eq!(seen[0], "Phase(Shell)");
        assert!(seen.contains(&r#"Line("boot line")"#.to_string()), "{seen:?}");
        assert_eq!(seen.last().map(String::as_str), Some(r#"Step("send: poweroff")"#));
        let mut files: Vec<_> = std::fs::read_dir(run_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        files.sort();
        assert_eq!(files, ["serial.log", "serial.txt"]);
    }

    #[test]
    fn unframe_ignores_echo_and_broadcasts() {
        let raw = "{ id -u\nprintf '\\n%s=%s\\n' '__E_''q1x1' \"$?\"; } </dev/null 2>&1 | sed 's/^/q1''x1|/'\n\
                   q1x1|0\nLAN IPv4 address: 10.0.2.15\nq1x1|second\nq1x1|\n";
        assert_eq!(unframe(raw, "q1x1"), "0\nsecond\n");
    }

    #[test]
    fn unframe_output_without_trailing_newline() {
        assert_eq!(unframe("q1x2|abc\n", "q1x2"), "abc\n");
        assert_eq!(unframe("", "q1x2"), "");
    }

    #[test]
    fn uid_must_be_a_bare_number() {
        assert_eq!(parse_uid("0\n"), Some(0));
        assert_eq!(parse_uid("1000\n"), Some(1000));
        assert_eq!(parse_uid("20\x1b"), None);
        assert_eq!(parse_uid("uid=0(root)"), None);
        assert_eq!(parse_uid(""), None);
    }

    #[test]
    fn boring_line_prints_a_marker_its_echo_does_not_contain() {
        let line = boring_line("q1x1");
        assert!(!line.contains("__B_q1x1"), "{line}");
        assert_eq!(line.matches('\n').count(), 1, "one line: {line:?}");
        let Ok(bash) = which::which("bash") else { return };
        let out = std::process::Command::new(bash).args(["-c", &line]).output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).ends_with("\n__B_q1x1\n"), "{out:?}");
    }
}
