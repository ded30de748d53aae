//! The one place where terminal escapes are stripped.
//!
//! A persistent `vte` parser turns raw serial bytes into clean text: printable characters,
//! `\n` and `\t` only. Every escape family (CSI, OSC titles, DCS, charset switches such as
//! `ESC ( B`, `ESC % @`), SO/SI and BEL are dropped; invalid UTF-8 becomes U+FFFD.
//! Escapes and UTF-8 sequences split across reads decode correctly because the parser
//! keeps its state between `feed` calls. No regex in this project ever sees raw bytes.
//!
//! Two rules keep the text line-shaped, whatever the guest sends:
//! - A newline always ends a line. A stray `ESC ]` or `ESC P` would otherwise open a string
//!   that swallows every following line until the next ESC (and grows vte's buffer without
//!   bound), so each newline first cancels any unfinished sequence (CAN), as does every
//!   64 KiB run without a newline.
//! - CR LF (and CR CR LF) is one line break, and a CR at the start of a line does nothing;
//!   a CR that ends some text and is followed by more text is a line break. systemd redraws "A start job is running … (1min 3s / no limit)" with CR and no LF:
//!   each redraw becomes its own line instead of one ever-growing line.

/// A streaming escape stripper. Keep one per byte stream.
pub struct Cleaner {
    parser: vte::Parser,
    sink: Sink,
    /// Bytes fed since the last newline.
    run: usize,
}

struct Sink {
    out: String,
    /// A CR ended some text and no LF or new text has followed yet.
    pending_cr: bool,
    /// Nothing printed since the last line break (a CR here moves nowhere).
    line_start: bool,
}

impl vte::Perform for Sink {
    fn print(&mut self, c: char) {
        if std::mem::take(&mut self.pending_cr) {
            self.out.push('\n');
        }
        self.out.push(c);
        self.line_start = false;
    }

    fn execute(&mut self, byte: u8) {
        match byte {
            b'\n' => {
                self.pending_cr = false;
                self.line_start = true;
                self.out.push('\n');
            }
            b'\r' if !self.line_start => self.pending_cr = true,
            b'\t' => self.print('\t'),
            _ => {}
        }
    }
}

/// Longest run of bytes without a newline before any unfinished escape is cancelled.
const MAX_RUN: usize = 64 * 1024;
/// CAN: cancels an escape sequence or string in progress; ignored on its own.
const CANCEL: u8 = 0x18;

impl Default for Cleaner {
    fn default() -> Self {
        Self::new()
    }
}

impl Cleaner {
    pub fn new() -> Self {
        Cleaner {
            parser: vte::Parser::new(),
            sink: Sink { out: String::new(), pending_cr: false, line_start: true },
            run: 0,
        }
    }

    /// Feeds raw bytes; appends the clean text they complete to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut String) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let window = &rest[..rest.len().min(MAX_RUN - self.run)];
            match window.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.parser.advance(&mut self.sink, &window[..i]);
                    self.parser.advance(&mut self.sink, &[CANCEL, b'\n']);
                    self.run = 0;
                    rest = &rest[i + 1..];
                }
                None => {
                    self.parser.advance(&mut self.sink, window);
                    self.run += window.len();
                    rest = &rest[window.len()..];
                    if self.run == MAX_RUN {
                        self.parser.advance(&mut self.sink, &[CANCEL]);
                        self.run = 0;
                    }
                }
            }
        }
        out.push_str(&self.sink.out);
        self.sink.out.clear();
    }
}

/// Cleans a whole buffer at once (for files read offline).
pub fn clean_all(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    Cleaner::new().feed(bytes, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_split_escapes_and_keeps_utf8() {
        let mut c = Cleaner::new();
        let mut out = String::new();
        for chunk in [&b"x\x1b]0;ti"[..], b"tle\x07y\x1b[1;3", b"2mz\xe2\x9c", b"\x93\r\n"] {
            c.feed(chunk, &mut out);
        }
        assert_eq!(out, "xyz\u{2713}\n");
    }

    #[test]
    fn nixos_prompt_is_plain_after_cleaning() {
        let raw = b"\x1b[?2004h\r\n\x1b[1;32m[\x1b]0;nixos@nixos: ~\x07nixos@nixos:~]$\x1b[0m ";
        assert_eq!(clean_all(raw), "\n[nixos@nixos:~]$ ");
    }

    #[test]
    fn charset_switches_shift_codes_and_invalid_utf8() {
        let raw = b"a\x1b(Bb\x1b)0c\x1b%@d\x0ee\x0ff\tg\xffh";
        assert_eq!(clean_all(raw), "abcde".to_string() + "f\tg\u{fffd}h");
    }

    #[test]
    fn an_unterminated_osc_or_dcs_does_not_swallow_lines() {
        let raw = b"boot \x1b]0;no terminator\nline two\r\nline three\n\x1bPdcs junk\nafter\n";
        assert_eq!(clean_all(raw), "boot \nline two\nline three\n\nafter\n");
        // Split across reads, the same.
        let mut c = Cleaner::new();
        let mut out = String::new();
        for b in raw {
            c.feed(&[*b], &mut out);
        }
        assert_eq!(out, clean_all(raw));
    }

    #[test]
    fn lone_cr_redraws_become_lines_but_crlf_stays_one_break() {
        // Bash's `ESC[?2004l CR` before a command's output starts no extra line.
        assert_eq!(clean_all(b"id -u\r\n\x1b[?2004l\r0\r\n"), "id -u\n0\n");
        let raw = b"a\r\nb\r\r\nc\r\x1b[K[  *** ] A start job is running (1min 3s)\r\x1b[K[ ***  ] A start job is running (1min 4s)\r\n";
        assert_eq!(
            clean_all(raw),
            "a\nb\nc\n[  *** ] A start job is running (1min 3s)\n[ ***  ] A start job is running (1min 4s)\n"
        );
    }

    #[test]
    fn a_newline_free_flood_stays_bounded_and_keeps_its_text() {
        let mut raw = b"\x1b]".to_vec();
        raw.extend(std::iter::repeat_n(b'x', 3 * MAX_RUN));
        raw.extend_from_slice(b"\nend\n");
        let out = clean_all(&raw);
        assert!(out.ends_with("\nend\n"));
        // The OSC opened at the start is cancelled after 64 KiB: the rest is text again.
        assert!(out.len() >= 2 * MAX_RUN, "{}", out.len());
    }
}
