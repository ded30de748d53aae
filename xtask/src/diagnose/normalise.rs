//! Turns one line of foreign text into the shape the rules are written for, and says where
//! it came from. Users paste anything: `journalctl` output, a CI or cloud console with a
//! timestamp on every line, another harness's log, text OCR'd from a photo of a screen. The
//! rules in `diagnose.rs` are written once, against what systemd, NixOS's stage 1/2 and the
//! kernel print on a serial console; this module maps the other shapes onto that one:
//!
//! - **Prefixes** are taken off: journald's (`Oct 11 10:00:00 host ident[pid]: `, and its
//!   `short-iso`, `short-full`, `short-unix`, `short-monotonic` variants), a CI or log
//!   viewer's ISO-8601 timestamp (`2025-10-11T10:00:00.1234567Z `, `[2025-10-11 10:00:00] `),
//!   the predecessor harness's `[<ISO time>] Serial output: ` (its other lines are its own
//!   chatter and are dropped), the NixOS test driver's `machine # `, `dmesg -T`'s
//!   `[Sat Oct 11 10:00:00 2025] `, and the `ident[pid]: ` of journal messages forwarded to
//!   the console after a kernel timestamp. What the prefix said about the writer is kept
//!   as a `Voice` (the kernel, systemd, NixOS's stage 1 or 2, another program).
//! - **systemd's journal wording** of a job result has no status word; on the console the
//!   same text carries `[FAILED]`, `[DEPEND]` or `[ TIME ]`. Lines in systemd's voice get
//!   the status word back, so one rule reads both.
//! - **OCR confusions** (text read from a screenshot or photo): systemd's status brackets
//!   come back as `[ OK 1`, `[ 0K J`, `[ TIME 1`, `[FAlLED]`, and `0`/`O`, `1`/`l`/`I`/`|`
//!   swap inside the fixed words systemd, NixOS and the kernel print (`Fai1ed to start`,
//!   `Nix0S Stage l`), and `rn` stands for `m` (`autornatic login`). Only those fixed
//!   words are repaired, never free text (unit names, paths), so a repair cannot invent a
//!   failure.
//!
//! CR LF doubling (`\r\r\n`, blank lines between every line) needs nothing here: the
//! cleaner makes one line break of CR CR LF and the detector skips empty lines.

use super::Source;
use regex::{Regex, RegexSet};
use std::borrow::Cow;
use std::sync::LazyLock;

/// Who wrote a line, when a prefix says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Voice {
    /// No prefix named the writer (plain console text).
    Unknown,
    /// The kernel (journal identifier `kernel`, `dmesg -T`).
    Kernel,
    /// systemd itself, PID 1 or a user manager (`systemd[1]:`).
    Systemd,
    /// NixOS's stage-1 script (`stage-1-init: [date] ...` in the kernel log or journal).
    Stage1,
    /// NixOS's stage-2 script (`stage-2-init: ...`).
    Stage2,
    /// Any other program in the journal: user space is running, so init has started.
    Userspace,
}

/// One normalised line.
#[derive(Debug)]
pub struct Line<'a> {
    /// The text the rules read.
    pub text: Cow<'a, str>,
    pub source: Source,
    pub voice: Voice,
    /// The line began with a kernel timestamp (`[    2.828042] `), even if it was taken off.
    pub kernel_stamped: bool,
}

impl Line<'_> {
    /// Whether the normaliser changed the text (a finding then quotes the original line).
    /// Unchanged text is `original` itself, so no bytes need comparing.
    pub fn changed(&self, original: &str) -> bool {
        match &self.text {
            Cow::Borrowed(t) => t.as_ptr() != original.as_ptr() || t.len() != original.len(),
            Cow::Owned(_) => true,
        }
    }
}

/// Normalises lines one at a time; keeps what earlier lines taught it (the input is
/// screen text; the input is another harness's log).
#[derive(Debug, Default)]
pub struct Normaliser {
    /// `--source` given by the caller: every line is taken to come from there.
    forced: Option<Source>,
    /// An OCR confusion was seen (auto mode): the rest of the input is screen text.
    screen_seen: bool,
    /// `Serial output: ` lines were seen: other timestamped lines are the harness's own.
    harness_log: bool,
}

/// Journald `short` and `short-precise` (the default of `journalctl`, and syslog's):
/// `Oct 11 10:00:00[.123456] host ident[pid]: message`, after the month (`journal_month`).
/// With the time and the `host ident:` after it the shape is unambiguous, so any identifier
/// counts.
static JOURNAL_SHORT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[ 0-3][0-9] [0-2][0-9]:[0-5][0-9]:[0-6][0-9](?:\.[0-9]+)? ").expect("compiles"));
/// Journald `short-full`: `Sat 2025-10-11 10:00:00 UTC host ident[pid]: message`.
static JOURNAL_FULL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) [0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)? [A-Za-z][A-Za-z0-9+/_-]* ")
        .expect("compiles")
});
/// Journald `short-unix`: `1760176800.123456 host ident[pid]: message`.
static JOURNAL_UNIX: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[0-9]{9,}\.[0-9]+ ").expect("compiles"));
/// An ISO-8601 time at the start of a line: journald's `short-iso` (always a numeric
/// offset), a CI log (GitHub Actions: `2025-10-11T10:00:00.1234567Z `), a log viewer or
/// another harness (`[2025-10-11T10:00:00.123+00:00] `), optionally followed by `| `.
static ISO_PREFIX: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(?P<open>\[)?[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:[.,][0-9]+)?(?: ?(?:Z|UTC|[+-][0-9]{2}:?[0-9]{2}))?(?P<close>\])?:? +(?:\| *)?",
    )
    .expect("compiles")
});
/// After a journal time: `host ident[pid]: ` or `host ident: `.
static HOST_IDENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_.-]+ (?P<ident>[^ \[:]+)(?:\[(?P<pid>[0-9]+)\])?: ?").expect("compiles"));
/// `dmesg -T`: `[Sat Oct 11 10:00:00 2025] `.
static DMESG_T: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\[(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} [ 0-3][0-9] [0-9:]{8} [0-9]{4}\] ").expect("compiles")
});
/// NixOS's stage-1 script copies its output to the kernel log as
/// `stage-1-init: [$(date)] <line>` (nixpkgs nixos/modules/system/boot/stage-1-init.sh:
/// `echo "<7>stage-1-init: [$(date)] $line" > /dev/kmsg`); stage 2 as `stage-2-init: <line>`
/// (stage-2-init.sh: `echo "<7>stage-2-init: $line" > /dev/kmsg`).
static STAGE_DATE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\[[A-Za-z]{3} [^\]]{10,40}\] ").expect("compiles"));

/// Job results in systemd's journal wording (src/core/job.c `job_done_message_format`,
/// device.c, mount.c, socket.c, swap.c, automount.c `status_message_formats`: "Failed to
/// start %s.", "Dependency failed for %s.", "Timed out waiting for device %s.", ...) and
/// the status word the console prints before them (job.c `job_done_messages`: "FAILED",
/// "DEPEND", " TIME ").
const JOURNAL_JOB_RESULTS: &[(&str, &str)] = &[
    ("[FAILED] ", r"^Failed to (?:start|mount|listen on|set up automount|activate swap) "),
    ("[DEPEND] ", r"^Dependency failed for "),
    (
        "[ TIME ] ",
        r"^Timed out (?:starting|stopping|waiting for device|mounting|unmounting|activating swap|reloading) ",
    ),
];
static JOB_RESULT_SET: LazyLock<RegexSet> =
    LazyLock::new(|| RegexSet::new(JOURNAL_JOB_RESULTS.iter().map(|(_, p)| *p)).expect("compiles"));
/// `systemctl start x: reason` (systemctl's own error) is no job result.
static SYSTEMCTL_ERROR: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^Failed to [a-z]+ [^ ]+: ").expect("compiles"));

/// The status words systemd prints between brackets (job.c `job_done_messages`: "  OK  ",
/// " TIME ", "FAILED", "DEPEND", " INFO ", "ASSERT", "UNSUPP", " ONCE "), in the console's
/// spacing.
const STATUS_WORDS: &[&str] = &["  OK  ", "FAILED", " TIME ", "DEPEND", " INFO ", "ASSERT", "UNSUPP", " ONCE "];

/// Fixed words OCR confuses: each is matched with `0`/`O` and `1`/`l`/`I`/`|` interchangeable
/// and spaces optional, and replaced by its true spelling. Sources: systemd src/core/job.c,
/// device.c, mount.c, manager.c ("A %s job is running for %s (%s / %s)"), emergency.service;
/// nixpkgs stage-1-init.sh / stage-2-init.sh; the kernel (panic.c, hung_task.c); agetty.
const OCR_PHRASES: &[&str] = &[
    "Failed to start",
    "Failed to mount",
    "for details",
    "Dependency failed for",
    "Timed out waiting for device",
    "Timed out starting",
    "Timed out mounting",
    "job is running for",
    "no limit",
    "Welcome to NixOS",
    "NixOS Stage 1",
    "NixOS Stage 2",
    "(automatic login)",
    "login:",
    "Kernel panic - not syncing",
    "VFS: Unable to mount root fs",
    "You are in emergency mode",
    "An error occurred in stage 1 of the boot process",
    "waiting for device",
    "to appear",
    "loading module",
    "running udev",
    "starting device mapper and LVM",
    "mounting",
    "running activation script",
    "starting systemd",
    "trying to mount anyway",
    "stage 2 init script",
    "not found",
    "blocked for more than",
    "seconds",
    "Activation script snippet",
    "Reached target",
    "Powering off",
    "reboot: Power down",
    "Interface",
    "does not exist",
];

/// One regex per phrase, alternatives for each confusable character.
static OCR_FIXES: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    OCR_PHRASES.iter().map(|p| (Regex::new(&ocr_pattern(p)).expect("OCR phrase compiles"), *p)).collect()
});
static OCR_SET: LazyLock<RegexSet> =
    LazyLock::new(|| RegexSet::new(OCR_PHRASES.iter().map(|p| ocr_pattern(p))).expect("OCR phrases compile"));
/// The time of a start job, `(1min 30s / 1min 30s)`, read with OCR confusions in its digits.
static OCR_TIMESPAN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\((?P<t>[0-9OolI|]+(?:h|min|s|ms)(?: [0-9OolI|]+(?:h|min|s|ms))*) / ").expect("compiles")
});

/// A regex for `phrase` that accepts OCR's confusions of its characters.
fn ocr_pattern(phrase: &str) -> String {
    let mut p = String::new();
    for c in phrase.chars() {
        match c {
            'O' | 'o' | '0' => p.push_str("[Oo0]"),
            'l' | 'I' | '1' => p.push_str("[lI1|]"),
            'm' => p.push_str("(?:m|rn)"),
            ' ' => p.push_str(" ?"),
            c => p.push_str(&regex::escape(&c.to_string())),
        }
    }
    p
}

impl Normaliser {
    /// `forced`: the caller knows where the text comes from (`analyze --source`); `None`
    /// tells it from each line.
    pub fn new(forced: Option<Source>) -> Self {
        Normaliser { forced, ..Default::default() }
    }

    /// Where a line without a journal prefix comes from.
    fn medium(&self) -> Source {
        self.forced.unwrap_or(if self.screen_seen { Source::Screen } else { Source::Serial })
    }

    /// Where a line with a journal prefix comes from.
    fn journal(&self) -> Source {
        self.forced.unwrap_or(Source::Journal)
    }

    /// Normalises one clean line (no `\n`).
    pub fn normalise<'a>(&mut self, raw: &'a str) -> Line<'a> {
        let b = raw.as_bytes();
        let first = b.first().copied().unwrap_or(0);
        let mut rest: &'a str = raw;

        // A timestamp from outside the guest: CI, a log viewer, journald's short-iso or
        // short-unix, or another harness's transcript.
        if first.is_ascii_digit() || (first == b'[' && b.get(1).is_some_and(u8::is_ascii_digit)) {
            if let Some(m) = ISO_PREFIX.captures(raw) {
                let after = &raw[m.get(0).unwrap().end()..];
                let bracketed = m.name("open").is_some() && m.name("close").is_some();
                if let Some(serial) = after.strip_prefix("Serial output: ") {
                    self.harness_log = true;
                    rest = serial;
                } else if let Some((voice, msg)) = journal_after_time(after, true) {
                    return self.finish(self.journal(), voice, msg, false);
                } else if self.harness_log && bracketed {
                    // The other harness's own messages (`Matched pattern: 'login: '`).
                    return self.finish(self.medium(), Voice::Unknown, "", false);
                } else {
                    rest = after;
                }
            } else if let Some(m) = JOURNAL_UNIX.find(raw) {
                if let Some((voice, msg)) = journal_after_time(&raw[m.end()..], true) {
                    return self.finish(self.journal(), voice, msg, false);
                }
            }
        }
        // The NixOS test driver's `machine # ` before the console line.
        if let Some(after) = after_test_driver(rest) {
            rest = after;
        }
        let first = rest.as_bytes().first().copied().unwrap_or(0);
        // A letter (or a UTF-8 lead byte: `déc.`) may start a journal date.
        if first.is_ascii_alphabetic() || first >= 0xC0 {
            // Cheap looks first (a digit or space after the month, a digit after the
            // weekday) so most lines never reach a regex.
            let b = rest.as_bytes();
            let date_end = journal_month(rest)
                .filter(|&m| b.get(m).is_some_and(|&c| c == b' ' || c.is_ascii_digit()))
                .and_then(|m| JOURNAL_SHORT.find(&rest[m..]).map(|d| m + d.end()))
                .or_else(|| {
                    (b.get(3) == Some(&b' ') && b.get(4).is_some_and(u8::is_ascii_digit))
                        .then(|| JOURNAL_FULL.find(rest).map(|d| d.end()))
                        .flatten()
                });
            if let Some((voice, msg)) = date_end.and_then(|end| journal_after_time(&rest[end..], false)) {
                return self.finish(self.journal(), voice, msg, false);
            }
        } else if first == b'-' && rest.starts_with("-- ") && rest.trim_end().ends_with(" --") {
            // `-- Boot 0123abcd... --`, `-- Logs begin at ... --`, `-- No entries --`.
            return self.finish(self.journal(), Voice::Unknown, "", false);
        } else if first == b'[' {
            if let Some(msg) = after_kernel_stamp(rest) {
                if let Some((voice, msg, host)) = kmsg_ident(msg) {
                    // With a host it is `journalctl -o short-monotonic`; without, a journal
                    // forwarded to the console or systemd logging before journald runs.
                    let source = if host { self.journal() } else { self.medium() };
                    return self.finish(source, voice, msg, true);
                }
                return self.finish(self.medium(), Voice::Unknown, rest, true);
            }
            if let Some(m) = DMESG_T.find(rest) {
                return self.finish(self.medium(), Voice::Kernel, &rest[m.end()..], false);
            }
        }
        self.finish(self.medium(), Voice::Unknown, rest, false)
    }

    /// The last steps, shared by every shape: stage prefixes, OCR repairs, job results.
    fn finish<'a>(&mut self, source: Source, voice: Voice, msg: &'a str, kernel_stamped: bool) -> Line<'a> {
        let (voice, msg) = match voice {
            Voice::Stage1 => (voice, strip_stage_date(msg)),
            Voice::Unknown => stage_voice(msg),
            v => (v, msg),
        };
        let mut line = Line { text: Cow::Borrowed(msg), source, voice, kernel_stamped };
        // OCR: always repaired for screen text; in auto mode a status bracket that only OCR
        // produces switches the rest of the input to screen text.
        if let Some((fixed, confused)) = repair_status_bracket(&line.text) {
            if confused && self.forced.is_none() && !self.screen_seen {
                self.screen_seen = true;
                if line.source == Source::Serial {
                    line.source = Source::Screen;
                }
            }
            line.text = Cow::Owned(fixed);
        }
        if line.source == Source::Screen {
            if let Some(fixed) = repair_ocr_words(&line.text) {
                line.text = Cow::Owned(fixed);
            }
        }
        // The journal's wording of a job result gets the console's status word back.
        let systemd_voice = voice == Voice::Systemd || (voice == Voice::Unknown && line.source == Source::Journal);
        if systemd_voice && !line.text.starts_with('[') && !SYSTEMCTL_ERROR.is_match(&line.text) {
            if let Some(i) = JOB_RESULT_SET.matches(&line.text).iter().next() {
                line.text = Cow::Owned(format!("{}{}", JOURNAL_JOB_RESULTS[i].0, line.text));
            }
        }
        line
    }
}

/// `host ident[pid]: message` after a journal time: the writer and the message.
/// `strict`: the time alone could be a CI timestamp, so only an identifier with a PID (or
/// one that never has one) makes it a journal line: `nixos login: nixos` is not one.
fn journal_after_time(after: &str, strict: bool) -> Option<(Voice, &str)> {
    let c = HOST_IDENT.captures(after)?;
    let ident = c.name("ident").unwrap().as_str();
    if strict && c.name("pid").is_none() && !matches!(ident, "kernel" | "stage-1-init" | "stage-2-init" | "sudo") {
        return None;
    }
    Some((voice_of(ident), &after[c.get(0).unwrap().end()..]))
}

/// The end of a journal date's month and its space: the locale's abbreviation, 3 to 5
/// letters and maybe a dot (`Oct`, Italian `gen`, French `déc.`). By hand: a Unicode letter
/// class in a regex costs more than the rest of the line's matching.
fn journal_month(line: &str) -> Option<usize> {
    let sp = line.as_bytes().iter().take(12).position(|&b| b == b' ')?;
    let month = line[..sp].strip_suffix('.').unwrap_or(&line[..sp]);
    (3..=5).contains(&month.chars().count()).then_some(())?;
    month.chars().all(char::is_alphabetic).then_some(sp + 1)
}

/// The console line after the NixOS test driver's `<machine> # ` (a lower-case name).
fn after_test_driver(line: &str) -> Option<&str> {
    let b = line.as_bytes();
    if !b.first()?.is_ascii_lowercase() {
        return None;
    }
    let end =
        b.iter().take(32).position(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-'))?;
    line[end..].strip_prefix(" # ")
}

/// The message after a kernel timestamp `[  12.345678] `.
fn after_kernel_stamp(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('[')?;
    let end = rest.find("] ")?;
    if end > 20 {
        return None;
    }
    let (whole, frac) = rest[..end].trim_start().split_once('.')?;
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(&rest[end + 2..])
}

/// `ident[pid]: message` or `host ident[pid]: message` (`short-monotonic`) after a kernel
/// timestamp: the writer, the message, and whether a host came first. Plain kernel messages
/// also look like `word word: text` (`pci 0000:00:01.0: BAR 0`), so an identifier counts only
/// with a PID, or when it is `kernel` or NixOS's stage-1/2 script; `systemd[1]:` is what
/// systemd logs before journald starts.
fn kmsg_ident(msg: &str) -> Option<(Voice, &str, bool)> {
    /// `ident[pid]: ` or `ident: ` at the start of `s`: (ident, pid, length).
    fn parse(s: &str) -> Option<(&str, Option<&str>, usize)> {
        let e = s.find([' ', '[', ':'])?;
        let (ident, after) = s.split_at(e);
        if let Some(p) = after.strip_prefix('[') {
            let close = p.find("]: ")?;
            if close == 0 || !p[..close].bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            return Some((ident, Some(&p[..close]), e + 1 + close + 3));
        }
        after.strip_prefix(": ").map(|_| (ident, None, e + 2))
    }
    // Kernel messages with an index look alike (`IOAPIC[0]: apic_id 0`), but programs are
    // named in lower case and no process has PID 0.
    let counts = |ident: &str, pid: Option<&str>| {
        ident.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
            && (pid.is_some_and(|p| p.bytes().any(|b| b != b'0'))
                || matches!(ident, "kernel" | "stage-1-init" | "stage-2-init"))
    };
    if let Some((ident, pid, end)) = parse(msg) {
        if counts(ident, pid) {
            return Some((voice_of(ident), &msg[end..], false));
        }
    }
    let sp = msg.find(' ')?;
    let host = &msg[..sp];
    if host.is_empty() || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return None;
    }
    let (ident, pid, end) = parse(&msg[sp + 1..])?;
    counts(ident, pid).then(|| (voice_of(ident), &msg[sp + 1 + end..], true))
}

fn voice_of(ident: &str) -> Voice {
    match ident {
        "kernel" => Voice::Kernel,
        "systemd" => Voice::Systemd,
        "stage-1-init" => Voice::Stage1,
        "stage-2-init" => Voice::Stage2,
        _ => Voice::Userspace,
    }
}

/// `stage-1-init: [date] line` / `stage-2-init: line` written by NixOS's scripts.
fn stage_voice(text: &str) -> (Voice, &str) {
    if let Some(rest) = text.strip_prefix("stage-1-init: ") {
        return (Voice::Stage1, strip_stage_date(rest));
    }
    if let Some(rest) = text.strip_prefix("stage-2-init: ") {
        return (Voice::Stage2, rest);
    }
    (Voice::Unknown, text)
}

fn strip_stage_date(text: &str) -> &str {
    STAGE_DATE.find(text).map_or(text, |m| &text[m.end()..])
}

/// Folds the characters OCR confuses: `0`→`O`, `1`/`l`/`L`/`|`→`I`, upper case.
fn fold(word: &str) -> String {
    word.chars()
        .map(|c| match c.to_ascii_uppercase() {
            '0' => 'O',
            '1' | 'L' | '|' => 'I',
            c => c,
        })
        .collect()
}

/// A systemd status bracket at the start of a line, as OCR or a copy may render it
/// (`[ OK 1`, `[ 0K J`, `( OK )`, `[OK]`, `[ TIME 1`, `[FAlLED]`): the line with the
/// console's bracket (`[  OK  ] `), and whether a confusable character (not just spacing)
/// had to be repaired. `None` when the line has no such bracket or already the right one.
fn repair_status_bracket(text: &str) -> Option<(String, bool)> {
    let b = text.as_bytes();
    let open = *b.first()?;
    if !matches!(open, b'[' | b'(' | b'{' | b'|') {
        return None;
    }
    // The word: up to 8 characters after optional spaces.
    let mut i = 1;
    while i < b.len() && b[i] == b' ' {
        i += 1;
    }
    let word_start = i;
    while i < b.len() && i - word_start < 8 && (b[i].is_ascii_alphanumeric() || b[i] == b'|') {
        i += 1;
    }
    let word = &text[word_start..i];
    if word.is_empty() {
        return None;
    }
    while i < b.len() && b[i] == b' ' {
        i += 1;
    }
    let close = *b.get(i)?;
    if !matches!(close, b']' | b')' | b'}' | b'|' | b'1' | b'l' | b'I' | b'J' | b'j') {
        return None;
    }
    let folded = fold(word);
    let status = STATUS_WORDS.iter().find(|s| fold(s.trim()) == folded)?;
    let rest = text[i + 1..].trim_start();
    let fixed = format!("[{status}] {rest}");
    if fixed.trim_end() == text.trim_end() {
        return None;
    }
    // A confusion, not just spacing: a character OCR swaps, or a bracket that is not one.
    let confused = word != status.trim() || open != b'[' || close != b']';
    // `[ OK ]`-style spacing variants and `[OK]` are common in scripts' own output: only a
    // true confusion may switch the input to screen text.
    Some((fixed, confused))
}

/// Repairs the fixed words in OCR'd text; `None` when nothing needed it.
fn repair_ocr_words(text: &str) -> Option<String> {
    let hits = OCR_SET.matches(text);
    if !hits.matched_any() {
        return None;
    }
    let mut out = text.to_string();
    for i in hits.iter() {
        let (re, phrase) = &OCR_FIXES[i];
        out = re.replace_all(&out, regex::NoExpand(phrase)).into_owned();
    }
    // The digits of a start job's running time (`(lmin 3Os / n0 1imit)`).
    if let Some(c) = OCR_TIMESPAN.captures(&out) {
        let t = c.name("t").unwrap();
        let digits: String = t
            .as_str()
            .chars()
            .map(|c| match c {
                'O' | 'o' => '0',
                'l' | 'I' | '|' => '1',
                c => c,
            })
            .collect();
        out.replace_range(t.range(), &digits);
    }
    (out != text).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(text: &str) -> (String, Source, Voice) {
        let mut n = Normaliser::new(None);
        let l = n.normalise(text);
        (l.text.into_owned(), l.source, l.voice)
    }

    #[test]
    fn journal_prefixes_come_off_and_name_the_writer() {
        let cases = [
            (
                "Oct 11 10:00:00 nixos systemd[1]: Failed to start pre-nixos.service - Pre-NixOS setup.",
                "[FAILED] Failed to start pre-nixos.service - Pre-NixOS setup.",
                Voice::Systemd,
            ),
            ("Oct  1 10:00:00.123456 nixos kernel: Linux version 6.12.54", "Linux version 6.12.54", Voice::Kernel),
            (
                "gen 18 19:37:27 localhost systemd[1]: Failed to mount /sysroot/nix.",
                "[FAILED] Failed to mount /sysroot/nix.",
                Voice::Systemd,
            ),
            ("déc. 18 19:37:27 localhost kernel: Linux version 6", "Linux version 6", Voice::Kernel),
            (
                "Sat 2025-10-11 10:00:00 UTC nixos systemd[1]: Dependency failed for /sysroot.",
                "[DEPEND] Dependency failed for /sysroot.",
                Voice::Systemd,
            ),
            (
                "2025-10-11T10:00:00+0000 nixos systemd[1]: Timed out waiting for device /dev/disk/by-label/nixos.",
                "[ TIME ] Timed out waiting for device /dev/disk/by-label/nixos.",
                Voice::Systemd,
            ),
            (
                "2025-10-11T10:00:00.123456+00:00 nixos pre-nixos-start[886]: pre-nixos: Provisioning failed.",
                "pre-nixos: Provisioning failed.",
                Voice::Userspace,
            ),
            (
                "1760176800.123456 nixos kernel: INFO: task udevd:88 blocked for more than 120 seconds.",
                "INFO: task udevd:88 blocked for more than 120 seconds.",
                Voice::Kernel,
            ),
            ("[   12.345678] nixos systemd[1]: Started Journal Service.", "Started Journal Service.", Voice::Systemd),
            (
                "Oct 11 10:00:00 nixos stage-1-init: [Sat Oct 11 10:00:00 UTC 2025] running udev...",
                "running udev...",
                Voice::Stage1,
            ),
        ];
        for (raw, text, voice) in cases {
            let (t, s, v) = norm(raw);
            assert_eq!((t.as_str(), s, v), (text, Source::Journal, voice), "{raw}");
        }
    }

    #[test]
    fn console_lines_keep_their_text() {
        for raw in [
            "[    0.000000] Linux version 6.1.0",
            "[    1.000000] pci 0000:00:01.0: BAR 0: assigned",
            "[    2.000000] virtio_net virtio0 ens4: renamed from eth0",
            "[  OK  ] Started pre-nixos.service.",
            "[FAILED] Failed to start Pre-NixOS setup.",
            "nixos login: nixos (automatic login)",
            "[nixos@nixos:~]$ sudo -i",
            "Failed to start foo.service: Unit foo.service not found.",
            "<<< NixOS Stage 1 >>>",
            "2: lan    inet 10.0.2.15/24 scope global lan",
        ] {
            assert_eq!(norm(raw), (raw.to_string(), Source::Serial, Voice::Unknown), "{raw}");
        }
        // systemd logging to the kernel log before journald runs: still serial text.
        assert_eq!(
            norm("[    3.100000] systemd[1]: Failed to start Pre-NixOS setup."),
            ("[FAILED] Failed to start Pre-NixOS setup.".into(), Source::Serial, Voice::Systemd)
        );
    }

    #[test]
    fn ci_and_harness_timestamps_come_off() {
        let mut n = Normaliser::new(None);
        assert_eq!(
            n.normalise("2025-10-11T10:00:00.1234567Z [    0.000000] Linux version 6").text,
            "[    0.000000] Linux version 6"
        );
        assert_eq!(
            n.normalise("2025-10-11T10:00:00.1234567Z nixos login: nixos (automatic login)").text,
            "nixos login: nixos (automatic login)"
        );
        let mut n = Normaliser::new(None);
        let l = n.normalise("[2025-10-06T06:41:12.345678+00:00] Serial output: Loading /boot/initrd...ok");
        assert_eq!((l.text.as_ref(), l.source), ("Loading /boot/initrd...ok", Source::Serial));
        assert_eq!(n.normalise("[2025-10-06T06:41:13.000000+00:00] Matched pattern: 'login: '").text, "");
        assert_eq!(n.normalise("machine # [   1.0] systemd[1]: Started foo.").text, "Started foo.");
        assert_eq!(
            Normaliser::new(None).normalise("machine # Welcome to NixOS 25.05!").text,
            "Welcome to NixOS 25.05!"
        );
        assert_eq!(norm("-- Boot 0123456789abcdef --"), (String::new(), Source::Journal, Voice::Unknown));
        assert_eq!(norm("[Sat Oct 11 10:00:00 2025] Kernel panic - not syncing: x").0, "Kernel panic - not syncing: x");
    }

    #[test]
    fn ocr_brackets_and_words_are_repaired() {
        let mut n = Normaliser::new(None);
        assert_eq!(n.normalise("[ 0K J Started Journal Service.").text, "[  OK  ] Started Journal Service.");
        // From then on the input is screen text: fixed words are repaired too.
        let l = n.normalise("[FAILED 1 Fai1ed t0 start Pre-NixOS setup.");
        assert_eq!((l.text.as_ref(), l.source), ("[FAILED] Failed to start Pre-NixOS setup.", Source::Screen));
        assert_eq!(
            n.normalise("[ TIME 1 Timed 0ut waiting for device /dev/disk/by-label/nixos.").text,
            "[ TIME ] Timed out waiting for device /dev/disk/by-label/nixos."
        );
        assert_eq!(n.normalise("<<< Nix0S Stage l >>>").text, "<<< NixOS Stage 1 >>>");
        assert_eq!(
            n.normalise("[ *** ] A start job is running for /dev/disk/by-label/nixos (lmin 3Os / n0 1imit)").text,
            "[ *** ] A start job is running for /dev/disk/by-label/nixos (1min 30s / no limit)"
        );
        // Spacing alone does not make a serial log screen text.
        let mut n = Normaliser::new(None);
        let l = n.normalise("[OK] Started foo.");
        assert_eq!((l.text.as_ref(), l.source), ("[  OK  ] Started foo.", Source::Serial));
        assert_eq!(n.normalise("Fai1ed t0 start x").text, "Fai1ed t0 start x");
    }
}
