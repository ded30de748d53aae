//! The one place where terminal escapes are stripped.
//!
//! A persistent `vte` parser turns raw serial bytes into clean text: printable characters,
//! `\n` and `\t` only. Every escape family (CSI, OSC titles, DCS, charset switches such as
//! `ESC ( B`, `ESC % @`), SO/SI, BEL and CR are dropped; invalid UTF-8 becomes U+FFFD.
//! Escapes and UTF-8 sequences split across reads decode correctly because the parser
//! keeps its state between `feed` calls. No regex in this project ever sees raw bytes.

/// A streaming escape stripper. Keep one per byte stream.
pub struct Cleaner {
    parser: vte::Parser,
    sink: Sink,
}

struct Sink {
    out: String,
}

impl vte::Perform for Sink {
    fn print(&mut self, c: char) {
        self.out.push(c);
    }

    fn execute(&mut self, byte: u8) {
        if byte == b'\n' || byte == b'\t' {
            self.out.push(byte as char);
        }
    }
}

impl Default for Cleaner {
    fn default() -> Self {
        Self::new()
    }
}

impl Cleaner {
    pub fn new() -> Self {
        Cleaner { parser: vte::Parser::new(), sink: Sink { out: String::new() } }
    }

    /// Feeds raw bytes; appends the clean text they complete to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut String) {
        self.parser.advance(&mut self.sink, bytes);
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
}
